"""Trace readers (lackey, ChampSim), the trace tools, and reuse distances."""
from __future__ import annotations

import gzip
import io
import re
import json
import lzma
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from slatframe.analysis import lru_hit_rate, reuse_distances
from slatframe.cli import main
from slatframe.errors import TraceError
from slatframe.trace import IFETCH, READ, TRACE_DTYPE, WRITE
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


# -- the compiled parsers (slatframe.lackey.fill_records, the ChampSim expansion) ------------------


def _outcome(read, path, chunk, **kw):
    """(chunk lengths, records as (vm, asid, op, vaddr)) or the error text."""
    try:
        chunks = list(read(path, chunk, **kw))
    except TraceError as exc:
        return str(exc)
    for c in chunks:
        assert c.dtype == TRACE_DTYPE and c.ndim == 1 and c.flags.c_contiguous
    t = np.concatenate(chunks)
    return [len(c) for c in chunks], list(zip(t["vm"].tolist(), t["asid"].tolist(), t["op"].tolist(),
                                              t["vaddr"].tolist()))


def _declines(buf, pos, end, out, filled, limit, vm, asid):
    """A compiled parser that declines every line: the regular expressions read everything."""
    from slatframe.lackey import DECLINED

    return pos, filled, 0, DECLINED


_VALID_LACKEY_LINE = st.one_of(
    st.tuples(st.sampled_from([b"I  ", b" L ", b" S ", b" M "]),
              st.one_of(st.integers(0, 2**48), st.integers(0, 2**64 - 1)).map(lambda a: b"%x" % a),
              st.integers(0, 99).map(lambda s: b"%d" % s)).map(b"".join),
    # what only the regular expressions read: odd blanks, upper-case hex, 17+ digits, a CR
    st.sampled_from([b"I 0401ab70,3", b"  L 1fff000778,8", b" S 00000000000000000001234,8", b" M 1FFF0A,4",
                     b"I  0401ab70,3\r", b" M 0,0\r", b"I  " + b"0" * 30 + b"1,1", b"", b"   ", b"\t", b"\x0b",
                     b"==1== Lackey", b"==1== " + b"x" * 200, b"==\xff\xfe"]),
)
_BAD_LACKEY_LINE = st.one_of(
    st.sampled_from([b" L 12,", b" X 12,4", b"I  12g4,3", b" L ,4", b"I  0401ab70,3x", b" L -10,8",
                     b"I  10000000000000000,3", b"I  0401ab70,3,9"]),
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
)
_ANY_LACKEY_LINE = st.one_of(_VALID_LACKEY_LINE, _VALID_LACKEY_LINE, _VALID_LACKEY_LINE, _BAD_LACKEY_LINE)


@settings(max_examples=150, deadline=None)
@given(lines=st.one_of(st.lists(_VALID_LACKEY_LINE, min_size=1, max_size=60),
                       st.lists(_ANY_LACKEY_LINE, min_size=1, max_size=60)), end=st.sampled_from([b"", b"\n"]),
       block=st.sampled_from([1, 5, 17, 64, 1 << 20]), careful=st.sampled_from([1, 30, 1 << 20]),
       chunk=st.sampled_from([1, 2, 3, 7, 65536]), long_line=st.integers(-1, 200))
def test_compiled_and_careful_lackey_paths_agree(tmp_path_factory, lines, end, block, careful, chunk, long_line):
    """The reader gives the same chunks (exactly ``chunk`` records each but the last, every
    field written) or the same error (file, line number, text) with its compiled parser
    as with the regular expressions alone, however the file is cut into blocks."""
    from slatframe_plugins import trace_readers

    if 0 <= long_line < len(lines):  # a line just over the limit
        lines[long_line] = b"==" + b"y" * (trace_readers.LINE_LIMIT - 1)
    path = tmp_path_factory.mktemp("agree") / "t.lackey"
    path.write_bytes(b"\n".join(lines) + end)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trace_readers, "_BLOCK", block)
        mp.setattr(trace_readers, "_CAREFUL", careful)
        fast = _outcome(read_lackey, path, chunk, vm=3, asid=65535)
        mp.setattr(trace_readers, "fill_records", _declines)
        slow = _outcome(read_lackey, path, chunk, vm=3, asid=65535)
    assert fast == slow
    if not isinstance(fast, str):
        sizes, recs = fast
        assert all(n == chunk for n in sizes[:-1]) and 0 < sizes[-1] <= chunk
        assert {(vm, asid) for vm, asid, _, _ in recs} == {(3, 65535)}


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.one_of(_ANY_LACKEY_LINE, st.binary(max_size=20)), max_size=30).map(b"\n".join),
       limit=st.integers(0, 40))
