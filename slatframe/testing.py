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


def run_both(config: Config, registry: Any, trace: np.ndarray, chunk_size: int = 4096
             ) -> dict[str, tuple[dict[str, int], np.ndarray]]:
    """Run ``trace`` under each engine tier on fresh machines: tier -> (counters, hPAs)."""
    from .engine import make_engine

    out = {}
    for tier in ("reference", "compiled"):
        counters = Counters()
        engine = make_engine(tier, build_machine(config, registry, counters), registry)
        hpa = np.zeros(len(trace), dtype=np.uint64)
        for start in range(0, len(trace), chunk_size):
            engine.run_chunk(trace[start:start + chunk_size], hpa[start:start + chunk_size])
        out[tier] = ({k: v for k, v in counters.as_dict().items() if v}, hpa)
    return out


def assert_engines_agree(config: Config, registry: Any, trace: np.ndarray, chunk_size: int = 4096) -> dict:
    """Run ``trace`` under the reference and the compiled engine and fail, naming the
    first differing counter or access, unless every counter and every hPA agree.
    Returns the counters. Use it to check a plugin's kernels against its reference code."""
    both = run_both(config, registry, trace, chunk_size)
    (ref, ref_hpa), (comp, comp_hpa) = both["reference"], both["compiled"]
    for key in sorted(set(ref) | set(comp)):
        if ref.get(key, 0) != comp.get(key, 0):
            raise AssertionError(f"counter {key}: reference {ref.get(key, 0)}, compiled {comp.get(key, 0)}")
    differ = np.flatnonzero(ref_hpa != comp_hpa)
    if differ.size:
        i = int(differ[0])
        raise AssertionError(f"record {i} ({trace[i]}): reference hPA {int(ref_hpa[i]):#x}, "
                             f"compiled {int(comp_hpa[i]):#x}")
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
