"""``attnlrp`` and ``cp_lrp`` against LXT 2.1 (the AttnLRP authors' package), float64 references.

* A tiny torchvision ViT (fixtures of ``tools/make_lxt_fixtures.py``: both exporters, float64 LXT
  references for 2 inputs × 2 targets and LXT's own float32 error). Tolerance, as for Zennit:
  ``max(1e-4, 2 × LXT's float32 error)`` in ``helpers_onnx.rel_err`` (max abs difference over the
  reference's max abs). Measured: ≤ 1e-6 for both methods, targets and exporters (ε = 1e-9;
  with ε = 1e-6 it would be 8e-4 — LXT's efficient rules have no ε).
* A tiny HF BERT sequence classifier with a padding mask (fixtures of ``tools/make_lxt_fixtures.py``: inputs
  ``input_ids``, ``attention_mask``, ``token_type_ids``; both exporters, each faithful on a mask other than the
  example's; float64 LXT references at the word embeddings — the explained tensor — for 2 sequences × 2 targets).
  Same tolerance, on the (L, D) maps and on the per-token sums. Measured: ≤ 7.6e-7 for both methods, targets and
  exporters (LXT's own float32 error ≤ 4.4e-7); relevance at the padded tokens is exactly 0 in LXT and in onnxlrp.
  Live, when ``torch``, ``transformers`` and ``lxt`` are importable: another tiny BERT and padding, TorchScript
  export, LXT recomputed here. The same BERT with SDPA attention (``transformers``' default), both exporters, matches
  LXT with the same tolerance: its ``-inf`` mask constant (TorchScript) loads as a mask fill, and the NaN guard
  ``Where(IsNaN(softmax), 0, softmax)`` after the softmax (both) is read as an identity. Measured (per target, both
  exporters): attnlrp ≤ 3.9e-7, cp_lrp ≤ 7.6e-7 (cp_lrp's maps are the eager exports' bit for bit).
* Live, when ``torch`` and ``lxt`` are importable: an attention block without LayerNorm built in
  torch (separate q/k/v projections, softmax attention, GELU MLP, a SiLU-gated unit, residuals),
  exported by the TorchScript exporter, its LXT references computed here in float64 (and float32,
  for the tolerance), compared with the same tolerance; its gradient against autograd (≤ 1e-5).
"""

from __future__ import annotations

import importlib.util
import io
import math
import sys
from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest

from onnxlrp import Explainer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
EXPORTERS = ("torchscript", "dynamo")
METHODS = ("attnlrp", "cp_lrp")


def _tool():  # type: ignore[no-untyped-def]
    """``tools/make_lxt_fixtures.py`` as a module (its LXT loader and reference function)."""
    spec = importlib.util.spec_from_file_location("make_lxt_fixtures", ROOT / "tools" / "make_lxt_fixtures.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_lxt_fixtures", mod)
    spec.loader.exec_module(mod)
    return mod


def tolerance(err32: float) -> float:
    """max(1e-4, 2 × LXT's own float32 error)."""
    return max(1e-4, 2.0 * float(err32))


# ---------------------------------------------------------------------------------------------
# the tiny torchvision ViT (fixtures)


def test_vit_fixtures_compute_the_stored_logits() -> None:
    ref = np.load(FIXTURES / "lxt_vit_ref.npz")
    for e in EXPORTERS:
        y = H.ort_session(FIXTURES / f"lxt_vit_{e}.onnx").run(None, {"x": ref["x"]})[0]
        assert H.rel_err(y, ref["logits"]) < 1e-5, e
    for m in METHODS:
        assert ref[m].shape == (2,) + ref["x"].shape and np.all(np.isfinite(ref[m]))
        assert np.all(ref[f"{m}_err32"] < 1e-4)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_vit_matches_lxt(exporter: str) -> None:
    ref = np.load(FIXTURES / "lxt_vit_ref.npz")
    ex = Explainer(str(FIXTURES / f"lxt_vit_{exporter}.onnx"), device="cpu")
    targets = [int(t) for t in ref["targets"]]
    for m in METHODS:
        got = ex.explain(ref["x"], targets=targets, method=m)
        for k in range(len(targets)):
            err = H.rel_err(got[k], ref[m][k])
            assert err <= tolerance(ref[f"{m}_err32"][k]), (exporter, m, targets[k], err)


