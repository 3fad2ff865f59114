"""The propagation family: one forward, one batched backward (LRP rules and modified gradients).

:func:`propagate` runs a method whose composite gives every layer a rule: the start relevance
(``y_t``, the softmax gradient, a one-hot …) goes back through the layers in one pass, all
targets and CLRP/SGLRP's dual passes riding in one batch, and is post-processed (contrast,
times input). :func:`gradient` is the same road with a gradient composite, used by Grad-CAM and
the sampling methods.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .errors import InputError
from .methods import METHODS, Method, start_relevance
from .plan import Engine
from .rules import RuleContext

Array = Any


class RelevanceWarning(RuntimeWarning):
    """An LRP map carries far more relevance than it started with: the rules are unstable on this model."""


def passes(m: Method, t_count: int) -> int:
    """How many start relevances one backward pass carries for ``t_count`` targets."""
    return 2 * t_count if m.post == "contrast" else t_count


def propagate(engine: Engine, m: Method, x: np.ndarray, tg: np.ndarray | None, opts: dict[str, Any],
              acts: dict[str, Array] | None = None) -> Array:
    """Heatmaps ``(T,) + x.shape`` of an LRP- or gradient-family method for targets ``tg`` ``(T, N)``.

    ``tg=None`` explains each sample's predicted class, read from this pass's own forward. ``acts``
    supplies the forward's tensors instead of running it (to compare with a compiled graph's forward).
    """
    assert m.composite is not None
    plan = engine.plan_for(x.shape)
    if acts is None:
        acts = plan.run_forward(x)
    xp = engine.backend.xp
    logits = engine.backend.to_numpy(plan.logits(acts))
    check_logits(logits)
    if tg is None:
        tg = logits.argmax(axis=1)[None]
    start, scale = normalised(start_relevance(m.start, logits, tg))
    comp = composite_for(m, opts)
    ctx = RuleContext(xp, cache=plan.cache)
    if comp.needs_bounds:
        ctx.bounds = plan.bounds(*bounds(engine, x, opts.get("low"), opts.get("high")))
    rel = plan.backward(acts, xp.asarray(start), comp.rule_for, ctx)
    totals = engine.backend.to_numpy(xp.abs(rel).sum(axis=tuple(range(2, rel.ndim)), dtype=xp.float64))
    if not np.all(np.isfinite(totals)):
        raise InputError(
            f"{m.name}: the relevance overflowed float32 on this input (largest |x| = {float(np.abs(x).max()):.3g}); "
            "a heatmap with NaN or infinite values is never returned. Scale the input to the range the model "
            "was trained on (or, for a model with attention, give every sequence at least one unmasked token: a "
            "softmax over masked keys only is NaN)"
        )
    if m.family == "lrp":
        check_blow_up(m.name, totals, np.abs(start).sum(axis=2))
    rel *= xp.asarray(scale.reshape(scale.shape[:2] + (1,) * (rel.ndim - 2)))
    return post(xp, m.post, rel, acts[plan.graph.input_name], tg.shape[0])


def composite_for(m: Method, opts: dict[str, Any]) -> Any:
    """The method's composite with its options (``epsilon``, ``gamma``, ``bias``) applied."""
    assert m.composite is not None
    kwargs: dict[str, Any] = {}
    if "epsilon" in opts:
        kwargs["eps"] = opts["epsilon"]
    if "gamma" in opts:
        kwargs["gamma"] = opts["gamma"]
    if "bias" in opts:
        kwargs["bias"] = opts["bias"]
    return m.composite(**kwargs)


def check_logits(logits: np.ndarray) -> None:
    """Refuse non-finite class scores (they would make every heatmap and probability NaN)."""
    bad = ~np.all(np.isfinite(logits.reshape(logits.shape[0], -1)), axis=1)
    if np.any(bad):
        rows = np.flatnonzero(bad)[:5].tolist()
        raise InputError(f"the model's class scores are NaN or infinite for sample(s) {rows}: the forward pass "
                         "overflowed float32 on this input; scale the input to the range the model was trained on")


