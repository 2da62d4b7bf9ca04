"""Content fingerprints of compiled kernels, so the compiled engine's cache key changes
whenever the code it inlines or calls changes.

numba's on-disk cache checks only the time stamp of the file that defines the function
it compiled, not of the functions that function calls: a loop that inlines a plugin's
kernel would load its old machine code after the kernel was edited. The generated
module therefore carries the fingerprint of every kernel it calls, and the module's
name (its cache key) is the hash of its whole text.

A fingerprint covers a function's bytecode and constants (nested code objects
included), and, recursively, every global it reads that numba would compile in: other
functions and dispatchers, attributes of modules read through a global module name, and
the values of global constants (numba freezes those at compile time).
"""
from __future__ import annotations

import hashlib
import types
from typing import Any

import numpy as np

#: Modules whose contents are the installed libraries', not a plugin's.
_LIBRARY_ROOTS = ("numba", "numpy", "math", "cmath", "builtins", "llvmlite")


def _python_function(obj: Any) -> types.FunctionType | None:
    fn = getattr(obj, "py_func", obj)  # a numba dispatcher wraps its Python function
    return fn if isinstance(fn, types.FunctionType) else None


def _is_library(module: types.ModuleType) -> bool:
    return (module.__name__ or "").split(".")[0] in _LIBRARY_ROOTS


def _code_parts(code: types.CodeType, out: list[bytes]) -> None:
    out += [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_parts(const, out)
        else:
            out.append(repr(const).encode())


def _value_parts(value: Any) -> bytes | None:
    """The bytes of a global constant numba would freeze; None for anything else."""
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None))):
        return repr(value).encode()
    if isinstance(value, tuple) and all(_value_parts(v) is not None for v in value):
        return repr(value).encode()
    if isinstance(value, np.ndarray):
        return value.dtype.str.encode() + repr(value.shape).encode() + value.tobytes()
    return None


def fingerprint(*functions: Any) -> str:
    """A hex digest of ``functions``, in order, each with everything it calls or reads
    (see the module doc)."""
    digest = hashlib.sha256()
    for fn in functions:
        digest.update(_closure_digest(fn).encode())
    return digest.hexdigest()


def _closure_digest(root: Any) -> str:
    digest = hashlib.sha256()
    seen: set[int] = set()
    fn0 = _python_function(root)
    todo = [fn0] if fn0 is not None else []
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        parts: list[bytes] = [f"{fn.__module__}.{fn.__qualname__}".encode()]
        _code_parts(fn.__code__, parts)
        scope = dict(fn.__globals__)
        if fn.__closure__:
            scope.update(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))
        names = set(_all_names(fn.__code__))
        for name in sorted(names):
            if name not in scope:
                continue
            value = scope[name]
            if isinstance(value, types.ModuleType):
                if not _is_library(value):  # a plugin's helper module: what it is asked for
                    for attr in sorted(names & set(vars(value))):
                        member = getattr(value, attr)
                        called = _python_function(member)
                        if called is not None:
                            todo.append(called)
                        elif (frozen := _value_parts(member)) is not None:
                            parts.append(f"{name}.{attr}=".encode() + frozen)
                continue
            called = _python_function(value)
            if called is not None:
                if not _is_library_function(called):
                    todo.append(called)
                continue
            frozen = _value_parts(value)
            if frozen is not None:
                parts.append(f"{name}=".encode() + frozen)
        for part in parts:
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def _is_library_function(fn: types.FunctionType) -> bool:
    return (fn.__module__ or "").split(".")[0] in _LIBRARY_ROOTS


def _all_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _all_names(const)
    return names
