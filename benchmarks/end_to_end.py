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
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from slatframe.config import load_config
from slatframe.report import table
from slatframe.tracefile import write_npz

CONFIG = """\
[experiment]
name = "end-to-end"
engine = "compiled"
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

RUN = """
import sys
from slatframe.cli import entry  # what the slatframe command runs
sys.argv = ["slatframe", "run", sys.argv[1], "--out", sys.argv[2], "--quiet"]
entry()
"""


def e2e_config():
    """(config, registry) of CONFIG, for passes over records in memory: the engine runs
    the same whatever file the records came from."""
    from slatframe.trace import TRACE_DTYPE
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.toml"
        path.write_text(CONFIG.format(source="npz", path="t.npz"))
        write_npz(Path(tmp) / "t.npz", np.zeros(1, dtype=TRACE_DTYPE), compressed=False)
        return load_config(path)


def one_run(config: Path, out: Path) -> dict:
    """One `slatframe run` in a fresh process: the whole process's seconds (from before
    the interpreter starts), the run's own (``wall_time_s`` less ``compile_time_s``, the
    engine's loading) and the engine's loading."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN, str(config), str(out)], check=True, capture_output=True)
    whole = time.perf_counter() - start
    result = json.loads(out.read_text())
    return {"whole": whole, "run": result["wall_time_s"] - result["compile_time_s"],
            "load": result["compile_time_s"], "metrics": result["metrics"]}


def run_files(files: dict, accesses: int, bare: float, rounds: int, where: Path) -> tuple[list, dict]:
    """A table row per trace file (best of ``rounds`` fresh processes), and the counts,
    which every run must give alike."""
    rows, metrics = [], None
    for label, (_, path) in files.items():
        runs = [one_run(path.with_suffix(".toml"), where / "r.json") for _ in range(rounds)]
        if metrics is None:
            metrics = runs[0]["metrics"]
        assert all(r["metrics"] == metrics for r in runs), "the same trace gave different counts"
        best = {key: min(r[key] for r in runs) for key in ("whole", "run", "load")}
        rate = accesses / best["run"]
        rows.append((f"slatframe run, {label}", f"{best['whole']:.2f}", f"{best['run']:.2f}", f"{best['load']:.2f}",
                     f"{rate / 1e6:.1f}", f"{bare / rate:.1f}x", f"{best['whole'] - best['run']:.2f}"))
    return rows, metrics


def end_to_end(accesses: int, rounds: int = 3) -> None:
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
        for source, path in files.values():
            path.with_suffix(".toml").write_text(CONFIG.format(source=source, path=path.name))
        # the in-memory passes run the same config as the runs from files, on the same records
        config, registry = load_config(files["npz, stored"][1].with_suffix(".toml"))
        run_engine("compiled", config, registry, trace[:20_000])  # compile / load the cache
        loop_cold, loop_warm = run_engine("compiled", config, registry, trace)
        file_rows, metrics = run_files(files, accesses, bare, rounds, where)
    in_memory = (("bare LRU loop 16x4, in memory", bare), ("  + a bare 4-level walk per miss", bare_walk),
                 ("engine, in memory: cold pass", loop_cold), ("engine, in memory: warm pass", loop_warm))
    rows = [(label, "", f"{accesses / rate:.2f}", "", f"{rate / 1e6:.1f}", f"{bare / rate:.1f}x", "")
            for label, rate in in_memory] + file_rows
    print(f"{accesses:,} accesses (hit-heavy trace), native, one 16x4 LRU TLB level; {metrics['walks']:,} walks "
          f"({metrics['walks'] / accesses:.0%} of accesses); best of {rounds} fresh processes per file")
    print(table(rows, ("what runs", "whole process s", "the run itself s", "engine loading s", "M accesses/s",
                       "time / bare loop's", "whole - run s")))
