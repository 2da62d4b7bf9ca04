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

    trace = sub.add_parser("trace", help="record, convert and summarize traces")
    tsub = trace.add_subparsers(dest="trace_command", required=True)
    rec = tsub.add_parser("record", help="run a program under valgrind lackey and write its trace as npz")
    rec.add_argument("--out", required=True, help="the .npz trace to write")
    rec.add_argument("--keep-lackey", metavar="FILE", help="also keep valgrind's text trace")
    rec.add_argument("program", nargs=argparse.REMAINDER, help="-- COMMAND ARGS")
    conv = tsub.add_parser("convert", help="convert a trace (lackey, champsim, npz) to npz")
    conv.add_argument("input")
    conv.add_argument("output")
    conv.add_argument("--format", help="input format (default: detected from the file)")
    inf = tsub.add_parser("info", help="counts by op, pages, footprint, reuse distances")
    inf.add_argument("file")
    inf.add_argument("--format", help="trace format (default: detected from the file)")
    inf.add_argument("--limit", type=int, default=1_000_000, help="accesses sampled for reuse distances")
    inf.add_argument("--json", action="store_true", help="print JSON")
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


def cmd_trace(args: argparse.Namespace) -> int:
    from . import tracetools

    registry = Registry()
    if args.trace_command == "record":
        command = args.program[1:] if args.program[:1] == ["--"] else args.program
        count, code = tracetools.record(args.out, command, registry, args.keep_lackey)
        note = f" (the program exited with {code})" if code else ""
        print(f"{args.out}: {count:,} records from {' '.join(command)}{note}")
    elif args.trace_command == "convert":
        count = tracetools.convert(args.input, args.output, args.format, registry)
        print(f"{args.output}: {count:,} records")
    else:
        stats = tracetools.info(args.file, args.format, registry, args.limit)
        if args.json:
            print(json.dumps(stats, indent=2))
        else:
            print(table([(k, v if v is not None else "-") for k, v in stats.items()], ("statistic", "value")))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "validate": cmd_validate, "plugins": cmd_plugins, "trace": cmd_trace}[args.command]
    try:
        return handler(args)
    except SlatframeError as exc:
        print(f"slatframe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
