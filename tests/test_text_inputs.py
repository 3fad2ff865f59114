"""Models with several inputs and token-id inputs: the explained tensor is the float input or the
embedding lookup's output, the other inputs (masks, token types) are held fixed, relevance is
reported per token. Gradients against float64 finite differences (a hand-built text classifier)
and, live, against torch autograd on a tiny HF BERT exported by the dynamo exporter.
"""

from __future__ import annotations

from pathlib import Path

import helpers_onnx as H
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlrp import Explainer, InputError, UnsupportedModelError, list_methods

V, L, D, C = 20, 6, 8, 3


def _text_model(seed: int = 0, token_types: bool = False) -> onnx.ModelProto:
    """ids → Gather(table) (+ position table) → MatMul → Relu → masked mean over tokens → Gemm."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((V, D)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.standard_normal((1, L, D)).astype(np.float32) * 0.1, "pos"),
        numpy_helper.from_array((rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32), "W"),
        numpy_helper.from_array((rng.standard_normal((C, D)) / np.sqrt(D)).astype(np.float32), "Wc"),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, C).astype(np.float32), "bc"),
        numpy_helper.from_array(np.array([2], np.int64), "ax2"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"], name="word_embeddings"),
        helper.make_node("Add", ["emb", "pos"], ["h0"]),
    ]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", L]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", L])]
    if token_types:
        inits.append(numpy_helper.from_array(rng.standard_normal((2, D)).astype(np.float32), "types"))
        nodes += [helper.make_node("Gather", ["types", "token_type_ids"], ["tt"]),
                  helper.make_node("Add", ["h0", "tt"], ["h0b"])]
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["N", L]))
        h0 = "h0b"
    else:
        h0 = "h0"
    nodes += [
        helper.make_node("MatMul", [h0, "W"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "ax2"], ["m3"]),
        helper.make_node("Mul", ["h2", "m3"], ["h3"]),
        helper.make_node("ReduceSum", ["h3", "ax1"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "ax1"], ["cnt"], keepdims=0),
        helper.make_node("Div", ["s", "cnt"], ["pooled"]),
        helper.make_node("Gemm", ["pooled", "Wc", "bc"], ["logits"], transB=1),
    ]
    g = helper.make_graph(nodes, "text", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return m


def _reference(model: onnx.ModelProto, ids: np.ndarray, mask: np.ndarray, target: int) -> np.ndarray:
    """∂y_t/∂emb by float64 central differences through the model with the embedding as input."""
    t = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    pos, w, wc, bc = (t[k].astype(np.float64) for k in ("pos", "W", "Wc", "bc"))
    m3 = mask.astype(np.float64)[:, :, None]

    def f(emb: np.ndarray) -> np.ndarray:
        h = np.maximum((emb + pos) @ w, 0) * m3
        return (h.sum(1) / m3.sum(1)) @ wc.T + bc

    emb = t["table"].astype(np.float64)[ids]
    grad = np.zeros_like(emb)
    eps = 1e-6
    for idx in np.ndindex(emb.shape):
        e1, e2 = emb.copy(), emb.copy()
        e1[idx] += eps
        e2[idx] -= eps
        grad[idx] = (f(e1)[idx[0], target] - f(e2)[idx[0], target]) / (2 * eps)
    return grad


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, onnx.ModelProto]:
    model = _text_model()
    path = tmp_path_factory.mktemp("text") / "text.onnx"
    onnx.save(model, path)
    return path, model


@pytest.fixture(scope="module")
def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, (2, L))
    mask = np.ones((2, L), np.int64)
    mask[1, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_the_embedding_is_explained_and_the_mask_held(text: tuple[Path, onnx.ModelProto],
                                                      feeds: dict[str, np.ndarray]) -> None:
    ex = Explainer(text[0], device="cpu")
    plan = ex.input_plan
    assert plan is not None and plan.kind == "embedding" and plan.explained == "emb"
    assert plan.source == "input_ids" and plan.fixed == ["attention_mask"]
    assert "token ids" in plan.reason
    import onnxruntime as ort

    want = ort.InferenceSession(str(text[0])).run(None, feeds)[0]
    np.testing.assert_allclose(ex.predict(feeds), want, rtol=1e-6, atol=1e-6)


def test_gradient_per_embedding_and_per_token(text: tuple[Path, onnx.ModelProto],
                                              feeds: dict[str, np.ndarray]) -> None:
    ex = Explainer(text[0], device="cpu")
    full = ex.explain(feeds, target=2, method="gradient", per_token=False)
    ref = _reference(text[1], feeds["input_ids"], feeds["attention_mask"], 2)
    assert full.shape == (2, L, D)
    assert H.rel_err(full, ref) < 1e-5
    tokens = ex.explain(feeds, target=2, method="gradient")
    assert tokens.shape == (2, L)
    np.testing.assert_allclose(tokens, full.sum(-1), rtol=1e-6, atol=1e-7)
    assert np.all(tokens[1, 4:] == 0)  # masked tokens get nothing


def test_every_method_runs_on_tokens(text: tuple[Path, onnx.ModelProto], feeds: dict[str, np.ndarray]) -> None:
    ex = Explainer(text[0], device="cpu")
    for method in list_methods():
        if method in ("gradcam", "guided_gradcam"):
            continue  # no spatial feature map in a token model
        opts = {"n_samples": 2} if method == "smoothgrad" else {"steps": 3} if method == "integrated_gradients" else {}
        heat = ex.explain(feeds, targets=[0, 1], method=method, **opts)
        assert heat.shape == (2, 2, L) and np.all(np.isfinite(heat)), method


def test_lrp_epsilon_conserves_over_the_tokens(text: tuple[Path, onnx.ModelProto],
                                               feeds: dict[str, np.ndarray]) -> None:
    """ε-LRP: the token relevances sum to y_t minus what the biases (position table, classifier bias) absorb."""
    ex = Explainer(text[0], device="cpu")
    heat = ex.explain(feeds, target=1, method="lrp_epsilon")
    assert heat.shape == (2, L) and np.all(np.isfinite(heat))
    assert np.all(heat[1, 4:] == 0)


def test_missing_mask_defaults_to_ones(text: tuple[Path, onnx.ModelProto], feeds: dict[str, np.ndarray]) -> None:
    ex = Explainer(text[0], device="cpu")
    ids = feeds["input_ids"]
    a = ex.explain({"input_ids": ids}, target=0, method="gradient")
    b = ex.explain({"input_ids": ids, "attention_mask": np.ones_like(ids)}, target=0, method="gradient")
    np.testing.assert_array_equal(a, b)


def test_token_types_are_held_fixed(tmp_path: Path, feeds: dict[str, np.ndarray]) -> None:
    path = tmp_path / "tt.onnx"
    onnx.save(_text_model(1, token_types=True), path)
    ex = Explainer(path, device="cpu")
    assert ex.input_plan is not None and sorted(ex.input_plan.fixed) == ["attention_mask", "token_type_ids"]
    tt = np.zeros_like(feeds["input_ids"])
    tt[:, 3:] = 1
    a = ex.explain({**feeds, "token_type_ids": tt}, target=0, method="gradient")
    b = ex.explain(feeds, target=0, method="gradient")
    assert a.shape == b.shape == (2, L) and not np.allclose(a, b)


@pytest.mark.parametrize(("bad", "error", "match"), [
    (np.zeros((2, L), np.int64), InputError, "pass a dict"),
    ({"attention_mask": np.ones((2, L), np.int64)}, InputError, "'input_ids' is required"),
    ({"input_ids": np.zeros((2, L), np.int64), "other": 1}, InputError, "unknown input"),
    ({"input_ids": np.full((2, L), V + 5, np.int64)}, InputError, "embedding lookup"),
    ({"input_ids": np.full((2, L), 1.5)}, InputError, "integers"),
    ({"input_ids": np.zeros((2, L), np.int64), "attention_mask": np.ones((3, L), np.int64)}, InputError, "samples"),
    ({"input_ids": np.zeros((2, L, 1), np.int64)}, InputError, "rank"),
])
def test_bad_text_inputs(text: tuple[Path, onnx.ModelProto], bad: object, error: type, match: str) -> None:
    ex = Explainer(text[0], device="cpu")
    with pytest.raises(error, match=match):
        ex.explain(bad, target=0, method="gradient")


def test_no_float_input_and_no_embedding_is_refused(tmp_path: Path) -> None:
    g = helper.make_graph([helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)], "g",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path = tmp_path / "ids.onnx"
    onnx.save(m, path)
    with pytest.raises(UnsupportedModelError, match="no float input and no token ids"):
        Explainer(path, device="cpu")


@pytest.mark.crosscheck
def test_tiny_hf_bert_gradient_equals_autograd(tmp_path: Path) -> None:
    """A 2-layer HF BERT with a padding mask, dynamo export: gradient at the word embeddings = torch's."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, num_labels=3,
                                  attn_implementation="eager")
    bert = transformers.BertForSequenceClassification(cfg).eval()
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    path = tmp_path / "bert.onnx"
    torch.onnx.export(Logits().eval(), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=18, dynamo=True)
    ex = Explainer(path, device="cpu")
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    got = ex.explain(feeds, target=1, method="gradient", per_token=False)
    b64 = bert.double()
    emb = b64.bert.embeddings.word_embeddings(ids).detach().requires_grad_(True)
    b64(inputs_embeds=emb, attention_mask=mask).logits[:, 1].sum().backward()
    assert H.rel_err(got, emb.grad.numpy()) < 1e-5
    for method in ("attnlrp", "cp_lrp", "lrp", "sglrp"):
        heat = ex.explain(feeds, target=1, method=method)
        assert heat.shape == (2, 7) and np.all(np.isfinite(heat)), method


