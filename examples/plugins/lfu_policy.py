"""LFU, a TLB replacement policy in one plugin file (see docs/plugin-authors.md)."""
from slatframe import hookimpl
from slatframe.records import TlbPolicyRecord


class Lfu:
    """Evict the way with the fewest hits since its fill; ties go to the lowest way."""

    def __init__(self, options, sets, ways, rng):
        self.count = [[0] * ways for _ in range(sets)]

    def hit(self, s, way):
        self.count[s][way] += 1

    def fill(self, s, way):
        self.count[s][way] = 0

    def victim(self, s):
        row = self.count[s]
        return row.index(min(row))


@hookimpl
def slatframe_tlb_policies():
    return [TlbPolicyRecord(name="lfu", summary="least frequently used", factory=Lfu)]
