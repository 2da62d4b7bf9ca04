"""Reading ahead (slatframe.prefetch): the consumer sees what iterating the chunks itself
would give, the reader stops when the run stops, and a workload that refills one buffer
(a researcher's plugin file) is not read ahead, while one that says it yields fresh
arrays and does not is refused."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from slatframe.engine import run_experiment
from slatframe.errors import PluginError
from slatframe.prefetch import prefetched
from slatframe.testing import build, tiny_config


class Boom(Exception):
    pass


def source(n: int, fail_at: int | None, log: list):
    try:
        for i in range(n):
            if i == fail_at:
                raise Boom(i)
            yield i
    finally:
        log.append("closed")


def consume(items) -> tuple[list, object]:
    seen = []
    try:
        for x in items:
            seen.append(x)
    except Boom as exc:
        return seen, exc.args[0]
    return seen, None


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), fail_at=st.none() | st.integers(0, 12), ahead=st.integers(1, 3))
def test_prefetched_gives_what_iterating_gives(n, fail_at, ahead):
    direct = consume(source(n, fail_at, []))
    log: list = []
    assert consume(prefetched(source(n, fail_at, log), ahead)) == direct
    assert log == ["closed"]


def test_a_consumer_that_stops_stops_the_reader_and_closes_the_source():
    log: list = []
    before = threading.active_count()
    items = prefetched(source(1000, None, log))
    assert next(items) == 0
    items.close()
    assert log == ["closed"] and threading.active_count() == before


PLUGIN = '''
import attrs
import numpy as np
from slatframe import hookimpl
from slatframe.records import WorkloadRecord
from slatframe.trace import TRACE_DTYPE


@attrs.frozen
class Options:
    chunks: int = 40
    size: int = 50


def refill(options, ctx):
    """One buffer, refilled for every chunk: page i of chunk k is (7k + 3i) % 97."""
    buf = np.zeros(options.size, dtype=TRACE_DTYPE)
    for k in range(options.chunks):
        buf["vaddr"] = ((7 * k + 3 * np.arange(options.size)) % 97) << 12
        buf["op"] = k % 2
        yield buf


def fresh(options, ctx):
    for chunk in refill(options, ctx):
        yield chunk.copy()


@hookimpl
def slatframe_workloads():
    return [WorkloadRecord(name="refill", summary="one buffer", factory=refill, options=Options),
            WorkloadRecord(name="fresh", summary="new arrays", factory=fresh, options=Options, fresh_chunks=True),
            WorkloadRecord(name="refill-says-fresh", summary="one buffer, wrongly declared", factory=refill,
                           options=Options, fresh_chunks=True)]
'''


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("read_ahead") / "buffers.py"
    path.write_text(PLUGIN)
    return str(path)


def run(plugin_file: str, workload: str, engine: str) -> dict:
    raw = tiny_config(experiment={"name": "ra", "plugins": [plugin_file], "chunk_size": 50},
                      tlb={"levels": [{"name": "l1", "sets": 4, "ways": 2}]}, workload={"source": workload})
    config, registry = build(raw)
    return run_experiment(config, registry, engine=engine).metrics


def test_a_buffer_refilling_workload_is_not_read_ahead(plugin_file):
    """Its counts in the compiled tier (which reads ahead what it may) are those of the
    same records yielded as new arrays, and of the reference tier."""
    refilled = run(plugin_file, "refill", "compiled")
    assert refilled == run(plugin_file, "fresh", "compiled") == run(plugin_file, "fresh", "reference")
    assert refilled["accesses"] == 40 * 50 and refilled["walks"] > 97


@pytest.mark.parametrize("engine", ["compiled", "reference"])
def test_a_workload_that_says_fresh_and_refills_is_refused(plugin_file, engine):
    with pytest.raises(PluginError, match=r"workload 'refill-says-fresh': yielded, after record 50, an array that "
                                          r"shares memory with one it yielded before, but its record says "
                                          r"fresh_chunks=True"):
        run(plugin_file, "refill-says-fresh", engine)


def test_slices_of_one_array_are_fresh():
    """Disjoint slices of one trace share no memory: a reader may yield them."""
    from slatframe.trace import TRACE_DTYPE
    from slatframe.workload import checked_chunks

    trace = np.zeros(100, dtype=TRACE_DTYPE)
    chunks = list(checked_chunks((trace[i:i + 10] for i in range(0, 100, 10)), "w", 1, fresh=True))
    assert sum(map(len, chunks)) == 100
    with pytest.raises(PluginError, match="after record 10"):
        list(checked_chunks(iter([trace[:10], trace[5:15]]), "w", 1, fresh=True))


@pytest.mark.parametrize("engine", ["compiled", "reference"])
def test_a_mix_of_a_buffer_refilling_workload_gives_its_records(plugin_file, engine):
    """mix keeps a part's chunk while it takes the next one (slices of 120 over chunks of
    50): a refilled buffer must not change what it kept (it counted 598 walks, not 600)."""
    def mixed(source: str) -> dict:
        raw = tiny_config(experiment={"name": "mix", "plugins": [plugin_file], "chunk_size": 64},
                          workload={"source": "mix", "slice": 120,
                                    "parts": [{"workload": {"source": source, "size": 50, "chunks": 12}}]})
        config, registry = build(raw)
        return run_experiment(config, registry, engine=engine).metrics

    assert mixed("refill") == mixed("fresh") == run_plain(plugin_file, engine)


def run_plain(plugin_file: str, engine: str) -> dict:
    """The same 600 records without mix (the mix of one part at vm 0 runs them in order)."""
    raw = tiny_config(experiment={"name": "mix", "plugins": [plugin_file], "chunk_size": 64},
                      workload={"source": "fresh", "size": 50, "chunks": 12})
    config, registry = build(raw)
    return run_experiment(config, registry, engine=engine).metrics
