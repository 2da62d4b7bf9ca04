"""A naive model of Linux KSM, written from mm/ksm.c (v6.18) without slatframe, to check
slatframe's ``ksm`` against an independent count.

Memory is a list of mms (VMs), each a dict address -> the physical page it maps (or
ZERO, the zero page). Kernel names are kept: rmap_item, stable node (with its hlist of
items and, for equal contents, a chain of dups, newest first), unstable tree (emptied at
each full scan's start), ksm_pages_shared / _sharing / _unshared kept incrementally as
stable_tree_append, remove_rmap_item_from_tree and remove_node_from_stable_tree do; and
pages_volatile = rmap_items - shared - sharing - unshared (ksm.rst, pages_volatile_show).
"""
from __future__ import annotations

from typing import Hashable


class PhysPage:
    def __init__(self, content: Hashable) -> None:
        self.content = content
        self.node: StableNode | None = None  # set when this is a KSM page
        self.mapcount = 1


ZERO = PhysPage(b"zero")  # the zero page; never a KSM page


class StableNode:
    def __init__(self, kpage: PhysPage) -> None:
        self.kpage = kpage
        self.hlist: list[RmapItem] = []  # index 0 is the hlist head


class RmapItem:
    def __init__(self, mm: int, addr: int) -> None:
        self.mm, self.addr = mm, addr
        self.oldchecksum = None  # zeroed on allocation: no real page checksums to it
        self.age = 0
        self.remaining_skips = 0
        self.head: StableNode | None = None
        self.unstable = False


def skip_age(age: int) -> int:
    return 1 if age <= 3 else 2 if age <= 5 else 4 if age <= 8 else 8


