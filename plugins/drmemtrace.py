"""The ``drmemtrace`` workload: DynamoRIO drmemtrace offline traces (the final, post-processed
per-thread files raw2trace writes), the threads of one process interleaved into one stream.

Facts of the format, from DynamoRIO's ``clients/drcachesim/common/trace_entry.h`` (the
``trace_type_t``, ``trace_marker_type_t``, ``trace_version_t``, ``offline_file_type_t``
enums, ``trace_entry_t`` and ``schedule_entry_t``), ``clients/drcachesim/tracer/raw2trace_shared.h``
(``TRACE_CHUNK_PREFIX``), ``clients/drcachesim/common/schedule_file.cpp`` (the cpu_schedule
archive) and ``clients/drcachesim/scheduler/scheduler_impl.cpp`` (how a schedule is
replayed), read at DynamoRIO commit 05e316505beb69586142243af1647449945772b7 (the enums
also at 4f0e90ba522f63393ed71bf82838401910d915f9); no code is copied:

- A per-thread file (``*.trace.zip``: zip members ``chunk.NNNN...``, numbered from 0, whose
  concatenation is the thread's entries; ``*.trace.gz``; plain ``*.trace``) is a sequence of
  12-byte little-endian ``trace_entry_t``: ``type`` u16 (``trace_type_t``), ``size`` u16 (the
  access size, instruction length or a marker's ``trace_marker_type_t``), ``addr`` u64 (an
  address, pc, thread or process id, or a marker's value). 64-bit traces only.
- Entry 0 is ``TRACE_TYPE_HEADER`` (25) whose ``addr`` is the ``trace_version_t`` (2..7 known);
  the last entry is ``TRACE_TYPE_FOOTER`` (26). A ``TRACE_MARKER_TYPE_FILETYPE`` marker gives
  ``offline_file_type_t`` bits (architecture, filtering).
- ``cpu_schedule.bin.zip`` has one member per CPU (named by its id) of 32-byte
  ``schedule_entry_t``: thread, timestamp, cpu, start_instruction (u64 each): from
  ``timestamp`` on, ``thread`` ran on ``cpu`` from its ``start_instruction``-th fetched
  instruction (counted as ``type_is_instr`` counts them).

What becomes a record (:data:`TRACE_DTYPE`, ``vm`` and ``asid`` from the options, every
thread the same ``asid``: one process, one address space; ``thread`` the index of the
thread's file in name order):

- ``type_is_instr`` types (``TRACE_TYPE_INSTR`` 10 .. ``TRACE_TYPE_INSTR_RETURN`` 16,
  ``TRACE_TYPE_INSTR_SYSENTER`` 31, ``TRACE_TYPE_INSTR_TAKEN_JUMP`` 48, ``..._UNTAKEN_JUMP`` 49):
  an ifetch at the pc; ``TRACE_TYPE_READ`` (0): a read; ``TRACE_TYPE_WRITE`` (1): a write;
- software prefetches (``TRACE_TYPE_PREFETCH`` 2 .. ``TRACE_TYPE_PREFETCH_INSTR`` 9,
  ``TRACE_TYPE_PREFETCH_READ_L1_NT`` 32 .. ``TRACE_TYPE_PREFETCH_WRITE_L3_NT`` 46): a read at
  the address (a prefetch instruction looks its address up in the TLB and walks on a miss,
  and writes nothing);
- not records, but counted: ``TRACE_TYPE_INSTR_NO_FETCH`` (29: a repeated string
  instruction fetches nothing), ``TRACE_TYPE_HARDWARE_PREFETCH`` (27: issued by a
  simulated cache, not the program), the cache flushes (18..21); skipped: markers (28),
  thread, thread exit, pid, encodings (22, 23, 24, 47);
- refused, naming the entry: ``TRACE_TYPE_INSTR_BUNDLE`` (17) and
  ``TRACE_TYPE_INSTR_MAYBE_FETCH`` (30), which only online (pipe) traces use; a type of 50
  (``TRACE_TYPE_INVALID``) or more; filtered traces (``OFFLINE_FILE_TYPE_FILTERED``,
  ``_IFILTERED``, ``_DFILTERED``: they hold only some accesses) and 32-bit ones.

Order (option ``order``): ``cpu_schedule`` replays ``cpu_schedule.bin.zip`` on one CPU: its
entries sorted by (timestamp, cpu, thread, start_instruction) as schedule_file.cpp sorts
them, an entry repeating a thread's start dropped for the later one (as the scheduler
does); each entry runs its thread from its start to the thread's next start.
``timestamps`` switches thread at each ``TRACE_MARKER_TYPE_TIMESTAMP`` marker, running next
the thread whose next timestamp is smallest (ties: the smaller thread id), as DynamoRIO's
serial schedule does. ``auto`` takes ``cpu_schedule`` when the file is there. Either way
each thread's records keep their own order. The chunks' ``notes`` say which order was
used (``drmemtrace.order``) and how many threads ran: the result records them
(``workload_notes``), and ``slatframe trace info`` prints them.

Memory: a block of :data:`BLOCK_ENTRIES` entries per thread at a time (all threads' files
are open at once), plus the schedule.
"""
from __future__ import annotations

