"""Accesses per second on a machine of several cores against one, per engine tier.

    python -m benchmarks --cores N [--accesses N] [--reference-accesses N]

Two ways to give N cores work, under native paging and Intel EPT with the Skylake-like
TLB, on the hit-heavy and walk-heavy traces of the main benchmark:

- "replayed": N threads each replay the whole trace, interleaved record by record
  (record i of thread 0, of thread 1, ...), on N cores with a vCPU each (``pinned``).
  Each core's TLBs and walk caches see exactly the one-core run's accesses, so the rate
  per access against one core is the engine's cost of running cores (per-core state,
  a core switch at every record), not the model's: issue 34's target (within 10%).
- "one": every record from thread 0, on N cores (so on core 0): the per-record
  bookkeeping of a machine of several cores (the scheduler, the placement, the loop's
  per-record vCPU and core) without any more simulated state than one core's.
- "dealt": the trace's records dealt to N threads in turn (record i to thread i mod
  N). Each core sees a quarter of the trace but must hold the whole working set, so it
  misses more: this ratio includes the model's extra walks.

Each rate is the best of four warm passes over the same trace on the same machine, the
placement included, the one-core and N-core passes taking turns; the ratio is per
access, measured in this one run, for each tier
(the compiled tier on ``--accesses`` records of the trace, the reference tier on
``--reference-accesses``).
"""
from __future__ import annotations

import time

import numpy as np

from slatframe.counters import Counters
from slatframe.engine import make_engine, scheduled
from slatframe.machine import build_machine
from slatframe.report import table
from slatframe.smp import engine_args
from slatframe.testing import build, tiny_config

from .__main__ import TLB, workload

SCHEMES = {"native": {"slat": "native", "host_memory": "64G"}, "intel-ept": {"slat": "intel-ept", "host_memory": "64G"}}


def one_pass(engine, config, registry, trace: np.ndarray, chunk: int = 65536) -> float:
    """Seconds of one pass of ``trace`` through ``engine``, the placement included."""
    start = time.perf_counter()
    for records, placed in scheduled(config, registry, (trace[i:i + chunk] for i in range(0, len(trace), chunk))):
        engine.run_chunk(records, None, **engine_args(placed))
    engine.settle()
    return time.perf_counter() - start


def rates(runs: list[tuple], tier: str, passes: int = 4) -> list[float]:
    """Accesses per second of ``tier`` for each (config, registry, trace) of ``runs``: the
    best of ``passes`` warm passes, the runs' passes taking turns (so that a slower
    spell of a shared machine falls on all of them), after a cold pass each."""
    engines = [make_engine(tier, build_machine(config, registry, Counters()), registry)
               for config, registry, _ in runs]
    for engine, run in zip(engines, runs):  # cold: every page faults into the software side
        one_pass(engine, *run)
    best = [0.0] * len(runs)
    for _ in range(passes):
        for j, (engine, run) in enumerate(zip(engines, runs)):
            best[j] = max(best[j], len(run[2]) / one_pass(engine, *run))
    return best


def placed_trace(trace: np.ndarray, cores: int, how: str) -> np.ndarray:
    """``trace`` given to ``cores`` threads ``how`` (the module's docstring)."""
    if how in ("dealt", "one"):
        out = trace.copy()
        out["thread"] = np.arange(len(out)) % cores if how == "dealt" else 0
        return out
    out = np.repeat(trace, cores)
    out["thread"] = np.tile(np.arange(cores), len(trace))
    return out


def smp(cores: int, accesses: int, reference_accesses: int) -> None:
    rows = []
    for kind in ("hit-heavy", "walk-heavy"):
        for label, machine in SCHEMES.items():
            for how in ("one", "replayed", "dealt"):
                row = [kind, label, how]
                for tier, n_accesses in (("compiled", accesses), ("reference", reference_accesses)):
                    trace = workload(kind, n_accesses)
                    runs = []
                    for n in (1, cores):
                        config, registry = build(tiny_config(tlb=TLB, machine={**machine, "cores": n},
                                                             vms=[{"name": "vm0", "memory": "8G", "vcpus": n}]))
                        runs.append((config, registry, placed_trace(trace, n, how)))
                    one, many = rates(runs, tier)
                    row += [f"{one / 1e6:.2f}", f"{many / 1e6:.2f}", f"{many / one:.2f}"]
                rows.append(tuple(row))
    print(f"compiled tier: {accesses:,} trace records; reference tier: {reference_accesses:,}; "
          "rates in millions of accesses per second")
    print(table(rows, ("workload", "scheme", "threads", "compiled 1 core", f"{cores} cores", "ratio",
                       "reference 1 core", f"{cores} cores", "ratio")))
