"""Page deduplication strategies: ``ksm``, ``ideal`` and ``zero-pages``.

``ksm`` follows Linux's KSM as of v6.18 (mm/ksm.c: ksm_do_scan, scan_get_next_rmap_item,
should_skip_rmap_item, cmp_and_merge_page; Documentation/admin-guide/mm/ksm.rst). Every
``sleep`` trace records the scanner visits the next ``pages_to_scan`` backed pages, VM by
VM (an mm each) and guest-physical page by page; a wake-up that reaches the end of the
list ends there, and the next one starts a new full scan with an empty unstable tree.
Each visited page has an rmap_item (its checksum, its place in a tree). For a page not
mapping a KSM page:

1. it leaves the tree it was in; if its checksum differs from the one its item recorded
   (or it has none yet) the new one is recorded and nothing else happens: a page must be
   seen unchanged on two consecutive scans before it can merge;
2. with ``use_zero_pages``, a zero-filled page is mapped to the zero page;
3. it merges into a stable node (a write-protected KSM page) of equal content with fewer
   than ``max_page_sharing`` mappings, the newest first (stable node chains);
4. else an equal page in this scan's unstable tree and this page merge: this page becomes
   a new KSM page (a new stable node, chained beside full ones of the same content);
   otherwise the page enters the unstable tree.

With ``smart_scan`` (on by default since v6.7) a page that failed to merge on three visits
is skipped on some later ones (1, 2, 4, then 8 scans as it ages), leaving its tree.
Counts are the kernel's: ``pages_shared`` stable nodes with items, ``pages_sharing`` their
further items, ``pages_unshared`` items in an unstable tree (kept until revisited),
``pages_volatile`` the other items. A page written after merging (a copy-on-write break)
keeps its item on the node until the scanner comes back to it, as in the kernel, so
these counts can exceed what ``dedup.bytes_saved`` reports saved now. Comparisons are of
the full content (content ids), and the checksum is the content id (no collisions).
Not modelled: the chain prune every 2 s that prefers the fullest dup, and stale stable
nodes dropped while searching other contents' tree paths (here a node whose KSM page
was freed is dropped when its content is searched or one of its items is revisited).

``ideal`` merges every set of identical pages at every run (the upper bound);
``zero-pages`` merges only zero-filled pages onto the zero page.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any

import attrs

from slatframe import hookimpl
from slatframe.options import option
from slatframe.records import DedupStrategyRecord

Page = tuple[int, int]  # (vm, 4K guest frame number)


@attrs.frozen
class KsmOptions:
    # defaults from Documentation/admin-guide/mm/ksm.rst: pages_to_scan 100, sleep 20 ms,
    # max_page_sharing 256, use_zero_pages off, smart_scan on; sleep is in trace records here
    pages_to_scan: int = option(100, "pages visited per wake-up", min=1)
    sleep: int = option(20_000, "trace records between wake-ups", min=1)
    max_page_sharing: int = option(256, "most mappings of one shared page (a stable node); more "
                                        "identical pages start a new shared page", min=2)
    use_zero_pages: bool = option(False, "map zero-filled pages to the zero page")
    smart_scan: bool = option(True, "skip pages that repeatedly failed to merge (Linux 6.7+ default)")


class RmapItem:
    """KSM's record of one visited page."""

    __slots__ = ("checksum", "age", "skips", "node", "unstable")

    def __init__(self) -> None:
        self.checksum: int | None = None  # content id at the last visit (None: never checked)
        self.age = 0  # visits (smart scan), saturating at 255
        self.skips = 0  # visits still to skip (smart scan)
        self.node: int | None = None  # the stable node (KSM frame) it hangs on
        self.unstable: int | None = None  # the content it entered an unstable tree with


def skip_age(age: int) -> int:
    """Visits to skip after a visit at ``age`` (mm/ksm.c skip_age)."""
    return 1 if age <= 3 else 2 if age <= 5 else 4 if age <= 8 else 8


