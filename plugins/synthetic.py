"""Synthetic workloads, seeded, each stated in one sentence.

``synthetic`` (one address space, records round-robin over the configured VMs, and each
VM's round-robin over ``threads`` threads of the process):

- ``uniform``: every page of the footprint equally likely.
- ``zipf``: the page of rank r with probability proportional to 1 / r**zipf_exponent,
  ranks scattered over the footprint by a seeded permutation (hot pages not adjacent).
- ``sequential``: a stream through the footprint, ``stride`` bytes apart, wrapping around.
- ``gups``: GUPS-style random updates: a read and then a write of the same random
  8-byte word; ``accesses`` counts records, so half as many updates.
- ``pointer-chase``: a walk around a cyclic linked list of the footprint's pages laid
  out in random order (each page visited once per lap, the next page unpredictable).

Page choices get a random 64-byte-aligned offset in their page (not for sequential and
gups, which choose addresses directly); an access is a write with probability
``write_fraction`` (not for gups). The stream depends only on the seed and the options,
never on the chunk size.

``sessions``: the remote-desktop pattern: ``processes`` address spaces in one VM, each
with its own ``working_set``; the VM switches address space (a context switch record)
every ``switch_every`` accesses, round robin; with probability ``churn_rate`` an access is
preceded by the process freeing and reallocating a page of its working set (an unmap and
a map record: page-table writes and an invalidation).

``forkwait``: Adams and Agesen's forkwait microbenchmark (ASPLOS 2006) as a trace: one
process forks a child that writes a few private pages (copy-on-write), runs a shared
page and exits, and the parent returns from waitpid; its page counts come from a minimal
C forkwait measured on this machine (the options say which are assumptions).

``mix``: several workloads time-sliced on one core: each turn takes ``slice`` x weight /
max(weight) records from each part in order, gives them the part's VM index, and moves
on; a part that ends drops out.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.errors import ConfigError
from slatframe.options import ConfigFacts, PluginChoice, option
from slatframe.records import WorkloadRecord
from slatframe.trace import (CONTEXT_SWITCH, EXEC, EXIT, FORK, MAP, MAP_SHARED, READ, TRACE_DTYPE, UNMAP, WRITE,
                             make_trace)
from slatframe.workload import checked_chunks, workload_where

LINE = 64
DISTRIBUTIONS = ("uniform", "zipf", "sequential", "gups", "pointer-chase")
SAMPLER_BYTES = 40  #: bytes per page of a zipf sampler's arrays (weights, cdf, permutation, temporaries)
INT64_LIMIT = 1 << 63
#: Beyond an exponent of 53, rank 2's share (2^-s of rank 1's) is lost in a double's 53-bit
#: mantissa: every access goes to one page, as it would at any larger exponent.
ZIPF_MAX = 64.0
ZIPF_MAX_HELP = "at most 64 (from about 53 on, every access goes to the first-ranked page)"
WEIGHT_MAX = 1e6  #: a part a million times lighter than the heaviest already runs one record a turn


def _address_problem(base: int, extent: int, key: str, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
    """Addresses [base, base + extent) must fit the guest format's virtual addresses."""
    top = 1 << facts.va_bits
    if extent > top:
        yield key, (f"= {extent} is not allowed: the guest format {facts.guest_format.name!r} has "
                    f"{facts.va_bits}-bit virtual addresses, so at most 2^{facts.va_bits} bytes.")
    elif base + extent > top:
        yield "base", (f"= {base:#x} is not allowed: the accesses would reach {base + extent:#x}, beyond the "
                       f"{facts.va_bits}-bit virtual addresses of the guest format {facts.guest_format.name!r} "
                       f"(base + {key} must be at most {top:#x}).")


