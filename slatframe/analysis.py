"""Trace statistics: reuse distances and what they say about LRU TLBs."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def reuse_distances(ids: np.ndarray, n_ids: int) -> np.ndarray:
    """LRU stack distance of each access: how many distinct other ids were used since the
    previous access to the same id (-1 for a first access). O(n log n) with a Fenwick
    tree that marks each id's latest access time."""
    n = ids.shape[0]
    tree = np.zeros(n + 1, dtype=np.int64)
    last = np.full(n_ids, -1, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for t in range(n):
        p = ids[t]
        prev = last[p]
        if prev >= 0:
            # marks in (prev, t): prefix(t) - prefix(prev + 1)
            total = 0
            i = t
            while i > 0:
                total += tree[i]
                i -= i & -i
            i = prev + 1
            while i > 0:
                total -= tree[i]
                i -= i & -i
            out[t] = total
            i = prev + 1
            while i <= n:
                tree[i] -= 1
                i += i & -i
        else:
            out[t] = -1
        i = t + 1
        while i <= n:
            tree[i] += 1
            i += i & -i
        last[p] = t
    return out


def lru_hit_rate(distances: np.ndarray, entries: int) -> float:
    """Hit rate of a fully associative LRU array of ``entries`` over these accesses."""
    if distances.size == 0:
        return 0.0
    return float(np.count_nonzero((distances >= 0) & (distances < entries)) / distances.size)
