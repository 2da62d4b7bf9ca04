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
