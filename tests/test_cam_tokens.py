"""Grad-CAM on token maps: vision transformers (class tokens + a patch grid), Swin's channels-last maps.

* The grid reading (:func:`onnxlrp.cam.read_grid`) on shapes: tokens with 0–2 leading tokens,
  transposed tokens, channels-last maps, and shapes that are no grid.
* Live, when ``torch``/``torchvision`` are importable: a tiny torchvision ViT (class token) and a
  tiny torchvision Swin (mean-pooled, channels-last (N, H, W, C) maps), exported in the test by
  the TorchScript exporter; ``gradcam`` against Grad-CAM computed in torch float64 on the same
  model and the same layer (the default layer: the last block's first norm for the ViT, the
  final norm for Swin; weights = mean gradient over the grid's tokens, the class token dropped,
  bilinear resize with half-pixel centres). Tolerance 1e-5 (``helpers_onnx.rel_err``); measured
  ≤ 5e-7 (ViT 3.7e-7, 4.6e-7; Swin 2.3e-7, 3.5e-7 for the two targets).
* Live, when ``timm`` is importable too: timm's DeiT (class + distillation token), a ViT with 4
  register tokens, a mean-pooled ViT and MLP-Mixer, the same comparison (measured ≤ 3.2e-7).
"""

from __future__ import annotations

import io
from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest

from onnxlrp import Explainer
from onnxlrp.cam import Grid, read_grid
from onnxlrp.errors import InputError

TOL = 1e-5


@pytest.mark.parametrize(("shape", "in_spatial", "want"), [
    ((2, 17, 32), (32, 32), Grid("tokens", 1, (4, 4))),
    ((2, 18, 32), (32, 32), Grid("tokens", 2, (4, 4))),  # class + distillation token
    ((2, 16, 32), (32, 32), Grid("tokens", 0, (4, 4))),  # no class token (Mixer, pooled ViT)
    ((2, 197, 768), (224, 224), Grid("tokens", 1, (14, 14))),
    ((2, 8, 32), (32, 64), Grid("tokens", 0, (2, 4))),  # a wide input: a wide grid
    ((2, 512, 196), (224, 224), Grid("tokens_transposed", 0, (14, 14))),  # (N, D, T) when (N, T, D) does not fit
    ((2, 17, 64), (32, 32), Grid("tokens", 1, (4, 4))),  # a ViT's MLP: (N, T, D) first, although 64 = 8×8
    ((2, 7, 7, 768), (224, 224), Grid("channels_last", 0, (7, 7))),  # Swin
    ((2, 4, 4, 16), (32, 32), Grid("channels_last", 0, (4, 4))),
    ((2, 64, 7, 7), (224, 224), Grid("channels_first", 0, (7, 7))),  # a CNN's map
    ((2, 8, 8, 8), (32, 32), Grid("channels_first", 0, (8, 8))),  # ambiguous: channels first, as ONNX
    ((2, 64), (32, 32), None),
    ((2, 1, 1, 320), (64, 64), None),  # a channels-last norm of pooled features (ConvNeXt's head)
    ((2, 1, 256), (64, 64), None),  # one token (LeViT's last stage at 64×64), not 256 = 16×16 tokens
    ((2, 1, 32), (32, 32), None),  # a single (class) token
    ((2, 7, 32), (32, 32), Grid("tokens", 3, (2, 2))),  # up to 8 leading tokens
    ((2, 3, 5), (32, 32), None),  # 3 = 1 + 1×2 and 5 = 1×5: no grid of square patches of a 32×32 input
])
def test_read_grid(shape: tuple[int, ...], in_spatial: tuple[int, int], want: Grid | None) -> None:
    assert read_grid(shape, in_spatial) == want


def test_grid_to_channels_first_is_the_patch_layout() -> None:
    """Token ``p + i·w + j`` is grid cell ``(i, j)``, as a patch embedding's ``flatten(2).transpose(1, 2)`` makes it."""
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((2, 5, 3, 4))  # (N, D, h, w)
    tokens = np.concatenate([rng.standard_normal((2, 1, 5)), conv.reshape(2, 5, 12).transpose(0, 2, 1)], axis=1)
    back = Grid("tokens", 1, (3, 4)).to_channels_first(np, tokens[None], 3)
    np.testing.assert_array_equal(back[0], conv)
    np.testing.assert_array_equal(Grid("tokens_transposed", 0, (3, 4)).to_channels_first(np, conv.reshape(2, 5, 12), 3),
                                  conv)
    np.testing.assert_array_equal(Grid("channels_last", 0, (3, 4)).to_channels_first(np, conv.transpose(0, 2, 3, 1), 4),
                                  conv)


