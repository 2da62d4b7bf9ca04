"""The ``walk-trace`` run observer: writes the run's sampled hardware walks, each
reference with its physical address, level and dimension, to an npz or Parquet file
(:mod:`slatframe.walk_record`; docs/walk-traces.md shows how to read one)."""
from __future__ import annotations

import importlib.util
from typing import Any

import attrs

from slatframe import hookimpl
from slatframe.errors import ConfigError
from slatframe.options import option
from slatframe.records import RunObserverRecord
from slatframe.walk_record import WalkSampling, WalkTrace, save_walk_trace


def _suffix(value: str) -> None:
    if not value.endswith((".npz", ".parquet")):
        raise ValueError("the file name ends in .npz or .parquet")


@attrs.frozen
class WalkTraceOptions:
    path: str = option(help="the file to write, relative to the config file: .npz, or .parquet (needs pyarrow)",
                       output=True, check=_suffix)
    limit: int = option(10_000, "walks to record at most", min=1, max=10_000_000)
    every: int = option(1, "record one walk in this many (the first, then every n-th)", min=1)


class WalkTraceObserver:
    """Asks the engine for walks and writes them when the run is over."""

    def __init__(self, options: WalkTraceOptions) -> None:
        if options.path.endswith(".parquet") and importlib.util.find_spec("pyarrow") is None:
            raise ConfigError(f"walk-trace path {options.path!r} asks for Parquet, which needs pyarrow "
                              "(pip install -e \".[parquet]\"); or name an .npz file.")
        self.path = options.path
        self.walk_sampling = WalkSampling(options.limit, options.every)

    def walks(self, trace: WalkTrace) -> None:
        save_walk_trace(trace, self.path)


@hookimpl
def slatframe_run_observers() -> list[Any]:
    return [RunObserverRecord(name="walk-trace", summary="writes sampled walks and their references (npz, Parquet)",
                              factory=WalkTraceObserver, options=WalkTraceOptions)]
