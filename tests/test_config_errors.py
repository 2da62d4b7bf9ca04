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
