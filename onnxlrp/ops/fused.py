"""Element-wise activations written out as several ONNX nodes, recognised as one activation.

Exporters write SiLU/Swish as ``x * Sigmoid(x)``, GELU as ``0.5 * x * (1 + Erf(x / √2))`` or
its tanh form, Mish as ``x * Tanh(Softplus(x))``, HardSwish as ``x * Clip(x + 3, 0, 6) / 6``, and
each exporter orders the nodes its own way. What they have in common: a connected set of
element-wise nodes whose only non-constant source is one tensor ``x`` (every other operand a
scalar constant), that uses ``x`` more than once (a product or quotient of two functions of
``x``) and hands one tensor ``y`` on. That set computes ``y = f(x)`` element by element: one
activation, whatever the exporter wrote. :func:`find_fused_activations` finds these sets in
linear time; :class:`FusedActivationLayer` is the layer that replaces them.

The layer's derivative ``f'(x)`` is computed in forward mode through the set's nodes (each op
knows its value and its local derivative), so the gradient is exact for any such pattern. The
composites give it the activation rule (LRP: relevance passes; Zennit treats ``nn.SiLU`` and
``nn.GELU`` the same way), instead of the product rule of a gate, under which relevance would
grow by ``|x|`` at every activation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .base import Array, Layer, NodeContext, Unsupported, register
from .elementwise import ActivationLayer

_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def erf(xp: Any, x: Array) -> Array:
    """``erf(x)`` element-wise (Abramowitz & Stegun 7.1.26: absolute error ≤ 1.5e-7, float32's level)."""
    a = xp.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return xp.sign(x) * (1.0 - poly * xp.exp(-a * a))


def _sigmoid(xp: Any, x: Array) -> Array:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + xp.exp(-x))


# value and local derivatives of each element-wise op: f(xp, args, attrs) -> (value, [d value / d arg_i])
_Op = Callable[[Any, list[Array], dict[str, Any]], tuple[Array, list[Array]]]


def _unary(fn: Callable[[Any, Array, dict[str, Any]], tuple[Array, Array]]) -> _Op:
    def op(xp: Any, args: list[Array], attrs: dict[str, Any]) -> tuple[Array, list[Array]]:
        v, d = fn(xp, args[0], attrs)
        return v, [d]

    return op


def _softplus(xp: Any, x: Array, _: dict[str, Any]) -> tuple[Array, Array]:
    v = xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
    return v, _sigmoid(xp, x)


def _clip(xp: Any, args: list[Array], attrs: dict[str, Any]) -> tuple[Array, list[Array]]:
    x = args[0]
    lo = attrs.get("min", -np.inf) if len(args) < 2 or args[1] is None else float(np.asarray(args[1]).ravel()[0])
    hi = attrs.get("max", np.inf) if len(args) < 3 or args[2] is None else float(np.asarray(args[2]).ravel()[0])
    return xp.clip(x, lo, hi), [((x > lo) & (x < hi)).astype(x.dtype), None, None][: len(args)]


def _pow(xp: Any, args: list[Array], attrs: dict[str, Any]) -> tuple[Array, list[Array]]:
    a, b = args
    with np.errstate(divide="ignore", invalid="ignore"):
        v = a**b
        da = b * a ** (b - 1)
        db = v * xp.log(xp.where(a > 0, a, 1))
    return v, [da, db]


def _div(xp: Any, args: list[Array], attrs: dict[str, Any]) -> tuple[Array, list[Array]]:
    a, b = args
    with np.errstate(divide="ignore", invalid="ignore"):
        v = a / b
        return v, [1.0 / b, -v / b]


