"""The kernels of :mod:`onnxlrp.ops.kernels` as ONNX nodes: the tracer's ``native_*`` primitives.

NumPy has no convolution, so the array kernels loop over kernel offsets; ONNX has one, so the
tracer writes each windowed kernel as the op the runtime optimises: the convolution as ``Conv``,
its transposed map as a ``Conv`` with the flipped kernel (stride 1) or ``ConvTranspose``, the
max-pool VJP as a scatter of ``MaxPool``'s arg-max indices, the average-pool VJP as a depthwise
``ConvTranspose`` of ones. Constant operands are computed at trace time with the NumPy kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..accel import flip_kernel
from ..ops import kernels
from .tracer import Traced, TraceError, Tracer


class GraphTracer(Tracer):
    """:class:`Tracer` with the windowed kernels as single ONNX nodes."""

    flip_stride1 = True  # a stride-1 transposed convolution as a Conv with the flipped kernel (else ConvTranspose)

    def native_conv(self, x: Any, w: Any, b: Any, strides: Sequence[int], dilations: Sequence[int],
                    pads: Sequence[int], group: int) -> Traced:
        """``Conv(x, w, b)``."""
        tx, tw = self.wrap(x, np.float32), self.wrap(w, np.float32)
        tb = None if b is None else self.wrap(b, np.float32)
        if tw.const is None or (tb is not None and tb.const is None):
            raise TraceError("a convolution whose weight depends on the input")
        if tx.const is not None:
            return self.wrap(kernels.conv(np, tx.const, tw.const, None if tb is None else tb.const,
                                          strides, dilations, pads, group))
        nd = tw.ndim - 2
        k = tw.shape[2:]
        o = [kernels.out_size(tx.shape[2 + i], k[i], strides[i], dilations[i], pads[i], pads[i + nd])
             for i in range(nd)]
        ins = [tx.name, self.name_of(tw)] + ([] if tb is None else [self.name_of(tb)])
        name = self.node("Conv", ins, kernel_shape=list(k), strides=list(strides), dilations=list(dilations),  # type: ignore[arg-type]
                         pads=list(pads), group=int(group))[0]
        return Traced(self, name, (tx.shape[0], tw.shape[0], *o), np.float32)

    def native_conv_transpose(self, v: Any, w: Any, in_spatial: Sequence[int], strides: Sequence[int],
                              dilations: Sequence[int], pads: Sequence[int], group: int) -> Traced:
        """The transposed convolution back to ``in_spatial``."""
        tv, tw = self.wrap(v, np.float32), self.wrap(w, np.float32)
        if tw.const is None:
            raise TraceError("a convolution whose weight depends on the input")
        if tv.const is not None:
            return self.wrap(kernels.conv_transpose(np, tv.const, tw.const, in_spatial, strides, dilations, pads,
                                                    group))
        k = tw.shape[2:]
        nd = len(k)
        c = tw.shape[1] * group
        d, s, p = list(dilations), list(strides), list(pads)
        out_shape = (tv.shape[0], c, *[int(n) for n in in_spatial])
        tpads = [(k[i] - 1) * d[i] - p[i] for i in range(nd)] + [(k[i] - 1) * d[i] - p[nd + i] for i in range(nd)]
        o = tv.shape[2:]
        if self.flip_stride1 and all(st == 1 for st in s) and min(tpads) >= 0:
            # a stride-1 transposed convolution is a convolution with the flipped kernel (faster in onnxruntime)
            wf = self.const_name(flip_kernel(np.asarray(tw.const, np.float32), group))
            name = self.node("Conv", [tv.name, wf], kernel_shape=list(k), dilations=d, pads=tpads,  # type: ignore[list-item]
                             group=int(group))[0]
            return Traced(self, name, out_shape, np.float32)
        out_pad = [int(in_spatial[i]) - (s[i] * (o[i] - 1) + (k[i] - 1) * d[i] + 1 - p[i] - p[nd + i])
                   for i in range(nd)]
        if min(out_pad) < 0:
            raise TraceError("a transposed convolution with negative output padding")
        name = self.node("ConvTranspose", [tv.name, self.name_of(tw)], kernel_shape=list(k), strides=s,  # type: ignore[list-item]
                         dilations=d, pads=p, group=int(group), output_padding=out_pad)[0]
        return Traced(self, name, out_shape, np.float32)

    def native_maxpool_vjp(self, x: Any, y: Any, g: Any, kernel: Sequence[int], strides: Sequence[int],
                           dilations: Sequence[int], pads: Sequence[int]) -> Traced:
        """Route ``g`` to each window's first arg-max: ``MaxPool``'s indices, then a scatter-add."""
        tx, ty, tg = self.wrap(x), self.wrap(y), self.wrap(g)
        nd = len(kernel)
        spatial, o_shape = tx.shape[2:], ty.shape[2:]
        floor = [kernels.out_size(spatial[i], kernel[i], strides[i], dilations[i], pads[i], pads[i + nd])
                 for i in range(nd)]
        ceil = int(list(floor) != list(o_shape))
        attrs: dict[str, Any] = {"kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads),
                                 "ceil_mode": ceil, "storage_order": 0}
        if any(dd != 1 for dd in dilations):
            attrs["dilations"] = list(dilations)
        _, idx = self.node("MaxPool", [self.name_of(tx)], n_out=2, **attrs)
        lead = tg.shape[: tg.ndim - tx.ndim]
        k = math.prod(lead)
        n_out = math.prod(ty.shape)
        n_in = math.prod(tx.shape)
        flat_g = self.reshape(tg, (k, n_out))
        ti = self.reshape(Traced(self, idx, ty.shape, np.int64), (1, n_out))
        if k > 1:
            ti = self.broadcast_to(ti, (k, n_out))
        zeros = self.zeros((k, n_in), np.float32)
        name = self.node("ScatterElements", [self.name_of(zeros), self.name_of(ti), self.name_of(flat_g)],
                         axis=1, reduction="add")[0]
        out = Traced(self, name, (k, n_in), np.float32)
        return self.reshape(out, tuple(lead) + tx.shape)

    def native_avgpool_vjp(self, in_shape: Sequence[int], g: Any, kernel: Sequence[int], strides: Sequence[int],
                           dilations: Sequence[int], pads: Sequence[int], count_include_pad: bool) -> Traced:
        """Divide by each window's count, spread with a depthwise ``ConvTranspose`` of ones, crop."""
        tg = self.wrap(g, np.float32)
        nd = len(kernel)
        o_shape = tg.shape[tg.ndim - nd:]
        spatial = tuple(int(s) for s in in_shape[2:])
        c = int(in_shape[1])
        count = kernels.avgpool_count(np, spatial, o_shape, kernel, strides, dilations, pads, count_include_pad)
        share = self.divide(tg, count.astype(np.float32))
        lead = tg.shape[: tg.ndim - nd - 1]
        flat = self.reshape(share, (math.prod(lead), c) + tuple(o_shape))
        ones = np.ones((c, 1) + tuple(kernel), np.float32)
        full = kernels._ceil_pads(spatial, o_shape, kernel, strides, dilations, pads)
        span = [int(strides[i]) * (o_shape[i] - 1) + (kernel[i] - 1) * int(dilations[i]) + 1 for i in range(nd)]
        attrs: dict[str, Any] = {"kernel_shape": list(kernel), "strides": list(strides), "group": c}
        if any(dd != 1 for dd in dilations):
            attrs["dilations"] = list(dilations)
        spread = self.node("ConvTranspose", [self.name_of(flat), self.const_name(ones)], **attrs)[0]
        t = Traced(self, spread, (flat.shape[0], c, *span), np.float32)
        # the spread covers padded coordinates [0, span); the input is [full_begin, full_begin + spatial)
        key: list[Any] = [slice(None), slice(None)]
        widths = [(0, 0), (0, 0)]
        for i in range(nd):
            b = full[i]
            e = min(span[i], b + spatial[i])
            key.append(slice(b, e))
            widths.append((0, b + spatial[i] - e))
        t = self.getitem(t, tuple(key))
        t = self.pad(t, widths)
        return self.reshape(t, tuple(lead) + (c,) + spatial)
