"""The reference engine: the per-access loop in plain Python over plugin objects.

It is the executable specification of a run: each access is looked up in the TLB
levels of its side in order; a miss in all of them (or a write through a read-only or
clean entry) asks the machine to translate: the hardware walker walks, and the SLAT
scheme's software handles any fault before the walk restarts. Control events go to the
scheme's software, which returns the invalidations they imply.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..machine import Invalidation, Machine
from ..trace import CONTEXT_SWITCH, OP_NAMES, WRITE

EVENT_NAMES = {op: f"events.{name}" for op, name in OP_NAMES.items()}
NO_HPA = np.iinfo(np.uint64).max


class ReferenceEngine:
    """Runs chunks through one :class:`Machine`; keeps the current asid of each VM and the
    VM that ran last (for untagged TLBs)."""

    name = "reference"

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.current_asid: dict[int, int] = {}
        self.last_vm: int | None = None
        self.tagged = machine.context.config.tlb.tagged
        levels = machine.tlb.levels
        self._hit_names = [f"tlb.{lv.name}.hits" for lv in levels]
        self._miss_names = [f"tlb.{lv.name}.misses" for lv in levels]

    def _switch(self, vm: int, asid: int) -> None:
        """A context switch of ``vm`` to ``asid`` (explicit or implied by an access)."""
        machine = self.machine
        self.machine.context.counters.values["events.context_switch"] += 1
        for inv in machine.translator.control(vm, asid, CONTEXT_SWITCH, asid):
            machine.invalidate(inv)
        if not self.tagged:  # no PCID: a CR3 load drops the VM's entries
            machine.invalidate(Invalidation("vm", vm))
        self.current_asid[vm] = asid

    def run_chunk(self, chunk: np.ndarray, hpa_out: np.ndarray | None = None) -> None:
        """Process one chunk; if ``hpa_out`` is given, store each access's hPA there
        (control events get 2**64-1)."""
        machine = self.machine
        values = machine.context.counters.values
        tlb = machine.tlb
        levels = tlb.levels
        hit_names, miss_names = self._hit_names, self._miss_names
        current = self.current_asid
        vms, asids, ops, vaddrs = (chunk[f].tolist() for f in ("vm", "asid", "op", "vaddr"))
        for i in range(len(ops)):
            vm, asid, op, va = vms[i], asids[i], ops[i], vaddrs[i]
            if vm != self.last_vm:
                if self.last_vm is not None:
                    values["events.vm_switch"] += 1
                    if not self.tagged:  # no VPID: a VM switch drops every entry
                        machine.invalidate(Invalidation("all"))
                self.last_vm = vm
            if op == CONTEXT_SWITCH:
                self._switch(vm, va)
                if hpa_out is not None:
                    hpa_out[i] = NO_HPA
                continue
            if op > CONTEXT_SWITCH:
                values[EVENT_NAMES[op]] += 1
                for inv in machine.translator.control(vm, asid, op, va):
                    machine.invalidate(inv)
                if hpa_out is not None:
                    hpa_out[i] = NO_HPA
                continue
            running = current.get(vm)
            if running != asid:
                if running is None:
                    current[vm] = asid
                else:  # an access of another address space: an implicit switch
                    self._switch(vm, asid)
            values["accesses"] += 1
            path = tlb.path(op)
            found = None
            for depth, index in enumerate(path):
                hit = levels[index].lookup(vm, asid, va)
                if hit is not None:
                    values[hit_names[index]] += 1
                    tag, found = hit
                    tlb.fill_from_hit(path, depth, tag, found)
                    break
                values[miss_names[index]] += 1
            if found is None or (op == WRITE and not (found.writable and found.dirty)):
                if found is not None:  # a write through a read-only or clean entry walks
                    values["walk.on_hit"] += 1
                found = machine.translate(vm, asid, va, op)
                tlb.fill_from_walk(path, vm, asid, va, found)
            if hpa_out is not None:
                hpa_out[i] = found.page + (va & (found.size - 1))

    def run(self, chunks: Iterable[np.ndarray]) -> None:
        for chunk in chunks:
            self.run_chunk(chunk)
