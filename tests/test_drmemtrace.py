"""The drmemtrace workload (plugins/drmemtrace.py) on DynamoRIO's threadsig trace
(tests/data/drmemtrace-threadsig, tests/data/README.md) and on damaged copies of it.

The independent figures are what DynamoRIO's own tests assert for this directory
(clients/drcachesim/tests/core_sharded_test.cpp and core_serial.templatex, the
basic_counts tool): 9 threads, 650,576 fetched instructions, 126 non-fetched ones,
172,208 loads, 100,150 stores, no prefetches or flushes.
"""
from __future__ import annotations

import functools
import json
import shutil
import struct
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from slatframe.cli import main
from slatframe.errors import TraceError
from slatframe.trace import TRACE_DTYPE, IFETCH, READ, WRITE
from slatframe_plugins.drmemtrace import (ENTRY_DTYPE, DrmemtraceChunks, interleave, open_threads,
                                          thread_counts)

DATA = Path(__file__).resolve().parent / "data" / "drmemtrace-threadsig"
THREADS, FETCHED, NON_FETCHED, LOADS, STORES = 9, 650_576, 126, 172_208, 100_150  # DynamoRIO's tests
SMALL = ("drmemtrace.threadsig.872805.4975.trace.zip", "drmemtrace.threadsig.872904.7848.trace.zip")


@functools.lru_cache(maxsize=None)
def counts():
    return thread_counts(DATA)


@functools.lru_cache(maxsize=None)
def per_thread(order: str) -> tuple[str, dict[int, np.ndarray]]:
    """The order used and each thread's (op, vaddr) records as the interleaved stream gives them."""
    used, pieces = interleave(DATA, order)
    parts = defaultdict(list)
    for i, ops, vaddrs in pieces:
        parts[i].append(np.stack([ops.astype(np.uint64), vaddrs]))
    return used, {i: np.concatenate(p, axis=1) for i, p in parts.items()}


@functools.lru_cache(maxsize=None)
def alone() -> dict[int, np.ndarray]:
    """Each thread's records, its file read alone."""
    threads, _ = open_threads(DATA)
    out = {}
    for t in threads:
        pieces = list(t.pieces())
        out[t.index] = np.concatenate([np.stack([p.ops.astype(np.uint64), p.vaddrs]) for p in pieces], axis=1)
    return out


def test_totals_match_dynamorios_figures():
    c = counts()
    assert len(c) == THREADS and len({t.tid for t in c}) == THREADS
    assert sum(t.instructions for t in c) == FETCHED
    assert sum(t.non_fetched for t in c) == NON_FETCHED
    assert sum(t.loads for t in c) == LOADS and sum(t.stores for t in c) == STORES
    assert sum(t.prefetches + t.hardware_prefetches + t.flushes for t in c) == 0


@pytest.mark.parametrize("order", ["auto", "cpu_schedule", "timestamps"])
def test_records_add_up_to_the_thread_counts(order):
    chunks = DrmemtraceChunks(DATA, order, 50_000)
    ops = np.zeros(256, dtype=np.int64)
    per_thread = np.zeros((THREADS, 256), dtype=np.int64)  # records by their thread field
    sizes = []
    for chunk in chunks:
        ops += np.bincount(chunk["op"], minlength=256)
        np.add.at(per_thread, (chunk["thread"].astype(np.intp), chunk["op"].astype(np.intp)), 1)
        sizes.append(len(chunk))
        assert (chunk["asid"] == 0).all() and (chunk["vm"] == 0).all()
    c = counts()
    # each record names its thread: the file (in name order) whose own counts it adds to
    assert per_thread[:, IFETCH].tolist() == [t.instructions for t in c]
    assert per_thread[:, WRITE].tolist() == [t.stores for t in c]
    assert ops[IFETCH] == sum(t.instructions for t in c) == FETCHED
    assert ops[READ] == sum(t.loads + t.prefetches for t in c) and ops[WRITE] == sum(t.stores for t in c)
    assert ops.sum() == sum(t.records for t in c)
    assert max(sizes) == 50_000 and all(s == 50_000 for s in sizes[:-1])
    assert chunks.notes == {"drmemtrace.order": "timestamps" if order == "timestamps" else "cpu_schedule",
                            "drmemtrace.threads": THREADS}


