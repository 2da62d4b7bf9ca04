"""Event counters of one run: integer counts by dotted name, and gauges (levels such as
the host memory some structure holds) that a warmup restart keeps."""
from __future__ import annotations

from collections import defaultdict


class Counters:
    """Named integer counters. ``walk_done`` / ``walk_aborted`` keep the walk figures
    consistent across schemes."""

    def __init__(self) -> None:
        self.values: defaultdict[str, int] = defaultdict(int)
        self.levels: dict[str, int] = {}  # gauge -> its level now

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
