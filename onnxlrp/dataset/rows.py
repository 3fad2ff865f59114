"""From image files to the store's rows: the one function both runners (local and Ray) call.

:func:`explain_files` reads a list of images (each once, bounded, with ``onnxlrp.image``),
runs the model on them in batches (:meth:`~onnxlrp.Explainer.predict`), chooses the target
classes of each image (fixed classes, the predicted class, or the top K), explains every
chosen class with every method in one batched call per method
(:meth:`~onnxlrp.Explainer.explain` with ``targets=``), and turns each map into a row: the
summary numbers of the full float32 map, then the map summed over channels (or not, with
``channels="all"``), average-pooled to ``pool`` if asked, as little-endian float16 bytes.
An image that cannot be read, or whose explanation fails, becomes an error record instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..image import (
    Preprocess,
    open_image,  # one bounded read gives both the pixels and the original size
    preprocess,
)
from .store import SCHEMA, Shard, commit_part, image_id

__all__ = ["Job", "Rows", "explain_files", "pool_map", "process_shard", "to_image_order"]

FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to explain files (picklable: it travels to worker processes and Ray actors).

    ``targets`` are the resolved classes (None = the predicted class) with ``target_specs`` the
    text that chose each; with ``top_k`` they are ignored and the K best classes are taken
    (specs ``top-1`` … ``top-K``). ``options`` are each method's options (NumPy arrays allowed).
    ``channels`` is ``"sum"`` or ``"all"``; ``pool`` an ``(h, w)`` output size or None.
    """

    model: str
    preprocess: Preprocess
    methods: tuple[str, ...]
    options: dict[str, dict[str, Any]]
    targets: tuple[int | None, ...] = (None,)
    target_specs: tuple[str, ...] = ("top",)
    top_k: int | None = None
    labels: tuple[str, ...] | None = None
    channels: str = "sum"
    pool: tuple[int, int] | None = None
    batch_size: int = 8
    device: str = "cpu"
    output_name: str | None = None
    threads: int | None = None

    def explainer(self, threads: int | None = None) -> Any:
        """A new :class:`~onnxlrp.Explainer` of the job's model (``threads`` replaces the job's)."""
        from ..explainer import Explainer

        return Explainer(self.model, device=self.device, output=self.output_name,
                         threads=threads if threads is not None else self.threads)

    def options_json(self, method: str) -> str:
        """The method's options as JSON text (arrays as nested lists), as the store's ``options`` column has them."""
        return json.dumps(jsonable(self.options.get(method, {})), sort_keys=True)