import gzip
import heapq
import lzma
import re
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.errors import TraceError
from slatframe.options import option
from slatframe.records import WorkloadRecord
from slatframe.trace import IFETCH, READ, WRITE
from slatframe.tracefile import DECOMPRESS_ERRORS, GZIP_MAGIC, open_error, open_raw, open_trace
from slatframe_plugins.trace_readers import _Chunks

ENTRY_DTYPE = np.dtype([("type", "<u2"), ("size", "<u2"), ("addr", "<u8")])  #: trace_entry_t, packed
SCHEDULE_DTYPE = np.dtype([("thread", "<u8"), ("timestamp", "<u8"), ("cpu", "<u8"),
                           ("start_instruction", "<u8")])  #: schedule_entry_t
assert ENTRY_DTYPE.itemsize == 12 and SCHEDULE_DTYPE.itemsize == 32

# trace_type_t values
INSTR_TYPES = (*range(10, 17), 31, 48, 49)  #: type_is_instr
PREFETCH_TYPES = (*range(2, 10), *range(32, 47))  #: software prefetches (type_is_prefetch but 27)
HARDWARE_PREFETCH, NO_FETCH, BUNDLE, MAYBE_FETCH = 27, 29, 17, 30
FLUSH_TYPES = (18, 19, 20, 21)
THREAD, HEADER, FOOTER, MARKER = 22, 25, 26, 28
TYPE_LIMIT = 50  #: TRACE_TYPE_INVALID
# trace_marker_type_t values
TIMESTAMP, FILETYPE = 2, 9
VERSIONS = range(2, 8)  #: trace_version_t values known (TRACE_ENTRY_VERSION_NO_KERNEL_PC .. _RETIRED_INSTRUCTIONS_ONLY)
FILTERED = 0x1 | 0x80 | 0x100  #: OFFLINE_FILE_TYPE_FILTERED | _IFILTERED | _DFILTERED
ARCH_32 = 0x10 | 0x20  #: OFFLINE_FILE_TYPE_ARCH_ARM32 | _ARCH_X86_32
SCHEDULE = "cpu_schedule.bin.zip"
SUFFIXES = (".trace.zip", ".trace.gz", ".trace")
THREAD_LIMIT = 1 << 16  #: threads a trace may have: a record's ``thread`` is u16
#: Entries read from a thread's file at a time (384 KiB).
BLOCK_ENTRIES = 1 << 15

_SKIP = 255  #: not a record
_OPS = np.full(TYPE_LIMIT, _SKIP, dtype=np.uint8)
_OPS[list(INSTR_TYPES)] = IFETCH
_OPS[[0, *PREFETCH_TYPES]] = READ
_OPS[1] = WRITE
_REFUSED = {BUNDLE: "an instruction bundle (TRACE_TYPE_INSTR_BUNDLE), which only online traces use",
            MAYBE_FETCH: "TRACE_TYPE_INSTR_MAYBE_FETCH, which only online traces use",
            HEADER: "a second header (TRACE_TYPE_HEADER); a file has one, as entry 0"}
