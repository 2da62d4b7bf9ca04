"""The compiled loop of the working tree against the loop of an earlier commit, on the
engine's own state, several compiled copies of each.

    python -m benchmarks --against REV [--accesses N] [--copies K] [--processes P]

``slatframe/engine/loop.py`` as it is and as it was at ``REV`` (``git show``; the rest of
the engine, walklib and the kernels are the working tree's) each go into the engine's
generated module, compiled ``K`` times apart (each copy its own module in
``$SLATFRAME_CACHE_DIR/cuts``), and called with the arguments the engine's own
``run_chunk`` passed to its loop in a warm pass (as ``benchmarks/cuts.py``). The copies
are timed in turn, each the best of ``rounds`` passes. Two copies of the same loop can
differ by more than a change does (this machine's runs have seen 1.5x between identical
copies), and the difference is where a process loads the code, not the compile: one
cached copy, loaded again in a fresh process, lands in the other speed group as often as
not (docs/performance.md, session 26). So with ``P`` > 1 the cached copies are loaded and
timed again in ``P - 1`` fresh processes, one after another, and each side's rows pool
every process's rates; a change counts only where the two sides' pooled rates part. The
rows give every rate (processes apart by ``|``) and each side's median.

When ``run`` takes other arguments at ``REV`` (the old loop cannot be called with what the
working tree's engine passes), the whole engines are compared instead, and it says so:
``slatframe/`` and ``plugins/`` at ``REV`` (``git archive``) and the working tree's each
time the same two configs in ``P`` fresh processes (at least 3), the two sides alternating,
each process its engine's own cached loop (one copy a side) and its own captured calls.
"""
from __future__ import annotations

import ast
import io
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numba

from slatframe.engine import codegen
from slatframe.engine.codegen import module_source, policy_ids
from slatframe.report import table

from .cuts import captured_calls, data_path_len, edited, load, pass_rate, walk_and_hit_configs


ROOT = Path(__file__).resolve().parents[1]  # the repository: benchmarks/, slatframe/, plugins/


def git(rev: str, args: list[str], what: str) -> bytes:
    """``git args`` in the repository (one sentence and exit if git cannot show ``what``)."""
    if not rev or rev.startswith("-"):  # (git would read it as an option)
        raise SystemExit(f"benchmarks --against {rev!r}: give a commit, branch or tag (not an option)")
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True)
    except FileNotFoundError:
        raise SystemExit(f"benchmarks --against {rev}: needs git on PATH") from None
    if done.returncode != 0:
        raise SystemExit(f"benchmarks --against {rev}: git cannot show {what} at {rev!r}: "
                         f"{done.stderr.decode(errors='replace').strip()[:200]}")
    return done.stdout


def loop_at(rev: str) -> str:
    """loop.py's text at commit ``rev``."""
    return git(rev, ["show", f"{rev}:slatframe/engine/loop.py"], "slatframe/engine/loop.py").decode()


def run_parameters(loop_text: str) -> list[str]:
    """The parameter names of ``run`` in ``loop_text`` (a loop.py)."""
    for node in ast.parse(loop_text).body:
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            return [a.arg for a in node.args.args]
    return []


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


def copy_rates(label: str, config, registry, trace, rev: str, old_loop: str, new_loop: str, copies: int,
               rounds: int) -> dict[str, list[float]]:
    """Each side's copies' rates (M accesses/s, copy order) on ``trace``: the loop
    ``old_loop`` (loop.py at ``rev``) and ``new_loop`` (the working tree's)."""
    _, calls = captured_calls(config, registry, trace)
    npath, lru = data_path_len(calls[0]), policy_ids(registry)["lru"]
    sides = {rev: edited(module_with_loop(registry, old_loop), [], npath, lru),
             "working tree": edited(module_with_loop(registry, new_loop), [], npath, lru)}
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
    return {side: [b / 1e6 for (s, _), b in zip(timed, best) if s == side] for side in sides}


def process_rates(rev: str, old_loop: str, new_loop: str, accesses: int, copies: int,
                  rounds: int) -> dict[str, dict]:
    """In this process: config label -> side -> its copies' rates, on the 2D walk-heavy
    and the end-to-end hit-heavy config (a fresh process's call loads the cached copies;
    both loops' texts come from the first process, so that an edit of loop.py meanwhile
    cannot put another loop's rates under the same row)."""
    return {label: copy_rates(label, config, registry, trace, rev, old_loop, new_loop, copies, rounds)
            for label, config, registry, trace in walk_and_hit_configs(accesses)}


