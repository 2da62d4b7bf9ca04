"""LFU with compiled-engine kernels: the policy of lfu_policy.py, plus the four @njit
kernels and the state initializer that let ``engine = "auto"`` pick the compiled tier."""
import numpy as np
from numba import njit

from slatframe import hookimpl
from slatframe.records import PolicyKernels, TlbPolicyRecord


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


def lfu_init(options, sets, ways, rng):
    state = np.zeros((sets, ways + 1), dtype=np.int64)  # column 0: ways, then hit counts
    state[:, 0] = ways
    return state


@njit(cache=True, _nrt=False)
def lfu_hit(state, i, s, w):
    state[i, s, w + 1] += 1


@njit(cache=True, _nrt=False)
def lfu_fill(state, i, s, w):
    state[i, s, w + 1] = 0


@njit(cache=True, _nrt=False)
def lfu_invalidate(state, i, s, w):
    pass


@njit(cache=True, _nrt=False)
def lfu_victim(state, i, s):
    way = 0
    for w in range(1, state[i, s, 0]):
        if state[i, s, w + 1] < state[i, s, way + 1]:
            way = w
    return way


@hookimpl
def slatframe_tlb_policies():
    kernels = PolicyKernels(init=lfu_init, hit=lfu_hit, fill=lfu_fill, victim=lfu_victim,
                            invalidate=lfu_invalidate)
    return [TlbPolicyRecord(name="lfu", summary="least frequently used", factory=Lfu, kernels=kernels)]