# ---------------------------------------------------------------------------------------------
# a tiny HF BERT with a padding mask (fixtures)

BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# the SDPA twins (transformers' default attention): both exporters write the SDPA decomposition's NaN guard
# Where(IsNaN(softmax), 0, softmax) (read as an identity, onnxlrp.graph.nan_guards), TorchScript also a -inf Constant
# for the mask fill (a mask fill: loads, onnxlrp.loading._InfPolicy)
SDPA = ("sdpa_torchscript", "sdpa_dynamo")


def _bert_feeds(ref: dict[str, np.ndarray] | np.lib.npyio.NpzFile) -> dict[str, np.ndarray]:
    return {k: ref[k] for k in BERT_INPUTS}


def test_bert_fixtures_are_faithful_exports() -> None:
    """Both exports compute the stored float64 logits on the example and on a different padding (an export that
    baked the example's mask handling would fail the second)."""
    ref = np.load(FIXTURES / "lxt_bert_ref.npz")
    feeds = _bert_feeds(ref)
    other = {**feeds, "attention_mask": ref["other_mask"]}
    assert not np.array_equal(ref["other_mask"], ref["attention_mask"])
    assert H.rel_err(ref["other_logits"], ref["logits"]) > 1e-3  # the mask matters
    for e in (*EXPORTERS, *SDPA):
        sess = H.ort_session(FIXTURES / f"lxt_bert_{e}.onnx")
        assert H.rel_err(sess.run(None, feeds)[0], ref["logits"]) < 1e-5, e
        assert H.rel_err(sess.run(None, other)[0], ref["other_logits"]) < 1e-5, e
    padded = ref["attention_mask"] == 0
    assert padded[1].any() and not padded[0].any()
    n, length = ref["input_ids"].shape
    for m in METHODS:
        assert ref[m].shape == (len(ref["targets"]), n, length, 32) and np.all(np.isfinite(ref[m]))
        assert np.all(ref[f"{m}_err32"] < 1e-4) and np.all(ref[f"{m}_tokens_err32"] < 1e-4)
        assert np.all(ref[m][:, padded] == 0)  # LXT gives the padded tokens exactly nothing
        assert np.abs(ref[m][:, ~padded]).min() > 0


def test_bert_explains_the_word_embeddings() -> None:
    """The explained tensor is the word-embedding lookup (LXT's ``inputs_embeds``), not the sum with the token-type
    and position embeddings; the mask and the token types are held fixed."""
    import json

    import onnx

    meta = json.loads((FIXTURES / "lxt_bert_meta.json").read_text(encoding="utf-8"))
    assert "word_embeddings(input_ids)" in meta["explained"]
    for e in EXPORTERS:
        path = FIXTURES / f"lxt_bert_{e}.onnx"
        plan = Explainer(str(path), device="cpu").input_plan
        assert plan is not None and plan.kind == "embedding" and plan.source == "input_ids", e
        assert sorted(plan.fixed) == ["attention_mask", "token_type_ids"], e
        model = onnx.load(str(path))
        producer = next(n for n in model.graph.node if plan.explained in n.output)
        tables = {t.name: list(t.dims) for t in model.graph.initializer}
        assert producer.op_type == "Gather" and tables[producer.input[0]] == [100, 32], (e, producer)


