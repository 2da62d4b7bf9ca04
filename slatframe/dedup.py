"""Page deduplication: what strategies see and do, independent of any strategy.

:class:`DedupHost` is the hypervisor side: it lists the VMs' backed 4K pages with their
contents, merges a page onto a shared frame (mapped read-only: a later write is a
copy-on-write break), and keeps the sharing counts the kernel reports (KSM's names:
``pages_shared`` frames in use by several mappings, ``pages_sharing`` the extra mappings,
so ``pages_sharing`` x 4K is the memory saved). Merging a page that lies in a host large
page splits that page first (``dedup.large_pages_split``). Every change of a VM's
gPA -> hPA mappings invalidates that VM's TLB and walk-cache entries; a scheme
that derives tables from the mappings (shadow paging) hears of each change through its
backing's ``on_remap``.
"""
from __future__ import annotations

from typing import Any, Iterator

from .errors import ConfigError
from .paging import PAGE_SHIFT
from .translation import HYPERVISOR, Invalidation

SMALL = 1 << PAGE_SHIFT


class DedupHost:
    """Sharing state over the backings (``translator.backings``) of a hypervisor's VMs."""

    def __init__(self, translator: Any, host: Any, counters: Any, store: Any) -> None:
        backings = getattr(translator, "backings", None)
        if not backings:
            raise ConfigError("dedup needs a SLAT scheme with a hypervisor that backs guest memory "
                              "(nested or shadow paging); this run's scheme has none.")
        self.backings = backings
        self.host = host
        self.counters = counters
        self.store_ids = store
        self.refs: dict[int, int] = {}  # shared frame -> mappings
        self.by_content: dict[int, int] = {}  # content id -> shared frame (the stable tree)
        self.zero_frame = -1
        self.zero_mappings = 0
        self.pending: list[Invalidation] = []  # from stores made while software ran
        self._frames: dict[int, tuple[int, list[int]]] = {}  # vm -> (host pages backed, frames)

    # -- what strategies read ---------------------------------------------------------
    def pages(self) -> Iterator[tuple[int, int]]:
        """(vm, 4K guest frame number) of every backed page, VM by VM, ascending."""
        for vm in range(len(self.backings)):
            for gfn in self.frames(vm):
                yield vm, gfn

    def frames(self, vm: int) -> list[int]:
        """The backed 4K guest frame numbers of ``vm``, ascending (pages are never unbacked,
        so the list is rebuilt only when the backing has grown)."""
        backing = self.backings[vm]
        size, frames = self._frames.get(vm, (-1, []))
        if size != len(backing.pages):
            frames = backing.guest_frames()
            self._frames[vm] = (len(backing.pages), frames)
        return frames

    def maps_zero(self, vm: int, gfn: int) -> bool:
        """Whether (vm, gfn) is mapped to the shared zero page."""
        return self.zero_frame >= 0 and self.frame(vm, gfn) == self.zero_frame

    def is_live(self, frame: int) -> bool:
        """Whether the shared frame ``frame`` is still mapped (else it was freed)."""
        return frame in self.refs

    def frame(self, vm: int, gfn: int) -> int:
        return self.backings[vm].lookup(gfn << PAGE_SHIFT) & ~(SMALL - 1)

    def content(self, vm: int, gfn: int) -> int:
        return int(self.host.content[self.frame(vm, gfn) >> PAGE_SHIFT])

    def is_shared(self, vm: int, gfn: int) -> bool:
        frame = self.frame(vm, gfn)
        return frame in self.refs or frame == self.zero_frame

    # -- what strategies do -----------------------------------------------------------
    def merge(self, vm: int, gfn: int, into: int) -> list[Invalidation]:
        """Map (vm, gfn) read-only onto the shared frame ``into``; free its own frame."""
        old = self.frame(vm, gfn)
        if old == into:
            return []
        self._drop(old)
        backing = self.backings[vm]
        self.counters.add("dedup.large_pages_split", backing.remap_small(gfn << PAGE_SHIFT, into, False))
        if into == self.zero_frame:
            self.zero_mappings += 1
        else:
            self.refs[into] = self.refs.get(into, 0) + 1
        self.counters.add("dedup.merges")
        return [Invalidation("vm", vm, by=HYPERVISOR, reason="dedup")]

    def share(self, vm: int, gfn: int) -> tuple[int, list[Invalidation]]:
        """Make (vm, gfn)'s own frame a shared frame (write-protected in place), register
        it under its content, and return it."""
        frame = self.frame(vm, gfn)
        self.counters.add("dedup.large_pages_split", self.backings[vm].remap_small(gfn << PAGE_SHIFT, frame, False))
        self.refs[frame] = 1
        self.by_content[int(self.host.content[frame >> PAGE_SHIFT])] = frame
        return frame, [Invalidation("vm", vm, by=HYPERVISOR, reason="dedup")]

    def zero(self) -> int:
        """The shared zero frame (allocated on first use)."""
        if self.zero_frame < 0:
            self.zero_frame = self.host.alloc(SMALL)
            self.host.content[self.zero_frame >> PAGE_SHIFT] = 0
        return self.zero_frame

    def _drop(self, frame: int) -> None:
        """One mapping of ``frame`` goes away."""
        if frame == self.zero_frame:
            self.zero_mappings -= 1
            return
        count = self.refs.get(frame)
        if count is None:  # a private frame: freed
            self.host.free(frame, SMALL)
            return
        if count > 1:
            self.refs[frame] = count - 1
            return
        del self.refs[frame]
        content = int(self.host.content[frame >> PAGE_SHIFT])
        if self.by_content.get(content) == frame:
            del self.by_content[content]
        self.host.free(frame, SMALL)

    def cow_break(self, vm: int, gpa: int) -> list[Invalidation]:
        """A write met a read-only shared page: give the writer a private copy."""
        gfn = gpa >> PAGE_SHIFT
        old = self.frame(vm, gfn)
        new = self.host.alloc(SMALL)
        self.host.content[new >> PAGE_SHIFT] = self.host.content[old >> PAGE_SHIFT]
        self._drop(old)
        self.backings[vm].remap_small(gfn << PAGE_SHIFT, new, True)
        self.counters.add("dedup.cow_breaks")
        return [Invalidation("vm", vm, by=HYPERVISOR, reason="dedup")]

    def store(self, vm: int, gpa: int) -> bool:
        """Software (the guest kernel) stores to (vm, gpa): copy a merged page first, and
        give the page new content. Invalidations wait in :meth:`take_pending`. Returns
        whether a copy-on-write break happened (the caller counts its VM exit)."""
        self.backings[vm].backing(gpa)  # a first store backs the page, as its second-level fault would
        gfn = gpa >> PAGE_SHIFT
        broke = self.is_shared(vm, gfn)
        if broke:
            self.counters.add("faults.host")
            self.pending += self.cow_break(vm, gpa)
        self.host.content[self.frame(vm, gfn) >> PAGE_SHIFT] = self.store_ids.written()
        return broke

    def take_pending(self) -> list[Invalidation]:
        pending, self.pending = self.pending, []
        return pending

    # -- what is reported -----------------------------------------------------------
    def stats(self) -> dict[str, int]:
        shared = len(self.refs)
        sharing = sum(self.refs.values()) - shared
        return {"dedup.pages_shared": shared, "dedup.pages_sharing": sharing,
                "dedup.zero_pages": self.zero_mappings,
                "dedup.bytes_saved": (sharing + self.zero_mappings) * SMALL}
