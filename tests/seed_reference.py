"""Independent float64 NumPy reference of the SGLRP paper's methods (``docs/methods.md``).

This module is a *test oracle*: a plain, deliberately naive implementation of the rules
and methods of ``methods.md`` for a VGG-like network given as a list of layers. It shares
no code with the ``onnxlrp`` engine. Speed is irrelevant; every formula is written the way
the spec writes it, with explicit loops where they make the formula evident.

Network format (one sample, NCHW without the batch axis):

- ``("conv", W, b)``  2-D convolution, ``W`` shaped (out, in, 3, 3), stride 1, zero padding 1;
- ``("relu",)``;
- ``("maxpool2",)``   2x2 max pooling, stride 2 (floor mode: a trailing odd row/column is dropped);
- ``("flatten",)``    C, H, W order;
- ``("dense", W, b)`` ``W`` shaped (out, in), ``y = W x + b``.

Entry point: :func:`reference`.

Choices made where ``methods.md`` leaves room (each is also noted at the code that does it):

1. ReLU nodes: in the bounded Deep Taylor passes (lrp, clrp, sglrp) they take the gradient
   (multiply by ``[x > 0]``), as the spec's LRP row says and as iNNvestigate's DeepTaylor maps a
   ReLU layer; in the LRP presets (A, B, epsilon) they pass relevance unchanged (the general
   "elementwise activations" row, iNNvestigate's LRP default for Activation layers).
   ``lrp_relu="pass"`` gives the other reading for the Deep Taylor passes.
1b. The bounded Deep Taylor passes use Alpha-Beta(1, 0) *without* bias (DTD's z+ rule, as later
   iNNvestigate versions do); ``dtd_bias=True`` keeps the bias (iNNvestigate 1.0.8, the seed).
2. The bounded Deep Taylor family (``lrp``, ``clrp``, ``sglrp``) starts from the ReLU'd logits
   exactly as the spec's start vectors say, with no further mask. In the seed, iNNvestigate's
   ``DeepTaylor._prepare_model`` appends a ``keras.layers.ReLU`` to the outputs and the head
   relevance is then propagated back through that ReLU with its gradient, which multiplies the
   start vector by ``[y_i > 0]`` (this changes the dual passes of CLRP/SGLRP where some
   non-target logits are negative). That variant is available as ``logit_mask=True``.
3. CLRP/SGLRP ratio ``sum(target) / sum(dual)`` is a plain division, as in the seed (no safe
   division): it is undefined when the dual pass sums to zero (e.g. CLRP with ``y_t <= 0``).
4. ``relu=True`` (any method) clips the final heatmap at 0, after the CLRP/SGLRP subtraction.
5. ``gradient``, ``guided_backprop`` and ``deconvnet`` seed the backward pass with 1 at ``t``
   (the true gradient of ``y_t``), not with ``y_t`` as the seed does.
6. Max-pool ties: the whole upstream value goes to the *first* maximum of the window in
   row-major order (both for relevance and for gradients).
7. "First linear node" is the first conv/dense layer of the list; "followed by a ReLU" means
   the next layer in the list is ``("relu",)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Layer = tuple[Any, ...]

SAFE_EPS = 1e-7  # safe division: only exact zeros get this
SGLRP_EPS = 1e-8  # added to the target's start relevance in SGLRP / SGLRPSeqA / SGLRPSeqB

LRP_METHODS = (
    "lrp",
    "clrp",
    "sglrp",
    "sglrp_seq_a",
    "sglrp_seq_b",
    "lrp_preset_a",
    "lrp_preset_b",
    "lrp_epsilon",
)
GRADIENT_METHODS = ("gradient", "guided_backprop", "deconvnet")
METHODS = LRP_METHODS + GRADIENT_METHODS
ZB_METHODS = ("lrp", "clrp", "sglrp")  # the methods that use ``low`` / ``high``


# --------------------------------------------------------------------------------------
# elementary helpers
# --------------------------------------------------------------------------------------


def safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / (b + [b == 0] * 1e-7)``: only exact zeros in ``b`` are replaced."""
    b = np.asarray(b)
    return a / (b + (b == 0).astype(b.dtype) * SAFE_EPS)


