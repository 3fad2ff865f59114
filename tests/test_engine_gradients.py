"""Gradient-family methods at the ReLU level (gradient, guided backprop, deconvnet) and Grad-CAM on
models whose answer is known by hand.

References are float64 NumPy; tolerance ``1e-4 · max|reference|``.
"""

from __future__ import annotations

from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest

from onnxlrp import Explainer, InputError

TOL = 1e-4


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grad")


# ---------------------------------------------------------------------------------------------
# gradient, guided backprop and deconvnet on Gemm → Relu → Gemm → Clip(0, 6) → Gemm → LeakyRelu → Gemm


class ReluNet:
    def __init__(self, folder: Path) -> None:
        b = H.Builder(seed=61)
        sizes = [5, 8, 8, 6, 3]
        self.w = [b.weight([sizes[i + 1], sizes[i]], sizes[i]) * (2.0 if i == 1 else 1.0) for i in range(4)]
        self.b = [b.bias(sizes[i + 1], 0.5) for i in range(4)]
        h = "x"
        for i, act in enumerate(["Relu", "Clip", "LeakyRelu", None]):
            h = b.op("Gemm", [h, b.const(self.w[i]), b.const(self.b[i])], transB=1)  # type: ignore[assignment]
            if act == "Clip":
                h = b.op("Clip", [h, b.const(np.float32(0)), b.const(np.float32(6))])  # type: ignore[assignment]
            elif act == "LeakyRelu":
                h = b.op("LeakyRelu", [h], alpha=0.1)  # type: ignore[assignment]
            elif act == "Relu":
                h = b.relu(h)
        model = b.model([None, 5], [(h, H.FLOAT)], 13)
        self.ex = Explainer(str(H.save_checked(model, folder, "relunet", (5,))), device="cpu")

    def reference(self, x: np.ndarray, t: int, mode: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """∂y_t/∂x with each ReLU-like node (Relu, Clip(0, 6)) treated per ``mode``; one sample."""
        w = [v.astype(np.float64) for v in self.w]
        b = [v.astype(np.float64) for v in self.b]
        z1 = w[0] @ x + b[0]
        z2 = w[1] @ np.maximum(z1, 0) + b[1]
        z3 = w[2] @ np.clip(z2, 0, 6) + b[2]
        g = w[3][t] * np.where(z3 > 0, 1.0, 0.1)  # LeakyRelu: plain derivative in every mode
        g = w[2].T @ g

        def relu_like(g: np.ndarray, open_: np.ndarray) -> np.ndarray:
            if mode == "gradient":
                return g * open_
            if mode == "guided_backprop":
                return np.maximum(g, 0) * open_
            return np.maximum(g, 0)  # deconvnet: the forward input is ignored

        g = w[1].T @ relu_like(g, (z2 > 0) & (z2 < 6))
        g = w[0].T @ relu_like(g, z1 > 0)
        return g, {"z1": z1, "z2": z2}


@pytest.mark.parametrize("mode", ["gradient", "guided_backprop", "deconvnet"])
def test_relu_semantics(mode: str, folder: Path) -> None:
    net = ReluNet(folder)
    x = np.random.default_rng(4).uniform(-2.5, 2.5, (4, 5)).astype(np.float32)
    got = net.ex.explain(x, targets=[0, 1, 2], method=mode)
    seen = {"z2>6": False, "z1<0": False}
    maps = {}
    for t in range(3):
        for n in range(4):
            want, z = net.reference(x[n].astype(np.float64), t, mode)
            seen["z2>6"] |= bool(np.any(z["z2"] > 6))
            seen["z1<0"] |= bool(np.any(z["z1"] < 0))
            assert H.rel_err(got[t, n], want) < TOL, (mode, t, n)
            for other in ("gradient", "guided_backprop", "deconvnet"):
                maps.setdefault(other, []).append(net.reference(x[n].astype(np.float64), t, other)[0])
    assert all(seen.values()), seen  # both sides of the Clip and of the ReLU are exercised
    # the three references differ on these inputs, so a swapped rule would be caught
    for a, b in [("gradient", "guided_backprop"), ("gradient", "deconvnet"), ("guided_backprop", "deconvnet")]:
        assert H.rel_err(np.array(maps[a]), np.array(maps[b])) > 1e-2


# ---------------------------------------------------------------------------------------------
# Grad-CAM: conv → relu → GAP → dense; the CAM weights are the dense weights / spatial size


def _resize(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation with half-pixel centres, clamped at the borders."""
    n = a.shape[axis]
    pos = (np.arange(size) + 0.5) * n / size - 0.5
    return np.apply_along_axis(lambda v: np.interp(pos, np.arange(n), v), axis, a)


class CamNet:
    def __init__(self, folder: Path, dims: int, stride: int, bn: bool = False) -> None:
        b = H.Builder(seed=70 + dims * 2 + stride)
        spatial = [6] * dims
        self.shape = (2, *spatial)
        w = b.weight([4, 2] + [3] * dims, 2 * 3**dims)
        cb = b.bias(4)
        self.conv_out = b.op("Conv", ["x", b.const(w), b.const(cb)], kernel_shape=[3] * dims, pads=[1] * (2 * dims),
                             strides=[stride] * dims)
        c = b.bn(self.conv_out, 4) if bn else self.conv_out  # type: ignore[arg-type]
        self.relu_out = b.relu(c)  # type: ignore[arg-type]
        self.flat = b.op("Flatten", [b.op("GlobalAveragePool", [self.relu_out])])
        self.wd = b.weight([3, 4], 4)
        y = b.op("Gemm", [self.flat, b.const(self.wd), b.const(b.bias(3))], transB=1)
        self.model = b.model([None, *self.shape], [(y, H.FLOAT)], 17)  # type: ignore[list-item]
        path = H.save_checked(self.model, folder, f"cam{dims}{stride}{int(bn)}", self.shape)
        self.ex = Explainer(str(path), device="cpu")

    def feature_maps(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sess = H.ort_session(H.with_outputs(self.model, [self.conv_out, self.relu_out]))  # type: ignore[list-item]
        conv, relu = sess.run(None, {"x": x})
        return conv.astype(np.float64), relu.astype(np.float64)

    def reference(self, x: np.ndarray, t: int, layer: str = "relu") -> np.ndarray:
        conv, relu = self.feature_maps(x)
        spatial_axes = tuple(range(2, conv.ndim))
        size = int(np.prod(conv.shape[2:]))
        grad_relu = self.wd[t].astype(np.float64).reshape((1, -1) + (1,) * len(spatial_axes)) / size
        if layer == "relu":
            a, grad = relu, np.broadcast_to(grad_relu, relu.shape)
        else:
            a, grad = conv, grad_relu * (conv > 0)
        weights = grad.mean(axis=spatial_axes, keepdims=True)
        cam = (weights * a).sum(axis=1)  # (N, *S)
        for ax in range(cam.ndim - 1):
            cam = _resize(cam, self.shape[1 + ax], 1 + ax)
        return np.broadcast_to(cam[:, None], (x.shape[0],) + self.shape)


@pytest.mark.parametrize(("dims", "stride"), [(2, 1), (2, 2), (1, 2), (1, 1)])
def test_gradcam_known_answer(dims: int, stride: int, folder: Path) -> None:
    net = CamNet(folder, dims, stride)
    x = np.random.default_rng(dims + stride).standard_normal((2,) + net.shape).astype(np.float32)
    for t in range(3):
        got = net.ex.explain(x, target=t, method="gradcam")
        assert got.shape == x.shape
        want = net.reference(x, t)
        assert H.rel_err(got, want) < TOL, (t, H.rel_err(got, want))
        # the weights are the dense weights over the spatial size: the same map once more, by hand
        _, relu = net.feature_maps(x)
        if stride == 1:
            by_hand = np.einsum("k,nk...->n...", net.wd[t] / relu[0, 0].size, relu)
            assert H.rel_err(got[:, 0], by_hand) < TOL
        # every input channel carries the same map
        np.testing.assert_array_equal(got[:, 0], got[:, 1])


def test_gradcam_layer_option(folder: Path) -> None:
    net = CamNet(folder, 2, 2)
    x = np.random.default_rng(11).standard_normal((3,) + net.shape).astype(np.float32)
    assert net.ex.explain(x, target=1, method="gradcam").shape == x.shape
    got = net.ex.explain(x, target=1, method="gradcam", layer=net.conv_out)
    want = net.reference(x, 1, layer="conv")
    assert H.rel_err(got, want) < TOL
    assert H.rel_err(want, net.reference(x, 1, layer="relu")) > 1e-2  # a different layer, a different map
    same = net.ex.explain(x, target=1, method="gradcam", layer=net.relu_out)
    assert H.rel_err(same, net.reference(x, 1)) < TOL


def test_gradcam_bad_layer_names(folder: Path) -> None:
    net = CamNet(folder, 2, 1)
    x = np.zeros((1,) + net.shape, np.float32)
    with pytest.raises(InputError, match="no_such_tensor"):
        net.ex.explain(x, target=0, method="gradcam", layer="no_such_tensor")
    with pytest.raises(InputError, match=f"{net.flat}.*not a feature map"):
        net.ex.explain(x, target=0, method="gradcam", layer=net.flat)
    fused = CamNet(folder, 2, 1, bn=True)  # the conv output disappears into Conv+BN
    with pytest.raises(InputError, match=f"{fused.conv_out}.*fused"):
        fused.ex.explain(x, target=0, method="gradcam", layer=fused.conv_out)


def test_guided_gradcam_is_the_product(folder: Path) -> None:
    net = CamNet(folder, 2, 2)
    x = np.random.default_rng(12).standard_normal((2,) + net.shape).astype(np.float32)
    got = net.ex.explain(x, target=2, method="guided_gradcam")
    cam = net.reference(x, 2)
    gb = net.ex.explain(x, target=2, method="guided_backprop")
    assert np.max(np.abs(gb)) > 0
    assert H.rel_err(got, cam * gb) < TOL


# ---------------------------------------------------------------------------------------------
# Integrated Gradients: (x − x̄) ⊙ mean of the gradients at x̄ + k/m (x − x̄), k = 1..m


@pytest.mark.parametrize("baseline", [0.0, 0.5])
def test_integrated_gradients_is_a_riemann_sum(baseline: float, folder: Path) -> None:
    arch = H.arch_swish()
    ex = Explainer(str(H.save_checked(arch.model, folder, "swish", arch.shape)), device="cpu")
    ref = H.Reference64(arch.model, arch.logits)
    x = np.random.default_rng(13).standard_normal((2,) + arch.shape).astype(np.float32)
    steps = 5
    got = ex.explain(x, target=[0, 2], method="integrated_gradients", steps=steps, baseline=baseline, batch_size=2)
    base = np.full(x.shape, baseline)
    grads = [ref.jacobian(base + k / steps * (x - base)) for k in range(1, steps + 1)]
    mean = np.mean(grads, axis=0)[np.arange(2), [0, 2]]
    assert H.rel_err(got, (x - base) * mean) < TOL
