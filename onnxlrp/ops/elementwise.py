"""Elementwise layers: activations, scale/shift by a constant, sums, gates and BatchNorm.

LRP passes relevance through activations unchanged; their derivative is needed for the
gradient-family methods, so each activation here knows ``derivative(x, y)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import Array, Layer, NodeContext, Unsupported, register, unbroadcast

# ---------------------------------------------------------------------------------------------
# activations


class ActivationLayer(Layer):
    """An elementwise nonlinearity ``y = f(x)``.

    ``relu_like`` marks ReLU and ReLU6-style clips (lower bound 0): the activations guided
    backprop and deconvnet modify, and the ones the bounded Deep Taylor rule looks for.
    """

    kind = "activation"

    def __init__(self, ctx: NodeContext, deriv: Callable[[Any, Array, Array], Array], relu_like: bool = False) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        if ctx.node.input[0] in ctx.consts:
            raise Unsupported("activation of a constant")
        self._deriv = deriv
        self.relu_like = relu_like

    def derivative(self, xp: Any, x: Array, y: Array) -> Array:
        """``f'(x)`` elementwise (float32, shaped like x)."""
        return self._deriv(xp, x, y)

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """``g ⊙ f'(x)``."""
        g = gouts[0]
        if g is None:
            return [None]
        # multiplying by a boolean mask is several times faster than a broadcasting where(); the mask is read
        # from the output (y > 0 exactly where x > 0; lo < y < hi exactly where lo < x < hi), so that a compiled
        # graph need not keep the input: onnxruntime then fuses the convolution before it with the activation
        if self.op_type == "Relu":
            return [g * (outs[0] > 0)]
        if self.op_type == "Clip":
            lo, hi = self.bounds  # type: ignore[attr-defined]
            y = outs[0]
            return [g * ((y > lo) & (y < hi))]
        return [g * self.derivative(xp, ins[0], outs[0])]


def _f32(xp: Any, mask: Array) -> Array:
    return mask.astype(xp.float32)


@register("Relu")
def _relu(ctx: NodeContext) -> Layer:
    return ActivationLayer(ctx, lambda xp, x, y: _f32(xp, x > 0), relu_like=True)


@register("Clip")
def _clip(ctx: NodeContext) -> Layer:
    if ctx.opset < 11:
        lo, hi = ctx.attr("min", -np.inf), ctx.attr("max", np.inf)
    else:
        if not (ctx.is_const(1) and ctx.is_const(2)):
            raise Unsupported("Clip bounds computed at run time")
        c1, c2 = ctx.const(1), ctx.const(2)
        lo = -np.inf if c1 is None else float(np.asarray(c1).reshape(-1)[0])
        hi = np.inf if c2 is None else float(np.asarray(c2).reshape(-1)[0])
    lo, hi = float(lo), float(hi)
    layer = ActivationLayer(ctx, lambda xp, x, y: _f32(xp, (x > lo) & (x < hi)), relu_like=(lo == 0.0))
    layer.bounds = (lo, hi)  # type: ignore[attr-defined]
    return layer


@register("LeakyRelu")
def _leaky(ctx: NodeContext) -> Layer:
    alpha = float(ctx.attr("alpha", 0.01))
    return ActivationLayer(ctx, lambda xp, x, y: xp.where(x > 0, xp.float32(1.0), xp.float32(alpha)))


@register("PRelu")
def _prelu(ctx: NodeContext) -> Layer:
    slope = ctx.const(1)
    if slope is None:
        raise Unsupported("PRelu slope computed at run time")
    s = np.asarray(slope, dtype=np.float32)
    return ActivationLayer(ctx, lambda xp, x, y: xp.where(x > 0, xp.float32(1.0), xp.asarray(s)).astype(xp.float32))


@register("Sigmoid")
def _sigmoid(ctx: NodeContext) -> Layer:
    return ActivationLayer(ctx, lambda xp, x, y: y * (1 - y))


@register("HardSigmoid")
def _hardsigmoid(ctx: NodeContext) -> Layer:
    a, b = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))

    def d(xp: Any, x: Array, y: Array) -> Array:
        t = a * x + b
        return _f32(xp, (t > 0) & (t < 1)) * xp.float32(a)

    return ActivationLayer(ctx, d)


@register("HardSwish")
def _hardswish(ctx: NodeContext) -> Layer:
    def d(xp: Any, x: Array, y: Array) -> Array:
        return xp.where(x < -3, xp.float32(0), xp.where(x > 3, xp.float32(1), x / 3 + xp.float32(0.5))).astype(
            xp.float32
        )

    return ActivationLayer(ctx, d)


@register("Tanh")
def _tanh(ctx: NodeContext) -> Layer:
    return ActivationLayer(ctx, lambda xp, x, y: 1 - y * y)


