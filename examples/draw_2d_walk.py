"""Draw one recorded 2D walk as the grid of Bhargava et al. (ASPLOS 2008), from a walk
trace (the ``walk-trace`` observer; docs/walk-traces.md).

Rows are the steps of the guest walk (each guest table's gPA, then the data's gPA), the
first columns the second-level walk of that gPA (levels high to low), the last column
the guest entry read at the translated address. Each reference is numbered in walk
order; an entry a page-walk cache served is drawn hollow, a step a nested TLB or a
paging-structure cache skipped is simply absent.

    slatframe run examples/quickstart.toml --set machine.slat=intel-ept \\
        --set 'experiment.observers=[{name="walk-trace", path="walks.npz", limit=1000}]'
    python examples/draw_2d_walk.py walks.npz --out walk.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slatframe.walk_record import WalkTrace, load_walk_trace  # noqa: E402


def grid_cells(refs: np.ndarray, host_levels: int) -> list[tuple[int, int, int, bool]]:
    """(row, column, order, cached) for each reference of one walk."""
    cells, row = [], 0
    for order, (level, dim, cached) in enumerate(zip(refs["level"].tolist(), refs["dim"].tolist(),
                                                     refs["cached"].tolist()), start=1):
        if dim == 1:
            cells.append((row, host_levels - level, order, cached))
        else:
            cells.append((row, host_levels, order, cached))
            row += 1
    return cells


def longest_walk(trace: WalkTrace) -> int:
    """The completed walk with the most references (the first of them)."""
    done = np.flatnonzero(trace.walks["fault"] == 0)
    if not len(done):
        raise SystemExit("the walk trace has no completed walk")
    return int(done[np.argmax(trace.walks["refs"][done])])


def draw(trace: WalkTrace, index: int, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = trace.references(index)
    host_levels = int(refs["level"][refs["dim"] == 1].max()) if (refs["dim"] == 1).any() else 0
    guest_levels = int(np.count_nonzero(refs["dim"] == 0))
    cells = grid_cells(refs, host_levels)
    fig, ax = plt.subplots(figsize=(1.2 * (host_levels + 2), 1.0 * (guest_levels + 2)))
    for row, column, order, cached in cells:
        ax.add_patch(plt.Rectangle((column, -row - 1), 0.9, 0.9, fill=not cached,
                                   color="tab:orange" if column == host_levels else "tab:blue", alpha=0.8))
        ax.text(column + 0.45, -row - 0.55, str(order), ha="center", va="center")
    ax.set_xlim(-0.2, host_levels + 1.1)
    ax.set_ylim(-guest_levels - 1.2, 0.1)
    ax.set_xticks([c + 0.45 for c in range(host_levels + 1)],
                  [f"host L{host_levels - c}" for c in range(host_levels)] + ["guest entry"])
    ax.set_yticks([-r - 0.55 for r in range(guest_levels + 1)],
                  [f"guest L{level} table" for level in refs["level"][refs["dim"] == 0].tolist()] + ["data gPA"])
    w = trace.walks[index]
    ax.set_title(f"walk of va {int(w['va']):#x} (record {int(w['record'])}): {len(refs)} entries, "
                 f"{int(np.count_nonzero(~refs['cached']))} memory references")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace", type=Path, help="a walk trace (.npz or .parquet)")
    p.add_argument("--walk", type=int, default=None, help="row of the walk to draw (default: the longest)")
    p.add_argument("--out", type=Path, default=Path("walk.png"))
    args = p.parse_args(argv)
    trace = load_walk_trace(args.trace)
    index = longest_walk(trace) if args.walk is None else args.walk
    draw(trace, index, args.out)
    print(f"walk {index} drawn to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
