"""benchmarks --against puts loop.py as it was at a commit into the engine's generated
module: with the working tree's own text the module must be the engine's, an edit must
show in it, and the engine's own source path must be left as it was."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.against import loop_at, module_with_loop, run_parameters  # noqa: E402
from slatframe.engine import codegen  # noqa: E402
from slatframe.testing import build, tiny_config  # noqa: E402


def test_the_old_loop_goes_into_the_module_in_place_of_the_working_trees():
    _, registry = build(tiny_config())
    own = codegen.LOOP_SOURCE.read_text()
    assert module_with_loop(registry, own) == codegen.module_source(registry)
    edited = own.replace("BUCKETS = 32\n", "BUCKETS = 64\n")
    assert edited != own
    module = module_with_loop(registry, edited)
    assert "BUCKETS = 64\n" in module and "BUCKETS = 32\n" not in module
    assert codegen.LOOP_SOURCE == Path(codegen.__file__).with_name("loop.py")


def test_a_commit_git_does_not_know_is_one_sentence():
    import pytest
    with pytest.raises(SystemExit, match="git cannot show slatframe/engine/loop.py at 'no-such-commit'"):
        loop_at("no-such-commit")
    with pytest.raises(SystemExit, match="not an option"):  # (git show would take it as one)
        loop_at("--output=/tmp/x")


def test_rows_pool_every_process_rates_and_keep_each_process_apart():
    from benchmarks.against import pooled_rows
    runs = [{"walk": {"old": [4.0, 3.0], "new": [5.0, 4.5]}},
            {"walk": {"old": [2.0, 3.5], "new": [4.25, 6.0]}}]
    rows = pooled_rows(runs)
    assert [row[:2] for row in rows] == [("walk", "old"), ("walk", "new")]
    assert rows[0][2] == "4.00 3.00 | 2.00 3.50" and rows[1][2] == "5.00 4.50 | 4.25 6.00"
    # the median of four pooled rates: the mean of the middle two
    assert rows[0][3] == f"{(3.0 + 3.5) / 2:.2f}" and rows[1][3] == f"{(4.5 + 5.0) / 2:.2f}"


def test_runs_parameters_are_read_from_the_text():
    """What decides between timing loop copies and timing whole engines: run's parameter
    names in a loop.py text (here the working tree's, against the signature numba sees)."""
    import inspect

    from slatframe.engine import loop
    own = codegen.LOOP_SOURCE.read_text()
    assert run_parameters(own) == list(inspect.signature(loop.run.py_func).parameters)
    assert run_parameters(own.replace("def run(chunk, start,", "def run(chunk, first,"))[:2] == ["chunk", "first"]
    assert run_parameters("x = 1\n") == []
