"""``slatframe trace record --processes``: a program and every process it starts, recorded
into one trace, with their lifecycle (fork, exec, exit) and their shared mappings as
control records. docs/trace-format.md ("Recording processes") is the user's account.

Recording (:func:`record_processes`). valgrind lackey with ``--trace-children=yes``
follows every fork and exec, and ``--trace-syscalls=yes`` writes each system call of the
program into the same log as its accesses, in the order the process made them.
``--log-file=DIR/log.%p`` gives each process a log of its own (valgrind reopens it in a
forked child). An exec keeps the pid, and the valgrind that starts in the new image opens
``log.PID`` again, truncating what the old image wrote; so valgrind is made to exec a
small launcher script (:data:`LAUNCHER`, named by ``VALGRIND_LAUNCHER``, the variable
valgrind reads the launcher's path from) that first moves ``log.PID`` aside to
``log.PID.N``. A process's logs are then ``log.PID.0``, ``log.PID.1``, ... ``log.PID``,
one per program image, each but the last ending inside its ``execve``.

Merging (:class:`Merger`), depth first: the first process is asid 0; at a fork the
child gets the next asid, and its whole life (its own children first, the same way) comes
between the parent's fork record and the parent's next record. A process ends with an
exit record, images with exec records between them. Accesses of a new asid need no
context-switch record (an access of another asid is one). File mappings that are shared
in Linux (read-only or executable private file mappings, as a library's text, and every
``MAP_SHARED`` mapping) become ``map_shared`` records of their pages, each just before
the process's first access to the page; other memory (anonymous, brk, written private
file pages, the stack, the executable and the dynamic loader, which valgrind maps
itself) is left to demand faults. ``munmap``, a shrinking ``brk`` and ``mmap`` over
touched pages unmap them; ``mprotect`` without write permission protects them.
"""
from __future__ import annotations

import bisect
import heapq
import io
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, Sequence, Union

import attrs
import numpy as np

from .errors import SlatframeError, TraceError
from .lackey import ACCESS_LINE, access_records, parse_block
from .trace import EXEC, EXIT, FORK, MAP_SHARED, PROTECT, UNMAP, make_trace
from .tracefile import NpzWriter

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT
MAX_ASIDS = 1 << 16
# mmap and mprotect bits (asm-generic/mman-common.h)
PROT_WRITE = 0x2
MAP_TYPE = 0x3  # MAP_SHARED 1, MAP_PRIVATE 2, MAP_SHARED_VALIDATE 3
MAP_PRIVATE = 0x2
MAP_ANONYMOUS = 0x20
F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030

#: The launcher valgrind execs for every exec of a traced process (``{log}``, ``{mv}``,
#: ``{launcher}`` and ``{valgrind}`` are filled in, shell-quoted).
LAUNCHER = """#!/bin/sh
# slatframe trace record --processes: valgrind runs this for every exec of a traced
# process. An exec keeps the pid, so the log of the image being replaced (log.PID) is
# moved aside to log.PID.N before the new image's valgrind opens (and truncates) log.PID.
log={log}.$$
if [ -e "$log" ]; then
  n=0
  while [ -e "$log.$n" ]; do n=$((n + 1)); done
  {mv} -- "$log" "$log.$n"
fi
VALGRIND_LAUNCHER={launcher}
export VALGRIND_LAUNCHER
exec {valgrind} "$@"
"""

LogSource = Union[Path, bytes]  #: a log file, or a log's text (tests)


# -- one log: its accesses and system calls, in order ------------------------------------------------


@attrs.frozen
class Accesses:
    """A run of lackey access lines: ops (read, write, ifetch) and addresses."""

    ops: np.ndarray
    vaddrs: np.ndarray


@attrs.frozen
class Syscall:
    """A finished system call of the process: its name (``sys_mmap``), its arguments as
    valgrind printed them, and its result (``ok``, ``value``)."""

    name: str
    args: str
    ok: bool
    value: int

    def numbers(self) -> list[int]:
        """The arguments as integers (``0x`` hex or decimal)."""
        return [_int(a) for a in self.args.split(", ") if a]


@attrs.frozen
class Fork:
    """The process created child process ``child`` (a fork, vfork or non-thread clone)."""

    child: int


