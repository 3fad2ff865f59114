"""LRP rules for linear layers, all instances of one template.

A rule is a list of *groups*; a group is a list of *terms* ``(input modifier, weight
modifier, sign)``, a bias modifier, a stabiliser and a coefficient:

    z_g   = Σ_t sign_t · W_t x_t + b_g
    s_g   = mask_g ⊙ R ⊘ stab(z_g)
    R_in  = Σ_g coeff_g · Σ_t sign_t · x_t ⊙ W_tᵀ s_g

Epsilon, Z, Alpha-Beta (iNNvestigate's and Zennit's forms), Z⁺, Gamma, W², Flat and Z^B are
each a few lines below. Modified weights are made once per layer and cached; terms whose
input modifier is zero everywhere (``x⁻`` after a ReLU) are skipped; denominators that do
not depend on ``x`` (W², Flat) are computed once per layer and shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import may_be_true
from ..errors import UnsupportedModelError
from ..ops.base import Array
from ..ops.linear import LinearLayer
from .base import Rule, RuleContext, SafeDivide, SignEpsilon, Stabilizer

# weight (and bias) modifiers, by key; None means "no bias"
_WEIGHT_MODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "id": lambda w: w,
    "pos": lambda w: np.maximum(w, 0),
    "neg": lambda w: np.minimum(w, 0),
    "sq": lambda w: w * w,
    "ones": lambda w: np.ones_like(w),
}


def _weight_mod(key: str) -> Callable[[np.ndarray], np.ndarray]:
    if key in _WEIGHT_MODS:
        return _WEIGHT_MODS[key]
    if key.startswith("gamma+") or key.startswith("gamma-"):
        gamma = float(key[6:])
        if key[5] == "+":
            return lambda w: w + gamma * np.maximum(w, 0)
        return lambda w: w + gamma * np.minimum(w, 0)
    raise KeyError(key)


@dataclass(frozen=True)
class Term:
    """One ``sign · W_t x_t`` summand: input modifier (``x``, ``x+``, ``x-``, ``ones``, ``low``, ``high``,
    ``x-low``, ``x-high``)."""

    inp: str
    w: str
    sign: float = 1.0


@dataclass(frozen=True)
class Group:
    """Terms sharing one denominator."""

    terms: tuple[Term, ...]
    bias: str | None
    stab: Stabilizer
    coeff: float = 1.0
    mask: str | None = None  # "z>0" / "z<0": only where the original output has that sign (Zennit's Gamma)


class LinearRule(Rule):
    """A rule for Conv/Gemm/MatMul built from :class:`Group` s (see the module docstring)."""

    def __init__(self, name: str, groups: list[Group]) -> None:
        self.name = name
        self.groups = groups
        self.proportional = all(t.inp in ("x", "x+", "x-") for grp in groups for t in grp.terms)

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """Relevance at the layer input."""
        g = gouts[0]
        if g is None:
            return [None]
        assert isinstance(layer, LinearLayer)
        xp = ctx.xp
        x = ins[0]
        inputs = _Inputs(layer, ctx, x)
        total: Array | None = None
        for gi, group in enumerate(self.groups):
            terms = [t for t in group.terms if not inputs.is_zero(t.inp)]
            if not terms:
                continue
            z = self._denominator(layer, ctx, x, outs[0], group, gi, terms, inputs)
            s = self._divide(xp, ctx, layer, group, terms, g, z)
            if group.mask == "z>0":
                s *= outs[0] > 0
            elif group.mask == "z<0":
                s *= outs[0] < 0
            for t in terms:
                back = layer.lin_t_k(xp, s, layer.param(xp, t.w, _weight_mod(t.w)))
                inp = inputs.get(t.inp)
                if inp is not None:
                    back *= inp
                c = group.coeff * t.sign
                if total is None:
                    total = back if c == 1.0 else back * np.float32(c)
                elif c == 1.0:
                    total += back
                elif c == -1.0:
                    total -= back
                else:
                    total += back * np.float32(c)
        if total is None:
            total = xp.zeros((g.shape[0],) + tuple(x.shape), dtype=xp.float32)
        return [total]

    @staticmethod
    def _divide(xp: Any, ctx: RuleContext, layer: LinearLayer, group: Group, terms: list[Term], g: Array,
                z: Array) -> Array:
        """``g / stab(z)``, with the sign test of ε's stabiliser left out where it cannot matter (same numbers):
        a denominator that is a sum of non-negative products (``W⁺x⁺ + W⁻x⁻ + b⁺``: Z⁺, Alpha-Beta's α
        group) is never negative, so ``z + ε``; the plain ``Wx + b`` of a layer whose output relevance is 0
        wherever ``z < 0`` (:attr:`RuleContext.vanishing`) gives 0 there whatever the sign, so ``|z| + ε`` — or
        ``max(z, 0) + ε`` from the ReLU that reads ``z``."""
        stab = group.stab
        if not isinstance(stab, SignEpsilon) or xp.__name__ == "cupy":  # CuPy: one fused kernel anyway
            return stab.divide(xp, g, z)
        eps = np.float32(stab.eps)
        if group.bias in (None, "pos") and all((t.inp, t.w) in (("x+", "pos"), ("x-", "neg")) for t in terms):
            return g / (z + eps)
        if ctx.vanishing and layer.outputs[0] in ctx.vanishing and group.mask is None and _plain(group, terms):
            relu = ctx.vanishing[layer.outputs[0]]  # max(z, 0): z where z ≥ 0, and the rest gets 0 anyway
            return g / ((xp.abs(z) if relu is None else relu) + eps)
        return stab.divide(xp, g, z)

    def _denominator(
        self, layer: LinearLayer, ctx: RuleContext, x: Array, y: Array, group: Group, gi: int, terms: list[Term],
        inputs: _Inputs,
    ) -> Array:
        xp = ctx.xp
        if _plain(group, terms):  # the layer's own output
            return y
        x_free = all(t.inp == "ones" for t in terms)
        key = (id(layer), group.terms, group.bias, x.shape)
        if x_free and key in ctx.cache:
            return ctx.cache[key]
        b = None if group.bias is None else layer.bias_param(xp, group.bias, _weight_mod(group.bias))
        z = None
        for t in terms:
            inp = inputs.get(t.inp)
            if inp is None:
                inp = xp.ones(x.shape, dtype=xp.float32)
            w = layer.param(xp, t.w, _weight_mod(t.w))
            if t.sign != 1.0:
                part = layer.lin(xp, inp, w, None) * np.float32(t.sign)
            else:
                part, b = layer.lin(xp, inp, w, b), None  # the bias rides with the first positive term
            z = part if z is None else z + part
        assert z is not None and b is None, "every group with a bias has a positive term"
        if x_free:
            ctx.cache[key] = z
        return z


def _plain(group: Group, terms: list[Term]) -> bool:
    """The group's denominator is the layer's own ``W x + b``."""
    return len(terms) == 1 and terms[0] == Term("x", "id") and group.bias == "id"


class _Inputs:
    """The modified inputs of one rule call (``x``, ``x⁺``, ``x⁻``, ones, the Z^B bounds), made once.

    After a ReLU ``x ≥ 0`` everywhere: then ``x⁺`` is ``x`` itself and ``x⁻`` terms vanish.
    """

    def __init__(self, layer: LinearLayer, ctx: RuleContext, x: Array) -> None:
        self.layer, self.ctx, self.x = layer, ctx, x
        self._made: dict[str, Array | None] = {}
        self._has_neg: bool | None = None
        self._has_pos: bool | None = None

    def has_neg(self) -> bool:
        """Whether ``x`` has a negative element."""
        if self._has_neg is None:
            self._has_neg = may_be_true(self.ctx.xp, self.x < 0)
        return self._has_neg

    def has_pos(self) -> bool:
        """Whether ``x`` has a positive element."""
        if self._has_pos is None:
            self._has_pos = may_be_true(self.ctx.xp, self.x > 0)
        return self._has_pos

    def is_zero(self, key: str) -> bool:
        """True when the modified input is zero everywhere (its term contributes nothing)."""
        return (key == "x-" and not self.has_neg()) or (key == "x+" and not self.has_pos())

    def get(self, key: str) -> Array | None:
        """The modified input; None stands for a tensor of ones (no multiplication needed)."""
        if key == "x" or (key == "x+" and not self.has_neg()):
            return self.x
        if key == "ones":
            return None
        if key not in self._made:
            xp = self.ctx.xp
            if key == "x+":
                self._made[key] = xp.maximum(self.x, 0)
            elif key == "x-":
                self._made[key] = xp.minimum(self.x, 0)
            elif key in ("x-low", "x-high"):
                low, high = self._bounds()
                self._made[key] = self.x - (low if key == "x-low" else high)
            else:
                low, high = self._bounds()
                self._made[key] = low if key == "low" else high
        return self._made[key]

    def _bounds(self) -> tuple[Array, Array]:
        """The Z^B bounds ``(low, high)`` of this layer's input."""
        layer = self.layer
        if layer.inputs[0] not in self.ctx.bounds:
            raise UnsupportedModelError(
                f"node {layer.name!r} (op {layer.op_type}) needs input bounds (low/high) for its input "
                f"{layer.inputs[0]!r}, which cannot be mapped from the model input through the layers "
                "before it"
            )
        return self.ctx.bounds[layer.inputs[0]]


