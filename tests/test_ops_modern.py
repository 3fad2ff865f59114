"""Ops of modern CNNs and transformers (issue 9): normalisations (LayerNorm, RMSNorm, GroupNorm,
InstanceNorm, L2 normalisation and their written-out forms), ``Gather``/``Reshape`` with the batch axis
tracked, class-token ``Concat``, ``Expand``/``Tile``, ``Where``, ``Neg``/``Reciprocal``/``Abs``,
``Resize``/``Upsample`` and ``ConvTranspose``.

* Adjoint identity ``⟨J v, u⟩ = ⟨v, Jᵀ u⟩`` of every new layer's VJP, ``J v`` by central finite
  differences of onnxruntime in float64 (step 1e-6; 1 for linear ops), tolerance 1e-5 of ``Σ|Jv ⊙ u|``.
* ``NormLayer.linear_vjp`` (σ held constant) against the formula, written out in float64.
* ``gradient`` on small ONNX nets against float64 central finite differences (the float64 copy of the
  same weights in ONNX's reference evaluator), relative error ≤ 1e-4 (float32 engine vs float64 reference).
* Torch exports (``dynamo=False`` and ``dynamo=True``) of tiny modules: ``gradient`` equals torch's
  autograd in float64 to ≤ 1e-5 relative (crosscheck: needs torch and onnxscript).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import helpers_onnx as H
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxlrp import Explainer
from onnxlrp.ops import NodeContext, lookup
from onnxlrp.ops.normalization import NormLayer

K = 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("modern")


# ---------------------------------------------------------------------------------------------
# one-node models: the adjoint identity


def _one_node(op: str, inputs: list[tuple[str, tuple[int, ...] | np.ndarray]], attrs: dict, opset: int,
              dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], name=f"node_{op}", **attrs)
    dyn = [helper.make_tensor_value_info(n, dtype, list(s)) for n, s in inputs if isinstance(s, tuple)]
    inits = []
    for n, a in inputs:
        if not isinstance(a, tuple):
            a = np.asarray(a)
            if a.dtype.kind == "f":
                a = a.astype(np.float64 if dtype == TensorProto.DOUBLE else np.float32)
            inits.append(numpy_helper.from_array(a, n))
    g = helper.make_graph([node], op, dyn, [helper.make_tensor_value_info("y", dtype, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def _layer_of(model: onnx.ModelProto, feeds: dict[str, np.ndarray], y: np.ndarray, opset: int):  # type: ignore[no-untyped-def]
    node = model.graph.node[0]
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    shapes = {n: tuple(v.shape) for n, v in feeds.items()}
    shapes["y"] = tuple(y.shape)
    builder = lookup(node.op_type)
    assert builder is not None, node.op_type
    return builder(NodeContext(node, consts, shapes, opset, {}))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


ADJOINT_CASES = {
    "layernorm_last": ("LayerNormalization", [("x", (2, 3, 6)), ("s", _rng(1).standard_normal(6)),
                                              ("b", _rng(2).standard_normal(6))], {"axis": -1}, 17, False),
    "layernorm_axis1": ("LayerNormalization", [("x", (2, 3, 4, 2)), ("s", _rng(3).standard_normal((3, 4, 2))),
                                               ("b", _rng(4).standard_normal((4, 2)))],
                        {"axis": 1, "epsilon": 1e-3}, 17, False),
    "instancenorm": ("InstanceNormalization", [("x", (2, 3, 4, 5)), ("s", _rng(5).standard_normal(3)),
                                               ("b", _rng(6).standard_normal(3))], {}, 17, False),
    "groupnorm18": ("GroupNormalization", [("x", (2, 4, 3, 3)), ("s", _rng(7).standard_normal(2)),
                                           ("b", _rng(8).standard_normal(2))], {"num_groups": 2}, 18, False),
    "groupnorm21": ("GroupNormalization", [("x", (2, 6, 5)), ("s", _rng(9).standard_normal(6)),
                                           ("b", _rng(10).standard_normal(6))],
                    {"num_groups": 3, "stash_type": 11}, 21, False),  # statistics in float64 for the reference
    "lpnorm": ("LpNormalization", [("x", (2, 3, 5))], {"axis": 1, "p": 2}, 17, False),
    "reducel2": ("ReduceL2", [("x", (2, 3, 4)), ("a", np.array([1, 2], np.int64))], {"keepdims": 0}, 18, False),
    # resizing: linear maps (finite differences with step 1 are exact)
    "resize_linear_half_pixel": ("Resize", [("x", (2, 2, 3, 4)), ("r", np.zeros(0, np.float32)),
                                            ("s", np.array([1, 1, 2, 1.5], np.float32))],
                                 {"mode": "linear"}, 13, True),
    "resize_cubic_align_sizes": ("Resize", [("x", (2, 2, 4, 3)), ("r", np.zeros(0, np.float32)),
                                            ("s", np.zeros(0, np.float32)), ("z", np.array([2, 2, 7, 5], np.int64))],
                                 {"mode": "cubic", "coordinate_transformation_mode": "align_corners"}, 13, True),
    "resize_nearest_down": ("Resize", [("x", (2, 2, 5, 6)), ("r", np.zeros(0, np.float32)),
                                       ("s", np.array([1, 1, 0.6, 0.5], np.float32))],
                            {"mode": "nearest", "coordinate_transformation_mode": "pytorch_half_pixel"}, 13, True),
    "upsample": ("Upsample", [("x", (2, 2, 3, 3)), ("s", np.array([1, 1, 2, 2], np.float32))], {"mode": "nearest"},
                 9, True),
    "convtranspose": ("ConvTranspose", [("x", (2, 4, 3, 3)), ("w", _rng(12).standard_normal((4, 6, 3, 3))),
                                        ("b", _rng(13).standard_normal(6))],
                      {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, 17, True),
    "expand": ("Expand", [("x", (2, 1, 3)), ("s", np.array([2, 4, 3], np.int64))], {}, 17, True),
    "tile": ("Tile", [("x", (2, 2, 3)), ("r", np.array([1, 3, 2], np.int64))], {}, 17, True),
    "where_const_branch": ("Where", [("c", _rng(14).random((3, 4)) > 0.5), ("x", (2, 3, 4)),
                                     ("v", np.float32(-1e4))], {}, 17, True),
    "where_two": ("Where", [("c", _rng(15).random((4,)) > 0.5), ("x", (2, 3, 4)), ("w", (2, 3, 1))], {}, 17, True),
    "neg": ("Neg", [("x", (2, 3))], {}, 17, True),
    "abs": ("Abs", [("x", (2, 3, 4))], {}, 17, False),
    "reciprocal": ("Reciprocal", [("x", (2, 3, 4))], {}, 17, False),
}


def _adjoint(model: onnx.ModelProto, feeds: dict[str, np.ndarray], opset: int, linear: bool,
             layer_inputs: list[str] | None = None) -> None:
    """Check ``⟨J v, u⟩ = ⟨v, Jᵀ u⟩`` for every activation input of the one-node model."""
    sess32 = H.ort_session(model)
    y = sess32.run(None, feeds)[0]
    m64 = H.to_float64(model, decompose_batchnorm=False)
    try:
        sess64 = H.ort_session(m64)
        sess64.run(None, {k: a.astype(np.float64) for k, a in feeds.items()})
    except Exception:  # noqa: BLE001 - no float64 kernel in onnxruntime (InstanceNormalization)
        sess64 = ReferenceEvaluator(m64)
    layer = _layer_of(model, feeds, y, opset)
    assert set(layer.inputs) == set(layer_inputs or feeds)
    rng = _rng(99)
    u = rng.standard_normal((K,) + y.shape).astype(np.float32)
    back = layer.vjp(np, [feeds[n] for n in layer.inputs], [y], [u])
    h = 1.0 if linear else 1e-6
    for name, jt_u in zip(layer.inputs, back, strict=True):
        v = rng.standard_normal(feeds[name].shape)
        f64 = {k: a.astype(np.float64) for k, a in feeds.items()}
        plus, minus = dict(f64), dict(f64)
        plus[name], minus[name] = f64[name] + h * v, f64[name] - h * v
        jv = (sess64.run(None, plus)[0] - sess64.run(None, minus)[0]) / (2 * h)
        for k in range(K):
            lhs = float(np.sum(jv * u[k]))
            rhs = float(np.sum(v * jt_u[k].astype(np.float64)))
            scale = float(np.sum(np.abs(jv * u[k])))
            assert scale > 0
            assert abs(lhs - rhs) <= 1e-5 * scale, (name, k, lhs, rhs)


@pytest.mark.parametrize("case", sorted(ADJOINT_CASES))
def test_vjp_adjoint_identity(case: str) -> None:
    op, inputs, attrs, opset, linear = ADJOINT_CASES[case]
    model = _one_node(op, inputs, attrs, opset)
    rng = _rng(len(case))
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs if isinstance(s, tuple)}
    if op in ("Abs", "Reciprocal"):  # keep away from the kink / the pole
        feeds = {n: np.where(np.abs(v) < 0.2, np.sign(v) * 0.2 + v, v).astype(np.float32) for n, v in feeds.items()}
    _adjoint(model, feeds, opset, linear)


def test_forward_matches_onnxruntime() -> None:
    """Each new layer's own forward (normalisations, resizing, ConvTranspose, Expand, Tile, Where) equals
    onnxruntime's output (float32, ≤ 1e-5 relative)."""
    for case in sorted(ADJOINT_CASES):
        op, inputs, attrs, opset, _ = ADJOINT_CASES[case]
        if op in ("Abs", "Reciprocal", "Neg"):  # activation / affine layers of elementwise.py
            continue
        model = _one_node(op, inputs, attrs, opset)
        rng = _rng(7)
        feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs if isinstance(s, tuple)}
        y = H.ort_session(model).run(None, feeds)[0]
        layer = _layer_of(model, feeds, y, opset)
        got = layer.forward(np, [feeds[n] for n in layer.inputs])[0]
        assert got.shape == y.shape and H.rel_err(got, y) < 1e-5, case


