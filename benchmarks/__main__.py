"""Engine throughput: compiled accesses per second, against the reference engine and a
bare numba set-associative LRU loop (the yardstick of the machine's limit).

    python -m benchmarks [--accesses N] [--reference-accesses N]
    python -m benchmarks --profile [--accesses N]      (where the time goes)
    python -m benchmarks --kernels [--accesses N]      (inline kernels against kernels compiled apart)
    python -m benchmarks --builtins-apart [--accesses N]  (builtin PSCs and radix walk against plugin kernels)
    python -m benchmarks --streaming N [N ...]          (peak RSS against trace length)
    python -m benchmarks --readers [--accesses N]       (trace readers: records per second, against the previous ones)
    python -m benchmarks --end-to-end [--accesses N]    (slatframe run from a trace file, beside the bare loop;
                                                         the Skylake-like config's runs beside a fed bare loop)
    python -m benchmarks --bounds [--accesses N]        (throughput targets beside bare loops counting as the engine)
    python -m benchmarks --cuts [--accesses N]          (the engine's loop beside copies with one piece cut)
    python -m benchmarks --lines [--accesses N] [--seconds S]  (a sampling profile of the loop by line; perf)
    python -m benchmarks --instructions [--accesses N]  (counts per access under cachegrind, beside the bare loop)
    python -m benchmarks --against REV [--accesses N] [--copies K] [--processes P]  (loop.py now against at REV)
    python -m benchmarks --faults PAGES                 (microseconds per first touch of a page)
    python -m benchmarks --cores N [--accesses N] [--reference-accesses N]  (N cores against one, per access)

The compiled tier's rates are those of its generic loop, of its loop shaped for the
config's TLB (``experiment.loop = "shaped"``) and of its loop for the whole TLB config
(``"exact"``: what ``auto`` compiles on a first installation). All ratios are measured
in this one process run, on one core. Peak RSS is the process's maximum resident set size (getrusage) at the
end of each row.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numba import njit

from slatframe.counters import Counters
from slatframe.engine import make_engine
from slatframe.engine.shape import shape_of
from slatframe import hookimpl
from slatframe.machine import build_machine
from slatframe.registry import Registry
from slatframe.report import table
from slatframe.testing import build, tiny_config
from slatframe.trace import READ, TRACE_DTYPE

# A Skylake-like data TLB: 64-entry 4-way L1, 1536-entry 12-way L2 (4K pages);
# 1536 x 4 KiB = 6 MiB of reach.
TLB = {"levels": [{"name": "l1d", "sets": 16, "ways": 4, "latency": 1},
                  {"name": "l2", "sets": 128, "ways": 12, "latency": 9}]}
PSC = [{"type": "psc", "level": lv} for lv in (4, 3, 2)] + \
      [{"type": "psc", "level": lv, "dimension": "host"} for lv in (4, 3, 2)]
REACH_PAGES = 1536


def workload(kind: str, n: int, seed: int = 1) -> np.ndarray:
    """hit-heavy: zipf(1.1) over 1024 pages (fits the L2 TLB), the first byte of each
    (page-aligned: every line in one set of a data cache, so most data accesses miss);
    walk-heavy: uniform over 100x the L2 TLB reach; l1d-hit: zipf(1.1) over the 512
    lines of 8 pages (32 KiB: TLB and L1D hits)."""
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    t["op"] = READ
    if kind == "l1d-hit":  # zipf(1.1) over the 512 lines of 8 pages: 32 KiB, the data stays in an L1D
        lines = rng.permutation(512)[rng.zipf(1.1, n) % 512].astype(np.uint64)
        t["vaddr"] = np.uint64(1 << 32) + ((lines % np.uint64(8)) << np.uint64(12)) + \
            ((lines // np.uint64(8)) << np.uint64(6))
        return t
    if kind == "hit-heavy":
        pages = rng.permutation(1024)[rng.zipf(1.1, n) % 1024]
    else:
        pages = rng.integers(0, 100 * REACH_PAGES, n)
    t["vaddr"] = (pages.astype(np.uint64) << np.uint64(12)) + np.uint64(1 << 32)
    return t


CONFIGS = {
    "native + TLB + PSC": dict(machine={"slat": "native", "host_memory": "64G"}, walk_caches=PSC[:3]),
    "intel-ept 2D + TLB + PSC": dict(machine={"slat": "intel-ept", "host_memory": "64G"}, walk_caches=PSC),
}


NO_TABLES = np.zeros((0, 512), dtype=np.int64)


@njit(cache=True)
def bare_lru(pages, sets, ways, tables):
    """A set-associative LRU lookup and fill, nothing else: the limit to compare with.
    With ``tables`` (not NO_TABLES), each miss also walks them, 4 levels of rows of 512
    entries (the next row's index << 12 | 1, the frame << 12 | 1 at the leaf): the least
    a miss costs in the same model (4 dependent entry loads). Returns (misses, the sum of
    the frames walked to)."""
    tags = np.full((sets, ways), -1, dtype=np.int64)
    stamp = np.zeros((sets, ways), dtype=np.int64)
    walk = tables.shape[0] > 0
    clock = 0
    misses = 0
    frames = 0
    for i in range(pages.shape[0]):
        p = pages[i]
        s = p % sets
        clock += 1
        hit = -1
        for w in range(ways):
            if tags[s, w] == p:
                hit = w
                break
        if hit < 0:
            misses += 1
            if walk:
                row = 0
                for level in range(3, -1, -1):
                    row = tables[row, (p >> (9 * level)) & 511] >> 12
                frames += row
            hit = 0
            for w in range(1, ways):
                if stamp[s, w] < stamp[s, hit]:
                    hit = w
            tags[s, hit] = p
        stamp[s, hit] = clock
    return misses, frames


def radix_tables(pages: np.ndarray) -> np.ndarray:
    """4-level tables (as bare_lru walks them) mapping every page in ``pages``; the
    tables of each level are allocated in the order their first page is met."""
    rows = [np.zeros(512, dtype=np.int64)]
    for p in np.unique(pages).tolist():
        row = 0
        for level in range(3, 0, -1):
            index = (p >> (9 * level)) & 511
            if rows[row][index] == 0:
                rows.append(np.zeros(512, dtype=np.int64))
                rows[row][index] = (len(rows) - 1) << 12 | 1
            row = int(rows[row][index]) >> 12
        rows[row][p & 511] = (p + 7) << 12 | 1
    return np.stack(rows)


def bare_rate(pages: np.ndarray, passes: int = 3, sets: int = 128, ways: int = 12,
              tables: np.ndarray = NO_TABLES) -> float:
    """Accesses per second of the bare loop over ``pages``, best of ``passes``."""
    bare_lru(pages[:1000], sets, ways, tables)  # compile or load
    best = 0.0
    for _ in range(passes):
        t = time.perf_counter()
        bare_lru(pages, sets, ways, tables)
        best = max(best, len(pages) / (time.perf_counter() - t))
    return best


def run_engine(tier: str, config, registry, trace: np.ndarray, chunk: int = 65536,
               warm_passes: int = 3, shape=None) -> tuple[float, float]:
    """Accesses per second of ``tier`` on ``trace`` (the compiled tier's loop shaped for
    ``shape``, or generic): a cold pass (every page touched for the first time faults into
    the software side) and the best of ``warm_passes`` further passes over the same trace
    on the same machine (tables built, TLBs and walk caches warm; the best, because other
    tenants of a shared host only ever slow a pass down)."""
    engine = make_engine(tier, build_machine(config, registry, Counters()), registry, shape)
    rates = []
    for _ in range(1 + warm_passes):
        start = time.perf_counter()
        for i in range(0, len(trace), chunk):
            engine.run_chunk(trace[i:i + chunk])
        rates.append(len(trace) / (time.perf_counter() - start))
    return rates[0], max(rates[1:], default=rates[0])


def faults(pages: int, rounds: int = 3) -> None:
    """Microseconds per first touch of a page: ``pages`` pages touched once each (a
    one-entry TLB), so every access faults (a guest fault; under intel-ept also the host
    faults that back the page and the guest's new tables); best of ``rounds`` fresh
    engines, taking turns: the compiled loop serving the faults itself
    (slatframe/engine/demand.py) and the same engine with that turned off (every fault
    handled in Python, as before). Then issue 35's GUPS rows: ``slatframe run`` of the
    quickstart with ``distribution = "gups"``, a 4 GiB footprint and 4x10^6 accesses, a
    fresh process each, native and intel-ept (4K host pages)."""
    trace = np.zeros(pages, dtype=TRACE_DTYPE)
    trace["vaddr"] = (np.random.default_rng(1).permutation(pages).astype(np.uint64) << np.uint64(12)) \
        + np.uint64(1 << 32)
    for slat in ("native", "intel-ept"):
        config, registry = build(tiny_config(machine={"slat": slat, "host_memory": "64G"},
                                             tlb={"levels": [{"name": "l1", "sets": 1, "ways": 1}]},
                                             vms=[{"name": "vm0", "memory": "8G"}]))
        run_engine("compiled", config, registry, trace[:1000], warm_passes=0)  # compile / load the cache
        times: dict[str, list[float]] = {"in the loop": [], "in Python": []}
        served: dict[str, int] = {}  # faults the loop served (the others: room ran out, a log filled)
        for _ in range(rounds):
            for where, spent in times.items():
                engine = make_engine("compiled", build_machine(config, registry, Counters()), registry)
                if where == "in Python":  # (no VM offers its faults to the loop: each returns to Python)
                    engine.pager.paging = [None] * len(engine.pager.paging)
                start = time.perf_counter()
                for i in range(0, pages, 65536):
                    engine.run_chunk(trace[i:i + 65536])
                spent.append((time.perf_counter() - start) / pages * 1e6)
                values = engine.machine.context.counters.values
                assert values["faults.guest"] == pages
                served[where] = engine.pager.served
                total = values["faults.guest"] + values["faults.host"]
        for where, spent in times.items():
            print(f"{pages:,} pages touched once, {slat}, {total:,} faults served {where}: {min(spent):.2f} us "
                  f"per first touch (best of {rounds}: {', '.join(f'{t:.2f}' for t in spent)}; {served[where]:,} "
                  "in the loop)")
        print(f"{slat}: in the loop / in Python: {min(times['in the loop']) / min(times['in Python']):.3f}")
    quickstart = Path(__file__).resolve().parents[1] / "examples" / "quickstart.toml"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for slat in ("native", "intel-ept"):
            command = [sys.executable, "-m", "slatframe.cli", "run", str(quickstart), "--quiet", "--engine", "compiled",
                       "--out", f"{tmp}/gups.json", "--set", "workload.distribution='gups'",
                       "--set", "workload.footprint='4G'", "--set", "workload.accesses=4000000",
                       "--set", "vms[0].memory='8G'", "--set", f"machine.slat='{slat}'"]
            start = time.perf_counter()
            subprocess.run(command, check=True)
            seconds = time.perf_counter() - start
            result = json.loads(Path(f"{tmp}/gups.json").read_text())
            rows.append((slat, f"{seconds:.2f}", f"{result['wall_time_s']:.2f}",
                         f"{result['metrics'].get('faults.guest', 0):,}", f"{result['metrics'].get('faults.host', 0):,}",
                         f"{result['memory']['peak_rss_bytes'] / 2**20:.0f}"))
    print(table(rows, ("scheme", "whole process s", "run s", "guest faults", "host faults", "peak RSS MiB")))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


STREAM_SCRIPT = """
import resource, sys, time
from slatframe.cli import main
t = time.perf_counter()
main(["run", sys.argv[1], "--out", sys.argv[2], "--quiet", "--engine", "compiled",
      "--set", "workload.accesses=" + sys.argv[3], "--set", "workload.footprint='16M'"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, time.perf_counter() - t)
"""


def streaming(counts: list[int]) -> None:
    """Peak RSS of `slatframe run` (examples/quickstart.toml) at several trace lengths,
    each in a fresh process."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "examples" / "quickstart.toml"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [1000] + counts:
            out = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, str(config), f"{tmp}/r.json", str(n)],
                                 capture_output=True, text=True, check=True).stdout.split()
            if n != 1000:  # the first run only compiles or loads the engine
                rows.append((f"{n:,}", out[0], f"{float(out[1]):.1f}", f"{n / float(out[1]) / 1e6:.2f}"))
    print(table(rows, ("accesses", "peak RSS MiB", "seconds", "M accesses/s (incl. start-up)")))


ONE_LEVEL = {"levels": [{"name": "l2", "sets": 128, "ways": 12, "latency": 9}]}
CACHE_AWARE = {"model": "cache-aware"}
PROFILE = [  # (label, workload, scheme, TLB, walk caches, cost, chunk): one change per step
    ("bare LRU loop, one 128x12 array", "hit-heavy", None, None, None, None, None),
    ("engine, one TLB level 128x12", "hit-heavy", "native", ONE_LEVEL, [], None, 65536),
    ("engine, two TLB levels (L1 64, L2 1536)", "hit-heavy", "native", TLB, [], None, 65536),
    ("  + chunks of 1024 records", "hit-heavy", "native", TLB, [], None, 1024),
    ("  + data caches (cache-aware cost)", "hit-heavy", "native", TLB, [], CACHE_AWARE, 65536),
    ("engine, two TLB levels, data in 32 KiB", "l1d-hit", "native", TLB, [], None, 65536),
    ("  + data caches (cache-aware cost): L1D hits", "l1d-hit", "native", TLB, [], CACHE_AWARE, 65536),
    ("bare LRU loop 128x12 + a bare 4-level walk per miss", "walk-heavy", "bare walk", None, None, None, None),
    ("native walks, no walk cache", "walk-heavy", "native", TLB, [], None, 65536),
    ("  + paging-structure caches", "walk-heavy", "native", TLB, PSC[:3], None, 65536),
    ("2D walks, no walk cache", "walk-heavy", "intel-ept", TLB, [], None, 65536),
    ("  + paging-structure caches (both dimensions)", "walk-heavy", "intel-ept", TLB, PSC, None, 65536),
    ("  + data caches (cache-aware cost)", "walk-heavy", "intel-ept", TLB, PSC, CACHE_AWARE, 65536),
]


def profile(accesses: int) -> None:
    """Warm nanoseconds per access, adding one piece of work per row: where the time goes."""
    traces = {"hit-heavy": workload("hit-heavy", accesses), "walk-heavy": workload("walk-heavy", accesses // 4),
              "l1d-hit": workload("l1d-hit", accesses)}
    rows = []
    for label, kind, slat, tlb, caches, cost, chunk in PROFILE:
        trace = traces[kind]
        if slat is None:
            pages = (trace["vaddr"] >> np.uint64(12)).astype(np.int64)
            rate = bare_rate(pages)
        elif slat == "bare walk":
            pages = (trace["vaddr"] >> np.uint64(12)).astype(np.int64)
            rate = bare_rate(pages, tables=radix_tables(pages))
        else:
            raw = tiny_config(machine={"slat": slat, "host_memory": "64G"}, tlb=tlb, walk_caches=caches,
                              vms=[{"name": "vm0", "memory": "8G"}])
            if cost:
                raw["cost"] = cost
            config, registry = build(raw)
            run_engine("compiled", config, registry, trace[:20_000])  # compile / load the cache
            rate = run_engine("compiled", config, registry, trace, chunk)[1]
        rows.append((label, kind, f"{1e9 / rate:.1f}", f"{rate / 1e6:.2f}"))
    print(f"warm pass, {accesses:,} hit-heavy and {accesses // 4:,} walk-heavy accesses")
    print(table(rows, ("what runs", "workload", "ns per access", "M accesses/s")))


class ApartLru:
    """The builtin LRU registered again with ``inline=False``: the same kernels, called
    through the loop's function tables instead of compiled into it."""

    @staticmethod
    @hookimpl
    def slatframe_tlb_policies():
        import attrs

        lru = Registry().get("TLB policies", "lru")
        return [attrs.evolve(lru, name="lru-apart", kernels=attrs.evolve(lru.kernels, inline=False))]


def kernels(accesses: int, rounds: int = 5) -> None:
    """Warm nanoseconds per access of the builtin LRU compiled into the loop against the
    same kernels compiled apart, passes alternating in this process (best of ``rounds``)."""
    registry = Registry(plugins=[ApartLru])
    rows = []
    for kind, slat, caches in (("hit-heavy", "native", []), ("walk-heavy", "intel-ept", PSC)):
        trace = workload(kind, accesses if kind == "hit-heavy" else accesses // 4)
        engines = {}
        for policy in ("lru", "lru-apart"):
            levels = [dict(level, policy=policy) for level in TLB["levels"]]
            raw = tiny_config(machine={"slat": slat, "host_memory": "64G"}, tlb={"levels": levels},
                              walk_caches=[dict(c, policy=policy) for c in caches], vms=[{"name": "vm0", "memory": "8G"}])
            config, _ = build(raw, registry)
            engines[policy] = make_engine("compiled", build_machine(config, registry, Counters()), registry)
            for i in range(0, len(trace), 65536):  # the cold pass: tables built, structures warm
                engines[policy].run_chunk(trace[i:i + 65536])
        best = dict.fromkeys(engines, 0.0)
        for _ in range(rounds):
            for policy, engine in engines.items():
                start = time.perf_counter()
                for i in range(0, len(trace), 65536):
                    engine.run_chunk(trace[i:i + 65536])
                best[policy] = max(best[policy], len(trace) / (time.perf_counter() - start))
        rows.append((kind, slat, f"{1e9 / best['lru']:.1f}", f"{1e9 / best['lru-apart']:.1f}",
                     f"{best['lru'] / best['lru-apart']:.2f}x"))
    print(f"warm passes, best of {rounds}, alternating in one process")
    print(table(rows, ("workload", "scheme", "inline LRU ns/access", "LRU apart ns/access", "apart cost")))


def builtins_apart(accesses: int, rounds: int = 5) -> None:
    """Warm nanoseconds per access, walk-heavy, of builtins compiled into the loop against
    the same logic written outside the core as plugin kernels called by address: the
    PSCs as start caches (tests/outside_walk_caches.py) and the radix walk, without walk
    caches, as a walk kernel (tests/outside_radix_walk.py). Passes alternate in this
    process; best of ``rounds``."""
    from pathlib import Path

    here = Path(__file__).resolve().parents[1] / "tests"
    plugins = [str(here / "outside_walk_caches.py"), str(here / "outside_radix_walk.py")]
    trace = workload("walk-heavy", accesses)
    pairs = [(f"{slat}, {len(caches)} PSCs", [dict(machine={"slat": slat, "host_memory": "64G"},
                                                   walk_caches=[dict(c, type=kind) for c in caches])
                                              for kind in ("psc", "outside-psc")])
             for slat, caches in (("native", PSC[:3]), ("intel-ept", PSC[:3] + PSC[5:]))]  # (4 start caches at most)
    pairs += [(f"{slat}, radix walk, no walk caches", [dict(machine={"slat": scheme, "host_memory": "64G"})
                                                      for scheme in (slat, outside)])
              for slat, outside in (("native", "native-outside"), ("intel-ept", "ept-outside"))]
    rows = []
    for label, sections in pairs:
        engines = []
        for section in sections:
            config, registry = build(tiny_config(experiment={"name": "apart", "plugins": plugins}, tlb=TLB,
                                                 vms=[{"name": "vm0", "memory": "8G"}], **section))
            engines.append(make_engine("compiled", build_machine(config, registry, Counters()), registry))
            for i in range(0, len(trace), 65536):  # the cold pass: tables built, structures warm
                engines[-1].run_chunk(trace[i:i + 65536])
        best = [0.0, 0.0]
        for _ in range(rounds):
            for k, engine in enumerate(engines):
                start = time.perf_counter()
                for i in range(0, len(trace), 65536):
                    engine.run_chunk(trace[i:i + 65536])
                best[k] = max(best[k], len(trace) / (time.perf_counter() - start))
        rows.append((label, f"{1e9 / best[0]:.1f}", f"{1e9 / best[1]:.1f}", f"{best[0] / best[1]:.2f}x"))
    print(f"walk-heavy, {accesses:,} accesses, warm passes, best of {rounds}, alternating in one process")
    print(table(rows, ("builtin", "inline ns/access", "as plugin kernels ns/access", "plugin cost")))


def lackey_text(trace: np.ndarray) -> bytes:
    """``trace`` written as valgrind lackey prints it (an ifetch as ``I``, a read ``L``, a
    write ``S``), after lackey's four ``==`` header lines."""
    kinds = np.array(["I  ", " L ", " S "])[np.select([trace["op"] == 2, trace["op"] == 0], [0, 1], 2)]
    body = "\n".join(f"{k}{a:08x},{s}" for k, a, s in zip(kinds, trace["vaddr"].tolist(),
                                                            (trace["vaddr"] % np.uint64(8) + np.uint64(1)).tolist()))
    return ("==1== Lackey, an example Valgrind tool\n==1== Command: ./a.out\n==1== Parent PID: 0\n==1==\n"
            + body + "\n").encode()


# -- the trace readers as they were before issue 17's work on them (plugins/trace_readers.py
# and slatframe/lackey.py at eb338a6), kept here to measure the speedup in the same run ------


@njit(cache=True, nogil=True)
def _previous_parse(buf, ops, vaddrs):
    """The previous compiled lackey parser: (ops, vaddrs) columns; -1 on any other line."""
    n = buf.size
    i = 0
    out = 0
    while i < n:
        if i + 1 < n and buf[i] == 61 and buf[i + 1] == 61:
            while i < n and buf[i] != 10:
                i += 1
            i += 1
            continue
        if i + 3 >= n or buf[i + 2] != 32:
            return -1
        c0, c1 = buf[i], buf[i + 1]
        if c0 == 73 and c1 == 32:
            kind = 73
        elif c0 == 32 and (c1 == 76 or c1 == 83 or c1 == 77):
            kind = c1
        else:
            return -1
        i += 3
        while i < n and buf[i] == 48:
            i += 1
        value = np.uint64(0)
        digits = 0
        while i < n and buf[i] != 44:
            c = buf[i]
            if 48 <= c <= 57:
                d = c - 48
            elif 97 <= c <= 102:
                d = c - 87
            elif 65 <= c <= 70:
                d = c - 55
            else:
                return -1
            value = (value << np.uint64(4)) | np.uint64(d)
            digits += 1
            i += 1
        if i >= n or digits > 16 or (digits == 0 and buf[i - 1] != 48):
            return -1
        i += 1
        size_digits = 0
        while i < n and buf[i] != 10:
            if not 48 <= buf[i] <= 57:
                return -1
            size_digits += 1
            i += 1
        if size_digits == 0:
            return -1
        i += 1
        if kind == 73:
            ops[out] = 2
        elif kind == 76:
            ops[out] = 0
        elif kind == 83:
            ops[out] = 1
        else:
            ops[out] = 0
            vaddrs[out] = value
            out += 1
            ops[out] = 1
        vaddrs[out] = value
        out += 1
    return out


class _PreviousChunker:
    def __init__(self, chunk_size: int, vm: int, asid: int) -> None:
        self.size, self.vm, self.asid = chunk_size, vm, asid
        self.pending = np.zeros(0, dtype=TRACE_DTYPE)

    def add(self, ops, vaddrs):
        new = np.zeros(len(ops), dtype=TRACE_DTYPE)
        new["op"] = ops
        new["vaddr"] = vaddrs
        new["vm"] = self.vm
        new["asid"] = self.asid
        joined = np.concatenate([self.pending, new]) if len(self.pending) else new
        whole = len(joined) - len(joined) % self.size
        for start in range(0, whole, self.size):
            yield joined[start:start + self.size]
        self.pending = joined[whole:]


def previous_read_lackey(path, chunk_size: int, vm: int = 0, asid: int = 0):
    """The previous lackey reader's work on a file of lines as lackey prints them (1 MiB
    blocks, the line-length check, the compiled parse into columns, the chunk assembly;
    its regular-expression path is not needed on such a file)."""
    out = _PreviousChunker(chunk_size, vm, asid)
    tail = b""
    with open(path, "rb") as fh:
        while True:
            data = fh.read(1 << 20)
            if not data:
                break
            data = tail + data
            end = data.rfind(b"\n")
            text, tail = data[:end], data[end + 1:]
            starts = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
            edges = np.concatenate(([-1], starts, [len(text)]))
            assert int(np.diff(edges).max()) - 1 <= 1 << 16
            buf = np.frombuffer(text, dtype=np.uint8)
            lines = text.count(b"\n") + 1
            ops = np.empty(2 * lines, dtype=np.uint8)
            vaddrs = np.empty(2 * lines, dtype=np.uint64)
            n = _previous_parse(buf, ops, vaddrs)
            assert n >= 0
            yield from out.add(ops[:n], vaddrs[:n])
    assert not tail
    if len(out.pending):
        yield out.pending


def previous_read_champsim(path, chunk_size: int, vm: int = 0, asid: int = 0):
    """The previous ChampSim reader: numpy over blocks of chunk_size // 7 instructions."""
    from slatframe.trace import IFETCH, WRITE
    from slatframe_plugins.trace_readers import CHAMPSIM_DTYPE

    block = max(1, chunk_size // 7)
    ops = np.array([IFETCH] + [READ] * 4 + [WRITE] * 2, dtype=np.uint8)
    with open(path, "rb") as fh:
        while True:
            raw = fh.read(block * 64)
            if not raw:
                break
            recs = np.frombuffer(raw, dtype=CHAMPSIM_DTYPE)
            n = len(recs)
            columns = np.concatenate([recs["ip"][:, None], recs["source_memory"], recs["destination_memory"]], axis=1)
            keep = columns != 0
            keep[:, 0] = True
            out = np.zeros(int(keep.sum()), dtype=TRACE_DTYPE)
            out["vaddr"] = columns[keep]
            out["op"] = np.broadcast_to(ops, (n, 7))[keep]
            out["vm"] = vm
            out["asid"] = asid
            for start in range(0, len(out), chunk_size):
                yield out[start:start + chunk_size]


def reader_files(accesses: int, where) -> tuple:
    """A lackey file of ``accesses`` lines (an ifetch, read or write each, random
    addresses below 2**47, after lackey's four ``==`` lines) and a ChampSim file of
    ``accesses // 2`` instructions with one source address each."""
    from slatframe.trace import IFETCH, WRITE
    from slatframe_plugins.trace_readers import CHAMPSIM_DTYPE

    rng = np.random.default_rng(1)
    trace = np.zeros(accesses, dtype=TRACE_DTYPE)
    trace["vaddr"] = rng.integers(0x400000, 0x7FFF_FFFF_F000, accesses, dtype=np.uint64)
    trace["op"] = rng.choice([IFETCH, IFETCH, READ, WRITE], accesses)
    lackey = where / "t.lackey"
    lackey.write_bytes(lackey_text(trace))
    champsim = where / "t.champsim"
    instr = np.zeros(accesses // 2, dtype=CHAMPSIM_DTYPE)
    instr["ip"] = trace["vaddr"][: len(instr)]
    instr["source_memory"][:, 0] = trace["vaddr"][len(instr): 2 * len(instr)]
    champsim.write_bytes(instr.tobytes())
    return lackey, champsim, len(instr)


def readers(accesses: int, rounds: int = 5) -> None:
    """Records (and ChampSim instructions) per second of each trace reader, whole file to
    65,536-record chunks, against the previous readers, passes alternating in this
    process (best of ``rounds``); then where the time goes: reading the bytes, one numpy
    pass over them, the compiled parse alone (all in memory, into one array)."""
    import tempfile
    from pathlib import Path

    import slatframe_plugins.trace_readers as module
    from slatframe.lackey import DECLINED

    with tempfile.TemporaryDirectory() as tmp:
        lackey, champsim, instructions = reader_files(accesses, Path(tmp))
        candidates = {"lackey": module.read_lackey, "lackey before": previous_read_lackey,
                      "champsim": module.read_champsim, "champsim before": previous_read_champsim}
        paths = {"lackey": lackey, "champsim": champsim}
        counts, best = {}, dict.fromkeys(candidates, 0.0)
        for name, read in candidates.items():  # compile or load each parser once, outside the timing
            counts[name] = sum(len(c) for c in read(str(paths[name.split()[0]]), 65536))
        assert counts["lackey"] == counts["lackey before"] and counts["champsim"] == counts["champsim before"]
        for _ in range(rounds):
            for name, read in candidates.items():
                start = time.perf_counter()
                for _chunk in read(str(paths[name.split()[0]]), 65536):
                    pass
                best[name] = max(best[name], counts[name] / (time.perf_counter() - start))

        compiled = module.fill_records  # the regular expressions alone: the compiled parser declines every line
        module.fill_records = lambda buf, pos, end, out, filled, limit, vm, asid: (pos, filled, 0, DECLINED)
        try:
            start = time.perf_counter()
            for _chunk in module.read_lackey(str(lackey), 65536):
                pass
            careful = counts["lackey"] / (time.perf_counter() - start)
        finally:
            module.fill_records = compiled

        rows = []
        for name, per in (("lackey", counts["lackey"]), ("champsim", instructions)):
            new, old = best[name], best[name + " before"]
            unit = "records" if name == "lackey" else "instructions"
            rows.append((name, f"{counts[name]:,}", f"{per:,} {'lines' if name == 'lackey' else unit}",
                         f"{new / 1e6:.2f}", f"{new * per / counts[name] / 1e6:.2f}",
                         f"{old / 1e6:.2f}", f"{new / old:.1f}x"))
        rows.append(("lackey, regular expressions only", f"{counts['lackey']:,}", "(one pass)",
                     f"{careful / 1e6:.2f}", "", "", ""))
        print(f"whole file to 65,536-record chunks; best of {rounds} passes alternating with the previous readers")
        print(table(rows, ("reader", "records", "lines / instructions", "M records/s", "M lines or instr./s",
                           "before M records/s", "speedup")))
        print()
        print(table(where_the_time_goes(lackey, champsim, counts, rounds),
                    ("reader", "what runs", "ms", "ns per record", "M records/s")))


def where_the_time_goes(lackey, champsim, counts, rounds: int) -> list:
    """Milliseconds (best of ``rounds``) of the pieces of each reader's work on its file."""
    import slatframe_plugins.trace_readers as module
    from slatframe.lackey import fill_records

    def best(work) -> float:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return min(times)

    def read_bytes(path, block):
        with open(path, "rb") as fh:
            while fh.read(block):
                pass

    text = lackey.read_bytes()
    lackey_buf = np.frombuffer(text, dtype=np.uint8)
    out = np.zeros(counts["lackey"] + 2, dtype=TRACE_DTYPE)
    words = np.frombuffer(champsim.read_bytes(), dtype="<u8").reshape(-1, 8)
    out2 = np.zeros(counts["champsim"] + 7, dtype=TRACE_DTYPE)
    steps = [
        ("lackey", f"read the file's bytes ({module._BLOCK >> 10} KiB blocks)",
         lambda: read_bytes(lackey, module._BLOCK)),
        ("lackey", "one numpy pass over the bytes (== 10)", lambda: np.count_nonzero(lackey_buf == 10)),
        ("lackey", "compiled parse into TRACE_DTYPE, in memory",
         lambda: fill_records(lackey_buf, 0, len(lackey_buf), out, 0, len(out), 0, 0)),
        ("lackey", "the whole reader", lambda: sum(len(c) for c in module.read_lackey(str(lackey), 65536))),
        ("champsim", f"read the file's bytes ({module._INSTRUCTIONS * 64 >> 10} KiB blocks)",
         lambda: read_bytes(champsim, module._INSTRUCTIONS * 64)),
        ("champsim", "compiled expansion into TRACE_DTYPE, in memory",
         lambda: module._champsim_fill(words, 0, out2, 0, len(out2), 0, 0)),
        ("champsim", "the whole reader", lambda: sum(len(c) for c in module.read_champsim(str(champsim), 65536))),
    ]
    rows = []
    for reader, label, work in steps:
        seconds = best(work)
        n = counts[reader]
        rows.append((reader, label, f"{seconds * 1e3:.1f}", f"{seconds * 1e9 / n:.1f}", f"{n / seconds / 1e6:.0f}"))
    return rows


def end_to_end(accesses: int) -> None:
    from .end_to_end import end_to_end as run  # (it imports this module's functions)
    run(accesses)


def bounds(accesses: int) -> None:
    from .bounds import bounds as run  # (it imports this module's functions)
    run(accesses)


def cuts(accesses: int) -> None:
    from .cuts import cuts as run  # (it imports this module's functions)
    run(accesses)


def against(rev: str, accesses: int, copies: int, processes: int) -> None:
    from .against import against as run  # (it imports this module's functions)
    run(rev, accesses, copies, processes=processes)


def lines(accesses: int, seconds: int) -> None:
    from .lines import lines as run  # (it imports this module's functions)
    run(accesses, seconds)


def instructions(accesses: int) -> None:
    from .instructions import instructions as run  # (it imports this module's functions)
    run(accesses)


def cores(n: int, accesses: int, reference_accesses: int) -> None:
    from .smp import smp as run  # (it imports this module's functions)
    run(n, accesses, reference_accesses)


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (else one sentence, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give a whole number of at least 1")
    return value


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=positive, default=5_000_000)
    ap.add_argument("--reference-accesses", type=positive, default=100_000)
    ap.add_argument("--streaming", type=int, nargs="*", metavar="N",
                    help="instead: peak RSS of slatframe run at these trace lengths (e.g. 1000000 100000000)")
    ap.add_argument("--profile", action="store_true",
                    help="instead: nanoseconds per access as pieces of work are added, one per row")
    ap.add_argument("--kernels", action="store_true",
                    help="instead: the builtin LRU compiled into the loop against the same kernels compiled apart")
    ap.add_argument("--builtins-apart", action="store_true",
                    help="instead: the builtin PSCs and radix walk against the same written as plugin kernels")
    ap.add_argument("--readers", action="store_true", help="instead: records per second of the trace readers")
    ap.add_argument("--faults", type=int, metavar="PAGES",
                    help="instead: microseconds per first touch of a page (native), over PAGES pages, "
                         "served in the loop and in Python; then GUPS over 4 GiB in whole processes")
    ap.add_argument("--end-to-end", action="store_true",
                    help="instead: slatframe run from a trace file, in fresh processes, beside the bare loop")
    ap.add_argument("--bounds", action="store_true",
                    help="instead: each throughput target's engine row beside bare loops that count as the engine does")
    ap.add_argument("--cores", type=positive, metavar="N",
                    help="instead: accesses per second on N cores against one, in each tier")
    ap.add_argument("--cuts", action="store_true",
                    help="instead: the engine's loop beside copies of it with one piece cut or fixed (minutes)")
    ap.add_argument("--lines", action="store_true",
                    help="instead: a sampling profile of the engine's loop by line of loop.py (needs perf, binutils)")
    ap.add_argument("--seconds", type=positive, default=15, help="with --lines: seconds sampled per config")
    ap.add_argument("--against", metavar="REV",
                    help="instead: the working tree's loop.py against the one at commit REV, several copies of each")
    ap.add_argument("--instructions", action="store_true",
                    help="instead: instructions, mispredicts and cache misses per 2D walk-heavy access "
                         "(accesses / 50 a pass) under valgrind's cachegrind, beside the bare loop's")
    ap.add_argument("--copies", type=positive, default=3, help="with --against: compiled copies of each loop")
    ap.add_argument("--processes", type=positive, default=1,
                    help="with --against: processes the cached copies are loaded and timed in, one after another")
    args = ap.parse_args(argv)
    instead = [(args.bounds, lambda: bounds(args.accesses)), (args.cuts, lambda: cuts(args.accesses)),
               (args.lines, lambda: lines(args.accesses, args.seconds)),
               (args.instructions, lambda: instructions(max(1000, args.accesses // 50))),
               (args.against, lambda: against(args.against, args.accesses, args.copies, args.processes)),
               (args.cores, lambda: cores(args.cores, args.accesses, args.reference_accesses)),
               (args.faults, lambda: faults(args.faults)),
               (args.end_to_end, lambda: end_to_end(args.accesses)),
               (args.readers, lambda: readers(args.accesses)),
               (args.builtins_apart, lambda: builtins_apart(args.accesses)),
               (args.profile, lambda: profile(args.accesses)), (args.kernels, lambda: kernels(args.accesses)),
               (args.streaming, lambda: streaming(args.streaming))]
    for asked, run in instead:
        if asked:
            run()
            return
    rows = []
    for kind in ("hit-heavy", "walk-heavy"):
        trace = workload(kind, args.accesses)
        pages = (trace["vaddr"] >> np.uint64(12)).astype(np.int64)
        bare = bare_rate(pages)
        for label, sections in CONFIGS.items():
            config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}], **sections))
            shape, exact = shape_of(config)[0], shape_of(config, exact=True)[0]
            for loop in (None, shape, exact):  # compile / load the cache
                run_engine("compiled", config, registry, trace[:20_000], shape=loop)
            cold, warm = run_engine("compiled", config, registry, trace)
            _, shaped = run_engine("compiled", config, registry, trace, shape=shape)
            _, exactly = run_engine("compiled", config, registry, trace, shape=exact)
            ref_cold, ref_warm = run_engine("reference", config, registry, trace[: args.reference_accesses],
                                            warm_passes=1)
            rows.append((kind, label, f"{cold / 1e6:.2f}", f"{warm / 1e6:.2f}", f"{shaped / 1e6:.2f}",
                         f"{exactly / 1e6:.2f}", f"{bare / 1e6:.1f}", f"{bare / warm:.1f}x",
                         f"{bare / shaped:.1f}x", f"{bare / exactly:.1f}x",
                         f"{ref_warm / 1e3:.1f}", f"{warm / ref_warm:.0f}x",
                         f"{cold / ref_cold:.0f}x", f"{peak_rss_mib():.0f}"))
    print(f"{args.accesses:,} accesses per compiled pass, {args.reference_accesses:,} per reference pass; "
          "rates in accesses per second")
    print(table(rows, ("workload", "config", "compiled cold M/s", "compiled warm M/s", "shaped loop warm M/s",
                       "exact loop warm M/s", "bare LRU M/s", "bare/warm", "bare/shaped", "bare/exact", "reference warm K/s", "warm speedup",
                       "cold speedup", "peak RSS MiB")))


if __name__ == "__main__":
    main()
