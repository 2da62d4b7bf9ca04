"""Every kind of config mistake gives one sentence naming the file and the key path."""
from __future__ import annotations

import pytest

from slatframe.config import load_config
from slatframe.errors import ConfigError, PluginError
from slatframe.testing import build, tiny_config

TOML = '''
[experiment]
name = "t"
[machine]
slat = "native"
[[tlb.levels]]
name = "l1"
sets = 4
ways = 2
[[tlb.levels]]
name = "l2"
sets = 8
ways = 4
[[vms]]
name = "vm0"
memory = "1G"
[workload]
source = "synthetic"
accesses = 10
'''


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(TOML)
    return path


def error_of(path, *overrides) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("override,needles", [
    ("tlb.levels[1].ways=0", ["tlb.levels[1].ways", "0", "minimum is 1"]),
    ("tlb.levels[1].ways='four'", ["tlb.levels[1].ways", "'four'", "integer"]),
    ("tlb.levels[0].policy='lruu'", ["tlb.levels[0].policy", "'lruu'", "fifo", "lru"]),
    ("tlb.levels[0].page_sizes=['3K']", ["tlb.levels[0].page_sizes[0]", "power of two"]),
    ("tlb.levels[0].wayz=4", ["tlb.levels[0].wayz", "not a known key", "ways"]),
    ("machine.slat='vmware'", ["machine.slat", "'vmware'", "native"]),
    ("machine.host_memory='lots'", ["machine.host_memory", "'lots'", "4K"]),
    ("experiment.engine='fast'", ["experiment.engine", "auto, reference, compiled"]),
    ("vms[0].guest_page_size='5K'", ["vms[0].guest_page_size", "power of two"]),
    ("vms[0].guest_page_size='8K'", ["vms[0].guest_page_size", "4K, 2M, 1G"]),
    ("vms[0].memory='6K'", ["vms[0].memory", "multiple"]),
    ("workload.accesses=-5", ["workload.accesses", "-5", "minimum"]),
    ("workload.source='nope'", ["workload.source", "npz", "synthetic"]),
    ("workload.distribution='pareto'", ["workload.distribution", "uniform, zipf"]),
    ("cost.model='magic'", ["cost.model", "'magic'", "fixed"]),
    ("cost.vm_exit=1.5", ["cost.vm_exit", "integer"]),
    ("tlb.levels[1].name='l1'", ["tlb.levels[1].name", "tlb.levels[0]"]),
    ("vms[0].name=3", ["vms[0].name", "string"]),
])
def test_mistake_names_key(config_file, override, needles):
    message = error_of(config_file, override)
    for needle in needles:
        assert needle in message, (needle, message)


def test_missing_required_key(config_file):
    text = config_file.read_text().replace('sets = 8\n', '')
    config_file.write_text(text)
    message = error_of(config_file)
    assert "tlb.levels[1].sets is required" in message


def test_missing_workload(config_file):
    config_file.write_text(config_file.read_text().split("[workload]")[0])
    assert "workload is required" in error_of(config_file)


def test_toml_syntax_error_names_line(config_file):
    config_file.write_text(TOML + "\nbroken = = 1\n")
    message = error_of(config_file)
    assert "not valid TOML" in message and "line" in message


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "nope.toml")
    assert "does not exist" in message


def test_bad_override_syntax(config_file):
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_config(config_file, ["tlb.levels[0].ways"])
    with pytest.raises(ConfigError, match=r"index \[5\]"):
        load_config(config_file, ["tlb.levels[5].ways=2"])


def test_overrides_apply(config_file):
    config, _ = load_config(config_file, ["tlb.levels[1].ways=16", "machine.slat=native",
                                          "vms[0].memory='2G'", "tlb.levels[0].policy=fifo"])
    assert config.tlb.levels[1].ways == 16
    assert config.vms[0].memory == 2 << 30
    assert config.tlb.levels[0].policy.name == "fifo"


