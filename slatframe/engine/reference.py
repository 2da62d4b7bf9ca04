"""The reference engine: the per-access loop in plain Python over plugin objects.

It is the executable specification of a run: each record is looked up in the TLB
hierarchy level by level; a miss in every level asks the SLAT scheme's translator to
walk; control events go to the translator, which returns the TLB invalidations they imply.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..machine import Machine
from ..trace import CONTEXT_SWITCH, OP_NAMES, WRITE

EVENT_NAMES = {op: f"events.{name}" for op, name in OP_NAMES.items()}


class ReferenceEngine:
    """Runs chunks through one :class:`Machine`; keeps the current asid of each VM."""

    name = "reference"

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.current_asid: dict[int, int] = {}
        levels = machine.tlb.levels
        self._hit_names = [f"tlb.{lv.name}.hits" for lv in levels]
        self._miss_names = [f"tlb.{lv.name}.misses" for lv in levels]

    def run_chunk(self, chunk: np.ndarray, hpa_out: np.ndarray | None = None) -> None:
        """Process one chunk; if ``hpa_out`` is given, store each access's hPA there
        (control events get 2**64-1)."""
        values = self.machine.context.counters.values
        translator = self.machine.translator
        tlb = self.machine.tlb
        levels = tlb.levels
        hit_names, miss_names = self._hit_names, self._miss_names
        current = self.current_asid
        vms, asids, ops, vaddrs = (chunk[f].tolist() for f in ("vm", "asid", "op", "vaddr"))
        for i in range(len(ops)):
            vm, asid, op, va = vms[i], asids[i], ops[i], vaddrs[i]
            if op >= CONTEXT_SWITCH:
                if op == CONTEXT_SWITCH:
                    asid = va
                    current[vm] = asid
                values[EVENT_NAMES[op]] += 1
                for inv in translator.control(vm, asid, op, va):
                    tlb.invalidate(*inv)
                if hpa_out is not None:
                    hpa_out[i] = np.iinfo(np.uint64).max
                continue
            if current.get(vm) != asid:
                if vm in current:  # an access of another address space: an implicit switch
                    values["events.context_switch"] += 1
                    for inv in translator.control(vm, asid, CONTEXT_SWITCH, asid):
                        tlb.invalidate(*inv)
                current[vm] = asid
            values["accesses"] += 1
            found = None
            for depth, level in enumerate(levels):
                found = level.lookup(vm, asid, va)
                if found is not None:
                    values[hit_names[depth]] += 1
                    for upper in levels[:depth]:
                        upper.fill(vm, asid, va, found)
                    break
                values[miss_names[depth]] += 1
            if found is None or (op == WRITE and not (found.writable and found.dirty)):
                if found is not None:  # a write through a read-only or clean entry walks
                    values["walk.on_hit"] += 1
                found = translator.translate(vm, asid, va, op)
                for level in levels:
                    level.fill(vm, asid, va, found)
            if hpa_out is not None:
                hpa_out[i] = found.page + (va & (found.size - 1))

    def run(self, chunks: Iterable[np.ndarray]) -> None:
        for chunk in chunks:
            self.run_chunk(chunk)
