"""The simulated machine a run drives: host memory, VMs, formats, the SLAT scheme's
translator and the TLB hierarchy. The core only composes what the plugins build."""
from __future__ import annotations

from typing import Any, Protocol

import attrs
import numpy as np

from .config import Config, VmConfig, resolved_format
from .counters import Counters
from .memory import PhysicalMemory
from .paging import PageTableFormat
from .tlb import TlbHierarchy, TlbLevel
from .translation import Invalidation, Translation

__all__ = ["Invalidation", "Machine", "MachineContext", "Translation", "Translator", "build_machine"]


class Translator(Protocol):
    """What a SLAT scheme's factory returns."""

    def translate(self, vm: int, asid: int, va: int, op: int) -> Translation:
        """Walk for ``va`` (a TLB miss), handling any fault; count what it does."""

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        """Carry out a control event (trace op >= 16); return the TLB invalidations it implies."""


@attrs.frozen
class MachineContext:
    """What a SLAT scheme's factory receives."""

    config: Config
    host: PhysicalMemory
    vms: tuple[VmConfig, ...]
    guest_format: PageTableFormat
    host_format: PageTableFormat | None
    counters: Counters
    rng: np.random.Generator


@attrs.define
class Machine:
    """A built machine: the translator of the scheme and the TLB hierarchy."""

    context: MachineContext
    translator: Any
    tlb: TlbHierarchy


def build_machine(config: Config, registry: Any, counters: Counters | None = None) -> Machine:
    """Instantiate every plugin of ``config``."""
    counters = counters or Counters()
    rng = np.random.default_rng(config.experiment.seed)
    ctx = MachineContext(
        config=config,
        host=PhysicalMemory(config.machine.host_memory),
        vms=config.vms,
        guest_format=resolved_format(config, "guest", registry),
        host_format=resolved_format(config, "host", registry),
        counters=counters,
        rng=rng,
    )
    scheme = registry.get("SLAT schemes", config.machine.slat.name)
    translator = scheme.factory(config.machine.slat.options, ctx)
    levels = []
    for level_cfg in config.tlb.levels:
        policy = registry.get("TLB policies", level_cfg.policy.name)
        levels.append(TlbLevel(level_cfg, policy.factory(level_cfg.policy.options, level_cfg.sets,
                                                         level_cfg.ways, rng)))
    return Machine(ctx, translator, TlbHierarchy(levels))
