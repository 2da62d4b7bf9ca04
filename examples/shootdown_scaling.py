"""Print what TLB shootdowns cost each scheme on 1, 2, 4, 8 and 16 vCPUs.

    python examples/shootdown_scaling.py [--per-thread N] [--set KEY=VALUE ...] [--vcpus N ...]
                                         [--schemes SCHEME ...]

Runs examples/shootdown-scaling.toml with a thread per vCPU and a core per vCPU, each
thread making N accesses (25,000 by default), under every scheme below, and prints,
per free (a thread returning pages: one shootdown), the IPIs sent, the VM exits the
IPIs and flushes cause and all VM exits, and the cycles per access. Extra --set
overrides go to every run (the sensitivity table of docs/experiments.md uses them).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from slatframe.config import load_config
from slatframe.engine import run_experiment
from slatframe.report import table

BASE = Path(__file__).with_name("shootdown-scaling.toml")
VCPUS = (1, 2, 4, 8, 16)
SCHEMES = {  # label: overrides
    "native": ["machine.slat='native'"],
    "EPT": ["machine.slat='intel-ept'", "machine.ipi_virtualization=false"],
    "EPT + IPIv": ["machine.slat='intel-ept'", "machine.ipi_virtualization=true"],
    "shadow": ["machine.slat={name='shadow', writes='emulate'}"],
    "shadow unsync": ["machine.slat={name='shadow', writes='unsync'}"],
    "shadow enlightened": ["machine.slat={name='shadow', enlightened=true}"],
}
#: the exits a shootdown causes: the IPIs' ICR writes, the hypervisor's kicks, the
#: receivers' INVLPGs and CR3 loads under shadow paging, the flush hypercalls
COHERENCE_EXITS = ("ipi", "remote_flush", "invlpg", "cr3_write", "hypercall")


def row(label: str, vcpus: int, per_thread: int, extra: list[str]) -> tuple:
    sets = [*SCHEMES[label], f"machine.cores={vcpus}", f"vms[0].vcpus={vcpus}", f"workload.threads={vcpus}",
            f"workload.accesses={per_thread * vcpus}", *extra]
    config, registry = load_config(BASE, sets)
    m = run_experiment(config, registry).metrics
    frees = max(1, m.get("events.unmap", 0) // config.workload.options.free_pages)
    exits = sum(m.get(f"vm_exits.{r}", 0) for r in COHERENCE_EXITS)
    return (label, vcpus, m.get("tlb.shootdowns", 0) / frees, m.get("ipi.sent", 0) / frees, exits / frees,
            m["vm_exits"] / frees, m["cycles.per_access"], m.get("cycles.ipi", 0) / m["cycles.total"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-thread", type=int, default=25_000, help="accesses of each thread")
    ap.add_argument("--set", action="append", default=[], help="an override for every run")
    ap.add_argument("--vcpus", type=int, nargs="+", default=list(VCPUS), help="vCPU counts to run")
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES), metavar="SCHEME",
                    help=f"schemes to run (of: {', '.join(SCHEMES)})")
    args = ap.parse_args(argv)
    rows = [row(label, n, args.per_thread, args.set) for label in args.schemes for n in args.vcpus]
    print(table(rows, ("scheme", "vCPUs", "shootdowns/free", "IPIs/free", "flush exits/free", "exits/free",
                       "cycles/access", "IPI share")))


if __name__ == "__main__":
    main()
