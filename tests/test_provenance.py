"""A result's ``inputs``: the sha256 of every plugin file and input file the run read,
checked against hashlib over the files' bytes read here (slatframe.provenance)."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import slatframe
from slatframe import provenance
from slatframe.cli import main
from slatframe.engine import run_experiment
from slatframe.testing import build, tiny_config
from slatframe.trace import make_trace
from slatframe.tracefile import write_npz

LFU = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "lfu_policy.py"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npz_trace(path: Path, pages: int, seed: int, vm: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    write_npz(path, make_trace(rng.integers(0, pages, 3000).astype(np.uint64) << np.uint64(12), vm=vm))
    return path


def test_run_records_each_plugin_and_trace_file_with_its_sha256(tmp_path):
    """The CLI's result names each file as its config does, with its size and sha256."""
    (tmp_path / "plugins").mkdir()
    plugin = tmp_path / "plugins" / "lfu.py"
    plugin.write_bytes(LFU.read_bytes())
    trace = npz_trace(tmp_path / "t.npz", 64, seed=1)
    config = tmp_path / "c.toml"
    config.write_text('[experiment]\nname = "p"\nplugins = ["plugins/lfu.py"]\n'
                      '[[tlb.levels]]\nname = "l1"\nsets = 4\nways = 2\npolicy = "lfu"\n'
                      '[workload]\nsource = "npz"\npath = "t.npz"\n')
    out = tmp_path / "r.json"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["inputs"] == [
        {"key": "experiment.plugins[0]", "path": result["config"]["experiment"]["plugins"][0],
         "bytes": plugin.stat().st_size, "sha256": sha256(plugin)},
        {"key": "workload.path", "path": result["config"]["workload"]["path"], "bytes": trace.stat().st_size,
         "sha256": sha256(trace)}]
    assert Path(result["config"]["workload"]["path"]).resolve() == trace.resolve()
    assert result["warnings"] == []


def test_every_part_of_a_mix_and_every_vm_image(tmp_path):
    parts = [npz_trace(tmp_path / f"part{i}.npz", 32 + i, seed=i, vm=i) for i in range(2)]
    lackey = tmp_path / "part2.lackey"
    lackey.write_text("".join(f" L {0x10000 + 4096 * i:x},8\n" for i in range(40)))
    image = tmp_path / "vm1.img"
    image.write_bytes(bytes(range(256)) * 48 + b"tail")  # 12,292 bytes: a short last page
    mix = {"source": "mix", "slice": 500, "parts": [{"workload": {"source": "npz", "path": str(parts[0])}},
                                                     {"workload": {"source": "npz", "path": str(parts[1])}, "vm": 1},
                                                     {"workload": {"source": "lackey", "path": str(lackey)}}]}
    raw = tiny_config(workload=mix, machine={"slat": "intel-ept", "host_memory": "4G"},
                      vms=[{"name": "vm0", "memory": "1G"}, {"name": "vm1", "memory": "1G", "image": str(image)}],
                      experiment={"name": "mix", "engine": "reference"})
    result = run_experiment(*build(raw))
    assert [(row["key"], row["path"], row["bytes"], row["sha256"]) for row in result.inputs] == [
        ("vms[1].image", str(image), image.stat().st_size, sha256(image)),
        ("workload.parts[0].workload.path", str(parts[0]), parts[0].stat().st_size, sha256(parts[0])),
        ("workload.parts[1].workload.path", str(parts[1]), parts[1].stat().st_size, sha256(parts[1])),
        ("workload.parts[2].workload.path", str(lackey), lackey.stat().st_size, sha256(lackey))]
    assert result.metrics["accesses"] == 3000 + 3000 + 40


def test_a_plugin_file_is_hashed_as_the_run_executed_it(tmp_path):
    """A plugin file edited after its config was loaded: the result gives the hash of the
    source that ran, not of the file as it is now."""
    plugin = tmp_path / "lfu.py"
    plugin.write_bytes(LFU.read_bytes())
    raw = tiny_config(experiment={"name": "p", "plugins": ["lfu.py"], "engine": "reference"},
                      tlb={"levels": [{"name": "l1", "sets": 2, "ways": 2, "policy": "lfu"}]})
    config, registry = build(raw, base_dir=tmp_path)
    ran = sha256(plugin)
    plugin.write_text(plugin.read_text() + "\n# edited after loading\n")
    result = run_experiment(config, registry)
    assert result.inputs[0]["sha256"] == ran != sha256(plugin)


class Toucher:
    """A run observer that changes the trace file's modification time during the run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def chunk(self, config, done, n) -> None:
        st = self.path.stat()
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_file_changed_during_the_run_gets_no_hash_and_a_warning(tmp_path):
    trace = npz_trace(tmp_path / "t.npz", 16, seed=3)
    raw = tiny_config(workload={"source": "npz", "path": str(trace)}, experiment={"name": "t", "engine": "reference"})
    result = slatframe.run(raw, observers=[Toucher(trace)])
    assert result.inputs == [{"key": "workload.path", "path": str(trace), "bytes": trace.stat().st_size,
                              "sha256": None}]
    assert len(result.warnings) == 1 and f"the input file {trace} (workload.path) changed while the run read it" \
        in result.warnings[0] and "\n" not in result.warnings[0]


def test_hashes_stream_large_files_and_are_reused_until_a_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "big.bin"
    data = np.random.default_rng(5).bytes(2 * provenance.BLOCK + 12345)
    path.write_bytes(data)
    assert provenance.file_sha256(path) == hashlib.sha256(data).hexdigest()
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert provenance.file_sha256(path) == hashlib.sha256(data).hexdigest() and opened == []  # not read again
    changed = bytes(reversed(data))  # same size, other bytes
    path.write_bytes(changed)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # a new time even on a coarse clock
    assert provenance.file_sha256(path) == hashlib.sha256(changed).hexdigest() and opened == [path]


def test_a_cancelled_hash_gives_none(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    event = threading.Event()
    event.set()
    assert provenance.file_sha256(path, event) is None
