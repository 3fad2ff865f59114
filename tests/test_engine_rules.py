"""Every LRP rule against its formula in docs/methods.md, computed here with NumPy in float64.

Part 1: one linear layer (dense, or a convolution through its dense matrix, built by pushing unit
vectors through the loop convolution of ``helpers_onnx``), each rule object applied through
``Plan.backward`` with a random start relevance (two start vectors per sample ride in one pass).

Part 2: the public methods (composites + start relevance + post-processing) on a conv → relu →
conv → relu → dense net, all of it recomputed here with the convolutions as matrices.

Part 3: the rules of the non-linear nodes (sums, pools, BatchNorm, gates, scalings).

Part 4: conservation where the spec says it holds, and CLRP/SGLRP sums.

Tolerance: ``max|engine − reference| ≤ 1e-4 · max|reference|`` (float32 engine, float64 reference).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest

from onnxlrp import Explainer
from onnxlrp import composites as C
from onnxlrp import rules as R

TOL = 1e-4
K = 2  # start relevances per sample in one backward pass


# ---------------------------------------------------------------------------------------------
# the formulas of docs/methods.md, one sample: x (D,), W (M, D), b (M,), r (M,)


def pos(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0)


def neg(a: np.ndarray) -> np.ndarray:
    return np.minimum(a, 0)


def safe(z: np.ndarray) -> np.ndarray:
    """iNNvestigate: exact zeros get 1e-7, nothing else changes."""
    return z + (z == 0) * 1e-7


def stab(eps: float) -> Callable[[np.ndarray], np.ndarray]:
    """``z + s(z)·ε`` with ``s(0) = +1``."""
    return lambda z: z + np.where(z >= 0, eps, -eps)


def ref_z(x, w, b, r):  # type: ignore[no-untyped-def]
    return x * (w.T @ (r / safe(w @ x + b)))


def ref_epsilon(x, w, b, r, eps):  # type: ignore[no-untyped-def]
    return x * (w.T @ (r / stab(eps)(w @ x + b)))


def ref_ab_innvestigate(x, w, b, r, alpha, beta):  # type: ignore[no-untyped-def]
    wp, wn, xp, xn = pos(w), neg(w), pos(x), neg(x)
    sa = r / safe(wp @ xp + wn @ xn + b)
    out = alpha * (xp * (wp.T @ sa) + xn * (wn.T @ sa))
    if beta:
        si = r / safe(wn @ xp + wp @ xn + b)
        out = out - beta * (xp * (wn.T @ si) + xn * (wp.T @ si))
    return out


def ref_ab_zennit(x, w, b, r, alpha, beta, eps=1e-6):  # type: ignore[no-untyped-def]
    wp, wn, xp, xn = pos(w), neg(w), pos(x), neg(x)
    sp = r / stab(eps)(wp @ xp + wn @ xn + pos(b))
    sn = r / stab(eps)(wn @ xp + wp @ xn + neg(b))
    return alpha * (xp * (wp.T @ sp) + xn * (wn.T @ sp)) - beta * (xp * (wn.T @ sn) + xn * (wp.T @ sn))


def ref_gamma_zennit(x, w, b, r, gamma, eps=1e-6):  # type: ignore[no-untyped-def]
    z = w @ x + b
    wgp, wgn = w + gamma * pos(w), w + gamma * neg(w)
    bgp, bgn = b + gamma * pos(b), b + gamma * neg(b)
    xp, xn = pos(x), neg(x)
    sp = r * (z > 0) / stab(eps)(wgp @ xp + wgn @ xn + bgp)
    sn = r * (z < 0) / stab(eps)(wgn @ xp + wgp @ xn + bgn)
    return xp * (wgp.T @ sp) + xn * (wgn.T @ sp) + xp * (wgn.T @ sn) + xn * (wgp.T @ sn)


def ref_wsquare(w, b, r, div, with_bias):  # type: ignore[no-untyped-def]
    w2 = w * w
    z = w2.sum(axis=1) + (b * b if with_bias else 0.0)
    return w2.T @ (r / div(z))


def ref_flat(mask, r, div):  # type: ignore[no-untyped-def]
    return mask.T @ (r / div(mask.sum(axis=1)))


def ref_zbox(x, w, r, low, high, div):  # type: ignore[no-untyped-def]
    wp, wn = pos(w), neg(w)
    s = r / div(w @ x - wp @ low - wn @ high)
    return x * (w.T @ s) - low * (wp.T @ s) - high * (wn.T @ s)


# ---------------------------------------------------------------------------------------------
# one-layer models


class OneLayer:
    """A one-linear-layer model, its dense matrix and an Explainer whose plan runs the rules."""

    def __init__(self, kind: str, folder: Path) -> None:
        b = H.Builder(seed={"dense": 21, "dense_relu": 22, "relu_dense": 23, "conv": 24, "conv_dw": 25}[kind])
        self.kind = kind
        if kind.endswith("dense") or kind == "dense_relu":
            self.shape: tuple[int, ...] = (6,)
            w = b.weight([5, 6], 6)
            bias = b.bias(5)
            x = b.relu("x") if kind == "relu_dense" else "x"
            y = b.op("Gemm", [x, b.const(w), b.const(bias)], transB=1)
            if kind == "dense_relu":
                y = b.relu(y)  # type: ignore[arg-type]
            self.w, self.mask = w.astype(np.float64), np.ones((5, 6))
            self.b = bias.astype(np.float64)
        else:
            conv_kw: dict = (
                {"strides": [1, 2], "pads": [1, 0, 0, 1], "group": 1} if kind == "conv"
                else {"dilations": [2, 1], "pads": [2, 1, 1, 0], "group": 4}
            )
            cin, cout = (2, 3) if kind == "conv" else (4, 8)
            self.shape = (cin, 5, 5)
            w = b.weight([cout, cin // conv_kw["group"], 3, 3], 9 * cin // conv_kw["group"])
            bias = b.bias(cout)
            c = b.op("Conv", ["x", b.const(w), b.const(bias)], kernel_shape=[3, 3], **conv_kw)
            y = b.op("Flatten", [c])
            self.w = H.conv_matrix(w, self.shape, **conv_kw)
            self.mask = H.conv_matrix(np.ones_like(w), self.shape, **conv_kw)
            out = self.w.shape[0] // cout
            self.b = np.repeat(bias.astype(np.float64), out)
        self.model = b.model([None] + list(self.shape), [(y, H.FLOAT)], 17)  # type: ignore[list-item]
        path = H.save_checked(self.model, folder, kind, self.shape)
        self.ex = Explainer(str(path), device="cpu")
        self.classes = self.w.shape[0]

    def run(self, rule: R.Rule, x: np.ndarray, start: np.ndarray, bounds=None) -> np.ndarray:  # type: ignore[no-untyped-def]
        """The engine: ``rule`` on the linear layer; relevance passes the ReLU and follows the Flatten."""
        plan = self.ex._plan(x.shape)
        acts = plan.run_forward(x)
        ctx = R.RuleContext(np)
        if bounds is not None:
            ctx.bounds = plan.bounds(*bounds)
        comp = C.Composite("one", lambda layer: rule, {"activation": R.Pass()})
        return plan.backward(acts, start.astype(np.float32), comp.rule_for, ctx)

    def layer_input(self, x: np.ndarray) -> np.ndarray:
        """The linear layer's input for one sample (flattened, float64)."""
        v = np.asarray(x, np.float64).reshape(-1)
        return np.maximum(v, 0) if self.kind == "relu_dense" else v


