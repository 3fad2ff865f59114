"""Remaining correctness items of issue 9.

* ``ResizeLayer.map_bounds``: the Z^B input box mapped through a ``Resize`` before the first linear layer.
  A cubic Resize has negative taps, so ``forward(low)`` and ``forward(high)`` do not bound its output;
  ``map_bounds`` gives ``[M⁺l + M⁻h, M⁺h + M⁻l]``. Checked: the box contains the Resize output of random
  points and of every vertex-like point of the input box (float32 slack 1e-5 of the box scale), each
  bound is attained by the input box's vertex that the row's signs pick (≤ 1e-5), and for nearest and
  linear modes it equals ``(forward(low), forward(high))`` (≤ 1e-6).
* ``attnlrp`` on squeeze-excitation gates: all relevance to the signal (signal-take-all). On an SE block
  whose pre-sigmoid logits sit near 0 the uniform split multiplies the total relevance by the ε-rule's
  ``1/z`` of the gate's linear layer; with signal-take-all the rule equals the formula and conserves.
"""

from __future__ import annotations

import itertools

import helpers_onnx as H
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlrp.ops import NodeContext, lookup
from onnxlrp.ops.resize import ResizeLayer

# ---------------------------------------------------------------------------------------------
# Resize: mapped input bounds


def _resize_layer(mode: str, coord: str, shape: tuple[int, ...], out: tuple[int, ...], exclude: int = 0,
                  cubic_a: float = -0.75) -> ResizeLayer:
    """A Resize layer (opset 13, constant sizes) from ``shape`` to ``out``."""
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "exclude_outside": exclude,
             "cubic_coeff_a": cubic_a}
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], name="resize", **attrs)
    consts = {"sz": np.asarray(out, np.int64)}
    builder = lookup("Resize")
    assert builder is not None
    layer = builder(NodeContext(node, consts, {"x": shape, "y": out}, 13, {}))
    assert isinstance(layer, ResizeLayer)
    return layer


def _full_matrix(layer: ResizeLayer, shape: tuple[int, ...]) -> np.ndarray:
    """The layer's map as one float64 matrix (outputs × inputs), by applying it to the unit vectors."""
    n = int(np.prod(shape))
    eye = np.eye(n).reshape((n,) + shape)
    cols = [layer.forward(np, [e.astype(np.float64)])[0].reshape(-1) for e in eye]
    return np.stack(cols, axis=1)


BOUNDS_CASES = [
    ("cubic", "half_pixel", (1, 2, 4, 3), (1, 2, 7, 5), 0),
    ("cubic", "align_corners", (2, 1, 3, 5), (2, 1, 6, 9), 0),
    ("cubic", "pytorch_half_pixel", (1, 1, 6, 4), (1, 1, 3, 7), 1),
    ("cubic", "asymmetric", (1, 1, 5, 5), (1, 1, 8, 3), 0),
    ("linear", "half_pixel", (1, 2, 4, 3), (1, 2, 7, 5), 0),
    ("linear", "align_corners", (2, 1, 3, 5), (2, 1, 6, 2), 0),
    ("nearest", "asymmetric", (1, 2, 4, 3), (1, 2, 8, 6), 0),
    ("nearest", "half_pixel", (1, 1, 6, 4), (1, 1, 3, 7), 0),
]


