"""Print memory saved against TLB misses for examples/ksm-vs-large-pages.toml, with and
without KSM (and with the ideal merger as the bound).

    python examples/ksm_vs_large_pages.py [--accesses N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from slatframe.config import load_config
from slatframe.engine import run_experiment
from slatframe.report import table

BASE = Path(__file__).with_name("ksm-vs-large-pages.toml")
RUNS = {
    "no dedup": ["dedup.pages_to_scan=1", "dedup.sleep=1000000000"],
    "ksm": [],
    "ideal": ["dedup={strategy='ideal', interval=10000}"],
    "no dedup, shadow": ["machine.slat=shadow", "dedup.pages_to_scan=1", "dedup.sleep=1000000000"],
    "ksm, shadow": ["machine.slat=shadow"],
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=400_000)
    args = ap.parse_args(argv)
    rows = []
    for label, sets in RUNS.items():
        config, registry = load_config(BASE, sets + [f"workload.accesses={args.accesses}"])
        m = run_experiment(config, registry).metrics
        rows.append((label, m["dedup.bytes_saved"] >> 20, m["dedup.pages_shared"], m["dedup.pages_sharing"],
                     m["dedup.large_pages_split"], m["dedup.cow_breaks"], m["tlb.l2.misses"],
                     m["tlb.splintered_fills"], m["walks"], m["walk.refs"] / max(1, m["walks"]), m["vm_exits"]))
    print(table(rows, ("run", "MiB saved", "pages_shared", "pages_sharing", "2M pages split", "COW breaks",
                       "L2 TLB misses", "splintered fills", "walks", "refs/walk", "VM exits")))


if __name__ == "__main__":
    main()
