"""Fuzzing the command line's inputs: experiment names, --out paths and --set overrides
through ``slatframe.cli.main``. Whatever the input, the command exits 0 or 2 (1 for a
sweep with failed points) with at most one error line, never an exception, and writes
nothing outside the folder it was given."""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiny_files import call, write_config

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAME_RULE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}")  # what docs/configuration promise
PIN = ["--set", "workload.accesses=20", "--set", "experiment.warmup=0"]  # every run stays tiny


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fuzz")
    return {"cfg": write_config(base),
            "sweep": write_config(base, "s.toml", sweep='[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')}




def assert_clean_failure(code: int, err: str, allowed: tuple[int, ...] = (0, 2)) -> None:
    assert code in allowed, (code, err)
    assert "Traceback" not in err
    if code == 2 and not err.startswith("usage:"):  # argparse prints usage and one error line
        assert err.count("\n") == 1 and err.startswith("slatframe: error: "), err


@contextlib.contextmanager
def sandbox():
    """A fresh folder ``box/work`` as the working directory; yields (box, work)."""
    with tempfile.TemporaryDirectory() as box:
        work = Path(box) / "work"
        work.mkdir()
        (work / "afile").write_text("keep\n")
        (work / "adir").mkdir()
        old = os.getcwd()
        os.chdir(work)
        try:
            yield Path(box), work
        finally:
            os.chdir(old)


names = st.one_of(st.text(max_size=300), st.from_regex(r"[A-Za-z0-9._+-]{0,210}", fullmatch=True),
                  st.sampled_from(["..", "../x", "a/b", "", ".", "-x", "a\0b", "x" * 200, "x" * 201]))


def check_name(files: dict[str, Path], name: str) -> None:
    with sandbox() as (box, work):
        code, _, err = call(["run", str(files["cfg"]), "--engine", "reference", "--quiet",
                             "--set", f"experiment.name={json.dumps(name)}", *PIN])
        assert_clean_failure(code, err)
        assert (code == 0) == bool(NAME_RULE.fullmatch(name)), err
        if code == 0:
            written = list((work / "results").iterdir())
            assert len(written) == 1 and written[0].suffix == ".json"
            assert json.loads(written[0].read_text())["metrics"]["accesses"] == 20
        else:
            assert "experiment.name" in err and not (work / "results").exists()
        assert [p.name for p in box.iterdir()] == ["work"]


@FAST
@given(name=names)
def test_experiment_names(files, name):
    check_name(files, name)


@pytest.mark.slow
@SLOW
@given(name=names)
def test_experiment_names_slow(files, name):
    check_name(files, name)


parts = st.lists(st.one_of(st.text(alphabet=st.characters(blacklist_characters="/"), min_size=1, max_size=20),
                           st.sampled_from([".", "afile", "adir", "x" * 300, "a\0b", " ", "new", "r.json"])),
                 min_size=1, max_size=4)


def check_out(files: dict[str, Path], segments: list[str]) -> None:
    with sandbox() as (box, work):
        out = "/".join(segments)
        code, _, err = call(["run", str(files["cfg"]), "--engine", "reference", "--quiet", "--out", out, *PIN])
        assert_clean_failure(code, err)
        if code == 0:
            assert json.loads((work / out).read_text())["metrics"]["accesses"] == 20
        else:
            assert "--out" in err
        if os.path.normpath(out) != "afile":  # an existing file as --out is replaced, as it should be
            assert (work / "afile").read_text() == "keep\n"
        assert [p.name for p in box.iterdir()] == ["work"]


@FAST
@given(segments=parts)
def test_out_paths(files, segments):
    check_out(files, segments)


@pytest.mark.slow
@SLOW
@given(segments=parts)
def test_out_paths_slow(files, segments):
    check_out(files, segments)


KNOWN = ["experiment.name", "experiment.seed", "experiment.engine", "experiment.plugins", "experiment.chunk_size",
         "experiment.observers", "machine.slat", "machine.host_memory", "machine.guest_format",
         "tlb.levels[0].sets", "tlb.levels[0].ways", "tlb.levels[0].policy", "tlb.levels[0].policy.bits",
         "tlb.levels[1].name", "tlb.levels", "vms[0].memory", "vms[0].guest_page_size", "vms[1].name", "vms",
         "workload.source", "workload.distribution", "workload.footprint", "workload", "cost.model",
         "cost.preset", "cost", "walk_caches[0].type", "dedup.strategy", "sweep.mode", "sweep.axes"]
segment = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}(\[[0-9]\])?", fullmatch=True)
keys = st.one_of(st.sampled_from(KNOWN), st.lists(segment, min_size=1, max_size=4).map(".".join),
                 st.text(max_size=20))
values = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70).map(str), st.booleans().map(lambda b: str(b).lower()),
    st.floats(allow_nan=True).map(repr), st.text(max_size=20), st.text(max_size=20).map(json.dumps),
    st.sampled_from(['"4K"', '"2M"', '"1G"', '"lru"', '{ name = "srrip", bits = 9 }', "[1, 2]", "[]", "{}",
                     '"shadow"', '"intel-ept"', '"nope"', "inf", "0", "-1", '"1T"', "[[1]]", "{ = }"]))
overrides = st.lists(st.tuples(keys, values).map("=".join) | st.text(max_size=30), min_size=1, max_size=3)


def check_validate(files: dict[str, Path], texts: list[str]) -> None:
    argv = ["validate", str(files["cfg"])]
    for text in texts:
        argv += ["--set", text]
    code, _, err = call(argv)
    assert_clean_failure(code, err)


@settings(max_examples=200, deadline=None)
@given(texts=overrides)
def test_set_overrides_validate(files, texts):
    check_validate(files, texts)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None)
@given(texts=overrides)
def test_set_overrides_validate_slow(files, texts):
    check_validate(files, texts)


SAFE = ["machine.slat", "tlb.levels[0].policy", "tlb.levels[0].ways", "tlb.levels[0].sets", "experiment.seed",
        "vms[0].guest_page_size", "workload.distribution", "workload.footprint", "cost.model", "experiment.name"]
small_values = st.one_of(st.integers(min_value=-3, max_value=64).map(str), st.text(max_size=8),
                         st.sampled_from(['"4K"', '"2M"', '"lru"', '"fifo"', '"shadow"', '"amd-npt"', '"zipf"',
                                          '"64K"', "[1]", '{ name = "srrip", bits = 3 }']))
run_overrides = st.lists(st.tuples(st.sampled_from(SAFE), small_values).map("=".join), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(texts=run_overrides)
def test_set_overrides_run(files, texts):
    """Runs with small values only (a huge TLB would allocate gigabytes: see validate above)."""
    with sandbox() as (box, work):
        argv = ["run", str(files["cfg"]), "--engine", "reference", "--quiet", "--out", "r.json"]
        for text in texts:
            argv += ["--set", text]
        code, _, err = call(argv + PIN)
        assert_clean_failure(code, err)
        assert (code == 0) == (work / "r.json").exists()


sweep_sets = st.lists(st.one_of(
    st.tuples(st.sampled_from(["sweep.mode", "sweep.axes", "sweep.labels", "sweep.extra", "sweep",
                               'sweep.axes."tlb.levels[0].ways"', 'sweep.labels."tlb.levels[0].sets"',
                               "sweep.axes.machine.slat"]), values).map("=".join),
    st.tuples(st.sampled_from(SAFE), small_values).map("=".join)), min_size=0, max_size=3)


@settings(max_examples=30, deadline=None)
@given(texts=sweep_sets, jobs=st.sampled_from(["1", "0", "-1", "x"]))
def test_sweep_options(files, texts, jobs):
    with sandbox() as (box, work):
        argv = ["sweep", str(files["sweep"]), "--out", "out", "--quiet", "--jobs", jobs]
        for text in texts:
            argv += ["--set", text]
        code, _, err = call(argv + ["--set", "workload.accesses=20"])
        assert_clean_failure(code, err, allowed=(0, 1, 2))
        if code in (0, 1):
            assert (work / "out" / "results.csv").exists()
        assert [p.name for p in box.iterdir()] == ["work"]


@FAST
@given(st.binary(max_size=64))
def test_any_bytes_as_a_config_file_are_refused_in_one_sentence(data):
    """Bytes that are not UTF-8 text, or not TOML, or not a config: one sentence naming
    the file, exit 2 (a non-UTF-8 file used to end in a UnicodeDecodeError traceback)."""
    with sandbox() as (_, work):
        path = work / "c.toml"
        path.write_bytes(data)
        code, _, err = call(["validate", str(path)])
        assert_clean_failure(code, err, allowed=(2,))
        assert str(path) in err


def test_a_folder_or_non_utf8_file_as_a_config_is_one_sentence():
    with sandbox() as (_, work):
        data = b'[experiment]\nname = "\xff"\n'
        (work / "bad.toml").write_bytes(data)
        for name, says in (("adir", "it is a folder, not a config file."),
                           ("bad.toml", f"not valid TOML: byte {data.index(0xff)} is not UTF-8 text (a TOML file "
                                        "is UTF-8).")):
            code, _, err = call(["validate", str(work / name)])
            assert code == 2 and err == f"slatframe: error: {work / name}: {says}\n"
