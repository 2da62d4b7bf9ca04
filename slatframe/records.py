"""Registration records: what each hook returns.

Every record names a plugin (``name``, unique per hook point), says what it is in one line
(``summary``), declares the attrs class of its TOML options (``options``; an instance of
it is built from the user's table, with defaults, units and validation) and a ``factory``
that builds the working object. The factory signature depends on the hook point and is
documented on each record class.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs


@attrs.frozen
class NoOptions:
    """Options class of a plugin that takes none."""


@attrs.frozen(kw_only=True)
class Registration:
    """Fields every record has."""

    name: str
    summary: str
    factory: Callable[..., Any]
    options: type = NoOptions
    #: Named sets of option values (``preset = "NAME"`` in the plugin's table selects one;
    #: keys written beside it override the preset's, key by key).
    presets: Mapping[str, Mapping[str, Any]] = attrs.Factory(dict)

    #: Which hook point the record belongs to; set by each subclass.
    kind = "plugin"


@attrs.frozen(kw_only=True)
class PageTableFormatRecord(Registration):
    """A radix page-table format. ``factory(options) -> slatframe.paging.PageTableFormat``."""

    kind = "page-table format"


@attrs.frozen(kw_only=True)
class SlatSchemeRecord(Registration):
    """A way to reach hPA from gVA.

    ``factory(options, machine: slatframe.machine.MachineContext) -> Translator`` where a
    translator has ``translate(vm, asid, vaddr, op)`` and ``control(vm, asid, op, arg)``
    (see :class:`slatframe.machine.Translator`).

    ``guest_format`` is the format used when the config names none; ``host_format`` the
    format of the second level (``None`` for schemes without one). ``exit_reasons`` lists
    the VM-exit reasons the translator counts (``counters.vm_exit(reason)``): a
    ``cost.exit_work`` reason that no registered scheme lists is refused with a "did you
    mean"; a scheme that leaves it None turns that check off for its configs.
    """

    guest_format: str
    host_format: str | None = None
    #: Whether a hypervisor backs the VMs' guest memory with host pages (``translator.backings``),
    #: which a dedup strategy merges; False for schemes without one (``native``).
    backs_guest_memory: bool = True
    #: The VM-exit reasons its translator counts (``counters.vm_exit(reason)``, the
    #: ``vm_exits.<reason>`` metrics), so that a cost model's per-reason options can be
    #: checked against them; None if it does not say (they are then not checked).
    exit_reasons: tuple[str, ...] | None = None
    kind = "SLAT scheme"


@attrs.frozen(kw_only=True)
class WalkRecord(Registration):
    """A hardware page walk, named by a SLAT scheme's hardware view (``hw.walk``).

    ``factory(context: slatframe.walker.WalkContext)`` returns an object with
    ``walk(vm, asid, va, op) -> Translation | Fault`` that reads tables in simulated
    memory, counts its references (``counters.walk_done`` / ``walk_aborted``) and
    consults the run's walk caches, as :class:`slatframe.walker.Walker` (the builtin
    ``radix`` walk) does. ``kernels`` (a :class:`WalkKernels`) lets the compiled tier run
    it; without them a run with this walk takes the reference tier.
    """

    kernels: "WalkKernels | None" = None
    kind = "walk"


@attrs.frozen(kw_only=True)
class WalkKernels:
    """A walk's compiled-tier form, compiled apart (about a second) and called by the loop
    on every TLB miss.

    ``walk(slot_of, words, state, dcfg, dctl, dtag, dage, cnt, vm, asid, va, op, out)`` is
    a top-level ``@njit`` function: it reads simulated memory (``slot_of``, ``words``) and
    the data caches with the helpers of :mod:`slatframe.engine.walklib`, and reports the
    fault or the translation and its references in ``out`` (columns ``walklib.O_*``); the
    loop counts it. ``state(walk) -> numpy.ndarray`` turns the factory's walk object into
    the int64 2D C-contiguous array the kernel receives as ``state`` (roots, table bases,
    format rows from ``walklib.format_row``: whatever the kernel reads); the engine calls
    it again after every fault and software event, so it sees what the software side
    changed. The kernel consults no walk caches: a run with walk caches and this walk
    takes the reference tier.
    """

    walk: Callable[..., Any]
    state: Callable[[Any], Any]


@attrs.frozen(kw_only=True)
class PolicyKernels:
    """A TLB policy's compiled-tier form: top-level ``@njit`` functions over int64 state.

    ``init(options, sets, ways, rng) -> numpy.ndarray`` builds the policy's state as a 2D
    int64 array (rows and columns as the policy likes), drawing from ``rng`` exactly as
    the reference factory does. The engine stacks every structure's state into one 3D
    array, padding rows and columns, so the kernels receive that array and the
    structure's index ``i`` and must only read cells ``init`` wrote:
    ``hit(state, i, s, w)``, ``fill(state, i, s, w)``, ``invalidate(state, i, s, w)`` and
    ``victim(state, i, s) -> way`` mirror the reference object's methods (``invalidate``
    a no-op where the object has none).

    ``inline``: False (the default) compiles the kernels apart, in about a second, and the
    loop calls them through function pointers, so adding or editing a plugin never
    recompiles the loop; True compiles them into the loop itself (a few ns faster a call,
    but every change recompiles the whole loop, about half a minute): the builtins do that.
    """

    init: Callable[..., Any]
    hit: Callable[..., Any]
    fill: Callable[..., Any]
    victim: Callable[..., Any]
    invalidate: Callable[..., Any]
    inline: bool = False


@attrs.frozen(kw_only=True)
class TlbPolicyRecord(Registration):
    """A TLB replacement policy.

    ``factory(options, sets, ways, rng: numpy.random.Generator)`` returns an object with
    ``hit(set_index, way)``, ``fill(set_index, way)`` and ``victim(set_index) -> way``
    (called only when every way of the set is valid), and optionally
    ``invalidate(set_index, way)``. See :class:`slatframe.setassoc.SetAssoc`.
    ``kernels`` (a :class:`PolicyKernels`) lets the compiled engine use the policy.
    """

    kernels: PolicyKernels | None = None
    kind = "TLB policy"


@attrs.frozen(kw_only=True)
class WalkCacheRecord(Registration):
    """A translation cache besides the TLB (paging-structure cache, nested TLB, ...).

    ``factory(options, ctx)`` returns an object that attaches at one of the radix walk's
    three points (its ``point``: ``"start"``, ``"entry"`` or ``"host"``) and has what that
    point's protocol uses (:class:`slatframe.walkcache.StartCache`, ``EntryPointCache``,
    ``HostPointCache``): one of the builtin kinds of :mod:`slatframe.walkcache`, or a kind
    of its own. ``kernels`` (the point's :class:`StartCacheKernels`,
    :class:`EntryCacheKernels` or :class:`HostCacheKernels`) let the compiled tier run a
    kind of its own; without them it runs in the reference tier.
    """

    kernels: "StartCacheKernels | EntryCacheKernels | HostCacheKernels | None" = None
    kind = "walk cache"


@attrs.frozen(kw_only=True)
class StartCacheKernels:
    """A start cache's compiled-tier form: top-level ``@njit`` functions compiled apart
    and called by the loop's radix walk through their addresses.

    ``init(cache) -> numpy.ndarray``: the int64 2D state of the reference object ``cache``
    as built (the engine stacks every start cache's state into one 3D array, padded, and
    passes it with the cache's index ``j``). ``probe(state, j, dim, vm, asid, address,
    fmts) -> int``: ``table | level`` (the level to read next, in the table address's
    zero low bits), or -1 for a miss; ``fmts`` holds the formats' rows
    (:func:`slatframe.engine.walklib.format_row`; row ``dim`` is the dimension's).
    ``learn(state, j, dim, vm, asid, address, level, table, fmts)`` and
    ``invalidate(state, j, scope, vm, asid)`` (scope 0 page, 1 asid, 2 vm, 3 all) mirror
    the reference object's methods.
    """

    init: Callable[..., Any]
    probe: Callable[..., Any]
    learn: Callable[..., Any]
    invalidate: Callable[..., Any]


@attrs.frozen(kw_only=True)
class EntryCacheKernels:
    """An entry-point cache's compiled-tier form (its reference object is a
    :class:`slatframe.walkcache.EntryPointCache`), called as a start cache's kernels are.

    ``init(cache) -> numpy.ndarray`` as :class:`StartCacheKernels`. ``probe(state, j,
    dim, vm, asid, level, pa, fmts) -> int``: the entry at physical address ``pa`` on a
    hit, -1 on a miss (entries of formats the compiled tier runs are below 2^63).
    ``fill(state, j, dim, vm, asid, level, pa, entry, fmts)`` and ``invalidate(state, j,
    scope, vm, asid)`` mirror the reference object. Which dimensions and levels it covers
    is read once from the reference object's ``covers``.
    """

    init: Callable[..., Any]
    probe: Callable[..., Any]
    fill: Callable[..., Any]
    invalidate: Callable[..., Any]


@attrs.frozen(kw_only=True)
class HostCacheKernels:
    """A host-point cache's compiled-tier form (its reference object is a
    :class:`slatframe.walkcache.HostPointCache`).

    ``init(cache) -> numpy.ndarray`` as :class:`StartCacheKernels`. ``probe(state, j,
    vm, gpa, write, need_dirty) -> int`` (``write``, ``need_dirty`` 0 or 1): on a hit the
    host translation packed as ``hpa_page | shift | writable << 6 | dirty << 7`` (the 4K
    page's host address, the host page size's log2, the two flags), -1 on a miss.
    ``fill(state, j, vm, gpa, table_access, value)`` gets the same packing;
    ``invalidate(state, j, scope, vm, asid)`` as the others. Which gPAs it serves is read
    once from the reference object's ``serves``.
    """

    init: Callable[..., Any]
    probe: Callable[..., Any]
    fill: Callable[..., Any]
    invalidate: Callable[..., Any]


@attrs.frozen(kw_only=True)
class DedupStrategyRecord(Registration):
    """A way of finding and merging identical pages.

    ``factory(options, host: slatframe.dedup.DedupHost)`` returns an object with
    ``interval`` (trace records between wake-ups), ``run() -> list[Invalidation]`` (one
    wake-up: merge through ``host``) and ``stats() -> dict`` (its own ``dedup.*`` state
    figures, such as pages waiting in a tree). Events it counts go to ``host.counters``
    (``dedup.full_scans``, ``dedup.pages_scanned``), so a warmup restarts them.
    """

    kind = "dedup strategy"


@attrs.frozen(kw_only=True)
class CostModelRecord(Registration):
    """Turns counted events into cycles.

    ``factory(options) -> model`` with ``model.cycles(counters: dict[str, int],
    machine: slatframe.config.Config) -> dict[str, int | float]`` returning the ``cycles.*``
    metrics. The resolved options are stored in the result so every figure can be
    recomputed from the result file alone.

    Every key ``cycles`` returns becomes a metric. Two are read by the rest of slatframe:
    ``cycles.total`` (the sweep summary's and the report's cycles column) and
    ``cycles.per_access`` (per-VM tables, and ``[consolidation]``, which refuses a model
    without it); the builtins also return ``cycles.access``, ``.tlb``, ``.walk``,
    ``.vm_exit`` (and ``.vm_exit.<reason>``), ``.fault``, ``.cow``, ``.dedup_scan``,
    ``.translation`` and ``translation_overhead``. ``cycles`` is called once with the run's
    counters, then again with each scope's own: each VM's (``vm.<name>.cycles.*``), each
    address space's with ``experiment.per_asid``, and the work between records (a dedup
    strategy's wake-ups, ``between_records.cycles.*``); each call has every counter name
    any scope counted and those always reported (0 where the scope counted none), so
    ``counters["accesses"]`` is that scope's accesses, and may be 0.

    ``data_caches(options) -> slatframe.datacache.DataCacheSpec | None``, when given, asks
    the engines to pass every page-walk reference (and, if the spec says so, every data
    access) through that cache hierarchy during the run and count the level that served
    it (``dcache.walk.<level>``, ``dcache.data.<level>``), for ``cycles`` to charge.
    """

    data_caches: Callable[[Any], Any] | None = None
    kind = "cost model"


@attrs.frozen(kw_only=True)
class WorkloadRecord(Registration):
    """A source of trace chunks.

    ``factory(options, context: slatframe.workload.WorkloadContext)`` returns an iterable of
    numpy arrays of :data:`slatframe.trace.TRACE_DTYPE`, each at most
    ``context.chunk_size`` long. Errors in the input raise :class:`slatframe.errors.TraceError`.
    ``fresh_chunks=True`` says every array yielded is new (never refilled, never yielded
    twice): the compiled tier then reads the next chunk in a thread while it runs one.
    The iterable may have a ``notes`` attribute, a dict of names to JSON scalars that it
    fills while it is read (``drmemtrace.order``: which order it interleaved threads in):
    the result records it as ``workload_notes`` and ``slatframe trace info`` prints it.
    """

    #: Every array the factory yields is new (never refilled, never yielded twice), so the
    #: compiled tier may read the next chunks while it runs one (:mod:`slatframe.prefetch`).
    #: Leave it False for a workload that refills a buffer; one that says True and yields
    #: an array sharing memory with one of the two before it is refused.
    fresh_chunks: bool = False
    kind = "workload"


@attrs.frozen(kw_only=True)
class SchedulerRecord(Registration):
    """Places vCPUs on cores (``machine.scheduler``).

    ``factory(options, context: slatframe.smp.SmpContext) -> scheduler`` with
    ``schedule(chunks) -> iterable of slatframe.smp.Placed``: it takes the workload's
    checked chunks in trace order and yields them (in that order, or reordered: the
    engines run records in the order yielded) with each record's vCPU (within its VM) and
    core. The core checks every placement (vCPU and core in range, every record run once)
    and refuses a wrong one in one sentence. Guest thread t of a VM runs on its vCPU
    ``t mod vms[].vcpus`` (:func:`slatframe.smp.thread_vcpus`) unless a scheduler says
    otherwise. A config of one core and one vCPU per VM runs without a scheduler. Its
    options may have ``memory_items(records)`` (``records``: the workload's records, or
    None) yielding (key, bytes) for the memory estimate (slatframe/footprint.py), as a
    scheduler that holds records to reorder them does.
    """

    kind = "scheduler"


@attrs.frozen(kw_only=True)
class RunObserverRecord(Registration):
    """Watches a run. ``factory(options) -> observer`` with optional methods
    ``started(run)``, ``chunk(run, done, chunk_len)`` and ``finished(run, result)``. An
    observer with a ``walk_sampling`` attribute (a :class:`slatframe.walk_record.WalkSampling`)
    also gets ``walks(trace)``, a :class:`slatframe.walk_record.WalkTrace` of the walks it
    sampled, after the last chunk and before ``finished``."""

    kind = "run observer"
