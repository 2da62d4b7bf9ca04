"""Where sweep points run: in this process, in local worker processes, or on Dask.

Every executor runs the same task, :func:`run_point`, a plain top-level function of
plain data, so it pickles to a process pool or a Dask worker; each yields
``(task, exception or None)`` as points finish, in completion order.
"""
from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any, Iterable, Iterator

import attrs

from .errors import ConfigError, SlatframeError

EXECUTORS = ("local", "dask")
DASK_MISSING = 'the dask executor needs dask.distributed, which is not installed: run pip install -e ".[dask]".'


def run_point(raw: dict[str, Any], base_dir: str, out: str) -> str:
    """Resolve one point's raw config (plugin files and paths relative to ``base_dir``),
    run it and write its result JSON atomically to ``out``; return ``out``."""
    from .config import config_from_dict
    from .engine import run_experiment
    from .results import write_atomic

    config, registry = config_from_dict(raw, where=f"sweep point {Path(out).stem}", base_dir=Path(base_dir))
    result = run_experiment(config, registry)
    write_atomic(out, result.to_json())
    return out


@attrs.frozen(eq=False)
class Task:
    """One point to run: its key (the config hash) and :func:`run_point`'s arguments."""

    key: str
    raw: dict[str, Any]
    base_dir: str
    out: str

    def args(self) -> tuple[dict[str, Any], str, str]:
        return self.raw, self.base_dir, self.out


Completion = tuple[Task, "BaseException | None"]


def execute(tasks: Iterable[Task], *, executor: str = "local", jobs: int = 1,
            scheduler: str | None = None) -> Iterator[Completion]:
    """Run ``tasks`` and yield each with its exception (None on success) as it finishes.

    ``local`` with ``jobs == 1`` runs in this process, one after another; ``jobs > 1``
    uses a pool of spawned processes (numba and fork do not mix). ``dask`` starts a
    LocalCluster of ``jobs`` single-threaded worker processes, or connects to
    ``scheduler`` (``tcp://host:port``).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor} is not allowed: choose one of {', '.join(EXECUTORS)}.")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} is not allowed: the minimum is 1.")
    if scheduler and executor != "dask":
        raise ConfigError("--scheduler is not allowed with --executor local: it names a Dask scheduler.")
    if executor == "dask":
        _require_dask()
    tasks = list(tasks)
    if not tasks:
        return iter(())
    if executor == "dask":
        return _dask(tasks, jobs, scheduler)
    if jobs == 1:
        return _serial(tasks)
    return _processes(tasks, jobs)


def _serial(tasks: list[Task]) -> Iterator[Completion]:
    for task in tasks:
        try:
            run_point(*task.args())
        except Exception as exc:  # reported by the sweep; the other points go on
            yield task, exc
        else:
            yield task, None


def _processes(tasks: list[Task], jobs: int) -> Iterator[Completion]:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)),
                               mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_point, *task.args()): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.exception()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SlatframeError(DASK_MISSING) from None


def _dask(tasks: list[Task], jobs: int, scheduler: str | None) -> Iterator[Completion]:
    import logging

    from distributed import Client, LocalCluster, as_completed

    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="10s", set_as_default=False)
        else:
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None,
                                   silence_logs=logging.ERROR)
            client = Client(cluster, set_as_default=False)
    except (OSError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        what = f"connect to the Dask scheduler at {scheduler}" if scheduler else "start a Dask LocalCluster"
        raise SlatframeError(f"could not {what}: {exc}.") from None
    try:
        futures = {client.submit(run_point, *task.args(), pure=False): task for task in tasks}
        for future in as_completed(futures, loop=client.loop):
            task = futures[future]
            try:
                future.result()
            except Exception as exc:  # the worker's exception, re-raised here
                yield task, exc
            else:
                yield task, None
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
