"""Separately compiled kernels, called by the compiled loop through their addresses.

A policy whose kernels are not ``inline`` (:class:`slatframe.records.PolicyKernels`), a
walk plugin's kernels and walk caches' kernels are compiled apart
(:mod:`slatframe.engine.plugin_kernels`: from their current code, or from numba's disk
cache under a key of that code's content). The loop receives the machine-code
addresses of the compiled kernels in ``pk``, an int64 array of one row per role (hit,
fill, invalidate, victim) and :data:`SLOTS` columns, and calls column ``pid - inline
policies`` with numba's own calling convention (:func:`call_update`,
:func:`call_victim`). Because ``pk`` is an ordinary array, the loop is compiled once per
installation and loaded from numba's cache for any set of plugins, and a call costs what
a call of a non-inlined numba function costs. The call goes through a small function with
LLVM's ``preserve_most`` calling convention (:func:`_thunk`), so the loop keeps its state
in registers across the call sites in every policy dispatch: a call site the builtin
policies never take costs them nothing. Only what the loop compiles in lives here (the
loop module's key holds this file's hash).
"""
from __future__ import annotations

from llvmlite import binding as ll, ir
from numba import types
from numba.core import cgutils
from numba.core.callconv import excinfo_t
from numba.extending import intrinsic


#: Separately compiled policies one run can use (a run may use fewer).
SLOTS = 4

STATE = types.int64[:, :, ::1]
UPDATE_ARGS = (STATE, types.int64, types.int64, types.int64)  #: hit, fill, invalidate: (state, i, s, w)
VICTIM_ARGS = (STATE, types.int64, types.int64)  #: victim: (state, i, s) -> way
ROLES = ("hit", "fill", "invalidate", "victim")
SIGNATURES = tuple(types.none(*UPDATE_ARGS) if role != "victim" else types.int64(*VICTIM_ARGS) for role in ROLES)
#: a walk kernel (slatframe.records.WalkKernels): (slot_of, words, state, dcfg, dctl, dtag,
#: dage, cnt, vm, asid, va, op, out)
WALK_ARGS = (types.int64[::1], types.int64[:, ::1], types.int64[:, ::1], types.int64[:, ::1], types.int64[::1],
             types.int64[:, :, ::1], types.int64[:, :, ::1], types.int64[::1], types.int64, types.int64,
             types.int64, types.int64, types.int64[::1])
WALK_SIGNATURE = types.none(*WALK_ARGS)
#: a start cache's kernels (slatframe.records.StartCacheKernels)
CACHE_STATE = types.int64[:, :, ::1]
FMTS = types.int64[:, ::1]
PROBE_ARGS = (CACHE_STATE, types.int64, types.int64, types.int64, types.int64, types.int64, FMTS)
LEARN_ARGS = (CACHE_STATE, types.int64, types.int64, types.int64, types.int64, types.int64, types.int64,
              types.int64, FMTS)
FORGET_ARGS = (CACHE_STATE, types.int64, types.int64, types.int64, types.int64)
#: a walk cache's kernels at the entry point (slatframe.records.EntryCacheKernels)
EPROBE_ARGS = (CACHE_STATE, types.int64, types.int64, types.int64, types.int64, types.int64, types.int64, FMTS)
EFILL_ARGS = (CACHE_STATE, types.int64, types.int64, types.int64, types.int64, types.int64, types.int64,
              types.int64, FMTS)
#: ... and at the host point (slatframe.records.HostCacheKernels)
HPROBE_ARGS = (CACHE_STATE, types.int64, types.int64, types.int64, types.int64, types.int64)
HFILL_ARGS = (CACHE_STATE, types.int64, types.int64, types.int64, types.int64, types.int64)
#: the demand pager (slatframe/engine/pager_kernel.py ``serve``): (slot_of, words, fmts, roots,
#: host_roots, pg, pvm, plog, hlog, cnt, vm, asid, address, kind, two) -> 1 if it served the fault
PAGER_ARGS = (types.int64[::1], types.int64[:, ::1], types.int64[:, ::1], types.int64[:, ::1], types.int64[::1],
              types.int64[::1], types.int64[:, ::1], types.int64[:, ::1], types.int64[:, ::1], types.int64[::1],
              types.int64, types.int64, types.int64, types.int64, types.int64)
