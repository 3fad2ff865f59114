"""Array kernels for windowed ops (convolution, pooling), written once for NumPy and CuPy.

All functions take the array module ``xp`` first. Tensors are channel-first
(``(B, C, *spatial)``) with any number of spatial dimensions. Loops run over the *kernel
offsets* (9 for a 3×3 kernel), never over pixels or channels; the heavy part of a
convolution is one batched matrix product (BLAS / cuBLAS). An array module may bring its own
version of a kernel as an attribute ``native_<name>`` (the ONNX tracer of :mod:`onnxlrp.compiler`
emits one ``Conv`` node instead of the loops).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

Array = Any

# A column buffer larger than this many elements is built in batch chunks.
_CHUNK_ELEMS = 64 * 1024 * 1024


def out_size(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool = False) -> int:
    """Output length of a window op along one axis (ONNX Conv/Pool semantics)."""
    span = size + pb + pe - ((k - 1) * d + 1)
    if ceil:
        o = -(-span // s) + 1
        # ceil mode: the last window must start inside the input or the begin padding
        if (o - 1) * s >= size + pb:
            o -= 1
        return o
    return span // s + 1


def offsets(kernel: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """All kernel offset tuples in row-major order."""
    return itertools.product(*(range(k) for k in kernel))


def window_slices(
    off: Sequence[int], out_shape: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> tuple[slice, ...]:
    """Slices picking, for every output position, the input element at kernel offset ``off``."""
    sl = []
    for o, n, s, d in zip(off, out_shape, strides, dilations, strict=True):
        start = o * d
        sl.append(slice(start, start + s * (n - 1) + 1, s))
    return (Ellipsis,) + tuple(sl)


def pad_spatial(xp: Any, x: Array, pads: Sequence[int], value: float = 0.0) -> Array:
    """Pad the last ``len(pads) // 2`` axes of ``x`` by ``pads`` = (begin..., end...) with ``value``."""
    nd = len(pads) // 2
    if not any(pads):
        return x
    width = [(0, 0)] * (x.ndim - nd) + [(pads[i], pads[i + nd]) for i in range(nd)]
    return xp.pad(x, width, mode="constant", constant_values=value)