Event = Union[Accesses, Syscall, Fork]

# A line that does not start as an access line does (``I`` or `` L``, `` S``, `` M``), with the
# newline before it: valgrind's ==pid== and --pid-- lines, SYSCALL lines, and the " --> result"
# line that ends a fork's SYSCALL line. (A literal first makes the search fast.)
_OTHER = re.compile(rb"\n((?:[^ I\n]| [^LSM\n])[^\n]*)")
_SYSCALL = re.compile(r"^SYSCALL\[(\d+),(\d+)\]\((\d+)\) (.*)$")
_CALL = re.compile(r"^(\w+)(?:\[[^\]]*\])? ?\( ?(.*?) ?\)(?=\[| |$)")  # sys_fcntl[ARG3=='arg'] ( ... )
_RESULT = re.compile(r"--> (?:\[[\w-]+\] )?(Success|Failure)\((0x[0-9a-fA-F]+)\)\s*$")
_CHILD = re.compile(r"created child (\d+)")
_PATH_ARG = re.compile(r"0x[0-9a-fA-F]+\((.*)\)")
_BLOCK = 1 << 20

def _int(text: str) -> int:
    return int(text, 0) if text[:2] in ("0x", "0X") else int(text)


def parse_accesses(found: list[tuple[bytes, bytes]]) -> Accesses:
    """Records of lackey access lines given as (kind, hex address) pairs, as the
    ``lackey`` trace reader reads them (:func:`slatframe.lackey.access_records`)."""
    return Accesses(*access_records(found))


class LogReader:
    """The events of one valgrind log (one program image of one process), in its order.

    After iterating: ``forked`` tells whether the log starts inside a fork's return (the
    first image of a forked child), ``ended_in_exec`` whether it stops inside an
    ``execve`` (the image was replaced), ``pid`` the process's pid (None if the log holds
    no system call)."""

    def __init__(self, source: LogSource, name: str) -> None:
        self.source = source
        self.name = name
        self.forked = False
        self.ended_in_exec = False
        self.pid: int | None = None
        self._pending: dict[int, tuple[str, str]] = {}  # tid -> a call waiting for its result
        self._first = True

    def _open(self) -> BinaryIO:
        if isinstance(self.source, bytes):
            return io.BytesIO(self.source)
        return open(self.source, "rb")

    def __iter__(self) -> Iterator[Event]:
        line = 1  # the number of the first line of ``tail``
        tail = b""
        with self._open() as fh:
            while True:
                data = fh.read(_BLOCK)
                if not data:
                    break
                data = tail + data
                end = data.rfind(b"\n")
                if end < 0:
                    tail = data
                    continue
                text, tail = data[:end], data[end + 1:]
                yield from self._block(text, line)
                line += text.count(b"\n") + 1
        if tail:
            yield from self._block(tail, line)

    def _block(self, text: bytes, first_line: int) -> Iterator[Event]:
        """Events of whole lines ``text`` (without its last newline), the first numbered
        ``first_line``."""
        buf = b"\n" + text
        pos = 0
        for m in _OTHER.finditer(buf):
            if m.start() > pos:
                yield from self._accesses(buf, pos, m.start(), first_line)
            yield from self._other(m.group(1).decode("utf-8", "replace").rstrip("\r"))
            pos = m.end()
        if pos < len(buf):
            yield from self._accesses(buf, pos, len(buf), first_line)

    def _accesses(self, buf: bytes, start: int, end: int, first_line: int) -> Iterator[Accesses]:
        """The access lines of ``buf[start:end]`` (which starts at a newline)."""
        chunk = buf[start:end]
        fast = parse_block(chunk[1:])
        if fast is not None:
            if fast[0].size:
                self._first = False
                self.ended_in_exec = False
                yield Accesses(*fast)
            return
        found = ACCESS_LINE.findall(chunk)
        if len(found) != chunk.count(b"\n"):  # a blank line, or a bad one
            for i, raw in enumerate(chunk.split(b"\n")[1:]):
                if raw.strip() and not ACCESS_LINE.match(raw):
                    line = raw.decode("utf-8", "replace")
                    number = first_line + buf.count(b"\n", 1, start + 1) + i
                    raise TraceError(f"{self.name}: line {number} is {line[:60]!r}; expected a lackey access line "
                                     "such as ' L 1fff000778,8' (hex address below 2**64, decimal size).")
        if found:
            self._first = False
            self.ended_in_exec = False
            yield parse_accesses(found)

    def _other(self, line: str) -> Iterator[Event]:
        """Events of a line that is not an access line."""
        if line.startswith(("==", "--")):
            return  # valgrind's own messages (the preamble, the summary, warnings)
        first, self._first = self._first, False
        if line.startswith(" -->"):  # the result of a fork whose SYSCALL line printed the child
            self.forked = self.forked or first
            return
        m = _SYSCALL.match(line)
        if m is None:
            return  # nothing slatframe needs (valgrind prints a few other notes)
        self.pid = int(m.group(1))
        self.ended_in_exec = False
        yield from self._syscall(int(m.group(2)), m.group(4))

    def _syscall(self, tid: int, rest: str) -> Iterator[Event]:
        result = _RESULT.search(rest)
        if rest.startswith("... "):  # the end of a call that blocked: "... [async] --> Success(0x4)"
            call = self._pending.pop(tid, None)
            if call is not None and result is not None:
                yield Syscall(call[0], call[1], result.group(1) == "Success", int(result.group(2), 16))
            return
        m = _CALL.match(rest)
        if m is None:
            return  # "unimplemented (by the kernel) syscall", which changes nothing
        name, args, after = m.group(1), m.group(2), rest[m.end():]
        child = _CHILD.search(after)
        if child is not None:
            yield Fork(int(child.group(1)))
        elif result is not None:
            yield Syscall(name, args, result.group(1) == "Success", int(result.group(2), 16))
        elif "[async]" in after:
            self._pending[tid] = (name, args)
        elif "execve" in name:  # no result: the exec replaced the image (or this is the log's end)
            self.ended_in_exec = True