KINDS = ["dense", "dense_relu", "relu_dense", "conv", "conv_dw"]
_LAYERS: dict[str, OneLayer] = {}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rules")


def one_layer(kind: str, folder: Path) -> OneLayer:
    if kind not in _LAYERS:
        _LAYERS[kind] = OneLayer(kind, folder)
    return _LAYERS[kind]


LOW, HIGH = -2.5, 3.0

# name → (engine rule, reference(x, W, b, r, mask, low, high))
RULES: dict[str, tuple[R.Rule, Callable[..., np.ndarray]]] = {
    "z": (R.z_rule(), lambda x, w, b, r, m, lo, hi: ref_z(x, w, b, r)),
    "epsilon_0.1": (R.epsilon(0.1), lambda x, w, b, r, m, lo, hi: ref_epsilon(x, w, b, r, 0.1)),
    "epsilon_1e-7": (R.epsilon(1e-7), lambda x, w, b, r, m, lo, hi: ref_epsilon(x, w, b, r, 1e-7)),
    "ab10_innvestigate": (R.alpha_beta_innvestigate(1.0, 0.0),
                          lambda x, w, b, r, m, lo, hi: ref_ab_innvestigate(x, w, b, r, 1.0, 0.0)),
    "ab21_innvestigate": (R.alpha_beta_innvestigate(2.0, 1.0),
                          lambda x, w, b, r, m, lo, hi: ref_ab_innvestigate(x, w, b, r, 2.0, 1.0)),
    "zplus_zennit": (R.zplus_zennit(), lambda x, w, b, r, m, lo, hi: ref_ab_zennit(x, w, b, r, 1.0, 0.0)),
    "ab21_zennit": (R.alpha_beta_zennit(2.0, 1.0), lambda x, w, b, r, m, lo, hi: ref_ab_zennit(x, w, b, r, 2.0, 1.0)),
    "gamma_0.25": (R.gamma_zennit(0.25), lambda x, w, b, r, m, lo, hi: ref_gamma_zennit(x, w, b, r, 0.25)),
    "gamma_1.5": (R.gamma_zennit(1.5), lambda x, w, b, r, m, lo, hi: ref_gamma_zennit(x, w, b, r, 1.5)),
    "wsquare_innvestigate": (R.wsquare(R.SafeDivide(), bias=False),
                             lambda x, w, b, r, m, lo, hi: ref_wsquare(w, b, r, safe, False)),
    "wsquare_zennit": (R.wsquare(R.SignEpsilon(1e-6), bias=True),
                       lambda x, w, b, r, m, lo, hi: ref_wsquare(w, b, r, stab(1e-6), True)),
    "flat_innvestigate": (R.flat(R.SafeDivide()), lambda x, w, b, r, m, lo, hi: ref_flat(m, r, safe)),
    "flat_zennit": (R.flat(R.SignEpsilon(1e-6)), lambda x, w, b, r, m, lo, hi: ref_flat(m, r, stab(1e-6))),
    "zbox_innvestigate": (R.zbox(R.SafeDivide()), lambda x, w, b, r, m, lo, hi: ref_zbox(x, w, r, lo, hi, safe)),
    "zbox_zennit": (R.zbox(R.SignEpsilon(1e-6)),
                    lambda x, w, b, r, m, lo, hi: ref_zbox(x, w, r, lo, hi, stab(1e-6))),
}