@register("Elu")
def _elu(ctx: NodeContext) -> Layer:
    alpha = float(ctx.attr("alpha", 1.0))
    return ActivationLayer(ctx, lambda xp, x, y: xp.where(x > 0, xp.float32(1.0), y + xp.float32(alpha)))


@register("Selu")
def _selu(ctx: NodeContext) -> Layer:
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    return ActivationLayer(
        ctx, lambda xp, x, y: xp.where(x > 0, xp.float32(gamma), y + xp.float32(alpha * gamma)).astype(xp.float32)
    )


@register("Softplus")
def _softplus(ctx: NodeContext) -> Layer:
    return ActivationLayer(ctx, lambda xp, x, y: 1 / (1 + xp.exp(-x)))


@register("Softsign")
def _softsign(ctx: NodeContext) -> Layer:
    return ActivationLayer(ctx, lambda xp, x, y: 1 / (1 + xp.abs(x)) ** 2)


# ---------------------------------------------------------------------------------------------
# scale / shift by a constant


class AffineLayer(Layer):
    """``y = x ⊙ scale + shift`` with constant ``scale``/``shift`` (Add/Sub/Mul/Div by a constant).

    Exporters emit these for in-graph preprocessing (``(x − mean) / std``) and rescalings.
    LRP passes relevance through them unchanged; the gradient scales by ``scale``.
    """

    kind = "affine"

    def __init__(self, ctx: NodeContext, x_name: str, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__(ctx, inputs=[x_name])
        self.scale = np.asarray(scale, dtype=np.float32)
        self.shift = np.asarray(shift, dtype=np.float32)
        self.unit_scale = bool(np.all(self.scale == 1)) and not ctx.is_side(self.scale)
        if self.output_shapes[0] != self.input_shapes[0]:
            raise Unsupported(
                f"the constant operand broadcasts the activation from {self.input_shapes[0]} "
                f"to {self.output_shapes[0]}"
            )

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """``g ⊙ scale``."""
        g = gouts[0]
        if g is None:
            return [None]
        return [g if self.unit_scale else g * xp.asarray(self.scale)]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """``x ⊙ scale + shift``."""
        return [ins[0] * xp.asarray(self.scale) + xp.asarray(self.shift)]


class AddLayer(Layer):
    """A signed sum of activations (``Add``, ``Sum``, ``Sub`` of two activations), with broadcasting."""

    kind = "add"

    def __init__(self, ctx: NodeContext, signs: list[float]) -> None:
        super().__init__(ctx, inputs=list(ctx.node.input))
        self.signs = signs

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """Each input gets ``± g`` summed over its broadcast axes."""
        g = gouts[0]
        if g is None:
            return [None] * len(self.inputs)
        return [unbroadcast(xp, g if s > 0 else -g, shp) for s, shp in zip(self.signs, self.input_shapes, strict=True)]


class QuotientLayer(Layer):
    """``y = a / b`` of two activations (ConvNeXt-V2's global response norm, linear attention's normaliser).

    The denominator is a normaliser in every architecture that writes this: the LRP composites hold
    it constant (``signal_index`` 0: all relevance to the numerator, as a gate's signal); the
    gradient goes to both.
    """

    kind = "quotient"
    signal_index = 0

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """``g / b`` to the numerator, ``−g ⊙ a / b²`` to the denominator, summed over broadcast axes."""
        g = gouts[0]
        if g is None:
            return [None, None]
        a, b = ins
        gb = g / b
        return [unbroadcast(xp, gb, self.input_shapes[0]), unbroadcast(xp, -gb * (a / b), self.input_shapes[1])]


def _binary(ctx: NodeContext) -> Layer:
    node = ctx.node
    op = node.op_type
    dyn = [i for i in range(len(node.input)) if not ctx.is_const(i)]
    if op == "Sum" and len(dyn) == len(node.input):
        return AddLayer(ctx, [1.0] * len(dyn))
    if op == "Sum":
        raise Unsupported("Sum with constant operands")
    if len(dyn) == 2:
        if op == "Add":
            return AddLayer(ctx, [1.0, 1.0])
        if op == "Sub":
            return AddLayer(ctx, [1.0, -1.0])
        if op == "Mul":
            from .attention import mul_of_activations  # a gate, or a product of two activations

            return mul_of_activations(ctx)
        return QuotientLayer(ctx)
    if len(dyn) != 1:
        raise Unsupported(f"{op} with no activation input")
    i = dyn[0]
    c0 = ctx.const(1 - i)
    assert c0 is not None
    c = np.asarray(c0, dtype=np.float32)
    ctx.derive(c, c0, lambda xp, t: t.astype(np.float32))  # a mask-derived operand stays a run-time tensor
    one, zero = np.ones((), np.float32), np.zeros((), np.float32)
    if op == "Add":
        scale, shift = one, c
    elif op == "Sub":
        scale, shift = (one, -c) if i == 0 else (-one, c)
        if i == 0:
            ctx.derive(shift, c, lambda xp, t: -t)
    elif op == "Mul":
        scale, shift = c, zero
    elif i == 0:  # Div by a constant
        if np.any(c == 0):
            raise Unsupported("division by a constant that contains zeros")
        scale, shift = (1.0 / c).astype(np.float32), zero
        ctx.derive(scale, c, lambda xp, t: xp.asarray(1.0, dtype=np.float32) / t)
    else:
        raise Unsupported("constant divided by an activation is not supported")
    return AffineLayer(ctx, node.input[i], scale, shift)


for _op in ("Add", "Sub", "Mul", "Div", "Sum"):
    register(_op)(_binary)

# ---------------------------------------------------------------------------------------------
# gates

_GATE_PRODUCERS = {"Sigmoid", "HardSigmoid", "Tanh", "Softmax"}
_SEE_THROUGH = {"Reshape", "Flatten", "Unsqueeze", "Squeeze", "Identity", "Expand", "Transpose", "Tile", "Resize",
                "Upsample"}


def _source_op(ctx: NodeContext, name: str) -> str | None:
    seen = 0
    while name in ctx.producers and seen < 16:
        node = ctx.producers[name]
        if node.op_type not in _SEE_THROUGH:
            return node.op_type
        name = node.input[0]
        seen += 1
    return None


class GateLayer(Layer):
    """``y = signal ⊙ gate`` of two activations (squeeze-excitation, Swish ``x·σ(x)``, attention gates).

    The gate is the input that is broadcast (fewer elements), or else the one produced by a
    sigmoid-like activation. LRP sends all relevance to the signal; the gradient goes to both.
    """

    kind = "gate"

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=list(ctx.node.input))
        sizes = [int(np.prod(s)) for s in self.input_shapes]
        if sizes[0] != sizes[1]:
            self.gate_index = int(np.argmin(sizes))
        else:
            src = [_source_op(ctx, n) in _GATE_PRODUCERS for n in self.inputs]
            if src[0] == src[1]:
                raise Unsupported(
                    "Mul of two activations where neither is a gate (a broadcast tensor or a "
                    "sigmoid-like output): a bilinear product has no LRP rule here"
                )
            self.gate_index = 0 if src[0] else 1
        self.signal_index = 1 - self.gate_index

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """The product rule: ``g ⊙ other input``, summed over broadcast axes."""
        g = gouts[0]
        if g is None:
            return [None, None]
        return [
            unbroadcast(xp, g * ins[1], self.input_shapes[0]),
            unbroadcast(xp, g * ins[0], self.input_shapes[1]),
        ]


