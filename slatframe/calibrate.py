"""``slatframe calibrate``: fit the cache-aware cost model to this machine.

1. Measure (membench.c, compiled with ``cc`` at run time): a dependent pointer chase, one
   cache line per 4K page in a random cycle, over footprints of 16 KiB up to 4 GiB, each
   with ``MADV_NOHUGEPAGE`` (4K pages) and ``MADV_HUGEPAGE`` (2M pages, confirmed by
   ``AnonHugePages``); an independent-access pass over the same nodes (the overlap); and
   a dependent add chain (the clock, in cycles per ns, boost included). Every point is
   measured in two passes over all of them (new processes, new frames, a minute apart):
   the faster is the point's figure, the slower says how well the machine repeats itself.
2. Run the same chase through slatframe: the scheme the machine is (nested when the CPU
   says it is a guest, native otherwise), its caches (sysfs) and TLBs
   (:data:`KNOWN_TLBS`), the guest's page size as measured; a guest's host page size is
   unknown, so both 4K and 2M are run. The counters of the second round of the chase are
   what the model charges per access.
3. Fit the model's latencies (the L2 TLB hit; a data access and a walk reference served
   by the L1D, L2, LLC and memory: nine, each an effective cost, not a load-to-use
   latency) to the 4K chase at every other footprint, by non-negative least squares on
   cycles per access, for each host page size; keep the host page size whose fit is
   closer on the 2M chase at those footprints. The L1 TLB is looked up in parallel with
   the L1D and charged 0. Check the fit on the points it did not see: the other
   footprints, of both page sizes.
4. ``access_overlap``: the chase's time over the independent pass's at the footprints
   where the fitted model charges translation less than a tenth of the chase.

It writes ``calibration.json`` (machine, every measured and modelled point, the fit),
``preset.toml`` (a cost preset file: ``[cost] preset_file = "preset.toml"``) and
``calibrated.toml`` (a config of this machine's TLBs and caches that uses it) and
``calibration.svg`` (the curve: measured and modelled cycles per access).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
import numpy as np

from .calibration_report import curve_svg
from .errors import SlatframeError
from .results import write_atomic
from .svg_charts import standalone
from .tomlwrite import to_toml

SOURCE = Path(__file__).with_name("membench.c")
LINES = 64  #: cache lines of a 4K page
KIB = 1 << 10
#: Footprints measured: 16 KiB to 4 GiB, doubling.
FOOTPRINTS = tuple(1 << e for e in range(14, 33))
QUICK_FOOTPRINTS = tuple(1 << e for e in range(14, 31, 2))
#: TLBs of CPUs the docs describe, by (vendor, family): (entries as sets x ways, page sizes).
#: Zen 2 and Zen 3 (family 23 from model 0x30, family 25): L1 DTLB 64 entries, fully
#: associative, every page size; L2 DTLB 2048 entries for 4K and 2M pages (WikiChip, "Zen
#: 2" memory subsystem; AMD's software optimization guide for family 17h/19h). The L2 is a
#: skewed 12-way array, which slatframe does not model: it is taken as 128 sets x 16 ways,
#: the same capacity.
KNOWN_TLBS = {("AuthenticAMD", 25): ((1, 64, ("4K", "2M", "1G")), (128, 16, ("4K", "2M")))}
OVERLAP_SHARE = 0.1  #: translation below this share of a point's chase: it measures the overlap


class CalibrationError(SlatframeError):
    """Calibration cannot run here (no compiler, an unknown CPU without --tlb)."""


@attrs.frozen
class Machine:
    """What the calibration ran on."""

    cpu: str
    vendor: str
    family: int
    kernel: str
    guest: bool  #: the CPU's hypervisor flag
    caches: tuple[tuple[int, int], ...]  #: (size, ways) of L1D, L2, LLC
    thp: str  #: /sys/kernel/mm/transparent_hugepage/enabled


@attrs.frozen
class Point:
    """One measured footprint and page size, and what slatframe counts for it."""

    footprint: int
    page: str  #: "4K" or "2M": what the mapping asked for
    huge: float  #: fraction of the mapping in huge pages
    ns: float  #: per dependent access (the chase)
    ns_independent: float  #: per independent access
    spread: float = 0.0  #: the slower pass's chase over the faster's, minus 1: the machine's own repeatability
    features: dict[str, dict[str, float]] = attrs.field(factory=dict)  #: host page size -> per access counts


def machine_facts() -> Machine:
    """The CPU, kernel, caches and THP setting of this machine."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    caches = []
    for level, kind in ((1, "Data"), (2, "Unified"), (3, "Unified")):
        for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            try:
                if int((index / "level").read_text()) == level and (index / "type").read_text().strip() == kind:
                    size = (index / "size").read_text().strip()
                    caches.append((int(size.rstrip("K")) * KIB, int((index / "ways_of_associativity").read_text())))
                    break
            except (OSError, ValueError):
                continue
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return Machine(cpu=fields.get("model name", platform.processor() or "unknown"),
                   vendor=fields.get("vendor_id", ""), family=int(fields.get("cpu family", "0") or 0),
                   kernel=platform.release(), guest="hypervisor" in fields.get("flags", "").split(),
                   caches=tuple(caches), thp=thp.read_text().strip() if thp.exists() else "unavailable")


