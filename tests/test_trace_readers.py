"""Trace readers (lackey, ChampSim), the trace tools, and reuse distances."""
from __future__ import annotations

import gzip
import re
import json
import lzma
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from slatframe.analysis import lru_hit_rate, reuse_distances
from slatframe.cli import main
from slatframe.errors import TraceError
from slatframe.trace import IFETCH, READ, WRITE
from slatframe.tracefile import read_npz
from slatframe_plugins.trace_readers import read_champsim, read_lackey

LACKEY = b"""==123== Lackey, an example Valgrind tool
==123== Command: /bin/true
I  0401ab70,3
 S 1fff000778,8
I  0401ab73,5
 L 04222cac,8
 M 0421e8f0,4
==123==
"""
LACKEY_RECORDS = [(IFETCH, 0x0401ab70), (WRITE, 0x1fff000778), (IFETCH, 0x0401ab73), (READ, 0x04222cac),
                  (READ, 0x0421e8f0), (WRITE, 0x0421e8f0)]


def records(chunks):
    t = np.concatenate(list(chunks))
    return list(zip(t["op"].tolist(), t["vaddr"].tolist()))


@pytest.mark.parametrize("compress", [None, gzip.compress, lzma.compress])
@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_lackey_reads_exactly(tmp_path, compress, chunk):
    path = tmp_path / "t.lackey"
    path.write_bytes(compress(LACKEY) if compress else LACKEY)
    assert records(read_lackey(path, chunk)) == LACKEY_RECORDS


@pytest.mark.parametrize("line,needle", [
    (b"I  04zz0,3\n", "line 2"), (b" X 0401ab70,3\n", "line 2"), (b" L 0401ab70\n", "line 2"),
    (b"I  0401ab70,3,9\n", "line 2"), (b"\xff\xfe\n", "line 2")])
def test_lackey_bad_line_names_it(tmp_path, line, needle):
    path = tmp_path / "bad.lackey"
    path.write_bytes(b"I  0401ab70,3\n" + line)
    with pytest.raises(TraceError) as info:
        list(read_lackey(path, 10))
    assert str(path) in str(info.value) and needle in str(info.value)


def champsim_record(ip, sources=(), destinations=()):
    """One 64-byte input_instr, packed field by field as ChampSim's struct lays it out."""
    src = list(sources) + [0] * (4 - len(sources))
    dst = list(destinations) + [0] * (2 - len(destinations))
    return struct.pack("<QBB2B4B2Q4Q", ip, 0, 0, 0, 0, 1, 2, 3, 4, *dst, *src)


def test_champsim_reads_exactly(tmp_path):
    rng = np.random.default_rng(1)
    blob, expected = b"", []
    for _ in range(500):
        ip = int(rng.integers(1, 1 << 47))
        sources = [int(x) for x in rng.integers(1, 1 << 47, rng.integers(0, 5))]
        destinations = [int(x) for x in rng.integers(1, 1 << 47, rng.integers(0, 3))]
        blob += champsim_record(ip, sources, destinations)
        expected += [(IFETCH, ip)] + [(READ, a) for a in sources] + [(WRITE, a) for a in destinations]
    for name, data in (("t.champsim", blob), ("t.champsim.xz", lzma.compress(blob)),
                       ("t.champsim.gz", gzip.compress(blob))):
        path = tmp_path / name
        path.write_bytes(data)
        for chunk in (7, 100, 10_000):
            assert records(read_champsim(path, chunk)) == expected