# -- the merge ---------------------------------------------------------------------------------


class SharedRanges:
    """The page ranges of an address space whose pages are shared ones: each range
    ``[start, end)`` maps page ``p`` to ``(object, first + p - start)``, a page of a file
    (or of a shared anonymous mapping)."""

    def __init__(self, items: Sequence[tuple[int, int, object, int]] = ()) -> None:
        self.items = sorted(items, key=lambda item: item[0])

    def copy(self) -> "SharedRanges":
        return SharedRanges(self.items)

    def remove(self, start: int, end: int) -> None:
        """Drop pages ``[start, end)`` (munmap, or an mmap over them)."""
        kept: list[tuple[int, int, object, int]] = []
        for s, e, obj, first in self.items:
            if e <= start or s >= end:
                kept.append((s, e, obj, first))
                continue
            if s < start:
                kept.append((s, start, obj, first))
            if e > end:
                kept.append((end, e, obj, first + end - s))
        self.items = kept

    def assign(self, start: int, end: int, obj: object, first: int) -> None:
        """Make pages ``[start, end)`` the pages ``first``... of ``obj``."""
        self.remove(start, end)
        bisect.insort(self.items, (start, end, obj, first), key=lambda item: item[0])

    def key(self, page: int) -> tuple[object, int] | None:
        """The shared object page at ``page``, or None."""
        i = bisect.bisect_right(self.items, page, key=lambda item: item[0]) - 1
        if i >= 0:
            s, e, obj, first = self.items[i]
            if page < e:
                return obj, first + page - s
        return None


@attrs.define
class Process:
    """What the merge knows of one process: its asid, its shared ranges, the pages its
    address space maps (``touched``), the pages it maps shared (``shared``, the guest
    model's VMAs: a fault there maps the shared page), its break, and its open files."""

    pid: int
    asid: int
    ranges: SharedRanges = attrs.field(factory=SharedRanges)
    touched: set[int] = attrs.field(factory=set)
    shared: set[int] = attrs.field(factory=set)
    brk: int | None = None
    fds: dict[int, object] = attrs.field(factory=dict)

    def child(self, pid: int, asid: int) -> "Process":
        """The state of a forked child: a copy of the parent's."""
        return Process(pid, asid, self.ranges.copy(), set(self.touched), set(self.shared), self.brk,
                       dict(self.fds))

    def exec_image(self) -> None:
        """An exec: an empty address space (open files stay)."""
        self.ranges, self.touched, self.shared, self.brk = SharedRanges(), set(), set(), None


