"""Make the transformer fixtures: tiny torch attention models exported by both exporters, their float64 autograd
gradients, and float64 LXT 2.1 references of AttnLRP and CP-LRP for a tiny torchvision ViT.

Writes to ``tests/fixtures/``:

* ``attention_{mha,encoder}_{torchscript,dynamo}.onnx`` — an ``nn.MultiheadAttention`` block and an
  ``nn.TransformerEncoderLayer`` (GELU, LayerNorm) classifier on ``[N, 5, 8]`` tokens, exported with
  ``dynamo=False`` (opset 17) and ``dynamo=True`` (opset 20); ``attention_torch_ref.npz``: their input
  ``{kind}_x`` and the float64 autograd gradients ``{kind}_grad_t{0,2}`` of targets 0 and 2.
* ``lxt_vit_{torchscript,dynamo}.onnx`` — ``torchvision.models.VisionTransformer(image_size=32,
  patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5)`` with random
  trained-like weights (LayerNorm gains and shifts, class token, position embedding, head and biases
  all non-trivial); ``lxt_vit_ref.npz``: two inputs ``x`` (2, 3, 32, 32), ``targets`` (2 per input),
  ``logits``, and for each method ``m`` in (``attnlrp``, ``cp_lrp``) the float64 LXT relevance ``m``
  (targets × inputs × image) and LXT's own float32 error ``m_err32`` (``max|R32 − R64| / max|R64|``
  per target).

LXT's efficient (Gradient × Input) rules, as its ``lxt.efficient.patches`` apply them: GELU through
``identity_rule_implicit``, LayerNorm with ``σ`` detached (``layer_norm_forward``); AttnLRP: the query
and key gradients divided by 4 and the value's by 2 at the attention's inputs (``wrap_attention_forward``);
CP-LRP: query and key detached (``cp_multi_head_attention_forward``, LXT's ViT recipe). Relevance is
``x ⊙`` the modified gradient of the target logit, i.e. the rules started from ``R = y_t`` (onnxlrp's start;
see :func:`lxt_relevance`).

* ``lxt_bert_{torchscript,dynamo}.onnx`` — a tiny ``transformers`` ``BertForSequenceClassification`` (2 layers,
  hidden 32, 2 heads, intermediate 64, vocabulary 100, 16 positions, 2 token types, 2 classes, eager attention,
  trained-like random weights) behind a wrapper ``(input_ids, attention_mask, token_type_ids) → logits``, exported
  with ``dynamo=False`` (opset 17) and ``dynamo=True`` (opset 20), batch dynamic, length 8;
  ``lxt_bert_ref.npz``: the batch ``input_ids``, ``attention_mask``, ``token_type_ids`` (2 sequences of 8 tokens,
  the second padded: mask 0 and id 0 at positions 5–7), ``targets`` (0, 1), float64 ``logits``, ``other_mask``
  and ``other_logits`` (a different padding, to check the exports did not bake the example's mask), and for each
  method ``m`` the float64 LXT relevance ``m`` at the word embeddings (targets × N × L × D) and LXT's float32
  errors ``m_err32`` (of the (L, D) maps) and ``m_tokens_err32`` (of the per-token sums), per target;
  ``lxt_bert_meta.json``: what was explained, the rules, the versions, and the measured numbers.
  ``lxt_bert_sdpa_{torchscript,dynamo}.onnx`` — the same weights with ``transformers``' default SDPA attention
  (LXT's relevance through SDPA equals the eager one to 1e-15, checked here, so ``lxt_bert_ref.npz`` is its
  reference too). Both exporters write SDPA's NaN guard ``Where(IsNaN(softmax), 0, softmax)`` and TorchScript a
  ``-inf`` constant for the mask fill; onnxlrp reads the guard as the identity and loads ``-inf`` where it is only
  a mask fill, so ``tests/test_lxt_fidelity.py`` checks the SDPA twins against the same reference.

LXT's efficient (Gradient × Input) rules, as its ``lxt.efficient.patches`` apply them: GELU through
``identity_rule_implicit``, LayerNorm with ``σ`` detached (``layer_norm_forward``); AttnLRP: the query
and key gradients divided by 4 and the value's by 2 at the attention's inputs (``wrap_attention_forward``);
CP-LRP: query and key detached (``cp_multi_head_attention_forward``, LXT's ViT recipe). Relevance is
``x ⊙`` the modified gradient of the target logit, i.e. the rules started from ``R = y_t`` (onnxlrp's start;
see :func:`lxt_relevance`).

BERT: LXT 2.1's own BERT patch (``lxt.efficient.models.bert``) is a copy of the ``transformers`` 4 modelling file
and does not import under ``transformers`` 5 (its ``BertSdpaSelfAttention``/``modeling_attn_mask_utils`` are
gone). The reference therefore applies LXT's patch functions to the ``transformers`` 5 classes, the way LXT 2.1
patches its ``transformers`` 5 models (Llama, Qwen): ``modeling_bert.eager_attention_forward`` wrapped by
``wrap_attention_forward`` (AttnLRP) or ``cp_wrap_attention_forward`` (CP-LRP: query and key detached, LXT's
Llama/Qwen ``cp_LRP`` recipe), ``nn.LayerNorm`` by ``layer_norm_forward``, the GELU of the intermediate layer and
the pooler's ``tanh`` through ``identity_rule_implicit`` (``non_linear_forward``) — what LXT's ``transformers`` 4
BERT patch does (it divides the gradient of ``QKᵀ`` and of ``A·V`` by 2 each: the same ¼, ¼, ½ at query, key and
value; :func:`bert_check_lxt_patch` checks both forms agree, and that the patched forward is the model's). LXT's
relevance is taken where LXT's BERT example takes it and where onnxlrp's explainer does: at the word embeddings
``inputs_embeds = word_embeddings(input_ids)``, before the token-type and position embeddings are added (the
explained tensor is the output of the ``Gather`` reading the 100-row word table; the 2-row token-type table is
held fixed with ``token_type_ids``).

Both exporters are faithful for this model (``transformers`` 5.23, torch 2.14.1): ONNX logits equal PyTorch's on
masks other than the example's — a different padding, no padding, other batch sizes (checked by :func:`bert_export`
on every run, and by the tests on the committed files). An earlier note that the TorchScript exporter bakes the
example's mask handling into the graph does not reproduce here, with eager or SDPA attention, a padded or an
all-ones example.

Run: ``python tools/make_lxt_fixtures.py [attention] [vit] [bert]`` (torch 2.14, torchvision 0.29, onnxscript,
``pip install --no-deps lxt==2.1``, ``transformers`` 5 for ``bert`` only): about three minutes on two cores, nearly
all of it the dynamo exports. ``python tools/make_lxt_fixtures.py measure`` prints onnxlrp's errors against them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


# ---------------------------------------------------------------------------------------------
# export


def export(model: nn.Module, x: torch.Tensor, dynamo: bool) -> onnx.ModelProto:
    """``model`` exported with a dynamic batch: TorchScript at opset 17 or dynamo at opset 20, weights inline."""
    model = model.eval()
    if dynamo:
        prog = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=20, input_names=["x"],
                                 output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("N")},),
                                 verbose=False)
        return prog.model_proto
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}})
    return onnx.load_from_string(buf.getvalue())


def save(model: onnx.ModelProto, name: str) -> None:
    """Save with every tensor inline (dynamo keeps large ones in a side file otherwise)."""
    onnx.save(model, str(OUT / name), save_as_external_data=False)
    print(f"wrote tests/fixtures/{name} ({(OUT / name).stat().st_size / 1024:.0f} KiB)")


def gradient(model: nn.Module, x: np.ndarray, target: int) -> np.ndarray:
    """``∂y_target/∂x`` per sample, in float64."""
    m = copy.deepcopy(model).double().eval()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    m(xt)[:, target].sum().backward()
    return xt.grad.numpy()  # type: ignore[union-attr]


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Trained-like random weights: non-zero biases, LayerNorm gains around 1 and shifts, embeddings of scale 0.5."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.empty_like(p).uniform_(-0.2, 0.2, generator=g))
            elif p.ndim == 1 and "norm" in name.lower() or name.startswith("ln") or ".ln" in name:
                p.copy_(torch.empty_like(p).uniform_(0.6, 1.4, generator=g))
            elif "class_token" in name or "pos_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# tiny attention models (gradient fixtures)


class MHAClassifier(nn.Module):
    """``nn.MultiheadAttention`` (2 heads) + residual, mean over tokens, a linear head."""

    def __init__(self, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.att(x, x, x, need_weights=False)
        return self.fc((h + x).mean(1))


class EncoderClassifier(nn.Module):
    """``nn.TransformerEncoderLayer`` (GELU, LayerNorm), mean over tokens, a linear head."""

    def __init__(self, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(dim, 2, 16, dropout=0.0, batch_first=True, activation="gelu")
        self.fc = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(x).mean(1))


def attention_fixtures() -> None:
    """The MHA and encoder exports and their autograd gradients."""
    ref: dict[str, np.ndarray] = {}
    for kind, cls in (("mha", MHAClassifier), ("encoder", EncoderClassifier)):
        torch.manual_seed(0)
        model = randomise(cls(), seed=1)
        x = np.random.default_rng(2).standard_normal((2, 5, 8)).astype(np.float32)
        ref[f"{kind}_x"] = x
        for t in (0, 2):
            ref[f"{kind}_grad_t{t}"] = gradient(model, x, t)
        for dynamo in (False, True):
            name = f"attention_{kind}_{'dynamo' if dynamo else 'torchscript'}.onnx"
            save(export(model, torch.tensor(x), dynamo), name)
    np.savez_compressed(OUT / "attention_torch_ref.npz", **ref)
    print("wrote tests/fixtures/attention_torch_ref.npz")


# ---------------------------------------------------------------------------------------------
# LXT references


def lxt_efficient() -> tuple[types.ModuleType, types.ModuleType]:
    """LXT 2.1's ``lxt.efficient.rules`` and ``lxt.efficient.patches``, imported without the package's
    ``__init__`` (which imports every model patch, and its BERT patch needs ``transformers`` < 5): the efficient
    rules themselves need only torch."""
    import lxt

    if "lxt.efficient" not in sys.modules:
        pkg = types.ModuleType("lxt.efficient")
        pkg.__path__ = [str(Path(lxt.__file__).parent / "efficient")]
        sys.modules["lxt.efficient"] = pkg
    return importlib.import_module("lxt.efficient.rules"), importlib.import_module("lxt.efficient.patches")


@contextlib.contextmanager
def lxt_rules(method: str, model: nn.Module | None = None) -> Iterator[None]:
    """LXT 2.1's efficient rules on ``nn.GELU``, ``nn.LayerNorm`` and ``nn.MultiheadAttention`` (class patches,
    undone on exit; ``model`` is not needed)."""
    rules, patches = lxt_efficient()
    divide_gradient = rules.divide_gradient
    cp_multi_head_attention_forward = patches.cp_multi_head_attention_forward
    layer_norm_forward, non_linear_forward = patches.layer_norm_forward, patches.non_linear_forward

    def attnlrp_mha_forward(self: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor, *args: object, **kwargs: object) -> object:
        # LXT's wrap_attention_forward: the uniform rule through Q·Kᵀ and A·V as divided gradients
        return self.original_forward(divide_gradient(query, 4), divide_gradient(key, 4), divide_gradient(value, 2),
                                     *args, **kwargs)

    classes = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention)
    saved = {c: c.forward for c in classes}
    nn.GELU.original_forward = saved[nn.GELU]  # type: ignore[attr-defined]
    nn.GELU.forward = non_linear_forward  # type: ignore[method-assign]
    nn.LayerNorm.forward = layer_norm_forward  # type: ignore[method-assign]
    nn.MultiheadAttention.original_forward = saved[nn.MultiheadAttention]  # type: ignore[attr-defined]
    nn.MultiheadAttention.forward = (  # type: ignore[method-assign]
        cp_multi_head_attention_forward if method == "cp_lrp" else attnlrp_mha_forward)
    try:
        yield
    finally:
        for c, f in saved.items():
            c.forward = f  # type: ignore[method-assign]
        del nn.GELU.original_forward, nn.MultiheadAttention.original_forward  # type: ignore[attr-defined]


def lxt_relevance(model: nn.Module, x: np.ndarray, target: int, method: str, dtype: torch.dtype,
                  rules: Callable[[str, nn.Module], contextlib.AbstractContextManager[None]] = lxt_rules
                  ) -> np.ndarray:
    """LXT's relevance ``x ⊙ ∇̃ y_target`` (the modified gradient, per sample), in ``dtype``.

    The backward is seeded with 1: in LXT's Gradient × Input form the relevance of a tensor ``t`` is
    ``t ⊙ ∇̃t``, so at the output it is ``y_t · 1`` — the explicit rules started from ``R = y_t``, onnxlrp's
    start. (LXT's README seeds the efficient backward with ``y_t``, which multiplies the whole map by ``y_t``.)
    """
    m = copy.deepcopy(model).to(dtype).eval()
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    with rules(method, m):  # the rules of ``method`` on the copy that runs
        y = m(xt)[:, target]
        y.backward(torch.ones_like(y))
    return (xt * xt.grad).detach().double().numpy()  # type: ignore[operator]


def tiny_vit() -> nn.Module:
    """The tiny torchvision ViT with trained-like random weights."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=5)
    return randomise(vit, seed=3)


def vit_fixtures() -> None:
    """The ViT exports and the LXT references."""
    vit = tiny_vit()
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        logits = vit.double()(torch.tensor(x, dtype=torch.float64)).numpy()
    vit = vit.float()
    targets = np.array([1, 3])
    ref: dict[str, np.ndarray] = {"x": x, "targets": targets, "logits": logits}
    for method in ("attnlrp", "cp_lrp"):
        r64 = np.stack([lxt_relevance(vit, x, int(t), method, torch.float64) for t in targets])
        r32 = np.stack([lxt_relevance(vit, x, int(t), method, torch.float32) for t in targets])
        ref[method] = r64
        ref[f"{method}_err32"] = np.array([np.abs(a - b).max() / np.abs(b).max() for a, b in zip(r32, r64,
                                                                                                 strict=True)])
        print(method, "LXT float32 error per target:", ref[f"{method}_err32"])
    np.savez_compressed(OUT / "lxt_vit_ref.npz", **ref)
    print("wrote tests/fixtures/lxt_vit_ref.npz")
    for dynamo in (False, True):
        save(export(vit, torch.tensor(x), dynamo), f"lxt_vit_{'dynamo' if dynamo else 'torchscript'}.onnx")


# ---------------------------------------------------------------------------------------------
# a tiny HF BERT with a padding mask

BERT_CONFIG = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 64, "max_position_embeddings": 16, "type_vocab_size": 2, "num_labels": 2}
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BERT_LENGTH, BERT_PAD_FROM = 8, 5  # the second sequence is padded from position 5 on


