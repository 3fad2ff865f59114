"""Each op's transposed map (``layer.vjp``) against the adjoint identity ⟨J v, u⟩ = ⟨v, Jᵀ u⟩, and the
generic convolution kernels against loop convolutions.

``J v`` comes from central finite differences of onnxruntime running a one-node model of the op:

* in float64 where onnxruntime has a float64 kernel (step 1e-6; exact for ops linear in the
  perturbed input, to ~1e-9 otherwise);
* else in float32 for ops that are linear in the perturbed input (step 1: exact up to float32
  rounding) or piecewise linear/quadratic (step 1e-2, with the inputs kept 0.05 away from every kink,
  and max-type ops fed well-separated values, so the central difference is exact up to rounding);
* else (Elu, Selu, Softplus, Softsign: smooth, no float64 kernel in onnxruntime) ONNX's reference
  evaluator in float64, after checking that its float32 forward equals onnxruntime's.

Every op type in ``onnxlrp.supported_ops()`` must have a case here (checked). Each case perturbs every
activation input of the node, with K = 2 cotangents in one call. Tolerance on the identity: relative
to ``Σ|Jv ⊙ u|``, 1e-5 for float64 finite differences, 1e-4 for float32 ones (rounding of the outputs
divided by the step).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import helpers_onnx as H
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import onnxlrp
from onnxlrp.ops import NodeContext, lookup
from onnxlrp.ops import kernels as KR

N = 2
K = 2
INT64_MAX = np.iinfo(np.int64).max
SMOOTH_NO_F64 = {"Elu", "Selu", "Softplus", "Softsign", "InstanceNormalization"}


@dataclass
class Case:
    """One node: ``inputs`` maps names to a shape (an activation) or an array (a constant)."""

    id: str
    op: str
    inputs: list[tuple[str, tuple[int, ...] | np.ndarray]]
    attrs: dict = field(default_factory=dict)
    opset: int = 17
    n_out: int = 1
    linear: bool = False  # linear in each activation input separately
    kinks: tuple[float, ...] = ()
    distinct: bool = False  # feed well-separated values (max-type ops)
    scale: float = 1.0
    gate_from_sigmoid: str | None = None  # input name produced by a Sigmoid (for the gate detection)


def _c(*shape: int, seed: int = 0, positive: bool = False) -> np.ndarray:
    a = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


def _i(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _f(v: float) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


X4 = (N, 3, 4, 4)
ACT = (N, 3, 4)

CASES: list[Case] = [
    # sums, scalings, gates
    Case("add_two", "Add", [("a", X4), ("b", X4)], linear=True),
    Case("add_broadcast", "Add", [("a", X4), ("b", (N, 3, 1, 1))], linear=True),
    Case("add_const", "Add", [("a", X4), ("c", _c(3, 1, 1))], linear=True),
    Case("sub_two", "Sub", [("a", ACT), ("b", ACT)], linear=True),
    Case("sub_const_minus_x", "Sub", [("c", _c(4)), ("a", ACT)], linear=True),
    Case("sum_three", "Sum", [("a", ACT), ("b", ACT), ("c", ACT)], linear=True),
    Case("mul_gate_broadcast", "Mul", [("a", X4), ("g", (N, 3, 1, 1))], linear=True),
    Case("mul_gate_sigmoid", "Mul", [("a", (N, 5)), ("g", (N, 5))], linear=True, gate_from_sigmoid="g"),
    Case("mul_const", "Mul", [("a", X4), ("c", _c(1, 3, 1, 1))], linear=True),
    Case("div_const", "Div", [("a", (N, 6)), ("c", _c(6, positive=True))], linear=True),
    Case("batchnorm_4d", "BatchNormalization",
         [("a", X4), ("s", _c(3, seed=1)), ("b", _c(3, seed=2)), ("m", _c(3, seed=3)), ("v", _c(3, positive=True))],
         {"epsilon": 1e-3}, linear=True),
    Case("batchnorm_3d", "BatchNormalization",
         [("a", ACT), ("s", _c(3, seed=4)), ("b", _c(3, seed=5)), ("m", _c(3, seed=6)), ("v", _c(3, positive=True))],
         linear=True, opset=13),
    # activations
    Case("relu", "Relu", [("a", ACT)], kinks=(0.0,)),
    Case("clip_relu6", "Clip", [("a", (N, 20)), ("lo", _f(0)), ("hi", _f(6))], kinks=(0.0, 6.0), scale=4.0),
    Case("clip_min_only", "Clip", [("a", ACT), ("lo", _f(-0.5))], kinks=(-0.5,), opset=13),
    Case("leakyrelu", "LeakyRelu", [("a", ACT)], {"alpha": 0.1}, kinks=(0.0,)),
    Case("prelu", "PRelu", [("a", ACT), ("s", _c(3, 1))], kinks=(0.0,)),
    Case("sigmoid", "Sigmoid", [("a", ACT)], scale=2.0),
    Case("hardsigmoid", "HardSigmoid", [("a", (N, 20))], {"alpha": 0.2, "beta": 0.5}, kinks=(-2.5, 2.5), scale=3.0),
    Case("hardswish", "HardSwish", [("a", (N, 20))], kinks=(-3.0, 3.0), scale=3.0),
    Case("tanh", "Tanh", [("a", ACT)]),
    Case("gelu", "Gelu", [("a", ACT)], opset=20, scale=2.0),
    Case("layernorm", "LayerNormalization", [("a", (N, 3, 6)), ("s", _c(6, seed=1)), ("b", _c(6, seed=2))],
         {"axis": -1}),
    Case("instancenorm", "InstanceNormalization", [("a", (N, 3, 4, 5)), ("s", _c(3, seed=3)), ("b", _c(3, seed=4))]),
    Case("groupnorm", "GroupNormalization", [("a", (N, 4, 3, 3)), ("s", _c(4, seed=5)), ("b", _c(4, seed=6))],
         {"num_groups": 2, "stash_type": 11}, opset=21),
    Case("lpnorm", "LpNormalization", [("a", (N, 3, 5))], {"axis": 1, "p": 2}),
    Case("reducel2", "ReduceL2", [("a", (N, 3, 4)), ("ax", _i(1, 2))], {"keepdims": 0}, opset=18),
    Case("resize_linear", "Resize", [("a", (N, 2, 3, 4)), ("r", np.zeros(0, np.float32)),
                                     ("sc", np.array([1, 1, 2, 1.5], np.float32))], {"mode": "linear"}, opset=13,
         linear=True),
    Case("upsample", "Upsample", [("a", (N, 2, 3, 3)), ("sc", np.array([1, 1, 2, 2], np.float32))], opset=9,
         linear=True),
    Case("convtranspose", "ConvTranspose", [("a", (N, 4, 3, 3)), ("w", _c(4, 3, 3, 3, seed=7)), ("b", _c(6, seed=8))],
         {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1], "group": 2}, linear=True),
    Case("expand", "Expand", [("a", (N, 1, 3)), ("s", _i(N, 4, 3))], linear=True),
    Case("tile", "Tile", [("a", (N, 2, 3)), ("r", _i(1, 3, 2))], linear=True),
    Case("where", "Where", [("c", np.random.default_rng(0).random((3, 4)) > 0.5), ("a", (N, 3, 4)), ("b", (N, 3, 1))],
         linear=True),
    Case("neg", "Neg", [("a", (N, 3))], linear=True),
    Case("abs", "Abs", [("a", (N, 3, 4))], kinks=(0.0,)),
    Case("reciprocal", "Reciprocal", [("a", (N, 3, 4))], kinks=(0.0,)),
    Case("gather_2d_repeated", "Gather", [("a", (N, 5, 3)), ("i", np.array([[0, 4], [4, 1]], np.int64))], {"axis": 1},
         linear=True),
    Case("softmax_last", "Softmax", [("a", (N, 3, 5))], {"axis": -1}),
    Case("softmax_coerced", "Softmax", [("a", (N, 3, 4))], {"axis": 1}, opset=11),
    Case("logsoftmax_axis1", "LogSoftmax", [("a", (N, 3, 4))], {"axis": 1}),
    Case("einsum_qk", "Einsum", [("a", (N, 2, 3, 4)), ("b", (N, 2, 5, 4))], {"equation": "bhqd,bhkd->bhqk"}),
    Case("gelu_tanh", "Gelu", [("a", ACT)], {"approximate": "tanh"}, opset=20, scale=2.0),
    Case("elu", "Elu", [("a", ACT)], {"alpha": 0.7}, kinks=(0.0,)),
    Case("selu", "Selu", [("a", ACT)], kinks=(0.0,)),
    Case("softplus", "Softplus", [("a", ACT)], scale=2.0),
    Case("softsign", "Softsign", [("a", ACT)], scale=2.0),
    # linear layers
    Case("gemm_transb_alpha_beta", "Gemm", [("a", (N, 5)), ("w", _c(3, 5)), ("c", _c(3))],
         {"transB": 1, "alpha": 0.5, "beta": 2.0}, linear=True),
    Case("gemm_no_bias", "Gemm", [("a", (N, 5)), ("w", _c(5, 3))], linear=True),
    Case("matmul_rank3", "MatMul", [("a", (N, 4, 5)), ("w", _c(5, 3))], linear=True),
    Case("conv_2d_group_stride_dilation", "Conv", [("a", (N, 4, 7, 6)), ("w", _c(6, 2, 3, 2)), ("b", _c(6))],
         {"group": 2, "strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 2, 1]}, linear=True),
    Case("conv_depthwise_multiplier", "Conv", [("a", (N, 3, 6, 6)), ("w", _c(6, 1, 3, 3))],
         {"group": 3, "pads": [1, 1, 1, 1]}, linear=True),
    Case("conv_depthwise", "Conv", [("a", (N, 3, 5, 5)), ("w", _c(3, 1, 2, 2)), ("b", _c(3))],
         {"group": 3, "strides": [2, 2]}, linear=True),
    Case("conv_1d", "Conv", [("a", (N, 2, 9)), ("w", _c(3, 2, 3))],
         {"strides": [2], "dilations": [2], "pads": [2, 1]}, linear=True),
    Case("conv_3d", "Conv", [("a", (N, 2, 4, 5, 4)), ("w", _c(2, 2, 2, 3, 2))],
         {"strides": [1, 2, 1], "pads": [1, 1, 0, 0, 1, 1]}, linear=True),
    Case("conv_same_lower", "Conv", [("a", (N, 2, 6, 5)), ("w", _c(3, 2, 2, 3))],
         {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, linear=True),
    Case("conv_same_upper", "Conv", [("a", (N, 2, 5, 5)), ("w", _c(3, 2, 2, 2))], {"auto_pad": "SAME_UPPER"},
         linear=True),
    # pools and reductions
    Case("avgpool_count_include_pad", "AveragePool", [("a", (N, 2, 6, 6))],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, linear=True),
    Case("avgpool_exclude_pad_ceil", "AveragePool", [("a", (N, 2, 7, 7))],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}, linear=True),
    Case("avgpool_include_pad_ceil", "AveragePool", [("a", (N, 2, 6, 7))],
         {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [0, 1, 1, 0], "ceil_mode": 1, "count_include_pad": 1},
         linear=True),
    Case("avgpool_1d", "AveragePool", [("a", (N, 2, 9))], {"kernel_shape": [3], "strides": [2]}, linear=True),
    Case("avgpool_3d", "AveragePool", [("a", (N, 1, 4, 4, 4))], {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]},
         linear=True),
    Case("global_avgpool", "GlobalAveragePool", [("a", (N, 3, 4, 5))], linear=True),
    Case("global_maxpool", "GlobalMaxPool", [("a", (N, 3, 4, 5))], distinct=True),
    Case("maxpool_ceil_pads", "MaxPool", [("a", (N, 2, 7, 7))],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}, distinct=True),
    Case("maxpool_dilated", "MaxPool", [("a", (N, 2, 7, 7))], {"kernel_shape": [2, 2], "dilations": [2, 2]},
         distinct=True),
    Case("maxpool_1d", "MaxPool", [("a", (N, 2, 9))], {"kernel_shape": [3], "strides": [3]}, distinct=True),
    Case("reduce_max", "ReduceMax", [("a", ACT)], {"axes": [2], "keepdims": 0}, distinct=True, opset=13),
    Case("reduce_mean_attr", "ReduceMean", [("a", X4)], {"axes": [2, 3], "keepdims": 1}, linear=True, opset=13),
    Case("reduce_mean_input", "ReduceMean", [("a", X4), ("ax", _i(-1))], {"keepdims": 0}, linear=True, opset=18),
    Case("reduce_sum", "ReduceSum", [("a", ACT), ("ax", _i(1))], linear=True, opset=13),
    # re-indexing
    Case("cast", "Cast", [("a", ACT)], {"to": TensorProto.FLOAT}, linear=True),
    Case("dropout", "Dropout", [("a", ACT)], linear=True),
    Case("identity", "Identity", [("a", ACT)], linear=True),
    Case("flatten", "Flatten", [("a", (N, 3, 2, 2))], {"axis": 1}, linear=True),
    Case("reshape", "Reshape", [("a", (N, 3, 4)), ("s", _i(0, 4, -1))], linear=True),
    Case("squeeze", "Squeeze", [("a", (N, 3, 1, 1)), ("ax", _i(2, 3))], linear=True),
    Case("unsqueeze", "Unsqueeze", [("a", (N, 3)), ("ax", _i(1, 3))], linear=True),
    Case("transpose", "Transpose", [("a", (N, 3, 4, 5))], {"perm": [0, 2, 3, 1]}, linear=True),
    Case("concat_with_const", "Concat", [("a", (N, 2, 3)), ("c", _c(N, 1, 3)), ("b", (N, 3, 3))], {"axis": 1},
         linear=True),
    Case("concat_last_axis", "Concat", [("a", (N, 3, 2)), ("b", (N, 3, 4))], {"axis": -1}, linear=True),
    Case("split_sizes", "Split", [("a", (N, 5, 3)), ("sp", _i(2, 3))], {"axis": 1}, n_out=2, linear=True, opset=13),
    Case("split_num_outputs", "Split", [("a", (N, 2, 6))], {"axis": 2, "num_outputs": 3}, n_out=3, linear=True,
         opset=18),
    Case("slice_negative_step", "Slice", [("a", (N, 5, 6)), ("s", _i(1, -1)), ("e", _i(4, -7)), ("ax", _i(1, 2)),
                                           ("st", _i(2, -2))], linear=True),
    Case("slice_to_end", "Slice", [("a", (N, 5, 6)), ("s", _i(2)), ("e", _i(INT64_MAX)), ("ax", _i(-1))],
         linear=True),
    Case("pad_value", "Pad", [("a", (N, 2, 3, 3)), ("p", _i(0, 0, 1, 0, 0, 0, 0, 2)), ("v", _f(0.5))], linear=True),
    Case("pad_negative_crop", "Pad", [("a", (N, 2, 4, 4)), ("p", _i(0, 0, -1, 1, 0, 0, 1, -2))], linear=True),
    Case("pad_axes", "Pad", [("a", (N, 2, 3, 3)), ("p", _i(1, 2)), ("v", _f(0.0)), ("ax", _i(3))], linear=True,
         opset=18),
    Case("gather_list", "Gather", [("a", (N, 5, 3)), ("i", _i(3, 0, -1))], {"axis": 1}, linear=True),
    Case("gather_scalar", "Gather", [("a", (N, 5, 3)), ("i", np.asarray(1, np.int64))], {"axis": 2}, linear=True),
]


# ---------------------------------------------------------------------------------------------
# building and evaluating one node


def _model(case: Case, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    outs = [f"y{i}" for i in range(case.n_out)]
    node = helper.make_node(case.op, [n for n, _ in case.inputs], outs, name=f"node_{case.id}", **case.attrs)
    dyn = [helper.make_tensor_value_info(n, dtype, list(s)) for n, s in case.inputs if isinstance(s, tuple)]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in case.inputs if not isinstance(a, tuple)]
    graph = helper.make_graph([node], case.id, dyn, [helper.make_tensor_value_info(o, dtype, None) for o in outs],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 9
    return model


def _inputs(case: Case) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    feeds = {}
    for name, s in case.inputs:
        if not isinstance(s, tuple):
            continue
        if case.distinct:  # values 0.1 apart: a perturbation of 1e-2·|v| never reorders a window
            x = (rng.permutation(int(np.prod(s))).reshape(s) * 0.1 - 1.0).astype(np.float64)
        else:
            x = rng.standard_normal(s) * case.scale
            for k in case.kinks:  # stay 0.05 away from every kink
                near = np.abs(x - k) < 0.05
                x = np.where(near, k + np.where(x >= k, 0.1, -0.1), x)
        feeds[name] = x.astype(np.float32)
    return feeds


class Evaluator:
    """``f(feeds) -> outputs`` of the one-node model, the finite-difference step and the tolerance."""

    def __init__(self, case: Case, feeds: dict[str, np.ndarray]) -> None:
        m32 = _model(case)
        self.out32 = H.ort_session(m32).run(None, feeds)
        try:
            sess = H.ort_session(H.to_float64(m32, decompose_batchnorm=False))
            sess.run(None, {k: v.astype(np.float64) for k, v in feeds.items()})
        except Exception:  # noqa: BLE001 - no float64 kernel for this op in onnxruntime
            sess = None
        if sess is not None:
            self.kind, self.dtype, self.tol = "ort64", np.float64, 1e-5
            self.h = 1.0 if case.linear else 1e-6
            self.run = lambda f: sess.run(None, f)
        elif case.op in SMOOTH_NO_F64:
            ref = ReferenceEvaluator(H.to_float64(m32))
            ref32 = ReferenceEvaluator(m32).run(None, feeds)
            for a, b in zip(ref32, self.out32, strict=True):
                assert H.rel_err(a, b) < 1e-6  # the reference evaluator computes what onnxruntime computes
            self.kind, self.dtype, self.tol, self.h = "reference64", np.float64, 1e-5, 1e-6
            self.run = lambda f: ref.run(None, f)
        else:
            sess32 = H.ort_session(m32)
            self.kind, self.dtype, self.tol = "ort32", np.float32, 1e-4
            self.h = 1.0 if case.linear else 1e-2
            self.run = lambda f: sess32.run(None, f)

    def jvp(self, feeds: dict[str, np.ndarray], name: str, v: np.ndarray) -> list[np.ndarray]:
        plus = {k: x.astype(self.dtype) for k, x in feeds.items()}
        minus = dict(plus)
        plus[name] = (feeds[name] + self.h * v).astype(self.dtype)
        minus[name] = (feeds[name] - self.h * v).astype(self.dtype)
        return [(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / (2 * self.h)
                for a, b in zip(self.run(plus), self.run(minus), strict=True)]


def _layer(case: Case, feeds: dict[str, np.ndarray], outs: list[np.ndarray]):  # type: ignore[no-untyped-def]
    node = _model(case).graph.node[0]
    consts = {n: np.asarray(a) for n, a in case.inputs if not isinstance(a, tuple)}
    shapes = {n: tuple(x.shape) for n, x in feeds.items()}
    shapes.update({f"y{i}": tuple(o.shape) for i, o in enumerate(outs)})
    producers = {}
    if case.gate_from_sigmoid:
        producers[case.gate_from_sigmoid] = helper.make_node("Sigmoid", ["s_in"], [case.gate_from_sigmoid])
    builder = lookup(case.op)
    assert builder is not None, case.op
    return builder(NodeContext(node, consts, shapes, case.opset, producers))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vjp_adjoint_identity(case: Case) -> None:
    feeds = _inputs(case)
    ev = Evaluator(case, feeds)
    layer = _layer(case, feeds, ev.out32)
    assert set(layer.inputs) == set(feeds)  # every activation input is an input of the layer
    outs = {f"y{i}": o for i, o in enumerate(ev.out32)}
    rng = np.random.default_rng(zlib.crc32(case.id.encode()) + 1)
    gouts = [rng.standard_normal((K,) + outs[o].shape).astype(np.float32) for o in layer.outputs]
    ins = [feeds[n] for n in layer.inputs]
    back = layer.vjp(np, ins, [outs[o] for o in layer.outputs], gouts)
    assert len(back) == len(layer.inputs)
    for name, jt_u in zip(layer.inputs, back, strict=True):
        assert jt_u is not None and jt_u.shape == (K,) + feeds[name].shape, (name, None if jt_u is None else jt_u.shape)
        v = np.clip(rng.standard_normal(feeds[name].shape), -3, 3)
        jv_all = ev.jvp(feeds, name, v)
        jv = [jv_all[int(o[1:])] for o in layer.outputs]
        for k in range(K):
            lhs = sum(float(np.sum(j * u[k])) for j, u in zip(jv, gouts, strict=True))
            rhs = float(np.sum(v * jt_u[k].astype(np.float64)))
            scale = sum(float(np.sum(np.abs(j * u[k]))) for j, u in zip(jv, gouts, strict=True))
            assert scale > 0
            assert abs(lhs - rhs) <= ev.tol * scale, (case.id, ev.kind, name, k, lhs, rhs)


def test_every_supported_op_has_a_case() -> None:
    missing = set(onnxlrp.supported_ops()) - {c.op for c in CASES}
    assert not missing, f"add adjoint cases for {sorted(missing)}"


def test_split_with_a_missing_output_gradient() -> None:
    case = next(c for c in CASES if c.id == "split_num_outputs")
    feeds = _inputs(case)
    outs = H.ort_session(_model(case)).run(None, feeds)
    layer = _layer(case, feeds, outs)
    g0 = np.ones((K,) + outs[0].shape, np.float32)
    got = layer.vjp(np, [feeds["a"]], outs, [g0, None, None])[0]
    want = np.zeros((K,) + feeds["a"].shape, np.float32)
    want[..., :2] = 1.0
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# the convolution kernels against loop convolutions

CONVS = [
    # (x shape, w shape, strides, dilations, pads, group)
    ((2, 3, 11), (4, 3, 3), [2], [2], [1, 2], 1),
    ((2, 4, 7, 6), (6, 2, 3, 2), [2, 1], [1, 2], [1, 0, 2, 1], 2),
    ((1, 3, 6, 5), (6, 1, 3, 3), [1, 2], [1, 1], [1, 1, 0, 2], 3),  # depthwise, multiplier 2
    ((2, 3, 5, 5), (3, 1, 2, 2), [2, 2], [2, 1], [0, 0, 1, 1], 3),  # depthwise
    ((1, 2, 4, 5, 4), (3, 2, 2, 3, 2), [1, 2, 1], [1, 1, 2], [1, 0, 1, 0, 1, 1], 1),
    ((2, 6, 5, 5), (9, 2, 1, 1), [1, 1], [1, 1], [0, 0, 0, 0], 3),
]


@pytest.mark.parametrize(("xs", "ws", "strides", "dilations", "pads", "group"), CONVS)
def test_conv_kernels_against_loops(xs, ws, strides, dilations, pads, group) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    kw = {"strides": strides, "dilations": dilations, "pads": pads, "group": group}
    want = H.naive_conv(x, w, b, **kw)
    got = KR.conv(np, x, w, b, strides, dilations, pads, group)
    assert got.shape == want.shape
    assert H.rel_err(got, want) < 1e-5
    # and onnxruntime agrees with the loop definition
    case = Case("k", "Conv", [("a", xs), ("w", w), ("b", b)], {**kw, "strides": strides}, linear=True)
    ort_y = H.ort_session(_model(case)).run(None, {"a": x})[0]
    assert H.rel_err(ort_y, want) < 1e-5
    v = rng.standard_normal(want.shape).astype(np.float32)
    want_t = H.naive_conv_transpose(v, w, xs[2:], **kw)
    got_t = KR.conv_transpose(np, v, w, xs[2:], strides, dilations, pads, group)
    assert got_t.shape == xs
    assert H.rel_err(got_t, want_t) < 1e-5
    # the loop transpose is the adjoint of the loop convolution
    u = rng.standard_normal(xs)
    lhs = np.sum(H.naive_conv(u, w, None, **kw) * v)
    assert abs(lhs - np.sum(u * want_t)) < 1e-9 * np.sum(np.abs(u)) * np.sum(np.abs(v))