class Ksm:
    def __init__(self, options: KsmOptions, host: Any) -> None:
        self.o = options
        self.host = host
        self.interval = options.sleep
        self.items: dict[Page, RmapItem] = {}
        self.nodes: dict[int, set[Page]] = {}  # stable node (its KSM frame) -> pages of its items
        self.chains: dict[int, list[int]] = {}  # content -> its stable nodes, newest first
        self.content_of: dict[int, int] = {}  # stable node -> its content
        self.unstable: dict[int, Page] = {}  # this scan's unstable tree: content -> page
        self.unshared = 0  # items flagged unstable (this scan's tree or the last one's)
        self.cursor: Page | None = None  # next (vm, gfn) to look at; None: a new full scan starts

    def run(self) -> list:
        invalidations: list = []
        for _ in range(self.o.pages_to_scan):
            page = self._next()
            if page is None:  # the end of a full scan ends the wake-up
                break
            self.host.counters.add("dedup.pages_scanned")
            invalidations += self._cmp_and_merge(page)
        return invalidations

    # -- the scan ---------------------------------------------------------------------
    def _next(self) -> Page | None:
        """The next page to visit (scan_get_next_rmap_item), or None at the end of a full scan."""
        host = self.host
        if self.cursor is None:
            self.unstable.clear()
            self.cursor = (0, 0)
        vm, gfn = self.cursor
        while vm < len(host.backings):
            frames = host.frames(vm)
            for i in range(bisect_left(frames, gfn), len(frames)):
                page = (vm, frames[i])
                if host.maps_zero(*page):  # not an anonymous page: passed, its item freed
                    self._free(page)
                    continue
                item = self.items.setdefault(page, RmapItem())
                self.cursor = (vm, frames[i] + 1)
                if not self._skip(page, item):
                    return page
            vm, gfn = vm + 1, 0
        self.cursor = None
        host.counters.add("dedup.full_scans")
        return None

    def _skip(self, page: Page, item: RmapItem) -> bool:
        """Smart scan (should_skip_rmap_item): skip a page that kept failing to merge."""
        if not self.o.smart_scan or self.host.frame(*page) in self.nodes:
            return False
        age = item.age
        item.age = min(255, age + 1)
        if age < 3:
            return False
        if not item.skips:
            item.skips = skip_age(age)
            return False
        item.skips -= 1
        self._leave_tree(item, page)
        self.host.counters.add("dedup.pages_skipped")
        return True

    def _cmp_and_merge(self, page: Page) -> list:
        host, item = self.host, self.items[page]
        if host.frame(*page) in self.nodes:  # maps a KSM page: its item is on that node
            return []
        self._leave_tree(item, page)
        content = host.content(*page)
        if item.checksum != content:  # changed since the last visit (or never seen): volatile
            item.checksum = content
            return []
        if self.o.use_zero_pages and content == 0:
            return host.merge(*page, host.zero())
        node = self._stable_search(content)
        if node is not None:
            invalidations = host.merge(*page, node)
            self._append(node, page, item)
            return invalidations
        other = self.unstable.get(content)
        if other is None or other == page or host.content(*other) != content \
                or host.frame(*other) in self.nodes:
            self.unstable[content] = page  # (a tree page changed since: no longer found)
            item.unstable = content
            self.unshared += 1
            return []
        # try_to_merge_two_pages: this page becomes the KSM page, the tree's page maps it
        frame, invalidations = host.share(*page)
        invalidations += host.merge(*other, frame)
        self._leave_tree(self.items[other], other)
        self.nodes[frame] = set()
        self.content_of[frame] = content
        self.chains.setdefault(content, []).insert(0, frame)
        self._append(frame, other, self.items[other])
        self._append(frame, page, item)
        return invalidations

    # -- trees ------------------------------------------------------------------------
    def _stable_search(self, content: int) -> int | None:
        """The first stable node of ``content`` with room; stale nodes (KSM page freed) are dropped."""
        chain = self.chains.get(content, [])
        for frame in [f for f in chain if not self.host.is_live(f)]:
            self._drop_node(frame)
        return next((f for f in chain if len(self.nodes[f]) < self.o.max_page_sharing), None)

    def _append(self, frame: int, page: Page, item: RmapItem) -> None:
        self.nodes[frame].add(page)
        item.node = frame

    def _leave_tree(self, item: RmapItem, page: Page) -> None:
        """remove_rmap_item_from_tree: the item leaves its stable node or unstable tree."""
        if item.node is not None:
            frame, item.node = item.node, None
            if self.host.is_live(frame):
                self.nodes[frame].discard(page)
            else:
                self._drop_node(frame, also=page)
        elif item.unstable is not None:
            if self.unstable.get(item.unstable) == page:
                del self.unstable[item.unstable]
            item.unstable = None
            self.unshared -= 1

    def _drop_node(self, frame: int, also: Page | None = None) -> None:
        """A stale stable node goes, with every item on it (remove_node_from_stable_tree)."""
        for page in self.nodes.pop(frame):
            if page != also:
                self.items[page].node = None
        chain = self.chains[self.content_of.pop(frame)]
        chain.remove(frame)

    def _free(self, page: Page) -> None:
        item = self.items.pop(page, None)
        if item is not None:
            self._leave_tree(item, page)

    def stats(self) -> dict[str, int]:
        shared = sum(1 for pages in self.nodes.values() if pages)
        sharing = sum(len(pages) for pages in self.nodes.values()) - shared
        return {"dedup.pages_shared": shared, "dedup.pages_sharing": sharing,
                "dedup.pages_unshared": self.unshared,
                "dedup.pages_volatile": len(self.items) - shared - sharing - self.unshared}


