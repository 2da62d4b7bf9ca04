"""Independent brute-force models used by the tests (no slatframe code)."""
from __future__ import annotations

from collections import OrderedDict

P, PS = 1 << 0, 1 << 7
EPT_RWX = 0b111
FRAME = ((1 << 52) - 1) & ~0xFFF


def decode(read, root: int, va: int, levels: int, present_mask: int, resolve=lambda a: a):
    """Walk x86-style radix tables by hand: (address, page size) or None."""
    table = root
    for level in range(levels, 0, -1):
        shift = 12 + 9 * (level - 1)
        entry = read(resolve(table + ((va >> shift) & 511) * 8))
        if not entry & present_mask:
            return None
        if level == 1 or entry & PS:
            size = 1 << shift
            return (entry & FRAME & ~(size - 1)) | (va & (size - 1)), size
        table = entry & FRAME
    raise AssertionError


def prefixes(page: int, levels: int, leaf_level: int = 1):
    """The (level, index prefix) of each entry a walk for 4K page number ``page`` uses."""
    return [(level, page >> (9 * (level - 1))) for level in range(levels, leaf_level - 1, -1)]


class GuestTablesModel:
    """Counts the entries a guest kernel writes: one per missing table plus the leaf."""

    def __init__(self, levels: int = 4) -> None:
        self.levels = levels
        self.tables: set = set()  # prefixes whose entry points at an existing table / page
        self.mapped: dict[int, bool] = {}  # page -> writable

    def map(self, page: int) -> int:
        return len(self.map_entries(page))

    def map_entries(self, page: int) -> list:
        """The (level, prefix) of each entry mapping ``page`` writes: its missing tables', then its leaf."""
        if page in self.mapped:
            return []
        path = prefixes(page, self.levels)
        written = [p for p in path[:-1] if p not in self.tables] + [path[-1]]
        self.tables.update(path[:-1])
        self.mapped[page] = True
        return written

    def holder(self, entry) -> object:
        """The table holding ``entry``: "root", or the (level, prefix) of the entry pointing at it."""
        level, prefix = entry
        return "root" if level == self.levels else (level + 1, prefix >> 9)

    def unmap(self, page: int) -> int:
        return 1 if self.mapped.pop(page, None) is not None else 0

    def protect(self, page: int) -> int:
        if self.mapped.get(page):
            self.mapped[page] = False
            return 1
        return 0


class LoggingMemory:
    """Host memory whose reads (the walker's page-table references) are logged."""

    def __init__(self, memory):
        self.memory, self.log = memory, []

    def read(self, pa):
        self.log.append(pa)
        return self.memory.read(pa)

    def write(self, pa, value):
        self.memory.write(pa, value)


class BruteForceCaches:
    """Each level a list of per-set OrderedDicts in LRU order; look up L1 first, fill every
    level that missed, evict the least recently used line of the set."""

    def __init__(self, levels):
        self.levels = [(size // (ways * 64), ways) for size, ways in levels]
        self.sets = [[OrderedDict() for _ in range(sets)] for sets, _ in self.levels]

    def access(self, pa):
        line = pa // 64
        served = len(self.levels)
        for k, (sets, _) in enumerate(self.levels):
            found = self.sets[k][line % sets]
            if line in found:
                found.move_to_end(line)
                served = k
                break
        for k in range(served):
            sets, ways = self.levels[k]
            found = self.sets[k][line % sets]
            if len(found) == ways:
                found.popitem(last=False)
            found[line] = True
        return served
