"""The compiled engine's cache key follows the content of every kernel it calls: a
kernel's fingerprint changes with its code, with any function it calls (directly or
through a module) and with the global constants numba would freeze into it."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from slatframe.engine.fingerprint import fingerprint


@pytest.fixture(autouse=True)
def from_source(monkeypatch):
    """The tests rewrite modules within a second at the same size (``x + 1`` -> ``x + 2``),
    which the .pyc cache's mtime-and-size check cannot tell apart: import from source."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

KERNELS = '''
from numba import njit
import numpy as np
import {helper_module} as helpers

LIMIT = 3


@njit(cache=True)
def step(x):
    return x + 1


@njit(cache=True)
def kernel(x):
    if x > LIMIT:
        return step(x)
    return helpers.scale(x)
'''

HELPERS = '''
from numba import njit


@njit(cache=True)
def scale(x):
    return x * 2
'''


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def kernel_fingerprint(tmp_path: Path, kernels: str = KERNELS, helpers: str = HELPERS) -> str:
    """Write both files (under the same module names each time) and fingerprint ``kernel``."""
    (tmp_path / "fp_helpers.py").write_text(textwrap.dedent(helpers))
    load(tmp_path / "fp_helpers.py", "fp_helpers")
    path = tmp_path / "fp_kernels.py"
    path.write_text(textwrap.dedent(kernels.replace("{helper_module}", "fp_helpers")))
    return fingerprint(load(path, "fp_kernels").kernel)


def test_same_code_same_fingerprint(tmp_path):
    assert kernel_fingerprint(tmp_path) == kernel_fingerprint(tmp_path)


def test_every_kind_of_edit_changes_the_fingerprint(tmp_path):
    base = kernel_fingerprint(tmp_path)
    edits = {
        "kernel body": (KERNELS.replace("if x > LIMIT", "if x >= LIMIT"), HELPERS),
        "called function": (KERNELS.replace("return x + 1", "return x + 2"), HELPERS),
        "global constant": (KERNELS.replace("LIMIT = 3", "LIMIT = 4"), HELPERS),
        "function in another module": (KERNELS, HELPERS.replace("x * 2", "x * 3")),
    }
    prints = {what: kernel_fingerprint(tmp_path, k, h) for what, (k, h) in edits.items()}
    assert all(fp != base for fp in prints.values()), prints
    assert len(set(prints.values())) == len(edits)


def test_builtin_policies_each_have_their_own_fingerprint(registry):
    """Every builtin policy's kernels (in role order) print differently, even where two
    policies share kernels in other roles (LRU and FIFO)."""
    kernel_sets = [registry.get("TLB policies", name).kernels for name in registry.names("TLB policies")]
    kernel_sets = [k for k in kernel_sets if k is not None]
    prints = {fingerprint(k.hit, k.fill, k.victim, k.invalidate) for k in kernel_sets}
    assert len(kernel_sets) >= 5 and len(prints) == len(kernel_sets)


MORE = '''
import enum
import numpy as np
from numba import njit
import {helper_module} as helpers


class Mode(enum.IntEnum):
    A = 1


MASK = np.int64(3)


@njit(cache=True)
def kernel(x, b=1):
    return (x & MASK) + b + Mode.A + helpers.sub.twice(x)
'''


def test_defaults_numpy_scalars_enums_and_submodules_change_the_fingerprint(tmp_path):
    package = tmp_path / "fp_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from . import sub\n")
    sub = package / "sub.py"
    sys.path.insert(0, str(tmp_path))

    def print_of(kernels: str, twice: str = "x * 2") -> str:
        sub.write_text(f"from numba import njit\n\n@njit\ndef twice(x):\n    return {twice}\n")
        for name in [m for m in sys.modules if m == "fp_pkg" or m.startswith("fp_pkg.")]:
            del sys.modules[name]
        path = tmp_path / "fp_more.py"
        path.write_text(textwrap.dedent(kernels.replace("{helper_module}", "fp_pkg")))
        return fingerprint(load(path, "fp_more").kernel)

    try:
        base = print_of(MORE)
        edits = [print_of(MORE.replace("b=1", "b=2")), print_of(MORE.replace("np.int64(3)", "np.int64(7)")),
                 print_of(MORE.replace("A = 1", "A = 2")), print_of(MORE, twice="x * 3")]
        again = print_of(MORE)
    finally:
        sys.path.remove(str(tmp_path))
    assert again == base
    assert all(fp != base for fp in edits) and len(set(edits)) == len(edits)