# ---------------------------------------------------------------------------------------------
# the rules


def epsilon(eps: float, stab: str = "sign") -> LinearRule:
    """Epsilon(ε): ``x ⊙ Wᵀ(R / (z + s(z)ε))`` with the bias in ``z``."""
    return LinearRule(f"epsilon({eps:g})", [Group((Term("x", "id"),), "id", SignEpsilon(eps))])


def z_rule() -> LinearRule:
    """Z: ``x ⊙ Wᵀ(R ⊘ z)`` with safe division, bias kept."""
    return LinearRule("z", [Group((Term("x", "id"),), "id", SafeDivide())])


def alpha_beta_innvestigate(alpha: float, beta: float, bias: bool = True) -> LinearRule:
    """iNNvestigate 1.0.8's Alpha-Beta, safe division; with ``bias`` each denominator carries the whole bias."""
    b = "id" if bias else None
    groups = [
        Group((Term("x+", "pos"), Term("x-", "neg")), b, SafeDivide(), coeff=alpha),
    ]
    if beta:
        groups.append(Group((Term("x+", "neg"), Term("x-", "pos")), b, SafeDivide(), coeff=-beta))
    return LinearRule(f"alpha{alpha:g}-beta{beta:g}" + ("" if bias else "-nobias"), groups)


