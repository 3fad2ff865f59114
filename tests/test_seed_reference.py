"""The independent seed reference (``tests/seed_reference.py``) and the engine checked against it.

Part 1 checks the reference on its own (no engine needed): elementary operations, the
rules' conservation properties stated by ``docs/methods.md``, the gradient against finite
differences, the ONNX test model against onnxruntime, and that the engine fixture is well
conditioned in float32.

Part 2 compares ``onnxlrp.Explainer`` with the reference on a small VGG-like ONNX model for
every method, two samples and two targets each: ``max|engine - reference| <= 1e-4 * max|reference|``
per sample. Nothing there is skipped or guarded: it fails if the engine is missing or wrong.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_reference as ref  # noqa: E402

# --------------------------------------------------------------------------------------
# the test network and data
# --------------------------------------------------------------------------------------

IMG = (3, 12, 12)
N_CLASSES = 10
LOW, HIGH = -3.0, 3.0  # Z^B bounds; the inputs are drawn from U(-2, 2)
REL_TOL = 1e-4  # engine (float32) vs reference (float64), relative to max|reference| per sample


def _f32(a: np.ndarray) -> np.ndarray:
    """Round to float32 values, kept as float64 (the ONNX model stores float32)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def make_vgg(seed: int = 0, bias: bool = True, img: tuple[int, int, int] = IMG) -> list[ref.Layer]:
    """A small VGG-like network: [conv relu conv relu pool] [conv relu pool] flatten dense relu dense.

    He-scaled random weights and biases in U(-0.2, 0.2) (some negative) keep values O(1).
    Every parameter is a float32 value so that the ONNX model holds exactly the same network.
    """
    rng = np.random.default_rng(seed)
    c, h, w = img

    def conv(o: int, i: int) -> ref.Layer:
        W = rng.normal(0.0, math.sqrt(2.0 / (9 * i)), (o, i, 3, 3))
        b = rng.uniform(-0.2, 0.2, o) if bias else np.zeros(o)
        return ("conv", _f32(W), _f32(b))

    def dense(o: int, i: int) -> ref.Layer:
        W = rng.normal(0.0, math.sqrt(2.0 / i), (o, i))
        b = rng.uniform(-0.2, 0.2, o) if bias else np.zeros(o)
        return ("dense", _f32(W), _f32(b))

    return [
        conv(6, c),
        ("relu",),
        conv(6, 6),
        ("relu",),
        ("maxpool2",),
        conv(8, 6),
        ("relu",),
        ("maxpool2",),
        ("flatten",),
        dense(16, 8 * (h // 4) * (w // 4)),
        ("relu",),
        dense(N_CLASSES, 16),
    ]


LAYERS = make_vgg(0)
X = _f32(np.random.default_rng(1).uniform(-2.0, 2.0, (2, *IMG)))
LOGITS = np.stack([ref.forward(LAYERS, x)[-1] for x in X])
# two targets per sample: the top class and the runner-up (both with positive logits, so the
# ReLU'd start of the bounded Deep Taylor family is non-zero and CLRP's ratio is defined)
TARGETS = np.argsort(-LOGITS, axis=1)[:, :2]


def build_onnx(layers: list[ref.Layer], path: Path, img: tuple[int, int, int] = IMG) -> Path:
    """Write ``layers`` as an ONNX model (opset 17): input ``input`` [N, C, H, W], output ``logits``."""
    nodes, inits = [], []
    cur = "input"
    n_out = None
    for k, layer in enumerate(layers):
        out = "logits" if k == len(layers) - 1 else f"t{k}"
        kind = layer[0]
        if kind == "conv":
            inits += [
                numpy_helper.from_array(layer[1].astype(np.float32), f"W{k}"),
                numpy_helper.from_array(layer[2].astype(np.float32), f"B{k}"),
            ]
            nodes.append(
                helper.make_node(
                    "Conv",
                    [cur, f"W{k}", f"B{k}"],
                    [out],
                    kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1],
                    strides=[1, 1],
                )
            )
        elif kind == "dense":
            inits += [
                numpy_helper.from_array(layer[1].astype(np.float32), f"W{k}"),
                numpy_helper.from_array(layer[2].astype(np.float32), f"B{k}"),
            ]
            nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"B{k}"], [out], transB=1))
            n_out = layer[1].shape[0]
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [cur], [out]))
        elif kind == "maxpool2":
            nodes.append(helper.make_node("MaxPool", [cur], [out], kernel_shape=[2, 2], strides=[2, 2]))
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [cur], [out], axis=1))
        else:
            raise ValueError(kind)
        cur = out
    graph = helper.make_graph(
        nodes,
        "vgg_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *img])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def rel_err(a: np.ndarray, r: np.ndarray) -> float:
    """``max|a - r| / max|r|``."""
    return float(np.abs(a - r).max() / np.abs(r).max())


# ======================================================================================
# Part 1: the reference on its own
# ======================================================================================


def test_fixture_is_as_intended():
    """Logits O(1) with both signs; the chosen targets have positive logits."""
    assert np.abs(LOGITS).max() < 10
    for n in range(len(X)):
        assert (LOGITS[n] < 0).sum() >= 2  # negative non-target logits: SGLRP's ReLU'd softmax matters
        for t in TARGETS[n]:
            assert LOGITS[n, t] > 0.1
    assert np.abs(X).max() < min(-LOW, HIGH)


def test_safe_div_and_epsilon_stabiliser():
    """Safe division touches only exact zeros; the stabiliser's sign of zero is +1."""
    a = np.array([1.0, 1.0, 1.0, 2.0])
    b = np.array([0.0, -0.0, 1e-12, -4.0])
    np.testing.assert_array_equal(ref.safe_div(a, b), [1e7, 1e7, 1e12, -0.5])
    z = np.array([0.0, 2.0, -2.0, -1e-9])
    np.testing.assert_array_equal(ref.eps_stabilise(z, 0.5), [0.5, 2.5, -2.5, -1e-9 - 0.5])


def test_transposed_maps_are_adjoint():
    """<conv(x), g> = <x, conv^T(g)> and <W x, g> = <x, W^T g> (no bias)."""
    rng = np.random.default_rng(2)
    W = rng.normal(size=(4, 3, 3, 3))
    x = rng.normal(size=(3, 5, 7))
    g = rng.normal(size=(4, 5, 7))
    lhs = np.sum(ref.conv2d(x, W) * g)
    rhs = np.sum(x * ref.conv2d_transpose(g, W))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    Wd, xd, gd = rng.normal(size=(5, 8)), rng.normal(size=8), rng.normal(size=5)
    assert np.dot(ref.dense(xd, Wd), gd) == pytest.approx(np.dot(xd, ref.dense_transpose(gd, Wd)), rel=1e-12)


def test_conv2d_single_pixel():
    """One output pixel written out by hand: padding 1, cross-correlation, bias added once."""
    rng = np.random.default_rng(3)
    W = rng.normal(size=(2, 3, 3, 3))
    b = np.array([0.5, -0.25])
    x = rng.normal(size=(3, 4, 4))
    z = ref.conv2d(x, W, b)
    # top-left output: only kernel taps (u, v) in {1, 2} x {1, 2} see the image
    want = b[1] + sum(W[1, i, u, v] * x[i, u - 1, v - 1] for i in range(3) for u in (1, 2) for v in (1, 2))
    assert z[1, 0, 0] == pytest.approx(want, rel=1e-12)
    # interior output (2, 2): z = b + sum W[o, i, u, v] * x[i, 2 - 1 + u, 2 - 1 + v]
    want = b[0] + sum(
        W[0, i, u, v] * x[i, 1 + u, 1 + v] for i in range(3) for u in range(3) for v in range(3)
    )
    assert z[0, 2, 2] == pytest.approx(want, rel=1e-12)


def test_forward_matches_onnxruntime(tmp_path):
    """The ONNX test model and the reference forward pass compute the same logits."""
    path = build_onnx(LAYERS, tmp_path / "vgg.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(["logits"], {"input": X.astype(np.float32)})[0]
    np.testing.assert_allclose(out, LOGITS, rtol=1e-5, atol=1e-5)


def test_maxpool_ties_go_to_first_maximum():
    """Winner takes all; ties: the first maximum in row-major window order."""
    x = np.array([[[1.0, 3.0, 0.0, 0.0], [3.0, 2.0, 0.0, 0.0], [5.0, 1.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]]])
    g = np.array([[[10.0, 20.0], [30.0, 40.0]]])
    np.testing.assert_array_equal(ref.maxpool2(x), [[[3.0, 0.0], [5.0, 4.0]]])
    want = np.array(
        [[[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0], [30.0, 0.0, 40.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]
    )
    np.testing.assert_array_equal(ref.maxpool2_route(x, g), want)


def test_gradient_matches_finite_differences():
    """``gradient`` is dy_t/dx (seeded with 1): central differences in float64."""
    rng = np.random.default_rng(4)
    h = 1e-6
    for n in range(len(X)):
        t = int(TARGETS[n, 0])
        grad = ref.reference("gradient", LAYERS, X[n], t)
        for i in map(tuple, rng.integers(0, IMG, size=(60, 3))):
            xp, xm = X[n].copy(), X[n].copy()
            xp[i] += h
            xm[i] -= h
            fd = (ref.forward(LAYERS, xp)[-1][t] - ref.forward(LAYERS, xm)[-1][t]) / (2 * h)
            assert fd == pytest.approx(grad[i], rel=1e-5, abs=1e-7)


def test_guided_backprop_and_deconvnet_are_the_gradient_without_relus():
    """Without ReLUs, guided backprop and deconvnet reduce to the plain gradient."""
    layers = [layer for layer in make_vgg(5) if layer[0] != "relu"]
    x = X[0]
    g = ref.reference("gradient", layers, x, 3)
    np.testing.assert_allclose(ref.reference("guided_backprop", layers, x, 3), g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ref.reference("deconvnet", layers, x, 3), g, rtol=1e-12, atol=1e-14)


def test_guided_backprop_and_deconvnet_differ_from_gradient():
    """On the ReLU network the three backward passes differ (the ReLU handling is exercised)."""
    x, t = X[0], int(TARGETS[0, 0])
    g = ref.reference("gradient", LAYERS, x, t)
    gbp = ref.reference("guided_backprop", LAYERS, x, t)
    dec = ref.reference("deconvnet", LAYERS, x, t)
    assert rel_err(gbp, g) > 1e-2 and rel_err(dec, g) > 1e-2 and rel_err(dec, gbp) > 1e-2


def _random_layer(kind: str, rng: np.random.Generator, bias: bool):
    if kind == "conv":
        W = rng.normal(size=(4, 3, 3, 3))
        x = rng.normal(size=(3, 5, 6))
        R = rng.normal(size=(4, 5, 6))
        b = rng.normal(size=4) if bias else None
    else:
        W = rng.normal(size=(5, 7))
        x = rng.normal(size=7)
        R = rng.normal(size=5)
        b = rng.normal(size=5) if bias else None
    return W, b, x, R


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_rules_conserve_without_bias(kind):
    """Z, Epsilon(tiny), Alpha-Beta(1,0) and (2,1) without bias, W^2, Flat and Z^B conserve sum R."""
    rng = np.random.default_rng(6)
    W, _, x, R = _random_layer(kind, rng, bias=False)
    total = R.sum()
    assert ref.rule_z(kind, W, None, x, R).sum() == pytest.approx(total, rel=1e-9)
    assert ref.rule_epsilon(kind, W, None, x, R, 1e-12).sum() == pytest.approx(total, rel=1e-6)
    assert ref.rule_alpha_beta(kind, W, None, x, R, 1.0, 0.0).sum() == pytest.approx(total, rel=1e-9)
    assert ref.rule_alpha_beta(kind, W, None, x, R, 2.0, 1.0).sum() == pytest.approx(total, rel=1e-9)
    assert ref.rule_w2(kind, W, x, R).sum() == pytest.approx(total, rel=1e-9)
    assert ref.rule_flat(kind, W, x, R).sum() == pytest.approx(total, rel=1e-9)
    xb = np.clip(x, -1.5, 1.5)
    assert ref.rule_zb(kind, W, xb, R, -2.0, 2.0).sum() == pytest.approx(total, rel=1e-9)


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_alpha_beta_each_denominator_carries_the_whole_bias(kind):
    """iNNvestigate form: sum A = sum_j R_j (z_a - b)_j / z_a_j with z_a = W+x+ + W-x- + b; same for I."""
    rng = np.random.default_rng(7)
    W, b, x, R = _random_layer(kind, rng, bias=True)
    Wp, Wn, xp, xn = np.maximum(W, 0), np.minimum(W, 0), np.maximum(x, 0), np.minimum(x, 0)
    za_nb = ref.linear(kind, xp, Wp) + ref.linear(kind, xn, Wn)
    zi_nb = ref.linear(kind, xp, Wn) + ref.linear(kind, xn, Wp)
    bb = b if kind == "dense" else b[:, None, None] * np.ones_like(R)
    A = ref.rule_alpha_beta(kind, W, b, x, R, 1.0, 0.0)
    assert A.sum() == pytest.approx(np.sum(R * za_nb / (za_nb + bb)), rel=1e-9)
    I_ = (A - ref.rule_alpha_beta(kind, W, b, x, R, 1.0, 1.0)).sum()
    assert I_ == pytest.approx(np.sum(R * zi_nb / (zi_nb + bb)), rel=1e-9)
    # alpha, beta are plain weights of the two parts
    np.testing.assert_allclose(
        ref.rule_alpha_beta(kind, W, b, x, R, 2.0, 1.0),
        2 * ref.rule_alpha_beta(kind, W, b, x, R, 1.0, 0.0)
        - (ref.rule_alpha_beta(kind, W, b, x, R, 1.0, 0.0) - ref.rule_alpha_beta(kind, W, b, x, R, 1.0, 1.0)),
        rtol=1e-12,
        atol=1e-12,
    )


def test_w2_ignores_x_and_flat_spreads_evenly():
    """W^2 does not depend on x; Flat on a dense layer gives every input sum(R) / n_in."""
    rng = np.random.default_rng(8)
    W, _, x, R = _random_layer("dense", rng, bias=False)
    np.testing.assert_array_equal(ref.rule_w2("dense", W, x, R), ref.rule_w2("dense", W, 5 * x + 1, R))
    np.testing.assert_allclose(ref.rule_flat("dense", W, x, R), np.full(7, R.sum() / 7), rtol=1e-12)


def test_network_conservation_without_bias():
    """Zero biases: ``lrp_epsilon`` sums to y_t; bounded Deep Taylor ``lrp`` sums to max(y_t, 0) when the
    ReLUs pass relevance through (with their gradient, the relevance W^2 gives dead units is dropped)."""
    layers = make_vgg(0, bias=False)
    for n in range(len(X)):
        y = ref.forward(layers, X[n])[-1]
        for t in (int(np.argmax(y)), int(np.argmin(y))):
            heat = ref.reference("lrp_epsilon", layers, X[n], t)
            assert heat.sum() == pytest.approx(y[t], rel=1e-6)
            heat = ref.reference("lrp", layers, X[n], t, LOW, HIGH, lrp_relu="pass")
            assert heat.sum() == pytest.approx(max(y[t], 0.0), rel=1e-9, abs=1e-12)
            heat = ref.reference("lrp", layers, X[n], t, LOW, HIGH)
            assert heat.sum() <= max(y[t], 0.0) * (1 + 1e-9)


def test_bias_absorbs_relevance():
    """With biases, LRP-epsilon no longer sums exactly to y_t (the bias takes its share)."""
    n, t = 0, int(TARGETS[0, 0])
    heat = ref.reference("lrp_epsilon", LAYERS, X[n], t)
    assert abs(heat.sum() - LOGITS[n, t]) > 1e-3


@pytest.mark.parametrize("method", ["clrp", "sglrp"])
def test_contrastive_methods_sum_to_zero(method):
    """CLRP and SGLRP: sum of the heatmap is 0 per sample."""
    for n in range(len(X)):
        for t in TARGETS[n]:
            heat = ref.reference(method, LAYERS, X[n], int(t), LOW, HIGH)
            assert abs(heat.sum()) <= 1e-10 * np.abs(heat).sum()
            assert np.abs(heat).max() > 0


def test_start_relevances():
    """Start vectors: ReLU'd softmax for SGLRP, plain softmax for SeqA/B, 1e-8 on the target."""
    y = np.array([2.0, -1.0, 0.5, -3.0])
    t = 2
    ex = [math.exp(v) for v in (2.0, 0.0, 0.5, 0.0)]  # softmax of the ReLU'd logits
    p = [e / sum(ex) for e in ex]
    s = ref.start_relevances("sglrp", y, t)
    np.testing.assert_allclose(s["target"], [0, 0, p[t] * (1 - p[t]) + 1e-8, 0], rtol=1e-12)
    np.testing.assert_allclose(s["dual"], [p[t] * p[0], p[t] * p[1], 0, p[t] * p[3]], rtol=1e-12)

    ep = [math.exp(v) for v in y]  # softmax of the plain logits
    q = [e / sum(ep) for e in ep]
    for m in ("sglrp_seq_a", "sglrp_seq_b"):
        s = ref.start_relevances(m, y, t)
        want = [-q[t] * q[0], -q[t] * q[1], q[t] * (1 - q[t]) + 1e-8, -q[t] * q[3]]
        np.testing.assert_allclose(s["target"], want, rtol=1e-12)
        assert s["target"].sum() == pytest.approx(1e-8, abs=1e-15)

    s = ref.start_relevances("clrp", y, t)
    np.testing.assert_allclose(s["target"], [0, 0, 0.5, 0], rtol=1e-12)
    np.testing.assert_allclose(s["dual"], [0.5 / 3, 0.5 / 3, 0, 0.5 / 3], rtol=1e-12)
    # the bounded Deep Taylor start uses the ReLU'd logit; the presets the plain one
    np.testing.assert_array_equal(ref.start_relevances("lrp", y, 1)["target"], np.zeros(4))
    np.testing.assert_array_equal(ref.start_relevances("lrp_preset_a", y, 1)["target"], [0, -1.0, 0, 0])
    # the seed variant (choice 2 of seed_reference): start vectors masked by [y > 0]
    s = ref.start_relevances("clrp", y, t, logit_mask=True)
    np.testing.assert_allclose(s["dual"], [0.5 / 3, 0, 0, 0], rtol=1e-12)


def test_negative_target_logit():
    """Bounded Deep Taylor starts from max(y_t, 0): zero map; preset A starts from the plain y_t."""
    n = 0
    t = int(np.argmin(LOGITS[n]))
    assert LOGITS[n, t] < 0
    assert np.all(ref.reference("lrp", LAYERS, X[n], t, LOW, HIGH) == 0)
    assert np.abs(ref.reference("lrp_preset_a", LAYERS, X[n], t)).max() > 0


def test_relu_option_clips_the_final_heatmap():
    """``relu=True`` is ``max(heatmap, 0)`` of the unclipped heatmap (after the subtraction)."""
    for m in ("sglrp", "lrp_preset_b", "gradient"):
        t = int(TARGETS[1, 0])
        full = ref.reference(m, LAYERS, X[1], t, LOW, HIGH)
        np.testing.assert_array_equal(
            ref.reference(m, LAYERS, X[1], t, LOW, HIGH, relu=True), np.maximum(full, 0)
        )


def test_propagation_is_linear_in_the_start():
    """Every rule is linear in R: one pass of a R1 + b R2 equals a pass(R1) + b pass(R2)."""
    x = X[0]
    acts = ref.forward(LAYERS, x)
    rng = np.random.default_rng(9)
    R1, R2 = rng.normal(size=N_CLASSES), rng.normal(size=N_CLASSES)
    for preset in ("dtd", "a", "b", "epsilon"):
        rules = ref.rules_for(preset, LAYERS, LOW, HIGH)
        both = ref.lrp_backward(LAYERS, acts, 2 * R1 - 3 * R2, rules)
        sep = 2 * ref.lrp_backward(LAYERS, acts, R1, rules) - 3 * ref.lrp_backward(LAYERS, acts, R2, rules)
        np.testing.assert_allclose(both, sep, rtol=1e-9, atol=1e-12 * np.abs(sep).max())


def test_rules_assignment():
    """Which rule each linear node gets, per preset."""
    idx = [k for k, layer in enumerate(LAYERS) if layer[0] in ("conv", "dense")]
    assert idx == [0, 2, 5, 9, 11]
    dtd = ref.rules_for("dtd", LAYERS, LOW, HIGH)
    assert [dtd[k][0] for k in idx] == ["zb", "alpha_beta_nobias", "alpha_beta_nobias", "alpha_beta_nobias", "w2"]
    dtd_bias = ref.rules_for("dtd", LAYERS, LOW, HIGH, dtd_bias=True)
    assert [dtd_bias[k][0] for k in idx] == ["zb", "alpha_beta", "alpha_beta", "alpha_beta", "w2"]
    a = ref.rules_for("a", LAYERS)
    assert [a[k] for k in idx] == [
        ("flat",),
        *[("alpha_beta", 1.0, 0.0)] * 2,
        ("epsilon", 0.1),
        ("epsilon", 0.1),
    ]
    b = ref.rules_for("b", LAYERS)
    assert [b[k][0] for k in idx] == ["flat", "alpha_beta", "alpha_beta", "epsilon", "epsilon"]
    assert b[2] == ("alpha_beta", 2.0, 1.0)
    e = ref.rules_for("epsilon", LAYERS)
    assert all(e[k] == ("epsilon", 1e-7) for k in idx)


@pytest.mark.parametrize("method", ref.METHODS)
def test_fixture_is_well_conditioned_in_float32(method):
    """The reference run in float32 stays within REL_TOL / 10 of float64 on the engine fixture,
    so a correct float32 engine can meet REL_TOL."""
    for n in range(len(X)):
        for t in TARGETS[n]:
            r64 = ref.reference(method, LAYERS, X[n], int(t), LOW, HIGH)
            r32 = ref.reference(method, LAYERS, X[n], int(t), LOW, HIGH, dtype=np.float32)
            assert np.abs(r64).max() > 0
            assert rel_err(r32, r64) <= REL_TOL / 10


def test_fixture_distinguishes_the_documented_choices():
    """The engine fixture is sensitive to the choices of seed_reference (ReLU pass-through,
    no logit mask, first-maximum ties), so part 2 checks them."""
    n, t = 0, int(TARGETS[0, 0])
    for m in ("lrp", "clrp", "sglrp"):
        base = ref.reference(m, LAYERS, X[n], t, LOW, HIGH)
        assert rel_err(ref.reference(m, LAYERS, X[n], t, LOW, HIGH, lrp_relu="pass"), base) > 1e-2
    for m in ("clrp", "sglrp"):
        base = ref.reference(m, LAYERS, X[n], t, LOW, HIGH)
        assert rel_err(ref.reference(m, LAYERS, X[n], t, LOW, HIGH, logit_mask=True), base) > 1e-2
    # all-zero pooling windows (ties) occur, which deconvnet routes to the first element
    acts = ref.forward(LAYERS, X[n])
    a = acts[7]
    c, h, w = a.shape
    windows = a.reshape(c, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4)
    assert np.any(np.all(windows == 0, axis=1))


# ======================================================================================
# Part 2: the engine against the reference
# ======================================================================================


@pytest.fixture(scope="module")
def explainer(tmp_path_factory):
    """``onnxlrp.Explainer`` on the ONNX export of ``LAYERS``."""
    from onnxlrp import Explainer

    path = build_onnx(LAYERS, tmp_path_factory.mktemp("seed_reference") / "vgg_like.onnx")
    return Explainer(str(path))


def _kwargs(method: str) -> dict:
    return {"low": LOW, "high": HIGH} if method in ref.ZB_METHODS else {}


def _check(heat: np.ndarray, method: str, targets: list[int], **ref_kwargs) -> None:
    assert heat.shape == X.shape
    assert heat.dtype == np.float32
    assert np.all(np.isfinite(heat))
    for n in range(len(X)):
        r = ref.reference(method, LAYERS, X[n], targets[n], LOW, HIGH, **ref_kwargs)
        err = float(np.abs(heat[n].astype(np.float64) - r).max())
        scale = float(np.abs(r).max())
        assert err <= REL_TOL * scale, (
            f"{method}, sample {n}, target {targets[n]}: max|engine - reference| = {err:.3e}, "
            f"max|reference| = {scale:.3e}, relative {err / scale:.3e} > {REL_TOL}"
        )


@pytest.mark.parametrize("method", ref.METHODS)
def test_engine_matches_reference(explainer, method):
    """Every method, two samples, two targets each (one target per sample in one call)."""
    x = X.astype(np.float32)
    for k in range(TARGETS.shape[1]):
        targets = [int(t) for t in TARGETS[:, k]]
        heat = explainer.explain(x, target=targets, method=method, **_kwargs(method))
        _check(np.asarray(heat), method, targets)


@pytest.mark.parametrize("method", ["lrp", "sglrp", "sglrp_seq_b", "guided_backprop"])
def test_engine_int_target(explainer, method):
    """An int target applies to every sample."""
    t = int(TARGETS[0, 0])
    heat = explainer.explain(X.astype(np.float32), target=t, method=method, **_kwargs(method))
    _check(np.asarray(heat), method, [t] * len(X))


@pytest.mark.parametrize("method", ["clrp", "sglrp", "lrp_epsilon", "deconvnet"])
def test_engine_relu_option(explainer, method):
    """``relu=True`` clips the final heatmap at 0 (an option of every method in methods.md)."""
    targets = [int(t) for t in TARGETS[:, 1]]
    heat = explainer.explain(
        X.astype(np.float32), target=targets, method=method, relu=True, **_kwargs(method)
    )
    _check(np.asarray(heat), method, targets, relu=True)


@pytest.mark.parametrize("method", ["lrp", "clrp", "sglrp"])
def test_engine_bias_option(explainer, method):
    """``bias=True`` keeps the bias in the Deep Taylor Alpha-Beta(1, 0), as iNNvestigate 1.0.8 did."""
    x = X.astype(np.float32)
    targets = [int(t) for t in TARGETS[:, 0]]
    heat = np.asarray(explainer.explain(x, target=targets, method=method, bias=True, **_kwargs(method)))
    for n, t in enumerate(targets):
        expected = ref.reference(method, LAYERS, X[n], t, LOW, HIGH, dtd_bias=True)
        assert rel_err(heat[n], expected) <= REL_TOL, f"{method} n={n}"
        # and it is a different map from the default (bias-free) one
        assert rel_err(ref.reference(method, LAYERS, X[n], t, LOW, HIGH), expected) > 1e-3


@pytest.mark.parametrize("method", ["lrp_preset_a", "lrp_preset_b", "sglrp_seq_a", "sglrp_seq_b"])
def test_engine_preset_bias_option(explainer, method):
    """``bias=False`` drops the bias from the presets' Alpha-Beta denominators."""
    x = X.astype(np.float32)
    targets = [int(t) for t in TARGETS[:, 0]]
    heat = np.asarray(explainer.explain(x, target=targets, method=method, bias=False))
    for n, t in enumerate(targets):
        expected = ref.reference(method, LAYERS, X[n], t, LOW, HIGH, preset_bias=False)
        assert rel_err(heat[n], expected) <= REL_TOL, f"{method} n={n}"
        assert rel_err(ref.reference(method, LAYERS, X[n], t, LOW, HIGH), expected) > 1e-3
