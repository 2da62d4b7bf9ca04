"""The compiled engine: the per-access loop of ``loop.py`` in numba over numpy state.

The machine is built exactly as for the reference tier (same software objects, same
memory); this module lays the hardware state (TLB arrays, walk caches, policy states)
out in int64 arrays and drives the jitted loop, which stops for the software side
(faults, control records, switches) and resumes after it.

State layout (``loop.py`` names the columns):

- TLB: ``tcfg[L, 10]`` (per configured level: sets, ways, side: 1 instruction / 2 data /
  3 both, policy id, number of page sizes, up to 4 page-size shifts, set mask: sets - 1
  or -1 when sets is not a power of two), ``lrow[cores, L]`` (the row of each core's
  level in the state arrays: core 0's levels are rows 0 to L-1, then each further core's
  private levels; a shared level has core 0's row), ``ttag[R, S, loop.row_words(W)]``
  (a row per structure, a set's fields side by side for its own ways: virtual page
  numbers; ctx = vm<<24 | asid<<8 | shift, -1 when invalid; value: the page frame packed
  with its shift, writable and dirty bits, see ``loop.pack``; next way of its index chain;
  then the index of sets wider than 16 ways, see ``loop.sa_find``), ``inclusion`` (0
  non-inclusive, 1 inclusive, 2 exclusive).
- walk caches: ``wcfg``, one int64 array (its layout in ``loop.py``, before ``L_PROBE``):
  the hardware's flags (2D?, host A/D, table accesses dirty, several cores), then per walk
  cache (n) its row (kind: 1 prefix / 2 entry / 3 translation / 4, 5, 6 a
  plugin's kind at the start, entry or host point; levels (prefix: a level mask; entry
  kinds: guest levels in bits 0-7, host levels in bits 8-15); dimension mask; sets; ways;
  policy id (a plugin's kind: its slot in ``ck``); gPAs served (host kinds: bit 0 the
  data's, bit 1 table entries'); set mask), nine lists of caches (probe guest/host,
  prefix caches guest/host, entry-point caches guest/host, host-point caches, plugins'
  start caches guest/host) and the start point's probe order per dimension (cache, level);
  ``wtag[cores, n, ...]``
  (each core's, as ``ttag``, ctx = dim<<40 | vm<<24 | asid<<8 | level; value: a table
  address, an entry, or a nested TLB's packed frame);
  ``cstate[cores, n, R, C]`` the plugins' kinds' states (each core's, padded) and ``ck[3, 4]`` their probe,
  learn or fill, and invalidate kernels' addresses.
- a walk plugin's kernel: its address ``wk`` (0: the loop's radix walk) and ``wstate``.
- ``pstate[n, R, C]``: every structure's policy state, padded: TLB row r is structure r,
  walk cache j of core c is structure R + c * n + j (R TLB rows, n walk caches).
- hardware view: ``fmts[2, 21]`` (guest, host format: levels, present mask, leaf flag,
  frame mask, write, accessed, dirty flags, leaf mask, log2 of the entry size, then the
  index shift and index mask of each level), ``roots[V, A]`` and ``host_roots[V]``; memory: ``slot_of`` and ``words``.
- data caches: ``dcfg``, ``dctl``, ``dtag``, ``dage`` (:meth:`slatframe.datacache.DataCaches.arrays`).
- ``memo[MEMO_ROWS + 1, 4]``: the walk memo of the loop's ``plain_walk`` (one call's walks
  of a page, counted again without reading the tables; see ``loop.py``).
- ``occ[n, C]``: each structure's occupancy, indexed as ``pstate`` (valid entries in all
  and per VM, bitmaps of its valid slots; ``loop.py``, before ``sa_find``), which fills
  and drops keep and invalidations read, so they visit valid entries only.
- counts: ``cnt[rows, counters]``, a row per (machine-wide vCPU, core) on a machine of
  several cores or vCPUs (row ``vcpu * cores + core``), else one row; ``names`` names the
  columns. Python charges each row to its scope when the loop returns.
- placement: ``place = (vcpu, core, first, vcpus, home)``: the scheduler's arrays (each
  record's vCPU within its VM, and its core), read in place, or, when ``home`` (the core
  of each machine-wide vCPU) is not empty, the default rule (``slatframe.smp.Placed``);
  each VM's first machine-wide vCPU and its vCPUs; ``core_of[vcpus]`` (the core each vCPU
  last ran on, kept by the loop for coherence).
"""
from __future__ import annotations

import os
import re
from typing import Any

import attrs
import numpy as np

from ..datacache import no_data_caches
from .demand import LoopPager
from ..setassoc import set_mask
from ..errors import ConfigError, PluginError
from ..machine import Machine
from ..records import EntryCacheKernels, HostCacheKernels, StartCacheKernels, WalkKernels
from ..trace import TRACE_DTYPE
from ..translation import Invalidation
from ..walk_record import REF_DTYPE, WALK_DTYPE, WalkRecorder, WalkSampling, WalkTrace
from ..walkcache import (ENTRY as ENTRY_POINT, GUEST, HOST, HOST_POINT, START as START_POINT, EntryCache, PrefixCache,
                         TranslationCache)
from ..paging import PageTableFormat
from ..walker import FAULT_LIMIT, Fault, RootTable, Walker, stuck
from . import kernel_slots, plugin_kernels
from .codegen import compiling, load_kernels, policy_ids, slot_ids
from .shape import Shape, shape_of
from .kernel_slots import SLOTS
from .reference import NO_HPA
from .walklib import F_LEVELS, format_row
from ..coherence import Coherence
from ..smp import first_vcpus, is_smp
from .software import SoftwareSide

#: Check the loop's argument types at every call (the test suite sets it; see CompiledEngine._loop).
CHECK_ENTRY = os.environ.get("SLATFRAME_CHECK_ENTRY") == "1"

