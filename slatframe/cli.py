"""The ``slatframe`` command: run, validate, plugins."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import load_config
from .errors import SlatframeError
from .registry import HOOK_POINTS, Registry
from .report import summary, table
from .results import write_atomic


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slatframe", description=__doc__)
    p.add_argument("--version", action="version", version=f"slatframe {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one experiment and write its result")
    run.add_argument("config", help="experiment TOML file")
    run.add_argument("--out", help="result JSON (default: results/<experiment name>.json)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set tlb.levels[0].ways=8 (repeatable)")
    run.add_argument("--engine", choices=("auto", "reference", "compiled"), help="engine tier")
    run.add_argument("--json", action="store_true", help="print the result JSON instead of the summary")
    run.add_argument("--quiet", action="store_true", help="print nothing on success")

    val = sub.add_parser("validate", help="check a config without running it")
    val.add_argument("config")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    plugins = sub.add_parser("plugins", help="list the registered plugins by hook point")
    plugins.add_argument("--config", help="also load the plugin files this config names")
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from .engine import run_experiment

    config, registry = load_config(args.config, args.overrides)
    result = run_experiment(config, registry, engine=args.engine)
    out = Path(args.out) if args.out else Path("results") / f"{config.experiment.name}.json"
    text = result.to_json()
    write_atomic(out, text)
    if args.json:
        sys.stdout.write(text)
    elif not args.quiet:
        print(summary(result))
        print(f"\nresult written to {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    config, _ = load_config(args.config, args.overrides)
    print(f"{args.config}: valid ({config.machine.slat.name}, {len(config.tlb.levels)} TLB level(s), "
          f"{len(config.vms)} VM(s), workload {config.workload.name}).")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    if args.config:
        _, registry = load_config(args.config)
    else:
        registry = Registry()
    for point in HOOK_POINTS.values():
        provided = registry.records[point]
        print(f"{point}:")
        if not provided:
            print("  (none)\n")
            continue
        rows = [(name, p.record.summary, p.source) for name, p in provided.items()]
        print("\n".join("  " + line for line in table(rows, ("name", "summary", "from")).splitlines()))
        print()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "validate": cmd_validate, "plugins": cmd_plugins}[args.command]
    try:
        return handler(args)
    except SlatframeError as exc:
        print(f"slatframe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
