"""Build the compiled engine ahead of use: ``python -m slatframe.engine.prebuild [--shape
SHAPE | --shape-of CONFIG | --exact-of CONFIG] [PLUGIN_FILE ...]`` compiles it (or finds
it in numba's cache) for the builtins and the given plugin files, on a tiny configuration:
the generic loop, which serves every configuration of that registry
(:mod:`slatframe.engine.codegen`), or the loop for one TLB shape: ``--shape 12/12,21``
(levels in lookup order separated by ``/``, each one's page-size shifts;
:class:`slatframe.engine.shape.Shape`) or ``--shape-of`` a config file's, with its plugin
files, or ``--exact-of`` the loop for a config file's whole TLB config
(``experiment.loop = "exact"``).

A first ``auto`` run on an installation whose engine is not compiled yet runs small
workloads on the reference tier and starts this in the background
(:func:`start_background_build`), so the next run finds the engine compiled; a long
``auto`` run of the generic loop starts the build of its shape's loop the same way. A lock
file in the kernel cache folder keeps two builds from running at once. A background
build's output goes to ``NAME.build.log`` beside the module it builds, removed when the
build succeeds: one left while no build runs is a build that failed, which later runs
report (with the file) instead of starting it again (:func:`failed_build`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from .codegen import cache_dir
from .shape import MAX_SHIFTS, Shape

LOCK = "prebuild.lock"
STALE_LOCK_S = 15 * 60  #: a lock older than this is from a build that died


def build_log(name: str) -> Path:
    """Where a background build of the engine module ``name`` writes its output."""
    return cache_dir() / f"{name}.build.log"


def failed_build(name: str) -> Path | None:
    """The output of a background build of module ``name`` that did not succeed (its log,
    left while no build runs), or None."""
    log = build_log(name)
    return log if log.exists() and not _held(cache_dir() / LOCK) else None


def failure_reason(log: Path, what: str, command: str) -> str:
    """What a result's engine reason adds when the background build of ``what`` (the build
    ``command``) failed."""
    return (f"; the background build of {what} failed (its output: {log}), so none was started: "
            f"`{command}` builds it in the foreground and shows why")


def _alive(pid_text: str) -> bool:
    """Whether the process whose id the lock holds still runs (True when unknown)."""
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, OverflowError):
        return True  # being written: the build that takes it writes its id next
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _held(path: Path) -> bool:
    """Whether a build holds the lock at ``path``. A lock left by a build that died (its
    process is gone, or the lock is older than STALE_LOCK_S) is removed."""
    try:
        if time.time() - path.stat().st_mtime <= STALE_LOCK_S and _alive(path.read_text().strip()):
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


def shape_text(shape: Shape) -> str:
    """``shape`` as ``--shape`` takes it: '12/12,21'."""
    return "/".join(",".join(str(s) for s in level) for level in shape.shifts)


def parse_shape(text: str) -> Shape:
    """The :class:`Shape` ``--shape`` names (ValueError, in one sentence, when it names none)."""
    try:
        shifts = tuple(tuple(int(s) for s in level.split(",")) for level in text.split("/"))
    except ValueError:
        shifts = ()
    if not shifts or any(not 1 <= len(level) <= MAX_SHIFTS or list(level) != sorted(set(level))
                         or not all(12 <= s <= 63 for s in level) for level in shifts):
        raise ValueError(f"--shape {text!r} is not a TLB shape: expected levels separated by '/', each 1 to "
                         f"{MAX_SHIFTS} ascending page-size shifts (12 to 63) separated by ',', as in 12/12,21.")
    return Shape(shifts)


def build(plugin_files: Sequence[str] = (), shape: Shape | None = None) -> bool:
    """Compile the engine for the builtins and ``plugin_files``: the generic loop, or the
    loop for ``shape``; False when another build holds the lock. A success removes the
    log a failed background build of the same module left."""
    lock = _lock()
    if lock is None:
        return False
    try:
        from ..config import config_from_dict
        from ..counters import Counters
        from ..machine import build_machine
        from ..testing import tiny_config
        from .codegen import module_name
        from .compiled import compile_loop

        raw = tiny_config(experiment={"name": "prebuild", "plugins": [str(Path(f).resolve()) for f in plugin_files]})
        config, registry = config_from_dict(raw, where="the build's plugin files")
        compile_loop(build_machine(config, registry, Counters()), registry, shape)
        build_log(module_name(registry, shape)).unlink(missing_ok=True)
    finally:
        lock.unlink(missing_ok=True)
    return True


def start_background_build(plugin_files: Sequence[str | Path], name: str, shape: Shape | None = None) -> bool:
    """Start :func:`build` (of the generic loop, or of ``shape``'s: the module ``name``) in a
    detached process, its output to :func:`build_log`; False when
    ``SLATFRAME_BACKGROUND_BUILD=0``, a build is running already, or the kernel cache
    folder cannot be written (the build could not store the engine either)."""
    if shape is not None and shape.exact:
        raise ValueError("a background build takes a TLB shape, not a whole TLB config (--exact-of builds one)")
    if os.environ.get("SLATFRAME_BACKGROUND_BUILD", "1") == "0" or _held(cache_dir() / LOCK):
        return False
    log = build_log(name)
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "w")
    except OSError:
        return False
    with out:  # the child holds its own descriptor
        subprocess.Popen([sys.executable, "-m", "slatframe.engine.prebuild", "--log", str(log),
                          *build_arguments(plugin_files, shape)],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return True


def build_arguments(plugin_files: Sequence[str | Path], shape: Shape | None) -> list[str]:
    """The build command's arguments for the generic loop (or ``shape``'s) of a registry of
    the builtins and ``plugin_files``."""
    return (["--shape", shape_text(shape)] if shape is not None else []) + [str(f) for f in plugin_files]


def next_run_build(files: Sequence[str | Path], registry: object, shape: Shape | None, started: str) -> str:
    """What a result's engine reason adds about building the generic loop (or ``shape``'s)
    for the next run: ``started`` when a background build starts; the failure, and no new
    build, when the last background build of that module failed; else nothing."""
    from .codegen import module_name

    name = module_name(registry, shape)
    failed = failed_build(name)
    if failed is not None:
        command = " ".join(["python -m slatframe.engine.prebuild", *build_arguments(files, shape)])
        return failure_reason(failed, "the generic loop" if shape is None else shape.loop_name(), command)
    return started if start_background_build(files, name, shape) else ""


def main(argv: Sequence[str]) -> int:
    """The command line: 0 when the engine is compiled (or was cached), 1 when another
    build holds the lock, 2 for a bad ``--shape`` or config."""
    ap = argparse.ArgumentParser(prog="python -m slatframe.engine.prebuild",
                                 description="Compile slatframe's engine ahead of use.")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--shape", help="compile the loop for this TLB shape instead of the generic one: levels in "
                                       "lookup order separated by '/', each one's page-size shifts separated by ',' "
                                       "(12: 4K, 21: 2M, 30: 1G), e.g. 12/12,21")
    which.add_argument("--shape-of", metavar="CONFIG", help="compile the loop for this config file's TLB shape, "
                                                            "with its plugin files")
    which.add_argument("--exact-of", metavar="CONFIG", help="compile the loop for this config file's whole TLB "
                                                            "config (experiment.loop = 'exact'), with its plugin "
                                                            "files")
    ap.add_argument("--log", help=argparse.SUPPRESS)  # a background build's output file: removed unless it fails
    ap.add_argument("plugin_files", nargs="*", help="plugin files whose policies the engine compiles in")
    args = ap.parse_args(argv)
    files = list(args.plugin_files)
    try:
        shape = parse_shape(args.shape) if args.shape is not None else None
        path = args.shape_of if args.shape_of is not None else args.exact_of
        if path is not None:
            from ..config import load_config
            from ..errors import SlatframeError
            from .shape import shape_of

            try:
                config, registry = load_config(path)
            except SlatframeError as exc:
                raise ValueError(str(exc)) from None
            shape, why = shape_of(config, exact=args.exact_of is not None)
            if shape is None:
                raise ValueError(f"{path}: no loop compiled for this config's TLB: {why}.")
            if shape.exact:  # its policies' numbers are compiled in: each needs kernels
                from ..machine import build_machine
                from .compiled import compiled_refusals

                refusals = compiled_refusals(build_machine(config, registry), registry)
                if refusals:
                    raise ValueError(f"{path}: the compiled tier cannot run this config: {refusals[0]}.")
            files += [str(f) for f in registry.files]
    except ValueError as exc:
        ap.error(str(exc))
    what = "the generic loop" if shape is None else shape.loop_name()
    from ..errors import SlatframeError

    try:
        built = build(files, shape)
    except SlatframeError as exc:  # a plugin file gone or broken since the run that started the build
        ap.error(str(exc))
    if not built:
        print(f"another build is running (lock {cache_dir() / LOCK}); {what} was not built", file=sys.stderr)
        if args.log is not None:  # not a failure: the other build builds it
            Path(args.log).unlink(missing_ok=True)
        return 1
    if args.log is not None:
        Path(args.log).unlink(missing_ok=True)
    print(f"compiled, or found in numba's cache: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