_CHUNK = re.compile(r"chunk\.(\d+)")


@attrs.frozen
class DrmemtraceOptions:
    path: str = option(help="a folder of per-thread drmemtrace files (*.trace.zip, *.trace.gz, *.trace; or its "
                            "trace/ subfolder holds them), a .zip holding them, or one thread's file; relative to "
                            "the config file", path=True, folder=True)
    vm: int = option(0, "VM index given to every record", min=0, max=65535)
    asid: int = option(0, "address space given to every record (every thread: one process)", min=0, max=65535)
    order: str = option("auto", "how threads interleave: cpu_schedule replays cpu_schedule.bin.zip on one CPU, "
                                "timestamps switches thread at each timestamp marker (smallest next timestamp "
                                "first), auto takes cpu_schedule when the file is there",
                        choices=("auto", "cpu_schedule", "timestamps"))
    accesses: int | None = option(None, "stop after this many records (all when absent)", min=1)


@attrs.frozen
class ThreadCounts:
    """What one thread's file holds (``records`` = ifetch + read + write records it yields)."""

    file: str
    tid: int
    instructions: int  #: fetched instructions (type_is_instr)
    non_fetched: int
    loads: int
    stores: int
    prefetches: int  #: software prefetches (records, as reads)
    hardware_prefetches: int
    flushes: int

    @property
    def records(self) -> int:
        return self.instructions + self.loads + self.stores + self.prefetches


# -- finding the files ----------------------------------------------------------------------

@attrs.frozen
class _Source:
    """One file of the trace: its name in messages and how to open its bytes."""

    where: str
    open: Callable[[], BinaryIO]
    path: Path | None = None  #: the file, when it is one (not a member of a zip)


def _thread_name(name: str) -> bool:
    return name.endswith(SUFFIXES)


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise TraceError(f"{path}: is not a readable zip file: {exc}.") from None


def _member_opener(path: Path, name: str) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        try:
            return zipfile.ZipFile(path).open(name)  # type: ignore[return-value]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
            raise TraceError(f"{path}: member {name!r} cannot be read: {exc}.") from None
    return opener


def _find(path: str | Path) -> tuple[list[_Source], _Source | None]:
    """The per-thread files (sorted by name) and the cpu_schedule file of a trace."""
    path = Path(path)
    if path.is_dir():
        folder = path / "trace" if (path / "trace").is_dir() and not any(map(_is_trace_file, path.iterdir())) else path
        files = sorted(p for p in folder.iterdir() if _is_trace_file(p))
        unknown = sorted(p.name for p in folder.iterdir() if ".trace." in p.name and not _is_trace_file(p))
        if unknown:
            raise TraceError(f"{folder}: {unknown[0]} is a trace file this reader cannot read (it reads "
                             f"{', '.join('*' + s for s in SUFFIXES)}; DynamoRIO's drraw2trace -compress writes them).")
        if not files:
            raise TraceError(f"{folder}: holds no drmemtrace thread files "
                             f"({', '.join('*' + s for s in SUFFIXES)}).")
        threads = [_Source(str(p), _file_opener(p), p) for p in files]
        schedule = folder / SCHEDULE
        return threads, (_Source(str(schedule), _file_opener(schedule)) if schedule.is_file() else None)
    if not path.exists():
        raise TraceError(f"{path}: trace file does not exist.")
    head = _head(path, 4)
    if head.startswith(b"PK"):
        names = _zip_names(path)
        if names and all(_CHUNK.fullmatch(n) for n in names):
            return [_Source(str(path), _file_opener(path), path)], None  # one thread's .trace.zip
        inner = sorted(n for n in names if _thread_name(n.rsplit("/", 1)[-1]))
        if not inner:
            raise TraceError(f"{path}: the zip holds no drmemtrace thread files "
                             f"({', '.join('*' + s for s in SUFFIXES)}) and is not one thread's file (chunk.NNNN members).")
        schedules = [n for n in names if n.rsplit("/", 1)[-1] == SCHEDULE]
        threads = [_Source(f"{path}:{n}", _member_opener(path, n)) for n in inner]
        schedule = _Source(f"{path}:{schedules[0]}", _member_opener(path, schedules[0])) if schedules else None
        return threads, schedule
    if str(path).endswith(".zip"):
        raise TraceError(f"{path}: is named .zip but is not a zip file (it does not start with 'PK').")
    return [_Source(str(path), _file_opener(path), path)], None


