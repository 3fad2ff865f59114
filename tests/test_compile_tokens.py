"""Text models compiled: token ids, attention masks and token types are inputs of the compiled graph.

One graph serves every mask and every text of its length; it equals ``Explainer.explain`` (which
builds the layers for each mask) to 1e-5, measured against the largest Σ_D |R| of a token (the
per-token sum over the embedding axis cancels). A model that multiplies by its mask (mean pooling)
shows that the mask really is read at run time: with the mask baked in, the compile-time check
refuses the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlrp import Explainer, InputError, UnsupportedModelError
from onnxlrp.cli import main
from onnxlrp.compiler import compile_explanation
from onnxlrp.compiler import tracer as tracer_mod

FIX = Path(__file__).parent / "fixtures"
TOL = 1e-5


def mean_pool_model(vocab: int = 20, d: int = 6, classes: int = 3, length: int | str = "L") -> onnx.ModelProto:
    """ids → embedding → ReLU(x W + b) → masked mean over tokens → Gemm: the mask multiplies and divides."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((vocab, d)).astype(np.float32), "E"),
             numpy_helper.from_array(rng.standard_normal((d, d)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal(d).astype(np.float32) * 0.1, "b1"),
             numpy_helper.from_array(rng.standard_normal((classes, d)).astype(np.float32), "W2"),
             numpy_helper.from_array(np.zeros(classes, np.float32), "b2"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(np.array([1], np.int64), "tok_axis")]
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
             helper.make_node("MatMul", ["emb", "W1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]),
             helper.make_node("Unsqueeze", ["attention_mask", "last"], ["m0"]),
             helper.make_node("Cast", ["m0"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["h", "m"], ["hm"]),
             helper.make_node("ReduceSum", ["hm", "tok_axis"], ["s"], keepdims=0),
             helper.make_node("ReduceSum", ["m", "tok_axis"], ["cnt"], keepdims=0),
             helper.make_node("Div", ["s", "cnt"], ["pooled"]),
             helper.make_node("Gemm", ["pooled", "W2", "b2"], ["scores"], transB=1)]
    g = helper.make_graph(nodes, "mean_pool",
                          [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", length]),
                           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", length])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def feeds(n: int, length: int, vocab: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    keep = rng.integers(1, length + 1, size=n)
    return {"input_ids": rng.integers(0, vocab, size=(n, length)).astype(np.int64),
            "attention_mask": (np.arange(length)[None] < keep[:, None]).astype(np.int64)}


def run(model: onnx.ModelProto, f: dict[str, np.ndarray], tg: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    feed = {k: v for k, v in f.items() if k in names}
    if tg is not None:
        feed["target"] = tg
    return tuple(s.run(["logits", "heatmap"], feed))  # type: ignore[return-value]


def token_err(heat: np.ndarray, full: np.ndarray) -> float:
    """max |compiled − engine| per token over the largest Σ_D |R| of a token."""
    return float(np.abs(heat - full.sum(-1)).max() / np.abs(full).sum(-1).max())


@pytest.mark.parametrize("method", ["gradient", "input_x_gradient", "lrp_epsilon", "epsilon_plus_flat", "attnlrp"])
def test_mean_pool_mask_read_at_run_time(method: str) -> None:
    m = mean_pool_model()
    compiled = compile_explanation(m, method, shape=(7,))
    assert [i.name for i in compiled.graph.input] == ["input_ids", "attention_mask", "target"]
    ex = Explainer(m.SerializeToString(), device="cpu", kernels="engine")
    rng = np.random.default_rng(3)
    for n in (1, 4):
        f = feeds(n, 7, 20, rng)
        tg = rng.integers(0, 3, size=n)
        logits, heat = run(compiled, f, tg)
        full = ex.explain(f, tg, method, per_token=False)
        assert heat.shape == (n, 7)
        assert token_err(heat, full) <= TOL
        np.testing.assert_allclose(logits, ex.predict(f), rtol=1e-5, atol=1e-5)
        assert np.all(heat[f["attention_mask"] == 0] == 0)  # padded tokens: exactly nothing


def test_baked_mask_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the side tensors the mask would be baked in (all ones): the compile-time check refuses it."""
    monkeypatch.setattr(tracer_mod.Tracer, "_side_tensor", lambda self, a: None)
    with pytest.raises(UnsupportedModelError, match="disagrees with the engine"):
        compile_explanation(mean_pool_model(), "gradient", shape=(7,))


@pytest.mark.parametrize("fixture", ["lxt_bert_dynamo", "lxt_bert_torchscript", "lxt_bert_sdpa_dynamo",
                                     "lxt_bert_sdpa_torchscript"])
def test_bert_exports(fixture: str) -> None:
    """Tiny BERT (both exporters, eager and SDPA attention): attnlrp, cp_lrp and the gradient with padding and
    token types, K = 2 targets, against the engine; the published LXT reference for the padded pair."""
    path = str(FIX / f"{fixture}.onnx")
    ex = Explainer(path, device="cpu", kernels="engine")
    rng = np.random.default_rng(5)
    f = feeds(3, 8, 100, rng)
    f["token_type_ids"] = rng.integers(0, 2, size=(3, 8)).astype(np.int64)
    for method in ("attnlrp", "cp_lrp", "gradient"):
        compiled = compile_explanation(path, method, targets=2)
        tg = rng.integers(0, 2, size=(3, 2))
        _, heat = run(compiled, f, tg)
        full = np.stack([ex.explain(f, tg[:, j], method, per_token=False) for j in range(2)])
        assert heat.shape == (2, 3, 8)
        assert token_err(heat, full) <= TOL, method
    ref = np.load(FIX / "lxt_bert_ref.npz")  # float64 LXT 2.1 at the word embeddings, 2 targets
    f = {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    tg = np.tile(ref["targets"].astype(np.int64), (f["input_ids"].shape[0], 1))
    for method in ("attnlrp", "cp_lrp"):
        _, heat = run(compile_explanation(path, method, targets=2), f, tg)
        assert token_err(heat, ref[method]) <= 1e-4, method  # test_lxt_fidelity's tolerance
        assert np.all(heat[:, f["attention_mask"] == 0] == 0)


def test_refusals_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = mean_pool_model()
    with pytest.raises(InputError, match="token"):
        compile_explanation(m, "gradient")  # the token count is dynamic: it must be given
    with pytest.raises(InputError, match="does not fit"):
        compile_explanation(m, "gradient", shape=(0,))
    src = tmp_path / "pool.onnx"
    onnx.save(m, src)
    out = tmp_path / "pool.explain.onnx"
    assert main(["compile", str(src), "-m", "lrp_epsilon", "--shape", "5", "-o", str(out)]) == 0
    compiled = onnx.load(out)
    onnx.checker.check_model(compiled, full_check=True)
    rng = np.random.default_rng(0)
    f = feeds(2, 5, 20, rng)
    _, heat = run(compiled, f, np.array([0, 2]))
    assert heat.shape == (2, 5)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "text model's graph: feed it input_ids, attention_mask" in capsys.readouterr().out
    assert main(["compile", str(src), "-m", "lrp_epsilon", "-o", str(out)]) != 0
    assert "token" in capsys.readouterr().err


def test_compiled_explainer_takes_text_inputs() -> None:
    """CompiledExplainer runs a compiled text graph with a dict of inputs (a missing mask is all ones), as
    Explainer does; an array where a dict is needed is a clear error."""
    from onnxlrp.compiler.runner import CompiledExplainer

    path = str(FIX / "lxt_bert_dynamo.onnx")
    ce = CompiledExplainer(compile_explanation(path, "cp_lrp"), device="cpu")
    ex = Explainer(path, device="cpu", kernels="engine")
    rng = np.random.default_rng(2)
    f = feeds(2, 8, 100, rng)
    np.testing.assert_allclose(ce.predict(f), ex.predict(f), rtol=1e-5, atol=1e-6)
    full = ex.explain(f, [1, 0], "cp_lrp", per_token=False)
    assert token_err(ce.explain(f, [1, 0]), full) <= TOL
    ids = {"input_ids": f["input_ids"]}
    assert token_err(ce.explain(ids, [1, 0]), ex.explain(ids, [1, 0], "cp_lrp", per_token=False)) <= TOL
    with pytest.raises(InputError, match="dict"):
        ce.explain(f["input_ids"], 0)
    with pytest.raises(InputError, match="unknown input"):
        ce.explain({**f, "bogus": f["input_ids"]}, 0)


def test_float_input_with_a_mask() -> None:
    """A float input [N, L, D] beside an int mask [N, L]: the mask stays an input, the heatmap is shaped like
    the float input and equals the engine's."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes = [helper.make_node("Unsqueeze", ["mask", "last"], ["m0"]),
             helper.make_node("Cast", ["m0"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "m"], ["rm"]),
             helper.make_node("ReduceSum", ["rm", "ax"], ["s"], keepdims=0),
             helper.make_node("MatMul", ["s", "W"], ["y"])]
    g = helper.make_graph(nodes, "float_mask", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 6]),
                                                helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    compiled = compile_explanation(m, "lrp_epsilon")
    assert [i.name for i in compiled.graph.input] == ["x", "mask", "target"]
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    f = {"x": x, "mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    _, heat = run(compiled, f, np.array([0, 2]))
    ref = Explainer(m.SerializeToString(), device="cpu", kernels="engine").explain(f, [0, 2], "lrp_epsilon")
    assert heat.shape == (2, 5, 6) and float(np.abs(heat - ref).max() / np.abs(ref).max()) <= TOL
    assert np.all(heat[0, 3:] == 0)
