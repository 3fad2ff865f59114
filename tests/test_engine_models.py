"""The model zoo of ``helpers_onnx``: every architecture runs, its gradient matches finite differences,
and the model-level conveniences hold (softmax stripping, two-output scikit-learn models, NHWC input,
a fixed batch dimension of 1).

Tolerance: ``max|engine − reference| ≤ 1e-4 · max|reference|`` (float32 engine vs float64 reference).
"""

from __future__ import annotations

from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest

from onnxlrp import Explainer

TOL = 1e-4
ARCH_NAMES = list(H.ARCHS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


_CACHE: dict[str, tuple[H.Arch, Explainer]] = {}


def _load(name: str, folder: Path, make=None) -> tuple[H.Arch, Explainer]:  # type: ignore[no-untyped-def]
    if name not in _CACHE:
        arch = (make or H.ARCHS[name])()
        path = H.save_checked(arch.model, folder, name, arch.shape)
        _CACHE[name] = (arch, Explainer(str(path), device="cpu"))
    return _CACHE[name]


def _x(arch: H.Arch, n: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n,) + arch.shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the zoo runs and is read as intended


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_model_runs_in_onnxruntime_and_predict_matches(name: str, folder: Path) -> None:
    arch, ex = _load(name, folder)
    x = _x(arch, 3)
    sess = H.ort_session(H.with_outputs(arch.model, [arch.logits]))
    want = sess.run(None, {"x": x})[0]
    got = ex.predict(x)
    assert got.shape == want.shape
    assert H.rel_err(got, want) < 1e-6
    # the float64 twin used as the reference elsewhere computes the same network
    assert H.rel_err(want, H.Reference64(arch.model, arch.logits)(x)) < 1e-5
    assert ex.output_name == arch.logits


def test_batchnorm_after_conv_is_folded_and_after_concat_is_not(folder: Path) -> None:
    _, res = _load("residual", folder)
    rows = res.layers()
    assert [r["op"] for r in rows].count("BatchNormalization") == 0
    assert sum("+BatchNormalization" in r["layer"] for r in rows) == 2
    _, cat = _load("concat_bn", folder)
    kinds = {r["op"]: r["kind"] for r in cat.layers()}
    assert kinds.get("BatchNormalization") == "batchnorm"


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_gradient_matches_finite_differences(name: str, folder: Path) -> None:
    arch, ex = _load(name, folder)
    x = _x(arch)
    jac = H.Reference64(arch.model, arch.logits).jacobian(x)  # (N, C) + x.shape[1:]
    classes = jac.shape[1]
    got = ex.explain(x, targets=list(range(classes)), method="gradient")  # (C, N, ...)
    for t in range(classes):
        assert H.rel_err(got[t], jac[:, t]) < TOL, (name, t)


@pytest.mark.parametrize("name", ["conv2d_pads", "se_gate", "mlp", "conv3d"])
def test_input_x_gradient(name: str, folder: Path) -> None:
    arch, ex = _load(name, folder)
    x = _x(arch, seed=3)
    jac = H.Reference64(arch.model, arch.logits).jacobian(x)
    target = np.array([0, 2])
    got = ex.explain(x, target=target, method="input_x_gradient")
    want = x * jac[np.arange(2), target]
    assert H.rel_err(got, want) < TOL


def test_default_target_is_the_predicted_class(folder: Path) -> None:
    arch, ex = _load("grouped", folder)
    x = _x(arch, 3, seed=5)
    pred = ex.predict(x).argmax(1)
    assert len(set(pred.tolist())) > 1  # the check below would not see a mix-up otherwise
    np.testing.assert_array_equal(ex.explain(x, method="gradient"), ex.explain(x, target=pred, method="gradient"))


# ---------------------------------------------------------------------------------------------
# softmax stripping, scikit-learn style outputs, NHWC, fixed batch

METHODS_FOR_TWINS = ["lrp", "sglrp", "lrp_epsilon", "epsilon_gamma_box", "gradient", "gradcam"]


@pytest.mark.parametrize("softmax", ["Softmax", "LogSoftmax"])
def test_trailing_softmax_is_removed(softmax: str, folder: Path) -> None:
    arch, ex = _load(f"residual_{softmax}", folder, lambda: H.arch_residual(softmax=softmax))
    _, plain = _load("residual", folder)
    assert ex.output_name == arch.logits
    x = _x(arch, seed=7)
    np.testing.assert_allclose(ex.predict(x), plain.predict(x), rtol=0, atol=1e-6)
    for method in METHODS_FOR_TWINS:
        a = ex.explain(x, target=[1, 3], method=method)
        b = plain.explain(x, target=[1, 3], method=method)
        assert np.max(np.abs(b)) > 0
        assert H.rel_err(a, b) < 1e-6, method


def test_sklearn_two_outputs_explains_the_probabilities_output(folder: Path) -> None:
    arch, ex = _load("sklearn", folder)
    assert [o.name for o in arch.model.graph.output] == ["label", "probabilities"]
    _, twin = _load("sklearn_logits", folder, lambda: H.arch_sklearn(with_label=False))
    x = _x(arch, 4, seed=2)
    # the explained tensor is the score vector before the softmax of "probabilities"
    assert ex.output_name == arch.logits
    sess = H.ort_session(arch.model)
    label, probs = sess.run(None, {"x": x})
    assert label.dtype == np.int64
    logits = ex.predict(x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), probs, rtol=1e-5, atol=1e-7)
    for method in ["lrp", "clrp", "gradient", "lrp_epsilon"]:
        assert H.rel_err(ex.explain(x, method=method), twin.explain(x, method=method)) < 1e-6, method


