"""Each examples/plugins/<name>.toml validates (its sweep points too) and runs at a small
scale in the reference tier and under engine = "auto", which takes the compiled tier when
the plugin has kernels: both give the same counters, which match counts derived here from
the config (references per walk from the published formulas)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

import slatframe
from slatframe.api import load
from slatframe.cli import main

PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"
CONFIGS = sorted(PLUGINS.glob("*.toml"))
ACCESSES = 3000


def small(config: dict[str, Any]) -> dict[str, Any]:
    """Overrides that run ``config`` (its resolved form) at a small scale."""
    sets: dict[str, Any] = {"experiment.warmup": 0}
    workload = config["workload"]
    if workload["source"] == "mix":
        for i, part in enumerate(workload["parts"]):
            sets[f"workload.parts[{i}].workload.accesses"] = ACCESSES // len(workload["parts"])
    else:
        sets["workload.accesses"] = ACCESSES
    return sets


def refs_per_walk(metrics: dict[str, Any]) -> float:
    return metrics["walk.refs"] / metrics["walks"]


def agile(config: dict[str, Any], metrics: dict[str, Any]) -> None:
    s = config["machine"]["slat"]["shadow_levels"]
    assert refs_per_walk(metrics) == metrics["walk.refs_max"] == s + (4 - s) * 5 + 4  # Gandhi et al., sec. 3


def stage2(config: dict[str, Any], metrics: dict[str, Any]) -> None:
    levels = (config["machine"]["host_format"]["ipa_bits"] - 8) // 9  # Linux's stage2_pgtable_levels
    assert config["vms"][0]["host_page_size"] == 4096
    assert refs_per_walk(metrics) == metrics["walk.refs_max"] == (4 + 1) * (levels + 1) - 1


def hashed(config: dict[str, Any], metrics: dict[str, Any]) -> None:
    assert refs_per_walk(metrics) == metrics["walk.refs_max"] == config["machine"]["slat"]["ways"]


def path_cache(config: dict[str, Any], metrics: dict[str, Any]) -> None:
    names = [cache["name"] for cache in config["walk_caches"]]
    assert all(metrics[f"walk_cache.{name}.hits"] > 0 for name in names)
    assert refs_per_walk(metrics) < 24  # a 2D walk of 4 x 4 levels with no walk cache


def lfu(config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Its Python object and its kernels are two implementations: the same counters."""
    other = PLUGINS / "lfu_policy.toml"
    python = slatframe.run(other, set=small(config), engine="reference")
    assert python.metrics == metrics


def gang(config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The trace alternates two VMs record by record; a turn of q records of a VM spans
    every core, so each core switches VMs once per turn."""
    per_vm = ACCESSES // 2
    turns = 2 * -(-per_vm // config["machine"]["scheduler"]["quantum"])
    cores = config["machine"]["cores"]
    assert [metrics[f"core.{c}.events.vm_switch"] for c in range(cores)] == [turns - 1] * cores
    assert [metrics[f"core.{c}.accesses"] for c in range(cores)] == [ACCESSES // cores] * cores


CHECKS: dict[str, tuple[str, Callable[[dict[str, Any], dict[str, Any]], None]]] = {
    # file: (the tier auto takes, what else is checked)
    "agile_paging.toml": ("compiled", agile),
    "gang_scheduler.toml": ("compiled", gang),
    "arm64_stage2.toml": ("compiled", stage2),
    "hashed_paging.toml": ("compiled", hashed),
    "lfu_policy.toml": ("reference", lambda config, metrics: None),
    "lfu_policy_compiled.toml": ("compiled", lfu),
    "path_cache.toml": ("compiled", path_cache),
}


def test_every_plugin_has_a_config_and_every_config_a_check():
    assert {p.stem for p in CONFIGS} == {p.stem for p in PLUGINS.glob("*.py")}
    assert {p.name for p in CONFIGS} == set(CHECKS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_plugin_example_runs_in_both_tiers(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert "sweep points" in capsys.readouterr().out
    auto_tier, check = CHECKS[path.name]
    sets = small(load(path)[0].to_dict())
    reference = slatframe.run(path, set=sets, engine="reference")
    auto = slatframe.run(path, set=sets)
    assert reference.engine == "reference" and reference.engine_reason == "requested"
    assert auto.engine == auto_tier, auto.engine_reason
    if auto_tier == "reference":
        assert "has no compiled kernel" in auto.engine_reason and f"{path.stem}.py" in auto.engine_reason, \
            auto.engine_reason
    assert auto.metrics == reference.metrics
    assert reference.metrics["accesses"] == ACCESSES and reference.metrics["walks"] > 0
    check(reference.config, reference.metrics)