@attrs.frozen
class OracleOptions:
    interval: int = option(20_000, "trace records between runs", min=1)


class Ideal:
    """Every set of identical pages merged at once."""

    zero_only = False

    def __init__(self, options: OracleOptions, host) -> None:
        self.host = host
        self.interval = options.interval

    def run(self):
        host, invalidations = self.host, []
        groups: dict[int, list[tuple[int, int]]] = {}
        for vm, gfn in host.pages():
            groups.setdefault(host.content(vm, gfn), []).append((vm, gfn))
            host.counters.add("dedup.pages_scanned")
        for content, pages in groups.items():
            if self.zero_only and content != 0:
                continue
            if content == 0 and self.zero_only:
                for vm, gfn in pages:
                    invalidations += host.merge(vm, gfn, host.zero())
                continue
            if len(pages) < 2:
                continue
            frame = host.by_content.get(content)
            todo = pages
            if frame is None:
                first = next((p for p in pages if not host.is_shared(*p)), None)
                if first is None:
                    continue
                frame, inv = host.share(*first)
                invalidations += inv
            for vm, gfn in todo:
                if host.frame(vm, gfn) != frame:
                    invalidations += host.merge(vm, gfn, frame)
        host.counters.add("dedup.full_scans")  # every wake-up looks at every page
        return invalidations

    def stats(self):
        return {}


class ZeroPages(Ideal):
    """Only zero-filled pages, onto the zero page."""

    zero_only = True


@hookimpl
def slatframe_dedup_strategies():
    return [
        DedupStrategyRecord(name="ksm", summary="Linux KSM: scanner, stable and unstable trees, checksums",
                            factory=Ksm, options=KsmOptions),
        DedupStrategyRecord(name="ideal", summary="oracle: every identical page merged at once",
                            factory=Ideal, options=OracleOptions),
        DedupStrategyRecord(name="zero-pages", summary="merges zero-filled pages onto the zero page",
                            factory=ZeroPages, options=OracleOptions),
    ]
