"""Re-indexing layers: relevance follows the elements (reshapes, transposes, slices, pads, concat, split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Array, Layer, NodeContext, Unsupported, register, unbroadcast


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
        self.constants = [np.asarray(ctx.consts[n], dtype=np.float32) for n in ctx.node.input if n in ctx.consts]
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
        """Concatenate the inputs and the constant pieces (a class token, register tokens) in order."""
        dyn, const = iter(ins), iter(self.constants)
        parts = [next(dyn) if d else xp.asarray(next(const)) for _, _, d in self.pieces]
        return [xp.concatenate(parts, axis=self.axis)]


class SplitLayer(Layer):
    """``Split``: the gradients of the pieces are concatenated (missing ones are zero)."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        rank = len(self.input_shapes[0])
        self.axis = int(ctx.attr("axis", 0)) % rank

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
    """``Gather`` of constant indices along any axis (``x[:, 0]``, a q/k/v split ``x[0]`` of a tensor whose batch
    axis a reshape moved, dynamo's ``as_strided`` as a gather of a flattened tensor with an index array).

    Indices may be multi-dimensional and repeated: the VJP adds the gradient back at the gathered positions
    (a repeated element collects the gradients of all its copies). Whether the gather keeps the samples
    apart is decided from the indices by :func:`batch_axes`.
    """

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        idx = ctx.const(1)
        if idx is None:
            raise Unsupported("Gather with indices computed at run time")
        rank = len(self.input_shapes[0])
        self.axis = int(ctx.attr("axis", 0)) % rank
        dim = self.input_shapes[0][self.axis]
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < -dim or idx.max() >= dim):
            raise Unsupported(f"Gather indices outside [-{dim}, {dim})")
        idx = idx % max(dim, 1)
        self.index: int | np.ndarray = int(idx) if idx.ndim == 0 else idx
        self.distinct = idx.ndim <= 1 and len(np.unique(idx)) == idx.size

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Add the gradient back at the gathered positions."""
        g = gouts[0]
        if g is None:
            return [None]
        shape = tuple(self.input_shapes[0])
        native = getattr(xp, "native_gather_vjp", None)
        if native is not None:
            return [native(g, shape, self.axis, np.asarray(self.index))]
        gx = xp.zeros((g.shape[0],) + shape, dtype=g.dtype)
        if isinstance(self.index, int) or self.distinct:
            sl = [slice(None)] * gx.ndim
            sl[1 + self.axis] = self.index if isinstance(self.index, int) else xp.asarray(self.index)
            gx[tuple(sl)] = g
            return [gx]
        pre = int(np.prod(shape[: self.axis], dtype=np.int64))
        post = int(np.prod(shape[self.axis + 1:], dtype=np.int64))
        g4 = g.reshape(g.shape[0], pre, self.index.size, post)
        g4x = gx.reshape(g.shape[0], pre, shape[self.axis], post)
        where = (slice(None), slice(None), xp.asarray(self.index.reshape(-1)))
        if xp is np:
            np.add.at(g4x, where, g4)
        else:
            import cupyx  # type: ignore[import-not-found]

            cupyx.scatter_add(g4x, where, g4)
        return [gx]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Gather."""
        return [xp.take(ins[0], xp.asarray(self.index), axis=self.axis)]


