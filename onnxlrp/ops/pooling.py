"""Pooling and reductions: max pools (winner takes all) and averages/sums (linear, Z rule)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels
from .base import Array, Layer, NodeContext, Unsupported, register
from .linear import window_attrs


class MaxPoolLayer(Layer):
    """``MaxPool``: the gradient routes each window's value to its arg-max."""

    kind = "maxpool"

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        if len(ctx.node.output) > 1 and ctx.node.output[1]:
            self.outputs = self.outputs[:1]
            self.output_shapes = self.output_shapes[:1]
        in_shape = self.input_shapes[0]
        self.kernel = list(ctx.attr("kernel_shape"))
        self.strides, self.dilations, self.pads = window_attrs(ctx, in_shape[2:], tuple(self.kernel))

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Winner takes all."""
        g = gouts[0]
        if g is None:
            return [None]
        return [kernels.maxpool_vjp(xp, ins[0], outs[0], g, self.kernel, self.strides, self.dilations, self.pads)]


class AvgPoolLayer(Layer):
    """``AveragePool``: a linear map with equal weights over each window."""

    kind = "avgpool"

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        in_shape = self.input_shapes[0]
        self.kernel = list(ctx.attr("kernel_shape"))
        self.strides, self.dilations, self.pads = window_attrs(ctx, in_shape[2:], tuple(self.kernel))
        self.count_include_pad = bool(ctx.attr("count_include_pad", 0))

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Spread each output's gradient evenly over its window."""
        g = gouts[0]
        if g is None:
            return [None]
        return [
            kernels.avgpool_vjp(
                xp, self.input_shapes[0], g, self.kernel, self.strides, self.dilations, self.pads,
                self.count_include_pad,
            )
        ]


class ReduceLayer(Layer):
    """Global pools and ``Reduce*`` over constant axes: mean and sum (``avgpool``) or max (``maxpool``)."""

    def __init__(self, ctx: NodeContext, axes: list[int], keepdims: bool, mode: str) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        rank = len(self.input_shapes[0])
        self.axes = sorted(a % rank for a in axes)  # the batch axis among them is refused by batch_axis_problems
        self.keepdims = keepdims
        self.mode = mode
        self.kind = "maxpool" if mode == "max" else "avgpool"
        self.count = int(np.prod([self.input_shapes[0][a] for a in self.axes])) if self.axes else 1

    def _keep(self, g: Array) -> Array:
        """Reshape ``(K,) + output`` to ``(K,) + input shape with reduced axes as 1``."""
        shape = list(self.input_shapes[0])
        for a in self.axes:
            shape[a] = 1
        return g.reshape((g.shape[0],) + tuple(shape))

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Mean: spread evenly; sum: copy; max: route to the first arg-max."""
        g = gouts[0]
        if g is None:
            return [None]
        gk = self._keep(g)
        full = (g.shape[0],) + tuple(self.input_shapes[0])
        if self.mode == "mean":
            return [xp.broadcast_to(gk / xp.float32(self.count), full).copy()]
        if self.mode == "sum":
            return [xp.broadcast_to(gk, full).copy()]
        x = ins[0]
        # first arg-max over the reduced axes: move them last, flatten, one-hot
        rest = [a for a in range(x.ndim) if a not in self.axes]
        perm = rest + self.axes
        xt = x.transpose(perm)
        flat = xt.reshape(xt.shape[: len(rest)] + (-1,))
        idx = flat.argmax(axis=-1)
        onehot = (xp.arange(flat.shape[-1]) == idx[..., None]).astype(g.dtype).reshape(xt.shape)
        inv = list(np.argsort(perm))
        mask = onehot.transpose(inv)
        return [gk * mask]


def _reduce_axes(ctx: NodeContext) -> tuple[list[int], bool]:
    """Axes and keepdims of a Reduce* node (axes as attribute before opset 18, as input after)."""
    keepdims = bool(ctx.attr("keepdims", 1))
    axes = ctx.attr("axes")
    if axes is None and len(ctx.node.input) > 1 and ctx.node.input[1]:
        c = ctx.const(1)
        if c is None:
            raise Unsupported("reduction axes computed at run time")
        axes = [int(a) for a in np.asarray(c).reshape(-1)]
    rank = len(ctx.shape(ctx.node.input[0]))
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            raise Unsupported("Reduce with noop_with_empty_axes (identity) is not supported")
        axes = list(range(rank))
    return list(axes), keepdims


@register("MaxPool")
def _maxpool(ctx: NodeContext) -> Layer:
    return MaxPoolLayer(ctx)


@register("AveragePool")
def _avgpool(ctx: NodeContext) -> Layer:
    return AvgPoolLayer(ctx)


@register("GlobalAveragePool", "GlobalMaxPool")
def _global(ctx: NodeContext) -> Layer:
    rank = len(ctx.shape(ctx.node.input[0]))
    mode = "mean" if ctx.node.op_type == "GlobalAveragePool" else "max"
    return ReduceLayer(ctx, list(range(2, rank)), True, mode)


@register("ReduceMean", "ReduceSum", "ReduceMax")
def _reduce(ctx: NodeContext) -> Layer:
    axes, keepdims = _reduce_axes(ctx)
    mode = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max"}[ctx.node.op_type]
    return ReduceLayer(ctx, axes, keepdims, mode)
