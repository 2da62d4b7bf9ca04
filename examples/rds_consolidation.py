"""Sessions per host under shadow paging and under nested paging, for
examples/rds-consolidation.toml, with the ratio and a sensitivity table.

    python examples/rds_consolidation.py [--scale 1.0]

Runs the example on each machine preset (intel-server: shadow vs intel-ept with
paging-structure caches; amd-server: shadow vs amd-npt with a page walk cache and a
nested TLB), then varies the parameters that move the ratio most, one at a time, on
intel-server: the page-table update rate (``workload.churn_rate``), the context-switch
interval (``workload.switch_every``; the warmup is one turn of every process), and two
that need no new run because the cost and consolidation models work on the counters
after the run: the cycles of a VM exit and the session's own work per access.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import attrs

from slatframe.config import load_config
from slatframe.consolidation import consolidation_metrics
from slatframe.engine import compute_metrics, run_experiment
from slatframe.report import table

BASE = Path(__file__).with_name("rds-consolidation.toml")
AMD_CACHES = "walk_caches=[{type='pwc'}, {type='nested-tlb'}]"
MACHINES = {"intel-server": ("intel-ept", []), "amd-server": ("amd-npt", [AMD_CACHES])}
CHURN = (0.00002, 0.0002, 0.002, 0.01)
SWITCH = (2500, 12500, 50000)
VM_EXIT = (1529, 5000, 15000)
WORK = (1.0, 3.0, 10.0)


class Runner:
    """Runs the example with overrides, remembering each run (config, result)."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.done: dict[tuple[str, ...], tuple] = {}

    def __call__(self, *sets: str, switch_every: int = 50000) -> tuple:
        key = tuple(sets) + (str(switch_every),)
        if key not in self.done:
            processes = 16
            warmup = int(processes * switch_every * self.scale)  # one turn of every process at scale 1
            measured = max(switch_every, int(1_600_000 * self.scale))
            overrides = [*sets, f"workload.switch_every={switch_every}", f"experiment.warmup={warmup}",
                         f"workload.accesses={warmup + measured}"]
            config, registry = load_config(BASE, overrides)
            self.done[key] = (config, registry, run_experiment(config, registry))
        return self.done[key]


def sessions(config, registry, result, vm_exit: int | None = None, work: float | None = None) -> int:
    """Sessions per host, recomputed after the run with another exit cost or work per access."""
    metrics = result.metrics
    if vm_exit is not None:
        cost = attrs.evolve(config.cost, options=attrs.evolve(config.cost.options, vm_exit=vm_exit))
        config = attrs.evolve(config, cost=cost)
        counters = {k: v for k, v in metrics.items() if not k.startswith(("cycles.", "consolidation."))}
        metrics = compute_metrics(config, registry, _Counters(counters))
    c = config.consolidation if work is None else attrs.evolve(config.consolidation, work_per_access=work)
    return consolidation_metrics(metrics, c)["consolidation.sessions"]


class _Counters:
    """Metrics of a finished run, seen as counters by compute_metrics."""

    def __init__(self, values: dict) -> None:
        self.values = values

    def as_dict(self) -> dict:
        return dict(self.values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="fraction of the warmup and of the measured accesses to run (for quick checks)")
    args = ap.parse_args(argv)
    run = Runner(args.scale)

    rows, ratios = [], []
    for preset, (nested, extra) in MACHINES.items():
        per, cpu = {}, {}
        for slat in ("shadow", nested):
            config, registry, result = run(f"machine.slat={slat}", f"cost.preset={preset}", *extra)
            m = result.metrics
            per[slat], cpu[slat] = m["consolidation.sessions"], m["consolidation.cpu_per_session"]
            rows.append((preset, slat, m["walks"], m["walk.refs"] / max(1, m["walks"]), m["vm_exits"],
                         m["cycles.vm_exit"] / m["accesses"], m["cycles.walk"] / m["accesses"],
                         m["cycles.per_access"], m["translation_overhead"], m["consolidation.cpu_per_session"],
                         m["consolidation.sessions"]))
        ratios.append((preset, per[nested], per["shadow"], per[nested] / per["shadow"], cpu["shadow"] / cpu[nested]))
    print(table(rows, ("machine", "scheme", "walks", "refs/walk", "VM exits", "exit cycles/access",
                       "walk cycles/access", "cycles/access", "translation overhead", "cores/session",
                       "sessions")))
    print()
    print(table(ratios, ("machine", "sessions (nested)", "sessions (shadow)", "ratio",
                         "cores/session shadow / nested")))

    sens = []
    for churn in CHURN:
        pair = [run(f"machine.slat={s}", f"workload.churn_rate={churn}") for s in ("intel-ept", "shadow")]
        sens.append(("workload.churn_rate", churn, *_ratio(pair)))
    for every in SWITCH:
        pair = [run(f"machine.slat={s}", switch_every=every) for s in ("intel-ept", "shadow")]
        sens.append(("workload.switch_every", every, *_ratio(pair)))
    central = [run(f"machine.slat={s}") for s in ("intel-ept", "shadow")]
    for cycles in VM_EXIT:
        sens.append(("cost.vm_exit", cycles, *_ratio(central, vm_exit=cycles)))
    for work in WORK:
        sens.append(("consolidation.work_per_access", work, *_ratio(central, work=work)))
    print()
    print(table(sens, ("parameter (intel-server)", "value", "shadow exits / 1k accesses", "sessions (intel-ept)",
                       "sessions (shadow)", "ratio")))
    return 0


def _ratio(pair, **recompute) -> tuple[float, int, int, float]:
    """Shadow's VM exits per 1000 accesses, sessions under each scheme, and their ratio."""
    m = pair[1][2].metrics
    nested, shadow = (sessions(*run, **recompute) for run in pair)
    return 1000 * m["vm_exits"] / m["accesses"], nested, shadow, nested / shadow if shadow else float("inf")


if __name__ == "__main__":
    sys.exit(main())
