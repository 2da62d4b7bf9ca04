"""Page contents, as canonical content ids: two pages hold the same bytes exactly when
they have the same id. Host frames carry ids (``PhysicalMemory.content``); a VM's
guest-physical pages start with the ids of its image or content model and get them
when the hypervisor backs them; a write gives a page a fresh id.

Id ranges: 0 is the zero page; [1, 2^30) pages of the shared pool of the synthetic
model (``vms[].content.pool_pages``, the same pool for every VM, like a common OS
image); [2^30, 2^40) distinct non-zero pages of images, numbered as first seen (a page
is identified by the BLAKE2b-128 digest of its 4096 bytes, so equal ids mean equal
bytes up to a digest collision); [2^40, 2^41) the synthetic model's unique pages;
2^41 and up, contents written during the run.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from .errors import ConfigError
from .paging import PAGE_SHIFT

PAGE = 1 << PAGE_SHIFT
IMAGE_BASE = 1 << 30
UNIQUE_BASE = 1 << 40
WRITTEN_BASE = 1 << 41
ZERO_PAGE = bytes(PAGE)


MASK64 = (1 << 64) - 1


def image_pages(path: str | None, memory: int, where: str) -> int:
    """4K pages of a VM image (0 without one; a short last page counts), refusing an image
    that leaves no guest-physical memory above it for the guest kernel's own allocations."""
    if path is None:
        return 0
    try:
        pages = -(-os.path.getsize(path) // PAGE)
    except OSError as exc:
        raise ConfigError(f"{where} = {path!r} cannot be read: {exc.strerror}.") from None
    if pages >= memory // PAGE:
        raise ConfigError(f"{where} = {path!r} has {pages} pages, and the VM's memory only {memory // PAGE}: "
                          "the guest kernel allocates its page tables and the pages it maps above the "
                          "image, so vms[].memory must be larger than the image.")
    return pages


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, vectorized over uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    """:func:`_mix` of one value, in Python integers (a backing's 4K faults call it one
    page at a time, where numpy's per-call cost would dominate)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


class ContentStore:
    """Canonical ids of image pages (shared by every VM) and the counter of written ones."""

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}
        self.next_written = WRITTEN_BASE

    def image_ids(self, path: str, where: str) -> np.ndarray:
        """Ids of the pages of a file, read in streaming fashion (a short last page is
        zero-filled)."""
        out = []
        try:
            with open(path, "rb") as fh:
                while True:
                    page = fh.read(PAGE)
                    if not page:
                        break
                    page = page.ljust(PAGE, b"\0")
                    if page == ZERO_PAGE:
                        out.append(0)
                        continue
                    digest = hashlib.blake2b(page, digest_size=16).digest()
                    cid = self.ids.get(digest)
                    if cid is None:
                        cid = self.ids[digest] = IMAGE_BASE + len(self.ids)
                    out.append(cid)
        except OSError as exc:
            raise ConfigError(f"{where} = {path!r} cannot be read: {exc.strerror}.") from None
        return np.array(out, dtype=np.int64)

    def written(self) -> int:
        """A fresh id for a page just written."""
        cid = self.next_written
        self.next_written += 1
        return cid


class VmContents:
    """The initial content id of each guest-physical page of one VM."""

    def __init__(self, vm_index: int, pages: int, seed: int, zero_fraction: float, pool_fraction: float,
                 pool_pages: int, image: np.ndarray | None = None) -> None:
        self.vm = vm_index
        self.pages = pages
        self.seed = seed
        self.zero_fraction = zero_fraction
        self.pool_fraction = pool_fraction
        self.pool_pages = pool_pages
        self.image = image

    def initial(self, gfn: int, count: int = 1) -> np.ndarray:
        """Ids of guest pages gfn .. gfn+count-1 before anything is written."""
        if count == 1 and self.image is None:
            return np.array([self._one(gfn)], dtype=np.int64)
        g = np.arange(gfn, gfn + count, dtype=np.uint64)
        if self.image is not None:
            out = np.zeros(count, dtype=np.int64)
            inside = g < np.uint64(len(self.image))
            out[inside] = self.image[g[inside].astype(np.int64)]
            return out
        h = _mix(g ^ np.uint64((self.seed & 0xFFFFFFFF) << 20) ^ np.uint64(self.vm << 52))
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        pool = 1 + (_mix(h) % np.uint64(max(1, self.pool_pages))).astype(np.int64)
        unique = UNIQUE_BASE + (np.int64(self.vm) << 32) + g.astype(np.int64)
        return np.where(u < self.zero_fraction, 0,
                        np.where(u < self.zero_fraction + self.pool_fraction, pool, unique)).astype(np.int64)

    def _one(self, gfn: int) -> int:
        """:meth:`initial` of one page of the content model, in Python integers."""
        h = _mix_int(gfn ^ ((self.seed & 0xFFFFFFFF) << 20) ^ (self.vm << 52))
        u = (h >> 11) / float(1 << 53)
        if u < self.zero_fraction:
            return 0
        if u < self.zero_fraction + self.pool_fraction:
            return 1 + _mix_int(h) % max(1, self.pool_pages)
        return UNIQUE_BASE + (self.vm << 32) + gfn
