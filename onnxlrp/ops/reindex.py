"""Re-indexing layers: relevance follows the elements (reshapes, transposes, slices, pads, concat, split)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Array, Layer, NodeContext, Unsupported, register


class ReshapeLayer(Layer):
    """``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze`` and identities: same elements, new shape."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        if ctx.node.input[0] in ctx.consts:
            raise Unsupported("reshape of a constant")
        self.outputs = self.outputs[:1]
        self.output_shapes = self.output_shapes[:1]

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Reshape back to the input shape."""
        g = gouts[0]
        return [None if g is None else g.reshape((g.shape[0],) + tuple(self.input_shapes[0]))]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Reshape to the output shape."""
        return [ins[0].reshape(self.output_shapes[0])]


class TransposeLayer(Layer):
    """``Transpose`` with a permutation."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        rank = len(self.input_shapes[0])
        self.perm = list(ctx.attr("perm", list(range(rank))[::-1]))
        self.inv = [int(i) for i in np.argsort(self.perm)]

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Apply the inverse permutation (keeping the leading K axis)."""
        g = gouts[0]
        return [None if g is None else xp.ascontiguousarray(g.transpose([0] + [1 + i for i in self.inv]))]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Transpose."""
        return [ins[0].transpose(self.perm)]

    def describe(self) -> str:
        """E.g. ``Transpose perm=[0, 3, 1, 2]``."""
        return f"Transpose perm={self.perm}"


class ConcatLayer(Layer):
    """``Concat``: the gradient is split back along the axis. Constant pieces get nothing."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        rank = len(self.output_shapes[0])
        self.axis = int(ctx.attr("axis")) % rank
        self.pieces: list[tuple[int, int, bool]] = []  # (start, stop, dynamic)
        start = 0
        for name in ctx.node.input:
            size = int(ctx.consts[name].shape[self.axis]) if name in ctx.consts else ctx.shape(name)[self.axis]
            self.pieces.append((start, start + size, name not in ctx.consts))
            start += size

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Slice each dynamic input's part out of the gradient."""
        g = gouts[0]
        res: list[Array | None] = []
        for start, stop, dyn in self.pieces:
            if not dyn:
                continue
            if g is None:
                res.append(None)
                continue
            sl = [slice(None)] * g.ndim
            sl[1 + self.axis] = slice(start, stop)
            res.append(xp.ascontiguousarray(g[tuple(sl)]))
        return res

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Concatenate (only when every input is dynamic)."""
        if not all(d for _, _, d in self.pieces):
            raise Unsupported("Concat with constants has no array forward here")
        return [xp.concatenate(ins, axis=self.axis)]


class SplitLayer(Layer):
    """``Split``: the gradients of the pieces are concatenated (missing ones are zero)."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        rank = len(self.input_shapes[0])
        self.axis = int(ctx.attr("axis", 0)) % rank
        if self.axis == 0:
            raise Unsupported("Split along the batch axis")

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Concatenate the pieces' gradients."""
        if all(g is None for g in gouts):
            return [None]
        k = next(g for g in gouts if g is not None).shape[0]
        parts = [
            g if g is not None else xp.zeros((k,) + tuple(shp), dtype=xp.float32)
            for g, shp in zip(gouts, self.output_shapes, strict=True)
        ]
        return [xp.concatenate(parts, axis=1 + self.axis)]


