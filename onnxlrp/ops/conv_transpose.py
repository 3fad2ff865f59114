"""``ConvTranspose`` as a linear layer: every LRP rule of the linear-rule template applies.

ONNX ``ConvTranspose`` with weight ``W`` shaped ``(C_in, C_out/group, *k)`` is the transposed map
of the convolution with that same weight read as ``(M = C_in, C/group = C_out/group, *k)``, from
the ``C_out`` channels of the (larger) output back to the ``C_in`` channels of the input. So its
forward (:meth:`ConvTransposeLayer.lin`) is :func:`~onnxlrp.ops.kernels.conv_transpose` and its
transposed map (:meth:`ConvTransposeLayer.lin_t`) is :func:`~onnxlrp.ops.kernels.conv`, both with
the node's strides, dilations, pads and groups; ``output_padding`` / ``output_shape`` only fix the
output size, which the graph's shapes give.

The composites give it the rule of a linear layer that is not a convolution (ε on dense layers in
Zennit's composites; the seed's presets likewise): its receptive fields are irregular (each output
pixel sees ``⌈k/s⌉`` input pixels per axis, depending on its phase), which the convolution rules'
assumptions (Z⁺ after ReLU, Flat on first layers) do not need, so they apply too when asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels
from .base import Array, Layer, NodeContext, Unsupported, register
from .linear import LinearLayer


class ConvTransposeLayer(LinearLayer):
    """``y = ConvTranspose(x; W) + b``: linear in ``x`` (see the module docstring)."""

    def __init__(self, ctx: NodeContext) -> None:
        node = ctx.node
        if not ctx.is_const(1):
            raise Unsupported("the ConvTranspose weight is computed at run time; only constant weights are explained")
        if node.input[0] in ctx.consts:
            raise Unsupported("the ConvTranspose input is a constant")
        super().__init__(ctx, node.input[0])
        w = ctx.const(1)
        assert w is not None
        self.weight = np.asarray(w, dtype=np.float32)
        b = ctx.const(2)
        if b is None and len(node.input) > 2 and node.input[2]:
            raise Unsupported("the ConvTranspose bias is computed at run time")
        self.bias = None if b is None else np.asarray(b, dtype=np.float32).reshape(-1)
        self.group = int(ctx.attr("group", 1))
        nd = self.weight.ndim - 2
        in_shape, out_shape = self.input_shapes[0], self.output_shapes[0]
        if len(in_shape) != nd + 2 or len(out_shape) != nd + 2:
            raise Unsupported(f"input rank {len(in_shape)} does not match a {nd}-d kernel")
        if in_shape[1] != self.weight.shape[0] or in_shape[1] % self.group:
            raise Unsupported(f"input has {in_shape[1]} channels but the weight expects {self.weight.shape[0]}")
        if out_shape[1] != self.weight.shape[1] * self.group:
            raise Unsupported(f"output has {out_shape[1]} channels, the weight gives {self.out_channels}")
        kernel = self.weight.shape[2:]
        self.strides = [int(s) for s in ctx.attr("strides", [1] * nd)]
        self.dilations = [int(d) for d in ctx.attr("dilations", [1] * nd)]
        self.out_spatial = tuple(int(d) for d in out_shape[2:])
        # the pads of the equivalent convolution (output → input): whatever the node's pads, auto_pad,
        # output_padding or output_shape, the shapes fix begin + end; auto_pad/SAME_UPPER put the odd one last
        auto = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
        pads = ctx.attr("pads")
        opad = list(ctx.attr("output_padding", [0] * nd))
        begin: list[int] = []
        end: list[int] = []
        for i in range(nd):
            eff = (kernel[i] - 1) * self.dilations[i] + 1
            total = self.strides[i] * (in_shape[2 + i] - 1) + eff - self.out_spatial[i]  # pads − output_padding
            tp = total + int(opad[i])  # ONNX's total_padding
            if auto == "SAME_UPPER":
                b_ = tp // 2
            elif auto == "SAME_LOWER" or (auto == "NOTSET" and not pads and ctx.attr("output_shape")):
                b_ = tp - tp // 2
            elif auto == "VALID" or not pads:
                b_ = 0
            else:
                b_ = int(pads[i])
            begin.append(int(b_))
            end.append(int(total - b_))
        if min(begin) < 0:
            raise Unsupported(f"ConvTranspose pads {begin} are negative")
        self.pads = begin + end  # end < 0: output_padding rows that no window reaches (zero plus bias)
        self._pads_conv = begin + [max(e, 0) for e in end]
        self._extra = [max(-e, 0) for e in end]

    @property
    def out_channels(self) -> int:
        """Number of output channels."""
        return int(self.weight.shape[1] * self.group)

    def _scale_weight(self, scale: np.ndarray) -> None:
        g = self.group
        cin, cog = self.weight.shape[:2]
        w = self.weight.reshape((g, cin // g, cog) + self.weight.shape[2:])
        s = scale.reshape((g, 1, cog) + (1,) * (self.weight.ndim - 2))
        self.weight = (w * s).reshape(self.weight.shape).astype(np.float32)

    def lin(self, xp: Any, x: Array, w: Array, b: Array | None) -> Array:
        """``ConvTranspose(x; w) + b``."""
        reach = tuple(o - e for o, e in zip(self.out_spatial, self._extra, strict=True))
        y = kernels.conv_transpose(xp, x, w, reach, self.strides, self.dilations, self._pads_conv, self.group)
        if any(self._extra):
            y = xp.pad(y, [(0, 0), (0, 0)] + [(0, e) for e in self._extra])
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return y

    def lin_t(self, xp: Any, v: Array, w: Array) -> Array:
        """The transposed map: the convolution of ``v`` with ``w`` (output channels → input channels)."""
        if any(self._extra):
            v = v[(Ellipsis,) + tuple(slice(0, o - e) for o, e in zip(self.out_spatial, self._extra, strict=True))]
        return kernels.conv(xp, xp.ascontiguousarray(v), w, None, self.strides, self.dilations, self._pads_conv,
                            self.group)

    def acted_axes(self) -> list[tuple[int, ...]]:
        """Channels and spatial axes (for the batch-axis check)."""
        return [tuple(range(1, len(self.input_shapes[0])))]

    def describe(self) -> str:
        """E.g. ``ConvTranspose 2x2/2 8->4``."""
        k = "x".join(str(s) for s in self.weight.shape[2:])
        s = "x".join(str(s) for s in self.strides)
        grp = f" groups={self.group}" if self.group > 1 else ""
        return f"ConvTranspose {k}/{s} {self.weight.shape[0]}->{self.out_channels}{grp}" + (
            f" (+{', '.join(self.folded)})" if self.folded else ""
        )


@register("ConvTranspose")
def _build(ctx: NodeContext) -> Layer:
    return ConvTransposeLayer(ctx)


__all__ = ["ConvTransposeLayer"]