class ExpandLayer(Layer):
    """``Expand`` of an activation to a constant shape (broadcasting): the VJP sums over the broadcast axes."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        if not ctx.is_const(1):
            raise Unsupported("Expand to a shape computed at run time")

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Sum the gradient over the broadcast axes."""
        g = gouts[0]
        return [None if g is None else unbroadcast(xp, g, tuple(self.input_shapes[0]))]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Broadcast to the output shape."""
        return [xp.ascontiguousarray(xp.broadcast_to(ins[0], tuple(self.output_shapes[0])))]


class TileLayer(Layer):
    """``Tile`` of an activation with constant repeats: the VJP sums the gradient over the copies."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        reps = ctx.const(1)
        if reps is None:
            raise Unsupported("Tile repeats computed at run time")
        self.repeats = [int(r) for r in np.asarray(reps).reshape(-1)]
        if len(self.repeats) != len(self.input_shapes[0]) or min(self.repeats, default=1) < 1:
            raise Unsupported(f"Tile repeats {self.repeats} for an input of rank {len(self.input_shapes[0])}")

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """View the gradient as (K, r0, d0, r1, d1, ...) and sum the repeat axes."""
        g = gouts[0]
        if g is None:
            return [None]
        split: list[int] = [g.shape[0]]
        for r, d in zip(self.repeats, self.input_shapes[0], strict=True):
            split += [r, d]
        axes = tuple(range(1, len(split), 2))
        return [g.reshape(split).sum(axis=axes)]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Tile."""
        return [xp.tile(ins[0], self.repeats)]

    def acted_axes(self) -> list[tuple[int, ...]]:
        """The repeated axes (for the batch-axis check)."""
        return [tuple(a for a, r in enumerate(self.repeats) if r > 1)]


class WhereLayer(Layer):
    """``Where(cond, a, b)`` with a constant condition (masks): each output element is one input element.

    The VJP routes the gradient to ``a`` where ``cond`` holds and to ``b`` elsewhere (summed over broadcast
    axes); a constant branch receives nothing. As a re-indexing layer it keeps relevance where it came from.
    """

    def __init__(self, ctx: NodeContext) -> None:
        cond = ctx.const(0)
        if cond is None:
            raise Unsupported("Where with a condition computed at run time (a data-dependent selection)")
        branches = [ctx.node.input[1], ctx.node.input[2]]
        super().__init__(ctx, inputs=[b for b in branches if b not in ctx.consts])
        self.cond = np.asarray(cond).astype(bool)
        self.dynamic = [b not in ctx.consts for b in branches]
        self.values = [None if d else np.asarray(ctx.consts[b], dtype=np.float32)
                       for b, d in zip(branches, self.dynamic, strict=True)]

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """``g ⊙ cond`` to the first branch, ``g ⊙ ¬cond`` to the second."""
        g = gouts[0]
        res: list[Array | None] = []
        shapes = iter(self.input_shapes)
        for k, dyn in enumerate(self.dynamic):
            if not dyn:
                continue
            shape = tuple(next(shapes))
            if g is None:
                res.append(None)
                continue
            mask = xp.asarray(self.cond if k == 0 else ~self.cond)
            res.append(unbroadcast(xp, g * mask, shape))
        return res

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Select."""
        dyn = iter(ins)
        a, b = (next(dyn) if d else xp.asarray(v) for d, v in zip(self.dynamic, self.values, strict=True))
        return [xp.where(xp.asarray(self.cond), a, b).astype(xp.float32)]


@register("Expand")
def _expand(ctx: NodeContext) -> Layer:
    return ExpandLayer(ctx)


@register("Tile")
def _tile(ctx: NodeContext) -> Layer:
    return TileLayer(ctx)


@register("Where")
def _where(ctx: NodeContext) -> Layer:
    return WhereLayer(ctx)


@register("Neg")
def _neg(ctx: NodeContext) -> Layer:
    """``−x`` of an activation: a constant scaling by −1 (kind ``affine``)."""
    from .elementwise import AffineLayer

    return AffineLayer(ctx, ctx.node.input[0], np.float32(-1.0), np.float32(0.0))


@register("Abs")
def _abs(ctx: NodeContext) -> Layer:
    """``|x|`` of an activation: an element-wise activation with derivative ``sign(x)``."""
    from .elementwise import ActivationLayer

    return ActivationLayer(ctx, lambda xp, x, y: xp.sign(x).astype(xp.float32))


@register("Reciprocal")
def _reciprocal(ctx: NodeContext) -> Layer:
    """``1/x`` of an activation: an element-wise activation with derivative ``−1/x² = −y²``."""
    from .elementwise import ActivationLayer

    return ActivationLayer(ctx, lambda xp, x, y: (-(y * y)).astype(xp.float32))


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


# ---------------------------------------------------------------------------------------------
# where the batch axis is, tensor by tensor


