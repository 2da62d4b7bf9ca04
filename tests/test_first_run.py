"""The first run on an installation whose compiled engine is not compiled yet: a small
``auto`` run takes the reference tier (same counters), says why, and starts the build
of the compiled engine in the background; a large one waits for the compile. A long
``auto`` run of the generic loop starts the build of its TLB shape's loop the same way."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import slatframe.engine as engine_module
from slatframe.engine import FIRST_RUN_LIMIT, choose_engine, run_experiment
from slatframe.engine import codegen, prebuild
from slatframe.engine.shape import Shape
from slatframe.registry import Registry
from slatframe.testing import build, tiny_config
from tiny_files import wait_for


@pytest.fixture
def fresh_install(monkeypatch):
    """The engine not compiled yet, the shortcut on, background builds recorded."""
    monkeypatch.setenv("SLATFRAME_FIRST_RUN", "reference")
    monkeypatch.setattr(codegen, "engine_cached", lambda registry, shape=None: False)
    started = []
    monkeypatch.setattr(prebuild, "start_background_build",
                        lambda files, name, shape=None: started.append((tuple(files), shape)) or True)
    return started


def test_a_small_first_run_takes_the_reference_tier_and_builds_meanwhile(fresh_install, monkeypatch):
    config, registry = build(tiny_config(workload={"source": "synthetic", "accesses": 3000}))
    first = run_experiment(config, registry)
    assert first.engine == "reference"
    assert first.engine_reason.startswith("auto: the compiled engine is not compiled yet")
    assert "being compiled in the background" in first.engine_reason and fresh_install == [((), None)]
    monkeypatch.setenv("SLATFRAME_FIRST_RUN", "compiled")
    later = run_experiment(config, registry)
    assert later.engine == "compiled" and later.metrics == first.metrics


def test_a_large_first_run_waits_for_the_compile(fresh_install):
    config, registry = build(tiny_config(workload={"source": "synthetic", "accesses": FIRST_RUN_LIMIT + 1}))
    assert choose_engine(config, registry)[0] == "compiled"
    config, registry = build(tiny_config(workload={"source": "synthetic", "accesses": FIRST_RUN_LIMIT}))
    assert choose_engine(config, registry)[0] == "reference"
    assert choose_engine(config, registry, "compiled")[0] == "compiled"  # asked for: compiled
    assert fresh_install == []  # choosing starts nothing; running does


def test_engine_cached_looks_for_the_compiled_loop(registry, tmp_path, monkeypatch):
    run_experiment(*build(tiny_config(experiment={"name": "c", "engine": "compiled"})))
    assert codegen.engine_cached(registry)
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path))
    assert not codegen.engine_cached(registry)


def test_one_build_at_a_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SLATFRAME_BACKGROUND_BUILD", "1")  # the suite's default is 0 (conftest.py)
    held = prebuild._lock()
    assert held is not None and prebuild._lock() is None
    assert prebuild.start_background_build((), "m") is False  # a build is running
    assert prebuild.main(["--shape", "12"]) == 1  # the command says so, and builds nothing
    assert capsys.readouterr().err.startswith("another build is running (lock ")
    import os

    os.utime(held, (0, 0))  # a lock left by a build that died long ago does not stop a new one
    monkeypatch.setattr(prebuild.subprocess, "Popen", lambda *a, **k: None)
    assert prebuild.start_background_build((), "m") is True and not held.exists()
    assert prebuild._lock() is not None
    monkeypatch.setenv("SLATFRAME_BACKGROUND_BUILD", "0")
    (tmp_path / prebuild.LOCK).unlink()
    assert prebuild.start_background_build((), "m") is False
    monkeypatch.setenv("SLATFRAME_BACKGROUND_BUILD", "1")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path / "file" / "kernels"))  # a folder that cannot be made
    assert prebuild.start_background_build((), "m") is False


def test_a_failed_background_build_leaves_its_output_and_later_runs_say_so(tmp_path, monkeypatch):
    """A background build writes to its log and removes it only on success; a log left
    while no build runs makes the next first run say the build failed, name the file, and
    start no other."""
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SLATFRAME_BACKGROUND_BUILD", "1")
    children = []
    real_popen = prebuild.subprocess.Popen
    monkeypatch.setattr(prebuild.subprocess, "Popen", lambda *a, **k: children.append(real_popen(*a, **k)))
    missing = tmp_path / "gone.py"  # the build fails at once: its plugin file is not there
    assert prebuild.start_background_build([missing], "mod") is True
    assert children[0].wait(timeout=120) != 0
    assert prebuild.failed_build("mod") == prebuild.build_log("mod") and "gone.py" in prebuild.build_log("mod").read_text()
    held = prebuild._lock()  # while a build runs, its log is no failure
    assert prebuild.failed_build("mod") is None
    held.unlink()

    monkeypatch.setenv("SLATFRAME_FIRST_RUN", "reference")
    monkeypatch.setattr(codegen, "engine_cached", lambda registry, shape=None: False)
    config, registry = build(tiny_config(workload={"source": "synthetic", "accesses": 3000}))
    log = prebuild.build_log(codegen.module_name(registry))
    log.write_text("Traceback ...\n")
    result = run_experiment(config, registry)
    assert result.engine == "reference" and len(children) == 1  # no second build
    assert result.engine_reason.endswith(f"; the background build of the generic loop failed (its output: {log}), so "
                                         "none was started: `python -m slatframe.engine.prebuild` builds it in the "
                                         "foreground and shows why")
    levels = [{"name": "l1", "sets": 4, "ways": 2}, {"name": "l2", "sets": 8, "ways": 4, "page_sizes": ["4K", "2M"]}]
    plugin = tmp_path / "mine.py"  # the command names the shape and the plugin files, as the build got them
    plugin.write_text("")
    config, registry = build(tiny_config(experiment={"name": "p", "plugins": ["mine.py"]}, tlb={"levels": levels}),
                             base_dir=tmp_path)
    shape = Shape(((12,), (12, 21)))
    log = prebuild.build_log(codegen.module_name(registry, shape))
    log.write_text("")
    assert prebuild.next_run_build(registry.files, registry, shape, "; started") == (
        f"; the background build of {shape.loop_name()} failed (its output: {log}), so none was started: "
        f"`python -m slatframe.engine.prebuild --shape 12/12,21 {plugin.resolve()}` builds it in the foreground and "
        "shows why")
    assert len(children) == 1


def test_the_build_command_refuses_a_missing_plugin_file_in_one_sentence(tmp_path, capsys, serial_builds):
    with pytest.raises(SystemExit) as exit_:
        prebuild.main([str(tmp_path / "gone.py")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m slatframe.engine.prebuild: error: the build's plugin files: experiment.plugins names "
        f"'{tmp_path / 'gone.py'}', which does not exist (looked in {tmp_path}).")


def test_a_build_that_succeeds_removes_the_failed_builds_log(registry, tmp_path, serial_builds):
    """The build command (in the foreground, or a background build given its log) removes
    what a failed build of the same module left."""
    log = prebuild.build_log(codegen.module_name(registry))
    other = tmp_path / "background.log"
    try:
        log.write_text("Traceback ...\n")
        other.write_text("")
        assert prebuild.main(["--log", str(other)]) == 0
        assert not log.exists() and not other.exists()
    finally:
        log.unlink(missing_ok=True)


def test_the_build_command_compiles_or_finds_the_engine(registry, serial_builds):
    proc = subprocess.run([sys.executable, "-m", "slatframe.engine.prebuild"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "compiled, or found in numba's cache: the generic loop\n"
    assert codegen.engine_cached(registry)


def test_a_first_run_with_plugin_objects_starts_no_build(fresh_install):
    """Another process cannot build a registry holding plugin objects again: no build, and
    the reason does not say one runs."""
    import types

    registry = Registry(plugins=[types.ModuleType("mine")])  # any object: no file says what it holds
    assert registry.files is None and Registry().files == ()
    config, registry = build(tiny_config(workload={"source": "synthetic", "accesses": 3000}), registry)
    first = run_experiment(config, registry)
    assert first.engine == "reference" and "background" not in first.engine_reason and fresh_install == []


@pytest.fixture
def shape_not_compiled(monkeypatch):
    """The generic loop compiled, no shaped one; background builds recorded."""
    monkeypatch.setattr(codegen, "engine_cached", lambda registry, shape=None: shape is None)
    started = []
    monkeypatch.setattr(prebuild, "start_background_build",
                        lambda files, name, shape=None: started.append((tuple(files), shape)) or True)
    return started


def test_a_long_auto_run_of_the_generic_loop_builds_its_shape(shape_not_compiled, monkeypatch, tmp_path):
    levels = [{"name": "l1", "sets": 4, "ways": 2}, {"name": "l2", "sets": 8, "ways": 4, "page_sizes": ["4K", "2M"]}]
    raw = tiny_config(experiment={"name": "long", "engine": "compiled"}, tlb={"levels": levels})
    config, registry = build(raw)
    short = run_experiment(config, registry)  # 1,000 accesses: far below the threshold
    assert short.engine_reason.endswith("experiment.loop = 'shaped' compiles it once)") and shape_not_compiled == []
    monkeypatch.setattr(engine_module, "SHAPED_BUILD_AFTER_S", 0.0)
    long = run_experiment(config, registry)
    assert "so the loop for the TLB's shape is being compiled in the background for the next run" in long.engine_reason
    assert shape_not_compiled == [((), Shape(((12,), (12, 21))))] and long.metrics == short.metrics
    plugin = tmp_path / "mine.py"  # a plugin file: the build gets its resolved path
    plugin.write_text("")
    config, registry = build({**raw, "experiment": {**raw["experiment"], "plugins": ["mine.py"]}}, base_dir=tmp_path)
    run_experiment(config, registry)
    assert shape_not_compiled[-1] == ((plugin.resolve(),), Shape(((12,), (12, 21))))
    shape_not_compiled.clear()
    for loop in ("generic", "shaped"):  # asked for: nothing to build for the next run (shaped compiles now)
        if loop == "shaped":
            monkeypatch.setattr(codegen, "engine_cached", lambda registry, shape=None: True)
        asked, reg = build({**raw, "experiment": {**raw["experiment"], "loop": loop}})
        assert "background" not in run_experiment(asked, reg).engine_reason
    assert shape_not_compiled == []


def test_shape_text_round_trips_and_bad_shapes_are_refused(serial_builds):
    for shape in (Shape(((12,),)), Shape(((12,), (12, 21))), Shape(((12, 21, 30), (12,), (21,)))):
        assert prebuild.parse_shape(prebuild.shape_text(shape)) == shape
    for bad in ("", "12/", "x", "12,12", "21,12", "11", "12,13,14,15,16", "12//21", "12;21"):
        with pytest.raises(ValueError, match=f"--shape {bad!r} is not a TLB shape: expected levels separated by"):
            prebuild.parse_shape(bad)
    proc = subprocess.run([sys.executable, "-m", "slatframe.engine.prebuild", "--shape", "12/x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--shape '12/x' is not a TLB shape" in proc.stderr


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789,/ x-", max_size=14) | st.text(max_size=10))
def test_any_shape_text_is_a_shape_or_one_sentence(text):
    try:
        shape = prebuild.parse_shape(text)
    except ValueError as exc:
        assert str(exc).startswith(f"--shape {text!r} is not a TLB shape") and "\n" not in str(exc)
    else:
        assert prebuild.parse_shape(prebuild.shape_text(shape)) == shape


def test_the_build_command_compiles_a_shape_that_a_real_config_then_loads(registry, serial_builds):
    """The build compiles the shaped loop on a tiny native config with another TLB; a fresh
    process running an EPT config with walk caches and two VMs of that shape then loads it
    from numba's cache, compiling nothing (the loop's argument types do not depend on the
    config). The shape is tests/test_shaped_loop.py's, so the suite compiles it once."""
    from test_shaped_loop import SHAPE

    proc = subprocess.run([sys.executable, "-m", "slatframe.engine.prebuild", "--shape", prebuild.shape_text(SHAPE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert codegen.engine_cached(registry, SHAPE)
    check = (
        "from test_shaped_loop import shaped_config, SHAPE\n"
        "from slatframe.counters import Counters\n"
        "from slatframe.engine import make_engine\n"
        "from slatframe.machine import build_machine\n"
        "from slatframe.registry import Registry\n"
        "config, registry = shaped_config(Registry())\n"
        "engine = make_engine('compiled', build_machine(config, registry, Counters()), registry, SHAPE)\n"
        "engine.warm_up()\n"
        "print(sum(engine.k.run.stats.cache_hits.values()), sum(engine.k.run.stats.cache_misses.values()))\n")
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=__file__.rsplit("/", 1)[0])
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["1", "0"]


def test_the_build_command_takes_a_config_files_shape(registry, tmp_path, serial_builds):
    """--shape-of: the shape of a config file (here tests/test_shaped_loop.py's, compiled by
    the test above or loaded from the cache), and one sentence for a config without one."""
    from test_shaped_loop import SHAPE

    levels = ('[[tlb.levels]]\nname = "l1"\nsets = 4\nways = 2\n{}\n'
              '[[tlb.levels]]\nname = "l2"\nsets = 8\nways = 4\npage_sizes = ["4K", "2M"]\n')
    text = ('[experiment]\nname = "x"\n[machine]\nslat = "native"\nhost_memory = "4G"\n{}'
            '[[vms]]\nname = "vm0"\nmemory = "1G"\n[workload]\nsource = "synthetic"\naccesses = 10\n')
    (tmp_path / "shaped.toml").write_text(text.format(levels.format("")))
    (tmp_path / "split.toml").write_text(text.format(levels.format('side = "instruction"')))
    command = [sys.executable, "-m", "slatframe.engine.prebuild", "--shape-of"]
    proc = subprocess.run(command + [str(tmp_path / "shaped.toml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"compiled, or found in numba's cache: the loop compiled for the TLB's shape, {SHAPE.describe()}\n"
    assert codegen.engine_cached(registry, SHAPE)
    proc = subprocess.run(command + [str(tmp_path / "split.toml")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].endswith(
        "split.toml: no loop compiled for this config's TLB: TLB level 'l1' serves instruction accesses only, and "
        "a loop compiled for the TLB needs every level to serve both.")


TINY_MODULE = "from numba import njit\n\n\n@njit(cache=True)\ndef run(x):\n    return x + 1\n"
LOAD_AND_LOCATE = """
import importlib.util, sys
from pathlib import Path
source = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location(source.stem, source)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.run(1)
from slatframe.engine.codegen import numba_cache_folder
print(numba_cache_folder(source))
"""


@pytest.mark.parametrize("numba_dir", [None, "numba-cache"])
def test_the_engine_is_looked_for_where_numba_caches_it(tmp_path, numba_dir):
    """With NUMBA_CACHE_DIR set (containers, clusters, a read-only site-packages) numba
    caches a module's functions there, not beside the module: auto looked beside it only,
    so it never saw the engine compiled. The folder is the one numba itself wrote to."""
    source = tmp_path / "kernels" / "tiny_module.py"
    source.parent.mkdir()
    source.write_text(TINY_MODULE)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    if numba_dir:
        env["NUMBA_CACHE_DIR"] = str(tmp_path / numba_dir)
    out = subprocess.run([sys.executable, "-c", LOAD_AND_LOCATE, str(source)], env=env, capture_output=True,
                         text=True, check=True)
    folder = Path(out.stdout.strip())
    assert folder.parent == (tmp_path / numba_dir if numba_dir else source.parent)
    assert any(p.name.startswith("tiny_module.run-") and p.suffix == ".nbi" for p in folder.iterdir())
    beside = list((source.parent / "__pycache__").glob("*.nbi"))  # (Python's own .pyc may be there)
    assert bool(beside) == (numba_dir is None)


COMPILE_UNDER_LOCK = """
import importlib.util, sys
from pathlib import Path
from slatframe.engine.codegen import compiling
source, role = Path(sys.argv[1]), sys.argv[2]
spec = importlib.util.spec_from_file_location(source.stem, source)
module = sys.modules[source.stem] = importlib.util.module_from_spec(spec)  # numba's cache imports it by name
spec.loader.exec_module(module)
with compiling(source.stem):
    print("held", flush=True)
    if role == "first":
        sys.stdin.readline()  # compile only when the test says so
    module.run.compile("int64(int64)")
print(sum(module.run.stats.cache_hits.values()), sum(module.run.stats.cache_misses.values()), flush=True)
"""


def _blocked_on_a_lock(pid: int) -> bool:
    """/proc/locks marks a process waiting for a lock with '->' before the lock's line."""
    with open("/proc/locks") as fh:
        return any(line.split()[1] == "->" and line.split()[5] == str(pid) for line in fh if "->" in line)


def test_a_second_process_waits_for_the_first_compile_and_loads_it(tmp_path):
    """Two processes that need a module no cache holds compile it once: the second waits on
    its compile lock (seen in /proc/locks), then numba loads what the first stored (a cache
    hit, no compile of its own)."""
    folder = tmp_path / "kernels"
    folder.mkdir()
    source = folder / "tiny_locked.py"
    source.write_text(TINY_MODULE)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["SLATFRAME_CACHE_DIR"] = str(folder)
    run = [sys.executable, "-c", COMPILE_UNDER_LOCK, str(source)]
    first = subprocess.Popen([*run, "first"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    second = None
    try:
        assert first.stdout.readline() == "held\n"
        second = subprocess.Popen([*run, "second"], stdout=subprocess.PIPE, text=True, env=env)
        wait_for(lambda: _blocked_on_a_lock(second.pid), 120, "the second process to wait on the lock")
        first.stdin.write("go\n")
        first.stdin.flush()
        assert first.communicate(timeout=120)[0].split() == ["0", "1"]  # compiled: one miss, no hit
        out = second.communicate(timeout=120)[0].split()
        assert out == ["held", "1", "0"]  # loaded from the cache the first wrote
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()


def test_a_build_lock_whose_process_died_is_not_held(tmp_path, monkeypatch):
    """A background build killed before it removed its lock leaves the lock file: the
    next run sees its process is gone and builds (it used to wait 15 minutes); a lock of
    a live process, or one being written (no id yet), is held."""
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path))
    lock = tmp_path / prebuild.LOCK
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout.strip())
    assert not prebuild._held(lock) and not lock.exists()
    for text in (str(os.getpid()), ""):
        lock.write_text(text)
        assert prebuild._held(lock)
    assert prebuild._lock() is None  # held by this process: no second build
