"""Helpers for tests that drive the command line: tiny config files, a plugin that marks
when a run starts, and process look-ups in /proc."""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any, Callable

from slatframe.cli import main
from slatframe.testing import tiny_config
from slatframe.tomlwrite import to_toml


def call(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured; argparse's exit becomes its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def write_config(folder: Path, name: str = "cfg.toml", sweep: str = "", **sections: Any) -> Path:
    """A tiny config (``slatframe.testing.tiny_config`` with ``sections``, engine reference)
    written as TOML, with an optional ``[sweep]`` text appended."""
    raw = tiny_config(**sections)
    raw["experiment"].setdefault("engine", "reference")
    path = folder / name
    path.write_text(to_toml(raw) + ("\n[sweep]\n" + sweep if sweep else ""))
    return path


#: A plugin file: the run observer ``mark`` writes ``marks/<pid>`` beside the file when a
#: run starts, so a test knows that a process is inside a run.
MARK_PLUGIN = '''\
import os
from pathlib import Path

from slatframe import hookimpl
from slatframe.records import RunObserverRecord

MARKS = Path(__file__).parent / "marks"


class Mark:
    def __init__(self, options):
        pass

    def started(self, config):
        MARKS.mkdir(exist_ok=True)
        (MARKS / str(os.getpid())).write_text("")


@hookimpl
def slatframe_run_observers():
    return [RunObserverRecord(name="mark", summary="marks the start of a run", factory=Mark)]
'''


def marked_config(folder: Path, accesses: int, name: str = "cfg.toml", sweep: str = "") -> Path:
    """A tiny config whose runs announce themselves in ``folder/marks/<pid>``."""
    (folder / "mark.py").write_text(MARK_PLUGIN)
    return write_config(folder, name, sweep,
                        experiment={"name": "marked", "seed": 1, "plugins": ["mark.py"], "observers": ["mark"]},
                        workload={"source": "synthetic", "accesses": accesses, "footprint": "1M"})


def marks(folder: Path) -> set[int]:
    """Pids of the processes that started a run of a :func:`marked_config`."""
    d = folder / "marks"
    return {int(p.name) for p in d.iterdir()} if d.is_dir() else set()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it runs nothing, holds no file)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def kill_quietly(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