def _chunks(b: int, per_item: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMS // max(per_item, 1))
    return [slice(i, min(i + step, b)) for i in range(0, b, step)]


def conv(
    xp: Any,
    x: Array,
    w: Array,
    b: Array | None,
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    group: int,
) -> Array:
    """N-d convolution (ONNX ``Conv``): ``x`` (B, C, *S), ``w`` (M, C/group, *k) → (B, M, *O)."""
    native = getattr(xp, "native_conv", None)
    if native is not None:
        return native(x, w, b, strides, dilations, pads, group)
    bsz, c = x.shape[:2]
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    nd = len(kernel)
    xpd = pad_spatial(xp, x, pads)
    o_shape = tuple(
        out_size(x.shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[i + nd]) for i in range(nd)
    )
    y = xp.empty((bsz, m) + o_shape, dtype=x.dtype)
    if cg == 1 and group == c:  # depthwise (with channel multiplier m // c)
        mult = m // c
        wk = w.reshape(c, mult, -1)
        acc = xp.zeros((bsz, c, mult) + o_shape, dtype=x.dtype)
        for i, off in enumerate(offsets(kernel)):
            win = xpd[window_slices(off, o_shape, strides, dilations)]
            acc += wk[:, :, i].reshape((1, c, mult) + (1,) * nd) * win[:, :, None]
        y[...] = acc.reshape(y.shape)
    else:
        kp, p = math.prod(kernel), math.prod(o_shape)
        wm = w.reshape(group, m // group, cg * kp)
        for sl in _chunks(bsz, c * kp * p):
            xs = xpd[sl]
            nb = xs.shape[0]
            cols = xp.empty((nb, c, kp) + o_shape, dtype=x.dtype)
            for i, off in enumerate(offsets(kernel)):
                cols[:, :, i] = xs[window_slices(off, o_shape, strides, dilations)]
            cols = cols.reshape(nb, group, cg * kp, p)
            y[sl] = xp.matmul(wm, cols).reshape((nb, m) + o_shape)
    if b is not None:
        y += b.reshape((1, m) + (1,) * nd)
    return y


def conv_transpose(
    xp: Any,
    v: Array,
    w: Array,
    in_spatial: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    group: int,
) -> Array:
    """The transposed map of :func:`conv` (its VJP w.r.t. the input): ``v`` (B, M, *O) → (B, C, *S)."""
    native = getattr(xp, "native_conv_transpose", None)
    if native is not None:
        return native(v, w, in_spatial, strides, dilations, pads, group)
    bsz, m = v.shape[:2]
    o_shape = v.shape[2:]
    cg = w.shape[1]
    c = cg * group
    kernel = w.shape[2:]
    nd = len(kernel)
    padded = tuple(in_spatial[i] + pads[i] + pads[i + nd] for i in range(nd))
    gx = xp.zeros((bsz, c) + padded, dtype=v.dtype)
    if cg == 1 and group == c:
        mult = m // c
        wk = w.reshape(c, mult, -1)
        vv = v.reshape((bsz, c, mult) + tuple(o_shape))
        for i, off in enumerate(offsets(kernel)):
            contrib = (wk[:, :, i].reshape((1, c, mult) + (1,) * nd) * vv).sum(axis=2) if mult > 1 else (
                wk[:, 0, i].reshape((1, c) + (1,) * nd) * v
            )
            gx[window_slices(off, o_shape, strides, dilations)] += contrib
    else:
        kp, p = math.prod(kernel), math.prod(o_shape)
        wt = w.reshape(group, m // group, cg * kp).transpose(0, 2, 1)
        for sl in _chunks(bsz, c * kp * p):
            vs = v[sl]
            nb = vs.shape[0]
            cols = xp.matmul(wt, vs.reshape(nb, group, m // group, p)).reshape((nb, c, kp) + tuple(o_shape))
            g = gx[sl]
            for i, off in enumerate(offsets(kernel)):
                g[window_slices(off, o_shape, strides, dilations)] += cols[:, :, i]
    crop = (Ellipsis,) + tuple(slice(pads[i], pads[i] + in_spatial[i]) for i in range(nd))
    return xp.ascontiguousarray(gx[crop])


def _ceil_pads(spatial: Sequence[int], o_shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], pads: Sequence[int]) -> list[int]:
    """Pads with the end side enlarged so that every window of the output (ceil mode) lies inside."""
    nd = len(kernel)
    end = [
        max(pads[i + nd], (o_shape[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i] - pads[i])
        for i in range(nd)
    ]
    return list(pads[:nd]) + end


def maxpool_vjp(
    xp: Any,
    x: Array,
    y: Array,
    g: Array,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
) -> Array:
    """Route ``g`` (..., B, C, *O) to the arg-max of each pooling window of ``x`` (B, C, *S).

    ``g`` may carry extra leading axes (the K start relevances); the winners depend on ``x``
    only. Ties go to the first maximum in row-major window order (as onnxruntime does).
    """
    native = getattr(xp, "native_maxpool_vjp", None)
    if native is not None:
        return native(x, y, g, kernel, strides, dilations, pads)
    nd = len(kernel)
    o_shape = y.shape[2:]
    if (list(kernel) == list(strides) and not any(pads) and all(d == 1 for d in dilations)
            and all(o * k == n for o, k, n in zip(o_shape, kernel, x.shape[2:], strict=True))):
        return _maxpool_vjp_tiled(xp, x, y, g, kernel, o_shape)
    # pad enough at the end for ceil-mode windows that run past the input
    full = _ceil_pads(x.shape[2:], o_shape, kernel, strides, dilations, pads)
    xpd = pad_spatial(xp, x, full, value=-float("inf"))
    gx = xp.zeros(g.shape[: g.ndim - x.ndim] + xpd.shape, dtype=g.dtype)
    taken = xp.zeros(y.shape, dtype=bool)
    for off in offsets(kernel):
        sl = window_slices(off, o_shape, strides, dilations)
        hit = (xpd[sl] == y) & ~taken
        taken |= hit
        gx[sl] += g * hit
    crop = (Ellipsis,) + tuple(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(nd))
    return xp.ascontiguousarray(gx[crop])


def _maxpool_vjp_tiled(xp: Any, x: Array, y: Array, g: Array, kernel: Sequence[int],
                       o_shape: Sequence[int]) -> Array:
    """Max-pool VJP for non-overlapping windows that tile the input exactly (the common 2×2/2 case).

    Every input element belongs to one window, so each kernel offset's strided view of the
    gradient is written once (no zero fill, no accumulation); the winner is the first maximum.
    """
    nd = len(kernel)
    ones = [1] * nd
    gx = xp.empty(g.shape[: g.ndim - x.ndim] + tuple(x.shape), dtype=g.dtype)
    taken = None
    offs = list(offsets(kernel))
    for n, off in enumerate(offs):
        sl = window_slices(off, o_shape, kernel, ones)
        if n == len(offs) - 1:
            hit = ~taken if taken is not None else xp.ones(y.shape, dtype=bool)
        else:
            hit = x[sl] == y
            if taken is None:
                taken = hit.copy()
            else:
                hit &= ~taken
                taken |= hit
        xp.multiply(g, hit, out=gx[sl])
    return gx


def avgpool_count(xp: Any, spatial: Sequence[int], o_shape: Sequence[int], kernel: Sequence[int],
                  strides: Sequence[int], dilations: Sequence[int], pads: Sequence[int],
                  count_include_pad: bool) -> Array:
    """The divisor of every average-pool window (shape ``o_shape``): the kernel size, or the number of
    real (unpadded) elements it covers; ONNX counts explicit pads with ``count_include_pad`` but never
    the ceil-mode overhang."""
    nd = len(kernel)
    spatial = tuple(spatial)
    full = _ceil_pads(spatial, o_shape, kernel, strides, dilations, pads)
    padded = tuple(spatial[i] + full[i] + full[i + nd] for i in range(nd))
    inside = xp.zeros(padded, dtype=xp.float32)
    inner = tuple(slice(full[i], full[i] + spatial[i]) for i in range(nd))
    if count_include_pad:
        inner = tuple(slice(0, full[i] + spatial[i] + pads[i + nd]) for i in range(nd))
    inside[inner] = 1.0
    count = xp.zeros(tuple(o_shape), dtype=xp.float32)
    for off in offsets(kernel):
        count += inside[window_slices(off, o_shape, strides, dilations)]
    return count


def avgpool_vjp(
    xp: Any,
    in_shape: Sequence[int],
    g: Array,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    count_include_pad: bool,
) -> Array:
    """The transposed map of average pooling: spread ``g`` (..., C, *O) evenly over each window.

    ``in_shape`` is the input's shape; ``g`` may carry extra leading axes.
    """
    native = getattr(xp, "native_avgpool_vjp", None)
    if native is not None:
        return native(in_shape, g, kernel, strides, dilations, pads, count_include_pad)
    nd = len(kernel)
    o_shape = g.shape[g.ndim - nd :]
    spatial = tuple(in_shape[2:])
    full = _ceil_pads(spatial, o_shape, kernel, strides, dilations, pads)
    padded = tuple(spatial[i] + full[i] + full[i + nd] for i in range(nd))
    count = avgpool_count(xp, spatial, o_shape, kernel, strides, dilations, pads, count_include_pad).astype(g.dtype)
    share = g / count
    gx = xp.zeros(g.shape[: g.ndim - nd] + padded, dtype=g.dtype)
    for off in offsets(kernel):
        gx[window_slices(off, o_shape, strides, dilations)] += share
    crop = (Ellipsis,) + tuple(slice(full[i], full[i] + spatial[i]) for i in range(nd))
    return xp.ascontiguousarray(gx[crop])