# ---------------------------------------------------------------------------------------------
# live: torchvision ViT and Swin against Grad-CAM in torch


def _export(model, shape: tuple[int, ...]) -> bytes:  # type: ignore[no-untyped-def]
    import torch

    buf = io.BytesIO()
    torch.onnx.export(model, torch.randn(*shape), buf, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


def _trained_like(model):  # type: ignore[no-untyped-def]
    """Random head (torchvision zero-initialises the ViT's) and norm gains/shifts, as a trained model has."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "head" in name or "ln" in name or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") and "head" not in name else 0.0))
    return model


def _torch_gradcam(model, module, x: np.ndarray, target: int, to_grid) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Grad-CAM in float64: ``module``'s output read as (N, C, h, w) by ``to_grid``, resized to the input."""
    import torch

    m = model.double()
    held = {}
    hook = module.register_forward_hook(lambda _m, _i, out: held.setdefault("a", out))
    try:
        y = m(torch.tensor(x, dtype=torch.float64))
    finally:
        hook.remove()
    a = held["a"]
    (g,) = torch.autograd.grad(y[:, target].sum(), a)
    a, g = to_grid(a.detach()), to_grid(g)
    cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True)
    cam = torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return cam.expand(-1, x.shape[1], -1, -1).numpy()


@pytest.mark.crosscheck
def test_vit_gradcam_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                        mlp_dim=64, num_classes=5).eval()
    _trained_like(model)
    ex = Explainer(_export(model, (1, 3, 32, 32)), device="cpu")
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    module = model.encoder.layers[-1].ln_1  # the default: the last block's first norm (the attention's input)

    def to_grid(t):  # type: ignore[no-untyped-def]
        return t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    for target in (0, 3):
        got = ex.explain(x, target=target, method="gradcam")
        want = _torch_gradcam(model, module, x, target, to_grid)
        assert got.shape == x.shape
        assert np.abs(want).max() > 1e-3
        assert H.rel_err(got, want) < TOL, H.rel_err(got, want)
        model.float()
    # batch 1 picks the same default map (torchvision's attention runs seq-first: a (T, 1, D) tensor looks
    # batch-first at batch 1, which once made the choice fall on block 0)
    one = ex.explain(x[:1], target=0, method="gradcam")
    assert H.rel_err(one, _torch_gradcam(model, module, x[:1], 0, to_grid)) < TOL
    model.float()
    # naming the layer gives the same map; the final norm's patch tokens get no gradient (the class token is read)
    name = "/encoder/layers/encoder_layer_1/ln_1/LayerNormalization_output_0"
    np.testing.assert_array_equal(ex.explain(x, target=0, method="gradcam", layer=name),
                                  ex.explain(x, target=0, method="gradcam"))
    final = ex.explain(x, target=0, method="gradcam", layer="/encoder/ln/LayerNormalization_output_0")
    assert np.all(final == 0)
    guided = ex.explain(x, target=0, method="guided_gradcam")
    gb = ex.explain(x, target=0, method="guided_backprop")
    assert H.rel_err(guided, ex.explain(x, target=0, method="gradcam") * gb) < TOL


@pytest.mark.crosscheck
def test_swin_gradcam_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2],
                            stochastic_depth_prob=0.0, num_classes=5).eval()
    _trained_like(model)
    assert tv is not None
    ex = Explainer(_export(model, (1, 3, 32, 32)), device="cpu")
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for target in (1, 4):
        got = ex.explain(x, target=target, method="gradcam")
        want = _torch_gradcam(model, model.norm, x, target, lambda t: t.permute(0, 3, 1, 2))  # (N, H, W, C)
        assert np.abs(want).max() > 1e-3
        assert H.rel_err(got, want) < TOL, H.rel_err(got, want)
        model.float()


