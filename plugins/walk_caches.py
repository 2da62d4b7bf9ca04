"""Walk caches: ``psc`` (paging-structure cache), ``pwc`` (page walk cache), ``nested-tlb``.

- ``psc``: Intel's paging-structure caches (Intel SDM Vol. 3A 4.10.3): one cache per
  entry type, keyed by the linear-address bits that select the entry, holding the
  physical address of the next table; a hit skips the levels above it. Configure one
  per level (PML4E = 4, PDPTE = 3, PDE = 2) and dimension (guest, or host for the
  EPT's own caches).
- ``pwc``: AMD's page walk cache (Bhargava et al., ASPLOS 2008): physically tagged
  copies of non-leaf entries of both dimensions; a hit saves one memory reference.
- ``nested-tlb``: caches gPA -> hPA translations so a hit skips a whole second-level
  walk (Bhargava et al.'s "nested TLB"); ``covers = "tables"`` limits it to guest
  page-table references.

Intel does not publish PSC sizes (SDM 4.10.3 leaves them implementation-specific); the
defaults are ChampSim's (PML4 4 entries, PDPT 8, PD 32; see docs/latency-sources.md).
"""
from __future__ import annotations

from typing import Iterator

import attrs

from slatframe import hookimpl
from slatframe.options import ConfigFacts, PluginChoice, nonempty_name, option
from slatframe.records import WalkCacheRecord
from slatframe.walkcache import DIMENSIONS, EntryCache, PrefixCache, TranslationCache

_CHAMPSIM_PSC_WAYS = {4: 4, 3: 8, 2: 32, 5: 2}


NAME_HELP = "name used in metrics: walk_cache.<name>.hits / .misses"


def _default_or_name(value: str) -> None:
    if value:
        nonempty_name(value)


def _levels(value: tuple[int, ...]) -> None:
    if not value:
        raise ValueError("list at least one non-leaf table level, from 2 (PDE) to 5 (PML5E)")
    if len(set(value)) != len(value):
        raise ValueError("each level may appear once")


def _level_problem(level: int, dimension: str, facts: ConfigFacts) -> str | None:
    """Why a cache of ``level`` entries in ``dimension`` can never hit, or None. (A
    dimension the scheme does not have is allowed, so one config can sweep machine.slat.)"""
    have = facts.levels(dimension)
    if have and level > have:
        return (f"= {level} is not allowed: the {dimension} format has {have} levels, so its non-leaf "
                f"levels are 2 to {have}")
    return None


@attrs.frozen
class PscOptions:
    name: str = option("", NAME_HELP + " (default psc-<dimension>-l<level>)", check=_default_or_name)
    sets: int = option(1, "number of sets (1 = fully associative)", min=1)
    ways: int = option(0, "entries per set (0: ChampSim's size for the level: 2, 4, 8, 32 for levels 5..2)", min=0)
    policy: PluginChoice = option("lru", "replacement policy", plugin="TLB policies")
    level: int = option(2, "entry type cached: 2 PDE, 3 PDPTE, 4 PML4E, 5 PML5E", min=2, max=5)
    dimension: str = option("guest", "walk dimension: guest (or 1D) or host (second level)",
                            choices=("guest", "host"))

    def cache_name(self) -> str:
        return self.name or f"psc-{self.dimension}-l{self.level}"

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        why = _level_problem(self.level, self.dimension, facts)
        if why:
            yield "level", why + "."


@attrs.frozen
class PwcOptions:
    name: str = option("pwc", NAME_HELP, check=nonempty_name)
    sets: int = option(1, "number of sets (1 = fully associative)", min=1)
    ways: int = option(16, "entries per set", min=1)
    policy: PluginChoice = option("lru", "replacement policy", plugin="TLB policies")
    levels: tuple[int, ...] = option([2, 3, 4], "levels whose entries are cached", min=2, max=5,
                                     check_all=_levels)
    dimension: str = option("both", "walk dimensions cached", choices=("guest", "host", "both"))

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        dims = ("guest", "host") if self.dimension == "both" else (self.dimension,)
        for i, level in enumerate(self.levels):
            deepest = max(facts.levels(d) for d in dims)
            if deepest and level > deepest:
                yield f"levels[{i}]", (f"= {level} is not allowed: the formats of the cached dimensions have "
                                       f"at most {deepest} levels, so their non-leaf levels are 2 to {deepest}.")


@attrs.frozen
class NestedTlbOptions:
    name: str = option("ntlb", NAME_HELP, check=nonempty_name)
    sets: int = option(1, "number of sets (1 = fully associative)", min=1)
    ways: int = option(16, "entries per set", min=1)
    policy: PluginChoice = option("lru", "replacement policy", plugin="TLB policies")
    covers: str = option("all", "gPAs cached: all (table entries and data) or tables only",
                         choices=("all", "tables"))


def make_psc(o: PscOptions, ctx):
    ways = o.ways or _CHAMPSIM_PSC_WAYS[o.level]
    return PrefixCache(o.cache_name(), DIMENSIONS[o.dimension], (o.level,), o.sets, ways, o.policy, ctx)


def make_pwc(o: PwcOptions, ctx):
    return EntryCache(o.name, DIMENSIONS[o.dimension], o.levels, o.sets, o.ways, o.policy, ctx)


def make_ntlb(o: NestedTlbOptions, ctx):
    return TranslationCache(o.name, DIMENSIONS["host"], (), o.sets, o.ways, o.policy, ctx,
                            tables_only=o.covers == "tables")


@hookimpl
def slatframe_walk_caches():
    return [
        WalkCacheRecord(name="psc", summary="paging-structure cache (Intel): skips levels by address prefix",
                        factory=make_psc, options=PscOptions),
        WalkCacheRecord(name="pwc", summary="page walk cache (AMD): caches non-leaf entries by physical address",
                        factory=make_pwc, options=PwcOptions),
        WalkCacheRecord(name="nested-tlb", summary="nested TLB: caches gPA->hPA, skipping second-level walks",
                        factory=make_ntlb, options=NestedTlbOptions),
    ]
