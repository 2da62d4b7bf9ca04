"""Fuzzing config resolution: every examples/*.toml, mutated (leaves replaced by strings,
NaN, infinities, negative, zero and huge numbers, booleans, lists, empty tables; keys
deleted; unknown keys added), resolves to a config or to one SlatframeError, never any
other exception. An accepted config holds finite numbers only and round-trips through
strict JSON; ``slatframe validate`` exits 0 or 2 with one line; and a run of an accepted
config (tiny workload, reference engine) succeeds or raises a SlatframeError, so what
validate accepts does not crash run."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slatframe.cli import main
from slatframe.config import read_toml
from slatframe.errors import SlatframeError
from slatframe.testing import build

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
LIMIT = {"SLATFRAME_MEMORY_LIMIT": "2G"}  # estimates above it are refused, so no run swaps
CAP = 300  # accesses of a fuzzed run


def base_configs() -> dict[str, dict[str, Any]]:
    out = {}
    for path in EXAMPLES:
        raw = read_toml(path)
        raw.pop("sweep", None)  # a sweep file's base config is the file without [sweep]
        workload = raw.get("workload", {})
        if workload.get("source") == "npz" and not (path.parent / workload["path"]).exists():
            workload["path"] = str(small_recording())  # an example whose script records its trace
        out[path.name] = raw
    return out


def small_recording() -> Path:
    """A small npz trace (a process that forks a child, which reads and exits) standing
    in for a trace an example's script records."""
    import tempfile

    import numpy as np

    from slatframe.trace import EXIT, FORK, READ, TRACE_DTYPE, WRITE

    rows = [(0, READ, 0x400000), (0, WRITE, 0x601000), (0, FORK, 1), (1, READ, 0x400000), (1, EXIT, 0),
            (0, WRITE, 0x601008)]
    t = np.zeros(len(rows), dtype=TRACE_DTYPE)
    t["asid"], t["op"], t["vaddr"] = zip(*rows)
    path = Path(tempfile.mkdtemp(prefix="slatframe-fuzz-")) / "recorded.npz"
    np.savez(path, **{name: t[name] for name in t.dtype.names})
    return path


BASES = base_configs()

BAD = st.one_of(
    st.sampled_from(["", "x", "4K", "8K", "2M", "1G", "1T", "512G", "lru", "psc", "zipf", "mix", "shadow",
                     "intel-ept", "amd-npt", "x86-64-la57", "ept", "nan", "-1", "1e400", "0x10", "vm0"]),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 1, 2, 5, -1.5, 0.5, 1e308, 1e-308,
                     True, False, (1 << 63) - 1, 1 << 63, 1 << 64, -(1 << 63), 10 ** 21, 1 << 48, 1 << 40]),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-3, 6), st.sampled_from(["4K", "2M", "x", 2.5])), max_size=3),
    st.just({}),
    st.fixed_dictionaries({"name": st.sampled_from(["lru", "x", ""])}),
)

NAMES = ["lru", "fifo", "random", "tree-plru", "srrip", "psc", "pwc", "nested-tlb", "uniform", "zipf",
         "sequential", "gups", "pointer-chase", "sessions", "native", "shadow", "intel-ept", "amd-npt", "x86-64",
         "x86-64-la57", "ept", "npt", "exclusive", "inclusive", "non-inclusive", "data", "instruction",
         "unified", "guest", "host", "both", "tables", "all", "ksm", "ideal", "zero-pages", "cache-aware",
         "fixed", "intel-server", "amd-server", "reference"]
SIZES = ["4K", "2M", "1G", "64K", "1M", "16M", "512M", "4G", "64", "32K", "1408K"]
GROUPS = [NAMES[:5], NAMES[5:8], NAMES[8:14], NAMES[14:18], NAMES[18:22], NAMES[22:25], NAMES[25:28],
          NAMES[28:31], NAMES[31:33], NAMES[33:36], NAMES[36:38], ["", *NAMES[38:40]], SIZES]
