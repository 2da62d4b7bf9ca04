"""Sessions per host under shadow paging and under nested paging, for
examples/rds-consolidation.toml, with the ratios, the hypervisor's share of the CPU and a
sensitivity table for the parameters that are assumptions.

    python examples/rds_consolidation.py [--scale 1.0] [--set KEY=VALUE ...] [--vcpus K] [--no-sensitivity]

Runs the example on each machine preset (intel-server: intel-ept with paging-structure
caches; amd-server: amd-npt with a page walk cache and a nested TLB) and under two
shadow MMUs: Hyper-V-like (every store to a shadowed table emulated, the 80 most
recently run address spaces' shadows kept) and KVM-like (leaf tables out of sync until
INVLPG or a CR3 load, a pool of 2% of guest memory). The warmup is one turn of every
process (found by reading the workload's records), then ``3.2e6 x scale`` accesses are
counted. The sensitivity table varies one assumption at a time on intel-server (the
Hyper-V-like shadow against intel-ept); the cost and consolidation parameters need no
new run, because those models work on the counters after the run. ``--vcpus K`` gives
the VM K vCPUs, each on a core of its own, with process p on vCPU p mod K (an SMP guest).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from slatframe.config import load_config
from slatframe.consolidation import consolidation_metrics
from slatframe.engine import compute_metrics, run_experiment, workload_chunks
from slatframe.report import table
from slatframe.trace import ACCESS_OPS, CONTEXT_SWITCH

BASE = Path(__file__).with_name("rds-consolidation.toml")
AMD_CACHES = "walk_caches=[{type='pwc'}, {type='nested-tlb'}]"
MACHINES = {"intel-server": ("intel-ept", []), "amd-server": ("amd-npt", [AMD_CACHES])}
SHADOWS = {"shadow, Hyper-V-like": "{name='shadow', cached_roots=80}",
           "shadow, KVM-like": "{name='shadow', writes='unsync', pool_permille=20}"}
MEASURED = 3_200_000
#: workload assumptions: (key, values); the first value of each is not the example's own
SWEEPS = {
    "workload.spawn_every": (0, 4_000_000, 1_000_000, 250_000),
    "workload.shared_fraction": (0.0, 0.2, 0.5),
    "workload.churn_rate": (0.00002, 0.0002, 0.002),
    "workload.switch_every": (12_500, 50_000),
    "workload.processes": (48, 96, 192),
}
#: cost and consolidation assumptions, recomputed after the run: (path, values)
RECOMPUTED = {
    "cost.vm_exit": (1529, 5000),
    "cost.access_overlap": (1.0, 8.91, 20.0),
    "consolidation.work_per_access": (0.0, 3.0, 10.0),
}


def first_turns(config, registry) -> tuple[int, int] | None:
    """(records, accesses) before the turn after every process's first one; None when
    the workload ends before."""
    processes = config.workload.options.processes
    records = accesses = switches = 0
    for chunk in workload_chunks(config, registry):
        at = np.flatnonzero(chunk["op"] == CONTEXT_SWITCH)
        if switches + len(at) > processes:
            end = int(at[processes - switches])
            return records + end, accesses + int(np.isin(chunk["op"][:end], ACCESS_OPS).sum())
        switches += len(at)
        records += len(chunk)
        accesses += int(np.isin(chunk["op"], ACCESS_OPS).sum())
    return None


class Runner:
    """Runs the example with overrides (warmup: every process's first turn), remembering
    each run (config, registry, result)."""

    def __init__(self, scale: float, base_sets: tuple[str, ...] = ()) -> None:
        self.scale = scale
        self.base_sets = base_sets  #: overrides of every run (``--set``)
        self.done: dict[tuple[str, ...], tuple] = {}

    def __call__(self, *sets: str) -> tuple:
        sets = (*self.base_sets, *sets)
        if sets not in self.done:
            config, registry = load_config(BASE, sets)
            found = first_turns(config, registry)
            while found is None:  # a longer workload, until every process has had its turn
                accesses = 2 * config.workload.options.accesses
                config, registry = load_config(BASE, [*sets, f"workload.accesses={accesses}"])
                found = first_turns(config, registry)
            warmup, before = found
            measured = max(1, int(MEASURED * self.scale))
            config, registry = load_config(BASE, [*sets, f"experiment.warmup={warmup}",
                                                  f"workload.accesses={before + measured}"])
            self.done[sets] = (config, registry, run_experiment(config, registry))
        return self.done[sets]


def recomputed(config, registry, result, path: str | None = None, value: float | None = None) -> tuple[Any, dict]:
    """The run's config and metrics with one cost or consolidation parameter changed
    after the run."""
    if path is None:
        return config, result.metrics
    section, key = path.split(".")
    if section == "consolidation":
        config = attrs.evolve(config, consolidation=attrs.evolve(config.consolidation, **{key: value}))
    else:
        config = attrs.evolve(config, cost=attrs.evolve(config.cost, options=attrs.evolve(config.cost.options,
                                                                                            **{key: value})))
    counters = {k: v for k, v in result.metrics.items()
                if not k.startswith(("cycles.", "consolidation.", "vm.", "between_records."))}
    metrics = compute_metrics(config, registry, _Counters(counters))
    return config, {**metrics, **consolidation_metrics(metrics, config.consolidation)}


def hypervisor_share(config, m: dict) -> float:
    """The hypervisor's share of a session's CPU: its exits (round trip and work) and its
    host faults, of all the cycles including the session's own work."""
    work = config.consolidation.work_per_access * m["accesses"]
    hypervisor = m.get("cycles.vm_exit", 0) + m.get("faults.host", 0) * config.cost.options.host_fault
    return hypervisor / (m["cycles.total"] + work)


def sessions(config, registry, result, path: str | None = None, value: float | None = None) -> int:
    """Sessions per host, with one cost or consolidation parameter changed after the run."""
    return recomputed(config, registry, result, path, value)[1]["consolidation.sessions"]


class _Counters:
    """Metrics of a finished run, seen as counters by compute_metrics."""

    def __init__(self, values: dict) -> None:
        self.values = values

    def as_dict(self) -> dict:
        return dict(self.values)

    def by_scope(self) -> dict:
        return {}  # the totals only: no per-VM figures are recomputed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the counted accesses (for quick checks)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override of every run, as slatframe run --set (before the script's own)")
    ap.add_argument("--vcpus", type=int, default=1, help="vCPUs of the VM, each on a core (an SMP guest)")
    ap.add_argument("--no-sensitivity", action="store_true", help="print the two main tables only")
    args = ap.parse_args(argv)
    smp = (f"machine.cores={args.vcpus}", f"vms[0].vcpus={args.vcpus}", "workload.threads='process'")
    run = Runner(args.scale, (*(smp if args.vcpus > 1 else ()), *args.set))

    rows, ratios = [], []
    for preset, (nested, extra) in MACHINES.items():
        schemes = {nested: f"'{nested}'", **SHADOWS}
        done = {label: run(f"machine.slat={slat}", f"cost.preset={preset}", *extra) for label, slat in schemes.items()}
        for label, (config, _, result) in done.items():
            m = result.metrics
            rows.append((preset, label, 1000 * m.get("vm_exits", 0) / m["accesses"], m["cycles.vm_exit"] / m["accesses"],
                         m["cycles.walk"] / m["accesses"], m["cycles.per_access"], hypervisor_share(config, m),
                         m["consolidation.table_bytes_per_session"] / 1024, m["consolidation.cpu_per_session"],
                         m["consolidation.sessions"]))
        base = done[nested][2].metrics
        for label in SHADOWS:
            shadow = done[label][2].metrics
            ratios.append((preset, label, base["consolidation.sessions"], shadow["consolidation.sessions"],
                           base["consolidation.sessions"] / shadow["consolidation.sessions"],
                           shadow["consolidation.cpu_per_session"] / base["consolidation.cpu_per_session"]))
    print(table(rows, ("machine", "scheme", "VM exits / 1k accesses", "exit cycles/access", "walk cycles/access",
                       "cycles/access", "hypervisor share", "table KiB/session", "cores/session", "sessions")))
    print()
    print(table(ratios, ("machine", "shadow", "sessions (nested)", "sessions (shadow)", "ratio",
                         "cores/session shadow / nested")))
    if args.no_sensitivity:
        return 0

    sens = []
    shadow_slat = SHADOWS["shadow, Hyper-V-like"]
    for key, values in SWEEPS.items():
        for value in values:
            pair = [run(f"machine.slat={slat}", f"{key}={value}") for slat in ("'intel-ept'", shadow_slat)]
            sens.append(_row(key, value, pair))
    central = [run(f"machine.slat={slat}") for slat in ("'intel-ept'", shadow_slat)]
    for path, values in RECOMPUTED.items():
        for value in values:
            sens.append(_row(path, value, central, path))
    print()
    print(table(sens, ("assumption (intel-server, Hyper-V-like shadow)", "value", "shadow exits / 1k accesses",
                       "hypervisor share (shadow)", "hypervisor share (EPT)", "sessions (intel-ept)",
                       "sessions (shadow)", "ratio")))
    return 0


def _row(key: str, value, pair, path: str | None = None) -> tuple:
    """One sensitivity row: shadow's exits per 1000 accesses, the hypervisor's share of
    the CPU under each scheme, sessions under each and their ratio."""
    recompute = (path, value) if path else (None, None)
    (n_config, nested_m), (s_config, shadow_m) = (recomputed(*run, *recompute) for run in pair)
    nested, shadow = nested_m["consolidation.sessions"], shadow_m["consolidation.sessions"]
    return (key, value, 1000 * shadow_m.get("vm_exits", 0) / shadow_m["accesses"], hypervisor_share(s_config, shadow_m),
            hypervisor_share(n_config, nested_m), nested, shadow, nested / shadow if shadow else float("inf"))


if __name__ == "__main__":
    sys.exit(main())