def _is_trace_file(p: Path) -> bool:
    return p.is_file() and _thread_name(p.name)


def _file_opener(p: Path) -> Callable[[], BinaryIO]:
    return lambda: open_raw(p)


def _head(path: Path, n: int) -> bytes:
    with open_raw(path) as fh:
        try:
            return fh.read(n)
        except OSError as exc:
            raise open_error(path, exc) from None


# -- reading entries ------------------------------------------------------------------------

_ZIP_DAMAGE = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, RuntimeError,
               NotImplementedError)


def _fixed_records(fh: BinaryIO, where: str, what: str, dtype: np.dtype, first: int,
                   count: int) -> Iterator[np.ndarray]:
    """Blocks of up to ``count`` records of ``dtype`` from ``fh``; a partial last record is refused."""
    size = dtype.itemsize
    done = first
    while True:
        raw = _read_full(fh, count * size, where, what, done)
        if not raw:
            return
        whole = len(raw) // size
        if whole * size != len(raw):
            raise TraceError(f"{where}: {what} {done + whole} is truncated: {len(raw) - whole * size} of its "
                             f"{size} bytes are present.")
        yield np.frombuffer(raw, dtype=dtype)
        done += whole


def _read_full(fh: BinaryIO, n: int, where: str, what: str, done: int) -> bytes:
    """``n`` bytes, or fewer at the end of ``fh``; damage is a :class:`TraceError`."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        try:
            part = fh.read(n - got)
        except DECOMPRESS_ERRORS + _ZIP_DAMAGE as exc:
            raise TraceError(f"{where}: the data is damaged near {what} {done}: {exc}.") from None
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _entry_blocks(source: _Source) -> Iterator[tuple[str, int, np.ndarray]]:
    """(where, index of the first entry, entries) blocks of a thread's file, the zip members
    chunk.0, chunk.1, ... in turn (entries numbered across them)."""
    fh = source.open()
    with fh:
        try:
            magic = fh.read(2)
            fh.seek(0)
        except _ZIP_DAMAGE as exc:
            raise TraceError(f"{source.where}: cannot be read: {exc}.") from None
        if magic != b"PK":
            if source.where.endswith(".zip"):
                raise TraceError(f"{source.where}: is named .zip but is not a zip file (it does not start with 'PK').")
            if source.path is not None:
                stream = open_trace(source.path)  # plain, gzip or xz (by magic bytes)
            else:
                stream = gzip.GzipFile(fileobj=fh) if magic == GZIP_MAGIC else fh  # type: ignore[assignment]
            with stream:
                first = 0
                for block in _fixed_records(stream, source.where, "entry", ENTRY_DTYPE, 0, BLOCK_ENTRIES):
                    yield source.where, first, block
                    first += len(block)
            return
        yield from _zip_entry_blocks(fh, source.where)


def _open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, member: str) -> BinaryIO:
    """A zip member opened for reading; one sentence naming ``member`` when it cannot be."""
    try:
        return zf.open(info)
    except _ZIP_DAMAGE as exc:
        raise TraceError(f"{member}: cannot be read: {exc}.") from None


def _zip_entry_blocks(fh: BinaryIO, where: str) -> Iterator[tuple[str, int, np.ndarray]]:
    try:
        zf = zipfile.ZipFile(fh)
    except _ZIP_DAMAGE as exc:
        raise TraceError(f"{where}: is not a readable zip file: {exc}.") from None
    with zf:
        chunks = []
        for info in zf.infolist():
            match = _CHUNK.fullmatch(info.filename)
            if not match:
                raise TraceError(f"{where}: member {info.filename!r} is not a chunk.NNNN member; a drmemtrace "
                                 "thread file's zip holds only those.")
            chunks.append((int(match.group(1)), info))
        chunks.sort(key=lambda c: c[0])
        if [n for n, _ in chunks] != list(range(len(chunks))):
            raise TraceError(f"{where}: its chunk members are not numbered 0, 1, 2, ... without gaps.")
        first = 0
        for _, info in chunks:
            member = f"{where}: member {info.filename}"
            with _open_member(zf, info, member) as stream:
                for block in _fixed_records(stream, member, "entry", ENTRY_DTYPE, first, BLOCK_ENTRIES):
                    yield member, first, block
                    first += len(block)


# -- one thread -----------------------------------------------------------------------------

@attrs.frozen
class _Piece:
    """Records of one thread between timestamp markers: ``key`` is the timestamp of the
    segment they belong to, ``starts`` whether they start it."""

    key: int
    starts: bool
    ops: np.ndarray
    vaddrs: np.ndarray


class _Thread:
    """Reads one thread's file, checking it, into pieces (:meth:`pieces`) and counts."""

    def __init__(self, source: _Source, index: int) -> None:
        self.source, self.index = source, index
        self.tid = -1  # the first TRACE_TYPE_THREAD entry's id
        self.counts = np.zeros(TYPE_LIMIT, dtype=np.int64)
        self.key = 0  # the current segment's timestamp (0 before the first timestamp marker)
        self.pending = True  # whether the current segment has yielded no records yet
        self.entries = 0
        self.footer = False

    def pieces(self) -> Iterator[_Piece]:
        for member, first, block in _entry_blocks(self.source):
            yield from self._block(member, first, block)
        where = self.source.where
        if not self.entries:
            raise TraceError(f"{where}: holds no entries (a drmemtrace file starts with a header entry).")
        if not self.footer:
            raise TraceError(f"{where}: ends after entry {self.entries - 1} without the footer entry "
                             "(TRACE_TYPE_FOOTER): the file is truncated.")

    def _block(self, where: str, first: int, block: np.ndarray) -> Iterator[_Piece]:
        """The pieces of a block: the records before its first timestamp marker continue the
        current segment; those after each marker start a new one."""
        types, sizes, addrs = block["type"], block["size"], block["addr"]
        self._check(where, first, types, sizes, addrs)
        self.entries = first + len(block)
        if self.tid < 0 and (types == THREAD).any():
            self.tid = int(addrs[np.flatnonzero(types == THREAD)[0]])
        self.counts += np.bincount(types, minlength=TYPE_LIMIT)
        ops = _OPS[types]
        keep = np.flatnonzero(ops != _SKIP)
        marks = np.flatnonzero((types == MARKER) & (sizes == TIMESTAMP))
        bounds = [0, *np.searchsorted(keep, marks).tolist(), len(keep)]  # records before each marker
        keys = [self.key, *addrs[marks].tolist()]
        starts = [self.pending, *([True] * len(marks))]
        for i in range(len(keys)):
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                take = keep[lo:hi]
                yield _Piece(keys[i], starts[i], ops[take], addrs[take])
        self.key = keys[-1]
        self.pending = starts[-1] and bounds[-1] == bounds[-2]  # its records are still to come

    def _check(self, where: str, first: int, types: np.ndarray, sizes: np.ndarray, addrs: np.ndarray) -> None:
        if first == 0 and (types[0] != HEADER or addrs[0] not in VERSIONS):
            what = (f"gives trace version {int(addrs[0])}; this reader knows versions {VERSIONS[0]} to "
                    f"{VERSIONS[-1]}" if types[0] == HEADER else
                    f"has type {int(types[0])}, not the header entry (TRACE_TYPE_HEADER, {HEADER}) a drmemtrace "
                    "file starts with")
            raise TraceError(f"{where}: entry 0 {what}.")
        if self.footer:
            raise TraceError(f"{where}: entry {first} follows the footer entry (TRACE_TYPE_FOOTER), which ends a file.")
        bad = np.flatnonzero((types >= TYPE_LIMIT) | (types == BUNDLE) | (types == MAYBE_FETCH) |
                             ((types == HEADER) & (np.arange(len(types)) + first > 0)))
        if bad.size:
            i = int(bad[0])
            kind = int(types[i])
            what = _REFUSED.get(kind, f"of type {kind}, not a trace_type_t value this reader knows "
                                      f"(0..{TYPE_LIMIT - 1})")
            raise TraceError(f"{where}: entry {first + i} is {what}.")
        filetype = np.flatnonzero((types == MARKER) & (sizes == FILETYPE))
        for i in filetype.tolist():
            bits = int(addrs[i])
            if bits & (FILTERED | ARCH_32):
                what = "a filtered trace (it holds only some accesses)" if bits & FILTERED else "a 32-bit trace"
                raise TraceError(f"{where}: entry {first + i} (the file type marker, {bits:#x}) says this is "
                                 f"{what}; this reader takes unfiltered 64-bit traces.")
        footers = np.flatnonzero(types == FOOTER)
        if footers.size:
            if int(footers[0]) != len(types) - 1:
                raise TraceError(f"{where}: entry {first + int(footers[0]) + 1} follows the footer entry "
                                 "(TRACE_TYPE_FOOTER), which ends a file.")
            self.footer = True

    def thread_counts(self) -> ThreadCounts:
        c = self.counts
        return ThreadCounts(file=self.source.where, tid=self.tid, instructions=int(c[list(INSTR_TYPES)].sum()),
                            non_fetched=int(c[NO_FETCH]), loads=int(c[0]), stores=int(c[1]),
                            prefetches=int(c[list(PREFETCH_TYPES)].sum()),
                            hardware_prefetches=int(c[HARDWARE_PREFETCH]), flushes=int(c[list(FLUSH_TYPES)].sum()))