def test_champsim_truncated_record(tmp_path):
    path = tmp_path / "t.champsim"
    path.write_bytes(champsim_record(1) * 3 + b"\x00" * 10)
    with pytest.raises(TraceError, match="record 3 is truncated: 10 of its 64 bytes"):
        list(read_champsim(path, 100))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_readers_on_random_bytes_never_crash(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fz") / "t"
    path.write_bytes(data)
    for reader in (read_lackey, read_champsim):
        try:
            for chunk in reader(path, 16):
                assert chunk.dtype.names == ("vm", "asid", "op", "vaddr")
        except TraceError:
            pass


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 400), flip=st.integers(0, 400), compress=st.sampled_from([None, "gz", "xz"]))
def test_readers_on_mutated_files_never_crash(tmp_path_factory, cut, flip, compress):
    for reader, original in ((read_lackey, LACKEY), (read_champsim, champsim_record(5, [6], [7]) * 4)):
        data = {"gz": gzip.compress, "xz": lzma.compress}.get(compress, lambda b: b)(original)
        data = bytearray(data)
        if flip < len(data):
            data[flip] ^= 0x5A
        path = tmp_path_factory.mktemp("mut") / "t"
        path.write_bytes(bytes(data[: max(1, cut)] if cut < len(data) else data))
        try:
            list(reader(path, 3))
        except TraceError:
            pass


def naive_reuse(ids):
    out = []
    for t, p in enumerate(ids):
        prev = max((i for i in range(t) if ids[i] == p), default=None)
        out.append(-1 if prev is None else len(set(ids[prev + 1:t]) - {p}))
    return out


def test_reuse_distance_matches_brute_force():
    ids = np.random.default_rng(3).zipf(1.3, 600) % 40
    assert reuse_distances(ids.astype(np.int64), 40).tolist() == naive_reuse(ids.tolist())


def test_lru_hit_rate_matches_a_simulated_lru():
    from collections import OrderedDict

    ids = (np.random.default_rng(4).zipf(1.2, 5000) % 300).astype(np.int64)
    dist = reuse_distances(ids, 300)
    for size in (8, 64):
        lru, hits = OrderedDict(), 0
        for p in ids.tolist():
            if p in lru:
                hits += 1
                lru.move_to_end(p)
            else:
                lru[p] = True
                if len(lru) > size:
                    lru.popitem(last=False)
        assert lru_hit_rate(dist, size) == hits / len(ids)


