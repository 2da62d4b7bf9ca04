"""``slatframe trace``: record a real program under valgrind lackey, convert between trace
formats, and summarize a trace."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .analysis import lru_hit_rate, reuse_distances
from .errors import SlatframeError, TraceError
from .options import BuildContext, build
from .trace import ACCESS_OPS, EXIT, FORK, OP_NAMES
from .tracefile import DECOMPRESS_ERRORS, NpzWriter, open_error, open_raw, open_trace
from .units import format_size

ZIP_MAGIC = b"PK"
#: A drmemtrace file's first entry (type TRACE_TYPE_HEADER, size 0) and its second's
#: (a TRACE_TYPE_MARKER of type TRACE_MARKER_TYPE_VERSION): type and size, u16 each.
DRMEMTRACE_HEADER, DRMEMTRACE_VERSION_MARKER = b"\x19\x00\x00\x00", b"\x1c\x00\x0c\x00"
DRMEMTRACE_SUFFIXES = (".trace.zip", ".trace.gz", ".trace")  #: a drmemtrace thread file's name ends so


def _drmemtrace_folder(path: Path) -> bool:
    """Whether a folder (or its ``trace/`` subfolder) holds drmemtrace thread files."""
    try:
        return any(p.name.endswith(DRMEMTRACE_SUFFIXES) for folder in (path, path / "trace") if folder.is_dir()
                   for p in folder.iterdir())
    except OSError:
        return False


def _drmemtrace_zip(path: str | Path) -> bool:
    """Whether a zip's members are drmemtrace files, or one thread's chunks (a zip that
    cannot be read is left to the npz reader to refuse)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [name.rsplit("/", 1)[-1] for name in zf.namelist() if not name.endswith("/")]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    return bool(names) and (all(re.fullmatch(r"chunk\.\d+", n) for n in names) or
                            any(n.endswith(DRMEMTRACE_SUFFIXES) for n in names))


def detect_format(path: str | Path) -> str:
    """``npz``, ``lackey``, ``champsim`` or ``drmemtrace``, from the name and the first bytes
    (decompressed for gz, xz): a folder holding drmemtrace thread files (or whose ``trace/``
    subfolder does), a zip whose members are drmemtrace files
    (``*.trace.zip``, ``*.trace.gz``, ``*.trace``, or one thread's ``chunk.NNNN``), or a file
    that starts with a drmemtrace header and version marker is drmemtrace; another zip, or a
    file named ``*.npz``, is npz (whose reader refuses a file that is not one); text that
    starts like lackey output, or that has no zero byte in its first 4 KiB, is lackey
    (whose reader names a bad line); anything else is ChampSim."""
    if Path(path).is_dir() and _drmemtrace_folder(Path(path)):
        return "drmemtrace"
    with open_raw(path) as fh:
        try:
            magic = fh.read(2)
        except OSError as exc:
            raise open_error(path, exc) from None
    if magic == ZIP_MAGIC and _drmemtrace_zip(path):
        return "drmemtrace"
    if magic == ZIP_MAGIC or str(path).endswith(".npz"):
        return "npz"
    with open_trace(path) as fh:
        try:
            head = fh.read(4096)
        except DECOMPRESS_ERRORS as exc:
            raise TraceError(f"{path}: the compressed file is damaged or truncated near its start: {exc}.") from None
    if not head:
        raise TraceError(f"{path}: is empty; a trace holds records.")
    if head[:4] == DRMEMTRACE_HEADER and head[12:16] == DRMEMTRACE_VERSION_MARKER:
        return "drmemtrace"
    text = head.lstrip(b"\n")
    if text.startswith((b"==", b"I ", b" L ", b" S ", b" M ")) or b"\0" not in head:
        return "lackey"
    return "champsim"


def read_trace(path: str | Path, fmt: str | None, registry: Any, chunk_size: int = 1 << 16) -> Iterator[np.ndarray]:
    """Checked chunks of a trace file read by the workload plugin of its format (ops
    known, context switches to valid asids; VMs and address widths are not checked here,
    since no machine is configured)."""
    return _read_trace(path, fmt, registry, chunk_size)[1]


def _read_trace(path: str | Path, fmt: str | None, registry: Any,
                chunk_size: int = 1 << 16) -> tuple[Any, Iterator[np.ndarray]]:
    """What the workload factory returned, and :func:`read_trace`'s checked chunks of it."""
    fmt = fmt or detect_format(path)
    if fmt not in registry.names("workloads"):
        raise SlatframeError(f"--format {fmt!r} is not a registered workload; choose one of "
                             f"{', '.join(registry.names('workloads'))}.")
    record = registry.get("workloads", fmt)
    options = build(record.options, {"path": str(path)}, "", BuildContext(where=f"--format {fmt}", registry=registry))
    from .workload import WorkloadContext, checked_chunks

    chunks = record.factory(options, WorkloadContext(chunk_size=chunk_size, seed=0, vm_names=("vm0",)))
    return chunks, checked_chunks(chunks, f"{path} (read as {fmt})", None)


