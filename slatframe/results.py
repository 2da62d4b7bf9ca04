"""Run results: metrics with provenance, written atomically as JSON."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class Result:
    """Everything needed to interpret and reproduce one run."""

    name: str
    metrics: dict[str, Any]
    config: dict[str, Any]
    seed: int
    engine: str
    engine_reason: str
    version: str
    wall_time_s: float
    compile_time_s: float = 0.0  #: part of the wall time spent compiling (or loading) the engine
    series: dict[str, Any] = attrs.Factory(dict)  #: figures over time (e.g. dedup per scan interval)
    warnings: list[str] = attrs.Factory(list)  #: what a reader must know (e.g. dedup never woke up)

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), indent=2, sort_keys=False) + "\n"


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename,
    so a crash never leaves a half-written file and an existing file stays intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