# Z^B needs bounds of the layer input: with a ReLU in front there are none (the rule is for input layers)
RULE_CASES = [(r, k) for r in RULES for k in KINDS if not (r.startswith("zbox") and k == "relu_dense")]


@pytest.mark.parametrize(("rule_name", "kind"), RULE_CASES)
def test_linear_rule_matches_formula(rule_name: str, kind: str, folder: Path) -> None:
    lay = one_layer(kind, folder)
    rule, ref = RULES[rule_name]
    rng = np.random.default_rng(zlib.crc32(f"{rule_name}/{kind}".encode()))
    x = rng.uniform(-2, 2, (2,) + lay.shape).astype(np.float32)
    start = rng.standard_normal((K, 2, lay.classes)).astype(np.float32)
    bounds = None
    lo_hi = (None, None)
    if rule_name.startswith("zbox"):
        # per-element bounds (one sample's worth, broadcast over the batch) exercise the bound mapping
        low = np.full(x.shape, LOW, np.float32) - rng.uniform(0, 0.5, (1,) + lay.shape).astype(np.float32)
        high = np.full(x.shape, HIGH, np.float32)
        bounds = (low, high)
    got = lay.run(rule, x, start, bounds)
    assert got.shape == (K,) + x.shape
    for n in range(2):
        xin = lay.layer_input(x[n])
        if bounds is not None:
            lo_hi = (bounds[0][n].reshape(-1).astype(np.float64), bounds[1][n].reshape(-1).astype(np.float64))
        for k in range(K):
            want = ref(xin, lay.w, lay.b, start[k, n].astype(np.float64), lay.mask, *lo_hi)
            err = H.rel_err(got[k, n].reshape(-1), want)
            assert err < TOL, (rule_name, kind, n, k, err)


def test_rules_differ_from_each_other(folder: Path) -> None:
    """The references above are distinct functions on this data (so a swapped rule would be caught)."""
    lay = one_layer("conv", folder)
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (1,) + lay.shape).astype(np.float32)
    start = rng.standard_normal((1, 1, lay.classes)).astype(np.float32)
    bounds = (np.full(x.shape, LOW, np.float32), np.full(x.shape, HIGH, np.float32))
    maps = {name: lay.run(rule, x, start, bounds).reshape(-1) for name, (rule, _) in RULES.items()}
    names = list(maps)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if {a, b} in ({"epsilon_1e-7", "z"}, {"flat_innvestigate", "flat_zennit"},
                          {"zbox_innvestigate", "zbox_zennit"}):
                continue  # these differ only in the stabiliser (~1e-6 relative)
            assert H.rel_err(maps[a], maps[b]) > 1e-3, (a, b)


def _exact_model(folder: Path, w: np.ndarray, bias: np.ndarray, name: str) -> Explainer:
    b = H.Builder()
    y = b.op("Gemm", ["x", b.const(w), b.const(bias)], transB=1)
    return Explainer(str(H.save_checked(b.model([None, w.shape[1]], [(y, H.FLOAT)], 13), folder, name)),  # type: ignore[list-item]
                     device="cpu")


def _run(ex: Explainer, rule: R.Rule, x: np.ndarray, start: np.ndarray) -> np.ndarray:
    plan = ex._plan(x.shape)
    return plan.backward(plan.run_forward(x), start, lambda layer: rule, R.RuleContext(np))


