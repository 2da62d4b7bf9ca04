"""TLB replacement policies: ``lru`` and ``fifo``.

A policy keeps its own per-set state and answers three calls from the TLB array:
``hit(set, way)``, ``fill(set, way)`` and ``victim(set) -> way`` (asked only when every
way of the set is valid).
"""
from __future__ import annotations

from slatframe import hookimpl
from slatframe.records import TlbPolicyRecord


class Lru:
    """Least recently used: evict the way whose last hit or fill is oldest."""

    def __init__(self, options, sets: int, ways: int, rng) -> None:
        self.clock = 0
        self.stamp = [[0] * ways for _ in range(sets)]

    def hit(self, s: int, way: int) -> None:
        self.clock += 1
        self.stamp[s][way] = self.clock

    fill = hit

    def victim(self, s: int) -> int:
        row = self.stamp[s]
        return row.index(min(row))


class Fifo:
    """First in, first out: evict the way filled longest ago; hits change nothing."""

    def __init__(self, options, sets: int, ways: int, rng) -> None:
        self.clock = 0
        self.stamp = [[0] * ways for _ in range(sets)]

    def hit(self, s: int, way: int) -> None:
        pass

    def fill(self, s: int, way: int) -> None:
        self.clock += 1
        self.stamp[s][way] = self.clock

    def victim(self, s: int) -> int:
        row = self.stamp[s]
        return row.index(min(row))


@hookimpl
def slatframe_tlb_policies():
    return [
        TlbPolicyRecord(name="lru", summary="least recently used", factory=Lru),
        TlbPolicyRecord(name="fifo", summary="first in, first out", factory=Fifo),
    ]
