"""Walks as data: the hardware walks of a run, sampled for run observers that ask for them.

An observer that has a ``walk_sampling`` attribute (a :class:`WalkSampling`) and a
``walks(trace)`` method gets, after the last chunk, a :class:`WalkTrace` of the first
``limit`` walks, or of one walk in ``every``, counted over every walk the hardware
started (done or aborted by a fault), warmup included. Both tiers record the same
walks: the reference walker through a :class:`WalkRecorder`, the compiled loop into
preallocated buffers (:mod:`slatframe.engine.compiled`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import attrs
import numpy as np

from .errors import ConfigError
from .results import replacing

#: One row per sampled walk. ``fault``: 0 for a walk that produced a translation, else the
#: fault kind (slatframe.walker); ``result``: the translated page's host-physical address,
#: or the faulting address; ``page_shift``: log2 of the translation's page size (0 on a
#: fault); ``first_ref`` / ``refs``: this walk's rows of the references table;
#: ``cache_hits`` / ``cache_misses``: walk-cache probes that hit / missed during it.
WALK_DTYPE = np.dtype([("record", "<i8"), ("vm", "<u2"), ("asid", "<u2"), ("va", "<u8"), ("op", "u1"),
                       ("fault", "u1"), ("result", "<u8"), ("page_shift", "u1"), ("first_ref", "<i8"),
                       ("refs", "<i4"), ("cache_hits", "<i4"), ("cache_misses", "<i4")])

#: One row per page-table entry a sampled walk read, in walk order: ``pa`` the entry's
#: physical address (host-physical; guest-physical never appears: a 2D walk's guest
#: entries are read at their translated address), ``level`` the table level (1 = leaf
#: tables), ``dim`` 0 for the guest (or only) dimension, 1 for the second level;
#: ``cached``: an entry-point walk cache (a page-walk cache) served it, so no memory
#: reference was made.
REF_DTYPE = np.dtype([("walk", "<i8"), ("pa", "<u8"), ("level", "u1"), ("dim", "u1"), ("cached", "?")])


@attrs.frozen
class WalkSampling:
    """Which walks to record: walk number n (from 0) when n % every == 0, up to ``limit``."""

    limit: int
    every: int = 1

    def takes(self, seen: int, recorded: int) -> bool:
        return recorded < self.limit and seen % self.every == 0


@attrs.frozen
class WalkTrace:
    """The recorded walks (:data:`WALK_DTYPE`) and their references (:data:`REF_DTYPE`);
    ``seen``: walks started in the whole run."""

    walks: np.ndarray
    refs: np.ndarray
    seen: int
    sampling: WalkSampling

    def references(self, i: int) -> np.ndarray:
        """The references of walk row ``i``."""
        row = self.walks[i]
        return self.refs[row["first_ref"]:row["first_ref"] + row["refs"]]


def requested_sampling(observers: Iterable[Any]) -> WalkSampling | None:
    """The one sampling the run's observers ask for (None: no walk is recorded)."""
    asked = {obs.walk_sampling for obs in observers if getattr(obs, "walk_sampling", None) is not None}
    if len(asked) > 1:
        raise ConfigError(f"experiment.observers ask for walks sampled in {len(asked)} different ways "
                          f"({', '.join(sorted(map(repr, asked)))}); a run records one sample of walks, so give "
                          "every walk-recording observer the same limit and every.")
    return asked.pop() if asked else None


