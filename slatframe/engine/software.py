"""Record-level software events, handled by the same code under every engine tier:
VM switches, context switches and control records go to the SLAT scheme's software,
and the invalidations they imply go to the tier's own TLBs and walk caches."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from ..trace import CONTEXT_SWITCH, OP_NAMES, PROCESS_OPS
from ..translation import Invalidation

EVENT_NAMES = {op: f"events.{name}" for op, name in OP_NAMES.items()}


class SoftwareSide:
    """The current asid of each VM (-1: none yet) and the VM that ran last, as numpy
    arrays the compiled loop reads too."""

    def __init__(self, translator: Any, values: dict, n_vms: int, tagged: bool,
                 invalidate: Callable[[Invalidation], None]) -> None:
        self.translator = translator
        self.values = values
        self.tagged = tagged
        self.invalidate = invalidate
        self.current_asid = np.full(n_vms, -1, dtype=np.int64)
        self.last_vm = np.full(1, -1, dtype=np.int64)

    def vm_switch(self, vm: int) -> None:
        """Record of ``vm`` after a record of another VM."""
        if self.last_vm[0] >= 0:
            self.values["events.vm_switch"] += 1
            if not self.tagged:  # no VPID: a VM switch drops every entry
                self.invalidate(Invalidation("all"))
        self.last_vm[0] = vm

    def context_switch(self, vm: int, asid: int) -> None:
        """``vm`` switches to ``asid`` (an op-16 record, or an access of another asid)."""
        self.values["events.context_switch"] += 1
        for inv in self.translator.control(vm, asid, CONTEXT_SWITCH, asid):
            self.invalidate(inv)
        if not self.tagged:  # no PCID: a CR3 load drops the VM's entries
            self.invalidate(Invalidation("vm", vm))
        self.current_asid[vm] = asid

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

    def record(self, vm: int, asid: int, op: int, va: int) -> bool:
        """The software part of one record, before any lookup. Returns True when the
        record was a control record (nothing left to do for it)."""
        if vm != self.last_vm[0]:
            self.vm_switch(vm)
        if op == CONTEXT_SWITCH:
            self.context_switch(vm, va)
            return True
        if op > CONTEXT_SWITCH:
            self.control(vm, asid, op, va)
            return True
        running = self.current_asid[vm]
        if running != asid:
            if running < 0:
                self.current_asid[vm] = asid
            else:  # an access of another address space: an implicit switch
                self.context_switch(vm, asid)
        return False
