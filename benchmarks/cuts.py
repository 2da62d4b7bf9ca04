"""Where the compiled loop's time goes, on the hit path and on 2D walk-heavy runs: the
engine's own loop beside copies of it with one piece cut or fixed at a time, on the
engine's own state.

    python -m benchmarks --cuts [--accesses N]

Each variant is the engine's generated module (:func:`slatframe.engine.codegen.module_source`)
with text edits to ``run`` and its helpers, written to ``$SLATFRAME_CACHE_DIR/cuts`` and
compiled there by numba (about half a minute each the first time, then cached). It is called
with the arguments the engine's own ``run_chunk`` passed to its loop in a warm pass
(captured, so every variant runs on the engine's tables, TLB and policy state), and timed
on further warm passes, the rows taken in turn, each the best of ``rounds``.

A cut that removes work (the TLB fill after a walk, say) changes what later passes find,
so its row says what that work costs, roughly; a cut that fixes what the engine reads at
run time (the hierarchy's shape, the policy) does the same work. No cut may change what
the tag arrays hold (the set-associative layout, which sets keep an index): every variant
runs on the same captured arrays, and one reading chains that another did not keep would
follow a cycle; compare layouts in separate processes. Rows are for finding
where the time goes, not results: no variant is checked against the reference tier.
An edit that no longer matches the loop's text stops the run with the cut's name
(``tests/test_cuts.py`` checks that every edit still applies).
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
import time
from typing import Callable

import numpy as np

from slatframe.counters import Counters
from slatframe.engine import make_engine
from slatframe.engine import loop
from slatframe.engine.codegen import cache_dir, module_source, policy_ids
from slatframe.machine import build_machine
from slatframe.report import table

# -- the cuts: name -> (old text, new text) edits of the generated module ------------------

_WALKS = """            if plain:
                plain_walk(slot_of, words, fmts, roots, cnt, vm, asid, va, op, out, memo)
            elif wk != 0:
                call_walk(wk, slot_of, words, wstate, dcfg, dctl, dtag, dage, cnt, vm, asid, va, op, out)
                count_walk(cnt, out)
            else:
                if out[WT_ON] != 0:
                    wt_begin(out, cnt, hitbase, i, vm, asid, va, op)
                walk(slot_of, words, fmts, roots, host_roots, wcfg, wtag[core], pstate, pk, occ, cstate[core], ck,
                     rows + core * ncaches, cnt, hitbase, vm, asid, va, op, out, dcfg, dctl, dtag, dage)
                if out[WT_ON] != 0:
                    wt_end(out, cnt, hitbase)
"""
_PLAIN = "\n            plain_walk(slot_of, words, fmts, roots, cnt, vm, asid, va, op, out, memo)\n"
_TAIL = """        if record_hpa:
            hpa_out[i] = hpa
        if dctl[1] != 0:
            dc_access(dcfg, dctl, dtag, dage, cnt2d[crow], hpa, 1)
        if track_writes and op == WRITE:
            content[hpa >> 12] = written[0]
            written[0] += 1
"""
_CHECKS = """            if vcpu != last_vcpu[core] or op >= CONTEXT_SWITCH:
                return EVENT, i
            running = current_asid[vcpu]
            if running != asid:
                if running >= 0 or smp:  # (a vCPU's first address space enters its mm_cpumask, in Python)
                    return EVENT, i
                current_asid[vcpu] = asid
            if smp and core_of[vcpu] != core:  # a vCPU's first record, or it moved: Python flushes (coherence.at)
                return EVENT, i
