"""Event counters of one run: integer counts by dotted name, and gauges (levels such as
the host memory some structure holds) that a warmup restart keeps. Counts are also
charged to scopes (a VM, or a VM's address space) for the per-VM metrics."""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable

#: The scope of work done between trace records (a dedup wake-up): no VM's.
BETWEEN = None

#: Counters that are not sums of events, so they are not charged to scopes.
NOT_ADDITIVE = ("walk.refs_max",)


class Counters:
    """Named integer counters. ``walk_done`` / ``walk_aborted`` keep the walk figures
    consistent across schemes."""

    def __init__(self) -> None:
        self.values: defaultdict[str, int] = defaultdict(int)
        self.levels: dict[str, int] = {}  # gauge -> its level now
        self.scoped: dict[Hashable, defaultdict[str, int]] = {}  # scope -> counts charged to it
        self._scope: Hashable = BETWEEN
        self._mark: dict[str, int] = {}  # the values when the scope last changed

    def add(self, name: str, n: int = 1) -> None:
        self.values[name] += n

    def gauge_add(self, name: str, delta: int) -> None:
        """Move the gauge ``name`` (a level, not an event count) by ``delta``: ``name`` is
        its level now and ``name.peak`` its highest level since the statistics started."""
        level = self.levels[name] = self.levels.get(name, 0) + delta
        values = self.values
        values[name] = level
        if level > values[f"{name}.peak"]:
            values[f"{name}.peak"] = level

    def restart(self) -> None:
        """The statistics start here (after a warmup): counts go to zero; each gauge keeps
        its level, which is also its peak so far."""
        self.values.clear()
        for name, level in self.levels.items():
            if level:
                self.values[name] = self.values[f"{name}.peak"] = level
        self.scoped.clear()
        self._mark = dict(self.values)

    @property
    def scope(self) -> Hashable:
        """The scope that what is counted now is charged to."""
        return self._scope

    def charge(self, scope: Hashable) -> None:
        """What is counted from now on is ``scope``'s (a VM index, or a (VM, asid) pair;
        :data:`BETWEEN` for work between records); what was counted since the last change
        of scope goes to the previous one. The engines call this before each record's
        work, so the scopes' counts add up to the totals."""
        if scope == self._scope:
            return
        self.settle()
        self._scope = scope

    def settle(self) -> None:
        """Charge what was counted since the last change of scope to the current scope."""
        mark, values = self._mark, self.values
        changed = [(name, value - mark.get(name, 0)) for name, value in values.items() if value != mark.get(name, 0)]
        if changed:  # in the values' order, so every scope's metrics come in one order
            own = self.scoped.setdefault(self._scope, defaultdict(int))
            for name, delta in changed:
                own[name] += delta
            self._mark = dict(values)

    def add_scoped(self, scope: Hashable, counts: list[tuple[str, int]]) -> None:
        """Count ``counts`` ((name, n) pairs) and charge them to ``scope`` directly,
        whatever the current scope (the compiled loop's counts of one vCPU and core)."""
        values, mark = self.values, self._mark
        own = self.scoped.setdefault(scope, defaultdict(int))
        for name, n in counts:
            if name in NOT_ADDITIVE:
                values[name] = max(values[name], n)
                mark[name] = values[name]
                continue
            values[name] += n
            own[name] += n
            mark[name] = mark.get(name, 0) + n

    def by_scope(self) -> dict[Hashable, dict[str, int]]:
        """Each scope's event counts (gauges and :data:`NOT_ADDITIVE` counters left out)."""
        self.settle()
        skip = set(NOT_ADDITIVE) | set(self.levels) | {f"{name}.peak" for name in self.levels}
        return {scope: {k: int(v) for k, v in counts.items() if k not in skip}
                for scope, counts in self.scoped.items()}

    def walk_done(self, refs_guest: int, refs_host: int = 0, ad_writes: int = 0) -> None:
        """A hardware walk that produced a translation."""
        refs = refs_guest + refs_host
        v = self.values
        v["walk.ad_writes"] += ad_writes
        v["walks"] += 1
        v["walk.refs"] += refs
        v["walk.refs_guest"] += refs_guest
        v["walk.refs_host"] += refs_host
        if refs > v["walk.refs_max"]:
            v["walk.refs_max"] = refs

    def walk_aborted(self, refs: int, ad_writes: int = 0) -> None:
        """A hardware walk that ended in a fault; it is restarted after the fault is handled."""
        self.values["walk.ad_writes"] += ad_writes
        self.values["walk.aborted"] += 1
        self.values["walk.refs_aborted"] += refs

    def vm_exit(self, reason: str) -> None:
        self.values["vm_exits"] += 1
        self.values[f"vm_exits.{reason}"] += 1

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.values.items())}