def compile_bench(folder: Path) -> Path:
    """membench.c compiled with ``cc -O2`` into ``folder``."""
    cc = shutil.which("cc")
    if cc is None:
        raise CalibrationError("slatframe calibrate compiles its microbenchmark with cc, and there is no cc on "
                               "the PATH: install a C compiler (Debian: apt install gcc).")
    binary = folder / "membench"
    done = subprocess.run([cc, "-O2", "-o", str(binary), str(SOURCE)], capture_output=True, text=True)
    if done.returncode:
        raise CalibrationError(f"cc could not compile {SOURCE}: {done.stderr.strip().splitlines()[-1:]}.")
    return binary


def chase_order(pages: int, seed: int) -> np.ndarray:
    """(page, line) of each node of a random cyclic chase over ``pages`` pages."""
    rng = np.random.default_rng(seed)
    order = np.zeros((pages, 2), dtype=np.uint32)
    order[:, 0] = rng.permutation(pages)
    order[:, 1] = rng.integers(0, LINES, pages)
    return order


def _bench(binary: Path, *args: str) -> tuple[float, int]:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True)
    if done.returncode:
        raise CalibrationError(f"the microbenchmark failed: {done.stderr.strip() or done.returncode}.")
    values = dict(item.split("=") for item in done.stdout.split())
    return float(values["ns"]), int(values["huge"])


def clock_ghz(binary: Path) -> float:
    """Cycles per ns: dependent adds, one cycle each, the fastest of five runs."""
    return 1 / min(_bench(binary, "clock", "200000000")[0] for _ in range(5))


def measure(binary: Path, footprint: int, page: str, order_file: Path, rounds: int) -> tuple[float, float, float]:
    """(ns per dependent access, ns per independent access, huge-page fraction): one
    process, the fastest of ``rounds`` laps of the chase."""
    pages = footprint // 4096
    n = str(int(min(max(2 * pages, 1 << 20), 1 << 22)))
    mode = "2m" if page == "2M" else "4k"
    ns, huge = _bench(binary, "chase", str(footprint), mode, str(order_file), n, str(rounds))
    independent, _ = _bench(binary, "gups", str(footprint), mode, str(order_file), n, "1")
    return ns, independent, huge / footprint


