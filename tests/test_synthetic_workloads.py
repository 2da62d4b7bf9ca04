"""Synthetic generators: each checked against what its one-sentence definition implies."""
from __future__ import annotations

import attrs
import numpy as np
import pytest

from slatframe.testing import build, tiny_config
from slatframe.trace import CONTEXT_SWITCH, MAP, READ, UNMAP, WRITE
from slatframe_plugins.synthetic import SessionsOptions, SyntheticOptions, generate, sessions


def gen(chunk=1000, seed=3, n_vms=1, **options):
    return np.concatenate(list(generate(SyntheticOptions(**options), chunk, seed, n_vms)))


@pytest.mark.parametrize("dist", ["uniform", "zipf", "sequential", "gups", "pointer-chase"])
def test_chunk_size_never_changes_the_stream(dist):
    options = dict(distribution=dist, accesses=5001, footprint=1 << 20, write_fraction=0.2)
    assert np.array_equal(gen(chunk=333, **options), gen(chunk=5001, **options))


def test_sequential_strides_and_wraps():
    t = gen(distribution="sequential", accesses=100, footprint=4096, stride=256, base=0x10000)
    assert t["vaddr"].tolist() == [0x10000 + (i * 256) % 4096 for i in range(100)]


def test_gups_reads_then_writes_the_same_word():
    t = gen(distribution="gups", accesses=2000, footprint=1 << 16, chunk=77)
    assert (t["op"][0::2] == READ).all() and (t["op"][1::2] == WRITE).all()
    assert np.array_equal(t["vaddr"][0::2], t["vaddr"][1::2])
    assert (t["vaddr"] % 8 == 0).all() and len(np.unique(t["vaddr"])) > 900


def test_pointer_chase_visits_every_page_once_per_lap():
    pages = 64
    t = gen(distribution="pointer-chase", accesses=3 * pages, footprint=pages * 4096)
    laps = (t["vaddr"] >> np.uint64(12)).reshape(3, pages)
    for lap in laps:
        assert len(np.unique(lap)) == pages
    assert np.array_equal(laps[0], laps[1])
    assert not np.array_equal(laps[0], np.sort(laps[0]))  # not a sequential layout


