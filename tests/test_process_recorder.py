"""``slatframe trace record --processes``: a program and its child processes in one trace.

The parsing and merging of valgrind's logs is tested on hand-written logs; the recorder on
real programs under valgrind, whose process counts are checked against ``strace -f`` on the
same command (skipped where valgrind or strace is not installed)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from slatframe.cli import main
from slatframe.errors import SlatframeError, TraceError
from slatframe.process_trace import Accesses, Fork, LogReader, Merger, Syscall, collect_logs, write_launcher
from slatframe.trace import EXEC, EXIT, FORK, IFETCH, MAP_SHARED, PROTECT, READ, UNMAP, WRITE
from slatframe.tracetools import info

HAVE_VALGRIND = shutil.which("valgrind") is not None
HAVE_STRACE = shutil.which("strace") is not None
needs_valgrind = pytest.mark.skipif(not HAVE_VALGRIND, reason="valgrind is not installed")
needs_valgrind_and_strace = pytest.mark.skipif(not (HAVE_VALGRIND and HAVE_STRACE),
                                               reason="valgrind or strace is not installed")

LOOP = "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i + 1)); done"
LOOP_8 = ["sh", "-c", LOOP.format(n=8)]


# -- parsing and merging hand-written logs (no valgrind) ------------------------------------------

ROOT_LOG = b"""==100== Lackey, an example Valgrind tool
==100== Command: sh -c x
==100== 
SYSCALL[100,1](257) sys_openat ( 4294967196, 0x4000(/slatframe-test/libdemo.so), 524288 ) --> [async] ... 
SYSCALL[100,1](257) ... [async] --> Success(0x3) 
SYSCALL[100,1](9) sys_mmap ( 0x0, 8192, 5, 2, 3, 4096 ) --> [pre-success] Success(0x5000000) 
SYSCALL[100,1](3) sys_close ( 3 )[sync] --> Success(0x0) 
I  05000010,4
 L 1ffeff000,8
I  05001010,4
SYSCALL[100,1](56) sys_clone ( 1200011, 0x0, 0x0, 0x4a5aa10, 0x0 )   clone(fork): process 100 created child 101
 --> [pre-success] Success(0x65) 
 M 1ffeff008,8
SYSCALL[100,1](56) sys_clone ( 3d0f00, 0x5229f70, 0x522a990, 0x522a990, 0x522a6c0 ) --> [pre-success] Success(0x66) 
 S 1ffeff010,8
SYSCALL[100,2](60) exit( 0 ) --> [pre-success] Success(0x0) 
SYSCALL[100,1](11) sys_munmap ( 0x5000000, 8192 )[sync] --> Success(0x0) 
SYSCALL[100,1](231) exit_group( 0 ) --> [pre-success] Success(0x0) 
==100== 
==100== Exit code:       0
"""
# The child's first image: from its fork to its execve (the log stops inside it).
CHILD_LOG_0 = b"""==101== Command: sh -c x
==101== Parent PID: 100
==101== 
 --> [pre-success] Success(0x0) 
I  05000010,4
SYSCALL[101,1](59) sys_execve ( 0x1000(/bin/true), 0x2000, 0x3000 )"""
# The child's second image: a heap that grows and shrinks, a page made read-only, and a
# library mapped where the first image's library was (so it stays private).
CHILD_LOG_1 = b"""==101== Command: /bin/true
==101== 
SYSCALL[101,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0x4035000) 
SYSCALL[101,1](12) sys_brk ( 0x4037000 ) --> [pre-success] Success(0x4037000) 
 S 04035008,8
 S 04036008,8
SYSCALL[101,1](12) sys_brk ( 0x4036000 ) --> [pre-success] Success(0x4036000) 
SYSCALL[101,1](10) sys_mprotect ( 0x4035000, 4096, 1 )[sync] --> Success(0x0) 
SYSCALL[101,1](334) unimplemented (by the kernel) syscall: 334! (ni_syscall)
 --> [pre-fail] Failure(0x26) 