_OPS: dict[str, _Op] = {
    "Add": lambda xp, a, _: (a[0] + a[1], [1.0, 1.0]),
    "Sub": lambda xp, a, _: (a[0] - a[1], [1.0, -1.0]),
    "Mul": lambda xp, a, _: (a[0] * a[1], [a[1], a[0]]),
    "Div": _div,
    "Pow": _pow,
    "Max": lambda xp, a, _: (xp.maximum(a[0], a[1]), [(a[0] >= a[1]) * 1.0, (a[0] < a[1]) * 1.0]),
    "Min": lambda xp, a, _: (xp.minimum(a[0], a[1]), [(a[0] <= a[1]) * 1.0, (a[0] > a[1]) * 1.0]),
    "Clip": _clip,
    "Neg": _unary(lambda xp, x, _: (-x, -1.0)),
    "Abs": _unary(lambda xp, x, _: (xp.abs(x), xp.sign(x))),
    "Relu": _unary(lambda xp, x, _: (xp.maximum(x, 0), (x > 0) * 1.0)),
    "LeakyRelu": _unary(lambda xp, x, at: (xp.where(x > 0, x, x * at.get("alpha", 0.01)),
                                           xp.where(x > 0, 1.0, at.get("alpha", 0.01)))),
    "Sigmoid": _unary(lambda xp, x, _: (lambda s: (s, s * (1 - s)))(_sigmoid(xp, x))),
    "HardSigmoid": _unary(lambda xp, x, at: (
        xp.clip(at.get("alpha", 0.2) * x + at.get("beta", 0.5), 0, 1),
        ((at.get("alpha", 0.2) * x + at.get("beta", 0.5) > 0) & (at.get("alpha", 0.2) * x + at.get("beta", 0.5) < 1))
        * at.get("alpha", 0.2))),
    "Tanh": _unary(lambda xp, x, _: (lambda t: (t, 1 - t * t))(xp.tanh(x))),
    "Exp": _unary(lambda xp, x, _: (lambda e: (e, e))(xp.exp(x))),
    "Log": _unary(lambda xp, x, _: (xp.log(x), 1.0 / x)),
    "Sqrt": _unary(lambda xp, x, _: (lambda r: (r, 0.5 / r))(xp.sqrt(x))),
    "Reciprocal": _unary(lambda xp, x, _: (lambda r: (r, -r * r))(1.0 / x)),
    "Erf": _unary(lambda xp, x, _: (erf(xp, x), (2.0 / math.sqrt(math.pi)) * xp.exp(-x * x))),
    "Softplus": _unary(_softplus),
    "Softsign": _unary(lambda xp, x, _: (x / (1 + xp.abs(x)), 1.0 / (1 + xp.abs(x)) ** 2)),
    "Identity": _unary(lambda xp, x, _: (x, 1.0)),
    "HardSwish": _unary(lambda xp, x, _: (x * xp.clip(x / 6 + 0.5, 0, 1),
                                          xp.where(x < -3, 0.0, xp.where(x > 3, 1.0, x / 3 + 0.5)))),
}
_TWO_OPERAND = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"}


@dataclass
class FusedGroup:
    """A connected set of element-wise nodes computing ``output = f(source)``."""

    source: str
    output: str
    nodes: list[onnx.NodeProto]