def test_sizes_accept_units(registry):
    raw = tiny_config(vms=[{"name": "a", "memory": "4GiB", "guest_page_size": "2M"}])
    config, _ = build(raw, registry)
    assert config.vms[0].memory == 4 << 30 and config.vms[0].guest_page_size == 2 << 20


def test_plugin_file_missing(tmp_path, config_file):
    text = config_file.read_text().replace('name = "t"', 'name = "t"\nplugins = ["gone.py"]')
    config_file.write_text(text)
    message = error_of(config_file)
    assert "experiment.plugins" in message and "gone.py" in message


def test_config_round_trips(registry):
    """The resolved config stored in results loads back to an equal config."""
    config, _ = build(tiny_config(), registry)
    again, _ = build(config.to_dict(), registry)
    assert again == config


def test_unknown_section(registry):
    with pytest.raises(ConfigError, match="dedupe is not a known key"):
        build(tiny_config(dedupe={}), registry)


def test_plugin_error_is_not_config_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="bad.py"):
        build(tiny_config(experiment={"name": "x", "plugins": ["bad.py"]}), base_dir=tmp_path)


# -- "no silent wrong result, no traceback": every bad input is one sentence ----------------

import json  # noqa: E402

import attrs  # noqa: E402
import math  # noqa: E402

from slatframe.cli import main  # noqa: E402

SYN = {"source": "synthetic", "accesses": 100, "footprint": "1M"}
SESSIONS = {"source": "sessions", "accesses": 100, "processes": 2, "working_set": "64K"}
CONSOLIDATION = {"cores": 4, "core_ghz": 2.0, "memory": "64G", "session_accesses_per_s": 1e7,
                 "work_per_access": 10.0, "session_memory": "1G"}


def refused(raw, registry, *needles) -> str:
    """The one-sentence message refusing ``raw``; fails unless it holds every needle."""
    with pytest.raises(ConfigError) as info:
        build(raw, registry)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


FLOAT_KEYS = [  # (where in the config, key path in messages)
    (lambda v: tiny_config(workload={**SYN, "write_fraction": v}), "workload.write_fraction"),
    (lambda v: tiny_config(workload={**SYN, "zipf_exponent": v}), "workload.zipf_exponent"),
    (lambda v: tiny_config(workload={**SESSIONS, "churn_rate": v}), "workload.churn_rate"),
    (lambda v: tiny_config(vms=[{"name": "a", "content": {"zero_fraction": v}}]), "vms[0].content.zero_fraction"),
    (lambda v: tiny_config(vms=[{"name": "a", "content": {"zero_fraction": 0, "pool_fraction": v}}]),
     "vms[0].content.pool_fraction"),
    (lambda v: tiny_config(consolidation={**CONSOLIDATION, "core_ghz": v}), "consolidation.core_ghz"),
    (lambda v: tiny_config(consolidation={**CONSOLIDATION, "cpu_target": v}), "consolidation.cpu_target"),
    (lambda v: tiny_config(consolidation={**CONSOLIDATION, "work_per_access": v}), "consolidation.work_per_access"),
    (lambda v: tiny_config(workload={"source": "mix", "parts": [{"workload": SYN, "weight": v}]}),
     "workload.parts[0].weight"),
]


@pytest.mark.parametrize("make,key", FLOAT_KEYS, ids=[k for _, k in FLOAT_KEYS])
@pytest.mark.parametrize("bad,expected", [
    ("0.5", "expected a number"), (True, "expected a number"), ([0.5], "expected a number"),
    ({}, "expected a number"), (math.nan, "finite"), (math.inf, "finite"), (-math.inf, "finite"),
])
def test_float_options_take_finite_numbers_only(registry, make, key, bad, expected):
    refused(make(bad), registry, f"{key} = ", expected)


@pytest.mark.parametrize("make,key", FLOAT_KEYS, ids=[k for _, k in FLOAT_KEYS])
def test_float_options_take_ints(registry, make, key):
    config, _ = build(make(1), registry)
    assert json.loads(json.dumps(config.to_dict(), allow_nan=False)) == config.to_dict()