def test_linear_vjp_holds_sigma_constant() -> None:
    """``linear_vjp`` is the transposed Jacobian of ``x ↦ (x − μ(x))/σ ⊙ γ`` with σ frozen (float64 formula)."""
    for case, centered in (("layernorm_axis1", True), ("lpnorm", False), ("groupnorm18", True)):
        op, inputs, attrs, opset, _ = ADJOINT_CASES[case]
        model = _one_node(op, inputs, attrs, opset)
        rng = _rng(11)
        feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs if isinstance(s, tuple)}
        y = H.ort_session(model).run(None, feeds)[0]
        layer = _layer_of(model, feeds, y, opset)
        assert isinstance(layer, NormLayer) and layer.centered == centered
        x = feeds["x"].astype(np.float64)
        xv = x.reshape(layer.view)
        mu = xv.mean(axis=layer.red, keepdims=True) if centered else 0.0
        sigma = np.sqrt(((xv - mu) ** 2).mean(axis=layer.red, keepdims=True) + layer.epsilon)
        gamma = 1.0 if layer.gamma is None else layer.gamma.astype(np.float64)
        # the frozen map as an explicit matrix: column j = image of the unit vector e_j
        n = x.size
        eye = np.eye(n).reshape((n,) + x.shape)
        ev = eye.reshape((n,) + layer.view)
        cen = ev - ev.mean(axis=tuple(1 + a for a in layer.red), keepdims=True) if centered else ev
        cols = (cen / sigma).reshape((n,) + x.shape) * gamma
        jac = cols.reshape(n, n).T  # y = jac @ x (σ frozen)
        g = rng.standard_normal((K,) + x.shape)
        ref = (g.reshape(K, n) @ jac).reshape((K,) + x.shape)
        got = layer.linear_vjp(np, feeds["x"], g.astype(np.float32))
        assert H.rel_err(got, ref) < 1e-5, case
        # and the frozen map is what the forward computes, up to β
        beta = 0.0 if layer.beta is None else layer.beta
        assert H.rel_err((jac @ x.reshape(-1)).reshape(x.shape) + beta, y) < 1e-5


