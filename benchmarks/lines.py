"""Where the compiled loop's time goes, line by line: a sampling profile of the engine's
own loop, mapped to the lines of ``loop.py`` (and the helpers it inlines).

    python -m benchmarks --lines [--accesses N] [--seconds S]

For each config (2D walk-heavy, then the end-to-end hit-heavy one): the engine's
generated module is copied with ``debug=True`` on every function (line tables; bounds
checks stay off, as in the engine) and compiled apart into ``$SLATFRAME_CACHE_DIR/cuts``,
then called with the arguments the engine's own ``run_chunk`` passed to its loop in a
warm pass (as ``benchmarks/cuts.py``) for ``S`` seconds while ``perf record -e
cpu-clock`` samples this process. Each sample inside ``run``'s machine code is mapped
with ``addr2line -i`` to its chain of inlined frames, and the rows give each line's share
of all samples: the innermost line (where the time is spent), and the frame in ``walk``
or ``run`` it was inlined into (which part of the loop spends it).

A timer sample lands on the instruction that waits, or the one after: a load that
misses shows on the next line, and a line reached by a mispredicted branch takes the
refetch. Shares are of one copy of the loop compiled with line tables, whose code may
differ a little from the engine's; the copy's rate is printed beside the engine's. Needs
``perf`` (allowed to sample this process), ``addr2line`` and ``objdump`` (binutils); it
says which is missing and stops otherwise.

Then the engine's own loop, as numba's cache holds it (no line tables), is sampled the
same way, and its code read back from memory and disassembled: the share of its samples
on instructions that read or write the stack frame (spill code: ``(%rsp)`` operands,
pushes and pops) says how well the register allocator served the hot path (mostly: a
slow load raises it a little), which timing alone cannot (an edit that changes no work
moved 2D walk-heavy from 12.7% to 28.1% and its rate by 0.60x: docs/performance.md,
session 26). x86-64 only; elsewhere it says so.
"""
from __future__ import annotations

import bisect
import collections
import ctypes
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slatframe.engine.codegen import cache_dir, module_source, policy_ids
from slatframe.report import table

from .cuts import captured_calls, data_path_len, edited, load, pass_rate, walk_and_hit_configs

#: frames whose line is reported as "the part of the loop" (innermost first, the first found)
PARTS = ("walk", "run")
DRILL, DRILL_LINES = 6, 8  #: the parts shown with the innermost lines beneath them, and how many lines


def debug_copy(source: str) -> str:
    """``source`` with line tables on every compiled function (bounds checks stay off),
    and without numba's disk cache: a function loaded from it keeps no object code to map
    samples with, so the copy compiles in every run."""
    out, n = re.subn(r"@njit\(", "@njit(debug=True, boundscheck=False, ", source.replace("cache=True", "cache=False"))
    if n == 0:
        raise LookupError("the generated module has no @njit( decorator to give line tables")
    return out


def frames(addr2line_output: str) -> dict[int, list[tuple[str, int]]]:
    """``addr2line -a -f -i`` output as address -> [(function, line)], innermost first
    (line 0 where addr2line gives none)."""
    chains: dict[int, list[tuple[str, int]]] = {}
    current: list[tuple[str, int]] = []
    function = None
    for text in addr2line_output.splitlines():
        if text.startswith("0x"):
            current = chains.setdefault(int(text, 16), [])
            function = None
        elif function is None:
            function = text
        else:
            number = text.rsplit(":", 1)[-1].split(" ")[0]
            current.append((function, int(number) if number.isdigit() else 0))
            function = None
    return chains


def short_name(mangled: str) -> str:
    """A numba function's Python name from its mangled symbol (``_ZN`` then length-prefixed
    module and function names, then ABI tags), else the symbol itself."""
    if not mangled.startswith("_ZN"):
        return mangled
    parts, at = [], 3
    while at < len(mangled) and mangled[at].isdigit():
        n = re.match(r"\d+", mangled[at:]).group()
        at += len(n)
        parts.append(mangled[at:at + int(n)])
        at += int(n)
    return parts[-1] if parts else mangled


