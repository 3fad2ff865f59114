"""The op registry and the base class every layer derives from.

A *layer* is one node of the canonical ONNX graph (or a node with a BatchNorm / bias folded
into it). Each op family lives in its own module and registers a builder per ONNX
``op_type`` with :func:`register`; the graph parser looks builders up by ``op_type`` and
nothing else, so adding an op is adding one function.

Every layer knows its *vector-Jacobian product* (:meth:`Layer.vjp`): the transposed linear
map of its local linearisation, applied to a relevance or gradient tensor that carries an
extra leading axis ``K`` (the batch of start relevances: targets × passes). The LRP rules in
:mod:`onnxlrp.rules` are compositions of these maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

Array = Any  # numpy.ndarray or cupy.ndarray


class Unsupported(Exception):
    """Raised by a builder when it cannot handle a node; the parser turns it into a user error."""


@dataclass
class NodeContext:
    """What a builder may look at: the node, the constants and the static tensor shapes."""

    node: onnx.NodeProto
    consts: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    opset: int
    producers: dict[str, onnx.NodeProto] = field(default_factory=dict)
    # folded constants that stand for run-time tensors (see onnxlrp.graph.Graph.side), by id()
    side: dict[int, Any] = field(default_factory=dict)

    def derive(self, new: Any, src: Any, fn: Any) -> None:
        """Record that array ``new`` is ``fn(xp, src)`` where ``src`` may stand for a run-time tensor (Graph.side):
        the compiler then computes ``new`` from that tensor at run time instead of baking its value in."""
        hit = self.side.get(id(src))
        if hit is None or hit[1] is not src or new is src:
            return
        name, _, before, raw = hit
        self.side[id(new)] = (name, new, fn if before is None else (lambda xp, t: fn(xp, before(xp, t))), raw)

    def is_side(self, arr: Any) -> bool:
        """True when ``arr`` stands for a run-time tensor (its value here is one example, not the value)."""
        hit = self.side.get(id(arr))
        return hit is not None and hit[1] is arr

    def attr(self, name: str, default: Any = None) -> Any:
        """The value of attribute ``name`` of the node (bytes decoded), or ``default``."""
        for a in self.node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def const(self, index: int) -> np.ndarray | None:
        """The constant value of input ``index``, or None if it is dynamic or absent."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        return self.consts.get(self.node.input[index])

    def is_const(self, index: int) -> bool:
        """True when input ``index`` is absent or a constant."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return True
        return self.node.input[index] in self.consts

    def shape(self, name: str) -> tuple[int, ...]:
        """The static shape of tensor ``name`` (known after fixing the input shape)."""
        if name not in self.shapes:
            raise Unsupported(f"the shape of tensor {name!r} is unknown after shape inference")
        return self.shapes[name]

    @property
    def dynamic_inputs(self) -> list[str]:
        """Names of the node's inputs that are computed from the model input."""
        return [n for n in self.node.input if n and n not in self.consts]


class Layer:
    """One node of the explained graph: its tensors, its kind, its vector-Jacobian product.

    ``kind`` tells the composites which family of LRP rule applies:
    ``linear`` (Conv, Gemm, MatMul), ``activation`` (elementwise nonlinearity), ``affine``
    (elementwise scale/shift by a constant), ``reindex`` (reshapes, slices, concatenation…),
    ``maxpool``, ``avgpool`` (averages and sums: Z rule), ``add`` (sum of activations),
    ``gate`` (signal × gate), ``batchnorm`` (a BatchNorm that could not be folded).
    """

    kind: str = "reindex"

    def __init__(self, ctx: NodeContext, inputs: Sequence[str] | None = None) -> None:
        node = ctx.node
        self.name: str = node.name or f"{node.op_type}_{node.output[0]}"
        self.op_type: str = node.op_type
        self.inputs: list[str] = list(inputs) if inputs is not None else ctx.dynamic_inputs
        self.outputs: list[str] = [o for o in node.output if o]
        self.input_shapes: list[tuple[int, ...]] = [ctx.shape(n) for n in self.inputs]
        self.output_shapes: list[tuple[int, ...]] = [ctx.shape(n) for n in self.outputs]
        self.folded: list[str] = []  # names of nodes folded into this layer

    # -- backward -----------------------------------------------------------------------------
    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Apply the transposed Jacobian to ``gouts`` (each shaped ``(K,) + output shape``)."""
        raise NotImplementedError

    # -- forward (used for bound propagation and tests; the model itself runs in onnxruntime)
    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """Recompute the layer's outputs from its inputs with the array module ``xp``."""
        raise Unsupported(f"{self.op_type} has no array-module forward")

    def describe(self) -> str:
        """A one-line summary for ``onnxlrp info``."""
        folded = f" (+{', '.join(self.folded)})" if self.folded else ""
        return f"{self.op_type}{folded}"


Builder = Callable[[NodeContext], Layer]
_REGISTRY: dict[str, Builder] = {}


def register(*op_types: str) -> Callable[[Builder], Builder]:
    """Register a builder for the given ONNX op types (decorator)."""

    def deco(fn: Builder) -> Builder:
        for op in op_types:
            _REGISTRY[op] = fn
        return fn

    return deco


def lookup(op_type: str) -> Builder | None:
    """The builder registered for ``op_type``, if any."""
    return _REGISTRY.get(op_type)


def registered_ops() -> list[str]:
    """The op types with a registered builder, sorted."""
    return sorted(_REGISTRY)


def unbroadcast(xp: Any, g: Array, shape: tuple[int, ...]) -> Array:
    """Sum a ``(K,) + broadcast shape`` gradient down to ``(K,) + shape`` (the VJP of broadcasting)."""
    target = (g.shape[0],) + tuple(shape)
    if g.shape == target:
        return g
    extra = g.ndim - len(target)
    if extra > 0:
        g = g.sum(axis=tuple(range(1, 1 + extra)))
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, target, strict=True)) if b == 1 and a != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(target)