@pytest.mark.parametrize("raw,needles", [
    (tiny_config(tlb={"levels": [{"name": "l1", "sets": True, "ways": 2}]}), ["tlb.levels[0].sets = True", "integer"]),
    (tiny_config(tlb={"levels": [{"name": "l1", "sets": 4, "ways": 2.0}]}), ["tlb.levels[0].ways = 2.0", "integer"]),
    (tiny_config(experiment={"seed": False}), ["experiment.seed = False", "integer"]),
    (tiny_config(workload={**SYN, "footprint": True}), ["workload.footprint = True", "size"]),
    (tiny_config(workload={**SYN, "footprint": 1048576.0}), ["workload.footprint = 1048576.0", "size"]),
    (tiny_config(experiment={"seed": 1 << 64}), ["experiment.seed", str(1 << 64), f"maximum is {(1 << 63) - 1}"]),
])
def test_int_options_refuse_bools_floats_and_beyond_int64(registry, raw, needles):
    refused(raw, registry, *needles)


def test_pwc_takes_explicit_levels(registry):
    config, _ = build(tiny_config(machine={"slat": "intel-ept"},
                                  walk_caches=[{"type": "pwc", "levels": [3, 2]}]), registry)
    assert config.walk_caches[0].options.levels == (3, 2)


@pytest.mark.parametrize("levels,needles", [
    ([], ["walk_caches[0].levels = []", "at least one"]),
    ([2, 2], ["walk_caches[0].levels = [2, 2]", "once"]),
    ([6], ["walk_caches[0].levels[0] = 6", "maximum is 5"]),
    ([2, 5], ["walk_caches[0].levels[1] = 5", "2 to 4"]),  # the formats have 4 levels
])
def test_pwc_levels_refused(registry, levels, needles):
    refused(tiny_config(machine={"slat": "intel-ept"}, walk_caches=[{"type": "pwc", "levels": levels}]),
            registry, *needles)


def test_validate_refuses_what_run_would_crash_on(registry):
    refused(tiny_config(experiment={"seed": -1}), registry, "experiment.seed = -1", "minimum is 0")
    refused(tiny_config(workload={"source": "mix", "parts": []}), registry, "workload.parts = []", "at least one part")
    refused(tiny_config(workload={"source": "mix", "parts": [{"workload": SYN, "weight": math.nan}]}), registry,
            "workload.parts[0].weight = nan", "finite")
    refused(tiny_config(workload={**SYN, "base": 1 << 63}), registry, "workload.base", f"maximum is {(1 << 63) - 1}")
    refused(tiny_config(workload={**SYN, "distribution": "sequential", "stride": 10 ** 21}), registry,
            "workload.stride")
    refused(tiny_config(workload={**SYN, "distribution": "sequential", "accesses": 1 << 40, "stride": "8M"}),
            registry, "workload.stride", "2^63")
    refused(tiny_config(consolidation={**CONSOLIDATION, "core_ghz": math.inf}), registry, "consolidation.core_ghz")
    refused(tiny_config(workload={"source": "mix", "parts": [{"workload": SYN, "vm": 1}]}), registry,
            "workload.parts[0].vm = 1", "1 VM(s)")
    many = [{"name": f"v{i}", "memory": "4K"} for i in range((1 << 16) + 1)]
    refused(tiny_config(vms=many), registry, "vms has 65537 VMs", "16-bit")


def test_addresses_must_fit_the_guest_format(registry):
    top48 = 1 << 48  # x86-64: 4 levels x 9 bits + 12 bits of offset
    fits = tiny_config(workload={**SYN, "base": top48 - (1 << 20)})
    assert build(fits, registry)[0].workload.options.base == top48 - (1 << 20)
    refused(tiny_config(workload={**SYN, "base": top48 - (1 << 20) + 4096}), registry,
            "workload.base", "48-bit", hex(top48))
    la57 = tiny_config(machine={"slat": "native", "guest_format": "x86-64-la57"},
                       workload={**SYN, "base": top48})
    assert build(la57, registry)[0].workload.options.base == top48
    refused(tiny_config(workload={**SESSIONS, "base": top48 - 4096}), registry, "workload.base", "working_set")