SCOPES = {"page": 0, "asid": 1, "vm": 2, "all": 3}
MAX_LEVELS = 6  #: levels of a format the loop's ``fmts`` rows hold
INCLUSION = {"non-inclusive": 0, "inclusive": 1, "exclusive": 2}
SIDES = {"instruction": 1, "data": 2, "unified": 3}
KINDS = {PrefixCache: 1, EntryCache: 2, TranslationCache: 3}
START, ENTRY_PLUGIN, HOST_PLUGIN = 4, 5, 6  #: loop.START, ENTRY_PLUGIN, HOST_PLUGIN: a plugin's kind at each point
FIXED_COUNTERS = ("accesses", "walks", "walk.refs", "walk.refs_guest", "walk.refs_host",
                  "walk.refs_max", "walk.aborted", "walk.refs_aborted", "walk.ad_writes",
                  "walk.on_hit", "tlb.splintered_fills")


def loop_chunk(chunk: np.ndarray) -> np.ndarray:
    """``chunk`` as the loop reads it: a writable C-contiguous 1-D array of TRACE_DTYPE (a
    copy only when it is not one already), so the loop's signature never changes."""
    if (chunk.dtype == TRACE_DTYPE and chunk.ndim == 1 and chunk.flags.c_contiguous
            and chunk.flags.writeable and chunk.flags.aligned):
        return chunk
    fixed = np.zeros(len(chunk), dtype=TRACE_DTYPE)
    for name in TRACE_DTYPE.names:
        fixed[name] = chunk[name]
    return fixed


def _compile_error(exc: BaseException) -> bool:
    """Did numba fail to compile (type or lower) something, rather than a kernel raise?"""
    from numba.core.errors import NumbaError
    return isinstance(exc, NumbaError)


def _plugin(registry: Any, point: str, name: str) -> str:
    provided = registry.records.get(point, {}).get(name)
    return f" (from {provided.plugin})" if provided is not None else ""


def _policy_refusals(machine: Machine, registry: Any) -> list[str]:
    config = machine.context.config
    policies = [(f"tlb.levels[{i}]", lv.policy.name) for i, lv in enumerate(config.tlb.levels)]
    for i, choice in enumerate(config.walk_caches):
        policy = getattr(choice.options, "policy", None)
        if policy is not None:
            policies.append((f"walk_caches[{i}]", policy.name))
    why = [f"TLB policy {name!r}{_plugin(registry, 'TLB policies', name)} ({where}) has no compiled kernel"
           for where, name in policies if registry.get("TLB policies", name).kernels is None]
    apart = slot_ids(registry, [name for _, name in policies])
    if len(apart) > SLOTS:
        why.append(f"the run uses {len(apart)} separately compiled TLB policies ({', '.join(map(repr, apart))}), "
                   f"and the compiled tier holds at most {SLOTS}")
    return why


def redefined_methods(cls: type) -> list[str]:
    """The methods and properties of :class:`PageTableFormat` that its subclass ``cls``
    defines again (a subclass that only sets field defaults or adds methods has none)."""
    own = {name for name, value in vars(PageTableFormat).items()
           if not name.startswith("__") and (callable(value) or isinstance(value, property))}
    below = cls.__mro__[:cls.__mro__.index(PageTableFormat)]
    return sorted({name for klass in below for name in vars(klass) if name in own})


def _format_refusal(fmt: Any, role: str) -> str | None:
    """Why the loop cannot decode ``fmt`` exactly (it knows :class:`PageTableFormat`'s
    geometry and mask codec, with masks below bit 63), or None."""
    if fmt is None:
        return None
    if not isinstance(fmt, PageTableFormat):
        return (f"{role} page-table format {getattr(fmt, 'name', '?')!r} is a {type(fmt).__name__}, not a "
                "PageTableFormat: the compiled walk decodes only PageTableFormat's own geometry and masks")
    redefined = redefined_methods(type(fmt))
    if redefined:
        return (f"{role} page-table format {fmt.name!r} is a {type(fmt).__name__}, a subclass of PageTableFormat "
                f"that defines {', '.join(redefined)} again; the compiled walk decodes entries with "
                "PageTableFormat's own geometry and masks, not with a subclass's methods")
    masks = (fmt.present_mask, fmt.leaf_flag, fmt.frame_mask, fmt.write_flag, fmt.accessed_flag, fmt.dirty_flag,
             fmt.leaf_mask)
    if any(not 0 <= m < 1 << 63 for m in masks) or not 1 <= fmt.levels <= MAX_LEVELS or fmt.va_bits > 63:
        return (f"{role} page-table format {fmt.name!r} has {fmt.levels} levels, {fmt.va_bits}-bit addresses or "
                f"a mask outside bits 0-62; the compiled walk holds at most {MAX_LEVELS} levels and 63-bit "
                "addresses and masks")
    return None


def walk_kernels(machine: Machine, registry: Any) -> WalkKernels | None:
    """The kernels of the run's walk plugin, or None (the builtin radix walk, or a walk
    without kernels)."""
    if type(machine.walker) is Walker:
        return None
    name = getattr(machine.translator.hw, "walk", None)
    record = registry.records.get("walks", {}).get(name)
    return getattr(record.record, "kernels", None) if record is not None else None


def compiled_refusals(machine: Machine, registry: Any) -> list[str]:
    """Why the compiled tier cannot run ``machine`` exactly as the reference tier would
    (empty when it can). The loop implements the core's radix walk over
    :class:`PageTableFormat` tables, the core walk-cache kinds and TLB policies that have
    kernels; anything else on the per-access path is refused here, never approximated."""
    why = _policy_refusals(machine, registry)
    hw = machine.walker.hw if type(machine.walker) is Walker else machine.translator.hw
    kernels = walk_kernels(machine, registry)
    if type(machine.walker) is not Walker:
        name = getattr(hw, "walk", "?")
        if kernels is None:
            why.append(f"walk {name!r}{_plugin(registry, 'walks', name)} has no compiled form (its record has "
                       "no kernels)")
        elif machine.walk_caches:
            why.append(f"walk {name!r}{_plugin(registry, 'walks', name)} has kernels, which consult no walk "
                       f"caches, and the run has {len(machine.walk_caches)}")
    elif type(hw.guest_roots) is not RootTable:
        why.append(f"the SLAT scheme's hardware view keeps its roots in a {type(hw.guest_roots).__name__}, "
                   "not a slatframe.walker.RootTable")
    for fmt, role in ((hw.guest_format, "first-dimension"), (hw.host_format, "second-level")):
        refusal = _format_refusal(fmt, role)
        if refusal:
            why.append(refusal)
    for i, lv in enumerate(machine.context.config.tlb.levels):
        if len(lv.page_sizes) > 4:
            why.append(f"tlb.levels[{i}] holds {len(lv.page_sizes)} page sizes, and a compiled TLB level at most 4")
    started = 0
    for cache, choice in zip(machine.walk_caches, machine.context.config.walk_caches):
        if type(cache) in KINDS:
            continue
        kernels = cache_kernels(cache, choice, registry)
        if kernels is None:
            why.append(f"walk cache {getattr(cache, 'name', '?')!r}{_plugin(registry, 'walk caches', choice.name)} "
                       f"is a {type(cache).__name__} at the {getattr(cache, 'point', '?')!r} point; the compiled "
                       "tier runs the core kinds PrefixCache, EntryCache and TranslationCache themselves (not "
                       "subclasses) and plugins' own kinds whose record has kernels for their point "
                       "(StartCacheKernels, EntryCacheKernels, HostCacheKernels)")
        started += kernels is not None
    if started > SLOTS:
        why.append(f"the run has {started} walk caches of plugins' kinds with kernels, and the compiled tier holds "
                   f"at most {SLOTS}")
    return why


