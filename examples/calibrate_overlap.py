"""Calibrate the cost models' ``access_overlap`` on this machine: a real program's native
run time against the cycles the model charges for its recorded trace.

    python examples/calibrate_overlap.py [--runs 200] [--ghz G] [--preset amd-server]

1. Compiles examples/calibration/sortsum.c (gcc -O2): qsort of 32,768 ints, then a
   strided sum; deterministic.
2. Runs it ``--runs`` times natively and takes the user CPU time per run (getrusage of
   the children), in cycles at ``--ghz`` (default: this machine's ``cpu MHz`` from
   /proc/cpuinfo, which ignores boost clocks: flagged in the output).
3. Records one run with ``slatframe trace record`` (valgrind lackey: every instruction
   fetch and data access, from the dynamic loader on) and runs that trace natively under
   the ``cache-aware`` model with the preset and ``access_overlap = 1``, through a
   Skylake-sized TLB whose L1 hits cost nothing (looked up in parallel with the L1D).
4. The user cycles the model charges are cycles.total - cycles.fault (page faults are
   kernel time, not user time). The overlap that makes them equal the measured user
   cycles is cycles.access / (measured - (model user cycles - cycles.access)): how many
   accesses' latencies an out-of-order core hides behind each other (L1 hits pipelined
   several per cycle, misses overlapped), assuming the model's translation cycles beyond
   the L1 TLB are paid in full.

Needs gcc and valgrind. Prints one table; nothing is written outside a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("calibration") / "sortsum.c"


def cpu_ghz() -> float | None:
    """This machine's nominal clock from /proc/cpuinfo (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        return None
    return None


def user_seconds_per_run(binary: Path, runs: int) -> float:
    """User CPU seconds of one run of ``binary``, the mean over ``runs`` runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    for _ in range(runs):
        subprocess.run([str(binary)], stdout=subprocess.DEVNULL, check=True)
    return (resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before) / runs


def modelled(trace: Path, preset: str) -> dict:
    """Metrics of ``trace`` run natively under the cache-aware model (access_overlap 1)."""
    from slatframe.config import config_from_dict
    from slatframe.engine import run_experiment

    raw = {"experiment": {"name": "calibrate-overlap"},
           "machine": {"slat": "native", "host_memory": "4G"},
           # the L1 TLB is looked up while the L1D is indexed (virtually indexed, physically
           # tagged), so its hits add nothing; an L2 TLB lookup adds its latency
           "tlb": {"levels": [{"name": "l1d", "sets": 16, "ways": 4, "latency": 0},
                              {"name": "l2", "sets": 128, "ways": 12, "latency": 9}]},
           "walk_caches": [{"type": "psc", "level": level} for level in (4, 3, 2)],
           "vms": [{"name": "vm0", "memory": "2G"}],
           "workload": {"source": "npz", "path": str(trace)},
           "cost": {"model": "cache-aware", "preset": preset}}
    config, registry = config_from_dict(raw)
    return run_experiment(config, registry).metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="native runs timed")
    parser.add_argument("--ghz", type=float, help="core clock (default: /proc/cpuinfo's cpu MHz)")
    parser.add_argument("--preset", default="amd-server", choices=("amd-server", "intel-server"))
    args = parser.parse_args(argv)
    missing = [tool for tool in ("gcc", "valgrind") if shutil.which(tool) is None]
    if missing:
        print(f"calibrate_overlap: needs {' and '.join(missing)}; install them first.", file=sys.stderr)
        return 2
    ghz = args.ghz or cpu_ghz()
    if ghz is None:
        print("calibrate_overlap: no cpu MHz in /proc/cpuinfo; give the clock with --ghz.", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        binary, trace = Path(tmp) / "sortsum", Path(tmp) / "sortsum.npz"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(SOURCE)], check=True)
        user = user_seconds_per_run(binary, args.runs)
        subprocess.run([sys.executable, "-m", "slatframe.cli", "trace", "record", "--out", str(trace), "--",
                        str(binary)], check=True, stdout=subprocess.DEVNULL, env={**os.environ})
        m = modelled(trace, args.preset)
    measured = user * ghz * 1e9
    model_user = m["cycles.total"] - m["cycles.fault"]
    rest = model_user - m["cycles.access"]
    overlap = m["cycles.access"] / (measured - rest) if measured > rest else float("inf")
    from slatframe.report import table

    n = m["accesses"]
    figures = {"records": n, "user s/run": user, "GHz": ghz, "measured cycles/access": measured / n,
               "model cycles/access (overlap 1)": model_user / n, "of which data accesses": m["cycles.access"] / n,
               "translation": (m["cycles.translation"] - m["cycles.fault"]) / n, "implied access_overlap": overlap}
    print(table([list(figures.values())], list(figures)))
    print(f"(clock: {'given' if args.ghz else 'nominal, from /proc/cpuinfo; a boost clock would raise the overlap'};"
          f" {args.runs} runs; preset {args.preset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
