"""A tier runs a config only when it honours every plugin on the per-access path, and
compiled code follows every edit of a kernel. Each plugin here is an outside plugin
file, written as a researcher would write one."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from slatframe.engine import choose_engine, run_experiment
from slatframe.errors import ConfigError
from slatframe.testing import assert_engines_agree, build, run_trace, tiny_config
from slatframe.trace import make_trace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def zipf_trace(n: int = 3000, pages: int = 400, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.permutation(pages)[rng.zipf(1.3, n) % pages].astype(np.uint64)
    return make_trace(p << np.uint64(12))


def plugin_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def lfu_or_mfu_misses(pages: list[int], sets: int, ways: int, most: bool) -> int:
    """Per set, ways in fill order with hit counts; the victim has the fewest (``most``:
    the most) hits since its fill, ties to the lowest way."""
    cache: list[list[list[int]]] = [[] for _ in range(sets)]
    misses = 0
    for p in pages:
        s = cache[p % sets]
        slot = next((slot for slot in s if slot[0] == p), None)
        if slot is not None:
            slot[1] += 1
            continue
        misses += 1
        if len(s) < ways:
            s.append([p, 0])
        else:
            victim = min(range(ways), key=lambda w: ((-1 if most else 1) * s[w][1], w))
            s[victim] = [p, 0]
    return misses


def test_an_edited_plugin_kernel_is_recompiled_in_both_tiers(tmp_path):
    """LFU edited into MFU between two runs in one process: both tiers give the MFU
    counts of a naive model (before the fix, the compiled tier kept the LFU code)."""
    plugin = tmp_path / "lfu_policy_compiled.py"
    shutil.copy(EXAMPLES / "plugins" / "lfu_policy_compiled.py", plugin)
    level = {"name": "l1", "sets": 4, "ways": 4, "policy": "lfu"}
    raw = tiny_config(experiment={"name": "lfu", "plugins": [str(plugin)]}, tlb={"levels": [level]})
    rng = np.random.default_rng(5)
    pages = (rng.permutation(200)[rng.zipf(1.2, 3000) % 200]).tolist()
    trace = make_trace(np.array(pages, dtype=np.uint64) << np.uint64(12))
    seen = []
    for most in (False, True):
        if most:
            text = plugin.read_text()
            edited = (text.replace("row.index(min(row))", "row.index(max(row))")
                      .replace("if state[i, s, w + 1] < state[i, s, way + 1]:",
                               "if state[i, s, w + 1] > state[i, s, way + 1]:"))
            assert edited.count("max(row)") == 1 and edited.count("] > state[") == 1
            plugin.write_text(edited)
        config, reg = build(raw)
        assert choose_engine(config, reg)[0] == "compiled"
        counts = assert_engines_agree(config, reg, trace)
        assert counts["tlb.l1.misses"] == lfu_or_mfu_misses(pages, 4, 4, most)
        seen.append(counts["tlb.l1.misses"])
    assert seen[0] != seen[1]


SUBCLASSES = '''
import attrs

from slatframe import hookimpl
from slatframe.records import PageTableFormatRecord, WalkCacheRecord
from slatframe.paging import PageTableFormat
from slatframe.walkcache import DIMENSIONS, PrefixCache
from slatframe_plugins.formats import long_mode
from slatframe_plugins.walk_caches import PscOptions, make_psc


class CheckedFormat(PageTableFormat):
    """x86-64 with the present test written out, as an ARM-like codec would override it."""

    def is_present(self, entry):
        return (entry & self.present_mask) == self.present_mask


class CountingPsc(PrefixCache):
    """A PSC that also counts its fills (a researcher's instrumented copy)."""

    fills = 0

    def fill(self, *args):
        type(self).fills += 1
        super().fill(*args)


def make_format(options):
    fields = attrs.asdict(long_mode("x86-64", 4), recurse=False)
    return CheckedFormat(**{**fields, "name": "checked-x86-64"})


def make_counting_psc(o, ctx):
    plain = make_psc(o, ctx)
    return CountingPsc(plain.name, DIMENSIONS[o.dimension], (o.level,), plain.sets, plain.ways, o.policy, ctx)


@hookimpl
def slatframe_page_table_formats():
    return [PageTableFormatRecord(name="checked-x86-64", summary="x86-64, subclassed", factory=make_format)]


@hookimpl
def slatframe_walk_caches():
    return [WalkCacheRecord(name="counting-psc", summary="PSC subclass", factory=make_counting_psc,
                            options=PscOptions)]
'''


@pytest.mark.parametrize("change", ["format", "walk cache"])
def test_a_subclassed_format_or_walk_cache_takes_the_reference_tier(tmp_path, change):
    """The compiled loop knows only the core classes' behaviour: a subclass makes ``auto``
    take the reference tier (saying why) and ``compiled`` refuse; the reference tier
    runs the subclass, here with the behaviour of the builtin it extends."""
    plugin = plugin_file(tmp_path, "subclasses", SUBCLASSES)
    plain_caches = [{"type": "psc", "level": 2}, {"type": "psc", "level": 3}]
    raw = tiny_config(experiment={"name": "sub", "plugins": [str(plugin)]}, walk_caches=plain_caches)
    if change == "format":
        raw["machine"]["guest_format"] = "checked-x86-64"
        expected_words = ("'checked-x86-64'", "CheckedFormat")
    else:
        raw["walk_caches"] = [{"type": "counting-psc", "level": 2}, {"type": "psc", "level": 3}]
        expected_words = ("'psc-guest-l2'", "CountingPsc")
    config, reg = build(raw)
    tier, why = choose_engine(config, reg)
    assert tier == "reference" and all(word in why for word in expected_words), why
    with pytest.raises(ConfigError, match="cannot run this config") as err:
        choose_engine(config, reg, "compiled")
    assert all(word in str(err.value) for word in expected_words)
    if change == "format":
        assert "a subclass of PageTableFormat that defines is_present again" in str(err.value)
    trace = zipf_trace()
    got, _ = run_trace(config, reg, trace)
    builtin, _ = run_trace(*build(tiny_config(experiment={"name": "plain"}, walk_caches=plain_caches)), trace)
    assert got == builtin and got["walk.refs"] > 0 and got["walk_cache.psc-guest-l2.hits"] > 0
    result = run_experiment(config, reg)
    assert result.engine == "reference" and result.engine_reason.startswith("auto: ")


ADDS_ONLY = '''
import attrs

from slatframe import hookimpl
from slatframe.paging import PageTableFormat
from slatframe.records import PageTableFormatRecord
from slatframe_plugins.formats import long_mode


@attrs.frozen
class NamedFormat(PageTableFormat):
    """x86-64 with a field and a method of its own; none of PageTableFormat's redefined."""

    vendor: str = "acme"

    def describe(self):
        return f"{self.vendor}: {self.levels} levels"


@hookimpl
def slatframe_page_table_formats():
    fields = attrs.asdict(long_mode("x86-64", 4), recurse=False)
    return [PageTableFormatRecord(name="named-x86-64", summary="x86-64, subclassed to add only",
                                  factory=lambda options: NamedFormat(**{**fields, "name": "named-x86-64"}))]
'''


def test_a_format_subclass_that_only_adds_runs_in_both_tiers(tmp_path):
    """It was refused as "a NamedFormat, not a PageTableFormat" although it changes
    nothing the walk decodes: both tiers run it, with the builtin format's counts."""
    plugin = plugin_file(tmp_path, "adds", ADDS_ONLY)
    raw = tiny_config(experiment={"name": "adds", "plugins": [str(plugin)]},
                      machine={"slat": "intel-ept", "guest_format": "named-x86-64", "host_memory": "4G"})
    config, reg = build(raw)
    assert choose_engine(config, reg)[0] == "compiled"
    trace = zipf_trace()
    counts = assert_engines_agree(config, reg, trace)
    plain = tiny_config(experiment={"name": "plain"}, machine={"slat": "intel-ept", "host_memory": "4G"})
    assert counts == run_trace(*build(plain), trace)[0] and counts["walk.refs"] > 0


NEW_KIND = '''
from slatframe import hookimpl
from slatframe.records import WalkCacheRecord


class LevelSkipCache:
    """A new kind of walk cache: no core class."""

    def __init__(self, options, ctx):
        self.name = "skip"

    def invalidate(self, scope, vm, asid):
        pass


@hookimpl
def slatframe_walk_caches():
    return [WalkCacheRecord(name="level-skip", summary="a new kind", factory=LevelSkipCache)]
'''


def test_a_walk_cache_of_a_new_kind_is_an_error_not_a_no_op(tmp_path):
    plugin = plugin_file(tmp_path, "newkind", NEW_KIND)
    raw = tiny_config(experiment={"name": "k", "plugins": [str(plugin)]}, walk_caches=[{"type": "level-skip"}])
    config, reg = build(raw)
    for engine in ("reference", "auto", "compiled"):
        with pytest.raises(ConfigError, match=r"walk cache 'skip' is a LevelSkipCache whose point is None; the "
                                              r"'radix' walk consults caches at the points 'start', 'entry', 'host'"):
            run_experiment(config, reg, engine=engine)


OWN_WALK = '''
from slatframe import hookimpl
from slatframe.records import SlatSchemeRecord, WalkRecord
from slatframe.walker import HardwareView, Walker
from slatframe_plugins.native import NativeTranslator


class RootLoadWalker(Walker):
    """A walk that first loads the root pointer from memory (one more reference a walk)."""

    def walk(self, vm, asid, va, op):
        if self.hw.guest_roots.get(vm, asid) < 0:  # no address space yet: nothing to load
            return super().walk(vm, asid, va, op)
        self.counters.add("walk.root_loads")
        got = super().walk(vm, asid, va, op)
        self.counters.add("walk.refs")
        return got


def make_walk(ctx):
    return RootLoadWalker(ctx.hw, ctx.memory, ctx.counters, list(ctx.walk_caches), ctx.data_caches)


class RootLoadTranslator(NativeTranslator):
    def __init__(self, options, ctx):
        super().__init__(ctx)
        self.hw = HardwareView(ctx.guest_format, self.hw.guest_roots, walk="root-load")


@hookimpl
def slatframe_walks():
    return [WalkRecord(name="root-load", summary="radix walk after a root-pointer load", factory=make_walk)]


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="root-load-native", summary="native with a root-pointer load",
                             factory=RootLoadTranslator, guest_format="x86-64")]
