"""Per-VM and per-address-space metrics: each scope's counts, as the engines charged them
(:meth:`slatframe.counters.Counters.charge`), with the cost model's figures on them.

``vm.<vm name>.<metric>`` for every VM of the config, ``vm.<vm name>.asid.<n>.<metric>``
for every address space that ran (with ``experiment.per_asid``), and
``between_records.<metric>`` for work done between trace records (a dedup strategy's
wake-ups), reported only when there was any. For every event counter, the VMs' values
plus ``between_records`` add up to the total; so does every cycle figure of the builtin
cost models (they are linear in the counts), but not their ratios
(``cycles.per_access``, ``translation_overhead``), which are each scope's own.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Hashable, Mapping, Sequence

from .counters import BETWEEN

#: The cost model's figures for a dict of counts (zero-filled with every name it reads).
Cycles = Callable[[dict[str, Any]], dict[str, Any]]


def scope_metrics(vm_names: Sequence[str], scoped: Mapping[Hashable, Mapping[str, int]],
                  zero: Mapping[str, int], cycles: Cycles) -> dict[str, Any]:
    """The per-scope metrics of a run. ``scoped`` maps a VM index, or a (VM index,
    asid) pair, or :data:`BETWEEN`, to the counts charged to it; ``zero`` names the
    counters every scope reports even when it counted none. Nothing charged (counters
    filled by hand rather than by an engine) gives no per-scope figures at all."""
    if not scoped:
        return {}
    names = dict(zero)
    for counts in scoped.values():
        names.update(dict.fromkeys(counts, 0))
    by_vm: dict[int, defaultdict[str, int]] = {vm: defaultdict(int) for vm in range(len(vm_names))}
    by_asid: dict[tuple[int, int], Mapping[str, int]] = {}
    for scope, counts in scoped.items():
        if scope is BETWEEN:
            continue
        vm = scope[0] if isinstance(scope, tuple) else scope
        if isinstance(scope, tuple):
            by_asid[scope] = counts
        for name, n in counts.items():
            by_vm[vm][name] += n

    def figures(prefix: str, counts: Mapping[str, int]) -> dict[str, Any]:
        own = {**names, **counts}
        own.update(cycles(own))
        return {f"{prefix}.{name}": value for name, value in own.items()}

    out: dict[str, Any] = {}
    for vm, counts in by_vm.items():
        out.update(figures(f"vm.{vm_names[vm]}", counts))
    for (vm, asid), counts in sorted(by_asid.items()):
        out.update(figures(f"vm.{vm_names[vm]}.asid.{asid}", counts))
    between = scoped.get(BETWEEN, {})
    if any(between.values()):
        out.update(figures("between_records", between))
    return out