def pooled_rows(runs: list[dict[str, dict]]) -> list[tuple]:
    """Rows (config, side, every rate with processes apart, median of all) of the rates of
    ``runs`` (one process_rates result per process)."""
    rows = []
    for label, sides in runs[0].items():
        for side in sides:
            each = [run[label][side] for run in runs]
            pooled = [r for rates in each for r in rates]
            text = " | ".join(" ".join(f"{r:.2f}" for r in rates) for rates in each)
            rows.append((label, side, text, f"{statistics.median(pooled):.2f}"))
    return rows


def engine_rates(accesses: int, rounds: int) -> dict[str, float]:
    """In this process, with whichever slatframe it imports: config label -> the engine's
    own loop's rate (M accesses/s, the best of ``rounds`` passes over its captured calls)."""
    rates = {}
    for label, config, registry, trace in walk_and_hit_configs(accesses):
        engine, calls = captured_calls(config, registry, trace)
        rates[label] = max(pass_rate(engine.k.run, calls, len(trace)) for _ in range(rounds)) / 1e6
    return rates


def whole_engines(rev: str, accesses: int, rounds: int, processes: int) -> list[dict[str, dict]]:
    """The engines of ``rev`` and of the working tree, each timed in ``processes`` fresh
    processes, alternating: one ``process_rates``-shaped result per pair of processes."""
    archive = git(rev, ["archive", "--format=tar", rev, "slatframe", "plugins"], "slatframe/ and plugins/")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        for _ in range(processes):
            run: dict[str, dict] = {}
            for side, first in ((rev, tmp), ("working tree", str(ROOT))):
                # (each side's process runs in its own folder: python -m puts it before PYTHONPATH)
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([first, str(ROOT)]))
                done = subprocess.run([sys.executable, "-m", "benchmarks.against", str(accesses), str(rounds)],
                                      cwd=first, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["(no message)"])[-1][:300]
                    raise SystemExit(f"benchmarks --against {rev}: the engine at {side} did not run the "
                                     f"benchmark's configs: {last}")
                for label, rate in json.loads(done.stdout.strip().splitlines()[-1]).items():
                    run.setdefault(label, {})[side] = [rate]
            runs.append(run)
    return runs


def against(rev: str, accesses: int, copies: int = 3, rounds: int = 15, processes: int = 1) -> None:
    """Print the working tree's loop against ``rev``'s on the 2D walk-heavy and the
    end-to-end hit-heavy config, timed in this process and ``processes - 1`` fresh ones
    (or, when ``run``'s parameters differ, the whole engines in fresh processes)."""
    old_loop, new_loop = loop_at(rev), codegen.LOOP_SOURCE.read_text()
    if run_parameters(old_loop) != run_parameters(new_loop):
        processes = max(3, processes)
        print(f"run takes other arguments at {rev}: the whole engines are compared instead ({rev}'s slatframe/ "
              f"and plugins/ against the working tree's, {processes} fresh processes a side, alternating)")
        print(f"{accesses:,} hit-heavy and {accesses // 4:,} walk-heavy accesses a pass; each process the best "
              f"of {rounds} passes of its engine's own loop")
        print(table(pooled_rows(whole_engines(rev, accesses, rounds, processes)),
                    ("config", "engine", "M accesses/s, each process", "median")))
        return
    runs = [process_rates(rev, old_loop, new_loop, accesses, copies, rounds)]
    for _ in range(processes - 1):  # one after another: processes timed at once would slow each other
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as fresh:
            runs.append(fresh.submit(process_rates, rev, old_loop, new_loop, accesses, copies, rounds).result())
    print(f"{accesses:,} hit-heavy and {accesses // 4:,} walk-heavy accesses a pass; each copy the best of {rounds} "
          f"passes, the copies taken in turn, in {processes} process{'es' if processes > 1 else ''}")
    print(table(pooled_rows(runs), ("config", "loop.py", "M accesses/s, each copy (processes apart by |)",
                                    "median")))


if __name__ == "__main__":  # one side of whole_engines: python -m benchmarks.against ACCESSES ROUNDS
    print(json.dumps(engine_rates(int(sys.argv[1]), int(sys.argv[2]))))