def test_compiled_lackey_parser_stays_in_bounds(data, limit):
    """The compiled parser run as Python (every index checked by numpy) gives what the
    compiled code gives, on any bytes that end with a newline."""
    from slatframe.lackey import fill_records

    buf = np.frombuffer(data + b"\n", dtype=np.uint8)
    got = []
    for parse in (fill_records, fill_records.py_func):
        out = np.zeros(limit + 1, dtype=TRACE_DTYPE)
        pos, filled, lines, status = parse(buf, 0, len(buf), out, 0, limit, 1, 2)
        got.append((int(pos), int(filled), int(lines), int(status), out.tobytes()))
        assert filled <= limit + 1
    assert got[0] == got[1]


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.lists(st.sampled_from([0, 0, 1, 2**64 - 1, 0x7FFF_0000]), min_size=8, max_size=8),
                      min_size=1, max_size=20), done=st.integers(0, 5), limit=st.integers(0, 30))
def test_compiled_champsim_expansion_stays_in_bounds(words, done, limit):
    from slatframe_plugins.trace_readers import _champsim_fill

    array = np.array(words, dtype="<u8")
    array.flags.writeable = False
    got = []
    for expand in (_champsim_fill, _champsim_fill.py_func):
        out = np.zeros(limit + 6, dtype=TRACE_DTYPE)
        d, filled = expand(array, min(done, len(words)), out, 0, limit, 1, 2)
        got.append((int(d), int(filled), out.tobytes()))
    assert got[0] == got[1]


def _lackey_lines(n: int, first: int = 0) -> bytes:
    """``n`` lines as lackey prints them, the addresses counting from ``first``."""
    kinds = np.array([b"I  ", b" L ", b" S ", b" M "])[np.arange(first, first + n) % 4]
    return b"".join(k + b"%08x,4\n" % (0x10000 + a) for k, a in zip(kinds.tolist(), range(first, first + n)))


@pytest.mark.parametrize("where", ["first", "middle", "across", "third block"])
def test_line_error_in_a_big_block_names_the_line(tmp_path, where):
    """A bad line among 250,000 (1 MiB blocks of about 75,000 lines: the bad line first,
    in the middle of the first block, across its end, in the third), after a stretch of
    valid lines that only the regular expressions read (CRLF ends), is named by its
    number; without it, every record is read."""
    from slatframe_plugins.trace_readers import _BLOCK

    good = 250_000
    crlf = _lackey_lines(300, 1000).replace(b"\n", b"\r\n")
    text = _lackey_lines(1000) + crlf + _lackey_lines(good - 1300, 1300)
    path = tmp_path / "t.lackey"
    path.write_bytes(text)
    recs = records(read_lackey(path, 65536))
    assert len(recs) == good + good // 4
    assert recs[:3] == [(IFETCH, 0x10000), (READ, 0x10001), (WRITE, 0x10002)]
    assert recs[-2:] == [(READ, 0x10000 + good - 1), (WRITE, 0x10000 + good - 1)]
    across = text.count(b"\n", 0, _BLOCK) + 1  # the line that holds the block's last byte
    assert text.rfind(b"\n", 0, _BLOCK) < _BLOCK - 1
    bad_line = {"first": 1, "middle": 40_000, "across": across, "third block": 200_000}[where]
    rows = text.split(b"\n")
    rows[bad_line - 1] = rows[bad_line - 1].replace(b",4", b",x")
    path.write_bytes(b"\n".join(rows))
    with pytest.raises(TraceError) as info:
        list(read_lackey(path, 65536))
    assert f"line {bad_line} is {rows[bad_line - 1].decode()[:60]!r}" in str(info.value)


