"""How good is an explanation? Perturbation curves, localisation and class discrimination.

Every metric takes one input sample ``x`` (``(C, H, W)`` for NCHW, ``(H, W, C)`` for NHWC, or the
same with a leading batch axis of 1) and a heatmap shaped like it. Heatmaps are first summed
over the channel axis (:func:`relevance_2d`); non-finite values count as 0.

**Perturbation curves** (:func:`perturbation_curve`). The map is cut into square patches of
``patch`` pixels (edge patches may be smaller); a patch's relevance is the sum of its pixels.
Patches are ordered *most relevant first* (``"morf"``), *least relevant first* (``"lerf"``) or
at random (``"random"``, seeded, the control; optionally averaged over ``repeats`` orders); ties
are broken by a seeded random key, not by position. Step ``k = 0 … L`` (``L = steps``) has the
first ``round(k·P_max/L)`` patches of the order perturbed, ``P_max = round(max_fraction·P)`` of
the ``P`` patches. A perturbed pixel takes its value from a *reference* image
(:func:`reference_image`): the per-channel mean of ``x`` (``"mean"``), a Gaussian blur of ``x``
(``"blur"``, standard deviation ``sigma`` pixels), a box blur (``"box"``, ``box`` pixels wide),
uniform noise in the input range ``[low, high]`` (``"noise"``, one seeded noise image per curve,
so a pixel keeps its noise value once perturbed) or 0 (``"zero"``). All ``L + 1`` images of a
curve go through the model in batches of ``batch_size``. The curve records the target's logit
and its softmax probability against the fraction of patches perturbed.

* **AOPC** (Samek et al., 2017, eq. 12, for one image):
  ``AOPC = 1/(L+1) · Σ_{k=0..L} (f(x⁽⁰⁾) − f(x⁽ᵏ⁾))`` — the mean drop over all steps including
  ``k = 0`` (whose drop is 0), with ``f`` the target's logit (:meth:`Curve.aopc`, ``score="logit"``,
  the default) or its probability (``score="prob"``). Higher MoRF AOPC = the map found what the
  model uses; LeRF AOPC should be low, random in between.
* **AUC** (Petsiuk et al., 2018): the trapezoid area under the probability curve over the
  fraction perturbed, 0 … ``max_fraction`` (:meth:`Curve.auc`).

**Insertion / deletion** (:func:`insertion_deletion`): deletion is the MoRF curve with the
chosen ``baseline`` as reference (low AUC is good); insertion starts from the ``start`` image
(a blur by default) and puts the most relevant patches of ``x`` back first (high AUC is good).

**Localisation**, given a boolean ``(H, W)`` region mask: relevance mass accuracy
(:func:`relevance_mass_accuracy`, Arras et al., 2022: positive relevance inside the region over
all positive relevance) and the pointing game (:func:`pointing_game`: is the pixel of largest
relevance in the region, or within ``margin`` pixels of it?).

**Class discrimination** for two classes of one image (:func:`discrimination`): the Pearson
correlation of their maps (lower = more class-specific) and, with regions, the signed share
``Σ_region h / Σ|h|`` of each map on its own object's region and on the other's
(:func:`region_share`).

:func:`evaluate_heatmap` runs all of it for one map (the report and ``onnxlrp evaluate`` use
it); :func:`plot_curves` draws curves with PIL.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .errors import InputError
from .image import region_mask
from .render import _font, relevance_map

__all__ = [
    "ORDERS",
    "PERTURBATIONS",
    "Curve",
    "Discrimination",
    "EvalSettings",
    "HeatmapEvaluation",
    "InsertionDeletion",
    "Localisation",
    "PointingResult",
    "Region",
    "blur",
    "discrimination",
    "evaluate_heatmap",
    "heatmap_correlation",
    "insertion_deletion",
    "line_chart",
    "load_regions",
    "localisation",
    "patch_order",
    "patch_relevance",
    "perturbation_curve",
    "plot_curves",
    "pointing_game",
    "random_curve",
    "reference_image",
    "region_for",
    "region_share",
    "relevance_2d",
    "relevance_mass_accuracy",
]

#: Patch orders of :func:`perturbation_curve`.
ORDERS = ("morf", "lerf", "random")
#: What a perturbed pixel becomes (see :func:`reference_image`).
PERTURBATIONS = ("mean", "blur", "box", "noise", "zero")

Model = Any  # an Explainer, or anything with .predict(batch) -> (N, classes), or such a callable


# ============================================================================ maps and samples


def _sample(a: Any, name: str = "x") -> np.ndarray:
    """One image sample as float32 ``(C, H, W)`` / ``(H, W, C)``; a leading batch axis of 1 is dropped."""
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise InputError(f"{name} must be one image sample (C, H, W) or (H, W, C), optionally with a batch axis "
                         f"of 1; got shape {list(arr.shape)}")
    return arr


def _spatial(x: np.ndarray, layout: str) -> tuple[int, int]:
    if layout not in ("NCHW", "NHWC"):
        raise InputError(f"layout must be NCHW or NHWC, not {layout!r}")
    return (x.shape[1], x.shape[2]) if layout == "NCHW" else (x.shape[0], x.shape[1])


def _expand_mask(mask: np.ndarray, layout: str) -> np.ndarray:
    """A ``(..., H, W)`` mask broadcastable against samples of ``layout``."""
    return mask[..., None, :, :] if layout == "NCHW" else mask[..., None]


def relevance_2d(heat: Any, layout: str = "NCHW") -> np.ndarray:
    """The ``(H, W)`` float64 map of one heatmap: summed over channels, non-finite values set to 0.

    A 2-D map is taken as it is; a leading batch axis of 1 is dropped.
    """
    h = np.asarray(heat, dtype=np.float64)
    if h.ndim == 4 and h.shape[0] == 1:
        h = h[0]
    if h.ndim not in (2, 3):
        raise InputError(f"a heatmap must be one sample or a 2-D map; got shape {list(h.shape)}")
    m = relevance_map(h, layout)
    return np.where(np.isfinite(m), m, 0.0)


def _mask2d(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise InputError(f"the region mask is {list(m.shape)}, the heatmap {list(shape)}")
    return m


# ============================================================================ patches and orders


def patch_relevance(rmap: np.ndarray, patch: int) -> np.ndarray:
    """Relevance per patch: the sum of ``rmap`` (``(H, W)``) over square ``patch``×``patch`` cells.

    Returns a ``(ceil(H/patch), ceil(W/patch))`` array; cells at the bottom/right edge hold the
    pixels that remain.
    """
    if patch < 1:
        raise InputError(f"patch size must be at least 1, not {patch}")
    h, w = rmap.shape
    gh, gw = -(-h // patch), -(-w // patch)
    padded = np.zeros((gh * patch, gw * patch), dtype=np.float64)
    padded[:h, :w] = rmap
    return padded.reshape(gh, patch, gw, patch).sum(axis=(1, 3))


def patch_order(scores: np.ndarray, order: str, seed: int = 0) -> np.ndarray:
    """Flat patch indices in perturbation order.

    ``"morf"``: largest score first; ``"lerf"``: smallest first (ties in either broken by a
    random key drawn from ``seed``); ``"random"``: a permutation drawn from ``seed``.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    if order == "random":
        return rng.permutation(s.size)
    if order not in ("morf", "lerf"):
        raise InputError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    tiebreak = rng.random(s.size)
    key = -s if order == "morf" else s
    return np.lexsort((tiebreak, key))