class WalkRecorder:
    """Collects the sampled walks of the reference walker (and the compiled tier's
    drained buffers), in walk order."""

    def __init__(self, sampling: WalkSampling) -> None:
        self.sampling = sampling
        self.record = 0  #: the trace record being run (set by the engine)
        self.seen = 0
        self._walks: list[tuple] = []
        self._refs: list[tuple] = []
        self._open: list | None = None  # the walk being recorded

    def begin(self, vm: int, asid: int, va: int, op: int, hits: int, misses: int) -> None:
        """A walk starts (``hits``/``misses``: the walk caches' totals so far)."""
        if self.sampling.takes(self.seen, len(self._walks)):
            self._open = [self.record, vm, asid, va, op, 0, 0, 0, len(self._refs), 0, hits, misses]
        self.seen += 1

    def ref(self, pa: int, level: int, dim: int, cached: bool) -> None:
        if self._open is not None:
            self._refs.append((len(self._walks), pa, level, dim, cached))

    def end(self, fault: int, result: int, page_shift: int, hits: int, misses: int) -> None:
        """The walk ends with a translation (``fault`` 0) or a fault."""
        row = self._open
        if row is None:
            return
        row[5:8] = fault, result, page_shift
        row[9] = len(self._refs) - row[8]
        row[10], row[11] = hits - row[10], misses - row[11]
        self._walks.append(tuple(row))
        self._open = None

    def extend(self, walks: np.ndarray, refs: np.ndarray, seen: int) -> None:
        """Add walks recorded elsewhere (rows as :data:`WALK_DTYPE`, references as
        :data:`REF_DTYPE` numbered from 0 for the first of ``walks``)."""
        offset, first = len(self._walks), len(self._refs)
        for row in walks.tolist():
            row = list(row)
            row[8] += first
            self._walks.append(tuple(row))
        for walk, pa, level, dim, cached in refs.tolist():
            self._refs.append((walk + offset, pa, level, dim, cached))
        self.seen = seen

    def trace(self) -> WalkTrace:
        return WalkTrace(np.array(self._walks, dtype=WALK_DTYPE), np.array(self._refs, dtype=REF_DTYPE),
                         self.seen, self.sampling)


def save_walk_trace(trace: WalkTrace, path: str | Path) -> None:
    """Write ``trace`` to ``path``: ``.npz`` (arrays ``walks``, ``refs``, ``seen``,
    ``limit``, ``every``) or ``.parquet`` (one row per walk, its references as list
    columns ``ref_pa``, ``ref_level``, ``ref_dim``, ``ref_cached``; needs pyarrow).
    Written to a temporary file and renamed, so an earlier file stays intact on error."""
    path = Path(path)
    with replacing(path) as tmp:
        if path.suffix == ".parquet":
            _write_parquet(trace, tmp)
        else:
            with open(tmp, "wb") as fh:
                np.savez(fh, walks=trace.walks, refs=trace.refs, seen=np.int64(trace.seen),
                         limit=np.int64(trace.sampling.limit), every=np.int64(trace.sampling.every))


def _write_parquet(trace: WalkTrace, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    walks, refs = trace.walks, trace.refs
    offsets = np.concatenate([[0], np.cumsum(walks["refs"], dtype=np.int64)]).astype(np.int32)
    columns = {name: pa.array(walks[name]) for name in WALK_DTYPE.names if name != "first_ref"}
    for name in ("pa", "level", "dim", "cached"):
        columns[f"ref_{name}"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(refs[name]))
    table = pa.table(columns).replace_schema_metadata(
        {"seen": str(trace.seen), "limit": str(trace.sampling.limit), "every": str(trace.sampling.every)})
    pq.write_table(table, tmp)


def load_walk_trace(path: str | Path) -> WalkTrace:
    """Read a file :func:`save_walk_trace` wrote (``.npz`` or ``.parquet``)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = {k.decode(): int(v) for k, v in (table.schema.metadata or {}).items()}
        walks = np.zeros(table.num_rows, dtype=WALK_DTYPE)
        for name in WALK_DTYPE.names:
            if name != "first_ref":
                walks[name] = table.column(name).to_numpy()
        walks["first_ref"] = np.concatenate([[0], np.cumsum(walks["refs"])[:-1]]) if len(walks) else []
        refs = np.zeros(int(walks["refs"].sum()), dtype=REF_DTYPE)
        refs["walk"] = np.repeat(np.arange(len(walks)), walks["refs"])
        for name in ("pa", "level", "dim", "cached"):
            refs[name] = table.column(f"ref_{name}").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return WalkTrace(walks, refs, meta["seen"], WalkSampling(meta["limit"], meta["every"]))
    with np.load(path, allow_pickle=False) as data:
        return WalkTrace(data["walks"], data["refs"], int(data["seen"]),
                         WalkSampling(int(data["limit"]), int(data["every"])))