class _Cursor:
    """A thread's pieces one at a time, with one piece of look-ahead or put back, and its
    fetched instructions so far (``done``)."""

    def __init__(self, thread: _Thread) -> None:
        self.thread = thread
        self._pieces = thread.pieces()
        self._next: _Piece | None = None
        self.done = 0

    def peek(self) -> _Piece | None:
        if self._next is None:
            self._next = next(self._pieces, None)
        return self._next

    def take(self) -> _Piece | None:
        piece = self.peek()
        self._next = None
        if piece is not None:
            self.done += int(np.count_nonzero(piece.ops == IFETCH))
        return piece

    def take_until(self, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The records of the thread's fetched instructions numbered below ``stop`` (with
        their loads and stores), up to the fetch of instruction ``stop``."""
        while (piece := self.peek()) is not None:
            fetched = np.cumsum(piece.ops == IFETCH)  # fetches up to each record, itself included
            cut = int(np.searchsorted(fetched, stop - self.done, side="right"))
            if cut == 0:
                return
            if cut < len(piece.ops):
                self._next = attrs.evolve(piece, starts=False, ops=piece.ops[cut:], vaddrs=piece.vaddrs[cut:])
                self.done = stop
                yield piece.ops[:cut], piece.vaddrs[:cut]
                return
            self.take()
            yield piece.ops, piece.vaddrs

    def rest(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while (piece := self.take()) is not None:
            yield piece.ops, piece.vaddrs


Interleaved = Iterator[tuple[int, np.ndarray, np.ndarray]]  #: (thread index, ops, vaddrs)


def _by_timestamps(threads: list[_Thread]) -> Interleaved:
    """Each segment (the records after a timestamp marker) of the thread whose next one has
    the smallest timestamp (ties: the smaller thread id, then file order)."""
    cursors = [_Cursor(t) for t in threads]
    heap: list[tuple[int, int, int]] = []
    for i, c in enumerate(cursors):
        piece = c.peek()
        if piece is not None:
            heap.append((piece.key, threads[i].tid, i))
    _check_tids(threads)
    heapq.heapify(heap)
    while heap:
        _, _, i = heapq.heappop(heap)
        c = cursors[i]
        piece = c.take()
        assert piece is not None
        yield i, piece.ops, piece.vaddrs
        while (piece := c.peek()) is not None and not piece.starts:
            c.take()
            yield i, piece.ops, piece.vaddrs
        if piece is not None:
            heapq.heappush(heap, (piece.key, threads[i].tid, i))


def _check_tids(threads: list[_Thread]) -> None:
    """Every file holds a thread of its own (its first records read, or the whole file)."""
    seen: dict[int, _Thread] = {}
    for t in threads:
        if t.tid < 0 and t.entries:
            raise TraceError(f"{t.source.where}: has no thread entry (TRACE_TYPE_THREAD) among its first "
                             f"{t.entries} entries; a drmemtrace file names its thread near its start.")
        if t.tid in seen:
            raise TraceError(f"{t.source.where}: holds thread {t.tid}, as {seen[t.tid].source.where} does; "
                             "each thread has one file.")
        seen[t.tid] = t


def read_schedule(source: _Source) -> np.ndarray:
    """Every schedule_entry_t of a cpu_schedule.bin.zip (its members in name order)."""
    fh = source.open()
    parts = []
    with fh:
        try:
            zf = zipfile.ZipFile(fh)
        except _ZIP_DAMAGE as exc:
            raise TraceError(f"{source.where}: is not a readable zip file: {exc}.") from None
        with zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                member = f"{source.where}: member {info.filename}"
                with _open_member(zf, info, member) as stream:
                    parts.extend(_fixed_records(stream, member, "schedule entry", SCHEDULE_DTYPE, 0, 1 << 16))
    if not parts:
        raise TraceError(f"{source.where}: holds no schedule entries.")
    return np.concatenate(parts)


def schedule_segments(schedule: np.ndarray, where: str) -> np.ndarray:
    """The schedule as segments in run order: its entries sorted by (timestamp, cpu,
    thread, start_instruction); of entries with the same thread and start, the last kept.
    Each thread's starts must then increase."""
    order = np.lexsort((schedule["start_instruction"], schedule["thread"], schedule["cpu"], schedule["timestamp"]))
    s = schedule[order]
    pairs = np.stack([s["thread"], s["start_instruction"]], axis=1)[::-1]
    _, last = np.unique(pairs, axis=0, return_index=True)
    s = s[np.sort(len(s) - 1 - last)]
    by_thread = np.argsort(s["thread"], kind="stable")
    t, start = s["thread"][by_thread], s["start_instruction"][by_thread]
    bad = np.flatnonzero((t[1:] == t[:-1]) & (start[1:] <= start[:-1]))
    if bad.size:
        i = int(by_thread[bad[0] + 1])
        raise TraceError(f"{where}: thread {int(s['thread'][i])} is scheduled at instruction "
                         f"{int(s['start_instruction'][i])} at timestamp {int(s['timestamp'][i])}, after it was "
                         "scheduled at a later instruction; use order = \"timestamps\".")
    return s


