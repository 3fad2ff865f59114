"""Normalisation layers (kind ``"norm"``): LayerNorm, RMSNorm, GroupNorm, InstanceNorm, L2 normalisation.

Every one of them computes, over a set of *reduced axes* ``A`` of a (possibly reshaped) view of
its input,

    μ = mean_A(x)            (0 when not ``centered``: RMSNorm, L2 normalisation)
    σ = √(mean_A((x − μ)²) + ε)
    n = (x − μ) / σ
    y = n ⊙ γ + β            (γ, β constants broadcasting against the input)

:class:`NormLayer` is that layer, with the exact vector-Jacobian product (the full Jacobian of
the normalisation, for gradients) and :meth:`NormLayer.linear_vjp`, the VJP with σ held constant
(the mean subtraction still differentiated): the linearisation LXT/AttnLRP uses for LayerNorm and
RMSNorm, under which ``y − β`` is linear in ``x``.

Exporters write normalisations as one ONNX op (``LayerNormalization``, ``InstanceNormalization``,
``GroupNormalization``, ``LpNormalization``) or as several nodes — ``ReduceMean → Sub →
Pow(2)/Mul → ReduceMean → Add(ε) → Sqrt → Div`` (or ``Reciprocal``/``Div(1, ·)`` then ``Mul``),
``→ Mul(γ) → Add(β)``; RMSNorm without the first ``ReduceMean``/``Sub``; ``F.normalize`` as
``Div(x, Expand(Clip(ReduceL2(x), min=ε)))``, ``x / max(‖x‖, ε)``. :func:`find_fused_norms`
finds those written-out forms in linear time and :class:`NormGroup` turns each into one
:class:`NormLayer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .base import Array, Layer, NodeContext, Unsupported, register


class NormLayer(Layer):
    """``y = (x − μ)/σ ⊙ γ + β`` over reduced axes (see the module docstring).

    Attributes the rules may read: ``axes`` (the reduced axes of the *input*, batch axis 0 never
    among them), ``axis`` (for a LayerNorm: the first normalised axis, else the first reduced axis),
    ``epsilon``, ``gamma`` and ``beta`` (float32 arrays broadcasting against the input, or None),
    ``centered`` (False for RMSNorm and L2 normalisation) and ``view`` (the shape, batch first, in
    which the statistics are taken; ``red`` its reduced axes).
    """

    kind = "norm"

    def __init__(self, ctx: NodeContext, x_name: str, view: tuple[int, ...], red: tuple[int, ...],
                 axes: tuple[int, ...], epsilon: float, gamma: np.ndarray | None, beta: np.ndarray | None,
                 centered: bool, label: str, floor: float = 0.0) -> None:
        super().__init__(ctx, inputs=[x_name])
        if x_name in ctx.consts:
            raise Unsupported("normalisation of a constant")
        self.outputs = self.outputs[:1]
        self.output_shapes = self.output_shapes[:1]
        shape = tuple(self.input_shapes[0])
        if self.output_shapes[0] != shape:
            raise Unsupported(f"the normalisation changes the shape {list(shape)} to {list(self.output_shapes[0])}")
        if int(np.prod(view)) != int(np.prod(shape)) or view[0] != shape[0]:
            raise Unsupported(f"cannot view shape {list(shape)} as {list(view)}")
        if not red or 0 in red:
            raise Unsupported("normalisation over the batch axis")
        self.view = tuple(int(d) for d in view)
        self.red = tuple(sorted(int(a) for a in red))
        self.axes = tuple(sorted(int(a) for a in axes))
        self.axis = self.axes[0]
        self.epsilon = float(epsilon)
        if self.epsilon < 0:
            raise Unsupported(f"negative epsilon {self.epsilon}")
        self.count = int(np.prod([self.view[a] for a in self.red]))
        self.gamma = None if gamma is None else self._affine(gamma, "scale")
        self.beta = None if beta is None else self._affine(beta, "bias")
        self.centered = centered
        self.label = label
        # σ is clamped from below at floor/√count (F.normalize: x / max(‖x‖, floor)); 0: no clamp
        self.floor = float(floor)

    def _affine(self, c: np.ndarray, what: str) -> np.ndarray:
        c = np.asarray(c, dtype=np.float32)
        shape = self.input_shapes[0]
        try:
            full = np.broadcast_shapes(c.shape, tuple(shape))
        except ValueError:
            raise Unsupported(f"the {what} of shape {list(c.shape)} does not broadcast against {list(shape)}") from None
        if full != tuple(shape):
            raise Unsupported(f"the {what} of shape {list(c.shape)} broadcasts the input {list(shape)} to {list(full)}")
        return c

    # -- statistics -----------------------------------------------------------------------------
    def stats(self, xp: Any, x: Array) -> tuple[Array, Array]:
        """``n = (x − μ)/σ`` in the view shape and ``1/σ`` (keepdims), from the forward input ``x``."""
        xv = x.reshape(self.view)
        c = xv - xv.mean(axis=self.red, keepdims=True) if self.centered else xv
        var = (c * c).mean(axis=self.red, keepdims=True)
        sigma = xp.sqrt(var + xp.float32(self.epsilon))
        if self.floor > 0:
            sigma = xp.maximum(sigma, xp.float32(self.floor / math.sqrt(self.count)))
        with np.errstate(divide="ignore"):
            inv = 1.0 / sigma
        inv = xp.where(xp.isfinite(inv), inv, xp.float32(0)).astype(x.dtype)  # ε = 0 and a constant slice
        return c * inv, inv

    def _clamped(self, xp: Any, x: Array) -> Array | None:
        """1 where σ is not clamped (its derivative flows), 0 where the floor holds it constant; None: no floor."""
        if self.floor <= 0:
            return None
        xv = x.reshape(self.view)
        var = (xv * xv).mean(axis=self.red, keepdims=True)
        return (xp.sqrt(var + xp.float32(self.epsilon)) > xp.float32(self.floor / math.sqrt(self.count))).astype(
            x.dtype)

    def _gv(self, g: Array) -> Array:
        """``g ⊙ γ`` in the view shape, with the leading K axis."""
        if self.gamma is not None:
            g = g * _as(g, self.gamma)
        return g.reshape((g.shape[0],) + self.view)

    def _back(self, g: Array, gx: Array) -> Array:
        return gx.reshape((g.shape[0],) + tuple(self.input_shapes[0]))

    # -- backward -------------------------------------------------------------------------------
    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """The exact VJP: ``(1/σ)(ĝ − mean_A(ĝ) − n ⊙ mean_A(ĝ ⊙ n))`` with ``ĝ = g ⊙ γ``
        (without the ``mean_A(ĝ)`` term when not centered)."""
        g = gouts[0]
        if g is None:
            return [None]
        n, inv = self.stats(xp, ins[0])
        gv = self._gv(g)
        red = tuple(1 + a for a in self.red)
        proj = (gv * n).mean(axis=red, keepdims=True)
        active = self._clamped(xp, ins[0])
        if active is not None:
            proj = proj * active
        gn = gv - gv.mean(axis=red, keepdims=True) if self.centered else gv
        return [self._back(g, (gn - n * proj) * inv)]

    def linear_vjp(self, xp: Any, x: Array, g: Array) -> Array:
        """The VJP with σ held constant: ``(1/σ)(ĝ − mean_A(ĝ))`` (``ĝ/σ`` when not centered), ``ĝ = g ⊙ γ``.

        This is the transposed Jacobian of ``x ↦ (x − μ(x))/σ ⊙ γ`` with σ a constant (LXT's
        linearisation of LayerNorm/RMSNorm); ``x`` is the forward input ``(N, ...)``, ``g`` the
        relevance or gradient ``(K, N, ...)``.
        """
        _, inv = self.stats(xp, x)
        gv = self._gv(g)
        if self.centered:
            gv = gv - gv.mean(axis=tuple(1 + a for a in self.red), keepdims=True)
        return self._back(g, gv * inv)

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """``n ⊙ γ + β`` with the statistics of ``ins[0]``."""
        n, _ = self.stats(xp, ins[0])
        y = n.reshape(self.input_shapes[0])
        if self.gamma is not None:
            y = y * _as(y, self.gamma)
        if self.beta is not None:
            y = y + _as(y, self.beta)
        return [y]

    def describe(self) -> str:
        """E.g. ``LayerNorm axes=(2,) eps=1e-05``, with the nodes a written-out form was made of."""
        folded = f" (fused {'·'.join(self.folded)})" if self.folded else ""
        return f"{self.label} axes={self.axes} eps={self.epsilon:g}{folded}"


def _as(like: Array, c: np.ndarray) -> Array:
    """The constant ``c`` on the device and dtype of ``like``."""
    mod = type(like).__module__.split(".")[0]
    if mod == "cupy":
        import cupy  # type: ignore[import-not-found]

        return cupy.asarray(c, dtype=like.dtype)
    return c.astype(like.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# the ONNX ops


@register("LayerNormalization")
def _layer_norm(ctx: NodeContext) -> Layer:
    """``LayerNormalization`` (opset 17): normalise over axes ``axis..rank-1``, then ``⊙ Scale + B``."""
    x = ctx.node.input[0]
    shape = ctx.shape(x)
    rank = len(shape)
    axis = int(ctx.attr("axis", -1)) % rank
    if axis == 0:
        raise Unsupported("LayerNormalization over the batch axis (axis=0)")
    if any(o for o in ctx.node.output[1:]):
        raise Unsupported("LayerNormalization's Mean/InvStdDev outputs are used")
    if not ctx.is_const(1) or not ctx.is_const(2):
        raise Unsupported("LayerNormalization's scale or bias is computed at run time")
    axes = tuple(range(axis, rank))
    return NormLayer(ctx, x, tuple(shape), axes, axes, float(ctx.attr("epsilon", 1e-5)), ctx.const(1),
                     ctx.const(2), True, "LayerNorm")


@register("InstanceNormalization")
def _instance_norm(ctx: NodeContext) -> Layer:
    """``InstanceNormalization``: per sample and channel over the spatial axes, then per-channel ``γ, β``."""
    x = ctx.node.input[0]
    shape = ctx.shape(x)
    if len(shape) < 3:
        raise Unsupported("InstanceNormalization of a tensor without spatial axes")
    scale, bias = ctx.const(1), ctx.const(2)
    if scale is None or bias is None:
        raise Unsupported("InstanceNormalization's scale or bias is computed at run time")
    per_channel = (-1,) + (1,) * (len(shape) - 2)
    axes = tuple(range(2, len(shape)))
    return NormLayer(ctx, x, tuple(shape), axes, axes, float(ctx.attr("epsilon", 1e-5)),
                     np.asarray(scale).reshape(per_channel), np.asarray(bias).reshape(per_channel), True,
                     "InstanceNorm")


@register("GroupNormalization")
def _group_norm(ctx: NodeContext) -> Layer:
    """``GroupNormalization`` (opset 18: scale/bias per group; opset 21: per channel)."""
    x = ctx.node.input[0]
    shape = tuple(ctx.shape(x))
    if len(shape) < 2:
        raise Unsupported("GroupNormalization of a tensor without a channel axis")
    groups = int(ctx.attr("num_groups"))
    c = shape[1]
    if groups <= 0 or c % groups:
        raise Unsupported(f"{c} channels cannot be split into {groups} groups")
    scale, bias = ctx.const(1), ctx.const(2)
    if scale is None or bias is None:
        raise Unsupported("GroupNormalization's scale or bias is computed at run time")
    scale, bias = np.asarray(scale).reshape(-1), np.asarray(bias).reshape(-1)
    if scale.size == groups and bias.size == groups and (ctx.opset < 21 or groups == c):
        scale, bias = np.repeat(scale, c // groups), np.repeat(bias, c // groups)
    if scale.size != c or bias.size != c:
        raise Unsupported(f"scale/bias of sizes {scale.size}/{bias.size} for {c} channels in {groups} groups")
    spatial = shape[2:]
    view = (shape[0], groups, (c // groups) * int(np.prod(spatial)))
    per_channel = (-1,) + (1,) * len(spatial)
    return NormLayer(ctx, x, view, (2,), tuple(range(1, len(shape))), float(ctx.attr("epsilon", 1e-5)),
                     scale.reshape(per_channel), bias.reshape(per_channel), True, f"GroupNorm groups={groups}")


@register("LpNormalization")
def _lp_norm(ctx: NodeContext) -> Layer:
    """``LpNormalization`` with p = 2: ``x / ‖x‖₂`` along ``axis`` (an RMS normalisation scaled by 1/√D, ε = 0)."""
    x = ctx.node.input[0]
    shape = tuple(ctx.shape(x))
    axis = int(ctx.attr("axis", -1)) % len(shape)
    p = int(ctx.attr("p", 2))
    if p != 2:
        raise Unsupported(f"LpNormalization with p={p}; only p=2 is supported")
    if axis == 0:
        raise Unsupported("LpNormalization along the batch axis")
    gamma = np.asarray(1.0 / math.sqrt(shape[axis]), dtype=np.float32)
    return NormLayer(ctx, x, shape, (axis,), (axis,), 0.0, gamma, None, False, "L2Normalization")


class ReduceL2Layer(Layer):
    """``ReduceL2`` over non-batch axes: ``y = √(Σ_A x²)``; the gradient is ``g ⊙ x / y`` (0 where y = 0)."""

    kind = "norm"

    def __init__(self, ctx: NodeContext, axes: list[int], keepdims: bool) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        rank = len(self.input_shapes[0])
        self.axes = tuple(sorted(a % rank for a in axes))
        if 0 in self.axes:
            raise Unsupported("ReduceL2 over the batch axis")
        self.keepdims = keepdims

    def _keep(self, a: Array, lead: int) -> Array:
        shape = list(self.input_shapes[0])
        for ax in self.axes:
            shape[ax] = 1
        return a.reshape(tuple(a.shape[:lead]) + tuple(shape))

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """``g ⊙ x / ‖x‖`` broadcast back over the reduced axes."""
        g = gouts[0]
        if g is None:
            return [None]
        x = ins[0]
        y = self._keep(outs[0], 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = xp.where(y > 0, x / xp.where(y > 0, y, 1), 0).astype(x.dtype)
        return [self._keep(g, 1) * r]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """``√(Σ_A x²)``."""
        return [xp.sqrt((ins[0] * ins[0]).sum(axis=self.axes, keepdims=self.keepdims))]

    def linear_vjp(self, xp: Any, x: Array, g: Array) -> Array:
        """The VJP with the scale held constant: ``y = Σ x ⊙ (x / y)`` with ``x / y`` fixed, i.e. ``g ⊙ x / y`` —
        the gradient itself (the norm is homogeneous of degree 1); under the ε-rule each input gets the share
        ``x² / y²`` of the relevance (conserving)."""
        return self.vjp(xp, [x], self.forward(xp, [x]), [g])[0]


@register("ReduceL2")
def _reduce_l2(ctx: NodeContext) -> Layer:
    from .pooling import _reduce_axes

    axes, keepdims = _reduce_axes(ctx)
    return ReduceL2Layer(ctx, axes, keepdims)


# ---------------------------------------------------------------------------------------------
# written-out normalisations


@dataclass
class NormGroup:
    """A written-out normalisation: its nodes (topological order), source, output and parameters."""

    source: str
    output: str
    nodes: list[onnx.NodeProto]
    axes: tuple[int, ...]
    epsilon: float
    centered: bool
    gamma: np.ndarray | None
    beta: np.ndarray | None
    floor: float = 0.0  # F.normalize's clamp of the norm (then: x / max(‖x‖, floor), ε = 0)

    def layer(self, consts: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], opset: int) -> NormLayer:
        """The :class:`NormLayer` that replaces the nodes."""
        last = self.nodes[-1]
        node = helper.make_node("FusedNorm", [self.source], [self.output], name=last.name or self.output)
        ctx = NodeContext(node, consts, shapes, opset)
        shape = ctx.shape(self.source)
        rank = len(shape)
        trailing = self.axes == tuple(range(self.axes[0], rank))
        label = ("LayerNorm" if trailing else "Norm") if self.centered else "RMSNorm"
        gamma = self.gamma
        if self.floor > 0:
            label = "L2Normalization"
            gamma = np.asarray(1.0 / math.sqrt(int(np.prod([shape[a] for a in self.axes]))), dtype=np.float32)
        layer = NormLayer(ctx, self.source, tuple(shape), self.axes, self.axes, self.epsilon, gamma, self.beta,
                          self.centered, label, self.floor)
        layer.op_type = label
        layer.folded = [n.op_type for n in self.nodes]
        return layer


def _scalar(consts: dict[str, np.ndarray], name: str) -> float | None:
    c = consts.get(name)
    if c is None or np.asarray(c).size != 1:
        return None
    return float(np.asarray(c).reshape(-1)[0])


def _axes_of(node: onnx.NodeProto, consts: dict[str, np.ndarray], rank: int) -> tuple[int, ...] | None:
    """Reduced axes of a ReduceMean with keepdims=1 (attribute or input), normalised; None otherwise."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if not int(attrs.get("keepdims", 1)):
        return None
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        c = consts.get(node.input[1])
        if c is None:
            return None
        axes = [int(a) for a in np.asarray(c).reshape(-1)]
    if not axes:
        return None
    return tuple(sorted({int(a) % rank for a in axes}))