class AsidAllocator:
    """asids in order of appearance (0, 1, 2, ...); past 65535, the lowest asid of an exited
    process."""

    def __init__(self) -> None:
        self.next = 0
        self.free: list[int] = []

    def take(self) -> int:
        if self.next < MAX_ASIDS:
            self.next += 1
            return self.next - 1
        if not self.free:
            raise SlatframeError(f"the program had more than {MAX_ASIDS} processes alive at once; a trace's "
                                 f"asids are below {MAX_ASIDS}.")
        return heapq.heappop(self.free)

    def give_back(self, asid: int) -> None:
        heapq.heappush(self.free, asid)  # taken only once the fresh asids run out


def _pages_in(pages: set[int], start: int, end: int) -> list[int]:
    """The pages of ``pages`` in ``[start, end)``, in order."""
    if end - start <= len(pages):
        return [p for p in range(start, end) if p in pages]
    return sorted(p for p in pages if start <= p < end)


def _page_range(address: int, length: int) -> tuple[int, int]:
    return address >> PAGE_SHIFT, (address + length + PAGE - 1) >> PAGE_SHIFT


@attrs.define
class _Frame:
    """A process being merged: its state, its logs, and the reader of the current one."""

    process: Process
    logs: Sequence[LogSource]
    index: int = 0
    reader: LogReader | None = None
    events: Iterator[Event] | None = None


