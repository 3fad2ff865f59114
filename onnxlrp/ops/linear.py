"""Linear layers: ``Conv`` (1-, 2-, 3-d, grouped, depthwise), ``Gemm`` and ``MatMul``.

A linear layer maps ``x`` to ``z = W x + b``. Besides its VJP (``Wᵀ v``) it exposes the
forward and transposed maps for *any* weight of its shape (:meth:`LinearLayer.lin`,
:meth:`LinearLayer.lin_t`), which is what the LRP rules need for ``W⁺``, ``W⁻``, ``W²`` and
friends. Modified weights are computed once per layer and cached (:meth:`LinearLayer.param`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import kernels
from .base import Array, Layer, NodeContext, Unsupported, register


class LinearLayer(Layer):
    """Common part of Conv and dense layers: the weight, the bias and the modified-weight cache."""

    kind = "linear"
    weight: np.ndarray
    bias: np.ndarray | None

    def __init__(self, ctx: NodeContext, x_name: str) -> None:
        super().__init__(ctx, inputs=[x_name])
        self._cache: dict[tuple[str, str, int], Array] = {}
        self.first = False  # the first linear layer seen from the input (set by the parser)
        self.followed_by_relu = False  # its only consumer is a ReLU-like activation (set by the parser)
        self.classifier = False  # its output is the model output up to re-indexing (set by the parser)
        self.accel: Any = None  # optional faster kernels for lin/lin_t (set by the runtime)

    @property
    def out_channels(self) -> int:
        """Number of output features/channels (the axis a bias runs along)."""
        raise NotImplementedError

    def param(self, xp: Any, key: str, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> Array:
        """The weight modified by ``fn`` (e.g. ``W⁺``), made once and kept on the device of ``xp``."""
        ck = ("w", key, id(xp))
        if ck not in self._cache:
            w = self.weight if fn is None else fn(self.weight)
            self._cache[ck] = xp.asarray(np.asarray(w, dtype=np.float32))
        return self._cache[ck]

    def bias_param(self, xp: Any, key: str, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> Array | None:
        """The bias modified by ``fn`` (None when the layer has no bias)."""
        if self.bias is None:
            return None
        ck = ("b", key, id(xp))
        if ck not in self._cache:
            b = self.bias if fn is None else fn(self.bias)
            self._cache[ck] = xp.asarray(np.ascontiguousarray(b, dtype=np.float32))
        return self._cache[ck]

    def fold_scale_shift(self, scale: np.ndarray, shift: np.ndarray, what: str) -> None:
        """Fold a following per-output-channel ``y * scale + shift`` into W and b."""
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        shift = np.asarray(shift, dtype=np.float64).reshape(-1)
        m = self.out_channels
        scale = np.broadcast_to(scale, (m,))
        shift = np.broadcast_to(shift, (m,))
        self._scale_weight(scale)
        b = np.zeros(m) if self.bias is None else self.bias.astype(np.float64)
        self.bias = (b * scale + shift).astype(np.float32)
        self._cache.clear()
        self.folded.append(what)

    def _scale_weight(self, scale: np.ndarray) -> None:
        raise NotImplementedError

    def lin(self, xp: Any, x: Array, w: Array, b: Array | None) -> Array:
        """``W x + b`` for the given (possibly modified) weight and bias; ``x`` batch-first."""
        raise NotImplementedError

    def lin_t(self, xp: Any, v: Array, w: Array) -> Array:
        """``Wᵀ v`` for the given weight; ``v`` shaped ``(B,) + output shape[1:]``."""
        raise NotImplementedError

    def lin_t_k(self, xp: Any, v: Array, w: Array) -> Array:
        """``Wᵀ v`` for ``v`` shaped ``(K, N, ...)``: the K start relevances ride in the batch."""
        k, n = v.shape[:2]
        r = self.lin_t(xp, v.reshape((k * n,) + v.shape[2:]), w)
        return r.reshape((k, n) + r.shape[1:])

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """``Wᵀ g``: the gradient with respect to the layer input."""
        g = gouts[0]
        return [None if g is None else self.lin_t_k(xp, g, self.param(xp, "id"))]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """``W x + b`` with the original parameters."""
        return [self.lin(xp, ins[0], self.param(xp, "id"), self.bias_param(xp, "id"))]


class ConvLayer(LinearLayer):
    """ONNX ``Conv`` with any number of spatial dimensions, groups, strides, dilations and pads."""

    def __init__(self, ctx: NodeContext) -> None:
        node = ctx.node
        if not ctx.is_const(1):
            raise Unsupported("the convolution weight is computed at run time; only constant weights can be explained")
        if ctx.node.input[0] in ctx.consts:
            raise Unsupported("the convolution input is a constant")
        super().__init__(ctx, node.input[0])
        w = ctx.const(1)
        assert w is not None
        self.weight = np.asarray(w, dtype=np.float32)
        b = ctx.const(2)
        self.bias = None if b is None else np.asarray(b, dtype=np.float32).reshape(-1)
        nd = self.weight.ndim - 2
        in_shape = self.input_shapes[0]
        if len(in_shape) != nd + 2:
            raise Unsupported(f"input rank {len(in_shape)} does not match a {nd}-d kernel")
        kernel = self.weight.shape[2:]
        self.group = int(ctx.attr("group", 1))
        self.strides, self.dilations, self.pads = window_attrs(ctx, in_shape[2:], kernel)
        if in_shape[1] != self.weight.shape[1] * self.group:
            raise Unsupported(
                f"input has {in_shape[1]} channels but the weight expects {self.weight.shape[1]}×{self.group}"
            )

    @property
    def out_channels(self) -> int:
        """Number of output channels."""
        return int(self.weight.shape[0])

    def _scale_weight(self, scale: np.ndarray) -> None:
        shape = (-1,) + (1,) * (self.weight.ndim - 1)
        self.weight = (self.weight * scale.reshape(shape)).astype(np.float32)

    def lin(self, xp: Any, x: Array, w: Array, b: Array | None) -> Array:
        """Convolve ``x`` with weight ``w`` (+ bias ``b``)."""
        if self.accel is not None and xp is np:
            return self.accel.conv(self, x, w, b)
        return kernels.conv(xp, x, w, b, self.strides, self.dilations, self.pads, self.group)

    def lin_t(self, xp: Any, v: Array, w: Array) -> Array:
        """The transposed convolution of ``v`` with weight ``w``, back to the input shape."""
        if self.accel is not None and xp is np:
            return self.accel.conv_t(self, v, w)
        return kernels.conv_transpose(
            xp, v, w, self.input_shapes[0][2:], self.strides, self.dilations, self.pads, self.group
        )

    def describe(self) -> str:
        """E.g. ``Conv 3x3/1 64->128``."""
        k = "x".join(str(s) for s in self.weight.shape[2:])
        s = "x".join(str(s) for s in self.strides)
        grp = f" groups={self.group}" if self.group > 1 else ""
        c_in = self.weight.shape[1] * self.group
        return f"Conv {k}/{s} {c_in}->{self.weight.shape[0]}{grp}" + (
            f" (+{', '.join(self.folded)})" if self.folded else ""
        )


def window_attrs(ctx: NodeContext, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[list[int], ...]:
    """Strides, dilations and explicit (begin..., end...) pads of a Conv/Pool node (``auto_pad`` resolved)."""
    nd = len(kernel)
    strides = list(ctx.attr("strides", [1] * nd))
    dilations = list(ctx.attr("dilations", [1] * nd))
    return strides, dilations, _resolve_pads(ctx, spatial, kernel, strides, dilations)


def _resolve_pads(
    ctx: NodeContext, spatial: tuple[int, ...], kernel: tuple[int, ...], strides: list[int], dilations: list[int]
) -> list[int]:
    """Explicit (begin..., end...) pads from ``pads`` or ``auto_pad``."""
    nd = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto in ("NOTSET", "VALID"):
        pads = list(ctx.attr("pads", [0] * (2 * nd))) if auto == "NOTSET" else [0] * (2 * nd)
        return pads
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"unknown auto_pad {auto!r}")
    begin, end = [], []
    for i in range(nd):
        out = -(-spatial[i] // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i])
        small, big = total // 2, total - total // 2
        if auto == "SAME_UPPER":
            begin.append(small)
            end.append(big)
        else:
            begin.append(big)
            end.append(small)
    return begin + end


class DenseLayer(LinearLayer):
    """``Gemm`` or ``MatMul`` with a constant weight: ``z = x @ Wt + b`` along the last axis.

    The weight is stored as ``Wt`` shaped ``(in_features, out_features)``.
    """

    def __init__(self, ctx: NodeContext, x_name: str, wt: np.ndarray, bias: np.ndarray | None) -> None:
        super().__init__(ctx, x_name)
        self.weight = np.asarray(wt, dtype=np.float32)  # often a transposed view: BLAS takes it as is
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1)

    @property
    def out_channels(self) -> int:
        """Number of output features."""
        return int(self.weight.shape[1])

    def _scale_weight(self, scale: np.ndarray) -> None:
        self.weight = (self.weight * scale.reshape(1, -1)).astype(np.float32)

    def lin(self, xp: Any, x: Array, w: Array, b: Array | None) -> Array:
        """``x @ w + b`` (leading axes flattened into one matrix product: a batched matmul of 3-d
        activations by a 2-d weight is ~10x slower in NumPy)."""
        if x.ndim > 2 and w.ndim == 2:
            y = xp.matmul(x.reshape(-1, x.shape[-1]), w).reshape(x.shape[:-1] + (w.shape[1],))
        else:
            y = xp.matmul(x, w)
        if b is not None:
            y += b
        return y

    def lin_t(self, xp: Any, v: Array, w: Array) -> Array:
        """``v @ wᵀ`` (leading axes flattened, as in :meth:`lin`)."""
        if v.ndim > 2 and w.ndim == 2:
            return xp.matmul(v.reshape(-1, v.shape[-1]), w.T).reshape(v.shape[:-1] + (w.shape[0],))
        return xp.matmul(v, w.T)

    def describe(self) -> str:
        """E.g. ``Gemm 4096->1000``."""
        return f"{self.op_type} {self.weight.shape[0]}->{self.weight.shape[1]}" + (
            f" (+{', '.join(self.folded)})" if self.folded else ""
        )


@register("Conv")
def _build_conv(ctx: NodeContext) -> Layer:
    return ConvLayer(ctx)


@register("Gemm")
def _build_gemm(ctx: NodeContext) -> Layer:
    if ctx.is_const(0) or not ctx.is_const(1):
        raise Unsupported("only Gemm(x, constant weight) can be explained (the weight must be an initializer)")
    if int(ctx.attr("transA", 0)):
        raise Unsupported("Gemm with transA=1 on the activation is not supported")
    b_mat = ctx.const(1)
    assert b_mat is not None
    wt = b_mat.T if int(ctx.attr("transB", 0)) else b_mat
    alpha = float(ctx.attr("alpha", 1.0))
    if alpha != 1.0:
        wt = alpha * wt
    c = ctx.const(2)
    bias = None
    if c is not None:
        beta = float(ctx.attr("beta", 1.0))
        if c.ndim == 2 and c.shape[0] != 1:
            raise Unsupported("Gemm's C must be a bias (one row), not a full matrix")
        bias = beta * np.broadcast_to(c.reshape(-1), (wt.shape[1],))
    elif len(ctx.node.input) > 2 and ctx.node.input[2]:
        raise Unsupported("Gemm's bias C is computed at run time")
    return DenseLayer(ctx, ctx.node.input[0], wt, bias)


@register("MatMul")
def _build_matmul(ctx: NodeContext) -> Layer:
    if not ctx.is_const(0) and not ctx.is_const(1):
        from .attention import matmul_of_activations  # a product of two activations (attention)

        return matmul_of_activations(ctx)
    if ctx.is_const(0) or not ctx.is_const(1):
        raise Unsupported("only MatMul(x, constant weight) or MatMul of two activations can be explained")
    w = ctx.const(1)
    assert w is not None
    if w.ndim != 2:
        raise Unsupported(f"MatMul weight of rank {w.ndim}; only 2-d weights are supported")
    if len(ctx.shape(ctx.node.input[0])) < 2:
        raise Unsupported("MatMul on a 1-d activation")
    return DenseLayer(ctx, ctx.node.input[0], w, None)
