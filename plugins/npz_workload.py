"""The ``npz`` workload: slatframe's own trace format (:mod:`slatframe.tracefile`)."""
from __future__ import annotations

import attrs

from slatframe import hookimpl
from slatframe.options import option
from slatframe.records import WorkloadRecord
from slatframe.tracefile import read_npz


@attrs.frozen
class NpzOptions:
    path: str = option(help="the .npz trace file, relative to the config file", path=True)


@hookimpl
def slatframe_workloads():
    return [WorkloadRecord(name="npz", summary="slatframe's own .npz trace format (streamed)",
                           factory=lambda options, ctx: read_npz(options.path, ctx.chunk_size),
                           options=NpzOptions, fresh_chunks=True)]