def test_no_grid_names_the_layer_and_the_option(tmp_path: Path) -> None:
    b = H.Builder(seed=3)
    # a conv map (N, 4, 6, 6) reshaped to (N, 3, 48) and mixed along 48 by a linear layer: (N, 3, 5), no grid
    c = b.op("Conv", ["x", b.const(b.weight([4, 3, 3, 3], 27)), b.const(b.bias(4))], kernel_shape=[3, 3],
             pads=[1, 1, 1, 1])
    flat = b.op("Reshape", [c, b.const(np.array([0, 3, 48], np.int64))])
    mixed = b.op("MatMul", [flat, b.const(b.weight([48, 5], 48))])
    y = b.op("Gemm", [b.op("Flatten", [mixed]), b.const(b.weight([3, 15], 15)), b.const(b.bias(3))], transB=1)
    model = b.model([None, 3, 6, 6], [(y, H.FLOAT)], 17)
    ex = Explainer(model, device="cpu")
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)
    assert ex.explain(x, target=0, method="gradcam").shape == x.shape  # the default: the conv map
    with pytest.raises(InputError, match=rf"{mixed!r}.*\[1, 3, 5\].*not a feature map on a grid.*layer="):
        ex.explain(x, target=0, method="gradcam", layer=mixed)


TIMM = {  # model, the default layer (pytorch-grad-cam's choice for it), leading tokens
    "deit_distilled": ("deit.VisionTransformerDistilled", {}, "blocks.-1.norm1", 2),
    "vit_registers": ("vision_transformer.VisionTransformer", {"reg_tokens": 4}, "blocks.-1.norm1", 5),
    "vit_mean_pooled": ("vision_transformer.VisionTransformer", {"global_pool": "avg"}, "blocks.-1", 1),
    "mixer": ("mlp_mixer.MlpMixer", {"num_blocks": 2}, "norm", 0),
}


@pytest.mark.crosscheck
@pytest.mark.parametrize("name", list(TIMM))
def test_timm_token_models_gradcam_matches_torch(name: str) -> None:
    """timm's DeiT (class + distillation token), a ViT with 4 registers, a mean-pooled ViT and MLP-Mixer."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    import importlib

    where, extra, layer, prefix = TIMM[name]
    module_name, cls = where.rsplit(".", 1)
    kw = {"depth": 2, "num_heads": 2} if name != "mixer" else {}
    torch.manual_seed(0)
    model = getattr(importlib.import_module(f"timm.models.{module_name}"), cls)(
        img_size=32, patch_size=8, embed_dim=32, num_classes=5, **kw, **extra).eval()
    assert timm is not None
    _trained_like(model)
    module = model
    for part in layer.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    ex = Explainer(_export(model, (1, 3, 32, 32)), device="cpu")
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    got = ex.explain(x, target=1, method="gradcam")
    want = _torch_gradcam(model, module, x, 1,
                          lambda t: t[:, prefix:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2))
    assert np.abs(want).max() > 1e-3
    assert H.rel_err(got, want) < TOL, H.rel_err(got, want)


@pytest.mark.parametrize("fixture", ["modern_vit_torchscript.onnx", "modern_vit_dynamo.onnx",
                                     "attention_encoder_torchscript.onnx"])
def test_default_map_does_not_depend_on_the_batch_size(fixture: str) -> None:
    """Grad-CAM of a batch equals Grad-CAM of its samples one at a time: at batch 1 the default map is chosen
    from the candidates a batch of 2 shows (a seq-first (T, 1, D) tensor looks batch-first at batch 1)."""
    from pathlib import Path

    path = Path(__file__).parent / "fixtures" / fixture
    ex = Explainer(path, device="cpu", kernels="engine")
    if ex.fixed_batch is not None:
        pytest.skip("fixed batch")
    shape = tuple(d or 8 for d in ex.input_shape[1:])
    x = np.random.default_rng(0).standard_normal((2,) + shape).astype(np.float32)
    both = ex.explain(x, [0, 1], "gradcam")
    one = np.concatenate([ex.explain(x[i:i + 1], [i], "gradcam") for i in range(2)])
    assert np.abs(both - one).max() <= 1e-5 * max(float(np.abs(both).max()), 1e-30)