SYSCALL[101,1](257) sys_openat ( 4294967196, 0x4000(/slatframe-test/other.so), 524288 )[sync] --> Success(0x3) 
SYSCALL[101,1](9) sys_mmap ( 0x5000000, 4096, 5, 18, 3, 0 ) --> [pre-success] Success(0x5000000) 
I  05000020,4
SYSCALL[101,1](231) exit_group( 0 ) --> [pre-success] Success(0x0) 
"""


def merged(logs, root):
    merger = Merger(logs, root)
    trace = np.concatenate(list(merger.records()))
    return [(int(r["asid"]), int(r["op"]), int(r["vaddr"])) for r in trace], merger


def test_log_reader_events():
    reader = LogReader(CHILD_LOG_0, "child")
    events = list(reader)
    assert [type(e) for e in events] == [Accesses]
    assert reader.forked and reader.ended_in_exec and reader.pid == 101
    events = list(LogReader(ROOT_LOG, "root"))
    calls = [e.name for e in events if isinstance(e, Syscall)]
    assert calls == ["sys_openat", "sys_mmap", "sys_close", "sys_clone", "exit", "sys_munmap", "exit_group"]
    assert [e.child for e in events if isinstance(e, Fork)] == [101]  # a thread's clone is no fork
    opened = next(e for e in events if isinstance(e, Syscall) and e.name == "sys_openat")
    assert opened.ok and opened.value == 3  # the result of a call that blocked, on its own line
    modify = [e for e in events if isinstance(e, Accesses)][1]
    assert modify.ops.tolist() == [READ, WRITE] and modify.vaddrs.tolist() == [0x1FFEFF008] * 2


def test_merge_of_hand_written_logs():
    """Depth first: the child's whole life between the parent's fork and its next access;
    library pages shared on first touch (inherited ones faulted in by the guest); exec,
    brk, mprotect and munmap as control records; asids in order of appearance."""
    records, merger = merged({100: [ROOT_LOG], 101: [CHILD_LOG_0, CHILD_LOG_1]}, 100)
    assert records == [
        (0, MAP_SHARED, 0x5000000), (0, IFETCH, 0x5000010), (0, READ, 0x1FFEFF000),
        (0, MAP_SHARED, 0x5001000), (0, IFETCH, 0x5001010),
        (0, FORK, 1),
        (1, IFETCH, 0x5000010),  # the child inherits the shared mapping: no map_shared
        (1, EXEC, 0),
        (1, WRITE, 0x4035008), (1, WRITE, 0x4036008),
        (1, UNMAP, 0x4036000),  # brk shrank below that page
        (1, PROTECT, 0x4035000),
        (1, IFETCH, 0x5000020),  # another file where libdemo's page is shared: left private
        (1, EXIT, 0),
        (0, READ, 0x1FFEFF008), (0, WRITE, 0x1FFEFF008), (0, WRITE, 0x1FFEFF010),
        (0, UNMAP, 0x5000000), (0, UNMAP, 0x5001000),
        (0, EXIT, 0),
    ]
    assert merger.counts["processes"] == 2 and merger.counts["fork"] == 1 and merger.counts["exit"] == 2
    assert merger.counts["exec"] == 1 and merger.accesses() == 10 and merger.warnings == []


def test_pre_exec_log_missing_is_a_warning():
    """A forked child whose first log is a new image lost what it did before its exec."""
    _, merger = merged({100: [ROOT_LOG], 101: [CHILD_LOG_1]}, 100)
    assert any("before its first exec is missing" in w for w in merger.warnings)


def test_untraced_exec_missing_log_and_reused_pid():
    """An image valgrind did not follow is an exec then an exit; a child without a log is
    created and exited; a pid forked twice (the pid space wrapped) stops the merge."""
    records, merger = merged({100: [ROOT_LOG], 101: [CHILD_LOG_0]}, 100)
    child = [(op, va) for asid, op, va in records if asid == 1]
    assert child == [(IFETCH, 0x5000010), (EXEC, 0), (EXIT, 0)]
    assert any("did not trace" in w for w in merger.warnings)
    records, merger = merged({100: [ROOT_LOG]}, 100)
    assert [(a, op) for a, op, _ in records if a == 1 or op == FORK] == [(0, FORK), (1, EXIT)]
    assert any("has no valgrind log" in w for w in merger.warnings)
    twice = ROOT_LOG.replace(b" S 1ffeff010,8\n", b" S 1ffeff010,8\n" + ROOT_LOG.split(b"\n")[10] + b"\n")
    with pytest.raises(SlatframeError, match="pid 101 was used by two processes"):
        merged({100: [twice], 101: [CHILD_LOG_0, CHILD_LOG_1]}, 100)


def test_bad_access_line_is_named():
    log = b"==7== Command: x\nI  0401ab70,3\n L zz,8\n"
    with pytest.raises(TraceError, match=r"^bad: line 3 is ' L zz,8'"):
        list(LogReader(log, "bad"))


def test_collect_logs_orders_each_pids_images(tmp_path):
    for name in ("log.7", "log.7.1", "log.7.0", "log.8", "launcher.sh"):
        (tmp_path / name).write_text("")
    logs = collect_logs(tmp_path)
    assert {pid: [p.name for p in paths] for pid, paths in logs.items()} == \
        {7: ["log.7.0", "log.7.1", "log.7"], 8: ["log.8"]}


def test_launcher_moves_the_replaced_images_log_aside(tmp_path):
    """What valgrind runs at an exec: the log of the image being replaced (same pid) is
    moved to the next free log.PID.N, and valgrind runs with VALGRIND_LAUNCHER set to it."""
    fake = tmp_path / "fake-valgrind"
    fake.write_text(f'#!/bin/sh\necho "$VALGRIND_LAUNCHER $*" > {tmp_path}/ran\n')
    fake.chmod(0o755)
    launcher = write_launcher(tmp_path, tmp_path / "log", str(fake))
    script = f'echo one > {tmp_path}/log.$$.0; echo two > {tmp_path}/log.$$; exec {launcher} --tool=lackey prog'
    subprocess.run(["sh", "-c", script], check=True)
    (old, moved), = [(p, p.with_name(p.name[:-2] + ".1")) for p in tmp_path.glob("log.*.0")]
    assert old.read_text() == "one\n" and moved.read_text() == "two\n"
    assert not moved.with_name(moved.name[:-2]).exists()
    assert (tmp_path / "ran").read_text() == f"{launcher} --tool=lackey prog\n"


def test_missing_valgrind_is_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("slatframe.process_trace.shutil.which", lambda name: None)
    assert main(["trace", "record", "--processes", "--out", str(tmp_path / "t.npz"), "--", "/bin/true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valgrind is not installed; install it" in err
    assert list(tmp_path.iterdir()) == []


# -- real programs under valgrind ------------------------------------------------------------------


def strace_processes(command, tmp_path) -> dict[str, int]:
    """Processes created (successful fork, vfork, clone and clone3 that are not threads),
    exited (``+++ exited``/``+++ killed`` of those and the first process) and execs after
    the first, as ``strace -f`` reports them for ``command``."""
    log = tmp_path / "strace.txt"
    subprocess.run(["strace", "-f", "-o", str(log), *command], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    pending: dict[str, str] = {}
    created, execs, threads, exits = 0, 0, set(), []
    for line in log.read_text().splitlines():
        pid, text = line.split(None, 1)
        if text.endswith("<unfinished ...>"):
            pending[pid] = text[: -len("<unfinished ...>")]
            continue
        resumed = re.match(r"<\.\.\. \w+ resumed>(.*)", text)
        if resumed:
            text = pending.pop(pid, "") + resumed.group(1)
        call = re.match(r"(\w+)\((.*)\)\s*= (-?\d+)", text)
        if call and call.group(1) in ("fork", "vfork", "clone", "clone3") and int(call.group(3)) > 0:
            if "CLONE_THREAD" in call.group(2):
                threads.add(call.group(3))
            else:
                created += 1
        execs += bool(call and call.group(1) == "execve" and call.group(3) == "0")
        if re.match(r"\+\+\+ (exited with|killed by)", text):
            exits.append(pid)
    return {"created": created, "exited": sum(pid not in threads for pid in exits), "execs": execs - 1}


def record(command, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slatframe.cli", "trace", "record", "--processes", "--out",
                           str(out), "--", *command], capture_output=True, text=True)


def check_process_order(trace: np.ndarray) -> None:
    """Valid process records: asid 0 runs first and exits last; each other asid is
    created by a fork of a live process, has every record after that fork and an exit as
    its last record, and no record after it; a fork's child is a fresh asid."""
    asid, op, vaddr = trace["asid"].astype(np.int64), trace["op"], trace["vaddr"].astype(np.int64)
    assert asid[0] == 0 and (asid[-1], op[-1]) == (0, EXIT)
    forks = np.flatnonzero(op == FORK)
    children = vaddr[forks]
    assert len(set(children.tolist())) == len(children) and 0 not in children
    assert sorted(np.unique(asid).tolist()) == [0, *sorted(children.tolist())]
    for at, child in zip(forks.tolist(), children.tolist()):
        mine = np.flatnonzero(asid == child)
        assert mine[0] > at and op[mine[-1]] == EXIT and np.count_nonzero(op[mine] == EXIT) == 1
        parent = np.flatnonzero(asid == asid[at])
        assert parent[0] <= at < parent[-1]  # the parent is alive at its fork
    for a in np.unique(asid).tolist():
        mine = np.flatnonzero(asid == a)
        assert np.count_nonzero(op[mine] == EXIT) == 1 and op[mine[-1]] == EXIT


