"""Build the compiled engine ahead of use: ``python -m slatframe.engine.prebuild
[PLUGIN_FILE ...]`` compiles it (or finds it in numba's cache) for the builtins and the
given plugin files, on a tiny configuration; one compiled module serves every
configuration of that registry (:mod:`slatframe.engine.codegen`).

A first ``auto`` run on an installation whose engine is not compiled yet runs small
workloads on the reference tier and starts this in the background
(:func:`start_background_build`), so the next run finds the engine compiled. A lock file
in the kernel cache folder keeps two builds from running at once.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from .codegen import cache_dir

LOCK = "prebuild.lock"
STALE_LOCK_S = 15 * 60  #: a lock older than this is from a build that died


def _held(path: Path) -> bool:
    """Whether a build holds the lock at ``path`` (a lock older than STALE_LOCK_S, left
    by a build that died, is removed)."""
    try:
        if time.time() - path.stat().st_mtime <= STALE_LOCK_S:
            return True
        path.unlink(missing_ok=True)
    except OSError:
        pass
    return False


def _lock() -> Path | None:
    """Take the build lock; None when another build holds it."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    if _held(path):
        return None
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return path


def build(plugin_files: Sequence[str] = ()) -> bool:
    """Compile the engine for the builtins and ``plugin_files``; False when another build
    holds the lock."""
    lock = _lock()
    if lock is None:
        return False
    try:
        from ..counters import Counters
        from ..machine import build_machine
        from ..testing import build as build_config, tiny_config
        from .compiled import CompiledEngine

        config, registry = build_config(tiny_config(experiment={"name": "prebuild",
                                                                "plugins": [str(Path(f).resolve()) for f in plugin_files]}))
        CompiledEngine(build_machine(config, registry, Counters()), registry).warm_up()
    finally:
        lock.unlink(missing_ok=True)
    return True


def start_background_build(plugin_files: Sequence[str]) -> bool:
    """Start :func:`build` in a detached process (its output discarded); False when
    ``SLATFRAME_BACKGROUND_BUILD=0`` or a build is running already."""
    if os.environ.get("SLATFRAME_BACKGROUND_BUILD", "1") == "0" or _held(cache_dir() / LOCK):
        return False
    subprocess.Popen([sys.executable, "-m", "slatframe.engine.prebuild", *plugin_files], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return True


if __name__ == "__main__":
    sys.exit(0 if build(sys.argv[1:]) else 1)