@pytest.mark.parametrize("chunk", range(1, 10))
def test_records_beyond_a_full_chunk_start_the_next(tmp_path, chunk):
    """An M line (two records) or an instruction (up to seven) that crosses a chunk's end
    continues in the next chunk: every chunk but the last holds exactly ``chunk`` records."""
    lines = [b" M %x,4" % (0x1000 + i) if i % 3 else b"I  %x,4" % (0x1000 + i) for i in range(40)]
    path = tmp_path / "t.lackey"
    path.write_bytes(b"\n".join(lines))
    expected = [r for i in range(40) for r in ([(READ, 0x1000 + i), (WRITE, 0x1000 + i)] if i % 3
                                                 else [(IFETCH, 0x1000 + i)])]
    sizes, recs = _outcome(read_lackey, path, chunk, vm=5, asid=6)
    assert recs == [(5, 6, op, va) for op, va in expected] and sizes[:-1] == [chunk] * (len(sizes) - 1)
    instructions = [(0x100 + i, [0x200 + i + k for k in range(i % 5)], [0x300 + i + k for k in range(i % 3)])
                    for i in range(30)]
    path = tmp_path / "t.champsim"
    path.write_bytes(b"".join(champsim_record(*i) for i in instructions))
    expected = [r for ip, src, dst in instructions
                for r in [(IFETCH, ip)] + [(READ, a) for a in src] + [(WRITE, a) for a in dst]]
    sizes, recs = _outcome(read_champsim, path, chunk, vm=5, asid=6)
    assert recs == [(5, 6, op, va) for op, va in expected] and sizes[:-1] == [chunk] * (len(sizes) - 1)


def test_compiled_parsers_are_typed_once(tmp_path):
    """Chunks of every size, a short last one, blocks cut anywhere: each compiled parser
    has one signature, so it never compiles again in the middle of a run."""
    from slatframe.lackey import fill_records, parse_block
    from slatframe_plugins.trace_readers import _champsim_fill

    lackey = tmp_path / "t.lackey"
    lackey.write_bytes(_lackey_lines(5000) + b" L 12,8")
    champsim = tmp_path / "t.champsim"
    champsim.write_bytes(b"".join(champsim_record(i + 1, [i] * (i % 5), [i] * (i % 3)) for i in range(3000)))
    for chunk in (1, 2, 5, 4096, 65536):
        list(read_lackey(lackey, chunk, vm=1, asid=2))
        list(read_champsim(champsim, chunk))
    for text in (b"", b"I  12,3", b"==1==\n M 12,8"):
        parse_block(text)
    assert len(fill_records.signatures) == 1 and len(_champsim_fill.signatures) == 1


def _champsim_file(where):
    path = where / "one.champsim"
    path.write_bytes(champsim_record(1))
    return path


def test_readers_stream_in_flat_memory(tmp_path):
    """Peak traced memory (numpy arrays and bytes) of reading a trace does not grow with
    its length: a block of bytes and a chunk or two at a time."""
    import tracemalloc

    def peak(read, path) -> int:
        tracemalloc.start()
        try:
            for _chunk in read(path, 65536):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = tmp_path / "short.lackey", tmp_path / "long.lackey"
    short.write_bytes(_lackey_lines(200) * 500)
    list(read_lackey(short, 65536))  # load or compile the parsers outside the measurement
    list(read_champsim(_champsim_file(tmp_path), 65536))  # 100,000 lines, 1.5 MB
    long.write_bytes(_lackey_lines(200) * 5000)  # 1,000,000 lines, 15 MB
    assert peak(read_lackey, long) < peak(read_lackey, short) + (1 << 20) < 8 << 20
    instr = champsim_record(5, [6, 7], [8]) + champsim_record(9)
    short, long = tmp_path / "short.champsim", tmp_path / "long.champsim"
    short.write_bytes(instr * 50_000)  # 100,000 instructions, 6.4 MB
    long.write_bytes(instr * 250_000)  # 500,000 instructions, 32 MB
    assert peak(read_champsim, long) < peak(read_champsim, short) + (1 << 20) < 8 << 20


