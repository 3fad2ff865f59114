"""Attention layers (products of two activations, Softmax inside the graph) and the AttnLRP / CP-LRP rules.

* VJPs: the adjoint identity ``<J v, u> = <v, Jᵀ u>`` with ``J v`` from float64 central differences
  of onnxruntime on a one-node model (tolerance 1e-6 relative to ``Σ|Jv ⊙ u|``), and the layers'
  own forward against onnxruntime.
* Gradients: of self-attention blocks built with ``onnx.helper`` (MatMul and Einsum forms, softmax
  axes, opsets 11–17, gated products) against float64 finite differences of the same network
  (≤ 1e-5 relative, ``helpers_onnx.rel_err``); of torch exports (fixtures made by
  ``tools/make_lxt_fixtures.py``) against torch autograd in float64.
* Rules against their formulas written out here in float64 (≤ 1e-5), conservation where the rule
  conserves (uniform product rule, CP-LRP product rule, softmax-free norm with β = 0).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import helpers_onnx as H
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxlrp
from onnxlrp import Explainer
from onnxlrp.ops import NodeContext, lookup
from onnxlrp.ops.attention import ProductLayer, SoftmaxLayer
from onnxlrp.rules import (
    GateUniform,
    NormEpsilon,
    ProductHoldConstant,
    ProductUniform,
    RuleContext,
    SignEpsilon,
    SoftmaxRule,
    StopRule,
)

FIXTURES = Path(__file__).parent / "fixtures"
K = 2

# ---------------------------------------------------------------------------------------------
# one-node models: VJP by the adjoint identity


CASES = [
    ("matmul_4d", "MatMul", [(2, 2, 3, 4), (2, 2, 4, 5)], {}, 17),
    ("matmul_broadcast", "MatMul", [(2, 1, 3, 4), (2, 3, 4, 2)], {}, 17),
    ("matmul_3d", "MatMul", [(2, 3, 4), (2, 4, 3)], {}, 13),
    ("einsum_qk", "Einsum", [(2, 2, 3, 4), (2, 2, 5, 4)], {"equation": "bhqd,bhkd->bhqk"}, 17),
    ("einsum_ellipsis", "Einsum", [(2, 3, 3, 4), (2, 3, 4, 2)], {"equation": "...ij,...jk->...ik"}, 17),
    ("einsum_implicit_outer", "Einsum", [(2, 3), (2, 4)], {"equation": "bi,bj"}, 17),
    ("einsum_own_sum", "Einsum", [(2, 3, 4), (2, 5)], {"equation": "bij,bk->bik"}, 17),
    ("mul_same_shape", "Mul", [(2, 3, 4), (2, 3, 4)], {}, 17),
    ("softmax_last", "Softmax", [(2, 3, 4, 5)], {"axis": -1}, 17),
    ("softmax_axis1", "Softmax", [(2, 3, 4)], {"axis": 1}, 13),
    ("softmax_coerced_opset11", "Softmax", [(2, 3, 4)], {"axis": 1}, 11),
    ("logsoftmax_axis2", "LogSoftmax", [(2, 3, 4)], {"axis": 2}, 17),
    ("logsoftmax_coerced_opset11", "LogSoftmax", [(2, 3, 4)], {"axis": 1}, 11),
]


def _one_node(case: tuple, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    cid, op, shapes, attrs, opset = case
    names = [f"in{i}" for i in range(len(shapes))]
    node = helper.make_node(op, names, ["y"], name=f"node_{cid}", **attrs)
    graph = helper.make_graph([node], cid, [helper.make_tensor_value_info(n, dtype, list(s))
                                            for n, s in zip(names, shapes, strict=True)],
                              [helper.make_tensor_value_info("y", dtype, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_vjp_adjoint_identity_and_forward(case: tuple) -> None:
    cid, op, shapes, _, opset = case
    rng = np.random.default_rng(zlib.crc32(cid.encode()))
    feeds = {f"in{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    y32 = H.ort_session(_one_node(case)).run(None, feeds)[0]
    sess64 = H.ort_session(_one_node(case, TensorProto.DOUBLE))
    node = _one_node(case).graph.node[0]
    shp = {n: tuple(v.shape) for n, v in feeds.items()} | {"y": tuple(y32.shape)}
    layer = lookup(op)(NodeContext(node, {}, shp, opset))  # type: ignore[misc]
    assert layer.kind == ("softmax" if "Softmax" in op else "product")
    ins = [feeds[n] for n in layer.inputs]
    assert H.rel_err(layer.forward(np, ins)[0], y32) < 1e-6
    gouts = [rng.standard_normal((K,) + y32.shape).astype(np.float32)]
    back = layer.vjp(np, ins, [y32], gouts)
    h = 1e-6
    for name, jt_u in zip(layer.inputs, back, strict=True):
        assert jt_u.shape == (K,) + feeds[name].shape
        v = rng.standard_normal(feeds[name].shape)
        f64 = {n: x.astype(np.float64) for n, x in feeds.items()}
        plus, minus = dict(f64), dict(f64)
        plus[name] = f64[name] + h * v
        minus[name] = f64[name] - h * v
        jv = (sess64.run(None, plus)[0] - sess64.run(None, minus)[0]) / (2 * h)
        for k in range(K):
            lhs = float(np.sum(jv * gouts[0][k]))
            rhs = float(np.sum(v * jt_u[k].astype(np.float64)))
            scale = float(np.sum(np.abs(jv * gouts[0][k])))
            assert abs(lhs - rhs) <= 1e-6 * scale, (cid, name, k, lhs, rhs)


def test_supported_ops_include_attention() -> None:
    assert {"Einsum", "Softmax", "LogSoftmax"} <= set(onnxlrp.supported_ops())


@pytest.mark.parametrize(("equation", "shapes", "match"), [
    ("ii,ij->ij", [(3, 3), (3, 4)], "diagonal"),
    ("ij,jk,kl->il", [(2, 3), (3, 4)], "3 operands"),
    ("bij,bjk->bik", [(2, 3, 4), (2, 5, 6)], "broadcasts index"),
])
def test_einsum_refusals(equation: str, shapes: list, match: str) -> None:
    from onnxlrp.ops import Unsupported

    names = [f"in{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=equation)
    with pytest.raises(Unsupported, match=match):
        lookup("Einsum")(NodeContext(node, {}, dict(zip(names, shapes, strict=True)) | {"y": (2, 2)}, 17))


def test_softmax_over_the_batch_axis_is_refused() -> None:
    from onnxlrp.ops import Unsupported

    node = helper.make_node("Softmax", ["a"], ["y"], axis=0)
    with pytest.raises(Unsupported, match="batch axis"):
        lookup("Softmax")(NodeContext(node, {}, {"a": (2, 3), "y": (2, 3)}, 17))


# ---------------------------------------------------------------------------------------------
# rules against their formulas


def _product(op: str, shapes: list, attrs: dict | None = None, producers: dict | None = None) -> ProductLayer:
    names = [f"in{i}" for i in range(len(shapes))]
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    ctx = NodeContext(node, {}, dict(zip(names, shapes, strict=True)) | {"y": (1,)}, 17, producers or {})
    layer = lookup(op)(ctx)  # type: ignore[misc]
    assert isinstance(layer, ProductLayer)
    return layer


def _stab64(z: np.ndarray, eps: float) -> np.ndarray:
    return z + np.where(z >= 0, eps, -eps)


def test_uniform_rule_on_matmul_is_lxt_formula_and_conserves() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 2, 3, 4)).astype(np.float32), rng.standard_normal((2, 2, 4, 5)).astype(np.float32)
    layer = _product("MatMul", [a.shape, b.shape])
    z = layer.forward(np, [a, b])[0]
    r = rng.standard_normal((K,) + z.shape).astype(np.float32)
    eps = 1e-6
    ra, rb = ProductUniform(SignEpsilon(eps))(layer, RuleContext(np), [a, b], [z], [r])
    # LXT's explicit matmul rule: R/(2z + ε), then a ⊙ (s bᵀ) and b ⊙ (aᵀ s)
    a64, b64, r64 = a.astype(np.float64), b.astype(np.float64), r.astype(np.float64)
    s = r64 / _stab64(2 * (a64 @ b64), 2 * eps)
    want_a = a64 * (s @ np.swapaxes(b64, -1, -2))
    want_b = b64 * (np.swapaxes(a64, -1, -2) @ s)
    assert H.rel_err(ra, want_a) < 1e-5 and H.rel_err(rb, want_b) < 1e-5
    # conservation: each factor gets half (exactly, up to the stabiliser: ε / |z| ≤ 1e-4 here)
    assert np.min(np.abs(z)) > 1e-2
    for k in range(K):
        total = float(r64[k].sum())
        assert abs(float(ra[k].sum(dtype=np.float64)) - total / 2) < 1e-4 * np.abs(r64[k]).sum()
        assert abs(float(rb[k].sum(dtype=np.float64)) - total / 2) < 1e-4 * np.abs(r64[k]).sum()


def test_uniform_rule_on_einsum_and_mul_equals_matmul_form() -> None:
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 2, 3, 4)).astype(np.float32), rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    ein = _product("Einsum", [q.shape, k.shape], {"equation": "bhqd,bhkd->bhqk"})
    mm = _product("MatMul", [q.shape, (2, 2, 4, 5)])
    kt = np.ascontiguousarray(np.swapaxes(k, -1, -2))
    z = ein.forward(np, [q, k])[0]
    r = rng.standard_normal((K,) + z.shape).astype(np.float32)
    rule, ctx = ProductUniform(SignEpsilon(1e-6)), RuleContext(np)
    rq, rk = rule(ein, ctx, [q, k], [z], [r])
    rq2, rkt = rule(mm, ctx, [q, kt], [z], [r])  # the same z: only the transposed maps differ
    assert H.rel_err(rq, rq2) < 1e-5 and H.rel_err(rk, np.swapaxes(rkt, -1, -2)) < 1e-5
    # element-wise: the uniform rule is R/2 to each factor (LXT's mul2)
    a, b = rng.standard_normal((2, 6)).astype(np.float32), rng.standard_normal((2, 6)).astype(np.float32)
    mul = _product("Mul", [a.shape, b.shape])
    r = rng.standard_normal((K, 2, 6)).astype(np.float32)
    ra, rb = rule(mul, ctx, [a, b], [a * b], [r])
    assert H.rel_err(ra, r / 2) < 1e-4 and H.rel_err(rb, r / 2) < 1e-4


def test_cp_lrp_holds_the_attention_weights_constant() -> None:
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 2, 3, 5)).astype(np.float32)
    att = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    v = rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    producers = {"in0": helper.make_node("Softmax", ["s"], ["in0"], axis=-1)}
    layer = _product("MatMul", [att.shape, v.shape], producers=producers)
    assert layer.attention_index == 0
    z = layer.forward(np, [att, v])[0]
    r = rng.standard_normal((K,) + z.shape).astype(np.float32)
    ra, rv = ProductHoldConstant(SignEpsilon(1e-6))(layer, RuleContext(np), [att, v], [z], [r])
    assert ra is None
    want = v.astype(np.float64) * (np.swapaxes(att, -1, -2).astype(np.float64) @ (r / _stab64(z.astype(np.float64),
                                                                                              1e-6)))
    assert H.rel_err(rv, want) < 1e-5
    assert np.min(np.abs(z)) > 1e-3
    for k in range(K):  # conservative: all relevance to V
        assert abs(float(rv[k].sum(dtype=np.float64)) - float(r[k].sum(dtype=np.float64))) < 1e-3 * np.abs(r[k]).sum()
    # attention weights seen through dropout, a cast and a reshape
    producers = {"d": helper.make_node("Softmax", ["s"], ["d"], axis=-1),
                  "c": helper.make_node("Dropout", ["d"], ["c"]),
                  "r": helper.make_node("Cast", ["c"], ["r"], to=TensorProto.FLOAT),
                  "in1": helper.make_node("Reshape", ["r", "shape"], ["in1"])}
    assert _product("MatMul", [v.shape, att.shape], producers=producers).attention_index == 1
    # without a softmax factor: the uniform rule
    plain = _product("MatMul", [att.shape, v.shape])
    assert plain.attention_index is None
    got = ProductHoldConstant(SignEpsilon(1e-6))(plain, RuleContext(np), [att, v], [z], [r])
    want2 = ProductUniform(SignEpsilon(1e-6))(plain, RuleContext(np), [att, v], [z], [r])
    for g, w in zip(got, want2, strict=True):
        np.testing.assert_array_equal(g, w)


def test_gate_uniform_splits_in_halves_with_broadcast() -> None:
    rng = np.random.default_rng(3)
    sig, gate = rng.standard_normal((2, 3, 4, 4)).astype(np.float32), rng.uniform(0, 1, (2, 3, 1, 1)).astype(
        np.float32)

    class Gate:  # what the rule reads of a GateLayer
        input_shapes = [sig.shape, gate.shape]
        inputs = ["s", "g"]

    r = rng.standard_normal((K,) + sig.shape).astype(np.float32)
    rs, rg = GateUniform()(Gate(), RuleContext(np), [sig, gate], [sig * gate], [r])  # type: ignore[arg-type]
    np.testing.assert_allclose(rs, r / 2, rtol=1e-6)
    np.testing.assert_allclose(rg, r.sum(axis=(3, 4), keepdims=True) / 2, rtol=1e-5, atol=1e-6)


def _softmax_layer(shape: tuple, axis: int, op: str = "Softmax") -> SoftmaxLayer:
    node = helper.make_node(op, ["a"], ["y"], axis=axis)
    return SoftmaxLayer(NodeContext(node, {}, {"a": shape, "y": shape}, 17))


def test_softmax_rule_formula_gradient_form_and_masks() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 3, 5)).astype(np.float32)
    x[0, 0, 0, 1] = -np.inf  # a masked logit
    x[1, 1, 2, 3] = np.float32(np.finfo(np.float32).min)  # a masked logit written as the float32 minimum
    layer = _softmax_layer(x.shape, -1)
    with np.errstate(invalid="ignore"):
        s = layer.forward(np, [x])[0]
    assert np.all(np.isfinite(s))
    r = rng.standard_normal((K,) + x.shape).astype(np.float32) * s  # relevance = output ⊙ gradient-like
    got = SoftmaxRule(SignEpsilon(1e-6))(layer, RuleContext(np), [x], [s], [r])[0]
    assert np.all(np.isfinite(got))
    x0 = np.where(np.isfinite(x), x, 0).astype(np.float64)
    r64 = r.astype(np.float64)
    want = x0 * (r64 - s * r64.sum(-1, keepdims=True))
    assert H.rel_err(got, want) < 1e-5
    # the gradient form: x ⊙ Jᵀ(R ⊘ s), i.e. input times the plain softmax VJP of R ⊘ s
    mask = np.isfinite(x) & (x > -1e30)
    grad_form = x0 * layer.vjp(np, [x], [s], [np.where(mask, r / np.where(s > 0, s, 1), 0).astype(np.float32)])[0]
    assert H.rel_err(got, grad_form) < 1e-5
    assert StopRule()(layer, RuleContext(np), [x], [s], [r]) == [None]


def test_logsoftmax_rule_is_the_epsilon_rule_of_its_linearisation() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    layer = _softmax_layer(x.shape, 2, "LogSoftmax")
    y = layer.forward(np, [x])[0]
    r = rng.standard_normal((K,) + x.shape).astype(np.float32)
    got = SoftmaxRule(SignEpsilon(1e-6))(layer, RuleContext(np), [x], [y], [r])[0]
    s = r.astype(np.float64) / _stab64(y.astype(np.float64), 1e-6)
    p = np.exp(y.astype(np.float64))
    want = x * (s - p * s.sum(-1, keepdims=True))
    assert H.rel_err(got, want) < 1e-5


class LayerNormStandIn:
    """A stand-in of the norm layer interface (kind ``"norm"``): LayerNorm over the last axis with ``linear_vjp``,
    the VJP with ``1/σ`` held constant."""

    kind = "norm"
    inputs = ["x"]

    def __init__(self, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> None:
        self.gamma, self.beta, self.eps = gamma, beta, eps

    def forward(self, xp, ins):  # type: ignore[no-untyped-def]
        x = ins[0]
        c = x - x.mean(-1, keepdims=True)
        return [c / xp.sqrt((c * c).mean(-1, keepdims=True) + self.eps) * self.gamma + self.beta]

    def linear_vjp(self, xp, x, g):  # type: ignore[no-untyped-def]
        c = x - x.mean(-1, keepdims=True)
        inv = 1 / xp.sqrt((c * c).mean(-1, keepdims=True) + self.eps)
        u = g * self.gamma * inv
        return (u - u.mean(-1, keepdims=True)).astype(g.dtype)


def test_norm_epsilon_rule_against_detached_sigma_autograd_and_conservation() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 8).astype(np.float32), rng.uniform(-0.3, 0.3, 8).astype(np.float32)
    for b in (beta, np.zeros_like(beta)):
        layer = LayerNormStandIn(gamma, b)
        y = layer.forward(np, [x])[0]
        r = rng.standard_normal((K,) + x.shape).astype(np.float32)
        got = NormEpsilon(SignEpsilon(1e-6))(layer, RuleContext(np), [x], [y], [r])[0]
        # LXT's layer_norm rule: autograd through (x − mean)/σ.detach()·γ + β, seeded with R/(y + ε), times x
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        mean = xt.mean(-1, keepdim=True)
        std = ((xt - mean) ** 2).mean(-1, keepdim=True).add(1e-5).sqrt()
        yt = (xt - mean) / std.detach() * torch.tensor(gamma, dtype=torch.float64) + torch.tensor(b,
                                                                                              dtype=torch.float64)
        for k in range(K):
            seed = torch.tensor(r[k], dtype=torch.float64) / (yt.detach() + torch.where(yt.detach() >= 0, 1e-6, -1e-6))
            (grad,) = torch.autograd.grad(yt, xt, seed, retain_graph=True)
            want = (grad * xt).detach().numpy()
            assert H.rel_err(got[k], want) < 1e-5
            if not b.any() and np.min(np.abs(y)) > 1e-2:  # without a shift the ε-rule conserves
                assert abs(float(got[k].sum(dtype=np.float64)) - float(r[k].sum(dtype=np.float64))) < 1e-4 * np.abs(
                    r[k]).sum()


# ---------------------------------------------------------------------------------------------
# self-attention blocks built with onnx.helper: gradient vs float64 finite differences


def attention_block(seed: int = 0, length: int = 5, dim: int = 8, heads: int = 2, classes: int = 3,
                    softmax_axis: int = -1, opset: int = 17, einsum: bool = False,
                    gated: bool = False, causal: bool = False) -> onnx.ModelProto:
    """``[N, L, D]`` → q, k, v projections → heads → ``softmax(q kᵀ/√d [+ causal mask]) v`` → output projection +
    residual → (optionally a gated unit ``(W₁h) ⊙ (W₂h)`` and a sigmoid gate) → mean over tokens → classes.

    The causal mask is a constant added to the scores: the float32 minimum above the diagonal (exporters write
    masks so; ``-inf`` constants are refused at load as non-finite weights)."""
    b = H.Builder(seed)
    dh = dim // heads

    def lin(x: str, fin: int, fout: int) -> str:
        return b.matmul_add(x, fin, fout)

    def split(t: str) -> str:
        r = b.op("Reshape", [t, b.ints([0, length, heads, dh])])
        return b.op("Transpose", [r], perm=[0, 2, 1, 3])  # type: ignore[return-value]

    q, k, v = (split(lin("x", dim, dim)) for _ in range(3))
    if einsum:
        s = b.op("Einsum", [q, k], equation="bhqd,bhkd->bhqk")
    else:
        s = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])  # type: ignore[list-item]
    s = b.op("Div", [s, b.const(np.float32(np.sqrt(dh)))])  # type: ignore[list-item]
    if causal:
        mask = np.triu(np.full((length, length), np.finfo(np.float32).min, np.float32), 1)
        s = b.op("Add", [s, b.const(mask)])  # type: ignore[list-item]
    if softmax_axis == -1:
        a = b.op("Softmax", [s], axis=3 if opset < 13 else -1)
    else:  # attention normalised over the queries: softmax over axis 2, written with transposes
        a = b.op("Softmax", [s], axis=2)
    o = b.op("MatMul", [a, v])  # type: ignore[list-item]
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]), b.ints([0, length, dim])])  # type: ignore[list-item]
    h = b.op("Add", [lin(o, dim, dim), "x"])  # type: ignore[arg-type]
    if gated:
        g = b.op("Mul", [lin(h, dim, dim), lin(h, dim, dim)])  # type: ignore[arg-type]
        h = b.op("Add", [h, b.op("Mul", [g, b.op("Sigmoid", [lin(h, dim, dim)])])])  # type: ignore[list-item,arg-type]
    if opset < 18:
        m = b.op("ReduceMean", [h], axes=[1], keepdims=0)  # type: ignore[list-item]
    else:
        m = b.op("ReduceMean", [h, b.ints([1])], keepdims=0)  # type: ignore[list-item]
    y = b.gemm(m, dim, classes)  # type: ignore[arg-type]
    return b.model([None, length, dim], [(y, H.FLOAT)], opset)


BLOCKS = {
    "matmul_opset17": {},
    "einsum_gated": {"einsum": True, "gated": True},
    "softmax_over_queries": {"softmax_axis": 2},
    "opset11_coerced_softmax": {"opset": 11},
    "opset13_gated": {"opset": 13, "gated": True},
    "causal_mask": {"causal": True},
}


def _fd_gradient(model: onnx.ModelProto, x: np.ndarray, target: int, h: float = 1e-6) -> np.ndarray:
    sess = H.ort_session(H.to_float64(model))
    name = sess.get_inputs()[0].name
    x64 = x.astype(np.float64)
    grad = np.zeros_like(x64)
    for idx in np.ndindex(*x.shape):
        plus, minus = x64.copy(), x64.copy()
        plus[idx] += h
        minus[idx] -= h
        up, down = sess.run(None, {name: plus})[0], sess.run(None, {name: minus})[0]
        grad[idx] = (up[idx[0], target] - down[idx[0], target]) / (2 * h)
    return grad


@pytest.mark.parametrize("name", list(BLOCKS))
def test_attention_block_gradient_matches_float64_finite_differences(name: str) -> None:
    model = attention_block(**BLOCKS[name])
    ex = Explainer(model, device="cpu")
    kinds = {row["kind"] for row in ex.layers("attnlrp")}
    assert {"product", "softmax"} <= kinds
    x = np.random.default_rng(7).standard_normal((2, 5, 8)).astype(np.float32)
    got = ex.explain(x, target=1, method="gradient")
    assert H.rel_err(got, _fd_gradient(model, x, 1)) < 1e-5


def test_every_lrp_method_runs_finite_on_attention_and_cp_lrp_differs_only_inside_attention() -> None:
    model = attention_block(gated=True)
    ex = Explainer(model, device="cpu")
    x = np.random.default_rng(8).standard_normal((2, 5, 8)).astype(np.float32)
    for method in onnxlrp.list_methods():
        if method in ("gradcam", "guided_gradcam", "smoothgrad", "integrated_gradients"):
            continue
        heat = ex.explain(x, target=2, method=method)
        assert heat.shape == x.shape and np.all(np.isfinite(heat)), method
    rules = {row["name"]: (row["rule"], row["kind"]) for row in ex.layers("attnlrp")}
    cp = {row["name"]: row["rule"] for row in ex.layers("cp_lrp")}
    differ = {rules[n][1] for n in rules if rules[n][0] != cp[n]}
    assert differ == {"softmax", "product"}  # gates: all relevance to the signal under both


def test_product_of_two_activations_is_explained_not_refused() -> None:
    """What was refused before: ``Mul`` of a Gemm output by a ReLU output (of another Gemm) is a product."""
    b = H.Builder()
    y = b.gemm(b.op("Mul", [b.gemm("x", 4, 5), b.relu(b.gemm("x", 4, 5))]), 5, 2)  # type: ignore[arg-type]
    ex = Explainer(b.model([None, 4], [(y, H.FLOAT)], 13), device="cpu")
    assert [r["kind"] for r in ex.layers("attnlrp") if r["op"] == "Mul"] == ["product"]


# ---------------------------------------------------------------------------------------------
# torch exports (fixtures of tools/make_lxt_fixtures.py): gradient vs torch autograd in float64

TORCH_FIXTURES = ["mha_torchscript", "mha_dynamo", "encoder_torchscript", "encoder_dynamo"]


@pytest.mark.parametrize("name", TORCH_FIXTURES)
def test_torch_attention_export_gradient_matches_autograd(name: str) -> None:
    ref = np.load(FIXTURES / "attention_torch_ref.npz")
    ex = Explainer(str(FIXTURES / f"attention_{name}.onnx"), device="cpu")
    kind = name.split("_")[0]
    x = ref[f"{kind}_x"]
    for t in (0, 2):
        got = ex.explain(x, target=t, method="gradient")
        assert H.rel_err(got, ref[f"{kind}_grad_t{t}"]) < 1e-5, (name, t)


def test_causal_mask_gets_no_relevance_and_keeps_maps_finite() -> None:
    """Masked scores (the float32 minimum) have attention weight 0: the softmax rule gives them 0, not NaN/inf (the
    gradient through the mask is checked against finite differences in the block tests)."""
    ex = Explainer(attention_block(causal=True), device="cpu")
    x = np.random.default_rng(9).standard_normal((2, 5, 8)).astype(np.float32)
    for method in ("attnlrp", "cp_lrp", "gradient", "sglrp", "epsilon_plus_flat"):
        heat = ex.explain(x, target=0, method=method)
        assert np.all(np.isfinite(heat)), method
    # the same network without the mask explains differently (the mask is in effect)
    plain = Explainer(attention_block(), device="cpu")
    assert H.rel_err(plain.explain(x, target=0, method="attnlrp"), ex.explain(x, target=0, method="attnlrp")) > 1e-2


@pytest.mark.parametrize("equation", ["ni,ij->nj", "ni,ji->nj", "...i,ij->...j", "ij,nli->nlj"])
def test_einsum_with_a_constant_weight_is_a_dense_layer(equation: str) -> None:
    b = H.Builder(3)
    h = b.relu(b.matmul_add("x", 4, 5))
    token = "l" in equation
    w = b.const(b.weight([3, 5] if equation.startswith("ni,ji") else [5, 3], 5))
    y = b.op("Einsum", [w, h] if equation.startswith("ij") else [h, w], equation=equation)
    if token:  # [N, L, 3] -> mean over tokens
        y = b.op("ReduceMean", [y], axes=[1], keepdims=0)
    model = b.model([None, 2, 4] if token else [None, 4], [(y, H.FLOAT)], 13)  # type: ignore[list-item]
    ex = Explainer(model, device="cpu")
    assert [r["kind"] for r in ex.layers("attnlrp") if r["op"] == "Einsum"] == ["linear"]
    x = np.random.default_rng(10).standard_normal((2, 2, 4) if token else (2, 4)).astype(np.float32)
    assert H.rel_err(ex.explain(x, target=1, method="gradient"), _fd_gradient(model, x, 1)) < 1e-5