def alpha_beta_zennit(alpha: float, beta: float, stab: float = 1e-6) -> LinearRule:
    """Zennit's AlphaBeta: ``W⁺x⁺ + b⁺ + W⁻x⁻`` and ``W⁻x⁺ + b⁻ + W⁺x⁻``, ε-stabilised."""
    groups = [Group((Term("x+", "pos"), Term("x-", "neg")), "pos", SignEpsilon(stab), coeff=alpha)]
    if beta:
        groups.append(Group((Term("x+", "neg"), Term("x-", "pos")), "neg", SignEpsilon(stab), coeff=-beta))
    return LinearRule(f"alpha{alpha:g}-beta{beta:g}", groups)


def zplus_zennit(stab: float = 1e-6) -> LinearRule:
    """Zennit's Z⁺: denominator ``W⁺x⁺ + b⁺ + W⁻x⁻`` (the negative bias dropped)."""
    rule = alpha_beta_zennit(1.0, 0.0, stab)
    rule.name = "zplus"
    return rule


def gamma_zennit(gamma: float = 0.25, stab: float = 1e-6) -> LinearRule:
    """Zennit's generalised Gamma rule.

    Where the original output ``z`` is positive: denominator ``(W+γW⁺)x⁺ + (b+γb⁺) + (W+γW⁻)x⁻``;
    where it is negative: ``(W+γW⁻)x⁺ + (b+γb⁻) + (W+γW⁺)x⁻``; where it is zero, nothing.
    """
    gp, gm = f"gamma+{gamma!r}", f"gamma-{gamma!r}"
    return LinearRule(
        f"gamma({gamma:g})",
        [
            Group((Term("x+", gp), Term("x-", gm)), gp, SignEpsilon(stab), mask="z>0"),
            Group((Term("x+", gm), Term("x-", gp)), gm, SignEpsilon(stab), mask="z<0"),
        ],
    )


def wsquare(stab: Stabilizer, bias: bool) -> LinearRule:
    """W²: ``(W²)ᵀ(R ⊘ (W² 1 [+ b²]))``, independent of ``x`` (Zennit squares the bias, iNNvestigate drops it)."""
    return LinearRule("w-square", [Group((Term("ones", "sq"),), "sq" if bias else None, stab)])


def flat(stab: Stabilizer) -> LinearRule:
    """Flat: W² with every weight 1 and no bias: relevance spread evenly over the receptive field."""
    return LinearRule("flat", [Group((Term("ones", "ones"),), None, stab)])


def zbox(stab: Stabilizer) -> LinearRule:
    """Z^B (bounded input): ``z = Wx − W⁺l − W⁻h``, ``R_in = x⊙Wᵀs − l⊙W⁺ᵀs − h⊙W⁻ᵀs``, no bias.

    Computed in the equal form ``z = W⁺(x − l) + W⁻(x − h)``, ``R_in = (x − l)⊙W⁺ᵀs + (x − h)⊙W⁻ᵀs``:
    both parts of ``z`` are ≥ 0, so nothing cancels, and an input at its bound (the default bounds
    are each sample's own minimum and maximum) gets exactly 0 where the three-product form left
    float32 rounding noise amplified by ``1/z`` — noise that even depended on the batch size.
    """
    return LinearRule("z-box", [Group((Term("x-low", "pos"), Term("x-high", "neg")), None, stab)])
