"""The reference engine: the per-access loop in plain Python over plugin objects.

It is the executable specification of a run: each access is looked up in the TLB
levels of its side in order; a miss in all of them (or a write through a read-only or
clean entry) asks the machine to translate: the hardware walker walks, and the SLAT
scheme's software handles any fault before the walk restarts. Software events (VM and
context switches, control records) go through :class:`SoftwareSide`, shared with the
compiled tier.
"""
from __future__ import annotations

import numpy as np

from ..datacache import DATA
from ..machine import Machine
from ..trace import WRITE
from ..walk_record import WalkRecorder, WalkSampling, WalkTrace
from ..coherence import Coherence
from ..smp import by_rule, first_vcpus, is_smp
from .software import SoftwareSide

NO_HPA = np.iinfo(np.uint64).max


class ReferenceEngine:
    """Runs chunks through one :class:`Machine`."""

    name = "reference"

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        ctx = machine.context
        self.software = SoftwareSide(machine.translator, ctx.counters.values, [vm.vcpus for vm in ctx.vms],
                                     ctx.config.tlb.tagged, machine.invalidate, ctx.config.machine.cores,
                                     machine.flush_core)
        self.first_vcpu = first_vcpus([vm.vcpus for vm in ctx.vms])
        self.coherence = None
        if is_smp(ctx.config):
            scheme = ctx.registry.get("SLAT schemes", ctx.config.machine.slat.name)
            self.coherence = machine.coherence = self.software.coherence = Coherence(
                machine, self.software, scheme.backs_guest_memory)
        self.invalidate = machine.invalidate
        self.track_writes = machine.dedup is not None  # contents matter only to dedup
        caches = machine.data_caches
        self.data_caches = caches if caches is not None and caches.spec.data_accesses else None
        levels = machine.tlb.levels
        self._hit_names = [f"tlb.{lv.name}.hits" for lv in levels]
        self._miss_names = [f"tlb.{lv.name}.misses" for lv in levels]
        self.per_asid = ctx.config.experiment.per_asid
        self.records = 0  # trace records run so far

    def settle(self) -> None:
        """Carry out and count what coherence still gathers (a shootdown of the last
        records): before a warmup restart, a dedup wake-up and the end of the run."""
        if self.coherence is not None:
            self.coherence.settle()

    def between(self) -> None:
        """Work between records follows (a dedup wake-up)."""
        if self.coherence is not None:
            self.coherence.between()

    def record_walks(self, sampling: WalkSampling) -> None:
        """Record the walks ``sampling`` takes (:mod:`slatframe.walk_record`)."""
        self.machine.walker.recorder = WalkRecorder(sampling)

    def walk_trace(self) -> WalkTrace:
        return self.machine.walker.recorder.trace()

    def run_chunk(self, chunk: np.ndarray, hpa_out: np.ndarray | None = None,
                  vcpu: np.ndarray | None = None, core: np.ndarray | None = None,
                  home: np.ndarray | None = None) -> None:
        """Process one chunk; if ``hpa_out`` is given, store each access's hPA there
        (control events get 2**64-1). ``vcpu`` (each record's vCPU within its VM) and
        ``core``, or ``home`` (the default rule), place the records on a machine of
        several cores or vCPUs (:class:`slatframe.smp.Placed`); without them every record
        runs on core 0 as its VM's only vCPU."""
        if home is not None:
            vcpu, core = by_rule(chunk, [vm.vcpus for vm in self.machine.context.vms], home)
        machine, software = self.machine, self.software
        values = machine.context.counters.values
        hit_names, miss_names = self._hit_names, self._miss_names
        vms, asids, ops, vaddrs = (chunk[f].tolist() for f in ("vm", "asid", "op", "vaddr"))
        smp = vcpu is not None
        vcpus = vcpu.tolist() if smp else None
        cores = core.tolist() if smp else None
        first, all_cores = self.first_vcpu, machine.cores
        track, store, host = self.track_writes, machine.context.store, machine.context.host
        data_caches = self.data_caches
        charge, per_asid = machine.context.counters.charge, self.per_asid
        recorder, base = getattr(machine.walker, "recorder", None), self.records
        self.records += len(ops)
        c, k, tlb, coherence = 0, 0, machine.tlb, self.coherence
        for i in range(len(ops)):
            vm, asid, op, va = vms[i], asids[i], ops[i], vaddrs[i]
            if smp:
                c, k = cores[i], vcpus[i]
                tlb = all_cores[c].tlb
                charge((vm, asid if per_asid else None, k, c))  # this record's work is its vCPU's and core's
                coherence.at(vm, asid, op, first[vm] + k, c)
            else:
                charge((vm, asid) if per_asid else vm)  # this record's work is its VM's (and asid's)
            if recorder is not None:
                recorder.record = base + i
            if software.record(vm, asid, op, va, first[vm] + k, c):
                if hpa_out is not None:
                    hpa_out[i] = NO_HPA
                continue
            values["accesses"] += 1
            path = tlb.path(op)
            levels = tlb.levels
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
                found = machine.translate(vm, asid, va, op, c)
                tlb.fill_from_walk(path, vm, asid, va, found)
            if hpa_out is not None or (track and op == WRITE) or data_caches is not None:
                hpa = found.page + (va & (found.size - 1))
                if data_caches is not None:
                    data_caches.access(hpa, DATA)
                if hpa_out is not None:
                    hpa_out[i] = hpa
                if track and op == WRITE:  # the page now holds new content
                    host.content[hpa >> 12] = store.written()
