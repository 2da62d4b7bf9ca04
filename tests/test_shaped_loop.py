"""The compiled loop shaped for a config's TLB hierarchy (slatframe.engine.shape) gives the
reference tier's counters and hPAs, and experiment.loop chooses it as it says.

Every parity test here uses one shape (a 4K level, then a 4K + 2M level), so the suite
compiles one shaped module; sets, ways, policies and inclusion are run-time values of it."""
from __future__ import annotations

import attrs
import pytest

from slatframe.engine import choose_loop, make_engine, run_experiment
from slatframe.engine.shape import Shape, shape_of
from slatframe.errors import ConfigError
from slatframe.machine import build_machine
from slatframe.testing import assert_engines_agree, build, tiny_config

from test_engine_parity import trace

SHAPE = Shape(((12,), (12, 21)))
CACHES = [{"type": "psc", "level": lv} for lv in (4, 3, 2)] + [{"type": "psc", "level": 2, "dimension": "host"},
                                                                 {"type": "nested-tlb", "ways": 4, "sets": 2}]


def shaped_config(registry, slat="intel-ept", policy="lru", inclusion="non-inclusive", l2_ways=12, **experiment):
    levels = [{"name": "l1", "sets": 4, "ways": 4, "policy": policy},
              {"name": "l2", "sets": 8, "ways": l2_ways, "policy": policy, "page_sizes": ["4K", "2M"]}]
    raw = tiny_config(machine={"slat": slat}, tlb={"levels": levels, "inclusion": inclusion}, walk_caches=CACHES,
                      vms=[{"name": "a"}, {"name": "b", "guest_page_size": "2M"}],
                      experiment={"name": "shaped", **experiment})
    return build(raw, registry)


@pytest.mark.parametrize("kind", ["zipf", "churn"])
@pytest.mark.parametrize("inclusion", ["non-inclusive", "inclusive", "exclusive"])
@pytest.mark.parametrize("slat,policy", [("native", "lru"), ("intel-ept", "fifo"), ("shadow", "srrip"),
                                         ("amd-npt", "tree-plru")])
def test_the_shaped_loop_agrees_with_the_reference_tier(registry, slat, policy, inclusion, kind):
    config, reg = shaped_config(registry, slat, policy, inclusion)
    assert shape_of(config)[0] == SHAPE
    counts = assert_engines_agree(config, reg, trace(kind, seed=7), shaped=True)
    assert counts["tlb.l2.hits"] > 0 and counts["walks"] > 0


@pytest.mark.parametrize("l2_ways", [3, 12])  # a narrow set scanned, a wide one indexed
def test_the_shaped_loop_fills_2m_pages_only_where_they_fit(registry, l2_ways):
    """VM b's 2M pages go to l2 only: l1 holds 4K pages (the shape's constants decide)."""
    config, reg = shaped_config(registry, "native", l2_ways=l2_ways)
    t = trace("zipf", seed=8)
    t["vm"][len(t) // 2:] = 1  # the second half in VM b, whose guest maps 2M pages
    counts = assert_engines_agree(config, reg, t, shaped=True)
    assert counts["tlb.l1.hits"] > 0 and counts["tlb.l2.hits"] > 0


def test_a_shaped_engine_refuses_another_shape(registry):
    config, reg = shaped_config(registry)
    with pytest.raises(ValueError, match="cannot run this config's TLB"):
        make_engine("compiled", build_machine(config, reg), reg, Shape(((12,),)))


def test_loop_choice_says_what_runs(registry, tmp_path, monkeypatch):
    config, reg = shaped_config(registry, loop="shaped")
    shape, why = choose_loop(config, reg, "compiled")
    assert (shape, why) == (SHAPE, "; the loop compiled for the TLB's shape, 2 levels (4K | 4K, 2M) (requested)")
    assert choose_loop(config, reg, "reference") == (None, "; experiment.loop = 'shaped' is for the compiled tier only")
    generic, _ = shaped_config(registry, loop="generic")
    assert choose_loop(generic, reg, "compiled") == (None, "; the generic loop (requested)")
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path))  # nothing compiled there
    auto, _ = shaped_config(registry, loop="auto")
    shape, why = choose_loop(auto, reg, "compiled")
    assert shape is None and "is not compiled" in why


def test_auto_takes_the_shaped_loop_once_it_is_compiled(registry):
    config, reg = shaped_config(registry, loop="shaped")
    shaped = run_experiment(config, reg, engine="compiled")
    auto, _ = shaped_config(registry, loop="auto")
    again = run_experiment(auto, reg, engine="compiled")
    assert again.engine_reason.endswith("(auto: it is compiled)") and "TLB's shape" in again.engine_reason
    assert again.metrics == shaped.metrics


@pytest.mark.parametrize("loop", ["shaped", "exact"])
def test_a_compiled_in_loop_refuses_a_split_level_in_one_sentence(registry, loop):
    """The config is refused when it is read (so `slatframe validate` says it too), and a
    config built otherwise is refused when the loop is chosen."""
    levels = [{"name": "itlb", "sets": 4, "ways": 2, "side": "instruction"}, {"name": "stlb", "sets": 8, "ways": 4}]
    with pytest.raises(ConfigError, match=rf"experiment.loop = '{loop}' is not allowed: tlb.levels\[0\] \('itlb'\) "
                                          r"serves instruction accesses only, and a loop compiled for the TLB needs "
                                          r"every level to serve both; use 'auto' or 'generic'\."):
        build(tiny_config(tlb={"levels": levels}, experiment={"name": "x", "loop": loop}), registry)
    auto, _ = build(tiny_config(tlb={"levels": levels}), registry)
    assert "the generic loop (auto: TLB level 'itlb'" in run_experiment(auto, registry, engine="compiled").engine_reason
    forced = attrs.evolve(auto, experiment=attrs.evolve(auto.experiment, loop=loop))
    with pytest.raises(ConfigError, match=rf"experiment.loop = '{loop}' cannot run this config: TLB level 'itlb' "
                                          r"serves instruction accesses only"):
        choose_loop(forced, registry, "compiled")
    with pytest.raises(ValueError, match=rf"run_both\({loop}=True\) cannot run this config's {loop} loop: TLB level "
                                         r"'itlb' serves instruction accesses only"):
        assert_engines_agree(auto, registry, trace("zipf", seed=7), **{loop: True})
