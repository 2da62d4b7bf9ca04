"""Output files: names and paths checked before a run, write errors as one sentence with
the old file intact, the umask's mode, Ctrl-C, sweep workers that die with their parent,
and one sweep per folder."""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time

import pytest

import slatframe.engine
from slatframe.cli import main
from slatframe.results import OutputError, write_atomic
from tiny_files import alive, kill_quietly, marked_config, marks, wait_for, write_config

PY = [sys.executable, "-m", "slatframe.cli"]


@pytest.fixture
def no_run(monkeypatch):
    """Replace the simulation with a stub that records whether a run started."""
    calls: list[object] = []

    def fake(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the run started although an input was bad")

    monkeypatch.setattr(slatframe.engine, "run_experiment", fake)
    return calls


def one_line_error(text: str) -> str:
    assert text.count("\n") == 1 and text.startswith("slatframe: error: "), text
    assert "Traceback" not in text
    return text


# -- names and paths, checked before the run -------------------------------------------


@pytest.mark.parametrize("name, why", [
    ("../x", "'/'"), ("a\0b", "'\\x00'"), ("x" * 300, "300 characters"), ("", "empty"),
    (".hidden", "starts with '.'"), ("a b", "' '")])
def test_bad_experiment_name_fails_before_the_run(tmp_path, monkeypatch, capsys, no_run, name, why):
    cfg = write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(cfg), "--set", f"experiment.name={json.dumps(name)}"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert str(cfg) in err and "experiment.name" in err and why in err and "--out" in err
    assert no_run == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cfg.toml"]


def test_a_bad_name_is_fine_with_out(tmp_path, monkeypatch):
    """The name is only a file name when --out is absent."""
    cfg = write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(cfg), "--set", 'experiment.name="../x"', "--out", "r.json", "--quiet"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["name"] == "../x"
    assert main(["run", str(cfg), "--set", "experiment.name=ok-1.2_x", "--quiet"]) == 0
    assert json.loads((tmp_path / "results" / "ok-1.2_x.json").read_text())["name"] == "ok-1.2_x"


def test_out_paths_are_checked_before_the_run(tmp_path, capsys, no_run):
    cfg = write_config(tmp_path)
    (tmp_path / "afile").write_text("x")
    cases = {str(tmp_path / "afile" / "r.json"): "is a file, not a folder",
             str(tmp_path): "is a folder",
             str(tmp_path / "a\0b.json"): "NUL"}
    for out, why in cases.items():
        assert main(["run", str(cfg), "--out", out]) == 2
        err = one_line_error(capsys.readouterr().err)
        assert "--out" in err and why in err, err
    sweep = write_config(tmp_path, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "afile")]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert str(tmp_path / "afile") in err and "is a file" in err
    assert no_run == [] and (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_reported_before_the_run(tmp_path, capsys, no_run):
    cfg = write_config(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["run", str(cfg), "--out", str(ro / "sub" / "r.json")]) == 2
        err = one_line_error(capsys.readouterr().err)
        assert f"{ro} is not writable" in err
    finally:
        ro.chmod(0o700)
    assert no_run == []


def test_new_output_folders_are_created(tmp_path):
    cfg = write_config(tmp_path)
    out = tmp_path / "new" / "deeper" / "r.json"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["metrics"]["accesses"] == 1000


# -- write errors ------------------------------------------------------------------------


def test_file_size_limit_is_one_sentence_and_the_old_file_stays(tmp_path):
    """RLIMIT_FSIZE below the result's size: exit 2, one line naming the file and the limit,
    the previous file unchanged and no temporary file left."""
    cfg = write_config(tmp_path)
    out = tmp_path / "r.json"
    out.write_text("previous\n")
    limit = 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([*PY, "run", str(cfg), "--out", str(out), "--quiet"], capture_output=True, text=True,
                          preexec_fn=small_files, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = one_line_error(proc.stderr)
    assert str(out) in err and "file-size limit" in err
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.toml", "r.json"]
    # the same run without the limit writes a result larger than the limit
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert out.stat().st_size > limit


def test_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text("previous\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError) as info:
        write_atomic(out, "new text\n")
    message = str(info.value)
    assert message.startswith(f"{out}: ") and "disk is full" in message and "\n" not in message
    assert out.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_result_files_get_the_umask_mode(tmp_path, mask):
    cfg = write_config(tmp_path)
    old = os.umask(mask)
    try:
        reference = tmp_path / "plain"
        reference.write_text("")  # a file created the ordinary way under this umask
        assert main(["run", str(cfg), "--out", str(tmp_path / "r.json"), "--quiet"]) == 0
        sweep = write_config(tmp_path, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')
        assert main(["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--quiet"]) == 0
    finally:
        os.umask(old)
    expected = stat.S_IMODE(reference.stat().st_mode)
    assert expected == 0o666 & ~mask
    written = [tmp_path / "r.json", tmp_path / "sw" / "results.csv", tmp_path / "sw" / "sweep.json",
               *(tmp_path / "sw" / "points").glob("*.json")]
    assert len(written) == 5
    for f in written:
        assert stat.S_IMODE(f.stat().st_mode) == expected, f


# -- Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_during_run_exits_130_with_one_line(tmp_path):
    cfg = marked_config(tmp_path, accesses=50_000_000)
    out = tmp_path / "r.json"
    out.write_text("previous\n")
    proc = subprocess.Popen([*PY, "run", str(cfg), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        wait_for(lambda: proc.pid in marks(tmp_path), 120, "the run to start")
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # (seen once in CI, not reproduced): show where each thread waits
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            pytest.fail(f"the run did not exit within 60 s of Ctrl-C; its threads:\n{proc.communicate(timeout=30)[1]}")
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert stderr.count("\n") == 1 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert str(out) in stderr and out.read_text() == "previous\n"


def test_ctrl_c_during_a_sweep_stops_the_workers(tmp_path):
    """Ctrl-C reaches the whole process group: the sweep exits 130 with one line, and its
    workers (which ignore SIGINT) are stopped by it, not left running."""
    cfg = marked_config(tmp_path, 50_000_000, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2, 4]\n')
    proc = subprocess.Popen([*PY, "sweep", str(cfg), "--out", str(tmp_path / "out"), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: set[int] = set()
    try:
        workers = wait_for(lambda: marks(tmp_path) if len(marks(tmp_path)) == 2 else None, 180, "two workers")
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130
        assert stderr.count("\n") == 1 and "interrupted" in stderr and "Traceback" not in stderr, stderr
        wait_for(lambda: not any(alive(p) for p in workers), 10, "the workers to exit")
    finally:
        proc.kill()
        kill_quietly(workers)


# -- sweep workers die with the sweep ------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_sweep_workers_exit_when_the_parent_is_killed(tmp_path, sig):
    """Kill the parent of a --jobs 2 sweep: its workers are gone within seconds, its stdout
    pipe reaches end-of-file (nothing holds it open, so `| tee` would not hang), and
    nothing is printed on stderr once every process holding it (multiprocessing's resource
    tracker too, which removes the pool's semaphores) has exited: it used to warn of
    "leaked semaphore objects"."""
    cfg = marked_config(tmp_path, 50_000_000, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2, 4]\n')
    proc = subprocess.Popen([*PY, "sweep", str(cfg), "--out", str(tmp_path / "out"), "--jobs", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers: set[int] = set()
    try:
        workers = wait_for(lambda: marks(tmp_path) if len(marks(tmp_path)) == 2 else None, 180, "two workers")
        assert proc.pid not in workers and all(alive(p) for p in workers)
        proc.send_signal(sig)
        proc.wait(timeout=10)
        start = time.monotonic()
        wait_for(lambda: not any(alive(p) for p in workers), 10, "the workers to exit")
        os.set_blocking(proc.stdout.fileno(), False)
        os.set_blocking(proc.stderr.fileno(), False)
        printed: list[bytes] = []

        def at_eof(pipe) -> bool:
            try:
                data = os.read(pipe.fileno(), 65536)
            except BlockingIOError:
                return False
            printed.append(data)
            return data == b""

        wait_for(lambda: at_eof(proc.stdout), 10, "end-of-file on the sweep's stdout")
        assert time.monotonic() - start < 20
        wait_for(lambda: at_eof(proc.stderr), 30, "end-of-file on the sweep's stderr")
        assert b"".join(printed) == b""
    finally:
        proc.kill()
        kill_quietly(workers)


# -- one sweep per folder ------------------------------------------------------------------


def test_a_second_sweep_into_a_busy_folder_is_refused(tmp_path):
    cfg = marked_config(tmp_path, 50_000_000, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')
    out = tmp_path / "out"
    first = subprocess.Popen([*PY, "sweep", str(cfg), "--out", str(out), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: first.pid in marks(tmp_path), 120, "the first sweep to start a point")
        manifest = (out / "sweep.json").read_text()
        second = subprocess.run([*PY, "sweep", str(cfg), "--out", str(out), "--set", "workload.accesses=500"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        err = one_line_error(second.stderr)
        assert str(out) in err and f"pid {first.pid}" in err
        assert (out / "sweep.json").read_text() == manifest  # the running sweep's files untouched
        assert not (out / "results.csv").exists()
    finally:
        first.kill()
        first.wait()
    # the kernel released the dead sweep's lock: the folder can be used again
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet", "--set", "workload.accesses=500"]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert [(r["tlb.levels[0].sets"], r["accesses"]) for r in rows] == [("1", "500"), ("2", "500")]


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_lock_file_that_is_not_a_plain_file_is_refused_and_left_alone(tmp_path, capsys, kind):
    """The lock was opened, and truncated, through a link: a sweep exited 0 and left the
    link's target empty. A link or a FIFO there is refused in one sentence."""
    cfg = write_config(tmp_path, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    if kind == "link":
        (out / "sweep.lock").symlink_to(victim)
    else:
        os.mkfifo(out / "sweep.lock")
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert str(out / "sweep.lock") in err and ("symbolic link" if kind == "link" else "not a plain file") in err
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == ["sweep.lock"]


def test_a_sweep_removes_only_its_own_stale_temporary_files(tmp_path):
    """Temporaries a killed sweep left (``.<file>.<random>.tmp``) go; a user's files stay."""
    cfg = write_config(tmp_path, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')
    out = tmp_path / "out"
    (out / "points").mkdir(parents=True)
    stale = [out / ".results.csv.k2j_x9aa.tmp", out / "points" / ".0123456789abcdef.json.abcd1234.tmp"]
    mine = [out / ".notes.tmp", out / "points" / ".draft.json.tmp", out / "notes.txt"]
    for f in stale + mine:
        f.write_text("x")
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert not any(f.exists() for f in stale) and all(f.read_text() == "x" for f in mine)
    assert sorted(p.name for p in out.glob(".*")) == [".notes.tmp"]


def test_bad_executor_options_touch_no_folder(tmp_path, capsys):
    cfg = write_config(tmp_path, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')
    for extra, flag in ((["--jobs", "0"], "--jobs 0"), (["--executor", "local", "--scheduler", "tcp://h:1"],
                                                          "--scheduler")):
        assert main(["sweep", str(cfg), "--out", str(tmp_path / "out"), *extra]) == 2
        err = one_line_error(capsys.readouterr().err)
        assert flag in err, err
    assert not (tmp_path / "out").exists()
