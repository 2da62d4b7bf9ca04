"""What a user waits for: `slatframe run` from a trace file to its result, in a fresh
process per run, beside the bare LRU loop over the same pages (alone, and walking real
tables on each miss) and the engine's own cold and warm passes over the same records in
memory (no file, no start-up).

    python -m benchmarks --end-to-end [--accesses N]

The trace is the benchmark's hit-heavy one (zipf(1.1) over 1024 pages), written as an
uncompressed npz, a deflated npz (slatframe's own writer's default) and valgrind lackey
text; the config is issue 17's: native paging, one 16-set 4-way LRU TLB level, no walk
cache, fixed cost. The bare loop looks up and fills the same 16x4 geometry and does
nothing on a miss, so the ratio also holds the engine's page walks (a miss in the
TLB is a walk of the 4-level tables in simulated memory: most of these accesses).
Every engine row is taken three times: with the compiled tier's generic loop, with its
loop shaped for this config's TLB, and with its loop for this whole TLB config
(``experiment.loop``: generic, shaped, exact). A last row, taken in turn with the
runs, is numba's own start-up: a fresh process that imports numba and calls one function
from numba's cache, which every compiled run pays before its first access. Processes run
with Python's bytecode cache on, as a user's shell runs them (``PYTHONDONTWRITEBYTECODE``
is dropped from their environment: with it, every process recompiles slatframe's modules).
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from slatframe.config import load_config
from slatframe.engine.shape import shape_of
from slatframe.report import table
from slatframe.tracefile import write_npz

CONFIG = """\
[experiment]
name = "end-to-end"
engine = "compiled"
loop = "{loop}"
[machine]
slat = "native"
host_memory = "16G"
[[tlb.levels]]
name = "l1"
sets = 16
ways = 4
policy = "lru"
page_sizes = ["4K"]
latency = 1
[[vms]]
name = "vm0"
memory = "8G"
[workload]
source = "{source}"
path = "{path}"
[cost]
model = "fixed"
"""

LOOPS = ("generic", "shaped", "exact")  #: experiment.loop of the runs from files

RUN = """
import sys
from slatframe.cli import entry  # what the slatframe command runs
sys.argv = ["slatframe", "run", sys.argv[1], "--out", sys.argv[2], "--quiet"]
entry()
"""


FLOOR = """
import numba
import numpy as np


@numba.njit(cache=True)
def total(values):
    s = 0
    for v in values:
        s += v
    return s


total(np.zeros(3, dtype=np.uint64))
"""

#: the subprocesses' environment: as a user's shell (see the module's docstring)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def e2e_config(loop: str = "generic"):
    """(config, registry) of CONFIG, for passes over records in memory: the engine runs
    the same whatever file the records came from."""
    from slatframe.trace import TRACE_DTYPE
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.toml"
        path.write_text(CONFIG.format(source="npz", path="t.npz", loop=loop))
        write_npz(Path(tmp) / "t.npz", np.zeros(1, dtype=TRACE_DTYPE), compressed=False)
        return load_config(path)


def one_run(config: Path, out: Path) -> dict:
    """One `slatframe run` in a fresh process: the whole process's seconds (from before
    the interpreter starts), the run's own (``wall_time_s`` less ``compile_time_s``, the
    engine's loading) and the engine's loading."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN, str(config), str(out)], check=True, capture_output=True, env=ENV)
    whole = time.perf_counter() - start
    result = json.loads(out.read_text())
    return {"whole": whole, "run": result["wall_time_s"] - result["compile_time_s"],
            "load": result["compile_time_s"], "metrics": result["metrics"]}