class NaiveKsm:
    def __init__(self, mms: list[dict[int, Hashable]], zero: Hashable, pages_to_scan: int = 100,
                 max_page_sharing: int = 256, use_zero_pages: bool = False, smart_scan: bool = True) -> None:
        self.slots = [{addr: PhysPage(c) for addr, c in mm.items()} for mm in mms]
        self.zero = zero
        self.pages_to_scan, self.max_page_sharing = pages_to_scan, max_page_sharing
        self.use_zero_pages, self.smart_scan = use_zero_pages, smart_scan
        self.items: dict[tuple[int, int], RmapItem] = {}
        self.chains: dict[Hashable, list[StableNode]] = {}
        self.unstable_tree: dict[Hashable, RmapItem] = {}
        self.shared = self.sharing = self.unshared = 0
        self.seqnr = 0
        self.cursor: tuple[int, int] | None = None  # None: at ksm_mm_head

    # -- the guest --------------------------------------------------------------------
    def write(self, mm: int, addr: int, content: Hashable) -> None:
        page = self.slots[mm][addr]
        if page is ZERO or page.node is not None:  # write-protected: copy on write
            page.mapcount -= 1
            self.slots[mm][addr] = PhysPage(content)
        else:
            page.content = content

    # -- ksmd -------------------------------------------------------------------------
    def wake(self) -> None:
        for _ in range(self.pages_to_scan):  # ksm_do_scan
            got = self.scan_get_next_rmap_item()
            if got is None:
                return
            self.cmp_and_merge_page(*got)

    def scan_get_next_rmap_item(self):
        if self.cursor is None:
            self.unstable_tree = {}
            self.cursor = (0, 0)
        mm, addr = self.cursor
        while mm < len(self.slots):
            for a in sorted(x for x in self.slots[mm] if x >= addr):
                page = self.slots[mm][a]
                if page is ZERO:  # vm_normal_page() is NULL: passed; get_next_rmap_item frees its item
                    item = self.items.pop((mm, a), None)
                    if item is not None:
                        self.remove_rmap_item_from_tree(item)
                    continue
                item = self.items.setdefault((mm, a), RmapItem(mm, a))
                self.cursor = (mm, a + 1)
                if self.should_skip_rmap_item(page, item):
                    continue
                return page, item
            mm, addr = mm + 1, 0
        self.cursor = None
        self.seqnr += 1
        return None

    def should_skip_rmap_item(self, page: PhysPage, item: RmapItem) -> bool:
        if not self.smart_scan or page.node is not None:
            return False
        age = item.age
        if age != 255:
            item.age += 1
        if age < 3:
            return False
        if not item.remaining_skips:
            item.remaining_skips = skip_age(age)
            return False
        item.remaining_skips -= 1
        self.remove_rmap_item_from_tree(item)
        return True

    def cmp_and_merge_page(self, page: PhysPage, item: RmapItem) -> None:
        stable_node = page.node
        if stable_node is not None:
            if item.head is stable_node:
                return
        else:
            self.remove_rmap_item_from_tree(item)
            checksum = page.content
            if item.oldchecksum != checksum:
                item.oldchecksum = checksum
                return
            if self.use_zero_pages and checksum == self.zero:  # try_to_merge_with_zero_page
                page.mapcount -= 1
                self.slots[item.mm][item.addr] = ZERO
                return
        node = self.stable_tree_search(page)
        self.remove_rmap_item_from_tree(item)
        if node is not None:  # try_to_merge_with_ksm_page + stable_tree_append
            page.mapcount -= 1
            node.kpage.mapcount += 1
            self.slots[item.mm][item.addr] = node.kpage
            self.stable_tree_append(item, node)
            return
        tree_item = self.unstable_tree.get(page.content)
        tree_page = self.slots[tree_item.mm][tree_item.addr] if tree_item else None
        if tree_item is None or tree_page.content != page.content or tree_page.node is not None:
            self.unstable_tree[page.content] = item  # unstable_tree_search_insert: inserted
            item.unstable = True
            self.unshared += 1
            return
        # try_to_merge_two_pages: this page becomes the KSM page; the tree page is replaced
        tree_page.mapcount -= 1
        page.mapcount += 1
        self.slots[tree_item.mm][tree_item.addr] = page
        self.remove_rmap_item_from_tree(tree_item)
        node = page.node = StableNode(page)  # stable_tree_insert: a dup in the chain if full ones exist
        self.chains.setdefault(page.content, []).insert(0, node)
        self.stable_tree_append(tree_item, node)
        self.stable_tree_append(item, node)

    def stable_tree_search(self, page: PhysPage) -> StableNode | None:
        chain = self.chains.get(page.content, [])
        for node in list(chain):
            if node.kpage.mapcount == 0:  # ksm_get_folio() fails: stale
                self.remove_node_from_stable_tree(node)
        for node in chain:  # stable_node_dup without the timed prune: first candidate
            if len(node.hlist) < self.max_page_sharing:
                return node
        return None

    def stable_tree_append(self, item: RmapItem, node: StableNode) -> None:
        if node.hlist:
            self.sharing += 1
        else:
            self.shared += 1
        node.hlist.insert(0, item)
        item.head = node

    def remove_rmap_item_from_tree(self, item: RmapItem) -> None:
        if item.head is not None:
            node = item.head
            if node.kpage.mapcount == 0:
                self.remove_node_from_stable_tree(node)
                return
            node.hlist.remove(item)
            if node.hlist:
                self.sharing -= 1
            else:
                self.shared -= 1
            item.head = None
        elif item.unstable:
            if self.unstable_tree.get(self._content_key(item)) is item:
                del self.unstable_tree[self._content_key(item)]
            self.unshared -= 1
            item.unstable = False

    def _content_key(self, item: RmapItem) -> Hashable:
        return next((c for c, i in self.unstable_tree.items() if i is item), None)

    def remove_node_from_stable_tree(self, node: StableNode) -> None:
        for i, item in enumerate(node.hlist):
            if i < len(node.hlist) - 1:
                self.sharing -= 1
            else:
                self.shared -= 1
            item.head = None
        node.hlist = []
        self.chains[node.kpage.content].remove(node)

    def stats(self) -> dict[str, int]:
        return {"dedup.pages_shared": self.shared, "dedup.pages_sharing": self.sharing,
                "dedup.pages_unshared": self.unshared,
                "dedup.pages_volatile": len(self.items) - self.shared - self.sharing - self.unshared,
                "dedup.full_scans": self.seqnr}
