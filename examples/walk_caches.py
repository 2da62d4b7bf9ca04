"""Print references per 2D walk (4-level guest x 4-level host) with and without walk caches.

    python examples/walk_caches.py [--accesses N] [--slat intel-ept|amd-npt]

Runs examples/walk-caches.toml with each walk-cache configuration over the same trace.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from slatframe.config import load_config
from slatframe.engine import run_experiment
from slatframe.report import table

BASE = Path(__file__).with_name("walk-caches.toml")

PSC_GUEST = [{"type": "psc", "level": lv} for lv in (4, 3, 2)]
PSC_HOST = [{"type": "psc", "level": lv, "dimension": "host"} for lv in (4, 3, 2)]
PWC = [{"type": "pwc"}]
NTLB = [{"type": "nested-tlb"}]

CONFIGS = {
    "none": [],
    "PSC, guest dimension": PSC_GUEST,
    "PSC, both dimensions": PSC_GUEST + PSC_HOST,
    "PWC (both dimensions)": PWC,
    "nested TLB": NTLB,
    "PSC both + nested TLB": PSC_GUEST + PSC_HOST + NTLB,
    "PWC + nested TLB": PWC + NTLB,
}


def toml_list(caches):
    items = ", ".join("{" + ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in c.items()) + "}"
                      for c in caches)
    return f"walk_caches=[{items}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=200000)
    ap.add_argument("--slat", default="intel-ept", choices=("intel-ept", "amd-npt"))
    args = ap.parse_args(argv)
    rows = []
    for label, caches in CONFIGS.items():
        config, registry = load_config(BASE, [toml_list(caches), f"workload.accesses={args.accesses}",
                                              f"machine.slat={args.slat}"])
        m = run_experiment(config, registry).metrics
        walks = m["walks"]
        rows.append((label, walks, m["walk.refs_guest"] / walks, m["walk.refs_host"] / walks,
                     m["walk.refs"] / walks, m["walk.refs_max"]))
    print(table(rows, ("walk caches", "walks", "guest refs/walk", "host refs/walk", "refs/walk", "max")))


if __name__ == "__main__":
    main()