def _is_candidate(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type not in _OPS or len([o for o in node.output if o]) != 1:
        return False
    if node.op_type == "Cast":
        return False
    # constant operands must be scalars (a per-channel scale is a layer of its own, e.g. a layer-scale gain)
    return all(consts[i].size == 1 for i in node.input if i and i in consts)


def find_fused_activations(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
                           keep: set[str]) -> list[FusedGroup]:
    """The element-wise activation patterns among ``nodes`` (topologically ordered), in one pass.

    A group qualifies when it is connected through its own tensors, has one source tensor and
    one tensor used outside it, and uses its source more than once (a two-operand node whose
    operands both depend on the source). ``keep`` names tensors that must stay visible (the
    explained output), which a group may produce but not hide.
    """
    root: dict[str, str] = {}  # derived tensor -> its source
    comp: dict[str, int] = {}  # derived tensor -> component id
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    members: dict[int, list[int]] = {}
    gated: set[int] = set()
    for idx, node in enumerate(nodes):
        if not _is_candidate(node, consts):
            continue
        dyn = [i for i in node.input if i and i not in consts]
        if not dyn:
            continue
        sources = {root.get(i, i) for i in dyn}
        if len(sources) != 1:
            continue
        src = sources.pop()
        comps = {find(comp[i]) for i in dyn if i in comp}
        if comps:
            c = min(comps)
            for other in comps:
                parent[other] = c
        else:
            c = len(parent)
            parent.append(c)
        out = node.output[0]
        root[out], comp[out] = src, c
        members.setdefault(c, []).append(idx)
        if node.op_type in _TWO_OPERAND and len(dyn) == 2:
            gated.add(c)
    groups: dict[int, list[int]] = {}
    for c, idxs in members.items():
        groups.setdefault(find(c), []).extend(idxs)
    gated = {find(c) for c in gated}
    consumers: dict[str, int] = {}
    for node in nodes:
        for i in node.input:
            if i:
                consumers[i] = consumers.get(i, 0) + 1
    result = []
    for c, idxs in groups.items():
        if c not in gated:
            continue
        idxs.sort()
        group_nodes = [nodes[i] for i in idxs]
        produced = {n.output[0] for n in group_nodes}
        inside: dict[str, int] = {}
        for n in group_nodes:
            for i in n.input:
                if i in produced:
                    inside[i] = inside.get(i, 0) + 1
        external = [t for t in produced if consumers.get(t, 0) > inside.get(t, 0) or t in keep]
        hidden_kept = [t for t in produced if t in keep and t != group_nodes[-1].output[0]]
        if len(external) != 1 or hidden_kept or external[0] != group_nodes[-1].output[0]:
            continue
        result.append(FusedGroup(root[external[0]], external[0], group_nodes))
    return result


def _known_name(f: Callable[[np.ndarray], np.ndarray]) -> str:
    """Name the function ``f`` if it is a well-known activation (compared on probe points)."""
    t = np.linspace(-5, 5, 41)
    sig = 1 / (1 + np.exp(-t))
    gelu = 0.5 * t * (1 + np.array([math.erf(v / math.sqrt(2)) for v in t]))
    known = {
        "SiLU": t * sig,
        "GELU": gelu,
        "GELU(tanh)": 0.5 * t * (1 + np.tanh(_SQRT_2_PI * (t + 0.044715 * t**3))),
        "QuickGELU": t / (1 + np.exp(-1.702 * t)),
        "Mish": t * np.tanh(np.log1p(np.exp(t))),
        "HardSwish": t * np.clip(t + 3, 0, 6) / 6,
    }
    got = f(t)
    for name, ref in known.items():
        if np.allclose(got, ref, rtol=1e-6, atol=1e-6):
            return name
    return "Elementwise"


class FusedActivationLayer(ActivationLayer):
    """One element-wise activation ``y = f(x)`` that the model wrote as several nodes (see the module doc)."""

    def __init__(self, group: FusedGroup, consts: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
                 opset: int) -> None:
        last = group.nodes[-1]
        node = helper.make_node("FusedActivation", [group.source], [group.output], name=last.name or group.output)
        ctx = NodeContext(node, consts, shapes, opset)
        super().__init__(ctx, self._derivative)
        if self.input_shapes[0] != self.output_shapes[0]:
            raise Unsupported(f"the element-wise pattern ending at {group.output!r} changes the shape")
        self.nodes = group.nodes
        self.consts = {i: np.asarray(consts[i], dtype=np.float32) for n in group.nodes for i in n.input
                       if i and i in consts}
        self.attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in group.nodes]
        self.op_type = _known_name(lambda t: self._eval(np, t.astype(np.float64))[0])
        self.folded = [n.op_type for n in group.nodes]

    def _eval(self, xp: Any, x: Array) -> tuple[Array, Array]:
        """``f(x)`` and ``f'(x)`` in forward mode through the pattern's nodes."""
        vals: dict[str, Array] = {self.inputs[0]: x}
        ders: dict[str, Any] = {self.inputs[0]: 1.0}
        for node, attrs in zip(self.nodes, self.attrs, strict=True):
            args = []
            for i in node.input:
                if not i:
                    args.append(None)
                elif i in vals:
                    args.append(vals[i])
                else:
                    c = self.consts[i]
                    args.append(xp.asarray(c.astype(x.dtype)).reshape(()) if c.size == 1 else xp.asarray(c))
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                v, local = _OPS[node.op_type](xp, args, attrs)
                d: Any = 0.0
                for i, dl in zip(node.input, local, strict=False):
                    if i in ders and dl is not None:
                        d = d + dl * ders[i]
            vals[node.output[0]], ders[node.output[0]] = v, d
        out = self.outputs[0]
        d = ders[out]
        if not hasattr(d, "shape") or d.shape != x.shape:
            d = xp.broadcast_to(xp.asarray(d, dtype=x.dtype), x.shape)
        return vals[out], d

    def _derivative(self, xp: Any, x: Array, y: Array) -> Array:
        return self._eval(xp, x)[1].astype(xp.float32)

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """``f(x)`` recomputed through the pattern's nodes."""
        return [self._eval(xp, ins[0])[0].astype(xp.float32)]

    def describe(self) -> str:
        """The recognised activation and the nodes it was written as."""
        return f"{self.op_type} (fused {'·'.join(self.folded)})"


@register("Gelu")
def _gelu(ctx: NodeContext) -> Layer:
    """ONNX ``Gelu`` (opset 20): ``approximate="none"`` (erf) or ``"tanh"``."""
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise Unsupported(f"Gelu approximate={approximate!r} is not defined by ONNX")

    def d(xp: Any, x: Array, y: Array) -> Array:
        if approximate == "tanh":
            u = _SQRT_2_PI * (x + 0.044715 * x**3)
            t = xp.tanh(u)
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_PI * (1 + 3 * 0.044715 * x * x)
        return 0.5 * (1 + erf(xp, x / math.sqrt(2))) + x * xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    return ActivationLayer(ctx, lambda xp, x, y: d(xp, x, y).astype(xp.float32))


__all__ = ["FusedActivationLayer", "FusedGroup", "erf", "find_fused_activations"]
