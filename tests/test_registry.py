"""The plugin registry: entry points, plugin files, duplicate names, bad records."""
from __future__ import annotations

import pytest

from slatframe import hookimpl
from slatframe.errors import PluginError
from slatframe.records import TlbPolicyRecord
from slatframe.registry import HOOK_POINTS, Registry
from slatframe import hookspecs


def test_builtins_come_from_entry_points(registry):
    """The builtins register through the installed package's entry points."""
    assert Registry(entry_points=False).names("SLAT schemes") == []
    for point, name in [("SLAT schemes", "native"), ("TLB policies", "lru"), ("TLB policies", "fifo"),
                        ("page-table formats", "x86-64"), ("workloads", "npz"),
                        ("workloads", "synthetic"), ("cost models", "fixed")]:
        provided = registry.records[point][name]
        assert provided.source.startswith("slatframe "), provided


class _Mru:
    def __init__(self, *a):
        pass


class PluginA:
    @hookimpl
    def slatframe_tlb_policies(self):
        return [TlbPolicyRecord(name="mru", summary="a", factory=_Mru)]


class PluginB:
    @hookimpl
    def slatframe_tlb_policies(self):
        return [TlbPolicyRecord(name="mru", summary="b", factory=_Mru)]


def test_duplicate_names_both_plugins():
    with pytest.raises(PluginError) as info:
        Registry(entry_points=False, plugins=[PluginA(), PluginB()])
    message = str(info.value)
    assert "TLB policy name 'mru'" in message
    assert "PluginA" in message and "PluginB" in message


def test_duplicate_of_builtin_names_the_builtin(tmp_path):
    f = tmp_path / "dup.py"
    f.write_text("from slatframe import hookimpl\n"
                 "from slatframe.records import TlbPolicyRecord\n"
                 "@hookimpl\n"
                 "def slatframe_tlb_policies():\n"
                 "    return [TlbPolicyRecord(name='lru', summary='mine', factory=object)]\n")
    with pytest.raises(PluginError) as info:
        Registry(files=[f])
    message = str(info.value)
    assert "TLB policy name 'lru'" in message
    assert "tlb_policies" in message and "dup.py" in message


def test_plugin_file_is_registered(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text("from slatframe import hookimpl\n"
                 "from slatframe.records import TlbPolicyRecord\n"
                 "@hookimpl\n"
                 "def slatframe_tlb_policies():\n"
                 "    return [TlbPolicyRecord(name='mine', summary='s', factory=object)]\n")
    reg = Registry(files=[f])
    assert "mine" in reg.names("TLB policies") and "lru" in reg.names("TLB policies")
    assert reg.records["TLB policies"]["mine"].plugin.startswith("file:")


def test_misspelled_hook_is_an_error(tmp_path):
    f = tmp_path / "typo.py"
    f.write_text("from slatframe import hookimpl\n"
                 "@hookimpl\n"
                 "def slatframe_tlb_policys():\n"
                 "    return []\n")
    with pytest.raises(PluginError, match="slatframe_tlb_policys"):
        Registry(files=[f])


def test_non_record_is_rejected():
    class Bad:
        @hookimpl
        def slatframe_workloads(self):
            return ["not a record"]

    with pytest.raises(PluginError, match="not a registration record"):
        Registry(entry_points=False, plugins=[Bad()])


def test_every_hookspec_is_a_hook_point():
    specs = {name for name in dir(hookspecs) if name.startswith("slatframe_")}
    assert specs == set(HOOK_POINTS)


def test_an_edit_of_the_same_size_in_the_same_second_is_imported(tmp_path, monkeypatch):
    """Python's bytecode cache checks a source's mtime in whole seconds and its size: a
    plugin file rewritten within a second at the same size (a constant 3 -> 4) would load
    the stale .pyc. The registry runs the file's current text instead."""
    import os
    import sys

    from slatframe.registry import load_plugin_file

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on a machine without PYTHONDONTWRITEBYTECODE
    path = tmp_path / "constant.py"
    path.write_text("VALUE = 3\n")
    stamp = path.stat().st_mtime_ns
    assert load_plugin_file(path).VALUE == 3
    path.write_text("VALUE = 4\n")
    os.utime(path, ns=(stamp, stamp))  # the same second, the same size
    assert load_plugin_file(path).VALUE == 4


NJIT_CACHED = '''
from numba import njit


@njit(cache=True)
def kernel(x):
    return x + 1
'''


def test_loading_a_plugin_file_leaves_no_empty_bytecode_folder_beside_it(tmp_path):
    """numba makes __pycache__ beside a file whose functions say cache=True when they are
    defined; slatframe never caches plugin kernels there, so it was left empty."""
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "k.py").write_text(NJIT_CACHED)
    Registry(entry_points=False, files=[tmp_path / "fresh" / "k.py"])
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["k.py"]
    # a folder the researcher already had is theirs: left as it was, even if empty
    (tmp_path / "own" / "__pycache__").mkdir(parents=True)
    (tmp_path / "own" / "k.py").write_text(NJIT_CACHED)
    Registry(entry_points=False, files=[tmp_path / "own" / "k.py"])
    assert (tmp_path / "own" / "__pycache__").is_dir()
