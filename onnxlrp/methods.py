"""The public methods by name: a composite, a start relevance and a post-processing.

Conventions (see docs/methods.md in the repository):

* LRP-family methods start from the target's *logit value* ``y_t`` (or from the softmax
  gradient for SGLRP), so an LRP heatmap sums to ``y_t`` where the rules conserve relevance.
* Gradient-family methods are seeded with 1: ``gradient`` is exactly ``∂y_t/∂x``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import composites as C

LOW_HIGH = ("low", "high")
DTD = LOW_HIGH + ("bias",)


@dataclass(frozen=True)
class Method:
    """A named explanation method."""

    name: str
    family: str  # "lrp" | "gradient" | "sampling" | "cam"
    summary: str
    composite: Callable[..., C.Composite] | None = None
    start: str = "onehot"  # see start_relevance()
    post: str = "identity"  # "identity" | "contrast" | "times_input"
    options: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("lrp", "lrp", "bounded Deep Taylor LRP (the seed's LRP): Z^B / Alpha-Beta(1,0) / W²",
               C.bounded_deep_taylor, "relu_logit", options=DTD),
        Method("clrp", "lrp", "contrastive LRP: target pass minus the rescaled pass of all other classes",
               C.bounded_deep_taylor, "clrp", "contrast", DTD),
        Method("sglrp", "lrp", "softmax-gradient LRP: target p_t(1-p_t) minus the rescaled dual p_t p_i",
               C.bounded_deep_taylor, "sglrp", "contrast", DTD),
        Method("sglrp_seq_a", "lrp", "SGLRP start in one pass through LRP preset A flat",
               C.lrp_preset_a, "sglrp_signed", options=("bias",)),
        Method("sglrp_seq_b", "lrp", "SGLRP start in one pass through LRP preset B flat",
               C.lrp_preset_b, "sglrp_signed", options=("bias",)),
        Method("lrp_preset_a", "lrp", "LRP preset A flat: Flat / Alpha-Beta(1,0) convs / Epsilon(0.1) dense",
               C.lrp_preset_a, "logit", options=("bias",)),
        Method("lrp_preset_b", "lrp", "LRP preset B flat: Flat / Alpha-Beta(2,1) convs / Epsilon(0.1) dense",
               C.lrp_preset_b, "logit", options=("bias",)),
        Method("lrp_epsilon", "lrp", "LRP-epsilon (1e-7) on every linear layer", C.lrp_epsilon, "logit",
               options=("epsilon",)),
        Method("epsilon_plus_flat", "lrp", "Zennit EpsilonPlusFlat: Flat / Z+ convs / Epsilon(1e-6) dense",
               C.epsilon_plus_flat, "logit"),
        Method("epsilon_alpha2_beta1_flat", "lrp",
               "Zennit EpsilonAlpha2Beta1Flat: Flat / Alpha-Beta(2,1) convs / Epsilon(1e-6) dense",
               C.epsilon_alpha2_beta1_flat, "logit"),
        Method("epsilon_gamma_box", "lrp",
               "Zennit EpsilonGammaBox: Z^B first conv / Gamma(0.25) convs / Epsilon(1e-6) dense",
               C.epsilon_gamma_box, "logit", options=LOW_HIGH + ("gamma",)),
        Method("attnlrp", "lrp", "AttnLRP (LXT 2.1): Epsilon, identity on activations, softmax and uniform rules",
               C.attnlrp, "logit", options=("epsilon",)),
        Method("cp_lrp", "lrp", "CP-LRP (LXT 2.1): as AttnLRP with the attention weights held constant",
               C.cp_lrp, "logit", options=("epsilon",)),
        Method("gradient", "gradient", "the gradient dy_t/dx", C.gradient),
        Method("input_x_gradient", "gradient", "input times gradient", C.gradient, post="times_input"),
        Method("guided_backprop", "gradient", "guided backpropagation", C.guided_backprop),
        Method("deconvnet", "gradient", "deconvnet (positive part of the gradient at every ReLU)", C.deconvnet),
        Method("smoothgrad", "sampling", "SmoothGrad: mean gradient over noisy copies (64, noise std 1.0)",
               C.gradient, options=("n_samples", "noise_scale", "seed", "batch_size")),
        Method("integrated_gradients", "sampling",
               "Integrated Gradients from a baseline (zeros), 64 steps", C.gradient,
               options=("steps", "baseline", "batch_size")),
        Method("gradcam", "cam", "Grad-CAM on a feature map (default: the last spatial one), resized to the input",
               options=("layer",)),
        Method("guided_gradcam", "cam", "Grad-CAM times guided backprop", options=("layer",)),
    ]
}


def list_methods() -> list[str]:
    """Names of all methods, in the order of the seed's figure then the rest."""
    return list(METHODS)


def _softmax(xp: Any, y: Any) -> Any:
    e = xp.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def start_relevance(kind: str, logits: Any, targets: Any, xp: Any = np) -> Any:
    """The start relevance ``(K, N, C)`` for logits ``(N, C)`` and targets ``(T, N)``.

    * ``onehot``: 1 at the target (gradients);
    * ``logit``: ``y_t`` at the target; ``relu_logit``: ``max(y_t, 0)``;
    * ``clrp``: K = 2T — target pass ``max(y_t,0)`` at t, dual pass ``max(y_t,0)/(C−1)`` at every i ≠ t;
    * ``sglrp``: K = 2T — with ``p = softmax(max(y, 0))``: ``p_t(1−p_t) + 1e-8`` at t, dual ``p_t p_i`` at i ≠ t;
    * ``sglrp_signed``: one pass, ``p = softmax(y)``: ``p_t(1−p_t) + 1e-8`` at t and ``−p_t p_i`` at i ≠ t.

    Computed in float64 with the array module ``xp`` (NumPy, or the ONNX tracer when compiling).
    """
    y = logits.astype(xp.float64)
    c = y.shape[1]
    onehot = (xp.arange(c)[None, None, :] == targets[..., None]).astype(xp.float64)  # (T, N, C)
    yt = (onehot * y[None]).sum(axis=2, keepdims=True)  # (T, N, 1): y at the target
    if kind == "onehot":
        r = onehot
    elif kind == "logit":
        r = onehot * yt
    elif kind == "relu_logit":
        r = onehot * xp.maximum(yt, 0.0)
    elif kind == "clrp":
        yr = xp.maximum(yt, 0.0)
        r = xp.concatenate([onehot * yr, (1.0 - onehot) * yr / float(max(c - 1, 1))], axis=0)
    elif kind in ("sglrp", "sglrp_signed"):
        p = _softmax(xp, xp.maximum(y, 0.0) if kind == "sglrp" else y)[None]  # (1, N, C)
        pt = (onehot * p).sum(axis=2, keepdims=True)
        target = onehot * (pt * (1.0 - pt) + 1e-8)
        dual = (1.0 - onehot) * pt * p
        r = xp.concatenate([target, dual], axis=0) if kind == "sglrp" else target - dual
    else:
        raise ValueError(kind)
    return r.astype(xp.float32)