@pytest.mark.parametrize("sizes,needles", [
    (["8K"], ["tlb.levels[0].page_sizes[0] = '8K'", "4K, 2M, 1G"]),
    (["4K", "512G"], ["tlb.levels[0].page_sizes[1] = '512G'", "4K, 2M, 1G"]),
    ([], ["tlb.levels[0].page_sizes = []", "at least one"]),
    (["4K", "2M", "4096"], ["tlb.levels[0].page_sizes = ['4K', '2M', '4K']", "once"]),
])
def test_tlb_page_sizes_must_be_the_formats(registry, sizes, needles):
    refused(tiny_config(tlb={"levels": [{"name": "l1", "sets": 4, "ways": 2, "page_sizes": sizes}]}),
            registry, *needles)


@pytest.mark.parametrize("caches,key", [
    ([{"type": "pwc"}, {"type": "pwc"}], "walk_caches[1].name = 'pwc'"),
    ([{"type": "psc", "level": 3}, {"type": "nested-tlb", "name": "psc-guest-l3"}], "walk_caches[1].name = 'psc-guest-l3'"),
    ([{"type": "psc"}, {"type": "psc", "ways": 4}], "walk_caches[1].name = 'psc-guest-l2'"),
])
def test_walk_cache_names_are_unique(registry, caches, key):
    refused(tiny_config(machine={"slat": "intel-ept"}, walk_caches=caches), registry, key, "walk_caches[0]")


def test_psc_level_must_exist_in_its_format(registry):
    refused(tiny_config(walk_caches=[{"type": "psc", "level": 5}]), registry,
            "walk_caches[0].level = 5", "4 levels")
    refused(tiny_config(machine={"slat": "intel-ept"}, walk_caches=[{"type": "psc", "level": 5, "dimension": "host"}]),
            registry, "walk_caches[0].level = 5", "host format has 4 levels")
    five, _ = build(tiny_config(machine={"slat": "native", "guest_format": "x86-64-la57"},
                                walk_caches=[{"type": "psc", "level": 5}]), registry)
    assert five.walk_caches[0].options.level == 5
    # a dimension the scheme lacks is allowed (one config sweeps machine.slat)
    native, _ = build(tiny_config(walk_caches=[{"type": "psc", "level": 5, "dimension": "host"}]), registry)
    assert native.walk_caches[0].options.dimension == "host"


@pytest.mark.parametrize("raw,key", [
    (tiny_config(vms=[{"name": ""}]), "vms[0].name = ''"),
    (tiny_config(vms=[{"name": "a"}, {"name": "  "}]), "vms[1].name = '  '"),
    (tiny_config(tlb={"levels": [{"name": "", "sets": 4, "ways": 2}]}), "tlb.levels[0].name = ''"),
    (tiny_config(walk_caches=[{"type": "pwc", "name": ""}]), "walk_caches[0].name = ''"),
    (tiny_config(vms=[{"name": "a"}, {"name": "a"}]), "vms[1].name = 'a'"),
])
def test_names_are_not_empty_or_repeated(registry, raw, key):
    refused(raw, registry, key)


@pytest.mark.parametrize("raw,key", [
    (tiny_config(tlb={"levels": [{"name": "l1", "sets": 10 ** 9, "ways": 4}]}), "tlb.levels[0] (sets = 1000000000"),
    (tiny_config(cost={"model": "cache-aware", "llc_size": "1T", "llc_ways": 16}), "cost.llc_size = '1T'"),
    (tiny_config(workload={**SYN, "distribution": "zipf", "footprint": "1T"}), "workload.footprint = 1T"),
    (tiny_config(walk_caches=[{"type": "pwc", "sets": 1 << 26}]), "walk_caches[0] (sets = 67108864"),
    (tiny_config(experiment={"chunk_size": 1 << 30}, workload={**SYN, "accesses": 1 << 40}), "experiment.chunk_size"),
])
def test_absurd_sizes_refused_before_anything_is_built(registry, monkeypatch, raw, key):
    monkeypatch.setenv("SLATFRAME_MEMORY_LIMIT", "2G")
    message = refused(raw, registry, key, "SLATFRAME_MEMORY_LIMIT=2G")
    assert "GiB of memory" in message


