"""The plugin contracts carry the builtins. Walk caches: psc, pwc and nested-tlb written
again outside the core (tests/outside_walk_caches.py, one per point: start, entry, host)
give the builtins' counters exactly, 1D and 2D, through invalidations; the start-point
copies' kernels agree in both tiers and ``auto`` compiles them; a kind without kernels
takes the reference tier, saying why. Walks: the radix walk written
again as a walk plugin's kernel from walklib alone (tests/outside_radix_walk.py) gives
the compiled loop's own walk's counters, 1D and 2D."""
from __future__ import annotations

from pathlib import Path

import pytest

from slatframe.engine import choose_engine
from slatframe.testing import assert_engines_agree, build, churn_trace, run_trace, tiny_config

OUTSIDE = str(Path(__file__).resolve().parent / "outside_walk_caches.py")
OUTSIDE_WALK = str(Path(__file__).resolve().parent / "outside_radix_walk.py")
TLB = {"levels": [{"name": "l1", "sets": 2, "ways": 2}]}


def caches(prefix: str, slat: str) -> list[dict]:
    """Small caches (so they evict) of each kind, named alike for either spelling."""
    psc = f"{prefix}psc"
    out = [{"type": psc, "level": lv, "ways": 2, "name": f"g{lv}"} for lv in (4, 2, 3)]
    out.append({"type": psc, "level": 2, "sets": 3, "ways": 2, "name": "g2b"})
    out.append({"type": f"{prefix}pwc", "sets": 2, "ways": 3, "levels": [2, 3], "name": "pwc"})
    if slat not in ("native", "shadow"):  # (shadow walks 1D)
        out.append({"type": psc, "level": 3, "ways": 2, "dimension": "host", "name": "h3"})
        out.append({"type": f"{prefix}ntlb" if prefix else "nested-tlb", "ways": 4, "covers": "tables",
                    "name": "nt"})
        out.append({"type": f"{prefix}ntlb" if prefix else "nested-tlb", "sets": 2, "ways": 3, "name": "nt2"})
    return out


def config(walk_caches: list[dict], slat: str):
    raw = tiny_config(experiment={"name": "contract", "plugins": [OUTSIDE]}, tlb=TLB, walk_caches=walk_caches,
                      machine={"slat": slat, "host_memory": "16G"},
                      vms=[{"name": "vm0", "memory": "4G"}])
    return build(raw)


@pytest.mark.parametrize("slat", ["native", "intel-ept", "shadow"])
def test_the_builtin_kinds_written_outside_give_the_builtins_counts(slat):
    trace = churn_trace(len(slat))
    builtin, _ = run_trace(*config(caches("", slat), slat), trace)
    outside, _ = run_trace(*config(caches("outside-", slat), slat), trace)
    assert outside == builtin
    used = [k for k in builtin if k.startswith("walk_cache.") and k.endswith(".hits")]
    assert len(used) == len(caches("", slat)) and builtin["walk.refs"] > 0  # every cache hit at least once


@pytest.mark.parametrize("slat,names", [
    ("native", ("g4", "g2", "g3", "pwc")),
    ("intel-ept", ("g2", "pwc", "h3", "nt2")),
    ("amd-npt", ("g3", "pwc", "nt", "nt2")),
])
def test_the_copies_kernels_compile_and_agree_with_the_builtins(slat, names):
    """Four caches (the most plugin kinds one compiled run holds) from every point."""
    builtin = [c for c in caches("", slat) if c["name"] in names]
    outside = [c for c in caches("outside-", slat) if c["name"] in names]
    plugin_config, reg = config(outside, slat)
    assert choose_engine(plugin_config, reg)[0] == "compiled"
    trace = churn_trace(7 + len(slat))
    counts = assert_engines_agree(plugin_config, reg, trace, chunk_size=293)
    assert counts == assert_engines_agree(*config(builtin, slat), trace, chunk_size=293)
    assert all(counts[f"walk_cache.{name}.hits"] > 0 for name in names)


def test_a_plugin_kind_without_kernels_takes_the_reference_tier():
    plugin_config, reg = config([{"type": "outside-ntlb-uncompiled", "name": "mine"}], "amd-npt")
    tier, why = choose_engine(plugin_config, reg)
    assert tier == "reference" and "walk cache 'mine'" in why and "'host' point" in why, why


@pytest.mark.parametrize("slat,outside,options", [
    ("native", "native-outside", {}),
    ("intel-ept", "ept-outside", {}),
    ("intel-ept", "ept-outside", {"ad_bits": False}),
])
def test_the_radix_walk_as_a_plugins_kernel_gives_the_loops_counts(slat, outside, options):
    def made(scheme: str, guest_page: str):
        raw = tiny_config(experiment={"name": "walk", "plugins": [OUTSIDE_WALK]}, tlb=TLB,
                          machine={"slat": {"name": scheme, **options}, "host_memory": "16G"},
                          vms=[{"name": "vm0", "memory": "4G", "guest_page_size": guest_page}])
        return build(raw)

    for guest_page in ("4K", "2M"):
        trace = churn_trace(len(outside) + len(guest_page))
        plugin_config, reg = made(outside, guest_page)
        assert choose_engine(plugin_config, reg)[0] == "compiled"
        counts = assert_engines_agree(plugin_config, reg, trace, chunk_size=307)
        assert counts == assert_engines_agree(*made(slat, guest_page), trace, chunk_size=307)
        assert counts["walks"] > 100 and counts.get("walk.ad_writes", 0) > 0


BROKEN = '''
import importlib.util
from slatframe import hookimpl
from slatframe.records import WalkCacheRecord
spec = importlib.util.spec_from_file_location("outside_for_broken", {outside!r})
outside = importlib.util.module_from_spec(spec)
spec.loader.exec_module(outside)


class BadPwc(outside.OutsidePwc):
    def probe(self, *args):
        return "entry" if super().probe(*args) is not None else None


class BadNtlb(outside.OutsideNestedTlb):
    def probe(self, *args):
        found = super().probe(*args)
        return None if found is None else (found[0], found[1], found[2], 3000)


@hookimpl
def slatframe_walk_caches():
    return [WalkCacheRecord(name="bad-pwc", summary="a wrong probe", factory=BadPwc, options=outside.PwcOptions),
            WalkCacheRecord(name="bad-ntlb", summary="a wrong probe", factory=BadNtlb,
                            options=outside.NestedTlbOptions)]
'''


@pytest.mark.parametrize("kind,words", [("bad-pwc", "its probe returned 'entry'; an entry-point cache"),
                                        ("bad-ntlb", "a host-point cache returns None or")])
def test_a_probe_returning_the_wrong_thing_is_one_sentence(tmp_path, kind, words):
    from slatframe.engine import run_experiment
    from slatframe.errors import PluginError

    plugin = tmp_path / "broken_caches.py"
    plugin.write_text(BROKEN.format(outside=OUTSIDE))
    raw = tiny_config(experiment={"name": "bad", "plugins": [str(plugin)]}, tlb=TLB,
                      machine={"slat": "amd-npt", "host_memory": "16G"}, vms=[{"name": "vm0", "memory": "4G"}],
                      walk_caches=[{"type": kind, "name": "mine"}],
                      workload={"source": "synthetic", "accesses": 3000, "footprint": "1M"})
    with pytest.raises(PluginError, match=f"walk cache 'mine': .*{words}"):
        run_experiment(*build(raw))