#: each point's kernels record and its kind in the loop
POINT_KERNELS = {START_POINT: (StartCacheKernels, START), ENTRY_POINT: (EntryCacheKernels, ENTRY_PLUGIN),
                 HOST_POINT: (HostCacheKernels, HOST_PLUGIN)}


def cache_kernels(cache: Any, choice: Any, registry: Any) -> Any:
    """The kernels of a walk cache of a plugin's own kind, if its record has them for the
    cache's point; else None."""
    point = getattr(cache, "point", None)
    if type(cache) in KINDS or point not in POINT_KERNELS:
        return None
    kernels = getattr(registry.get("walk caches", choice.name), "kernels", None)
    return kernels if isinstance(kernels, POINT_KERNELS[point][0]) else None


def _plugin_levels(cache: Any) -> int:
    """An entry-point cache's levels covered, as the loop's W_LEVELS (guest bits 0-7, host
    bits 8-15); 0 at other points."""
    if cache.point != ENTRY_POINT:
        return 0
    return sum(1 << (level + 8 * dim) for dim in (GUEST, HOST) for level in range(1, MAX_LEVELS + 1)
               if cache.covers(dim, level))


def _serves(cache: Any) -> int:
    """A host-point cache's gPAs served, as the loop's W_SERVES (bit 0 the data's, bit 1
    the guest table entries'); 0 at other points."""
    if getattr(cache, "point", None) != HOST_POINT:
        return 0
    return (1 if cache.serves(False) else 0) | (2 if cache.serves(True) else 0)


def plugin_array(make: Any, arg: Any, label: str, what: str) -> np.ndarray:
    """``make(arg)`` of a plugin's kernels (``what`` names it in errors), checked: an
    int64 2D C-contiguous array."""
    try:
        array = make(arg)
    except Exception as exc:
        raise PluginError(f"{label}: its kernels' {what} raised {type(exc).__name__}: {exc}.") from None
    if not (isinstance(array, np.ndarray) and array.dtype == np.int64 and array.ndim == 2
            and array.flags.c_contiguous):
        raise PluginError(f"{label}: its kernels' {what} returned {type(array).__name__}"
                          f"{getattr(array, 'shape', '')}, not an int64 2D C-contiguous numpy array.")
    return array


def compile_loop(machine: Machine, registry: Any, shape: Shape | None) -> None:
    """Compile the loop for ``shape`` (None: the generic loop), or load it from numba's
    cache, without running an access. The loop's argument types are the same for every
    config of a registry (one compiled module serves them all) and an empty chunk looks
    nothing up, so the engine of any machine of ``registry`` compiles any shape's loop:
    builds ahead of use do it on a tiny config (slatframe.engine.prebuild)."""
    engine = CompiledEngine(machine, registry)
    engine.k = load_kernels(registry, shape)
    engine.warm_up()


def tag_array(k: Any, ways: list[int], sets: int) -> np.ndarray:
    """Tags of arrays of ``ways[i]`` ways and up to ``sets`` sets, every way invalid
    (ctx -1; wide sets: empty chains, no valid way); layout in ``loop.py``."""
    tag = np.zeros((len(ways), sets, k.row_words(max(ways + [1]))), dtype=np.int64)
    for i, w in enumerate(ways):
        tag[i, :, k.CTX * w:(k.CTX + 1) * w] = -1
        if w > k.INDEX_MIN_WAYS:
            tag[i, :, k.FIELDS * w:k.FIELDS * w + k.BUCKETS] = -1
    return line_aligned(tag)


def walk_config(k: Any, flags: tuple, rows: np.ndarray, probe: np.ndarray, lists: np.ndarray,
                counts: np.ndarray) -> np.ndarray:
    """``wcfg`` (layout in ``loop.py``, before ``L_PROBE``) from the hardware's ``flags``
    (H_*), the walk caches' ``rows[n, W_COLUMNS]``, the start point's ``probe[2, P, 2]``
    order and the ``lists[9, n]`` of ``counts[9]`` caches."""
    n, probes = rows.shape[0], probe.shape[1]
    lists_at = k.G_ROWS + rows.size
    probe_at = lists_at + lists.size
    wcfg = np.zeros(probe_at + probe.size, dtype=np.int64)
    wcfg[k.H_2D:k.H_SMP + 1] = flags
    wcfg[k.G_COUNT:k.G_COUNT + len(counts)] = counts
    wcfg[k.G_CACHES], wcfg[k.G_LISTS], wcfg[k.G_PROBE], wcfg[k.G_PROBES] = n, lists_at, probe_at, probes
    wcfg[k.G_ROWS:lists_at] = rows.reshape(-1)
    wcfg[lists_at:probe_at] = lists.reshape(-1)
    wcfg[probe_at:] = probe.reshape(-1)
    return wcfg


def walk_rows(k: Any, wcfg: np.ndarray) -> np.ndarray:
    """The walk caches' rows of ``wcfg`` (a view: cache j's field W_* at ``[j, W_*]``)."""
    n = int(wcfg[k.G_CACHES])
    return wcfg[k.G_ROWS:k.G_ROWS + n * k.W_COLUMNS].reshape(n, k.W_COLUMNS)


