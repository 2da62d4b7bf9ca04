"""Derived metrics: ratios of a run's counters and cycles, computed in this one place for
the run's result, ``slatframe recost``, ``load_results``, ``plot`` and ``report``.

Every name starts with ``derived.``; each scope of the per-VM metrics has its own
(``vm.<vm>.derived.*``, ``vm.<vm>.asid.<n>.derived.*``, ``between_records.derived.*``).
A figure whose denominator is 0, or whose counters the metrics lack, is left out (never
reported as 0). Instructions are the ``ifetch`` records (one per instruction executed in
lackey and ChampSim traces, and in traces ``slatframe trace record`` makes), known when
the first TLB level ifetch records look up serves instructions only (its lookups are
they) or the first level data accesses look up serves data only (the other accesses are
they); otherwise the ``mpki`` and per-instruction figures are left out. The table of
names is in docs/report.md, "Derived metrics".
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .scope_metrics import join_scopes, split_scopes

PREFIX = "derived."
SIDES = ("data", "instruction", "unified")
#: A TLB level as derived metrics see it: (name, side), in lookup order.
Level = tuple[str, str]


def _number(m: Mapping[str, Any], key: str) -> int | float | None:
    value = m.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _counts(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def levels_of(config: Any) -> list[Level] | None:
    """The TLB levels of a :class:`~slatframe.config.Config` or of a result's config data,
    in lookup order; None when the data do not say (no config, or one without valid levels)."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        return [(lv.name, lv.side) for lv in config.tlb.levels]
    tlb = config.get("tlb")
    levels = tlb.get("levels") if isinstance(tlb, Mapping) else None
    if not isinstance(levels, list):
        return None
    out = []
    for lv in levels:
        if not isinstance(lv, Mapping) or not isinstance(lv.get("name"), str) or lv.get("side", "unified") not in SIDES:
            return None
        out.append((lv["name"], lv.get("side", "unified")))
    return out


def vm_names_of(config: Any) -> list[str]:
    """The VM names of a :class:`~slatframe.config.Config` or of a result's config data
    (none without a config)."""
    if config is None:
        return []
    if not isinstance(config, Mapping):
        return [vm.name for vm in config.vms]
    vms = config.get("vms")
    return [vm["name"] for vm in vms if isinstance(vm, Mapping) and isinstance(vm.get("name"), str)] \
        if isinstance(vms, list) else []


def instructions(m: Mapping[str, Any], levels: Sequence[Level] | None) -> int | None:
    """The ifetch records among the accesses of ``m``, when the TLB levels tell them apart
    (module docstring); None otherwise."""
    if not levels:
        return None

    def lookups(name: str) -> int | None:
        hits, misses = _number(m, f"tlb.{name}.hits"), _number(m, f"tlb.{name}.misses")
        return None if hits is None or misses is None else hits + misses

    first_i = next((lv for lv in levels if lv[1] != "data"), None)
    if first_i is not None and first_i[1] == "instruction":
        return lookups(first_i[0])
    first_d = next((lv for lv in levels if lv[1] != "instruction"), None)
    accesses, data = _number(m, "accesses"), lookups(first_d[0]) if first_d is not None else None
    if first_d is not None and first_d[1] == "data" and accesses is not None and data is not None:
        return accesses - data
    return None


def derived_metrics(m: Mapping[str, Any], levels: Sequence[Level] | None) -> dict[str, Any]:
    """The derived metrics of one scope's metrics ``m`` (counters and cycles, no prefix).
    ``levels``: the TLB levels in lookup order, or None when unknown (then the TLB levels
    are those ``m`` has counters of, and the last level's and per-instruction figures are
    left out)."""
    out: dict[str, Any] = {}

    def ratio(name: str, num: int | float | None, den: int | float | None, scale: int = 1) -> None:
        if num is not None and den:
            out[PREFIX + name] = scale * num / den

    walks, accesses = _number(m, "walks"), _number(m, "accesses")
    ratio("refs_per_walk", _number(m, "walk.refs"), walks)
    ratio("refs_per_walk_guest", _number(m, "walk.refs_guest"), walks)
    ratio("refs_per_walk_host", _number(m, "walk.refs_host"), walks)
    count = instructions(m, levels)
    if count:
        out[PREFIX + "instructions"] = count
    names = [name for name, _ in levels] if levels is not None else \
        sorted({k[4:-5] for k in m if k.startswith("tlb.") and k.endswith(".hits")})
    for name in names:
        hits, misses = _number(m, f"tlb.{name}.hits"), _number(m, f"tlb.{name}.misses")
        if hits is None or misses is None:
            continue
        ratio(f"tlb.{name}.hit_rate", hits, hits + misses)
        ratio(f"tlb.{name}.mpka", misses, accesses, 1000)
        ratio(f"tlb.{name}.mpki", misses, count, 1000)
    if levels:
        last = levels[-1][0]
        for per in ("mpka", "mpki"):
            if f"{PREFIX}tlb.{last}.{per}" in out:
                out[PREFIX + per] = out[f"{PREFIX}tlb.{last}.{per}"]
    caches = sorted({k[len("walk_cache."):k.rindex(".")] for k in m if k.startswith("walk_cache.")
                     and k.endswith((".hits", ".misses"))})
    for name in caches:  # a walk cache's counters appear once they are not 0
        hits, misses = (m.get(f"walk_cache.{name}.{kind}", 0) for kind in ("hits", "misses"))
        if _counts(hits, misses):
            ratio(f"walk_cache.{name}.hit_rate", hits, hits + misses)
    ratio("vm_exits_pka", _number(m, "vm_exits"), accesses, 1000)
    for key in sorted(k for k in m if k.startswith("vm_exits.")):
        ratio(f"vm_exits_pka.{key[len('vm_exits.'):]}", _number(m, key), accesses, 1000)
    ratio("translation_cycles_per_access", _number(m, "cycles.translation"), accesses)
    ratio("cycles_per_instruction", _number(m, "cycles.total"), count)
    return out


def is_derived(key: str) -> bool:
    """Whether ``key`` (of one scope, without its prefix) is a derived metric."""
    return key.startswith(PREFIX)


def with_derived(metrics: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """``metrics`` (a result's, of any scope) with every derived metric computed again from
    its counters and cycles (those it holds are replaced, so a result written before
    derived metrics existed reads the same as a new one); ``config``: the result's config
    data or :class:`~slatframe.config.Config`."""
    levels = levels_of(config)
    totals, scopes = split_scopes(metrics, vm_names_of(config))
    parts = []
    for part in (totals, *scopes.values()):
        own = {k: v for k, v in part.items() if not is_derived(k)}
        own.update(derived_metrics(own, levels))
        parts.append(own)
    return join_scopes(parts[0], dict(zip(scopes, parts[1:])))