class Merger:
    """Merges the logs of a recording into one trace, depth first (module docstring).

    ``logs`` maps each pid to its logs, one per program image in order; ``root`` is the
    first process. Iterate :meth:`records` for the trace's chunks; ``counts`` and
    ``warnings`` are complete afterwards."""

    def __init__(self, logs: Mapping[int, Sequence[LogSource]], root: int, vm: int = 0) -> None:
        self.logs = logs
        self.root = root
        self.vm = vm
        self.asids = AsidAllocator()
        self.claims: dict[int, tuple[object, int]] = {}  # page -> the object page shared there
        self.file_keys: dict[str, object] = {}
        self.anon = 0
        self.counts = {"processes": 0, "fork": 0, "exec": 0, "exit": 0, "map_shared": 0, "unmap": 0,
                       "protect": 0, "records": 0}
        self.warnings: list[str] = []
        self.seen: set[int] = set()

    # -- driving ---------------------------------------------------------------------------
    def records(self) -> Iterator[np.ndarray]:
        """The trace, chunk by chunk."""
        stack = [self._start(self.root, None)]
        while stack:
            frame = stack[-1]
            event = next(frame.events, None) if frame.events is not None else None
            if event is None:
                chunk = self._log_ended(frame)
                if frame.events is None:
                    stack.pop()
                yield from self._counted(chunk)
            elif isinstance(event, Fork):
                child = self._start(event.child, frame.process)
                yield from self._counted(self._control(frame.process.asid, FORK, child.process.asid))
                stack.append(child)
            elif isinstance(event, Accesses):
                yield from self._counted(self._accesses(frame.process, event))
            else:
                yield from self._counted(self._syscall(frame.process, event))
        unreached = sorted(set(self.logs) - self.seen)
        if unreached:
            self.warnings.append(f"the logs of pid(s) {', '.join(map(str, unreached[:10]))} were not reached from "
                                 f"the first process (pid {self.root}) and are left out.")

    def accesses(self) -> int:
        """Access records written so far."""
        c = self.counts
        return c["records"] - sum(c[k] for k in ("fork", "exec", "exit", "map_shared", "unmap", "protect"))

    def _counted(self, chunk: np.ndarray | None) -> Iterator[np.ndarray]:
        if chunk is not None and len(chunk):
            self.counts["records"] += len(chunk)
            yield chunk

    def _start(self, pid: int, parent: Process | None) -> _Frame:
        if pid in self.seen:
            raise SlatframeError(f"pid {pid} was used by two processes during the recording (the pid space wrapped "
                                 "around), so valgrind's log of the first was overwritten; record fewer processes "
                                 "or raise /proc/sys/kernel/pid_max.")
        self.seen.add(pid)
        asid = self.asids.take()
        process = Process(pid, asid) if parent is None else parent.child(pid, asid)
        self.counts["processes"] += 1
        self.counts["fork"] += parent is not None
        frame = _Frame(process, list(self.logs.get(pid, ())))
        if not frame.logs:
            self.warnings.append(f"process {pid} has no valgrind log; it is recorded as created and exited.")
        self._open(frame)
        return frame

    def _open(self, frame: _Frame) -> None:
        if frame.index < len(frame.logs):
            source = frame.logs[frame.index]
            name = str(source) if isinstance(source, Path) else f"log {frame.process.pid}.{frame.index}"
            frame.reader = LogReader(source, name)
            frame.events = iter(frame.reader)
        else:
            frame.reader, frame.events = None, None

    def _log_ended(self, frame: _Frame) -> np.ndarray | None:
        """A log's end: an exec record and the next image's log, or the process's exit."""
        process, reader = frame.process, frame.reader
        if reader is not None and frame.index == 0 and process.pid != self.root and not reader.forked:
            self.warnings.append(f"the first log of process {process.pid} does not start at its fork, so what it "
                                 "did before its first exec is missing (valgrind did not run slatframe's launcher).")
        frame.index += 1
        if reader is None or not (frame.index < len(frame.logs) or reader.ended_in_exec):
            return self._exit(frame)
        process.exec_image()
        self.counts["exec"] += 1
        records = self._control(process.asid, EXEC, 0)
        if frame.index < len(frame.logs):
            self._open(frame)
            return records
        self.warnings.append(f"process {process.pid} exec'd a program valgrind did not trace (a setuid program?); "
                             "it is recorded as exec and exit.")
        return np.concatenate([records, self._exit(frame)])

    def _exit(self, frame: _Frame) -> np.ndarray:
        """The process's exit record; its asid is free again."""
        frame.index = len(frame.logs)
        self._open(frame)  # frame.events is None: the frame is done
        self.counts["exit"] += 1
        self.asids.give_back(frame.process.asid)
        return self._control(frame.process.asid, EXIT, 0)

    # -- records ---------------------------------------------------------------------------
    def _control(self, asid: int, op: int, vaddr: int | Sequence[int]) -> np.ndarray:
        vaddrs = np.atleast_1d(np.asarray(vaddr, dtype=np.uint64))
        return make_trace(vaddrs, op, self.vm, asid)

    def _pages_control(self, process: Process, op: int, pages: list[int]) -> np.ndarray | None:
        if not pages:
            return None
        self.counts["unmap" if op == UNMAP else "protect"] += len(pages)
        return self._control(process.asid, op, [p << PAGE_SHIFT for p in pages])

    def _accesses(self, process: Process, run: Accesses) -> np.ndarray:
        """The run's records, each page of a shared range mapped shared (``map_shared``) just
        before the process's first access to it."""
        out = make_trace(run.vaddrs, run.ops, self.vm, process.asid)
        pages = run.vaddrs >> np.uint64(PAGE_SHIFT)
        unique, first = np.unique(pages, return_index=True)
        at: list[int] = []
        shared: list[int] = []
        for page, index in zip(unique.tolist(), first.tolist()):
            if page in process.touched:
                continue
            process.touched.add(page)
            if page in process.shared:
                continue  # inherited from the parent: the guest's fault maps the shared page
            key = process.ranges.key(page)
            if key is not None and self.claims.setdefault(page, key) == key:
                process.shared.add(page)
                at.append(index)
                shared.append(page << PAGE_SHIFT)
        if not at:
            return out
        order = np.argsort(at, kind="stable")
        self.counts["map_shared"] += len(at)
        inserted = self._control(process.asid, MAP_SHARED, np.asarray(shared, dtype=np.uint64)[order])
        return np.insert(out, np.asarray(at)[order], inserted)

    def _syscall(self, process: Process, call: Syscall) -> np.ndarray | None:
        if not call.ok:
            return None
        name = call.name.removeprefix("sys_")
        handler = getattr(self, f"_sys_{name}", None)
        if handler is None:
            return None
        try:
            return handler(process, call)
        except (ValueError, IndexError):
            self.warnings.append(f"valgrind's line for {call.name} ( {call.args[:80]} ) of process {process.pid} "
                                 "could not be read; the call is left out.")
            return None

    def _unmap(self, process: Process, start: int, end: int) -> np.ndarray | None:
        pages = _pages_in(process.touched | process.shared, start, end)
        process.touched.difference_update(pages)
        process.shared.difference_update(pages)
        process.ranges.remove(start, end)
        return self._pages_control(process, UNMAP, pages)

    def _sys_mmap(self, process: Process, call: Syscall) -> np.ndarray | None:
        _, length, prot, flags, fd, offset = call.numbers()[:6]
        start, end = _page_range(call.value, length)
        replaced = self._unmap(process, start, end)  # an mmap over mapped pages replaces them
        kind = flags & MAP_TYPE
        obj: object | None = None
        if flags & MAP_ANONYMOUS:
            if kind != MAP_PRIVATE:  # shared anonymous memory: shared with the children forked later
                self.anon += 1
                obj = ("anon", self.anon)
        elif kind != MAP_PRIVATE or not prot & PROT_WRITE:  # a written private page is a copy
            obj = process.fds.get(fd & 0xFFFFFFFF)
        if obj is not None:
            process.ranges.assign(start, end, obj, 0 if flags & MAP_ANONYMOUS else offset >> PAGE_SHIFT)
        return replaced

    def _sys_munmap(self, process: Process, call: Syscall) -> np.ndarray | None:
        address, length = call.numbers()[:2]
        return self._unmap(process, *_page_range(address, length))

    def _sys_mremap(self, process: Process, call: Syscall) -> np.ndarray | None:
        """The old range's pages are unmapped (those it keeps in place stay); the moved or
        grown part is left to demand faults."""
        address, old, new = call.numbers()[:3]
        start, end = _page_range(address, old)
        if call.value == address:
            start = _page_range(address, new)[1]
        return self._unmap(process, start, end) if start < end else None

    def _sys_mprotect(self, process: Process, call: Syscall) -> np.ndarray | None:
        address, length, prot = call.numbers()[:3]
        if prot & PROT_WRITE:
            return None  # the guest's next write fault makes a page writable again
        return self._pages_control(process, PROTECT, _pages_in(process.touched, *_page_range(address, length)))

    def _sys_brk(self, process: Process, call: Syscall) -> np.ndarray | None:
        old, process.brk = process.brk, call.value
        if old is None or call.value >= old:
            return None  # a growing heap is demand-faulted
        return self._unmap(process, _page_range(call.value, 0)[1], _page_range(old, 0)[1])

    def _sys_openat(self, process: Process, call: Syscall) -> None:
        path = _PATH_ARG.search(call.args)
        if path is not None:
            process.fds[call.value] = self._file_key(path.group(1))

    _sys_open = _sys_openat

    def _sys_close(self, process: Process, call: Syscall) -> None:
        process.fds.pop(call.numbers()[0], None)

    def _sys_dup(self, process: Process, call: Syscall) -> None:
        old = process.fds.get(call.numbers()[0])
        if old is not None:
            process.fds[call.value] = old
        else:
            process.fds.pop(call.value, None)

    _sys_dup2 = _sys_dup3 = _sys_dup

    def _sys_fcntl(self, process: Process, call: Syscall) -> None:
        numbers = call.numbers()
        if len(numbers) >= 2 and numbers[1] in (F_DUPFD, F_DUPFD_CLOEXEC):
            self._sys_dup(process, call)

    def _file_key(self, path: str) -> object:
        """A file's identity: its device and inode (the same file under two names is one),
        else its name."""
        key = self.file_keys.get(path)
        if key is None:
            try:
                st = os.stat(path)
                key = ("file", st.st_dev, st.st_ino)
            except OSError:
                key = ("path", path)
            self.file_keys[path] = key
        return key


