"""Property tests: every method on random small ONNX classifiers (hypothesis).

A strategy draws small valid classifiers — chains and DAGs of Conv (random kernel, stride,
asymmetric pads, dilation, groups), BatchNormalization (folded or standalone), Relu / LeakyRelu /
Clip / Sigmoid / Tanh, MaxPool / AveragePool, residual Add, Concat, Mul by a constant, Pad,
Transpose, then GlobalAveragePool / Flatten / Reshape, Gemm / MatMul layers and a Gemm or MatMul
classifier — with random float32 weights and random inputs of moderate magnitude. The properties
(each with the tolerance it is held to):

* **finiteness** — every heatmap of every method is finite;
* **determinism** — the same call twice gives bit-identical maps;
* **batch invariance** — explaining a batch equals explaining its samples one by one
  (``max|Δ| ≤ 1e-5·max|map|``; SmoothGrad draws the same noise for every sample);
* **targets** — ``targets=[a, b]`` equals the two single-target calls (same tolerance);
* **conservation where docs/methods.md promises it** — on bias-free graphs: ``lrp_epsilon``
  (ε = 1e-9) and, on ReLU graphs with positive inputs, Zennit's ``epsilon_plus_flat`` and
  ``epsilon_gamma_box`` sum to the target logit ``y_t``; CLRP/SGLRP maps sum to 0; on
  piecewise-linear, positively homogeneous graphs (bias-free, ReLU/LeakyRelu, zero padding)
  ``input_x_gradient`` and ``integrated_gradients`` (baseline 0) sum to ``y_t`` (Euler's theorem:
  the gradient is constant along the ray). Tolerance ``|Σh − target| ≤ 1e-4·Σ|h|`` (float32
  rounding of sums whose terms may cancel);
* **gradient exactness** — ``gradient`` equals a float64 central finite difference of the same
  network (ONNX's reference evaluator on a float64 copy) to ``1e-4·max|∂|``, on the coordinates
  where no ReLU / max-pool / clip kink lies within the step (the two one-sided differences agree);
* **extreme magnitudes** — inputs of magnitude up to 1e30 give a finite map or an
  :class:`OnnxLrpError`, never NaN/inf.

Settings are derandomized (the same examples every run) and sized so that the file runs in about
a minute on two cores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import helpers_onnx as H
import numpy as np
import onnx
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from onnxlrp import Explainer, OnnxLrpError, list_methods  # noqa: E402

BATCH_TOL = 1e-5  # batch / targets: float32 rounding of differently ordered sums
SUM_TOL = 1e-4  # conservation: relative to Σ|h|
GRAD_TOL = 1e-4  # gradient vs float64 finite differences: relative to max|∂|
FD_STEP = 1e-5

# the options that keep the sampling methods cheap (and SmoothGrad reproducible)
OPTIONS: dict[str, dict[str, object]] = {
    "smoothgrad": {"n_samples": 3, "noise_scale": 0.3, "seed": 7},
    "integrated_gradients": {"steps": 4},
}
CAM = ("gradcam", "guided_gradcam")

ACTS_ALL = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh")
ACTS_PL = ("Relu", "LeakyRelu")  # piecewise linear and positively homogeneous
ACTS_ZERO = ("Relu", "LeakyRelu", "Clip", "Tanh")  # f(0) = 0


# ---------------------------------------------------------------------------------------------
# the random classifiers


@dataclass
class Case:
    """One generated classifier and its input batch."""

    model: onnx.ModelProto
    shape: tuple[int, ...]  # one sample's input shape
    logits: str
    classes: int
    x: np.ndarray  # (N,) + shape, float32
    spatial: bool  # some feature map has a spatial extent > 1 (Grad-CAM has a default layer)
    ops: list[str] = field(default_factory=list)  # a readable trace, for failure reports
    kernels: str = "auto"  # the backward's convolutions: onnxruntime's ("auto") or the array kernels (the GPU's code)

    def explainer(self) -> Explainer:
        """An Explainer of this model on the CPU (one onnxruntime thread)."""
        return Explainer(self.model, device="cpu", threads=1, kernels=self.kernels)


def _out_size(n: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool = False) -> int:
    span = n + pb + pe - d * (k - 1) - 1
    return (math.ceil(span / s) if ceil else span // s) + 1 if span >= 0 else 0


class _Gen:
    """Draws one classifier op by op, tracking the current tensor and its shape."""

    def __init__(self, draw: st.DrawFn, bias: bool, acts: Sequence[str], const_mul: bool, pad_value: bool,
                 standalone_bn: bool, branch_act: bool, seed: int) -> None:
        self.draw, self.bias, self.acts, self.branch_act = draw, bias, tuple(acts), branch_act
        self.const_mul, self.pad_value, self.standalone_bn = const_mul, pad_value, standalone_bn
        self.b = H.Builder(seed)
        self.rng = self.b.rng
        self.trace: list[str] = []
        self.spatial = False

    # -- pieces
    def act(self, x: str) -> str:
        kind = self.draw(st.sampled_from(self.acts))
        self.trace.append(kind)
        if kind == "LeakyRelu":
            return self.b.op("LeakyRelu", [x], alpha=self.draw(st.sampled_from([0.01, 0.1, 0.3])))  # type: ignore[return-value]
        if kind == "Clip":
            return self.b.op("Clip", [x, self.b.const(np.float32(0.0)), self.b.const(np.float32(6.0))])  # type: ignore[return-value]
        return self.b.op(kind, [x])  # type: ignore[return-value]

    def bn_params(self, c: int) -> list[str]:
        """BatchNorm (γ > 0); without bias ``μ = β = 0``, so that BN is exactly a scaling (a shift
        ``β − μγ/σ`` that is zero only in exact arithmetic leaves ~1e-8 in float32)."""
        r = self.rng
        gamma, var = r.uniform(0.5, 1.5, c), r.uniform(0.5, 1.5, c)
        mean, beta = (r.uniform(-0.3, 0.3, c), r.uniform(-0.3, 0.3, c)) if self.bias else (np.zeros(c), np.zeros(c))
        return [self.b.const(p.astype(np.float32), "bn") for p in (gamma, beta, mean, var)]

    def conv(self, x: str, shape: tuple[int, int, int], cout: int | None = None,
             same: bool = False) -> tuple[str, tuple[int, int, int]]:
        c, h, w = shape
        d = self.draw
        if cout is None:
            cout = d(st.integers(1, 4))
        if same:
            k = d(st.sampled_from([1, 3]))
            s, dil, pads = 1, 1, [k // 2] * 4
        else:
            k = d(st.integers(1, 3))
            s, dil = d(st.integers(1, 2)), d(st.integers(1, 2))
            pads = [d(st.integers(0, k - 1)) for _ in range(4)] if k > 1 else [0] * 4
        oh = _out_size(h, k, s, dil, pads[0], pads[2])
        ow = _out_size(w, k, s, dil, pads[1], pads[3])
        if oh < 1 or ow < 1:
            k, s, dil, pads = 1, 1, 1, [0, 0, 0, 0]
            oh, ow = h, w
        divisors = [g for g in range(1, c + 1) if c % g == 0]
        group = 1 if same else d(st.sampled_from(divisors))
        if group > 1:
            cout = group * d(st.integers(1, 2))
        self.trace.append(f"Conv(k{k} s{s} d{dil} p{pads} g{group} ->{cout})")
        y = self.b.conv(x, c, cout, [k, k], group=group, bias=self.bias, strides=[s, s], dilations=[dil, dil],
                        pads=pads)
        if d(st.booleans()):
            self.trace.append("BN")
            y = self.b.op("BatchNormalization", [y] + self.bn_params(cout), epsilon=1e-3)  # type: ignore[assignment]
        return y, (cout, oh, ow)

    def pool(self, x: str, shape: tuple[int, int, int]) -> tuple[str, tuple[int, int, int]]:
        c, h, w = shape
        d = self.draw
        kind = d(st.sampled_from(["MaxPool", "AveragePool"]))
        k = d(st.integers(2, 3))
        s = d(st.integers(1, 2))
        pads = [d(st.integers(0, 1)) for _ in range(4)]
        attrs: dict[str, object] = {"kernel_shape": [k, k], "strides": [s, s], "pads": pads}
        dil, ceil = 1, False
        if kind == "MaxPool":
            dil = d(st.integers(1, 2))
            attrs["dilations"] = [dil, dil]
        else:
            attrs["count_include_pad"] = d(st.integers(0, 1))
        if pads == [0, 0, 0, 0] and d(st.booleans()):
            ceil = True
            attrs["ceil_mode"] = 1
        oh = _out_size(h, k, s, dil, pads[0], pads[2], ceil)
        ow = _out_size(w, k, s, dil, pads[1], pads[3], ceil)
        if oh < 1 or ow < 1:
            return x, shape
        self.trace.append(f"{kind}({attrs})")
        return self.b.op(kind, [x], **attrs), (c, oh, ow)  # type: ignore[return-value]

    def block(self, x: str, shape: tuple[int, int, int]) -> tuple[str, tuple[int, int, int]]:
        d = self.draw
        kinds = ["conv", "conv", "pool", "residual", "concat", "pad", "transpose"]
        if self.const_mul:
            kinds.append("mul")
        if self.standalone_bn:
            kinds.append("bn")
        kind = d(st.sampled_from(kinds))
        c, h, w = shape
        if kind == "conv":
            y, shape = self.conv(x, shape)
            return self.act(y), shape
        if kind == "pool":
            return self.pool(x, shape)
        if kind == "residual":
            self.trace.append("residual[")
            y, _ = self.conv(x, shape, cout=c, same=True)
            y = self.act(y)
            y, _ = self.conv(y, shape, cout=c, same=True)
            if self.branch_act:
                y = self.act(y)
            self.trace.append("]Add")
            return self.act(self.b.op("Add", [y, x])), shape  # type: ignore[list-item,arg-type]
        if kind == "concat":
            self.trace.append("concat[")
            ya, sa = self.conv(x, shape, same=True)
            yb, sb = self.conv(x, shape, same=True)
            self.trace.append("]Concat")
            y = self.b.op("Concat", [self.act(ya), self.act(yb)], axis=1)
            return y, (sa[0] + sb[0], h, w)  # type: ignore[return-value]
        if kind == "pad":
            pads = [0, 0, d(st.integers(0, 1)), d(st.integers(0, 1)), 0, 0, d(st.integers(0, 1)), d(st.integers(0, 1))]
            value = d(st.sampled_from([0.0, 0.5])) if self.pad_value else 0.0
            self.trace.append(f"Pad({pads}, {value})")
            y = self.b.op("Pad", [x, self.b.ints(pads), self.b.const(np.float32(value))])
            return y, (c, h + pads[2] + pads[6], w + pads[3] + pads[7])  # type: ignore[return-value]
        if kind == "transpose":
            self.trace.append("Transpose(HW)")
            return self.b.op("Transpose", [x], perm=[0, 1, 3, 2]), (c, w, h)  # type: ignore[return-value]
        if kind == "mul":
            per_channel = d(st.booleans())
            value = self.rng.uniform(0.5, 2.0, (c, 1, 1) if per_channel else ()) * d(st.sampled_from([1.0, -1.0]))
            self.trace.append(f"Mul({'per-channel' if per_channel else 'scalar'})")
            return self.b.op("Mul", [x, self.b.const(np.asarray(value, np.float32))]), shape  # type: ignore[return-value]
        assert kind == "bn"
        self.trace.append("BN(standalone)")
        return self.b.op("BatchNormalization", [x] + self.bn_params(c), epsilon=1e-3), shape  # type: ignore[return-value]

    def dense(self, x: str, fin: int, fout: int) -> str:
        if self.draw(st.booleans()):
            self.trace.append(f"Gemm({fin}->{fout})")
            return self.b.gemm(x, fin, fout, trans_b=self.draw(st.integers(0, 1)), bias=self.bias)
        self.trace.append(f"MatMul({fin}->{fout})")
        y = self.b.op("MatMul", [x, self.b.const(self.b.weight([fin, fout], fin), "W")])
        if self.bias:
            y = self.b.op("Add", [y, self.b.const(self.b.bias(fout), "B")])
        return y  # type: ignore[return-value]


@st.composite
def cases(draw: st.DrawFn, bias: bool | None = None, acts: Sequence[str] = ACTS_ALL, const_mul: bool = True,
          pad_value: bool = True, standalone_bn: bool = True, positive: bool = False, branch_act: bool = False,
          scale: float | None = None, batch: int = 3) -> Case:
    """A random small classifier and an input batch (see the module docstring).

    ``bias=False``: no biases and BatchNorm without shift; ``acts``: the activations drawn from;
    ``const_mul``/``pad_value``/``standalone_bn``: whether Mul by a constant, Pad with a nonzero value,
    a standalone BatchNorm may appear; ``branch_act``: a residual branch ends with an activation
    (else its last convolution feeds the Add directly); ``positive``: inputs in (0.05, 1)·scale, else
    normal·scale; ``scale``: drawn from 0.3, 1, 3 unless given.
    """
    if bias is None:
        bias = draw(st.booleans())
    gen = _Gen(draw, bias, acts, const_mul, pad_value, standalone_bn, branch_act, draw(st.integers(0, 2**16)))
    shape: tuple[int, ...]
    if draw(st.integers(0, 4)) == 0:
        # tabular: [N, F] through dense layers only
        feat = draw(st.integers(2, 8))
        shape, y = (feat,), "x"
        gen.trace.append(f"tabular({feat})")
    else:
        c, h, w = draw(st.integers(1, 3)), draw(st.integers(4, 8)), draw(st.integers(4, 8))
        shape = (c, h, w)
        # the first layer is a convolution (the usual image classifier); blocks follow
        y, cur = gen.conv("x", (c, h, w))
        y = gen.act(y)
        for _ in range(draw(st.integers(0, 3))):
            y, cur = gen.block(y, cur)
        gen.spatial = True  # the first convolution's output is at least 2×2
        head = draw(st.sampled_from(["gap", "flatten", "reshape"]))
        gen.trace.append(head)
        if head == "gap":
            y = gen.b.op("Flatten", [gen.b.op("GlobalAveragePool", [y])])  # type: ignore[assignment,list-item]
            feat = cur[0]
        else:
            y = gen.b.op("Flatten", [y]) if head == "flatten" else gen.b.op("Reshape", [y, gen.b.ints([0, -1])])  # type: ignore[assignment]
            feat = cur[0] * cur[1] * cur[2]
    for _ in range(draw(st.integers(0, 2)) + (1 if len(shape) == 1 else 0)):
        hidden = draw(st.integers(2, 6))
        y = gen.act(gen.dense(y, feat, hidden))
        feat = hidden
    classes = draw(st.integers(2, 5))
    logits = gen.dense(y, feat, classes)
    model = gen.b.model([None, *shape], [(logits, H.FLOAT)], 17)
    onnx.checker.check_model(model)
    if scale is None:
        scale = draw(st.sampled_from([0.3, 1.0, 3.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if positive:
        xs = rng.uniform(0.05, 1.0, (batch, *shape)) * scale
    else:
        xs = rng.standard_normal((batch, *shape)) * scale
    kernels = draw(st.sampled_from(["auto", "array"]))
    return Case(model, shape, logits, classes, xs.astype(np.float32), gen.spatial, gen.trace, kernels)


def _describe(case: Case) -> None:
    note(f"input {list(case.shape)}, {case.classes} classes, kernels={case.kernels}, ops: {' '.join(case.ops)}")


SETTINGS = {"deadline": None, "derandomize": True, "print_blob": True}


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    """``max|got − ref| / max|ref|`` (exact comparison when ``ref`` is all zero)."""
    return H.rel_err(got, ref)


def _floor(method: str, logits: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-sample absolute noise floor ``(N,)`` of a map: 0, except for the contrastive methods.

    CLRP/SGLRP subtract a rescaled dual pass from the target pass; where the two passes are
    proportional (e.g. a single live unit carries all relevance) the exact map is 0 and float32
    leaves rounding noise of ~ε₃₂ × the passes' size. The passes are of the size of the start
    relevance (``max(y_t, 0)``; SGLRP ``p_t(1−p_t)``), so 1e-7 × start is the floor below which a
    map is numerical zero. ``sglrp_seq_a/b`` start from ``p_t(1−p_t) + 1e-8`` at t and ``−p_t p_i``
    elsewhere — a start that sums to 1e-8 — so with two nearly tied classes the two flows cancel
    in the same way (measured: maps of 3e-5 from flows of 1e-2, batch and single call 1.4e-9
    apart); its floor is 1e-7 × Σ|start|.
    """
    n = np.arange(logits.shape[0])
    if method in ("sglrp_seq_a", "sglrp_seq_b"):
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return 1e-7 * 2 * p[n, t] * (1 - p[n, t])
    if method == "clrp":
        return 1e-7 * np.maximum(logits[n, t], 0)
    if method == "sglrp":
        p = np.exp(np.maximum(logits, 0) - np.maximum(logits, 0).max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return 1e-7 * p[n, t] * (1 - p[n, t])
    return np.zeros(logits.shape[0])


def _close(got: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> bool:
    """``max|got − ref| ≤ BATCH_TOL·max|ref| + floor``."""
    diff = float(np.max(np.abs(got.astype(np.float64) - ref)))
    return diff <= BATCH_TOL * float(np.max(np.abs(ref))) + floor


def _targets(ex: Explainer, x: np.ndarray) -> np.ndarray:
    """Each sample's two best classes, ``(2, N)`` (positive logits keep the seed's LRP maps nonzero)."""
    return np.argsort(ex.predict(x), axis=1)[:, ::-1][:, :2].T.copy()


# ---------------------------------------------------------------------------------------------
# finiteness, determinism, batch invariance, several targets — every method


@settings(max_examples=25, **SETTINGS)
@given(case=cases())
def test_every_method_is_finite_deterministic_batch_invariant_and_target_linear(case: Case) -> None:
    _describe(case)
    ex = case.explainer()
    x = case.x
    logits = ex.predict(x)
    assert np.all(np.isfinite(logits))
    tg = _targets(ex, x)
    for method in list_methods():
        opts = OPTIONS.get(method, {})
        if method in CAM and not case.spatial:
            with pytest.raises(OnnxLrpError):
                ex.explain(x, target=tg[0], method=method, **opts)
            continue
        heat = ex.explain(x, target=tg[0], method=method, **opts)
        assert heat.shape == x.shape and heat.dtype == np.float32
        assert np.all(np.isfinite(heat)), method
        # determinism: the same call twice, bit for bit
        np.testing.assert_array_equal(heat, ex.explain(x, target=tg[0], method=method, **opts), err_msg=method)
        # batch invariance: the batch equals its samples one by one
        floor = _floor(method, logits, tg[0])
        for n in range(x.shape[0]):
            one = ex.explain(x[n:n + 1], target=int(tg[0, n]), method=method, **opts)
            assert _close(heat[n], one[0], floor[n]), (method, n, _rel(heat[n], one[0]))
        # targets=[a, b] equals two single-target calls (here: each sample's two best classes)
        multi = ex.explain(x, targets=tg, method=method, **opts)
        assert multi.shape == (2, *x.shape)
        second = ex.explain(x, target=tg[1], method=method, **opts)
        for i, single in enumerate((heat, second)):
            floor = _floor(method, logits, tg[i])
            for n in range(x.shape[0]):
                assert _close(multi[i, n], single[n], floor[n]), (method, i, n, _rel(multi[i, n], single[n]))


# ---------------------------------------------------------------------------------------------
# conservation, where docs/methods.md promises it


def _sum_gap(heat: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per map ``|Σh − want| / Σ|h|`` (0 for an all-zero map that should sum to 0)."""
    flat = heat.reshape(heat.shape[0], -1).astype(np.float64)
    gap = np.abs(flat.sum(1) - want)
    scale = np.abs(flat).sum(1)
    return np.where(scale > 0, gap / np.where(scale > 0, scale, 1), np.where(gap > 0, np.inf, 0))


@settings(max_examples=50, **SETTINGS)
@given(case=cases(bias=False, acts=ACTS_ZERO, pad_value=False, standalone_bn=False))
def test_lrp_epsilon_sums_to_the_logit_on_bias_free_graphs(case: Case) -> None:
    """Epsilon(ε → 0) on every linear layer, proportional splits and pass-through elsewhere: Σh = y_t.

    Bias-free means every layer maps 0 to 0: no Sigmoid (σ(0) = ½ is a bias in disguise — after a
    dead layer it feeds the logit while the relevance reaching it meets only zero inputs below).
    BatchNorm is folded into its convolution here; a standalone one gets iNNvestigate's rule, whose
    own fixed stabiliser 1e-7 on ``(x − μ)·y`` (quadratic in the activation, untouched by ``epsilon``)
    keeps up to ~1e-7/(k·x²) of the relevance of small activations (measured: 4.5e-4 of y_t on a net
    whose activations are ~1e-2)."""
    _describe(case)
    ex = case.explainer()
    logits = ex.predict(case.x).astype(np.float64)
    for t in range(case.classes):
        heat = ex.explain(case.x, target=t, method="lrp_epsilon", epsilon=1e-9)
        gap = _sum_gap(heat, logits[:, t])
        assert np.all(gap <= SUM_TOL), (t, gap, logits[:, t])


@settings(max_examples=50, **SETTINGS)
@given(case=cases(bias=False, acts=("Relu",), const_mul=False, pad_value=False, positive=True, branch_act=True,
                  scale=300.0))
def test_zennit_composites_sum_to_the_logit_on_bias_free_relu_graphs(case: Case) -> None:
    """EpsilonPlusFlat (Flat, Z⁺, ε) and EpsilonGammaBox (Z^B, Gamma, ε) conserve on bias-free ReLU nets
    with positive inputs where every convolution is followed by a ReLU: every hidden layer sees ``x ≥ 0``,
    relevance reaches only units with ``z > 0`` (so ``z⁺ ≥ z > 0``), and the Z^B box strictly contains
    ``x``. (A convolution feeding a residual Add directly can receive relevance at a negative unit whose
    ``W⁺x`` is 0: Z⁺ drops it, by definition.)

    Every Zennit denominator carries ε = 1e-6, which keeps ~ε/|z| of a unit's relevance; the net is
    positively homogeneous, so inputs of a few hundred make every ``z`` large against ε without
    changing float32's relative rounding (or any rule's choice)."""
    _describe(case)
    ex = case.explainer()
    logits = ex.predict(case.x).astype(np.float64)
    high = float(case.x.max()) * 2
    # the dense layers' Epsilon(1e-6) keeps ε/(|y_t| + ε) of the classifier's relevance: only targets
    # whose logits are large enough for that to stay below the tolerance are checked
    checked = [t for t in range(case.classes) if np.all(np.abs(logits[:, t]) >= 1e-6 / (SUM_TOL / 4))]
    assume(checked)
    for t in checked:
        for method, opts in (("epsilon_plus_flat", {}), ("epsilon_gamma_box", {"low": 0.0, "high": high})):
            heat = ex.explain(case.x, target=t, method=method, **opts)
            gap = _sum_gap(heat, logits[:, t])
            assert np.all(gap <= SUM_TOL), (method, t, gap, logits[:, t])


@settings(max_examples=50, **SETTINGS)
@given(case=cases())
def test_contrastive_maps_sum_to_zero(case: Case) -> None:
    """CLRP and SGLRP subtract the dual pass rescaled to the target pass's sum: every map sums to 0."""
    _describe(case)
    ex = case.explainer()
    logits = ex.predict(case.x)
    every = list(range(case.classes))
    for method in ("clrp", "sglrp"):
        heat = ex.explain(case.x, targets=every, method=method)
        for t in every:
            flat = heat[t].reshape(case.x.shape[0], -1).astype(np.float64)
            floor = _floor(method, logits, np.full(case.x.shape[0], t)) * flat.shape[1]
            assert np.all(np.abs(flat.sum(1)) <= SUM_TOL * np.abs(flat).sum(1) + floor), (method, t, flat.sum(1))


@settings(max_examples=50, **SETTINGS)
@given(case=cases(bias=False, acts=ACTS_PL, pad_value=False))
def test_gradient_times_input_sums_to_the_logit_on_homogeneous_graphs(case: Case) -> None:
    """Bias-free ReLU/LeakyRelu nets with zero padding are positively homogeneous: ``f(x) = x·∇f(x)``
    (Euler), and the gradient is constant along the ray from 0, so Integrated Gradients from the
    zero baseline is exact with any number of steps."""
    _describe(case)
    ex = case.explainer()
    logits = ex.predict(case.x).astype(np.float64)
    every = list(range(case.classes))
    ixg = ex.explain(case.x, targets=every, method="input_x_gradient")
    ig = ex.explain(case.x, targets=every, method="integrated_gradients", steps=3)
    for t in every:
        for name, heat in (("input_x_gradient", ixg[t]), ("integrated_gradients", ig[t])):
            gap = _sum_gap(heat, logits[:, t])
            assert np.all(gap <= SUM_TOL), (name, t, gap, logits[:, t])


# ---------------------------------------------------------------------------------------------
# the gradient is the derivative


@settings(max_examples=50, **SETTINGS)
@given(case=cases(batch=1))
def test_gradient_equals_float64_finite_differences(case: Case) -> None:
    """``gradient`` against central differences of the float64 twin (ONNX's reference evaluator).

    Where a kink (ReLU, LeakyRelu, Clip, max-pool tie) lies within the step of coordinate i, the
    one-sided differences f₊ and f₋ disagree and the central difference is off by up to
    ``|f₊ − f₋|/2``; that much is allowed on top of the tolerance. Everywhere else the two agree to
    O(h) and the check is ``|∂ − (f(x+h) − f(x−h))/2h| ≤ 1e-4·max|∂|``.
    """
    _describe(case)
    ex = case.explainer()
    every = list(range(case.classes))
    grad = ex.explain(case.x, targets=every, method="gradient").astype(np.float64)[:, 0]  # (C,) + shape
    ref = H.Reference64(case.model, case.logits)
    x = case.x[0].astype(np.float64)
    d = x.size
    eye = np.eye(d).reshape((d, *x.shape)) * FD_STEP
    pts = np.concatenate([x[None], x[None] + eye, x[None] - eye])
    y = ref(pts)  # (1 + 2d, C)
    f0, fp, fm = y[0], y[1:d + 1], y[d + 1:]
    central = ((fp - fm) / (2 * FD_STEP)).T.reshape(grad.shape)
    kink = (np.abs((fp - f0) - (f0 - fm)) / FD_STEP).T.reshape(grad.shape)
    scale = np.abs(central).max(axis=tuple(range(1, central.ndim)), keepdims=True)
    err = np.abs(grad - central)
    allowed = GRAD_TOL * np.maximum(scale, 1e-6) + kink / 2
    assert np.all(err <= allowed), (float((err / np.maximum(scale, 1e-6)).max()), int((err > allowed).sum()))
    # most coordinates are away from kinks (smooth curvature makes |f₊ − f₋|/h ~ h·|f''| only): the
    # allowance does not swallow the check
    assert np.mean(kink <= 1e-2 * np.maximum(scale, 1e-6)) > 0.5, np.mean(kink <= 1e-2 * np.maximum(scale, 1e-6))


# ---------------------------------------------------------------------------------------------
# extreme but valid magnitudes: a finite map or an OnnxLrpError, never NaN/inf


@settings(max_examples=24, **SETTINGS)
@given(case=st.one_of(cases(scale=1.0), cases(scale=1.0, bias=False, acts=ACTS_PL)),
       magnitude=st.sampled_from([1e-42, 1e-30, 1e10, 1e20, 1e30, 1e36]))
def test_extreme_input_magnitudes_give_finite_maps_or_an_error(case: Case, magnitude: float) -> None:
    """Valid float32 inputs from subnormal to 1e36: every method returns a finite map or refuses with an
    :class:`OnnxLrpError` whose message is one line (e.g. logits that overflow to inf)."""
    _describe(case)
    ex = case.explainer()
    x = (case.x * np.float32(magnitude)).astype(np.float32)
    for method in list_methods():
        opts = OPTIONS.get(method, {})
        if method in CAM and not case.spatial:
            continue
        try:
            heat = ex.explain(x, target=0, method=method, **opts)
        except OnnxLrpError as err:
            assert str(err) and "\n" not in str(err), (method, str(err))
            continue
        assert np.all(np.isfinite(heat)), (method, magnitude)


# ---------------------------------------------------------------------------------------------
# unit tests of the engine fixes these properties led to


W_TIE = np.array([0.7, -1.3], np.float32)  # the 1×1 conv's two output channels (one input channel)
W_CLS = np.array([[1.0, 0.5], [-0.5, 1.0], [0.3, -1.0]], np.float32)


def _bound_tie_model() -> onnx.ModelProto:
    """1×1 Conv (weights +0.7, −1.3) on one channel → Sigmoid → GAP → Gemm (no biases).

    Z^B's ``z = W⁺(x − l) + W⁻(x − h)`` of the first channel is exactly 0 at each sample's minimum
    pixel (the default lower bound), that of the second at its maximum pixel, while the relevance
    arriving there (through the sigmoid's gradient from the x-free W² classifier) is not 0.
    """
    b = H.Builder(seed=5)
    h = b.op("Conv", ["x", b.const(W_TIE.reshape(2, 1, 1, 1))], kernel_shape=[1, 1])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [b.op("Sigmoid", [h])])])  # type: ignore[list-item]
    y = b.op("Gemm", [h, b.const(W_CLS)], transB=1)  # type: ignore[list-item]
    return b.model([None, 1, 5, 5], [(y, H.FLOAT)], 17)