def post(xp: Any, kind: str, rel: Array, x: Array, t_count: int) -> Array:
    """Post-processing of the backward's result: identity, times the input, or CLRP/SGLRP's contrast.

    The contrast subtracts the dual pass rescaled to the target pass's total (sums in float64).
    """
    if kind == "identity":
        return rel
    if kind == "times_input":
        return rel * x
    if kind == "contrast":
        target, dual = rel[:t_count], rel[t_count:]
        axes = tuple(range(2, rel.ndim))
        st = target.sum(axis=axes, keepdims=True, dtype=xp.float64)
        sd = dual.sum(axis=axes, keepdims=True, dtype=xp.float64)
        safe = xp.where(sd == 0, 1.0, sd)
        ratio = xp.where(sd == 0, 0.0, st / safe).astype(xp.float32)
        return target - dual * ratio
    raise ValueError(kind)


def bounds(engine: Engine, x: np.ndarray, low: Any, high: Any) -> tuple[Array, Array]:
    """Z^B bounds shaped like ``x`` (validated arrays or None); default: each sample's own min and max."""
    axes = tuple(range(1, x.ndim))
    lo = np.broadcast_to(x.min(axis=axes, keepdims=True) if low is None else low, x.shape)
    hi = np.broadcast_to(x.max(axis=axes, keepdims=True) if high is None else high, x.shape)
    if np.any(lo > hi):
        raise InputError("low must not exceed high")
    b = engine.backend
    return b.asarray(lo), b.asarray(hi)


def gradient(engine: Engine, x: np.ndarray, tg: np.ndarray, composite: str = "gradient", stop_at: str | None = None,
             acts: dict[str, Array] | None = None) -> tuple[Array, dict[str, Array]]:
    """The (modified) gradient of the targets at ``x`` (or at tensor ``stop_at``) and the activations.

    ``acts`` reuses a forward pass already made on ``x``.
    """
    plan = engine.plan_for(x.shape)
    if acts is None:
        acts = plan.run_forward(x)
    xp = engine.backend.xp
    logits = engine.backend.to_numpy(plan.logits(acts))
    check_logits(logits)
    start = xp.asarray(start_relevance("onehot", logits, tg))
    comp = METHODS[composite].composite()  # type: ignore[misc]
    g = plan.backward(acts, start, comp.rule_for, RuleContext(xp), stop_at=stop_at)
    return g, acts


def check_blow_up(method: str, total: np.ndarray, start: np.ndarray) -> None:
    """Warn (:class:`RelevanceWarning`) when a map's total |relevance| exceeds its start a thousandfold."""
    ratio = float(np.max(total / np.maximum(start, 1e-30)))
    if ratio > 1e3:
        hint = " (try bias=False)" if method in ("lrp_preset_a", "lrp_preset_b", "sglrp_seq_a", "sglrp_seq_b") or (
            method in ("lrp", "clrp", "sglrp")) else ""
        warnings.warn(
            f"{method}: the heatmap's total |relevance| is {ratio:.3g} times the start relevance; some rule's "
            f"denominators crossed zero on this model, so a few pixels dominate the map{hint}",
            RelevanceWarning,
            stacklevel=5,
        )


def normalised(start: Array, xp: Any = np) -> tuple[Array, Array]:
    """Scale each start relevance (per pass and sample) to max |R| = 1; return it and the scales.

    Every rule is linear (positively homogeneous) in the relevance, so the result is rescaled
    afterwards; this keeps tiny starts (SGLRP of an unlikely class: p ~ 1e-40) out of the
    subnormal range, where float32 arithmetic is both inexact and very slow.
    """
    scale = xp.abs(start).max(axis=2, keepdims=True).astype(xp.float32)
    scale = xp.where(scale == 0, xp.float32(1.0), scale)
    return (start / scale).astype(xp.float32), scale


__all__ = ["RelevanceWarning", "bounds", "check_logits", "composite_for", "gradient", "normalised", "passes", "post",
           "propagate"]
