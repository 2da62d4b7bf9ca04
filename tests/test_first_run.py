"""The first run on an installation whose compiled engine is not compiled yet: a small
``auto`` run takes the reference tier (same counters), says why, and starts the build
of the compiled engine in the background; a large one waits for the compile."""
from __future__ import annotations

import subprocess
import sys

import pytest

from slatframe.engine import FIRST_RUN_LIMIT, choose_engine, run_experiment
from slatframe.engine import codegen, prebuild
from slatframe.testing import build, tiny_config


@pytest.fixture
def fresh_install(monkeypatch):
    """The engine not compiled yet, the shortcut on, background builds recorded."""
    monkeypatch.setenv("SLATFRAME_FIRST_RUN", "reference")
    monkeypatch.setattr(codegen, "engine_cached", lambda registry, shape=None: False)
    started = []
    monkeypatch.setattr(prebuild, "start_background_build", lambda files: started.append(tuple(files)) or True)
    return started


def test_a_small_first_run_takes_the_reference_tier_and_builds_meanwhile(fresh_install, monkeypatch):
    config, registry = build(tiny_config(workload={"source": "synthetic", "accesses": 3000}))
    first = run_experiment(config, registry)
    assert first.engine == "reference"
    assert first.engine_reason.startswith("auto: the compiled engine is not compiled yet")
    assert "being compiled in the background" in first.engine_reason and fresh_install == [()]
    monkeypatch.setenv("SLATFRAME_FIRST_RUN", "compiled")
    later = run_experiment(config, registry)
    assert later.engine == "compiled" and later.metrics == first.metrics


def test_a_large_first_run_waits_for_the_compile(fresh_install):
    config, registry = build(tiny_config(workload={"source": "synthetic", "accesses": FIRST_RUN_LIMIT + 1}))
    assert choose_engine(config, registry)[0] == "compiled"
    config, registry = build(tiny_config(workload={"source": "synthetic", "accesses": FIRST_RUN_LIMIT}))
    assert choose_engine(config, registry)[0] == "reference"
    assert choose_engine(config, registry, "compiled")[0] == "compiled"  # asked for: compiled
    assert fresh_install == []  # choosing starts nothing; running does


def test_engine_cached_looks_for_the_compiled_loop(registry, tmp_path, monkeypatch):
    run_experiment(*build(tiny_config(experiment={"name": "c", "engine": "compiled"})))
    assert codegen.engine_cached(registry)
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path))
    assert not codegen.engine_cached(registry)


def test_one_build_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("SLATFRAME_CACHE_DIR", str(tmp_path))
    held = prebuild._lock()
    assert held is not None and prebuild._lock() is None
    assert prebuild.start_background_build(()) is False  # a build is running
    import os

    os.utime(held, (0, 0))  # a lock left by a build that died long ago does not stop a new one
    monkeypatch.setattr(prebuild.subprocess, "Popen", lambda *a, **k: None)
    assert prebuild.start_background_build(()) is True and not held.exists()
    assert prebuild._lock() is not None
    monkeypatch.setenv("SLATFRAME_BACKGROUND_BUILD", "0")
    (tmp_path / prebuild.LOCK).unlink()
    assert prebuild.start_background_build(()) is False


def test_the_build_command_compiles_or_finds_the_engine(registry):
    proc = subprocess.run([sys.executable, "-m", "slatframe.engine.prebuild"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert codegen.engine_cached(registry)
