"""The ``fixed`` cost model: a constant number of cycles per counted event.

Every figure is a sum of (count x constant) over the run's counters and the constants
below plus each TLB level's ``latency``; all of them are stored in the result, so a
reader can recompute every ``cycles.*`` metric by hand. Sources of the defaults are in
docs/cost-models.md.
"""
from __future__ import annotations

import attrs

from slatframe import hookimpl
from slatframe.options import option
from slatframe.records import CostModelRecord


@attrs.frozen
class FixedCostOptions:
    # Source keys refer to docs/latency-sources.md; docs/cost-models.md explains each choice.
    access: int = option(4, "cycles of the access itself, excluding translation: L1D load-to-use "
                         "[ANA-SKX, ANA-ROME]", min=0)
    walk_ref: int = option(14, "cycles per page-walk memory reference, taking the PTE line to hit "
                           "in L2 [ANA-SPEPYC]; the cache-aware model replaces this guess", min=0)
    vm_exit: int = option(1100, "cycles per VM exit round trip through KVM (cpuid exit, "
                          "1018-1098 cycles [KVM-SEAN-24])", min=0)
    guest_fault: int = option(3200, "cycles per guest page fault (Linux minor fault, median "
                              "~3.2k cycles [BLOG-PF], ~1 us [PERFBOOK])", min=0)
    host_fault: int = option(3200, "cycles per host fault (EPT violation / nested page fault) "
                             "besides its VM exit: a host minor fault, as guest_fault", min=0)
    cow_copy: int = option(228, "cycles to copy the 4 KiB page of a copy-on-write break, besides its "
                           "host fault and VM exit (hot 4 KiB memcpy [BTRFS-XXH])", min=0)
    scan_page: int = option(860, "cycles of the dedup scanner per page visited: one xxhash64 of 4 KiB "
                            "[BTRFS-XXH]; tree comparisons are not charged", min=0)


class FixedCost:
    """Cycles = sum over event kinds of count x constant."""

    def __init__(self, options: FixedCostOptions) -> None:
        self.o = options

    def cycles(self, m: dict, config) -> dict:
        o = self.o
        tlb = sum((m[f"tlb.{lv.name}.hits"] + m[f"tlb.{lv.name}.misses"]) * lv.latency
                  for lv in config.tlb.levels)
        walk = (m.get("walk.refs", 0) + m.get("walk.refs_aborted", 0)) * o.walk_ref
        vm_exit = m.get("vm_exits", 0) * o.vm_exit
        fault = m.get("faults.guest", 0) * o.guest_fault + m.get("faults.host", 0) * o.host_fault
        translation = tlb + walk + vm_exit + fault
        cow = m.get("dedup.cow_breaks", 0) * o.cow_copy
        scan = m.get("dedup.pages_scanned", 0) * o.scan_page
        total = translation + cow + scan + m["accesses"] * o.access
        return {
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
        }


@hookimpl
def slatframe_cost_models():
    return [CostModelRecord(name="fixed", summary="constant cycles per event kind, all from TOML",
                            factory=FixedCost, options=FixedCostOptions)]