# -- recording ---------------------------------------------------------------------------------


@attrs.define
class ProcessRecording:
    """What :func:`record_processes` wrote."""

    records: int
    returncode: int
    processes: int
    created: int
    exited: int
    execs: int
    shared_pages: int
    seconds: float
    warnings: list[str]


_LOG_NAME = re.compile(r"^log\.(\d+)(?:\.(\d+))?$")


def collect_logs(directory: Path) -> dict[int, list[Path]]:
    """Each pid's logs in ``directory``, one per program image in order: ``log.PID.0``,
    ``log.PID.1``, ..., then ``log.PID`` (the last image)."""
    found: dict[int, list[tuple[float, Path]]] = {}
    for path in directory.iterdir():
        m = _LOG_NAME.match(path.name)
        if m:
            order = float(m.group(2)) if m.group(2) is not None else float("inf")
            found.setdefault(int(m.group(1)), []).append((order, path))
    return {pid: [p for _, p in sorted(items)] for pid, items in found.items()}


def write_launcher(directory: Path, log_prefix: Path, valgrind: str) -> Path:
    """The launcher script (:data:`LAUNCHER`) in ``directory``."""
    mv = shutil.which("mv") or "/bin/mv"
    launcher = directory / "launcher.sh"
    launcher.write_text(LAUNCHER.format(log=shlex.quote(str(log_prefix)), mv=shlex.quote(mv),
                                        launcher=shlex.quote(str(launcher)), valgrind=shlex.quote(valgrind)))
    launcher.chmod(0o755)
    return launcher


