"""TLB replacement policies: ``lru``, ``fifo``, ``random``, ``tree-plru``, ``srrip``.

A policy keeps its own per-set state and answers the TLB array's calls:
``hit(set, way)``, ``fill(set, way)``, ``victim(set) -> way`` (asked only when every way
of the set is valid) and, optionally, ``invalidate(set, way)``.
"""
from __future__ import annotations

import attrs
import numpy as np
from numba import njit

from slatframe import hookimpl
from slatframe.options import option
from slatframe.records import PolicyKernels, TlbPolicyRecord

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



# -- compiled-tier kernels ---------------------------------------------------------------
# Each policy keeps its state in one int64 2D array (init); kernels get the engine's
# stacked 3D array and the structure's index i. Row s belongs to set s; column 0 holds
# the number of ways, so no kernel depends on the array's (padded) shape.

@njit(cache=True, forceinline=True, _nrt=False)
def no_op(state, i, s, w):
    pass


# Recency (lru: fills and hits; fifo: fills only). Sets of up to LIST_MIN_WAYS - 1 ways
# keep a stamp per way and scan for the smallest; wider sets keep the order as a doubly
# linked list, so a victim is read, not searched for. Both give the reference objects'
# victim: it is asked for only when every way has been filled, so stamps are distinct.
LIST_MIN_WAYS = 17


def recency_init(options, sets, ways, rng):
    """Column 0: ways. Stamps: column 1 the set's clock, columns 2.. the stamps. List:
    column 1 the most recent way, column 2 the least recent, then each way's previous
    (more recent) and next (less recent) way, -1 at the ends."""
    if ways < LIST_MIN_WAYS:
        state = np.zeros((sets, ways + 2), dtype=np.int64)
    else:
        state = np.zeros((sets, 3 + 2 * ways), dtype=np.int64)
        state[:, 1], state[:, 2] = 0, ways - 1
        state[:, 3:3 + ways] = np.arange(-1, ways - 1)
        state[:, 3 + ways:] = np.arange(1, ways + 1)
        state[:, 3 + 2 * ways - 1] = -1
    state[:, 0] = ways
    return state


@njit(cache=True, forceinline=True, _nrt=False)
def touch(state, i, s, w):
    """Make way w the most recent."""
    ways = state[i, s, 0]
    if ways < LIST_MIN_WAYS:
        state[i, s, 1] += 1
        state[i, s, w + 2] = state[i, s, 1]
        return
    first = state[i, s, 1]
    if first == w:
        return
    prev, nxt = state[i, s, 3 + w], state[i, s, 3 + ways + w]  # w is not first: prev >= 0
    state[i, s, 3 + ways + prev] = nxt
    if nxt < 0:
        state[i, s, 2] = prev
    else:
        state[i, s, 3 + nxt] = prev
    state[i, s, 3 + w] = -1
    state[i, s, 3 + ways + w] = first
    state[i, s, 3 + first] = w
    state[i, s, 1] = w


@njit(cache=True, forceinline=True, _nrt=False)
def least_recent(state, i, s):
    """The least recent way (the smallest stamp, kept in a register: a conditional move)."""
    ways = state[i, s, 0]
    if ways >= LIST_MIN_WAYS:
        return state[i, s, 2]
    way = 0
    best = state[i, s, 2]
    for w in range(1, ways):
        v = state[i, s, w + 2]
        if v < best:
            best = v
            way = w
    return way


def random_init(options, sets, ways, rng):
    """Row 0: ways, then the xorshift64* state (one stream for all sets, as the object)."""
    state = np.zeros((1, 2), dtype=np.int64)
    state[0, 0] = ways
    state[0, 1] = int(rng.integers(1, 1 << 63))
    return state


@njit(cache=True, forceinline=True, _nrt=False)
def random_victim(state, i, s):
    x = np.uint64(state[i, 0, 1])
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[i, 0, 1] = np.int64(x)
    out = x * np.uint64(0x2545F4914F6CDD1D)
    return np.int64((out >> np.uint64(32)) % np.uint64(state[i, 0, 0]))


