"""Print references per walk for every SLAT scheme at 4K/2M/1G, 4 and 5 levels.

    python examples/walk_lengths.py [--accesses N]

Runs examples/walk-lengths.toml with overrides and prints measured refs/walk (guest +
host split and the maximum) next to the analytic (n+1)(m+1)-1.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from slatframe.config import load_config
from slatframe.engine import run_experiment
from slatframe.report import table

BASE = Path(__file__).with_name("walk-lengths.toml")
LEVEL_OF = {"4K": 1, "2M": 2, "1G": 3}


def points():
    for gsize in ("4K", "2M", "1G"):
        yield "native", 4, None, gsize, "4K"
    yield "native", 5, None, "4K", "4K"
    for slat, hfmt in (("intel-ept", "ept"), ("amd-npt", "npt")):
        for gsize in ("4K", "2M", "1G"):
            for hsize in ("4K", "2M", "1G"):
                yield slat, 4, hfmt, gsize, hsize
        yield slat, 5, hfmt, "4K", "4K"
    for gsize, hsize in (("4K", "4K"), ("2M", "4K"), ("2M", "2M"), ("1G", "1G")):
        yield "shadow", 4, None, gsize, hsize
    yield "shadow", 5, None, "4K", "4K"


def analytic(slat, levels, gsize, hsize):
    n = levels - LEVEL_OF[gsize] + 1
    if slat == "native":
        return n
    if slat == "shadow":
        return levels - min(LEVEL_OF[gsize], LEVEL_OF[hsize]) + 1
    m = levels - LEVEL_OF[hsize] + 1
    return (n + 1) * (m + 1) - 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=int, default=20000)
    args = ap.parse_args(argv)
    rows = []
    for slat, levels, hfmt, gsize, hsize in points():
        sets = [f"machine.slat={slat}", f"machine.guest_format={'x86-64-la57' if levels == 5 else 'x86-64'}",
                f"vms[0].guest_page_size='{gsize}'", f"vms[0].host_page_size='{hsize}'",
                f"workload.accesses={args.accesses}"]
        if hfmt:
            sets.append(f"machine.host_format={{name='{hfmt}', levels={levels}}}")
        config, registry = load_config(BASE, sets)
        m = run_experiment(config, registry).metrics
        walks = m["walks"]
        rows.append((slat, f"{levels}x{levels if hfmt else '-'}", gsize, hsize if slat != "native" else "-",
                     walks, m["walk.refs_guest"] / walks, m["walk.refs_host"] / walks,
                     m["walk.refs"] / walks, m["walk.refs_max"], analytic(slat, levels, gsize, hsize)))
    print(table(rows, ("scheme", "levels", "guest page", "host page", "walks", "guest refs/walk",
                       "host refs/walk", "refs/walk", "max", "analytic")))


if __name__ == "__main__":
    main()
