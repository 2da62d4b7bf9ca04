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



def first_bad_record(chunk, n_vms, va_bits):
    """The verdict of check_chunk worked out record by record: (kind, index) of the first
    failing record of the first failing check, or None."""
    from slatframe.trace import CONTEXT_SWITCH, FORK, VALID_OPS
    from slatframe.workload import ADDRESS_OPS
    checks = [("vm", lambda r: int(r["vm"]) >= n_vms),
              ("op", lambda r: int(r["op"]) not in VALID_OPS),
              ("asid", lambda r: int(r["op"]) in (CONTEXT_SWITCH, FORK) and int(r["vaddr"]) >= 1 << 16),
              ("address", lambda r: va_bits is not None and int(r["op"]) in ADDRESS_OPS
               and int(r["vaddr"]) >> va_bits != 0)]
    for kind, bad in checks:
        for i, r in enumerate(chunk):
            if bad(r):
                return kind, i
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0, 1, 2, 3, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                                                                 25, 99, 255]),
                          st.sampled_from([0, 4096, (1 << 16) - 1, 1 << 16, (1 << 48) - 1, 1 << 48,
                                           (1 << 57) - 1, 1 << 57, (1 << 64) - 1])), max_size=40),
       st.integers(1, 4), st.sampled_from([None, 48, 57, 64]))
def test_check_chunk_agrees_with_a_record_by_record_check(records, n_vms, va_bits):
    chunk = np.zeros(len(records), dtype=TRACE_DTYPE)
    for i, (vm, op, va) in enumerate(records):
        chunk[i] = (vm, 0, op, va, 0)
    expected = first_bad_record(chunk, n_vms, va_bits)
    messages = {"vm": "names vm", "op": "has op", "asid": "asid", "address": "has address"}
    if expected is None:
        check_chunk(chunk, "w", n_vms, 7, va_bits)
    else:
        kind, i = expected
        with pytest.raises(TraceError, match=rf"^w: record {7 + i} .*{messages[kind]}"):
            check_chunk(chunk, "w", n_vms, 7, va_bits)

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


# -- inputs that are refused (docs/trace-format.md) -------------------------------------------


def patched_zip(path, local_offset, central_offset, value, mask=False):
    """Rewrite a 2-byte field of every local and central zip header."""
    import struct

    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        at = raw.find(signature)
        while at >= 0:
            old = struct.unpack_from("<H", raw, at + offset)[0]
            struct.pack_into("<H", raw, at + offset, old | value if mask else value)
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))


def small_npz(path, compressed=False):
    (np.savez_compressed if compressed else np.savez)(
        path, vaddr=np.arange(4, dtype=np.uint64), op=np.zeros(4, np.uint8))


def npz_refused(path) -> str:
    with pytest.raises(TraceError) as info:
        list(read_npz(path, 3))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    return str(info.value)


def test_npz_encrypted_member(tmp_path):
    path = tmp_path / "t.npz"
    small_npz(path)
    patched_zip(path, 6, 8, 0x1, mask=True)  # general-purpose flag bit 0: encrypted
    assert "array 'vaddr' is encrypted" in npz_refused(path)


@pytest.mark.parametrize("method,name", [(9, "deflate64"), (98, "ppmd"), (77, "unknown")])
def test_npz_unsupported_compression(tmp_path, method, name):
    path = tmp_path / "t.npz"
    small_npz(path, compressed=True)
    patched_zip(path, 8, 10, method)
    assert f"uses zip compression method {method} ({name}); allowed are stored, deflate" in npz_refused(path)


def test_npz_member_that_is_not_npy(tmp_path):
    import zipfile

    path = tmp_path / "t.npz"
    small_npz(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("vm", b"not an array")
    assert "member 'vm' is not part of the format" in npz_refused(path)


def test_npz_member_longer_than_its_header(tmp_path):
    import zipfile

    path = tmp_path / "t.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(4, dtype=np.uint64))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("vaddr.npy", buf.getvalue() + b"\0" * 8)
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.zeros(4, np.uint8))
        zf.writestr("op.npy", buf.getvalue())
    assert "array 'vaddr' holds more data than its 4 records" in npz_refused(path)


def test_npz_damaged_data_fails_its_crc(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, vaddr=np.full(4, 0x1000, dtype=np.uint64), op=np.zeros(4, np.uint8))
    raw = bytearray(path.read_bytes())
    at = raw.find(np.full(4, 0x1000, dtype=np.uint64).tobytes())
    raw[at + 1] ^= 0x01  # 0x1000 -> 0x1100: still a valid .npy, only the CRC tells
    path.write_bytes(bytes(raw))
    assert "Bad CRC-32" in npz_refused(path)


