"""Accesses per second on a machine of several cores against one, per engine tier.

    python -m benchmarks --cores N [--reference-accesses N]

The hit-heavy and walk-heavy traces of the main benchmark, their records dealt to N
threads in turn (record i to thread i mod N), run on one core and one vCPU, then on N
cores with a vCPU each (``pinned``: the threads' records interleave record by record,
the hardest case for per-core state), under native paging and Intel EPT with the
Skylake-like TLB. Each rate is the best of a few warm passes over the same trace on
the same machine, the placement included; the ratio is per access, measured in this
one run. The compiled tier runs one core only for now (issue 34, phase 2), so its rows
say so rather than run.
"""
from __future__ import annotations

import time

import numpy as np

from slatframe.counters import Counters
from slatframe.engine.reference import ReferenceEngine
from slatframe.machine import build_machine
from slatframe.report import table
from slatframe.smp import is_smp, placed_chunks, smp_context
from slatframe.testing import build, tiny_config

from .__main__ import TLB, workload

SCHEMES = {"native": {"slat": "native", "host_memory": "64G"}, "intel-ept": {"slat": "intel-ept", "host_memory": "64G"}}


def rate(config, registry, trace: np.ndarray, passes: int = 2, chunk: int = 65536) -> float:
    """Accesses per second of the reference tier, the best of ``passes`` warm passes."""
    engine = ReferenceEngine(build_machine(config, registry, Counters()))
    ctx = smp_context(config)
    best = 0.0
    for n in range(1 + passes):
        start = time.perf_counter()
        chunks = (trace[i:i + chunk] for i in range(0, len(trace), chunk))
        if is_smp(config):
            choice = config.machine.scheduler
            scheduler = registry.get("schedulers", choice.name).factory(choice.options, ctx)
            for placed in placed_chunks(scheduler, chunks, ctx, choice.name):
                engine.run_chunk(placed.records, None, placed.vcpu, placed.core)
            engine.settle()
        else:
            for part in chunks:
                engine.run_chunk(part)
        if n:  # the first pass is cold (every page faults into the software side)
            best = max(best, len(trace) / (time.perf_counter() - start))
    return best


def smp(cores: int, accesses: int) -> None:
    rows = []
    for kind in ("hit-heavy", "walk-heavy"):
        trace = workload(kind, accesses)
        trace["thread"] = np.arange(len(trace)) % cores
        for label, machine in SCHEMES.items():
            rates = []
            for n in (1, cores):
                config, registry = build(tiny_config(tlb=TLB, machine={**machine, "cores": n},
                                                     vms=[{"name": "vm0", "memory": "8G", "vcpus": n}]))
                rates.append(rate(config, registry, trace))
            rows.append((kind, label, f"{rates[0] / 1e3:.1f}", f"{rates[1] / 1e3:.1f}", f"{rates[1] / rates[0]:.2f}",
                         "not yet (one core only)"))
    print(f"{accesses:,} accesses a pass, reference tier; rates in accesses per second")
    print(table(rows, ("workload", "scheme", "1 core K/s", f"{cores} cores K/s", f"{cores} cores / 1 core",
                       "compiled tier")))