def shares(samples: collections.Counter, chains: dict[int, list[tuple[str, int]]], total: int) -> tuple[list, list]:
    """(innermost line -> share, (part, line) -> [share, {innermost line -> share}]),
    each largest first; ``samples`` counts offsets, ``chains`` maps them to frames
    (``frames``)."""
    inner: collections.Counter = collections.Counter()
    part: collections.Counter = collections.Counter()
    beneath: dict = collections.defaultdict(collections.Counter)
    for offset, n in samples.items():
        chain = chains.get(offset, [])
        if not chain:
            continue
        inner[chain[0][1]] += n
        named = [(short_name(f), line) for f, line in chain]
        found = next(((f, line) for f, line in named if f in PARTS), named[-1])
        part[found] += n
        beneath[found][chain[0][1]] += n
    under = {k: [(line, m / total) for line, m in counts.most_common()] for k, counts in beneath.items()}
    return ([(k, v / total) for k, v in inner.most_common()], [(k, v / total, under[k]) for k, v in part.most_common()])


def _tools() -> None:
    missing = [t for t in ("perf", "addr2line", "objdump") if shutil.which(t) is None]
    if missing:
        sys.exit(f"benchmarks --lines needs {', '.join(missing)} on PATH (perf, and binutils' addr2line and objdump)")


def _symbol_size(obj: Path, name: str) -> int:
    for text in subprocess.run(["objdump", "-t", str(obj)], capture_output=True, text=True, check=True).stdout \
            .splitlines():
        fields = text.split()
        if fields and fields[-1] == name and len(fields) >= 5:
            return int(fields[-2], 16)
    raise LookupError(f"{obj}: no symbol {name}")


def sampled(run, calls: list, accesses: int, seconds: float, start: int, size: int, data: Path) \
        -> tuple[collections.Counter, int, list[float]]:
    """Samples of this process while ``run`` makes warm passes over ``calls`` for
    ``seconds``: (offset from ``start`` -> samples, for offsets below ``size``; all
    samples; each pass's rate). ``data``: perf's file."""
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-p", str(os.getpid()),
                             "-o", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # (perf attaches; samples before the passes start fall outside run and are left out)
    if perf.poll() is not None:
        sys.exit(f"perf record could not sample this process: {perf.stderr.read().decode().strip()[:300]}")
    rates, began = [], time.perf_counter()
    while time.perf_counter() - began < seconds:
        rates.append(pass_rate(run, calls, accesses))
    perf.send_signal(signal.SIGINT)
    perf.wait()
    done = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"perf script could not read the samples it recorded: {done.stderr.strip()[:300]}")
    ips = done.stdout.split()
    samples = collections.Counter(int(ip, 16) - start for ip in ips)
    return collections.Counter({o: n for o, n in samples.items() if 0 <= o < size}), len(ips), rates


def instructions(objdump_output: str) -> dict[int, str]:
    """``objdump -d`` output as offset -> instruction text."""
    found = {}
    for text in objdump_output.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\t(.*)$", text)
        if m:
            found[int(m.group(1), 16)] = m.group(2).strip()
    return found


def touches_stack(instruction: str) -> bool:
    """Whether an x86-64 instruction (AT&T syntax) reads or writes the stack frame."""
    return "(%rsp)" in instruction or instruction.split(" ")[0] in ("push", "pop")


def stack_share(samples: collections.Counter, code: dict[int, str], top: int = 5) -> tuple[float, list]:
    """The share of ``samples`` (offset -> count) that fall on an instruction of ``code``
    (offset -> text) touching the stack, and the ``top`` such instructions with theirs.
    A sample is taken after the instruction that waited: it counts for the instruction
    before its offset."""
    before = sorted(code)
    counted: collections.Counter = collections.Counter()
    for offset, n in samples.items():
        at = bisect.bisect_left(before, offset) - 1  # the last instruction starting before the sample
        if at >= 0:
            counted[before[at]] += n
    total = sum(counted.values())
    on_stack = [(off, n) for off, n in counted.most_common() if touches_stack(code[off])]
    share = sum(n for _, n in on_stack) / total if total else 0.0
    return share, [(code[off], n / total) for off, n in on_stack[:top]]


def mapped_after(address: int) -> int:
    """How many bytes from ``address`` to the end of its mapping in this process (the
    code numba loaded a module's functions into: what may be read back)."""
    for text in Path("/proc/self/maps").read_text().splitlines():
        lo, hi = (int(x, 16) for x in text.split()[0].split("-"))
        if lo <= address < hi:
            return hi - address
    raise LookupError(f"{address:#x} is in no mapping of this process")


