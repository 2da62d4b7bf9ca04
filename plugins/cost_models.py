"""Cost models: ``fixed`` (a constant number of cycles per counted event) and
``cache-aware`` (page-walk references charged at the cache level that served them).

Every figure is a sum of (count x constant) over the run's counters, the model's
options and each TLB level's ``latency``; all of them are stored in the result, so a
reader can recompute every ``cycles.*`` metric by hand. Sources of the defaults and of
the ``intel-server`` / ``amd-server`` presets are in docs/cost-models.md (source keys
refer to docs/latency-sources.md).
"""
from __future__ import annotations

import difflib
from typing import Any, Iterator

import attrs

from slatframe import hookimpl
from slatframe.datacache import LINE_SHIFT, CacheLevelSpec, DataCacheSpec
from slatframe.options import ConfigFacts, option
from slatframe.units import format_size
from slatframe.records import CostModelRecord

PRESETS = ("", "intel-server", "amd-server")
CYCLES_MAX = 1 << 32  #: cycles of one event at most, so cycle totals stay within int64
LINE_BYTES = 1 << LINE_SHIFT  #: the data caches' line size


def _one_per_reason(items: tuple) -> None:
    reasons = [item.reason for item in items]
    repeated = sorted({r for r in reasons if reasons.count(r) > 1})
    if repeated:
        raise ValueError(f"each exit reason at most once; {repeated[0]!r} is given {reasons.count(repeated[0])} times")


def _reason_name(value: str) -> None:
    if not value or not value.replace("_", "").isalnum():
        raise ValueError("an exit reason as counted in vm_exits.<reason>: letters, digits and underscores")