def measure_passes(binary: Path, footprints: Sequence[int], folder: Path, rounds: int, passes: int = 2,
                   say: Callable[[str], None] = print) -> list[Point]:
    """Every footprint with 4K and with 2M pages, in ``passes`` passes over them all (each
    point a new process, so new frames, a while after the last): a point's figures are
    its fastest pass's, and its ``spread`` how much slower the slowest was."""
    runs: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for done in range(passes):
        for footprint in footprints:
            order = folder / "order.bin"
            chase_order(footprint // 4096, footprint).tofile(order)
            for page in ("4K", "2M"):
                runs.setdefault((footprint, page), []).append(measure(binary, footprint, page, order, rounds))
        say(f"measured pass {done + 1} of {passes}")
    points = []
    for (footprint, page), found in runs.items():
        ns, independent, _ = min(found)
        points.append(Point(footprint, page, min(r[2] for r in found), ns, independent,
                            spread=max(r[0] for r in found) / ns - 1))
    return points


def sim_config(machine: Machine, tlbs: Sequence[tuple[int, int, tuple[str, ...]]], footprint: int, guest_page: str,
               host_page: str | None, trace: str, warmup: int) -> dict[str, Any]:
    """The slatframe config of one chase: this machine's scheme, TLBs and caches."""
    vm_memory = max(2 * footprint, 1 << 30)
    slat = ("amd-npt" if machine.vendor == "AuthenticAMD" else "intel-ept") if machine.guest else "native"
    vm: dict[str, Any] = {"name": "vm0", "memory": vm_memory, "guest_page_size": guest_page}
    if host_page is not None:
        vm["host_page_size"] = host_page
    (l1d, l1d_ways), (l2, l2_ways), (llc, llc_ways) = machine.caches
    caches = [{"type": "pwc"}, {"type": "nested-tlb"}] if slat == "amd-npt" else \
        [{"type": "psc", "level": lv} for lv in (4, 3, 2)] if slat == "intel-ept" else [{"type": "psc", "level": 2}]
    return {
        "experiment": {"name": "calibrate", "seed": 1, "warmup": warmup},
        "machine": {"slat": slat, "host_memory": vm_memory + (1 << 30)},
        "tlb": {"levels": [{"name": f"l{i + 1}", "sets": s, "ways": w, "page_sizes": list(sizes)}
                           for i, (s, w, sizes) in enumerate(tlbs)]},
        "walk_caches": caches,
        "vms": [vm],
        "workload": {"source": "npz", "path": trace},
        "cost": {"model": "cache-aware", "l1d_size": l1d, "l1d_ways": l1d_ways, "l2_size": l2, "l2_ways": l2_ways,
                 "llc_size": llc, "llc_ways": llc_ways},
    }


LEVELS = ("l1d", "l2", "llc", "memory")
#: What the fitted latencies multiply: L2 TLB look-ups, and the data accesses and the walk
#: references each cache level served, per access.
FEATURES = ("tlb2", *(f"data.{level}" for level in LEVELS), *(f"walk.{level}" for level in LEVELS))


def features_of(metrics: dict[str, Any], levels: int) -> dict[str, float]:
    """The :data:`FEATURES` of a run's counters, per access."""
    n = metrics["accesses"]
    out = {"tlb2": (metrics["tlb.l2.hits"] + metrics["tlb.l2.misses"]) / n if levels > 1 else 0.0}
    for kind in ("data", "walk"):
        for level in LEVELS:
            out[f"{kind}.{level}"] = metrics.get(f"dcache.{kind}.{level}", 0) / n
    return out


def translation(features: dict[str, float], latencies: dict[str, float]) -> float:
    """Cycles per access the model charges translation: L2 TLB look-ups and walk references."""
    return sum(features[k] * latencies[k] for k in FEATURES if not k.startswith("data."))


def modelled(features: dict[str, float], latencies: dict[str, float]) -> float:
    """Cycles per access the cache-aware model charges (overlap 1, the L1 TLB free)."""
    return sum(features[k] * latencies[k] for k in FEATURES)


def simulate(args: tuple) -> dict[str, float]:
    """Features of one chase (a process pool's task)."""
    machine, tlbs, footprint, guest_page, host_page, seed, folder = args
    from .config import config_from_dict
    from .engine import run_experiment
    from .trace import make_trace
    from .tracefile import write_npz

    pages = footprint // 4096
    order = chase_order(pages, seed)
    va = (np.uint64(1 << 32) + order[:, 0].astype(np.uint64) * np.uint64(4096)
          + order[:, 1].astype(np.uint64) * np.uint64(64))
    measured = int(min(max(pages, 1 << 12), 1 << 16))
    trace = np.concatenate([va, np.resize(va, measured)])
    path = Path(folder) / f"chase-{footprint}-{guest_page}-{host_page}-{os.getpid()}.npz"
    write_npz(path, make_trace(trace), compressed=False)
    raw = sim_config(machine, tlbs, footprint, guest_page, host_page, str(path), warmup=pages)
    config, registry = config_from_dict(raw, where="calibrate")
    metrics = run_experiment(config, registry).metrics
    path.unlink()
    return features_of(metrics, len(tlbs))


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares (Lawson and Hanson's active set): x >= 0 minimising
    |a x - b|."""
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(3 * n):
        w = a.T @ (b - a @ x)
        if passive.all() or (w[~passive] <= 1e-12).all():
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            ratio = np.where(passive & (z <= 0), x / np.maximum(x - z, 1e-300), np.inf)
            alpha = float(np.min(ratio))
            x = x + alpha * (z - x)
            passive &= x > 1e-12
    return x


@attrs.frozen
class Fit:
    """Latencies (cycles) of the model fitted on some points, and its errors."""

    host_page: str | None
    latencies: dict[str, float]
    rms_error: float  #: relative, over the points fitted
    choice_error: float = 0.0  #: relative RMS over the points that choose the host page size


def fit(points: Sequence[Point], ghz: float, host_page: str | None, fitted: Callable[[Point], bool]) -> Fit:
    """The latencies that best give the measured chase of the ``fitted`` points."""
    chosen = [p for p in points if fitted(p)]
    a = np.array([[p.features[str(host_page)][k] for k in FEATURES] for p in chosen])
    b = np.array([p.ns * ghz for p in chosen])
    weights = 1 / b  # relative errors: a 16 KiB point counts as much as a 4 GiB one
    x = nnls(a * weights[:, None], b * weights)
    latencies = dict(zip(FEATURES, (float(v) for v in x)))
    return Fit(host_page, latencies, rms_error(chosen, ghz, host_page, latencies),
               rms_error([p for p in points if _chooses(p)], ghz, host_page, latencies))


def rms_error(points: Sequence[Point], ghz: float, host_page: str | None, latencies: dict[str, float]) -> float:
    """The model's relative RMS error over ``points`` (0 for none)."""
    rel = [(modelled(p.features[str(host_page)], latencies) - p.ns * ghz) / (p.ns * ghz) for p in points]
    return float(np.sqrt(np.mean(np.square(rel)))) if rel else 0.0


def run_calibration(out: Path, footprints: Sequence[int] = FOOTPRINTS, tlbs: Any = None, rounds: int = 5,
                    jobs: int = 2, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure, simulate, fit and write the calibration into ``out``; its summary."""
    from concurrent.futures import ProcessPoolExecutor

    machine = machine_facts()
    if len(machine.caches) != 3:
        raise CalibrationError("slatframe calibrate reads the L1D, L2 and last-level caches from "
                               "/sys/devices/system/cpu/cpu0/cache, and this machine does not describe three.")
    tlbs = tlbs or KNOWN_TLBS.get((machine.vendor, machine.family))
    if tlbs is None:
        raise CalibrationError(f"slatframe calibrate knows the TLBs of {', '.join(str(k) for k in KNOWN_TLBS)}, "
                               f"not of this CPU ({machine.cpu}, {machine.vendor} family {machine.family}): give "
                               "them with --tlb, e.g. --tlb 1x64:4K,2M,1G --tlb 128x16:4K,2M.")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slatframe-calibrate-") as tmp:
        folder = Path(tmp)
        binary = compile_bench(folder)
        ghz = clock_ghz(binary)
        say(f"clock: {ghz:.3f} GHz (dependent adds); {machine.cpu}, {'a guest' if machine.guest else 'bare metal'}, "
            f"THP {machine.thp}")
        points = measure_passes(binary, footprints, folder, rounds, say=say)
        measured = time.perf_counter() - started
        say(f"measured {len(points)} points in {measured:.0f} s; simulating them")
        hosts: tuple[str | None, ...] = ("4K", "2M") if machine.guest else (None,)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            def simulated(chosen: list[Point], under: Sequence[str | None]) -> list[Point]:
                tasks = [(machine, tlbs, p.footprint, _guest_page(p), host, p.footprint, tmp)
                         for p in chosen for host in under]
                it = iter(pool.map(simulate, tasks))
                return [attrs.evolve(p, features={str(host): next(it) for host in under}) for p in chosen]

            # every host page size for the points that fit and choose; the others under the one chosen
            seen = simulated([p for p in points if _even(p)], hosts)
            fits = [fit(seen, ghz, host, _fitted) for host in hosts]
            choosing = any(_chooses(p) for p in seen)
            best = min(fits, key=lambda f: f.choice_error if choosing else f.rms_error)
            held = simulated([p for p in points if not _even(p)], (best.host_page,))
        points = sorted(seen + held, key=lambda p: (p.footprint, p.page != "4K"))
    overlap = _overlap(points, ghz, best)
    summary = _summary(machine, ghz, points, fits, best, overlap, time.perf_counter() - started)
    summary["measure_seconds"] = measured
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "calibration.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(out / "preset.toml", preset_text(machine, best, overlap))
    write_atomic(out / "calibrated.toml", config_text(machine, tlbs, best))
    write_atomic(out / "calibration.svg", standalone(curve_svg(summary)))
    return summary


def _guest_page(point: Point) -> str:
    """The guest page size a point ran with: 2M only where the mapping got huge pages."""
    return "2M" if point.page == "2M" and point.huge >= 0.5 else "4K"


def _even(point: Point) -> bool:
    """Every other footprint from 16 KiB: the points the fit sees (the others are held out)."""
    return (point.footprint.bit_length() - 15) % 2 == 0


def _fitted(point: Point) -> bool:
    """The points the latencies are fitted to: the 4K chase at every other footprint."""
    return point.page == "4K" and _even(point)


def _chooses(point: Point) -> bool:
    """The points that choose a guest's host page size: the 2M chase (where the mapping got
    huge pages) at the fitted footprints; the host page size matters most there (a 2M
    guest page is one TLB entry only over a 2M host page)."""
    return point.page == "2M" and point.huge >= 0.5 and _even(point)


def role(point: Point) -> str:
    """What a point did: fitted the latencies, chose the host page size, or was held out."""
    return "fitted" if _fitted(point) else "host choice" if _chooses(point) else "held out"


def _overlap(points: Sequence[Point], ghz: float, best: Fit) -> float:
    """The chase's time over the independent pass's, the median over the points whose
    modelled translation is small (1 if there is none)."""
    ratios = []
    for p in points:
        if translation(p.features[str(best.host_page)], best.latencies) < OVERLAP_SHARE * p.ns * ghz \
                and p.ns_independent > 0:
            ratios.append(p.ns / p.ns_independent)
    return float(np.median(ratios)) if ratios else 1.0


def _summary(machine: Machine, ghz: float, points: Sequence[Point], fits: Sequence[Fit], best: Fit, overlap: float,
             seconds: float) -> dict[str, Any]:
    rows = []
    for p in points:
        cycles = p.ns * ghz
        model = modelled(p.features[str(best.host_page)], best.latencies)
        rows.append({"footprint": p.footprint, "page": p.page, "huge_fraction": round(p.huge, 4), "ns": p.ns,
                     "ns_independent": p.ns_independent, "spread": p.spread, "cycles": cycles, "modelled": model,
                     "error": (model - cycles) / cycles, "role": role(p), "features": p.features})
    return {"machine": attrs.asdict(machine), "ghz": ghz, "seconds": seconds,
            "fits": [attrs.asdict(f) for f in fits], "host_page": best.host_page, "latencies": best.latencies,
            "access_overlap": overlap, "points": rows}


def preset_text(machine: Machine, best: Fit, overlap: float) -> str:
    """A cost preset file: the model, this machine's caches and the fitted latencies."""
    (l1d, l1d_ways), (l2, l2_ways), (llc, llc_ways) = machine.caches
    lat = {k: max(0, round(v)) for k, v in best.latencies.items()}
    latencies = "".join(f"{level}_latency = {lat[f'data.{level}']}\n" for level in LEVELS)
    walk = "".join(f"walk_{level}_latency = {lat[f'walk.{level}']}\n" for level in LEVELS)
    return (f"# slatframe calibrate, {time.strftime('%Y-%m-%d')}: {machine.cpu} ({machine.vendor} family "
            f"{machine.family}), kernel {machine.kernel}, {'a guest' if machine.guest else 'bare metal'}"
            f"{f', host pages fitted as {best.host_page}' if best.host_page else ''}.\n"
            f"# Latencies fitted to a pointer chase (relative RMS error {best.rms_error:.1%} on the points fitted); "
            f"the L2 TLB hit costs {lat['tlb2']} cycles (tlb.levels[1].latency: see calibrated.toml).\n"
            f"# Use it: [cost] preset_file = \"preset.toml\" (keys written beside it override its values).\n"
            f'model = "cache-aware"\n'
            f"l1d_size = {l1d}\nl1d_ways = {l1d_ways}\nl2_size = {l2}\nl2_ways = {l2_ways}\n"
            f"llc_size = {llc}\nllc_ways = {llc_ways}\n{latencies}{walk}access_overlap = {overlap:.3f}\n")


def config_text(machine: Machine, tlbs: Any, best: Fit) -> str:
    """The config the chase was simulated with (this machine's scheme, TLBs, walk caches,
    host page size), the fitted L2 TLB latency, the preset file, and a workload to replace."""
    raw = sim_config(machine, tlbs, 1 << 30, "4K", best.host_page, "", warmup=0)
    raw["experiment"] = {"name": "calibrated", "warmup": 200_000}  # touches each of the 16,384 pages (0.1 expected missed)
    for i, level in enumerate(raw["tlb"]["levels"]):
        level["latency"] = 0 if i == 0 else max(0, round(best.latencies["tlb2"]))
    raw["workload"] = {"source": "synthetic", "distribution": "uniform", "footprint": "64M", "accesses": 1_200_000}
    raw["cost"] = {"preset_file": "preset.toml"}
    return (f"# {machine.cpu} as slatframe calibrate fitted it ({time.strftime('%Y-%m-%d')}; calibration.json). "
            "Run: slatframe run calibrated.toml\n" + to_toml(raw))


def parse_tlbs(specs: Sequence[str] | None) -> tuple[tuple[int, int, tuple[str, ...]], ...] | None:
    """``["1x64:4K,2M,1G", "128x16:4K,2M"]`` as TLB levels (None: none given)."""
    if not specs:
        return None
    levels = []
    for spec in specs:
        try:
            geometry, sizes = spec.split(":")
            sets, ways = (int(v) for v in geometry.lower().split("x"))
            pages = tuple(s.strip().upper() for s in sizes.split(","))
            if sets < 1 or ways < 1 or not pages or any(p not in ("4K", "2M", "1G") for p in pages):
                raise ValueError
        except ValueError:
            raise CalibrationError(f"--tlb {spec!r} is not allowed: expected SETSxWAYS:SIZES, sizes among 4K, 2M "
                                   "and 1G, e.g. 1x64:4K,2M,1G.") from None
        levels.append((sets, ways, pages))
    return tuple(levels)


def _size(nbytes: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)


def report_lines(summary: dict[str, Any]) -> list[str]:
    """Measured beside modelled for every point, with the error; the fit and its source."""
    from .report import table

    lat = summary["latencies"]
    host = summary.get("host_page")
    rows = [(_size(p["footprint"]), p["page"] + ("" if p["page"] == "4K" or p["huge_fraction"] >= 0.5 else " (no THP)"),
             f"{p['cycles']:.1f}", f"+{p.get('spread', 0):.1%}", f"{p['modelled']:.1f}", f"{p['error']:+.1%}", p["role"],
             f"{p['ns'] / p['ns_independent']:.2f}" if p["ns_independent"] else "-")
            for p in summary["points"]]
    held = [abs(p["error"]) for p in summary["points"] if p["role"] == "held out" and p["footprint"] >= 64 * KIB]
    lines = [table(rows, ("footprint", "pages", "measured cycles", "slowest pass", "modelled", "error", "",
                          "chase/independent")), ""]
    lines.append(f"clock {summary['ghz']:.3f} GHz; fitted latencies (cycles), data / walk reference: "
                 + ", ".join(f"{level} {lat['data.' + level]:.1f} / {lat['walk.' + level]:.1f}" for level in LEVELS)
                 + f"; L2 TLB hit {lat['tlb2']:.1f}" + (f"; host pages fitted as {host}" if host else "")
                 + f"; access_overlap {summary['access_overlap']:.2f}")
    for f in summary["fits"]:
        if f.get("host_page") is not None:
            lines.append(f"  host pages {f['host_page']}: relative RMS error {f['rms_error']:.1%} on the fitted points, "
                         f"{f['choice_error']:.1%} on those that choose the host page size")
    if held:
        lines.append(f"held-out points from 64K: largest error {max(held):.1%}, {sum(e <= 0.15 for e in held)} of "
                     f"{len(held)} within 15%")
    spreads = [p.get("spread", 0) for p in summary["points"] if p["footprint"] >= 64 * KIB]
    if spreads:
        lines.append(f"the machine itself, each point measured in separate passes: the slowest pass within 15% of "
                     f"the fastest at {sum(s <= 0.15 for s in spreads)} of {len(spreads)} points from 64K, at most "
                     f"+{max(spreads):.1%}")
    lines.append(f"{summary['seconds']:.0f} s in all ({summary.get('measure_seconds', 0):.0f} s measuring, the rest "
                 "simulating and fitting)")
    return lines
