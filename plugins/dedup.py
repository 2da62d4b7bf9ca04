"""Page deduplication strategies: ``ksm``, ``ideal`` and ``zero-pages``.

``ksm`` follows the Linux algorithm (Documentation/admin-guide/mm/ksm.rst, mm/ksm.c):
every ``sleep`` trace records the scanner visits the next ``pages_to_scan`` pages in
order (VM by VM, guest-physical page by page), wrapping around to start a new full scan.
For each page not already shared it

1. searches the stable tree (shared pages by content) and merges the page there if an
   identical one exists and has fewer than ``max_page_sharing`` mappings;
2. else compares the page's checksum with the one recorded at its previous visit; if it
   changed (or this is the first visit) the page is volatile this time: the checksum is
   recorded and nothing else happens (KSM's guard against merging pages in use);
3. else searches the unstable tree (pages seen unchanged during this full scan): an
   identical page there becomes a shared page (write-protected) and this page merges
   into it; otherwise the page enters the unstable tree.

The unstable tree is emptied at the end of every full scan. Comparisons are of the full
content (slatframe's content ids), never of checksums alone. With ``use_zero_pages`` a
zero-filled page is mapped to the zero page instead. On static contents it converges
in two full scans: the first records checksums, the second merges.

``ideal`` merges every set of identical pages at every run (the upper bound);
``zero-pages`` merges only zero-filled pages onto the zero page.
"""
from __future__ import annotations

import zlib

import attrs

from slatframe import hookimpl
from slatframe.options import option
from slatframe.records import DedupStrategyRecord


def checksum(content: int) -> int:
    """A 32-bit checksum of a page's content (the kernel uses xxhash of the bytes)."""
    return zlib.crc32(content.to_bytes(8, "little"))


@attrs.frozen
class KsmOptions:
    # defaults from Documentation/admin-guide/mm/ksm.rst: pages_to_scan 100, sleep 20 ms,
    # max_page_sharing 256, use_zero_pages off; sleep is expressed in trace records here
    pages_to_scan: int = option(100, "pages visited per wake-up", min=1)
    sleep: int = option(20_000, "trace records between wake-ups", min=1)
    max_page_sharing: int = option(256, "most mappings of one shared page", min=2)
    use_zero_pages: bool = option(False, "map zero-filled pages to the zero page")


class Ksm:
    def __init__(self, options: KsmOptions, host) -> None:
        self.o = options
        self.host = host
        self.interval = options.sleep
        self.cursor = 0
        self.order: list[tuple[int, int]] = []
        self.unstable: dict[int, tuple[int, int]] = {}
        self.checksums: dict[tuple[int, int], int] = {}
        self.volatile: set[tuple[int, int]] = set()

    def run(self):
        invalidations = []
        host = self.host
        for _ in range(self.o.pages_to_scan):
            if self.cursor >= len(self.order):
                if self.order:
                    host.counters.add("dedup.full_scans")
                self.unstable.clear()
                self.order = list(host.pages())
                self.cursor = 0
                if not self.order:
                    break
            vm, gfn = page = self.order[self.cursor]
            self.cursor += 1
            host.counters.add("dedup.pages_scanned")
            if host.is_shared(vm, gfn):
                continue
            content = host.content(vm, gfn)
            if self.o.use_zero_pages and content == 0:
                invalidations += host.merge(vm, gfn, host.zero())
                continue
            stable = host.by_content.get(content)
            if stable is not None and host.refs[stable] < self.o.max_page_sharing:
                invalidations += host.merge(vm, gfn, stable)
                continue
            old = self.checksums.get(page)
            self.checksums[page] = new = checksum(content)
            if old != new:
                self.volatile.add(page)
                continue
            self.volatile.discard(page)
            other = self.unstable.get(content)
            if other is not None and other != page and not host.is_shared(*other) \
                    and host.content(*other) == content:
                del self.unstable[content]
                frame, inv = host.share(*other)
                invalidations += inv + host.merge(vm, gfn, frame)
            else:
                self.unstable[content] = page
        return invalidations

    def stats(self):
        return {"dedup.pages_unshared": len(self.unstable), "dedup.pages_volatile": len(self.volatile)}


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
