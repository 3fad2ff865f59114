"""The local runner of ``onnxlrp explain-dataset``: this machine, no Ray.

With one worker (the default) the shards run in this process on one
:class:`~onnxlrp.Explainer` whose onnxruntime sessions use every core. With ``workers > 1`` a
pool of processes (started with ``spawn``, so no onnxruntime thread pool is forked) each loads
one Explainer with ``cores / workers`` threads and computes and commits whole shards. Either way
each shard is committed by :func:`~onnxlrp.dataset.rows.process_shard` (an atomic rename), so an
interrupted run leaves only whole parts. ``docs/dataset.md`` has the measurements behind the
default.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from .rows import Job, process_shard
from .store import Shard

__all__ = ["cpu_count", "run_local"]

_worker: dict[str, Any] = {}


def cpu_count() -> int:
    """The cores this process may use (its CPU affinity where the system says, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _init_worker(job: Job, threads: int) -> None:
    _worker["job"] = job
    _worker["ex"] = job.explainer(threads)


def _run_in_worker(out: str, shard: Shard) -> dict[str, Any]:
    return process_shard(_worker["ex"], _worker["job"], out, shard)


def run_local(job: Job, out: str | os.PathLike[str], shards: Sequence[Shard], workers: int = 1,
              explainer: Any = None, on_images: Callable[[int], None] | None = None,
              on_shard: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Explain and commit ``shards`` into the store in ``out``; return the shards' summaries (in finishing order).

    ``workers == 1``: in this process, with ``explainer`` (or a new one with the job's threads);
    ``on_images(n)`` is called after every batch. ``workers > 1``: a process pool, each worker
    with ``max(1, cores // workers)`` onnxruntime threads (the job's ``threads`` if set);
    ``on_images`` is called once per finished shard. ``on_shard(summary)`` is called as each
    shard is committed. An error in a shard stops the run (committed shards stay).
    """
    out = os.fspath(out)
    done: list[dict[str, Any]] = []
    if not shards:
        return done
    if workers <= 1:
        ex = explainer if explainer is not None else job.explainer()
        for shard in shards:
            summary = process_shard(ex, job, out, shard, on_images)
            done.append(summary)
            if on_shard is not None:
                on_shard(summary)
        return done
    threads = job.threads or max(1, cpu_count() // workers)
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(shards)), mp_context=ctx, initializer=_init_worker,
                               initargs=(job, threads))
    try:
        pending: set[Future[dict[str, Any]]] = {pool.submit(_run_in_worker, out, s) for s in shards}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                summary = f.result()
                done.append(summary)
                if on_images is not None:
                    on_images(summary["images"])
                if on_shard is not None:
                    on_shard(summary)
    except BaseException:
        workers_now = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers_now:  # do not wait for the shards being computed: they are not committed
            proc.terminate()
        raise
    pool.shutdown(wait=True)
    return done