def test_safe_division_and_sign_of_zero(folder: Path) -> None:
    """z = 0 exactly: Z adds 1e-7, Epsilon adds +ε (s(0) = +1); a tiny nonzero z is left alone by Z."""
    w = np.array([[0.5, -0.25], [0.5, -0.5], [1.0, 1.0]], np.float32)
    bias = np.array([-0.25, 2.0**-20, 0.5], np.float32)
    ex = _exact_model(folder, w, bias, "exact")
    x = np.ones((1, 2), np.float32)
    z = x[0].astype(np.float64) @ w.T.astype(np.float64) + bias
    assert z[0] == 0.0 and z[1] == 2.0**-20  # the dyadic values make these exact in float32 too
    start = np.array([[[1.0, 1.0, 1.0]]], np.float32)
    wd = w.astype(np.float64)
    got_z = _run(ex, R.z_rule(), x, start)[0, 0]
    want_z = wd.T @ np.array([1 / 1e-7, 2.0**20, 1 / 2.5])
    assert H.rel_err(got_z, want_z) < 1e-6
    got_e = _run(ex, R.epsilon(0.01), x, start)[0, 0]
    want_e = wd.T @ np.array([1 / 0.01, 1 / (2.0**-20 + 0.01), 1 / 2.51])
    assert H.rel_err(got_e, want_e) < 1e-6
    # Zennit's stabiliser: every denominator moves, negative ones away from zero
    start_neg = np.array([[[0.0, 0.0, 1.0]]], np.float32)
    x_neg = -np.ones((1, 2), np.float32)  # z[2] = -2 + 0.5 = -1.5
    got_s = _run(ex, R.epsilon(0.5), x_neg, start_neg)[0, 0]
    assert H.rel_err(got_s, -1.0 * wd[2] * (1 / (-1.5 - 0.5))) < 1e-6


# ---------------------------------------------------------------------------------------------
# Part 2: the public methods on conv → relu → conv → relu → flatten → dense


