"""The compiled explanation graph (onnxlrp.compiler) against the engine, and the tracer itself.

The reference is always the layer-by-layer engine (``kernels="engine"``): the Explainer's default runs these
methods through compiled graphs itself, and a compiled graph must not be its own reference.

Tolerance: max |compiled − engine| / max |engine| ≤ 1e-5. Where that fails, the difference must be a
float32 tie, proven by running the engine's backward on the compiled graph's own forward tensors
(``same_forward_error`` ≤ 1e-5): onnxruntime fuses a convolution with its activation only when the
activation is not an output, so the two forwards may round a ReLU/max-pool decision differently. For maps
that cancel (CLRP/SGLRP subtract two nearly equal passes) the bound is max(1e-5, 2× the engine's own float32
spread: its NumPy kernels against its onnxruntime kernels), as for the Zennit fixtures.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import helpers_onnx as H
import numpy as np
import onnx
import pytest

from onnxlrp import METHODS, Explainer, InputError, RelevanceWarning, UnsupportedModelError
from onnxlrp.cli import main
from onnxlrp.compiler import MARKER, TraceError, compilable_methods, compile_explanation, run_compiled
from onnxlrp.compiler.primitives import GraphTracer
from onnxlrp.compiler.verify import same_forward_error

FIX = Path(__file__).parent / "fixtures"
SHIPPED = Path(__file__).parents[1] / "models" / "efficientnet_lite0.onnx"
TOL = 1e-5


def assert_faithful(model, method, x, tg, **opts) -> float:
    """Compile, run at the batch of ``x`` and compare with the engine (ties proven, see the module docstring)."""
    cm = compile_explanation(model, method, verify=False, **opts)
    ex = Explainer(model, device="cpu", kernels="engine")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = ex.explain(x, tg, method, **opts)
    _, heat = run_compiled(cm, x, tg.astype(np.int64))
    assert heat.shape == ref.shape and heat.dtype == np.float32
    err = H.rel_err(heat, ref)
    if err > TOL:
        assert not any(issubclass(w.category, RelevanceWarning) for w in caught), "unstable map: pick another input"
        same = same_forward_error(cm, ex, x, tg, method, opts)
        own = H.rel_err(Explainer(model, device="cpu", kernels="array").explain(x, tg, method, **opts), ref)
        assert same <= max(TOL, 2 * own), (f"{method}: compiled vs engine {err:.3g}, on the same forward tensors "
                                           f"{same:.3g}, the engine's own spread {own:.3g}")
    return err


ARCHS = [n for n in H.ARCHS if n != "sklearn"]


@pytest.mark.parametrize("name", ARCHS)
def test_generated_archs_all_methods(name: str) -> None:
    """Every generated architecture (pads, ceil-mode pools, grouped and 3-d convs, gates, concat+BN, opset 13
    converted to 17) × every compilable method, at batch 3 on a dynamic-batch compile."""
    arch = H.ARCHS[name]()
    model = arch.model.SerializeToString()
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3,) + arch.shape).astype(np.float32)
    c = Explainer(model, device="cpu", kernels="engine").predict(x[:1]).shape[1]
    tg = rng.integers(0, c, 3)
    for method in compilable_methods():
        if METHODS[method].family != "cam":  # Grad-CAM: on the image fixtures below
            assert_faithful(model, method, x, tg)


FIXTURE_METHODS = {
    "vgg.onnx": compilable_methods(),  # with gradcam and guided_gradcam
    "resnet_dynamo.onnx": ["lrp", "sglrp", "epsilon_plus_flat", "epsilon_gamma_box", "gradient", "guided_backprop"],
    "mobilenet.onnx": ["lrp_epsilon", "epsilon_plus_flat", "clrp", "deconvnet"],
    "densenet_dynamo.onnx": ["lrp", "epsilon_alpha2_beta1_flat", "input_x_gradient"],
    "modern_vit_dynamo.onnx": ["attnlrp", "cp_lrp", "lrp_epsilon", "gradient", "sglrp", "gradcam"],
    "modern_vit_torchscript.onnx": ["attnlrp", "cp_lrp", "epsilon_plus_flat"],
    "modern_swin_head_dynamo.onnx": ["attnlrp", "gradient", "guided_gradcam"],
    "attention_encoder_torchscript.onnx": ["attnlrp", "cp_lrp", "gradient"],
    "modern_layernorm_dynamo.onnx": ["attnlrp", "epsilon_plus_flat", "gradient"],
    "modern_groupnorm_torchscript.onnx": ["attnlrp", "lrp", "gradient"],
    "modern_video_dynamo.onnx": ["epsilon_plus_flat", "gradient"],
    "modern_decoder_dynamo.onnx": ["attnlrp", "gradient"],
    "modern_nfnet_stdconv_torchscript.onnx": ["lrp_preset_b", "gradient"],
}


@pytest.mark.parametrize("fixture", sorted(FIXTURE_METHODS))
def test_exported_fixtures(fixture: str) -> None:
    """Models exported by PyTorch's two exporters (CNNs, ViT, Swin, norms, video, decoder)."""
    path = str(FIX / fixture)
    ex = Explainer(path, device="cpu", kernels="engine")
    sample = tuple(d if d is not None else 8 for d in ex.input_shape[1:])
    rng = np.random.default_rng(3)
    n = ex.fixed_batch or 2
    x = rng.standard_normal((n,) + sample).astype(np.float32)
    c = ex.predict(x).shape[1]
    tg = rng.integers(0, c, n)
    for method in FIXTURE_METHODS[fixture]:
        assert_faithful(path, method, x, tg)


