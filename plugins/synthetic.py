"""The ``synthetic`` workload: seeded page-level access distributions.

Pages are chosen from ``footprint / page`` pages starting at ``base``; ``uniform`` picks
each page with equal probability, ``zipf`` picks the page of rank r with probability
proportional to 1 / r**zipf_exponent, ranks being scattered over the footprint by a
seeded permutation (so hot pages are not all adjacent). Each access gets a random
64-byte-aligned offset in its page and is a write with probability ``write_fraction``.
Records go round-robin to the configured VMs. The stream depends only on the seed and
the options, not on the chunk size.
"""
from __future__ import annotations

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.options import option
from slatframe.records import WorkloadRecord
from slatframe.trace import READ, TRACE_DTYPE, WRITE

LINE = 64


@attrs.frozen
class SyntheticOptions:
    distribution: str = option("uniform", "page distribution", choices=("uniform", "zipf"))
    accesses: int = option(100_000, "number of accesses", min=1)
    footprint: int = option(64 << 20, "bytes of virtual memory touched", size=True, min=4096)
    page: int = option(4096, "granularity of the page choice", size=True, min=64)
    zipf_exponent: float = option(1.0, "zipf exponent s (probability of rank r ~ 1/r^s)", min=0.0)
    write_fraction: float = option(0.0, "probability that an access is a write", min=0.0, max=1.0)
    base: int = option(1 << 32, "first virtual address of the footprint", min=0)


def page_sampler(options: SyntheticOptions, rng: np.random.Generator):
    """Return f(u) mapping uniform [0,1) samples to page indices."""
    pages = max(1, options.footprint // options.page)
    if options.distribution == "uniform":
        return lambda u: np.minimum((u * pages).astype(np.int64), pages - 1)
    weights = 1.0 / np.arange(1, pages + 1, dtype=np.float64) ** options.zipf_exponent
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    scatter = rng.permutation(pages)
    return lambda u: scatter[np.minimum(np.searchsorted(cdf, u, side="right"), pages - 1)]


def generate(options: SyntheticOptions, chunk_size: int, seed: int, n_vms: int):
    """Yield the chunks of the synthetic trace."""
    seq = np.random.SeedSequence(seed)
    layout_rng, page_rng, offset_rng, write_rng = (np.random.default_rng(s) for s in seq.spawn(4))
    sample = page_sampler(options, layout_rng)
    lines = options.page // LINE
    for start in range(0, options.accesses, chunk_size):
        n = min(chunk_size, options.accesses - start)
        chunk = np.zeros(n, dtype=TRACE_DTYPE)
        pages = sample(page_rng.random(n)).astype(np.uint64)
        offsets = (offset_rng.random(n) * lines).astype(np.uint64) * np.uint64(LINE)
        chunk["vaddr"] = np.uint64(options.base) + pages * np.uint64(options.page) + offsets
        chunk["op"] = np.where(write_rng.random(n) < options.write_fraction, WRITE, READ)
        chunk["vm"] = (np.arange(start, start + n) % n_vms).astype(np.uint16)
        yield chunk


@hookimpl
def slatframe_workloads():
    return [WorkloadRecord(
        name="synthetic", summary="seeded uniform or zipf page accesses over a footprint",
        factory=lambda o, ctx: generate(o, ctx.chunk_size, ctx.seed, len(ctx.vm_names)),
        options=SyntheticOptions)]