PLAUSIBLE = st.one_of(  # values a validator must look at twice: in range for some key, not for others
    st.integers(0, 70),
    st.sampled_from(["4K", "2M", "1G", "64", "1M", "8M", "64K", 4096, 1 << 21, (1 << 48) - (1 << 20), 1 << 47,
                     1 << 30, 3, 5]),
    st.sampled_from(NAMES),
    st.floats(0, 1),
    st.booleans(),
    st.sampled_from([[2, 3], [4], ["4K", "2M"], ["4K", "2M", "1G"], ["2M"]]),
)


def nudged(old: Any) -> st.SearchStrategy:
    """A new value of the kind of ``old`` (so deeper checks get to see it)."""
    if isinstance(old, bool):
        return st.booleans()
    if isinstance(old, int):
        return st.one_of(st.integers(0, 64), st.sampled_from([1, 2, 3, 7, 12, 4096, 1 << 20, 1 << 30, 1 << 47,
                                                              (1 << 48) - (1 << 20), 2 * old, old // 2]))
    if isinstance(old, float):
        return st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 2.0, 1e-9, 100.0, 1e6]))
    if isinstance(old, str):
        group = next((g for g in GROUPS if old in g), None)
        anything = st.sampled_from(NAMES + SIZES + ["a", "vm0"])
        return st.one_of(st.sampled_from(group), st.sampled_from(group), anything) if group else anything
    if isinstance(old, list):
        return st.sampled_from([[], [2, 3], [5], ["4K"], ["4K", "2M"], ["2M", "1G"], ["4K", "2M", "1G"]])
    return PLAUSIBLE


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside ``node`` (tables and lists included)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append(prefix + (key,))
        out += paths(value, prefix + (key,))
    return out


def parent_of(raw: Any, path: tuple) -> Any:
    for key in path[:-1]:
        raw = raw[key]
    return raw


@st.composite
def mutated(draw, values: st.SearchStrategy | None = st.one_of(BAD, PLAUSIBLE), most: int = 4,
            actions: tuple[str, ...] = ("replace", "replace", "replace", "nudge", "delete", "unknown", "empty"),
            ) -> tuple[str, dict[str, Any], list[str]]:
    """(example name, mutated raw config, the mutations as text); ``values`` None: nudges only."""
    name = draw(st.sampled_from(tuple(BASES)))
    raw = copy.deepcopy(BASES[name])
    done = []
    for _ in range(draw(st.integers(1, most))):
        where = paths(raw)
        path = draw(st.sampled_from(where))
        parent = parent_of(raw, path)
        action = draw(st.sampled_from(actions))
        if action == "nudge" and isinstance(parent[path[-1]], (dict, list)) and not (
                isinstance(parent[path[-1]], list) and all(not isinstance(v, dict) for v in parent[path[-1]])):
            continue  # nudges change leaves (and lists of values) only
        if action == "nudge":
            parent[path[-1]] = copy.deepcopy(draw(nudged(parent[path[-1]])))
        elif action == "replace":
            parent[path[-1]] = copy.deepcopy(draw(values))  # drawn lists are shared
        elif action == "delete":
            del parent[path[-1]]
        elif action == "unknown":
            target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
            if isinstance(target, dict):
                key = draw(st.sampled_from(["wayz", "extra", "name", "size", "levels"]))
                target[key] = copy.deepcopy(draw(values if values is not None else BAD))
        else:
            parent[path[-1]] = {}
        done.append(f"{action} {path}")
    return name, raw, done