def _by_schedule(threads: list[_Thread], schedule: _Source) -> Interleaved:
    """The segments of the recorded cpu schedule in order (:func:`schedule_segments`), each
    running its thread from its start instruction to the thread's next start (the
    first from the thread's beginning, the last to its end)."""
    segments = schedule_segments(read_schedule(schedule), schedule.where)
    cursors = [_Cursor(t) for t in threads]
    for c in cursors:
        c.peek()  # reads the thread id
    _check_tids(threads)
    index = {t.tid: i for i, t in enumerate(threads)}
    scheduled = set(segments["thread"].tolist())
    for t in threads:
        if t.tid not in scheduled:
            raise TraceError(f"{schedule.where}: does not schedule thread {t.tid} ({t.source.where}); "
                             "use order = \"timestamps\".")
    unknown = scheduled - set(index)
    if unknown:
        raise TraceError(f"{schedule.where}: schedules thread {min(unknown)}, which has no file in the trace.")
    tids = segments["thread"].tolist()
    starts = segments["start_instruction"].tolist()
    following: dict[int, int | None] = {}
    stops: list[int | None] = [None] * len(tids)
    for k in range(len(tids) - 1, -1, -1):
        stops[k] = following.get(tids[k])
        following[tids[k]] = starts[k]
    begun: set[int] = set()
    for tid, start, stop in zip(tids, starts, stops):
        i = index[tid]
        c = cursors[i]
        if tid in begun and c.done < start:
            raise TraceError(f"{schedule.where}: schedules thread {tid} at instruction {start}, but "
                             f"{threads[i].source.where} holds only {c.done} fetched instructions.")
        begun.add(tid)
        for ops, vaddrs in (c.rest() if stop is None else c.take_until(stop)):
            yield i, ops, vaddrs


