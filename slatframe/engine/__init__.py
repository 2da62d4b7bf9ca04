"""Engine tiers and the function that runs one experiment."""
from __future__ import annotations

import os
import time
from contextlib import closing
from typing import Any, Iterator

from .. import __version__
from ..config import Config, resolved_format
from ..cost_figures import costed_metrics, data_cache_spec
from ..counters import BETWEEN, NOT_ADDITIVE, Counters
from ..errors import ConfigError
from ..footprint import estimated_bytes, peak_rss_bytes
from ..machine import build_machine
from ..prefetch import prefetched
from ..provenance import InputHashes
from ..results import Result
from ..scope_metrics import scope_counts
from ..smp import Placed, engine_args, is_smp, placed_chunks, smp_context
from ..walk_record import requested_sampling
from ..walker import Walker
from ..workload import WorkloadContext, checked_chunks, workload_where
from .compiled import CompiledEngine, compiled_refusals
from . import codegen, plugin_kernels
from .reference import ReferenceEngine
from .shape import Shape, shape_of

#: Counters present in every result, zero when nothing happened.
ALWAYS_REPORTED = ("accesses", "walks", "walk.refs", "walk.refs_guest", "walk.refs_host",
                   "walk.refs_max", "walk.aborted", "walk.refs_aborted", "walk.ad_writes",
                   "walk.on_hit", "tlb.splintered_fills", "faults.guest", "faults.host", "vm_exits")


def choose_engine(config: Config, registry: Any, requested: str | None = None,
                  machine: Any = None) -> tuple[str, str]:
    """Return the tier to run and why. The compiled tier runs a config only when it
    honours every plugin on the per-access path exactly (:func:`compiled_refusals`):
    ``auto`` then takes it (unless the run is small and the compiled engine is not
    compiled yet: :func:`first_run`), and otherwise the reference tier with the first
    reason; ``compiled`` refuses in one sentence. ``machine`` is the built machine
    (built here when not given)."""
    wanted = requested or config.experiment.engine
    if wanted == "reference":
        return "reference", "requested"
    refusals = compiled_refusals(machine if machine is not None else build_machine(config, registry), registry)
    if wanted == "compiled":
        if refusals:
            raise ConfigError(f"experiment.engine = 'compiled' cannot run this config: {'; '.join(refusals)}; "
                              "use 'auto' or 'reference'.")
        return "compiled", "requested"
    if refusals:
        return "reference", f"auto: {refusals[0]}"
    accesses = getattr(config.workload.options, "accesses", None)
    if isinstance(accesses, int) and accesses <= FIRST_RUN_LIMIT and first_run(registry):
        return "reference", (f"auto: {FIRST_RUN_REASON}; the reference tier runs these {accesses:,} accesses "
                             "sooner, with the same counters")
    return "compiled", "auto: the compiled tier honours every plugin of the run"


#: A run of at most this many accesses takes the reference tier while the compiled
#: engine is not compiled yet (the reference tier runs about 10^5 accesses a second here).
FIRST_RUN_LIMIT = 1_000_000
FIRST_RUN_REASON = "the compiled engine is not compiled yet (a one-time compile of about half a minute)"


#: Why ``auto`` compiles the exact loop when no loop is compiled: a cold compile of it
#: took 23.7 s against 33.8 s for the generic loop, and it ran at 1.1x the bare loop's time
#: against 1.6x (docs/performance.md, session 23); the generic loop, which serves every
#: config, is compiled in the background meanwhile.
FIRST_LOOP_REASON = ("no loop is compiled yet, and the loop for this TLB config compiles sooner than the generic one "
                     "and runs faster")


def first_run(registry: Any) -> bool:
    """Whether the compiled engine still has to be compiled for this registry (and the
    first-run shortcut is not turned off with ``SLATFRAME_FIRST_RUN=compiled``)."""
    return os.environ.get("SLATFRAME_FIRST_RUN", "reference") != "compiled" and not codegen.engine_cached(registry)