def test_norm_refusals() -> None:
    """Normalising over the batch axis, or p = 1, is refused by the builder."""
    from onnxlrp.ops import Unsupported

    for op, inputs, attrs, opset in (
        ("LayerNormalization", [("x", (2, 3)), ("s", np.ones((2, 3))), ("b", np.zeros((2, 3)))], {"axis": 0}, 17),
        ("LpNormalization", [("x", (2, 3))], {"axis": 1, "p": 1}, 17),
        ("LpNormalization", [("x", (2, 3))], {"axis": 0}, 17),
    ):
        model = _one_node(op, inputs, attrs, opset)
        feeds = {"x": np.ones((2, 3), np.float32)}
        with pytest.raises(Unsupported):
            _layer_of(model, feeds, np.ones((2, 3), np.float32), opset)


# ---------------------------------------------------------------------------------------------
# small nets built with onnx.helper: fused patterns and the gradient against finite differences


def _fd_gradient(model: onnx.ModelProto, x: np.ndarray, target: int, h: float = 1e-5) -> np.ndarray:
    """``∂y_t/∂x`` of the float64 copy of ``model`` by central differences (ONNX's reference evaluator)."""
    sess = ReferenceEvaluator(H.to_float64(model))
    name = model.graph.input[0].name
    x64 = x.astype(np.float64)
    grad = np.zeros_like(x64)
    flat = grad.reshape(-1)
    base = x64.reshape(-1)
    for i in range(base.size):
        p, m = base.copy(), base.copy()
        p[i] += h
        m[i] -= h
        yp = sess.run(None, {name: p.reshape(x.shape)})[0]
        ym = sess.run(None, {name: m.reshape(x.shape)})[0]
        flat[i] = (yp[:, target].sum() - ym[:, target].sum()) / (2 * h)
    return grad


def _written_norm(b: H.Builder, x: str, axes: list[int], centered: bool, style: str, c: int, axis_gamma: int) -> str:
    """A LayerNorm/RMSNorm written out the way exporters do (``style``: div / recip / div1 / powm)."""
    ax = b.ints(axes)
    if centered:
        d = b.op("Sub", [x, b.op("ReduceMean", [x, ax], keepdims=1)])
    else:
        d = x
    sq = b.op("Pow", [d, b.const(np.float32(2))]) if style != "recip" else b.op("Mul", [d, d])
    var = b.op("ReduceMean", [sq, ax], keepdims=1)
    e = b.op("Add", [var, b.const(np.float32(1e-5))])
    if style == "div":
        n = b.op("Div", [d, b.op("Sqrt", [e])])
    elif style == "recip":
        n = b.op("Mul", [d, b.op("Reciprocal", [b.op("Sqrt", [e])])])
    elif style == "div1":
        n = b.op("Mul", [b.op("Div", [b.const(np.float32(1)), b.op("Sqrt", [e])]), d])
    else:
        n = b.op("Mul", [d, b.op("Pow", [e, b.const(np.float32(-0.5))])])
    shape = [1] * 4
    shape[axis_gamma] = c
    gamma = b.const(b.rng.uniform(0.5, 1.5, c).reshape(shape[1:]).astype(np.float32))
    beta = b.const(b.rng.uniform(-0.3, 0.3, c).reshape(shape[1:]).astype(np.float32))
    return b.op("Add", [b.op("Mul", [gamma, n]), beta])  # type: ignore[list-item]


