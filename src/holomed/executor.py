"""Where the independent fits of a comparison run: one executor for ``compare``, its
selection (one job per candidate and outer split) and its refits (one job per candidate
and seed).

- ``serial``: in this process, one after the other;
- ``local``: a pool of worker processes on this machine (``concurrent.futures``, spawned
  so no thread pool state is forked), each bounded to its share of the cores;
- ``ray``: tasks on a Ray cluster (``ray.init(address)``; a local one without an
  address), each asking for its share of CPUs.

The data a job needs (the spec and the cohort) is shipped once per worker: the local
pool receives it in each worker's initializer, Ray keeps one copy in its object store
(``ray.put``) that every task reads. A job names what to do (a function importable by
name) and carries only indices and names. Every job seeds itself, so the results do not
depend on which worker ran it or in which order: with the same threads per fit, a
parallel run gives the serial run's results (tested). ``auto`` is ``local`` with one
worker per core when more than one core is available (``holomed.threads.cores``: the
affinity mask, the cgroup quota and ``HOLOMED_THREADS``), else ``serial``.

Results come back in job order; ``done(i, result)`` is called as each job finishes, for
one progress line per finished fit.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from holomed.threads import cores, set_threads

KINDS = ("auto", "serial", "local", "ray")
Done = Callable[[int, Any], None]
Job = Callable[[Any, Any], Any]  # (shared, job) -> result

_SHARED: Any = None  # a worker's copy of the shared data (set by its initializer)


def _init_worker(shared: Any, threads: int) -> None:
    global _SHARED
    _SHARED = shared
    os.environ["HOLOMED_THREADS"] = str(threads)

    set_threads(threads)


def _call(fn: Job, job: Any) -> Any:
    return fn(_SHARED, job)


class Executor:
    kind = "serial"
    workers = 1

    def map(self, fn: Job, shared: Any, jobs: Sequence[Any], done: Done | None = None) -> list:
        out = []
        for i, job in enumerate(jobs):
            out.append(fn(shared, job))
            if done is not None:
                done(i, out[-1])
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalExecutor(Executor):
    """A process pool kept for the executor's life; the shared data is sent again only
    when a different object is passed (a new pool then starts)."""

    kind = "local"

    def __init__(self, workers: int, threads: int = 1) -> None:
        self.workers, self.threads = max(1, workers), max(1, threads)
        self._pool: ProcessPoolExecutor | None = None
        self._shared_id: int | None = None

    def _pool_for(self, shared: Any) -> ProcessPoolExecutor:
        if self._pool is None or self._shared_id != id(shared):
            self.close()
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(shared, self.threads),
            )
            self._shared_id = id(shared)
        return self._pool

    def map(self, fn: Job, shared: Any, jobs: Sequence[Any], done: Done | None = None) -> list:
        pool = self._pool_for(shared)
        futures = {pool.submit(_call, fn, job): i for i, job in enumerate(jobs)}
        out: list[Any] = [None] * len(jobs)
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(finished, key=lambda f: futures[f]):
                out[futures[f]] = f.result()  # a job's error is raised here, in order
                if done is not None:
                    done(futures[f], out[futures[f]])
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _ray_call(fn: Job, shared: Any, job: Any, threads: int) -> Any:
    os.environ["HOLOMED_THREADS"] = str(threads)
    set_threads(threads)
    return fn(shared, job)


class RayExecutor(Executor):
    """Tasks on a Ray cluster (``address``: ``auto``, ``ray://host:10001`` ..., or
    ``None`` for a local cluster of this machine's cores)."""

    kind = "ray"

    def __init__(self, address: str | None, threads: int = 1, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "executor 'ray' needs the ray package: pip install 'holomed[scale]'"
            ) from err
        self._ray = ray
        self.threads = max(1, threads)
        if not ray.is_initialized():
            opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                opts["address"] = address
            else:
                opts["num_cpus"] = (workers or 1) * self.threads
            ray.init(**opts)
        self.workers = int(ray.cluster_resources().get("CPU", 1)) // self.threads
        self._remote = ray.remote(num_cpus=self.threads)(_ray_call)
        self._ref: Any = None
        self._shared_id: int | None = None

    def map(self, fn: Job, shared: Any, jobs: Sequence[Any], done: Done | None = None) -> list:
        ray = self._ray
        if self._shared_id != id(shared):
            self._ref, self._shared_id = ray.put(shared), id(shared)
        refs = [self._remote.remote(fn, self._ref, job, self.threads) for job in jobs]
        index = {r: i for i, r in enumerate(refs)}
        out: list[Any] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for r in ready:
                out[index[r]] = ray.get(r)
                if done is not None:
                    done(index[r], out[index[r]])
        return out


def make_executor(
    kind: str = "auto", workers: int | None = None, address: str | None = None
) -> Executor:
    """The executor ``kind`` (module doc) with ``workers`` processes (default: one per
    available core), each fit bounded to its share of the cores."""
    if kind not in KINDS:
        raise ValueError(f"executor must be one of {KINDS}; got {kind!r}")
    n = cores()
    if kind == "auto":
        kind = "local" if (workers or n) > 1 else "serial"
    if kind == "serial":
        return Executor()
    w = max(1, workers or n)
    threads = max(1, n // w)
    if kind == "local":
        return LocalExecutor(w, threads)
    return RayExecutor(address, threads, w)