def test_zbox_at_the_bound_matches_a_float64_reference() -> None:
    """The seed's ``lrp`` on the tie model against the rules written out in float64.

    The three-product form ``x⊙Wᵀs − l⊙W⁺ᵀs − h⊙W⁻ᵀs`` cancelled ``x·W₀·R/1e-7`` against
    ``l·W₀·R/1e-7`` at the minimum pixel and left noise as large as the relevance itself (which
    also changed with the batch size); ``(x − l)⊙W⁺ᵀs + (x − h)⊙W⁻ᵀs`` is exact there.
    """
    ex = Explainer(_bound_tie_model(), device="cpu", threads=1)
    x = np.random.default_rng(3).standard_normal((4, 1, 5, 5)).astype(np.float32)
    heat = ex.explain(x, target=0, method="lrp")
    x64 = x.astype(np.float64).reshape(4, 1, 25)
    w = W_TIE.astype(np.float64).reshape(1, 2, 1)
    z = w * x64  # (4, 2, 25)
    feat = (1 / (1 + np.exp(-z))).mean(-1)  # (4, 2)
    y0 = feat @ W_CLS[0].astype(np.float64)
    w2 = W_CLS[0].astype(np.float64) ** 2
    r_feat = np.maximum(y0, 0)[:, None] * w2 / w2.sum()  # W² classifier
    sig = 1 / (1 + np.exp(-z))
    r_conv = r_feat[:, :, None] / 25 * sig * (1 - sig)  # GAP and Sigmoid: the gradient
    lo, hi = x64.min(-1, keepdims=True), x64.max(-1, keepdims=True)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    zb = wp * (x64 - lo) + wn * (x64 - hi)
    s_ = r_conv / np.where(zb == 0, 1e-7, zb)
    ref = ((x64 - lo) * (wp * s_).sum(1, keepdims=True) + (x64 - hi) * (wn * s_).sum(1, keepdims=True))
    assert np.any(zb == 0)  # the ties are there
    assert H.rel_err(heat.reshape(4, 1, 25), ref) < 1e-5, H.rel_err(heat.reshape(4, 1, 25), ref)
    for n in range(4):
        one = ex.explain(x[n:n + 1], target=0, method="lrp")
        assert _close(heat[n], one[0]), (n, _rel(heat[n], one[0]))


@pytest.mark.parametrize("method", ["sglrp", "epsilon_gamma_box"])
def test_zbox_ties_are_batch_invariant(method: str) -> None:
    ex = Explainer(_bound_tie_model(), device="cpu", threads=1)
    x = np.random.default_rng(4).standard_normal((4, 1, 5, 5)).astype(np.float32)
    heat = ex.explain(x, target=0, method=method)
    assert np.all(np.isfinite(heat)) and np.all(np.abs(heat.reshape(4, -1)).max(1) > 0)
    for n in range(4):
        one = ex.explain(x[n:n + 1], target=0, method=method)
        assert _close(heat[n], one[0]), (n, _rel(heat[n], one[0]))