# -- issue 37: damaged .npy headers, what may follow a compressed stream or a zip, validate ---------


def _npy(text: str, data: bytes, length: int | None = None) -> bytes:
    """A version 1.0 .npy member of header ``text``, padded with blanks (and a newline) to
    ``length`` header bytes, or as numpy pads it."""
    header = text.encode("latin1")
    length = length or len(header) + 1 + (-(10 + len(header) + 1) % 64)
    header = header.ljust(length - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def _npz_members(vaddr: bytes | None = None, records: int = 10) -> dict[str, bytes]:
    """The members of a ``records``-record npz trace (numpy.save's bytes), ``vaddr.npy`` replaced by ``vaddr``."""
    out = {}
    for name, array in (("vaddr", np.arange(records, dtype=np.uint64) << np.uint64(12)),
                        ("op", np.zeros(records, np.uint8))):
        buf = io.BytesIO()
        np.save(buf, array)
        out[f"{name}.npy"] = buf.getvalue()
    if vaddr is not None:
        out["vaddr.npy"] = vaddr
    return out


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


_DATA = (np.arange(10, dtype=np.uint64) << np.uint64(12)).tobytes()
_UNPARSED = ("its header does not parse (", ": an unclosed bracket or string)")  # around tokenize.TokenError's words
_TOO_DEEP = ("its header is nested too deeply to parse", "its header does not parse")  # as Python's parser decides
_DAMAGED_HEADERS = {  # header text: what the sentence says of it (all of _UNPARSED, else one of)
    "{'descr': '<u8', 'fortran_order': False, 'shape': (1, }": _UNPARSED,  # issue 37's reproducer
    "{'descr': '<u8', 'fortran_order': False, 'shape': (" + "'" * 3 + "10, }": _UNPARSED,  # an unclosed string
    "{'descr': '<u8', 'fortran_order': False, 'shape': (10,)} \\": ("its header does not parse;",),
    "{'descr': '<u8', 'fortran_order': False, 'shape': (2**4,)}": (
        "its header holds an expression, not only literals",),
    "{'descr': '<u8', 'fortran_order': False, 'shape': (" + "-" * 3000 + "10,)}": _TOO_DEEP,  # RecursionError
    "{'descr': '<u8', 'fortran_order': False, 'shape': (" + "-" * 9000 + "10,)}": _TOO_DEEP,  # MemoryError
    "{'descr': '<u8', 'fortran_order': False, 'shape': (True,)}": ("its shape (True,) is not a tuple of integers",),
}


@pytest.mark.parametrize("header", list(_DAMAGED_HEADERS), ids=["paren", "string", "backslash", "expression",
                                                                 "recursion", "memory", "bool"])
@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflate"])
def test_damaged_npy_header_is_one_sentence(tmp_path, header, method):
    """A damaged .npy header (issue 37: an unclosed parenthesis, padded to the header's
    length, raised tokenize.TokenError from numpy's fallback parser) is one sentence
    naming the file and the array, whatever numpy's parser raises."""
    path = tmp_path / "bad_hdr.npz"
    path.write_bytes(_zip(_npz_members(_npy(header, _DATA, 118 if len(header) < 110 else None)), method))
    message = refused(path)
    assert message.startswith(f"{path}: array 'vaddr' is not a valid .npy member: ") and len(message) < 400
    expected = _DAMAGED_HEADERS[header]
    assert (all if expected is _UNPARSED else any)(part in message for part in expected), message
    assert message.endswith("a .npy header is a Python dict literal with 'descr', 'fortran_order' and 'shape' "
                            "(as numpy.save writes it).")


def test_negative_npy_length_is_refused(tmp_path):
    """numpy parses shape (-10,); the reader used to read such arrays as empty, silently."""
    path = tmp_path / "t.npz"
    members = {name: _npy(f"{{'descr': '{dt}', 'fortran_order': False, 'shape': (-10,), }}", b"")
               for name, dt in (("vaddr.npy", "<u8"), ("op.npy", "|u1"))}
    path.write_bytes(_zip(members))
    assert refused(path) == f"{path}: array 'vaddr' has a negative length (-10) in its .npy header."


def _exit_2_with(argv: list[str], capsys) -> str:
    """The one line a command that exits 2 prints."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    return captured.err


@pytest.mark.parametrize("engine", ["reference", "compiled"])
def test_damaged_npy_header_in_every_command(tmp_path, capsys, monkeypatch, engine):
    """Issue 37's file in trace info, trace convert, validate and run (both tiers): exit 2
    and the same sentence, no traceback, no output file."""
    from tiny_files import write_config

    monkeypatch.chdir(tmp_path)
    trace = tmp_path / "bad_hdr.npz"
    trace.write_bytes(_zip(_npz_members(_npy(list(_DAMAGED_HEADERS)[0], _DATA, 118))))
    sentence = f"slatframe: error: {refused(trace)}\n"
    assert "array 'vaddr' is not a valid .npy member: its header does not parse" in sentence
    config = write_config(tmp_path, workload={"source": "npz", "path": str(trace)})
    out = tmp_path / "out"
    for argv in (["trace", "info", str(trace)], ["trace", "convert", str(trace), f"{out}.npz"],
                 ["validate", str(config)], ["run", str(config), "--engine", engine, "--out", f"{out}.json"]):
        assert _exit_2_with(argv, capsys) == sentence, argv
    assert not list(tmp_path.glob("out*")) and not (tmp_path / "results").exists()


_XZ_STREAM = lzma.compress(LACKEY)
_GZ_MEMBER = gzip.compress(LACKEY)


def _tool_accepts(tool: str, path) -> bool | None:
    """Whether ``xz -t`` or ``gzip -t`` calls the file OK (exit 0); None without the tool."""
    if shutil.which(tool) is None:
        return None
    return subprocess.run([tool, "-t", str(path)], capture_output=True).returncode == 0


# What may follow an xz stream (.xz format, section 2.2): more streams and stream padding,
# zero bytes in multiples of 4; anything else is refused (xz -t: "corrupt" or "unexpected end").
_XZ_TAILS = {
    "nothing": (b"", 1), "garbage": (b"garbage!", 0), "8 zero bytes": (b"\0" * 8, 1), "4 zero bytes": (b"\0" * 4, 1),
    "3 zero bytes": (b"\0" * 3, 0), "5 zero bytes": (b"\0" * 5, 0), "a stream": (_XZ_STREAM, 2),
    "padding, a stream": (b"\0" * 4 + _XZ_STREAM + b"\0" * 12, 2), "3 zeros, a stream": (b"\0" * 3 + _XZ_STREAM, 0),
    "part of a header": (_XZ_STREAM[:3], 0), "zeros, garbage": (b"\0" * 8 + b"x", 0),
    "an empty stream": (lzma.compress(b""), 1),
}
_GZ_TAILS = {
    "nothing": (b"", 1), "garbage": (b"garbage!", 0), "8 zero bytes": (b"\0" * 8, 1), "3 zero bytes": (b"\0" * 3, 1),
    "a member": (_GZ_MEMBER, 2), "zeros, a member": (b"\0" * 8 + _GZ_MEMBER, 0), "zeros, garbage": (b"\0\0garbage", 0),
    "part of a header": (_GZ_MEMBER[:1], 0),
}


@pytest.mark.parametrize("kind,first,tail,copies", [
    ("xz", _XZ_STREAM, *value) for value in _XZ_TAILS.values()] + [
    ("gzip", _GZ_MEMBER, *value) for value in _GZ_TAILS.values()],
    ids=[f"xz: {k}" for k in _XZ_TAILS] + [f"gzip: {k}" for k in _GZ_TAILS])
def test_what_may_follow_a_compressed_stream(tmp_path, kind, first, tail, copies):
    """Concatenated streams, and zero bytes where the format allows them, are read; any
    other bytes after a stream are one sentence naming the file, the byte offset and the
    count. Each case is what ``xz -t`` or ``gzip -t`` says of it (exit 0 or not)."""
    path = tmp_path / f"t.lackey.{kind}"
    path.write_bytes(first + tail)
    assert _tool_accepts(kind, path) in (None, bool(copies))
    if copies:
        assert records(read_lackey(path, 4)) == LACKEY_RECORDS * copies
        return
    allowed = ("stream padding (zero bytes, a multiple of 4) nor another xz stream" if kind == "xz" else
               "another gzip member nor zero bytes up to the end of the file")
    for fmt in (None, "lackey"):
        assert refused(path, fmt) == (f"{path}: {len(tail)} byte(s) from byte offset {len(first)} follow the end "
                                      f"of the {'xz stream' if kind == 'xz' else 'gzip member'} but are neither "
                                      f"{allowed}.")


def test_champsim_xz_with_garbage_after_it(tmp_path):
    path = tmp_path / "t.champsim.xz"
    path.write_bytes(lzma.compress(champsim_record(1) * 3) + b"garbage!")
    assert "8 byte(s) from byte offset" in refused(path, "champsim")


_TAIL_PART = st.one_of(st.integers(1, 13).map(lambda k: b"\0" * k), st.just("stream"),
                       st.sampled_from([b"garbage!", b"\x01", b"\xfd7z"]), st.binary(min_size=1, max_size=6))


@pytest.mark.parametrize("kind", ["xz", "gzip"])
@settings(max_examples=40, deadline=None)
@given(parts=st.lists(_TAIL_PART, max_size=3))
def test_compressed_tails_agree_with_the_command_line_tools(tmp_path_factory, kind, parts):
    """Random tails after a stream: the reader reads the file exactly when ``xz -t`` or
    ``gzip -t`` calls it OK."""
    if shutil.which(kind) is None:
        pytest.skip(f"{kind} is not installed")
    first = _XZ_STREAM if kind == "xz" else _GZ_MEMBER
    path = tmp_path_factory.mktemp("tail") / f"t.{kind}"
    path.write_bytes(first + b"".join(first if p == "stream" else p for p in parts))
    try:
        got = records(read_lackey(path, 64))
    except TraceError:
        got = None
    assert (got is not None) == _tool_accepts(kind, path), parts
    assert got is None or got == LACKEY_RECORDS * (1 + parts.count("stream"))


def test_a_large_compressed_file_reads_whole(tmp_path):
    """Streams longer than a read (1 MiB out, 128 KiB in), concatenated and padded."""
    text, short = _lackey_lines(200_000), _lackey_lines(100)
    for compress, pad in ((gzip.compress, b""), (lzma.compress, b"\0" * 4)):
        path = tmp_path / "t"
        path.write_bytes(compress(text) + pad + compress(short) + pad)
        assert records(read_lackey(path, 65536)) == records(read_lackey_text(text + short, tmp_path))


def read_lackey_text(text: bytes, folder) -> list:
    """The chunks of ``text`` read as a plain lackey file."""
    path = folder / "plain.lackey"
    path.write_bytes(text)
    return list(read_lackey(path, 65536))


def _streamed_zip(members: dict[str, bytes], zip64: bool) -> bytes:
    """A zip written to a stream that cannot seek: each member with a data descriptor."""
    class Stream(io.RawIOBase):
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.data += b
            return len(b)

    out = Stream()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            with zf.open(name, "w", force_zip64=zip64) as fh:
                fh.write(data)
    return bytes(out.data)


def _gapped_zip(members: dict[str, bytes], before: int, filler: bytes = b"GAPGAP", comment: bytes = b"") -> bytes:
    """A zip with ``filler`` before member ``before`` (or before the central directory), its
    central directory stepping over it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i, (name, data) in enumerate([*members.items(), (None, b"")]):
            if i == before:
                out.seek(0, io.SEEK_END)
                out.write(filler)
                zf.start_dir = out.tell()
            if name is not None:
                zf.writestr(name, data)
        zf.comment = comment
    return out.getvalue()


def test_zips_laid_out_as_the_format_says_are_read(tmp_path):
    path = tmp_path / "t.npz"
    members = _npz_members()
    for raw in (_zip(members), _zip(members, zipfile.ZIP_DEFLATED), _streamed_zip(members, False),
                _streamed_zip(members, True), _gapped_zip(members, -1, b"", b"a comment")):
        path.write_bytes(raw)
        assert records(read_npz(path, 4)) == [(0, i << 12) for i in range(10)]


def test_what_may_follow_a_zip(tmp_path):
    """Nothing may follow the end of central directory record and its comment (numpy.load
    ignored such bytes); no bytes may lie between a zip's parts."""
    path = tmp_path / "t.npz"
    members = _npz_members()
    whole = _zip(members)
    second = zipfile.ZipFile(io.BytesIO(whole)).infolist()[1].header_offset
    directory = zipfile.ZipFile(io.BytesIO(whole)).start_dir
    commented = _gapped_zip(members, -1, b"", b"hello")
    cases = {
        whole + b"garbage!": f"8 byte(s) from byte offset {len(whole)} follow the zip's end of central directory "
                             "record; nothing may follow them in a zip.",
        whole + b"\0" * 8: f"8 byte(s) from byte offset {len(whole)} follow the zip's end of central directory "
                           "record; nothing may follow them in a zip.",
        commented + b"xy": f"2 byte(s) from byte offset {len(commented)} follow the zip's end of central directory "
                           "record and its 5-byte comment; nothing may follow them in a zip.",
        commented[:-2]: f"the zip's end of central directory record at byte offset {len(commented) - 27} gives a "
                        "5-byte comment, but the file ends 2 byte(s) before its end.",
        _gapped_zip(members, 1): f"6 byte(s) from byte offset {second} lie between member 'vaddr.npy' and member "
                                 "'op.npy'; a zip's members and central directory follow each other without gaps.",
        _gapped_zip(members, 2): f"6 byte(s) from byte offset {directory} lie between member 'op.npy' and the central "
                                 "directory; a zip's members and central directory follow each other without gaps.",
        whole[:second] + b"junk" + whole[second:]: (
            "the zip's central directory places its first member at byte offset 4, not 0: bytes were inserted or "
            "removed before the central directory (a zip's members and central directory follow each other without "
            "gaps)."),
    }
    for i, (raw, sentence) in enumerate(cases.items()):
        path.write_bytes(raw)
        assert refused(path) == f"{path}: {sentence}"
        if i < 6:  # numpy.load reads all but the last (zipfile then looks for the members in the wrong place)
            with np.load(path) as z:
                assert len(z["vaddr"]) == 10
    with pytest.warns(UserWarning):  # zipfile warns of the duplicate name
        path.write_bytes(_duplicate_zip(members))
    assert refused(path) == f"{path}: array 'op' is in the zip twice; an npz holds each array once."


def _duplicate_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in [*members.items(), ("op.npy", members["op.npy"])]:
            zf.writestr(name, data)
    return out.getvalue()


# -- slatframe validate reads the first records ------------------------------------------------------


def _config(tmp_path, **workload):
    from tiny_files import write_config

    return write_config(tmp_path, workload=workload)


def _run_error(config, capsys) -> str:
    return _exit_2_with(["run", str(config), "--engine", "reference", "--out", str(config.with_suffix(".json"))],
                        capsys)


def test_validate_reads_the_first_records(tmp_path, capsys, monkeypatch):
    """validate says the first records were read; it refuses a bad one with the run's
    sentence; a bad record past the first 4,096 is left to the run."""
    monkeypatch.chdir(tmp_path)
    lackey = tmp_path / "t.lackey"
    lackey.write_bytes(LACKEY)
    config = _config(tmp_path, source="lackey", path=str(lackey))
    assert main(["validate", str(config)]) == 0
    first, memory = capsys.readouterr().out.splitlines()
    assert first == (f"{config}: valid (native, 1 TLB level(s), 1 VM(s), workload lackey, its first "
                     "6 record(s) read and checked).")
    assert memory.startswith("memory: about ") and "estimated for the run" in memory
    lackey.write_bytes(LACKEY + b" L 12,8\n X 12,8\n")
    assert _exit_2_with(["validate", str(config)], capsys) == _run_error(config, capsys)
    ops = np.zeros(5000, np.uint8)
    ops[4500] = 7
    np.savez(tmp_path / "t.npz", vaddr=np.arange(5000, dtype=np.uint64), op=ops)
    config = _config(tmp_path, source="npz", path=str(tmp_path / "t.npz"))
    assert main(["validate", str(config)]) == 0 and "its first 4,096 record(s) read" in capsys.readouterr().out
    assert "record 4500 has op 7" in _run_error(config, capsys)
    ops[4500], ops[9] = 0, 7
    np.savez(tmp_path / "t.npz", vaddr=np.arange(5000, dtype=np.uint64), op=ops)
    assert "record 9 has op 7" in _exit_2_with(["validate", str(config)], capsys)
    assert not (tmp_path / "results").exists()


def test_validate_of_a_long_synthetic_workload_runs_nothing(tmp_path, capsys, monkeypatch):
    """A synthetic workload of 10^12 accesses: validate reads 4,096 of them, builds no
    engine (so compiles nothing), runs nothing and writes nothing."""
    import slatframe.engine as engine

    def never(*args, **kwargs):
        raise AssertionError("validate started a run")

    monkeypatch.setattr(engine, "run_machine", never)
    monkeypatch.setattr(engine, "make_engine", never)
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, source="synthetic", accesses=10**12, footprint="64M", distribution="zipf")
    assert main(["validate", str(config)]) == 0
    assert "its first 4,096 record(s) read and checked" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.toml"]


