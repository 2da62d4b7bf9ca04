"""Instructions, mispredicted branches and data-cache misses per access, counted by
valgrind's cachegrind: figures that do not move with the machine's load.

    python -m benchmarks --instructions [--accesses N]     (N / 50 accesses a pass)

On a shared machine the same warm pass runs at rates a factor of two apart from one
minute to the next, so a change of a tenth is no evidence; counts are. For the 2D
walk-heavy config (Intel EPT, the Skylake-like TLB, PSCs in both dimensions) the
engine's generic and exact loops and the bare loop doing the same work (``bounds.py``)
each run one warm pass and then three in child processes under cachegrind (branch and
cache simulation on), and a row is the difference divided by two passes of ``N``
accesses: what one warm access costs, without the start-up. The children compile with
``NUMBA_CPU_NAME=haswell`` and its features, so that a loop compiled once natively is
loaded from numba's cache under valgrind too (valgrind's CPU has no AVX-512 and would
miss the cache, then compile for minutes); the code is AVX2 code, not the machine's own.
Cachegrind's caches are modelled on the host's and its branch predictor is a simple
one: the counts rank changes and attribute them, the rates in the other rows say what
they are worth. Needs ``valgrind``; it says so otherwise.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from slatframe.report import table

#: what the children compile for (on x86-64): a CPU valgrind can run, the same in and out of it
HASWELL = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sahf,"
           "+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")
LOOPS = (("engine, generic loop", "generic"), ("engine, exact loop", "exact"),
         ("bare two levels + 2D walks with the same PSCs (bounds.py)", "bare"))
EVENTS = (("Ir", ("Ir",)), ("mispredicted branches", ("Bcm", "Bim")), ("D1 misses", ("D1mr", "D1mw")),
          ("last-level misses", ("DLmr", "DLmw")))


def totals(path: Path) -> dict[str, int]:
    """The ``summary:`` line of a cachegrind output file, by event name."""
    events: list[str] = []
    for text in path.read_text().splitlines():
        if text.startswith("events:"):
            events = text.split()[1:]
        elif text.startswith("summary:"):
            return dict(zip(events, (int(x) for x in text.split()[1:])))
    raise ValueError(f"{path}: no summary line (cachegrind did not finish)")


def per_access(one: dict[str, int], three: dict[str, int], accesses: int) -> dict[str, float]:
    """Each event of two more warm passes of ``accesses`` (three passes less one), per access."""
    return {name: sum(three[e] - one[e] for e in keys) / (2 * accesses) for name, keys in EVENTS}


def child(loop: str, passes: int, accesses: int) -> None:
    """A cold pass and ``passes`` warm passes of ``loop`` over the walk-heavy trace."""
    from slatframe.engine.shape import shape_of
    from slatframe.testing import build, tiny_config

    from .__main__ import CONFIGS, TLB, workload
    from .bounds import SKYLAKE, WALK, Bare, warm_passes

    config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}],
                                         **CONFIGS["intel-ept 2D + TLB + PSC"]))
    trace = workload("walk-heavy", accesses)
    if loop == "bare":
        one = Bare(config, registry, trace, SKYLAKE, True).passes(WALK, True)
        one()
    else:
        one = warm_passes(config, registry, trace, shape=shape_of(config, exact=True)[0] if loop == "exact" else None)
    for _ in range(passes):
        one()


def instructions(accesses: int) -> None:
    """Print the counts per warm access of each loop, and each against the bare loop's."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"benchmarks --instructions: x86-64 only (its children compile for a Haswell CPU, which "
                         f"valgrind runs); this machine is {platform.machine()}")
    if shutil.which("valgrind") is None:
        raise SystemExit("benchmarks --instructions: needs valgrind on PATH (cachegrind)")
    env = dict(os.environ, PYTHONHASHSEED="0", NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL)
    base = [sys.executable, "-m", "benchmarks.instructions"]
    rows, bare = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for label, loop in LOOPS:
            subprocess.run(base + [loop, "1", str(accesses)], env=env, check=True)  # compile or load, natively
            outs = [Path(tmp) / f"{loop}.{p}" for p in (1, 3)]
            jobs = [subprocess.Popen(["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes",
                                      f"--cachegrind-out-file={out}", *base, loop, str(p), str(accesses)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for p, out in zip((1, 3), outs)]
            if any([job.wait() != 0 for job in jobs]):  # (both waited for)
                raise SystemExit(f"benchmarks --instructions: the {loop} loop failed under valgrind")
            rows.append((label, per_access(totals(outs[0]), totals(outs[1]), accesses)))
            bare = rows[-1][1] if loop == "bare" else bare
    print(f"2D walk-heavy, {accesses:,} accesses a pass: per warm access (two more passes under cachegrind), "
          "and against the bare loop")
    print(table([(label, *(f"{c[name]:.1f} ({c[name] / bare[name]:.2f}x)" if bare[name] else f"{c[name]:.1f}"
                           for name, _ in EVENTS)) for label, c in rows],
                ("loop", *(name for name, _ in EVENTS))))


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
