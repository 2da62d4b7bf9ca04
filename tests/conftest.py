from __future__ import annotations

import os

import pytest

# The suite checks what the compiled tier does under "auto"; the first-run shortcut (the
# reference tier while the engine is not compiled yet) is tested on its own, with the
# variable set back.
os.environ["SLATFRAME_FIRST_RUN"] = "compiled"
# Every call of the compiled loop through its entry point checks that its argument types
# are the ones the dispatcher typed at the first call (slatframe.engine.compiled).
os.environ["SLATFRAME_CHECK_ENTRY"] = "1"

from slatframe.registry import Registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The registry of installed plugins (builtins through their entry points)."""
    return Registry()
