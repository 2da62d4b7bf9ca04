"""A hashed page table for native paging as an outside plugin: SLAT scheme ``hashed`` and
its walk ``hashed``.

Each OS (each ``[[vms]]`` entry, on bare metal as under ``native``) keeps one hashed page
table for all its address spaces, tagged with the asid (the single global table of
Yaniv and Tsafrir, "Hash, Don't Cache (the Page Table)", SIGMETRICS 2016), organised as
a d-ary cuckoo hash table (Skarlatos, Kokolis, Xu and Torrellas, "Elastic Cuckoo Page
Tables: Rethinking Virtual Memory Translation for Parallelism", ASPLOS 2020): ``ways``
arrays (d) of ``buckets`` slots each, in simulated host memory, and one hash function
per way. A page can live only in its slot of one of the d ways.

Layout. The search key of 4K page ``vpn`` of address space ``asid`` is
``(asid << 48) | (vpn // entries_per_line)``. A slot is one tag word, ``key + 1``
(0 marks an empty slot), followed by ``entries_per_line`` entry words, the entry of
``vpn`` at word ``1 + vpn % entries_per_line``. Entries use the guest format's codec (the
x86-64 leaf bits: present, writable, accessed, dirty, the frame). Slots are padded to a
power of two of at most 64 bytes (16 bytes for one entry), so a slot never straddles a
64-byte line and a probe is one memory reference. Way ``w``'s slot of ``key`` is
:func:`way_hash` ``(w, key, buckets)``: a multiply-xorshift over 64 bits with the odd
multiplier ``MULTIPLIERS[w]``, ``x = key * M; x ^= x >> 32; x = x * M; x ^= x >> 29``
(all mod 2**64), whose low ``log2(buckets)`` bits are the slot.

The walk. Hardware probes the d ways in parallel, as elastic cuckoo page tables do: a
TLB miss makes exactly d references (the tag and entry of a slot come in one line), each
through the data caches when the cost model has them. A tag match with a present entry
translates (setting the accessed flag, and the dirty flag on a write, one write each the
first time); no match, or a zero entry, is a page fault (``GUEST_NOT_PRESENT``); a write
through a read-only entry a ``GUEST_PROTECTION`` fault. Both count ``faults.guest`` and
the walk restarts, as under ``native``.

The software side (the OS). A page fault allocates a 4K frame and inserts the page: into
its key's slot if the key is already in the table, else into the first way whose slot is
empty; when all d slots are taken, cuckoo displacement: the new item takes its slot in
way 0 and the occupant is kicked out (``hashed.kicks``); the kicked item goes to the first
empty slot among its other ways (in order from the way after the one it left), or, if
none, takes its slot in that next way, kicking that occupant, and so on. After
``MAX_KICKS`` (32) kicks the item in hand is homeless and the table is rehashed
(``hashed.rehashes``) into new arrays of twice the buckets: every item, read way by way
and slot by slot, then the homeless one, is inserted again by the same rule (kicks
counted), doubling again if one fails. With one way a collision rehashes at once. Unmap
clears the entry (and frees the slot when its last entry goes), protect clears the
write flag; both, and INVLPG, invalidate the page in the TLBs, a flush the asid's
entries, as the radix schemes do.

Simplifications, against the papers: the table is resized only when an insertion fails
(no occupancy threshold) and all at once, not gradually as elastic cuckoo hashing does;
the next way to kick into is the next one in order, not a random way; there are no
cuckoo walk tables or caches (ECPT's filters of which ways to probe: every way is always
probed), no walk caches at all, and 4K pages only (ECPT keeps one table per page size).
The table's own frames are freed (counted) on a rehash; the OS does not free data frames
on unmap (the core's allocator never reuses frames anyway).

Both engine tiers run the walk: :class:`HashedWalk` is the reference, and
:func:`walk_kernel` the same walk in numba (``WalkKernels``), which the compiled loop calls
on every TLB miss with :func:`walk_state`'s array: per VM the table's ways, buckets, slot
size, entries per slot and way bases, then the guest format's row.
"""
from __future__ import annotations

import attrs
import numpy as np
from numba import njit