class SmallNet:
    """conv(2→3, 3x3, pad 1) → relu → conv(3→4, 3x3, stride 2, pad 1) → relu → flatten → gemm(36→5)."""

    def __init__(self, folder: Path, bias: bool = True) -> None:
        b = H.Builder(seed=31)
        self.shape = (2, 6, 6)
        w1, b1 = b.weight([3, 2, 3, 3], 18), b.bias(3)
        w2, b2 = b.weight([4, 3, 3, 3], 27), b.bias(4)
        w3, b3 = b.weight([5, 36], 36), b.bias(5)
        if not bias:
            b1, b2, b3 = (np.zeros_like(v) for v in (b1, b2, b3))
        k1 = {"pads": [1, 1, 1, 1]}
        k2 = {"pads": [1, 1, 1, 1], "strides": [2, 2]}
        h = b.relu(b.op("Conv", ["x", b.const(w1), b.const(b1)], kernel_shape=[3, 3], **k1))  # type: ignore[arg-type]
        h = b.relu(b.op("Conv", [h, b.const(w2), b.const(b2)], kernel_shape=[3, 3], **k2))  # type: ignore[arg-type]
        y = b.op("Gemm", [b.op("Flatten", [h]), b.const(w3), b.const(b3)], transB=1)
        self.model = b.model([None, 2, 6, 6], [(y, H.FLOAT)], 17)  # type: ignore[list-item]
        self.ex = Explainer(str(H.save_checked(self.model, folder, f"smallnet{int(bias)}", self.shape)), device="cpu")
        self.mats = [H.conv_matrix(w1, (2, 6, 6), **k1), H.conv_matrix(w2, (3, 6, 6), **k2), w3.astype(np.float64)]
        self.masks = [H.conv_matrix(np.ones_like(w1), (2, 6, 6), **k1)]
        self.biases = [np.repeat(b1.astype(np.float64), 36), np.repeat(b2.astype(np.float64), 9),
                       b3.astype(np.float64)]

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Inputs of the three linear layers and the logits, one sample, float64."""
        a0 = x.reshape(-1).astype(np.float64)
        a1 = np.maximum(self.mats[0] @ a0 + self.biases[0], 0)
        a2 = np.maximum(self.mats[1] @ a1 + self.biases[1], 0)
        return [a0, a1, a2], self.mats[2] @ a2 + self.biases[2]

    def backward(self, method: str, x: np.ndarray, r: np.ndarray, low: np.ndarray, high: np.ndarray,
                 eps: float | None = None, gamma: float = 0.25, bias: bool = False) -> np.ndarray:
        """The composite's rules, layer by layer (relevance passes the ReLUs, except in the bounded
        Deep Taylor methods where ReLUs take the gradient, and the Flatten)."""
        kw_bias = bias
        (a0, a1, a2), _ = self.forward(x)
        (w1, w2, w3), (b1, b2, b3) = self.mats, self.biases
        m1 = self.masks[0]
        if method in ("lrp", "clrp", "sglrp"):
            # bounded Deep Taylor: ReLUs take the gradient, Alpha-Beta(1, 0) without bias (unless bias=True)
            r = ref_wsquare(w3, b3, r, safe, False) * (a2 > 0)
            r = ref_ab_innvestigate(a1, w2, b2 if kw_bias else 0.0, r, 1.0, 0.0) * (a1 > 0)
            return ref_zbox(a0, w1, r, low, high, safe)
        if method in ("lrp_preset_a", "lrp_preset_b", "sglrp_seq_a", "sglrp_seq_b"):
            r = ref_epsilon(a2, w3, b3, r, 0.1)
            ab = (1.0, 0.0) if method.endswith("a") else (2.0, 1.0)
            r = ref_ab_innvestigate(a1, w2, b2, r, *ab)
            return ref_flat(m1, r, safe)
        if method == "lrp_epsilon":
            e = 1e-7 if eps is None else eps
            r = ref_epsilon(a2, w3, b3, r, e)
            r = ref_epsilon(a1, w2, b2, r, e)
            return ref_epsilon(a0, w1, b1, r, e)
        r = ref_epsilon(a2, w3, b3, r, 1e-6)
        if method == "epsilon_plus_flat":
            return ref_flat(m1, ref_ab_zennit(a1, w2, b2, r, 1.0, 0.0), stab(1e-6))
        if method == "epsilon_alpha2_beta1_flat":
            return ref_flat(m1, ref_ab_zennit(a1, w2, b2, r, 2.0, 1.0), stab(1e-6))
        assert method == "epsilon_gamma_box"
        return ref_zbox(a0, w1, ref_gamma_zennit(a1, w2, b2, r, gamma), low, high, stab(1e-6))

    def reference(self, method: str, x: np.ndarray, t: int, low: np.ndarray, high: np.ndarray,
                  **kw: float) -> np.ndarray:
        """Start relevance (docs/methods.md, "The seed's methods"), backward and post-processing."""
        _, y = self.forward(x)
        c = y.size
        onehot = np.eye(c)[t]
        yr = np.maximum(y, 0)

        def softmax(v: np.ndarray) -> np.ndarray:
            e = np.exp(v - v.max())
            return e / e.sum()

        def bw(r: np.ndarray) -> np.ndarray:
            return self.backward(method, x, r, low, high, **kw)

        if method == "lrp":
            return bw(onehot * yr[t])
        if method == "clrp":
            target, dual = bw(onehot * yr[t]), bw((1 - onehot) * yr[t] / (c - 1))
            return target - dual * target.sum() / dual.sum()
        if method == "sglrp":
            p = softmax(yr)
            target = bw(onehot * (p[t] * (1 - p[t]) + 1e-8))
            dual = bw((1 - onehot) * p[t] * p)
            return target - dual * target.sum() / dual.sum()
        if method.startswith("sglrp_seq"):
            p = softmax(y)
            return bw(onehot * (p[t] * (1 - p[t]) + 1e-8) - (1 - onehot) * p[t] * p)
        return bw(onehot * y[t])


COMPOSITE_METHODS = ["lrp", "clrp", "sglrp", "sglrp_seq_a", "sglrp_seq_b", "lrp_preset_a", "lrp_preset_b",
                     "lrp_epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box"]
_NETS: dict[bool, SmallNet] = {}


def small_net(folder: Path, bias: bool = True) -> SmallNet:
    if bias not in _NETS:
        _NETS[bias] = SmallNet(folder, bias)
    return _NETS[bias]


@pytest.mark.parametrize("method", COMPOSITE_METHODS)
def test_method_matches_reference(method: str, folder: Path) -> None:
    net = small_net(folder)
    rng = np.random.default_rng(5)
    x = rng.uniform(-1.5, 2.0, (2,) + net.shape).astype(np.float32)
    targets = np.argsort(net.ex.predict(x), axis=1)[:, ::-1][:, :2].T  # the two best classes of each sample
    assert np.all(np.take_along_axis(net.ex.predict(x), targets.T, 1) > 0)  # LRP starts from max(y_t, 0)
    got = net.ex.explain(x, targets=targets, method=method)
    for i in range(2):
        for n in range(2):
            # default Z^B bounds: each sample's own min and max
            low = np.full(x[n].size, float(x[n].min()))
            high = np.full(x[n].size, float(x[n].max()))
            want = net.reference(method, x[n], int(targets[i, n]), low, high)
            assert np.max(np.abs(want)) > 0
            assert H.rel_err(got[i, n].reshape(-1), want) < TOL, (method, i, n)


@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("lrp", {"low": -3.0, "high": 4.0}),
        ("epsilon_gamma_box", {"low": -3.0, "high": 4.0, "gamma": 0.7}),
        ("lrp_epsilon", {"epsilon": 0.05}),
    ],
)
def test_method_options_reach_the_rules(method: str, opts: dict, folder: Path) -> None:
    net = small_net(folder)
    x = np.random.default_rng(6).uniform(-1.5, 2.0, (1,) + net.shape).astype(np.float32)
    got = net.ex.explain(x, target=2, method=method, **opts)
    low = np.full(x[0].size, opts.get("low", float(x.min())))
    high = np.full(x[0].size, opts.get("high", float(x.max())))
    kw = {k: opts[k] for k in ("gamma",) if k in opts}
    if "epsilon" in opts:
        kw["eps"] = opts["epsilon"]
    want = net.reference(method, x[0], 2, low, high, **kw)
    assert H.rel_err(got[0].reshape(-1), want) < TOL
    # and the option changes the result (so a dropped option would be caught)
    assert H.rel_err(net.ex.explain(x, target=2, method=method)[0].reshape(-1), want) > 1e-3


def test_lrp_with_array_bounds(folder: Path) -> None:
    net = small_net(folder)
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2,) + net.shape).astype(np.float32)
    low = (-1.0 - rng.uniform(0, 1, net.shape)).astype(np.float32)  # per pixel, shared by the batch
    high = (1.0 + rng.uniform(0, 1, net.shape)).astype(np.float32)
    got = net.ex.explain(x, target=0, method="lrp", low=low, high=high)
    for n in range(2):
        want = net.reference("lrp", x[n], 0, low.reshape(-1).astype(np.float64), high.reshape(-1).astype(np.float64))
        assert H.rel_err(got[n].reshape(-1), want) < TOL


# ---------------------------------------------------------------------------------------------
# Part 3: rules of the other nodes, through Plan.backward with a random start relevance


def _other_model(kind: str, folder: Path) -> tuple[Explainer, dict]:
    """A model whose only non-reindexing node is the one under test; returns its parameters too."""
    b = H.Builder(seed=41)
    info: dict = {}
    if kind == "add":
        p1, p2 = b.op("Split", ["x", b.ints([2, 2])], n_out=2, axis=1)
        y = b.op("Add", [p1, p2])
    elif kind == "avgpool":
        y = b.op("AveragePool", ["x"], kernel_shape=[2, 3], strides=[1, 2], pads=[1, 1, 0, 1], count_include_pad=0)
    elif kind == "gap":
        y = b.op("GlobalAveragePool", ["x"])
    elif kind == "maxpool":
        y = b.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[1, 1])
    elif kind == "batchnorm":
        y = b.bn("x", 4, epsilon=1e-3)
        info["bn_inputs"] = list(b.nodes[-1].input[1:])
        info["eps"] = 1e-3
    elif kind == "gate":
        sig, g = b.op("Split", ["x", b.ints([3, 1])], n_out=2, axis=1)
        gate = b.op("Sigmoid", [b.op("ReduceMean", [g], axes=[2, 3], keepdims=1)])
        y = b.op("Mul", [sig, gate])
    elif kind == "affine":
        y = b.op("Add", [b.op("Mul", ["x", b.const(np.float32(-1.7))]), b.const(np.float32(0.3))])
    else:
        raise ValueError(kind)
    y = b.op("Flatten", [y])
    model = b.model([None, 4, 3, 3], [(y, H.FLOAT)], 13)  # type: ignore[list-item]
    info["model"] = model
    if "bn_inputs" in info:
        weights = H.dense_weights(model)
        info["params"] = [weights[n] for n in info["bn_inputs"]]
    return Explainer(str(H.save_checked(model, folder, f"other_{kind}", (4, 3, 3))), device="cpu"), info


def _run_composite(ex: Explainer, comp: C.Composite, x: np.ndarray, start: np.ndarray) -> np.ndarray:
    plan = ex._plan(x.shape)
    ctx = R.RuleContext(np)
    if comp.needs_bounds:
        ctx.bounds = plan.bounds(np.full(x.shape, -5, np.float32), np.full(x.shape, 5, np.float32))
    return plan.backward(plan.run_forward(x), start, comp.rule_for, ctx)


def _pool_matrix(model, shape) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The (linear) pool as a matrix, by pushing unit vectors through onnxruntime."""
    d = int(np.prod(shape))
    sess = H.ort_session(model)
    cols = sess.run(None, {"x": np.eye(d, dtype=np.float32).reshape((d,) + tuple(shape))})[0]
    return cols.reshape(d, -1).T.astype(np.float64)