@dataclass(frozen=True)
class BatchAt:
    """Where the samples of a tensor lie: in axis ``axis``, at stride ``inner`` within that axis.

    ``inner == 1`` and a dimension equal to the batch size: the batch *is* axis ``axis``. A
    reshape that merges the batch with the axes after it (``(N, L, E) → (N·L, E)``) leaves it
    inside an axis, with ``inner`` the product of the merged dimensions after it (``L``); a later
    reshape can split it out again. Reshapes keep the row-major layout, so the batch's place is
    found again from the shapes alone: the axis whose index digits contain the batch's.
    """

    axis: int
    inner: int = 1


def _suffix(shape: tuple[int, ...], k: int) -> int:
    return int(np.prod(shape[k + 1:], dtype=np.int64))


def _span(shape: tuple[int, ...], at: BatchAt, n: int) -> tuple[int, int]:
    """The batch's range of row-major strides ``[S, S·N)``."""
    s = at.inner * _suffix(shape, at.axis)
    return s, s * n


def _locate(shape: tuple[int, ...], span: tuple[int, int]) -> BatchAt | None:
    """The axis of ``shape`` whose strides contain ``span`` (None if the batch is split over axes)."""
    lo, hi = span
    for k in range(len(shape)):
        suf = _suffix(shape, k)
        if suf <= lo and hi <= suf * shape[k] and lo % suf == 0:
            return BatchAt(k, lo // suf)
    return None


def _overlaps(shape: tuple[int, ...], axis: int, span: tuple[int, int]) -> bool:
    """True when axis ``axis`` of ``shape`` shares strides with the batch's ``span`` (the op mixes samples)."""
    lo = _suffix(shape, axis)
    return span[0] < lo * shape[axis] and lo < span[1]


def _acted_axes(layer: Layer) -> list[tuple[int, ...] | None]:
    """Per input: the axes the layer reduces, selects, pads or mixes along (None: it reads no sample structure)."""
    from .attention import ProductLayer, SoftmaxLayer
    from .linear import ConvLayer, DenseLayer, LinearLayer
    from .normalization import NormLayer, ReduceL2Layer
    from .pooling import AvgPoolLayer, MaxPoolLayer, ReduceLayer

    own = getattr(layer, "acted_axes", None)
    if callable(own):
        return list(own())
    shapes = layer.input_shapes
    rank = len(shapes[0]) if shapes else 0
    if isinstance(layer, (SplitLayer, ConcatLayer)):
        return [(layer.axis,)] * len(shapes)
    if isinstance(layer, SliceLayer):
        return [tuple(a for a, sl in enumerate(layer.slices)
                      if sl != slice(None) and range(shapes[0][a])[sl] != range(shapes[0][a]))]
    if isinstance(layer, PadLayer):
        return [tuple(a for a in range(rank) if layer.begin[a] or layer.end[a])]
    if isinstance(layer, (ReduceLayer, ReduceL2Layer, NormLayer, SoftmaxLayer)):
        return [tuple(layer.axes)]
    if isinstance(layer, DenseLayer):
        return [(rank - 1,)]
    if isinstance(layer, (ConvLayer, LinearLayer, MaxPoolLayer, AvgPoolLayer)):  # channels and spatial axes
        return [tuple(range(1, rank))]
    if isinstance(layer, ProductLayer) and layer.mode == "matmul":
        return [(len(shapes[0]) - 1,), (len(shapes[1]) - 2,)]
    return [None] * len(shapes)


def _out_batch(layer: Layer, at: BatchAt, k_in: int, n: int) -> BatchAt | None:
    """The batch's place in the layer's (first) output, given its place ``at`` in input ``k_in``."""
    from .normalization import ReduceL2Layer
    from .pooling import ReduceLayer

    shape_in = tuple(layer.input_shapes[k_in])
    shape_out = tuple(layer.output_shapes[0])
    if isinstance(layer, ReshapeLayer):
        return _locate(shape_out, _span(shape_in, at, n))
    if isinstance(layer, TransposeLayer):
        return BatchAt(layer.perm.index(at.axis), at.inner)
    if isinstance(layer, GatherLayer):
        if layer.axis == at.axis:
            return _gather_batch(layer, at, n)
        if isinstance(layer.index, int):
            return BatchAt(at.axis - (layer.axis < at.axis), at.inner)
        shift = layer.index.ndim - 1 if layer.axis < at.axis else 0
        return BatchAt(at.axis + shift, at.inner)
    if isinstance(layer, (ReduceLayer, ReduceL2Layer)) and not layer.keepdims:
        return BatchAt(at.axis - sum(a < at.axis for a in layer.axes), at.inner)
    # element-wise and shape-keeping layers; broadcasting aligns the axes on the right
    return BatchAt(at.axis + len(shape_out) - len(shape_in), at.inner)


def _gather_batch(layer: GatherLayer, at: BatchAt, n: int) -> BatchAt | None:
    """The batch's place after a gather along the axis that holds it, or None when the gather mixes samples.

    Element ``i`` of the gathered axis belongs to sample ``(i // inner) mod N``. The gather keeps the
    samples apart when, over the index array in row-major order, the sample of each gathered element
    runs through ``0 … N−1`` in blocks of one length ``r``, repeated (each output position reads its own sample):
    the batch then lies at stride ``r · (elements after the axis)`` of the output.
    """
    if isinstance(layer.index, int):
        return None
    sid = (layer.index.reshape(-1) // at.inner) % n
    moved = np.flatnonzero(sid)
    if n < 2 or not moved.size or sid[0] != 0:
        return None
    r = int(moved[0])
    if np.any(sid != (np.arange(sid.size) // r) % n):
        return None
    shape_in = tuple(layer.input_shapes[0])
    post = int(np.prod(shape_in[layer.axis + 1:], dtype=np.int64))
    return _locate(tuple(layer.output_shapes[0]), (r * post, r * post * n))


def batch_axes(layers: list[Layer], input_name: str, batch: int) -> tuple[dict[str, BatchAt | None], list[str]]:
    """Where the batch axis of every tensor is, and the layers that would mix samples.

    The batch starts as axis 0 of the input and is followed through every layer in topological
    order: reshapes (found again from the shapes, see :class:`BatchAt`), transposes, gathers and
    reductions that drop axes, broadcasting. A layer that reduces, selects, pads, concatenates,
    normalises or contracts along an axis holding the batch would make one sample's explanation
    depend on the others; it is reported (node, op type, axis). With one sample nothing can mix.
    """
    where: dict[str, BatchAt | None] = {input_name: BatchAt(0)}
    problems: list[str] = []
    for layer in layers:
        acted = _acted_axes(layer)
        state: BatchAt | None = None
        k_in = 0
        for k, name in enumerate(layer.inputs):
            at = where.get(name)
            if at is None:
                continue
            shape = tuple(layer.input_shapes[k])
            span = _span(shape, at, batch)
            axes = acted[k] if k < len(acted) else None
            hit = [a for a in (axes or ()) if batch > 1 and _overlaps(shape, a, span)]
            if hit:
                problems.append(f"node {layer.name!r} (op {layer.op_type}) works along axis {hit[0]} of "
                                f"{name!r} {list(shape)}, which holds the batch: it would mix samples")
            if state is None:
                state, k_in = at, k
        out = None if state is None else _out_batch(layer, state, k_in, batch)
        if state is not None and out is None and batch > 1:
            if isinstance(layer, GatherLayer):
                problems.append(f"node {layer.name!r} (op Gather) selects along axis {layer.axis} of "
                                f"{layer.inputs[0]!r} {list(layer.input_shapes[0])}, which holds the batch: "
                                "it would mix samples")
            else:
                problems.append(f"node {layer.name!r} (op {layer.op_type}) splits the batch axis over several axes "
                                f"({list(layer.input_shapes[k_in])} → {list(layer.output_shapes[0])})")
        for o in layer.outputs:
            where[o] = out
    return where, problems


def batch_axis_problems(layers: list[Layer], input_name: str, output_name: str, batch: int) -> list[str]:
    """The layers that mix samples (see :func:`batch_axes`), and the output if its batch is not axis 0."""
    where, problems = batch_axes(layers, input_name, batch)
    at = where.get(output_name)
    if batch > 1 and at is not None and at != BatchAt(0):
        problems.append(f"the output {output_name!r} does not hold the samples in its first axis")
    return problems