def choose_loop(config: Config, registry: Any, tier: str) -> tuple[Shape | None, str]:
    """The compiled tier's loop as ``experiment.loop`` asks (a shape, exact or not, or None
    for the generic loop) and what the result's engine reason says of it. ``auto`` takes
    the exact loop when it is compiled, else the shaped one when it is compiled, else the
    generic one; but while the generic one is not compiled either (:func:`first_run`), the
    exact one, which compiles sooner and runs faster (:data:`FIRST_LOOP_REASON`)."""
    wanted = config.experiment.loop
    if tier != "compiled":
        return None, "" if wanted in ("auto", "generic") else (f"; experiment.loop = {wanted!r} is for the compiled "
                                                               "tier only")
    if wanted == "generic":
        return None, "; the generic loop (requested)"
    shape, why = shape_of(config)
    if shape is None:
        if wanted != "auto":
            raise ConfigError(f"experiment.loop = {wanted!r} cannot run this config: {why}; use 'auto' or 'generic'.")
        return None, f"; the generic loop (auto: {why})"
    exact = shape_of(config, exact=True)[0]
    if wanted == "exact":
        return exact, f"; {exact.loop_name()} (requested)"
    if wanted == "shaped":
        return shape, f"; {shape.loop_name()} (requested)"
    if codegen.engine_cached(registry, exact):
        return exact, f"; {exact.loop_name()} (auto: it is compiled)"
    if codegen.engine_cached(registry, shape):
        return shape, f"; {shape.loop_name()} (auto: it is compiled)"
    if first_run(registry):
        return exact, f"; {exact.loop_name()} (auto: {FIRST_LOOP_REASON})"
    return None, (f"; the generic loop (auto: {shape.loop_name()}, is not compiled; "
                  "experiment.loop = 'shaped' compiles it once)")


#: an ``auto`` run of the generic loop at least this long (the run itself, in seconds)
#: starts compiling its shape's loop in the background: the next run of the shape takes
#: it, 1.35 to 1.7x faster on hit-heavy traces (docs/performance.md); the build is about
#: half a minute of one core
SHAPED_BUILD_AFTER_S = 60.0


def shaped_build(config: Config, registry: Any, tier: str, shape: Shape | None, run_s: float) -> str:
    """After an ``auto`` run of the generic loop that took ``run_s`` seconds (the run
    itself): start the background build of the config's shaped loop when the run was long
    enough, the loop is not compiled, and another process can build the registry again
    (no plugin objects); what the result's engine reason then adds."""
    files = getattr(registry, "files", None)
    if (tier != "compiled" or shape is not None or config.experiment.loop != "auto" or run_s < SHAPED_BUILD_AFTER_S
            or files is None):
        return ""
    wanted, _ = shape_of(config)
    if wanted is None or codegen.engine_cached(registry, wanted):
        return ""
    from .prebuild import next_run_build

    return next_run_build(files, registry, wanted, f"; this run took {run_s:.0f} s, so the loop for the TLB's shape "
                                                   "is being compiled in the background for the next run")


def make_engine(tier: str, machine: Any, registry: Any, shape: Shape | None = None) -> Any:
    """The engine object of ``tier`` for a built machine (the compiled tier's loop shaped
    for ``shape``, or generic)."""
    if tier == "compiled":
        return CompiledEngine(machine, registry, shape)
    return ReferenceEngine(machine)


def workload_chunks(config: Config, registry: Any, read_ahead: bool = False, sources: list | None = None):
    """The checked chunks of the configured workload; with ``read_ahead``, read by a
    thread ahead of the consumer when the workload yields fresh arrays. What the
    workload's factory returned is appended to ``sources`` (for its ``notes``)."""
    record = registry.get("workloads", config.workload.name)
    ctx = WorkloadContext(chunk_size=config.experiment.chunk_size, seed=config.experiment.seed,
                          vm_names=tuple(vm.name for vm in config.vms), registry=registry)
    where = workload_where(config.workload.name, config.workload.options)
    guest = resolved_format(config, "guest", registry)
    va_bits = getattr(guest, "va_bits", None)  # wider trace addresses are refused, not aliased
    source = record.factory(config.workload.options, ctx)
    if sources is not None:
        sources.append(source)
    chunks = checked_chunks(source, where, len(config.vms), va_bits, record.fresh_chunks)
    return prefetched(chunks) if read_ahead and record.fresh_chunks else chunks


def workload_notes(source: Any) -> dict[str, Any]:
    """What a workload says of the trace it read (the ``notes`` dict of the iterable its
    factory returned: :class:`slatframe.records.WorkloadRecord`), with JSON scalar values."""
    notes = getattr(source, "notes", None)
    if not isinstance(notes, dict):
        return {}
    return {str(k): v for k, v in notes.items() if v is None or isinstance(v, (bool, int, float, str))}


