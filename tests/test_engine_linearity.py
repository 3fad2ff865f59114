"""Linearity and batching, for every method: several targets in one call equal single-target calls,
a batch equals per-sample calls, and ``relu=True`` clips the map at 0.

The model is the residual conv net of ``helpers_onnx`` (Conv+BN folded, residual Add, AveragePool,
Gemm), so every rule family of every composite is on the path. Results should agree to float32
rounding (the batched products sum in another order): tolerance 1e-5 of ``max|single call|``.
"""

from __future__ import annotations

from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest

from onnxlrp import METHODS, Explainer

TOL = 1e-5
ALL_METHODS = list(METHODS)
OPTIONS = {"smoothgrad": {"n_samples": 3, "noise_scale": 0.3}, "integrated_gradients": {"steps": 3}}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Explainer, np.ndarray, np.ndarray]:
    arch = H.arch_residual(seed=15)
    path = H.save_checked(arch.model, Path(tmp_path_factory.mktemp("lin")), "residual", arch.shape)
    ex = Explainer(str(path), device="cpu")
    x = np.random.default_rng(2).uniform(-1, 2, (3,) + arch.shape).astype(np.float32)
    logits = ex.predict(x)
    targets = np.argsort(logits, axis=1)[:, ::-1][:, :2].T.copy()  # (2, N): each sample's two best classes
    # the seed's LRP starts from max(y_t, 0): positive target logits keep its maps nonzero
    assert np.all(np.take_along_axis(logits, targets.T, 1) > 0)
    return ex, x, targets


def test_every_method_is_covered() -> None:
    assert set(ALL_METHODS) >= {"lrp", "clrp", "sglrp", "gradient", "gradcam", "smoothgrad"}


@pytest.mark.parametrize("method", ALL_METHODS)
def test_several_targets_equal_single_target_calls(method: str, model) -> None:  # type: ignore[no-untyped-def]
    ex, x, targets = model
    opts = OPTIONS.get(method, {})
    multi = ex.explain(x, targets=targets, method=method, **opts)
    assert multi.shape == (2,) + x.shape
    for i in range(2):
        single = ex.explain(x, target=targets[i], method=method, **opts)
        assert np.max(np.abs(single)) > 0
        assert H.rel_err(multi[i], single) < TOL, (method, i)
    # a plain list of classes is the same class for every sample
    listed = ex.explain(x, targets=[1, 0], method=method, **opts)
    assert H.rel_err(listed[0], ex.explain(x, target=1, method=method, **opts)) < TOL
    assert H.rel_err(listed[1], ex.explain(x, target=[0, 0, 0], method=method, **opts)) < TOL


def _batch_vs_single(ex: Explainer, x: np.ndarray, targets: np.ndarray, method: str) -> None:
    opts = OPTIONS.get(method, {})
    batch = ex.explain(x, target=targets[0], method=method, **opts)
    for n in range(x.shape[0]):
        one = ex.explain(x[n:n + 1], target=int(targets[0, n]), method=method, **opts)
        assert np.max(np.abs(one)) > 0
        assert H.rel_err(batch[n], one[0]) < TOL, (method, n)


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m != "smoothgrad"])
def test_batch_equals_per_sample_calls(method: str, model) -> None:  # type: ignore[no-untyped-def]
    ex, x, targets = model
    _batch_vs_single(ex, x, targets, method)


def test_smoothgrad_batch_equals_per_sample_calls(model) -> None:  # type: ignore[no-untyped-def]
    ex, x, targets = model
    _batch_vs_single(ex, x, targets, "smoothgrad")


def test_smoothgrad_first_sample_and_determinism(model) -> None:  # type: ignore[no-untyped-def]
    """What does hold for SmoothGrad: fixed seed → same map; sample 0 of a batch equals its own call."""
    ex, x, targets = model
    opts = {"n_samples": 4, "noise_scale": 0.3, "seed": 3}
    a = ex.explain(x, target=targets[0], method="smoothgrad", **opts)
    np.testing.assert_array_equal(a, ex.explain(x, target=targets[0], method="smoothgrad", **opts))
    one = ex.explain(x[:1], target=int(targets[0, 0]), method="smoothgrad", **opts)
    assert H.rel_err(a[0], one[0]) < TOL
    # noise 0: SmoothGrad is the gradient
    flat = ex.explain(x, target=targets[0], method="smoothgrad", n_samples=2, noise_scale=0.0)
    assert H.rel_err(flat, ex.explain(x, target=targets[0], method="gradient")) < TOL


@pytest.mark.parametrize("method", ALL_METHODS)
def test_relu_option_clips_at_zero(method: str, model) -> None:  # type: ignore[no-untyped-def]
    ex, x, targets = model
    opts = OPTIONS.get(method, {})
    every = list(range(ex.predict(x).shape[1]))  # every class: some give negative evidence
    plain = ex.explain(x, targets=every, method=method, **opts)
    clipped = ex.explain(x, targets=every, method=method, relu=True, **opts)
    if method == "lrp":
        # Z^B, Alpha-Beta(1, 0) after ReLUs and W² map a nonnegative start to a nonnegative map
        assert plain.min() >= 0 < plain.max()
    else:
        assert plain.min() < 0 < plain.max()  # so the clip has something to do
    np.testing.assert_array_equal(clipped, np.maximum(plain, 0))
    single = ex.explain(x, target=2, method=method, relu=True, **opts)
    assert H.rel_err(single, clipped[2]) < TOL