def test_shipped_model_dynamic_batch_and_targets() -> None:
    """EfficientNet-Lite0: one compile serves batches 1 and 4; K targets per sample; the predicted class."""
    path = str(SHIPPED)
    ex = Explainer(path, device="cpu", kernels="engine")
    rng = np.random.default_rng(0)
    cm = compile_explanation(path, "epsilon_plus_flat", verify=False)
    for n in (1, 4):
        x = rng.standard_normal((n, 3, 224, 224)).astype(np.float32)
        tg = rng.integers(0, 1000, n)
        logits, heat = run_compiled(cm, x, tg)
        assert heat.shape == x.shape
        np.testing.assert_allclose(logits, ex.predict(x), rtol=1e-4, atol=1e-4)
        assert H.rel_err(heat, ex.explain(x, tg, "epsilon_plus_flat")) <= TOL
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    cm = compile_explanation(path, "lrp_epsilon", targets=3, verify=False)
    tgk = rng.integers(0, 1000, (2, 3))
    _, heat = run_compiled(cm, x, tgk)
    assert heat.shape == (3,) + x.shape
    for j in range(3):
        assert H.rel_err(heat[j], ex.explain(x, tgk[:, j], "lrp_epsilon")) <= TOL
    cm = compile_explanation(path, "lrp_epsilon", predicted=True, verify=False)
    assert [i.name for i in cm.graph.input] == ["input"]
    _, heat = run_compiled(cm, x)
    assert H.rel_err(heat, ex.explain(x, None, "lrp_epsilon")) <= TOL


def test_checker_metadata_and_options() -> None:
    """full_check passes; method, options, version and the model's own metadata are in metadata_props;
    Z^B bounds given as constants and relu=True are compiled in."""
    arch = H.ARCHS["nchw"]()
    m = arch.model
    m.metadata_props.append(onnx.StringStringEntryProto(key="onnxlrp.preprocess", value='{"size": 8}'))
    cm = compile_explanation(m.SerializeToString(), "sglrp", low=-1.5, high=2.0, relu=True)
    onnx.checker.check_model(cm, full_check=True)
    meta = {p.key: p.value for p in cm.metadata_props}
    assert meta["onnxlrp.method"] == "sglrp" and meta["onnxlrp.preprocess"] == '{"size": 8}'
    assert '"low": -1.5' in meta["onnxlrp.options"] and meta["onnxlrp.relu"] == "true"
    assert "onnxlrp.version" in meta
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.5, 2.0, (2,) + arch.shape).astype(np.float32)
    tg = np.array([0, 1])
    _, heat = run_compiled(cm, x, tg)
    ref = Explainer(m.SerializeToString(), device="cpu", kernels="engine").explain(x, tg, "sglrp", low=-1.5, high=2.0,
                                                                                  relu=True)
    assert heat.min() >= 0 and H.rel_err(heat, ref) <= TOL


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    """Methods that do not compile, dynamic shapes and bad arguments: clear errors."""
    path = str(FIX / "vgg.onnx")
    with pytest.raises(UnsupportedModelError, match="smoothgrad.*sampling"):
        compile_explanation(path, "smoothgrad")
    with pytest.raises(InputError, match="unknown method"):
        compile_explanation(path, "nope")
    with pytest.raises(InputError, match="targets"):
        compile_explanation(path, "lrp", targets=0)
    with pytest.raises(InputError, match="does not take option"):
        compile_explanation(path, "gradient", epsilon=0.1)
    dyn = H.ARCHS["conv1d"]().model
    dyn.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "L"
    with pytest.raises(InputError, match="dynamic"):
        compile_explanation(dyn.SerializeToString(), "lrp")


