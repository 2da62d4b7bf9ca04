"""The builtin radix walk written again as an outside walk plugin with kernels, to show the
walk contract expresses it and to give the compiled loop's own walk an independent route:
walk ``outside-radix`` (the reference :class:`slatframe.walker.Walker`'s logic, and a
kernel built from :mod:`slatframe.engine.walklib`'s walk without walk caches,
``guest_levels`` and ``translated``, which the loop does not use), and SLAT schemes
``native-outside`` and ``ept-outside`` that are ``native`` and ``intel-ept`` walked by it."""
from __future__ import annotations

import numpy as np
from numba import njit

from slatframe import hookimpl
from slatframe.engine import walklib
from slatframe.engine.walklib import F_LEVELS
from slatframe.errors import ConfigError
from slatframe.records import SlatSchemeRecord, WalkKernels, WalkRecord
from slatframe.walker import NO_ROOT, Walker
from slatframe_plugins.native import NativeTranslator
from slatframe_plugins.nested import NestedOptions, NestedTranslator

G, H, P = 0, 1, 2  #: state rows: guest format, host format, (2D?, host A/D, table accesses dirty)
FIRST_VM = 3  #: row FIRST_VM + vm: the VM's second-level root, then the root of each asid


class OutsideRadix(Walker):
    """The reference side: the builtin walk's own logic (its kernel is what is under test)."""


def make_walk(ctx) -> OutsideRadix:
    if ctx.walk_caches:
        raise ConfigError("walk 'outside-radix' consults no walk caches; remove [[walk_caches]].")
    return OutsideRadix(ctx.hw, ctx.memory, ctx.counters, [], ctx.data_caches)


def walk_state(walker: OutsideRadix) -> np.ndarray:
    hw = walker.hw
    roots = hw.guest_roots.array
    n_vms, n_asids = roots.shape
    state = np.full((FIRST_VM + n_vms, max(walklib.F_COLUMNS, 1 + n_asids)), -1, dtype=np.int64)
    state[G, :walklib.F_COLUMNS] = walklib.format_row(hw.guest_format)
    state[H, :walklib.F_COLUMNS] = walklib.format_row(hw.host_format)
    state[P, :3] = (hw.host_format is not None, hw.host_ad, hw.table_access_dirties)
    if hw.host_format is not None:
        state[FIRST_VM:, 0] = np.asarray(hw.host_roots, dtype=np.int64)
    state[FIRST_VM:, 1:1 + n_asids] = roots
    return state


@njit(_nrt=False)
def walk_kernel(slot_of, words, state, dcfg, dctl, dtag, dage, cnt, vm, asid, va, op, out):
    walklib.begin(out)
    row = FIRST_VM + vm
    table = state[row, 1 + asid] if 1 + asid < state.shape[1] else -1
    if table < 0:
        walklib.fault(out, NO_ROOT, va)
        return
    write = op == 1
    two_d, host_ad, dirties, host_root = state[P, 0] != 0, state[P, 1] != 0, state[P, 2] != 0, state[row, 0]
    found, entry, level = walklib.guest_levels(slot_of, words, state, G, H, two_d, host_root, table, va,
                                               state[G, F_LEVELS], write, host_ad, dirties, dcfg, dctl, dtag, dage,
                                               cnt, out)
    if found:
        walklib.translated(slot_of, words, state, G, H, two_d, host_root, entry, level, va, write, host_ad, dirties,
                           dcfg, dctl, dtag, dage, cnt, out)


def walked_by_outside(translator):
    translator.hw.walk = "outside-radix"
    return translator


@hookimpl
def slatframe_walks():
    return [WalkRecord(name="outside-radix", summary="the radix walk, written outside the core",
                       factory=make_walk, kernels=WalkKernels(walk=walk_kernel, state=walk_state))]


@hookimpl
def slatframe_slat_schemes():
    return [
        SlatSchemeRecord(name="native-outside", summary="native, walked by outside-radix",
                         factory=lambda o, ctx: walked_by_outside(NativeTranslator(ctx)), guest_format="x86-64",
                         backs_guest_memory=False),
        SlatSchemeRecord(name="ept-outside", summary="intel-ept, walked by outside-radix",
                         factory=lambda o, ctx: walked_by_outside(NestedTranslator(o, ctx, "ept_violation")),
                         options=NestedOptions, guest_format="x86-64", host_format="ept"),
    ]