from slatframe import hookimpl
from slatframe.contents import image_pages
from slatframe.datacache import WALK
from slatframe.errors import ConfigError
from slatframe.options import option
from slatframe.paging import ENTRY_SIZE, PAGE_SHIFT
from slatframe.engine import walklib
from slatframe.engine.walklib import (F_DIRTY, F_PRESENT, F_WRITE, O_AD_WRITES, O_DIRTY, O_PAGE, O_REFS_GUEST,
                                      O_SHIFT, O_WRITABLE)
from slatframe.records import SlatSchemeRecord, WalkKernels, WalkRecord
from slatframe.trace import FLUSH, INVLPG, MAP, PROTECT, UNMAP, WRITE
from slatframe.translation import Invalidation, Translation
from slatframe.walker import GUEST_NOT_PRESENT, GUEST_PROTECTION, Fault, HardwareView, RootTable

PAGE = 1 << PAGE_SHIFT
LINE = 64
#: Kicks an insertion may make before the table is rehashed twice as big.
MAX_KICKS = 32
#: Where the asid starts in a search key (a virtual page number has at most 45 bits).
ASID_SHIFT = 48
#: The odd multiplier of each way's hash function (way 0 to 3).
MULTIPLIERS = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93)
MASK64 = (1 << 64) - 1