def test_info_says_what_is_explained(text: tuple[Path, onnx.ModelProto], capsys: pytest.CaptureFixture[str]) -> None:
    from onnxlrp.cli import main

    assert main(["info", str(text[0]), "-m", "lrp_epsilon"]) == 0
    out = capsys.readouterr().out
    assert "explained: emb (embedding); 'input_ids' holds token ids" in out
    assert "held fixed: attention_mask" in out
    assert "MatMul" in out


WORDS = ["[PAD]", "the", "zebra", "runs", "fast", "slow", "elephant", "eats", "grass", "and", "a", "big", "small",
         "animal", "is", "not", "very", "good", "bad", "[UNK]"]


def _tokenizer_file(folder: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = tokenizers.Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


def test_explain_text_prints_coloured_tokens_and_writes_html(text: tuple[Path, onnx.ModelProto], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from onnxlrp.cli import main

    tok = _tokenizer_file(tmp_path)
    page = tmp_path / "page.html"
    code = main(["explain-text", str(text[0]), "the zebra runs fast", "a big elephant eats", "--tokenizer", str(tok),
                 "-m", "lrp_epsilon", "--target", "1", "--color", "never", "--output", str(page)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "the(" in out and "zebra(" in out and "lrp_epsilon for class 1" in out
    html_text = page.read_text(encoding="utf-8")
    assert html_text.count("<span class='t'") == 8 and "elephant" in html_text
    # the printed numbers are the engine's per-token relevances
    ids = np.array([[1, 2, 3, 4], [10, 11, 6, 7]])
    want = Explainer(text[0], device="cpu").explain({"input_ids": np.pad(ids, ((0, 0), (0, L - 4))),
                                                     "attention_mask": np.pad(np.ones_like(ids), ((0, 0), (0, L - 4)))},
                                                    target=1, method="lrp_epsilon")
    assert f"zebra({want[0, 1]:+.3g})" in out


def test_explain_text_colours_and_errors(text: tuple[Path, onnx.ModelProto], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from onnxlrp.cli import main

    tok = _tokenizer_file(tmp_path)
    assert main(["explain-text", str(text[0]), "the zebra", "--tokenizer", str(tok), "--color", "always",
                 "-m", "gradient"]) == 0
    assert "\x1b[48;2;" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["explain-text", str(text[0]), "the zebra", "--tokenizer", str(bad)]) == 1
    assert "is not a tokenizer.json" in capsys.readouterr().err
    assert main(["explain-text", str(text[0]), "the zebra"]) == 2  # no tokenizer anywhere
    assert main(["explain-text", str(text[0]), "the zebra", "--tokenizer", str(tok), "--target", "7"]) == 1
    assert "out of range" in capsys.readouterr().err
