"""The consolidation model: how many sessions one host fits, by CPU and by memory.

A session issues ``session_accesses_per_s`` memory accesses per second, each costing
``work_per_access`` cycles of its own computation plus the run's ``cycles.per_access``
(the access, its translation, exits, faults, dedup), so it needs

    cpu_per_session = session_accesses_per_s x (work_per_access + cycles.per_access) / (core_ghz x 1e9)

cores; ``cpu_limit = floor(cores x cpu_target / cpu_per_session)``. Dedup shrinks a
session's memory by the fraction the run saved, ``saved = dedup.bytes_saved /
(dedup.bytes_saved + dedup.host_bytes_in_use)``, so ``memory_limit = floor((memory -
reserved_memory) / (session_memory x (1 - saved) + table_bytes / run_sessions))``, where
``table_bytes`` sums the run's ``<name>.table_bytes.peak`` gauges: the host memory its
translation tables held at their peak (shadow tables, second-level tables), which the
``run_sessions`` sessions the run stands for share. ``sessions`` is the smaller limit
and ``binding`` names it.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError, SimulationError

LIMIT = 1 << 63  #: sessions are stored in int64 columns
TABLE_GAUGE = ".table_bytes.peak"  #: the suffix of the gauges of host memory held by translation tables
TEXT_METRICS = frozenset({"consolidation.binding"})  #: the metrics whose values are names, not numbers


def consolidation_metrics(m: dict[str, Any], c: Any) -> dict[str, Any]:
    """The ``consolidation.*`` metrics of a run with metrics ``m`` under config ``c``."""
    if "cycles.per_access" not in m:
        raise ConfigError("[consolidation] needs a cost model that reports cycles.per_access.")
    cycles = c.work_per_access + m["cycles.per_access"]
    if cycles <= 0:
        raise ConfigError("[consolidation] needs a cost per access: work_per_access + cycles.per_access is 0 "
                          "(no accesses after the warmup, or every cost set to zero).")
    cpu_per_session = c.session_accesses_per_s * cycles / (c.core_ghz * 1e9)
    saved_bytes = m.get("dedup.bytes_saved", 0)
    used = saved_bytes + m.get("dedup.host_bytes_in_use", 0)
    saved = saved_bytes / used if used else 0.0
    table_bytes = sum(v for k, v in m.items() if k.endswith(TABLE_GAUGE))
    memory_per_session = c.session_memory * (1.0 - saved) + table_bytes / c.run_sessions
    if memory_per_session <= 0:
        raise SimulationError("[consolidation] needs memory per session: dedup saved every byte "
                              "(dedup.host_bytes_in_use is 0), so sessions per host are unbounded.")
    cpu_sessions = c.cores * c.cpu_target / cpu_per_session
    memory_sessions = max(0, c.memory - c.reserved_memory) / memory_per_session
    if not cpu_sessions < LIMIT or not memory_sessions < LIMIT:
        raise ConfigError(f"[consolidation] gives more than 2^63 sessions per host (cycles per access "
                          f"{cycles:g}); raise consolidation.work_per_access or session_accesses_per_s.")
    cpu_limit = math.floor(cpu_sessions)
    memory_limit = math.floor(memory_sessions)
    return {
        "consolidation.cycles_per_access": cycles,
        "consolidation.cpu_per_session": cpu_per_session,
        "consolidation.memory_saved_fraction": saved,
        "consolidation.table_bytes_per_session": table_bytes / c.run_sessions,
        "consolidation.memory_per_session": memory_per_session,
        "consolidation.cpu_limit": cpu_limit,
        "consolidation.memory_limit": memory_limit,
        "consolidation.sessions": min(cpu_limit, memory_limit),
        "consolidation.binding": "cpu" if cpu_limit <= memory_limit else "memory",
    }
