"""Rules for transformer layers: products of two activations, softmax and normalisation (AttnLRP, CP-LRP).

* :class:`ProductUniform` — AttnLRP's uniform rule for a bilinear product ``z = a ∘ b``
  (``MatMul``/``Einsum`` of two activations, ``Mul`` of two activations, a sigmoid gate): the
  ε-rule of the product seen as linear in each factor, half of the relevance to each::

      s = R ⊘ stab(z),   R_a = ½ a ⊙ J_aᵀ s,   R_b = ½ b ⊙ J_bᵀ s

  where ``J_aᵀ`` is the transposed map of the product in ``a`` with ``b`` fixed. Since
  ``a ⊙ J_aᵀ s`` summed equals ``Σ z ⊙ s`` (Euler's identity for a function linear in ``a``),
  ``ΣR_a = ΣR_b = ½ ΣR`` up to the stabiliser: the rule conserves.
* :class:`ProductHoldConstant` — CP-LRP: the attention weights (the factor that comes from a
  Softmax) are held constant, and the other factor takes all: ``R_v = v ⊙ J_vᵀ s``; likewise the
  gate of a gated unit ``act(W₁x) ⊙ W₂x`` (LXT's CP-LRP detaches it). A product with neither gets
  the uniform rule.
* :class:`GateUniform` — the uniform rule on a :class:`~onnxlrp.ops.elementwise.GateLayer`
  (``signal ⊙ gate``, the gate possibly broadcast): ``R_signal = ½ R``, ``R_gate = ½ Σ_broadcast R``.
  No composite uses it: ``attnlrp`` gives gates signal-take-all, because through a sigmoid gate
  (``σ(0) = ½``) the uniform split feeds the ε-rule of the gate's linear layer relevance at
  pre-activations near 0 (see :func:`onnxlrp.composites.attnlrp`).
* :class:`SoftmaxRule` — AttnLRP's softmax rule (Deep Taylor decomposition at ``x`` with bias):
  ``R_x = x ⊙ (R − s ⊙ Σ R)``, sums over the softmax axes, ``s`` the softmax; non-finite inputs
  (masked logits, −inf) count as 0. For ``LogSoftmax`` the ε-rule of its linearisation,
  ``x ⊙ Jᵀ(R ⊘ stab(y))``.
* :class:`StopRule` — no relevance flows (CP-LRP's softmax: attention weights held constant).
* :class:`NormEpsilon` — LayerNorm/RMSNorm/GroupNorm with the normalising scale held constant:
  the layer is then linear in ``x`` (its ``linear_vjp``) with the shift ``β`` as bias, and gets the
  ε-rule ``R_x = x ⊙ L_σᵀ(R ⊘ stab(y))``.
"""

from __future__ import annotations

from ..ops.base import unbroadcast
from .base import Rule, Stabilizer


class ProductUniform(Rule):
    """The uniform rule (ε-LRP of a bilinear product, half of the relevance to each factor)."""

    def __init__(self, stabilizer: Stabilizer) -> None:
        self.stabilizer = stabilizer
        self.name = f"uniform({stabilizer})"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """``R_a = ½ a ⊙ J_aᵀ(R ⊘ stab(z))`` and likewise ``R_b``."""
        g = gouts[0]
        if g is None:
            return [None, None]
        xp = ctx.xp
        s = self.stabilizer.divide(xp, g, outs[0]) * xp.float32(0.5)
        return [ins[i] * layer.partial_vjp(xp, ins, s, i) for i in (0, 1)]


class ProductHoldConstant(Rule):
    """CP-LRP on a product: the attention weights (or a gated unit's gate) held constant, all relevance to the other
    factor (ε-rule)."""

    def __init__(self, stabilizer: Stabilizer) -> None:
        self.stabilizer = stabilizer
        self.uniform = ProductUniform(stabilizer)
        self.name = f"attention-weights-constant({stabilizer})"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """``R_v = v ⊙ J_vᵀ(R ⊘ stab(z))`` for the factor ``v`` that is not held; the uniform rule if none is."""
        held = getattr(layer, "attention_index", None)
        if held is None:
            held = getattr(layer, "gate_index", None)
        if held is None:
            return self.uniform(layer, ctx, ins, outs, gouts)
        g = gouts[0]
        if g is None:
            return [None, None]
        xp = ctx.xp
        v = 1 - held
        s = self.stabilizer.divide(xp, g, outs[0])
        res: list = [None, None]
        res[v] = ins[v] * layer.partial_vjp(xp, ins, s, v)
        return res


class GateUniform(Rule):
    """The uniform rule on ``signal ⊙ gate``: half of the relevance to each factor (summed over broadcast axes)."""

    name = "uniform-split"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """``R_k = ½ R`` per factor, summed down to the factor's shape."""
        g = gouts[0]
        if g is None:
            return [None, None]
        half = g * ctx.xp.float32(0.5)
        return [unbroadcast(ctx.xp, half, shp) for shp in layer.input_shapes]


class SoftmaxRule(Rule):
    """AttnLRP's softmax rule ``R_x = x ⊙ (R − s ⊙ ΣR)`` (LogSoftmax: ε-rule of the linearisation)."""

    def __init__(self, stabilizer: Stabilizer) -> None:
        self.stabilizer = stabilizer
        self.name = "softmax-taylor"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """Relevance at the softmax input."""
        g = gouts[0]
        if g is None:
            return [None]
        xp = ctx.xp
        x = ins[0]
        x = xp.where(xp.isfinite(x), x, xp.float32(0))
        if layer.log:
            y = outs[0]
            s = self.stabilizer.divide(xp, g, xp.where(xp.isfinite(y), y, xp.float32(0)))
            s = xp.where(xp.isfinite(outs[0]), s, xp.float32(0))
            return [x * layer.vjp(xp, ins, outs, [s])[0]]
        p = outs[0]
        ax = layer._kaxes()
        return [x * (g - p * g.sum(axis=ax, keepdims=True))]


class StopRule(Rule):
    """No relevance flows through this layer (CP-LRP: the attention weights are constants)."""

    name = "stop"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """Nothing for every input."""
        return [None] * len(layer.inputs)


class NormEpsilon(Rule):
    """A normalisation with its scale held constant, under the ε-rule: ``x ⊙ L_σᵀ(R ⊘ stab(y))``.

    Needs the layer's ``linear_vjp(xp, x, g)``: the VJP with the normalising scale (``1/σ``,
    ``1/rms``) treated as a constant (kind ``"norm"``).
    """

    def __init__(self, stabilizer: Stabilizer) -> None:
        self.stabilizer = stabilizer
        self.name = f"norm-epsilon({stabilizer})"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """ε-rule of the norm as a linear map of ``x`` with ``β`` as bias."""
        g = gouts[0]
        if g is None:
            return [None] * len(layer.inputs)
        xp = ctx.xp
        s = self.stabilizer.divide(xp, g, outs[0])
        back = layer.linear_vjp(xp, ins[0], s)
        return [ins[0] * back] + [None] * (len(layer.inputs) - 1)
