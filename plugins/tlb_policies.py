"""TLB replacement policies: ``lru``, ``fifo``, ``random``, ``tree-plru``, ``srrip``.

A policy keeps its own per-set state and answers the TLB array's calls:
``hit(set, way)``, ``fill(set, way)``, ``victim(set) -> way`` (asked only when every way
of the set is valid) and, optionally, ``invalidate(set, way)``.
"""
from __future__ import annotations

import attrs

from slatframe import hookimpl
from slatframe.options import option
from slatframe.records import TlbPolicyRecord

MASK64 = (1 << 64) - 1


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


class Fifo(Lru):
    """First in, first out: evict the way filled longest ago; hits change nothing."""

    def hit(self, s: int, way: int) -> None:
        pass

    def fill(self, s: int, way: int) -> None:
        Lru.hit(self, s, way)


def xorshift64star(state: int) -> tuple[int, int]:
    """One step of Vigna's xorshift64*: (new state, output)."""
    state ^= state >> 12
    state ^= (state << 25) & MASK64
    state ^= state >> 27
    return state, (state * 0x2545F4914F6CDD1D) & MASK64


class Random:
    """Evict a uniformly random way, from a xorshift64* stream seeded by the run's seed."""

    def __init__(self, options, sets: int, ways: int, rng) -> None:
        self.ways = ways
        self.state = int(rng.integers(1, 1 << 63))

    def hit(self, s: int, way: int) -> None:
        pass

    fill = hit

    def victim(self, s: int) -> int:
        self.state, out = xorshift64star(self.state)
        return (out >> 32) % self.ways


class TreePlru:
    """Tree pseudo-LRU: a binary tree of bits over the ways (rounded up to a power of
    two); each access points the bits on its path away from it; the victim follows the
    bits, turning back from subtrees that hold no real way."""

    def __init__(self, options, sets: int, ways: int, rng) -> None:
        self.ways = ways
        self.leaves = 1 << max(0, (ways - 1).bit_length())
        self.bits = [[0] * max(1, self.leaves - 1) for _ in range(sets)]

    def hit(self, s: int, way: int) -> None:
        bits, node, lo, size = self.bits[s], 0, 0, self.leaves
        while size > 1:
            half = size // 2
            right = way >= lo + half
            bits[node] = 0 if right else 1  # point at the other half
            node = 2 * node + (2 if right else 1)
            lo, size = (lo + half, half) if right else (lo, half)

    fill = hit

    def victim(self, s: int) -> int:
        bits, node, lo, size = self.bits[s], 0, 0, self.leaves
        while size > 1:
            half = size // 2
            right = bits[node] == 1 and lo + half < self.ways  # no real way on the right: go left
            node = 2 * node + (2 if right else 1)
            lo, size = (lo + half, half) if right else (lo, half)
        return lo


@attrs.frozen
class SrripOptions:
    bits: int = option(2, "bits of the re-reference prediction value (RRPV)", min=1, max=8)


class Srrip:
    """Static re-reference interval prediction (Jaleel et al., ISCA 2010), hit priority:
    fill with RRPV = max-1, a hit sets 0, the victim is the first way with RRPV = max,
    ageing every way of the set until one reaches it."""

    def __init__(self, options: SrripOptions, sets: int, ways: int, rng) -> None:
        self.max = (1 << options.bits) - 1
        self.rrpv = [[self.max] * ways for _ in range(sets)]

    def hit(self, s: int, way: int) -> None:
        self.rrpv[s][way] = 0

    def fill(self, s: int, way: int) -> None:
        self.rrpv[s][way] = self.max - 1

    def invalidate(self, s: int, way: int) -> None:
        self.rrpv[s][way] = self.max

    def victim(self, s: int) -> int:
        row = self.rrpv[s]
        oldest = max(row)
        if oldest < self.max:
            for w in range(len(row)):
                row[w] += self.max - oldest
        return row.index(self.max)


@hookimpl
def slatframe_tlb_policies():
    return [
        TlbPolicyRecord(name="lru", summary="least recently used", factory=Lru),
        TlbPolicyRecord(name="fifo", summary="first in, first out", factory=Fifo),
        TlbPolicyRecord(name="random", summary="uniformly random victim, seeded (xorshift64*)", factory=Random),
        TlbPolicyRecord(name="tree-plru", summary="tree pseudo-LRU", factory=TreePlru),
        TlbPolicyRecord(name="srrip", summary="static RRIP, hit priority (Jaleel et al. 2010)",
                        factory=Srrip, options=SrripOptions),
    ]