@pytest.mark.parametrize("exporter", [*EXPORTERS, *SDPA])
def test_bert_matches_lxt(exporter: str) -> None:
    ref = np.load(FIXTURES / "lxt_bert_ref.npz")
    feeds = _bert_feeds(ref)
    ex = Explainer(str(FIXTURES / f"lxt_bert_{exporter}.onnx"), device="cpu")
    targets = [int(t) for t in ref["targets"]]
    padded = ref["attention_mask"] == 0
    for m in METHODS:
        got = ex.explain(feeds, targets=targets, method=m, per_token=False)
        tokens = ex.explain(feeds, targets=targets, method=m)
        assert got.shape == ref[m].shape and tokens.shape == ref[m].shape[:-1]
        for k in range(len(targets)):
            err = H.rel_err(got[k], ref[m][k])
            assert err <= tolerance(ref[f"{m}_err32"][k]), (exporter, m, targets[k], err)
            err = H.rel_err(tokens[k], ref[m][k].sum(-1))
            assert err <= tolerance(ref[f"{m}_tokens_err32"][k]), (exporter, m, targets[k], "tokens", err)
        assert np.all(got[:, padded] == 0) and np.all(tokens[:, padded] == 0), (exporter, m)
    # the references tell the rules apart: the two methods, and the plain Gradient × Input, differ by far more
    assert H.rel_err(ref["cp_lrp"], ref["attnlrp"]) > 1e-2
    gxi = ex.explain(feeds, targets=targets, method="input_x_gradient", per_token=False)
    assert min(H.rel_err(gxi, ref[m]) for m in METHODS) > 1e-2


# ---------------------------------------------------------------------------------------------
# a live tiny BERT: LXT recomputed here