def test_cli_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`onnxlrp compile` writes a model that runs without onnxlrp; errors exit 1/2 with one line."""
    out = tmp_path / "vgg.explain.onnx"
    assert main(["compile", str(FIX / "vgg.onnx"), "-m", "lrp", "--low", "-2", "--high", "2", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    import onnxruntime as ort

    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_outputs()] == ["logits", "heatmap"]
    x = np.random.default_rng(0).uniform(-2, 2, (2, 3, 16, 16)).astype(np.float32)
    logits, heat = s.run(None, {"input": x, "target": np.array([1, 2], np.int64)})
    ref = Explainer(str(FIX / "vgg.onnx"), device="cpu", kernels="engine").explain(x, [1, 2], "lrp", low=-2.0, high=2.0)
    assert H.rel_err(heat, ref) <= TOL
    assert main(["compile", str(FIX / "vgg.onnx"), "-m", "smoothgrad", "-o", str(out)]) == 1
    assert "cannot be compiled" in capsys.readouterr().err
    assert main(["compile", str(FIX / "vgg.onnx"), "-m", "lrp"]) == 2


def test_tracer_basics() -> None:
    """Constants fold at trace time; the batch axis becomes a run-time dimension; no data-dependent bool()."""
    tr = GraphTracer("x", 18)
    w = tr.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(np.asarray(tr.maximum(w, 0) * 2), np.maximum(np.arange(6).reshape(2, 3), 0) * 2)
    assert not tr.nodes  # all folded
    x = tr.input("x", (MARKER, 3))
    y = (x @ w.T).reshape(-1)
    assert y.shape == (2 * MARKER,)
    assert any(n.op_type == "Reshape" for n in tr.nodes)
    shape = tr.initializers[tr.nodes[-1].input[1]]
    assert list(onnx.numpy_helper.to_array(shape)) == [-1]
    with pytest.raises(TraceError):
        bool(x > 0)
    relu = tr.input("r", (MARKER, 3), sign="nonneg")
    assert tr.static_any(relu < 0) is False and tr.static_any(x < 0) is True


def test_compiled_explainer_and_cli_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A compiled graph explains through CompiledExplainer (the Explainer's interface), `onnxlrp explain` and
    `onnxlrp info`; another method, options or a K it was not compiled for are refused by name."""
    from onnxlrp.compiler.runner import CompiledExplainer

    src = str(FIX / "resnet.onnx")
    out = tmp_path / "resnet.eps.onnx"
    out.write_bytes(compile_explanation(src, "lrp_epsilon").SerializeToString())
    ce, ex = CompiledExplainer(str(out)), Explainer(src, device="cpu", kernels="engine")
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(ce.predict(x), ex.predict(x), rtol=1e-5, atol=1e-5)
    assert H.rel_err(ce.explain(x, None), ex.explain(x, None, "lrp_epsilon")) <= TOL
    assert H.rel_err(ce.explain(x, targets=[1, 3]), ex.explain(x, targets=[1, 3], method="lrp_epsilon")) <= TOL
    with pytest.raises(InputError, match="explains with 'lrp_epsilon' only"):
        ce.explain(x, 1, "lrp")
    with pytest.raises(InputError, match="options of a compiled graph are fixed"):
        ce.explain(x, 1, epsilon=0.1)
    assert main(["info", str(out)]) == 0
    assert "compiled explanation graph: method 'lrp_epsilon'" in capsys.readouterr().out
    from PIL import Image

    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).uniform(0, 255, (16, 16, 3))).astype(np.uint8)).save(img)
    assert main(["explain", str(out), str(img), "-o", str(tmp_path / "maps"), "--save-npy"]) == 0
    assert list((tmp_path / "maps").glob("*lrp_epsilon*.npy"))
    assert main(["explain", str(out), str(img), "-m", "gradient", "-o", str(tmp_path / "m2")]) == 2
    assert "compiled 'lrp_epsilon' graph" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam"])
def test_gradcam_same_forward_check(method: str) -> None:
    """Grad-CAM's tie check: the engine's Grad-CAM on the compiled graph's own forward tensors agrees with the
    compiled map far below 1e-5 (so a larger difference is a float32 tie between the two forwards, not a bug),
    for the default map and a named layer."""
    path = str(FIX / "vgg.onnx")
    ex = Explainer(path, device="cpu", kernels="engine")
    x = np.random.default_rng(5).standard_normal((2,) + tuple(ex.input_shape[1:])).astype(np.float32)
    tg = np.array([1, 3])
    for opts in ({}, {"layer": ex._plan(x.shape).graph.layers[3].outputs[0]}):
        cm = compile_explanation(path, method, verify=False, **opts)
        assert same_forward_error(cm, ex, x, tg, method, opts) <= 1e-6