"""
_WALK_FILL = ("            tlb_fill_from_walk(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, vm, asid, va, "
              "value, shift,\n                               missed)\n")
_WALK_CALL = _WALKS[_WALKS.index("                walk("):_WALKS.rindex("                if out[WT_ON] != 0:")]
_FIXED = "".join(f"                out[{j}] = {v}\n" for j, v in ((0, 0), (2, "va & ~PAGE_MASK"), (3, 12), (4, 1), (5, 1)))
_WC_FILL = "    sa_place(wtag, pstate, pk, occ, pid, j, base + j, s, c, k, wc_of(wcfg, j, W_WAYS), False, value)\n"
_VICTIM = "        w = free if free >= 0 else policy_victim(pid, pstate, pk, si, s)"
_FILL = "    policy_fill(pid, pstate, pk, si, s, w)"  # (every set-associative fill: TLBs and walk caches)

CUTS: dict[str, list[tuple[str, str]]] = {
    # walk() and a walk plugin's call out of the loop: every walk is plain_walk's (timing only)
    "one walk": [(_WALKS, _PLAIN[1:])],
    "no walk": [(_PLAIN, "\n            out[0] = 0\n")],  # after "one walk": a miss translates to 0
    # hpa_out, data caches, written pages; hpa goes to a memo cell the loop never reads, so it is still computed
    "no tail": [(_TAIL, "        memo[0, 1] += hpa\n")],
    "no record checks": [(_CHECKS, "")],  # VM, asid and control records
    "no fill after a walk": [(_WALK_FILL, "")],
    # the radix walk, walk caches and all, replaced by a 4K translation of va to itself (timing only)
    "fixed translation": [(_WALK_CALL, _FIXED)],
    "no walk-cache fills": [(_WC_FILL, "    return\n")],
    "fill: one place": [(_WALK_FILL, "            tlb_place(tcfg, ttag, pstate, pk, occ, path[0], lr[path[0]], "
                                     "tlb_ctx(vm, asid, shift), va >> shift, value, missed)\n")],
    "LRU called directly": [(_VICTIM, "        w = free if free >= 0 else LRU_victim(pstate, si, s)"),
                            (_FILL, "    LRU_fill(pstate, si, s, w)")],
    "no victim check": [("""        if w < 0 or w >= ways:  # a policy kernel's bug must not write outside the set
            raise IndexError("a TLB policy's victim kernel returned a way outside its set")