def test_both_orders_keep_each_threads_records_in_its_order():
    mine = alone()
    orders = {}
    for order in ("cpu_schedule", "timestamps"):
        used, threads = per_thread(order)
        assert used == order and sorted(threads) == sorted(mine)
        for i, records in threads.items():
            assert np.array_equal(records, mine[i]), (order, i)
        orders[order] = threads
    # the orders do differ: the interleavings are not the same stream
    first = {o: [i for i, _, _ in interleave(DATA, o)[1]][:50] for o in orders}
    assert first["cpu_schedule"] != first["timestamps"]


def test_cpu_schedule_starts_with_the_first_scheduled_thread():
    """The schedule's earliest entry, at its earliest timestamp and lowest cpu, runs first."""
    threads, _ = open_threads(DATA)
    with zipfile.ZipFile(DATA / "cpu_schedule.bin.zip") as zf:
        rows = [struct.unpack_from("<4Q", zf.read(n), k) for n in zf.namelist()
                for k in range(0, zf.getinfo(n).file_size, 32)]
    first = min(rows, key=lambda r: (r[1], r[2], r[0], r[3]))  # (timestamp, cpu, thread, start)
    index, _, _ = next(interleave(DATA, "cpu_schedule")[1])
    tids = [t.thread_counts().tid for t in _read_all(threads)]
    assert tids[index] == first[0]


def _read_all(threads):
    for t in threads:
        for _ in t.pieces():
            pass
    return threads


def run(config: Path, out: Path, *sets: str) -> dict:
    args = ["run", str(config), "--out", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return json.loads(out.read_text())


CONFIG = """
[experiment]
name = "dr"
chunk_size = 4096
[machine]
slat = "native"
host_memory = "4G"
[[tlb.levels]]
name = "l1"
sets = 4
ways = 4
[[vms]]
name = "vm0"
memory = "1G"
[workload]
source = "drmemtrace"
path = "two"
[cost]
model = "fixed"
"""


def test_run_in_both_tiers_gives_every_record(tmp_path):
    """Two threads' files (timestamp order: no schedule) run whole in each tier."""
    (tmp_path / "two").mkdir()
    for name in SMALL:
        shutil.copy(DATA / name, tmp_path / "two" / name)
    config = tmp_path / "dr.toml"
    config.write_text(CONFIG)
    expected = sum(t.records for t in thread_counts(tmp_path / "two"))
    results = {engine: run(config, tmp_path / f"{engine}.json", f"experiment.engine='{engine}'")
               for engine in ("reference", "compiled")}
    assert results["reference"]["metrics"]["accesses"] == expected
    assert results["reference"]["metrics"] == results["compiled"]["metrics"]
    assert results["reference"]["inputs"][0]["sha256"]  # the folder is hashed
    for result in results.values():  # no schedule file: auto took the timestamps, and says so
        assert result["workload_notes"] == {"drmemtrace.order": "timestamps", "drmemtrace.threads": len(SMALL)}


def test_accesses_limits_the_records():
    chunks = list(DrmemtraceChunks(DATA, "auto", 1000, limit=2500))
    assert [len(c) for c in chunks] == [1000, 1000, 500]


# -- bad input: one sentence naming the file and the entry, exit status 2 --------------------

def entries_of(name: str = SMALL[0]) -> np.ndarray:
    with zipfile.ZipFile(DATA / name) as zf:
        return np.frombuffer(zf.read("chunk.0000"), dtype=ENTRY_DTYPE).copy()


def write_zip(path: Path, data: bytes, member: str = "chunk.0000") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, data)
    return path