@pytest.mark.parametrize("arrays,needle", [
    ({"vaddr": np.zeros(0, np.uint64), "op": np.zeros(0, np.uint8)}, "holds no trace records"),
    ({"vaddr": np.zeros(3, np.uint64), "op": np.zeros(3, bool)}, "'op' has shape (3,) and dtype bool"),
    ({"vaddr": np.uint64(5), "op": np.zeros(1, np.uint8)}, "'vaddr' has shape () and dtype uint64"),
    ({"vaddr": np.zeros(3, np.uint64), "op": np.zeros(3, np.uint8), "vm": np.array([0, 70000, 0])},
     "record 1 of array 'vm' is 70000, outside the range of uint16"),
])
def test_npz_more_bad_input(tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert needle in npz_refused(path)


def trace_of(ops, vaddrs):
    t = np.zeros(len(ops), dtype=TRACE_DTYPE)
    t["op"], t["vaddr"] = ops, vaddrs
    return t


def test_check_chunk_refuses_addresses_wider_than_the_format():
    from slatframe.trace import CONTEXT_SWITCH, FLUSH, IFETCH, INVLPG, MAP, PROTECT, READ, UNMAP, WRITE

    top = (1 << 48) - 1
    ok = trace_of([READ, WRITE, IFETCH, MAP, UNMAP, PROTECT, INVLPG, FLUSH, CONTEXT_SWITCH],
                  [top, top, 0, top, top, top, top, (1 << 64) - 1, 65535])
    check_chunk(ok, "w", 1, 0, va_bits=48)  # a flush's vaddr is unused; a context switch's is an asid
    for i, op in enumerate([READ, WRITE, IFETCH, MAP, UNMAP, PROTECT, INVLPG]):
        bad = ok.copy()
        bad["vaddr"][i] = top + 1
        with pytest.raises(TraceError, match=rf"record {10 + i} \(\w+\) has address 0x1000000000000, wider than "
                                             r"the 48-bit .* allowed are 0\.\.0xffffffffffff"):
            check_chunk(bad, "w", 1, 10, va_bits=48)
        check_chunk(bad, "w", 1, 10, va_bits=57)
        check_chunk(bad, "w", 1, 10)  # no width given: not checked
    bad = ok.copy()
    bad["vaddr"][8] = 65536
    with pytest.raises(TraceError, match="record 8 is a context switch to asid 65536; asids are 0..65535"):
        check_chunk(bad, "w", 1, 0)


def test_format_widths(registry):
    widths = {}
    for name in ("x86-64", "x86-64-la57", "ept", "npt"):
        record = registry.get("page-table formats", name)
        widths[name] = record.factory(record.options() if record.options else None).va_bits
    assert widths == {"x86-64": 48, "x86-64-la57": 57, "ept": 48, "npt": 48}


def test_run_refuses_a_wide_address_and_names_the_file(tmp_path, capsys):
    from slatframe.cli import main

    trace = tmp_path / "wide.lackey"
    trace.write_bytes(b"I  0401ab70,3\n L 1000000000000,8\n")
    config = tmp_path / "exp.toml"
    config.write_text('[experiment]\nname = "w"\nengine = "reference"\n[machine]\nslat = "native"\n'
                      '[[tlb.levels]]\nname = "l1"\nsets = 4\nways = 2\n'
                      '[workload]\nsource = "lackey"\npath = "wide.lackey"\n')
    out = tmp_path / "r.json"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"(file {trace})" in err and "record 1 (read) has address 0x1000000000000" in err
    assert main(["run", str(config), "--out", str(out), "--quiet", "--set", "machine.guest_format=x86-64-la57"]) == 0
    trace.unlink()
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    assert "workload.path = 'wide.lackey' is not allowed: there is no such file" in capsys.readouterr().err


@pytest.mark.parametrize("result,needle,error", [
    (None, "returned None", "PluginError"),
    (np.zeros(3, dtype=TRACE_DTYPE), "returned a single array; it must return an iterable", "PluginError"),
    (7, "returned an object of type int", "PluginError"),
    ([[1, 2]], "yielded a list after record 0", "PluginError"),
    ([np.zeros(2, dtype=TRACE_DTYPE), "x"], "yielded a str after record 2", "PluginError"),
    ([np.zeros(2, dtype=np.uint64)], "yielded records of dtype uint64", "TraceError"),
    ([np.zeros(2, dtype=[("vm", "u2"), ("asid", "u2"), ("op", "u1"), ("vaddr", "u8")])],
     "records gained a 'thread' field", "TraceError"),  # a plugin written before the field
    ([np.zeros((2, 2), dtype=TRACE_DTYPE)], "yielded an array of shape (2, 2)", "TraceError"),
])
def test_bad_workload_plugins_are_one_sentence(registry, result, needle, error):
    """A workload plugin whose factory returns the wrong thing is named in one sentence."""
    import attrs

    from slatframe import errors
    from slatframe.engine import workload_chunks
    from slatframe.records import WorkloadRecord
    from slatframe.testing import build, tiny_config

    @attrs.frozen
    class NoOptions:
        pass

    config, reg = build(tiny_config(workload={"source": "synthetic", "accesses": 10}), registry)
    bad = WorkloadRecord(name="broken", summary="returns the wrong thing", factory=lambda o, ctx: result,
                         options=NoOptions)
    patched = type("R", (), {"get": lambda self, kind, name: bad if kind == "workloads" else reg.get(kind, name)})()
    config = attrs.evolve(config, workload=attrs.evolve(config.workload, name="broken", options=NoOptions()))
    with pytest.raises(errors.SlatframeError) as info:
        list(workload_chunks(config, patched))
    assert type(info.value).__name__ == error
    assert str(info.value).startswith("workload 'broken'") and needle in str(info.value)