#: Dedup events counted since the statistics started (in the counters, so a warmup resets them).
DEDUP_COUNTED = ("dedup.large_pages_split", "dedup.cow_breaks", "dedup.merges", "dedup.pages_scanned",
                 "dedup.full_scans", "dedup.wakeups")


def dedup_figures(machine: Any, strategy: Any) -> dict[str, int]:
    """The dedup figures now: the counts so far, the sharing state, the strategy's own
    state figures, host memory in use."""
    values = machine.context.counters.values
    return {**{name: values.get(name, 0) for name in DEDUP_COUNTED}, **machine.dedup_host.stats(),
            **strategy.stats(), "dedup.host_bytes_in_use": machine.context.host.in_use}


def compute_metrics(config: Config, registry: Any, counters: Counters,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counters plus the cost model's cycle figures (and the consolidation figures, if
    configured) and the derived metrics, with every TLB level's and data-cache level's
    counters present even when zero; then the same per VM (and per address space), as
    the engines charged them (:func:`slatframe.cost_figures.costed_metrics`)."""
    zero: dict[str, Any] = dict.fromkeys(ALWAYS_REPORTED, 0)
    for level in config.tlb.levels:
        zero[f"tlb.{level.name}.hits"] = 0
        zero[f"tlb.{level.name}.misses"] = 0
    spec = data_cache_spec(config, registry)
    if spec is not None:
        zero.update(dict.fromkeys(spec.counter_names(), 0))
    totals = {**zero, **(extra or {}), **counters.as_dict()}
    additive = {name: 0 for name in zero if name not in NOT_ADDITIVE}
    smp = is_smp(config)
    scopes = scope_counts([vm.name for vm in config.vms], counters.by_scope(), additive,
                          [vm.vcpus for vm in config.vms] if smp else (), config.machine.cores if smp else 0)
    return costed_metrics(config, registry, totals, scopes)


def run_experiment(config: Config, registry: Any, *, engine: str | None = None,
                   observers: list[Any] | None = None) -> Result:
    """Run one experiment to completion and return its :class:`Result`."""
    return run_machine(config, registry, engine=engine, observers=observers)[0]


def run_machine(config: Config, registry: Any, *, engine: str | None = None,
                observers: list[Any] | None = None) -> tuple[Result, Any]:
    """Run one experiment; return its :class:`Result` and the machine it ran on."""
    start = time.perf_counter()
    counters = Counters()
    machine = build_machine(config, registry, counters)
    tier, reason = choose_engine(config, registry, engine, machine)
    files = getattr(registry, "files", None)  # None: another process cannot build this registry again
    if reason.startswith(f"auto: {FIRST_RUN_REASON}") and files is not None:  # build it for the next run, meanwhile
        from .prebuild import next_run_build

        reason += next_run_build(files, registry, None, "; it is being compiled in the background for the next run")
    shape, loop_reason = choose_loop(config, registry, tier)
    reason += loop_reason
    if loop_reason.endswith(f"(auto: {FIRST_LOOP_REASON})") and files is not None:
        from .prebuild import next_run_build

        reason += next_run_build(files, registry, None, "; the generic loop is being compiled in the background "
                                                        "for runs of other configs")
    hashing = InputHashes(config, registry)  # the input files' sha256, in a thread while the run reads them
    compiling = time.perf_counter()  # the compiled tier compiles plugin kernels as it is made
    plugin_kernels.uncached.clear()
    runner = make_engine(tier, machine, registry, shape)
    reason += plugin_kernels.uncached_note()
    load_engine = getattr(runner, "warm_up", None)  # compile the loop, or load it from the cache
    if load_engine is not None:
        load_engine()
    compile_time = time.perf_counter() - compiling
    observers = list(observers or []) + [
        registry.get("run observers", choice.name).factory(choice.options)
        for choice in config.experiment.observers]
    sampling = requested_sampling(observers)
    if sampling is not None:
        if config.machine.cores > 1:
            raise ConfigError(f"experiment.observers record walks, which a machine of one core does, and "
                              f"machine.cores = {config.machine.cores}; drop the walk-recording observer or "
                              "run one core.")
        if type(machine.walker) is not Walker:
            raise ConfigError(f"experiment.observers record walks, which only the radix walk does: SLAT scheme "
                              f"{config.machine.slat.name!r} walks with {getattr(machine.translator.hw, 'walk', '?')!r}; "
                              "drop the walk-recording observer or run a radix scheme.")
        runner.record_walks(sampling)
    _notify(observers, "started", config)
    done = 0
    strategy = machine.dedup
    series: dict[str, Any] = {}
    next_run = strategy.interval if strategy is not None else None
    warmup = config.experiment.warmup or None  # where the counters start
    sources: list[Any] = []
    chunks = workload_chunks(config, registry, read_ahead=getattr(runner, "reads_ahead", False), sources=sources)
    with closing(chunks):  # a run that stops early stops the reader too
        for chunk, placed in scheduled(config, registry, chunks):
            pos = 0
            while True:
                stop = min((at for at in (next_run, warmup) if at is not None), default=None)
                if stop is None or stop - done >= len(chunk) - pos:
                    break
                step = stop - done
                runner.run_chunk(chunk[pos:pos + step], **engine_args(placed, pos, pos + step))
                pos += step
                done += step
                if done == warmup:
                    _call(runner, "settle")  # what the warmup's last records started
                    counters.restart()  # state stays warm; statistics start here
                    series.clear()
                    warmup = None
                if done == next_run:
                    _call(runner, "between")
                    counters.charge(BETWEEN)  # the wake-up's work is no VM's
                    counters.add("dedup.wakeups")
                    for inv in strategy.run():  # the strategy's wake-up, between records
                        runner.invalidate(inv)
                    series.setdefault("dedup", []).append({"records": done, **dedup_figures(machine, strategy)})
                    next_run += strategy.interval
            runner.run_chunk(chunk[pos:], **engine_args(placed, pos))
            done += len(chunk) - pos
            _notify(observers, "chunk", config, done, len(chunk))
    _call(runner, "settle")
    if warmup is not None:
        raise ConfigError(f"experiment.warmup = {warmup} is not allowed: the workload ends at record {done}, "
                          "and the warmup must end before it.")
    extra = dedup_figures(machine, strategy) if strategy is not None else {}
    warnings = [] if strategy is None or next_run > strategy.interval else [  # next_run moves on at each wake-up
        f"the dedup strategy {config.dedup.name!r} never woke up: it wakes up between records, first after "
        f"record {strategy.interval:,}, and the workload has {done:,}, so no page was scanned "
        "(dedup.wakeups = 0); shorten its interval or lengthen the trace."]
    if config.machine.cores > 1 and machine.data_caches is not None:
        warnings.append(f"machine.cores = {config.machine.cores}: the cost model's data caches (dcache.*) are one "
                        "hierarchy that every core's walks go through; per-core L1 and L2 caches are not modelled "
                        "yet.")
    reason += shaped_build(config, registry, tier, shape, time.perf_counter() - compiling - compile_time)
    inputs, input_warnings = hashing.finish()
    metrics = compute_metrics(config, registry, counters, extra)
    result = Result(
        name=config.experiment.name,
        metrics=metrics,
        config=config.to_dict(),
        seed=config.experiment.seed,
        engine=tier,
        engine_reason=reason,
        version=__version__,
        wall_time_s=round(time.perf_counter() - start, 6),
        compile_time_s=round(compile_time, 6),
        series=series,
        warnings=warnings + input_warnings,
        inputs=inputs,
        memory={"estimate_bytes": estimated_bytes(config, registry), "peak_rss_bytes": peak_rss_bytes()},
        workload_notes=workload_notes(sources[0] if sources else None),
    )
    if sampling is not None:
        _notify(observers, "walks", runner.walk_trace())
    _notify(observers, "finished", config, result)
    return result, machine


def scheduled(config: Config, registry: Any, chunks: Any) -> Iterator[tuple[Any, Placed | None]]:
    """Each chunk in the order it runs, with its placement on cores and vCPUs (None on a
    machine of one core and one vCPU per VM, which runs without a scheduler)."""
    if not is_smp(config):
        for chunk in chunks:
            yield chunk, None
        return
    choice = config.machine.scheduler
    ctx = smp_context(config)
    scheduler = registry.get("schedulers", choice.name).factory(choice.options, ctx)
    for placed in placed_chunks(scheduler, chunks, ctx, choice.name):
        yield placed.records, placed


def _call(runner: Any, method: str) -> None:
    """``runner.method()`` if the engine has it."""
    fn = getattr(runner, method, None)
    if fn is not None:
        fn()


def _notify(observers: list[Any], method: str, *args: Any) -> None:
    for obs in observers:
        fn = getattr(obs, method, None)
        if fn is not None:
            fn(*args)

