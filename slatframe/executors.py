"""Where sweep points run: in this process, in local worker processes, or on Dask.

Every executor runs the same task, :func:`run_point`, a plain top-level function of
plain data, so it pickles to a process pool or a Dask worker; each yields
``(task, exception or None)`` as points finish, in completion order.

Local worker processes die with the sweep: each asks the kernel for a signal when its
parent dies (Linux) and watches its parent's pid (everywhere), and ignores Ctrl-C, which
the parent handles by stopping them.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import attrs

from .errors import ConfigError, SimulationError, SlatframeError

EXECUTORS = ("local", "dask")
DASK_MISSING = 'the dask executor needs dask.distributed, which is not installed: run pip install -e ".[dask]".'


def run_point(raw: dict[str, Any], base_dir: str, out: str) -> str:
    """Resolve one point's raw config (plugin files and paths relative to ``base_dir``),
    run it and write its result JSON atomically to ``out``; return ``out``. Output files the
    config names (a walk trace) go beside it, each prefixed with the point's hash, so that
    no two points write one file."""
    from .config import config_from_dict
    from .engine import run_experiment
    from .results import write_atomic

    out_path = Path(out)
    config, registry = config_from_dict(raw, where=f"sweep point {out_path.stem}", base_dir=Path(base_dir),
                                        output_dir=out_path.parent, output_prefix=f"{out_path.stem}.")
    try:
        result = run_experiment(config, registry)
    except MemoryError as exc:
        from .footprint import out_of_memory

        raise SimulationError(out_of_memory(exc)) from None
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
    check_executor(executor, jobs, scheduler)
    tasks = list(tasks)
    if not tasks:
        return iter(())
    if executor == "dask":
        return _dask(tasks, jobs, scheduler)
    if jobs == 1:
        return _serial(tasks)
    return _processes(tasks, jobs)


def check_executor(executor: str, jobs: int, scheduler: str | None) -> None:
    """Reject executor options before anything runs (:class:`ConfigError`, one sentence)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor} is not allowed: choose one of {', '.join(EXECUTORS)}.")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} is not allowed: the minimum is 1.")
    if scheduler and executor != "dask":
        raise ConfigError("--scheduler is not allowed with --executor local: it names a Dask scheduler.")
    if executor == "dask":
        _require_dask()


PR_SET_PDEATHSIG = 1  #: from <linux/prctl.h>
WATCH_INTERVAL = 0.5  #: seconds between a worker's checks of its parent's pid


def _worker_init(parent: int) -> None:
    """Initializer of a local worker process: ignore Ctrl-C (the parent stops the pool) and
    exit when the parent process dies, so no worker outlives a killed sweep."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog below still works
            pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="slatframe-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Exit this process as soon as its parent is no longer ``parent`` (it died and the
    process was re-parented)."""
    while True:
        time.sleep(WATCH_INTERVAL)
        if os.getppid() != parent:
            os._exit(1)


def _serial(tasks: list[Task]) -> Iterator[Completion]:
    for task in tasks:
        try:
            run_point(*task.args())
        except Exception as exc:  # reported by the sweep; the other points go on
            yield task, exc
        else:
            yield task, None


#: A -W option for multiprocessing's resource tracker (its warnings start "resource_tracker:"):
#: when a sweep is killed, the tracker removes the pool's semaphores, which is all that is
#: needed, and warns that they leaked.
QUIET_TRACKER = "ignore:resource_tracker:UserWarning:multiprocessing.resource_tracker"


def _processes(tasks: list[Task], jobs: int) -> Iterator[Completion]:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if QUIET_TRACKER not in sys.warnoptions:  # passed on to the tracker process the pool starts
        sys.warnoptions.append(QUIET_TRACKER)
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    finished = False
    try:
        futures = {pool.submit(run_point, *task.args()): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.exception()
        finished = True
    finally:
        if not finished:  # Ctrl-C, an error, or the caller stopped early: do not wait for running points
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
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