def occupancy(k: Any, slots: list[int], vms: int) -> np.ndarray:
    """``occ`` (layout in ``loop.py``) for structures of ``slots`` slots each (sets x
    ways) and ``vms`` VMs: no valid entry, each bitmap level a zero word past its last bit."""
    rows = []
    for n in slots:
        words = []
        for _ in range(3):
            n = (n >> 6) + 1  # the words of this level, which are the bits of the next
            words.append(n)
        header = np.zeros(k.O_VMS + vms, dtype=np.int64)
        starts = np.cumsum([len(header)] + words[:-1])
        header[k.O_BITS:k.O_BITS + 3] = starts
        header[k.O_TOP] = words[2]
        rows.append((header, sum(words)))
    occ = np.zeros((len(rows), max(len(h) + n for h, n in rows)), dtype=np.int64)
    for row, (header, _) in zip(occ, rows):
        row[:len(header)] = header
    return line_aligned(occ)


def type_key(value: Any) -> Any:
    """What numba's type of an argument depends on: an array's dtype, dimensions, layout,
    alignment and writability; whether a Python int is an int64 (any other int is its own
    key); else the value's class. Equal keys, equal numba types (``SLATFRAME_CHECK_ENTRY``)."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        return (value.dtype, value.ndim, flags.c_contiguous, flags.f_contiguous, flags.aligned, flags.writeable)
    if type(value) is int:
        return (int, True) if -(1 << 63) <= value < 1 << 63 else (int, value)
    if type(value) is tuple:
        return tuple(map(type_key, value))
    return type(value)


def line_aligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts on a 64-byte cache line, so that
    rows padded to whole lines (``tag_array``, ``_pad``) start on one."""
    buf = np.empty(a.size + 64 // a.itemsize, dtype=a.dtype)
    at = (-buf.ctypes.data % 64) // a.itemsize
    out = buf[at:at + a.size].reshape(a.shape)
    out[...] = a
    return out


def _pad(states: list[np.ndarray]) -> np.ndarray:
    """The states as one array, each row padded to whole 64-byte lines."""
    rows = max([s.shape[0] for s in states] + [1])
    cols = -(-max([s.shape[1] for s in states] + [1]) // 8) * 8
    out = np.zeros((max(1, len(states)), rows, cols), dtype=np.int64)
    for i, s in enumerate(states):
        out[i, : s.shape[0], : s.shape[1]] = s
    return line_aligned(out)


class CompiledEngine:
    """Runs chunks through one :class:`Machine` with the jitted loop."""

    name = "compiled"
    #: The loop runs without the GIL: the next chunk is read meanwhile (slatframe.prefetch).
    reads_ahead = True

    def __init__(self, machine: Machine, registry: Any, shape: Shape | None = None) -> None:
        """``shape``: run the loop compiled for this TLB shape (it must be the config's:
        :func:`slatframe.engine.shape.shape_of`); None: the generic loop."""
        why = compiled_refusals(machine, registry)
        if why:
            raise ConfigError(f"the compiled engine cannot run this config: {'; '.join(why)}.")
        self.machine = machine
        ctx = machine.context
        config = ctx.config
        if shape is not None and shape != shape_of(config, shape.exact)[0]:
            theirs, why = shape_of(config, shape.exact)
            raise ValueError(f"a loop {'compiled' if shape.exact else 'shaped'} for {shape.describe()} cannot run "
                             f"this config's TLB ({why or theirs.describe()})")
        self.shape = shape
        used = [lv.policy.name for lv in config.tlb.levels] + [c.policy.name for c in machine.walk_caches
                                                               if type(c) in KINDS]
        apart = slot_ids(registry, used)
        ids = {**policy_ids(registry), **apart}
        self.k = load_kernels(registry, shape)
        self.pk = plugin_kernels.tables([(f"TLB policy {name!r}{_plugin(registry, 'TLB policies', name)}",
                                        registry.get("TLB policies", name).kernels) for name in apart])
        cores = config.machine.cores
        self.smp = is_smp(config)
        vcpus = [vm.vcpus for vm in ctx.vms]
        self.first = np.asarray(first_vcpus(vcpus), dtype=np.int64)  # each VM's first machine-wide vCPU
        self.software = SoftwareSide(machine.translator, ctx.counters.values, vcpus, config.tlb.tagged,
                                     self.invalidate, cores, self.flush_core)
        states = []
        levels = config.tlb.levels
        L = len(levels)
        S = max(lv.sets for lv in levels)
        tcfg = np.zeros((L, 10), dtype=np.int64)
        for i, lv in enumerate(levels):
            sizes = sorted(lv.page_sizes)
            tcfg[i, :5] = (lv.sets, lv.ways, SIDES[lv.side], ids[lv.policy.name], len(sizes))
            tcfg[i, 5:5 + len(sizes)] = [size.bit_length() - 1 for size in sizes]
            tcfg[i, 9] = set_mask(lv.sets)
        self.core_contexts = [attrs.evolve(ctx, core=n) if n else ctx for n in range(cores)]  # as build_machine's
        self.lrow = np.zeros((cores, L), dtype=np.int64)  # each core's TLB levels' rows (loop.py, run)
        row_levels = []
        for n, own in enumerate(self.core_contexts):
            for i, lv in enumerate(levels):
                if n and lv.shared:  # one structure for every core: core 0's
                    self.lrow[n, i] = self.lrow[0, i]
                    continue
                self.lrow[n, i] = len(row_levels)
                row_levels.append(i)
                record = registry.get("TLB policies", lv.policy.name)
                states.append(record.kernels.init(lv.policy.options, lv.sets, lv.ways,
                                                  own.structure_rng(f"tlb.{lv.name}")))
        self.private_rows = [[int(self.lrow[n, i]) for i, lv in enumerate(levels) if not lv.shared]
                             for n in range(cores)]
        k = self.k
        if shape is not None and shape.exact:  # the module's policy numbers must be this engine's
            rows = [tuple(tcfg[:, col].tolist()) for col in (k.T_SETS, k.T_WAYS, k.T_PID)]
            if rows != [k.SHAPE_SETS, k.SHAPE_WAYS, k.SHAPE_PIDS]:
                raise RuntimeError(f"the exact loop's sets, ways and policy numbers "
                                   f"{[k.SHAPE_SETS, k.SHAPE_WAYS, k.SHAPE_PIDS]} are not this engine's {rows}")
        ttag = tag_array(self.k, [levels[i].ways for i in row_levels], S)
        self.tlb = (tcfg, ttag, INCLUSION[config.tlb.inclusion])
        caches = self._walk_caches(machine, registry, ids, states)
        self.pstate = _pad(states)
        core = [c.sets * c.ways if type(c) in KINDS else 0 for c in machine.walk_caches] or [0]
        self.occ = occupancy(k, [levels[i].sets * levels[i].ways for i in row_levels] + core * cores, len(ctx.vms))
        hw = self.hw = getattr(machine.walker, "hw", machine.translator.hw)  # what the walk walks
        kernels = walk_kernels(machine, registry)
        self.wk, self.wstate = 0, None
        if kernels is not None:
            label = f"walk {hw.walk!r}{_plugin(registry, 'walks', hw.walk)}"
            self.wk = plugin_kernels.kernel_address(kernels.walk, "walk", label)
            self.wstate = lambda: plugin_array(kernels.state, machine.walker, label, "state function")
        self.names = list(FIXED_COUNTERS)
        for lv in levels:
            self.names += [f"tlb.{lv.name}.hits", f"tlb.{lv.name}.misses"]
        for cache in machine.walk_caches:
            self.names += [cache.hits, cache.misses]
        if machine.data_caches is not None:
            self.dc = machine.data_caches.arrays()
            self.dc[1][2] = len(self.names)
            self.names += machine.data_caches.spec.counter_names()
        else:
            self.dc = no_data_caches()
        self.pager = LoopPager(self.k, machine, self.smp, kernels is not None)
        self.pager.columns(len(self.names))
        self.names += self.pager.names()
        self.cnt = np.zeros((len(self.software.vm_of) * cores if self.smp else 1, len(self.names)), dtype=np.int64)
        none = self.none = np.zeros(0, dtype=np.int64)
        self.vcpus = np.asarray(vcpus, dtype=np.int64)  # each VM's vCPUs
        self.no_place = (none, none, self.first, self.vcpus, none)  # the loop's record placement, unused with one core
        self.written = np.zeros(1, dtype=np.int64)  # next content id of a written page
        self.track_writes = machine.dedup is not None
        self.per_asid = config.experiment.per_asid
        self.paths = np.zeros((2, L), dtype=np.int64)
        self.npaths = np.zeros(2, dtype=np.int64)
        for level, lv in enumerate(levels):
            for row in range(2):  # row 0: instruction fetches, row 1: data accesses
                if SIDES[lv.side] & (1 << row):
                    self.paths[row, self.npaths[row]] = level
                    self.npaths[row] += 1
        self.out = np.zeros(self.k.WT_END, dtype=np.int64)  # the walk's result, then the walk recording's
        self.fmts = np.stack([format_row(hw.guest_format), format_row(hw.host_format)])
        flags = (1 if hw.host_format is not None else 0, 1 if hw.host_ad else 0, 1 if hw.table_access_dirties else 0,
                 1 if self.smp else 0)
        rows, self.wtag, probe, lists, counts = caches
        self.wcfg = walk_config(k, flags, rows, probe, lists, counts)
        self.no_host_roots = np.zeros(1, dtype=np.int64)
        self.no_guest_roots = self.no_host_roots[None]
        self._words: tuple[Any, Any] = (None, None)  # host.words and its int64 view, made once per array
        self.no_walk_state = np.zeros((1, 1), dtype=np.int64)
        self.memo = np.zeros((self.k.MEMO_ROWS + 1, 4), dtype=np.int64)  # the loop's walk memo (loop.py)
        self.records = 0  # trace records run so far
        self._entry: Any = None  # the loop's compiled entry point, after the first call
        self._signature: tuple = ()
        self._checked: set = set()  # argument type keys already checked against _signature
        self.recorder: WalkRecorder | None = None  # walk recording: its control columns and rows are in out
        self.coherence: Coherence | None = None
        self.core_of = np.zeros(1, dtype=np.int64)
        if self.smp:
            scheme = registry.get("SLAT schemes", config.machine.slat.name)
            self.coherence = self.software.coherence = Coherence(
                machine, self.software, scheme.backs_guest_memory, self.flush_core, self._private_entries)
            self.core_of = self.coherence.core_of

    def _walk_caches(self, machine: Machine, registry: Any, ids: dict, states: list) -> tuple:
        """The walk caches' arrays (core 0's caches give the layout; every core has its
        own states and tags); appends each core's policy states to ``states``."""
        caches = machine.walk_caches
        n = max(1, len(caches))
        core = [c for c in caches if type(c) in KINDS]
        S = max([c.sets for c in core] + [1])
        ctx = self.machine.context
        wcfg = np.zeros((n, 8), dtype=np.int64)
        ck = np.zeros((3, SLOTS), dtype=np.int64)
        for j, (c, choice) in enumerate(zip(caches, ctx.config.walk_caches)):
            kernels = cache_kernels(c, choice, registry)
            if kernels is not None:  # a plugin's kind: its kernels by address, its own state
                slot = int(np.count_nonzero(ck[0]))
                label = f"walk cache {c.name!r}{_plugin(registry, 'walk caches', choice.name)}"
                roles = kernel_slots.CACHE_ROLES[c.point]
                for row, (role, fn) in enumerate(zip(roles, (kernels.probe, getattr(kernels, "learn", None) or
                                                             getattr(kernels, "fill", None), kernels.invalidate))):
                    ck[row, slot] = plugin_kernels.kernel_address(fn, role, label)
                wcfg[j] = (POINT_KERNELS[c.point][1], _plugin_levels(c), 0, 0, 0, slot, _serves(c), 0)
                continue
            levels = sum(1 << lv for lv in c.levels)
            wcfg[j] = (KINDS[type(c)], levels | levels << 8 if type(c) is EntryCache else levels,
                       sum(1 << d for d in c.dimensions), c.sets, c.ways, ids[c.policy.name], _serves(c),
                       set_mask(c.sets))
        cstates = []  # each core's plugin kinds' states
        for own, on_core in zip(self.core_contexts, machine.cores):
            cstates.append([])
            for c, choice in zip(on_core.walk_caches, ctx.config.walk_caches):
                kernels = cache_kernels(c, choice, registry)
                if kernels is not None:
                    label = f"walk cache {c.name!r}{_plugin(registry, 'walk caches', choice.name)}"
                    cstates[-1].append(plugin_array(kernels.init, c, label, "init"))
                    states.append(np.zeros((1, 1), dtype=np.int64))
                    continue
                cstates[-1].append(np.zeros((1, 1), dtype=np.int64))
                record = registry.get("TLB policies", c.policy.name)
                states.append(record.kernels.init(c.policy.options, c.sets, c.ways,
                                                  own.structure_rng(f"walk_cache.{c.name}")))
        walker = self.machine.walker
        wprobe = np.zeros((2, max(1, 8 * len(caches)), 2), dtype=np.int64)
        wlists = np.zeros((9, n), dtype=np.int64)
        wcount = np.zeros(9, dtype=np.int64)
        def listed(row: int, cache: Any) -> None:
            wlists[row, wcount[row]] = caches.index(cache)
            wcount[row] += 1

        for dim in (GUEST, HOST) if caches else ():  # (with caches the walk is the radix Walker)
            for cache in walker.start[dim]:  # probed in the walker's order; learn lists by kind
                core = type(cache) in KINDS
                wprobe[dim, wcount[dim]] = (caches.index(cache), cache.level if core else 0)
                wcount[dim] += 1
                listed(2 + dim if core else 7 + dim, cache)
            for cache in walker.entry[dim]:
                listed(4 + dim, cache)
        for cache in walker.ntlb if caches else ():
            listed(6, cache)
        cores = len(self.core_contexts)
        wtag = tag_array(self.k, [c.ways if type(c) in KINDS else 0 for c in caches or [None]] * cores, S)
        wtag = wtag.reshape((cores, n) + wtag.shape[1:])  # (a view: still line-aligned)
        padded = _pad([state for per_core in cstates for state in per_core or [np.zeros((1, 1), dtype=np.int64)]])
        self.cstate, self.ck = padded.reshape((cores, n) + padded.shape[1:]), ck
        return wcfg, wtag, wprobe, wlists, wcount

    def invalidate(self, inv: Invalidation) -> None:
        """Carry out an invalidation the software side returned: on a machine of several
        vCPUs through coherence (as :meth:`slatframe.machine.Machine.invalidate`), else on
        the one core, and not at all when it is not ``local``."""
        if self.coherence is not None:
            self.coherence.invalidate(inv)
        elif inv.local:  # (one vCPU: the walk in progress replaces its entry)
            self.flush_core(inv, 0)

    def flush_core(self, inv: Invalidation, core: int) -> None:
        """Carry out ``inv`` in one core's TLB levels (and shared ones) and walk caches."""
        scope = SCOPES[inv.scope]
        tcfg, ttag = self.tlb[0], self.tlb[1]
        self.k.tlb_invalidate(tcfg, ttag, self.pstate, self.pk, self.occ, self.lrow[core], scope, inv.vm, inv.asid,
                              inv.va)
        if self.machine.walk_caches:
            wcfg = self.wcfg
            self.k.wc_invalidate(wcfg, self.wtag[core], self.pstate, self.pk, self.occ, self.cstate[core], self.ck,
                                 len(ttag) + core * int(wcfg[self.k.G_CACHES]), scope, inv.vm, inv.asid)

    def _private_entries(self) -> list[int]:
        """Each core's valid entries in its private TLB levels (for coherence's counts)."""
        valid = self.occ[:, self.k.O_VALID]
        return [int(valid[rows].sum()) for rows in self.private_rows]

    def settle(self) -> None:
        """As :meth:`slatframe.engine.reference.ReferenceEngine.settle`."""
        if self.coherence is not None:
            self.coherence.settle()

    def between(self) -> None:
        """As :meth:`slatframe.engine.reference.ReferenceEngine.between`."""
        if self.coherence is not None:
            self.coherence.between()

    def record_walks(self, sampling: WalkSampling) -> None:
        """Record the walks ``sampling`` takes (:mod:`slatframe.walk_record`)."""
        k, out = self.k, self.out
        self.recorder = WalkRecorder(sampling)
        out[k.WT_ON], out[k.WT_EVERY], out[k.WT_LIMIT] = 1, sampling.every, sampling.limit
        out[k.WT_CACHES] = len(self.machine.walk_caches)
        out[k.WT_WALKS_AT] = out[k.WT_REFS_AT] = k.WT_END  # no room yet
        guest = int(self.fmts[0, F_LEVELS])
        host = int(self.fmts[1, F_LEVELS]) if self.wcfg[self.k.H_2D] else 0
        self.refs_per_walk = guest + (guest + 1) * host  # each entry a walk reads, cached or not

    def walk_trace(self) -> WalkTrace:
        self.recorder.seen = int(self.out[self.k.WT_SEEN])  # walks go on after the last one recorded
        return self.recorder.trace()

    def _room_for_walks(self, records: int) -> None:
        """Buffers for the walks of one loop call: at most one per record, and an aborted one."""
        k, out = self.k, self.out
        rows = min(records + 1, int(out[k.WT_LIMIT] - out[k.WT_RECORDED]))
        if (out[k.WT_REFS_AT] - out[k.WT_WALKS_AT]) // k.WT_WALK_COLUMNS < rows:
            grown = np.zeros(k.WT_END + rows * (k.WT_WALK_COLUMNS + 2 * self.refs_per_walk), dtype=np.int64)
            grown[:k.WT_END] = out[:k.WT_END]
            grown[k.WT_WALKS_AT] = k.WT_END
            grown[k.WT_REFS_AT] = k.WT_END + rows * k.WT_WALK_COLUMNS
            self.out = grown

    def _drain_walks(self) -> None:
        """Hand the walks the loop recorded since the last call to the recorder."""
        k, out = self.k, self.out
        rows, nrefs = int(out[k.WT_ROWS]), int(out[k.WT_REFS])
        at = int(out[k.WT_WALKS_AT])
        walk_rows = out[at:at + rows * k.WT_WALK_COLUMNS].reshape(rows, k.WT_WALK_COLUMNS)
        at = int(out[k.WT_REFS_AT])
        ref_rows = out[at:at + 2 * nrefs].reshape(nrefs, 2)
        walks = np.zeros(rows, dtype=WALK_DTYPE)
        for column, name in enumerate(WALK_DTYPE.names):
            walks[name] = walk_rows[:, column]
        refs = np.zeros(nrefs, dtype=REF_DTYPE)
        refs["walk"] = np.repeat(np.arange(rows), walks["refs"])
        refs["pa"] = ref_rows[:, 0]
        packed = ref_rows[:, 1]
        refs["level"], refs["dim"], refs["cached"] = packed & 0xFF, (packed >> 8) & 1, (packed >> 9) & 1
        self.recorder.extend(walks, refs, int(out[k.WT_SEEN]))
        out[k.WT_ROWS] = out[k.WT_REFS] = 0

    def warm_up(self) -> None:
        """Compile the loop (or load it from numba's cache) before the first chunk."""
        self.run_chunk(np.zeros(0, dtype=TRACE_DTYPE))

    def run_chunk(self, chunk: np.ndarray, hpa_out: np.ndarray | None = None,
                  vcpu: np.ndarray | None = None, core: np.ndarray | None = None,
                  home: np.ndarray | None = None) -> None:
        """Process one chunk; ``hpa_out``, ``vcpu``, ``core`` and ``home`` as in the
        reference engine (with ``home``, the loop places each record by its thread).

        On a machine of several vCPUs the loop runs records of any vCPU and core, and
        stops where the software side (and coherence) must act. A flush that coherence
        gathers goes out before the next record that does not continue it, as in the
        reference tier: after a record whose software part gathered one, the loop runs
        that record to its end only (``stop``), and coherence looks at the next."""
        k, software, translator = self.k, self.software, self.machine.translator
        host = self.machine.context.host
        chunk = loop_chunk(chunk)
        smp = vcpu is not None or home is not None
        coherence = self.coherence
        if home is not None:  # the default rule: the loop places each record by its thread
            place = (self.none, self.none, self.first, self.vcpus, np.ascontiguousarray(home, dtype=np.int64))
        elif smp:  # (the scheduler's arrays, read in place by the loop: no copy)
            vcpu = np.ascontiguousarray(vcpu, dtype=np.int64)
            core = np.ascontiguousarray(core, dtype=np.int64)
            place = (vcpu, core, self.first, self.vcpus, self.none)
        else:
            place = self.no_place
        record = hpa_out is not None
        if record and not (hpa_out.flags.c_contiguous and hpa_out.ndim == 1 and hpa_out.dtype.itemsize == 8):
            raise ValueError("hpa_out must be a C-contiguous 1D array of 8-byte integers")
        hpa = hpa_out.view(np.int64) if record else np.zeros(1, dtype=np.int64)
        fmts, hw = self.fmts, self.hw
        tcfg, ttag, inclusion = self.tlb
        wcfg, wtag = self.wcfg, self.wtag
        store = self.machine.context.store
        counters, per_asid, n = self.machine.context.counters, self.per_asid, len(chunk)
        recording = self.recorder is not None
        if recording:
            self.out[k.WT_BASE] = self.records
            self._room_for_walks(n)
        i, stop, resume, faults, resume_at = 0, n, False, 0, -1
        told = -1  # the last record coherence was told of (once a record, before its software part, as the reference)
        while True:
            if i < n and not resume:
                if smp:
                    if coherence.pending() and told < i:  # what was gathered goes out, unless record i continues it
                        vm, asid, op, _, _ = chunk.item(i)
                        coherence.at(vm, asid, op, *self._placed(chunk, i, place)[1:])
                        told = i
                else:  # the loop runs records of one scope: it returns at a change of VM or asid
                    vm, asid, _, _, _ = chunk.item(i)
                    self._charge(counters, (vm, asid) if per_asid else vm)
            # re-read: the software side may grow or replace these
            roots = hw.guest_roots.array if isinstance(hw.guest_roots, RootTable) else self.no_guest_roots
            wstate = self.no_walk_state if self.wstate is None else self.wstate()
            host_roots = self.no_host_roots if hw.host_roots is None else \
                np.ascontiguousarray(hw.host_roots, dtype=np.int64).reshape(-1)
            self.pager.ready(recording)  # (it may grow host memory's arrays: read below)
            words = host.words
            if words is not self._words[0]:
                self._words = (words, words.view(np.int64))
            self.written[0] = store.next_written  # software may have written pages since
            try:
                status, i = self._loop(chunk, i, stop, resume, hpa, record, place, software.current_asid,
                                       software.last_vcpu, self.core_of, host.slot_of, self._words[1],
                                       fmts, roots, host_roots, tcfg, ttag, self.lrow, inclusion, wcfg, wtag,
                                       self.pstate, self.pk, self.cnt, self.out, self.paths,
                                       self.npaths, host.content, self.written, self.track_writes, *self.dc, self.wk,
                                       wstate, self.cstate, self.ck, self.memo, self.occ, *self.pager.arrays)
            except IndexError as exc:  # the loop's own check of every victim way
                raise PluginError(f"{exc} (compiled tier; the run's TLB policies: {self._policy_names()}).") from None
            except Exception as exc:  # raised in a kernel: the loop raises nothing else
                if _compile_error(exc):
                    inline = ", ".join(f"{name!r}{_plugin(self.machine.context.registry, 'TLB policies', name)}"
                                       for name in policy_ids(self.machine.context.registry))
                    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # numba highlights its messages
                    first = text.splitlines()[0] if text else ""
                    raise PluginError(f"the compiled engine's loop failed to compile ({type(exc).__name__}: "
                                      f"{first}); it compiles in the kernels of every inline TLB policy: "
                                      f"{inline}.") from None
                raise PluginError(f"a plugin kernel raised {type(exc).__name__}: {exc} (compiled tier; the run's "
                                  f"kernels: {self._kernel_names()}).") from None
            self.pager.settle()
            store.next_written = int(self.written[0])
            if recording and self.out[k.WT_ROWS]:
                self._drain_walks()
            resume = False
            if smp:
                self._merge_rows()
            if status == k.DONE:
                if i < n:  # stopped after a record whose software part gathered a flush
                    stop = n
                    continue
                break
            vm, asid, op, va, _ = chunk.item(i)
            where: tuple = ()
            if smp:
                k_vcpu, *place_at = self._placed(chunk, i, place)
                where = tuple(place_at)  # (machine-wide vCPU, core)
                counters.charge((vm, asid if per_asid else None, k_vcpu, where[1]))
                if told < i:
                    coherence.at(vm, asid, op, *where)
                    told = i
            else:
                self._charge(counters, (vm, asid) if per_asid else vm)
            if status == k.FAULT:
                fault = Fault(self.out.item(0), self.out.item(1))
                faults = faults + 1 if resume_at == i else 1
                resume_at = i
                if faults > FAULT_LIMIT:
                    raise stuck(vm, asid, va, fault, self.machine.context.config.machine.slat.name)
                for inv in translator.handle_fault(vm, asid, va, op, fault):
                    self.invalidate(inv)
                resume = True
            elif software.record(vm, asid, op, va, *where):
                if record:
                    hpa_out[i] = NO_HPA
                i += 1
                continue
            if smp and coherence.pending():  # record i's access comes first, then what it gathered goes out
                stop = i + 1
        self.records += n
        if not smp:
            self._merge()

    @staticmethod
    def _placed(chunk: np.ndarray, i: int, place: tuple) -> tuple[int, int, int]:
        """Record i's vCPU within its VM, machine-wide vCPU and core, as the loop places it."""
        pvcpu, pcore, first, vcpus, home = place
        vm, _, _, _, thread = chunk.item(i)
        if len(home):
            k = thread % int(vcpus[vm])
            return k, int(first[vm]) + k, int(home[first[vm] + k])
        return int(pvcpu[i]), int(first[vm] + pvcpu[i]), int(pcore[i])

    def _loop(self, *args: Any) -> tuple[int, int]:
        """Call the loop. The first call goes through numba's dispatcher, which types the
        44 arguments (and loads or compiles the loop); later calls go straight to the
        compiled entry point of that signature (about 1 us instead of 4 to 8 us a call,
        which a run pays at every fault and every switch of VM or asid). Every argument's
        type is fixed when the engine is built (int64 C-contiguous arrays of a fixed
        number of dimensions, Python ints and bools; the chunk, by :func:`loop_chunk`,
        a writable C-contiguous TRACE_DTYPE array), so the signature cannot change;
        with ``SLATFRAME_CHECK_ENTRY=1`` (the test suite) each call checks that it holds."""
        entry = self._entry
        if entry is None:
            loop = self.k.run
            if hasattr(loop, "overloads"):  # numba's dispatcher (not NUMBA_DISABLE_JIT's function)
                with compiling(self.k.__name__):  # a process compiling this module already: wait for it
                    loop.compile(tuple(loop.typeof_pyval(a) for a in args))
            result = loop(*args)
            self._entry = loop  # the dispatcher (or, under NUMBA_DISABLE_JIT, the function) ...
            overloads = getattr(loop, "overloads", None)
            if overloads is not None:
                self._signature = tuple(loop.typeof_pyval(a) for a in args)
                compiled = overloads.get(self._signature)
                if compiled is not None:  # ... unless the entry point of its signature is found
                    self._entry = compiled.entry_point
            return result
        if CHECK_ENTRY and self._signature:
            key = tuple(map(type_key, args))
            if key not in self._checked:  # numba's typing of 44 arguments takes ms: once per distinct key
                typed = tuple(self.k.run.typeof_pyval(a) for a in args)
                if typed != self._signature:
                    raise AssertionError(f"the loop's argument types changed: {typed} after {self._signature}")
                self._checked.add(key)
        return entry(*args)

    def _kernel_names(self) -> str:
        """Every plugin whose kernels this run calls, with its file."""
        registry = self.machine.context.registry
        parts = [f"TLB policies {self._policy_names()}"]
        if self.wk:
            parts.append(f"walk {self.hw.walk!r}{_plugin(registry, 'walks', self.hw.walk)}")
        started = [f"{c.name!r}{_plugin(registry, 'walk caches', choice.name)}"
                   for c, choice in zip(self.machine.walk_caches, self.machine.context.config.walk_caches)
                   if cache_kernels(c, choice, registry) is not None]
        if started:
            parts.append(f"walk caches {', '.join(started)}")
        return "; ".join(parts)

    def _policy_names(self) -> str:
        config, registry = self.machine.context.config, self.machine.context.registry
        names = {lv.policy.name for lv in config.tlb.levels} | {
            c.policy.name for c in self.machine.walk_caches if getattr(c, "policy", None) is not None}
        return ", ".join(f"{name!r}{_plugin(registry, 'TLB policies', name)}" for name in sorted(names))

    def _charge(self, counters: Any, scope: Any) -> None:
        """Work from here on is ``scope``'s: the loop's counts so far go to the previous scope."""
        if scope != counters.scope:
            self._merge()
            counters.charge(scope)

    def _merge(self) -> None:
        values = self.machine.context.counters.values
        for name, value in zip(self.names, self.cnt[0].tolist()):
            if not value:
                continue
            if name == "walk.refs_max":
                values[name] = max(values[name], value)
            else:
                values[name] += value
        self.cnt[0] = 0

    def _merge_rows(self) -> None:
        """Charge each (vCPU, core) row of the loop's counts to its scope (the vCPU's
        asid cannot change inside a loop call: a switch stops the loop)."""
        cnt, cores, counters = self.cnt, len(self.core_contexts), self.machine.context.counters
        vm_of, asid_of, per_asid = self.software.vm_of, self.software.current_asid, self.per_asid
        for row in np.flatnonzero(cnt.any(axis=1)).tolist():
            vcpu, core = divmod(row, cores)
            vm, asid = int(vm_of[vcpu]), int(asid_of[vcpu])
            counters.add_scoped((vm, asid if per_asid else None, vcpu - int(self.first[vm]), core),
                                [(name, value) for name, value in zip(self.names, cnt[row].tolist()) if value])
            cnt[row] = 0
