"""Engine throughput: compiled accesses per second, against the reference engine and a
bare numba set-associative LRU loop (the yardstick of the machine's limit).

    python -m benchmarks [--accesses N] [--reference-accesses N]
    python -m benchmarks --profile [--accesses N]      (where the time goes)
    python -m benchmarks --kernels [--accesses N]      (inline kernels against kernels compiled apart)
    python -m benchmarks --builtins-apart [--accesses N]  (builtin PSCs and radix walk against plugin kernels)
    python -m benchmarks --streaming N [N ...]          (peak RSS against trace length)
    python -m benchmarks --readers [--accesses N]       (trace readers: records per second)

All ratios are measured in this one process run, on one core. Peak RSS is the
process's maximum resident set size (getrusage) at the end of each row.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from numba import njit

from slatframe.counters import Counters
from slatframe.engine import make_engine
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
    """hit-heavy: zipf(1.1) over 1024 pages (fits the L2 TLB);
    walk-heavy: uniform over 100x the L2 TLB reach."""
    rng = np.random.default_rng(seed)
    if kind == "hit-heavy":
        pages = rng.permutation(1024)[rng.zipf(1.1, n) % 1024]
    else:
        pages = rng.integers(0, 100 * REACH_PAGES, n)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    t["vaddr"] = (pages.astype(np.uint64) << np.uint64(12)) + np.uint64(1 << 32)
    t["op"] = READ
    return t


CONFIGS = {
    "native + TLB + PSC": dict(machine={"slat": "native", "host_memory": "64G"}, walk_caches=PSC[:3]),
    "intel-ept 2D + TLB + PSC": dict(machine={"slat": "intel-ept", "host_memory": "64G"}, walk_caches=PSC),
}


@njit(cache=True)
def bare_lru(pages, sets, ways):
    """A set-associative LRU lookup and fill, nothing else: the limit to compare with."""
    tags = np.full((sets, ways), -1, dtype=np.int64)
    stamp = np.zeros((sets, ways), dtype=np.int64)
    clock = 0
    misses = 0
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
            hit = 0
            for w in range(1, ways):
                if stamp[s, w] < stamp[s, hit]:
                    hit = w
            tags[s, hit] = p
        stamp[s, hit] = clock
    return misses


def bare_rate(pages: np.ndarray, passes: int = 3) -> float:
    """Accesses per second of the bare loop over ``pages``, best of ``passes``."""
    bare_lru(pages[:1000], 128, 12)  # compile or load
    best = 0.0
    for _ in range(passes):
        t = time.perf_counter()
        bare_lru(pages, 128, 12)
        best = max(best, len(pages) / (time.perf_counter() - t))
    return best


def run_engine(tier: str, config, registry, trace: np.ndarray, chunk: int = 65536,
               warm_passes: int = 3) -> tuple[float, float]:
    """Accesses per second of ``tier`` on ``trace``: a cold pass (every page touched for the
    first time faults into the software side) and the best of ``warm_passes`` further
    passes over the same trace on the same machine (tables built, TLBs and walk caches
    warm; the best, because other tenants of a shared host only ever slow a pass down)."""
    engine = make_engine(tier, build_machine(config, registry, Counters()), registry)
    rates = []
    for _ in range(1 + warm_passes):
        start = time.perf_counter()
        for i in range(0, len(trace), chunk):
            engine.run_chunk(trace[i:i + chunk])
        rates.append(len(trace) / (time.perf_counter() - start))
    return rates[0], max(rates[1:])


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
    ("native walks, no walk cache", "walk-heavy", "native", TLB, [], None, 65536),
    ("  + paging-structure caches", "walk-heavy", "native", TLB, PSC[:3], None, 65536),
    ("2D walks, no walk cache", "walk-heavy", "intel-ept", TLB, [], None, 65536),
    ("  + paging-structure caches (both dimensions)", "walk-heavy", "intel-ept", TLB, PSC, None, 65536),
    ("  + data caches (cache-aware cost)", "walk-heavy", "intel-ept", TLB, PSC, CACHE_AWARE, 65536),
]


def profile(accesses: int) -> None:
    """Warm nanoseconds per access, adding one piece of work per row: where the time goes."""
    traces = {"hit-heavy": workload("hit-heavy", accesses), "walk-heavy": workload("walk-heavy", accesses // 4)}
    rows = []
    for label, kind, slat, tlb, caches, cost, chunk in PROFILE:
        trace = traces[kind]
        if slat is None:
            pages = (trace["vaddr"] >> np.uint64(12)).astype(np.int64)
            rate = bare_rate(pages)
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


def readers(accesses: int, rounds: int = 3) -> None:
    """Records per second of each trace reader, whole file to chunks, best of ``rounds``;
    the lackey reader also with its vectorized parser turned off (the regular
    expressions alone, as before), in the same process."""
    import tempfile
    from pathlib import Path

    import slatframe_plugins.trace_readers as readers_module
    from slatframe.trace import IFETCH, WRITE

    rng = np.random.default_rng(1)
    trace = np.zeros(accesses, dtype=TRACE_DTYPE)
    trace["vaddr"] = rng.integers(0x400000, 0x7FFF_FFFF_F000, accesses, dtype=np.uint64)
    trace["op"] = rng.choice([IFETCH, IFETCH, READ, WRITE], accesses)
    with tempfile.TemporaryDirectory() as tmp:
        lackey = Path(tmp) / "t.lackey"
        lackey.write_bytes(lackey_text(trace))
        champsim = Path(tmp) / "t.champsim"
        instr = np.zeros(accesses // 2, dtype=readers_module.CHAMPSIM_DTYPE)
        instr["ip"] = trace["vaddr"][: len(instr)]
        instr["source_memory"][:, 0] = trace["vaddr"][len(instr): 2 * len(instr)]
        champsim.write_bytes(instr.tobytes())

        def rate(read, path) -> tuple[float, int]:
            best = 0.0
            for _ in range(rounds):
                start = time.perf_counter()
                n = sum(len(c) for c in read(str(path), 65536))
                best = max(best, n / (time.perf_counter() - start))
            return best, n

        rows = []
        fast, n = rate(readers_module.read_lackey, lackey)
        vectorized = readers_module.parse_block
        readers_module.parse_block = lambda text: None
        try:
            slow, _ = rate(readers_module.read_lackey, lackey)
        finally:
            readers_module.parse_block = vectorized
        rows.append(("lackey", f"{n:,}", f"{fast / 1e6:.2f}", f"{slow / 1e6:.2f}", f"{fast / slow:.1f}x"))
        champ, n = rate(readers_module.read_champsim, champsim)
        rows.append(("champsim", f"{n:,} ({len(instr):,} instructions)", f"{champ / 1e6:.2f}", "", ""))
    print(f"records per second, whole file to chunks, best of {rounds}")
    print(table(rows, ("reader", "records", "M records/s", "regular expressions only M/s", "speedup")))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=5_000_000)
    ap.add_argument("--reference-accesses", type=int, default=100_000)
    ap.add_argument("--streaming", type=int, nargs="*", metavar="N",
                    help="instead: peak RSS of slatframe run at these trace lengths (e.g. 1000000 100000000)")
    ap.add_argument("--profile", action="store_true",
                    help="instead: nanoseconds per access as pieces of work are added, one per row")
    ap.add_argument("--kernels", action="store_true",
                    help="instead: the builtin LRU compiled into the loop against the same kernels compiled apart")
    ap.add_argument("--builtins-apart", action="store_true",
                    help="instead: the builtin PSCs and radix walk against the same written as plugin kernels")
    ap.add_argument("--readers", action="store_true", help="instead: records per second of the trace readers")
    args = ap.parse_args(argv)
    if args.readers:
        readers(args.accesses)
        return
    if args.builtins_apart:
        builtins_apart(args.accesses)
        return
    if args.profile:
        profile(args.accesses)
        return
    if args.kernels:
        kernels(args.accesses)
        return
    if args.streaming:
        streaming(args.streaming)
        return
    rows = []
    for kind in ("hit-heavy", "walk-heavy"):
        trace = workload(kind, args.accesses)
        pages = (trace["vaddr"] >> np.uint64(12)).astype(np.int64)
        bare = bare_rate(pages)
        for label, sections in CONFIGS.items():
            config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}], **sections))
            run_engine("compiled", config, registry, trace[:20_000])  # compile / load the cache
            cold, warm = run_engine("compiled", config, registry, trace)
            ref_cold, ref_warm = run_engine("reference", config, registry, trace[: args.reference_accesses],
                                            warm_passes=1)
            rows.append((kind, label, f"{cold / 1e6:.2f}", f"{warm / 1e6:.2f}", f"{bare / 1e6:.1f}",
                         f"{bare / warm:.1f}x", f"{ref_warm / 1e3:.1f}", f"{warm / ref_warm:.0f}x",
                         f"{cold / ref_cold:.0f}x", f"{peak_rss_mib():.0f}"))
    print(f"{args.accesses:,} accesses per compiled pass, {args.reference_accesses:,} per reference pass; "
          "rates in accesses per second")
    print(table(rows, ("workload", "config", "compiled cold M/s", "compiled warm M/s", "bare LRU M/s",
                       "bare/warm", "reference warm K/s", "warm speedup", "cold speedup", "peak RSS MiB")))


if __name__ == "__main__":
    main()