'''


def test_a_scheme_with_its_own_walk_runs_it_in_the_reference_tier_only(tmp_path):
    """The scheme's walk runs (one more reference per walk than the radix walk, counted
    from the builtin native run), ``auto`` says why it took the reference tier, and
    ``compiled`` refuses instead of running the builtin walk."""
    plugin = plugin_file(tmp_path, "own_walk", OWN_WALK)
    raw = tiny_config(experiment={"name": "w", "plugins": [str(plugin)]})
    raw["machine"]["slat"] = "root-load-native"
    config, reg = build(raw)
    tier, why = choose_engine(config, reg)
    assert tier == "reference" and "walk 'root-load'" in why and "own_walk.py" in why, why
    with pytest.raises(ConfigError, match="walk 'root-load'"):
        choose_engine(config, reg, "compiled")
    trace = zipf_trace()
    got, _ = run_trace(config, reg, trace)
    native, _ = run_trace(*build(tiny_config(experiment={"name": "n"})), trace)
    attempts = native["walks"] + native.get("walk.aborted", 0)
    assert got["walk.root_loads"] == attempts
    assert got["walk.refs"] == native["walk.refs"] + attempts


def test_a_scheme_naming_an_unknown_walk_is_one_sentence(tmp_path):
    plugin = plugin_file(tmp_path, "bad_walk", OWN_WALK.replace('walk="root-load"', 'walk="nope"'))
    raw = tiny_config(experiment={"name": "w", "plugins": [str(plugin)]})
    raw["machine"]["slat"] = "root-load-native"
    config, reg = build(raw)
    from slatframe.errors import PluginError
    with pytest.raises(PluginError, match=r"asks for walk 'nope', which no plugin registers \(registered walks: "
                                          r"radix, root-load\)"):
        run_experiment(config, reg, engine="reference")


GEOMETRY = '''
import attrs

