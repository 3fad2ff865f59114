"""Exports that declare a dynamic batch axis but bake batch 1 into a reshape (dynamo exports of ViT, PVTv2, LeViT).

The model here: ``x [N, 3, 4, 4]`` → Conv → Relu → ``Reshape(·, [1, -1])`` → Gemm. At batch 2 the
reshape gives ``(1, 64)`` and the Gemm cannot take it; the explainer detects that on the first
failure at batch > 1 (batch 1 runs, batch 2 does not), warns once (``BatchOneWarning``) and from
then on explains one sample at a time. Every method (and ``predict``) on a batch of 3 must equal
the same method on a twin of the model whose input is declared batch 1 (the fixed-batch route):
exactly for ``predict``, to 1e-5 relative (``helpers_onnx.rel_err``) for the maps — the compiled
fast path may pick other float32 kernels for a declared batch of 1 than for a dynamic one
(measured ≤ 4e-7) — and bit for bit on the engine (``kernels="engine"``).
"""

from __future__ import annotations

import warnings

import helpers_onnx as H
import numpy as np
import onnx
import pytest

from onnxlrp import Explainer, list_methods
from onnxlrp.runtime import BatchOneWarning

OPTS = {"smoothgrad": {"n_samples": 5, "batch_size": 4}, "integrated_gradients": {"steps": 5, "batch_size": 4}}


def _model(batch: int | None) -> onnx.ModelProto:
    b = H.Builder(seed=21)
    c = b.relu(b.op("Conv", ["x", b.const(b.weight([4, 3, 3, 3], 27)), b.const(b.bias(4))],  # type: ignore[arg-type]
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    flat = b.op("Reshape", [c, b.ints([1, -1])])  # batch 1 baked in, as torch.export specialises size-1 dims
    y = b.op("Gemm", [flat, b.const(b.weight([5, 64], 64)), b.const(b.bias(5))], transB=1)
    return b.model([batch, 3, 4, 4], [(y, H.FLOAT)], 17)  # type: ignore[list-item]


@pytest.fixture(scope="module")
def pair() -> tuple[Explainer, Explainer, np.ndarray]:
    x = np.random.default_rng(5).standard_normal((3, 3, 4, 4)).astype(np.float32)
    return Explainer(_model(None), device="cpu"), Explainer(_model(1), device="cpu"), x


def test_the_export_fails_at_batch_two() -> None:
    sess = H.ort_session(_model(None))
    assert sess.run(None, {"x": np.zeros((1, 3, 4, 4), np.float32)})[0].shape == (1, 5)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own failure type
        sess.run(None, {"x": np.zeros((2, 3, 4, 4), np.float32)})


def test_predict_falls_back_with_one_warning() -> None:
    ex, fixed = Explainer(_model(None), device="cpu"), Explainer(_model(1), device="cpu")
    x = np.random.default_rng(1).standard_normal((4, 3, 4, 4)).astype(np.float32)
    assert ex.fixed_batch is None and not ex.batch_one
    with pytest.warns(BatchOneWarning, match=r"runs only at batch 1 \(at batch 2: .*\); .*one sample at a time"):
        got = ex.predict(x)
    assert ex.batch_one and ex.fixed_batch == 1
    np.testing.assert_array_equal(got, fixed.predict(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        np.testing.assert_array_equal(ex.predict(x[:3]), got[:3])


@pytest.mark.parametrize("method", list_methods())
def test_every_method_on_a_batch_equals_one_sample_at_a_time(method: str,
                                                            pair: tuple[Explainer, Explainer, np.ndarray]) -> None:
    ex, fixed, x = pair
    opts = OPTS.get(method, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchOneWarning)
        got = ex.explain(x, target=[0, 2, 4], method=method, **opts)
    want = fixed.explain(x, target=[0, 2, 4], method=method, **opts)
    assert ex.batch_one
    assert got.shape == x.shape
    assert H.rel_err(got, want) <= 1e-5, H.rel_err(got, want)
    assert np.abs(got).max() > 0
    engine = Explainer(_model(None), device="cpu", kernels="engine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchOneWarning)
        np.testing.assert_array_equal(engine.explain(x, target=[0, 2, 4], method=method, **opts),
                                      Explainer(_model(1), device="cpu", kernels="engine").explain(
                                          x, target=[0, 2, 4], method=method, **opts))


def test_first_call_is_an_explanation_without_target() -> None:
    """The fallback also starts from ``explain`` (predicted class, several targets, a sampling method)."""
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    fixed = Explainer(_model(1), device="cpu")
    for method, kw in [("lrp", {}), ("gradcam", {"targets": [1, 3]}), ("smoothgrad", OPTS["smoothgrad"]),
                       ("integrated_gradients", {"steps": 3, "target": 1})]:
        ex = Explainer(_model(None), device="cpu")
        with pytest.warns(BatchOneWarning):
            got = ex.explain(x, method=method, **kw)
        assert H.rel_err(got, fixed.explain(x, method=method, **kw)) <= 1e-5, method


def test_a_model_that_runs_at_batch_two_is_left_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    arch = H.arch_image()
    ex = Explainer(arch.model, device="cpu")
    x = np.random.default_rng(3).standard_normal((3,) + tuple(arch.shape)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchOneWarning)
        ex.explain(x, target=0, method="smoothgrad", n_samples=4)
        ex.predict(x)
    assert not ex.batch_one and ex.fixed_batch is None
