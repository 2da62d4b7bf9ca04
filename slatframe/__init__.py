"""slatframe: models of address translation in virtualized machines.

Plugins implement the hooks in :mod:`slatframe.hookspecs` with the :data:`hookimpl`
marker and register through the ``slatframe`` entry-point group::

    [project.entry-points.slatframe]
    my_policy = "my_package.my_policy"

or, for a one-file experiment, by naming the file in ``[experiment] plugins``.
"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "slatframe"

#: Decorate hook implementations with this marker.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["__version__", "hookimpl", "PROJECT_NAME", "run", "sweep", "load_results", "recost"]


def __getattr__(name: str):
    """The Python API (:mod:`slatframe.api`), imported on first use so that plugins
    importing :data:`hookimpl` do not load the engine."""
    if name in ("run", "sweep", "load_results", "recost"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'slatframe' has no attribute {name!r}")