def floor_run(script: Path) -> float:
    """Seconds of one fresh process running :data:`FLOOR` (numba's start-up)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, env=ENV)
    return time.perf_counter() - start


def run_files(files: dict, accesses: int, bare: float, rounds: int, where: Path) -> tuple[list, dict]:
    """A table row per trace file and loop (best of ``rounds`` fresh processes, the runs
    taken in turn, so that a slow minute of a shared machine slows every row alike), the
    row of numba's start-up taken in turn with them, and the counts, which every run must
    give alike."""
    keys = list(itertools.product(files.items(), LOOPS))
    runs: dict = {(label, loop): [] for (label, _), loop in keys}
    script = where / "numba_floor.py"
    script.write_text(FLOOR)
    floor_run(script)  # compile it into numba's cache (next to the script)
    floors = []
    for _ in range(rounds):
        floors.append(floor_run(script))
        for (label, (_, path)), loop in keys:
            runs[label, loop].append(one_run(path.with_suffix(f".{loop}.toml"), where / "r.json"))
    metrics = runs[keys[0][0][0], keys[0][1]][0]["metrics"]
    rows = []
    for (label, loop), done in runs.items():
        assert all(r["metrics"] == metrics for r in done), "the same trace gave different counts"
        best = {key: min(r[key] for r in done) for key in ("whole", "run", "load")}
        rate = accesses / best["run"]
        rows.append((f"slatframe run, {label}, {loop} loop", f"{best['whole']:.2f}", f"{best['run']:.2f}",
                     f"{best['load']:.2f}", f"{rate / 1e6:.1f}", f"{bare / rate:.1f}x",
                     f"{best['whole'] - best['run']:.2f}"))
    rows.append(("numba's start-up: import numba, call one function from its cache", f"{min(floors):.2f}",
                 "", "", "", "", f"{min(floors):.2f}"))
    return rows, metrics


def end_to_end(accesses: int, rounds: int = 5) -> None:
    from .__main__ import bare_rate, lackey_text, radix_tables, run_engine, workload

    trace = workload("hit-heavy", accesses)
    pages = (trace["vaddr"] >> np.uint64(12)).astype(np.int64)
    bare = bare_rate(pages, sets=16, ways=4)
    bare_walk = bare_rate(pages, sets=16, ways=4, tables=radix_tables(pages))
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        files = {"npz, stored": ("npz", where / "stored.npz"), "npz, deflated": ("npz", where / "deflated.npz"),
                 "lackey text": ("lackey", where / "t.lackey")}
        write_npz(files["npz, stored"][1], trace, compressed=False)
        write_npz(files["npz, deflated"][1], trace, compressed=True)
        files["lackey text"][1].write_bytes(lackey_text(trace))
        for (source, path), loop in itertools.product(files.values(), LOOPS):
            path.with_suffix(f".{loop}.toml").write_text(CONFIG.format(source=source, path=path.name, loop=loop))
        # the in-memory passes run the same config as the runs from files, on the same records
        config, registry = load_config(files["npz, stored"][1].with_suffix(".generic.toml"))
        in_memory = [("bare LRU loop 16x4, in memory", bare), ("  + a bare 4-level walk per miss", bare_walk)]
        for loop, shape in (("generic", None), ("shaped", shape_of(config)[0]), ("exact", shape_of(config, True)[0])):
            run_engine("compiled", config, registry, trace[:20_000], shape=shape)  # compile / load the cache
            cold, warm = run_engine("compiled", config, registry, trace, shape=shape)
            in_memory += [(f"engine, {loop} loop, in memory: cold pass", cold),
                          (f"engine, {loop} loop, in memory: warm pass", warm)]
        file_rows, metrics = run_files(files, accesses, bare, rounds, where)
    rows = [(label, "", f"{accesses / rate:.2f}", "", f"{rate / 1e6:.1f}", f"{bare / rate:.1f}x", "")
            for label, rate in in_memory] + file_rows
    print(f"{accesses:,} accesses (hit-heavy trace), native, one 16x4 LRU TLB level; {metrics['walks']:,} walks "
          f"({metrics['walks'] / accesses:.0%} of accesses); best of {rounds} fresh processes per file")
    print(table(rows, ("what runs", "whole process s", "the run itself s", "engine loading s", "M accesses/s",
                       "time / bare loop's", "whole - run s")))