def test_memory_limit_comes_from_the_environment_or_the_machine(registry, monkeypatch):
    from slatframe.footprint import memory_limit

    monkeypatch.setenv("SLATFRAME_MEMORY_LIMIT", "3G")
    assert memory_limit()[0] == 3 << 30
    monkeypatch.setenv("SLATFRAME_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError, match="SLATFRAME_MEMORY_LIMIT"):
        build(tiny_config(), registry)
    monkeypatch.delenv("SLATFRAME_MEMORY_LIMIT")
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024
               for line in open("/proc/meminfo") if line.split(":")[0] in ("MemAvailable", "MemTotal")}
    limit = memory_limit()[0]
    assert 0 < limit <= meminfo["MemTotal"]
    assert abs(limit - meminfo["MemAvailable"]) < meminfo["MemTotal"] // 4


def test_memory_estimate_bounds_a_built_tlb(registry):
    """The estimate of a big TLB is above what building it takes, within a small factor."""
    import tracemalloc

    from slatframe.config import resolved_format
    from slatframe.footprint import estimate
    from slatframe.machine import build_machine

    raw = tiny_config(experiment={"name": "t", "engine": "reference"},
                      tlb={"levels": [{"name": "big", "sets": 1 << 15, "ways": 8}]})
    config, reg = build(raw, registry)
    small, _ = build(tiny_config(experiment={"name": "t", "engine": "reference"}), registry)
    used = []
    for c in (config, small):
        tracemalloc.start()
        machine = build_machine(c, reg)
        used.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        del machine
    measured = used[0] - used[1]
    item = next(i for i in estimate(config, reg, resolved_format(config, "guest", reg), None)
                if i.key == "tlb.levels[0]")
    assert measured <= item.nbytes <= 4 * measured, (measured, item.nbytes)