# -- the workload ---------------------------------------------------------------------------

def open_threads(path: str | Path) -> tuple[list[_Thread], _Source | None]:
    """The trace's threads, in the name order of their files (a record's ``thread`` is
    its thread's index here), and its schedule file, if any."""
    sources, schedule = _find(path)
    if len(sources) > THREAD_LIMIT:
        raise TraceError(f"{path}: holds {len(sources)} thread files; a record's thread is a 16-bit index, so at "
                         f"most {THREAD_LIMIT} threads are read.")
    return [_Thread(s, i) for i, s in enumerate(sources)], schedule


def interleave(path: str | Path, order: str = "auto") -> tuple[str, Interleaved]:
    """The order used and the (thread index, ops, vaddrs) pieces of the interleaved trace."""
    threads, schedule = open_threads(path)
    if order == "auto":
        order = "cpu_schedule" if schedule is not None else "timestamps"
    if order == "cpu_schedule":
        if schedule is None:
            raise TraceError(f"{path}: has no {SCHEDULE}, which order = \"cpu_schedule\" replays; "
                             "use order = \"timestamps\" or \"auto\".")
        return order, _by_schedule(threads, schedule)
    return order, _by_timestamps(threads)


def thread_counts(path: str | Path) -> list[ThreadCounts]:
    """Each thread's counts, its file read alone from start to end (checked as a run checks it)."""
    threads, _ = open_threads(path)
    for t in threads:
        for _ in t.pieces():
            pass
    return [t.thread_counts() for t in threads]


