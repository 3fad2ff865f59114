"""The sampling family: SmoothGrad and Integrated Gradients, many gradients averaged.

Each sample's noisy copies (SmoothGrad) or path points (Integrated Gradients) are evaluated
in batches of ``batch_size`` points (capped by the memory budget); the noise is drawn from the
same seed for every sample, so a sample's map does not depend on the batch it came in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .methods import Method
from .plan import Engine
from .propagation import gradient

Array = Any


def sample(engine: Engine, m: Method, x: np.ndarray, tg: np.ndarray, opts: dict[str, Any]) -> Array:
    """Heatmaps ``(T,) + x.shape``: the mean gradient over noisy copies, or IG's path integral × (x − baseline)."""
    xp = engine.backend.xp
    n = x.shape[0]
    t_count = tg.shape[0]
    smooth = m.name == "smoothgrad"
    if smooth:
        count = opts.get("n_samples", 64)
        scale = opts.get("noise_scale", 1.0)
        seed = opts.get("seed", 0)
    else:
        count = opts.get("steps", 64)
        base = opts.get("baseline")
        base = np.zeros_like(x) if base is None else np.asarray(base, dtype=np.float32)
    total = xp.zeros((t_count,) + x.shape, dtype=xp.float32)
    if engine.fixed_batch:
        # a fixed-batch model takes all its samples at once: the j-th point of every sample in one call
        rng = np.random.default_rng(seed) if smooth else None
        for j in range(count):
            if rng is not None:
                pts = x + rng.normal(0.0, scale, size=(1,) + x.shape[1:]).astype(np.float32)
            else:
                pts = base + np.float32((j + 1) / count) * (x - base)
            g, _ = gradient(engine, np.ascontiguousarray(pts, dtype=np.float32), tg)
            total += g
        mean = total / xp.float32(count)
        return mean if smooth else mean * engine.backend.asarray(x - base)
    per_call = opts.get("batch_size", 16)
    per_call = min(per_call, engine.per_call((min(per_call, count),) + x.shape[1:], t_count))
    for i in range(n):
        xi = x[i : i + 1]
        done = 0
        rng = np.random.default_rng(seed) if smooth else None  # the same noise for every sample
        while done < count:
            k = min(per_call, count - done)
            if rng is not None:
                pts = xi + rng.normal(0.0, scale, size=(k,) + xi.shape[1:]).astype(np.float32)
            else:
                alphas = (np.arange(done + 1, done + k + 1, dtype=np.float32) / count).reshape(
                    (k,) + (1,) * (x.ndim - 1))
                pts = base[i : i + 1] + alphas * (xi - base[i : i + 1])
            g, _ = gradient(engine, np.ascontiguousarray(pts, dtype=np.float32), np.repeat(tg[:, [i]], k, 1))
            total[:, i] += g.sum(axis=1)
            done += k
    mean = total / xp.float32(count)
    if not smooth:
        mean = mean * engine.backend.asarray(x - base)
    return mean


__all__ = ["sample"]
