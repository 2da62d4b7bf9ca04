"""The ``slatframe`` command: run, sweep, validate, plugins, trace, plot, report, recost."""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import ConfigError, SlatframeError
from .registry import HOOK_POINTS, Registry, plugin_file_raised
from .report import summary, table
from .results import (NAME_RULE, check_output_dir, check_output_file, describe_os_error, file_name_problem,
                      short_repr, write_atomic)
from .sweeps import SweepPlan, engine_override, has_sweep, load_base, plan_sweep


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

    sw = sub.add_parser("sweep", help="run every point of a [sweep] table and gather one table")
    sw.add_argument("config", help="experiment TOML file with a [sweep] table")
    sw.add_argument("--out", required=True, help="output folder: points/<hash>.json, results.csv")
    sw.add_argument("--jobs", type=int, default=1, help="points run at once (1: in this process)")
    sw.add_argument("--executor", choices=("local", "dask"), help="local processes (default) or dask")
    sw.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="use a running dask scheduler")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key in every point (after the axis values)")
    sw.add_argument("--engine", metavar="auto|reference|compiled",
                    help="engine tier of every point, instead of its experiment.engine")
    sw.add_argument("--json", action="store_true", help="print the gathered rows as JSON")
    sw.add_argument("--quiet", action="store_true", help="no progress bar and no summary")

    val = sub.add_parser("validate", help="check a config without running it")
    val.add_argument("config")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    plugins = sub.add_parser("plugins", help="list the registered plugins by hook point")
    plugins.add_argument("--config", help="also load the plugin files this config names")

    plot = sub.add_parser("plot", help="plot a metric against a config key (needs matplotlib)")
    plot.add_argument("results", nargs="+", help="a sweep folder, its results.csv, or result JSON files")
    plot.add_argument("--x", help="config key path on the x axis, e.g. tlb.levels[1].sets")
    plot.add_argument("--y", help="metric on the y axis, e.g. walk.refs")
    plot.add_argument("--hue", help="config key path: one line (or bar group) per value")
    plot.add_argument("--dedup", action="store_true", help="memory over time of one run's dedup series")
    plot.add_argument("--out", required=True, help="image file to write (.png, .pdf, .svg)")

    rep = sub.add_parser("report", help="write one self-contained HTML page of a result or a sweep folder")
    rep.add_argument("source", help="a result JSON file or a sweep's output folder")
    rep.add_argument("--out", required=True, help="the HTML file to write")
    rep.add_argument("--y", action="append", metavar="METRIC", help="for a sweep folder: a metric to plot "
                     "against each swept key instead of the default ones (repeatable)")

    cal = sub.add_parser("calibrate", help="fit the cache-aware cost model to this machine (needs cc)")
    cal.add_argument("--out", default="calibration", help="folder for calibration.json, preset.toml, "
                     "calibrated.toml and calibration.svg (default: calibration)")
    cal.add_argument("--max-footprint", default="4G", help="the largest footprint measured (default 4G)")
    cal.add_argument("--quick", action="store_true", help="every other footprint, one lap per pass")
    cal.add_argument("--tlb", action="append", metavar="SETSxWAYS:SIZES", help="a TLB level, in lookup order, "
                     "for a CPU the docs do not describe, e.g. --tlb 1x64:4K,2M,1G --tlb 128x16:4K,2M")
    cal.add_argument("--jobs", type=int, default=2, help="processes simulating the chase at once (default 2)")

    rc = sub.add_parser("recost", help="recompute the cycle, consolidation and derived figures of a result or a "
                        "sweep folder from its counters, with other costs")
    rc.add_argument("source", help="a result JSON file or a sweep's output folder")
    rc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a cost to change: cost.KEY, consolidation.KEY or tlb.levels[i].latency (repeatable)")
    rc.add_argument("--out", required=True, help="the re-costed result file, or for a sweep folder a new folder")
    rc.add_argument("--json", action="store_true", help="print the re-costed result (or rows) as JSON")
    rc.add_argument("--quiet", action="store_true", help="print nothing on success")

    trace = sub.add_parser("trace", help="record, convert and summarize traces")
    tsub = trace.add_subparsers(dest="trace_command", required=True)
    rec = tsub.add_parser("record", help="run a program under valgrind lackey and write its trace as npz")
    rec.add_argument("--out", required=True, help="the .npz trace to write")
    rec.add_argument("--keep-lackey", metavar="FILE", help="also keep valgrind's text trace (with --processes: a "
                     "directory for its per-process logs)")
    rec.add_argument("--processes", action="store_true",
                     help="also record every process the program starts (fork, exec, exit) into the same trace")
    rec.add_argument("program", nargs=argparse.REMAINDER, help="-- COMMAND ARGS")
    conv = tsub.add_parser("convert", help="convert a trace (lackey, champsim, npz, drmemtrace) to npz")
    conv.add_argument("input")
    conv.add_argument("output")
    conv.add_argument("--format", help="input format (default: detected from the file)")
    inf = tsub.add_parser("info", help="counts by op, pages, footprint, reuse distances")
    inf.add_argument("file")
    inf.add_argument("--format", help="trace format (default: detected from the file)")
    inf.add_argument("--limit", type=int, default=1_000_000, help="accesses sampled for reuse distances")
    inf.add_argument("--json", action="store_true", help="print JSON")
    return p


