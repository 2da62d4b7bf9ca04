"""Helpers for testing slatframe and third-party plugins against it."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, config_from_dict
from .counters import Counters
from .machine import build_machine
from .engine.reference import ReferenceEngine


def tiny_config(**sections: Any) -> dict[str, Any]:
    """A small valid config as plain data; keyword arguments replace whole sections."""
    raw: dict[str, Any] = {
        "experiment": {"name": "test", "seed": 1},
        "machine": {"slat": "native", "host_memory": "4G"},
        "tlb": {"levels": [{"name": "l1", "sets": 4, "ways": 2}]},
        "vms": [{"name": "vm0", "memory": "1G"}],
        "workload": {"source": "synthetic", "accesses": 1000, "footprint": "1M"},
        "cost": {"model": "fixed"},
    }
    raw.update(copy.deepcopy(sections))
    return raw


def build(raw: dict[str, Any], registry: Any = None, base_dir: Path | None = None) -> tuple[Config, Any]:
    """Resolve plain config data (see :func:`tiny_config`)."""
    return config_from_dict(raw, where="<test config>", registry=registry, base_dir=base_dir)


def run_trace(config: Config, registry: Any, trace: np.ndarray) -> tuple[dict[str, int], np.ndarray]:
    """Run ``trace`` on a fresh machine of ``config`` with the reference engine; return the
    counters and each record's hPA (2**64-1 for control events)."""
    counters = Counters()
    engine = ReferenceEngine(build_machine(config, registry, counters))
    hpa = np.zeros(len(trace), dtype=np.uint64)
    engine.run_chunk(trace, hpa)
    return counters.as_dict(), hpa


def run_chunks(engine: Any, config: Config, registry: Any, trace: np.ndarray, chunk_size: int,
               hpa: np.ndarray) -> None:
    """Run ``trace`` through ``engine`` (either tier) in chunks of ``chunk_size``, storing
    each record's hPA in ``hpa``; on a machine of several cores or vCPUs, placed by the
    config's scheduler (``hpa`` is then in the order the records ran: the trace's under
    ``pinned``), and what coherence still gathers at the end carried out."""
    from .engine import scheduled
    from .smp import engine_args

    at = 0
    for records, placed in scheduled(config, registry, (trace[i:i + chunk_size]
                                                        for i in range(0, len(trace), chunk_size))):
        n = len(records)
        engine.run_chunk(records, hpa[at:at + n], **engine_args(placed))
        at += n
    engine.settle()


def run_placed(config: Config, registry: Any, trace: np.ndarray, chunk_size: int = 4096, tier: str = "reference"
               ) -> tuple[dict[str, int], np.ndarray, dict]:
    """Run ``trace`` on a fresh machine of ``config`` with the engine ``tier``, placed on
    cores and vCPUs as :func:`run_chunks` says; return the counters, each record's hPA
    (2**64-1 for control events) and the counts charged to each scope."""
    from .engine import make_engine

    counters = Counters()
    engine = make_engine(tier, build_machine(config, registry, counters), registry)
    hpa = np.zeros(len(trace), dtype=np.uint64)
    run_chunks(engine, config, registry, trace, chunk_size, hpa)
    return counters.as_dict(), hpa, counters.by_scope()


def run_both(config: Config, registry: Any, trace: np.ndarray, chunk_size: int = 4096, shaped: bool = False,
             exact: bool = False) -> dict[str, tuple[dict[str, int], np.ndarray, dict]]:
    """Run ``trace`` under each engine tier on fresh machines (placed on cores and vCPUs
    as :func:`run_chunks` says): tier -> (counters, hPAs, the counts charged to each
    scope: VM, or (VM, asid) with ``experiment.per_asid``, or (VM, asid, vCPU, core) on
    several cores or vCPUs). With ``shaped``, also the compiled tier's loop compiled for
    the config's TLB shape, as tier "shaped"; with ``exact``, its loop compiled for the
    config's whole TLB, as tier "exact" (ValueError when the config has no shape: a
    data- or instruction-only level)."""
    from .engine import make_engine
    from .engine.shape import shape_of

    loops = {tier: shape_of(config, tier == "exact") for tier, wanted in (("shaped", shaped), ("exact", exact))
             if wanted}
    for tier, (shape, why) in loops.items():
        if shape is None:
            raise ValueError(f"run_both({tier}=True) cannot run this config's {tier} loop: {why}")
    out = {}
    for tier in ("reference", "compiled", *loops):
        counters = Counters()
        machine = build_machine(config, registry, counters)
        engine = make_engine("compiled", machine, registry, loops[tier][0]) if tier in loops else \
            make_engine(tier, machine, registry)
        hpa = np.zeros(len(trace), dtype=np.uint64)
        run_chunks(engine, config, registry, trace, chunk_size, hpa)
        scoped = {scope: {k: v for k, v in counts.items() if v} for scope, counts in counters.by_scope().items()}
        out[tier] = ({k: v for k, v in counters.as_dict().items() if v}, hpa, scoped)
    return out