@pytest.mark.parametrize("kind", ["add", "avgpool", "gap", "maxpool", "batchnorm", "gate", "affine"])
@pytest.mark.parametrize("composite", ["lrp_preset_a", "lrp", "epsilon_plus_flat"])
def test_other_node_rules(kind: str, composite: str, folder: Path) -> None:
    ex, info = _other_model(kind, folder)
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, (2, 4, 3, 3)).astype(np.float32)
    if kind == "maxpool":  # distinct values: no ties
        x = (rng.permutation(72).reshape(2, 4, 3, 3) * 0.1 - 3.5).astype(np.float32)
    classes = ex.predict(x).shape[1]
    start = rng.standard_normal((K, 2, classes)).astype(np.float32)
    comp = {"lrp": C.bounded_deep_taylor, "lrp_preset_a": C.lrp_preset_a,
            "epsilon_plus_flat": C.epsilon_plus_flat}[composite]()
    got = _run_composite(ex, comp, x, start)
    innvestigate = composite == "lrp_preset_a"
    z_div = safe if innvestigate else stab(1e-6)
    for n in range(2):
        xv = x[n].reshape(-1).astype(np.float64)
        for k in range(K):
            r = start[k, n].astype(np.float64)
            if kind in ("add", "avgpool", "gap"):
                if kind == "add":
                    mat = np.hstack([np.eye(18), np.eye(18)])
                else:
                    mat = _pool_matrix(info["model"], (4, 3, 3))
                if composite == "lrp":  # the seed's LRP: the gradient through pools and sums
                    want = mat.T @ r
                else:
                    want = xv * (mat.T @ (r / z_div(mat @ xv)))
            elif kind == "maxpool":
                xs = x[n].astype(np.float64)
                want = np.zeros_like(xs)
                rr = r.reshape(4, 2, 2)
                for c in range(4):
                    for i in range(2):
                        for j in range(2):
                            win = xs[c, i:i + 2, j:j + 2]
                            a, bb = np.unravel_index(np.argmax(win), (2, 2))
                            want[c, i + a, j + bb] += rr[c, i, j]
                want = want.reshape(-1)
            elif kind == "batchnorm":
                gamma, beta, mean, var = (p.reshape(4, 1, 1) for p in info["params"])
                xs = x[n].astype(np.float64)
                y = (xs - mean) * gamma / np.sqrt(var + info["eps"]) + beta
                rr = r.reshape(4, 3, 3)
                if innvestigate:
                    den = (xs - mean) * y
                    den = den + np.where(den >= 0, 1e-7, -1e-7)
                    want = (xs * (y - beta) * rr / safe(den)).reshape(-1)
                else:
                    want = r  # passed unchanged
            elif kind == "gate":
                if composite == "epsilon_plus_flat":
                    continue  # Zennit takes the gradient through the product; not pinned by the spec
                want = np.concatenate([r, np.zeros(9)])  # all to the signal, none to the gate
            else:  # affine: relevance passes constant scalings unchanged
                want = r if composite != "epsilon_plus_flat" else r * -1.7  # Zennit: gradient
            assert H.rel_err(got[k, n].reshape(-1), want) < TOL, (kind, composite, n, k)