""", "")],
    # what a shaped module (experiment.loop = "shaped") has for NPATH levels of 4K pages
    "shape compiled in": [("SHAPE_LEVELS = 0  # SHAPE", "SHAPE_LEVELS = NPATH"),
                          ("SHAPE_NSHIFTS = (0,)  # SHAPE", "SHAPE_NSHIFTS = (1,) * NPATH"),
                          ("SHAPE_SHIFTS = ((0, 0, 0, 0),)  # SHAPE", "SHAPE_SHIFTS = ((12, 0, 0, 0),) * NPATH")],
}

# per config: (what the row is, the cuts it applies)
VARIANTS = {
    "end-to-end config (native, one 16x4 LRU level, walk memo)": [
        ("the engine's loop, compiled apart", []),
        ("one walk function", ["one walk"]),
        ("  + no walk (misses translate to 0)", ["one walk", "no walk"]),
        ("  + no fill after a walk (the TLB keeps what it held)", ["one walk", "no fill after a walk"]),
        ("  + no tail", ["one walk", "no tail"]),
        ("  + no record checks", ["one walk", "no record checks"]),
        ("  + the fill one place", ["one walk", "fill: one place"]),
        ("  + LRU called directly", ["one walk", "LRU called directly"]),
        ("  + no victim check", ["one walk", "no victim check"]),
        ("  + the TLB's shape compiled in", ["one walk", "shape compiled in"]),
        ("  + all five above", ["one walk", "no tail", "no record checks", "fill: one place",
                                "LRU called directly", "shape compiled in"]),
    ],
    "Skylake-like hit-heavy (native, 16x4 + 128x12, PSCs)": [
        ("the engine's loop, compiled apart", []),
        ("one walk function", ["one walk"]),
        ("  + the TLB's shape compiled in", ["one walk", "shape compiled in"]),
        ("  + LRU called directly", ["one walk", "LRU called directly"]),
        ("  + no tail, no record checks, no walk", ["one walk", "no tail", "no record checks", "no walk"]),
        ("  + all of these", ["one walk", "no tail", "no record checks", "no walk",
                                           "shape compiled in", "LRU called directly"]),
        ("the TLB's shape compiled in (what a shaped loop has)", ["shape compiled in"]),
    ],
    "Skylake-like walk-heavy 2D (intel-ept, 16x4 + 128x12, PSCs in both dimensions)": [
        ("the engine's loop, compiled apart", []),
        ("no fill after a walk (the TLB keeps what it held)", ["no fill after a walk"]),
        ("no walk-cache fills (they keep what they held)", ["no walk-cache fills"]),
        ("the walk replaced by a fixed translation (TLB work only)", ["fixed translation"]),
        ("LRU called directly", ["LRU called directly"]),
        ("the TLB's shape compiled in (what a shaped loop has)", ["shape compiled in"]),
    ],
}


def edited(source: str, cuts: list[str], npath: int, lru_pid: int) -> str:
    """``source`` with ``cuts`` applied; raises naming a cut whose text is not found once."""
    out = source.replace("INLINE_POLICIES = ", f"NPATH = {npath}\nINLINE_POLICIES = ")
    out = out.replace("\nINLINE_POLICIES = ", f"\nLRU_victim = k{lru_pid}_victim\nLRU_fill = k{lru_pid}_fill\n"
                                               "INLINE_POLICIES = ", 1)
    for name in cuts:
        for old, new in CUTS[name]:
            if out.count(old) != 1:
                raise LookupError(f"cut {name!r}: its text is found {out.count(old)} times in the loop, not once "
                                  "(loop.py changed: update benchmarks/cuts.py)")
            out = out.replace(old, new)
    return out


def load(source: str, name: str) -> Callable:
    """The ``run`` of ``source``, as a module of its own in the cuts folder."""
    folder = cache_dir() / "cuts"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.exists() or path.read_text() != source:
        path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.run


def captured_calls(config, registry, trace: np.ndarray, chunk: int = 65536, shape=None):
    """An engine (its loop shaped for ``shape``, or generic) after a cold pass over
    ``trace``, and its loop's arguments of each call of a warm pass (one per chunk: a
    warm pass of one VM and asid neither faults nor stops)."""
    engine = make_engine("compiled", build_machine(config, registry, Counters()), registry, shape)
    calls: list[tuple] = []
    loop = engine._loop

    def capture(*args):
        calls.append(args)
        return loop(*args)

    engine._loop = capture
    for _ in range(2):  # a cold pass, then the warm pass whose calls are kept
        calls.clear()
        for i in range(0, len(trace), chunk):
            engine.run_chunk(trace[i:i + chunk])
    engine._loop = loop
    return engine, calls


def loop_arg(call: tuple, name: str):
    """Argument ``name`` of one captured call of the loop (by ``run``'s parameter names)."""
    return call[list(inspect.signature(loop.run.py_func).parameters).index(name)]


def data_path_len(call: tuple) -> int:
    """How many TLB levels a data access looks up, from one captured call of the loop."""
    return int(loop_arg(call, "npaths")[1])


def walk_and_hit_configs(accesses: int) -> list[tuple]:
    """(label, config, registry, trace) of the two configs the loop's tools profile and
    compare: 2D walk-heavy (Intel EPT, the Skylake-like TLB, PSCs in both dimensions,
    ``accesses // 4`` accesses) and the end-to-end hit-heavy one (``accesses``)."""
    from slatframe.testing import build, tiny_config

    from .__main__ import CONFIGS, TLB, workload
    from .end_to_end import e2e_config

    config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}],
                                         **CONFIGS["intel-ept 2D + TLB + PSC"]))
    return [("walk-heavy 2D", config, registry, workload("walk-heavy", accesses // 4)),
            ("end-to-end hit-heavy", *e2e_config(), workload("hit-heavy", accesses))]


def pass_rate(run: Callable, calls: list[tuple], accesses: int) -> float:
    start = time.perf_counter()
    for args in calls:
        status, _ = run(*args)
        if status != 0:
            raise RuntimeError("a variant stopped before the end of a chunk")
    return accesses / (time.perf_counter() - start)


def cut_rows(label: str, config, registry, trace: np.ndarray, rounds: int, yardstick) -> list:
    """Rows of ``VARIANTS[label]``: each variant's rate beside ``yardstick`` and the engine's loop."""
    # (imported here: against.py's whole-engine mode imports this module over older engines, without it)
    from slatframe.engine.compiled import walk_rows
    engine, calls = captured_calls(config, registry, trace)
    k, (tcfg, paths, npaths) = engine.k, (loop_arg(calls[0], name) for name in ("tcfg", "paths", "npaths"))
    lru = policy_ids(registry)["lru"]
    in_order = all(npaths[row] == npaths[1] and (paths[row, :npaths[row]] == np.arange(npaths[1])).all()
                   for row in (0, 1))
    if not ((tcfg[:, k.T_NSHIFTS] == 1).all() and (tcfg[:, k.T_SHIFT0] == 12).all() and in_order):
        raise ValueError(f"{label}: \"shape compiled in\" needs 4K-only levels, every one looked up in order")
    wcfg = walk_rows(k, loop_arg(calls[0], "wcfg"))
    builtin = (wcfg[:, k.W_KIND] > 0) & (wcfg[:, k.W_KIND] < k.START)
    if not ((tcfg[:, k.T_PID] == lru).all() and (wcfg[builtin, k.W_PID] == lru).all()):
        # else "LRU called directly" would time another policy than configured
        raise ValueError(f"{label}: \"LRU called directly\" needs every TLB level's and walk cache's policy to be LRU")
    source = module_source(registry)
    timed = [yardstick, ("the engine's loop", functools.partial(pass_rate, engine.k.run, calls, len(trace)))]
    for what, cuts in VARIANTS[label]:
        text = edited(source, cuts, int(npaths[1]), lru)
        name = "cut_" + "_".join(c.replace(" ", "").replace(":", "").replace("'", "") for c in cuts or ["none"])
        name += f"_{int(npaths[1])}"
        run = load(text, name)
        started = time.perf_counter()
        pass_rate(run, calls, len(trace))
        print(f"{label}: {what}: compiled or loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        timed.append((what, functools.partial(pass_rate, run, calls, len(trace))))
    best = [0.0] * len(timed)
    for _ in range(rounds):
        for j, (_, rate) in enumerate(timed):
            best[j] = max(best[j], rate())
    return [(label, what, f"{rate / 1e6:.2f}", f"{rate / best[1]:.2f}x") for (what, _), rate in zip(timed, best)]


def cuts(accesses: int, rounds: int = 15) -> None:
    """Print the cut variants' rates beside the engine's loop and the bare LRU loop."""
    from slatframe.testing import build, tiny_config

    from .__main__ import CONFIGS, TLB, bare_rate, radix_tables, workload
    from .end_to_end import e2e_config

    trace = workload("hit-heavy", accesses)
    pages = (trace["vaddr"] >> np.uint64(12)).astype(np.int64)
    yardstick = ("bare LRU loop, 16x4 (the issue's yardstick)", functools.partial(bare_rate, pages, 1, 16, 4))
    labels = list(VARIANTS)
    config, registry = e2e_config()
    rows = cut_rows(labels[0], config, registry, trace, rounds, yardstick)
    config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}],
                                         **CONFIGS["native + TLB + PSC"]))
    rows += cut_rows(labels[1], config, registry, trace, rounds, yardstick)
    walks = workload("walk-heavy", accesses // 4)
    pages = (walks["vaddr"] >> np.uint64(12)).astype(np.int64)
    yardstick = ("bare LRU loop 128x12 + a bare 4-level walk per miss",
                 functools.partial(bare_rate, pages, 1, tables=radix_tables(pages)))
    config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}],
                                         **CONFIGS["intel-ept 2D + TLB + PSC"]))
    rows += cut_rows(labels[2], config, registry, walks, rounds, yardstick)
    print(f"{accesses:,} hit-heavy and {accesses // 4:,} walk-heavy accesses per warm pass; each row the best of "
          f"{rounds} taken in turn")
    print(table(rows, ("config", "loop", "M accesses/s", "its rate / the engine's loop")))

