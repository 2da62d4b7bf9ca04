from __future__ import annotations

import pytest

from slatframe.registry import Registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The registry of installed plugins (builtins through their entry points)."""
    return Registry()
