"""Simulated physical memory: a frame allocator and the 8-byte words of page-table pages.

Only words that were written are stored (page-table pages, dense per touched frame);
everything else reads as zero. Frames are handed out by a bump allocator with natural
alignment, so 2M and 1G pages are aligned as hardware requires.
"""
from __future__ import annotations

import numpy as np

from .errors import SimulationError
from .paging import PAGE_SHIFT, PAGE_SIZE, WORD_BYTES

WORDS_PER_FRAME = PAGE_SIZE // WORD_BYTES
from .units import format_size


class PhysicalMemory:
    """One physical address space (the host's, or under ``native`` the machine's)."""

    def __init__(self, size: int, name: str = "host memory") -> None:
        self.size = size
        self.name = name
        self.next_free = 0  # bump pointer, bytes
        self.allocated = 0  # bytes handed out
        self.freed = 0  # bytes given back (frames are not reused: addresses stay unique)
        #: content id of every frame (see slatframe.contents); 0 is the zero page
        self.content = np.zeros(1024, dtype=np.int64)
        self._slot_of = np.full(1024, -1, dtype=np.int64)  # frame -> row of _words
        self._words = np.zeros((64, WORDS_PER_FRAME), dtype=np.uint64)
        self._rows = 0

    # -- allocation ---------------------------------------------------------------
    def alloc(self, size: int) -> int:
        """Allocate ``size`` bytes aligned to ``size``; returns the base address."""
        return self._take((self.next_free + size - 1) & ~(size - 1), size)

    def reserve(self, size: int) -> int:
        """Allocate ``size`` bytes rounded up to 4K pages, aligned to 4K only (a VM image
        made resident in one piece); returns the base address."""
        page = 1 << PAGE_SHIFT
        return self._take((self.next_free + page - 1) & ~(page - 1), (size + page - 1) & ~(page - 1))

    def _take(self, base: int, size: int) -> int:
        if base + size > self.size:
            raise SimulationError(
                f"{self.name} is exhausted: allocating {format_size(size)} at "
                f"{format_size(self.allocated)} allocated of {format_size(self.size)}; "
                "raise machine.host_memory or lower the footprint.")
        self.next_free = base + size
        self.allocated += size
        self.content = _covering(self.content, self.next_free >> PAGE_SHIFT, 0)
        return base

    def free(self, addr: int, size: int) -> None:
        """Give back ``size`` bytes at ``addr`` (counted; the frames are not reused)."""
        self.freed += size

    @property
    def in_use(self) -> int:
        """Bytes allocated and not given back."""
        return self.allocated - self.freed

    def room(self, ahead: int, rows: int) -> tuple[int, int]:
        """Get the frames up to ``ahead`` bytes past the bump pointer (within the memory's
        size) and ``rows`` more rows of :attr:`words` ready to be allocated and written
        without Python (the compiled loop's demand paging); returns (the end of those
        frames, the rows :attr:`words` has). Only arrays grow: what a run counts is unchanged."""
        limit = min(self.size, self.next_free + ahead)
        frames = (limit + PAGE_SIZE - 1) >> PAGE_SHIFT
        self._slot_of = _covering(self._slot_of, frames, -1)
        self.content = _covering(self.content, frames, 0)
        while self._rows + rows > len(self._words):
            self._words = np.concatenate([self._words, np.zeros_like(self._words)])
        return limit, len(self._words)

    @property
    def rows(self) -> int:
        """Rows of :attr:`words` in use."""
        return self._rows

    def took(self, next_free: int, allocated: int, rows: int) -> None:
        """What was allocated and written outside Python since :meth:`room`: the bump
        pointer and the rows in use now, and the bytes handed out."""
        self.next_free, self._rows = next_free, rows
        self.allocated += allocated

    # -- contents -------------------------------------------------------------------
    def read(self, addr: int) -> int:
        """The 8-byte word at ``addr`` (0 where nothing was written)."""
        frame = addr >> PAGE_SHIFT
        slot_of = self._slot_of
        if frame >= len(slot_of):
            return 0
        row = slot_of.item(frame)  # (item: a Python int, without a numpy scalar in between)
        if row < 0:
            return 0
        return self._words.item(row, (addr >> 3) & (WORDS_PER_FRAME - 1))

    def write(self, addr: int, value: int) -> None:
        """Store the 8-byte word ``value`` at ``addr``."""
        frame = addr >> PAGE_SHIFT
        if frame >= len(self._slot_of):  # (a test per write: the call only when it grows)
            self._slot_of = _covering(self._slot_of, frame + 1, -1)
        row = self._slot_of.item(frame)
        if row < 0:
            if self._rows == len(self._words):
                self._words = np.concatenate([self._words, np.zeros_like(self._words)])
            row = self._slot_of[frame] = self._rows
            self._rows += 1
        self._words[row, (addr >> 3) & (WORDS_PER_FRAME - 1)] = value

    @property
    def slot_of(self) -> np.ndarray:
        """Row of :attr:`words` holding each frame's words, -1 for none (grows; re-read it)."""
        return self._slot_of

    @property
    def words(self) -> np.ndarray:
        """The stored words, one row per frame that holds any (grows; re-read it)."""
        return self._words


def _covering(array: np.ndarray, n: int, fill: int) -> np.ndarray:
    """``array``, or a copy of it at least ``n`` long (twice as long at least, the rest
    ``fill``) when it is shorter."""
    if n <= len(array):
        return array
    grown = np.full(max(n, 2 * len(array)), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown
