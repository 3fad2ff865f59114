"""The Ray runner of ``onnxlrp explain-dataset --ray``: Ray Data over a pool of actors.

The driver turns the shards still to do into a Ray dataset of shard descriptors
(``ray.data.from_items``, one block per shard) and maps it with :class:`ShardActor` in an
actor pool (``map_batches(..., concurrency=workers)``, one shard per call). Each actor loads one
:class:`~onnxlrp.Explainer` when it starts and keeps it; for every shard it computes the rows
(:func:`~onnxlrp.dataset.rows.process_shard`, the function the local runner calls too) and
commits the shard's part itself (an atomic rename to a name fixed by the shard's images), then
returns a one-row summary to the driver. Ray Data restarts a lost actor and retries its shard;
the retry writes the same final name, so rows are never duplicated (a shard whose actor dies
:data:`TASK_RETRIES` times in a row fails the run). After the pass the driver
re-reads the store and runs any shard that is still missing again (at most ``passes`` times).

The model file, the images and the output folder must be at the same paths on every node (a
shared file system) on a multi-node cluster.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import OnnxLrpError
from .rows import Job, process_shard
from .store import Shard, committed_state

__all__ = ["CRASH_ENV", "RayRunnerError", "ShardActor", "cluster_workers", "init_ray", "run_ray"]

#: Test hook: ``PATH:N`` makes an actor exit abruptly (``os._exit``) before committing its N-th shard,
#: once: the file PATH is created then, and while it exists no actor crashes again.
CRASH_ENV = "ONNXLRP_TEST_CRASH_AT"


#: How many times Ray retries a shard whose actor died.
TASK_RETRIES = 3


class RayRunnerError(OnnxLrpError):
    """Ray is missing, the cluster cannot be reached, or shards could not be completed."""


class ShardActor:
    """A Ray Data callable class: one Explainer per actor, loaded once; one shard per call."""

    def __init__(self, job: Job, out: str, threads: int | None) -> None:
        self.job = job
        self.out = out
        self.ex = job.explainer(threads)
        self.calls = 0

    def _maybe_crash(self) -> None:
        spec = os.environ.get(CRASH_ENV)
        if not spec:
            return
        marker, _, nth = spec.rpartition(":")
        if self.calls == int(nth):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(17)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Process the shards of ``batch`` (columns ``seq`` and ``paths``); return one summary row per shard."""
        summaries: dict[str, list[Any]] = {"seq": [], "part": [], "images": [], "rows": [], "errors": []}
        for seq, paths in zip(batch["seq"], batch["paths"], strict=True):
            self.calls += 1
            shard = Shard(int(seq), tuple(str(p) for p in paths))
            self._maybe_crash()
            summary = process_shard(self.ex, self.job, self.out, shard)
            for k in summaries:
                summaries[k].append(summary[k])
        return summaries


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayRunnerError("--ray needs Ray: pip install 'onnxlrp[ray]'") from None
    return ray


def init_ray(address: str, num_cpus: int | None = None) -> bool:
    """Connect to Ray: ``"auto"`` joins the running cluster, ``"local"`` starts one on this machine
    (``num_cpus`` cores), anything else is a cluster address (``ray://host:10001`` or ``host:6379``).
    Returns True when this call started or joined Ray (and so should shut it down), False when Ray
    was already initialised in this process."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False,
                              "configure_logging": True}
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a running Ray cluster (ray.init(address='auto'))" if address == "auto" else f"Ray at {address!r}"
        raise RayRunnerError(f"cannot connect to {where}: {' '.join(str(exc).split())[:300]}") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no per-dataset INFO or advice lines on stderr
    return True


def cluster_workers(cpus_per_worker: float = 1.0) -> int:
    """How many actors of ``cpus_per_worker`` CPUs the connected Ray cluster holds (at least 1)."""
    ray = _import_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))


def _pass(ray: Any, job: Job, out: str, shards: Sequence[Shard], workers: int, threads: int | None,
          gpus_per_worker: float, cpus_per_worker: float, on_shard: Callable[[dict[str, Any]], None] | None,
          ) -> None:
    items = [{"seq": s.seq, "paths": list(s.paths)} for s in shards]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # a lost actor is restarted and its shard retried, but a shard that kills its actor every time
    # (a poison image crashing a native library) must fail the run, not loop for ever
    remote: dict[str, Any] = {"num_cpus": cpus_per_worker, "max_task_retries": TASK_RETRIES}
    if gpus_per_worker:
        remote["num_gpus"] = gpus_per_worker
    kwargs: dict[str, Any] = {"fn_constructor_kwargs": {"job": job, "out": out, "threads": threads},
                              "batch_size": 1, "concurrency": max(1, min(workers, len(items))),
                              "batch_format": "numpy", **remote}
    with warnings.catch_warnings():  # max_task_retries has no named parameter in Ray Data (2.60) yet
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            ds = ds.map_batches(ShardActor, **kwargs)
        except TypeError:  # a Ray Data without the remote-arguments catch-all: its default retries
            kwargs.pop("max_task_retries")
            ds = ds.map_batches(ShardActor, **kwargs)
    for summary in ds.iter_rows():
        if on_shard is not None:
            on_shard({k: (v.item() if hasattr(v, "item") else v) for k, v in summary.items()})


def run_ray(job: Job, out: str | os.PathLike[str], shards: Sequence[Shard], address: str = "local",
            workers: int = 2, threads: int | None = None, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
            num_cpus: int | None = None, on_shard: Callable[[dict[str, Any]], None] | None = None,
            passes: int = 3) -> None:
    """Explain and commit ``shards`` into the store in ``out`` on Ray (see the module docstring).

    ``address``: ``"local"``, ``"auto"`` or a cluster address (:func:`init_ray`); ``workers``
    actors (0: the cluster's CPUs divided by ``cpus_per_worker``), each reserving ``cpus_per_worker``
    CPUs and ``gpus_per_worker`` GPUs, with
    ``threads`` onnxruntime threads (default: ``cpus_per_worker``). ``on_shard(summary)`` is
    called as shards finish (a retried shard may be reported twice). Raises
    :class:`RayRunnerError` if shards are still missing after ``passes`` passes.
    """
    ray = _import_ray()
    out = os.fspath(Path(out).resolve())
    started = init_ray(address, num_cpus)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        threads = threads or max(1, int(cpus_per_worker))
        if workers <= 0:
            workers = cluster_workers(cpus_per_worker)
        todo = list(shards)
        for _ in range(passes):
            if not todo:
                break
            try:
                _pass(ray, job, out, todo, workers, threads, gpus_per_worker, cpus_per_worker, on_shard)
            except OnnxLrpError:
                raise
            except Exception as exc:  # noqa: BLE001 - Ray wraps a task's error; keep its first line
                cause = getattr(exc, "cause", None)
                if isinstance(cause, OnnxLrpError):
                    raise cause from None
                text = " ".join(str(exc).split())
                raise RayRunnerError(f"the Ray run failed: {text[:400]}") from None
            done = committed_state(out).done
            todo = [s for s in todo if not all(i in done for i in s.ids)]
        if todo:
            raise RayRunnerError(f"{len(todo)} shard(s) were not committed after {passes} passes; run the command "
                                 "again to continue")
    finally:
        if started:
            ray.shutdown()
