"""The compiled loop of the working tree against the loop of an earlier commit, on the
engine's own state, several compiled copies of each.

    python -m benchmarks --against REV [--accesses N] [--copies K]

``slatframe/engine/loop.py`` as it is and as it was at ``REV`` (``git show``; the rest of
the engine, walklib and the kernels are the working tree's) each go into the engine's
generated module, compiled ``K`` times apart (each copy its own module in
``$SLATFRAME_CACHE_DIR/cuts``), and called with the arguments the engine's own
``run_chunk`` passed to its loop in a warm pass (as ``benchmarks/cuts.py``). The copies
are timed in turn, each the best of ``rounds`` passes. Two copies of the same loop can
differ by more than a change does (this machine's runs have seen 1.5x between identical
copies), so a change counts only where the ranges of its copies and the old loop's part;
the rows give every copy's rate and the median of each side. The old loop must take the
arguments the working tree's engine passes (a commit before a change of ``run``'s
arguments cannot be compared this way: it says so and stops).
"""
from __future__ import annotations

import statistics
import subprocess
import tempfile
from pathlib import Path

import numba

from slatframe.engine import codegen
from slatframe.engine.codegen import module_source, policy_ids
from slatframe.report import table

from .cuts import captured_calls, edited, load, pass_rate


def loop_at(rev: str) -> str:
    """loop.py's text at commit ``rev`` (one sentence and exit if git cannot give it)."""
    if not rev or rev.startswith("-"):  # (git would read it as an option)
        raise SystemExit(f"benchmarks --against {rev!r}: give a commit, branch or tag (not an option)")
    root = Path(codegen.__file__).resolve().parents[2]
    try:
        done = subprocess.run(["git", "-C", str(root), "show", f"{rev}:slatframe/engine/loop.py"],
                              capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(f"benchmarks --against {rev}: needs git on PATH") from None
    if done.returncode != 0:
        raise SystemExit(f"benchmarks --against {rev}: git cannot show slatframe/engine/loop.py at {rev!r}: "
                         f"{done.stderr.strip()[:200]}")
    return done.stdout


def module_with_loop(registry, loop_text: str) -> str:
    """The engine's generic module for ``registry`` with ``loop_text`` as its loop.py."""
    saved = codegen.LOOP_SOURCE
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loop.py"
        path.write_text(loop_text)
        codegen.LOOP_SOURCE = path
        try:
            return module_source(registry)
        finally:
            codegen.LOOP_SOURCE = saved


def against_rows(label: str, config, registry, trace, rev: str, old_loop: str, copies: int, rounds: int) -> list:
    """Rows (config, side, each copy's rate, median) of the loop ``old_loop`` (loop.py at
    ``rev``) and the working tree's, on ``trace``."""
    engine, calls = captured_calls(config, registry, trace)
    npath, lru = int(calls[0][30][1]), policy_ids(registry)["lru"]
    sides = {rev: edited(module_with_loop(registry, old_loop), [], npath, lru),
             "working tree": edited(module_source(registry), [], npath, lru)}
    if sides[rev] == sides["working tree"]:
        raise SystemExit(f"benchmarks --against {rev}: loop.py is the same at {rev} and in the working tree")
    timed = []
    for n in range(copies):
        for side, text in sides.items():
            tag = "".join(c if c.isalnum() else "_" for c in f"{label}_{side}")[:60]
            run = load(f"{text}\n# copy {n} of {side}\n", f"against_{tag}_{n}")
            try:
                pass_rate(run, calls, len(trace))  # compile or load
            except numba.core.errors.TypingError:
                raise SystemExit(f"benchmarks --against {rev}: loop.py at {side} does not compile with the "
                                 "arguments this engine passes its loop (run's arguments changed since)") from None
            timed.append((side, run))
    best = [0.0] * len(timed)
    for _ in range(rounds):
        for j, (_, run) in enumerate(timed):
            best[j] = max(best[j], pass_rate(run, calls, len(trace)))
    rows = []
    for side in sides:
        rates = [b / 1e6 for (s, _), b in zip(timed, best) if s == side]
        rows.append((label, side, " ".join(f"{r:.2f}" for r in rates), f"{statistics.median(rates):.2f}"))
    return rows


def against(rev: str, accesses: int, copies: int = 3, rounds: int = 15) -> None:
    """Print the working tree's loop against ``rev``'s on the 2D walk-heavy and the
    end-to-end hit-heavy config."""
    from slatframe.testing import build, tiny_config

    from .__main__ import CONFIGS, TLB, workload
    from .end_to_end import e2e_config

    old_loop = loop_at(rev)
    config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}],
                                         **CONFIGS["intel-ept 2D + TLB + PSC"]))
    rows = against_rows("walk-heavy 2D", config, registry, workload("walk-heavy", accesses // 4), rev, old_loop,
                        copies, rounds)
    config, registry = e2e_config()
    rows += against_rows("end-to-end hit-heavy", config, registry, workload("hit-heavy", accesses), rev, old_loop,
                         copies, rounds)
    print(f"{accesses:,} hit-heavy and {accesses // 4:,} walk-heavy accesses a pass; each copy the best of {rounds} "
          "passes, the copies taken in turn")
    print(table(rows, ("config", "loop.py", "M accesses/s, each copy", "median")))
