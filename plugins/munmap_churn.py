"""``munmap-churn``: threads of one process that return memory to the kernel and touch it
again: the pattern that makes TLB shootdowns (a malloc arena trimmed by ``free``, or
``madvise(MADV_DONTNEED)``).

Each of ``threads`` threads works in an ``arena`` of its own in the process's address
space, and reads a ``shared`` region (the program's code and common data) with
probability ``shared_fraction``; arena pages are chosen uniformly, with a random 64-byte
line. Every ``free_every`` of its accesses a thread returns ``free_pages`` consecutive
pages of its arena to the kernel (unmap records, back to back, so the guest sends one
shootdown for them), moving on through its arena; its later accesses fault them back
in. The threads' records are interleaved one at a time, thread t runs on vCPU
``t mod vms[].vcpus``, and thread t's frees come ``t / threads`` of a period after
thread 0's. Every option is an assumption about a program, not a measurement:
docs/experiments.md varies them.
"""
from __future__ import annotations

from typing import Any, Iterator

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.options import ConfigFacts, option
from slatframe.records import WorkloadRecord
from slatframe.trace import READ, TRACE_DTYPE, UNMAP, WRITE

PAGE = 4096
LINE = 64


@attrs.frozen
class ChurnOptions:
    threads: int = option(4, "threads of the process (thread t runs on vCPU t mod vms[].vcpus)", min=1, max=4096)
    accesses: int = option(200_000, "memory accesses (the unmap records come on top)", min=1)
    arena: int = option(4 << 20, "bytes of each thread's arena", size=True, min=PAGE)
    shared: int = option(1 << 20, "bytes of the region every thread reads", size=True, min=PAGE)
    shared_fraction: float = option(0.2, "probability that an access reads the shared region", min=0.0, max=1.0)
    free_every: int = option(5000, "accesses of a thread between two of its frees", min=1)
    free_pages: int = option(16, "consecutive pages a free returns (unmap records)", min=1)
    write_fraction: float = option(0.3, "probability that an arena access is a write", min=0.0, max=1.0)
    vm: int = option(0, "VM index of every record", min=0, max=65535)
    asid: int = option(0, "address space of the process", min=0, max=65535)
    base: int = option(0x5555_0000_0000, "first virtual address of thread 0's arena; the other arenas and "
                                         "the shared region follow it", min=0)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        if self.vm >= facts.vms:
            yield "vm", (f"= {self.vm} is not allowed: VM indices go from 0 to {facts.vms - 1} "
                         f"(the config has {facts.vms} VM(s)).")
        if self.free_pages > self.arena // PAGE:
            yield "free_pages", (f"= {self.free_pages} is not allowed: a free returns pages of one arena, which "
                                 f"has {self.arena // PAGE} (arena = {self.arena} bytes).")
        top = 1 << facts.va_bits
        if self.base + self.touched_bytes() > top:
            yield "arena", (f"= {self.arena} is not allowed: threads x arena + shared = {self.touched_bytes():,} "
                            f"bytes from base {self.base:#x} would reach beyond the {facts.va_bits}-bit virtual "
                            f"addresses of the guest format {facts.guest_format.name!r} ({top:#x}).")

    def touched_bytes(self) -> int:
        return self.threads * self.arena + self.shared


def churn(o: ChurnOptions, chunk_size: int, seed: int) -> Iterator[np.ndarray]:
    """Yield the chunks of a ``munmap-churn`` trace: one period (``free_every`` accesses
    of every thread and each thread's free) at a time."""
    shared_rng, page_rng, line_rng, write_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    T, P, F = o.threads, o.free_every, o.free_pages
    arena_pages, shared_pages = o.arena // PAGE, o.shared // PAGE
    arena_base = o.base + np.arange(T, dtype=np.uint64) * np.uint64(o.arena)
    shared_base = np.uint64(o.base + T * o.arena)
    stagger = np.arange(T) * P // T  # thread t frees after its access stagger[t] of each period
    freed = 0  # frees so far of each thread (they move on together)
    left = o.accesses
    pending: list[np.ndarray] = []
    held = 0
    while left > 0:
        p = min(P, -(-left // T))  # accesses of each thread in this period (the last one: those the run needs)
        n = p * T
        thread = np.tile(np.arange(T, dtype=np.uint16), p)  # record j * T + t: thread t's access j
        block = np.zeros(n, dtype=TRACE_DTYPE)
        block["vm"], block["asid"], block["thread"] = o.vm, o.asid, thread
        shared = shared_rng.random(n) < o.shared_fraction
        pages = np.where(shared, (page_rng.random(n) * shared_pages).astype(np.uint64),
                         (page_rng.random(n) * arena_pages).astype(np.uint64))
        lines = (line_rng.random(n) * (PAGE // LINE)).astype(np.uint64) * np.uint64(LINE)
        block["vaddr"] = np.where(shared, shared_base, arena_base[thread]) + pages * np.uint64(PAGE) + lines
        block["op"] = np.where(~shared & (write_rng.random(n) < o.write_fraction), WRITE, READ)
        freeing = np.flatnonzero(stagger < p)  # the threads whose free falls in this period
        frees = np.zeros(len(freeing) * F, dtype=TRACE_DTYPE)
        frees["vm"], frees["asid"], frees["op"] = o.vm, o.asid, UNMAP
        frees["thread"] = np.repeat(freeing.astype(np.uint16), F)
        first = (freed * F + np.arange(F)) % arena_pages
        frees["vaddr"] = (arena_base[freeing, None] + (first * PAGE).astype(np.uint64)[None, :]).reshape(-1)
        freed += 1
        at = np.repeat(stagger[freeing] * T + freeing + 1, F)  # after thread t's access stagger[t]
        records = np.insert(block, at, frees)
        if n > left:  # the last period: cut after the left-th access
            is_access = records["op"] != UNMAP
            records = records[:int(np.flatnonzero(np.cumsum(is_access) == left)[0]) + 1]
        left -= n
        pending.append(records)
        held += len(records)
        while held >= chunk_size or (left <= 0 and held):
            joined = np.concatenate(pending)
            yield joined[:chunk_size]
            pending, held = [joined[chunk_size:]], max(0, len(joined) - chunk_size)


@hookimpl
def slatframe_workloads() -> list[Any]:
    return [WorkloadRecord(name="munmap-churn", summary="threads returning memory to the kernel and touching it again "
                                                      "(TLB shootdowns)",
                           factory=lambda o, ctx: churn(o, ctx.chunk_size, ctx.seed), options=ChurnOptions,
                           fresh_chunks=True)]
