"""The simulated machine a run drives: host memory, VMs, formats, the SLAT scheme's
translator and the TLB hierarchy. The core only composes what the plugins build."""
from __future__ import annotations

from typing import Any, Protocol

import zlib

import attrs
import numpy as np

from .config import Config, VmConfig, resolved_format
from .contents import ContentStore, VmContents
from .counters import Counters
from .datacache import DataCaches
from .dedup import DedupHost
from .memory import PhysicalMemory
from .paging import PageTableFormat
from .tlb import TlbHierarchy, TlbLevel
from .translation import Invalidation, Translation
from .errors import PluginError
from .walker import FAULT_LIMIT, Fault, HardwareView, WalkContext, stuck

__all__ = ["Invalidation", "Machine", "MachineContext", "Translation", "Translator", "build_machine"]


class Translator(Protocol):
    """What a SLAT scheme's factory returns: the software side of translation (guest
    kernel, hypervisor) and, in ``hw``, what the hardware walker walks."""

    hw: HardwareView

    def handle_fault(self, vm: int, asid: int, va: int, op: int, fault: Fault) -> list[Invalidation]:
        """Handle a fault a walk stopped at (map, back, exit, ...); count it; return the
        invalidations it implies. The walk is then restarted."""

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        """Carry out a control event (trace op >= 16); return the invalidations it implies.
        The process ops (fork, exec, exit, map_shared) come only to a translator whose
        ``process_events`` is True; a trace with them is refused under any other.

        Optional attributes for machines of several vCPUs (slatframe.coherence): a true
        ``flush_hypercall`` says the guest sends TLB shootdowns as one hypercall, a true
        ``pv_tlb_flush`` that it sends no IPI to a preempted vCPU (KVM's PV flush).

        Optional: ``demand_paging()`` returns, for each VM, a
        :class:`slatframe.guest.DemandPaging` when a not-present fault of a 1D walk in that
        VM is nothing but a count and that kernel's demand fault (so the compiled loop may
        serve it itself, :mod:`slatframe.engine.demand`), else None."""


@attrs.frozen
class MachineContext:
    """What a SLAT scheme's and a walk cache's factory receive."""

    config: Config
    host: PhysicalMemory
    vms: tuple[VmConfig, ...]
    guest_format: PageTableFormat
    host_format: PageTableFormat | None
    counters: Counters
    rng: np.random.Generator
    registry: Any = None
    store: ContentStore | None = None
    contents: tuple[VmContents, ...] = ()  #: initial page contents of each VM (for backings)
    core: int = 0  #: the core whose structures a walk cache's factory builds (machine.cores)

    def make_policy(self, choice: Any, sets: int, ways: int, structure: str) -> Any:
        """Build the TLB-policy object ``choice`` (a resolved plugin reference) for the
        array named ``structure``, with that array's own random generator."""
        record = self.registry.get("TLB policies", choice.name)
        return record.factory(choice.options, sets, ways, self.structure_rng(structure))

    def structure_rng(self, structure: str) -> np.random.Generator:
        """A generator that depends only on the run's seed and the structure's name, so
        every engine tier and every construction order draws the same numbers (and, on
        a machine of several cores, on its core)."""
        key = [self.config.experiment.seed, zlib.crc32(structure.encode())]
        return np.random.default_rng(key + [self.core] if self.core else key)


@attrs.define
class Core:
    """One core's translation hardware: its TLB hierarchy (whose ``shared`` levels are
    the same objects on every core), its walk caches and its walker."""

    tlb: TlbHierarchy
    walk_caches: list[Any]
    walker: Any