class BertLogits(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) → logits`` of a ``transformers`` sequence classifier: the
    exported graph (positional inputs, one output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def tiny_bert(seed: int = 8, attention: str = "eager") -> nn.Module:
    """``BertForSequenceClassification`` of :data:`BERT_CONFIG` (``attention``: ``"eager"`` or ``"sdpa"``, the
    ``transformers`` default; eval mode) with trained-like random weights (:func:`randomise`: the same weights for
    both attentions)."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(**BERT_CONFIG, attn_implementation=attention)
    return randomise(transformers.BertForSequenceClassification(cfg), seed=seed)


def bert_batch(seed: int = 9) -> dict[str, np.ndarray]:
    """Two sequences of :data:`BERT_LENGTH` tokens, the second padded from :data:`BERT_PAD_FROM` on (mask 0, pad id 0,
    token type 0); two segments (token types 0 then 1) in each."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, BERT_CONFIG["vocab_size"], (2, BERT_LENGTH)).astype(np.int64)
    mask = np.ones((2, BERT_LENGTH), np.int64)
    mask[1, BERT_PAD_FROM:] = 0
    ids[1, BERT_PAD_FROM:] = 0
    types = np.zeros((2, BERT_LENGTH), np.int64)
    types[0, 5:] = 1
    types[1, 3:BERT_PAD_FROM] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def other_masks(batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Feeds whose padding differs from the example's (the exports must not have baked the example's mask): the
    first sequence padded instead, no padding at all, and three sequences with three paddings."""
    n, length = batch["input_ids"].shape
    first = np.ones((n, length), np.int64)
    first[0, 3:] = 0
    three = {k: np.concatenate([v, v[:1]]) for k, v in batch.items()}
    three["attention_mask"] = np.ones((3, length), np.int64)
    three["attention_mask"][0, 6:] = 0
    three["attention_mask"][2, 2:] = 0
    return [{**batch, "attention_mask": first}, {**batch, "attention_mask": np.ones((n, length), np.int64)}, three]


def bert_logits(model: nn.Module, feeds: dict[str, np.ndarray], dtype: torch.dtype = torch.float64) -> np.ndarray:
    """The model's logits on ``feeds``, computed in ``dtype``."""
    m = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        return m(**{k: torch.tensor(v) for k, v in feeds.items()}).logits.double().numpy()


def bert_export(model: nn.Module, batch: dict[str, np.ndarray], dynamo: bool) -> tuple[onnx.ModelProto, float]:
    """``BertLogits(model)`` exported with a dynamic batch (TorchScript at opset 17 or dynamo at opset 20, weights
    inline), and its largest relative logit error against float64 PyTorch on :func:`other_masks`."""
    import onnxruntime as ort

    wrapper = BertLogits(copy.deepcopy(model).float()).eval()
    args = tuple(torch.tensor(batch[k]) for k in BERT_INPUTS)
    with warnings.catch_warnings():  # the exporters' tracer and advanced-indexing notes (checked by the logits below)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's "legacy" notice
        proto = _bert_export(wrapper, args, dynamo)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    errs = []
    for feeds in [batch, *other_masks(batch)]:
        got = sess.run(None, feeds)[0]
        ref = bert_logits(model, feeds)
        errs.append(float(np.abs(got - ref).max() / np.abs(ref).max()))
    return proto, max(errs)


def _bert_export(wrapper: nn.Module, args: tuple[torch.Tensor, ...], dynamo: bool) -> onnx.ModelProto:
    """The export itself (see :func:`bert_export`)."""
    if dynamo:
        n = torch.export.Dim("N")
        prog = torch.onnx.export(wrapper, args, None, dynamo=True, opset_version=20, input_names=list(BERT_INPUTS),
                                 output_names=["logits"], dynamic_shapes=tuple({0: n} for _ in BERT_INPUTS),
                                 verbose=False)
        return prog.model_proto
    buf = io.BytesIO()
    torch.onnx.export(wrapper, args, buf, dynamo=False, opset_version=17, input_names=list(BERT_INPUTS),
                      output_names=["logits"], dynamic_axes={k: {0: "N"} for k in BERT_INPUTS})
    return onnx.load_from_string(buf.getvalue())


def _lxt_bert4_attention(rules: types.ModuleType) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The eager attention of ``transformers`` 5 BERT with the rules where LXT's ``transformers`` 4 BERT patch
    (``lxt.efficient.models.bert``) puts them: the gradient of ``QKᵀ`` and of ``A·V`` divided by 2."""

    def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                  **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        scale = query.size(-1) ** -0.5 if scaling is None else scaling
        scores = rules.divide_gradient(torch.matmul(query, key.transpose(2, 3)), 2) * scale
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = torch.softmax(scores, dim=-1)
        out = rules.divide_gradient(torch.matmul(probs, value), 2)
        return out.transpose(1, 2).contiguous(), probs

    return attention


@contextlib.contextmanager
def lxt_bert_rules(method: str, model: nn.Module | None = None, attention: str = "wrap") -> Iterator[None]:
    """LXT 2.1's efficient rules on ``transformers`` 5 BERT (module and class patches, undone on exit; ``model`` is
    not needed). ``attention``: ``"wrap"`` — LXT's ``wrap_attention_forward`` / ``cp_wrap_attention_forward`` around
    ``modeling_bert.eager_attention_forward`` (what LXT 2.1 does to its ``transformers`` 5 models); ``"bert4"`` —
    the AttnLRP rule where LXT's ``transformers`` 4 BERT patch puts it (:func:`_lxt_bert4_attention`)."""
    from transformers.activations import GELUActivation
    from transformers.models.bert import modeling_bert

    rules, patches = lxt_efficient()
    wrap = patches.cp_wrap_attention_forward if method == "cp_lrp" else patches.wrap_attention_forward
    saved_attention = modeling_bert.eager_attention_forward
    if method != "cp_lrp" and attention == "bert4":
        modeling_bert.eager_attention_forward = _lxt_bert4_attention(rules)
    else:
        modeling_bert.eager_attention_forward = wrap(saved_attention)
    # SDPA too, as LXT's patch_attention does (a local entry of the shared AttentionInterface, deleted on exit)
    interface = modeling_bert.ALL_ATTENTION_FUNCTIONS
    interface["sdpa"] = wrap(interface["sdpa"])
    activations = (GELUActivation, nn.Tanh)  # the intermediate GELU and the pooler's tanh: identity rule
    saved = {c: c.forward for c in (*activations, nn.LayerNorm)}
    for c in activations:
        c.original_forward = saved[c]  # type: ignore[attr-defined]
        c.forward = patches.non_linear_forward  # type: ignore[method-assign]
    nn.LayerNorm.forward = patches.layer_norm_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        modeling_bert.eager_attention_forward = saved_attention
        del interface["sdpa"]
        for c, f in saved.items():
            c.forward = f  # type: ignore[method-assign]
        for c in activations:
            del c.original_forward  # type: ignore[attr-defined]