def _exit_reason_problems(work: tuple, known: frozenset[str] | None) -> Iterator[tuple[str, str]]:
    """Each ``exit_work`` reason that neither a registered SLAT scheme nor the core counts (a misspelling would
    never be charged)."""
    if known is None:
        return
    for i, item in enumerate(work):
        if item.reason not in known:
            close = difflib.get_close_matches(item.reason, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            yield f"exit_work[{i}].reason", (f"= {item.reason!r} is not allowed: neither a registered SLAT scheme "
                                             f"nor the core counts exits of that reason{hint}; the reasons counted are "
                                             f"{', '.join(sorted(known)) or 'none'}.")


@attrs.frozen
class ExitWork:
    """The hypervisor's cycles for one exit reason besides the round trip."""

    reason: str = option(help="exit reason as in the vm_exits.<reason> metrics (pt_write, cr3_write, invlpg, "
                              "page_fault, hypercall, ...)", check=_reason_name)
    cycles: int = option(help="cycles of the hypervisor's handling besides vm_exit", min=0, max=CYCLES_MAX)


@attrs.frozen
class EventCostOptions:
    """The options both models share: a preset and the cycles of each event kind."""

    preset: str = option("", "named machine whose values the keys not written take: intel-server "
                         "(Skylake-SP) or amd-server (Zen 2 / Rome); empty for the defaults below "
                         "(Skylake-SP's, with a generic KVM exit)", choices=PRESETS)
    access: int = option(4, "cycles of the access itself, excluding translation (cache-aware: only "
                         "with data_accesses = false): L1D load-to-use [ANA-SKX, ANA-ROME]", min=0, max=CYCLES_MAX)
    vm_exit: int = option(1100, "cycles per VM exit round trip through KVM (cpuid exit, "
                          "1018-1098 cycles [KVM-SEAN-24])", min=0, max=CYCLES_MAX)
    access_overlap: float = option(
        1.0, "data accesses in flight on average: an out-of-order core overlaps their latencies, so cycles.access "
             "is divided by this (1: every access pays its full latency, one after another). Calibrated on this "
             "project's machine by examples/calibrate_overlap.py (docs/cost-models.md); translation is not divided",
        min=0.01, max=1000.0)
    exit_work: tuple[ExitWork, ...] = option(
        [], "cycles the hypervisor spends on exits of a reason besides the round trip, as [[cost.exit_work]] "
            "tables of reason and cycles; a reason not listed costs only vm_exit. No published per-reason "
            "figures were found (docs/cost-models.md), so none are charged by default", check_all=_one_per_reason)
    guest_fault: int = option(3200, "cycles per guest page fault (Linux minor fault, median "
                              "~3.2k cycles [BLOG-PF], ~1 us [PERFBOOK])", min=0, max=CYCLES_MAX)
    host_fault: int = option(3200, "cycles per host fault (EPT violation / nested page fault) "
                             "besides its VM exit: a host minor fault, as guest_fault", min=0, max=CYCLES_MAX)
    cow_copy: int = option(228, "cycles to copy 4 KiB in a copy-on-write break (the hypervisor's after dedup, the "
                           "guest kernel's after a fork), besides its faults and VM exits (hot 4 KiB memcpy "
                           "[BTRFS-XXH])", min=0, max=CYCLES_MAX)
    scan_page: int = option(860, "cycles of the dedup scanner per page visited: one xxhash64 of 4 KiB "
                            "[BTRFS-XXH]; tree comparisons are not charged", min=0, max=CYCLES_MAX)
    ipi: int = option(3645, "cycles of one inter-processor interrupt, from the send to the end of its handler on the "
                            "receiver, besides any VM exit it takes (charged as vm_exit) and its flush: kvm-unit-tests' "
                            "IPI test, x2APIC, with Intel IPI virtualization, so with no exit on either side "
                            "[KVM-IPIV]; only runs of several vCPUs count IPIs", min=0, max=CYCLES_MAX)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        yield from _exit_reason_problems(self.exit_work, facts.exit_reasons)


@attrs.frozen
class FixedCostOptions(EventCostOptions):
    walk_ref: int = option(14, "cycles per page-walk memory reference, taking the PTE line to hit "
                           "in L2 [ANA-SPEPYC]; the cache-aware model replaces this guess", min=0, max=CYCLES_MAX)


@attrs.frozen
class CacheAwareOptions(EventCostOptions):
    data_accesses: bool = option(True, "data accesses go through the caches too (they compete with "
                                 "page-table lines, and are charged at their level)")
    l1d_size: int = option(32 << 10, "L1 data cache capacity [ANA-SKX]", size=True, min=64)
    l1d_ways: int = option(8, "L1 data cache associativity [ANA-SKX]", min=1)
    l1d_latency: int = option(4, "L1 data cache load-to-use cycles [ANA-SKX, ANA-SPEPYC]", min=0, max=CYCLES_MAX)
    l2_size: int = option(1 << 20, "L2 capacity [ANA-SKX]; 0 for none", size=True, min=0)
    l2_ways: int = option(16, "L2 associativity [ANA-SKX]", min=1)
    l2_latency: int = option(14, "L2 load-to-use cycles [ANA-SPEPYC, ANA-ROME]", min=0, max=CYCLES_MAX)
    llc_size: int = option(1408 << 10, "last-level cache capacity: one core's share (1.375 MiB per "
                           "core on Skylake-SP [ANA-SKX]); 0 for none", size=True, min=0)
    llc_ways: int = option(11, "last-level cache associativity [ANA-SKX]", min=1)
    llc_latency: int = option(56, "last-level cache load-to-use cycles [ANA-SPEPYC]", min=0, max=CYCLES_MAX)
    memory_latency: int = option(189, "cycles of a reference served by DRAM: 90 ns [ANA-SPEPYC] at "
                                 "2.1 GHz", min=0, max=CYCLES_MAX)
    walk_l1d_latency: int | None = option(None, "cycles of a page-walk reference the L1D serves (absent: "
                                          "l1d_latency); slatframe calibrate fits the walk's latencies apart from "
                                          "the data's", min=0, max=CYCLES_MAX)
    walk_l2_latency: int | None = option(None, "cycles of a page-walk reference the L2 serves (absent: l2_latency)",
                                         min=0, max=CYCLES_MAX)
    walk_llc_latency: int | None = option(None, "cycles of a page-walk reference the LLC serves (absent: "
                                          "llc_latency)", min=0, max=CYCLES_MAX)
    walk_memory_latency: int | None = option(None, "cycles of a page-walk reference DRAM serves (absent: "
                                             "memory_latency)", min=0, max=CYCLES_MAX)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        yield from super().problems(facts)
        for level in ("l1d", "l2", "llc"):
            size, ways = getattr(self, f"{level}_size"), getattr(self, f"{level}_ways")
            line_set = ways * LINE_BYTES
            if size and size % line_set:
                yield f"{level}_size", (f"= {format_size(size)!r} is not allowed: a cache of {ways} ways "
                                        f"(cost.{level}_ways) of {LINE_BYTES}-byte lines holds a whole number of "
                                        f"sets, so its size is a multiple of {format_size(line_set)} "
                                        f"({ways} x {LINE_BYTES} bytes).")

    def spec(self) -> DataCacheSpec:
        levels = [CacheLevelSpec("l1d", self.l1d_size, self.l1d_ways)]
        if self.l2_size:
            levels.append(CacheLevelSpec("l2", self.l2_size, self.l2_ways))
        if self.llc_size:
            levels.append(CacheLevelSpec("llc", self.llc_size, self.llc_ways))
        return DataCacheSpec(tuple(levels), self.data_accesses)

    def latencies(self) -> dict[str, int]:
        """Cycles per data access served by each counted level, memory included."""
        return {"l1d": self.l1d_latency, "l2": self.l2_latency, "llc": self.llc_latency,
                "memory": self.memory_latency}

    def walk_latencies(self) -> dict[str, int]:
        """Cycles per page-walk reference served by each level (the data's where not given)."""
        data = self.latencies()
        return {level: data[level] if getattr(self, f"walk_{level}_latency") is None
                else getattr(self, f"walk_{level}_latency") for level in data}


# Presets: values per named machine; docs/cost-models.md gives each one's source.
COMMON_PRESETS = {
    "intel-server": {"vm_exit": 1529},  # vmcall round trip on Skylake-SP [KVM-WLI-PMU]
    "amd-server": {"vm_exit": 1360},  # VMRUN -> guest -> #VMEXIT on Zen [KVM-ROTH]
}
FIXED_PRESETS = {
    "intel-server": {**COMMON_PRESETS["intel-server"], "walk_ref": 14},  # L2 [ANA-SPEPYC]
    "amd-server": {**COMMON_PRESETS["amd-server"], "walk_ref": 13},  # L2 [ANA-ROME]
}
CACHE_AWARE_PRESETS = {
    "intel-server": {**COMMON_PRESETS["intel-server"],
                     "l1d_size": "32K", "l1d_ways": 8, "l1d_latency": 4,
                     "l2_size": "1M", "l2_ways": 16, "l2_latency": 14,
                     "llc_size": "1408K", "llc_ways": 11, "llc_latency": 56,
                     "memory_latency": 189},
    "amd-server": {**COMMON_PRESETS["amd-server"],
                   "l1d_size": "32K", "l1d_ways": 8, "l1d_latency": 4,
                   "l2_size": "512K", "l2_ways": 8, "l2_latency": 13,
                   "llc_size": "4M", "llc_ways": 16, "llc_latency": 34,
                   "memory_latency": 415},
}


def overlapped(access: int, o: Any) -> int:
    """The data accesses' cycles with ``access_overlap`` of them in flight, in whole cycles."""
    return access if o.access_overlap == 1.0 else round(access / o.access_overlap)


def event_cycles(m: dict, config: Any, o: Any, walk: int, access: int) -> dict:
    """The breakdown shared by both models, given their walk and access cycles."""
    tlb = sum((m[f"tlb.{lv.name}.hits"] + m[f"tlb.{lv.name}.misses"]) * lv.latency
              for lv in config.tlb.levels)
    work = {w.reason: w.cycles for w in o.exit_work}
    by_reason = {k: v * (o.vm_exit + work.get(k[len("vm_exits."):], 0))
                 for k, v in m.items() if k.startswith("vm_exits.")}
    vm_exit = m.get("vm_exits", 0) * o.vm_exit + sum(m.get(f"vm_exits.{r}", 0) * c for r, c in work.items())
    fault = m.get("faults.guest", 0) * o.guest_fault + m.get("faults.host", 0) * o.host_fault
    ipi = m.get("ipi.received", 0) * o.ipi
    translation = tlb + walk + vm_exit + fault + ipi
    # copies of 4 KiB: the hypervisor's copy-on-write breaks, and the guest kernel's (by bytes: its pages may be large)
    cow = (m.get("dedup.cow_breaks", 0) + m.get("guest.cow_copy_bytes", 0) // 4096) * o.cow_copy
    scan = m.get("dedup.pages_scanned", 0) * o.scan_page
    total = translation + cow + scan + access
    return {
        "cycles.access": access,
        "cycles.tlb": tlb,
        "cycles.walk": walk,
        "cycles.vm_exit": vm_exit,
        "cycles.fault": fault,
        "cycles.cow": cow,
        "cycles.dedup_scan": scan,
        "cycles.translation": translation,
        "cycles.total": total,
        "cycles.per_access": total / m["accesses"] if m["accesses"] else 0.0,
        "translation_overhead": translation / total if total else 0.0,
        **{"cycles.vm_exit." + k[len("vm_exits."):]: v for k, v in sorted(by_reason.items())},
        **({"cycles.ipi": ipi} if "ipi.received" in m else {}),
    }


class FixedCost:
    """Cycles = sum over event kinds of count x constant."""

    def __init__(self, options: FixedCostOptions) -> None:
        self.o = options

    def cycles(self, m: dict, config: Any) -> dict:
        walk = (m.get("walk.refs", 0) + m.get("walk.refs_aborted", 0)) * self.o.walk_ref
        return event_cycles(m, config, self.o, walk, overlapped(m["accesses"] * self.o.access, self.o))


class CacheAwareCost:
    """Walk references (and data accesses) at the latency of the level that served them."""

    def __init__(self, options: CacheAwareOptions) -> None:
        self.o = options

    def cycles(self, m: dict, config: Any) -> dict:
        def served(kind: str, latency: dict[str, int]) -> int:
            return sum(m.get(f"dcache.{kind}.{level}", 0) * cycles for level, cycles in latency.items())

        access = served("data", self.o.latencies()) if self.o.data_accesses else m["accesses"] * self.o.access
        return event_cycles(m, config, self.o, served("walk", self.o.walk_latencies()), overlapped(access, self.o))


@hookimpl
def slatframe_cost_models():
    return [
        CostModelRecord(name="fixed", summary="constant cycles per event kind, all from TOML",
                        factory=FixedCost, options=FixedCostOptions, presets=FIXED_PRESETS),
        CostModelRecord(name="cache-aware",
                        summary="walk references cost the L1/L2/LLC/DRAM level that holds the PTE line",
                        factory=CacheAwareCost, options=CacheAwareOptions, presets=CACHE_AWARE_PRESETS,
                        data_caches=CacheAwareOptions.spec),
    ]
