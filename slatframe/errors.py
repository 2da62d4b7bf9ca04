"""Errors a user can cause; each message is one sentence naming where and what is allowed."""
from __future__ import annotations


class SlatframeError(Exception):
    """Base of every error slatframe reports to a user (the CLI prints it and exits 2)."""


class ConfigError(SlatframeError):
    """A config file, a ``--set`` override or a plugin option is invalid."""


class PluginError(SlatframeError):
    """A plugin could not be loaded or two plugins claim the same name."""


class TraceError(SlatframeError):
    """A trace file is malformed; the message names the file and the line or record."""


class SimulationError(SlatframeError):
    """The simulated machine cannot go on (for example host memory is exhausted)."""