def finite_everywhere(node: Any) -> bool:
    if isinstance(node, float):
        return math.isfinite(node)
    if isinstance(node, dict):
        return all(finite_everywhere(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return all(finite_everywhere(v) for v in node)
    return True


def resolve(raw: dict[str, Any], registry) -> Any:
    """The config of ``raw``, or None when it is refused with a SlatframeError; any other
    exception fails the test. An accepted config is checked for finite numbers and a
    strict-JSON round trip."""
    base = EXAMPLES[0].parent
    try:
        config, _ = build(raw, registry, base_dir=base)
    except SlatframeError as exc:
        assert "\n" not in str(exc)
        return None
    plain = config.to_dict()
    assert finite_everywhere(plain), plain
    text = json.dumps(plain, allow_nan=False)
    again, _ = build(json.loads(text), registry, base_dir=base)
    assert again == config
    return config


def check_resolution(case, registry) -> None:
    _, raw, _ = case
    with mock.patch.dict(os.environ, LIMIT):
        resolve(raw, registry)


CI = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@CI
@given(case=mutated())
def test_mutated_examples_resolve_or_refuse(registry, case):
    check_resolution(case, registry)


@pytest.mark.slow
@SLOW
@given(case=mutated())
def test_mutated_examples_resolve_or_refuse_many(registry, case):
    check_resolution(case, registry)


def test_every_example_resolves(registry):
    """The fuzzer starts from valid configs (so its mutations probe one fault at a time)."""
    assert len(BASES) >= 5
    with mock.patch.dict(os.environ, LIMIT):
        for name, raw in BASES.items():
            assert resolve(raw, registry) is not None, name


# -- slatframe validate, through --set overrides on the example files ----------------------


def toml_value(value: Any) -> str:
    """``value`` as a TOML inline value (for --set)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


def key_text(path: tuple) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


@st.composite
def overrides(draw) -> tuple[Path, list[str]]:
    path = draw(st.sampled_from(EXAMPLES))
    raw = read_toml(path)
    raw.pop("sweep", None)
    argv = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(paths(raw)))
        argv += ["--set", f"{key_text(key)}={toml_value(draw(BAD))}"]
    return path, argv


def check_validate(case) -> None:
    path, argv = case
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, LIMIT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(path), *argv])
    assert code in (0, 2), (code, err.getvalue())
    if code == 2:
        assert err.getvalue().startswith("slatframe: error: ") and "Traceback" not in err.getvalue()
        assert err.getvalue().count("\n") >= 1
    else:
        assert "valid" in out.getvalue()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=overrides())
def test_validate_exits_0_or_2(case):
    check_validate(case)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=overrides())
def test_validate_exits_0_or_2_many(case):
    check_validate(case)


# -- validate accepts => run does not crash ---------------------------------------------------


def capped(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every workload (mix parts too) cut to CAP accesses (a forkwait to 3 forks
    of at most 64 pages each) and no warmup."""
    raw = copy.deepcopy(raw)

    def cap(table: Any) -> None:
        if not isinstance(table, dict):
            return
        if isinstance(table.get("accesses"), int) and not isinstance(table.get("accesses"), bool):
            table["accesses"] = min(table["accesses"], CAP)
        elif table.get("source") in ("synthetic", "sessions") and "accesses" not in table:
            table["accesses"] = CAP
        if table.get("source") == "forkwait":  # its length is forks x pages, not accesses: cap both
            table.setdefault("forks", 3)
            for key, most in (("forks", 3), ("private_pages", 64), ("shared_pages", 64), ("child_writes", 64),
                              ("child_reads", 64), ("parent_writes", 64)):
                if isinstance(table.get(key), int) and not isinstance(table.get(key), bool):
                    table[key] = min(table[key], most)
        for part in table.get("parts", []) if isinstance(table.get("parts"), list) else []:
            if isinstance(part, dict):
                cap(part.get("workload"))

    cap(raw.get("workload"))
    if isinstance(raw.get("experiment"), dict):
        raw["experiment"].pop("warmup", None)
        raw["experiment"]["engine"] = "reference"
    if isinstance(raw.get("workload"), dict) and raw["workload"].get("source") == "sessions":
        raw["workload"].setdefault("switch_every", 50)
    return raw


def check_run(case, registry) -> None:
    from slatframe.engine import run_experiment

    _, raw, _ = case
    with mock.patch.dict(os.environ, LIMIT):
        config = resolve(capped(raw), registry)
        if config is None:
            return
        try:
            result = run_experiment(config, registry, engine="reference")
        except SlatframeError as exc:
            assert "\n" not in str(exc)
            return
    json.dumps(result.metrics, allow_nan=False)  # a result holds finite numbers only


RUNNABLE = mutated(values=None, most=3, actions=("nudge",) * 8 + ("delete",))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=RUNNABLE)
def test_accepted_configs_run_or_refuse(registry, case):
    """(Fifteen examples by default; the slow test below runs 400.)"""
    check_run(case, registry)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=RUNNABLE)
def test_accepted_configs_run_or_refuse_many(registry, case):
    check_run(case, registry)