def find_fused_norms(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
                     shapes: dict[str, tuple[int, ...]], keep: set[str]) -> list[NormGroup]:
    """The written-out LayerNorm / RMSNorm patterns among ``nodes`` (topologically ordered), in one pass.

    Anchored at each ``ReduceMean`` of a square (``Pow(d, 2)`` or ``Mul(d, d)``): ``d`` is
    ``Sub(x, ReduceMean(x))`` over the same axes (centered) or ``x`` itself (RMS); then
    ``Add(ε) → Sqrt`` and ``Div(d, ·)``, or ``Reciprocal``/``Div(1, ·)``/``Pow(·, −½)`` and
    ``Mul(d, ·)`` (``Pow(var + ε, −½)`` without the Sqrt too); then optionally ``Mul`` by a
    constant γ and ``Add`` of a constant β. Every intermediate tensor must be used only inside
    the pattern (and not be in ``keep``), and the result must have the input's shape.
    """
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for k, node in enumerate(nodes):
        for o in node.output:
            if o:
                producer[o] = k
        for i in set(node.input):
            if i:
                consumers.setdefault(i, []).append(k)

    def prod(name: str, *ops: str) -> onnx.NodeProto | None:
        k = producer.get(name)
        if k is None or nodes[k].op_type not in ops or nodes[k].domain not in ("", "ai.onnx"):
            return None
        return nodes[k]

    def only_user(name: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        if len(users) != 1 or name in keep:
            return None
        node = nodes[users[0]]
        return node if node.domain in ("", "ai.onnx") else None

    def other(node: onnx.NodeProto, name: str) -> str | None:
        ins = [i for i in node.input if i]
        if len(ins) != 2 or name not in ins:
            return None
        return ins[1] if ins[0] == name else ins[0]

    groups: list[NormGroup] = []
    taken: set[int] = set()
    for node in nodes:  # F.normalize: Div(x, [Expand](Clip|Max(ReduceL2(x), floor)))
        if node.op_type != "ReduceL2" or not node.input or node.input[0] in consts or node.input[0] not in shapes:
            continue
        x = node.input[0]
        axes = _axes_of(node, consts, len(shapes[x]))
        if axes is None or 0 in axes:
            continue
        members = [node]
        clamp = only_user(node.output[0])
        floor = None
        if clamp is not None and clamp.op_type == "Clip" and clamp.input[0] == node.output[0]:
            attrs = {a.name: helper.get_attribute_value(a) for a in clamp.attribute}
            floor = attrs.get("min") if len(clamp.input) < 2 else _scalar(consts, clamp.input[1])
            if len(clamp.input) > 2 and clamp.input[2] or attrs.get("max") is not None:
                floor = None
        elif clamp is not None and clamp.op_type == "Max":
            c = other(clamp, node.output[0])
            floor = None if c is None else _scalar(consts, c)
        if floor is None or floor <= 0:
            continue
        members.append(clamp)
        div = only_user(clamp.output[0])
        if div is not None and div.op_type == "Expand":
            members.append(div)
            div = only_user(div.output[0])
        if div is None or div.op_type != "Div" or div.input[0] != x or div.input[1] != members[-1].output[0]:
            continue
        members.append(div)
        ids = [producer[m.output[0]] for m in members]
        if shapes.get(div.output[0]) != shapes.get(x) or any(k in taken for k in ids):
            continue
        taken.update(ids)
        groups.append(NormGroup(x, div.output[0], [nodes[k] for k in sorted(ids)], axes, 0.0, False, None, None,
                                float(floor)))
    for var_node in nodes:
        if var_node.op_type != "ReduceMean" or not var_node.input:
            continue
        sq = prod(var_node.input[0], "Pow", "Mul")
        if sq is None or len(sq.input) < 2:
            continue
        if sq.op_type == "Pow":
            if _scalar(consts, sq.input[1]) != 2.0:
                continue
        elif sq.input[0] != sq.input[1]:
            continue
        d = sq.input[0]
        if d in consts or d not in shapes:
            continue
        rank = len(shapes[d])
        axes = _axes_of(var_node, consts, rank)
        if axes is None or 0 in axes:
            continue
        members = [sq, var_node]
        sub = prod(d, "Sub")
        centered = False
        x = d
        if sub is not None and len(sub.input) == 2:
            mean = prod(sub.input[1], "ReduceMean")
            if mean is not None and mean.input[0] == sub.input[0] and _axes_of(mean, consts, rank) == axes:
                centered, x = True, sub.input[0]
                members = [mean, sub] + members
        # ε, the square root and the division
        add = only_user(var_node.output[0])
        if add is None or add.op_type != "Add":
            continue
        eps_name = other(add, var_node.output[0])
        eps = None if eps_name is None else _scalar(consts, eps_name)
        if eps is None:
            continue
        members.append(add)
        nxt = only_user(add.output[0])
        if nxt is None:
            continue
        n_node = None
        if nxt.op_type == "Sqrt":
            members.append(nxt)
            s = nxt.output[0]
            user = only_user(s)
            if user is None:
                continue
            if user.op_type == "Div" and list(user.input) == [d, s]:
                n_node = user
            elif user.op_type in ("Reciprocal", "Div"):
                if user.op_type == "Div" and (list(user.input[1:]) != [s] or _scalar(consts, user.input[0]) != 1.0):
                    continue
                members.append(user)
                n_node = only_user(user.output[0])
                if n_node is None or n_node.op_type != "Mul" or other(n_node, user.output[0]) != d:
                    continue
        elif nxt.op_type == "Pow" and len(nxt.input) == 2 and _scalar(consts, nxt.input[1]) == -0.5:
            members.append(nxt)
            n_node = only_user(nxt.output[0])
            if n_node is None or n_node.op_type != "Mul" or other(n_node, nxt.output[0]) != d:
                continue
        if n_node is None:
            continue
        members.append(n_node)
        out = n_node.output[0]
        gamma = beta = None
        user = only_user(out)
        if user is not None and user.op_type == "Mul":
            c = other(user, out)
            if c is not None and c in consts and c != out:
                gamma = np.asarray(consts[c], dtype=np.float32)
                members.append(user)
                out = user.output[0]
                user = only_user(out)
        if user is not None and user.op_type == "Add":
            c = other(user, out)
            if c is not None and c in consts and c != out:
                beta = np.asarray(consts[c], dtype=np.float32)
                members.append(user)
                out = user.output[0]
        if shapes.get(out) != shapes.get(x):
            continue
        ids = [producer[m.output[0]] for m in members]
        inside = set(ids)
        if any(m.output[0] in keep or any(u not in inside for u in consumers.get(m.output[0], []))
               for m in members if m.output[0] != out):
            continue  # an intermediate tensor is used outside the pattern
        if any(k in taken for k in ids):
            continue
        taken.update(ids)
        groups.append(NormGroup(x, out, [nodes[k] for k in sorted(ids)], axes, eps, centered, gamma, beta))
    return groups


__all__ = ["NormGroup", "NormLayer", "ReduceL2Layer", "find_fused_norms"]