def plru_init(options, sets, ways, rng):
    """Column 0: ways, column 1: leaves, columns 2..: the tree's bits."""
    leaves = 1 << max(0, (ways - 1).bit_length())
    state = np.zeros((sets, 2 + max(1, leaves - 1)), dtype=np.int64)
    state[:, 0] = ways
    state[:, 1] = leaves
    return state


@njit(cache=True, forceinline=True, _nrt=False)
def plru_touch(state, i, s, way):
    node, lo, size = 0, 0, state[i, s, 1]
    while size > 1:
        half = size // 2
        if way >= lo + half:
            state[i, s, 2 + node] = 0
            node, lo, size = 2 * node + 2, lo + half, half
        else:
            state[i, s, 2 + node] = 1
            node, size = 2 * node + 1, half
    return


@njit(cache=True, forceinline=True, _nrt=False)
def plru_victim(state, i, s):
    node, lo, size, ways = 0, 0, state[i, s, 1], state[i, s, 0]
    while size > 1:
        half = size // 2
        if state[i, s, 2 + node] == 1 and lo + half < ways:
            node, lo, size = 2 * node + 2, lo + half, half
        else:
            node, size = 2 * node + 1, half
    return lo


def srrip_init(options, sets, ways, rng):
    """Column 0: ways, column 1: the maximum RRPV, columns 2..: RRPVs."""
    top = (1 << options.bits) - 1
    state = np.full((sets, ways + 2), top, dtype=np.int64)
    state[:, 0] = ways
    return state


@njit(cache=True, forceinline=True, _nrt=False)
def srrip_hit(state, i, s, w):
    state[i, s, w + 2] = 0


@njit(cache=True, forceinline=True, _nrt=False)
def srrip_fill(state, i, s, w):
    state[i, s, w + 2] = state[i, s, 1] - 1


@njit(cache=True, forceinline=True, _nrt=False)
def srrip_invalidate(state, i, s, w):
    state[i, s, w + 2] = state[i, s, 1]


@njit(cache=True, forceinline=True, _nrt=False)
def srrip_victim(state, i, s):
    ways, top = state[i, s, 0], state[i, s, 1]
    oldest = 0
    for w in range(ways):
        oldest = max(oldest, state[i, s, w + 2])
    if oldest < top:
        for w in range(ways):
            state[i, s, w + 2] += top - oldest
    for w in range(ways):
        if state[i, s, w + 2] == top:
            return w
    return 0


# inline: compiled into the loop (they change only with slatframe itself)
LRU_KERNELS = PolicyKernels(init=recency_init, hit=touch, fill=touch, victim=least_recent, invalidate=no_op,
                            inline=True)
FIFO_KERNELS = PolicyKernels(init=recency_init, hit=no_op, fill=touch, victim=least_recent, invalidate=no_op,
                             inline=True)
RANDOM_KERNELS = PolicyKernels(init=random_init, hit=no_op, fill=no_op, victim=random_victim, invalidate=no_op,
                               inline=True)
PLRU_KERNELS = PolicyKernels(init=plru_init, hit=plru_touch, fill=plru_touch, victim=plru_victim, invalidate=no_op,
                             inline=True)
SRRIP_KERNELS = PolicyKernels(init=srrip_init, hit=srrip_hit, fill=srrip_fill, victim=srrip_victim,
                              invalidate=srrip_invalidate, inline=True)


@hookimpl
def slatframe_tlb_policies():
    return [
        TlbPolicyRecord(name="lru", summary="least recently used", factory=Lru, kernels=LRU_KERNELS),
        TlbPolicyRecord(name="fifo", summary="first in, first out", factory=Fifo, kernels=FIFO_KERNELS),
        TlbPolicyRecord(name="random", summary="uniformly random victim, seeded (xorshift64*)",
                        factory=Random, kernels=RANDOM_KERNELS),
        TlbPolicyRecord(name="tree-plru", summary="tree pseudo-LRU", factory=TreePlru, kernels=PLRU_KERNELS),
        TlbPolicyRecord(name="srrip", summary="static RRIP, hit priority (Jaleel et al. 2010)",
                        factory=Srrip, options=SrripOptions, kernels=SRRIP_KERNELS),
    ]
