"""Attention: products of two activations (``MatMul``, ``Einsum``, ``Mul``) and ``Softmax`` inside the graph.

A *product* layer (kind ``"product"``) multiplies two activations: ``z = a @ b`` (``MatMul``,
batched, with broadcasting of the leading axes), an ``Einsum`` of two operands, or the
element-wise ``z = a ⊙ b`` of two same-sized activations that is not a sigmoid gate (gated
units; a gate stays a :class:`~onnxlrp.ops.elementwise.GateLayer`). It is bilinear: linear in
each factor with the other held fixed, and :meth:`ProductLayer.partial_vjp` is that factor's
transposed map — what the uniform rule of AttnLRP and the CP-LRP rule need.

A *softmax* layer (kind ``"softmax"``) is a ``Softmax`` or ``LogSoftmax`` that is not the model's
final op (those are stripped before the layers are built): attention weights. Any axis; before
opset 13 the op normalises over all axes from ``axis`` on (ONNX's coerced 2-d form).
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np

from .base import Array, Layer, NodeContext, Unsupported, register, unbroadcast
from .elementwise import _GATE_PRODUCERS, _SEE_THROUGH, GateLayer, _source_op

_SOFTMAX_OPS = {"Softmax", "LogSoftmax"}


# element-wise non-linearities (also as parts of a written-out GELU/SiLU) and the ops that end the search
_NONLINEAR = {"Sigmoid", "HardSigmoid", "Tanh", "Erf", "Gelu", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Softplus",
              "Softsign", "Clip", "HardSwish", "Mish", "Exp"}
_LINEAR_OPS = {"MatMul", "Gemm", "Conv", "Einsum", "Softmax", "LogSoftmax"}


def _activated(ctx: NodeContext, name: str, depth: int = 8) -> bool:
    """Whether tensor ``name`` is an element-wise non-linearity of a linear layer's output (the gate branch of a
    gated unit, ``act(W₁x)`` in ``act(W₁x) ⊙ W₂x``): a non-linear op is met, walking back, before any linear op."""
    stack, seen = [(name, 0)], set()
    while stack:
        t, d = stack.pop()
        node = ctx.producers.get(t)
        if node is None or d > depth or t in seen:
            continue
        seen.add(t)
        if node.op_type in _NONLINEAR:
            return True
        if node.op_type in _LINEAR_OPS:
            continue
        stack.extend((i, d + 1) for i in node.input if i and i not in ctx.consts)
    return False


_WEIGHTS_SEE_THROUGH = _SEE_THROUGH | {"Dropout", "Cast"}


def _from_softmax(ctx: NodeContext, name: str) -> bool:
    """Whether tensor ``name`` is a softmax output up to re-indexing, dropout and casts (attention weights)."""
    seen = 0
    while name in ctx.producers and seen < 16:
        node = ctx.producers[name]
        if node.op_type in _SOFTMAX_OPS:
            return True
        if node.op_type not in _WEIGHTS_SEE_THROUGH:
            return False
        name = node.input[0]
        seen += 1
    return False


class ProductLayer(Layer):
    """``z = a @ b`` / ``einsum(eq, a, b)`` / ``a ⊙ b`` of two activations (kind ``"product"``).

    ``attention_index`` is the input that comes from a Softmax (the attention weights of
    ``A·V``), or None; ``gate_index`` (``Mul`` only) the input that is a non-linearity of a linear
    layer when the other is not (the gate of a gated unit), or None. CP-LRP holds these constant.
    """

    kind = "product"

    def __init__(self, ctx: NodeContext, mode: str) -> None:
        node = ctx.node
        if len(node.input) != 2 or not all(node.input) or not all(n not in ctx.consts for n in node.input):
            raise Unsupported(f"{node.op_type} of two activations expects exactly two activation operands")
        super().__init__(ctx, inputs=list(node.input))
        self.mode = mode
        self.equation = ""
        sa, sb = self.input_shapes
        if mode == "matmul":
            if len(sa) < 2 or len(sb) < 2:
                raise Unsupported("MatMul of two activations with a 1-d operand is not supported")
        elif mode == "einsum":
            self.equation, self._grad_eqs = _einsum_plan(str(ctx.attr("equation", "")), sa, sb)
        elif mode == "mul":
            if int(np.prod(sa)) != int(np.prod(sb)) or tuple(sa) != tuple(sb):
                raise Unsupported(f"Mul of two activations of different shapes {list(sa)} and {list(sb)}")
        else:  # pragma: no cover - programming error
            raise ValueError(mode)
        src = [_from_softmax(ctx, n) for n in self.inputs]
        self.attention_index: int | None = src.index(True) if src.count(True) == 1 else None
        act = [_activated(ctx, n) for n in self.inputs] if mode == "mul" else []
        self.gate_index: int | None = act.index(True) if act.count(True) == 1 else None

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """The product of the two inputs."""
        a, b = ins
        if self.mode == "matmul":
            return [xp.matmul(a, b)]
        if self.mode == "einsum":
            return [xp.einsum(self.equation, a, b)]
        return [a * b]

    def partial_vjp(self, xp: Any, ins: list[Array], g: Array, which: int) -> Array:
        """``J_whichᵀ g``: the transposed map of the product as a linear function of input ``which`` (the other
        input held fixed), for ``g`` shaped ``(K,) + output shape``; the result is ``(K,) + input shape``."""
        a, b = ins
        shape = self.input_shapes[which]
        if self.mode == "mul":
            return unbroadcast(xp, g * (b if which == 0 else a), shape)
        if self.mode == "matmul":
            if which == 0:
                r = xp.matmul(g, xp.swapaxes(b, -1, -2))
            else:
                r = xp.matmul(xp.swapaxes(a, -1, -2), g)
            return unbroadcast(xp, r, shape)
        eq, expand = self._grad_eqs[which]
        r = xp.einsum(eq, g, b if which == 0 else a)
        if expand:  # axes summed in this operand alone: the gradient is constant along them
            for ax in expand:
                r = xp.expand_dims(r, ax + 1)
            r = xp.broadcast_to(r, (g.shape[0],) + tuple(shape))
        return xp.ascontiguousarray(r)

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """The product rule: ``(J_aᵀ g, J_bᵀ g)``."""
        g = gouts[0]
        if g is None:
            return [None, None]
        return [self.partial_vjp(xp, ins, g, 0), self.partial_vjp(xp, ins, g, 1)]

    def describe(self) -> str:
        """E.g. ``MatMul of two activations 2x4x8 @ 2x8x4``."""
        shapes = " , ".join("x".join(str(d) for d in s) for s in self.input_shapes)
        eq = f" {self.equation!r}" if self.equation else ""
        return f"{self.op_type}{eq} of two activations ({shapes})"


def _einsum_plan(equation: str, sa: tuple[int, ...], sb: tuple[int, ...]) -> tuple[str, list[tuple[str, list[int]]]]:
    """The explicit forward equation of a two-operand Einsum and, per operand, the equation of its gradient
    ``einsum(grad_eq, g, other)`` (``g`` with a leading K axis) and the axes to broadcast the result along."""
    eq = equation.replace(" ", "")
    if not eq:
        raise Unsupported("Einsum without an equation")
    lhs, arrow, out = eq.partition("->")
    ops = lhs.split(",")
    if len(ops) != 2:
        raise Unsupported(f"Einsum {equation!r} with {len(ops)} operands; only products of two are supported")
    used = set(eq) - set(",->.")
    if not all(c in string.ascii_letters for c in used):
        raise Unsupported(f"Einsum equation {equation!r} has characters other than letters")
    free = [c for c in string.ascii_letters if c not in used]
    # ellipsis: the same fresh letters for the trailing-aligned broadcast axes of every operand
    ell_rank = 0
    for sub, shp in zip(ops, (sa, sb), strict=True):
        if "..." in sub:
            ell_rank = max(ell_rank, len(shp) - (len(sub) - 3))
    ell = "".join(free[:ell_rank])
    free = free[ell_rank:]
    subs = []
    for sub, shp in zip(ops, (sa, sb), strict=True):
        if "..." in sub:
            n = len(shp) - (len(sub) - 3)
            sub = sub.replace("...", ell[ell_rank - n:] if n else "")
        if len(sub) != len(shp):
            raise Unsupported(f"Einsum operand {sub!r} does not match its rank {len(shp)}")
        if len(set(sub)) != len(sub):
            raise Unsupported(f"Einsum {equation!r} takes a diagonal (a repeated index in one operand)")
        subs.append(sub)
    if arrow:
        out = out.replace("...", ell)
    else:
        counts = {c: (subs[0] + subs[1]).count(c) for c in set(subs[0] + subs[1])}
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    sizes: dict[str, int] = {}
    for sub, shp in zip(subs, (sa, sb), strict=True):
        for c, d in zip(sub, shp, strict=True):
            if sizes.setdefault(c, d) != d:
                raise Unsupported(f"Einsum {equation!r} broadcasts index {c!r} ({sizes[c]} against {d})")
    k = free[0]
    grads = []
    for i in (0, 1):
        mine, other = subs[i], subs[1 - i]
        keep = "".join(c for c in mine if c in out or c in other)
        expand = [j for j, c in enumerate(mine) if c not in keep]
        grads.append((f"{k}{out},{other}->{k}{keep}", expand))
    return f"{subs[0]},{subs[1]}->{out}", grads


def mul_of_activations(ctx: NodeContext) -> Layer:
    """The layer of ``Mul`` of two activations: a gate (one input broadcast, or one from a sigmoid-like op) or a
    product of two same-sized activations."""
    shapes = [ctx.shape(n) for n in ctx.node.input]
    if int(np.prod(shapes[0])) != int(np.prod(shapes[1])):
        return GateLayer(ctx)
    if sum(_source_op(ctx, n) in _GATE_PRODUCERS for n in ctx.node.input) == 1:
        return GateLayer(ctx)
    return ProductLayer(ctx, "mul")


def matmul_of_activations(ctx: NodeContext) -> Layer:
    """The layer of ``MatMul`` of two activations (``Q·Kᵀ``, ``A·V``)."""
    return ProductLayer(ctx, "matmul")


def _einsum_dense(ctx: NodeContext) -> Layer:
    """``Einsum`` of an activation and a constant 2-d weight that is a dense layer along the activation's last axis
    (``"...c,cd->...d"``, ``"bld,ed->ble"`` …): a :class:`~onnxlrp.ops.linear.DenseLayer`."""
    from .linear import DenseLayer

    node = ctx.node
    if len(node.input) != 2 or ctx.is_const(0) == ctx.is_const(1):
        raise Unsupported("Einsum with a constant operand is not supported (export the layer as MatMul/Gemm)")
    xi = 0 if ctx.is_const(1) else 1
    w = np.asarray(ctx.const(1 - xi))
    x_shape = ctx.shape(node.input[xi])
    eq = str(ctx.attr("equation", "")).replace(" ", "")
    lhs, _, out = eq.partition("->")
    ops = lhs.split(",")
    form = "only the dense form '...c,cd->...d' (weight 2-d, the activation's last axis contracted) is supported"
    if len(ops) != 2 or w.ndim != 2 or "." in ops[1 - xi]:
        raise Unsupported(f"Einsum {eq!r} with a constant operand: {form}")
    xs, ws = ops[xi], ops[1 - xi]
    if "..." in xs:
        n = len(x_shape) - (len(xs) - 3)
        xs = xs.replace("...", "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq)[:n])
        out = out.replace("...", xs[:n])
    c = xs[-1] if xs else ""
    if (not out or len(xs) != len(x_shape) or len(set(xs)) != len(xs) or c not in ws or len(set(ws)) != 2
            or out != xs[:-1] + ws.replace(c, "")):
        raise Unsupported(f"Einsum {eq!r} with a constant operand: {form}")
    wt = w if ws[0] == c else w.T
    return DenseLayer(ctx, node.input[xi], wt, None)


@register("Einsum")
def _einsum(ctx: NodeContext) -> Layer:
    if any(ctx.is_const(i) for i in range(len(ctx.node.input))):
        return _einsum_dense(ctx)
    return ProductLayer(ctx, "einsum")


# ---------------------------------------------------------------------------------------------
# softmax inside the graph


class SoftmaxLayer(Layer):
    """``Softmax`` / ``LogSoftmax`` over ``axes`` of an activation (kind ``"softmax"``)."""

    kind = "softmax"

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        if ctx.node.input[0] in ctx.consts:
            raise Unsupported("softmax of a constant")
        rank = len(self.input_shapes[0])
        axis = int(ctx.attr("axis", -1 if ctx.opset >= 13 else 1))
        if not -rank <= axis < rank:
            raise Unsupported(f"axis {axis} out of range for rank {rank}")
        axis %= rank
        if axis == 0:
            raise Unsupported("softmax over the batch axis mixes samples")
        self.axes: tuple[int, ...] = (axis,) if ctx.opset >= 13 else tuple(range(axis, rank))
        self.log = ctx.node.op_type == "LogSoftmax"

    def _kaxes(self) -> tuple[int, ...]:
        return tuple(a + 1 for a in self.axes)

    def probabilities(self, xp: Any, y: Array) -> Array:
        """The softmax ``s`` from the layer's output (``exp(y)`` for LogSoftmax)."""
        return xp.exp(y) if self.log else y

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """``softmax(x)`` or ``log softmax(x)`` over the axes, computed stably."""
        x = ins[0]
        m = x.max(axis=self.axes, keepdims=True)
        e = xp.exp(x - m)
        total = e.sum(axis=self.axes, keepdims=True)
        if self.log:
            return [x - m - xp.log(total)]
        return [e / total]

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Softmax: ``s ⊙ (g − Σ g⊙s)``; LogSoftmax: ``g − s ⊙ Σ g`` (sums over the softmax axes)."""
        g = gouts[0]
        if g is None:
            return [None]
        s = self.probabilities(xp, outs[0])
        ax = self._kaxes()
        if self.log:
            return [g - s * g.sum(axis=ax, keepdims=True)]
        gs = g * s
        return [gs - s * gs.sum(axis=ax, keepdims=True)]

    def describe(self) -> str:
        """E.g. ``Softmax over axis 3``."""
        return f"{self.op_type} over axis {', '.join(str(a) for a in self.axes)}"


@register("Softmax", "LogSoftmax")
def _softmax(ctx: NodeContext) -> Layer:
    return SoftmaxLayer(ctx)
