"""The compiled loop for a config's whole TLB (experiment.loop = "exact": the shape and
each level's sets, ways and policy compiled in) gives the reference tier's counters and
hPAs, refuses any other TLB config, and experiment.loop chooses it as it says.

Every parity test here runs one TLB config, so the suite compiles one exact module: a
3-set LRU level (its set index a constant modulo) before an 8-set, 12-way level with the
example LFU plugin (a policy compiled apart, called through its slot; a wide set, indexed)
holding 4K and 2M pages. Inclusion, walk caches and the SLAT scheme stay run-time values."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slatframe.engine import choose_loop, make_engine, run_experiment
from slatframe.engine import codegen
from slatframe.engine.shape import Shape, shape_of
from slatframe.machine import build_machine
from slatframe.testing import assert_engines_agree, build, tiny_config

from test_engine_parity import trace
from test_shaped_loop import CACHES

LFU = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "lfu_policy_compiled.py"
EXACT = Shape(((12,), (12, 21)), (3, 8), (4, 12), ("lru", "lfu"))


def exact_config(slat="intel-ept", inclusion="non-inclusive", l2_sets=8, **experiment):
    levels = [{"name": "l1", "sets": 3, "ways": 4, "policy": "lru"},
              {"name": "l2", "sets": l2_sets, "ways": 12, "policy": "lfu", "page_sizes": ["4K", "2M"]}]
    raw = tiny_config(machine={"slat": slat}, tlb={"levels": levels, "inclusion": inclusion}, walk_caches=CACHES,
                      vms=[{"name": "a"}, {"name": "b", "guest_page_size": "2M"}],
                      experiment={"name": "exact", "plugins": [str(LFU)], **experiment})
    return build(raw)


@pytest.mark.parametrize("kind", ["zipf", "churn"])
@pytest.mark.parametrize("inclusion", ["non-inclusive", "inclusive", "exclusive"])
@pytest.mark.parametrize("slat", ["native", "intel-ept", "shadow"])
def test_the_exact_loop_agrees_with_the_reference_tier(slat, inclusion, kind):
    config, reg = exact_config(slat, inclusion)
    assert shape_of(config, exact=True)[0] == EXACT
    t = trace(kind, seed=9)
    t["vm"][len(t) // 2:] = 1  # the second half in VM b, whose guest maps 2M pages (l2 only)
    counts = assert_engines_agree(config, reg, t, exact=True)
    assert counts["tlb.l1.hits"] > 0 and counts["tlb.l2.hits"] > 0 and counts["walks"] > 0


def test_the_exact_module_has_the_config_as_constants():
    """The engine's own TLB rows (sets, ways, policy numbers) are the module's constants:
    LRU's inline number, LFU's slot after the inline policies."""
    config, reg = exact_config()
    engine = make_engine("compiled", build_machine(config, reg), reg, EXACT)
    tcfg, k = engine.tlb[0], engine.k
    assert (k.SHAPE_EXACT, k.SHAPE_SETS, k.SHAPE_MASKS, k.SHAPE_WAYS) == (1, (3, 8), (-1, 7), (4, 12))
    assert k.SHAPE_PIDS == (codegen.policy_ids(reg)["lru"], len(codegen.policy_ids(reg)))
    assert [tuple(row) for row in tcfg[:, [0, 1, 3]].T.tolist()] == [k.SHAPE_SETS, k.SHAPE_WAYS, k.SHAPE_PIDS]


def test_an_exact_engine_refuses_another_tlb_config():
    config, reg = exact_config(l2_sets=16)
    with pytest.raises(ValueError, match=r"a loop compiled for 2 levels \(3x4 lru, 4K \| 8x12 lfu, 4K, 2M\) cannot "
                                         r"run this config's TLB \(2 levels \(3x4 lru, 4K \| 16x12 lfu, 4K, 2M\)\)"):
        make_engine("compiled", build_machine(config, reg), reg, EXACT)
    with pytest.raises(ValueError, match="a loop shaped for 1 level"):
        make_engine("compiled", build_machine(config, reg), reg, Shape(((12,),)))


def test_loop_choice_says_what_runs(tmp_path, monkeypatch):
    config, reg = exact_config(loop="exact")
    assert choose_loop(config, reg, "compiled") == (
        EXACT, "; the loop compiled for this TLB config, 2 levels (3x4 lru, 4K | 8x12 lfu, 4K, 2M) (requested)")
    assert choose_loop(config, reg, "reference") == (None, "; experiment.loop = 'exact' is for the compiled tier only")
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path))  # nothing compiled there
    auto, _ = exact_config(loop="auto")
    shape, why = choose_loop(auto, reg, "compiled")
    assert shape is None and "is not compiled" in why


def test_a_first_installation_runs_the_exact_loop_and_builds_the_generic_one_meanwhile(monkeypatch):
    """auto with no loop compiled (the first-run policy on, as on a new installation): the
    exact loop runs, with the generic loop's counters, and the generic loop's build starts
    in the background for other configs; with the policy off the generic loop runs."""
    from slatframe.engine import FIRST_LOOP_REASON, prebuild

    monkeypatch.setenv("SLATFRAME_FIRST_RUN", "reference")
    monkeypatch.setattr(codegen, "engine_cached", lambda registry, shape=None: False)
    started = []
    monkeypatch.setattr(prebuild, "start_background_build",
                        lambda files, name, shape=None: started.append(shape) or True)
    auto, reg = exact_config(loop="auto")
    assert choose_loop(auto, reg, "compiled") == (EXACT, f"; {EXACT.loop_name()} (auto: {FIRST_LOOP_REASON})")
    first = run_experiment(auto, reg, engine="compiled")
    assert first.engine_reason == (f"requested; {EXACT.loop_name()} (auto: {FIRST_LOOP_REASON}); the generic loop "
                                   "is being compiled in the background for runs of other configs")
    assert started == [None]  # the generic loop's build
    monkeypatch.setenv("SLATFRAME_FIRST_RUN", "compiled")
    generic = run_experiment(auto, reg, engine="compiled")
    assert "; the generic loop (auto: " in generic.engine_reason and started == [None]
    assert generic.metrics == first.metrics


def test_auto_takes_the_exact_loop_once_it_is_compiled():
    config, reg = exact_config(loop="exact")
    exact = run_experiment(config, reg, engine="compiled")
    auto, _ = exact_config(loop="auto")
    again = run_experiment(auto, reg, engine="compiled")
    assert again.engine_reason.endswith("(auto: it is compiled)") and "this TLB config" in again.engine_reason
    assert again.metrics == exact.metrics
    other, _ = exact_config(loop="auto", l2_sets=16)  # another TLB config: its exact loop is not compiled
    assert "this TLB config" not in run_experiment(other, reg, engine="compiled").engine_reason


def test_the_build_command_takes_a_config_files_tlb(tmp_path, serial_builds):
    """prebuild --exact-of: the exact loop of a config file with an outside plugin policy
    (compiled by the tests above, or found in the cache), named as a run names it."""
    text = (f'[experiment]\nname = "x"\nplugins = ["{LFU}"]\n[machine]\nslat = "native"\nhost_memory = "4G"\n'
            '[[tlb.levels]]\nname = "l1"\nsets = 3\nways = 4\n'
            '[[tlb.levels]]\nname = "l2"\nsets = 8\nways = 12\npolicy = "lfu"\npage_sizes = ["4K", "2M"]\n'
            '[[vms]]\nname = "vm0"\nmemory = "1G"\n[workload]\nsource = "synthetic"\naccesses = 10\n')
    (tmp_path / "exact.toml").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "slatframe.engine.prebuild", "--exact-of", str(tmp_path / "exact.toml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"compiled, or found in numba's cache: the loop compiled for this TLB config, {EXACT.describe()}\n"
    _, reg = exact_config()
    assert codegen.engine_cached(reg, EXACT)


def test_the_build_command_refuses_a_policy_without_kernels_in_one_sentence(tmp_path, serial_builds):
    """An exact loop compiles its levels' policy numbers in: a policy with no compiled
    kernels (the reference-only LFU example) is refused before anything is built (it ended
    in a KeyError traceback)."""
    plugin = LFU.with_name("lfu_policy.py")
    text = (f'[experiment]\nname = "x"\nplugins = ["{plugin}"]\n[machine]\nslat = "native"\nhost_memory = "4G"\n'
            '[[tlb.levels]]\nname = "l1"\nsets = 4\nways = 4\npolicy = "lfu"\n'
            '[[vms]]\nname = "vm0"\nmemory = "1G"\n[workload]\nsource = "synthetic"\naccesses = 10\n')
    (tmp_path / "ref.toml").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "slatframe.engine.prebuild", "--exact-of", str(tmp_path / "ref.toml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"python -m slatframe.engine.prebuild: error: {tmp_path / 'ref.toml'}: the compiled tier "
                           "cannot run this config: ") and "'lfu'" in last and "tlb.levels[0]" in last