def engine_stack_rows(label: str, engine, calls: list, accesses: int, seconds: float) -> list:
    """Rows (config, what, share) of the engine's own loop: its samples on stack-touching
    instructions, and the largest of them."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return [(label, "the engine's loop: stack share (measured on x86-64 only)", "-")]
    run = engine.k.run
    overload = run.overloads[run.signatures[0]]
    start = overload.library.get_pointer_to_function(overload.fndesc.llvm_func_name)
    size = mapped_after(start)
    with tempfile.TemporaryDirectory() as tmp:
        samples, _, _ = sampled(run, calls, accesses, seconds, start, size, Path(tmp) / "perf.data")
        if not samples:
            return [(label, "the engine's loop: no sample fell in it", "-")]
        raw = Path(tmp) / "code.bin"  # (its machine code as loaded: a cached function keeps no object file)
        raw.write_bytes(ctypes.string_at(start, min(max(samples) + 16, size)))
        listing = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", "--no-show-raw-insn",
                                  str(raw)], capture_output=True, text=True, check=True).stdout
    share, largest = stack_share(samples, instructions(listing))
    rows = [(label, "the engine's loop: samples on instructions that touch the stack", f"{share:.1%}")]
    return rows + [("", f"  {text[:70]}", f"{n:.1%}") for text, n in largest]


def profile_rows(label: str, config, registry, trace, seconds: float, top: int) -> tuple[list, list, list, str]:
    """Rows (innermost line, share), (part of the loop, line, share) and (the engine's
    loop's stack share, its largest instructions) for one config, and a note with the
    rates of the copy and of the engine's loop."""
    engine, calls = captured_calls(config, registry, trace)
    lru = policy_ids(registry)["lru"]
    source = debug_copy(edited(module_source(registry), [], data_path_len(calls[0]), lru))
    name = "lines_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
    run = load(source, name)
    pass_rate(run, calls, len(trace))  # compile or load
    source_lines = (cache_dir() / "cuts" / f"{name}.py").read_text().splitlines()
    overload = run.overloads[run.signatures[0]]
    symbol = overload.fndesc.llvm_func_name
    start = overload.library.get_pointer_to_function(symbol)
    with tempfile.TemporaryDirectory() as tmp:
        obj, data = Path(tmp) / "run.o", Path(tmp) / "perf.data"
        obj.write_bytes(overload.library._get_compiled_object())
        size = _symbol_size(obj, symbol)
        samples, total, rates = sampled(run, calls, len(trace), seconds, start, size, data)
        # a sample is taken after the instruction that waited: its line is that of the byte before
        query = "\n".join(hex(max(o - 1, 0)) for o in samples)
        out = subprocess.run(["addr2line", "-e", str(obj), "-j", ".ltext", "-a", "-f", "-i"], input=query,
                             capture_output=True, text=True, check=True).stdout
    chains = {k + 1: v for k, v in frames(out).items()}
    inner, part = shares(samples, chains, total)

    def text(line: int) -> str:
        return f"{line}: {source_lines[line - 1].strip()[:80]}" if 0 < line <= len(source_lines) else "(no line)"

    engine_rate = max(pass_rate(engine.k.run, calls, len(trace)) for _ in range(3))
    stack = engine_stack_rows(label, engine, calls, len(trace), seconds)
    note = (f"{label}: {total:,} samples, {sum(samples.values()) / max(total, 1):.0%} of them in run; the copy "
            f"{max(rates) / 1e6:.2f} M/s, the engine's loop {engine_rate / 1e6:.2f} M/s")
    parts = []
    for rank, ((f, line), share, under) in enumerate(part[:top]):
        parts.append((label, f, text(line), f"{share:.1%}"))
        if rank < DRILL:  # the largest parts: the innermost lines they spend it on
            parts += [("", "", f"  {text(at)}", f"{s:.1%}") for at, s in under[:DRILL_LINES] if s >= 0.002]
    return [(label, text(line), f"{share:.1%}") for line, share in inner[:top]], parts, stack, note


def lines(accesses: int, seconds: float = 15.0, top: int = 25) -> None:
    """Print the line-level profile of the 2D walk-heavy and the end-to-end hit-heavy config."""
    _tools()
    inner_rows, part_rows, stack_rows, notes = [], [], [], []
    for label, config, registry, trace in walk_and_hit_configs(accesses):
        inner, part, stack, note = profile_rows(label, config, registry, trace, seconds, top)
        inner_rows += inner
        part_rows += part
        stack_rows += stack
        notes.append(note)
    print(table(inner_rows, ("config", "innermost line (loop.py's own, as generated)", "share of samples")))
    print(table(part_rows, ("config", "in", "line of walk() or run()", "share of samples")))
    print(table(stack_rows, ("config", "the engine's own loop (spill code)", "share of its samples")))
    for note in notes:
        print(note)
