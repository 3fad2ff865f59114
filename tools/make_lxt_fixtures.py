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

Run: ``python tools/make_lxt_fixtures.py [attention] [vit]`` (torch 2.14, torchvision 0.29, onnxscript,
``pip install --no-deps lxt==2.1``; ``transformers`` is not needed): about three minutes on two cores, nearly all
of it the dynamo exports. ``python tools/make_lxt_fixtures.py measure`` prints onnxlrp's errors against them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import sys
import types
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


def measure() -> None:
    """Print onnxlrp's errors against the committed fixtures (what the tests check)."""
    from onnxlrp import Explainer

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
    grads = np.load(OUT / "attention_torch_ref.npz")
    for name in ("mha_torchscript", "mha_dynamo", "encoder_torchscript", "encoder_dynamo"):
        ex = Explainer(str(OUT / f"attention_{name}.onnx"), device="cpu")
        kind = name.split("_")[0]
        errs = [rel(ex.explain(grads[f"{kind}_x"], target=t, method="gradient"), grads[f"{kind}_grad_t{t}"])
                for t in (0, 2)]
        print(f"{name:20s} gradient vs autograd float64: {', '.join(f'{v:.2e}' for v in errs)}")


def main(argv: list[str]) -> int:
    """Make every fixture (or only ``attention`` / ``vit``); ``measure`` prints the errors against them."""
    if argv == ["measure"]:
        measure()
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    which = set(argv) or {"attention", "vit"}
    if "attention" in which:
        attention_fixtures()
    if "vit" in which:
        vit_fixtures()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