#: rows of the plugin walk caches' address table ``ck``: each point's probe, learn or
#: fill, and invalidate kernels
CACHE_ROLES = {"start": ("probe", "learn", "forget"), "entry": ("eprobe", "efill", "forget"),
               "host": ("hprobe", "hfill", "forget")}
#: every role's signature
ROLE_SIGNATURES = {**dict(zip(ROLES, SIGNATURES)), "walk": WALK_SIGNATURE, "probe": types.int64(*PROBE_ARGS),
                   "learn": types.none(*LEARN_ARGS), "forget": types.none(*FORGET_ARGS),
                   "eprobe": types.int64(*EPROBE_ARGS), "efill": types.none(*EFILL_ARGS),
                   "hprobe": types.int64(*HPROBE_ARGS), "hfill": types.none(*HFILL_ARGS),
                   "pager": types.int64(*PAGER_ARGS)}


#: Calling convention of the small function the loop calls a kernel through: the callee
#: saves every register it uses, so the call site, which the loop carries in each policy
#: dispatch, makes the compiler spill nothing around it, and the builtin policies' paths
#: run as fast as in a loop with no call by address. LLVM has it on these machines only.
THUNK_CCONV = "preserve_mostcc" if ll.get_process_triple().split("-")[0] in ("x86_64", "aarch64", "arm64") else ""


def _thunk(module: ir.Module, fnty: ir.FunctionType, role: str) -> ir.Function:
    """``module``'s cold, never inlined function that calls the numba-compiled function
    at its third argument (an address) with the others."""
    name = f"slatframe_call_{role}"
    found = module.globals.get(name)
    if found is not None:
        return found
    thunk = ir.Function(module, ir.FunctionType(fnty.return_type, [*fnty.args[:2], ir.IntType(64), *fnty.args[2:]]),
                        name)
    thunk.linkage = "internal"
    thunk.calling_convention = THUNK_CCONV
    thunk.attributes.add("noinline")
    thunk.attributes.add("cold")
    builder = ir.IRBuilder(thunk.append_basic_block("entry"))
    args = list(thunk.args)
    builder.ret(builder.call(builder.inttoptr(args[2], fnty.as_pointer()), args[:2] + args[3:]))
    return thunk


def _call_address(context, builder, restype, argtypes, address, args, role):
    """Call the numba-compiled function at ``address`` (numba's calling convention)
    through :func:`_thunk`, propagating an exception it raises."""
    call_conv = context.call_conv
    fnty = call_conv.get_function_type(restype, argtypes)
    retty = call_conv.get_return_type(restype).pointee
    retptr = cgutils.alloca_once(builder, retty)
    builder.store(cgutils.get_null_value(retty), retptr)
    excinfo = cgutils.alloca_once(builder, ir.PointerType(excinfo_t), name="excinfo")
    packed = call_conv._get_arg_packer(argtypes).as_arguments(builder, args)
    code = builder.call(_thunk(builder.module, fnty, role), [retptr, excinfo, address, *packed])
    status = call_conv._get_return_status(builder, code, builder.load(excinfo))
    with builder.if_then(status.is_error, likely=False):
        call_conv.return_status_propagate(builder, status)
    return context.get_returned_value(builder, restype, builder.load(retptr))


@intrinsic
def call_update(typingctx, address, state, i, s, w):
    """``kernel(state, i, s, w)`` for the hit, fill or invalidate kernel at ``address``."""
    def codegen(context, builder, signature, args):
        _call_address(context, builder, types.none, UPDATE_ARGS, args[0], args[1:], "update")
        return context.get_dummy_value()
    return types.none(types.int64, *UPDATE_ARGS), codegen


