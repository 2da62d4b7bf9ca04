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

A second table is issue 17's Skylake-like target in a whole run: the same trace (stored
npz) through the Skylake-like TLB (16x4 + 128x12 LRU) with the guest paging-structure
caches, `slatframe run` with the shaped and the exact loop, beside a fresh process that
reads the same file through slatframe's own reader (its read-ahead thread) and feeds a
bare two-level LRU loop from the moment it opens the file (:func:`fed_run`; its misses per
level must equal the runs' counters). That table gives the best and the median of more
rounds: this machine's runs of one command spread by 1.5x within minutes.
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
from numba import njit

from slatframe.config import load_config
from slatframe.engine import workload_chunks
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

#: a fresh process running fed_run (argv: config, the benchmarks' parent folder)
FED = """
import json
import sys
sys.path.insert(0, sys.argv[2])
from benchmarks.end_to_end import fed_run
print(json.dumps(fed_run(sys.argv[1])))
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


def skylake_toml(loop: str, path: str) -> str:
    """The Skylake-like config (the benchmarks' TLB and guest paging-structure caches)
    reading the npz trace ``path``, with ``experiment.loop = loop``."""
    from .__main__ import PSC, TLB

    lines = ["[experiment]", 'name = "skylake-like"', 'engine = "compiled"', f'loop = "{loop}"',
             "[machine]", 'slat = "native"', 'host_memory = "64G"']
    for level in TLB["levels"]:
        lines += ["[[tlb.levels]]", *(f"{k} = {v!r}".replace("'", '"') for k, v in level.items())]
    for cache in PSC[:3]:  # the guest's: this config is native
        lines += ["[[walk_caches]]", *(f"{k} = {v!r}".replace("'", '"') for k, v in cache.items())]
    lines += ["[[vms]]", 'name = "vm0"', 'memory = "8G"', "[workload]", 'source = "npz"', f'path = "{path}"']
    return "\n".join(lines) + "\n"


@njit(cache=True, forceinline=True)
def lru_way(keys, s, p, ways):
    """The way of set ``s`` holding page ``p``, or -1."""
    for w in range(ways):
        if keys[s, w] == p:
            return w
    return -1


@njit(cache=True, forceinline=True)
def lru_victim(stamps, s, ways):
    """The way of set ``s`` a fill takes: the first of the smallest stamp (an invalid way's is 0)."""
    v = 0
    for w in range(ways):
        if stamps[s, w] < stamps[s, v]:
            v = w
    return v


def two_level_lru(sets1: int, ways1: int, sets2: int, ways2: int):
    """The bare loop of a two-level TLB of this geometry, compiled with it as constants (as
    the engine's exact loop has it; numba folds a closure's variables and keys its cache
    entry by their values). It does the Skylake-like TLB's lookups and fills over
    ``vaddr`` (4K pages, LRU by stamps, an invalid way first; a second-level hit fills the
    first level, a miss both, as the engine's non-inclusive hierarchy); ``misses[l]``
    counts level ``l``'s misses. (Setting the stamp inside a helper that returns at the
    hit ran at two thirds of this loop's rate.)"""

    @njit(cache=True, nogil=True)
    def loop(vaddr, k1, s1, k2, s2, clock, misses):
        tick = clock[0]
        for i in range(vaddr.shape[0]):
            p = np.int64(vaddr[i] >> np.uint64(12))
            tick += 1
            a = p & (sets1 - 1)
            w = lru_way(k1, a, p, ways1)
            if w >= 0:
                s1[a, w] = tick
                continue
            misses[0] += 1
            b = p & (sets2 - 1)
            w = lru_way(k2, b, p, ways2)
            if w >= 0:
                s2[b, w] = tick
            else:
                misses[1] += 1
                v = lru_victim(s2, b, ways2)
                k2[b, v] = p
                s2[b, v] = tick
            v = lru_victim(s1, a, ways1)
            k1[a, v] = p
            s1[a, v] = tick
        clock[0] = tick

    return loop


def fed_run(config_path: str) -> dict:
    """Slatframe's reader (as a run reads: checked chunks, the read-ahead thread) feeding
    :func:`two_level_lru` for the config's two levels: the seconds from opening the trace
    to the last chunk's end, and each level's misses."""
    config, registry = load_config(config_path)
    (sets1, ways1), (sets2, ways2) = ((lv.sets, lv.ways) for lv in config.tlb.levels)
    if any(sets & (sets - 1) for sets in (sets1, sets2)):
        raise ValueError("the fed bare loop indexes sets by a mask: give each level a power-of-two number of sets")
    loop = two_level_lru(sets1, ways1, sets2, ways2)
    state = [np.full((sets1, ways1), -1, np.int64), np.zeros((sets1, ways1), np.int64),
             np.full((sets2, ways2), -1, np.int64), np.zeros((sets2, ways2), np.int64),
             np.zeros(1, np.int64), np.zeros(2, np.int64)]
    loop(np.zeros(0, np.uint64), *state)  # loaded from numba's cache before the clock starts
    start = time.perf_counter()
    for chunk in workload_chunks(config, registry, read_ahead=True):
        loop(chunk["vaddr"], *state)
    return {"run": time.perf_counter() - start, "misses": state[-1].tolist()}


def skylake_rows(trace_path: Path, accesses: int, rounds: int, where: Path) -> list:
    """Rows of the Skylake-like whole runs: the fed bare loop, then `slatframe run` with
    the shaped and the exact loop, ``rounds`` fresh processes each, taken in turn."""
    from .__main__ import TLB

    configs = {loop: where / f"skylake.{loop}.toml" for loop in ("shaped", "exact")}
    for loop, path in configs.items():
        path.write_text(skylake_toml(loop, str(trace_path.resolve())))
    fed = where / "fed.py"
    fed.write_text(FED)
    root = str(Path(__file__).resolve().parents[1])

    def fed_once() -> dict:
        done = subprocess.run([sys.executable, str(fed), str(configs["exact"]), root], check=True,
                              capture_output=True, text=True, env=ENV)
        return json.loads(done.stdout)

    for path in configs.values():  # compile or load each loop once, outside the rounds
        one_run(path, where / "s.json")
    fed_once()
    times: dict = {"bare two-level LRU loop fed by slatframe's reader": [], **{
        f"slatframe run, {loop} loop": [] for loop in configs}}
    for _ in range(rounds):
        result = fed_once()
        times["bare two-level LRU loop fed by slatframe's reader"].append(result["run"])
        for loop, path in configs.items():
            run = one_run(path, where / "s.json")
            levels = [run["metrics"][f"tlb.{level['name']}.misses"] for level in TLB["levels"]]
            if levels != result["misses"]:
                raise AssertionError(f"the fed bare loop missed {result['misses']} times per level, "
                                     f"`slatframe run` ({loop} loop) counted {levels}")
            times[f"slatframe run, {loop} loop"].append(run["run"])
    fed_best = min(times["bare two-level LRU loop fed by slatframe's reader"])
    rows = []
    for what, done in times.items():
        best, median = min(done), float(np.median(done))
        rows.append((what, f"{best:.3f}", f"{median:.3f}", f"{accesses / best / 1e6:.1f}",
                     f"{accesses / median / 1e6:.1f}", f"{best / fed_best:.2f}x"))
    return rows


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


def end_to_end(accesses: int, rounds: int = 5, skylake_rounds: int = 9) -> None:
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
        skylake = skylake_rows(files["npz, stored"][1], accesses, skylake_rounds, where)
    rows = [(label, "", f"{accesses / rate:.2f}", "", f"{rate / 1e6:.1f}", f"{bare / rate:.1f}x", "")
            for label, rate in in_memory] + file_rows
    print(f"{accesses:,} accesses (hit-heavy trace), native, one 16x4 LRU TLB level; {metrics['walks']:,} walks "
          f"({metrics['walks'] / accesses:.0%} of accesses); best of {rounds} fresh processes per file")
    print(table(rows, ("what runs", "whole process s", "the run itself s", "engine loading s", "M accesses/s",
                       "time / bare loop's", "whole - run s")))
    print()
    print(f"Skylake-like TLB (16x4 + 128x12 LRU) with the guest paging-structure caches, the same {accesses:,} "
          f"records from the stored npz; {skylake_rounds} fresh processes per row, taken in turn")
    print(table(skylake, ("what runs", "the run itself s, best", "median s", "M accesses/s, best", "median M/s",
                          "best time / the fed bare loop's")))
