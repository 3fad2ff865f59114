"""The CAM family: Grad-CAM (Selvaraju et al. 2017) and guided Grad-CAM.

Grad-CAM weighs a feature map's channels by the spatial mean of the target's gradient there,
sums them, and resizes the result to the input (linear interpolation, half-pixel centres),
broadcast over the input's channel axis. Guided Grad-CAM multiplies it by guided backprop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .plan import Engine, Plan
from .propagation import gradient

Array = Any


def gradcam(engine: Engine, original_outputs: set[str], x: np.ndarray, tg: np.ndarray, layer: str | None,
            guided: bool) -> Array:
    """Grad-CAM heatmaps ``(T,) + x.shape`` on tensor ``layer`` (default: the last spatial feature map).

    ``original_outputs`` are the tensor names of the model as exported (to tell a user that a
    tensor they named was fused away).
    """
    plan = engine.plan_for(x.shape)
    name = cam_layer(plan, layer, original_outputs)
    grad, acts = gradient(engine, x, tg, stop_at=name)
    a = acts[name]  # (N, C, *S)
    spatial = tuple(range(3, grad.ndim))
    w = grad.mean(axis=spatial, keepdims=True)  # (T, N, C, 1..)
    cam = (w * a[None]).sum(axis=2)  # (T, N, *S)
    heat = resize_to_input(engine, plan, cam, x.shape)
    if guided:
        gb, _ = gradient(engine, x, tg, composite="guided_backprop", acts=acts)
        heat = heat * gb
    return heat


def cam_layer(plan: Plan, layer: str | None, original_outputs: set[str]) -> str:
    """The feature-map tensor Grad-CAM uses: ``layer`` checked, or the last spatial one."""
    g = plan.graph
    if layer is None:
        # feature maps come out of convolutions, pools and elementwise layers (channels first, as
        # ONNX defines them); re-indexing layers may have moved the channel axis (NHWC exports)
        spatial = [
            t for lay in g.layers if lay.kind != "reindex" for t in lay.outputs
            if len(g.shapes.get(t, ())) >= 3 and int(np.prod(g.shapes[t][2:])) > 1
        ]
        if not spatial:
            raise InputError("Grad-CAM needs a spatial feature map, and this model has none")
        return spatial[-1]
    if layer in g.shapes and any(layer in lay.outputs for lay in g.layers):
        if len(g.shapes[layer]) < 3:
            raise InputError(f"Grad-CAM layer {layer!r} has shape {list(g.shapes[layer])}: not a feature map "
                             "(N, C, spatial...)")
        return layer
    if layer in original_outputs:
        raise InputError(f"tensor {layer!r} was fused away when the graph was canonicalised (e.g. a Conv output "
                         "merged with its BatchNorm); name the tensor after the fused op instead")
    raise InputError(f"Grad-CAM layer {layer!r} is not a tensor of the model")


def resize_to_input(engine: Engine, plan: Plan, cam: Array, x_shape: tuple[int, ...]) -> Array:
    """Resize ``(T, N, *S)`` maps to the input's spatial size and broadcast over its channel axis."""
    xp = engine.backend.xp
    nhwc = input_is_channels_last(plan)
    if len(x_shape) < 3:
        raise InputError("Grad-CAM needs an input with spatial axes")
    spatial = x_shape[1:-1] if nhwc else x_shape[2:]
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


__all__ = ["cam_layer", "gradcam", "input_is_channels_last", "resize_to_input"]