def _box(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A box ``low ≤ high`` with per-element bounds (some of width 0)."""
    a, b = rng.normal(size=shape), rng.normal(size=shape)
    low, high = np.minimum(a, b), np.maximum(a, b)
    high[..., 0, 0] = low[..., 0, 0]
    return low.astype(np.float32), high.astype(np.float32)


@pytest.mark.parametrize("mode, coord, shape, out, exclude", BOUNDS_CASES)
def test_resize_bounds_contain_every_output_of_the_box(mode: str, coord: str, shape: tuple[int, ...],
                                                       out: tuple[int, ...], exclude: int) -> None:
    rng = np.random.default_rng(len(coord) + 10 * len(mode))
    layer = _resize_layer(mode, coord, shape, out, exclude)
    low, high = _box(rng, shape)
    lo, hi = layer.map_bounds(np, low, high)
    assert lo.shape == hi.shape == out and lo.dtype == hi.dtype == np.float32
    slack = 1e-5 * float(np.abs(np.concatenate([low, high])).max())
    points = [low + rng.random(shape, dtype=np.float32) * (high - low) for _ in range(200)]
    points += [np.where(rng.random(shape) < 0.5, low, high) for _ in range(200)]  # vertices
    for x in points:
        y = layer.forward(np, [x])[0]
        assert np.all(y >= lo - slack) and np.all(y <= hi + slack)


@pytest.mark.parametrize("mode, coord, shape, out, exclude", BOUNDS_CASES)
def test_resize_bounds_are_attained(mode: str, coord: str, shape: tuple[int, ...], out: tuple[int, ...],
                                    exclude: int) -> None:
    """Each output's lower (upper) bound is the output at the vertex that puts every input where the sign of its
    weight asks: the box is the tightest elementwise one."""
    rng = np.random.default_rng(3)
    layer = _resize_layer(mode, coord, shape, out, exclude)
    low, high = _box(rng, shape)
    lo, hi = layer.map_bounds(np, low, high)
    w = _full_matrix(layer, shape)
    lo64, hi64 = low.reshape(-1).astype(np.float64), high.reshape(-1).astype(np.float64)
    best_lo = np.where(w > 0, lo64, hi64)  # (outputs, inputs): the minimising vertex of each row
    best_hi = np.where(w > 0, hi64, lo64)
    want_lo, want_hi = (w * best_lo).sum(axis=1), (w * best_hi).sum(axis=1)
    scale = float(np.abs(np.concatenate([lo64, hi64])).max())
    assert np.abs(lo.reshape(-1) - want_lo).max() <= 1e-5 * scale
    assert np.abs(hi.reshape(-1) - want_hi).max() <= 1e-5 * scale
    if mode != "cubic":  # no negative weights: the forward of the bounds is already the box
        assert np.abs(lo - layer.forward(np, [low])[0]).max() <= 1e-6 * scale
        assert np.abs(hi - layer.forward(np, [high])[0]).max() <= 1e-6 * scale


def test_cubic_resize_forward_of_the_bounds_is_not_a_bound() -> None:
    """Why the method exists: with cubic taps, min/max of ``forward(low)`` and ``forward(high)`` (what the plan
    did for every re-indexing layer) misses outputs of points inside the box; ``map_bounds`` does not."""
    shape, out = (1, 1, 4, 4), (1, 1, 8, 8)
    layer = _resize_layer("cubic", "half_pixel", shape, out)
    assert min(float(m.min()) for m in layer.mats.values()) < 0
    low = np.zeros(shape, np.float32)
    high = np.ones(shape, np.float32)
    a, b = layer.forward(np, [low])[0], layer.forward(np, [high])[0]
    naive_lo, naive_hi = np.minimum(a, b), np.maximum(a, b)
    x = np.zeros(shape, np.float32)
    x[..., ::2, ::2] = 1  # a checkerboard-like input overshoots: cubic interpolation rings
    y = layer.forward(np, [x])[0]
    assert y.min() < naive_lo.min() - 1e-3 or y.max() > naive_hi.max() + 1e-3
    lo, hi = layer.map_bounds(np, low, high)
    assert np.all(y >= lo - 1e-6) and np.all(y <= hi + 1e-6)
    assert float(lo.min()) < 0 < 1 < float(hi.max())


def test_every_other_mapped_layer_kind_is_monotone_per_element() -> None:
    """The other layers ``Plan.bounds`` maps (kinds ``reindex`` and ``affine`` with one input) compute each output
    element from at most one input element by a monotone map (a copy, a constant, ``x·s + c``), so min/max of
    ``forward(low)`` and ``forward(high)`` is their exact box; Resize is the only one that mixes elements with
    signed weights. Checked on each such layer built from a one-node graph: the box contains the output of random
    points of the input box, and its bounds are attained."""
    rng = np.random.default_rng(5)
    shape = (1, 2, 3, 4)
    c = rng.normal(size=shape).astype(np.float32)
    cases = {
        "Neg": ([], {}, {}),
        "Sub": (["c"], {"c": c}, {}),  # x - c
        "Mul": (["c"], {"c": -np.abs(c)}, {}),  # a negative scale
        "Pad": (["p", "v"], {"p": np.array([0, 0, 1, 1, 0, 0, 2, 0], np.int64),
                             "v": np.array(3.0, np.float32)}, {"mode": "constant"}),
        "Transpose": ([], {}, {"perm": [0, 3, 1, 2]}),
        "Slice": (["s", "e", "a", "st"], {"s": np.array([2, 0]), "e": np.array([0, 2]), "a": np.array([3, 1]),
                                          "st": np.array([-1, 1])}, {}),
        "Concat": (["c"], {"c": c}, {"axis": 1}),
        "Tile": (["r"], {"r": np.array([1, 2, 1, 2], np.int64)}, {}),
    }
    from onnx.reference import ReferenceEvaluator

    for op, (extra, consts, attrs) in cases.items():
        node = helper.make_node(op, ["x"] + extra, ["y"], name=op, **attrs)
        g = helper.make_graph([node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        ref = ReferenceEvaluator(model)
        low, high = _box(rng, shape)
        y_shape = tuple(ref.run(None, {"x": low})[0].shape)
        builder = lookup(op)
        assert builder is not None
        layer = builder(NodeContext(node, consts, {"x": shape, "y": y_shape}, 18, {}))
        assert layer.kind in ("reindex", "affine") and not hasattr(layer, "map_bounds"), op
        a, b = layer.forward(np, [low])[0], layer.forward(np, [high])[0]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        for x in [low + rng.random(shape, dtype=np.float32) * (high - low) for _ in range(50)]:
            y = ref.run(None, {"x": x})[0]
            assert np.all(y >= lo - 1e-6) and np.all(y <= hi + 1e-6), op
        # attained: the output of low and of high are points of the image
        assert np.array_equal(np.minimum(ref.run(None, {"x": low})[0], ref.run(None, {"x": high})[0]), lo), op


def _resize_conv_model(mode: str) -> tuple[object, tuple[int, ...]]:
    """``x [1, 1, 4, 4] → Resize(mode, ×2) → Conv 3×3 → Relu → GlobalAveragePool → Flatten → Gemm (3 classes)``."""
    b = H.Builder(11)
    up = b.op("Resize", ["x", "", b.const(np.array([1, 1, 2, 2], np.float32))], mode=mode,
              coordinate_transformation_mode="half_pixel")
    h = b.relu(b.conv(up, 1, 2, (3, 3)))  # type: ignore[arg-type]
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [h])]), 2, 3)  # type: ignore[arg-type,list-item]
    return b.model([1, 1, 4, 4], [(y, H.FLOAT)], 13), (1, 1, 4, 4)


def test_plan_bounds_of_a_cubic_resize_contain_the_first_conv_input() -> None:
    """End to end: the bounds Z^B gets for the first convolution's input contain the Resize output of inputs in
    the user's box."""
    from onnxlrp import Explainer

    model, shape = _resize_conv_model("cubic")
    ex = Explainer(model, device="cpu")
    plan = ex._engine.plan_for(shape)  # noqa: SLF001
    low, high = np.zeros(shape, np.float32), np.ones(shape, np.float32)
    res = plan.bounds(low, high)
    (resize,) = [layer for layer in plan.graph.layers if isinstance(layer, ResizeLayer)]
    lo, hi = res[resize.outputs[0]]
    x = np.zeros(shape, np.float32)
    x[..., ::2, ::2] = 1
    y = resize.forward(np, [x])[0]
    assert np.all(y >= lo - 1e-6) and np.all(y <= hi + 1e-6)


def test_resize_bounds_vertex_search_small() -> None:
    """Exhaustive on a tiny box: over all 2⁶ vertices of a 1×1×2×3 input box (a linear map attains its extremes
    at vertices), the smallest and largest output of each element equal ``map_bounds`` (cubic, ×2 in both axes)."""
    shape, out = (1, 1, 2, 3), (1, 1, 4, 6)
    layer = _resize_layer("cubic", "half_pixel", shape, out, cubic_a=-0.5)
    rng = np.random.default_rng(9)
    low, high = _box(rng, shape)
    ys = []
    for bits in itertools.product((0, 1), repeat=int(np.prod(shape))):
        x = np.where(np.array(bits, bool).reshape(shape), high, low)
        ys.append(layer.forward(np, [x.astype(np.float64)])[0])
    stack = np.stack(ys)
    lo, hi = layer.map_bounds(np, low, high)
    assert np.abs(stack.min(axis=0) - lo).max() < 1e-5 and np.abs(stack.max(axis=0) - hi).max() < 1e-5


# ---------------------------------------------------------------------------------------------
# attnlrp on squeeze-excitation / sigmoid gates


def _gated_mlp(near_zero: bool) -> tuple[object, np.ndarray, dict[str, np.ndarray]]:
    """``a = relu(W₁x)``, ``h = relu(W₂a)``, ``g = sigmoid(W₃h)``, ``y = W₄(a ⊙ g)`` (no biases: the ε-rule then
    conserves). With ``near_zero`` the rows of ``W₃`` are made almost orthogonal to ``h`` of the test input, so the
    pre-sigmoid logits are ~1e-3 of their terms — the state of an SE gate at σ ≈ ½."""
    rng = np.random.default_rng(21)
    w = {"W1": rng.normal(size=(8, 6)), "W2": rng.normal(size=(4, 8)), "W3": rng.normal(size=(8, 4)),
         "W4": rng.normal(size=(3, 8))}
    x = rng.normal(size=(1, 6)).astype(np.float32)
    if near_zero:
        h = np.maximum(w["W2"] @ np.maximum(w["W1"] @ x[0].astype(np.float64), 0), 0)
        w3 = w["W3"] - np.outer(w["W3"] @ h, h) / (h @ h)
        w["W3"] = w3 + 1e-3 * np.abs(w3).max() * rng.normal(size=w3.shape) / np.linalg.norm(h)
    w = {k: v.astype(np.float32) for k, v in w.items()}
    nodes = [
        helper.make_node("Gemm", ["x", "W1"], ["z1"], transB=1), helper.make_node("Relu", ["z1"], ["a"]),
        helper.make_node("Gemm", ["a", "W2"], ["z2"], transB=1), helper.make_node("Relu", ["z2"], ["h"]),
        helper.make_node("Gemm", ["h", "W3"], ["z3"], transB=1), helper.make_node("Sigmoid", ["z3"], ["g"]),
        helper.make_node("Mul", ["a", "g"], ["ag"], name="gate"),
        helper.make_node("Gemm", ["ag", "W4"], ["y"], transB=1),
    ]
    g = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          [numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 9
    return model, x, w


def test_attnlrp_gives_a_sigmoid_gate_s_signal_all_relevance() -> None:
    """The gate layer's rule, and the map against its formula: with the gate held constant, ε → 0, no biases and
    the identity rule on ReLU, AttnLRP is ``x ⊙ W₁ᵀ((W₁x > 0) ⊙ g ⊙ W₄[t])`` scaled by ``y_t``'s start
    (``R = y_t``): Gradient × Input of the network with the gate detached. Tolerance 1e-5 relative (float32)."""
    from onnxlrp import Explainer
    from onnxlrp.composites import attnlrp
    from onnxlrp.rules import GateToSignal

    model, x, w = _gated_mlp(near_zero=False)
    ex = Explainer(model, device="cpu")
    rules = {row["op"]: row["rule"] for row in ex.layers("attnlrp")}
    assert rules["Mul"] == str(GateToSignal())
    assert [row["kind"] for row in ex.layers("attnlrp") if row["op"] == "Mul"] == ["gate"]
    assert isinstance(attnlrp().by_kind["gate"], GateToSignal)
    x64, ws = x[0].astype(np.float64), {k: v.astype(np.float64) for k, v in w.items()}
    a = np.maximum(ws["W1"] @ x64, 0)
    g = 1 / (1 + np.exp(-(ws["W3"] @ np.maximum(ws["W2"] @ a, 0))))
    y = ws["W4"] @ (a * g)
    for t in range(3):
        want = x64 * (ws["W1"].T @ ((ws["W1"] @ x64 > 0) * g * ws["W4"][t]))
        got = ex.explain(x, target=t, method="attnlrp")[0]
        assert H.rel_err(got, want) < 1e-5, t
        assert abs(float(got.sum()) - y[t]) < 1e-5 * abs(y[t]) + 1e-6  # conserves: the map sums to y_t


def test_attnlrp_on_a_gate_near_half_does_not_blow_up() -> None:
    """The coverage zoo's SE finding, in small: pre-sigmoid logits near 0. The uniform split (what attnlrp did)
    sends ½R into the gate branch, the identity rule passes it to ``z ≈ 0``, and the ε-rule of ``W₃`` divides by
    ``z``: the map's Σ|R| is > 100× the start. Signal-take-all keeps it at the gate-free ε-LRP's size (< 10×) and
    raises no RelevanceWarning."""
    import warnings

    from onnxlrp import Explainer, RelevanceWarning
    from onnxlrp.composites import attnlrp
    from onnxlrp.rules import GateUniform, RuleContext

    model, x, _ = _gated_mlp(near_zero=True)
    ex = Explainer(model, device="cpu")
    plan = ex._engine.plan_for(x.shape)  # noqa: SLF001
    acts = plan.run_forward(x)
    t = int(np.argmax(plan.logits(acts)[0]))
    yt = float(plan.logits(acts)[0, t])
    z3 = acts[[layer for layer in plan.graph.layers if layer.op_type == "Sigmoid"][0].inputs[0]]
    assert np.abs(z3).max() < 0.05  # the gate sits at σ ≈ ½
    start = np.zeros((1, 1, 3), np.float32)
    start[0, 0, t] = yt
    uniform = attnlrp()
    uniform.by_kind = dict(uniform.by_kind, gate=GateUniform())
    r_uniform = plan.backward(acts, start, uniform.rule_for, RuleContext(np))
    assert float(np.abs(r_uniform).sum()) > 100 * abs(yt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RelevanceWarning)
        heat = ex.explain(x, target=t, method="attnlrp")
    assert float(np.abs(heat).sum()) < 10 * abs(yt)
    assert abs(float(heat.sum()) - yt) < 1e-4 * abs(yt)


# ---------------------------------------------------------------------------------------------
# the coverage tool's conditioning probe (LeViT's float32 gradient error)


def _coverage_tool():  # type: ignore[no-untyped-def]
    """``tools/coverage.py`` under its own module name (as ``tests/test_coverage_tool.py`` loads it)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "onnxlrp_coverage_tool"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" /
                                                      "coverage.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("bn, act, tol", [(False, "Tanh", 1e-8), (True, "HardSwish", 2e-7)])
def test_float64_backward_is_the_exact_gradient_of_the_graph(bn: bool, act: str, tol: float) -> None:
    """The probe's float64 backward (onnxlrp's VJPs on the float64 twin's activations) against the float64 twin's
    central finite differences (ONNX's reference evaluator, step 1e-6) on ``Gemm → [BatchNorm] → act → Softmax
    gate ⊙ Gemm → Gemm``. Without BatchNorm and with Tanh every step is float64: ≤ 1e-8 (measured 5e-10). A
    BatchNorm folded into the Gemm (weights rounded to float32 by the fold) and HardSwish's derivative (computed
    in float32) each leave ~4e-8: ≤ 2e-7 (measured 9.5e-8)."""
    cov = _coverage_tool()
    from onnx.reference import ReferenceEvaluator

    from onnxlrp import Explainer

    b = H.Builder(4)
    h = b.gemm("x", 6, 8)
    if bn:
        h = b.bn(h, 8)
    h = b.op(act, [h])  # type: ignore[assignment]
    s = b.op("Softmax", [b.gemm(h, 8, 8)], axis=1)
    y = b.gemm(b.op("Mul", [s, b.gemm(h, 8, 8)]), 8, 3)  # type: ignore[list-item]
    model = b.model([1, 6], [(y, H.FLOAT)], 17)
    ex = Explainer(model, device="cpu")
    x = np.random.default_rng(2).normal(size=(1, 6)).astype(np.float32)
    g64, acts = cov.float64_backward(ex, model, x, 1)
    assert g64.dtype == np.float64 and all(a.dtype == np.float64 for a in acts.values())
    ref = ReferenceEvaluator(cov.float64_twin(model))
    fd = np.zeros(6)
    for i in range(6):
        e = np.zeros((1, 6))
        e[0, i] = 1e-6
        up, down = (ref.run(None, {"x": x.astype(np.float64) + s_ * e})[0][0, 1] for s_ in (1, -1))
        fd[i] = (up - down) / 2e-6
    assert H.rel_err(g64.reshape(-1), fd) < tol
    assert cov.graph_directional_check(model, "x", x, 1, g64) < tol
    assert H.rel_err(ex.explain(x, target=1, method="gradient").reshape(-1), fd) < 1e-5  # the float32 engine


def test_torch_float32_error_is_the_larger_of_at_x_and_at_rounded_x() -> None:
    cov = _coverage_tool()
    assert cov.torch32_error({"grad_err_torch32": 2e-4, "grad_err_torch32_ulp": 5e-4}) == 5e-4
    assert cov.torch32_error({"grad_err_torch32": 2e-4}) == 2e-4
    torch = pytest.importorskip("torch")
    x = torch.ones(3, 4)
    d = (cov._ulp_perturbed(x, 0).double() - 1).abs()  # noqa: SLF001
    assert float(d.max()) <= 8 * 2.0**-24 and float(d.max()) > 0


def test_gradient_verdict_keeps_ties_ahead_of_the_rounding_spread() -> None:
    """A tie flipped by an input-rounding-sized change makes torch's float32 error at the changed input large too;
    the verdict names the tie first and uses that spread only where there is none."""
    cov = _coverage_tool()
    base = {"grad_err_torch32": 1e-6, "grad_err_torch32_ulp": 5e-2, "reference_check": 1e-10}
    assert cov.gradient_verdict(base | {"grad_err": 5e-6, "tie_count": 2}) == "ok"
    assert cov.gradient_verdict(base | {"grad_err": 5e-5, "grad_err_torch32": 1e-5, "tie_count": 2}) == "float32"
    assert cov.gradient_verdict(base | {"grad_err": 2e-2, "tie_count": 2}) == "tie"
    assert cov.gradient_verdict(base | {"grad_err": 2e-2, "tie_count": 0}) == "float32"
    assert cov.gradient_verdict(base | {"grad_err": 0.9, "tie_count": 0}) == "MISMATCH"
    assert cov.gradient_verdict(base | {"grad_err": 0.9, "tie_count": 0, "reference_check": 1e-3}) == "reference?"


def test_a_mul_by_an_upsampled_sigmoid_is_a_gate() -> None:
    """GhostNetV2's DFC attention: ``h ⊙ Resize(sigmoid(conv(avgpool(x))))`` (nearest ×2). The upsampled sigmoid is
    still a gate in (0, 1); as a *product* it gets the uniform rule and, on the coverage zoo's GhostNetV2, Σ|R| of
    8.6e16 under ``attnlrp``/``cp_lrp``/``lrp_epsilon`` (241 once it is a gate)."""
    from onnxlrp import Explainer

    b = H.Builder(13)
    h = b.relu(b.conv("x", 2, 4, (3, 3), pads=[1, 1, 1, 1]))
    g = b.op("Sigmoid", [b.conv(b.op("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2]), 2, 4, (1, 1))])
    up = b.op("Resize", [g, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")  # type: ignore[list-item]
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [b.op("Mul", [h, up])])]), 4, 3)  # type: ignore[list-item]
    ex = Explainer(b.model([1, 2, 4, 4], [(y, H.FLOAT)], 13), device="cpu")
    assert [row["kind"] for row in ex.layers("attnlrp") if row["op"] == "Mul"] == ["gate"]