@pytest.fixture(scope="module")
def loop_8(tmp_path_factory):
    """A shell running /bin/true 8 times, recorded with --processes."""
    if not HAVE_VALGRIND:
        pytest.skip("valgrind is not installed")
    out = tmp_path_factory.mktemp("loop") / "loop.npz"
    proc = record(LOOP_8, out)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    return out


@needs_valgrind_and_strace
def test_shell_loop_process_counts_match_strace(loop_8, tmp_path, registry):
    expected = strace_processes(LOOP_8, tmp_path)
    assert expected["created"] >= 8  # strace saw the loop's processes
    stats = info(loop_8, None, registry)
    assert stats["processes.created"] == expected["created"]
    assert stats["processes.exited"] == expected["exited"]
    assert stats["ops.exec"] == expected["execs"]
    assert stats["asids"] == expected["exited"] and stats["ops.map_shared"] > 0


@needs_valgrind
def test_fork_exec_exit_records_in_a_valid_order(loop_8, tmp_path):
    t = np.load(loop_8)
    trace = np.empty(len(t["op"]), dtype=[("asid", "u2"), ("op", "u1"), ("vaddr", "u8")])
    for name in trace.dtype.names:
        trace[name] = t[name]
    check_process_order(trace)
    # a parent that forks a child that execs, then execs itself
    out = tmp_path / "fork-exec.npz"
    proc = record(["sh", "-c", "/bin/true; exec /bin/true"], out)
    assert proc.returncode == 0, proc.stderr
    t = np.load(out)
    lifecycle = [(int(a), int(o)) for a, o in zip(t["asid"], t["op"]) if o in (FORK, EXEC, EXIT)]
    assert lifecycle == [(0, FORK), (1, EXEC), (1, EXIT), (0, EXEC), (0, EXIT)]