def default_result_path(config_file: str, name: object) -> Path:
    """``results/<experiment.name>.json``, once the name is checked to be a plain file name."""
    problem = file_name_problem(name)
    if problem:
        raise ConfigError(f"{config_file}: experiment.name = {short_repr(name)} cannot name the result file "
                          f"results/<name>.json, because {problem}: use {NAME_RULE}, or give --out FILE.")
    return Path("results") / f"{name}.json"


def cmd_run(args: argparse.Namespace) -> int:
    from .engine import run_experiment
    from .progress import RunProgress

    config, registry = load_base(args.config, args.overrides)
    if args.out is not None:
        out = check_output_file(args.out, "--out")
    else:
        out = check_output_file(default_result_path(args.config, config.experiment.name), "the result file")
    progress = RunProgress(enabled=False if args.quiet else None)
    try:
        try:
            result = run_experiment(config, registry, engine=args.engine, observers=[progress])
        finally:
            progress.finished(config, None)
    except KeyboardInterrupt:
        print(f"slatframe: run interrupted; no result was written ({out} is as it was).", file=sys.stderr)
        return 130
    text = result.to_json()
    write_atomic(out, text)
    for warning in result.warnings:
        print(f"slatframe: warning: {warning}", file=sys.stderr)
    if args.json:
        sys.stdout.write(text)
    elif not args.quiet:
        print(summary(result))
        print(f"\nresult written to {out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .gather import rows_json, summary_table
    from .progress import Progress
    from .sweeps import run_sweep

    plan = plan_sweep(args.config, args.overrides + engine_override(args.engine))
    check_output_dir(args.out, "--out")
    executor = args.executor or ("dask" if args.scheduler else "local")
    bar = Progress("sweep", unit="points", enabled=False if args.quiet else None)
    try:
        outcome = run_sweep(plan, args.out, executor=executor, jobs=args.jobs, scheduler=args.scheduler,
                            progress=bar)
    except KeyboardInterrupt:
        print(f"slatframe: sweep interrupted; the finished points are kept in {args.out}, "
              "and the same command resumes it.", file=sys.stderr)
        return 130
    _sweep_warnings(list(outcome.rows))
    if args.json:
        print(json.dumps(rows_json(list(outcome.rows)), indent=2))
    elif not args.quiet:
        print(summary_table(list(outcome.rows)))
        print(f"\n{len(outcome.rows)} points: {outcome.ran} run, {outcome.skipped} already done, "
              f"{outcome.failed} failed; table in {Path(args.out) / 'results.csv'}")
    return 1 if outcome.failed else 0


def _sweep_warnings(rows: list) -> None:
    """Each distinct warning of the sweep's points once on stderr, with the points it
    concerns (they are in each point's result file too)."""
    points: dict[str, list[str]] = {}
    for row in rows:
        for warning in row.warnings:
            points.setdefault(warning, []).append(str(row.index + 1))
    for warning, which in points.items():
        print(f"slatframe: warning: sweep point(s) {', '.join(which)}: {warning}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from .footprint import estimate_line
    from .workload import read_first_records

    config, registry = load_base(args.config, args.overrides)
    default_result_path(args.config, config.experiment.name)  # what `run` without --out would refuse
    if config.experiment.engine == "compiled":  # refused by `run` when the compiled tier cannot honour a plugin
        from .engine import choose_engine

        choose_engine(config, registry, "compiled")
    records = read_first_records(config, registry)  # a damaged trace or a bad first record, as `run` refuses it
    note = ""
    if has_sweep(args.config):
        plan = plan_sweep(args.config, args.overrides)
        errors = [p.error for p in plan.points if p.error]
        read = 0 if errors else _read_sweep_workloads(plan, errors)
        for error in errors:
            print(f"slatframe: error: {error}", file=sys.stderr)
        if errors:
            return 2
        note = f"; so are its {len(plan.points)} sweep points" + (
            f" (the first records of their {read} distinct workload(s) read too)" if read else "")
    print(f"{args.config}: valid ({config.machine.slat.name}, {len(config.tlb.levels)} TLB level(s), "
          f"{len(config.vms)} VM(s), workload {config.workload.name}, its first {records:,} record(s) read and "
          f"checked){note}.")
    if not note:  # a sweep's points have their own estimates, each checked against the limit as it was planned
        print(estimate_line(config, registry))
    return 0


#: Config tables whose values decide what a point's workload reads and how its records are
#: checked (the VMs they may name, the guest format's address width).
_WORKLOAD_TABLES = ("workload", "vms", "machine")


def _read_sweep_workloads(plan: SweepPlan, errors: list[str]) -> int:
    """When the sweep's axes change a point's workload, its VMs, its machine or its plugin
    files, read the first records of each distinct one of them, as :func:`cmd_validate`
    reads the base config's (otherwise every point reads what the base config read); each
    failure is appended to ``errors`` naming the points. Returns how many were read."""
    if not any(a.path[0] in _WORKLOAD_TABLES or a.path[:2] == ("experiment", "plugins") for a in plan.spec.axes):
        return 0
    from .config import config_from_dict
    from .errors import SlatframeError
    from .workload import read_first_records

    groups: dict[str, list] = {}
    for point in plan.points:
        key = [point.raw.get(t) for t in _WORKLOAD_TABLES] + [point.raw.get("experiment", {}).get("plugins")]
        groups.setdefault(json.dumps(key, sort_keys=True, default=str), []).append(point)
    for points in groups.values():
        first = points[0]
        where = f"{plan.path} (sweep point {first.index + 1}: {first.describe()})"
        try:
            config, registry = config_from_dict(first.raw, where=where, base_dir=plan.base_dir)
            read_first_records(config, registry)
        except SlatframeError as exc:
            which = ", ".join(str(p.index + 1) for p in points)
            errors.append(f"{plan.path} (sweep point{'s' if len(points) > 1 else ''} {which}): {exc}")
    return len(groups)


def cmd_plugins(args: argparse.Namespace) -> int:
    if args.config:
        _, registry = load_base(args.config)
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
    if args.trace_command in ("record", "convert"):
        check_output_file(args.out if args.trace_command == "record" else args.output,
                          "--out" if args.trace_command == "record" else "the output file")
    if args.trace_command == "record":
        command = args.program[1:] if args.program[:1] == ["--"] else args.program
        if args.processes:
            from .process_trace import record_processes

            rec = record_processes(args.out, command, args.keep_lackey)
            for warning in rec.warnings:
                print(f"slatframe: warning: {warning}", file=sys.stderr)
            code = rec.returncode
            note = (f" (the program was killed by signal {-code})" if code < 0 else
                    f" (the program exited with {code})" if code else "")
            print(f"{args.out}: {rec.records:,} records of {rec.processes} process(es) ({rec.created} created, "
                  f"{rec.execs} exec(s), {rec.exited} exited) from {' '.join(command)}{note}")
            return 0
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


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plot

    check_output_file(args.out, "--out")
    if args.dedup:
        if len(args.results) != 1:
            raise SlatframeError("slatframe plot --dedup takes one result file.")
        plot.plot_dedup(args.results[0], args.out)
    else:
        if not args.x or not args.y:
            raise SlatframeError("slatframe plot needs --x KEY and --y METRIC (or --dedup).")
        plot.plot_xy(plot.load_rows(args.results), args.x, args.y, args.hue, args.out,
                     where=" ".join(args.results))
    print(f"{args.out} written")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import FOOTPRINTS, QUICK_FOOTPRINTS, parse_tlbs, report_lines, run_calibration
    from .units import parse_size

    try:
        limit = parse_size(args.max_footprint)
    except ValueError as exc:
        raise ConfigError(f"--max-footprint {args.max_footprint!r} is not allowed: {exc}.") from None
    footprints = [f for f in (QUICK_FOOTPRINTS if args.quick else FOOTPRINTS) if f <= limit]
    if not footprints:
        raise ConfigError(f"--max-footprint {args.max_footprint!r} is not allowed: the smallest footprint is 16K.")
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} is not allowed: the minimum is 1.")
    out = check_output_dir(args.out, "--out")
    summary = run_calibration(out, footprints, parse_tlbs(args.tlb), rounds=1 if args.quick else 3, jobs=args.jobs,
                              say=lambda line: print(line, flush=True))
    print("\n".join(report_lines(summary)))
    print(f"\nwritten to {out}: calibration.json, preset.toml ([cost] preset_file = ...), calibrated.toml, "
          "calibration.svg (slatframe report calibration.json --out PAGE.html: the same, with the table)")
    return 0


def cmd_recost(args: argparse.Namespace) -> int:
    from .gather import rows_json, summary_table
    from .recosting import recost

    done = recost(args.source, args.overrides, args.out)
    if isinstance(done, list):
        if args.json:
            print(json.dumps(rows_json(done), indent=2))
        elif not args.quiet:
            print(summary_table(done))
            missing = sum(1 for row in done if row.metrics is None)
            print(f"\n{len(done) - missing} points re-costed, {missing} without a result; "
                  f"table in {Path(args.out) / 'results.csv'}")
        return 0
    if args.json:
        sys.stdout.write(json.dumps(done.data, indent=2) + "\n")
    elif not args.quiet:
        print(summary(done.result()))
        print(f"\nre-costed result written to {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .html_report import write_report

    print(f"{write_report(args.source, args.out, args.y)} written")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "sweep": cmd_sweep, "validate": cmd_validate, "plugins": cmd_plugins,
               "calibrate": cmd_calibrate, "recost": cmd_recost,
               "trace": cmd_trace, "plot": cmd_plot, "report": cmd_report}[args.command]
    try:
        return handler(args)
    except SlatframeError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print("slatframe: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as a shell tool does
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except OSError as exc:  # a file the command reads or writes: one sentence, not a traceback
        return _error(describe_os_error(exc))
    except MemoryError as exc:  # past the estimate (slatframe/footprint.py), which is of the order only
        from .footprint import out_of_memory

        return _error(out_of_memory(exc))
    except Exception as exc:  # a bug in a researcher's plugin file: one sentence naming it
        where = plugin_file_raised(exc)
        if where is None or os.environ.get("SLATFRAME_TRACEBACK"):
            raise  # slatframe's own bug: the traceback is what fixes it
        return _error(f"{where}; set SLATFRAME_TRACEBACK=1 to see the traceback.")


def _error(message: str) -> int:
    """Print ``message`` as one line on stderr; the exit code of a user error."""
    print(f"slatframe: error: {message.replace(chr(10), ' ')}", file=sys.stderr)
    return 2


def entry() -> None:
    """The ``slatframe`` command: :func:`main`, then exit with its code. Every file is
    closed by then; the objects the command made are frozen (``gc.freeze``) so that the
    interpreter's exit frees them without first searching them all for reference cycles,
    which after a compiled run (numba's typing tables) took 0.16 to 0.27 s."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