def run_valgrind(command: Sequence[str], directory: Path) -> tuple[int, int, str]:
    """Run ``command`` under valgrind lackey, following its children, with each process's
    log in ``directory/logs``. Returns (the root's pid, the exit status, the end of its
    stderr)."""
    from .tracetools import valgrind_path

    valgrind = valgrind_path()
    logs = directory / "logs"
    logs.mkdir()
    launcher = write_launcher(directory, logs / "log", valgrind)
    # valgrind execs the launcher this names for an exec (module docstring); valgrind's own
    # launcher appends its path to the environment too, but the core reads the first one.
    env = dict(os.environ, VALGRIND_LAUNCHER=str(launcher))
    log_file = str(logs / "log").replace("%", "%%") + ".%p"
    args = [valgrind, "--tool=lackey", "--trace-mem=yes", "--trace-children=yes", "--trace-syscalls=yes",
            f"--log-file={log_file}", *command]
    with open(directory / "stderr", "w+b") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        code = proc.wait()
        err.seek(max(0, err.seek(0, 2) - 2000))
        stderr = err.read().decode(errors="replace").strip()
    return proc.pid, code, stderr


def record_processes(out: str | Path, command: Sequence[str], keep: str | Path | None = None) -> ProcessRecording:
    """Run ``command`` and every process it starts under valgrind lackey and write them
    as one npz trace (module docstring); the trace goes to a temporary name, renamed into
    place once whole. A program that fails still gives the trace of what it did.
    ``keep``: a directory to copy the logs into."""
    if not command:
        raise SlatframeError("trace record needs a command after '--', for example: "
                             "slatframe trace record --processes --out sh.npz -- sh -c 'ls; ls'")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slatframe-record-") as tmp:
        directory = Path(tmp)
        root, code, stderr = run_valgrind(command, directory)
        logs = collect_logs(directory / "logs")
        if keep:
            shutil.copytree(directory / "logs", keep, dirs_exist_ok=True)
        if root not in logs:
            raise SlatframeError(f"valgrind wrote no log for {' '.join(command)!r} (exit status {code}): "
                                 f"{stderr[-300:] or 'no message'}")
        merger = Merger(logs, root)
        with NpzWriter(out) as writer:
            for chunk in merger.records():
                writer.append(chunk)
            if merger.accesses() == 0:
                raise SlatframeError(f"valgrind recorded no memory access of {' '.join(command)!r} "
                                     f"(exit status {code}): {stderr[-300:] or 'no message'}")
    c = merger.counts
    return ProcessRecording(c["records"], code, c["processes"], c["fork"], c["exit"], c["exec"], c["map_shared"],
                            time.perf_counter() - started, merger.warnings)
