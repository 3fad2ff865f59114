"""The rule template and the non-linear-layer rules.

A rule maps the relevance at a layer's outputs to relevance at its inputs:
``rule(layer, ctx, ins, outs, gouts) -> list`` where ``ins``/``outs`` are the layer's forward
activations (``(N, ...)``) and ``gouts`` the relevances (``(K, N, ...)``, K start relevances
riding in one batch). Every rule is linear in the relevance, which is what lets CLRP/SGLRP's
two passes and many target classes share one backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ops.base import Array, Layer


@dataclass
class RuleContext:
    """Per-call state the rules may read: the array module, input bounds, scratch caches."""

    xp: Any
    bounds: dict[str, tuple[Array, Array]] = field(default_factory=dict)  # tensor → (low, high)
    cache: dict[Any, Array] = field(default_factory=dict)  # x-independent denominators; the plan's, reused
    # layer outputs whose relevance is exactly 0 wherever the output is negative (Plan.vanishing_below_zero): there
    # an ε denominator's sign does not matter and |z| + ε replaces z + sign(z)·ε; each maps to the output of the
    # plain ReLU reading it (max(z, 0), which the next layer reads anyway: it stands in for |z|, so a compiled graph
    # need not keep z and onnxruntime fuses the convolution with its ReLU), or None
    vanishing: dict[str, Array | None] | None = None


class Rule:
    """Base class: a named map from output relevance to input relevance."""

    name = "rule"
    # True when every input's relevance is its forward value times something finite (R_in = x ⊙ c): an input
    # that is 0 receives exactly 0 (ε, Z, Z⁺, Alpha-Beta, Gamma, the Z rule of sums and pools)
    proportional = False

    def __call__(
        self, layer: Layer, ctx: RuleContext, ins: list[Array], outs: list[Array], gouts: list[Array | None]
    ) -> list[Array | None]:
        """Relevance for each of ``layer.inputs`` (None where nothing flows)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


# ---------------------------------------------------------------------------------------------
# stabilisers


class Stabilizer:
    """How a denominator ``z`` is kept away from zero."""

    def __call__(self, xp: Any, z: Array) -> Array:
        """The stabilised denominator."""
        raise NotImplementedError

    def divide(self, xp: Any, g: Array, z: Array) -> Array:
        """``g / stab(z)`` (``g`` may carry extra leading axes); one fused kernel on the GPU."""
        if xp.__name__ == "cupy":
            return _fused_divide(xp, self, g, z)
        return g / self(xp, z)


_FUSED: dict[str, Any] = {}


def _fused_divide(xp: Any, stab: Stabilizer, g: Array, z: Array) -> Array:
    """``g / stab(z)`` as one CuPy elementwise kernel (no temporaries for the denominator)."""
    if isinstance(stab, SafeDivide):
        name, body = "onnxlrp_safe_div", "out = g / (z == (T)0 ? (T)eps : z)"
    else:
        name, body = "onnxlrp_eps_div", "out = g / (z >= (T)0 ? z + (T)eps : z - (T)eps)"
    kernel = _FUSED.get(name)
    if kernel is None:
        kernel = xp.ElementwiseKernel("T g, T z, float64 eps", "T out", body, name)
        _FUSED[name] = kernel
    return kernel(g, z, float(stab.eps))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SafeDivide(Stabilizer):
    """iNNvestigate's safe division: exact zeros become ``eps``, nothing else changes."""

    eps: float = 1e-7

    def __call__(self, xp: Any, z: Array) -> Array:
        """``z + [z == 0]·eps``."""
        d = z.copy()
        d[z == 0] = z.dtype.type(self.eps)
        return d

    def __str__(self) -> str:
        return "safe"