def _pixel_rank(order: np.ndarray, grid: tuple[int, int], patch: int, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` int map: each pixel's patch's position in ``order``."""
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    r = rank.reshape(grid).repeat(patch, axis=0).repeat(patch, axis=1)
    return r[: size[0], : size[1]]


def _counts(n_patches: int, steps: int, max_fraction: float) -> np.ndarray:
    if steps < 1:
        raise InputError(f"steps must be at least 1, not {steps}")
    if not 0 < max_fraction <= 1:
        raise InputError(f"max_fraction must be in (0, 1], not {max_fraction}")
    p_max = max(1, int(round(max_fraction * n_patches)))
    return np.round(np.arange(steps + 1) * p_max / steps).astype(np.int64)


# ============================================================================ references


def _gauss_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _filter_axis(a: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``a`` with a symmetric 1-D ``kernel`` along ``axis``, edges mirrored (``reflect``)."""
    r = kernel.size // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="reflect" if a.shape[axis] > 1 else "edge")
    n = a.shape[axis]
    out = np.zeros_like(a, dtype=np.float64)
    for i, wgt in enumerate(kernel):
        out += wgt * np.take(p, np.arange(i, i + n), axis=axis)
    return out


def blur(x: Any, sigma: float = 5.0, layout: str = "NCHW", kind: str = "gaussian", size: int = 15) -> np.ndarray:
    """A blurred copy of one sample, each channel filtered separably over height and width.

    ``kind="gaussian"``: a Gaussian of standard deviation ``sigma`` pixels, truncated at
    ``ceil(3·sigma)`` and normalised; ``kind="box"``: the mean over a ``size``×``size`` window.
    Edges are mirrored, so a constant image stays constant.
    """
    s = _sample(x)
    if kind == "gaussian":
        if sigma <= 0:
            raise InputError(f"blur sigma must be positive, not {sigma}")
        k = _gauss_kernel(float(sigma))
    elif kind == "box":
        if size < 1:
            raise InputError(f"box blur size must be at least 1, not {size}")
        k = np.full(int(size), 1.0 / int(size))
        if k.size % 2 == 0:  # keep the window centred: an even width becomes a half-weighted odd one
            k = np.convolve(k, [0.5, 0.5])
    else:
        raise InputError(f"blur kind must be 'gaussian' or 'box', not {kind!r}")
    ax_h, ax_w = (1, 2) if layout == "NCHW" else (0, 1)
    _spatial(s, layout)
    out = _filter_axis(_filter_axis(s.astype(np.float64), k, ax_h), k, ax_w)
    return out.astype(np.float32)


def _range(bound: Any, x: np.ndarray) -> np.ndarray:
    b = np.asarray(bound, dtype=np.float32)
    if b.ndim == x.ndim + 1:
        b = b[0]
    try:
        return np.broadcast_to(b, x.shape)
    except ValueError:
        raise InputError(f"low/high must broadcast to the sample shape {list(x.shape)}; got {list(b.shape)}") from None


def reference_image(x: Any, kind: str = "mean", *, layout: str = "NCHW", low: Any = None, high: Any = None,
                    seed: int = 0, sigma: float = 5.0, box: int = 15) -> np.ndarray:
    """The image a perturbed pixel takes its value from, shaped like the sample ``x``.

    ``"mean"``: every pixel is the sample's own per-channel mean; ``"blur"``: a Gaussian blur
    (``sigma`` pixels, see :func:`blur`); ``"box"``: a ``box``-wide box blur; ``"noise"``: uniform
    noise in ``[low, high]`` (per channel; default: the sample's per-channel minimum and
    maximum) drawn from ``seed``; ``"zero"``: 0.
    """
    s = _sample(x)
    _spatial(s, layout)
    c_axis = 0 if layout == "NCHW" else 2
    sp_axes = tuple(a for a in range(3) if a != c_axis)
    if kind == "mean":
        return np.broadcast_to(s.mean(axis=sp_axes, keepdims=True, dtype=np.float64), s.shape).astype(np.float32)
    if kind == "blur":
        return blur(s, sigma, layout, "gaussian")
    if kind == "box":
        return blur(s, layout=layout, kind="box", size=box)
    if kind == "zero":
        return np.zeros_like(s)
    if kind == "noise":
        lo = s.min(axis=sp_axes, keepdims=True) if low is None else low
        hi = s.max(axis=sp_axes, keepdims=True) if high is None else high
        lo, hi = _range(lo, s), _range(hi, s)
        if np.any(lo > hi):
            raise InputError("low must not exceed high")
        u = np.random.default_rng(seed).random(s.shape)
        return (lo + u * (hi - lo)).astype(np.float32)
    raise InputError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, not {kind!r}")


# ============================================================================ running the model


def _softmax_rows(y: np.ndarray) -> np.ndarray:
    z = np.asarray(y, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _predictor(model: Model) -> tuple[Callable[[np.ndarray], np.ndarray], int | None]:
    if hasattr(model, "predict"):
        return model.predict, getattr(model, "fixed_batch", None)
    if callable(model):
        return model, None
    raise InputError("model must be an onnxlrp Explainer, an object with .predict(batch), or a callable")


def _scores(model: Model, x: np.ndarray, ref: np.ndarray, masks: Callable[[int], np.ndarray], n: int,
            target: int, insert: bool, layout: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Target logit and probability for the ``n`` images ``where(mask_k, ref, x)`` (``insert``: the reverse)."""
    predict, fixed = _predictor(model)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    logit = np.empty(n, dtype=np.float64)
    prob = np.empty(n, dtype=np.float64)
    src, dst = (x, ref) if insert else (ref, x)
    for start in range(0, n, batch_size):
        ks = range(start, min(start + batch_size, n))
        m = _expand_mask(np.stack([masks(k) for k in ks]), layout)
        batch = np.where(m, src[None], dst[None]).astype(np.float32)
        real = batch.shape[0]
        if fixed and real % fixed:
            batch = np.concatenate([batch, np.repeat(batch[-1:], fixed - real % fixed, axis=0)])
        y = np.asarray(predict(np.ascontiguousarray(batch)), dtype=np.float64).reshape(batch.shape[0], -1)[:real]
        if not 0 <= target < y.shape[1]:
            raise InputError(f"class index {target} is out of range: the model has {y.shape[1]} classes")
        logit[start : start + real] = y[:, target]
        prob[start : start + real] = _softmax_rows(y)[:, target]
    return logit, prob


# ============================================================================ curves


@dataclass
class Curve:
    """A perturbation curve: the target's logit and probability against the fraction perturbed.

    ``kind`` is ``"morf"``, ``"lerf"``, ``"random"``, ``"insertion"`` or ``"deletion"``;
    ``fractions[k]`` is the fraction of patches perturbed (deletion, MoRF, LeRF, random) or
    inserted (insertion) at step ``k``; ``logit``/``prob`` are the model's outputs for the
    target there (for ``random``, the mean over ``repeats`` random orders).
    """

    kind: str
    perturbation: str
    target: int
    patch: int
    fractions: np.ndarray
    logit: np.ndarray
    prob: np.ndarray
    repeats: int = 1

    def _values(self, score: str) -> np.ndarray:
        if score not in ("logit", "prob"):
            raise ValueError(f"score must be 'logit' or 'prob', not {score!r}")
        return self.logit if score == "logit" else self.prob

    def aopc(self, score: str = "logit") -> float:
        """Samek's AOPC for this image: ``1/(L+1) Σ_{k=0..L} (f(x⁽⁰⁾) − f(x⁽ᵏ⁾))`` with ``f`` = ``score``."""
        v = self._values(score)
        return float(np.mean(v[0] - v))

    def auc(self, score: str = "prob") -> float:
        """Trapezoid area under ``score`` over the fractions (0 … the last fraction, 1 for a full curve)."""
        v = self._values(score)
        f = self.fractions
        return float(np.sum((f[1:] - f[:-1]) * (v[1:] + v[:-1]) / 2.0))

    def to_dict(self) -> dict[str, Any]:
        """The curve and its summary numbers as JSON-ready values."""
        return {
            "kind": self.kind, "perturbation": self.perturbation, "target": self.target, "patch": self.patch,
            "repeats": self.repeats, "aopc_logit": self.aopc("logit"), "aopc_prob": self.aopc("prob"),
            "auc_prob": self.auc("prob"), "fractions": self.fractions.tolist(), "logit": self.logit.tolist(),
            "prob": self.prob.tolist(),
        }


def _curve(model: Model, x: np.ndarray, ref: np.ndarray, order: np.ndarray, grid: tuple[int, int], patch: int,
           target: int, steps: int, max_fraction: float, insert: bool, layout: str,
           batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = _spatial(x, layout)
    counts = _counts(order.size, steps, max_fraction)
    rank = _pixel_rank(order, grid, patch, size)
    logit, prob = _scores(model, x, ref, lambda k: rank < counts[k], counts.size, int(target), insert, layout,
                          batch_size)
    return counts / order.size, logit, prob


def perturbation_curve(model: Model, x: Any, heat: Any, target: int, order: str = "morf",
                       perturbation: str = "mean", *, patch: int = 8, steps: int = 28, max_fraction: float = 1.0,
                       batch_size: int = 32, seed: int = 0, layout: str = "NCHW", low: Any = None,
                       high: Any = None, sigma: float = 5.0, box: int = 15, repeats: int = 1,
                       reference: Any = None) -> Curve:
    """Region perturbation (Samek et al., 2017): perturb patches in ``order`` and follow the target.

    ``heat`` (shaped like ``x``; ignored for ``order="random"``, may be None) gives the patch
    order; ``perturbation`` (or an explicit ``reference`` image) what a perturbed pixel becomes
    (see :func:`reference_image`). ``steps + 1`` images, from ``x`` itself to ``max_fraction``
    of the patches perturbed, go through ``model`` in batches of ``batch_size``. ``repeats``
    (random order only) averages that many orders drawn from ``seed``, ``seed + 1``, ….
    Returns a :class:`Curve`; ``curve.aopc()`` is Samek's AOPC of this image.
    """
    s = _sample(x)
    size = _spatial(s, layout)
    if order not in ORDERS:
        raise InputError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    ref = _sample(reference, "reference") if reference is not None else reference_image(
        s, perturbation, layout=layout, low=low, high=high, seed=seed, sigma=sigma, box=box)
    if ref.shape != s.shape:
        raise InputError(f"the reference image is {list(ref.shape)}, the sample {list(s.shape)}")
    if patch < 1:
        raise InputError(f"patch size must be at least 1, not {patch}")
    if order == "random":
        grid = (-(-size[0] // patch), -(-size[1] // patch))
        if repeats < 1:
            raise InputError(f"repeats must be at least 1, not {repeats}")
        runs = [_curve(model, s, ref, patch_order(np.zeros(grid), "random", seed + r), grid, patch, target, steps,
                       max_fraction, False, layout, batch_size) for r in range(repeats)]
        fr = runs[0][0]
        logit = np.mean([r[1] for r in runs], axis=0)
        prob = np.mean([r[2] for r in runs], axis=0)
        return Curve("random", perturbation if reference is None else "custom", int(target), patch, fr, logit, prob,
                     repeats)
    if heat is None:
        raise InputError(f"order {order!r} needs a heatmap")
    rmap = relevance_2d(heat, layout)
    if rmap.shape != size:
        raise InputError(f"the heatmap is {list(rmap.shape)}, the sample's image {list(size)}")
    scores = patch_relevance(rmap, patch)
    fr, logit, prob = _curve(model, s, ref, patch_order(scores, order, seed), scores.shape, patch, target, steps,
                             max_fraction, False, layout, batch_size)
    return Curve(order, perturbation if reference is None else "custom", int(target), patch, fr, logit, prob)


def random_curve(model: Model, x: Any, target: int, perturbation: str = "mean", **kwargs: Any) -> Curve:
    """The random-order control of :func:`perturbation_curve` (it does not depend on a heatmap)."""
    return perturbation_curve(model, x, None, target, "random", perturbation, **kwargs)


@dataclass
class InsertionDeletion:
    """Petsiuk et al.'s two curves for one heatmap and their AUCs (of the probability)."""

    insertion: Curve
    deletion: Curve

    @property
    def auc_insertion(self) -> float:
        """Area under the insertion curve: higher = the most relevant patches restore the class sooner."""
        return self.insertion.auc("prob")

    @property
    def auc_deletion(self) -> float:
        """Area under the deletion curve: lower = removing the most relevant patches kills the class sooner."""
        return self.deletion.auc("prob")

    def to_dict(self, curves: bool = True) -> dict[str, Any]:
        """The AUCs (and with ``curves``, both curves) as JSON-ready values."""
        d: dict[str, Any] = {"auc_insertion": self.auc_insertion, "auc_deletion": self.auc_deletion}
        if curves:
            d["insertion"] = self.insertion.to_dict()
            d["deletion"] = self.deletion.to_dict()
        return d


def _insertion(model: Model, s: np.ndarray, heat: Any, target: int, start_ref: np.ndarray, start: str, patch: int,
               steps: int, batch_size: int, seed: int, layout: str) -> Curve:
    size = _spatial(s, layout)
    rmap = relevance_2d(heat, layout)
    if rmap.shape != size:
        raise InputError(f"the heatmap is {list(rmap.shape)}, the sample's image {list(size)}")
    scores = patch_relevance(rmap, patch)
    fr, logit, prob = _curve(model, s, start_ref, patch_order(scores, "morf", seed), scores.shape, patch, target,
                             steps, 1.0, True, layout, batch_size)
    return Curve("insertion", start, int(target), patch, fr, logit, prob)


def insertion_deletion(model: Model, x: Any, heat: Any, target: int, *, start: str = "blur", baseline: str = "mean",
                       patch: int = 8, steps: int = 28, batch_size: int = 32, seed: int = 0, layout: str = "NCHW",
                       low: Any = None, high: Any = None, sigma: float = 5.0, box: int = 15) -> InsertionDeletion:
    """Insertion and deletion curves (Petsiuk et al., 2018) of one heatmap, most relevant patches first.

    Deletion: the MoRF curve of :func:`perturbation_curve` with ``baseline`` as the reference
    (0 … all patches removed). Insertion: the image starts as ``start`` (``"blur"``: Gaussian
    blur of ``x``; any :data:`PERTURBATIONS` name) and the patches of ``x`` come back most
    relevant first, until it is ``x`` again. Both over ``steps`` steps.
    """
    s = _sample(x)
    common = dict(layout=layout, low=low, high=high, seed=seed, sigma=sigma, box=box)
    deletion = perturbation_curve(model, s, heat, target, "morf", baseline, patch=patch, steps=steps,
                                  batch_size=batch_size, **common)  # type: ignore[arg-type]
    deletion.kind = "deletion"
    start_ref = reference_image(s, start, **common)  # type: ignore[arg-type]
    ins = _insertion(model, s, heat, target, start_ref, start, patch, steps, batch_size, seed, layout)
    return InsertionDeletion(ins, deletion)


# ============================================================================ localisation


def relevance_mass_accuracy(heat: Any, mask: Any, layout: str = "NCHW") -> float:
    """Relevance mass accuracy (Arras et al., 2022): ``Σ_{mask} h⁺ / Σ h⁺`` of the channel-summed map.

    Only positive relevance counts. 1 = all positive evidence lies in the region. NaN when the
    map has no positive value.
    """
    h = relevance_2d(heat, layout)
    m = _mask2d(mask, h.shape)
    pos = np.maximum(h, 0.0)
    total = float(pos.sum())
    return float(pos[m].sum() / total) if total > 0 else float("nan")


@dataclass
class PointingResult:
    """The pointing game for one map: ``hit`` if the maximum lies in the region (within ``margin``)."""

    hit: bool
    point: tuple[int, int]  # (row, column) of the maximum
    distance: float  # pixels from the point to the nearest region pixel (0 inside)
    margin: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"hit": self.hit, "point": list(self.point), "distance": self.distance, "margin": self.margin}


def pointing_game(heat: Any, mask: Any, margin: float = 0.0, layout: str = "NCHW") -> PointingResult:
    """Pointing game (Zhang et al., 2018): does the largest value of the channel-summed map fall in the region?

    The maximum is the first one in row-major order. With ``margin > 0``, a point whose
    Euclidean distance (in pixels) to the nearest region pixel is at most ``margin`` is a hit
    too (Zhang et al. used 15 pixels). A map that is 0 everywhere points nowhere: a miss.
    """
    h = relevance_2d(heat, layout)
    m = _mask2d(mask, h.shape)
    if margin < 0:
        raise InputError(f"margin must not be negative, not {margin}")
    r, c = (int(v) for v in np.unravel_index(int(np.argmax(h)), h.shape))
    inside = np.argwhere(m)
    if inside.size == 0:
        dist = float("inf")
    elif m[r, c]:
        dist = 0.0
    else:
        dist = float(np.sqrt(((inside - np.array([r, c])) ** 2).sum(axis=1).min()))
    flat = not np.any(h)
    return PointingResult(bool(dist <= margin and not flat), (r, c), dist, float(margin))


@dataclass
class Localisation:
    """Relevance mass accuracy and the pointing game of one map on one region."""

    mass_accuracy: float
    pointing: PointingResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"mass_accuracy": self.mass_accuracy, "pointing": self.pointing.to_dict()}


def localisation(heat: Any, mask: Any, margin: float = 0.0, layout: str = "NCHW") -> Localisation:
    """:func:`relevance_mass_accuracy` and :func:`pointing_game` of ``heat`` on the region ``mask``."""
    return Localisation(relevance_mass_accuracy(heat, mask, layout), pointing_game(heat, mask, margin, layout))


# ============================================================================ discrimination


def heatmap_correlation(a: Any, b: Any, layout: str = "NCHW") -> float:
    """Pearson correlation of two channel-summed maps over all pixels; NaN if either is constant."""
    x = relevance_2d(a, layout).ravel()
    y = relevance_2d(b, layout).ravel()
    if x.shape != y.shape:
        raise InputError(f"the two heatmaps differ in size: {x.size} and {y.size} pixels")
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / den) if den > 0 else float("nan")


def region_share(heat: Any, mask: Any, layout: str = "NCHW") -> float:
    """Signed share of the map on a region: ``Σ_{mask} h / Σ |h|`` (−1 … 1); NaN for an all-zero map."""
    h = relevance_2d(heat, layout)
    m = _mask2d(mask, h.shape)
    total = float(np.abs(h).sum())
    return float(h[m].sum() / total) if total > 0 else float("nan")


@dataclass
class Discrimination:
    """How differently two classes of one image are explained.

    ``correlation``: Pearson correlation of the two maps (1 = the same picture for both classes).
    ``a_on_a`` … ``b_on_a``: signed shares (:func:`region_share`) of map ``a`` / ``b`` on the
    region of class ``a`` / ``b`` (NaN without regions). A discriminative method has
    ``a_on_a > 0 > a_on_b`` and ``b_on_b > 0 > b_on_a``.
    """

    correlation: float
    a_on_a: float = float("nan")
    a_on_b: float = float("nan")
    b_on_b: float = float("nan")
    b_on_a: float = float("nan")

    @property
    def own_minus_other(self) -> float:
        """Mean over both maps of (share on its own region − share on the other's)."""
        return ((self.a_on_a - self.a_on_b) + (self.b_on_b - self.b_on_a)) / 2.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"correlation": self.correlation, "a_on_a": self.a_on_a, "a_on_b": self.a_on_b,
                "b_on_b": self.b_on_b, "b_on_a": self.b_on_a, "own_minus_other": self.own_minus_other}


def discrimination(heat_a: Any, heat_b: Any, mask_a: Any = None, mask_b: Any = None,
                   layout: str = "NCHW") -> Discrimination:
    """Correlation of the maps of classes ``a`` and ``b`` and, with both regions, their signed shares."""
    d = Discrimination(heatmap_correlation(heat_a, heat_b, layout))
    if mask_a is not None and mask_b is not None:
        d.a_on_a = region_share(heat_a, mask_a, layout)
        d.a_on_b = region_share(heat_a, mask_b, layout)
        d.b_on_b = region_share(heat_b, mask_b, layout)
        d.b_on_a = region_share(heat_b, mask_a, layout)
    return d


# ============================================================================ regions


@dataclass
class Region:
    """A labelled object region: the classes it stands for and its ``(H, W)`` mask on the model input."""

    label: str
    classes: tuple[int, ...]
    mask: np.ndarray


def load_regions(path: str | os.PathLike[str], size: tuple[int, int],
                 image_size: tuple[int, int] | None = None) -> list[Region]:
    """The regions of a ``data/regions`` JSON file as masks on the model input of ``size = (height, width)``.

    The file holds ``width``/``height`` of the photo and ``regions``: ``label``,
    ``imagenet_classes`` and ``boxes`` ``[x0, y0, x1, y1]`` in photo pixels (x1/y1 exclusive; a
    region is the union of its boxes). ``image_size = (width, height)`` of the photo, when
    given, must match the file's. Masks as :func:`onnxlrp.image.region_mask` draws them.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"regions file not found: {p}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        w = int(doc.get("width", image_size[0] if image_size else 0))
        h = int(doc.get("height", image_size[1] if image_size else 0))
        if w < 1 or h < 1:
            raise InputError(f"regions file {p} gives no width/height of the photo")
        if image_size is not None and (w, h) != tuple(image_size):
            raise InputError(f"regions file {p} is for a {w}x{h} photo, but the image is "
                             f"{image_size[0]}x{image_size[1]}")
        out = []
        for r in doc["regions"]:
            boxes = [[float(v) for v in b] for b in r["boxes"]]
            if any(len(b) != 4 for b in boxes):
                raise InputError(f"regions file {p}: a box must be [x0, y0, x1, y1]")
            classes = tuple(int(c) for c in r.get("imagenet_classes", r.get("classes", [])))
            out.append(Region(str(r.get("label", "")), classes, region_mask(boxes, (w, h), size)))
    except InputError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"cannot read regions file {p}: {type(exc).__name__}: {exc}") from None
    return out


def region_for(regions: Sequence[Region], target: int) -> Region | None:
    """The first region whose classes include ``target``, or None."""
    return next((r for r in regions if target in r.classes), None)


def _other_mask(regions: Sequence[Region], target: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Union of the regions that do not stand for ``target`` (None if there are none)."""
    others = [r.mask for r in regions if target not in r.classes]
    if not others:
        return None
    m = np.zeros(shape, dtype=bool)
    for o in others:
        m |= o
    return m


# ============================================================================ everything for one map


@dataclass
class EvalSettings:
    """The knobs of :func:`evaluate_heatmap` (and of ``onnxlrp evaluate``)."""

    patch: int = 8
    steps: int = 28
    perturbation: str = "mean"  # MoRF / LeRF / random and deletion
    insertion_start: str = "blur"
    max_fraction: float = 1.0
    random_repeats: int = 3
    sigma: float = 5.0
    box: int = 15
    seed: int = 0
    batch_size: int = 32
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.patch < 1:
            raise InputError(f"patch size must be at least 1, not {self.patch}")
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, not {self.steps}")
        if self.perturbation not in PERTURBATIONS:
            raise InputError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, not {self.perturbation!r}")
        if self.insertion_start not in PERTURBATIONS:
            raise InputError(f"insertion start must be one of {', '.join(PERTURBATIONS)}, "
                             f"not {self.insertion_start!r}")
        if not 0 < self.max_fraction <= 1:
            raise InputError(f"max fraction must be in (0, 1], not {self.max_fraction}")
        if self.random_repeats < 0:
            raise InputError(f"random repeats must not be negative, not {self.random_repeats}")
        if self.sigma <= 0 or self.box < 1 or self.batch_size < 1 or self.margin < 0:
            raise InputError("sigma must be positive, box and batch size at least 1, margin not negative")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dict(self.__dict__)


@dataclass
class HeatmapEvaluation:
    """All metrics of one heatmap (one image, one method, one target class).

    ``morf``/``lerf``/``random`` are region-perturbation curves (``random`` may be shared by
    every method of the image and class, or None); ``deletion`` is the MoRF curve (the same
    object); ``insertion`` Petsiuk's. ``localisation`` and the shares need regions (None/NaN
    without): ``share_own`` on the target's region, ``share_other`` on the union of the
    regions that stand for other classes.
    """

    method: str
    target: int
    morf: Curve
    lerf: Curve
    insertion: Curve
    random: Curve | None = None
    localisation: Localisation | None = None
    share_own: float = float("nan")
    share_other: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def deletion(self) -> Curve:
        """Deletion = the MoRF curve (with the settings' perturbation as the baseline)."""
        return self.morf

    def summary(self) -> dict[str, Any]:
        """The numbers: AOPC (logit and probability) of MoRF/LeRF/random, insertion/deletion AUC,
        localisation, shares."""
        nan = float("nan")
        loc = self.localisation
        return {
            "method": self.method, "target": self.target,
            "aopc_morf": self.morf.aopc("logit"), "aopc_lerf": self.lerf.aopc("logit"),
            "aopc_random": self.random.aopc("logit") if self.random else nan,
            "aopc_morf_prob": self.morf.aopc("prob"), "aopc_lerf_prob": self.lerf.aopc("prob"),
            "aopc_random_prob": self.random.aopc("prob") if self.random else nan,
            "auc_insertion": self.insertion.auc("prob"), "auc_deletion": self.deletion.auc("prob"),
            "mass_accuracy": loc.mass_accuracy if loc else nan,
            "pointing_hit": (1.0 if loc.pointing.hit else 0.0) if loc else nan,
            "share_own": self.share_own, "share_other": self.share_other,
            **self.extra,
        }

    def to_dict(self, curves: bool = True) -> dict[str, Any]:
        """:meth:`summary`, the pointing details and (with ``curves``) every curve, JSON-ready."""
        d = self.summary()
        if self.localisation:
            d["pointing"] = self.localisation.pointing.to_dict()
        if curves:
            d["curves"] = {k: c.to_dict() for k, c in (("morf", self.morf), ("lerf", self.lerf),
                                                        ("random", self.random), ("insertion", self.insertion))
                           if c is not None}
        return d


def evaluate_heatmap(model: Model, x: Any, heat: Any, target: int, settings: EvalSettings | None = None, *,
                     method: str = "", regions: Sequence[Region] | None = None, random: Curve | None = None,
                     layout: str = "NCHW", low: Any = None, high: Any = None) -> HeatmapEvaluation:
    """Every metric of one heatmap for class ``target`` of sample ``x``.

    MoRF and LeRF curves (and deletion = MoRF) with ``settings.perturbation``, the insertion
    curve from ``settings.insertion_start``; ``random`` is the random-order control (compute it
    once per image and class with :func:`random_curve` and pass it in; it does not depend on the
    map). With ``regions``, the localisation on the target's region (:func:`region_for`) and the
    signed shares on it and on the other regions. ``low``/``high``: the input range for
    ``"noise"``.
    """
    st = settings or EvalSettings()
    s = _sample(x)
    common = dict(layout=layout, low=low, high=high, seed=st.seed, sigma=st.sigma, box=st.box)
    ref = reference_image(s, st.perturbation, **common)  # type: ignore[arg-type]
    kw = dict(patch=st.patch, steps=st.steps, max_fraction=st.max_fraction, batch_size=st.batch_size,
              seed=st.seed, layout=layout, reference=ref)
    morf = perturbation_curve(model, s, heat, target, "morf", **kw)  # type: ignore[arg-type]
    lerf = perturbation_curve(model, s, heat, target, "lerf", **kw)  # type: ignore[arg-type]
    for c in (morf, lerf):
        c.perturbation = st.perturbation
    start_ref = ref if st.insertion_start == st.perturbation else reference_image(
        s, st.insertion_start, **common)  # type: ignore[arg-type]
    ins = _insertion(model, s, heat, target, start_ref, st.insertion_start, st.patch, st.steps, st.batch_size,
                     st.seed, layout)
    ev = HeatmapEvaluation(method, int(target), morf, lerf, ins, random)
    if regions:
        shape = _spatial(s, layout)
        own = region_for(regions, int(target))
        other = _other_mask(regions, int(target), shape)
        if own is not None:
            ev.localisation = localisation(heat, own.mask, st.margin, layout)
            ev.share_own = region_share(heat, own.mask, layout)
            if other is not None:
                ev.share_other = region_share(heat, other, layout)
    return ev


# ============================================================================ plots (PIL)

#: Line colours of the curve kinds (RGB).
CURVE_COLOURS: dict[str, tuple[int, int, int]] = {
    "morf": (214, 39, 40), "deletion": (214, 39, 40), "lerf": (31, 119, 180), "random": (127, 127, 127),
    "insertion": (44, 160, 44),
}


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or abs(v) < 0.01:
        return f"{v:.3g}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def line_chart(series: Sequence[tuple[str, np.ndarray, np.ndarray, tuple[int, int, int]]], title: str = "",
               xlabel: str = "fraction of patches", ylabel: str = "", size: tuple[int, int] = (300, 220),
               ylim: tuple[float, float] | None = None) -> np.ndarray:
    """A line chart as an ``(H, W, 3)`` uint8 image (``size = (width, height)``), drawn with PIL.

    ``series``: ``(label, x, y, rgb)`` each; a legend lists the labels. The y range is
    ``ylim`` or the data's, with a little room. Drawn at twice the size and reduced, for smooth lines.
    """
    k = 2
    w, h = size[0] * k, size[1] * k
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    f_small, f_title = _font(10 * k), _font(11 * k)
    left, right, top, bottom = 46 * k, 8 * k, (18 if title else 8) * k, 30 * k
    x0, x1, y0, y1 = left, w - right, top, h - bottom
    ys = [np.asarray(s[2], dtype=np.float64) for s in series]
    finite = np.concatenate([v[np.isfinite(v)] for v in ys]) if ys else np.zeros(0)
    if ylim is not None:
        lo, hi = ylim
    elif finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
        lo, hi = lo - pad, hi + pad
    else:
        lo, hi = 0.0, 1.0
    xs_all = [np.asarray(s[1], dtype=np.float64) for s in series]
    xmin = min((float(v.min()) for v in xs_all if v.size), default=0.0)
    xmax = max((float(v.max()) for v in xs_all if v.size), default=1.0)
    if xmax <= xmin:
        xmax = xmin + 1.0

    def px(xv: float, yv: float) -> tuple[float, float]:
        return (x0 + (xv - xmin) / (xmax - xmin) * (x1 - x0), y1 - (yv - lo) / (hi - lo) * (y1 - y0))

    grey = (200, 200, 200)
    for t in _nice_ticks(lo, hi):
        _, yy = px(xmin, t)
        d.line([(x0, yy), (x1, yy)], fill=(235, 235, 235), width=k)
        label = _fmt_tick(t)
        d.text((x0 - 4 * k - d.textlength(label, font=f_small), yy - 6 * k), label, fill="black", font=f_small)
    for t in _nice_ticks(xmin, xmax):
        xx, _ = px(t, lo)
        d.line([(xx, y1), (xx, y1 + 3 * k)], fill="black", width=k)
        label = _fmt_tick(t)
        d.text((xx - d.textlength(label, font=f_small) / 2, y1 + 4 * k), label, fill="black", font=f_small)
    d.rectangle([x0, y0, x1, y1], outline=grey, width=k)
    if xlabel:
        d.text(((x0 + x1) / 2 - d.textlength(xlabel, font=f_small) / 2, h - 13 * k), xlabel, fill="black",
               font=f_small)
    if ylabel:
        tw = int(d.textlength(ylabel, font=f_small)) + 4
        lab = Image.new("RGB", (tw, 14 * k), "white")
        ImageDraw.Draw(lab).text((2, 0), ylabel, fill="black", font=f_small)
        lab = lab.rotate(90, expand=True)
        img.paste(lab, (0, int((y0 + y1) / 2 - lab.height / 2)))
    if title:
        d.text((w / 2 - d.textlength(title, font=f_title) / 2, 2 * k), title, fill="black", font=f_title)
    for (_, xv, _, rgb), yv in zip(series, ys, strict=True):
        pts = [px(float(a), float(b)) for a, b in zip(np.asarray(xv, dtype=np.float64), yv, strict=True)
               if math.isfinite(b)]
        if len(pts) > 1:
            d.line(pts, fill=rgb, width=2 * k, joint="curve")
    ly = y0 + 4 * k
    labels = [s[0] for s in series if s[0]]
    if labels:
        lw = max(d.textlength(lab, font=f_small) for lab in labels) + 24 * k
        d.rectangle([x1 - 6 * k - lw, ly - 2 * k, x1 - 2 * k, ly + 12 * k * len(labels) + 2 * k], fill="white")
    for label, _, _, rgb in series:
        if not label:
            continue
        lx = x1 - 4 * k - d.textlength(label, font=f_small) - 18 * k
        d.line([(lx, ly + 6 * k), (lx + 14 * k, ly + 6 * k)], fill=rgb, width=2 * k)
        d.text((lx + 17 * k, ly), label, fill="black", font=f_small)
        ly += 12 * k
    img = img.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


_KIND_LABELS = {"morf": "MoRF", "lerf": "LeRF", "random": "random", "insertion": "insertion",
                "deletion": "deletion"}


def plot_curves(panels: Sequence[tuple[str, Sequence[Curve | tuple[str, Curve]]]], score: str = "prob",
                columns: int = 4, size: tuple[int, int] = (300, 220), same_scale: bool = True,
                xlabel: str = "fraction of patches") -> np.ndarray:
    """A figure of curve panels: ``panels`` are ``(title, curves)``, one line chart each.

    A curve is drawn in its kind's colour (:data:`CURVE_COLOURS`) and labelled with its kind,
    or given as ``(label, curve)``. ``score`` is ``"prob"`` or ``"logit"``; ``same_scale`` gives
    every panel the same y range. Returns an ``(H, W, 3)`` uint8 image (see :func:`line_chart`).
    """
    from .render import grid

    if not panels:
        raise ValueError("plot_curves() needs at least one panel")

    def labelled(item: Curve | tuple[str, Curve]) -> tuple[str, Curve]:
        return item if isinstance(item, tuple) else (_KIND_LABELS.get(item.kind, item.kind), item)

    ylim = None
    if same_scale:
        vals = np.concatenate([np.asarray(labelled(c)[1]._values(score)) for _, cs in panels for c in cs])
        vals = vals[np.isfinite(vals)]
        if vals.size:
            lo, hi = float(vals.min()), float(vals.max())
            pad = 0.05 * (hi - lo) if hi > lo else 0.1
            ylim = (lo - pad, hi + pad)
    charts = []
    for title, curves in panels:
        series = []
        for item in curves:
            label, c = labelled(item)
            colour = CURVE_COLOURS.get(label.lower(), CURVE_COLOURS.get(c.kind, (0, 0, 0)))
            series.append((label, c.fractions, c._values(score), colour))
        charts.append(line_chart(series, title, xlabel, "probability" if score == "prob" else "logit", size, ylim))
    return grid(charts, None, columns=min(columns, len(charts)), pad=4)
