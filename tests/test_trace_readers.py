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
