"""The npz reader and the synthetic generator."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from slatframe.errors import TraceError
from slatframe.trace import TRACE_DTYPE
from slatframe.workload import check_chunk
from slatframe.tracefile import read_npz, write_npz
from slatframe_plugins.synthetic import SyntheticOptions, generate


def random_trace(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    t["vaddr"] = rng.integers(0, 1 << 63, n, dtype=np.uint64)
    t["op"] = rng.choice([0, 1, 2, 16, 17, 18], n)
    t["vm"] = rng.integers(0, 3, n)
    t["asid"] = rng.integers(0, 1000, n)
    return t


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, 1000, 5000])
def test_npz_round_trip(tmp_path, compressed, chunk):
    trace = random_trace(1234)
    path = tmp_path / "t.npz"
    write_npz(path, trace, compressed)
    chunks = list(read_npz(path, chunk))
    assert all(len(c) <= chunk for c in chunks)
    assert np.array_equal(np.concatenate(chunks), trace)


def test_npz_optional_columns_default_to_zero(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, vaddr=np.arange(10, dtype=np.uint64), op=np.zeros(10, np.uint8))
    (chunk,) = read_npz(path, 100)
    assert (chunk["vm"] == 0).all() and (chunk["asid"] == 0).all()
    assert chunk["vaddr"].tolist() == list(range(10))


@pytest.mark.parametrize("arrays,needle", [
    ({"op": np.zeros(3, np.uint8)}, "'vaddr' is missing"),
    ({"vaddr": np.zeros(3, np.float64), "op": np.zeros(3, np.uint8)}, "1-D integer"),
    ({"vaddr": np.zeros(3, np.uint64), "op": np.zeros(4, np.uint8)}, "has 4 records but 'vaddr' has 3"),
    ({"vaddr": np.zeros(3, np.uint64), "op": np.zeros(3, np.uint8), "size": np.zeros(3)}, "'size' is not part"),
    ({"vaddr": np.zeros(3, np.uint64), "op": np.array([0, 0, 300], np.int32)}, "record 2 of array 'op'"),
    ({"vaddr": np.array([1, -1, 0]), "op": np.zeros(3, np.uint8)}, "record 1 of array 'vaddr'"),
    ({"vaddr": np.zeros((3, 2), np.uint64), "op": np.zeros(3, np.uint8)}, "1-D"),
])
def test_npz_bad_input(tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(TraceError) as info:
        list(read_npz(path, 2))
    assert str(path) in str(info.value) and needle in str(info.value)


def test_not_a_zip(tmp_path):
    path = tmp_path / "t.npz"
    path.write_bytes(b"hello")
    with pytest.raises(TraceError, match="not an npz"):
        list(read_npz(path, 10))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=400))
def test_npz_random_bytes_never_crash(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fz") / "t.npz"
    path.write_bytes(data)
    with pytest.raises(TraceError):
        list(read_npz(path, 10))


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 2000), flip=st.integers(0, 2000))
def test_npz_mutated_file_is_trace_error_or_valid(tmp_path_factory, cut, flip):
    buf = io.BytesIO()
    write_npz(buf, random_trace(50, seed=1), compressed=False)
    raw = bytearray(buf.getvalue())
    if flip < len(raw):
        raw[flip] ^= 0xFF
    raw = raw[: max(cut, 1)] if cut < len(raw) else raw
    path = tmp_path_factory.mktemp("mut") / "t.npz"
    path.write_bytes(bytes(raw))
    try:
        for chunk in read_npz(path, 16):
            assert chunk.dtype == TRACE_DTYPE
    except TraceError:
        pass


def test_check_chunk_names_record():
    t = random_trace(20)
    t["vm"] = 0
    t["op"][13] = 99
    with pytest.raises(TraceError, match="record 113 has op 99"):
        check_chunk(t, "w", 1, 100)
    t["op"][13] = 0
    t["vm"][4] = 2
    with pytest.raises(TraceError, match="record 4 names vm 2"):
        check_chunk(t, "w", 2, 0)


@pytest.mark.parametrize("dist", ["uniform", "zipf"])
def test_synthetic_independent_of_chunk_size(dist):
    o = SyntheticOptions(distribution=dist, accesses=10_000, footprint=1 << 22, write_fraction=0.25)
    a = np.concatenate(list(generate(o, 777, seed=4, n_vms=2)))
    b = np.concatenate(list(generate(o, 10_000, seed=4, n_vms=2)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.concatenate(list(generate(o, 10_000, seed=5, n_vms=2))))
    pages = (a["vaddr"] - np.uint64(o.base)) >> np.uint64(12)
    assert pages.max() < o.footprint // 4096
    assert (a["vm"][::2] == 0).all() and (a["vm"][1::2] == 1).all()
    assert abs((a["op"] == 1).mean() - 0.25) < 0.02


def test_zipf_rank_frequencies_follow_the_law():
    """Rank frequencies of the hottest pages match 1/r^s normalised over the footprint."""
    s, pages, n = 1.2, 1000, 400_000
    o = SyntheticOptions(distribution="zipf", accesses=n, footprint=pages * 4096, zipf_exponent=s)
    a = np.concatenate(list(generate(o, 1 << 16, seed=2, n_vms=1)))
    counts = np.sort(np.bincount(((a["vaddr"] - np.uint64(o.base)) >> np.uint64(12)).astype(np.int64),
                                 minlength=pages))[::-1]
    expected = n / np.arange(1, pages + 1) ** s / np.sum(1 / np.arange(1, pages + 1) ** s)
    for r in range(5):
        assert abs(counts[r] - expected[r]) < 5 * np.sqrt(expected[r]), (r, counts[r], expected[r])
