"""The ``radix`` walk: 1D over one radix table dimension, or 2D (nested) when the
scheme's hardware view has a host format (:class:`slatframe.walker.Walker`)."""
from __future__ import annotations

from slatframe import hookimpl
from slatframe.records import WalkRecord
from slatframe.walker import radix_walk


@hookimpl
def slatframe_walks():
    return [WalkRecord(name="radix", summary="radix page walk: 1D, or 2D through second-level tables",
                       factory=radix_walk)]
