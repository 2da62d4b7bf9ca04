"""The translation-path cache example (examples/plugins/path_cache.py), a walk-cache kind
of a plugin's own: references per walk against counts worked out by hand, and its
kernels against its reference object in both tiers, 1D and 2D, beside builtin caches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slatframe.engine import choose_engine
from slatframe.testing import assert_engines_agree, build, churn_trace, run_trace, tiny_config
from slatframe.trace import MAP, make_trace

PLUGIN = str(Path(__file__).resolve().parents[1] / "examples" / "plugins" / "path_cache.py")
ONE_ENTRY = {"levels": [{"name": "l1", "sets": 1, "ways": 1}]}


def tpc_config(entries: int, slat: str = "native", dimension: str = "guest", extra_caches=(), plugins=(PLUGIN,),
               tlb=ONE_ENTRY, name: str = "tpc"):
    caches = [{"type": name, "entries": entries, "dimension": dimension}, *extra_caches]
    raw = tiny_config(experiment={"name": "tpc", "plugins": list(plugins)},
                      machine={"slat": slat, "host_memory": "16G"}, tlb=tlb, walk_caches=caches,
                      vms=[{"name": "vm0", "memory": "4G"}])
    return build(raw)


def round_robin(regions: list[int], n: int) -> np.ndarray:
    """A MAP of every page first (no walk faults), then ``n`` accesses cycling over the
    2M ``regions``, each to a page not touched before."""
    vas = [regions[i % len(regions)] + (i // len(regions)) * 4096 for i in range(n)]
    return np.concatenate([make_trace(vas, MAP), make_trace(vas)])


G = 1 << 30


@pytest.mark.parametrize("entries,regions,refs_after_first", [
    (4, [0, G, 2 * G, 3 * G], None),  # every path fits: 3 references while learning, then 1
    (1, [0, G], 3),  # one entry, two 1G regions: the entry always matches at level 4 only
    (1, [0, 1 << 21], 2),  # one entry, two 2M regions of one 1G region: it matches at level 3
])
def test_references_per_walk_by_hand(entries, regions, refs_after_first):
    n = 64
    counts, _ = run_trace(*tpc_config(entries), round_robin([r + (1 << 39) for r in regions], n))
    assert counts["walks"] == n and "walk.aborted" not in counts
    if refs_after_first is None:
        expected = 4 + 3 * (len(regions) - 1) + 1 * (n - len(regions))
    else:
        expected = 4 + refs_after_first * (n - 1)
    assert counts["walk.refs"] == expected
    assert counts["walk_cache.tpc.hits"] == n - 1 and counts["walk_cache.tpc.misses"] == 1


PSC2 = {"type": "psc", "level": 2, "ways": 2}


@pytest.mark.parametrize("entries,slat,dimension,extra", [
    (4, "native", "guest", ()),
    (2, "native", "guest", (PSC2,)),
    (3, "intel-ept", "guest", ({"type": "nested-tlb", "ways": 8},)),
    (4, "intel-ept", "host", ({"type": "nested-tlb", "ways": 4, "covers": "tables"},)),
    (1, "shadow", "guest", ({"type": "pwc"},)),
])
def test_both_tiers_agree_and_auto_compiles(entries, slat, dimension, extra):
    config, reg = tpc_config(entries, slat, dimension, extra,
                             tlb={"levels": [{"name": "l1", "sets": 2, "ways": 2}]})
    assert choose_engine(config, reg)[0] == "compiled"
    counts = assert_engines_agree(config, reg, churn_trace(entries * 7 + len(extra)), chunk_size=389)
    assert counts["walk_cache.tpc.hits"] > 0 and counts["walk_cache.tpc.misses"] > 0


def test_a_start_cache_without_kernels_takes_the_reference_tier(tmp_path):
    plugin = tmp_path / "slow_tpc.py"
    plugin.write_text(
        "import importlib.util\n"
        "from slatframe import hookimpl\n"
        "from slatframe.records import WalkCacheRecord\n"
        f"spec = importlib.util.spec_from_file_location('tpc_for_slow', {PLUGIN!r})\n"
        "tpc = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(tpc)\n"
        "@hookimpl\n"
        "def slatframe_walk_caches():\n"
        "    return [WalkCacheRecord(name='slow-tpc', summary='no kernels', factory=tpc.make_tpc,\n"
        "                            options=tpc.TpcOptions)]\n")
    config, reg = tpc_config(2, plugins=[str(plugin)], name="slow-tpc")
    tier, why = choose_engine(config, reg)
    assert tier == "reference" and "walk cache 'tpc'" in why and "slow_tpc.py" in why
    counts, _ = run_trace(config, reg, round_robin([1 << 39], 8))
    assert counts["walk.refs"] == 4 + 7


def test_a_raising_start_cache_kernel_is_one_sentence_naming_it(tmp_path):
    from slatframe.engine import run_experiment
    from slatframe.errors import PluginError

    plugin = tmp_path / "broken_tpc.py"
    plugin.write_text(
        "import importlib.util\n"
        "from numba import njit\n"
        "from slatframe import hookimpl\n"
        "from slatframe.records import StartCacheKernels, WalkCacheRecord\n"
        f"spec = importlib.util.spec_from_file_location('tpc_for_broken', {PLUGIN!r})\n"
        "tpc = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(tpc)\n"
        "@njit(_nrt=False)\n"
        "def probe(state, j, dim, vm, asid, address, fmts):\n"
        "    return address // (state[j, 0, 2] - state[j, 0, 2])\n"
        "@hookimpl\n"
        "def slatframe_walk_caches():\n"
        "    return [WalkCacheRecord(name='broken-tpc', summary='raises', factory=tpc.make_tpc,\n"
        "                            options=tpc.TpcOptions, kernels=StartCacheKernels(\n"
        "                                init=tpc.init, probe=probe, learn=tpc.learn, invalidate=tpc.invalidate))]\n")
    config, reg = tpc_config(2, plugins=[str(plugin)], name="broken-tpc")
    with pytest.raises(PluginError, match=r"a plugin kernel raised ZeroDivisionError: .*walk caches 'tpc' "
                                          r"\(from file:.*broken_tpc.py\)"):
        run_experiment(config, reg, engine="compiled")


@pytest.mark.parametrize("tier", ["reference", "compiled"])
def test_a_probe_outside_the_formats_levels_is_one_sentence(tmp_path, tier):
    """A start cache whose probe hands back a level the walk cannot resume at stops the
    run with one sentence in both tiers, rather than walking off the tables."""
    from slatframe.engine import run_experiment
    from slatframe.errors import PluginError

    plugin = tmp_path / "deep_tpc.py"
    plugin.write_text(
        "import importlib.util\n"
        "from numba import njit\n"
        "from slatframe import hookimpl\n"
        "from slatframe.records import StartCacheKernels, WalkCacheRecord\n"
        f"spec = importlib.util.spec_from_file_location('tpc_for_deep', {PLUGIN!r})\n"
        "tpc = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(tpc)\n"
        "class Deep(tpc.PathCache):\n"
        "    def probe(self, *args):\n"
        "        return 9, 4096\n"
        "@njit(_nrt=False)\n"
        "def probe(state, j, dim, vm, asid, address, fmts):\n"
        "    return 4096 | 9\n"
        "@hookimpl\n"
        "def slatframe_walk_caches():\n"
        "    return [WalkCacheRecord(name='deep-tpc', summary='too deep', options=tpc.TpcOptions,\n"
        "                            factory=lambda o, ctx: Deep(o.name, (0,), o.entries), kernels=StartCacheKernels(\n"
        "                                init=tpc.init, probe=probe, learn=tpc.learn, invalidate=tpc.invalidate))]\n")
    config, reg = tpc_config(2, plugins=[str(plugin)], name="deep-tpc")
    with pytest.raises(PluginError, match="returned .*level") as err:
        run_experiment(config, reg, engine=tier)
    assert "'tpc'" in str(err.value) and "\n" not in str(err.value)
