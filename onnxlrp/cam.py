"""The CAM family: Grad-CAM (Selvaraju et al. 2017) and guided Grad-CAM.

Grad-CAM weighs a feature map's channels by the spatial mean of the target's gradient there,
sums them, and resizes the result to the input (linear interpolation, half-pixel centres),
broadcast over the input's channel axis. Guided Grad-CAM multiplies it by guided backprop.

A feature map is read as a grid of positions (see :func:`read_grid`):

* a convolution's map ``(N, C, *S)`` with as many spatial axes as the input (CNNs);
* a token map ``(N, T, D)`` of a 2-D image transformer, whose ``T`` tokens are ``p ≤ 8`` leading
  extra tokens (class, distillation, register tokens: dropped) and an ``h × w`` patch grid in
  row-major order, ``h, w`` the input's size divided by one whole patch size (both rounded down
  or both up); failing that, ``(N, D, T)`` with no leading tokens (MLP-Mixer's token mixing);
* a channels-last map ``(N, H, W, C)`` (Swin), recognised when the channels-first reading of
  the same shape does not fit the input (a "spatial" axis longer than the input's, or an aspect
  ratio off by more than 2.5×) while ``(H, W)`` does; when neither fits (a norm of pooled
  features ``(N, 1, 1, C)``) the tensor is no grid.

Without ``layer=`` the map is the *last* tensor of the graph that reads as a grid, holds the
samples in its first axis, is not inside an attention (a query/key/value or the attention
weights), and on whose grid the target's gradient is not identically zero. For CNNs this is the
last spatial feature map; for a transformer pooled over its tokens (Swin, MLP-Mixer, mean-pooled
ViTs) the last token map before the pooling (the final norm's output); for a class-token
transformer (ViT, DeiT), whose last blocks' patch tokens never reach the class token, it is the
input of the last attention, i.e. the output of the last block's first norm (pytorch-grad-cam's
recommended ``blocks[-1].norm1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, OnnxLrpError
from .methods import METHODS, start_relevance
from .ops.base import Layer
from .ops.reindex import BatchAt, batch_axes
from .plan import Engine, Plan
from .propagation import check_logits, gradient
from .rules import RuleContext

Array = Any
_MAX_PREFIX = 8  # class + distillation + register tokens in front of the patch tokens
_ASPECT = 2.5  # how far a channels-first map's aspect ratio may stray from the input's
_PASS = ("reindex", "affine", "batchnorm")  # layers that leave a query, key or value one (re-indexed, scaled)


@dataclass(frozen=True)
class Grid:
    """How a feature map's trailing axes read as ``C`` channels on a spatial grid.

    ``layout`` is ``"channels_first"`` ``(N, C, *S)``, ``"tokens"`` ``(N, T, D)``,
    ``"tokens_transposed"`` ``(N, D, T)`` or ``"channels_last"`` ``(N, H, W, C)``; ``prefix`` is the
    number of leading tokens dropped; ``size`` the spatial grid.
    """

    layout: str
    prefix: int
    size: tuple[int, ...]

    def to_channels_first(self, xp: Any, a: Array, ndim: int) -> Array:
        """``a`` (any leading axes, then the map's ``ndim - 1`` axes after the batch) as ``(..., C, *size)``."""
        lead = a.shape[: a.ndim - (ndim - 1)]
        k = len(lead)
        if self.layout == "channels_first":
            return a
        if self.layout == "channels_last":
            return xp.moveaxis(a, -1, k)
        if self.layout == "tokens":
            body = a[..., self.prefix:, :]
            return xp.moveaxis(body.reshape(lead + self.size + (a.shape[-1],)), -1, k)
        body = a[..., self.prefix:]
        return body.reshape(lead + (a.shape[-2],) + self.size)


def read_grid(shape: tuple[int, ...], in_spatial: tuple[int, ...]) -> Grid | None:
    """How a tensor of ``shape`` (batch first) reads as a grid for an input with spatial size ``in_spatial``.

    None when it does not (see the module docstring for the layouts recognised).
    """
    rank = len(in_spatial)
    if rank == 0 or len(shape) < 3:
        return None
    if len(shape) == rank + 2:
        spatial = tuple(shape[2:])
        if rank == 2 and not _plausible(spatial, in_spatial):  # (N, H, W, C) or no grid
            last = (int(shape[1]), int(shape[2]))
            return Grid("channels_last", 0, last) if _plausible(last, in_spatial) and last[0] * last[1] > 1 else None
        return Grid("channels_first", 0, spatial) if int(np.prod(spatial)) > 1 else None
    if rank == 2 and len(shape) == 3 and min(shape[1:]) > 1:  # (N, T, D) first, then (N, D, T) without leading tokens
        for layout, t, most in (("tokens", shape[1], _MAX_PREFIX), ("tokens_transposed", shape[2], 0)):
            found = _token_grid(int(t), in_spatial, most)
            if found is not None:
                return Grid(layout, *found)
    return None


def _plausible(spatial: tuple[int, ...], in_spatial: tuple[int, ...]) -> bool:
    """A channels-first map's spatial size could come from this input: no longer, aspect within 2.5×."""
    if any(s > i for s, i in zip(spatial, in_spatial, strict=True)):
        return False
    ratio = (spatial[0] / spatial[1]) / (in_spatial[0] / in_spatial[1])
    return 1 / _ASPECT <= ratio <= _ASPECT


def _token_grid(t: int, in_spatial: tuple[int, ...], most: int) -> tuple[int, tuple[int, int]] | None:
    """``(prefix, (h, w))``: the fewest leading tokens (at most ``most``) after which ``t`` tokens form a patch grid.

    The grid must be the input cut into whole square patches of one size ``s``: ``h`` and ``w``
    are ``in_h / s`` and ``in_w / s``, both rounded down or both up, with at least two patches.
    """
    in_h, in_w = in_spatial
    for p in range(min(most, t - 2) + 1):
        m = t - p
        for h in range(1, math.isqrt(m) + 1):
            if m % h:
                continue
            for gh, gw in ((h, m // h), (m // h, h)):
                if any(_patch_size(gh, in_h, up) & _patch_size(gw, in_w, up) for up in (False, True)):
                    return p, (gh, gw)
    return None


def _patch_size(cells: int, length: int, up: bool) -> set[int]:
    """The whole patch sizes ``s`` that cut ``length`` into ``cells`` cells (``length / s`` rounded down, or up)."""
    if cells > length:
        return set()
    if not up:  # floor(length / s) == cells  <=>  length/(cells+1) < s <= length/cells
        return set(range(length // (cells + 1) + 1, length // cells + 1))
    if cells == 1:
        return set(range(length, 2 * length))
    # ceil(length / s) == cells  <=>  length/cells <= s < length/(cells-1)
    return set(range(-(-length // cells), -(-length // (cells - 1))))


def gradcam(engine: Engine, original_outputs: set[str], x: np.ndarray, tg: np.ndarray, layer: str | None,
            guided: bool, acts: dict[str, Array] | None = None) -> Array:
    """Grad-CAM heatmaps ``(T,) + x.shape`` on tensor ``layer`` (default: see the module docstring).

    ``original_outputs`` are the tensor names of the model as exported (to tell a user that a
    tensor they named was fused away). ``acts`` reuses forward tensors already computed on ``x``
    (the compiler's same-forward check feeds the compiled graph's own).
    """
    plan = engine.plan_for(x.shape)
    xp = engine.backend.xp
    in_spatial = input_spatial(plan, x.shape)
    if layer is None:
        name, grid, grad, acts = _default_map(engine, plan, x, tg, in_spatial, acts)
    else:
        name = cam_layer(plan, layer, original_outputs)
        grid = read_grid(tuple(plan.graph.shapes[name]), in_spatial)
        if grid is None:
            raise InputError(f"Grad-CAM layer {layer!r} has shape {list(plan.graph.shapes[name])}: not a feature map "
                             f"on a grid for input {list(x.shape)} (a map (N, C, *spatial), a token map (N, T, D) of "
                             "class tokens and a patch grid, or a channels-last (N, H, W, C) map); name another "
                             "tensor with layer=")
        grad, acts = gradient(engine, x, tg, stop_at=name, acts=acts)
    cam = weighted_map(xp, grid, acts[name], grad, len(plan.graph.shapes[name]))
    heat = resize_to_input(engine, plan, cam, x.shape)
    if guided:
        gb, _ = gradient(engine, x, tg, composite="guided_backprop", acts=acts)
        heat = heat * gb
    return heat


def weighted_map(xp: Any, grid: Grid, act: Array, grad: Array, ndim: int) -> Array:
    """Grad-CAM's map on the grid, ``(T, N, *S)``: the channels of ``act`` weighted by the grid-mean of ``grad``
    (``(T,)`` + the map's shape), summed over the channels."""
    a = grid.to_channels_first(xp, act, ndim)  # (N, C, *S)
    g = grid.to_channels_first(xp, grad, ndim)  # (T, N, C, *S)
    w = g.mean(axis=tuple(range(3, g.ndim)), keepdims=True)  # (T, N, C, 1..)
    return (w * a[None]).sum(axis=2)


class _Found(Exception):
    """Ends the backward at the first candidate map whose grid receives gradient."""

    def __init__(self, name: str, grad: Array) -> None:
        super().__init__(name)
        self.name = name
        self.grad = grad


def _default_map(engine: Engine, plan: Plan, x: np.ndarray, tg: np.ndarray, in_spatial: tuple[int, ...],
                 acts: dict[str, Array] | None = None) -> tuple[str, Grid, Array, dict[str, Array]]:
    """The default map (the last candidate whose grid gets gradient), its grid, gradient and the activations.

    One backward pass: the gradient arriving at each candidate tensor is looked at as the pass
    reaches its producer, latest first, and the pass stops at the first that is not zero on the grid.
    """
    cands = candidate_maps(plan, x.shape[0], in_spatial)
    if x.shape[0] == 1 and engine.fixed_batch is None:
        # at batch 1 the batch axis of a seq-first (T, 1, D) map cannot be told from a batch-first one: take the
        # candidates a batch of 2 shows (the same graph, the same tensor names), so the map does not depend on N
        try:
            two = candidate_maps(engine.plan_for((2,) + tuple(x.shape[1:])), 2, in_spatial)
        except OnnxLrpError:
            two = None
        if two is not None:
            cands = {name: grid for name, grid in two.items() if name in plan.graph.shapes}
    if not cands:
        raise InputError("Grad-CAM needs a spatial feature map, and this model has none that reads as a grid for "
                         f"input {list(x.shape)} (a map (N, C, *spatial), a token map (N, T, D) of class tokens and "
                         "a patch grid, or a channels-last (N, H, W, C) map); name a tensor with layer=")
    xp = engine.backend.xp
    shapes = plan.graph.shapes
    if acts is None:
        acts = plan.run_forward(x)
    logits = engine.backend.to_numpy(plan.logits(acts))
    check_logits(logits)
    start = xp.asarray(start_relevance("onehot", logits, tg))
    comp = METHODS["gradient"].composite()  # type: ignore[misc]

    def live(name: str, g: Array | None) -> bool:
        return g is not None and bool(xp.any(cands[name].to_channels_first(xp, g, len(shapes[name])) != 0))

    def rule_for(layer: Layer) -> Any:
        rule = comp.rule_for(layer)
        if not any(o in cands for o in layer.outputs):
            return rule

        def watched(lay: Layer, ctx: RuleContext, ins: list[Array], outs: list[Array],
                    gouts: list[Array | None]) -> list[Array | None]:
            for o, g in zip(lay.outputs, gouts, strict=True):
                if o in cands and live(o, g):
                    raise _Found(o, g)
            return rule(lay, ctx, ins, outs, gouts)

        return watched

    earliest = next(iter(cands))
    try:
        g = plan.backward(acts, start, rule_for, RuleContext(xp), stop_at=earliest)
    except _Found as found:
        return found.name, cands[found.name], found.grad, acts
    if live(earliest, g):
        return earliest, cands[earliest], g, acts
    last = next(reversed(cands))  # no grid gets any gradient: the map is zero
    return last, cands[last], xp.zeros((start.shape[0],) + tuple(shapes[last]), dtype=xp.float32), acts


def candidate_maps(plan: Plan, batch: int, in_spatial: tuple[int, ...]) -> dict[str, Grid]:
    """The tensors Grad-CAM may use by default, in graph order, with their grids.

    Outputs of layers that compute (not re-index), hold the samples in axis 0, read as a grid
    (:func:`read_grid`) and are not part of an attention: neither the attention weights nor a
    query, key or value (a tensor that reaches an attention product through re-indexing,
    scaling and BatchNorms alone) nor derived from them that way.
    """
    g = plan.graph
    where, _ = batch_axes(g.layers, g.input_name, batch)
    inner = _attention_tensors(g.layers)
    res: dict[str, Grid] = {}
    for lay in g.layers:
        if lay.kind in ("reindex", "product", "softmax"):
            continue
        for t in lay.outputs:
            shape = tuple(g.shapes.get(t, ()))
            if t in inner or not shape or shape[0] != batch or where.get(t) != BatchAt(0):
                continue
            grid = read_grid(shape, in_spatial)
            if grid is not None:
                res[t] = grid
    return res


def _attention_tensors(layers: list[Layer]) -> set[str]:
    """Tensors inside attentions: inputs and outputs of products/softmaxes, extended through re-indexing,
    scaling and unfused BatchNorms (LeViT's key/value projections)."""
    marked: set[str] = set()
    for lay in layers:
        if lay.kind in ("product", "softmax"):
            marked.update(lay.inputs)
            marked.update(lay.outputs)
    for lay in reversed(layers):  # back from the products: the queries, keys and values
        if lay.kind in _PASS and any(o in marked for o in lay.outputs):
            marked.update(lay.inputs)
    for lay in layers:  # forward from them: the attention's output before its projection
        if lay.kind in _PASS and any(i in marked for i in lay.inputs):
            marked.update(lay.outputs)
    return marked


def cam_layer(plan: Plan, layer: str | None, original_outputs: set[str]) -> str:
    """The feature-map tensor ``layer``, checked to be a tensor of the plan's graph of rank 3 or more.

    (Without ``layer``, the default map is chosen by :func:`gradcam` from :func:`candidate_maps`.)
    """
    g = plan.graph
    if layer is None:
        raise InputError("Grad-CAM: name a tensor with layer=")
    if layer in g.shapes and any(layer in lay.outputs for lay in g.layers):
        if len(g.shapes[layer]) < 3:
            raise InputError(f"Grad-CAM layer {layer!r} has shape {list(g.shapes[layer])}: not a feature map "
                             "(N, C, spatial...) or token map (N, T, D); name another tensor with layer=")
        return layer
    if layer in original_outputs:
        raise InputError(f"tensor {layer!r} was fused away when the graph was canonicalised (e.g. a Conv output "
                         "merged with its BatchNorm); name the tensor after the fused op instead")
    raise InputError(f"Grad-CAM layer {layer!r} is not a tensor of the model")


def input_spatial(plan: Plan, x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The input's spatial size (after the channel axis, or between batch and channels for NHWC input)."""
    if len(x_shape) < 3:
        raise InputError("Grad-CAM needs a spatial feature map and an input with spatial axes; this input has "
                         f"shape {list(x_shape)}")
    return tuple(x_shape[1:-1]) if input_is_channels_last(plan) else tuple(x_shape[2:])


def resize_to_input(engine: Engine, plan: Plan, cam: Array, x_shape: tuple[int, ...]) -> Array:
    """Resize ``(T, N, *S)`` maps to the input's spatial size and broadcast over its channel axis."""
    xp = engine.backend.xp
    nhwc = input_is_channels_last(plan)
    spatial = input_spatial(plan, x_shape)
    if len(spatial) != cam.ndim - 2:
        raise InputError(f"the feature map has {cam.ndim - 2} spatial axes but the input has {len(spatial)}")
    out = cam
    for ax, size in enumerate(spatial):
        out = _resize_axis(xp, out, 2 + ax, size)
    out = out[..., None] if nhwc else out[:, :, None]
    return xp.broadcast_to(out, (cam.shape[0],) + tuple(x_shape)).astype(xp.float32)


def input_is_channels_last(plan: Plan) -> bool:
    """True when the model transposes its input from NHWC to NCHW first (Keras/tf2onnx exports)."""
    g = plan.graph
    for layer in g.layers:
        if g.input_name in layer.inputs:
            perm = getattr(layer, "perm", None)
            r = len(g.input_shape)
            return perm is not None and list(perm) == [0, r - 1] + list(range(1, r - 1))
    return False


def _resize_axis(xp: Any, a: Array, axis: int, size: int) -> Array:
    """Linear interpolation of ``a`` along ``axis`` to ``size`` samples (half-pixel centres)."""
    n = a.shape[axis]
    if n == size:
        return a
    pos = (np.arange(size) + 0.5) * (n / size) - 0.5
    pos = np.clip(pos, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(np.float32)
    mat = np.zeros((size, n), dtype=np.float32)
    mat[np.arange(size), lo] += 1 - frac
    mat[np.arange(size), hi] += frac
    moved = xp.moveaxis(a, axis, -1)
    res = xp.matmul(moved, xp.asarray(mat.T))
    return xp.moveaxis(res, -1, axis)


__all__ = ["Grid", "candidate_maps", "cam_layer", "gradcam", "input_is_channels_last", "input_spatial", "read_grid",
           "resize_to_input"]
