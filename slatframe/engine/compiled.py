"""The compiled engine: the per-access loop of ``loop.py`` in numba over numpy state.

The machine is built exactly as for the reference tier (same software objects, same
memory); this module lays the hardware state (TLB arrays, walk caches, policy states)
out in int64 arrays and drives the jitted loop, which stops for the software side
(faults, control records, switches) and resumes after it.

State layout (``loop.py`` indexes these tuples by position):

- ``tlb``: sets[L], ways[L], side[L] (1 instruction, 2 data, 3 both), policy id[L],
  number of page sizes[L], page-size shifts[L, 4], tags ctx[L, S, W] (-1 invalid) and
  key[L, S, W] (virtual page number), values[L, S, W, 4] (page, shift, writable,
  dirty), inclusion (0 non-inclusive, 1 inclusive, 2 exclusive).
- ``wc``: kind[n], level mask[n], dimension mask[n], sets[n], ways[n], policy id[n],
  tables-only[n], ctx[n, S, W], key[n, S, W], values[n, S, W, 4], prefix probe order
  [2, P, 2] and its lengths[2], prefix caches per dimension [2, n] and lengths, entry
  caches per dimension [2, n] and lengths, nested TLBs [n] and length[1].
- ``pstate``: every structure's policy state, padded into one [n, R, C] array: TLB
  level l is structure l, walk cache j is structure L + j.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..machine import Machine
from ..translation import Invalidation
from ..walkcache import GUEST, HOST, EntryCache, PrefixCache, TranslationCache
from ..walker import Fault
from .codegen import load_kernels, policy_ids
from .reference import NO_HPA
from .software import SoftwareSide

SCOPES = {"page": 0, "asid": 1, "vm": 2, "all": 3}
INCLUSION = {"non-inclusive": 0, "inclusive": 1, "exclusive": 2}
SIDES = {"instruction": 1, "data": 2, "unified": 3}
KINDS = {PrefixCache: 1, EntryCache: 2, TranslationCache: 3}
FIXED_COUNTERS = ("accesses", "walks", "walk.refs", "walk.refs_guest", "walk.refs_host",
                  "walk.refs_max", "walk.aborted", "walk.refs_aborted", "walk.ad_writes",
                  "walk.on_hit", "tlb.splintered_fills")


def missing_kernels(config: Any, registry: Any) -> list[str]:
    """Why the compiled tier cannot run ``config`` (empty when it can)."""
    why = []
    policies = [(f"tlb.levels[{i}]", lv.policy.name) for i, lv in enumerate(config.tlb.levels)]
    for i, choice in enumerate(config.walk_caches):
        policy = getattr(choice.options, "policy", None)
        if policy is not None:
            policies.append((f"walk_caches[{i}]", policy.name))
    for where, name in policies:
        if registry.get("TLB policies", name).kernels is None:
            why.append(f"TLB policy {name!r} ({where}) has no compiled kernel")
    return why


def format_array(fmt: Any) -> np.ndarray:
    if fmt is None:
        return np.zeros(8, dtype=np.int64)
    return np.array([fmt.levels, fmt.present_mask, fmt.leaf_flag, fmt.frame_mask, fmt.write_flag,
                     fmt.accessed_flag, fmt.dirty_flag, 0], dtype=np.int64)


def _pad(states: list[np.ndarray]) -> np.ndarray:
    rows = max([s.shape[0] for s in states] + [1])
    cols = max([s.shape[1] for s in states] + [1])
    out = np.zeros((max(1, len(states)), rows, cols), dtype=np.int64)
    for i, s in enumerate(states):
        out[i, : s.shape[0], : s.shape[1]] = s
    return out


class CompiledEngine:
    """Runs chunks through one :class:`Machine` with the jitted loop."""

    name = "compiled"

    def __init__(self, machine: Machine, registry: Any) -> None:
        why = missing_kernels(machine.context.config, registry)
        if why:
            raise ConfigError(f"the compiled engine cannot run this config: {'; '.join(why)}.")
        self.machine = machine
        self.k = load_kernels(registry)
        ctx = machine.context
        config = ctx.config
        ids = policy_ids(registry)
        self.software = SoftwareSide(machine.translator, ctx.counters.values, len(ctx.vms),
                                     config.tlb.tagged, self.invalidate)
        states = []
        levels = config.tlb.levels
        L = len(levels)
        S = max(lv.sets for lv in levels)
        W = max(lv.ways for lv in levels)
        shifts = np.zeros((L, 4), dtype=np.int64)
        nshifts = np.zeros(L, dtype=np.int64)
        for i, lv in enumerate(levels):
            sizes = sorted(lv.page_sizes)
            nshifts[i] = len(sizes)
            shifts[i, : len(sizes)] = [s.bit_length() - 1 for s in sizes]
            record = registry.get("TLB policies", lv.policy.name)
            states.append(record.kernels.init(lv.policy.options, lv.sets, lv.ways,
                                              ctx.structure_rng(f"tlb.{lv.name}")))
        self.tlb = (
            np.array([lv.sets for lv in levels], dtype=np.int64),
            np.array([lv.ways for lv in levels], dtype=np.int64),
            np.array([SIDES[lv.side] for lv in levels], dtype=np.int64),
            np.array([ids[lv.policy.name] for lv in levels], dtype=np.int64),
            nshifts, shifts,
            np.full((L, S, W), -1, dtype=np.int64), np.zeros((L, S, W), dtype=np.int64),
            np.zeros((L, S, W, 4), dtype=np.int64),
            INCLUSION[config.tlb.inclusion],
        )
        self.wc = self._walk_caches(machine.walk_caches, registry, ids, states)
        self.pstate = _pad(states)
        hw = machine.translator.hw
        self.names = list(FIXED_COUNTERS)
        for lv in levels:
            self.names += [f"tlb.{lv.name}.hits", f"tlb.{lv.name}.misses"]
        for cache in machine.walk_caches:
            self.names += [cache.hits, cache.misses]
        self.cnt = np.zeros(len(self.names), dtype=np.int64)
        self.out = np.zeros(8, dtype=np.int64)
        self._hw_static = (format_array(hw.guest_format), format_array(hw.host_format),
                           1 if hw.host_format is not None else 0)
        self._host_roots = (np.asarray(hw.host_roots, dtype=np.int64) if hw.host_roots is not None
                            else np.zeros(1, dtype=np.int64))
        self._flags = (1 if hw.host_ad else 0, 1 if hw.table_access_dirties else 0)

    def _walk_caches(self, caches: list, registry: Any, ids: dict, states: list) -> tuple:
        n = len(caches)
        S = max([c.sets for c in caches] + [1])
        W = max([c.ways for c in caches] + [1])
        ctx = self.machine.context
        for c in caches:
            record = registry.get("TLB policies", c.policy.name)
            states.append(record.kernels.init(c.policy.options, c.sets, c.ways,
                                              ctx.structure_rng(f"walk_cache.{c.name}")))
        walker = self.machine.walker
        probe = np.zeros((2, max(1, 8 * n), 2), dtype=np.int64)
        nprobe = np.zeros(2, dtype=np.int64)
        per_dim = {key: (np.zeros((2, max(1, n)), dtype=np.int64), np.zeros(2, dtype=np.int64))
                   for key in ("prefix", "entry")}
        for dim in (GUEST, HOST):
            for cache in sorted(walker.prefix[dim], key=lambda c: min(c.levels)):
                for level in sorted(cache.levels):
                    probe[dim, nprobe[dim]] = (caches.index(cache), level)
                    nprobe[dim] += 1
            for key, found in (("prefix", walker.prefix[dim]), ("entry", walker.entry[dim])):
                array, count = per_dim[key]
                for cache in found:
                    array[dim, count[dim]] = caches.index(cache)
                    count[dim] += 1
        ntlb = np.array([caches.index(c) for c in walker.ntlb] or [0], dtype=np.int64)
        return (
            np.array([KINDS[type(c)] for c in caches] or [0], dtype=np.int64),
            np.array([sum(1 << lv for lv in c.levels) for c in caches] or [0], dtype=np.int64),
            np.array([sum(1 << d for d in c.dimensions) for c in caches] or [0], dtype=np.int64),
            np.array([c.sets for c in caches] or [1], dtype=np.int64),
            np.array([c.ways for c in caches] or [1], dtype=np.int64),
            np.array([ids[c.policy.name] for c in caches] or [0], dtype=np.int64),
            np.array([1 if getattr(c, "tables_only", False) else 0 for c in caches] or [0], dtype=np.int64),
            np.full((max(1, n), S, W), -1, dtype=np.int64), np.zeros((max(1, n), S, W), dtype=np.int64),
            np.zeros((max(1, n), S, W, 4), dtype=np.int64),
            probe, nprobe, *per_dim["prefix"], *per_dim["entry"], ntlb,
            np.array([len(walker.ntlb)], dtype=np.int64),
        )

    def invalidate(self, inv: Invalidation) -> None:
        scope = SCOPES[inv.scope]
        self.k.tlb_invalidate(self.tlb, self.pstate, scope, inv.vm, inv.asid, inv.va)
        if len(self.machine.walk_caches):
            self.k.wc_invalidate(self.wc, self.pstate, len(self.tlb[0]), scope, inv.vm, inv.asid)

    def _hw(self) -> tuple:
        gfmt, hfmt, two_d = self._hw_static
        roots = self.machine.translator.hw.guest_roots.array
        return (gfmt, hfmt, two_d, roots, self._host_roots, *self._flags)

    def run_chunk(self, chunk: np.ndarray, hpa_out: np.ndarray | None = None) -> None:
        """Process one chunk; ``hpa_out`` as in the reference engine."""
        k, software, translator = self.k, self.software, self.machine.translator
        host = self.machine.context.host
        vm_col = chunk["vm"].astype(np.int64)
        asid_col = chunk["asid"].astype(np.int64)
        op_col = chunk["op"].astype(np.int64)
        va_col = np.ascontiguousarray(chunk["vaddr"]).view(np.int64)
        record = hpa_out is not None
        hpa = hpa_out.view(np.int64) if record else np.zeros(1, dtype=np.int64)
        i, resume = 0, False
        while True:
            mem = (host.slot_of, host.words.view(np.int64))
            status, i = k.run(vm_col, asid_col, op_col, va_col, i, resume, hpa, record,
                              software.current_asid, software.last_vm, mem, self._hw(), self.tlb,
                              self.wc, self.pstate, self.cnt, self.out)
            resume = False
            if status == k.DONE:
                break
            vm, asid, op, va = int(vm_col[i]), int(asid_col[i]), int(op_col[i]), int(chunk["vaddr"][i])
            if status == k.FAULT:
                fault = Fault(int(self.out[0]), int(self.out[1]) & ((1 << 64) - 1))
                for inv in translator.handle_fault(vm, asid, va, op, fault):
                    self.invalidate(inv)
                resume = True
            elif software.record(vm, asid, op, va):
                if record:
                    hpa_out[i] = NO_HPA
                i += 1
        self._merge()

    def _merge(self) -> None:
        values = self.machine.context.counters.values
        for name, value in zip(self.names, self.cnt.tolist()):
            if not value:
                continue
            if name == "walk.refs_max":
                values[name] = max(values[name], value)
            else:
                values[name] += value
        self.cnt[:] = 0