def test_convert_and_info(tmp_path, capsys):
    src = tmp_path / "t.lackey.gz"
    src.write_bytes(gzip.compress(LACKEY))
    out = tmp_path / "t.npz"
    assert main(["trace", "convert", str(src), str(out)]) == 0
    assert records(read_npz(out, 2)) == LACKEY_RECORDS
    capsys.readouterr()
    assert main(["trace", "info", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 6 and stats["ops.ifetch"] == 2 and stats["ops.write"] == 2
    pages = {va >> 12 for _, va in LACKEY_RECORDS}
    assert stats["pages"] == len(pages) and stats["footprint"] == f"{len(pages) * 4}K"


def test_bad_trace_exits_2_with_one_line(tmp_path, capsys):
    src = tmp_path / "t.lackey"
    src.write_bytes(b"I  0401ab70,3\n L nothex,8\n")
    assert main(["trace", "info", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2" in err


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_recorded_real_program_runs_end_to_end(tmp_path):
    """A real program (python3 -c pass... /bin/true is enough) recorded under lackey, then
    run through a nested-paging experiment."""
    trace = tmp_path / "true.npz"
    proc = subprocess.run([sys.executable, "-m", "slatframe.cli", "trace", "record", "--out", str(trace),
                           "--", "/bin/true"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    t = np.load(trace)
    assert len(t["vaddr"]) > 10_000 and set(np.unique(t["op"]).tolist()) == {READ, WRITE, IFETCH}
    config = tmp_path / "exp.toml"
    config.write_text(f'''[experiment]
name = "true-under-ept"
[machine]
slat = "intel-ept"
[[tlb.levels]]
name = "l1"
sets = 16
ways = 4
[workload]
source = "npz"
path = "{trace.name}"
''')
    out = tmp_path / "r.json"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert m["accesses"] == len(t["vaddr"]) and m["walk.refs_max"] == 24
    assert m["faults.guest"] == len(np.unique(t["vaddr"] >> np.uint64(12)))


# -- inputs that are refused (docs/trace-format.md) -------------------------------------------


def read_any(path, fmt=None):
    """The records ``slatframe trace info`` reads from ``path``."""
    from slatframe.registry import Registry
    from slatframe.tracetools import read_trace

    return list(read_trace(path, fmt, Registry()))


def refused(path, fmt=None) -> str:
    with pytest.raises(TraceError) as info:
        read_any(path, fmt)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


@pytest.mark.parametrize("fmt", [None, "lackey"])
def test_negative_lackey_address_is_a_line_error(tmp_path, fmt):
    path = tmp_path / "neg.lackey"
    path.write_bytes(b"I  0401ab70,3\n L -10,8\n")
    assert "line 2 is ' L -10,8'" in refused(path, fmt)


def test_lackey_address_of_more_than_64_bits_is_refused(tmp_path):
    path = tmp_path / "wide.lackey"
    path.write_bytes(b"I  0000ffffffffffffffff,3\nI  10000000000000000,3\n")  # 2**64 - 1, then 2**64
    assert "line 2 is 'I  10000000000000000,3'" in refused(path)


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_damaged_compressed_lackey_is_one_sentence(tmp_path, compress):
    whole = compress(LACKEY * 50)
    damaged = bytearray(whole)
    damaged[len(whole) // 2] ^= 0xFF
    for name, data in (("truncated", whole[: len(whole) // 2]), ("flipped", bytes(damaged))):
        path = tmp_path / name
        path.write_bytes(data)
        for fmt in (None, "lackey"):
            assert "compressed file is damaged" in refused(path, fmt)


@pytest.mark.parametrize("fmt", [None, "lackey", "champsim", "npz"])
def test_missing_file_and_directory(tmp_path, fmt):
    assert refused(tmp_path / "nope.lackey", fmt).endswith("trace file does not exist.")
    assert refused(tmp_path, fmt).endswith("is a directory; a trace is a file.")


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "t.lackey"
    path.write_bytes(LACKEY)
    path.chmod(0)
    assert "permission denied" in refused(path)


def test_trace_commands_on_a_missing_file_exit_2(tmp_path, capsys):
    for argv in (["trace", "info", str(tmp_path / "nope")], ["trace", "convert", str(tmp_path / "nope"),
                                                               str(tmp_path / "o.npz")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("fmt", [None, "lackey", "champsim"])
@pytest.mark.parametrize("compress", [None, gzip.compress, lzma.compress])
def test_empty_trace_is_refused(tmp_path, fmt, compress):
    path = tmp_path / "empty"
    path.write_bytes(compress(b"") if compress else b"")
    assert "empty" in refused(path, fmt)


def test_lackey_of_only_messages_is_refused(tmp_path):
    path = tmp_path / "t.lackey"
    path.write_bytes(b"==1== Lackey\n\n==1== done\n")
    assert "holds no trace records" in refused(path)


def test_binary_garbage_without_zero_bytes_is_a_lackey_line_error(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(bytes(range(1, 256)) * 3)
    assert "line 1 is" in refused(path)


def test_lackey_line_too_long(tmp_path):
    from slatframe_plugins.trace_readers import LINE_LIMIT

    path = tmp_path / "long.lackey"
    path.write_bytes(b"I  0401ab70,3\n" + b"==" + b"x" * LINE_LIMIT + b"\nI  0401ab70,3\n")
    assert f"line 2 is longer than {LINE_LIMIT} bytes" in refused(path)
    path.write_bytes(b"I  0401ab70,3\n" * 3 + b"I" * (3 * LINE_LIMIT))  # no newline: not read whole
    assert f"line 4 is longer than {LINE_LIMIT} bytes" in refused(path, "lackey")
    path.write_bytes(b"==" + b"x" * (LINE_LIMIT - 2) + b"\nI  0401ab70,3")  # the longest allowed line
    assert records(read_lackey(path, 10)) == [(IFETCH, 0x0401ab70)]


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "t.lackey"
    path.write_bytes(b"==1== caf\xe9 \xff\n I 0401ab70,3\n")  # skipped in a '==' line
    assert records(read_lackey(path, 10)) == [(IFETCH, 0x0401ab70)]
    path.write_bytes(b"I  0401ab70,3\n L 04\xe9ab70,3\n")
    assert "line 2 is ' L 04\ufffdab70,3'" in refused(path)


def test_lackey_line_numbers_across_blocks(tmp_path, monkeypatch):
    """A bad line is named by its number however the file is cut into blocks."""
    from slatframe_plugins import trace_readers

    monkeypatch.setattr(trace_readers, "_BLOCK", 7)
    path = tmp_path / "t.lackey"
    path.write_bytes(LACKEY + b"I  0401ab70,3\r\n" * 5 + b" L zz,8\n")
    assert "line 14 is ' L zz,8'" in refused(path, "lackey")
    path.write_bytes(LACKEY * 3)
    assert records(read_lackey(path, 4)) == LACKEY_RECORDS * 3


@pytest.mark.parametrize("extra", [1, 63, 65])
def test_champsim_size_not_a_multiple_of_64(tmp_path, extra):
    path = tmp_path / "t.champsim"
    path.write_bytes(champsim_record(1) * 2 + b"\x00" * extra)
    whole, rest = divmod(128 + extra, 64)
    assert f"record {whole} is truncated: {rest} of its 64 bytes" in refused(path, "champsim")


def test_champsim_read_in_short_pieces(tmp_path, monkeypatch):
    """A reader whose reads return less than asked still yields whole records."""
    import io
    from slatframe_plugins import trace_readers

    blob = b"".join(champsim_record(i + 1, [100 + i], [200 + i]) for i in range(20))

    class Dribble(io.RawIOBase):
        def __init__(self):
            self.data = io.BytesIO(blob)

        def read(self, n=-1):
            return self.data.read(min(n, 10) if n >= 0 else 10)

    monkeypatch.setattr(trace_readers, "open_trace", lambda path: Dribble())
    expected = [r for i in range(20) for r in ((IFETCH, i + 1), (READ, 100 + i), (WRITE, 200 + i))]
    assert records(read_champsim("x", 5)) == expected


def test_bad_op_in_npz_is_refused_by_info(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, vaddr=np.arange(3, dtype=np.uint64), op=np.array([0, 7, 0], np.uint8))
    assert "record 1 has op 7" in refused(path)


def test_convert_to_an_unwritable_place_is_one_sentence(tmp_path, capsys):
    src = tmp_path / "t.lackey"
    src.write_bytes(LACKEY)
    (tmp_path / "file").write_bytes(b"")
    assert main(["trace", "convert", str(src), str(tmp_path / "file" / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written" in err


_LACKEY_LINE = st.one_of(
    st.tuples(st.sampled_from(["I  ", " L ", " S ", " M "]),
              st.integers(0, 2**64 - 1).map(lambda a: f"{a:08x}"), st.integers(0, 4096).map(str)).map("".join),
    st.sampled_from(["==12== Lackey, an example Valgrind tool", "==1==", "==7== Command: ./a.out"]),
    # what the careful path alone reads or refuses: odd spacing, upper-case hex, leading
    # zeros past 16 digits, a CR, blanks, damage
    st.sampled_from(["I 0401ab70,3", "  L 1fff000778,8", " S 00000000000000000001234,8", " M 1FFF0A,4",
                     "I  0401ab70,3\r", "", "   ", " L 12,", " X 12,4", "I  12g4,3", " L ,4", "I  0401ab70,3x"]),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LACKEY_LINE, min_size=1, max_size=40))
def test_the_vectorized_lackey_parser_agrees_with_the_regular_expressions(lines):
    """parse_block reads a block of canonical lines exactly as the regular expressions
    do, and hands any other block back (None) to the careful path."""
    from slatframe.lackey import ACCESS_LINE, access_records, parse_block

    text = "\n".join(lines).encode()
    fast = parse_block(text)
    canonical = all(re.fullmatch(r"(I  | [LSM] )[0-9a-f]{1,16},[0-9]+|==.*", line) for line in lines)
    if canonical:
        assert fast is not None
    if fast is not None:
        slow = access_records(ACCESS_LINE.findall(text))
        assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