@pytest.mark.parametrize("style", ["div", "recip", "div1", "powm"])
@pytest.mark.parametrize("centered", [True, False])
def test_written_out_norms_fuse_and_differentiate(style: str, centered: bool, folder: Path) -> None:
    """ConvNeXt's channel LayerNorm and RMSNorm written out: one norm layer, gradient = finite differences."""
    b = H.Builder(seed=3)
    x = "x"
    h = b.conv(x, 3, 4, (3, 3), pads=[1, 1, 1, 1])
    h = _written_norm(b, h, [1], centered, style, 4, 1)  # over channels of NCHW, γ shaped (4, 1, 1)
    h = b.relu(h)
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    y = b.gemm(h, 4, 3)  # type: ignore[arg-type]
    arch = H._finish(b, f"wn_{style}_{centered}", (3, 4, 4), y, 18)
    path = H.save_checked(arch.model, folder, f"wn_{style}_{centered}", arch.shape)
    ex = Explainer(str(path), device="cpu")
    rows = ex.layers("gradient")
    norms = [r for r in rows if r["op"] in ("Norm", "RMSNorm", "LayerNorm")]
    assert len(norms) == 1, rows
    assert [r['kind'] for r in rows].count('norm') == 1 and len(rows) == 6, rows  # conv norm relu pool flatten gemm
    xin = _rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32)
    got = ex.explain(xin, target=1, method="gradient")
    ref = _fd_gradient(arch.model, xin, 1)
    assert H.rel_err(got, ref) < 1e-4


@pytest.mark.parametrize("clamp", ["Clip", "Max"])
def test_written_out_l2_normalize_fuses_and_differentiates(clamp: str, folder: Path) -> None:
    """``F.normalize`` written out (``Div(x, Expand(Clip(ReduceL2(x), min=ε)))``, or ``Max``): one norm layer; the
    gradient equals finite differences on samples whose norm is above ε and on one held at ε by the clamp."""
    b = H.Builder(seed=9)
    h = b.gemm("x", 6, 8)
    n = b.op("ReduceL2", [h], axes=[1], keepdims=1)
    floor = np.float32(2.0)
    c = b.op("Clip", [n, b.const(floor)]) if clamp == "Clip" else b.op("Max", [n, b.const(floor)])
    h = b.op("Div", [h, b.op("Expand", [c, b.ints([3, 8])])])
    arch = H._finish(b, f"l2_{clamp}", (6,), b.gemm(h, 8, 3), 17)  # type: ignore[arg-type]
    dims = arch.model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = 3
    path = H.save_checked(arch.model, folder, f"l2_{clamp}", arch.shape, batch=3)
    ex = Explainer(str(path), device="cpu")
    assert [r["op"] for r in ex.layers()] == ["Gemm", "L2Normalization", "Gemm"], ex.layers()
    x = _rng(3).standard_normal((3, 6)).astype(np.float32) * np.array([[3.0], [0.05], [2.0]], np.float32)
    pre = H.ort_session(arch.model).run(None, {"x": x})[0]
    assert pre.shape == (3, 3)
    got = ex.explain(x, target=0, method="gradient")
    assert H.rel_err(got, _fd_gradient(arch.model, x, 0)) < 1e-4


# ---------------------------------------------------------------------------------------------
# torch exports: gradient against torch's autograd in float64


