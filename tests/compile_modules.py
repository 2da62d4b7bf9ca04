"""Compile one of the engine modules the test suite uses, holding its compile lock
(slatframe.engine.codegen.compiling): ``python tests/compile_modules.py generic|shaped|exact``
prints ``held`` once it holds the lock, then compiles the module (or loads it from numba's
cache). conftest.py starts one per module when the whole suite runs, so that the cores
compile different modules at once and the test processes that need one wait for it."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def module_of(which: str):
    """(machine, registry, shape) of the generic, shaped or exact module the tests use."""
    from slatframe.counters import Counters
    from slatframe.machine import build_machine
    from slatframe.registry import Registry

    if which == "generic":
        from slatframe.testing import build, tiny_config

        config, registry = build(tiny_config(), Registry())
        shape = None
    elif which == "shaped":
        from test_shaped_loop import SHAPE as shape, shaped_config

        config, registry = shaped_config(Registry())
    else:
        from test_exact_loop import EXACT as shape, exact_config

        config, registry = exact_config()
    return build_machine(config, registry, Counters()), registry, shape


def main(which: str) -> None:
    from slatframe.engine.codegen import compiling, module_name
    from slatframe.engine.compiled import compile_loop

    machine, registry, shape = module_of(which)
    with compiling(module_name(registry, shape)):
        print("held", flush=True)
        compile_loop(machine, registry, shape)


if __name__ == "__main__":
    main(sys.argv[1])
