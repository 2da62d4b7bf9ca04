"""Plain-text tables for the terminal (the CLI owns printing; this only formats)."""
from __future__ import annotations

from typing import Any, Sequence

from .footprint import memory_text


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned first column, right-aligned numbers."""
    cells = [list(map(str, header))] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if numeric[i] else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def summary(result: Any) -> str:
    """The human-readable summary of one run's result."""
    m = result.metrics
    compiled = (f", of which {result.compile_time_s:.1f} s compiling the engine (cached for later runs)"
                if result.compile_time_s >= 1 else "")
    lines = [f"{result.name}: {m['accesses']:,} accesses, engine {result.engine} "
             f"({result.engine_reason}), {result.wall_time_s:.2f} s{compiled}"]
    notes = getattr(result, "workload_notes", None) or {}
    if notes:
        lines.append("workload: " + ", ".join(f"{k} = {v}" for k, v in notes.items()))
    memory = memory_text(getattr(result, "memory", None))
    if memory:
        lines.append(f"memory: {memory}")
    rows = []
    for key in sorted(m):
        if key.startswith("tlb.") and key.endswith(".hits"):
            name = key[4:-5]
            rows.append((f"tlb.{name}", m[key], m[f"tlb.{name}.misses"], m.get(f"derived.tlb.{name}.hit_rate", "-")))
    lines.append(table(rows, ("TLB level", "hits", "misses", "hit rate")))
    shown = [("walks", m["walks"]), ("walk refs per walk", m.get("derived.refs_per_walk", "-")),
             ("walk refs max", m["walk.refs_max"])]
    shown += [(k, m[k]) for k in SUMMARY_DERIVED if k in m]
    shown += [(k, m[k]) for k in sorted(m) if k.startswith(("faults.", "vm_exits", "dedup.", "dcache.", "ipi.",
                                                             "hypervisor.")) or k in COHERENCE_SHOWN]
    shown += [(k, m[k]) for k in sorted(m) if k.startswith(("cycles.", "consolidation."))
              or k == "translation_overhead"]
    lines.append("")
    lines.append(table(shown, ("metric", "value")))
    vms = [vm["name"] for vm in result.config.get("vms", [])]
    if len(vms) > 1:  # each VM's share (every vm.<name>.* metric is in the result file)
        rows = [(name, *(m.get(f"vm.{name}.{k}", 0) for k in PER_VM_SHOWN)) for name in vms]
        lines += ["", table(rows, ("VM", *PER_VM_SHOWN))]
    cores = result.config.get("machine", {}).get("cores", 1)
    if isinstance(cores, int) and cores > 1:  # each core's share (core.<n>.* metrics)
        rows = [(n, *(m.get(f"core.{n}.{k}", 0) for k in PER_CORE_SHOWN)) for n in range(cores)]
        lines += ["", table(rows, ("core", *PER_CORE_SHOWN))]
    return "\n".join(lines)


#: The derived metrics (slatframe/derived.py) of the terminal summary, when the result has them.
SUMMARY_DERIVED = ("derived.mpka", "derived.mpki", "derived.vm_exits_pka", "derived.translation_cycles_per_access",
                   "derived.cycles_per_instruction")

#: The TLB-coherence counters of the terminal summary (runs of several vCPUs), with ipi.* and hypervisor.*.
COHERENCE_SHOWN = ("tlb.shootdowns", "tlb.remote_invalidations", "tlb.catch_up_flushes", "tlb.flush_hypercalls",
                   "tlb.pv_flushes", "tlb.migration_flushes")

#: The per-core figures of the terminal summary.
PER_CORE_SHOWN = ("accesses", "walks", "vm_exits", "ipi.sent", "ipi.received", "cycles.per_access")

#: The per-VM figures of the terminal summary.
PER_VM_SHOWN = ("accesses", "walks", "walk.refs", "faults.guest", "faults.host", "vm_exits", "cycles.per_access")