def lxt_bert_relevance(model: nn.Module, batch: dict[str, np.ndarray], target: int, method: str, dtype: torch.dtype,
                       rules: Callable[..., contextlib.AbstractContextManager[None]] = lxt_bert_rules) -> np.ndarray:
    """LXT's relevance at the word embeddings, ``e ⊙ ∇̃_e y_target`` with ``e = word_embeddings(input_ids)``
    (N, L, D), in ``dtype``; the mask and token types as in ``batch``. Seeded with 1, as :func:`lxt_relevance`."""
    m = copy.deepcopy(model).to(dtype).eval()
    ids, mask, types = (torch.tensor(batch[k]) for k in BERT_INPUTS)
    with rules(method, m):
        emb = m.bert.embeddings.word_embeddings(ids).detach().requires_grad_(True)
        y = m(inputs_embeds=emb, attention_mask=mask, token_type_ids=types).logits[:, target]
        y.backward(torch.ones_like(y))
    return (emb * emb.grad).detach().double().numpy()  # type: ignore[operator]


def bert_check_lxt_patch(model: nn.Module, batch: dict[str, np.ndarray], seed: int) -> dict[str, float]:
    """Checks of the BERT reference, in float64: the patched models compute the model's logits (the rules change
    only the backward), LXT's two forms of AttnLRP's attention rule (``wrap`` and ``bert4``) give the same
    relevance, and so does the SDPA twin (``tiny_bert(seed, "sdpa")``, LXT's wrapper around SDPA) for both methods.
    Returns the relative differences."""
    want = bert_logits(model, batch)
    out: dict[str, float] = {}
    m = copy.deepcopy(model).double().eval()
    feeds = {k: torch.tensor(v) for k, v in batch.items()}
    for method in ("attnlrp", "cp_lrp"):
        with lxt_bert_rules(method, m), torch.no_grad():
            got = m(**feeds).logits.numpy()
        out[f"{method}_forward"] = float(np.abs(got - want).max() / np.abs(want).max())

    def bert4(method: str, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        return lxt_bert_rules(method, model, attention="bert4")

    sdpa = tiny_bert(seed, attention="sdpa")
    for t in range(BERT_CONFIG["num_labels"]):
        a = lxt_bert_relevance(model, batch, t, "attnlrp", torch.float64)
        b = lxt_bert_relevance(model, batch, t, "attnlrp", torch.float64, rules=bert4)
        out[f"attnlrp_wrap_vs_bert4_t{t}"] = float(np.abs(a - b).max() / np.abs(a).max())
        for method in ("attnlrp", "cp_lrp"):
            a = lxt_bert_relevance(model, batch, t, method, torch.float64)
            b = lxt_bert_relevance(sdpa, batch, t, method, torch.float64)
            out[f"{method}_sdpa_vs_eager_t{t}"] = float(np.abs(a - b).max() / np.abs(a).max())
    return out


def bert_fixtures() -> None:
    """The BERT exports, the LXT references and the meta record."""
    import json

    import lxt
    import transformers

    seed = 8
    model = tiny_bert(seed)
    batch = bert_batch()
    other = other_masks(batch)[0]
    targets = np.arange(BERT_CONFIG["num_labels"])
    ref: dict[str, np.ndarray] = {**batch, "targets": targets, "logits": bert_logits(model, batch),
                                  "other_mask": other["attention_mask"], "other_logits": bert_logits(model, other)}
    meta: dict[str, object] = {
        "model": "transformers BertForSequenceClassification, eager attention, eval mode, trained-like random "
                 "weights (tools/make_lxt_fixtures.py: tiny_bert, randomise)",
        "config": BERT_CONFIG,
        "inputs": list(BERT_INPUTS),
        "padding": f"sequence 1 padded from position {BERT_PAD_FROM}: attention_mask 0, input_ids 0 (pad id)",
        "explained": "the word embeddings word_embeddings(input_ids), shape (N, L, D): the output of the Gather "
                     "reading the 100-row word table, before the token-type and position embeddings are added "
                     "(onnxlrp's explained tensor; LXT's inputs_embeds)",
        "relevance": "LXT Gradient x Input at the word embeddings, backward seeded with 1 (R = y_t at the logit)",
        "rules": {"attnlrp": "LXT wrap_attention_forward on eager_attention_forward (q, k gradients / 4, v / 2), "
                             "layer_norm_forward, identity_rule_implicit on GELU and the pooler tanh",
                  "cp_lrp": "LXT cp_wrap_attention_forward (q, k detached), layer_norm_forward, "
                            "identity_rule_implicit on GELU and the pooler tanh"},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "lxt": getattr(lxt, "__version__", "2.1"), "onnx": onnx.__version__},
    }
    checks = bert_check_lxt_patch(model, batch, seed)
    print("LXT patch checks (float64 relative differences):", checks)
    assert max(checks.values()) < 1e-12, checks
    meta["lxt_patch_checks"] = checks
    padded = ref["attention_mask"] == 0
    for method in ("attnlrp", "cp_lrp"):
        r64 = np.stack([lxt_bert_relevance(model, batch, int(t), method, torch.float64) for t in targets])
        r32 = np.stack([lxt_bert_relevance(model, batch, int(t), method, torch.float32) for t in targets])
        ref[method] = r64
        ref[f"{method}_err32"] = np.array([np.abs(a - b).max() / np.abs(b).max() for a, b in zip(r32, r64,
                                                                                                 strict=True)])
        t64, t32 = r64.sum(-1), r32.sum(-1)
        ref[f"{method}_tokens_err32"] = np.array([np.abs(a - b).max() / np.abs(b).max() for a, b in zip(t32, t64,
                                                                                                        strict=True)])
        pad = float(np.abs(r64[:, padded]).max())
        print(f"{method}: LXT float32 error per target {ref[f'{method}_err32']}, per-token "
              f"{ref[f'{method}_tokens_err32']}; largest |R| at padded positions {pad}")
        meta[method] = {"err32": ref[f"{method}_err32"].tolist(),
                        "tokens_err32": ref[f"{method}_tokens_err32"].tolist(), "padded_max_abs": pad,
                        "sum_per_target_and_sequence": r64.sum(axis=(2, 3)).tolist()}
    np.savez_compressed(OUT / "lxt_bert_ref.npz", **ref)
    print("wrote tests/fixtures/lxt_bert_ref.npz")
    # the eager model, and its SDPA twin (transformers' default attention; the same weights, so the same LXT
    # reference): both exporters each, checked faithful on other masks
    for twin, label, key, prefix in ((model, "", "export_logit_error_on_other_masks", "lxt_bert"),
                                     (tiny_bert(seed, attention="sdpa"), "SDPA ",
                                      "sdpa_export_logit_error_on_other_masks", "lxt_bert_sdpa")):
        faithful: dict[str, float] = {}
        for dynamo in (False, True):
            name = "dynamo" if dynamo else "torchscript"
            proto, err = bert_export(twin, batch, dynamo)
            print(f"{label}{name} export: largest relative logit error on other masks {err:.2e}")
            assert err < 1e-5, (name, err)
            faithful[name] = err
            save(proto, f"{prefix}_{name}.onnx")
        meta[key] = faithful
    (OUT / "lxt_bert_meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print("wrote tests/fixtures/lxt_bert_meta.json")


def measure() -> None:
    """Print onnxlrp's errors against the committed fixtures (what the tests check)."""
    from onnxlrp import Explainer, OnnxLrpError

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())

    ref = np.load(OUT / "lxt_vit_ref.npz")
    targets = [int(t) for t in ref["targets"]]
    for e in ("torchscript", "dynamo"):
        ex = Explainer(str(OUT / f"lxt_vit_{e}.onnx"), device="cpu")
        for m in ("attnlrp", "cp_lrp"):
            got = ex.explain(ref["x"], targets=targets, method=m)
            errs = ", ".join(f"{rel(got[k], ref[m][k]):.2e}" for k in range(len(targets)))
            print(f"ViT {e:11s} {m:7s} vs LXT float64, per target: {errs} (LXT float32: "
                  f"{', '.join(f'{v:.2e}' for v in ref[m + '_err32'])})")
    ref = np.load(OUT / "lxt_bert_ref.npz")
    feeds = {k: ref[k] for k in BERT_INPUTS}
    targets = [int(t) for t in ref["targets"]]
    padded = ref["attention_mask"] == 0
    for e in ("torchscript", "dynamo"):
        ex = Explainer(str(OUT / f"lxt_bert_{e}.onnx"), device="cpu")
        for m in ("attnlrp", "cp_lrp"):
            got = ex.explain(feeds, targets=targets, method=m, per_token=False)
            full = ", ".join(f"{rel(got[k], ref[m][k]):.2e}" for k in range(len(targets)))
            tokens = ", ".join(f"{rel(got[k].sum(-1), ref[m][k].sum(-1)):.2e}" for k in range(len(targets)))
            print(f"BERT {e:11s} {m:7s} vs LXT float64, per target: (L, D) {full}; per token {tokens} "
                  f"(LXT float32: {', '.join(f'{v:.2e}' for v in ref[m + '_err32'])}; "
                  f"{', '.join(f'{v:.2e}' for v in ref[m + '_tokens_err32'])}); "
                  f"max |R| at padded tokens: onnxlrp {np.abs(got[:, padded]).max():.1e}, "
                  f"LXT {np.abs(ref[m][:, padded]).max():.1e}")
    for e in ("sdpa_torchscript", "sdpa_dynamo"):
        try:
            ex = Explainer(str(OUT / f"lxt_bert_{e}.onnx"), device="cpu")
            got = ex.explain(feeds, targets=targets, method="attnlrp", per_token=False)
            errs = ", ".join(f"{rel(got[k], ref['attnlrp'][k]):.2e}" for k in range(len(targets)))
            print(f"BERT {e:16s} attnlrp vs LXT float64: {errs}")
        except OnnxLrpError as err:
            print(f"BERT {e:16s} refused: {type(err).__name__}: {str(err)[:160]}")
    grads = np.load(OUT / "attention_torch_ref.npz")
    for name in ("mha_torchscript", "mha_dynamo", "encoder_torchscript", "encoder_dynamo"):
        ex = Explainer(str(OUT / f"attention_{name}.onnx"), device="cpu")
        kind = name.split("_")[0]
        errs = [rel(ex.explain(grads[f"{kind}_x"], target=t, method="gradient"), grads[f"{kind}_grad_t{t}"])
                for t in (0, 2)]
        print(f"{name:20s} gradient vs autograd float64: {', '.join(f'{v:.2e}' for v in errs)}")


def main(argv: list[str]) -> int:
    """Make every fixture (or only ``attention`` / ``vit`` / ``bert``); ``measure`` prints the errors against them."""
    if argv == ["measure"]:
        measure()
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    which = set(argv) or {"attention", "vit", "bert"}
    if "attention" in which:
        attention_fixtures()
    if "vit" in which:
        vit_fixtures()
    if "bert" in which:
        bert_fixtures()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