def eps_stabilise(z: np.ndarray, eps: float) -> np.ndarray:
    """``z + s(z) * eps`` with ``s(z) = +1`` for ``z >= 0`` (zero counts as positive), else ``-1``."""
    s = np.where(z >= 0, 1.0, -1.0).astype(z.dtype)
    return z + s * eps


def softmax(y: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D vector."""
    e = np.exp(y - np.max(y))
    return e / e.sum()


# --------------------------------------------------------------------------------------
# forward operations and the transposed linear maps
# --------------------------------------------------------------------------------------


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """3x3 convolution, stride 1, zero padding 1 (cross-correlation, as ONNX Conv).

    ``z[o, r, c] = b[o] + sum_{i, u, v} W[o, i, u, v] * xpad[i, r + u, c + v]``
    """
    C, H, Wd = x.shape
    n_out, n_in, kh, kw = W.shape
    assert n_in == C and (kh, kw) == (3, 3)
    xpad = np.zeros((C, H + 2, Wd + 2), dtype=x.dtype)
    xpad[:, 1:-1, 1:-1] = x
    z = np.zeros((n_out, H, Wd), dtype=x.dtype)
    for o in range(n_out):
        for i in range(C):
            for u in range(3):
                for v in range(3):
                    z[o] += W[o, i, u, v] * xpad[i, u : u + H, v : v + Wd]
        if b is not None:
            z[o] += b[o]
    return z


def conv2d_transpose(g: np.ndarray, W: np.ndarray) -> np.ndarray:
    """The transpose (adjoint) of :func:`conv2d` without bias: the vector-Jacobian product.

    Every product ``W[o, i, u, v] * xpad[i, r + u, c + v]`` of the forward pass sends
    ``W[o, i, u, v] * g[o, r, c]`` back to ``xpad[i, r + u, c + v]``; the padding is dropped.
    """
    n_out, H, Wd = g.shape
    _, C, _, _ = W.shape
    out = np.zeros((C, H + 2, Wd + 2), dtype=g.dtype)
    for o in range(n_out):
        for i in range(C):
            for u in range(3):
                for v in range(3):
                    out[i, u : u + H, v : v + Wd] += W[o, i, u, v] * g[o]
    return out[:, 1:-1, 1:-1]


def dense(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``z = W x + b`` for a 1-D ``x``."""
    z = W @ x
    return z if b is None else z + b


def dense_transpose(g: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``W^T g``."""
    return W.T @ g


def linear(kind: str, x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Apply the linear node ``kind`` ("conv" or "dense") with weights ``W`` and bias ``b``."""
    return conv2d(x, W, b) if kind == "conv" else dense(x, W, b)


def linear_t(kind: str, g: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Apply the transposed linear map ``W^T g`` of node ``kind``."""
    return conv2d_transpose(g, W) if kind == "conv" else dense_transpose(g, W)


def maxpool2(x: np.ndarray) -> np.ndarray:
    """2x2 max pooling, stride 2, floor mode."""
    C, H, Wd = x.shape
    out = np.zeros((C, H // 2, Wd // 2), dtype=x.dtype)
    for c in range(C):
        for r in range(H // 2):
            for q in range(Wd // 2):
                out[c, r, q] = x[c, 2 * r : 2 * r + 2, 2 * q : 2 * q + 2].max()
    return out


def maxpool2_route(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Send each pooled value ``g[c, r, q]`` to the arg-max of its window in the input ``x``.

    Ties: ``np.argmax`` on the row-major flattened window picks the first maximum.
    This is both the gradient of max pooling and its LRP rule (winner takes all).
    """
    C, H, Wd = x.shape
    out = np.zeros_like(x)
    for c in range(C):
        for r in range(H // 2):
            for q in range(Wd // 2):
                window = x[c, 2 * r : 2 * r + 2, 2 * q : 2 * q + 2]
                k = int(np.argmax(window))  # first maximum, row-major
                out[c, 2 * r + k // 2, 2 * q + k % 2] += g[c, r, q]
    return out


def cast_layers(layers: Sequence[Layer], dtype: Any) -> list[Layer]:
    """Copy of ``layers`` with every weight and bias cast to ``dtype``."""
    out: list[Layer] = []
    for layer in layers:
        if layer[0] in ("conv", "dense"):
            out.append((layer[0], np.asarray(layer[1], dtype=dtype), np.asarray(layer[2], dtype=dtype)))
        else:
            out.append(tuple(layer))
    return out


def forward(layers: Sequence[Layer], x: np.ndarray) -> list[np.ndarray]:
    """Run the network on one sample.

    Returns ``acts`` with ``acts[k]`` the input of layer ``k`` and ``acts[-1]`` the logits.
    """
    acts = [x]
    for layer in layers:
        kind = layer[0]
        a = acts[-1]
        if kind in ("conv", "dense"):
            a = linear(kind, a, layer[1], layer[2])
        elif kind == "relu":
            a = np.maximum(a, 0)
        elif kind == "maxpool2":
            a = maxpool2(a)
        elif kind == "flatten":
            a = a.reshape(-1)
        else:
            raise ValueError(f"unknown layer {kind!r}")
        acts.append(a)
    return acts


# --------------------------------------------------------------------------------------
# LRP rules for linear nodes (methods.md, "Rules for linear nodes")
# --------------------------------------------------------------------------------------


def rule_z(kind: str, W: np.ndarray, b: np.ndarray | None, x: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Z rule (bias kept): ``x * W^T (R / z)`` with safe division."""
    z = linear(kind, x, W, b)
    return x * linear_t(kind, safe_div(R, z), W)


def rule_epsilon(
    kind: str, W: np.ndarray, b: np.ndarray | None, x: np.ndarray, R: np.ndarray, eps: float
) -> np.ndarray:
    """Epsilon rule (bias kept): ``x * W^T (R / (z + s(z) eps))``."""
    z = linear(kind, x, W, b)
    return x * linear_t(kind, R / eps_stabilise(z, eps), W)


def rule_alpha_beta(
    kind: str,
    W: np.ndarray,
    b: np.ndarray | None,
    x: np.ndarray,
    R: np.ndarray,
    alpha: float,
    beta: float,
) -> np.ndarray:
    """iNNvestigate 1.0.8 Alpha-Beta with bias: ``b+`` rides with ``W+``, ``b-`` with ``W-``.

    activator: ``z_a = W+ x+ + W- x- + b``,
    ``A = x+ * W+^T (R / z_a) + x- * W-^T (R / z_a)``;
    inhibitor: ``z_i = W- x+ + W+ x- + b``,
    ``I = x+ * W-^T (R / z_i) + x- * W+^T (R / z_i)``; result ``alpha A - beta I``.
    Pass ``b=None`` for the variant without bias.
    """
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    if b is None:
        bp = bn = None
    else:
        bp, bn = np.maximum(b, 0), np.minimum(b, 0)

    z_a = linear(kind, xp, Wp, bp) + linear(kind, xn, Wn, bn)  # W+x+ + b+ + W-x- + b-
    s_a = safe_div(R, z_a)
    A = xp * linear_t(kind, s_a, Wp) + xn * linear_t(kind, s_a, Wn)
    if beta == 0:
        return alpha * A

    z_i = linear(kind, xp, Wn, bn) + linear(kind, xn, Wp, bp)  # W-x+ + b- + W+x- + b+
    s_i = safe_div(R, z_i)
    I_ = xp * linear_t(kind, s_i, Wn) + xn * linear_t(kind, s_i, Wp)
    return alpha * A - beta * I_


def rule_w2(kind: str, W: np.ndarray, x: np.ndarray, R: np.ndarray) -> np.ndarray:
    """W^2 rule: ``(W^2)^T (R / (W^2 1))``, no bias; ``x`` only supplies the shape.

    For a convolution ``W^2 1`` is the convolution of a ones tensor shaped like ``x`` (zero
    padded), so border outputs sum over fewer weights.
    """
    W2 = W**2
    z = linear(kind, np.ones_like(x), W2, None)
    return linear_t(kind, safe_div(R, z), W2)


def rule_flat(kind: str, W: np.ndarray, x: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Flat rule: the W^2 rule with every weight set to 1."""
    return rule_w2(kind, np.ones_like(W), x, R)


def rule_zb(kind: str, W: np.ndarray, x: np.ndarray, R: np.ndarray, low: float, high: float) -> np.ndarray:
    """Z^B (bounded) rule, no bias.

    ``z = W x - W+ l - W- h``, ``s = R / z`` (safe), result ``x * W^T s - l * W+^T s - h * W-^T s``
    with ``l``, ``h`` constant tensors shaped like ``x`` (zero padding stays zero).
    """
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    lo = np.full_like(x, low)
    hi = np.full_like(x, high)
    z = linear(kind, x, W, None) - linear(kind, lo, Wp, None) - linear(kind, hi, Wn, None)
    s = safe_div(R, z)
    return x * linear_t(kind, s, W) - lo * linear_t(kind, s, Wp) - hi * linear_t(kind, s, Wn)


def apply_rule(rule: tuple[Any, ...], layer: Layer, x: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Apply ``rule`` (as produced by :func:`rules_for`) to linear ``layer`` with input ``x``."""
    kind, W, b = layer
    name = rule[0]
    if name == "z":
        return rule_z(kind, W, b, x, R)
    if name == "epsilon":
        return rule_epsilon(kind, W, b, x, R, rule[1])
    if name == "alpha_beta":
        return rule_alpha_beta(kind, W, b, x, R, rule[1], rule[2])
    if name == "alpha_beta_nobias":
        return rule_alpha_beta(kind, W, None, x, R, rule[1], rule[2])
    if name == "w2":
        return rule_w2(kind, W, x, R)
    if name == "flat":
        return rule_flat(kind, W, x, R)
    if name == "zb":
        return rule_zb(kind, W, x, R, rule[1], rule[2])
    raise ValueError(f"unknown rule {name!r}")


# --------------------------------------------------------------------------------------
# presets: which rule each linear node gets
# --------------------------------------------------------------------------------------


def rules_for(preset: str, layers: Sequence[Layer], low: float = -1.0, high: float = 1.0,
              dtd_bias: bool = False, preset_bias: bool = True) -> dict[int, tuple]:
    """Map layer index -> rule for the linear layers of ``layers`` under ``preset``.

    - ``"dtd"`` (bounded Deep Taylor, used by lrp/clrp/sglrp): first linear node Z^B(low, high);
      linear nodes followed by a ReLU Alpha-Beta(1, 0), without bias unless ``dtd_bias``; the
      others (the classifier layer) W^2.
    - ``"a"`` (LRP preset A flat): first linear node Flat; conv Alpha-Beta(1, 0) with bias;
      dense Epsilon(0.1).
    - ``"b"`` (LRP preset B flat): as ``"a"`` with Alpha-Beta(2, 1) with bias on convs.
    - ``"epsilon"``: Epsilon(1e-7) on every linear node.
    """
    linear_idx = [k for k, layer in enumerate(layers) if layer[0] in ("conv", "dense")]
    first = linear_idx[0]
    rules: dict[int, tuple] = {}
    for k in linear_idx:
        kind = layers[k][0]
        followed_by_relu = k + 1 < len(layers) and layers[k + 1][0] == "relu"
        if preset == "dtd":
            if k == first:
                rules[k] = ("zb", low, high)
            elif followed_by_relu:
                rules[k] = ("alpha_beta", 1.0, 0.0) if dtd_bias else ("alpha_beta_nobias", 1.0, 0.0)
            else:
                rules[k] = ("w2",)
        elif preset in ("a", "b"):
            if k == first:
                rules[k] = ("flat",)
            elif kind == "conv":
                ab = "alpha_beta" if preset_bias else "alpha_beta_nobias"
                rules[k] = (ab, 1.0, 0.0) if preset == "a" else (ab, 2.0, 1.0)
            else:
                rules[k] = ("epsilon", 0.1)
        elif preset == "epsilon":
            rules[k] = ("epsilon", 1e-7)
        else:
            raise ValueError(f"unknown preset {preset!r}")
    return rules


# --------------------------------------------------------------------------------------
# backward passes
# --------------------------------------------------------------------------------------


def lrp_backward(
    layers: Sequence[Layer],
    acts: Sequence[np.ndarray],
    R_logits: np.ndarray,
    rules: dict[int, tuple],
    lrp_relu: str = "pass",
) -> np.ndarray:
    """Propagate the relevance ``R_logits`` at the logits down to the input.

    ReLU: ``lrp_relu="pass"`` passes relevance unchanged (choice 1 of the module docstring);
    ``"gradient"`` multiplies by ``[x > 0]``. Max pool: winner takes all. Flatten: re-indexing.
    """
    R = R_logits
    for k in reversed(range(len(layers))):
        layer, x = layers[k], acts[k]
        kind = layer[0]
        if kind in ("conv", "dense"):
            R = apply_rule(rules[k], layer, x, R)
        elif kind == "relu":
            if lrp_relu == "gradient":
                R = R * (x > 0)
            elif lrp_relu != "pass":
                raise ValueError(f"unknown lrp_relu {lrp_relu!r}")
        elif kind == "maxpool2":
            R = maxpool2_route(x, R)
        elif kind == "flatten":
            R = R.reshape(x.shape)
        else:
            raise ValueError(f"unknown layer {kind!r}")
    return R


def gradient_backward(
    layers: Sequence[Layer], acts: Sequence[np.ndarray], G_logits: np.ndarray, mode: str
) -> np.ndarray:
    """Backward pass of a gradient-type method from ``G_logits`` at the logits.

    ReLU with input ``x`` and upstream ``g``:
    ``"gradient"``: ``g * [x > 0]``; ``"guided_backprop"``: ``max(g, 0) * [x > 0]``;
    ``"deconvnet"``: ``max(g, 0)`` (the forward input is ignored).
    Linear nodes: ``W^T g``. Max pool: to the (first) arg-max. Flatten: re-indexing.
    """
    G = G_logits
    for k in reversed(range(len(layers))):
        layer, x = layers[k], acts[k]
        kind = layer[0]
        if kind in ("conv", "dense"):
            G = linear_t(kind, G, layer[1])
        elif kind == "relu":
            if mode == "gradient":
                G = G * (x > 0)
            elif mode == "guided_backprop":
                G = np.maximum(G, 0) * (x > 0)
            elif mode == "deconvnet":
                G = np.maximum(G, 0)
            else:
                raise ValueError(f"unknown gradient mode {mode!r}")
        elif kind == "maxpool2":
            G = maxpool2_route(x, G)
        elif kind == "flatten":
            G = G.reshape(x.shape)
        else:
            raise ValueError(f"unknown layer {kind!r}")
    return G


# --------------------------------------------------------------------------------------
# start relevances (methods.md, "The seed's methods")
# --------------------------------------------------------------------------------------


def start_relevances(method: str, y: np.ndarray, t: int, logit_mask: bool = False) -> dict[str, np.ndarray]:
    """Start vector(s) at the logits for an LRP-family ``method``.

    Returns ``{"target": R}`` for single-pass methods and ``{"target": R, "dual": R}`` for
    CLRP/SGLRP. ``y`` are the plain pre-softmax logits of one sample.
    """
    C = y.shape[0]
    others = np.arange(C) != t
    out: dict[str, np.ndarray] = {}
    if method in ("lrp", "clrp", "sglrp"):
        yr = np.maximum(y, 0)  # bounded Deep Taylor: logits passed through a ReLU first
        target = np.zeros_like(y)
        dual = np.zeros_like(y)
        if method in ("lrp", "clrp"):
            target[t] = yr[t]
            dual[others] = yr[t] / (C - 1)
        else:  # sglrp: softmax of the ReLU'd logits
            p = softmax(yr)
            target[t] = p[t] * (1 - p[t]) + SGLRP_EPS
            dual[others] = p[t] * p[others]
        if logit_mask:  # choice 2: the gradient of iNNvestigate's appended output ReLU
            target = target * (y > 0)
            dual = dual * (y > 0)
        out["target"] = target
        if method != "lrp":
            out["dual"] = dual
    elif method in ("sglrp_seq_a", "sglrp_seq_b"):
        p = softmax(y)  # plain logits
        R = np.zeros_like(y)
        R[t] = p[t] * (1 - p[t]) + SGLRP_EPS
        R[others] = -p[t] * p[others]
        out["target"] = R
    elif method in ("lrp_preset_a", "lrp_preset_b", "lrp_epsilon"):
        R = np.zeros_like(y)
        R[t] = y[t]  # plain logit, no ReLU
        out["target"] = R
    else:
        raise ValueError(f"not an LRP-family method: {method!r}")
    return out


_PRESET_OF = {
    "lrp": "dtd",
    "clrp": "dtd",
    "sglrp": "dtd",
    "sglrp_seq_a": "a",
    "sglrp_seq_b": "b",
    "lrp_preset_a": "a",
    "lrp_preset_b": "b",
    "lrp_epsilon": "epsilon",
}


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------


def reference(
    method: str,
    layers: Sequence[Layer],
    x: np.ndarray,
    t: int,
    low: float = -1.0,
    high: float = 1.0,
    *,
    relu: bool = False,
    lrp_relu: str = "gradient",
    logit_mask: bool = False,
    dtd_bias: bool = False,
    preset_bias: bool = True,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Heatmap of ``method`` for one sample ``x`` (C, H, W) and target class ``t``.

    Args:
        method: one of :data:`METHODS`.
        layers: the network (see the module docstring).
        x: one input sample, shaped (C, H, W).
        t: target class index.
        low, high: input bounds of the Z^B rule (lrp, clrp, sglrp only).
        relu: clip the final heatmap at 0 (the seed's ``relu=True``).
        lrp_relu: ReLU behaviour in the bounded Deep Taylor passes, ``"gradient"`` (default) or
            ``"pass"``; the presets always pass relevance through ReLUs.
        dtd_bias: keep the bias in the Deep Taylor Alpha-Beta(1, 0) (iNNvestigate 1.0.8).
        preset_bias: keep the bias in the presets' Alpha-Beta rules (iNNvestigate; the default).
        logit_mask: multiply the bounded-Deep-Taylor start vectors by ``[y > 0]`` (seed variant).
        dtype: computation dtype (float64 by default; float32 to measure conditioning).

    Returns:
        array shaped like ``x``, of ``dtype``.
    """
    layers = cast_layers(layers, dtype)
    x = np.asarray(x, dtype=dtype)
    acts = forward(layers, x)
    y = acts[-1]
    t = int(t)

    if method in GRADIENT_METHODS:
        G = np.zeros_like(y)
        G[t] = 1.0  # seeded with 1: the true gradient of y_t
        heat = gradient_backward(layers, acts, G, method)
    elif method in LRP_METHODS:
        preset = _PRESET_OF[method]
        rules = rules_for(preset, layers, low=low, high=high, dtd_bias=dtd_bias, preset_bias=preset_bias)
        relu_mode = lrp_relu if preset == "dtd" else "pass"
        starts = start_relevances(method, y, t, logit_mask=logit_mask)
        target = lrp_backward(layers, acts, starts["target"], rules, lrp_relu=relu_mode)
        if "dual" in starts:
            dual = lrp_backward(layers, acts, starts["dual"], rules, lrp_relu=relu_mode)
            # target - dual * (sum target / sum dual), plain division as in the seed
            heat = target - dual * (target.sum() / dual.sum())
        else:
            heat = target
    else:
        raise ValueError(f"unknown method {method!r}")

    if relu:
        heat = np.maximum(heat, 0)
    return heat.astype(dtype, copy=False)