def refused(path: Path, capsys, *options: str) -> str:
    assert main(["trace", "info", str(path), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slatframe: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_truncated_member(tmp_path, capsys):
    data = entries_of().tobytes()
    path = write_zip(tmp_path / "t.trace.zip", data[:12 * 1000 + 5])
    err = refused(path, capsys)
    assert f"{path}: member chunk.0000: entry 1000 is truncated: 5 of its 12 bytes" in err


def test_missing_footer(tmp_path, capsys):
    path = write_zip(tmp_path / "t.trace.zip", entries_of()[:1000].tobytes())
    assert f"{path}: ends after entry 999 without the footer entry" in refused(path, capsys)


def test_bad_header_and_version(tmp_path, capsys):
    entries = entries_of()
    entries[0]["addr"] = 99
    path = write_zip(tmp_path / "v.trace.zip", entries.tobytes())
    assert "member chunk.0000: entry 0 gives trace version 99; this reader knows versions 2 to 7" in refused(path, capsys)
    entries[0]["type"] = 10
    path = write_zip(tmp_path / "h.trace.zip", entries.tobytes())
    assert "entry 0 has type 10, not the header entry" in refused(path, capsys)


def test_unknown_type_names_the_entry(tmp_path, capsys):
    entries = entries_of()
    entries[777]["type"] = 300
    path = write_zip(tmp_path / "u.trace.zip", entries.tobytes())
    assert "chunk.0000: entry 777 is of type 300" in refused(path, capsys)


def test_folder_without_trace_files(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    err = refused(tmp_path / "empty", capsys, "--format", "drmemtrace")
    assert f"{tmp_path / 'empty'}: holds no drmemtrace thread files" in err


def test_zip_name_that_is_not_a_zip(tmp_path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "x.1.trace.zip").write_bytes(b"not a zip at all")
    err = refused(folder, capsys)
    assert f"{folder / 'x.1.trace.zip'}: is named .zip but is not a zip file" in err
    (tmp_path / "alone.zip").write_bytes(b"\x19\x00" * 20)
    path = tmp_path / "alone.zip"
    with pytest.raises(TraceError, match="is named .zip but is not a zip file"):
        list(DrmemtraceChunks(path, "auto", 100))


def test_schedule_without_a_threads_file(tmp_path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    shutil.copy(DATA / "cpu_schedule.bin.zip", folder)
    shutil.copy(DATA / SMALL[0], folder)
    err = refused(folder, capsys)
    assert f"{folder / 'cpu_schedule.bin.zip'}: schedules thread" in err and "which has no file" in err


# -- fuzzing: records, or one TraceError ----------------------------------------------------

@functools.lru_cache(maxsize=None)
def small_trace() -> bytes:
    """The first 300 entries of a thread and its footer: a small valid file."""
    entries = entries_of()
    return np.concatenate([entries[:300], entries[-1:]]).tobytes()


def read_or_refuse(path: Path) -> None:
    try:
        for chunk in DrmemtraceChunks(path, "auto", 64):
            assert chunk.dtype == TRACE_DTYPE
    except TraceError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 12 * 301 - 1), st.integers(1, 255)), max_size=4),
       cut=st.integers(0, 12 * 301), container=st.sampled_from(["zip", "gz", "plain"]))
def test_damaged_files_give_records_or_one_sentence(tmp_path_factory, flips, cut, container):
    import gzip

    data = bytearray(small_trace())
    for at, mask in flips:
        data[at] ^= mask
    data = bytes(data[:cut])
    folder = tmp_path_factory.mktemp("fz")
    if container == "zip":
        path = write_zip(folder / "t.trace.zip", data)
    else:
        path = folder / f"t.trace{'.gz' if container == 'gz' else ''}"
        path.write_bytes(gzip.compress(data) if container == "gz" else data)
    read_or_refuse(path)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.integers(0, 10_000))
def test_damaged_zip_bytes_give_records_or_one_sentence(tmp_path_factory, flips, cut):
    folder = tmp_path_factory.mktemp("fzz")
    path = write_zip(folder / "t.trace.zip", small_trace())
    data = bytearray(path.read_bytes())
    for at, mask in flips:
        if at < len(data):
            data[at] ^= mask
    path.write_bytes(bytes(data[:cut]))
    read_or_refuse(path)