@attrs.frozen
class SyntheticOptions:
    distribution: str = option("uniform", "access pattern", choices=DISTRIBUTIONS)
    accesses: int = option(100_000, "number of accesses (records)", min=1)
    footprint: int = option(64 << 20, "bytes of virtual memory touched", size=True, min=4096)
    page: int = option(4096, "granularity of page choices (uniform, zipf, pointer-chase)", size=True, min=64)
    zipf_exponent: float = option(1.0, "zipf exponent s (probability of rank r ~ 1/r^s); " + ZIPF_MAX_HELP,
                                  min=0.0, max=ZIPF_MAX)
    stride: int = option(64, "bytes between consecutive sequential accesses; the stream wraps around at footprint", size=True, min=1)
    write_fraction: float = option(0.0, "probability that an access is a write", min=0.0, max=1.0)
    base: int = option(1 << 32, "first virtual address of the footprint", min=0)
    threads: int = option(1, "threads of the one process: each VM's records go to them in turn (its record j to "
                             "thread j mod threads), so thread t runs on vCPU t mod vms[].vcpus", min=1, max=65536)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        extent_key = "page" if self.page > self.footprint else "footprint"
        yield from _address_problem(self.base, max(self.footprint, self.page), extent_key, facts)
        if self.distribution == "sequential" and self.accesses * self.stride >= INT64_LIMIT:
            yield "stride", (f"= {self.stride} is not allowed: accesses x stride must stay below 2^63 "
                             f"(the stream's offsets are 64-bit integers); here workload.accesses = {self.accesses}.")

    def touched_bytes(self) -> int:
        """At most this many bytes of virtual memory are touched."""
        return max(self.footprint, self.page)

    def memory_items(self) -> Iterable[tuple[str, int]]:
        """(key, bytes) of the generator's own arrays."""
        pages = max(1, self.footprint // self.page)
        if self.distribution == "zipf":
            yield "footprint", pages * SAMPLER_BYTES
        elif self.distribution == "pointer-chase":
            yield "footprint", pages * 16


def page_sampler(distribution: str, pages: int, exponent: float, rng: np.random.Generator):
    """f(u) mapping uniform [0,1) samples to page indices."""
    if distribution == "uniform":
        return lambda u: np.minimum((u * pages).astype(np.int64), pages - 1)
    with np.errstate(over="ignore"):  # r**s beyond float64's range: its weight is 0 (below 1e-308 of rank 1's)
        weights = 1.0 / np.arange(1, pages + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    scatter = rng.permutation(pages)
    return lambda u: scatter[np.minimum(np.searchsorted(cdf, u, side="right"), pages - 1)]


def generate(o: SyntheticOptions, chunk_size: int, seed: int, n_vms: int) -> Iterator[np.ndarray]:
    """Yield the chunks of a ``synthetic`` trace."""
    seq = np.random.SeedSequence(seed)
    layout_rng, page_rng, offset_rng, write_rng = (np.random.default_rng(s) for s in seq.spawn(4))
    pages = max(1, o.footprint // o.page)
    lines = max(1, o.page // LINE)
    base = np.uint64(o.base)
    if o.distribution in ("uniform", "zipf"):
        sample = page_sampler(o.distribution, pages, o.zipf_exponent, layout_rng)
    elif o.distribution == "pointer-chase":
        order = layout_rng.permutation(pages)
    words = max(1, o.footprint // 8)
    drawn = np.zeros(0, dtype=np.int64)  # gups: words of the updates drawn so far, from `first`
    first = 0
    for start in range(0, o.accesses, chunk_size):
        n = min(chunk_size, o.accesses - start)
        index = np.arange(start, start + n, dtype=np.int64)
        chunk = np.zeros(n, dtype=TRACE_DTYPE)
        if o.distribution == "sequential":
            chunk["vaddr"] = base + ((index * o.stride) % o.footprint).astype(np.uint64)
        elif o.distribution == "gups":
            # one random word per update k, drawn once: record 2k reads it, 2k+1 writes it
            need = (start + n + 1) // 2
            have = first + len(drawn)
            fresh = np.minimum((page_rng.random(need - have) * words).astype(np.int64), words - 1)
            drawn = np.concatenate([drawn[start // 2 - first:], fresh])
            first = start // 2
            chunk["vaddr"] = base + (drawn[index // 2 - first] * 8).astype(np.uint64)
        else:
            if o.distribution == "pointer-chase":
                page = order[index % pages]
            else:
                page = sample(page_rng.random(n))
            offsets = (offset_rng.random(n) * lines).astype(np.uint64) * np.uint64(LINE)
            chunk["vaddr"] = base + page.astype(np.uint64) * np.uint64(o.page) + offsets
        if o.distribution == "gups":
            chunk["op"] = np.where(index % 2 == 1, WRITE, READ)
        else:
            chunk["op"] = np.where(write_rng.random(n) < o.write_fraction, WRITE, READ)
        chunk["vm"] = (index % n_vms).astype(np.uint16)
        chunk["thread"] = (index // n_vms % o.threads).astype(np.uint16)
        yield chunk


#: A /bin/true process after its exec, recorded on this project's build machine with
#: ``slatframe trace record --processes -- sh -c '/bin/true; /bin/true'`` (x86-64, glibc,
#: under valgrind): 174,875 accesses over 156 distinct pages, 69 of them library pages
#: mapped shared (map_shared records), so 87 private.
SPAWN_ACCESSES, SPAWN_PRIVATE, SPAWN_SHARED = 174_875, 156 - 69, 69


@attrs.frozen
class SessionsOptions:
    processes: int = option(32, "address spaces (sessions' processes) in the VM", min=1, max=32767)
    working_set: int = option(8 << 20, "bytes each process touches", size=True, min=4096)
    accesses: int = option(200_000, "number of memory accesses, spawned commands' included (control records "
                                    "come on top)", min=1)
    switch_every: int = option(2000, "accesses between context switches", min=1)
    distribution: str = option("zipf", "page choice within a working set", choices=("uniform", "zipf"))
    zipf_exponent: float = option(1.0, "zipf exponent within a working set; " + ZIPF_MAX_HELP, min=0.0,
                                  max=ZIPF_MAX)
    churn_rate: float = option(0.001, "probability that an access is preceded by an unmap and a map "
                               "of a working-set page (free and reallocate)", min=0.0, max=1.0)
    write_fraction: float = option(0.3, "probability that an access is a write", min=0.0, max=1.0)
    shared_pages: int = option(0, "library pages every process maps shared (map_shared at shared_base, one copy "
                                  "per VM), mapped at its first turn", min=0, max=1 << 20)
    shared_fraction: float = option(0.0, "probability that a session process's access goes to a shared page "
                                         "(uniform) rather than its working set", min=0.0, max=1.0)
    spawn_every: int = option(0, "accesses between commands the running process spawns (0: none), checked at "
                                 "turn starts: it forks a child that execs, maps spawn_shared_pages library "
                                 "pages, makes spawn_accesses accesses and exits before the parent goes on", min=0)
    spawn_accesses: int = option(SPAWN_ACCESSES, "accesses of a spawned command (a recorded /bin/true's)", min=1)
    spawn_private_pages: int = option(SPAWN_PRIVATE, "private pages a spawned command touches (a recorded "
                                                     "/bin/true's)", min=1, max=1 << 20)
    spawn_shared_pages: int = option(SPAWN_SHARED, "library pages a spawned command maps and touches, the first "
                                                   "of the shared pages (a recorded /bin/true's)", min=0, max=1 << 20)
    vm: int = option(0, "VM index of every record", min=0, max=65535)
    threads: str = option("one", "the guest threads that issue the records: one (thread 0 runs every process, so "
                                 "they take turns on vCPU 0) or process (process p is thread p and runs on vCPU p mod "
                                 "vms[].vcpus; a command it spawns runs on its vCPU)", choices=("one", "process"))
    base: int = option(0x5555_0000_0000, "first virtual address of each working set", min=0)
    shared_base: int = option(0x7F00_0000_0000, "first virtual address of the shared (library) pages", min=0)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        yield from _address_problem(self.base, self.working_set, "working_set", facts)
        yield from _address_problem(self.shared_base, max(1, self.shared_pages, self.spawn_shared_pages) * 4096,
                                    "shared_pages", facts)
        if self.spawn_every and self.spawn_shared_pages > self.shared_pages:
            yield "spawn_shared_pages", (f"= {self.spawn_shared_pages} is not allowed: a spawned command maps "
                                         f"the first of the shared_pages ({self.shared_pages}); at most that many.")

    def touched_bytes(self) -> int:
        """Bytes of memory touched at most: each process's working set, a fresh page per
        churn, the shared pages and each spawned command's private pages."""
        spawns = self.accesses // self.spawn_every + 1 if self.spawn_every else 0
        return (self.processes * self.working_set + int(self.accesses * self.churn_rate + 1) * 4096
                + self.shared_pages * 4096 + spawns * self.spawn_private_pages * 4096)

    def memory_items(self) -> Iterable[tuple[str, int]]:
        yield "working_set", max(1, self.working_set // 4096) * SAMPLER_BYTES
        yield "switch_every", min(self.switch_every, self.accesses) * 160
        if self.spawn_every:
            yield "spawn_accesses", min(self.spawn_accesses, self.accesses) * 160


def sessions(o: SessionsOptions, chunk_size: int, seed: int, n_vms: int) -> Iterator[np.ndarray]:
    """Yield the chunks of a ``sessions`` trace: turns of ``switch_every`` accesses of
    each process in round robin, with churn, shared library pages and spawned commands
    (a spawned command of process p runs as asid ``processes + p``)."""
    if o.vm >= n_vms:
        raise ConfigError(f"workload.vm = {o.vm} is not allowed: the config has {n_vms} VM(s).")
    seq = np.random.SeedSequence(seed)
    layout_rng, page_rng, churn_rng, write_rng, shared_rng = (np.random.default_rng(s) for s in seq.spawn(5))
    pages = max(1, o.working_set // 4096)
    sample = page_sampler(o.distribution, pages, o.zipf_exponent, layout_rng)
    shared = np.uint64(o.shared_base) + np.arange(o.shared_pages, dtype=np.uint64) * np.uint64(4096)
    mapped: set[int] = set()
    pending: list[np.ndarray] = []
    held = 0
    done = 0
    turn = 0
    next_spawn = o.spawn_every or None
    while done < o.accesses:
        asid = turn % o.processes
        blocks = []
        if asid not in mapped and o.shared_pages:
            mapped.add(asid)
            blocks.append(make_trace(shared, MAP_SHARED, o.vm, asid))
        if next_spawn is not None and done >= next_spawn:
            n = min(o.spawn_accesses, o.accesses - done)
            blocks.append(_spawn(o, asid, n, shared, page_rng, write_rng))
            done += n
            next_spawn += o.spawn_every
        n = min(o.switch_every, o.accesses - done)
        if n > 0:
            page = sample(page_rng.random(n)).astype(np.uint64)
            vaddr = np.uint64(o.base) + page * np.uint64(4096) + \
                (page_rng.integers(0, 4096 // LINE, n).astype(np.uint64) * np.uint64(LINE))
            if o.shared_pages and o.shared_fraction:
                to_shared = shared_rng.random(n) < o.shared_fraction
                vaddr[to_shared] = shared[shared_rng.integers(0, o.shared_pages, int(to_shared.sum()))] + \
                    shared_rng.integers(0, 4096 // LINE, int(to_shared.sum())).astype(np.uint64) * np.uint64(LINE)
            op = np.where(write_rng.random(n) < o.write_fraction, WRITE, READ).astype(np.uint8)
            churn = churn_rng.random(n) < o.churn_rate
            victim = np.uint64(o.base) + sample(churn_rng.random(n)).astype(np.uint64) * np.uint64(4096)
            # each access expands to [unmap, map, access] when it churns, else [access]
            width = np.where(churn, 3, 1)
            ends = np.cumsum(width)
            out = np.zeros(1 + int(ends[-1]), dtype=TRACE_DTYPE)
            out[0] = (o.vm, asid, CONTEXT_SWITCH, asid, 0)
            at = 1 + ends - 1
            out["op"][at] = op
            out["vaddr"][at] = vaddr
            out["op"][at[churn] - 2] = UNMAP
            out["op"][at[churn] - 1] = MAP
            out["vaddr"][at[churn] - 2] = victim[churn]
            out["vaddr"][at[churn] - 1] = victim[churn]
            out["vm"] = o.vm
            out["asid"] = asid
            blocks.append(out)
            done += n
        turn += 1
        for out in blocks:
            if o.threads == "process":
                out["thread"] = asid
            pending.append(out)
            held += len(out)
        while held >= chunk_size:
            joined = np.concatenate(pending)
            yield joined[:chunk_size]
            pending, held = [joined[chunk_size:]], len(joined) - chunk_size
    if held:
        yield np.concatenate(pending)


def _spawn(o: SessionsOptions, parent: int, n: int, shared: np.ndarray, page_rng: np.random.Generator,
           write_rng: np.random.Generator) -> np.ndarray:
    """A command process ``parent`` spawns: fork, exec, map its library pages, ``n``
    accesses spread uniformly over its private and library pages, exit."""
    child = o.processes + parent
    libraries = shared[:o.spawn_shared_pages]
    private = np.uint64(o.base) + np.arange(o.spawn_private_pages, dtype=np.uint64) * np.uint64(4096)
    touched = np.concatenate([private, libraries])
    vaddr = touched[page_rng.integers(0, len(touched), n)] + \
        page_rng.integers(0, 4096 // LINE, n).astype(np.uint64) * np.uint64(LINE)
    op = np.where(write_rng.random(n) < o.write_fraction, WRITE, READ).astype(np.uint8)
    return np.concatenate([make_trace([child], FORK, o.vm, parent), make_trace([0], EXEC, o.vm, child),
                           make_trace(libraries, MAP_SHARED, o.vm, child), make_trace(vaddr, op, o.vm, child),
                           make_trace([0], EXIT, o.vm, child)])


#: a minimal C forkwait (fork, child _exit(0), waitpid) measured on this project's build
#: machine (x86-64 Linux, gcc -O2, glibc, dynamically linked): /proc/self/statm gives 343
#: resident pages, 318 of them file-backed ("shared": program text, ld.so, libc).
FORKWAIT_PRIVATE, FORKWAIT_SHARED = 343 - 318, 318


@attrs.frozen
class ForkwaitOptions:
    forks: int = option(1000, "fork-wait iterations (Adams and Agesen's forkwait makes 40,000)", min=1)
    private_pages: int = option(FORKWAIT_PRIVATE, "the parent's private resident pages (anonymous, written), "
                                "copied copy-on-write by each fork; 25 measured for a minimal C forkwait "
                                "(docs/experiments.md)", min=1, max=1 << 20)
    shared_pages: int = option(FORKWAIT_SHARED, "the parent's file-backed resident pages (text, libraries), "
                               "mapped shared and not copied by a fork; 318 measured as above", min=0, max=1 << 20)
    child_writes: int = option(2, "private pages the child writes before it exits (its stack and a libc data "
                               "page: an assumption)", min=0)
    child_reads: int = option(1, "shared pages the child runs before it exits (the text of _exit: an "
                              "assumption); each faults in, as fork copies no shared leaf", min=0)
    parent_writes: int = option(1, "private pages the parent writes when waitpid returns (its stack: an "
                                "assumption)", min=0)
    vm: int = option(0, "VM index of every record", min=0, max=65535)
    base: int = option(0x5555_0000_0000, "first virtual address of the private pages; the shared ones "
                       "start 1G above them", min=0)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        yield from _address_problem(self.base, (1 << 30) + self.shared_pages * 4096, "shared_pages", facts)
        for key in ("child_writes", "parent_writes"):
            if getattr(self, key) > self.private_pages:
                yield key, f"= {getattr(self, key)} is not allowed: at most private_pages = {self.private_pages}."
        if self.child_reads > self.shared_pages:
            yield "child_reads", f"= {self.child_reads} is not allowed: at most shared_pages = {self.shared_pages}."

    def touched_bytes(self) -> int:
        """The parent's pages and, at most, each child's copies."""
        return (self.private_pages + self.shared_pages + self.child_writes) * 4096


def forkwait(o: ForkwaitOptions, chunk_size: int, n_vms: int) -> Iterator[np.ndarray]:
    """Yield the chunks of a ``forkwait`` trace: process 0 maps and touches its pages,
    then ``forks`` times forks process 1, which writes ``child_writes`` private pages,
    reads ``child_reads`` shared ones and exits, after which process 0 writes
    ``parent_writes`` private pages and reads one shared page (the return from waitpid)."""
    if o.vm >= n_vms:
        raise ConfigError(f"workload.vm = {o.vm} is not allowed: the config has {n_vms} VM(s).")
    private = [o.base + i * 4096 for i in range(o.private_pages)]
    shared = [o.base + (1 << 30) + i * 4096 for i in range(o.shared_pages)]
    setup = [(0, MAP, va) for va in private] + [(0, MAP_SHARED, va) for va in shared] + \
        [(0, WRITE, va) for va in private] + [(0, READ, va) for va in shared]
    turn = [(0, FORK, 1)] + [(1, WRITE, va) for va in private[:o.child_writes]] + \
        [(1, READ, va) for va in shared[:o.child_reads]] + [(1, EXIT, 0)] + \
        [(0, WRITE, va) for va in private[:o.parent_writes]] + [(0, READ, va) for va in shared[:1]]

    def array(rows: list[tuple[int, int, int]]) -> np.ndarray:
        out = np.zeros(len(rows), dtype=TRACE_DTYPE)
        out["asid"], out["op"], out["vaddr"] = zip(*rows) if rows else ((), (), ())
        out["vm"] = o.vm
        return out

    one = array(turn)
    per_chunk = max(1, chunk_size // len(one))
    yield array(setup)
    for done in range(0, o.forks, per_chunk):
        yield np.tile(one, min(per_chunk, o.forks - done))


@attrs.frozen
class MixPart:
    """One workload of a mix."""

    workload: PluginChoice = option(help="the part's workload table (with its 'source')",
                                    plugin="workloads", name_key="source")
    weight: float = option(1.0, "share of each time slice, relative to the other parts' weights (the heaviest "
                                "part runs slice records a turn, every other part at least one)", min=0.0,
                           max=WEIGHT_MAX)
    vm: int = option(0, "VM index given to the part's records", min=0, max=65535)


def _some_parts(parts: tuple) -> None:
    if not parts:
        raise ValueError("list at least one part")


@attrs.frozen
class MixOptions:
    parts: tuple[MixPart, ...] = option(help="the workloads to interleave", check_all=_some_parts)
    slice: int = option(10_000, "records per time slice of the heaviest part", min=1)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        for i, part in enumerate(self.parts):
            if part.vm >= facts.vms:
                yield f"parts[{i}].vm", (f"= {part.vm} is not allowed: VM indices go from 0 to {facts.vms - 1} "
                                         f"(the config has {facts.vms} VM(s)).")
            inner = getattr(part.workload.options, "problems", None)
            for key, message in (inner(facts) if callable(inner) else ()):
                yield f"parts[{i}].workload.{key}", message

    def touched_bytes(self) -> int | None:
        sizes = [getattr(p.workload.options, "touched_bytes", lambda: None)() for p in self.parts]
        return None if None in sizes else sum(sizes)

    def memory_items(self) -> Iterable[tuple[str, int]]:
        yield "slice", self.slice * 64 * len(self.parts)
        for i, part in enumerate(self.parts):
            inner = getattr(part.workload.options, "memory_items", None)
            for key, nbytes in (inner() if callable(inner) else ()):
                yield f"parts[{i}].workload.{key}", nbytes


class _Stream:
    """Takes n records at a time from an iterator of chunks. A chunk is kept across the
    next one's making, so the chunks of a workload without ``fresh_chunks`` (which may
    refill one buffer) are copied as they come."""

    def __init__(self, chunks: Iterator[np.ndarray], fresh: bool) -> None:
        self.chunks = chunks
        self.fresh = fresh
        self.buffer = np.zeros(0, dtype=TRACE_DTYPE)
        self.done = False

    def take(self, n: int) -> np.ndarray:
        parts, have = [self.buffer], len(self.buffer)
        while have < n and not self.done:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                self.done = True
                break
            parts.append(chunk if self.fresh else chunk.copy())
            have += len(chunk)
        joined = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.buffer = joined[n:]
        return joined[:n]


def mix(o: MixOptions, ctx, registry) -> Iterator[np.ndarray]:
    """Yield the chunks of a ``mix`` trace."""
    streams = []  # each part's VM index was checked when the config was resolved (MixOptions.problems)
    top = max(p.weight for p in o.parts) or 1.0
    for i, part in enumerate(o.parts):
        record = registry.get("workloads", part.workload.name)
        where = f"workload.parts[{i}]: " + workload_where(part.workload.name, part.workload.options)
        chunks = checked_chunks(record.factory(part.workload.options, ctx), where, None)
        streams.append((_Stream(chunks, record.fresh_chunks),
                        max(1, round(o.slice * part.weight / top)), part.vm))
    pending: list[np.ndarray] = []
    held = 0
    while streams:
        for entry in list(streams):
            stream, n, vm = entry
            records = stream.take(n).copy()
            records["vm"] = vm
            if len(records):
                pending.append(records)
                held += len(records)
            if stream.done and not len(stream.buffer):
                streams.remove(entry)
        while held >= ctx.chunk_size or (not streams and held):
            joined = np.concatenate(pending)
            yield joined[:ctx.chunk_size]
            pending, held = [joined[ctx.chunk_size:]], max(0, len(joined) - ctx.chunk_size)


@hookimpl
def slatframe_workloads():
    return [
        WorkloadRecord(
            name="synthetic", summary="seeded uniform, zipf, sequential, GUPS or pointer-chase accesses",
            factory=lambda o, ctx: generate(o, ctx.chunk_size, ctx.seed, len(ctx.vm_names)),
            options=SyntheticOptions, fresh_chunks=True),
        WorkloadRecord(
            name="sessions", summary="many processes per VM: context switches and page churn (remote desktop)",
            factory=lambda o, ctx: sessions(o, ctx.chunk_size, ctx.seed, len(ctx.vm_names)),
            options=SessionsOptions, fresh_chunks=True),
        WorkloadRecord(
            name="forkwait", summary="a process forks a child that touches a few pages and exits, repeated",
            factory=lambda o, ctx: forkwait(o, ctx.chunk_size, len(ctx.vm_names)), options=ForkwaitOptions,
            fresh_chunks=True),
        WorkloadRecord(
            name="mix", summary="several workloads time-sliced on one core, each with its VM",
            factory=lambda o, ctx: mix(o, ctx, ctx.registry), options=MixOptions, fresh_chunks=True),
    ]