@needs_valgrind
def test_recorded_processes_run_under_shadow_paging(loop_8, tmp_path):
    t = np.load(loop_8)
    forks = int(np.count_nonzero(t["op"] == FORK))
    config = tmp_path / "exp.toml"
    config.write_text(f'''[experiment]
name = "loop-under-shadow"
[machine]
slat = "shadow"
[[tlb.levels]]
name = "l1"
sets = 16
ways = 4
[[vms]]
name = "vm0"
memory = "1G"
[workload]
source = "npz"
path = "{loop_8}"
''')
    out = tmp_path / "r.json"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert m["processes.created"] == forks >= 8 and m["processes.exited"] == forks + 1
    assert m["accesses"] == int(np.count_nonzero(t["op"] <= IFETCH))
    assert m["events.exec"] == forks and m["guest.pt_writes.fork"] > 0 and m["vm_exits"] > 0


@needs_valgrind
def test_failing_program_still_gives_its_trace(tmp_path):
    out = tmp_path / "fail.npz"
    proc = record(["sh", "-c", "/bin/true; exit 3"], out)
    assert proc.returncode == 0, proc.stderr
    assert "the program exited with 3" in proc.stdout and "2 process(es)" in proc.stdout
    assert np.count_nonzero(np.load(out)["op"] == EXIT) == 2


@needs_valgrind
def test_program_that_cannot_run_keeps_the_old_file(tmp_path):
    out = tmp_path / "t.npz"
    out.write_bytes(b"previous")
    proc = record(["/nonexistent/program"], out)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "valgrind wrote no log" in proc.stderr
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]


# -- fuzz: damaged logs give records or one sentence, never a traceback ----------------------------

def _damaged(draw_lines, base: bytes) -> bytes:
    lines = base.split(b"\n")
    return b"\n".join(draw_lines(lines))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_damaged_logs_merge_or_stop_with_one_sentence(data):
    """Lines of the hand-written logs dropped, repeated, swapped or corrupted: the merge
    gives a trace or stops with a SlatframeError of one sentence."""
    def mutate(lines):
        out = []
        for line in lines:
            action = data.draw(st.sampled_from(["keep"] * 6 + ["drop", "twice", "garble", "cut"]))
            if action == "keep":
                out.append(line)
            elif action == "twice":
                out += [line, line]
            elif action == "garble":
                out.append(data.draw(st.binary(max_size=40)).replace(b"\n", b" "))
            elif action == "cut":
                out.append(line[:data.draw(st.integers(0, max(0, len(line) - 1)))])
        return out

    logs = {100: [_damaged(mutate, ROOT_LOG)], 101: [_damaged(mutate, CHILD_LOG_0), _damaged(mutate, CHILD_LOG_1)]}
    try:
        merged(logs, 100)
    except SlatframeError as exc:
        assert "\n" not in str(exc) and str(exc).endswith(".")