def jsonable(value: Any) -> Any:
    """``value`` with NumPy arrays and numbers turned into lists and Python numbers (for JSON); an array
    with one non-unit axis (a per-channel box) becomes a flat list."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):  # a per-channel (1, C, 1, 1) box becomes C numbers
        return value.reshape(-1).tolist() if max(value.shape, default=1) == value.size else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Rows:
    """The result of :func:`explain_files`: columns of :data:`~.store.SCHEMA`, error records, the image ids in order."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in SCHEMA})
    errors: list[dict[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of rows."""
        return len(self.columns["image_path"])


def to_image_order(heat: np.ndarray, layout: str) -> np.ndarray:
    """One sample's map as ``(C, H, W)`` whatever the model's layout (NHWC maps are transposed)."""
    return heat if layout == "NCHW" else np.moveaxis(heat, -1, 0)


def pool_map(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Average-pool the last two axes of ``a`` to ``size = (h, w)``: output cell ``(i, j)`` is the mean
    of rows ``floor(i·H/h) .. ceil((i+1)·H/h)`` and the same for columns (adaptive average pooling; exact
    block means when ``h`` divides ``H``). Raises :class:`InputError` when ``size`` exceeds the map."""
    h, w = size
    hh, ww = a.shape[-2:]
    if h > hh or w > ww:
        raise InputError(f"--pool {h}x{w} is larger than the heatmap ({hh}x{ww})")
    c = np.zeros(a.shape[:-2] + (hh + 1, ww + 1), dtype=np.float64)
    c[..., 1:, 1:] = np.cumsum(np.cumsum(a, axis=-2, dtype=np.float64), axis=-1)
    r0 = np.array([(i * hh) // h for i in range(h)])
    r1 = np.array([-((-(i + 1) * hh) // h) for i in range(h)])
    q0 = np.array([(j * ww) // w for j in range(w)])
    q1 = np.array([-((-(j + 1) * ww) // w) for j in range(w)])
    s = (c[..., r1[:, None], q1[None, :]] - c[..., r0[:, None], q1[None, :]]
         - c[..., r1[:, None], q0[None, :]] + c[..., r0[:, None], q0[None, :]])
    area = (r1 - r0)[:, None] * (q1 - q0)[None, :]
    return (s / area).astype(np.float32)


def _stored_map(heat: np.ndarray, job: Job) -> np.ndarray:
    m = to_image_order(heat, job.preprocess.layout)
    if job.channels == "sum":
        m = m.sum(axis=0, dtype=np.float64).astype(np.float32)
    if job.pool is not None:
        m = pool_map(m, job.pool)
    return np.clip(m, -FLOAT16_MAX, FLOAT16_MAX).astype("<f2")


def _targets(job: Job, logits: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``(T, N)`` classes for a batch and the spec of each of the T rows."""
    order = np.argsort(-logits, axis=1, kind="stable")
    if job.top_k is not None:
        if job.top_k > logits.shape[1]:
            raise InputError(f"--top-k {job.top_k} is more than the model's {logits.shape[1]} classes")
        return order[:, : job.top_k].T.astype(np.int64), [f"top-{k}" for k in range(1, job.top_k + 1)]
    rows = [order[:, 0] if t is None else np.full(logits.shape[0], t) for t in job.targets]
    tg = np.stack(rows).astype(np.int64)
    bad = tg[(tg < 0) | (tg >= logits.shape[1])]
    if bad.size:
        raise InputError(f"class index {int(bad[0])} is out of range: the model has {logits.shape[1]} classes "
                         f"(0..{logits.shape[1] - 1})")
    return tg, list(job.target_specs)


def _softmax(logits: np.ndarray) -> np.ndarray:
    y = logits.astype(np.float64)
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _explain_batch(ex: Any, job: Job, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, np.ndarray]]:
    """Logits, ``(T, N)`` targets, their specs and ``{method: (T, N, *sample)}`` maps of one batch."""
    n = x.shape[0]
    if ex.fixed_batch and n < ex.fixed_batch:  # a fixed-batch model: pad with copies of the last sample
        x = np.concatenate([x, np.repeat(x[-1:], ex.fixed_batch - n, axis=0)])
    logits = ex.predict(x)
    tg, specs = _targets(job, logits[:n])
    if ex.fixed_batch and tg.shape[1] < x.shape[0]:
        tg = np.concatenate([tg, np.repeat(tg[:, -1:], x.shape[0] - n, axis=1)], axis=1)
    heats = {m: np.asarray(ex.explain(x, targets=tg, method=m, **job.options.get(m, {})))[:, :n]
             for m in job.methods}
    return logits[:n], tg[:, :n], specs, heats


def _add_rows(out: Rows, job: Job, items: list[tuple[str, str, int, int]], logits: np.ndarray, tg: np.ndarray,
              specs: list[str], heats: dict[str, np.ndarray]) -> None:
    probs = _softmax(logits)
    ranks = np.empty_like(logits, dtype=np.int64)
    order = np.argsort(-logits, axis=1, kind="stable")
    np.put_along_axis(ranks, order, np.arange(1, logits.shape[1] + 1)[None, :], axis=1)
    col = out.columns
    opts = {m: job.options_json(m) for m in job.methods}
    for i, (path, iid, width, height) in enumerate(items):
        seen: set[int] = set()
        for t, spec in enumerate(specs):
            c = int(tg[t, i])
            if c in seen:  # a class chosen by two specs ("top" and "340") is stored once, with the first
                continue
            seen.add(c)
            name = job.labels[c] if job.labels is not None and 0 <= c < len(job.labels) and job.labels[c] else None
            for m in job.methods:
                full = heats[m][t, i]
                f64 = full.astype(np.float64)
                stored = _stored_map(full, job)
                col["image_path"].append(path)
                col["image_id"].append(iid)
                col["image_width"].append(width)
                col["image_height"].append(height)
                col["target"].append(c)
                col["target_name"].append(name)
                col["target_spec"].append(spec)
                col["rank"].append(int(ranks[i, c]))
                col["logit"].append(float(logits[i, c]))
                col["probability"].append(float(probs[i, c]))
                col["method"].append(m)
                col["options"].append(opts[m])
                col["rel_sum"].append(float(f64.sum()))
                col["rel_abs_sum"].append(float(np.abs(f64).sum()))
                col["rel_pos_sum"].append(float(f64[f64 > 0].sum()))
                col["rel_neg_sum"].append(float(f64[f64 < 0].sum()))
                col["rel_max"].append(float(f64.max()))
                col["rel_min"].append(float(f64.min()))
                col["heatmap"].append(stored.tobytes())
                col["heatmap_shape"].append(list(stored.shape))


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def explain_files(ex: Any, job: Job, paths: Sequence[str | os.PathLike[str]],
                  on_images: Callable[[int], None] | None = None) -> Rows:
    """The store's rows for the image files ``paths`` (absolute paths), explained with ``ex`` as ``job`` says.

    Images are read one by one; one that cannot be read (:class:`~onnxlrp.errors.InputError`)
    becomes an error record ``{"image_path", "reason"}``. The readable ones are explained in
    batches of ``job.batch_size``; when a batch fails with an ``InputError`` (e.g. a map that
    overflows float32 on one image) its images are retried one at a time and only those that
    fail alone become error records. Every image's id is in ``Rows.ids`` (in the order of
    ``paths``), explained or failed. Errors other than ``InputError`` propagate. ``on_images(n)``
    is called after each batch (and each unreadable image) with the number of images it finished.
    """
    out = Rows()
    spec: Preprocess = job.preprocess
    step = max(1, int(ex.fixed_batch or job.batch_size))
    pending: list[tuple[str, str, int, int]] = []
    xs: list[np.ndarray] = []

    def flush() -> None:
        if not pending:
            return
        try:
            _add_rows(out, job, pending, *_explain_batch(ex, job, np.stack(xs)))
        except InputError as exc:
            if len(pending) == 1:
                out.errors.append({"image_path": pending[0][0], "reason": _reason(exc)})
            else:
                for item, x in zip(pending, xs, strict=True):
                    try:
                        _add_rows(out, job, [item], *_explain_batch(ex, job, x[None]))
                    except InputError as one:
                        out.errors.append({"image_path": item[0], "reason": _reason(one)})
        if on_images is not None:
            on_images(len(pending))
        pending.clear()
        xs.clear()

    for p in paths:
        path = os.fspath(p)
        iid = image_id(path)
        out.ids.append(iid)
        try:
            im = open_image(Path(path))
            x = preprocess(im, spec)
            width, height = im.size
        except InputError as exc:
            out.errors.append({"image_path": path, "reason": _reason(exc)})
            if on_images is not None:
                on_images(1)
            continue
        pending.append((path, iid, int(width), int(height)))
        xs.append(x)
        if len(pending) >= step:
            flush()
    flush()
    return out


def process_shard(ex: Any, job: Job, out: str | os.PathLike[str], shard: Shard,
                  on_images: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Explain one shard's images (:func:`explain_files`) and commit its part to the store in ``out``.

    Returns a summary ``{"seq", "part", "images", "rows", "errors"}`` (``errors`` the count).
    """
    rows = explain_files(ex, job, shard.paths, on_images)
    part = commit_part(out, shard.seq, rows.ids, rows.columns, rows.errors)
    return {"seq": shard.seq, "part": part.name, "images": len(shard.paths), "rows": rows.count,
            "errors": len(rows.errors)}