def test_validate_of_a_sweep_reads_each_distinct_workload(tmp_path, capsys, monkeypatch):
    """A sweep whose axes leave the workload alone reads the base config's once; one whose
    axes change it reads each distinct one too and names the points of a bad one."""
    from slatframe import workload

    calls = []
    real = workload.read_first_records
    monkeypatch.setattr(workload, "read_first_records", lambda config, registry: calls.append(1) or real(config,
                                                                                                          registry))
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    good.write_bytes(_zip(_npz_members()))
    bad.write_bytes(_zip(_npz_members(_npy(list(_DAMAGED_HEADERS)[0], _DATA, 118))))
    from tiny_files import write_config

    config = write_config(tmp_path, sweep='[sweep.axes]\n"tlb.levels[0].ways" = [1, 2]\n',
                          workload={"source": "npz", "path": str(good)})
    assert main(["validate", str(config)]) == 0 and len(calls) == 1
    assert capsys.readouterr().out.endswith("read and checked); so are its 2 sweep points.\n")
    config = write_config(tmp_path, sweep=f'[sweep.axes]\n"workload.path" = ["{good}", "{bad}"]\n'
                                          '"tlb.levels[0].ways" = [1, 2]\n',
                          workload={"source": "npz", "path": str(good)})
    calls.clear()
    error = _exit_2_with(["validate", str(config)], capsys)
    assert len(calls) == 3  # the base config, then the two workloads of the four points
    assert error.startswith(f"slatframe: error: {config} (sweep points 3, 4): {bad}: array 'vaddr' is not a valid")


def test_npz_keeps_the_thread_column_and_leaves_it_out_when_all_zero(tmp_path):
    """A trace whose records name threads round-trips them through both npz writers; one
    whose threads are all 0 gets no ``thread`` member (the files of before the field, byte
    for byte the same arrays), and such a file reads with thread 0."""
    from slatframe.trace import make_trace
    from slatframe.tracefile import NpzWriter, write_npz

    trace = make_trace(np.arange(1000, dtype=np.uint64) << np.uint64(12), thread=np.arange(1000) % 7)
    plain = make_trace(np.arange(1000, dtype=np.uint64) << np.uint64(12))
    for name, data in (("threads", trace), ("plain", plain)):
        write_npz(tmp_path / f"{name}.npz", data)
        with NpzWriter(tmp_path / f"{name}-streamed.npz") as writer:
            for start in range(0, len(data), 300):
                writer.append(data[start:start + 300])
        for file in (f"{name}.npz", f"{name}-streamed.npz"):
            members = set(zipfile.ZipFile(tmp_path / file).namelist())
            assert ("thread.npy" in members) == (name == "threads")
            back = np.concatenate(list(read_npz(tmp_path / file, 256)))
            assert back.tobytes() == data.tobytes()
