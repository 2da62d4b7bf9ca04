"""Keeping translations coherent on a machine of several vCPUs: who is flushed when a
mapping changes, and what it costs. The rules are Linux's and KVM's
(docs/architecture.md, "Keeping translations coherent"; each fact with its source in
docs/design/smp-coherence-facts.md).

No core ever uses a stale translation: a guest's flush reaches every core that may
hold the address space's entries, by IPI or when it next runs the space, before that
core's next access (``tests/test_coherence.py`` checks every hPA against one vCPU's):

- The guest kernel keeps each address space's ``mm_cpumask``: a vCPU enters it when it
  starts running the space and leaves it only when a shootdown reaches it while it runs
  another (Linux's lazy clearing). A guest invalidation (``by = "guest"``) is a
  ``flush_tlb_mm_range``: one per trace record, and one for consecutive unmap or protect
  records of one vCPU and address space (an munmap or mprotect of a range). It sends an
  IPI to every other vCPU of the mask that runs the space (to all of the mask when the
  operation frees page tables: exit, exec). A receiver running the space flushes it, as
  its kernel does: one INVLPG a page, or a full flush above 33 pages
  (``tlb_single_page_flush_ceiling``), which the sender's core takes too; the
  receiver's flush goes through the SLAT scheme's ``control`` as the guest's own INVLPG
  or CR3 load would, so a shadow-paging hypervisor takes its exits. A receiver that
  runs another space only leaves the mask. A vCPU that starts running a space flushed
  since it last ran it flushes it first (Linux's ``tlb_gen`` check in ``switch_mm``), and
  so does one that never ran a space flushed at all (Linux flushes a PCID it gives a
  space anew; here it matters because the TLB tags entries by VM, not by vCPU, so
  another vCPU of the VM may have left the space's stale entries on the core);
  a sender that runs another space flushes only what it sends, so it catches up too.
  A vCPU that runs on another core than it last ran on flushes its VM's entries there
  first (``tlb.migration_flushes``): KVM flushes a vCPU's whole TLB context when it is
  loaded on a new pCPU (``vmx_vcpu_load_vmcs``), since that pCPU may hold stale entries
  of the vCPU's; the model's TLB tags entries by VM, so the VM's entries on the core go.
  After an exit or exec the mask holds the vCPUs that run the asid (the new space's).
  Under a hypervisor each IPI sent is a VM exit (``vm_exits.ipi``: an ICR write)
  unless ``machine.ipi_virtualization``; receivers take posted interrupts (no exit).
  With KVM's paravirtual flush (the translator's ``pv_tlb_flush``), a vCPU preempted
  from its core gets no IPI; its TLB context is flushed for its next run.
  An enlightened guest (its translator's ``flush_hypercall`` is True) sends one flush
  hypercall instead (``vm_exits.hypercall``); the hypervisor flushes each target's whole
  TLB context and kicks the running ones (``vm_exits.remote_flush``).
- A hypervisor invalidation (``by = "hypervisor"``: a shadow zap, a dedup merge) is a
  ``kvm_flush_remote_tlbs`` of the VM, one per trace record (counted by the reason of its
  first invalidation: ``hypervisor.remote_flushes.<reason>``): every vCPU of the VM gets
  a flush request, and those running on a core other than the sender get a host IPI and
  exit (``vm_exits.remote_flush``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

import attrs
import numpy as np

from .smp import first_vcpus
from .translation import CPU, HYPERVISOR, Invalidation
from .trace import EXEC, EXIT, FLUSH, INVLPG, PROTECT, UNMAP

RANGE_OPS = (UNMAP, PROTECT)  #: consecutive records of these by one vCPU and space are one flush
FREES_TABLES = (EXEC, EXIT)  #: operations that free page tables: every vCPU of the mask gets the IPI
#: VM-exit reasons counted here, under any scheme with a hypervisor (backs_guest_memory)
EXIT_REASONS = ("ipi", "remote_flush", "hypercall")
#: Linux's tlb_single_page_flush_ceiling (arch/x86/mm/tlb.c): above it a range flush is a full flush
FLUSH_CEILING = 33


@attrs.define
class Shootdown:
    """A guest flush being gathered (one ``flush_tlb_mm_range``)."""

    vm: int
    asid: int
    vcpu: int  #: the sender, machine-wide
    op: int  #: the trace op of its first record
    scope: Hashable  #: the counters' scope its sender's events go to
    pages: list[int] = attrs.Factory(list)
    full: bool = False


class Coherence:
    """The coherence state of one run on a machine of several vCPUs."""

    def __init__(self, machine: Any, software: Any, hypervisor: bool,
                 flush_core: Callable[[Invalidation, int], None] | None = None,
                 private_entries: Callable[[], list[int]] | None = None) -> None:
        """``flush_core(inv, core)`` carries out an invalidation in one core's TLBs and walk
        caches, and ``private_entries()`` gives each core's valid entries in its private
        TLB levels: the engine tier's (by default the reference tier's, ``machine``'s)."""
        config = machine.context.config
        self.machine, self.software = machine, software
        self.counters = machine.context.counters
        self.values = self.counters.values
        self.per_asid = config.experiment.per_asid
        self.ipi_exits = hypervisor and not config.machine.ipi_virtualization
        self.hypercall = bool(getattr(machine.translator, "flush_hypercall", False))
        self.pv_flush = bool(getattr(machine.translator, "pv_tlb_flush", False))
        self.vm_of = software.vm_of.tolist()
        self.first = first_vcpus([vm.vcpus for vm in config.vms])
        self.core_of = np.full(len(self.vm_of), -1, dtype=np.int64)  # the core each vCPU last ran on
        self.flush_core = flush_core or machine.flush_core
        self.cores = config.machine.cores
        self.masks: dict[tuple[int, int], set[int]] = {}  # (vm, asid) -> mm_cpumask
        self.generation: dict[tuple[int, int], int] = {}  # (vm, asid) -> flushes so far (tlb_gen)
        self.seen: dict[tuple[int, int], int] = {}  # (vcpu, asid) -> the generation it last flushed
        self._removed = private_entries or self._reference_entries
        self.batch: Shootdown | None = None
        self.host: dict[int, tuple[int, Hashable, str]] = {}  # VM -> (sender, scope, reason) of a remote flush due
        self.vcpu, self.core, self.vm, self.asid, self.op = -1, 0, 0, 0, 0

    # -- what the engine tells it ------------------------------------------------------
    def pending(self) -> bool:
        """Whether a guest flush or a hypervisor's flush requests are gathered: they go out
        at the next record's :meth:`at`, unless it continues them."""
        return self.batch is not None or bool(self.host)

    def invalidate(self, inv: Invalidation) -> None:
        """An invalidation the software side returned: a CPU's own flush on its core, the
        others as :meth:`invalidated` says."""
        if inv.by == CPU:
            self.flush_core(inv, self.core)
        else:
            self.invalidated(inv)

    def at(self, vm: int, asid: int, op: int, vcpu: int, core: int) -> None:
        """The engine is about to run a record of machine-wide ``vcpu`` on ``core``."""
        b = self.batch
        if b is not None and not (op in RANGE_OPS and b.op in RANGE_OPS and (b.vcpu, b.vm, b.asid) == (vcpu, vm, asid)):
            self._shoot(b)
        if self.host:
            self._remote_flushes()
        self.vm, self.asid, self.op, self.vcpu, self.core = vm, asid, op, vcpu, core
        if 0 <= self.core_of[vcpu] != core:  # KVM flushes a vCPU's TLB context on a pCPU it moves to
            self.flush_core(Invalidation("vm", vm, by=CPU), core)
            self.values["tlb.migration_flushes"] += 1
        self.core_of[vcpu] = core

    def between(self) -> None:
        """Work between records follows (a dedup wake-up): no vCPU sends what it causes."""
        self.settle()
        self.vcpu, self.op = -1, -1

    def settle(self) -> None:
        """Count and carry out what is still gathered (before a warmup restart, a dedup
        wake-up, the end of the run)."""
        if self.batch is not None:
            self._shoot(self.batch)
        if self.host:
            self._remote_flushes()

    def running(self, vm: int, asid: int, vcpu: int, core: int) -> None:
        """``vcpu`` runs ``asid`` from now on (its first record, or a context switch): it
        enters the space's mm_cpumask, and flushes the space on its core first if it was
        flushed since this vCPU last flushed it, or ever, when this vCPU never ran it (as
        Linux flushes a PCID it gives a space anew): another vCPU of the VM may have left
        the space's entries on this core, which the model's TLB tags by VM, not by vCPU."""
        self.masks.setdefault((vm, asid), set()).add(vcpu)
        generation = self.generation.get((vm, asid), 0)
        if self.seen.get((vcpu, asid), 0) < generation:
            self.flush_core(Invalidation("asid", vm, asid, 0, CPU), core)
            self.values["tlb.catch_up_flushes"] += 1
        self.seen[(vcpu, asid)] = generation

    def invalidated(self, inv: Invalidation) -> None:
        """A guest's or the hypervisor's invalidation. The hypervisor's is carried out
        on every core now (KVM waits for its remote flush) and its flush requests
        gathered; the guest's on the sender's core now (unless ``local`` is False) and
        its shootdown gathered: the other cores flush when the IPIs reach them, or when
        they next run the address space."""
        if inv.by == HYPERVISOR:
            removed = self._removed()
            for core in range(self.cores):
                self.flush_core(inv, core)
            self._count_remote(removed, self.core if self.vcpu >= 0 else -1)  # between records: every core's
            self.host.setdefault(inv.vm, (self.vcpu, self.counters.scope, inv.reason or "other"))
            return
        if inv.local:
            self.flush_core(inv, self.core)
        b = self.batch
        if b is not None and (b.vm, b.asid) != (inv.vm, inv.asid):
            self._shoot(b)
            b = None
        if b is None:
            b = self.batch = Shootdown(inv.vm, inv.asid, self.vcpu, self.op, self.counters.scope)
        if inv.scope == "page" and not b.full:
            b.pages.append(inv.va)
            b.full = len(b.pages) > FLUSH_CEILING
        else:
            b.full = True

    # -- what it does ------------------------------------------------------------------
    def _shoot(self, b: Shootdown) -> None:
        """One guest flush_tlb_mm_range: the sender's full flush above the ceiling, the
        IPIs, each receiver's flush or its leaving the mask."""
        self.batch = None
        key = (b.vm, b.asid)
        generation = self.generation[key] = self.generation.get(key, 0) + 1
        asid_of = self.software.current_asid
        mask = self.masks.setdefault(key, set())
        if b.vcpu >= 0:
            if asid_of[b.vcpu] == b.asid:  # (a sender in another space flushed only what it sent: it catches up later)
                self.seen[(b.vcpu, b.asid)] = generation
            if b.full and self.core_of[b.vcpu] >= 0:
                self.flush_core(Invalidation("asid", b.vm, b.asid, 0, CPU), self.core_of[b.vcpu])
        frees = b.op in FREES_TABLES
        targets = sorted(t for t in mask if t != b.vcpu and (frees or asid_of[t] == b.asid))
        if self.hypercall:
            self._flush_by_hypercall(b, targets, generation)
        else:
            self._send_ipis(b, targets, generation)
        if b.op in FREES_TABLES:  # a new space: the vCPUs that run the asid now run it
            self.masks[key] = {t for t in range(self.first[b.vm], self.first[b.vm + 1]) if asid_of[t] == b.asid}

    def _send_ipis(self, b: Shootdown, targets: list[int], generation: int) -> None:
        """The IPIs of a shootdown and each receiver's flush, or its leaving the mask.
        With KVM's paravirtual flush, a preempted target gets no IPI: it is flagged,
        and KVM flushes its TLB context when it next runs (here: now, on its core)."""
        asid_of = self.software.current_asid
        mask = self.masks[(b.vm, b.asid)]
        if self.pv_flush:
            last = self.software.last_vcpu
            preempted = [t for t in targets if self.core_of[t] >= 0 and last[self.core_of[t]] != t]
            for t in preempted:
                self.seen[(t, b.asid)] = generation
                with self._charged(self._scope_of(t)):
                    removed = self._removed()
                    self.flush_core(Invalidation("vm", b.vm, 0, 0, CPU), self.core_of[t])
                    self.values["tlb.pv_flushes"] += 1
                    self._count_remote(removed, self.core_of[b.vcpu] if b.vcpu >= 0 else -1)
            targets = [t for t in targets if t not in preempted]
        if targets:
            with self._charged(b.scope):
                self.values["tlb.shootdowns"] += 1
                self.values["ipi.sent"] += len(targets)
                for _ in targets if self.ipi_exits else ():
                    self.counters.vm_exit("ipi")
        flushes = [(FLUSH, 0)] if b.full else [(INVLPG, va) for va in b.pages]
        for t in targets:
            with self._charged(self._scope_of(t)):
                self.values["ipi.received"] += 1
                if asid_of[t] != b.asid:  # it runs another space: it only leaves the mask
                    mask.discard(t)
                    continue
                self.seen[(t, b.asid)] = generation
                removed = self._removed()
                here = self.vcpu, self.core
                self.vcpu, self.core = t, self.core_of[t]  # the receiver's flush is its own
                try:
                    for op, va in flushes:
                        for inv in self.machine.translator.control(b.vm, b.asid, op, va):
                            self.invalidate(inv)
                finally:
                    self.vcpu, self.core = here
                self._count_remote(removed, self.core_of[b.vcpu] if b.vcpu >= 0 else -1)

    def _flush_by_hypercall(self, b: Shootdown, targets: list[int], generation: int) -> None:
        """An enlightened guest's shootdown: one flush hypercall (an exit) with the
        targets' mask; the hypervisor flushes each target's whole TLB context (KVM's
        kvm_hv_flush_tlb ignores the address space) and kicks those running on a core
        (a host IPI and an exit each); the others flush when they next run (their entries
        are dropped now, which is the same to every later access). No guest IPI, so no
        receiver leaves the mask."""
        if not targets:
            return
        with self._charged(b.scope):
            self.values["tlb.shootdowns"] += 1
            self.values["tlb.flush_hypercalls"] += 1
            self.counters.vm_exit("hypercall")
        last = self.software.last_vcpu
        for t in targets:
            core = self.core_of[t]
            self.seen[(t, b.asid)] = generation
            with self._charged(self._scope_of(t)):
                removed = self._removed()
                if core >= 0:
                    self.flush_core(Invalidation("vm", b.vm, 0, 0, CPU), core)
                    if last[core] == t:
                        self.counters.vm_exit("remote_flush")
                self._count_remote(removed, self.core_of[b.vcpu] if b.vcpu >= 0 else -1)

    def _remote_flushes(self) -> None:
        """The hypervisor's flush requests of this record: a host IPI and an exit for each
        vCPU of the VM running on a core, the sender's own excepted."""
        host, self.host = self.host, {}
        last = self.software.last_vcpu
        for vm, (sender, scope, reason) in sorted(host.items()):
            running = [t for t in range(self.first[vm], self.first[vm + 1])
                       if t != sender and self.core_of[t] >= 0 and last[self.core_of[t]] == t]
            with self._charged(scope):
                self.values["hypervisor.remote_flushes"] += 1
                self.values[f"hypervisor.remote_flushes.{reason}"] += 1
                self.values["hypervisor.flush_ipis"] += len(running)
            for t in running:
                with self._charged(self._scope_of(t)):
                    self.counters.vm_exit("remote_flush")

    # -- bookkeeping -------------------------------------------------------------------
    def _scope_of(self, vcpu: int) -> Hashable:
        vm = self.vm_of[vcpu]
        asid = int(self.software.current_asid[vcpu])
        return (vm, asid if self.per_asid and asid >= 0 else None, vcpu - self.first[vm],
                max(int(self.core_of[vcpu]), 0))

    @contextmanager
    def _charged(self, scope: Hashable) -> Iterator[None]:
        """Count what follows to ``scope``, then go back to the current one."""
        now = self.counters.scope
        self.counters.charge(scope)
        try:
            yield
        finally:
            self.counters.charge(now)

    def _reference_entries(self) -> list[int]:
        """Each core's valid entries in its private TLB levels (invalidations only drop them),
        in the reference tier's TLB objects."""
        shared = [lv.shared for lv in self.machine.context.config.tlb.levels]
        return [sum(len(lv.array.where) for lv, apart in zip(core.tlb.levels, shared) if not apart)
                for core in self.machine.cores]

    def _count_remote(self, before: list[int], own_core: int) -> None:
        """TLB entries dropped since ``before`` from the private levels of cores other
        than ``own_core``."""
        after = self._removed()
        gone = sum(b - a for core, (a, b) in enumerate(zip(after, before)) if core != own_core)
        if gone:
            self.values["tlb.remote_invalidations"] += gone