def test_sessions_switches_and_churns():
    o = SessionsOptions(processes=5, accesses=10_000, switch_every=300, churn_rate=0.05, working_set=64 << 10)
    t = np.concatenate(list(sessions(o, 777, seed=2, n_vms=1)))
    access = np.isin(t["op"], (READ, WRITE))
    assert access.sum() == 10_000
    switches = np.flatnonzero(t["op"] == CONTEXT_SWITCH)
    assert len(switches) == -(-10_000 // 300)
    assert t["vaddr"][switches].tolist() == [i % 5 for i in range(len(switches))]
    # every record between two switches carries the asid the switch named
    for a, b in zip(switches, list(switches[1:]) + [len(t)]):
        assert (t["asid"][a:b] == t["vaddr"][a]).all()
    unmaps = np.flatnonzero(t["op"] == UNMAP)
    assert 0.03 < len(unmaps) / 10_000 < 0.07
    assert (t["op"][unmaps + 1] == MAP).all() and np.array_equal(t["vaddr"][unmaps], t["vaddr"][unmaps + 1])
    assert np.isin(t["op"][unmaps + 2], (READ, WRITE)).all()
    pages = np.unique(t["vaddr"][access] >> np.uint64(12))
    assert len(pages) <= 16


def test_sessions_spawn_commands_and_map_shared_libraries():
    """Spawns happen at turn starts once spawn_every accesses have passed since the last
    one was due (worked out here by stepping the rule); each is fork, exec, the
    command's library pages mapped shared, its accesses, exit, as asid processes + parent;
    every session process maps the shared pages once, at its first turn."""
    from slatframe.trace import EXEC, EXIT, FORK, MAP_SHARED

    P, N, turn_len, every, spawn_n = 3, 20_000, 1000, 3000, 700
    o = SessionsOptions(processes=P, accesses=N, switch_every=turn_len, churn_rate=0.0, working_set=64 << 10,
                        shared_pages=10, shared_fraction=0.25, spawn_every=every, spawn_accesses=spawn_n,
                        spawn_private_pages=5, spawn_shared_pages=4)
    t = np.concatenate(list(sessions(o, 997, seed=3, n_vms=1)))
    parents, done, due, turn = [], 0, every, 0
    while done < N:
        if done >= due:
            parents.append(turn % P)
            done += min(spawn_n, N - done)
            due += every
        done += min(turn_len, N - done)
        turn += 1
    forks = np.flatnonzero(t["op"] == FORK)
    assert t["asid"][forks].tolist() == parents
    assert t["vaddr"][forks].tolist() == [P + p for p in parents]
    for at in forks:
        child = int(t["vaddr"][at])
        life = t[at + 1:]
        end = int(np.flatnonzero(life["op"] == EXIT)[0])
        assert (life["asid"][:end + 1] == child).all() and life["op"][0] == EXEC
        assert (life["op"][1:5] == MAP_SHARED).all()
        assert int(np.isin(life["op"][:end], (READ, WRITE)).sum()) == min(spawn_n, N)
        pages = np.unique(life["vaddr"][5:end] >> np.uint64(12))
        assert len(pages) <= 5 + 4
    assert np.isin(t["op"], (READ, WRITE)).sum() == N
    assert (t["op"] == MAP_SHARED).sum() == P * 10 + len(parents) * 4
    session = np.isin(t["op"], (READ, WRITE)) & (t["asid"] < P)
    in_shared = t["vaddr"][session] >= np.uint64(o.shared_base)
    assert 0.2 < in_shared.mean() < 0.3


def test_mix_time_slices_parts_onto_their_vms(registry):
    raw = tiny_config(vms=[{"name": "a"}, {"name": "b"}], workload={
        "source": "mix", "slice": 100, "parts": [
            {"weight": 2, "vm": 0, "workload": {"source": "synthetic", "accesses": 1000, "footprint": "64K"}},
            {"weight": 1, "vm": 1, "workload": {"source": "synthetic", "accesses": 300, "footprint": "64K",
                                                "distribution": "sequential"}}]})
    config, reg = build(raw, registry)
    from slatframe.engine import workload_chunks

    t = np.concatenate(list(workload_chunks(config, reg)))
    assert len(t) == 1300
    vm = t["vm"].tolist()
    # turns of 100 records of part 0 and 50 of part 1, until part 1 ends after 6 turns
    expected = ([0] * 100 + [1] * 50) * 6 + [0] * 400
    assert vm == expected
    seq = t[t["vm"] == 1]["vaddr"]
    assert (np.diff(seq.astype(np.int64)) == 64).all()


def test_mix_part_vm_out_of_range(registry):
    from slatframe.engine import workload_chunks
    from slatframe.errors import ConfigError

    raw = tiny_config(workload={"source": "mix", "parts": [
        {"vm": 3, "workload": {"source": "synthetic", "accesses": 10}}]})
    with pytest.raises(ConfigError, match=r"workload.parts\[0\].vm = 3"):  # validate refuses it, as run does
        config, reg = build(raw, registry)
        list(workload_chunks(config, reg))


@pytest.mark.parametrize("threads, vms", [(1, 1), (3, 1), (4, 2)])
def test_synthetic_threads_take_each_vms_records_in_turn(threads, vms):
    o = SyntheticOptions(accesses=1000, footprint=1 << 20, threads=threads)
    t = np.concatenate(list(generate(o, 97, 1, vms)))
    for vm in range(vms):
        mine = t[t["vm"] == vm]
        assert (mine["thread"] == np.arange(len(mine)) % threads).all()


def test_sessions_threads_process_runs_each_process_as_its_own_thread():
    """Every record of process p (its switches, accesses, churn, library maps) is thread
    p, and so is every record of a command it spawns (asid processes + p); with threads =
    "one" the same records are all thread 0."""
    o = SessionsOptions(processes=5, working_set=1 << 20, accesses=60_000, switch_every=4000, churn_rate=0.01,
                        spawn_every=20_000, spawn_accesses=500, spawn_private_pages=4, spawn_shared_pages=2,
                        shared_pages=4, threads="process")
    t = np.concatenate(list(sessions(o, 1000, 1, 1)))
    one = np.concatenate(list(sessions(attrs.evolve(o, threads="one"), 1000, 1, 1)))
    assert np.array_equal(t[["vm", "asid", "op", "vaddr"]], one[["vm", "asid", "op", "vaddr"]])
    assert (one["thread"] == 0).all()
    assert (t["thread"] == t["asid"] % o.processes).all()
    assert set(t["asid"].tolist()) > set(range(o.processes))  # spawned commands ran