@attrs.define
class Machine:
    """A built machine: the scheme's translator, the walker, the TLBs and walk caches
    (``tlb``, ``walk_caches`` and ``walker`` are core 0's; ``cores`` has every core's)."""

    context: MachineContext
    translator: Any
    tlb: TlbHierarchy
    walk_caches: list[Any]
    walker: Any  #: the walk plugin's object; :class:`Walker` for the builtin radix walk
    data_caches: DataCaches | None = None  #: what walk references go through, if the cost model asks
    dedup: Any = None  #: the dedup strategy object, if the config names one
    dedup_host: DedupHost | None = None
    cores: list[Core] = attrs.Factory(list)
    coherence: Any = None  #: a slatframe.coherence.Coherence on a machine of several vCPUs

    def translate(self, vm: int, asid: int, va: int, op: int, core: int = 0) -> Translation:
        """Walk on ``core`` until a translation comes back, letting the scheme's software
        handle faults."""
        faults = 0
        walker = self.cores[core].walker if self.cores else self.walker
        while True:
            result = walker.walk(vm, asid, va, op)
            if not isinstance(result, Fault):
                return result
            faults += 1
            if faults > FAULT_LIMIT:
                raise stuck(vm, asid, va, result, self.context.config.machine.slat.name)
            for inv in self.translator.handle_fault(vm, asid, va, op, result):
                self.invalidate(inv)

    def invalidate(self, inv: Invalidation) -> None:
        """Carry out an invalidation. On a machine of several vCPUs, a CPU's own flush
        on its core, and the others through ``coherence``
        (:class:`slatframe.coherence.Coherence`: the guest's as a shootdown, the
        hypervisor's on every core, with what each costs). Without coherence (one vCPU)
        on the one core, and not at all when it is not ``local``."""
        coherence = self.coherence
        if coherence is None:
            if inv.local:
                for core in range(max(len(self.cores), 1)):
                    self.flush_core(inv, core)
        else:
            coherence.invalidate(inv)

    def flush_core(self, inv: Invalidation, core: int) -> None:
        """Carry out an invalidation in one core's TLBs and walk caches (a VM or context
        switch on it)."""
        tlb, caches = (self.cores[core].tlb, self.cores[core].walk_caches) if self.cores else (self.tlb,
                                                                                                self.walk_caches)
        tlb.invalidate(inv.scope, inv.vm, inv.asid, inv.va)
        for cache in caches:
            cache.invalidate(inv.scope, inv.vm, inv.asid)


def _walk_plugin(config: Config, registry: Any, hw: HardwareView) -> Any:
    """The walk record the scheme's hardware view names."""
    walks = registry.records.get("walks", {})
    name = getattr(hw, "walk", None)
    if name not in walks:
        raise PluginError(f"SLAT scheme {config.machine.slat.name!r} asks for walk {name!r}, which no plugin "
                          f"registers (registered walks: {', '.join(sorted(walks)) or 'none'}).")
    return walks[name].record


def build_machine(config: Config, registry: Any, counters: Counters | None = None) -> Machine:
    """Instantiate every plugin of ``config``."""
    counters = counters or Counters()
    store = ContentStore()
    contents = tuple(  # page contents matter only to dedup: without it, backings skip them
        VmContents(i, vm.memory >> 12, config.experiment.seed, vm.content.zero_fraction,
                   vm.content.pool_fraction, vm.content.pool_pages,
                   store.image_ids(vm.image, f"vms[{i}].image") if vm.image else None)
        for i, vm in enumerate(config.vms)) if config.dedup is not None else ()
    ctx = MachineContext(
        config=config,
        host=PhysicalMemory(config.machine.host_memory),
        vms=config.vms,
        guest_format=resolved_format(config, "guest", registry),
        host_format=resolved_format(config, "host", registry),
        counters=counters,
        rng=np.random.default_rng(config.experiment.seed),
        registry=registry,
        store=store,
        contents=contents,
    )
    scheme = registry.get("SLAT schemes", config.machine.slat.name)
    translator = scheme.factory(config.machine.slat.options, ctx)
    cost = registry.get("cost models", config.cost.name)
    spec = cost.data_caches(config.cost.options) if cost.data_caches is not None else None
    data_caches = DataCaches(spec, counters) if spec is not None and spec.levels else None
    walk = _walk_plugin(config, registry, translator.hw)
    cores: list[Core] = []
    shared: dict[int, TlbLevel] = {}
    for n in range(config.machine.cores):
        own = attrs.evolve(ctx, core=n) if n else ctx
        levels = []
        for i, lv in enumerate(config.tlb.levels):
            level = shared.get(i) or TlbLevel(lv, own.make_policy(lv.policy, lv.sets, lv.ways, f"tlb.{lv.name}"))
            if lv.shared:
                shared[i] = level
            levels.append(level)
        caches = [registry.get("walk caches", c.name).factory(c.options, own) for c in config.walk_caches]
        walker = walk.factory(WalkContext(translator.hw, ctx.host, counters, tuple(caches), data_caches))
        cores.append(Core(TlbHierarchy(levels, config.tlb.inclusion), caches, walker))
    first = cores[0]
    machine = Machine(ctx, translator, first.tlb, first.walk_caches, first.walker, data_caches, cores=cores)
    if config.dedup is not None:
        machine.dedup_host = DedupHost(translator, ctx.host, counters, store)
        translator.dedup = machine.dedup_host
        record = registry.get("dedup strategies", config.dedup.name)
        machine.dedup = record.factory(config.dedup.options, machine.dedup_host)
    return machine