def test_live_bert_matches_lxt() -> None:
    """Another tiny BERT (other weights) and other paddings (both sequences padded, at different lengths), exported
    by the TorchScript exporter; LXT's float64 and float32 relevance computed here, both methods, one target."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("lxt")
    tool = _tool()
    model = tool.tiny_bert(seed=21)
    batch = tool.bert_batch(seed=22)
    batch["attention_mask"][0, 6:] = 0
    batch["input_ids"][0, 6:] = 0
    proto, faithful = tool.bert_export(model, batch, dynamo=False)
    assert faithful < 1e-5
    ex = Explainer(proto.SerializeToString(), device="cpu")
    padded = batch["attention_mask"] == 0
    for m in METHODS:
        got = ex.explain(batch, target=1, method=m, per_token=False)
        r64 = tool.lxt_bert_relevance(model, batch, 1, m, torch.float64)
        r32 = tool.lxt_bert_relevance(model, batch, 1, m, torch.float32)
        err = H.rel_err(got, r64)
        assert err <= tolerance(H.rel_err(r32, r64)), (m, err, H.rel_err(r32, r64))
        assert np.all(r64[padded] == 0) and np.all(got[padded] == 0), m


# ---------------------------------------------------------------------------------------------
# a live attention block without LayerNorm


def _block_class():  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        """Tokens ``[N, 6, 16]`` → self-attention (2 heads) + residual → GELU MLP + residual → SiLU-gated unit
        + residual → mean over tokens → 4 classes. ``mode`` applies LXT's efficient rules where LXT's patches
        put them (``None``: the plain network, as exported)."""

        def __init__(self, dim: int = 16, heads: int = 2, classes: int = 4) -> None:
            super().__init__()
            self.heads, self.mode = heads, None
            self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
            self.fc1, self.fc2 = nn.Linear(dim, 32), nn.Linear(32, dim)
            self.gate, self.up, self.down = nn.Linear(dim, 24), nn.Linear(dim, 24), nn.Linear(24, dim)
            self.head = nn.Linear(dim, classes)

        def forward(self, x):  # type: ignore[no-untyped-def]
            rules, _ = _tool().lxt_efficient()
            n, length, dim = x.shape
            dh = dim // self.heads
            q, k, v = self.q(x), self.k(x), self.v(x)
            if self.mode == "attnlrp":  # LXT's wrap_attention_forward
                q, k, v = rules.divide_gradient(q, 4), rules.divide_gradient(k, 4), rules.divide_gradient(v, 2)
            elif self.mode == "cp_lrp":  # LXT's cp_wrap_attention_forward
                q, k = rules.stop_gradient(q), rules.stop_gradient(k)
            q, k, v = (t.reshape(n, length, self.heads, dh).transpose(1, 2) for t in (q, k, v))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
            h = x + self.o((a @ v).transpose(1, 2).reshape(n, length, dim))
            m = self.fc1(h)
            m = F.gelu(m) if self.mode is None else rules.identity_rule_implicit(F.gelu, m)  # LXT's mlp_forward
            h = h + self.fc2(m)
            if self.mode == "attnlrp":  # LXT's gated_mlp_forward
                g = rules.identity_rule_implicit(F.silu, self.gate(h))
                h = h + self.down(rules.divide_gradient(g * self.up(h), 2))
            elif self.mode == "cp_lrp":  # LXT's cp_gated_mlp_forward
                h = h + self.down(F.silu(rules.stop_gradient(self.gate(h))) * self.up(h))
            else:
                h = h + self.down(F.silu(self.gate(h)) * self.up(h))
            return self.head(h.mean(1))

    return Block


@pytest.fixture(scope="module")
def live_block():  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    pytest.importorskip("lxt")
    tool = _tool()
    torch.manual_seed(0)
    block = tool.randomise(_block_class()(), seed=5)
    x = np.random.default_rng(6).standard_normal((2, 6, 16)).astype(np.float32)
    buf = io.BytesIO()
    torch.onnx.export(block, (torch.tensor(x),), buf, dynamo=False, opset_version=17, input_names=["x"],
                      dynamic_axes={"x": {0: "N"}})
    return tool, block, x, Explainer(buf.getvalue(), device="cpu")


def _lxt(tool, block, x, target, method, dtype):  # type: ignore[no-untyped-def]
    import contextlib

    @contextlib.contextmanager
    def mode(m: str, model):  # type: ignore[no-untyped-def]
        model.mode = m
        try:
            yield
        finally:
            model.mode = None

    return tool.lxt_relevance(block, x, target, method, dtype, rules=mode)


def test_live_block_gradient_matches_autograd(live_block) -> None:  # type: ignore[no-untyped-def]
    tool, block, x, ex = live_block
    for t in (0, 2):
        assert H.rel_err(ex.explain(x, target=t, method="gradient"), tool.gradient(block, x, t)) < 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_live_block_matches_lxt(live_block, method: str) -> None:  # type: ignore[no-untyped-def]
    import torch

    tool, block, x, ex = live_block
    targets = [0, 2]
    got = ex.explain(x, targets=targets, method=method)
    for k, t in enumerate(targets):
        r64 = _lxt(tool, block, x, t, method, torch.float64)
        r32 = _lxt(tool, block, x, t, method, torch.float32)
        err = H.rel_err(got[k], r64)
        assert err <= tolerance(H.rel_err(r32, r64)), (method, t, err, H.rel_err(r32, r64))
    # the rules differ inside attention: the two methods give different maps
    other = ex.explain(x, targets=targets, method=METHODS[1 - METHODS.index(method)])
    assert H.rel_err(got, other) > 1e-2


# what each method gives the transformer layer kinds (the table of docs/methods.md)
KIND_RULES = {
    "attnlrp": {"product": "uniform(eps=1e-09)", "softmax": "softmax-taylor", "norm": "norm-epsilon(eps=1e-09)",
                "activation": "pass", "linear": "epsilon(1e-09)", "add": "z(eps=1e-09)", "affine": "z(eps=1e-09)"},
    "cp_lrp": {"product": "attention-weights-constant(eps=1e-09)", "softmax": "stop",
               "norm": "norm-epsilon(eps=1e-09)", "activation": "pass", "linear": "epsilon(1e-09)"},
    "lrp": {"product": "uniform(safe)", "softmax": "softmax-taylor", "norm": "norm-epsilon(safe)",
            "activation": "gradient"},
    "lrp_preset_a": {"product": "uniform(safe)", "softmax": "softmax-taylor", "norm": "norm-epsilon(safe)",
                     "activation": "pass"},
    "epsilon_plus_flat": {"product": "uniform(eps=1e-06)", "softmax": "softmax-taylor",
                          "norm": "norm-epsilon(eps=1e-06)", "activation": "pass"},
    "gradient": {"product": "gradient", "softmax": "gradient", "norm": "gradient", "activation": "gradient"},
}


@pytest.mark.parametrize("method", list(KIND_RULES))
def test_rules_of_the_transformer_kinds(method: str) -> None:
    ex = Explainer(str(FIXTURES / "lxt_vit_torchscript.onnx"), device="cpu")
    rules: dict[str, set[str]] = {}
    for row in ex.layers(method):
        rules.setdefault(row["kind"], set()).add(row["rule"])
    for kind, rule in KIND_RULES[method].items():
        assert rules[kind] == {rule}, (method, kind, rules[kind])
