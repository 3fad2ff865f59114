"""Composites: which rule each layer gets.

A composite maps a layer to a rule from its kind (see :class:`onnxlrp.ops.Layer`) and, for
linear layers, from its position (the first linear layers seen from the input), its type
(convolution or fully-connected) and whether a ReLU follows it. The seed's presets follow
iNNvestigate 1.0.8 (safe division, bias kept); the Zennit composites follow Zennit 0.5
(every denominator ε-stabilised with 1e-6, Zennit's forms of Z⁺/Alpha-Beta/Gamma).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .ops.base import Layer
from .ops.linear import ConvLayer, LinearLayer
from .rules import (
    BatchNormZ,
    DeconvReLU,
    GateToSignal,
    Gradient,
    GuidedReLU,
    NormEpsilon,
    Pass,
    ProductHoldConstant,
    ProductUniform,
    Rule,
    SafeDivide,
    SignEpsilon,
    SoftmaxRule,
    Stabilizer,
    StopRule,
    ZNorm,
    alpha_beta_innvestigate,
    alpha_beta_zennit,
    epsilon,
    flat,
    gamma_zennit,
    wsquare,
    zbox,
    zplus_zennit,
)

GRADIENT = Gradient()
PASS = Pass()


def transformer_rules(stab: Stabilizer) -> dict[str, Rule]:
    """LXT's AttnLRP rules for the transformer kinds, used by every LRP composite that has no rule of its own
    for them: ``product`` the uniform rule, ``softmax`` AttnLRP's softmax rule, ``norm`` the ε-rule with the
    normalising scale held constant (each denominator stabilised by ``stab``)."""
    return {"product": ProductUniform(stab), "softmax": SoftmaxRule(stab), "norm": NormEpsilon(stab)}


@dataclass
class Composite:
    """A rule for every layer: ``linear(layer)`` for Conv/Gemm/MatMul, ``by_kind`` for the rest.

    ``relu`` (optional) overrides the rule of ReLU-like activations (guided backprop,
    deconvnet). Kinds not in ``by_kind`` get the gradient.
    """

    name: str
    linear: Callable[[LinearLayer], Rule]
    by_kind: dict[str, Rule] = field(default_factory=dict)
    relu: Rule | None = None
    needs_bounds: bool = False

    def rule_for(self, layer: Layer) -> Rule:
        """The rule this composite gives ``layer``."""
        if isinstance(layer, LinearLayer):
            return self.linear(layer)
        if self.relu is not None and layer.kind == "activation" and getattr(layer, "relu_like", False):
            return self.relu
        return self.by_kind.get(layer.kind, GRADIENT)


def gradient() -> Composite:
    """Every layer: its vector-Jacobian product (the plain gradient)."""
    return Composite("gradient", lambda layer: GRADIENT)


def guided_backprop() -> Composite:
    """The gradient, with ReLU-like activations passing back only positive gradient at positive input."""
    return Composite("guided_backprop", lambda layer: GRADIENT, relu=GuidedReLU())


def deconvnet() -> Composite:
    """The gradient, with ReLU-like activations passing back the positive part of the gradient."""
    return Composite("deconvnet", lambda layer: GRADIENT, relu=DeconvReLU())


# ---------------------------------------------------------------------------------------------
# the seed's presets (iNNvestigate 1.0.8 semantics)

_INN_OTHER = {
    "activation": PASS,
    "affine": PASS,
    "batchnorm": BatchNormZ(),
    "gate": GateToSignal(),
    "quotient": GateToSignal(),
    "add": ZNorm(SafeDivide()),
    "avgpool": ZNorm(SafeDivide()),
    **transformer_rules(SafeDivide()),
}


def bounded_deep_taylor(bias: bool = False) -> Composite:
    """The seed's ``LRP``: iNNvestigate's BoundedDeepTaylor.

    First linear layers: Z^B; the classifier layer (the linear layer that computes the
    output): W²; every other linear layer: Alpha-Beta(1, 0) — without the bias (DTD's z⁺ rule)
    unless ``bias=True`` (iNNvestigate 1.0.8's form, which divides by near-zero or negative
    denominators once BatchNorm has been folded into the biases). Activations, pools, sums: the
    gradient. BatchNorm and constant scalings: relevance passes unchanged. Gates: to the signal.
    """
    zb, w2 = zbox(SafeDivide()), wsquare(SafeDivide(), bias=False)
    ab = alpha_beta_innvestigate(1.0, 0.0) if bias else alpha_beta_innvestigate(1.0, 0.0, bias=False)

    def linear(layer: LinearLayer) -> Rule:
        if layer.first:
            return zb
        return w2 if layer.classifier and not layer.followed_by_relu else ab

    return Composite(
        "lrp",
        linear,
        {"affine": PASS, "batchnorm": PASS, "gate": GateToSignal(), "quotient": GateToSignal(),
         **transformer_rules(SafeDivide())},
        needs_bounds=True,
    )


def lrp_preset(conv_rule: Rule, name: str, dense_eps: float = 0.1) -> Composite:
    """iNNvestigate's sequential presets, flat variant: first linear Flat, convs ``conv_rule``, dense Epsilon."""
    fl, eps = flat(SafeDivide()), epsilon(dense_eps)

    def linear(layer: LinearLayer) -> Rule:
        if layer.first:
            return fl
        return conv_rule if isinstance(layer, ConvLayer) else eps

    return Composite(name, linear, dict(_INN_OTHER))


def lrp_preset_a(bias: bool = True) -> Composite:
    """LRP preset A flat: Flat / Alpha-Beta(1, 0) on convolutions / Epsilon(0.1) on dense layers.

    ``bias=False`` drops the bias from the Alpha-Beta denominators (advisable on networks with
    BatchNorm folded into the convolutions, where the with-bias denominators cross zero).
    """
    return lrp_preset(alpha_beta_innvestigate(1.0, 0.0, bias), "lrp_preset_a")


def lrp_preset_b(bias: bool = True) -> Composite:
    """LRP preset B flat: Flat / Alpha-Beta(2, 1) on convolutions / Epsilon(0.1) on dense layers (``bias`` as A)."""
    return lrp_preset(alpha_beta_innvestigate(2.0, 1.0, bias), "lrp_preset_b")


def lrp_epsilon(eps: float = 1e-7) -> Composite:
    """Epsilon(ε) on every linear layer (the seed's LRPE: ε = 1e-7)."""
    rule = epsilon(eps)
    return Composite("lrp_epsilon", lambda layer: rule, dict(_INN_OTHER))


# ---------------------------------------------------------------------------------------------
# Zennit's composites


def _zennit_other(stab: float) -> dict[str, Rule]:
    norm = ZNorm(SignEpsilon(stab))
    # Zennit hooks activations (Pass), BatchNorm (Pass), sums and average pools (Norm); every
    # other op — max pooling, gates, constant scalings, reshapes — keeps its gradient.
    # Zennit has no rules for attention: products, softmax and norms get LXT's (transformer_rules).
    return {"activation": PASS, "batchnorm": PASS, "add": norm, "avgpool": norm, **transformer_rules(SignEpsilon(stab))}


def epsilon_plus_flat(epsilon_: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Zennit's EpsilonPlusFlat: first linear Flat, convolutions Z⁺, dense Epsilon(1e-6)."""
    fl, zp, eps = flat(SignEpsilon(stabilizer)), zplus_zennit(stabilizer), epsilon(epsilon_)

    def linear(layer: LinearLayer) -> Rule:
        if layer.first:
            return fl
        return zp if isinstance(layer, ConvLayer) else eps

    return Composite("epsilon_plus_flat", linear, _zennit_other(stabilizer))


def epsilon_alpha2_beta1_flat(epsilon_: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Zennit's EpsilonAlpha2Beta1Flat: first linear Flat, convolutions Alpha-Beta(2, 1), dense Epsilon."""
    fl, ab, eps = flat(SignEpsilon(stabilizer)), alpha_beta_zennit(2.0, 1.0, stabilizer), epsilon(epsilon_)

    def linear(layer: LinearLayer) -> Rule:
        if layer.first:
            return fl
        return ab if isinstance(layer, ConvLayer) else eps

    return Composite("epsilon_alpha2_beta1_flat", linear, _zennit_other(stabilizer))


def epsilon_gamma_box(gamma: float = 0.25, epsilon_: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Zennit's EpsilonGammaBox: first convolution Z^B(low, high), convolutions Gamma(0.25), dense Epsilon."""
    zb, gm, eps = zbox(SignEpsilon(stabilizer)), gamma_zennit(gamma, stabilizer), epsilon(epsilon_)

    def linear(layer: LinearLayer) -> Rule:
        if isinstance(layer, ConvLayer):
            return zb if layer.first else gm
        return eps

    return Composite("epsilon_gamma_box", linear, _zennit_other(stabilizer), needs_bounds=True)


# ---------------------------------------------------------------------------------------------
# transformers: LXT 2.1's AttnLRP and CP-LRP


def _lxt_other(stab: Stabilizer) -> dict[str, Rule]:
    """The ε-rule on every weight-free linear map (sums, averages, constant scale/shift, unfolded BatchNorm),
    the identity rule on activations, re-indexing and max pooling by their gradient."""
    z = ZNorm(stab)
    return {"activation": PASS, "affine": z, "batchnorm": z, "add": z, "avgpool": z, "norm": NormEpsilon(stab),
            "quotient": GateToSignal()}


def attnlrp(eps: float = 1e-9) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024) as LXT 2.1 computes it.

    Every linear layer (Conv, Gemm, MatMul by a weight) and every weight-free linear map (residual
    sums, averages, constant scalings and shifts such as position embeddings): Epsilon(ε), bias kept.
    Norms: ε-rule with the normalising scale held constant. Element-wise activations (GELU, SiLU,
    …): identity. Softmax: ``x ⊙ (R − s ΣR)``. Products of two activations (``Q·Kᵀ``, ``A·V``,
    gated units such as SwiGLU's ``SiLU(W₁x) ⊙ W₂x``): the uniform rule (ε-rule, half to each factor).

    Gates (a ``Mul`` by a broadcast or sigmoid-like factor: squeeze-excitation, GLU, DFC attention):
    all relevance to the signal — the signal-take-all rule of LRP for multiplicative gates (Arras et
    al., 2017). LXT has no rule for them: its uniform rule is for products of two signals, whose
    identity-ruled activations (GELU, SiLU: ``f(0) = 0``) keep relevance proportional to the
    activation. A sigmoid gate has ``σ(0) = ½``: the identity rule hands relevance of the size of
    ``R`` to a pre-activation ``z ≈ 0``, and the ε-rule of the linear layer that computes ``z``
    divides it by ``z``; on the coverage zoo's SE networks the uniform split multiplied the total
    relevance by 1e5–1e12 (docs/methods.md).
    """
    stab = SignEpsilon(eps)
    rule = epsilon(eps)
    other = _lxt_other(stab) | {"softmax": SoftmaxRule(stab), "product": ProductUniform(stab),
                                "gate": GateToSignal()}
    return Composite("attnlrp", lambda layer: rule, other)


def cp_lrp(eps: float = 1e-9) -> Composite:
    """CP-LRP (Ali et al., ICML 2022) as LXT 2.1 computes it: AttnLRP's rules, except that the attention
    weights are constants — no relevance into a Softmax, the factor of a product that comes from a Softmax held
    constant (``A·V``: all relevance to ``V``), and a gate held constant (all relevance to the signal)."""
    stab = SignEpsilon(eps)
    rule = epsilon(eps)
    other = _lxt_other(stab) | {"softmax": StopRule(), "product": ProductHoldConstant(stab), "gate": GateToSignal()}
    return Composite("cp_lrp", lambda layer: rule, other)