@dataclass(frozen=True)
class SignEpsilon(Stabilizer):
    """The epsilon stabiliser: ``z + s(z)·ε`` with ``s(z) = +1`` for ``z ≥ 0``, else ``−1``."""

    eps: float = 1e-6

    def __call__(self, xp: Any, z: Array) -> Array:
        """``z + s(z)·ε``."""
        # in place and branch-free (a three-array where() is several times slower): adding +0.0
        # turns -0.0 into +0.0, so that copysign gives zeros the sign +1 as the definition says
        d = z + z.dtype.type(0.0)
        xp.copysign(z.dtype.type(self.eps), d, out=d)
        d += z
        return d

    def __str__(self) -> str:
        return f"eps={self.eps:g}"


# ---------------------------------------------------------------------------------------------
# rules for layers without weights


class Gradient(Rule):
    """The plain vector-Jacobian product of the layer."""

    name = "gradient"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """``Jᵀ g``."""
        return layer.vjp(ctx.xp, ins, outs, gouts)


class Pass(Rule):
    """Relevance passes through unchanged (elementwise layers: activations, BatchNorm, scaling)."""

    name = "pass"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """``R_in = R_out``."""
        return [gouts[0]]


class ZNorm(Rule):
    """The Z rule for weight-free linear layers (sums, average pools): ``x ⊙ Jᵀ(R ⊘ stab(y))``.

    Each input receives relevance in proportion to its share of the output.
    """

    proportional = True

    def __init__(self, stabilizer: Stabilizer) -> None:
        self.stabilizer = stabilizer
        self.name = f"z({stabilizer})"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """Proportional split."""
        g = gouts[0]
        if g is None:
            return [None] * len(layer.inputs)
        s = self.stabilizer.divide(ctx.xp, g, outs[0])
        back = layer.vjp(ctx.xp, ins, outs, [s])
        return [None if b is None else x * b for x, b in zip(ins, back, strict=True)]


class GateToSignal(Rule):
    """``signal ⊙ gate``: all relevance goes to the signal, none to the gate."""

    name = "signal-takes-all"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """Relevance to the signal input (summed over broadcast axes if the signal was broadcast)."""
        from ..ops.base import unbroadcast

        g = gouts[0]
        res: list[Array | None] = [None, None]
        if g is not None:
            res[layer.signal_index] = unbroadcast(ctx.xp, g, layer.input_shapes[layer.signal_index])  # type: ignore[attr-defined]
        return res


class BatchNormZ(Rule):
    """iNNvestigate's BatchNorm rule: ``x ⊙ (y − β) ⊙ R ⊘ ((x − μ) ⊙ y)``.

    The denominator gets the epsilon stabiliser (1e-7) and then a safe division, as in
    iNNvestigate 1.0.8. It is the Z rule of the BatchNorm seen as a linear map whose shift
    ``β − μγ/σ`` acts as a bias.
    """

    name = "batchnorm-z"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """Z rule with the BatchNorm's own shift as bias."""
        g = gouts[0]
        if g is None:
            return [None]
        xp = ctx.xp
        # the products of two activations are formed in float64: in float32 they overflow for
        # activations beyond ~1e19 (inf / inf = NaN), while their ratio is of order one
        x, y = ins[0].astype(xp.float64), outs[0].astype(xp.float64)
        num = x * (y - layer.channel(xp, layer.beta))  # type: ignore[attr-defined]
        den = (x - layer.channel(xp, layer.mean)) * y  # type: ignore[attr-defined]
        den = SafeDivide()(xp, SignEpsilon(1e-7)(xp, den))
        return [g * (num / den).astype(g.dtype)]


class GuidedReLU(Rule):
    """Guided backprop at a ReLU: pass back only positive gradient where the input was positive."""

    name = "guided"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """``max(g, 0) ⊙ f'(x)``."""
        g = gouts[0]
        if g is None:
            return [None]
        return layer.vjp(ctx.xp, ins, outs, [ctx.xp.maximum(g, 0)])


class DeconvReLU(Rule):
    """Deconvnet at a ReLU: pass back the positive part of the gradient, ignoring the forward input."""

    name = "deconvnet"

    def __call__(self, layer, ctx, ins, outs, gouts):  # type: ignore[override]
        """``max(g, 0)``."""
        g = gouts[0]
        return [None if g is None else ctx.xp.maximum(g, 0)]
