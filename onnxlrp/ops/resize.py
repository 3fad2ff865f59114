"""``Resize`` (opsets 10–19) and ``Upsample`` as linear maps of the input, one matrix per axis.

Nearest, linear and cubic interpolation with constant scales or sizes are *separable*: along
each resized axis ``a`` the output is ``M_a x`` for an ``(out_a, in_a)`` matrix whose row ``j``
holds the interpolation weights of output position ``j``. :func:`axis_matrix` builds that matrix
from ONNX's definition (the coordinate transformation modes ``half_pixel``, ``pytorch_half_pixel``,
``align_corners``, ``asymmetric``, ``half_pixel_symmetric``; the nearest modes; the cubic
coefficient ``A`` and ``exclude_outside``; out-of-range taps take the edge value), so the forward
is the product of the per-axis maps and the VJP applies the transposed matrices: an exact transpose.

Relevance: the layer is of kind ``"reindex"``, so the composites give it the gradient rule,
``R_in = Mᵀ R_out``. It conserves relevance exactly when every output's weights sum to 1 —
nearest (one weight 1), linear (``1−r``, ``r``) and cubic interpolation (the Keys coefficients
sum to 1; with ``exclude_outside`` they are renormalised to 1) all do, so ``Σ R_in = Σ R_out``.
Cubic weights can be negative, so there the map is not monotone and relevance of either sign can
arise from one sign.

Input bounds (Z^B's box, mapped through the layers before the first linear layer):
:meth:`ResizeLayer.map_bounds` gives the exact image box ``[M⁺l + M⁻h, M⁺h + M⁻l]``; with cubic
weights the forward of ``l`` and of ``h`` alone does not bound the output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Array, Layer, NodeContext, Unsupported, register

_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _source_coordinate(j: int, scale: float, n_in: int, n_out: int, mode: str) -> Any:
    """The input coordinate of output position ``j`` (ONNX's ``coordinate_transformation_mode``), computed in
    float32 as onnxruntime does (a nearest tap on a rounding boundary then falls where onnxruntime's does)."""
    f = np.float32
    j, scale, n_in, n_out = f(j), f(scale), f(n_in), f(n_out)
    if mode == "half_pixel":
        return (j + f(0.5)) / scale - f(0.5)
    if mode == "pytorch_half_pixel":
        return (j + f(0.5)) / scale - f(0.5) if n_out > 1 else f(0.0)
    if mode == "align_corners":
        return f(0.0) if n_out == 1 else j * (n_in - f(1)) / (n_out - f(1))
    if mode == "asymmetric":
        return j / scale
    if mode == "half_pixel_symmetric":
        adjustment = n_out / (scale * n_in)
        center = n_in / f(2)
        return center * (f(1) - adjustment) + (j + f(0.5)) / scale - f(0.5)
    raise Unsupported(f"coordinate_transformation_mode {mode!r}")


def _nearest(x: float, mode: str) -> int:
    if mode == "round_prefer_floor":
        return math.ceil(x - 0.5)
    if mode == "round_prefer_ceil":
        return math.floor(x + 0.5)
    if mode == "floor":
        return math.floor(x)
    return math.ceil(x)


def _cubic(r: float, a: float) -> list[float]:
    """Keys' cubic convolution weights of the taps at ``⌊x⌋−1, ⌊x⌋, ⌊x⌋+1, ⌊x⌋+2`` for ``r = x − ⌊x⌋``."""

    def near(t: float) -> float:  # |t| ≤ 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t: float) -> float:  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    return [far(r + 1), near(r), near(1 - r), far(2 - r)]


def axis_matrix(n_in: int, n_out: int, scale: float, mode: str, coord: str, nearest_mode: str = "round_prefer_floor",
                cubic_a: float = -0.75, exclude_outside: bool = False) -> np.ndarray:
    """The ``(n_out, n_in)`` float64 interpolation matrix of one axis (row ``j``: the weights of output ``j``)."""
    m = np.zeros((n_out, n_in))
    for j in range(n_out):
        x = float(_source_coordinate(j, scale, n_in, n_out, coord))
        if mode == "nearest":
            m[j, min(max(_nearest(x, nearest_mode), 0), n_in - 1)] = 1.0
            continue
        x0 = math.floor(x)
        r = x - x0
        if mode == "linear":
            taps, weights = [x0, x0 + 1], [1 - r, r]
        else:
            taps, weights = [x0 - 1, x0, x0 + 1, x0 + 2], _cubic(r, cubic_a)
        if exclude_outside:
            kept = [(t, w) for t, w in zip(taps, weights, strict=True) if 0 <= t < n_in]
            total = sum(w for _, w in kept)
            for t, w in kept:
                m[j, t] += w / total
        else:
            for t, w in zip(taps, weights, strict=True):
                m[j, min(max(t, 0), n_in - 1)] += w
    return m


class ResizeLayer(Layer):
    """``y = (⊗_a M_a) x``: interpolation along each resized axis by its matrix (see the module docstring)."""

    kind = "reindex"

    def __init__(self, ctx: NodeContext, mats: dict[int, np.ndarray], label: str) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        if ctx.node.input[0] in ctx.consts:
            raise Unsupported("Resize of a constant")
        self.mats = {a: m.astype(np.float32) for a, m in sorted(mats.items())}
        self.label = label
        self._dev: dict[tuple[int, int, Any], Any] = {}

    def _mat(self, xp: Any, axis: int, transposed: bool) -> Array:
        key = (id(xp), axis, transposed)
        if key not in self._dev:
            m = self.mats[axis]
            self._dev[key] = xp.asarray(np.ascontiguousarray(m.T if transposed else m))
        return self._dev[key]

    @staticmethod
    def _apply(xp: Any, m: Array, t: Array, axis: int) -> Array:
        """``m`` (out, in) applied along ``axis`` of ``t``."""
        return xp.ascontiguousarray(xp.moveaxis(xp.tensordot(m, t, axes=([1], [axis])), 0, axis))

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Interpolate axis by axis."""
        y = ins[0]
        for a in self.mats:
            y = self._apply(xp, self._mat(xp, a, False), y, a)
        return [y]

    def _signed(self, xp: Any, axis: int) -> tuple[Array, Array]:
        """The positive and negative parts ``(M⁺, M⁻)`` of the matrix of ``axis`` (``M = M⁺ + M⁻``)."""
        key = (id(xp), axis, "signed")
        if key not in self._dev:
            m = self.mats[axis]
            self._dev[key] = (xp.asarray(np.maximum(m, 0)), xp.asarray(np.minimum(m, 0)))
        return self._dev[key]

    def map_bounds(self, xp: Any, low: Array, high: Array) -> tuple[Array, Array]:
        """The tightest elementwise bounds of the output over the input box ``low ≤ x ≤ high``.

        For a linear map ``y = M x`` the smallest and largest ``y_j`` over the box are
        ``M⁺ low + M⁻ high`` and ``M⁺ high + M⁻ low`` (``M⁺ = max(M, 0)``, ``M⁻ = min(M, 0)``): each
        input at the bound its weight's sign asks for. Applying this axis by axis is exact, not a
        relaxation: an entry of the separable map ``⊗_a M_a`` is a product of one entry per axis, and for
        a product of scalars ``(ab)⁺ = a⁺b⁺ + a⁻b⁻`` and ``(ab)⁻ = a⁺b⁻ + a⁻b⁺``, which is what two
        interval steps compute. Nearest and linear interpolation (no negative weights) give
        ``(forward(low), forward(high))``; cubic interpolation's negative taps widen the box — its
        ``forward(low)``/``forward(high)`` would not contain the output of every ``x`` in the box.
        """
        lo, hi = low, high
        for a in self.mats:
            pos, neg = self._signed(xp, a)
            lo, hi = (self._apply(xp, pos, lo, a) + self._apply(xp, neg, hi, a),
                      self._apply(xp, pos, hi, a) + self._apply(xp, neg, lo, a))
        return lo, hi

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """The transposed matrices, axis by axis (``g`` carries the leading K axis)."""
        g = gouts[0]
        if g is None:
            return [None]
        for a in self.mats:
            g = self._apply(xp, self._mat(xp, a, True), g, a + 1)
        return [g]

    def acted_axes(self) -> list[tuple[int, ...]]:
        """The resized axes (for the batch-axis check)."""
        return [tuple(self.mats)]

    def describe(self) -> str:
        """E.g. ``Resize linear half_pixel 7x7->14x14``."""
        shp_in = "x".join(str(self.input_shapes[0][a]) for a in self.mats)
        shp_out = "x".join(str(self.output_shapes[0][a]) for a in self.mats)
        return f"{self.label} {shp_in}->{shp_out}"


def _float_list(c: np.ndarray | None) -> list[float] | None:
    if c is None:
        return None
    v = np.asarray(c).reshape(-1)
    return [float(a) for a in v] if v.size else None


def _build(ctx: NodeContext, mode: str, coord: str, scales: list[float] | None, sizes: list[int] | None,
           axes: list[int] | None, nearest_mode: str, cubic_a: float, exclude_outside: bool, label: str) -> Layer:
    shape_in = tuple(ctx.shape(ctx.node.input[0]))
    shape_out = tuple(ctx.shape(ctx.node.output[0]))
    rank = len(shape_in)
    if len(shape_out) != rank:
        raise Unsupported("Resize changes the rank")
    axes = [a % rank for a in axes] if axes else list(range(rank))
    full_scales = [1.0] * rank
    if scales is not None:
        if len(scales) != len(axes):
            raise Unsupported(f"{len(scales)} scales for {len(axes)} axes")
        for a, s in zip(axes, scales, strict=True):
            full_scales[a] = s
    elif sizes is not None:
        if len(sizes) != len(axes):
            raise Unsupported(f"{len(sizes)} sizes for {len(axes)} axes")
        for a in axes:
            full_scales[a] = shape_out[a] / shape_in[a]
    else:
        raise Unsupported("Resize without constant scales or sizes")
    mats = {}
    for a in range(rank):
        if shape_in[a] == shape_out[a] and full_scales[a] == 1.0:
            continue
        if full_scales[a] <= 0:
            raise Unsupported(f"scale {full_scales[a]} along axis {a}")
        mats[a] = axis_matrix(shape_in[a], shape_out[a], full_scales[a], mode, coord, nearest_mode, cubic_a,
                              exclude_outside)
    desc = f"{label} {mode}" + (f" {coord}" if mode != "nearest" or coord != "asymmetric" else "")
    return ResizeLayer(ctx, mats, desc)


@register("Resize")
def _resize(ctx: NodeContext) -> Layer:
    """``Resize``: opset 10 (scales only, asymmetric) and 11–19 (roi, scales, sizes; the attributes above)."""
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise Unsupported(f"Resize mode {mode!r}")
    if ctx.opset < 11:
        scales = _float_list(ctx.const(1))
        if scales is None:
            raise Unsupported("Resize scales computed at run time")
        if mode == "nearest" and min(scales) < 1:
            raise Unsupported("Resize (opset 10) nearest downsampling: onnxruntime's index rule there is not ONNX's")
        return _build(ctx, mode, "asymmetric", scales, None, None, "floor" if mode == "nearest" else "", -0.75,
                      False, "Resize")
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    if coord == "tf_crop_and_resize":
        raise Unsupported("Resize coordinate_transformation_mode 'tf_crop_and_resize' (a crop) is not supported")
    if coord not in _COORD_MODES:
        raise Unsupported(f"Resize coordinate_transformation_mode {coord!r}")
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor")
    if mode == "nearest" and nearest_mode not in _NEAREST_MODES:
        raise Unsupported(f"Resize nearest_mode {nearest_mode!r}")
    if int(ctx.attr("antialias", 0)):
        raise Unsupported("Resize with antialias=1 is not supported")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise Unsupported("Resize keep_aspect_ratio_policy other than 'stretch' is not supported")
    for i in (1, 2, 3):
        if not ctx.is_const(i):
            raise Unsupported("Resize roi, scales or sizes computed at run time")
    scales = _float_list(ctx.const(2))
    size_c = ctx.const(3)
    sizes = [int(v) for v in np.asarray(size_c).reshape(-1)] if size_c is not None and size_c.size else None
    axes = ctx.attr("axes")
    return _build(ctx, mode, coord, scales, sizes if scales is None else None, list(axes) if axes else None,
                  nearest_mode, float(ctx.attr("cubic_coeff_a", -0.75)), bool(int(ctx.attr("exclude_outside", 0))),
                  "Resize")


@register("Upsample")
def _upsample(ctx: NodeContext) -> Layer:
    """``Upsample`` (opsets 7–9): nearest or linear, asymmetric coordinates; scales as attribute or input."""
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise Unsupported(f"Upsample mode {mode!r}")
    scales = ctx.attr("scales")
    if scales is None:
        scales = _float_list(ctx.const(1))
        if scales is None:
            raise Unsupported("Upsample scales computed at run time")
    return _build(ctx, "linear" if mode == "bilinear" else mode, "asymmetric", list(scales), None, None, "floor",
                  -0.75, False, "Upsample")


__all__ = ["ResizeLayer", "axis_matrix"]
