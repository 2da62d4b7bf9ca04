"""The plugin contract: every hook a plugin may implement.

Each hook takes no arguments and returns an iterable of registration records
(:mod:`slatframe.records`). All implementations are called (none is "first result
wins"); the registry flattens their records, rejects a name registered twice (naming
both plugins) and sorts them by name. Hooks are called once, when a
:class:`slatframe.registry.Registry` is built, before any config is resolved.

Implement them with :data:`slatframe.hookimpl`::

    from slatframe import hookimpl
    from slatframe.records import TlbPolicyRecord

    @hookimpl
    def slatframe_tlb_policies():
        return [TlbPolicyRecord(name="mru", summary="...", factory=Mru)]
"""
from __future__ import annotations

from typing import Iterable

import pluggy

from . import PROJECT_NAME
from .records import (
    CostModelRecord,
    DedupStrategyRecord,
    PageTableFormatRecord,
    RunObserverRecord,
    SchedulerRecord,
    SlatSchemeRecord,
    TlbPolicyRecord,
    WalkCacheRecord,
    WalkRecord,
    WorkloadRecord,
)

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

# -------------------------------------------------------------------------
# Translation structures
# -------------------------------------------------------------------------


@hookspec
def slatframe_page_table_formats() -> Iterable[PageTableFormatRecord]:
    """Return the radix page-table formats this plugin provides.

    A format is chosen by ``machine.guest_format`` / ``machine.host_format``. Its
    factory returns a :class:`slatframe.paging.PageTableFormat`: the geometry (levels,
    index bits, leaf sizes) and the entry codec (bit masks of present, leaf, frame,
    write, accessed, dirty) that the walkers of every scheme use.
    """


@hookspec
def slatframe_slat_schemes() -> Iterable[SlatSchemeRecord]:
    """Return the SLAT schemes this plugin provides (``machine.slat``).

    A scheme's factory receives its options and the
    :class:`slatframe.machine.MachineContext` (host memory, VMs, resolved formats,
    counters) and returns a translator that walks tables, handles faults and control
    events, and names its own VM-exit reasons (``counters.vm_exit(reason)``). Host
    memory its translation structures hold is a gauge,
    ``counters.gauge_add("<name>.table_bytes", delta)``: the consolidation model charges
    every ``<name>.table_bytes.peak`` to the sessions a run stands for.
    """


@hookspec
def slatframe_tlb_policies() -> Iterable[TlbPolicyRecord]:
    """Return the TLB replacement policies this plugin provides (``tlb.levels[].policy``)."""


@hookspec
def slatframe_walk_caches() -> Iterable[WalkCacheRecord]:
    """Return the walk caches (paging-structure caches, nested TLBs) this plugin provides."""


@hookspec
def slatframe_walks() -> Iterable[WalkRecord]:
    """Return the hardware page walks this plugin provides.

    A walk is chosen by the SLAT scheme, not by the config: the scheme's hardware view
    names it (``translator.hw.walk``, default ``"radix"``). Its factory receives a
    :class:`slatframe.walker.WalkContext` and returns an object whose
    ``walk(vm, asid, va, op)`` gives a :class:`slatframe.translation.Translation` or
    stops at a :class:`slatframe.walker.Fault` for the scheme's software to handle.
    """


# -------------------------------------------------------------------------
# Memory management
# -------------------------------------------------------------------------


@hookspec
def slatframe_dedup_strategies() -> Iterable[DedupStrategyRecord]:
    """Return the page-deduplication strategies this plugin provides."""


# -------------------------------------------------------------------------
# Inputs and outputs of a run
# -------------------------------------------------------------------------


@hookspec
def slatframe_cost_models() -> Iterable[CostModelRecord]:
    """Return the cost models this plugin provides (``cost.model``).

    A cost model turns the run's counters into ``cycles.*`` metrics after the run.
    """


@hookspec
def slatframe_workloads() -> Iterable[WorkloadRecord]:
    """Return the workloads (trace readers and generators) this plugin provides
    (``workload.source``)."""


@hookspec
def slatframe_schedulers() -> Iterable[SchedulerRecord]:
    """Return the schedulers this plugin provides (``machine.scheduler``).

    A scheduler places each record's vCPU on a core; it may reorder records (time
    slices). It runs in Python on whole chunks, before the engine: a plugin scheduler
    runs under both engine tiers.
    """


@hookspec
def slatframe_run_observers() -> Iterable[RunObserverRecord]:
    """Return run observers (reporters, live plots) this plugin provides.

    Observers named in ``experiment.observers`` are told when a run starts, after each
    trace chunk and when it finishes. They must not change the run. An observer with a
    ``walk_sampling`` attribute gets the sampled hardware walks (``walks(trace)``), in
    either engine tier (the builtin ``walk-trace`` writes them to a file).
    """
