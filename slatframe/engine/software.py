"""Record-level software events, handled by the same code under every engine tier:
VM switches, context switches and control records go to the SLAT scheme's software,
and the invalidations they imply go to the tier's own TLBs and walk caches."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..trace import CONTEXT_SWITCH, OP_NAMES, PROCESS_OPS
from ..translation import Invalidation

EVENT_NAMES = {op: f"events.{name}" for op, name in OP_NAMES.items()}


class SoftwareSide:
    """The current asid of each vCPU (-1: none yet) and the vCPU that ran last on each
    core (-1: none yet), as numpy arrays the compiled loop reads too. vCPUs are numbered
    machine-wide (:meth:`slatframe.smp.SmpContext.first_vcpu`); with one vCPU per VM, a
    VM's vCPU number is its VM index.

    ``invalidate`` carries out an invalidation on every core (a mapping changed);
    ``flush_core(inv, core)`` on one core only (its VM or context switch)."""

    def __init__(self, translator: Any, values: dict, vcpus: Sequence[int], tagged: bool,
                 invalidate: Callable[[Invalidation], None], cores: int = 1,
                 flush_core: Callable[[Invalidation, int], None] | None = None) -> None:
        self.translator = translator
        self.values = values
        self.tagged = tagged
        self.invalidate = invalidate
        self.flush_core = flush_core or (lambda inv, core: invalidate(inv))
        self.vm_of = np.repeat(np.arange(len(vcpus), dtype=np.int64), vcpus)  # each vCPU's VM
        self.current_asid = np.full(len(self.vm_of), -1, dtype=np.int64)
        self.last_vcpu = np.full(cores, -1, dtype=np.int64)
        self.coherence: Any = None  #: a slatframe.coherence.Coherence, told which space each vCPU runs

    def vcpu_switch(self, vm: int, vcpu: int, core: int) -> None:
        """A record of ``vcpu`` (of ``vm``) after a record of another vCPU on ``core``."""
        last = self.last_vcpu[core]
        if last >= 0:
            self.values["events.vm_switch" if self.vm_of[last] != vm else "events.vcpu_switch"] += 1
            if not self.tagged:  # no VPID: entering another vCPU drops every entry
                self.flush_core(Invalidation("all"), core)
        self.last_vcpu[core] = vcpu

    def context_switch(self, vm: int, asid: int, vcpu: int | None = None, core: int = 0) -> None:
        """``vcpu`` of ``vm`` switches to ``asid`` (an op-16 record, or an access of another
        asid); ``vcpu`` None: the VM's only one."""
        self.values["events.context_switch"] += 1
        for inv in self.translator.control(vm, asid, CONTEXT_SWITCH, asid):
            self.invalidate(inv)
        if not self.tagged:  # no PCID: a CR3 load drops the VM's entries
            self.flush_core(Invalidation("vm", vm), core)
        self._runs(vm, asid, vm if vcpu is None else vcpu, core)

    def _runs(self, vm: int, asid: int, vcpu: int, core: int) -> None:
        self.current_asid[vcpu] = asid
        if self.coherence is not None:
            self.coherence.running(vm, asid, vcpu, core)

    def control(self, vm: int, asid: int, op: int, arg: int) -> None:
        """A control record other than a context switch."""
        if op in PROCESS_OPS and not getattr(self.translator, "process_events", False):
            raise ConfigError(
                f"the trace has a {OP_NAMES[op]} record (op {op}, vm {vm}, asid {asid}), and the SLAT scheme's "
                f"translator ({type(self.translator).__name__}) does not model the guest's processes (it does not "
                "set process_events = True); run it with a scheme that does, or without process events.")
        self.values[EVENT_NAMES[op]] += 1
        for inv in self.translator.control(vm, asid, op, arg):
            self.invalidate(inv)

    def record(self, vm: int, asid: int, op: int, va: int, vcpu: int | None = None, core: int = 0) -> bool:
        """The software part of one record, before any lookup; ``vcpu`` is the
        machine-wide vCPU that issued it (None: the VM's only one), ``core`` the core it
        runs on. Returns True when the record was a control record (nothing left to do
        for it)."""
        if vcpu is None:
            vcpu = vm
        if vcpu != self.last_vcpu[core]:
            self.vcpu_switch(vm, vcpu, core)
        if op == CONTEXT_SWITCH:
            self.context_switch(vm, va, vcpu, core)
            return True
        if op > CONTEXT_SWITCH:
            self.control(vm, asid, op, va)
            return True
        running = self.current_asid[vcpu]
        if running != asid:
            if running < 0:
                self._runs(vm, asid, vcpu, core)
            else:  # an access of another address space: an implicit switch
                self.context_switch(vm, asid, vcpu, core)
        return False