class DrmemtraceChunks:
    """TRACE_DTYPE chunks of a drmemtrace trace; ``notes`` says what ``slatframe trace
    info`` reports beside its counts (the order used, the threads)."""

    def __init__(self, path: str | Path, order: str, chunk_size: int, vm: int = 0, asid: int = 0,
                 limit: int | None = None) -> None:
        self.path, self.order, self.chunk_size, self.vm, self.asid = path, order, chunk_size, vm, asid
        self.limit = limit
        self.notes: dict[str, object] = {}

    def __iter__(self) -> Iterator[np.ndarray]:
        order, pieces = interleave(self.path, self.order)
        self.notes["drmemtrace.order"] = order
        out = _Chunks(self.chunk_size, 0, self.vm, self.asid)
        seen: set[int] = set()
        left = self.limit
        for i, ops, vaddrs in pieces:
            if left is not None:
                ops, vaddrs = ops[:left], vaddrs[:left]
                left -= len(ops)
            seen.add(i)
            yield from out.add(ops, vaddrs, i)
            if left == 0:
                break
        self.notes["drmemtrace.threads"] = len(seen)
        if not out.total and not out.filled:
            raise TraceError(f"{self.path}: holds no instruction fetches, loads or stores.")
        yield from out.rest()


@hookimpl
def slatframe_workloads():
    return [
        WorkloadRecord(name="drmemtrace",
                       summary="DynamoRIO drmemtrace offline traces (a folder of per-thread .trace.zip/.gz files)",
                       factory=lambda o, ctx: DrmemtraceChunks(o.path, o.order, ctx.chunk_size, o.vm, o.asid,
                                                               o.accesses),
                       options=DrmemtraceOptions, fresh_chunks=True),
    ]