def _torch_modules():  # type: ignore[no-untyped-def]
    """Tiny modules (built on demand: torch is optional), by name: (module, sample shape, exporters)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Tokens(nn.Module):
        """Linear → norm → GELU → mean over tokens → Linear (a transformer block's skeleton)."""

        def __init__(self, norm: nn.Module) -> None:
            super().__init__()
            self.inp, self.norm, self.head = nn.Linear(8, 8), norm, nn.Linear(8, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.head(nn.functional.gelu(self.norm(self.inp(x))).mean(1))

    class WrittenRMS(nn.Module):
        """HF/T5-style RMSNorm: ``w · x · rsqrt(mean(x²) + ε)``."""

        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.rand(8) + 0.5)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    class ChannelLN(nn.Module):
        """ConvNeXt's LayerNorm over the channels of NCHW, written out."""

        def __init__(self, c: int) -> None:
            super().__init__()
            self.w, self.b = nn.Parameter(torch.rand(c) + 0.5), nn.Parameter(torch.rand(c) - 0.5)

        def forward(self, x):  # type: ignore[no-untyped-def]
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            return self.w[:, None, None] * ((x - u) / torch.sqrt(s + 1e-6)) + self.b[:, None, None]

    def conv_net(norm: nn.Module) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 3))

    class ViT(nn.Module):
        """Patch embedding, class token, position embedding, one pre-norm attention block, head on ``x[:, 0]``."""

        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 2, stride=2)
            self.cls = nn.Parameter(torch.randn(1, 1, 8))
            self.pos = nn.Parameter(torch.randn(1, 5, 8) * 0.1)
            self.ln1, self.ln2 = nn.LayerNorm(8), nn.LayerNorm(8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
            self.head = nn.Linear(8, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            h = self.ln1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            x = x + self.mlp(self.ln2(x))
            return self.head(x[:, 0])

    class SwinHead(nn.Module):
        """Windows of an NHWC map merged into the batch axis (``(B·nW, w², C)``), a token mixer, windows undone,
        LayerNorm on NHWC, permute, pool, head: the batch axis leaves axis 0 and comes back."""

        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 1)
            self.mix = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            b = x.shape[0]
            x = self.patch(x).permute(0, 2, 3, 1)  # (B, 4, 4, C)
            w = x.reshape(b, 2, 2, 2, 2, 8).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4, 8)  # (B·4, 4, C)
            w = self.mix(w.transpose(1, 2)).transpose(1, 2)  # mixes the 4 tokens of each window
            x = w.reshape(b, 2, 2, 2, 2, 8).permute(0, 1, 3, 2, 4, 5).reshape(b, 4, 4, 8)
            x = self.norm(x).permute(0, 3, 1, 2)
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    class Decoder(nn.Module):
        """Upsampling of every kind exporters write: nearest, bilinear, bilinear with aligned corners, bicubic,
        a strided ConvTranspose2d, and an AvgPool2d that counts its zero padding."""

        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, padding=1)
            self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
            self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True)
            self.head = nn.Linear(4, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            f = nn.functional
            h = torch.relu(self.c1(x))
            h = f.interpolate(h, scale_factor=2, mode="nearest")
            h = f.interpolate(h, size=(7, 5), mode="bilinear", align_corners=False)
            h = torch.relu(self.up(h))
            h = f.interpolate(h, size=(9, 11), mode="bilinear", align_corners=True)
            h = f.interpolate(h, scale_factor=1.5, mode="bicubic", align_corners=False)
            h = self.pool(h)
            return self.head(h.mean((2, 3)))

    class Video(nn.Module):
        """A 3-D convolution, 3-D average and max pools (a video CNN's stem)."""

        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv3d(2, 4, (2, 3, 3), padding=(0, 1, 1))
            self.head = nn.Linear(4, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = nn.functional.avg_pool3d(torch.relu(self.c(x)), (1, 2, 2), padding=(0, 1, 1), count_include_pad=True)
            h = nn.functional.max_pool3d(h, (2, 2, 2))
            return self.head(h.flatten(2).mean(2))

    class ScaledStdConv(nn.Conv2d):
        """NFNet's weight-standardised convolution (timm's ScaledStdConv2d): the weight is normalised in the
        graph by a training-mode batch norm of the constant weight, which constant folding must remove."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__(cin, cout, 3, padding=1)
            self.gain = nn.Parameter(torch.rand(cout, 1, 1, 1) + 0.5)
            self.scale = self.weight[0].numel() ** -0.5

        def forward(self, x):  # type: ignore[no-untyped-def]
            w = nn.functional.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                                         weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                                         eps=1e-6).reshape_as(self.weight)
            return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)

    nfnet = nn.Sequential(ScaledStdConv(3, 4), nn.SiLU(), ScaledStdConv(4, 4), nn.GELU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    both, dyn = ("torchscript", "dynamo"), ("dynamo",)
    return {
        "layernorm": (Tokens(nn.LayerNorm(8)), (5, 8), both),
        "rmsnorm": (Tokens(nn.RMSNorm(8, eps=1e-6)), (5, 8), dyn),  # TorchScript cannot export aten::rms_norm
        "written_rms": (Tokens(WrittenRMS()), (5, 8), both),
        "groupnorm": (conv_net(nn.GroupNorm(2, 4)), (3, 6, 6), both),
        "instancenorm": (conv_net(nn.InstanceNorm2d(4, affine=True)), (3, 6, 6), both),
        "channel_layernorm": (conv_net(ChannelLN(4)), (3, 6, 6), both),
        "vit": (ViT(), (3, 4, 4), both),
        "swin_head": (SwinHead(), (3, 4, 4), both),
        "decoder": (Decoder(), (3, 3, 2), both),
        "video": (Video(), (2, 3, 6, 6), both),
        "nfnet_stdconv": (nfnet, (3, 5, 5), both),
    }


TORCH_CASES = [
    ("layernorm", "torchscript"), ("layernorm", "dynamo"), ("rmsnorm", "dynamo"), ("written_rms", "torchscript"),
    ("written_rms", "dynamo"), ("groupnorm", "torchscript"), ("groupnorm", "dynamo"), ("instancenorm", "torchscript"),
    ("instancenorm", "dynamo"), ("channel_layernorm", "torchscript"), ("channel_layernorm", "dynamo"),
    ("vit", "torchscript"), ("vit", "dynamo"), ("swin_head", "torchscript"), ("swin_head", "dynamo"),
    ("decoder", "torchscript"), ("decoder", "dynamo"), ("video", "torchscript"), ("video", "dynamo"),
    ("nfnet_stdconv", "torchscript"), ("nfnet_stdconv", "dynamo"),
]


def _export(torch, module, x, path: Path, exporter: str) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=True,
                              opset_version=18, verbose=False)
            onnx.save(onnx.load(str(path)), str(path))  # one file: the weights inside, not beside it
            Path(str(path) + ".data").unlink(missing_ok=True)
        else:
            torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                              opset_version=17, dynamic_axes={"x": {0: "N"}})


FIXTURES = Path(__file__).parent / "fixtures"
LIVE_CASES = [("vit", "torchscript"), ("swin_head", "dynamo"), ("rmsnorm", "dynamo"), ("decoder", "torchscript")]


def _reference(torch, module, x):  # type: ignore[no-untyped-def]
    """``∂(Σ_n y[n, 1])/∂x`` by torch autograd in float64."""
    x64 = x.double().requires_grad_(True)
    out = module.double()(x64)
    (ref,) = torch.autograd.grad(out[:, 1].sum(), x64)
    module.float()
    return ref.numpy()


def _batches(name: str, exporter: str) -> tuple[int, ...]:
    """Batch sizes checked: TorchScript exports have a dynamic batch axis; dynamo exports are fixed, and the two whose
    batch axis moves through reshapes (ViT's q/k/v split, Swin's windows) are exported at 1 and 3 samples too."""
    return (3, 1) if exporter == "torchscript" or name in ("vit", "swin_head") else (3,)


def _fixture(name: str, exporter: str, batch: int) -> Path:
    fixed = exporter == "dynamo" and batch != 3
    return FIXTURES / f"modern_{name}_{exporter}{f'_b{batch}' if fixed else ''}.onnx"


def make_fixtures(folder: Path = FIXTURES) -> None:
    """Write ``modern_<name>_<exporter>.onnx`` for every torch case and ``modern_torch_ref.npz`` with the inputs and
    the float64 autograd gradients (``python tests/test_ops_modern.py``; needs torch and onnxscript)."""
    import torch

    torch.manual_seed(0)
    refs: dict[str, np.ndarray] = {}
    modules = _torch_modules()
    for name, exporter in TORCH_CASES:
        module, shape, _ = modules[name]
        module = module.eval()
        for batch in _batches(name, exporter):
            x = torch.randn((batch,) + shape)
            if exporter == "dynamo" or batch == 3:
                _export(torch, module, x, folder / _fixture(name, exporter, batch).name, exporter)
            refs[f"{name}_{exporter}_{batch}_x"] = x.numpy()
            refs[f"{name}_{exporter}_{batch}_grad"] = _reference(torch, module, x)
    np.savez_compressed(folder / "modern_torch_ref.npz", **refs)


@pytest.mark.parametrize("name,exporter", TORCH_CASES, ids=[f"{a}-{b}" for a, b in TORCH_CASES])
def test_torch_export_gradient_matches_autograd(name: str, exporter: str) -> None:
    """Committed exports (both exporters) are explained as exported, and ``gradient`` equals torch autograd in
    float64 to ≤ 1e-5 relative, at the batch sizes of :func:`_batches`."""
    ref = np.load(FIXTURES / "modern_torch_ref.npz")
    for batch in _batches(name, exporter):
        ex = Explainer(str(_fixture(name, exporter, batch)), device="cpu")
        x, grad = ref[f"{name}_{exporter}_{batch}_x"], ref[f"{name}_{exporter}_{batch}_grad"]
        got = ex.explain(x, target=1, method="gradient")
        assert H.rel_err(got, grad) < 1e-5, (name, exporter, batch, H.rel_err(got, grad))


@pytest.mark.crosscheck
@pytest.mark.parametrize("name,exporter", LIVE_CASES, ids=[f"{a}-{b}" for a, b in LIVE_CASES])
def test_torch_export_live(name: str, exporter: str, folder: Path) -> None:
    """Live: export now with this torch (the fixtures' exporter may differ) and compare with autograd, ≤ 1e-5."""
    torch = pytest.importorskip("torch")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    torch.manual_seed(1)
    module, shape, _ = _torch_modules()[name]
    module = module.eval()
    x = torch.randn((3,) + shape)
    path = folder / f"live_{name}_{exporter}.onnx"
    _export(torch, module, x, path, exporter)
    got = Explainer(str(path), device="cpu").explain(x.numpy(), target=1, method="gradient")
    ref = _reference(torch, module, x)
    assert H.rel_err(got, ref) < 1e-5, H.rel_err(got, ref)


# ---------------------------------------------------------------------------------------------
# Resize and ConvTranspose: every attribute combination exporters use, against onnxruntime


def _resize_model(attrs: dict, scales: list[float] | None, sizes: list[int] | None, opset: int,
                  shape: tuple[int, ...]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    consts: dict[str, np.ndarray] = {}
    if opset < 11:
        ins = ["x", "sc"]
        consts["sc"] = np.asarray(scales, np.float32)
    elif scales is not None:
        ins = ["x", "", "sc"]
        consts["sc"] = np.asarray(scales, np.float32)
    else:
        ins = ["x", "", "", "sz"]
        consts["sz"] = np.asarray(sizes, np.int64)
    node = helper.make_node("Resize", ins, ["y"], **attrs)
    g = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset < 11 else 9
    return m, consts


RESIZE_GRID = [
    (mode, coord, nearest, exclude)
    for mode in ("nearest", "linear", "cubic")
    for coord in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
    for nearest in (("round_prefer_floor", "round_prefer_ceil", "floor", "ceil") if mode == "nearest" else ("",))
    for exclude in ((0, 1) if mode == "cubic" else (0,))
    if not (coord == "half_pixel_symmetric" and nearest == "floor")  # onnxruntime rounds its offset differently
]


def test_resize_matches_onnxruntime() -> None:
    """Forward of every mode × coordinate mode × nearest mode × exclude_outside, up- and downsampling, scales and
    sizes (opset 13; 19 for half_pixel_symmetric), and opset 10 / Upsample: onnxruntime's output to ≤ 1e-5."""
    from onnxlrp.ops.resize import ResizeLayer

    rng = _rng(21)
    shape = (2, 3, 5, 4)
    x = rng.standard_normal(shape).astype(np.float32)
    for mode, coord, nearest, exclude in RESIZE_GRID:
        attrs = {"mode": mode, "coordinate_transformation_mode": coord, "exclude_outside": exclude}
        if nearest:
            attrs["nearest_mode"] = nearest
        opset = 19 if coord == "half_pixel_symmetric" else 13
        for scales, sizes in (([1, 1, 2, 3], None), ([1, 1, 0.6, 1.5], None), (None, [2, 3, 7, 3]),
                              (None, [2, 3, 3, 9])):
            model, consts = _resize_model(attrs, scales, sizes, opset, shape)
            y = H.ort_session(model).run(None, {"x": x})[0]
            layer = _layer_of(model, {"x": x}, y, opset)
            assert isinstance(layer, ResizeLayer)
            got = layer.forward(np, [x])[0]
            assert H.rel_err(got, y) < 1e-5, (attrs, scales, sizes)
            if mode != "cubic":  # interpolation weights sum to 1: the gradient rule conserves relevance
                r = rng.random((1,) + y.shape).astype(np.float32)
                assert abs(float(layer.vjp(np, [x], [y], [r])[0].sum()) - float(r.sum())) < 1e-4 * float(r.sum())
    for mode in ("nearest", "linear"):
        model, _ = _resize_model({"mode": mode}, [1, 1, 2, 1.5], None, 10, shape)
        y = H.ort_session(model).run(None, {"x": x})[0]
        assert H.rel_err(_layer_of(model, {"x": x}, y, 10).forward(np, [x])[0], y) < 1e-5


CONVT_GRID = [
    ((4, 6), (3, 3), 1, {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    ((4, 6), (2, 2), 2, {"strides": [2, 2]}),
    ((2, 3), (3,), 1, {"strides": [2], "dilations": [2], "pads": [0, 2]}),
    ((2, 2), (3, 3), 1, {"strides": [2, 2], "output_shape": [10, 9]}),
    ((2, 2), (3, 3), 1, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((2, 2), (4, 4), 1, {"strides": [3, 3], "output_padding": [2, 1], "pads": [0, 1, 0, 2]}),
    ((2, 4), (2, 2, 2), 2, {"strides": [1, 2, 2]}),
]


@pytest.mark.parametrize("k", range(len(CONVT_GRID)))
def test_conv_transpose_matches_onnxruntime(k: int) -> None:
    """Forward = onnxruntime's (strides, dilations, groups, pads, output_padding, output_shape, SAME_UPPER, 1-/3-d),
    and ``lin_t`` is the adjoint of ``lin`` (float64, ≤ 1e-9 relative)."""
    from onnxlrp.ops.conv_transpose import ConvTransposeLayer

    (cin, cout), kernel, group, attrs = CONVT_GRID[k]
    rng = _rng(30 + k)
    shape = (2, cin) + (4,) * len(kernel)
    w = rng.standard_normal((cin, cout // group) + kernel).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    model = _one_node("ConvTranspose", [("x", shape), ("w", w), ("b", b)], dict(attrs, group=group), 17)
    x = rng.standard_normal(shape).astype(np.float32)
    y = H.ort_session(model).run(None, {"x": x})[0]
    layer = _layer_of(model, {"x": x}, y, 17)
    assert isinstance(layer, ConvTransposeLayer) and layer.kind == "linear"
    assert H.rel_err(layer.forward(np, [x])[0], y) < 1e-5
    v = rng.standard_normal(shape)
    u = rng.standard_normal(y.shape)
    w64 = w.astype(np.float64)
    lhs = float(np.sum(layer.lin(np, v, w64, None) * u))
    rhs = float(np.sum(v * layer.lin_t(np, u, w64)))
    assert abs(lhs - rhs) <= 1e-9 * float(np.sum(np.abs(u)) * np.sum(np.abs(v)))


# ---------------------------------------------------------------------------------------------
# the batch axis, tracked through reshapes


def _qkv_split(b: H.Builder) -> str:
    """``[N, 6] → Gemm → [N, 12] → Reshape [N, 3, 4] → Transpose → [3, N, 4] → Gather(axis 0, 1) → [N, 4]``:
    torchvision's q/k/v split, where axis 0 of the gathered tensor is not the batch."""
    h = b.relu(b.gemm("x", 6, 12))
    h = b.op("Reshape", [h, b.ints([0, 3, 4])])
    h = b.op("Transpose", [h], perm=[1, 0, 2])
    k = b.op("Gather", [h, b.const(np.asarray(1, np.int64))], axis=0)
    return b.gemm(k, 4, 3)  # type: ignore[arg-type]


def test_gather_on_axis_0_after_a_reshape_is_explained(folder: Path) -> None:
    """The q/k/v-style gather is explained at batch sizes 1 and 3, with the gradient of finite differences."""
    b = H.Builder(seed=4)
    arch = H._finish(b, "qkv", (6,), _qkv_split(b), 17)
    path = H.save_checked(arch.model, folder, "qkv", arch.shape)
    ex = Explainer(str(path), device="cpu")
    for n in (1, 3):
        x = _rng(n).standard_normal((n, 6)).astype(np.float32)
        got = ex.explain(x, target=2, method="gradient")
        assert H.rel_err(got, _fd_gradient(arch.model, x, 2)) < 1e-4, n


def _mixing_models() -> dict[str, onnx.ModelProto]:
    """Small classifiers that combine samples, each in its own way."""
    out = {}
    b = H.Builder(seed=5)  # a mean over the batch axis added to every sample
    h = b.relu(b.gemm("x", 6, 5))
    h = b.op("Add", [h, b.op("ReduceMean", [h], axes=[0], keepdims=1)])
    out["reduce_batch"] = H._finish(b, "m1", (6,), b.gemm(h, 5, 3), 13).model  # type: ignore[arg-type]
    b = H.Builder(seed=6)  # the first sample's features for everyone
    h = b.relu(b.gemm("x", 6, 5))
    h = b.op("Gather", [h, b.const(np.zeros(1, np.int64))], axis=0)
    h = b.op("Expand", [h, b.ints([2, 5])])
    out["gather_batch"] = H._finish(b, "m2", (6,), b.gemm(h, 5, 3), 13).model  # type: ignore[arg-type]
    b = H.Builder(seed=7)  # transposed: a dense layer across the samples
    h = b.op("Transpose", [b.relu(b.gemm("x", 6, 5))], perm=[1, 0])
    h = b.op("MatMul", [h, b.const(b.weight([2, 2], 2))])
    out["dense_over_batch"] = H._finish(b, "m3", (6,), b.op("Transpose", [b.gemm(h, 2, 2)], perm=[1, 0]),
                                        13).model  # type: ignore[arg-type]
    b = H.Builder(seed=8)  # the batch flattened into the features
    h = b.op("Reshape", [b.relu(b.gemm("x", 6, 5)), b.ints([1, 10])])
    h = b.op("Reshape", [b.gemm(h, 10, 6), b.ints([2, 3])])
    out["flatten_batch"] = H._finish(b, "m4", (6,), h, 13).model
    return out


@pytest.mark.parametrize("name", ["reduce_batch", "gather_batch", "dense_over_batch", "flatten_batch"])
def test_layers_that_mix_samples_are_refused_by_name(name: str, folder: Path) -> None:
    """With 2 samples each is refused before anything runs, naming the node and its op type."""
    import onnxlrp

    model = _mixing_models()[name]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = 2
    path = folder / f"mix_{name}.onnx"
    onnx.save(model, str(path))
    with pytest.raises(onnxlrp.UnsupportedModelError, match=r"node '\w+' \(op \w+\) .*it would mix samples"):
        Explainer(str(path), device="cpu")



if __name__ == "__main__":
    make_fixtures()


def test_global_response_norm_every_method(tmp_path: Path) -> None:
    """ConvNeXt-V2's GRN written out (ReduceL2 over space, Div by its channel mean, x·N + x): every method
    gives a finite map (ReduceL2 under the norm ε-rule: shares x²/‖x‖²) and the gradient is exact."""
    from onnxlrp import list_methods

    b = H.Builder(1)
    h = b.conv("x", 3, 4, [3, 3], pads=[1, 1, 1, 1])
    g = b.op("ReduceL2", [h, b.ints([2, 3])], keepdims=1)
    n = b.op("Div", [g, b.op("Add", [b.op("ReduceMean", [g, b.ints([1])], keepdims=1), b.const(np.float32(1e-6))])])
    y = b.op("Add", [b.op("Mul", [h, n]), h])
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [y])]), 4, 3)  # type: ignore[arg-type]
    model = b.model([None, 3, 5, 5], [(y, H.FLOAT)], 18)  # type: ignore[list-item]
    ex = Explainer(str(H.save_checked(model, tmp_path, "grn", (3, 5, 5))), device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    for method in list_methods():
        opts = {"n_samples": 2} if method == "smoothgrad" else {"steps": 2} if method == "integrated_gradients" else {}
        heat = ex.explain(x, target=1, method=method, **opts)
        assert np.all(np.isfinite(heat)), method
    jac = H.Reference64(model, y).jacobian(x)
    assert H.rel_err(ex.explain(x, target=1, method="gradient"), jac[:, 1]) < 1e-5