def search_key(asid: int, vpn: int, entries_per_line: int = 1) -> int:
    """The key a page is hashed and tagged by (its slot's tag word is ``key + 1``)."""
    return (asid << ASID_SHIFT) | (vpn // entries_per_line)


def way_hash(way: int, key: int, buckets: int) -> int:
    """The slot of ``key`` in way ``way`` of a table of ``buckets`` (a power of two) slots."""
    m = MULTIPLIERS[way]
    x = (key * m) & MASK64
    x ^= x >> 32
    x = (x * m) & MASK64
    x ^= x >> 29
    return x & (buckets - 1)


def _power_of_two(value: int) -> None:
    if value < 1 or value & (value - 1):
        raise ValueError("the number of buckets must be a power of two, such as 4096")


@attrs.frozen
class HashedOptions:
    ways: int = option(2, "d: ways of the cuckoo table (hash functions), all probed in parallel by a walk",
                       min=1, max=len(MULTIPLIERS))
    buckets: int = option(4096, "slots of each way at the start (a power of two; doubled by each rehash)",
                          min=1, max=1 << 24, check=_power_of_two)
    entries_per_line: int = option(1, "page entries per slot, one tag for consecutive pages (1 + this "
                                      "many 8-byte words fit one 64-byte line)", min=1, max=7)


class HashedTable:
    """One OS's cuckoo hashed page table in simulated memory (layout in the module
    docstring). The OS's own reads and writes here are software, not walk references."""

    def __init__(self, ways: int, buckets: int, entries_per_line: int, memory, counters) -> None:
        self.ways = ways
        self.per_line = entries_per_line
        self.slot_bytes = 1 << ((1 + entries_per_line) * ENTRY_SIZE - 1).bit_length()
        self.memory = memory
        self.counters = counters
        self.buckets = 0
        self.bases: list[int] = []
        self._allocate(buckets)

    def _allocate(self, buckets: int) -> None:
        size = buckets * self.slot_bytes
        for base in self.bases:
            self.memory.free(base, self.buckets * self.slot_bytes)
        self.buckets = buckets
        self.bases = [self.memory.alloc(size) for _ in range(self.ways)]  # fresh frames read as zero

    def slot(self, way: int, key: int) -> int:
        """Address of ``key``'s slot in way ``way``."""
        return self.bases[way] + way_hash(way, key, self.buckets) * self.slot_bytes

    # -- the OS's lookups --------------------------------------------------------------
    def find(self, key: int) -> int | None:
        """Address of the slot holding ``key``, or None."""
        for way in range(self.ways):
            slot = self.slot(way, key)
            if self.memory.read(slot) == key + 1:
                return slot
        return None

    def entry_address(self, asid: int, vpn: int) -> int | None:
        """Address of the entry word of page ``vpn`` of ``asid``, if its key is in the table."""
        slot = self.find(search_key(asid, vpn, self.per_line))
        return None if slot is None else slot + ENTRY_SIZE * (1 + vpn % self.per_line)

    # -- insertion ----------------------------------------------------------------------
    def _read(self, slot: int) -> tuple[int, tuple[int, ...]]:
        read = self.memory.read
        return read(slot) - 1, tuple(read(slot + ENTRY_SIZE * (1 + i)) for i in range(self.per_line))

    def _write(self, slot: int, key: int, words: tuple[int, ...]) -> None:
        self.memory.write(slot, key + 1)
        for i, word in enumerate(words):
            self.memory.write(slot + ENTRY_SIZE * (1 + i), word)

    def _empty(self, slot: int) -> bool:
        return self.memory.read(slot) == 0

    def _place(self, key: int, words: tuple[int, ...]) -> tuple[int, tuple[int, ...]] | None:
        """Cuckoo insertion of one item; returns the item left homeless, or None."""
        for way in range(self.ways):
            slot = self.slot(way, key)
            if self._empty(slot):
                self._write(slot, key, words)
                return None
        if self.ways == 1:
            return key, words
        way = 0
        for _ in range(MAX_KICKS):
            slot = self.slot(way, key)
            victim = self._read(slot)
            self._write(slot, key, words)
            self.counters.add("hashed.kicks")
            key, words = victim
            for step in range(1, self.ways):
                other = self.slot((way + step) % self.ways, key)
                if self._empty(other):
                    self._write(other, key, words)
                    return None
            way = (way + 1) % self.ways
        return key, words

    def insert(self, key: int) -> int:
        """Insert ``key`` (not in the table) with empty entries; returns its slot."""
        homeless = self._place(key, (0,) * self.per_line)
        if homeless is not None:
            self._rehash(homeless)
        return self.find(key)

    def _rehash(self, homeless: tuple[int, tuple[int, ...]]) -> None:
        items = []
        for base in self.bases:
            for i in range(self.buckets):
                slot = base + i * self.slot_bytes
                if not self._empty(slot):
                    items.append(self._read(slot))
        items.append(homeless)
        while True:
            self.counters.add("hashed.rehashes")
            self._allocate(2 * self.buckets)
            if all(self._place(*item) is None for item in items):
                return

    def remove(self, entry: int) -> None:
        """Clear the entry word at ``entry``; free its slot when no entry is left."""
        self.memory.write(entry, 0)
        slot = entry & ~(self.slot_bytes - 1)  # ways are aligned to their size, a multiple of a slot
        if all(word == 0 for word in self._read(slot)[1]):
            self.memory.write(slot, 0)


@attrs.define
class HashedView(HardwareView):
    """The hardware view: ``tables[vm]`` is VM ``vm``'s hashed table (the walk reads its
    ways' bases and size as hardware reads base/size registers). ``guest_roots`` stays
    empty: the hashed walk has no per-asid root, the asid is part of the tag."""

    tables: list = attrs.Factory(list)


class HashedWalk:
    """d parallel probes, one reference each; counted as the radix walk counts."""

    def __init__(self, hw: HashedView, memory, counters, data_caches=None) -> None:
        self.hw = hw
        self.memory = memory
        self.counters = counters
        self.data_caches = data_caches

    def walk(self, vm: int, asid: int, va: int, op: int) -> Translation | Fault:
        table, fmt, memory = self.hw.tables[vm], self.hw.guest_format, self.memory
        vpn = va >> PAGE_SHIFT
        key = search_key(asid, vpn, table.per_line)
        entry_pa = entry = None
        for way in range(table.ways):  # in parallel in hardware: every way is read
            slot = table.slot(way, key)
            if self.data_caches is not None:
                self.data_caches.access(slot, WALK)
            if memory.read(slot) == key + 1:  # the entry is in the line just read
                entry_pa = slot + ENTRY_SIZE * (1 + vpn % table.per_line)
                entry = memory.read(entry_pa)
        refs, ad_writes = table.ways, 0
        if entry is None or not fmt.is_present(entry):
            self.counters.walk_aborted(refs, 0)
            return Fault(GUEST_NOT_PRESENT, va)
        write = op == WRITE
        updated = entry | fmt.accessed_flag | (fmt.dirty_flag if write and fmt.is_writable(entry) else 0)
        if updated != entry:
            memory.write(entry_pa, updated)
            ad_writes, entry = 1, updated
        if write and not fmt.is_writable(entry):
            self.counters.walk_aborted(refs, ad_writes)
            return Fault(GUEST_PROTECTION, va)
        self.counters.walk_done(refs, 0, ad_writes)
        return Translation(fmt.frame(entry, 1), PAGE, fmt.is_writable(entry), fmt.is_dirty(entry))


# -- the compiled walk ---------------------------------------------------------------------
S_WAYS, S_BUCKETS, S_SLOT_BYTES, S_PER_LINE, S_BASE = 0, 1, 2, 3, 4  #: columns of a VM's row of the state
U_MULTIPLIERS = np.array(MULTIPLIERS, dtype=np.uint64)


def walk_state(walk: HashedWalk) -> np.ndarray:
    """The kernel's state: row ``vm`` describes VM ``vm``'s table, the last row is the
    guest format (rebuilt after every software event, so a rehash is seen)."""
    tables = walk.hw.tables
    state = np.zeros((len(tables) + 1, walklib.F_COLUMNS), dtype=np.int64)
    for vm, table in enumerate(tables):
        state[vm, :S_BASE] = (table.ways, table.buckets, table.slot_bytes, table.per_line)
        state[vm, S_BASE:S_BASE + table.ways] = table.bases
    state[len(tables)] = walklib.format_row(walk.hw.guest_format)
    return state


@njit(_nrt=False)
def slot_index(way, key, buckets):
    """:func:`way_hash` in numba (uint64 arithmetic wraps mod 2**64)."""
    m = U_MULTIPLIERS[way]
    x = np.uint64(key) * m
    x ^= x >> np.uint64(32)
    x = x * m
    x ^= x >> np.uint64(29)
    return np.int64(x & np.uint64(buckets - 1))


@njit(_nrt=False)
def walk_kernel(slot_of, words, state, dcfg, dctl, dtag, dage, cnt, vm, asid, va, op, out):
    """:meth:`HashedWalk.walk`, reporting in ``out`` (slatframe.engine.walklib)."""
    f = state.shape[0] - 1
    ways, buckets, slot_bytes, per_line = state[vm, S_WAYS], state[vm, S_BUCKETS], state[vm, S_SLOT_BYTES], \
        state[vm, S_PER_LINE]
    vpn = va >> PAGE_SHIFT
    key = (asid << ASID_SHIFT) | (vpn // per_line)
    walklib.begin(out)
    entry_pa = -1
    entry = 0
    for way in range(ways):  # every way is read: one reference each, its tag and entry in one line
        slot = state[vm, S_BASE + way] + slot_index(way, key, buckets) * slot_bytes
        if walklib.walk_read(slot_of, words, state, f, slot, dcfg, dctl, dtag, dage, cnt, out, O_REFS_GUEST) \
                == key + 1:
            entry_pa = slot + ENTRY_SIZE * (1 + vpn % per_line)
            entry = walklib.entry_load(slot_of, words, state, f, entry_pa)
    if entry_pa < 0 or (entry & state[f, F_PRESENT]) == 0:
        walklib.fault(out, GUEST_NOT_PRESENT, va)
        return
    write = op == WRITE
    entry, _, protection, wrote = walklib.entry_step(slot_of, words, state, f, entry_pa, entry, 1, True, write,
                                                     write)
    out[O_AD_WRITES] = 1 if wrote else 0
    if protection:
        walklib.fault(out, GUEST_PROTECTION, va)
        return
    out[O_PAGE] = walklib.frame_of(state, f, entry, 1)
    out[O_SHIFT] = PAGE_SHIFT
    out[O_WRITABLE] = 1 if (entry & state[f, F_WRITE]) != 0 else 0
    out[O_DIRTY] = 1 if state[f, F_DIRTY] == 0 or (entry & state[f, F_DIRTY]) != 0 else 0


def make_walk(ctx) -> HashedWalk:
    if ctx.walk_caches:
        raise ConfigError("the hashed walk of examples/plugins/hashed_paging.py models no walk caches; "
                          "remove [[walk_caches]].")
    if not isinstance(ctx.hw, HashedView):
        raise ConfigError("the hashed walk of examples/plugins/hashed_paging.py walks only the tables of "
                          "SLAT scheme 'hashed'.")
    return HashedWalk(ctx.hw, ctx.memory, ctx.counters, ctx.data_caches)


class HashedTranslator:
    """Each ``[[vms]]`` entry is one OS on bare metal with one hashed table; all share
    the host's memory (an OS's image is resident from the start, as under ``native``)."""

    def __init__(self, options: HashedOptions, ctx) -> None:
        for i, vm in enumerate(ctx.vms):
            if vm.guest_page_size != PAGE:
                raise ConfigError(f"vms[{i}].guest_page_size must be 4K under the hashed example scheme, "
                                  "whose table maps 4K pages only.")
        self.counters = ctx.counters
        self.host = ctx.host
        self.fmt = ctx.guest_format
        for i, vm in enumerate(ctx.vms):
            ctx.host.reserve(image_pages(vm.image, vm.memory, f"vms[{i}].image") << PAGE_SHIFT)
        self.tables = [HashedTable(options.ways, options.buckets, options.entries_per_line, ctx.host, ctx.counters)
                       for _ in ctx.vms]
        self.hw = HashedView(ctx.guest_format, RootTable(len(ctx.vms)), walk="hashed", tables=self.tables)

    def map(self, vm: int, asid: int, va: int) -> None:
        """Map a fresh 4K frame at ``va`` unless it is mapped."""
        table, vpn = self.tables[vm], va >> PAGE_SHIFT
        entry = table.entry_address(asid, vpn)
        if entry is not None and self.fmt.is_present(self.host.read(entry)):
            return
        frame = self.host.alloc(PAGE)
        if entry is None:
            table.insert(search_key(asid, vpn, table.per_line))
            entry = table.entry_address(asid, vpn)
        self.host.write(entry, self.fmt.leaf_entry(frame, 1, True))

    def protect(self, vm: int, asid: int, va: int, writable: bool) -> None:
        entry = self.tables[vm].entry_address(asid, va >> PAGE_SHIFT)
        if entry is None:
            return
        word = self.host.read(entry)
        if self.fmt.is_present(word) and self.fmt.is_writable(word) != writable:
            flag = self.fmt.write_flag
            self.host.write(entry, word | flag if writable else word & ~flag)

    def unmap(self, vm: int, asid: int, va: int) -> None:
        table = self.tables[vm]
        entry = table.entry_address(asid, va >> PAGE_SHIFT)
        if entry is not None and self.fmt.is_present(self.host.read(entry)):
            table.remove(entry)

    def handle_fault(self, vm: int, asid: int, va: int, op: int, fault: Fault) -> list[Invalidation]:
        self.counters.add("faults.guest")
        if fault.kind == GUEST_PROTECTION:
            self.protect(vm, asid, va, writable=True)
        else:
            self.map(vm, asid, va)
        return []

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        if op == MAP:
            self.map(vm, asid, arg)
        elif op == UNMAP:
            self.unmap(vm, asid, arg)
        elif op == PROTECT:
            self.protect(vm, asid, arg, writable=False)
        if op in (UNMAP, PROTECT, INVLPG):
            return [Invalidation("page", vm, asid, arg)]
        if op == FLUSH:
            return [Invalidation("asid", vm, asid)]
        return []  # a context switch: the table is tagged by asid, nothing to load


@hookimpl
def slatframe_walks():
    return [WalkRecord(name="hashed", summary="d-ary cuckoo hashed page table: d parallel probes",
                       factory=make_walk, kernels=WalkKernels(walk=walk_kernel, state=walk_state))]


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="hashed", summary="native paging with a cuckoo hashed page table (ECPT-like)",
                             factory=HashedTranslator, options=HashedOptions, guest_format="x86-64",
                             backs_guest_memory=False)]
