"""Content fingerprints of compiled kernels, so the compiled engine's cache key changes
whenever the code it inlines or calls changes.

numba's on-disk cache checks only the time stamp of the file that defines the function
it compiled, not of the functions that function calls: a loop that inlines a plugin's
kernel would load its old machine code after the kernel was edited. The generated
module therefore carries the fingerprint of every kernel it calls, and the module's
name (its cache key) is the hash of its whole text.

A fingerprint covers a function's bytecode, constants (nested code objects included) and
default arguments, and, recursively, every global it reads that numba would compile in:
other functions and dispatchers, attributes of modules (and their submodules) read
through a global module name, and the values of global constants (numbers, numpy scalars
and arrays, enums, tuples of these: numba freezes them at compile time). Functions numba
compiles through ``@overload`` or ``@intrinsic`` are not followed: the builtin kernels,
the only ones compiled into the loop, use none.
"""
from __future__ import annotations

import enum
import hashlib
import types
from pathlib import Path
from typing import Any

import numpy as np

#: Modules whose contents are the installed libraries', not a plugin's.
LIBRARY_ROOTS = ("numba", "numpy", "math", "cmath", "builtins", "llvmlite")


def _python_function(obj: Any) -> types.FunctionType | None:
    fn = getattr(obj, "py_func", obj)  # a numba dispatcher wraps its Python function
    return fn if isinstance(fn, types.FunctionType) else None


def is_library(obj: Any) -> bool:
    """True for a module, or a function of a module, of the installed libraries."""
    name = (obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)) or ""
    return name.split(".")[0] in LIBRARY_ROOTS


def _code_parts(code: types.CodeType, out: list[bytes]) -> None:
    out += [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_parts(const, out)
        else:
            out.append(repr(const).encode())


def _value_parts(value: Any) -> bytes | None:
    """The bytes of a global constant numba would freeze; None for anything else."""
    if isinstance(value, enum.Enum):
        return repr([(m.name, m.value) for m in type(value)]).encode() + repr(value).encode()
    if isinstance(value, type) and issubclass(value, enum.Enum):
        return repr([(m.name, m.value) for m in value]).encode()
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None))):
        return repr(value).encode()
    if isinstance(value, tuple):
        inner = [_value_parts(v) for v in value]
        return None if None in inner else b"(" + b",".join(inner) + b")"
    if isinstance(value, (np.ndarray, np.generic)):
        return value.dtype.str.encode() + repr(np.shape(value)).encode() + np.asarray(value).tobytes()
    return None


def _module_parts(prefix: str, module: types.ModuleType, names: set[str], parts: list[bytes],
                  todo: list[types.FunctionType], seen: set[int]) -> None:
    """What a function reads through a plugin's helper module (and its submodules)."""
    if id(module) in seen:
        return
    seen.add(id(module))
    for attr in sorted(names & set(vars(module))):
        member = getattr(module, attr)
        called = _python_function(member)
        if called is not None:
            todo.append(called)
        elif isinstance(member, types.ModuleType):
            if not is_library(member):
                _module_parts(f"{prefix}.{attr}", member, names, parts, todo, seen)
        elif (frozen := _value_parts(member)) is not None:
            parts.append(f"{prefix}.{attr}=".encode() + frozen)


def fingerprint(*functions: Any) -> str:
    """A hex digest of ``functions``, in order, each with everything it calls or reads
    (see the module doc)."""
    digest = hashlib.sha256()
    for fn in functions:
        digest.update(_closure_digest(fn).encode())
    return digest.hexdigest()


def source_digest(*functions: Any) -> str:
    """A hex digest of the contents of every source file that defines a function in
    ``functions``' closures (as :func:`fingerprint` follows them) or an ``@intrinsic``
    they read: what an ``@overload`` or ``@intrinsic`` written beside a kernel compiles
    in, which the fingerprint itself does not follow."""
    files: set[str] = set()
    for fn in functions:
        _closure_digest(fn, files)
    digest = hashlib.sha256()
    for name in sorted(files):
        try:
            content = hashlib.sha256(Path(name).read_bytes()).hexdigest()
        except OSError:  # code made from a string: the fingerprint covers its code
            content = "-"
        digest.update(f"{name}\0{content}\n".encode())
    return digest.hexdigest()


def _closure_digest(root: Any, files: set[str] | None = None) -> str:
    """The digest of ``root`` and its closure; the source file of each function visited,
    and of each ``@intrinsic`` read, goes into ``files`` when given."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    fn0 = _python_function(root)
    todo = [fn0] if fn0 is not None else []
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if files is not None:
            files.add(fn.__code__.co_filename)
        parts: list[bytes] = [f"{fn.__module__}.{fn.__qualname__}".encode(),
                              repr(fn.__defaults__).encode(), repr(fn.__kwdefaults__).encode()]
        _code_parts(fn.__code__, parts)
        scope = dict(fn.__globals__)
        if fn.__closure__:
            scope.update(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))
        names = set(code_names(fn.__code__))
        for name in sorted(names):
            if name not in scope:
                continue
            value = scope[name]
            if isinstance(value, types.ModuleType):
                if not is_library(value):  # a plugin's helper module: what it is asked for
                    _module_parts(name, value, names, parts, todo, set())
                continue
            called = _python_function(value)
            if called is not None:
                if not is_library(called):
                    todo.append(called)
                continue
            defined = getattr(value, "_defn", None)  # an @intrinsic: numba compiles its codegen in
            if files is not None and isinstance(defined, types.FunctionType):
                files.add(defined.__code__.co_filename)
            frozen = _value_parts(value)
            if frozen is not None:
                parts.append(f"{name}=".encode() + frozen)
        for part in parts:
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def code_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += code_names(const)
    return names
