"""The array-module paths: the generic NumPy kernels (the code CuPy runs on a GPU) against the
onnxruntime-accelerated CPU path, device selection, and — on a machine with a GPU — CuPy against NumPy.

GPU tests are marked ``gpu`` and skipped when CuPy or a CUDA device is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxlrp import DeviceError, Explainer, cuda_available, list_methods
from onnxlrp.rules import SafeDivide, SignEpsilon

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODELS = ["vgg", "resnet", "mobilenet", "densenet"]
TOL = 1e-4  # the fidelity tests' tolerance, relative to max |reference|


def _options(method: str) -> dict[str, object]:
    if method == "smoothgrad":
        return {"n_samples": 3, "noise_scale": 0.3}
    if method == "integrated_gradients":
        return {"steps": 4}
    return {}


def _inputs() -> tuple[np.ndarray, list[int]]:
    ref = np.load(FIXTURES / "vgg_ref.npz")
    return ref["x"].astype(np.float32), [int(t) for t in ref["targets"]]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(b).max())
    assert scale > 0
    return float(np.abs(np.asarray(a, np.float64) - b).max() / scale)


@pytest.mark.parametrize("model", MODELS)
def test_array_kernels_match_the_onnxruntime_path(model: str) -> None:
    """Every method: the generic xp kernels (used on the GPU) give the CPU path's heatmaps."""
    x, targets = _inputs()
    fast = Explainer(FIXTURES / f"{model}.onnx", device="cpu", kernels="engine")  # (the compiled path: test_compiler)
    generic = Explainer(FIXTURES / f"{model}.onnx", device="cpu", kernels="array")
    assert fast._accel is not None and generic._accel is None
    for method in list_methods():
        a = fast.explain(x, targets=targets, method=method, **_options(method))
        b = generic.explain(x, targets=targets, method=method, **_options(method))
        assert _rel(b, np.asarray(a, np.float64)) <= TOL, (model, method)


def test_stabilised_division_numpy_path() -> None:
    z = np.array([-2.0, -0.0, 0.0, 1e-9, 3.0], np.float32)
    g = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(SafeDivide(1e-7).divide(np, g, z), g / np.where(z == 0, 1e-7, z).astype(np.float32))
    d = np.where(z >= 0, z + np.float32(1e-6), z - np.float32(1e-6))
    np.testing.assert_array_equal(SignEpsilon(1e-6).divide(np, g, z), g / d)


def test_device_selection_without_gpu() -> None:
    if cuda_available():
        pytest.skip("a GPU is present")
    assert Explainer(FIXTURES / "vgg.onnx", device="auto").device == "cpu"
    with pytest.raises(DeviceError, match="cuda"):
        Explainer(FIXTURES / "vgg.onnx", device="cuda")


gpu = pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("model", MODELS)
def test_gpu_matches_cpu_for_every_method(model: str) -> None:
    import cupy

    x, targets = _inputs()
    cpu = Explainer(FIXTURES / f"{model}.onnx", device="cpu")
    cuda = Explainer(FIXTURES / f"{model}.onnx", device="cuda")
    assert cuda.device == "cuda"
    for method in list_methods():
        a = cpu.explain(x, targets=targets, method=method, **_options(method))
        b = cuda.explain(x, targets=targets, method=method, **_options(method))
        assert isinstance(b, np.ndarray)  # NumPy in, NumPy out
        assert _rel(b, np.asarray(a, np.float64)) <= TOL, (model, method)
        c = cuda.explain(cupy.asarray(x), targets=targets, method=method, **_options(method))
        assert isinstance(c, cupy.ndarray)  # CuPy in, CuPy out
        assert _rel(cupy.asnumpy(c), np.asarray(a, np.float64)) <= TOL, (model, method)


@pytest.mark.gpu
@gpu
def test_gpu_fused_division_matches_numpy() -> None:
    import cupy

    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 4, 5)).astype(np.float32)
    z[0, 0, :2] = 0
    g = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for stab in (SafeDivide(1e-7), SignEpsilon(1e-6)):
        got = cupy.asnumpy(stab.divide(cupy, cupy.asarray(g), cupy.asarray(z)))
        np.testing.assert_allclose(got, stab.divide(np, g, z), rtol=1e-6)


@pytest.mark.parametrize("model", MODELS + ["vgg_keras"])
def test_onnxruntime_canonicalisation_route_gives_the_same_maps(model: str) -> None:
    """The fallback route (onnxruntime's basic optimisations first) explains like the direct parse."""
    x, targets = _inputs()
    if model == "vgg_keras":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    direct = Explainer(FIXTURES / f"{model}.onnx", device="cpu", kernels="engine")
    canon = Explainer(FIXTURES / f"{model}.onnx", device="cpu", kernels="engine", _force_canonical=True)
    for method in ("epsilon_plus_flat", "lrp", "sglrp", "gradient", "gradcam"):
        a = direct.explain(x, targets=targets, method=method)
        b = canon.explain(x, targets=targets, method=method)
        assert _rel(b, np.asarray(a, np.float64)) <= TOL, (model, method)
    assert "exported" in direct._forwards and "exported" not in canon._forwards