@intrinsic
def call_victim(typingctx, address, state, i, s):
    """``kernel(state, i, s)`` for the victim kernel at ``address``."""
    def codegen(context, builder, signature, args):
        return _call_address(context, builder, types.int64, VICTIM_ARGS, args[0], args[1:], "victim")
    return types.int64(types.int64, *VICTIM_ARGS), codegen


@intrinsic
def call_walk(typingctx, address, slot_of, words, state, dcfg, dctl, dtag, dage, cnt, vm, asid, va, op, out):
    """``kernel(slot_of, words, state, dcfg, dctl, dtag, dage, cnt, vm, asid, va, op, out)``
    for the walk kernel at ``address``."""
    def codegen(context, builder, signature, args):
        _call_address(context, builder, types.none, WALK_ARGS, args[0], args[1:], "walk")
        return context.get_dummy_value()
    return types.none(types.int64, *WALK_ARGS), codegen


@intrinsic
def call_probe(typingctx, address, state, j, dim, vm, asid, va, fmts):
    """A start cache's ``probe`` kernel at ``address``."""
    def codegen(context, builder, signature, args):
        return _call_address(context, builder, types.int64, PROBE_ARGS, args[0], args[1:], "probe")
    return types.int64(types.int64, *PROBE_ARGS), codegen


@intrinsic
def call_learn(typingctx, address, state, j, dim, vm, asid, va, level, table, fmts):
    """A start cache's ``learn`` kernel at ``address``."""
    def codegen(context, builder, signature, args):
        _call_address(context, builder, types.none, LEARN_ARGS, args[0], args[1:], "learn")
        return context.get_dummy_value()
    return types.none(types.int64, *LEARN_ARGS), codegen


@intrinsic
def call_forget(typingctx, address, state, j, scope, vm, asid):
    """A start cache's ``invalidate`` kernel at ``address``."""
    def codegen(context, builder, signature, args):
        _call_address(context, builder, types.none, FORGET_ARGS, args[0], args[1:], "forget")
        return context.get_dummy_value()
    return types.none(types.int64, *FORGET_ARGS), codegen


@intrinsic
def call_eprobe(typingctx, address, state, j, dim, vm, asid, level, pa, fmts):
    """An entry-point cache's ``probe`` kernel at ``address``."""
    def codegen(context, builder, signature, args):
        return _call_address(context, builder, types.int64, EPROBE_ARGS, args[0], args[1:], "eprobe")
    return types.int64(types.int64, *EPROBE_ARGS), codegen


@intrinsic
def call_efill(typingctx, address, state, j, dim, vm, asid, level, pa, entry, fmts):
    """An entry-point cache's ``fill`` kernel at ``address``."""
    def codegen(context, builder, signature, args):
        _call_address(context, builder, types.none, EFILL_ARGS, args[0], args[1:], "efill")
        return context.get_dummy_value()
    return types.none(types.int64, *EFILL_ARGS), codegen


@intrinsic
def call_hprobe(typingctx, address, state, j, vm, gpa, write, need_dirty):
    """A host-point cache's ``probe`` kernel at ``address``."""
    def codegen(context, builder, signature, args):
        return _call_address(context, builder, types.int64, HPROBE_ARGS, args[0], args[1:], "hprobe")
    return types.int64(types.int64, *HPROBE_ARGS), codegen


@intrinsic
def call_hfill(typingctx, address, state, j, vm, gpa, table_access, value):
    """A host-point cache's ``fill`` kernel at ``address``."""
    def codegen(context, builder, signature, args):
        _call_address(context, builder, types.none, HFILL_ARGS, args[0], args[1:], "hfill")
        return context.get_dummy_value()
    return types.none(types.int64, *HFILL_ARGS), codegen


@intrinsic
def call_pager(typingctx, address, slot_of, words, fmts, roots, host_roots, pg, pvm, plog, hlog, cnt, vm, asid,
               fault_address, kind, two):
    """The demand pager's ``serve`` at ``address``: 1 if it served the fault."""
    def codegen(context, builder, signature, args):
        return _call_address(context, builder, types.int64, PAGER_ARGS, args[0], args[1:], "pager")
    return types.int64(types.int64, *PAGER_ARGS), codegen
