from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The suite checks what the compiled tier does under "auto"; the first-run shortcut (the
# reference tier while the engine is not compiled yet) is tested on its own, with the
# variable set back.
os.environ["SLATFRAME_FIRST_RUN"] = "compiled"
# Every call of the compiled loop through its entry point checks that its argument types
# are the ones the dispatcher typed at the first call (slatframe.engine.compiled).
os.environ["SLATFRAME_CHECK_ENTRY"] = "1"
# No test run starts a detached build of a loop (a long generic run would, for its shape):
# it would hold the shared build lock that the build-command tests take, and compile for
# minutes beside the suite. The tests of background builds set it back.
os.environ["SLATFRAME_BACKGROUND_BUILD"] = "0"

from slatframe.registry import Registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The registry of installed plugins (builtins through their entry points)."""
    return Registry()


@pytest.fixture
def serial_builds(tmp_path_factory):
    """Hold, for the test, an exclusive lock that every test process of this pytest run
    shares: tests that run the build command or take its lock (prebuild.lock in the
    shared kernel cache, which a second build refuses) take it, so two of them never run
    at once on different workers. It blocks until the other test is done: no timer."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    shared = root.parent if root.name.startswith("popen-gw") else root  # xdist: one folder per worker
    with open(shared / "serial-builds.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


TESTS = Path(__file__).resolve().parent
#: The engine modules the suite compiles (tests/compile_modules.py), and the test files whose
#: runs need them.
MODULES = ("generic", "shaped", "exact")
_builds: list[subprocess.Popen] = []


def _runs_the_suite(config: pytest.Config) -> bool:
    """Whether this session runs the whole suite (``pytest``, ``pytest tests``), not a few files."""
    return all(Path(arg.split("::")[0]).resolve() in (TESTS, TESTS.parent) for arg in config.args)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """When the whole suite runs and the engine modules it needs are not compiled yet,
    compile each in a process of its own from the start (the cores then compile different
    modules at once, not the same one twice); a test that needs one meanwhile waits on
    its compile lock (slatframe.engine.codegen.compiling). SLATFRAME_TEST_PREBUILD=0
    turns this off."""
    if hasattr(session.config, "workerinput") or os.environ.get("SLATFRAME_TEST_PREBUILD") == "0" \
            or not _runs_the_suite(session.config):
        return
    for which in MODULES:
        proc = subprocess.Popen([sys.executable, str(TESTS / "compile_modules.py"), which], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        proc.stdout.readline()  # "held": the lock is taken before any test runs (or the process ended)
        _builds.append(proc)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for proc in _builds:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