@pytest.mark.parametrize("method", METHODS_FOR_TWINS + ["epsilon_plus_flat", "guided_gradcam"])
def test_nhwc_model_equals_its_nchw_twin(method: str, folder: Path) -> None:
    arch, nhwc = _load("nhwc", folder)
    _, nchw = _load("nchw", folder)
    x_nchw = _x(H.arch_image(), 2, seed=4)
    x_nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    a = nhwc.explain(x_nhwc, target=[0, 3], method=method)
    b = nchw.explain(x_nchw, target=[0, 3], method=method)
    assert a.shape == x_nhwc.shape
    assert np.max(np.abs(b)) > 0
    assert H.rel_err(a, b.transpose(0, 2, 3, 1)) < 1e-5


@pytest.mark.parametrize("method", ["lrp", "sglrp", "gradient", "gradcam", "integrated_gradients"])
def test_fixed_batch_of_one_takes_three_samples(method: str, folder: Path) -> None:
    arch, fixed = _load("batch1", folder, lambda: H.arch_image(batch=1))
    _, dynamic = _load("nchw", folder)
    assert fixed.input_shape[0] == 1
    x = _x(arch, 3, seed=8)
    opts = {"steps": 4} if method == "integrated_gradients" else {}
    got = fixed.explain(x, target=[0, 1, 2], method=method, **opts)
    assert got.shape == x.shape
    assert H.rel_err(got, dynamic.explain(x, target=[0, 1, 2], method=method, **opts)) < 1e-6
    np.testing.assert_allclose(fixed.predict(x), dynamic.predict(x), rtol=0, atol=1e-6)
    multi = fixed.explain(x, targets=[1, 2], method=method, **opts)
    assert multi.shape == (2,) + x.shape
    assert H.rel_err(multi[1], fixed.explain(x, target=2, method=method, **opts)) < 1e-6


def test_fixed_batch_with_per_sample_bounds(folder: Path) -> None:
    arch, fixed = _load("batch1", folder, lambda: H.arch_image(batch=1))
    _, dynamic = _load("nchw", folder)
    x = _x(arch, 3, seed=9)
    low = np.full(x.shape, -3.0, np.float32)
    low[1] = -4.0
    high = np.full(x.shape, 3.0, np.float32)
    want = dynamic.explain(x, target=0, method="lrp", low=low, high=high)
    assert H.rel_err(fixed.explain(x, target=0, method="lrp", low=low, high=high), want) < 1e-6


def test_fixed_batch_with_per_sample_baseline(folder: Path) -> None:
    arch, fixed = _load("batch1", folder, lambda: H.arch_image(batch=1))
    _, dynamic = _load("nchw", folder)
    x = _x(arch, 3, seed=9)
    base = np.zeros_like(x)
    base[1] = 0.3
    want = dynamic.explain(x, target=0, method="integrated_gradients", steps=3, baseline=base)
    got = fixed.explain(x, target=0, method="integrated_gradients", steps=3, baseline=base)
    assert H.rel_err(got, want) < 1e-6


def test_per_sample_bounds_and_baseline_on_a_dynamic_batch(folder: Path) -> None:
    """The behaviour the two tests above expect, on the dynamic-batch twin: one bound/baseline per sample."""
    arch, ex = _load("nchw", folder)
    x = _x(arch, 3, seed=9)
    t = ex.predict(x).argmax(1)
    low = np.full(x.shape, -3.0, np.float32)
    low[1] = -4.0
    high = np.full(x.shape, 3.0, np.float32)
    base = np.zeros_like(x)
    base[1] = 0.3
    for method, opts in (("lrp", {"low": low, "high": high}), ("integrated_gradients", {"steps": 3, "baseline": base})):
        batch = ex.explain(x, target=t, method=method, **opts)
        for n in range(3):
            one = ex.explain(x[n:n + 1], target=int(t[n]), method=method,
                             **{k: (v[n:n + 1] if isinstance(v, np.ndarray) else v) for k, v in opts.items()})
            assert H.rel_err(batch[n], one[0]) < 1e-6
        plain = ex.explain(x, target=t, method=method, **({"low": -3.0, "high": 3.0} if method == "lrp" else
                                                          {"steps": 3}))
        assert H.rel_err(batch[1], plain[1]) > 1e-3  # sample 1's own bound/baseline mattered