# ---------------------------------------------------------------------------------------------
# Part 4: conservation


def _conservation_net(folder: Path, bias: bool) -> Explainer:
    """Bias-free (or not) conv → relu → maxpool → conv → relu → residual add → avgpool → dense → relu → dense."""
    b = H.Builder(seed=51)
    h = b.relu(b.conv("x", 2, 4, [3, 3], pads=[1, 1, 1, 1], bias=bias))
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])  # 4x3x3
    h2 = b.relu(b.conv(h, 4, 4, [3, 3], pads=[1, 1, 1, 1], bias=bias))  # type: ignore[arg-type]
    h = b.op("Add", [h2, h])
    h = b.op("AveragePool", [h], kernel_shape=[2, 2], strides=[1, 1])  # 4x2x2
    h = b.relu(b.gemm(b.op("Flatten", [h]), 16, 6, bias=bias))  # type: ignore[arg-type]
    y = b.gemm(h, 6, 4, bias=bias)
    model = b.model([None, 2, 6, 6], [(y, H.FLOAT)], 17)
    return Explainer(str(H.save_checked(model, folder, f"conserve{int(bias)}", (2, 6, 6))), device="cpu")


def _composite(rule: R.Rule) -> C.Composite:
    other = {"activation": R.Pass(), "add": R.ZNorm(R.SafeDivide()), "avgpool": R.ZNorm(R.SafeDivide())}
    return C.Composite("test", lambda layer: rule, other)


CONSERVING = {
    "z": R.z_rule(),
    "epsilon_1e-9": R.epsilon(1e-9),
    "ab10": R.alpha_beta_innvestigate(1.0, 0.0),
}


@pytest.mark.parametrize("rule_name", list(CONSERVING))
def test_conservation_without_bias(rule_name: str, folder: Path) -> None:
    rng = np.random.default_rng(8)
    x = rng.uniform(-2, 2, (3, 2, 6, 6)).astype(np.float32)
    start = rng.standard_normal((K, 3, 4)).astype(np.float32)
    comp = _composite(CONSERVING[rule_name])
    rel = _run_composite(_conservation_net(folder, bias=False), comp, x, start)
    sums = rel.reshape(K, 3, -1).astype(np.float64).sum(-1)
    want = start.astype(np.float64).sum(-1)
    # float32 sums of ~72 terms of either sign: 1e-5 of Σ|R| is ample and far below any real leak
    scale = np.abs(rel.reshape(K, 3, -1)).sum(-1)
    assert np.all(np.abs(sums - want) <= 1e-5 * scale), (sums, want)
    # with biases the same rules do not conserve (the bias absorbs relevance): the check can fail
    leaky = _run_composite(_conservation_net(folder, bias=True), comp, x, start)
    lsums = leaky.reshape(K, 3, -1).astype(np.float64).sum(-1)
    assert np.max(np.abs(lsums - want)) > 1e-2 * np.max(np.abs(want))


