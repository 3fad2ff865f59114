"""Text models: the fixed inputs (masks, token types, the token ids) are run-time feeds of one session.

The layers of a call are built for its fixed inputs (constants of a model copy, exact for them);
the forward pass of every call after the first runs on one onnxruntime session per explained
shape that takes those inputs at run time (``inputs.runtime_model``, ``runtime.FeedSession``).
Checked here: a call with new masks creates no session and gives what a fresh explainer gives
(relative error ≤ 1e-6: the two sessions fold the mask arithmetic differently, measured 0 on
this model); a batch of texts with different masks equals the texts one by one; constant
``GatherElements`` (the dynamo exporter's BERT token-type buffer) is folded by ``specialise``.
"""

from __future__ import annotations

import helpers_onnx as H
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_text_inputs import L, V, _text_model

import onnxlrp.runtime as runtime
from onnxlrp import Explainer, list_methods
from onnxlrp.inputs import _fold_gather_elements

METHODS = [m for m in list_methods() if m not in ("gradcam", "guided_gradcam")]
OPTS = {"smoothgrad": {"n_samples": 3}, "integrated_gradients": {"steps": 3}}


def _feeds(seed: int, n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((n, L), np.int64)
    for i in range(n):
        mask[i, L - 1 - (seed + i) % (L - 1):] = 0
    return {"input_ids": rng.integers(0, V, (n, L)), "attention_mask": mask}


def test_new_masks_reuse_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _text_model(2, token_types=True)
    ex = Explainer(model, device="cpu")
    first = _feeds(0)
    first["token_type_ids"] = np.zeros_like(first["input_ids"])
    ex.explain(first, target=1, method="gradient")
    created: list[int] = []
    real = runtime.make_session
    monkeypatch.setattr(runtime, "make_session", lambda *a, **k: created.append(1) or real(*a, **k))
    for seed in (1, 2):
        feeds = _feeds(seed)
        feeds["token_type_ids"] = (np.arange(L)[None] >= 2 + seed).astype(np.int64).repeat(3, 0)
        fresh = Explainer(model, device="cpu")
        made = len(created)
        for method in METHODS:
            got = ex.explain(feeds, targets=[0, 2], method=method, per_token=False, **OPTS.get(method, {}))
            want = fresh.explain(feeds, targets=[0, 2], method=method, per_token=False, **OPTS.get(method, {}))
            assert H.rel_err(got, want) <= 1e-6, method
        np.testing.assert_allclose(ex.predict(feeds), fresh.predict(feeds), rtol=1e-6, atol=1e-7)
        fresh_sessions = len(created) - made
        assert fresh_sessions >= 2  # the fresh explainer: the embedding lookup and its forward
    # every session created in those calls was the fresh explainers'
    ex2 = Explainer(model, device="cpu")
    ex2.explain(first, target=1, method="gradient")
    before = len(created)
    ex2.explain({**_feeds(5), "token_type_ids": np.ones((3, L), np.int64)}, target=1, method="lrp_epsilon")
    assert len(created) == before


def test_a_batch_of_texts_with_different_masks_is_the_texts_one_by_one() -> None:
    ex = Explainer(_text_model(3), device="cpu")
    feeds = _feeds(4, n=5)
    assert len({m.tobytes() for m in feeds["attention_mask"]}) == 5
    for method in ("gradient", "attnlrp", "lrp_epsilon", "integrated_gradients"):
        batch = ex.explain(feeds, target=2, method=method, **OPTS.get(method, {}))
        one = np.concatenate([ex.explain({k: v[i:i + 1] for k, v in feeds.items()}, target=2, method=method,
                                         **OPTS.get(method, {})) for i in range(5)])
        assert H.rel_err(batch, one) <= 1e-6, method
        assert np.all(batch[feeds["attention_mask"] == 0] == 0)


def test_constant_gather_elements_are_folded() -> None:
    rng = np.random.default_rng(0)
    buf = rng.standard_normal((2, 9)).astype(np.float32)
    idx = np.array([[0, 3, -1, 2], [8, -9, 1, 1]], np.int64)
    g = helper.make_graph(
        [helper.make_node("GatherElements", ["buf", "idx"], ["ge"], axis=1),
         helper.make_node("Add", ["x", "ge"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(buf, "buf"), numpy_helper.from_array(idx, "idx")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    x = rng.standard_normal((2, 4)).astype(np.float32)
    want = H.ort_session(m).run(None, {"x": x})[0]
    folded = onnx.ModelProto()
    folded.CopyFrom(m)
    _fold_gather_elements(folded)
    assert [n.op_type for n in folded.graph.node] == ["Add"]
    np.testing.assert_array_equal(H.ort_session(folded).run(None, {"x": x})[0], want)
    np.testing.assert_array_equal(want, x + np.take_along_axis(buf, np.where(idx < 0, idx + 9, idx), 1))


def test_large_masks_are_rebound_too() -> None:
    """Fixed inputs of ≥ 1024 elements are detached weights of the prepared model: rebound by value as well."""
    ex = Explainer(_text_model(4), device="cpu")
    ex.explain(_feeds(6, n=200), target=0, method="gradient")
    feeds = _feeds(7, n=200)
    got = ex.explain(feeds, target=0, method="lrp_epsilon")
    want = Explainer(_text_model(4), device="cpu").explain(feeds, target=0, method="lrp_epsilon")
    assert H.rel_err(got, want) <= 1e-6
    other = ex.explain({"input_ids": feeds["input_ids"][:7]}, target=0, method="lrp_epsilon")  # another shape
    np.testing.assert_allclose(other, Explainer(_text_model(4), device="cpu").explain(
        {"input_ids": feeds["input_ids"][:7]}, target=0, method="lrp_epsilon"), rtol=1e-6, atol=1e-7)