def convert(src: str | Path, dst: str | Path, fmt: str | None, registry: Any) -> int:
    """Convert a trace to the npz format in bounded memory; returns the record count."""
    chunks = read_trace(src, fmt, registry)
    try:
        with NpzWriter(dst) as writer:
            for chunk in chunks:
                writer.append(chunk)
    except OSError as exc:
        raise SlatframeError(f"{dst}: cannot be written: {exc.strerror or exc}.") from None
    return writer.count


def valgrind_path() -> str:
    """The valgrind executable; one sentence naming what to install when there is none."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SlatframeError("valgrind is not installed; install it (for example 'apt-get install valgrind') "
                             "to record traces with 'slatframe trace record'.")
    return valgrind


def record(out: str | Path, command: Sequence[str], registry: Any, keep: str | None = None) -> tuple[int, int]:
    """Run ``command`` under ``valgrind --tool=lackey --trace-mem=yes`` and write its trace
    as npz. Returns (records written, the program's exit code)."""
    valgrind = valgrind_path()
    if not command:
        raise SlatframeError("trace record needs a command after '--', for example: "
                             "slatframe trace record --out ls.npz -- /bin/ls /")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "lackey.out"
        proc = subprocess.run([valgrind, "--tool=lackey", "--trace-mem=yes", f"--log-file={log}", *command],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not log.exists() or log.stat().st_size == 0:
            raise SlatframeError(f"valgrind wrote no trace for {' '.join(command)!r}: "
                                 f"{proc.stderr.decode(errors='replace').strip()[:300]}")
        count = convert(log, out, "lackey", registry)
        if keep:
            shutil.copyfile(log, keep)
    return count, proc.returncode


def info(path: str | Path, fmt: str | None, registry: Any, limit: int = 1_000_000,
         tlb_sizes: Sequence[int] = (64, 1536, 4096)) -> dict[str, Any]:
    """Counts by op, distinct 4K pages, footprint, and reuse distances of the first
    ``limit`` accesses (with the hit rates of fully associative LRU TLBs they imply); and
    what the reader notes of the trace, if its chunks have ``notes`` (a dict: drmemtrace's
    thread order and thread count)."""
    counts = np.zeros(256, dtype=np.int64)
    pages = np.zeros(0, dtype=np.uint64)
    sample: list[np.ndarray] = []
    taken = 0
    vms, asids, threads = set(), set(), set()
    source, chunks = _read_trace(path, fmt, registry)
    for chunk in chunks:
        counts += np.bincount(chunk["op"], minlength=256)
        access = chunk[np.isin(chunk["op"], ACCESS_OPS)]
        page = access["vaddr"] >> np.uint64(12)
        pages = np.union1d(pages, page)
        vms.update(np.unique(chunk["vm"]).tolist())
        asids.update(np.unique(chunk["asid"]).tolist())
        threads.update(np.unique(chunk["thread"]).tolist())
        if taken < limit:
            sample.append(page[: limit - taken])
            taken += len(sample[-1])
    stats: dict[str, Any] = {"records": int(counts.sum())}
    for op, name in OP_NAMES.items():
        if counts[op]:
            stats[f"ops.{name}"] = int(counts[op])
    if counts[FORK] or counts[EXIT]:  # an asid is a process (docs/trace-format.md)
        stats["processes.created"], stats["processes.exited"] = int(counts[FORK]), int(counts[EXIT])
    stats["vms"] = len(vms)
    stats["asids"] = len(asids)
    stats["threads"] = len(threads)  #: distinct thread values (1 for a trace that does not tell threads apart)
    stats["pages"] = int(pages.size)
    stats["footprint"] = format_size(int(pages.size) * 4096) if pages.size else "0"
    if sample:
        ids, dense = np.unique(np.concatenate(sample), return_inverse=True)
        dist = reuse_distances(dense.astype(np.int64), len(ids))
        reused = dist[dist >= 0]
        stats["reuse.sampled_accesses"] = int(dist.size)
        stats["reuse.cold_fraction"] = round(float(np.mean(dist < 0)), 6)
        for q in (50, 90, 99):
            stats[f"reuse.p{q}_pages"] = int(np.percentile(reused, q)) if reused.size else None
        for size in tlb_sizes:
            stats[f"reuse.lru_hit_rate_{size}"] = round(lru_hit_rate(dist, size), 6)
    stats.update(getattr(source, "notes", None) or {})
    return stats