from slatframe import hookimpl
from slatframe.records import PageTableFormatRecord
from slatframe.paging import PageTableFormat
from slatframe_plugins.formats import long_mode


class TenBitFormat(PageTableFormat):
    """A format with its own index width, which the core prefix caches cannot key."""

    @staticmethod
    def index(va, level):
        return (va >> (12 + 10 * (level - 1))) & 1023


@hookimpl
def slatframe_page_table_formats():
    fields = attrs.asdict(long_mode("ten-bit", 4), recurse=False)
    return [PageTableFormatRecord(name="ten-bit", summary="own geometry",
                                  factory=lambda options: TenBitFormat(**fields))]
'''


def test_prefix_caches_refuse_a_format_with_its_own_geometry(tmp_path):
    plugin = plugin_file(tmp_path, "geometry", GEOMETRY)
    raw = tiny_config(experiment={"name": "g", "plugins": [str(plugin)]}, walk_caches=[{"type": "psc", "level": 2}])
    raw["machine"]["guest_format"] = "ten-bit"
    config, reg = build(raw)
    with pytest.raises(ConfigError, match="walk cache 'psc-guest-l2' keys entries by the prefixes of "
                                          "PageTableFormat's geometry .* format 'ten-bit' defines its own index, "
                                          "prefix, shift or page_size"):
        run_experiment(config, reg, engine="reference")


def policy_plugin(name: str, reference_victim: str, kernel_victim: str, imports: str = "") -> str:
    """A plugin file with one TLB policy whose state is one cell per set holding the number
    of ways; only its victim (reference object and kernel) is given."""
    return f'''