def test_lrp_epsilon_sums_to_the_logit_on_a_bias_free_relu_net(folder: Path) -> None:
    arch = H.arch_mlp_relu(bias=False)
    ex = Explainer(str(H.save_checked(arch.model, folder, "mlp_nobias", arch.shape)), device="cpu")
    x = np.random.default_rng(9).standard_normal((4, 6)).astype(np.float32)
    y = ex.predict(x).astype(np.float64)
    for t in range(4):
        for opts in ({}, {"epsilon": 1e-9}):
            heat = ex.explain(x, target=t, method="lrp_epsilon", **opts).astype(np.float64)
            np.testing.assert_allclose(heat.sum(1), y[:, t], rtol=1e-5, atol=1e-6 * np.abs(y).max())
        # the seed's LRP (Z^B / Alpha-Beta(1,0) / W²) cannot create relevance: its ReLUs take the
        # gradient, which drops what the x-free W² rule gives dead units, so it sums to at most max(y_t, 0)
        heat = ex.explain(x, target=t, method="lrp", low=-4.0, high=4.0).astype(np.float64)
        assert np.all(heat.sum(1) <= np.maximum(y[:, t], 0) + 1e-5 * np.abs(y).max())


@pytest.mark.parametrize("method", ["clrp", "sglrp"])
def test_contrastive_maps_sum_to_zero(method: str, folder: Path) -> None:
    net = small_net(folder)
    x = np.random.default_rng(10).uniform(-1.5, 2, (3,) + net.shape).astype(np.float32)
    targets = np.argsort(net.ex.predict(x), axis=1)[:, ::-1][:, :2].T  # y_t > 0, else CLRP's map is 0
    heat = net.ex.explain(x, targets=targets, method=method).astype(np.float64)
    sums = heat.reshape(2, 3, -1).sum(-1)
    scale = np.abs(heat.reshape(2, 3, -1)).sum(-1)
    assert np.all(scale > 0)
    # float32 rounding of each term: |Σ| ≤ n·ε₃₂·max ~ 1e-7·Σ|h|; 1e-5 leaves a margin
    assert np.all(np.abs(sums) <= 1e-5 * scale), sums / scale
    # and the plain target pass does not sum to zero
    lrp = net.ex.explain(x, targets=targets, method="lrp").astype(np.float64).reshape(2, 3, -1).sum(-1)
    assert np.any(np.abs(lrp) > 1e-3)


def test_zbox_bounds_follow_preprocessing_scalings(folder: Path) -> None:
    """Sub/Div/Mul by constants before the first conv map the Z^B box (a negative scale swaps low and high)."""
    b = H.Builder(seed=81)
    mean, std, sign = np.array([0.2, -0.1]), np.array([0.5, 2.0]), np.array([1.0, -1.0])
    h = b.op("Sub", ["x", b.const(mean.reshape(2, 1, 1))])
    h = b.op("Div", [h, b.const(std.reshape(2, 1, 1))])
    h = b.op("Mul", [h, b.const(sign.reshape(2, 1, 1))])
    w1, b1 = b.weight([3, 2, 3, 3], 18), b.bias(3)
    w2, b2 = b.weight([2, 48], 48), b.bias(2)
    h = b.relu(b.op("Conv", [h, b.const(w1), b.const(b1)], kernel_shape=[3, 3], pads=[0, 0, 0, 0]))  # type: ignore[list-item]
    y = b.op("Gemm", [b.op("Flatten", [h]), b.const(w2), b.const(b2)], transB=1)
    model = b.model([None, 2, 6, 6], [(y, H.FLOAT)], 17)  # type: ignore[list-item]
    ex = Explainer(str(H.save_checked(model, folder, "prep", (2, 6, 6))), device="cpu")
    assert [r["rule"] for r in ex.layers("lrp")][-4:] == ["z-box", "gradient", "gradient", "w-square"]
    x = np.random.default_rng(12).uniform(-1, 2, (2, 2, 6, 6)).astype(np.float32)
    lo, hi = -1.0, 2.0

    def affine(v: np.ndarray) -> np.ndarray:
        return ((v - mean.reshape(2, 1, 1)) / std.reshape(2, 1, 1) * sign.reshape(2, 1, 1)).reshape(-1)

    m1 = H.conv_matrix(w1, (2, 6, 6))
    low_m = np.minimum(affine(np.full((2, 6, 6), lo)), affine(np.full((2, 6, 6), hi)))
    high_m = np.maximum(affine(np.full((2, 6, 6), lo)), affine(np.full((2, 6, 6), hi)))
    y = ex.predict(x)
    t = int(np.argmax(y[0]))
    got = ex.explain(x, target=t, method="lrp", low=lo, high=hi)
    for n in range(2):
        a0 = affine(x[n].astype(np.float64))
        r = np.eye(2)[t] * max(float(y[n, t]), 0.0)
        r = ref_wsquare(w2.astype(np.float64), None, r, safe, False)
        r = r * (m1 @ a0 + np.repeat(b1.astype(np.float64), 16) > 0)  # the ReLU's gradient
        want = ref_zbox(a0, m1, r, low_m, high_m, safe)
        if n == 0:
            assert np.max(np.abs(want)) > 0
        assert H.rel_err(got[n].reshape(-1), want) < TOL
