"""Per-VM and per-address-space metrics: each scope's counts, as the engines charged them
(:meth:`slatframe.counters.Counters.charge`), with the cost model's figures on them.

``vm.<vm name>.<metric>`` for every VM of the config, ``vm.<vm name>.asid.<n>.<metric>``
for every address space that ran (with ``experiment.per_asid``), and
``between_records.<metric>`` for work done between trace records (a dedup strategy's
wake-ups), reported only when there was any. A machine with more than one core or vCPU
(:func:`slatframe.smp.is_smp`) also reports ``vm.<vm name>.vcpu.<k>.<metric>`` for every
vCPU of every VM and ``core.<n>.<metric>`` for every core. For every event counter, the
VMs' values plus ``between_records`` add up to the total, and so do the cores' values
plus ``between_records``, and each VM's vCPUs' values add up to the VM's; so does every cycle figure of the builtin
cost models (they are linear in the counts), but not their ratios
(``cycles.per_access``, ``translation_overhead``, ``derived.*``), which are each scope's
own. The cost model's figures are computed on each scope's counts by
:func:`slatframe.cost_figures.costed_metrics`.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Hashable, Mapping, Sequence

from .counters import BETWEEN

#: A scope as the metrics name it: (VM name, None) for ``vm.<vm>.*``, (VM name,
#: "asid.<n>") for ``vm.<vm>.asid.<n>.*``, (VM name, "vcpu.<k>") for ``vm.<vm>.vcpu.<k>.*``,
#: (None, "core.<n>") for ``core.<n>.*`` and (None, None) for ``between_records.*``.
Scope = tuple[str | None, str | None]
BETWEEN_RECORDS = "between_records"
_SUB = re.compile(r"((?:asid|vcpu)\.\d+)\.(.+)")
_CORE = re.compile(r"(core\.\d+)\.(.+)")


def prefix(scope: Scope) -> str:
    """The metric-name prefix of ``scope`` (without the final dot)."""
    vm, sub = scope
    if vm is None:
        return BETWEEN_RECORDS if sub is None else sub
    return f"vm.{vm}" if sub is None else f"vm.{vm}.{sub}"


def scope_counts(vm_names: Sequence[str], scoped: Mapping[Hashable, Mapping[str, int]],
                 zero: Mapping[str, int], vcpus: Sequence[int] = (), cores: int = 0) -> dict[Scope, dict[str, int]]:
    """Each scope's counts in a run. ``scoped`` maps a VM index, a (VM index, asid)
    pair, a (VM index, asid or None, vCPU, core) tuple (on a machine with cores and
    vCPUs), or :data:`BETWEEN`, to the counts charged to it; ``zero`` names the counters
    every scope reports even when it counted none. A VM's counts are its own plus its
    address spaces' (and its vCPUs'). ``vcpus`` (each VM's) and ``cores``: the vCPU and
    core scopes reported, even those that counted nothing; none when empty and 0.
    Nothing charged (counters filled by hand rather than by an engine) gives no scopes."""
    if not scoped:
        return {}
    names = dict(zero)
    for counts in scoped.values():
        names.update(dict.fromkeys(counts, 0))
    by_vm: dict[int, defaultdict[str, int]] = {vm: defaultdict(int) for vm in range(len(vm_names))}
    by_asid: defaultdict[tuple[int, int], defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_vcpu = {(vm, k): defaultdict(int) for vm, n in enumerate(vcpus) for k in range(n)}
    by_core: dict[int, defaultdict[str, int]] = {c: defaultdict(int) for c in range(cores)}
    for scope, counts in scoped.items():
        if scope is BETWEEN:
            continue
        parts = scope if isinstance(scope, tuple) else (scope,)
        vm = parts[0]
        targets = [by_vm[vm]]
        if len(parts) > 1 and parts[1] is not None:
            targets.append(by_asid[(vm, parts[1])])
        if len(parts) == 4:
            targets += [by_vcpu[(vm, parts[2])], by_core[parts[3]]]
        for name, n in counts.items():
            for target in targets:
                target[name] += n
    out: dict[Scope, dict[str, int]] = {}
    for vm, counts in by_vm.items():
        out[(vm_names[vm], None)] = {**names, **counts}
    for (vm, asid), counts in sorted(by_asid.items()):
        out[(vm_names[vm], f"asid.{asid}")] = {**names, **counts}
    for (vm, k), counts in by_vcpu.items():
        out[(vm_names[vm], f"vcpu.{k}")] = {**names, **counts}
    for c, counts in by_core.items():
        out[(None, f"core.{c}")] = {**names, **counts}
    between = scoped.get(BETWEEN, {})
    if any(between.values()):
        out[(None, None)] = {**names, **between}
    return out


def split_scopes(metrics: Mapping[str, Any], vm_names: Sequence[str]
                 ) -> tuple[dict[str, Any], dict[Scope, dict[str, Any]]]:
    """A result's metrics as the run's totals and each scope's own metrics (names without
    the scope's prefix), in the order the metrics give them: the inverse of
    :func:`join_scopes`. VM names may hold dots (the longest name that fits wins); a
    ``vm.<name>.*`` key of a VM the config does not name is that name's scope up to the
    first dot."""
    names = sorted(vm_names, key=len, reverse=True)
    totals: dict[str, Any] = {}
    scoped: dict[Scope, dict[str, Any]] = {}
    for key, value in metrics.items():
        if key.startswith(BETWEEN_RECORDS + "."):
            scoped.setdefault((None, None), {})[key[len(BETWEEN_RECORDS) + 1:]] = value
            continue
        core = _CORE.fullmatch(key)
        if core:
            scoped.setdefault((None, core.group(1)), {})[core.group(2)] = value
            continue
        rest = key[3:] if key.startswith("vm.") else ""
        vm = next((n for n in names if rest.startswith(n + ".")), rest.split(".", 1)[0])
        tail = rest[len(vm) + 1:]
        if not rest or not tail:
            totals[key] = value
            continue
        sub = _SUB.fullmatch(tail)
        scope = (vm, sub.group(1)) if sub else (vm, None)
        scoped.setdefault(scope, {})[sub.group(2) if sub else tail] = value
    return totals, scoped


def join_scopes(totals: Mapping[str, Any], scopes: Mapping[Scope, Mapping[str, Any]]) -> dict[str, Any]:
    """The totals, then each scope's metrics under its prefix."""
    out = dict(totals)
    for scope, values in scopes.items():
        head = prefix(scope)
        out.update({f"{head}.{name}": value for name, value in values.items()})
    return out