def test_validate_prints_one_sentence_and_exits_2(tmp_path, config_file, capsys):
    for override, key in [("workload.write_fraction=nan", "workload.write_fraction = nan"),
                          ("tlb.levels[0].page_sizes=['8K']", "tlb.levels[0].page_sizes[0] = '8K'"),
                          ("experiment.seed=-3", "experiment.seed = -3")]:
        assert main(["validate", str(config_file), "--set", override]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and key in err and "Traceback" not in err, err


def test_consolidation_refuses_more_sessions_than_int64():
    from slatframe.config import ConsolidationConfig
    from slatframe.consolidation import consolidation_metrics

    c = ConsolidationConfig(cores=1 << 20, core_ghz=1000.0, memory=1 << 40, session_accesses_per_s=1.0,
                            work_per_access=1e-300, session_memory=4096)
    with pytest.raises(ConfigError, match="2\\^63 sessions"):
        consolidation_metrics({"cycles.per_access": 0.0}, c)
    ok = consolidation_metrics({"cycles.per_access": 100.0}, attrs.evolve(c, work_per_access=0.0))
    assert ok["consolidation.cpu_limit"] == math.floor((1 << 20) / (100.0 / 1e12))


@pytest.mark.parametrize("raw,key", [
    (tiny_config(cost={"model": "fixed", "vm_exit": (1 << 32) + 1}), "cost.vm_exit = 4294967297"),
    (tiny_config(cost={"model": "cache-aware", "memory_latency": 1 << 40}), "cost.memory_latency"),
    (tiny_config(tlb={"levels": [{"name": "l1", "sets": 4, "ways": 2, "latency": 1 << 33}]}),
     "tlb.levels[0].latency"),
])
def test_cycle_costs_keep_totals_within_int64(registry, raw, key):
    refused(raw, registry, key, f"maximum is {1 << 32}")


def test_memory_estimate_holds_the_compiled_tag_arrays(registry):
    """The compiled tier's TLB tag array, as built, is what the estimate charges for it."""
    from slatframe.counters import Counters
    from slatframe.engine import make_engine
    from slatframe.footprint import compiled_set_bytes
    from slatframe.machine import build_machine

    levels = [{"name": "l1", "sets": 16, "ways": 4}, {"name": "l2", "sets": 128, "ways": 12}]
    config, reg = build(tiny_config(tlb={"levels": levels}), registry)
    engine = make_engine("compiled", build_machine(config, reg, Counters()), reg)
    ttag = engine.tlb[1]
    assert ttag.nbytes == 2 * 128 * compiled_set_bytes(12) == 2 * 128 * 88 * 8  # 4 x 12 + 33 words, in 11 lines


@pytest.mark.parametrize("slat", ["native", "shadow"])
def test_a_host_format_under_a_scheme_without_second_level_tables_is_refused(registry, slat):
    """It would be ignored: the scheme's walks have one dimension."""
    with pytest.raises(ConfigError, match=rf"machine.host_format = 'ept' is not allowed: SLAT scheme '{slat}' has "
                                          "no second-level tables"):
        build(tiny_config(machine={"slat": slat, "host_format": "ept"}), registry)


def test_dedup_under_a_scheme_without_a_hypervisor_is_refused_before_the_run(registry):
    with pytest.raises(ConfigError, match="dedup = 'ksm' is not allowed: SLAT scheme 'native' has no hypervisor"):
        build(tiny_config(dedup={"strategy": "ksm"}), registry)


@pytest.mark.parametrize("raw,key", [
    (tiny_config(vms=[{"name": "a"}, {"name": "a.asid.0"}]), "vms[1].name = 'a.asid.0'"),
    (tiny_config(tlb={"levels": [{"name": "l1.hits", "sets": 4, "ways": 2}]}), "tlb.levels[0].name = 'l1.hits'"),
    (tiny_config(walk_caches=[{"type": "pwc", "name": "p.q"}]), "walk_caches[0].name = 'p.q'"),
    (tiny_config(walk_caches=[{"type": "psc", "name": "psc.x"}]), "walk_caches[0].name = 'psc.x'"),
])
def test_names_in_metric_paths_hold_no_dot(registry, raw, key):
    """VMs 'a' and 'a.asid.0' with per_asid would both write vm.a.asid.0.accesses."""
    refused(raw, registry, key, "no '.'")


def test_metric_names_of_vms_and_their_address_spaces_are_distinct(registry):
    """With the names that remain allowed, every per-VM and per-asid metric has one owner:
    two VMs' per-asid counts add up to each VM's own accesses (counted from the trace)."""
    from slatframe.engine import run_experiment

    raw = tiny_config(experiment={"name": "t", "per_asid": True}, vms=[{"name": "a"}, {"name": "a-asid-0"}],
                      workload={"source": "mix", "parts": [{"workload": {**SYN, "accesses": 100}, "vm": 0},
                                                           {"workload": {**SYN, "accesses": 300}, "vm": 1}]})
    metrics = run_experiment(*build(raw, registry), engine="reference").metrics
    assert (metrics["vm.a.accesses"], metrics["vm.a-asid-0.accesses"]) == (100, 300)
    assert (metrics["vm.a.asid.0.accesses"], metrics["vm.a-asid-0.asid.0.accesses"]) == (100, 300)


@pytest.mark.parametrize("slat,size,needles", [
    ("shadow", "8K", ["vms[0].host_page_size = '8K'", "'x86-64' maps 4K, 2M, 1G", "guest format"]),
    ("native", "2M", ["vms[0].host_page_size = '2M'", "'native' has no hypervisor", "remove it"]),
    ("intel-ept", "8K", ["vms[0].host_page_size = '8K'", "'ept' maps 4K, 2M, 1G"]),
])
def test_host_page_sizes_are_those_the_scheme_maps(registry, slat, size, needles):
    refused(tiny_config(machine={"slat": slat, "host_memory": "4G"},
                        vms=[{"name": "vm0", "memory": "1G", "host_page_size": size}]), registry, *needles)


@pytest.mark.parametrize("slat,size", [("shadow", "2M"), ("shadow", "1G"), ("native", "4K")])
def test_host_page_sizes_the_scheme_maps_are_allowed(registry, slat, size):
    config, _ = build(tiny_config(machine={"slat": slat, "host_memory": "4G"},
                                  vms=[{"name": "vm0", "memory": "1G", "host_page_size": size}]), registry)
    assert config.vms[0].host_page_size == {"4K": 4096, "2M": 2 << 20, "1G": 1 << 30}[size]


def _float_fields(cls, seen):
    """(class, field) of every float option reachable from the attrs class ``cls``."""
    import typing

    import attrs

    if cls in seen or not attrs.has(cls):
        return
    seen.add(cls)
    for field in attrs.fields(cls):
        kind = typing.get_type_hints(cls).get(field.name)
        if kind is float:
            yield cls, field
        for arg in (kind, *typing.get_args(kind)):
            for inner in (arg, *typing.get_args(arg)):
                if isinstance(inner, type):
                    yield from _float_fields(inner, seen)


def test_every_float_option_has_a_maximum(registry):
    """A float without a bound validates 1e30 and then overflows where it is used
    (zipf_exponent = 1e30 printed numpy overflow warnings; a mix weight of 1e308 raised)."""
    from slatframe.config import Config

    seen: set = set()
    classes = [Config] + [p.record.options for point in registry.records.values() for p in point.values()]
    fields = [pair for cls in classes for pair in _float_fields(cls, seen)]
    assert len(fields) >= 10
    unbounded = [f"{cls.__name__}.{field.name}" for cls, field in fields
                 if field.metadata.get("max") is None and not field.metadata.get("nonfinite")]
    assert not unbounded


@pytest.mark.parametrize("raw,needles", [
    (tiny_config(workload={**SYN, "distribution": "zipf", "zipf_exponent": 1e30}),
     ["workload.zipf_exponent = 1e+30", "maximum is 64"]),
    (tiny_config(workload={"source": "mix", "parts": [{"workload": SYN, "weight": 2.0 ** 64}]}),
     ["workload.parts[0].weight", "maximum is 1000000"]),
])
def test_huge_floats_are_refused(registry, raw, needles):
    refused(raw, registry, *needles)


def test_the_largest_zipf_exponent_draws_the_first_ranked_page_without_warnings():
    """At s = 64 the weight of rank r >= 2 is below 2^-64 of rank 1's: every draw is the
    page the permutation put first; r**64 overflows for r > 2^16, silently."""
    import warnings

    import numpy as np

    from slatframe_plugins.synthetic import ZIPF_MAX, page_sampler

    pages = 1 << 18
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample = page_sampler("zipf", pages, ZIPF_MAX, np.random.default_rng(3))
        drawn = sample(np.random.default_rng(4).random(10_000))
    first = np.random.default_rng(3).permutation(pages)[0]
    assert set(drawn.tolist()) == {first}


@pytest.mark.parametrize("entry,needles", [
    ("folder", ["'folder', which is a folder", "a plugin is a Python file"]),
    ("/dev/null", ["'/dev/null', which is not a regular file", "a plugin is a Python file"]),
    ("gone.py", ["'gone.py', which does not exist"]),
])
def test_a_plugins_entry_that_is_no_file_says_what_it_is(config_file, entry, needles):
    (config_file.parent / "folder").mkdir()
    message = error_of(config_file, f"experiment.plugins=['{entry}']")
    for needle in needles:
        assert needle in message, (needle, message)