def assert_engines_agree(config: Config, registry: Any, trace: np.ndarray, chunk_size: int = 4096,
                         shaped: bool = False, exact: bool = False) -> dict:
    """Run ``trace`` under the reference and the compiled engine (and, with ``shaped`` or
    ``exact``, the compiled engine's loop compiled for the config's TLB shape or whole TLB
    config) and fail, naming the first differing counter, scope's count (the per-VM
    metrics) or access, unless every counter, every scope's count and every hPA agree, and
    the scopes' counts add up to the totals.
    Returns the counters. Use it to check a plugin's kernels against its reference code."""
    both = run_both(config, registry, trace, chunk_size, shaped, exact)
    ref, ref_hpa, ref_scoped = both["reference"]
    for tier, (comp, comp_hpa, comp_scoped) in both.items():
        if tier == "reference":
            continue
        for key in sorted(set(ref) | set(comp)):
            if ref.get(key, 0) != comp.get(key, 0):
                raise AssertionError(f"counter {key}: reference {ref.get(key, 0)}, {tier} {comp.get(key, 0)}")
        for scope in sorted(set(ref_scoped) | set(comp_scoped), key=repr):
            mine, theirs = ref_scoped.get(scope, {}), comp_scoped.get(scope, {})
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key, 0) != theirs.get(key, 0):
                    raise AssertionError(f"scope {scope!r}, counter {key}: reference {mine.get(key, 0)}, "
                                         f"{tier} {theirs.get(key, 0)}")
        differ = np.flatnonzero(ref_hpa != comp_hpa)
        if differ.size:
            i = int(differ[0])
            raise AssertionError(f"record {i} ({trace[i]}): reference hPA {int(ref_hpa[i]):#x}, "
                                 f"{tier} {int(comp_hpa[i]):#x}")
    for key in sorted({k for counts in ref_scoped.values() for k in counts}):
        charged = sum(counts.get(key, 0) for counts in ref_scoped.values())
        if charged != ref.get(key, 0):
            raise AssertionError(f"counter {key}: the scopes' counts add up to {charged}, the total is {ref.get(key, 0)}")
    return ref


def churn_trace(seed: int, n: int = 3000, pages_per_region: int = 20, events: int = 80) -> np.ndarray:
    """A trace that exercises walk caches: Zipf-popular pages in a dozen 2M regions
    spread over a few 1G and 512G regions, two address spaces, 30% writes, and
    ``events`` unmaps, protects, INVLPGs, flushes and address-space switches among them."""
    from .trace import CONTEXT_SWITCH, FLUSH, INVLPG, PROTECT, TRACE_DTYPE, UNMAP, WRITE

    rng = np.random.default_rng(seed)
    regions = [(int(a) << 39) | (int(b) << 30) | (int(c) << 21) for a, b, c in rng.integers(0, 3, (12, 3))]
    pages = np.array([r + (int(p) << 12) for r in regions for p in rng.integers(0, 512, pages_per_region)],
                     dtype=np.uint64)
    trace = np.zeros(n, dtype=TRACE_DTYPE)
    trace["vaddr"] = pages[rng.zipf(1.2, n) % len(pages)] + rng.integers(0, 4096, n).astype(np.uint64)
    trace["op"][rng.random(n) < 0.3] = WRITE
    trace["asid"] = rng.integers(0, 2, n)
    at = rng.choice(n, events, replace=False)
    trace["op"][at] = rng.choice([UNMAP, PROTECT, INVLPG, FLUSH, CONTEXT_SWITCH], events)
    trace["vaddr"][at[trace["op"][at] == CONTEXT_SWITCH]] = 1
    return trace


def process_churn(seed: int, n: int = 600, base: int = 1 << 30, exec_share: float = 0.0) -> np.ndarray:
    """A trace of process churn in one VM: process 0 maps 6 private and 2 shared pages,
    then ``n`` events: forks (up to 6 live processes), exits (``exec_share`` of them
    execs instead), shared mappings, unmaps and protects, and reads and writes (40%)
    over 3 leaf tables' first 16 pages, by random live processes."""
    from .trace import EXEC, EXIT, FORK, MAP, MAP_SHARED, PROTECT, READ, TRACE_DTYPE, UNMAP, WRITE

    rng = np.random.default_rng(seed)
    rows = [(0, MAP, base + i * 4096) for i in range(6)] + [(0, MAP_SHARED, base + (40 + i) * 4096) for i in range(2)]
    live = [0]
    for _ in range(n):
        r = rng.random()
        if r < 0.05 and len(live) < 6:
            child = next(a for a in range(1, 16) if a not in live)
            rows.append((int(rng.choice(live)), FORK, child))
            live.append(child)
        elif r < 0.08 and len(live) > 1:
            gone = int(rng.choice(live[1:]))
            rows.append((gone, EXEC if rng.random() < exec_share else EXIT, 0))
            if rows[-1][1] == EXIT:
                live.remove(gone)
        elif r < 0.1:
            rows.append((int(rng.choice(live)), MAP_SHARED, base + int(rng.integers(40, 44)) * 4096))
        elif r < 0.13:
            rows.append((int(rng.choice(live)), int(rng.choice([UNMAP, PROTECT])), base + int(rng.integers(0, 10)) * 4096))
        else:
            op = WRITE if rng.random() < 0.4 else READ
            where = base + int(rng.integers(0, 3)) * (1 << 21) + int(rng.integers(0, 16)) * 4096
            rows.append((int(rng.choice(live)), op, where + int(rng.integers(0, 4096))))
    trace = np.zeros(len(rows), dtype=TRACE_DTYPE)
    trace["asid"], trace["op"], trace["vaddr"] = zip(*rows)
    return trace
