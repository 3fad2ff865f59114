"""Faster convolutions on the CPU: onnxruntime's own kernels for the backward's linear maps.

The generic NumPy/CuPy kernels in :mod:`onnxlrp.ops.kernels` are exact but an im2col in
NumPy costs 1.5–3× onnxruntime's convolution. On the CPU the rules therefore hand their
convolutions to onnxruntime: one tiny session per layer geometry and direction, with the
(possibly modified) weight fed as an *input*, so ``W``, ``W⁺``, ``W⁻``, ``1``… share a session.
The transposed map of a stride-1 convolution runs as a convolution with the flipped,
in/out-swapped kernel (faster than ``ConvTranspose``); strided ones use ``ConvTranspose``.
Results equal the generic kernels to float32 rounding (tested).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import onnx
from onnx import helper

_F = onnx.TensorProto.FLOAT
_MAX_SESSIONS = 256  # kernel sessions kept (one per layer geometry and direction; batch sizes share one)


def flip_kernel(w: np.ndarray, group: int) -> np.ndarray:
    """The kernel of the transposed convolution: in/out channels swapped per group, spatially flipped."""
    m, cg = w.shape[:2]
    k = w.shape[2:]
    wg = w.reshape((group, m // group, cg) + k).swapaxes(1, 2).reshape((cg * group, m // group) + k)
    flip = (slice(None), slice(None)) + (slice(None, None, -1),) * len(k)
    return np.ascontiguousarray(wg[flip])


class OrtConvKernels:
    """Convolution and transposed convolution through onnxruntime, for :class:`~onnxlrp.ops.linear.ConvLayer`."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._sessions: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        # flipped kernels live exactly as long as their weight: an entry is dropped when the weight
        # (a layer's, or a plan's modified W+/W-) is freed, so evicted plans take theirs with them
        self._flipped: dict[int, tuple[weakref.ref[np.ndarray], np.ndarray]] = {}

    def _session(self, key: tuple[Any, ...], node: onnx.NodeProto, x_shape: list[Any], w_shape: list[int],
                 with_bias: bool) -> Any:
        sess = self._sessions.get(key)
        if sess is not None:
            self._sessions.move_to_end(key)
        else:
            from .runtime import onnxruntime, session_options

            ort = onnxruntime()

            inputs = [
                helper.make_tensor_value_info("X", _F, x_shape),
                helper.make_tensor_value_info("W", _F, w_shape),
            ]
            if with_bias:
                inputs.append(helper.make_tensor_value_info("B", _F, [w_shape[0]]))
            g = helper.make_graph([node], "k", inputs, [helper.make_tensor_value_info("Y", _F, None)])
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
            m.ir_version = 8
            so = session_options(self.threads)
            sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            self._sessions[key] = sess
            while len(self._sessions) > _MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return sess

    def conv(self, layer: Any, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """``conv(x, w) + b`` with the layer's strides, dilations, pads and groups."""
        key = ("conv", tuple(x.shape[1:]), w.shape, tuple(layer.strides), tuple(layer.dilations),
               tuple(layer.pads), layer.group, b is not None)
        node = helper.make_node(
            "Conv", ["X", "W"] + (["B"] if b is not None else []), ["Y"],
            strides=layer.strides, dilations=layer.dilations, pads=layer.pads, group=layer.group,
        )
        sess = self._session(key, node, ["N"] + list(x.shape[1:]), list(w.shape), b is not None)
        feed = {"X": np.ascontiguousarray(x, dtype=np.float32), "W": w}
        if b is not None:
            feed["B"] = b
        return sess.run(None, feed)[0]

    def _flip(self, w: np.ndarray, group: int) -> np.ndarray:
        key = id(w)
        hit = self._flipped.get(key)
        if hit is not None and hit[0]() is w:
            return hit[1]
        flipped = flip_kernel(w, group)
        flips = self._flipped

        def forget(ref: weakref.ref[np.ndarray], key: int = key) -> None:
            entry = flips.get(key)
            if entry is not None and entry[0] is ref:
                del flips[key]

        self._flipped[key] = (weakref.ref(w, forget), flipped)
        return flipped

    def conv_t(self, layer: Any, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The transposed convolution of ``v`` (the VJP of :meth:`conv` w.r.t. its input)."""
        in_shape = layer.input_shapes[0]
        k = w.shape[2:]
        nd = len(k)
        d, s, p = layer.dilations, layer.strides, layer.pads
        v = np.ascontiguousarray(v, dtype=np.float32)
        tpads = [(k[i] - 1) * d[i] - p[i] for i in range(nd)] + [(k[i] - 1) * d[i] - p[nd + i] for i in range(nd)]
        if all(st == 1 for st in s) and min(tpads) >= 0:
            wf = self._flip(w, layer.group)
            node = helper.make_node("Conv", ["X", "W"], ["Y"], dilations=d, pads=tpads, group=layer.group)
            key = ("convT1", tuple(v.shape[1:]), wf.shape, tuple(d), tuple(tpads), layer.group)
            sess = self._session(key, node, ["N"] + list(v.shape[1:]), list(wf.shape), False)
            return sess.run(None, {"X": v, "W": wf})[0]
        o = v.shape[2:]
        out_pad = [
            in_shape[2 + i] - (s[i] * (o[i] - 1) + (k[i] - 1) * d[i] + 1 - p[i] - p[nd + i]) for i in range(nd)
        ]
        node = helper.make_node(
            "ConvTranspose", ["X", "W"], ["Y"], strides=s, dilations=d, pads=p, group=layer.group,
            output_padding=out_pad,
        )
        key = ("convT", tuple(v.shape[1:]), w.shape, tuple(s), tuple(d), tuple(p), layer.group, tuple(out_pad))
        sess = self._session(key, node, ["N"] + list(v.shape[1:]), list(w.shape), False)
        return sess.run(None, {"X": v, "W": w})[0]