# ---------------------------------------------------------------------------------------------
# batch normalisation


class BatchNormLayer(Layer):
    """Inference-mode ``BatchNormalization`` over axis 1: ``y = (x − μ)·γ/√(σ²+ε) + β``."""

    kind = "batchnorm"

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx, inputs=[ctx.node.input[0]])
        if int(ctx.attr("training_mode", 0)):
            raise Unsupported("BatchNormalization in training mode")
        vals = [ctx.const(i) for i in range(1, 5)]
        if any(v is None for v in vals):
            raise Unsupported("BatchNormalization parameters computed at run time")
        gamma, beta, mean, var = (np.asarray(v, dtype=np.float64).reshape(-1) for v in vals)  # type: ignore[arg-type]
        eps = float(ctx.attr("epsilon", 1e-5))
        self.outputs = self.outputs[:1]
        self.output_shapes = self.output_shapes[:1]
        self.scale = (gamma / np.sqrt(var + eps)).astype(np.float32)
        self.shift = (beta - mean * gamma / np.sqrt(var + eps)).astype(np.float32)
        self.mean = mean.astype(np.float32)
        self.beta = beta.astype(np.float32)
        self._bshape = (1, -1) + (1,) * (len(self.input_shapes[0]) - 2)

    def channel(self, xp: Any, v: np.ndarray) -> Array:
        """A per-channel vector shaped to broadcast against the activation."""
        return xp.asarray(v.reshape(self._bshape))

    def vjp(self, xp: Any, ins: list[Array], outs: list[Array], gouts: list[Array | None]) -> list[Array | None]:
        """``g ⊙ γ/√(σ²+ε)``."""
        g = gouts[0]
        return [None if g is None else g * self.channel(xp, self.scale)]

    def forward(self, xp: Any, ins: list[Array]) -> list[Array]:
        """The affine map of inference-mode BatchNorm."""
        return [ins[0] * self.channel(xp, self.scale) + self.channel(xp, self.shift)]


@register("BatchNormalization")
def _bn(ctx: NodeContext) -> Layer:
    return BatchNormLayer(ctx)