import numpy as np
from numba import njit
{imports}
from slatframe import hookimpl
from slatframe.records import PolicyKernels, TlbPolicyRecord


class Policy:
    def __init__(self, options, sets, ways, rng):
        self.ways = ways

    def hit(self, s, way):
        pass

    def fill(self, s, way):
        pass

    def victim(self, s):
        return {reference_victim}


def init(options, sets, ways, rng):
    return np.full((sets, 1), ways, dtype=np.int64)


@njit(cache=True, _nrt=False)
def nothing(state, i, s, w):
    pass


@njit(cache=True, _nrt=False)
def victim(state, i, s):
    return {kernel_victim}


@hookimpl
def slatframe_tlb_policies():
    kernels = PolicyKernels(init=init, hit=nothing, fill=nothing, victim=victim, invalidate=nothing)
    return [TlbPolicyRecord(name="{name}", summary="a test policy", factory=Policy, kernels=kernels)]
'''


BAD_VICTIM = policy_plugin("off-by-one", "self.ways - 1", "state[i, s, 0]  # one past the last way: a bug")


def test_a_victim_kernel_outside_its_set_is_a_plugin_error(tmp_path):
    """The compiled loop checks every victim way: a buggy kernel stops the run with one
    sentence naming the policy instead of writing outside the set."""
    from slatframe.errors import PluginError

    plugin = plugin_file(tmp_path, "off_by_one", BAD_VICTIM)
    raw = tiny_config(experiment={"name": "v", "plugins": [str(plugin)]},
                      tlb={"levels": [{"name": "l1", "sets": 2, "ways": 2, "policy": "off-by-one"}]})
    config, reg = build(raw)
    run_trace(config, reg, zipf_trace(n=500))  # the reference object is right
    with pytest.raises(PluginError, match=r"victim kernel returned a way outside its set .*'off-by-one' "
                                          r"\(from file:.*off_by_one.py\)"):
        run_experiment(config, reg, engine="compiled")


HELPER_POLICY = policy_plugin("picked", "helpers.pick.py_func(self.ways)", "helpers.pick(state[i, s, 0])",
                              imports="import pick_helpers as helpers")


def _plugin_kernel_files(plugin: Path) -> dict[str, int]:
    """The generated modules of ``plugin``'s kernels compiled apart, and numba's cache files
    of them (engine/plugin_kernels.py), with their modification times."""
    import hashlib

    from slatframe.engine.codegen import cache_dir, numba_cache_folder
    from slatframe.registry import PLUGIN_FILE_MODULE

    module = f"{PLUGIN_FILE_MODULE}{hashlib.sha256(str(plugin.resolve()).encode()).hexdigest()[:16]}."
    found = {}
    for path in cache_dir().glob("slatframe_plugin_kernel_*.py"):
        if module in path.read_text():
            found[path.name] = path.stat().st_mtime_ns
            for cached in numba_cache_folder(path).glob(f"{path.stem}.*.nb*"):
                found[cached.name] = cached.stat().st_mtime_ns
    return found


def test_an_edited_helper_in_another_file_reaches_the_compiled_tier(tmp_path):
    """The kernel's helper lives in another file, with the disk cache of kernels compiled
    apart on: after the helper is edited, a new process's compiled run agrees with its
    reference run and differs from before (numba's own cache, keyed on the kernel's file,
    would have kept the old helper); the helper edited back, a new process loads the
    first compile from the disk cache: no new module, no cache file written again."""
    import json
    import os
    import subprocess
    import sys

    plugin_file(tmp_path, "picked_policy", HELPER_POLICY)
    helper = tmp_path / "pick_helpers.py"
    config = tmp_path / "exp.toml"
    config.write_text('[experiment]\nname = "picked"\nplugins = ["picked_policy.py"]\n'
                      '[machine]\nslat = "native"\nhost_memory = "4G"\n'
                      '[[tlb.levels]]\nname = "l1"\nsets = 4\nways = 4\npolicy = "picked"\n'
                      '[[vms]]\nname = "vm0"\nmemory = "1G"\n'
                      '[workload]\nsource = "synthetic"\ndistribution = "zipf"\naccesses = 20000\nfootprint = "4M"\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    misses, files = {}, []
    for body in ("return 0", "return ways - 1", "return 0"):
        helper.write_text(f"from numba import njit\n\n\n@njit(cache=True)\ndef pick(ways):\n    {body}\n")
        for engine in ("compiled", "reference"):
            out = tmp_path / f"{engine}.json"
            proc = subprocess.run([sys.executable, "-m", "slatframe.cli", "run", str(config), "--out", str(out),
                                   "--quiet", "--engine", engine], env=env, capture_output=True, text=True,
                                  timeout=900)
            assert proc.returncode == 0, proc.stderr
            got = json.loads(out.read_text())["metrics"]["tlb.l1.misses"]
            assert misses.setdefault((body, engine), got) == got
        files.append(_plugin_kernel_files(tmp_path / "picked_policy.py"))
    assert len(files[0]) >= 4 * 3  # four kernels: a module, numba's index and code each
    assert set(files[0]) < set(files[1])  # the edit: new modules beside the old
    assert files[2] == files[1]  # edited back: the first modules, loaded, nothing written
    assert misses["return 0", "compiled"] == misses["return 0", "reference"]
    assert misses["return ways - 1", "compiled"] == misses["return ways - 1", "reference"]
    assert misses["return 0", "reference"] != misses["return ways - 1", "reference"]


def test_an_exception_in_a_kernel_compiled_apart_is_a_plugin_error(tmp_path):
    from slatframe.errors import PluginError

    plugin = plugin_file(tmp_path, "divides", policy_plugin("divides", "0", "s // (state[i, s, 0] - state[i, s, 0])"))
    raw = tiny_config(experiment={"name": "d", "plugins": [str(plugin)]},
                      tlb={"levels": [{"name": "l1", "sets": 2, "ways": 2, "policy": "divides"}]})
    config, reg = build(raw)
    with pytest.raises(PluginError, match=r"a plugin kernel raised ZeroDivisionError: .* 'divides' "
                                          r"\(from file:.*divides.py\)"):
        run_experiment(config, reg, engine="compiled")


def test_a_loop_that_fails_to_compile_is_named_as_such(monkeypatch):
    """numba failing to type the loop (an inline kernel that does not compile) is not
    reported as a kernel raising at run time: the message says the loop did not compile
    and names the inline policies compiled into it."""
    from numba.core.errors import TypingError

    from slatframe.engine import make_engine
    from slatframe.errors import PluginError
    from slatframe.machine import build_machine
    from slatframe.counters import Counters

    config, reg = build(tiny_config())
    engine = make_engine("compiled", build_machine(config, reg, Counters()), reg)

    def fails(*args):
        raise TypingError("Failed in nopython mode pipeline (step: nopython frontend)\nmore detail")

    monkeypatch.setattr(engine, "_entry", fails)
    with pytest.raises(PluginError, match=r"^the compiled engine's loop failed to compile \(TypingError: Failed "
                                          r"in nopython mode pipeline \(step: nopython frontend\)\); it compiles "
                                          r"in the kernels of every inline TLB policy: .*'lru'"):
        engine.run_chunk(make_trace([0x1000]))


def _array_of(dtype: str, ndim: int, order: str, step: int, writeable: bool) -> np.ndarray:
    a = np.zeros((4,) * ndim, dtype=dtype, order=order)
    if step > 1 and ndim:
        a = a[::step]
    a.flags.writeable = writeable
    return a


ARRAYS = st.builds(_array_of, st.sampled_from(["int64", "int32", "uint64", "uint8"]), st.integers(0, 3),
                   st.sampled_from(["C", "F"]), st.integers(1, 2), st.booleans())
VALUES = st.one_of(ARRAYS, st.integers(-(1 << 64), 1 << 64), st.booleans(), st.floats(allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(VALUES, VALUES)
def test_equal_type_keys_mean_equal_numba_types(a, b):
    """SLATFRAME_CHECK_ENTRY types the loop's 40 arguments with numba once per distinct
    key (numba's typing took 3 ms a call: a test's run was 19x slower with the check); a
    key must never hide a change of numba type."""
    from numba import typeof

    from slatframe.engine.compiled import type_key

    if type_key(a) == type_key(b):
        try:
            assert typeof(a) == typeof(b)
        except ValueError:  # an int numba cannot type at all (beyond 64 bits): the same value twice
            assert a == b


def test_kernels_compiled_without_the_disk_cache_say_so(tmp_path, monkeypatch):
    """When the disk cache of kernels cannot be used (here: as if its folder could not be
    written), the kernels are compiled directly, the counters are the reference tier's, and
    the result's engine reason names each kernel so compiled and why."""
    from slatframe.engine import plugin_kernels

    plugin = tmp_path / "lfu_policy_compiled.py"
    plugin.write_bytes((EXAMPLES / "plugins" / "lfu_policy_compiled.py").read_bytes())
    level = {"name": "l1", "sets": 4, "ways": 4, "policy": "lfu"}
    config, reg = build(tiny_config(experiment={"name": "lfu", "plugins": [str(plugin)]}, tlb={"levels": [level]}))
    monkeypatch.setattr(plugin_kernels, "_cached_compile", lambda fn, role: None)
    compiled = run_experiment(config, reg, engine="compiled")
    assert compiled.metrics == run_experiment(config, reg, engine="reference").metrics
    assert "compiled apart without the disk cache" in compiled.engine_reason
    for role in ("hit", "fill", "invalidate", "victim"):
        assert f"{role} kernel (the kernel cache folder cannot be written)" in compiled.engine_reason
    again = run_experiment(config, reg, engine="compiled")  # compiled once per process: nothing new to say
    assert "disk cache" not in again.engine_reason