class SliceLayer(Layer):
    """``Slice`` with constant starts/ends/axes/steps: the gradient is scattered back into zeros."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        in_shape = self.input_shapes[0]
        rank = len(in_shape)
        if ctx.opset < 10:
            starts, ends = ctx.attr("starts"), ctx.attr("ends")
            axes = ctx.attr("axes", list(range(len(starts))))
            steps = [1] * len(starts)
        else:
            vals = []
            for i in range(1, 5):
                if i < len(ctx.node.input) and ctx.node.input[i]:
                    c = ctx.const(i)
                    if c is None:
                        raise Unsupported("Slice parameters computed at run time")
                    vals.append([int(v) for v in np.asarray(c).reshape(-1)])
                else:
                    vals.append(None)
            starts, ends, axes, steps = vals
            axes = axes if axes is not None else list(range(len(starts)))
            steps = steps if steps is not None else [1] * len(starts)
        sl = [slice(None)] * rank
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            a = int(a) % rank
            if a == 0:
                raise Unsupported("Slice along the batch axis")
            big = np.iinfo(np.int64).max // 2
            e = None if (st > 0 and e >= big) or (st < 0 and e <= -big) else int(e)
            sl[a] = slice(int(s), e, int(st))
        self.slices = tuple(sl)

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Zeros of the input shape with the gradient written into the sliced region."""
        g = gouts[0]
        if g is None:
            return [None]
        gx = xp.zeros((g.shape[0],) + tuple(self.input_shapes[0]), dtype=g.dtype)
        gx[(slice(None),) + self.slices] = g
        return [gx]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Slice."""
        return [ins[0][self.slices]]


class PadLayer(Layer):
    """``Pad`` in constant mode (negative pads crop): the gradient is the un-padded region."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        mode = ctx.attr("mode", "constant")
        if mode != "constant":
            raise Unsupported(f"Pad mode {mode!r}; only constant padding is supported")
        rank = len(self.input_shapes[0])
        if ctx.opset < 11:
            pads = list(ctx.attr("pads"))
        else:
            c = ctx.const(1)
            if c is None:
                raise Unsupported("Pad amounts computed at run time (constant folding did not remove them)")
            pads = [int(v) for v in np.asarray(c).reshape(-1)]
        axes = list(range(rank))
        if len(ctx.node.input) > 3 and ctx.node.input[3]:
            ca = ctx.const(3)
            if ca is None:
                raise Unsupported("Pad axes computed at run time")
            axes = [int(a) % rank for a in np.asarray(ca).reshape(-1)]
        n = len(axes)
        self.begin = [0] * rank
        self.end = [0] * rank
        for j, a in enumerate(axes):
            self.begin[a], self.end[a] = pads[j], pads[j + n]
        if self.begin[0] or self.end[0]:
            raise Unsupported("Pad along the batch axis")
        self.value = float(np.asarray(ctx.const(2)).reshape(-1)[0]) if ctx.const(2) is not None else 0.0

    def _regions(self) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Matching regions of the input and the output."""
        src, dst = [], []
        for d, b, e in zip(self.input_shapes[0], self.begin, self.end, strict=True):
            s0, s1 = max(0, -b), d - max(0, -e)
            o0 = max(0, b)
            src.append(slice(s0, s1))
            dst.append(slice(o0, o0 + (s1 - s0)))
        return tuple(src), tuple(dst)

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Cut the input's region out of the gradient (zeros where the input was cropped)."""
        g = gouts[0]
        if g is None:
            return [None]
        src, dst = self._regions()
        gx = xp.zeros((g.shape[0],) + tuple(self.input_shapes[0]), dtype=g.dtype)
        gx[(slice(None),) + src] = g[(slice(None),) + dst]
        return [gx]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Pad with the constant value."""
        src, dst = self._regions()
        y = xp.full(self.output_shapes[0], self.value, dtype=xp.float32)
        y[dst] = ins[0][src]
        return [y]


class GatherLayer(Layer):
    """``Gather`` of constant, distinct indices along a non-batch axis (e.g. ``x[:, 0]``)."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        idx = ctx.const(1)
        if idx is None:
            raise Unsupported("Gather with indices computed at run time")
        rank = len(self.input_shapes[0])
        self.axis = int(ctx.attr("axis", 0)) % rank
        if self.axis == 0:
            raise Unsupported("Gather along the batch axis")
        dim = self.input_shapes[0][self.axis]
        idx = np.asarray(idx, dtype=np.int64) % dim
        if idx.ndim > 1 or len(np.unique(idx)) != idx.size:
            raise Unsupported("Gather with repeated or multi-dimensional indices")
        self.index: int | np.ndarray = int(idx) if idx.ndim == 0 else idx

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Write the gradient back at the gathered positions."""
        g = gouts[0]
        if g is None:
            return [None]
        gx = xp.zeros((g.shape[0],) + tuple(self.input_shapes[0]), dtype=g.dtype)
        sl = [slice(None)] * gx.ndim
        sl[1 + self.axis] = self.index if isinstance(self.index, int) else xp.asarray(self.index)
        gx[tuple(sl)] = g
        return [gx]


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
def _reshape(ctx: NodeContext) -> Layer:
    return ReshapeLayer(ctx)


@register("Cast")
def _cast(ctx: NodeContext) -> Layer:
    if int(ctx.attr("to")) != 1:
        raise Unsupported("Cast of an activation to a non-float32 type")
    return ReshapeLayer(ctx)


@register("Transpose")
def _transpose(ctx: NodeContext) -> Layer:
    return TransposeLayer(ctx)


@register("Concat")
def _concat(ctx: NodeContext) -> Layer:
    return ConcatLayer(ctx)


@register("Split")
def _split(ctx: NodeContext) -> Layer:
    return SplitLayer(ctx)


@register("Slice")
def _slice(ctx: NodeContext) -> Layer:
    return SliceLayer(ctx)


@register("Pad")
def _pad(ctx: NodeContext) -> Layer:
    return PadLayer(ctx)


@register("Gather")
def _gather(ctx: NodeContext) -> Layer:
    return GatherLayer(ctx)
