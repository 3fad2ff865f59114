"""The coverage zoo: how many current architectures onnxlrp explains, and how well (issue 9).

Usage::

    python tools/coverage.py                          # the whole zoo, both exporters, writes docs/coverage.md
    python tools/coverage.py --only vit_tiny swin_tiny --exporter dynamo --jobs 2
    python tools/coverage.py --report-only            # rewrite docs/coverage.md from the cached results
    python tools/coverage.py --list                   # the zoo's models

Every model of :data:`ZOO` (timm, torchvision and transformers architectures in tiny configurations, plus
a 1-D signal CNN and a 3-D video CNN) is built with random weights made to behave like trained ones
(:func:`make_trained_like`: BatchNorm statistics measured on random inputs and then perturbed, every
constant-initialised parameter — biases, norm gains, layer-scale and skip gains, class tokens —
randomised), exported with both PyTorch exporters (``torch.onnx.export(..., dynamo=False)``, opset 17,
and ``dynamo=True``, opset 18; dynamic batch axis), and then, per model × exporter, in a child process
with a timeout (:func:`run_job`):

* **status** — ``explained``, or ``refused`` with the op types named by the
  :class:`~onnxlrp.UnsupportedModelError` (every problem of the graph is collected, not only the five
  the message lists), or ``export failed`` / ``error`` / ``timeout`` / ``crash``;
* **gradient error** — ``max|g − g64| / max|g64|`` of onnxlrp's ``gradient`` (float32) against torch
  autograd on the same module in float64, and, for comparison, torch's own float32 autograd against
  the same reference;
* **ties** — float32 ties are detected on the float64 forward (:class:`TieDetector`): every ReLU-like
  decision (ReLU, LeakyReLU, ReLU6/Hardtanh/clamp bounds, HardSwish/HardSigmoid at ±3, Abs) whose
  input lies within ``tol · max|input|`` of its threshold, and every max-pool window / max reduction
  whose two largest values differ by less than ``tol · max|input|`` (default ``tol`` 1e-6). A gradient
  error above 1e-5 is a *tie* when such decisions exist and a **MISMATCH** (a bug) when none do;
* **methods** — every method of :func:`onnxlrp.list_methods` (SmoothGrad 4 samples, Integrated
  Gradients 4 steps) on one input: NaN/inf (the engine's overflow refusal), a
  :class:`~onnxlrp.RelevanceWarning`, or another error;
* **time** — median wall time of ``lrp`` and ``epsilon_plus_flat`` (one sample, one thread) over the
  median onnxruntime forward of the exported model (one thread).

Token-id models (BERT/DistilBERT) are run as exported (``input_ids`` and ``attention_mask``, int64);
their ``*_embeds`` twins take the word embeddings as a float input, so that the transformer body is
measured even while token inputs are refused.

Exports are cached in ``benchmarks/.cache/coverage/`` (git-ignored; keyed by the model's configuration),
results in ``benchmarks/.cache/coverage/results.json``; each invocation merges its results into that
file and writes the report from all cached results, so a zoo can be run in parts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache" / "coverage"
DEFAULT_OUT = REPO_ROOT / "docs" / "coverage.md"
EXPORTERS: dict[str, int] = {"torchscript": 17, "dynamo": 18}  # exporter -> opset
GRAD_TOL = 1e-5  # issue 9: gradient equal to autograd to <= 1e-5 relative, except on float32 ties
COND_FACTOR = 10.0  # within this factor of torch's own float32 error: the model's conditioning, not a bug
REF_TOL = 1e-4  # the float64 reference's own finite-difference check
TIE_TOL = 1e-6  # a decision within this fraction of max|input| of its threshold is a float32 tie
NUM_CLASSES = 10
TOOL_VERSION = "1"  # part of the export cache key: bump when the way models are built changes
SAMPLING_OPTIONS = {"n_samples": 4, "steps": 4, "batch_size": 4}
ULP_DRAWS = 3  # torch float32 gradients at x·(1 + 2⁻²⁴·N(0, 1)): the float32 spread of an ill-conditioned model


# ------------------------------------------------------------------------------------------------ the zoo


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: how to build it (tiny, untrained) and what input it takes.

    ``kind`` is ``"image"``, ``"video"``, ``"signal"`` (float inputs of ``shape``), ``"tokens"``
    (int64 ``input_ids`` and ``attention_mask`` of length ``shape[0]``) or ``"embeds"`` (float word
    embeddings ``shape = (L, D)`` with an attention mask built into the wrapper).
    """

    name: str
    source: str  # "timm" | "torchvision" | "transformers" | "custom"
    covers: str  # what the model brings to the engine (one phrase)
    shape: tuple[int, ...]  # input shape without the batch axis
    spec: tuple[Any, ...]  # (builder name, arguments): hashable, part of the cache key
    kind: str = "image"
    reparameterize: bool = False  # timm re-parameterisable blocks fused as for deployment

    def key(self) -> str:
        """A short hash of the configuration (the export cache key)."""
        text = repr((TOOL_VERSION, self.name, self.shape, self.spec, self.kind, self.reparameterize))
        return hashlib.sha1(text.encode()).hexdigest()[:10]


def _timm(name: str, **kw: Any) -> tuple[Any, ...]:
    return ("timm", name, tuple(sorted(kw.items())))


def _tv(name: str, **kw: Any) -> tuple[Any, ...]:
    return ("torchvision", name, tuple(sorted(kw.items())))


def _hf(name: str, **kw: Any) -> tuple[Any, ...]:
    return ("transformers", name, tuple(sorted(kw.items())))


IMG32, IMG64 = (3, 32, 32), (3, 64, 64)
VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
HF_TEXT = {"vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 64, "max_position_embeddings": 32}

ZOO: tuple[ZooEntry, ...] = (
    # ---- vision transformers and hybrids
    ZooEntry("vit_tiny", "timm", "ViT: LayerNorm, GELU, attention, class token, position embedding", IMG32,
             _timm("vit_tiny_patch16_224", **VIT)),
    ZooEntry("deit_tiny_distilled", "timm", "DeiT: class + distillation tokens, two heads averaged", IMG32,
             _timm("deit_tiny_distilled_patch16_224", **VIT)),
    ZooEntry("tv_vit_tiny", "torchvision", "torchvision ViT: nn.MultiheadAttention (q/k/v split)", IMG32,
             _tv("VisionTransformer", image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64,
                 mlp_dim=128)),
    ZooEntry("hf_vit_tiny", "transformers", "Hugging Face ViT", IMG32,
             _hf("ViTForImageClassification", image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=128)),
    ZooEntry("beit_tiny", "timm", "BEiT: relative position bias, layer-scale", IMG32,
             _timm("beit_base_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2)),
    ZooEntry("eva02_tiny", "timm", "EVA-02: rotary position embedding, SwiGLU", (3, 56, 56),
             _timm("eva02_tiny_patch14_224", img_size=56, depth=2)),
    ZooEntry("swin_tiny", "timm", "Swin: shifted windows (roll, masks), relative position bias", IMG64,
             _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=4, embed_dim=32, depths=(2, 2),
                   num_heads=(1, 2))),
    ZooEntry("tv_swin_tiny", "torchvision", "torchvision Swin", IMG64,
             _tv("SwinTransformer", patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[1, 2],
                 window_size=[4, 4])),
    ZooEntry("tv_maxvit_tiny", "torchvision", "MaxViT: MBConv + block/grid attention", IMG64,
             _tv("MaxVit", input_size=(64, 64), stem_channels=16, partition_size=2, block_channels=[32, 64],
                 block_layers=[1, 1], head_dim=16, stochastic_depth_prob=0.0)),
    ZooEntry("levit_128s", "timm", "LeViT: BatchNorm in linear layers, attention bias, HardSwish", IMG64,
             _timm("levit_128s", img_size=64)),
    ZooEntry("mobilevit_xxs", "timm", "MobileViT: unfold/fold of patches, attention", IMG64,
             _timm("mobilevit_xxs")),
    ZooEntry("efficientformerv2_s0", "timm", "EfficientFormerV2: attention with conv, talking heads", IMG64,
             _timm("efficientformerv2_s0", img_size=64)),
    ZooEntry("fastvit_t8", "timm", "FastViT: RepMixer, re-parameterised", IMG64, _timm("fastvit_t8"),
             reparameterize=True),
    ZooEntry("pvt_v2_b0", "timm", "PVTv2: spatial-reduction attention, depth-wise conv in the MLP", IMG64,
             _timm("pvt_v2_b0")),
    ZooEntry("edgenext_xx_small", "timm", "EdgeNeXt: transposed (XCA) attention, L2 normalisation", IMG64,
             _timm("edgenext_xx_small")),
    ZooEntry("efficientvit_b0", "timm", "EfficientViT (MIT): ReLU linear attention, division", IMG64,
             _timm("efficientvit_b0")),
    ZooEntry("mobilenetv4_hybrid_medium", "timm", "MobileNetV4 hybrid: multi-query attention", IMG64,
             _timm("mobilenetv4_hybrid_medium")),
    # ---- modern CNNs, MetaFormers, MLPs
    ZooEntry("convnext_atto", "timm", "ConvNeXt: LayerNorm2d, GELU, layer-scale", IMG64, _timm("convnext_atto")),
    ZooEntry("convnextv2_atto", "timm", "ConvNeXtV2: global response normalisation (GRN)", IMG64,
             _timm("convnextv2_atto")),
    ZooEntry("tv_convnext_tiny", "torchvision", "torchvision ConvNeXt: permute + LayerNorm + Linear", IMG64,
             ("tv_convnext",)),
    ZooEntry("poolformer_s12", "timm", "PoolFormer: pooling mixer (x - avgpool), GroupNorm", IMG64,
             ("poolformer_tiny",)),
    ZooEntry("mixer_s16", "timm", "MLP-Mixer: token-mixing MLP (transposes)", IMG32,
             ("mixer_tiny",)),
    ZooEntry("resmlp_12", "timm", "ResMLP: affine normalisation, layer-scale", IMG32,
             ("resmlp_tiny",)),
    ZooEntry("starnet_s050", "timm", "StarNet: product of two activations (star)", IMG64, _timm("starnet_s050")),
    ZooEntry("hrnet_w18_small", "timm", "HRNet: upsampling (Resize) fusion", IMG64, _timm("hrnet_w18_small")),
    ZooEntry("regnetx_002", "timm", "RegNetX: grouped convs", IMG64, _timm("regnetx_002")),
    ZooEntry("regnety_002", "timm", "RegNetY: squeeze-excitation", IMG64, _timm("regnety_002")),
    ZooEntry("ghostnet_050", "timm", "GhostNet: cheap operations, concat + slice", IMG64, _timm("ghostnet_050")),
    ZooEntry("ghostnetv2_100", "timm", "GhostNetV2: DFC attention (pool, sigmoid, upsample)", IMG64,
             _timm("ghostnetv2_100")),
    ZooEntry("dla46_c", "timm", "DLA: deep layer aggregation trees", IMG64, _timm("dla46_c")),
    ZooEntry("inception_v3", "torchvision", "Inception v3: factorised convs, max/avg pools", (3, 75, 75),
             _tv("inception_v3", aux_logits=False, init_weights=False)),
    ZooEntry("xception41", "timm", "Xception: separable convs", IMG64, _timm("xception41")),
    ZooEntry("nfnet_l0_tiny", "timm", "NFNet-L0 (reduced): weight standardisation in-graph, SiLU, skip gains",
             IMG64, ("nfnet_tiny",)),
    ZooEntry("densenet_tiny", "torchvision", "DenseNet: dense concatenation, BN before conv", IMG64,
             _tv("DenseNet", growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16)),
    ZooEntry("efficientnet_b0", "torchvision", "EfficientNet-B0: SiLU, SE, stochastic depth", IMG64,
             _tv("efficientnet_b0")),
    ZooEntry("tf_efficientnetv2_b0", "timm", "EfficientNetV2: fused MBConv, TF 'same' padding", IMG64,
             _timm("tf_efficientnetv2_b0")),
    ZooEntry("mobilenetv3_small_050", "timm", "MobileNetV3: HardSwish, hard-sigmoid SE", IMG64,
             _timm("mobilenetv3_small_050")),
    ZooEntry("mobilenetv4_conv_small_050", "timm", "MobileNetV4: universal inverted bottleneck", IMG64,
             _timm("mobilenetv4_conv_small_050")),
    ZooEntry("resnest14d", "timm", "ResNeSt: split attention (softmax over radix)", IMG64, _timm("resnest14d")),
    ZooEntry("resnet18", "torchvision", "ResNet-18 (the classic baseline)", IMG64, _tv("resnet18")),
    ZooEntry("shufflenet_v2_x0_5", "torchvision", "ShuffleNetV2: channel shuffle (reshape/transpose)", IMG64,
             _tv("shufflenet_v2_x0_5")),
    # ---- other modalities
    ZooEntry("r3d_18_tiny", "torchvision", "3-D video CNN (R3D-18, one block per stage)", (3, 4, 32, 32),
             ("r3d_tiny",), kind="video"),
    ZooEntry("signal_cnn1d", "custom", "1-D signal CNN: Conv1d, BatchNorm1d, MaxPool1d", (2, 128),
             ("signal_cnn",), kind="signal"),
    ZooEntry("bert_tiny", "transformers", "BERT text classifier: int64 token ids + attention mask", (12,),
             _hf("BertForSequenceClassification", **HF_TEXT), kind="tokens"),
    ZooEntry("distilbert_tiny", "transformers", "DistilBERT text classifier: int64 token ids + mask", (12,),
             _hf("DistilBertForSequenceClassification", vocab_size=120, dim=32, n_layers=2, n_heads=2,
                 hidden_dim=64, max_position_embeddings=32), kind="tokens"),
    ZooEntry("bert_tiny_embeds", "transformers", "BERT body from float word embeddings, padding mask", (12, 32),
             _hf("BertForSequenceClassification", **HF_TEXT), kind="embeds"),
)
ZOO_BY_NAME: dict[str, ZooEntry] = {e.name: e for e in ZOO}
PAD_TOKENS = 3  # token models: the last 3 positions are padding (mask 0)


# ------------------------------------------------------------------------------------------------ building


def _seed_of(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)


def _build_custom(kind: str) -> Any:
    from torch import nn

    if kind == "signal_cnn":
        return nn.Sequential(
            nn.Conv1d(2, 16, 7, padding=3), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(32, 32, 3, padding=1, dilation=1), nn.BatchNorm1d(32), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, NUM_CLASSES))
    if kind == "r3d_tiny":
        from torchvision.models.video.resnet import BasicBlock, BasicStem, Conv3DSimple, VideoResNet

        return VideoResNet(BasicBlock, [Conv3DSimple] * 4, [1, 1, 1, 1], BasicStem, num_classes=NUM_CLASSES)
    if kind == "tv_convnext":
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt

        cfg = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, 128, 1),
               CNBlockConfig(128, None, 1)]
        return ConvNeXt(cfg, num_classes=NUM_CLASSES)
    if kind == "poolformer_tiny":  # timm's poolformer_s12 arguments, one block per stage
        from timm.models.metaformer import GroupNorm1, MetaFormer

        return MetaFormer(depths=(1, 1, 1, 1), dims=(32, 64, 128, 256), downsample_norm=None, mlp_act=nn.GELU,
                          mlp_bias=True, norm_layers=GroupNorm1, layer_scale_init_values=1e-5,
                          res_scale_init_values=None, use_mlp_head=False, num_classes=NUM_CLASSES)
    if kind in ("mixer_tiny", "resmlp_tiny"):
        from functools import partial

        from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

        extra: dict[str, Any] = {}
        if kind == "resmlp_tiny":  # timm's resmlp_12_224 arguments
            extra = {"mlp_ratio": 4, "block_layer": partial(ResBlock, init_values=0.1), "norm_layer": Affine}
        return MlpMixer(img_size=32, patch_size=8, num_blocks=2, embed_dim=64, num_classes=NUM_CLASSES, **extra)
    if kind == "nfnet_tiny":
        from timm.models.nfnet import NfCfg, NormFreeNet

        cfg = NfCfg(depths=(1, 1, 1, 1), channels=(64, 128, 256, 256), stem_type="deep_quad", stem_chs=32,
                    group_size=16, attn_layer="se", attn_kwargs={"rd_ratio": 0.25, "rd_divisor": 8},
                    bottle_ratio=0.25, num_features=384, extra_conv=True, act_layer="silu")
        return NormFreeNet(cfg, num_classes=NUM_CLASSES)
    raise ValueError(f"unknown custom model {kind!r}")


class _Logits:
    """Factory of torch wrappers that return the class-score tensor whatever the model returns."""

    @staticmethod
    def wrap(model: Any, entry: ZooEntry) -> Any:
        import torch
        from torch import nn

        class ImageLogits(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out = self.inner(x)
                if hasattr(out, "logits"):
                    out = out.logits
                if isinstance(out, tuple | list):
                    out = out[0]
                return out

        class TokenLogits(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

        class EmbedsLogits(nn.Module):
            """Word embeddings in, logits out; the padding mask (last PAD_TOKENS positions) is a constant."""

            def __init__(self, inner: nn.Module, length: int) -> None:
                super().__init__()
                self.inner = inner
                mask = torch.ones(1, length, dtype=torch.long)
                mask[:, length - PAD_TOKENS:] = 0
                self.register_buffer("mask", mask)

            def forward(self, embeds: torch.Tensor) -> torch.Tensor:
                mask = self.mask.expand(embeds.shape[0], -1)
                return self.inner(inputs_embeds=embeds, attention_mask=mask).logits

        if entry.kind == "tokens":
            return TokenLogits(model)
        if entry.kind == "embeds":
            return EmbedsLogits(model, entry.shape[0])
        return ImageLogits(model)


def build_model(entry: ZooEntry) -> Any:
    """The entry's torch module (float32, eval mode, trained-like random weights), wrapped to return logits."""
    import torch

    torch.manual_seed(_seed_of(entry.name))
    kind = entry.spec[0]
    if kind == "timm":
        import timm

        model = timm.create_model(entry.spec[1], pretrained=False, num_classes=NUM_CLASSES, drop_rate=0.0,
                                  **dict(entry.spec[2]))
    elif kind == "torchvision":
        import torchvision

        name, kw = entry.spec[1], dict(entry.spec[2])
        if name[0].isupper():  # a class built with a custom configuration
            module = {"VisionTransformer": torchvision.models.vision_transformer,
                      "SwinTransformer": torchvision.models.swin_transformer,
                      "MaxVit": torchvision.models.maxvit,
                      "DenseNet": torchvision.models.densenet}[name]
            model = getattr(module, name)(num_classes=NUM_CLASSES, **kw)
        else:
            model = getattr(torchvision.models, name)(weights=None, num_classes=NUM_CLASSES, **kw)
    elif kind == "transformers":
        import transformers

        cls = getattr(transformers, entry.spec[1])
        config_cls = getattr(transformers, cls.__name__.replace("ForSequenceClassification", "Config")
                             .replace("ForImageClassification", "Config"))
        kw = dict(entry.spec[2])
        config = config_cls(num_labels=NUM_CLASSES, **kw)
        config._attn_implementation = "eager"  # the plain attention graph (no fused SDPA kernel)
        model = cls(config)
    else:
        model = _build_custom(kind)
    model = _Logits.wrap(model, entry)
    make_trained_like(model, entry)
    if entry.reparameterize:  # as deployed: trained, then the branches fused
        from timm.utils.model import reparameterize_model

        model = reparameterize_model(model.eval())
    return model.eval()


def example_inputs(entry: ZooEntry, batch: int = 1, seed: int = 0) -> tuple[Any, ...]:
    """Torch inputs of the entry: N(0, 1) floats, or token ids with the last positions padded."""
    import torch

    gen = torch.Generator().manual_seed(seed + _seed_of(entry.name) % 1000)
    if entry.kind == "tokens":
        length = entry.shape[0]
        vocab = dict(entry.spec[2])["vocab_size"]
        ids = torch.randint(1, vocab, (batch, length), generator=gen)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[:, length - PAD_TOKENS:] = 0
        ids[:, length - PAD_TOKENS:] = 0
        return ids, mask
    return (torch.randn((batch,) + entry.shape, generator=gen),)


def make_trained_like(model: Any, entry: ZooEntry) -> None:
    """Give an untrained module the statistics of a trained one, in place.

    * every parameter initialised to a constant (zero biases, unit norm gains, layer-scale gains of
      1e-6, zero-initialised skip gains and tokens) is drawn at random: biases U(−0.1, 0.1), tokens
      and position embeddings N(0, 0.02), gains below 0.05 U(0.2, 1), other constants c·U(0.7, 1.3);
    * BatchNorm running statistics are measured on random inputs (train mode, cumulative average,
      two batches of 4), then perturbed: variance ×U(0.8, 1.25), mean + 0.1·N(0, 1)·std — random, but
      at the scale of the activations, as in a trained network.
    """
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(_seed_of(entry.name) + 1)

    def uniform(shape: torch.Size, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            if flat.numel() == 0 or not bool(torch.all(flat == flat[0])):
                continue
            value = float(flat[0])
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias" and value == 0.0:
                p.copy_(uniform(p.shape, -0.1, 0.1))
            elif "token" in name or "pos_embed" in name or "position" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif abs(value) < 0.05:
                p.copy_(uniform(p.shape, 0.2, 1.0))
            else:
                p.copy_(value * uniform(p.shape, 0.7, 1.3))
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average
            model.train()
            for seed in (1, 2):
                model(*example_inputs(entry, batch=4, seed=seed))
            model.eval()
            for m in norms:
                if m.running_var is None:
                    continue
                m.running_var.mul_(uniform(m.running_var.shape, 0.8, 1.25))
                m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=gen) * m.running_var.sqrt())
                m.momentum = 0.1
    model.eval()


# ------------------------------------------------------------------------------------------------ exporting


def export_path(entry: ZooEntry, exporter: str, cache: Path = CACHE_DIR) -> Path:
    """Where the cached export of ``entry`` by ``exporter`` lives."""
    return cache / f"{entry.name}.{exporter}.{entry.key()}.onnx"


def input_names(entry: ZooEntry) -> list[str]:
    """The ONNX input names used for the entry."""
    return ["input_ids", "attention_mask"] if entry.kind == "tokens" else ["input"]


def export(model: Any, entry: ZooEntry, exporter: str, path: Path) -> dict[str, Any]:
    """Export ``model`` with ``exporter`` (dynamic batch axis; static if the dynamo exporter cannot) to ``path``."""
    import torch

    names = input_names(entry)
    args = example_inputs(entry)
    dyn = {n: {0: "N"} for n in names}
    dyn["logits"] = {0: "N"}
    info: dict[str, Any] = {"opset": EXPORTERS[exporter], "dynamic_batch": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    t0 = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, args, str(tmp), dynamo=False, opset_version=17, input_names=names,
                              output_names=["logits"], dynamic_axes=dyn)
        else:
            try:
                prog = torch.onnx.export(model, args, dynamo=True, opset_version=18, input_names=names,
                                         output_names=["logits"], dynamic_axes=dyn, verbose=False)
            except Exception as exc:  # noqa: BLE001 - retry with a static batch and say so
                info["dynamic_batch"] = False
                info["dynamic_error"] = _first_line(exc)
                prog = torch.onnx.export(model, args, dynamo=True, opset_version=18, input_names=names,
                                         output_names=["logits"], verbose=False)
            prog.save(str(tmp), external_data=False)
    os.replace(tmp, path)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return info


# ------------------------------------------------------------------------------------------------ ties


class TieDetector:
    """Counts float32 ties in a float64 torch forward pass, at the level of aten ops.

    Used as a context manager around a ``torch.no_grad()`` forward. A decision is a tie when its input
    lies within ``tol · max|input|`` of the threshold (ReLU, LeakyReLU, threshold, Abs at 0; Hardtanh /
    clamp / ReLU6 at their bounds; HardSwish / HardSigmoid at ±3), or when the two largest values of a
    max-pool window or of a max reduction differ by less than ``tol · max|input|`` (``max|input|`` of
    the whole tensor). Exact hits (an input exactly at the threshold, two exactly equal maxima) are not
    counted: they are structural (a ReLU after a ReLU, zero padding, a window of dead ReLUs, copies made
    by an upsampling) and float32 computes them exactly too, so both sides decide them alike.
    ``counts`` maps an op name to its number of tied decisions, ``checked`` to the number of decisions
    looked at.
    """

    def __init__(self, tol: float = TIE_TOL) -> None:
        self.tol = tol
        self.counts: Counter[str] = Counter()
        self.checked: Counter[str] = Counter()
        self._mode: Any = None

    def __enter__(self) -> TieDetector:
        from torch.utils._python_dispatch import TorchDispatchMode

        detector = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                try:
                    detector._inspect(func, args, kwargs)
                except Exception:  # noqa: BLE001 - the detector must never change the forward
                    pass
                return func(*args, **kwargs)

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)

    def total(self) -> int:
        """All tied decisions."""
        return int(sum(self.counts.values()))

    def _near(self, op: str, x: Any, thresholds: Iterable[float]) -> None:
        import torch

        x = x.detach()
        scale = float(x.abs().max()) if x.numel() else 0.0
        if scale == 0.0:
            return
        near = torch.zeros_like(x, dtype=torch.bool)
        for t in thresholds:
            dist = (x - t).abs()
            near |= (dist > 0) & (dist <= self.tol * max(scale, abs(t)))
        self.checked[op] += x.numel()
        self.counts[op] += int(near.sum())

    def _gap(self, op: str, windows: Any, scale: float) -> None:
        """``windows``: (..., K) values of each decision's candidates."""
        import torch

        if windows.shape[-1] < 2 or scale == 0.0:
            return
        windows = torch.nan_to_num(windows, neginf=-math.inf)
        top = torch.topk(windows, 2, dim=-1).values
        gap = top[..., 0] - top[..., 1]
        self.checked[op] += gap.numel()
        self.counts[op] += int(((gap > 0) & (gap <= self.tol * scale)).sum())

    def _inspect(self, func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        import torch

        name = func.overloadpacket.__name__.rstrip("_")
        if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return
        x = args[0]
        if name in ("relu", "leaky_relu", "abs", "rrelu", "prelu"):
            self._near(name, x, [0.0])
        elif name == "threshold":
            self._near(name, x, [float(args[1])])
        elif name in ("hardtanh",):
            lo = float(args[1]) if len(args) > 1 else float(kwargs.get("min_val", -1.0))
            hi = float(args[2]) if len(args) > 2 else float(kwargs.get("max_val", 1.0))
            self._near(name, x, [lo, hi])
        elif name in ("clamp", "clip"):
            bounds = [a for a in list(args[1:3]) + [kwargs.get("min"), kwargs.get("max")]
                      if isinstance(a, int | float)]
            if bounds:
                self._near(name, x, [float(b) for b in bounds])
        elif name in ("hardswish", "hardsigmoid"):
            self._near(name, x, [-3.0, 3.0])
        elif name in ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
                      "max_pool2d_with_indices", "max_pool3d_with_indices"):
            self._pool(name.replace("_with_indices", ""), x, args, kwargs)
        elif name in ("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"):
            out = args[1] if len(args) > 1 else kwargs.get("output_size")
            if all(int(o) == 1 for o in out):
                spatial = x.reshape(x.shape[0], x.shape[1], -1)
                self._gap(name, spatial, float(x.abs().max()))
        elif name in ("max", "amax") and (len(args) > 1 or "dim" in kwargs):
            dims = args[1] if len(args) > 1 else kwargs["dim"]
            dims = [dims] if isinstance(dims, int) else list(dims)
            if len(dims) == 1:
                moved = x.movedim(dims[0], -1)
                self._gap(name, moved, float(x.abs().max()))

    def _pool(self, op: str, x: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        import torch

        nd = int(op[-2])
        kernel = list(args[1]) if len(args) > 1 else list(kwargs["kernel_size"])
        stride = list(args[2]) if len(args) > 2 and args[2] else list(kwargs.get("stride") or kernel)
        padding = list(args[3]) if len(args) > 3 else list(kwargs.get("padding", [0]))
        dilation = list(args[4]) if len(args) > 4 else list(kwargs.get("dilation", [1]))
        ceil = bool(args[5]) if len(args) > 5 else bool(kwargs.get("ceil_mode", False))

        def per_dim(v: list[int]) -> list[int]:
            return v * nd if len(v) == 1 else v

        kernel, stride, padding, dilation = map(per_dim, (kernel, stride, padding, dilation))
        if any(d != 1 for d in dilation):
            return
        scale = float(x.abs().max())
        y = x.detach()
        pad: list[int] = []
        for i in reversed(range(nd)):  # F.pad takes the last dimension first
            extra = stride[i] - 1 if ceil else 0
            pad += [padding[i], padding[i] + extra]
        y = torch.nn.functional.pad(y, pad, value=-math.inf)
        for i in range(nd):
            y = y.unfold(2 + i, kernel[i], stride[i])  # (N, C, out..., k...)
        windows = y.reshape(y.shape[: 2 + nd] + (-1,))
        self._gap(op, windows, scale)


# ------------------------------------------------------------------------------------------------ one job


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """``Class: first line`` of an exception (the exporters' summary line where they print one)."""
    lines = [ln.strip() for ln in ANSI.sub("", str(exc)).strip().splitlines() if ln.strip()]
    head = lines[0] if lines else ""
    for i, ln in enumerate(lines[:-1]):
        if ln.endswith("Exception summary"):
            head = lines[i + 1]
            break
    return f"{exc.__class__.__name__}: {head}"[:limit]


OP_IN_MESSAGE = re.compile(r"\(op ([A-Za-z0-9_.]+)\)")


def refusal_ops(message: str, collected: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The op types a refusal names: from the message's ``(op X)`` labels and the collected builder refusals.

    A refusal that names no op (several inputs, an integer input, a shape) gets a short category instead.
    """
    ops = sorted({op for op, _ in collected} | set(OP_IN_MESSAGE.findall(message)))
    if ops:
        return ops
    if "is not a float32 tensor" in message and "input" in message:
        return ["<int64 input>"]
    if "inputs (" in message:
        return ["<several inputs>"]
    if "onnxruntime cannot load" in message:
        return ["<onnxruntime load>"]
    return ["<" + message[:60] + ">"]


@contextlib.contextmanager
def collect_builder_refusals() -> Iterable[list[tuple[str, str]]]:
    """Record every builder refusal ``(op type, reason)`` made while the graph is built.

    The engine's message lists five problems; wrapping the op registry's ``lookup`` sees them all.
    Yields the list (empty when the engine has no ``graph.lookup`` to wrap).
    """
    found: list[tuple[str, str]] = []
    try:
        from onnxlrp import graph as G
        from onnxlrp.ops import Unsupported
    except ImportError:  # pragma: no cover
        yield found
        return
    original = getattr(G, "lookup", None)
    if original is None:
        yield found
        return

    def lookup(op_type: str) -> Any:
        builder = original(op_type)
        if builder is None:
            found.append((op_type, "not supported"))
            return None

        def wrapped(ctx: Any) -> Any:
            try:
                return builder(ctx)
            except Unsupported as exc:
                found.append((op_type, str(exc)))
                raise

        return wrapped

    G.lookup = lookup
    try:
        yield found
    finally:
        G.lookup = original


def _median_time(fn: Callable[[], Any], min_total: float = 0.3, max_reps: int = 7) -> float:
    fn()  # warm-up (plans, sessions)
    times: list[float] = []
    while len(times) < 2 or (sum(times) < min_total and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """``max|got − ref| / max|ref|``, the tests' measure (``tests/helpers_onnx.py``)."""
    ref = np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref)))
    diff = float(np.max(np.abs(np.asarray(got, np.float64) - ref)))
    return diff / scale if scale > 0 else diff


@contextlib.contextmanager
def explicit_batch_norm() -> Iterable[None]:
    """Evaluation-mode BatchNorm written out as ``(x − mean) · rsqrt(var + eps) · w + b`` while active.

    torch 2.14.1's CPU BatchNorm backward in evaluation mode returns wrong input gradients when the
    incoming gradient is channels-last with a batch stride that does not span the sample (batch 1, e.g.
    after ``flatten(2).transpose(1, 2).mean(1)``, LeViT's and many transformers' heads); the written-out
    form has plain element-wise gradients. The forward values are the same.
    """
    import torch
    import torch.nn.functional as F

    original = F.batch_norm

    def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None, bias: Any = None,
                   training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Any:
        if training or running_mean is None or running_var is None:
            return original(input, running_mean, running_var, weight, bias, training, momentum, eps)
        shape = (1, -1) + (1,) * (input.dim() - 2)
        y = (input - running_mean.reshape(shape)) * torch.rsqrt(running_var.reshape(shape) + eps)
        if weight is not None:
            y = y * weight.reshape(shape)
        if bias is not None:
            y = y + bias.reshape(shape)
        return y

    F.batch_norm = batch_norm
    try:
        yield
    finally:
        F.batch_norm = original


def directional_check(model: Any, x: Any, target: int, grad: np.ndarray, seed: int = 0) -> float:
    """How far the float64 autograd ``grad`` is from a central finite difference of the float64 model.

    ``|(f(x + hv) − f(x − hv)) / 2h − <grad, v>| / (‖grad‖ ‖v‖)`` for a random direction ``v`` and
    ``h = 1e-6``: about 1e-10 when the reference is right (a kink crossed within ``h`` aside).
    """
    import torch

    v = torch.from_numpy(np.random.default_rng(seed).standard_normal(tuple(x.shape)))
    h = 1e-6
    x64 = x.detach().to(torch.float64)
    with torch.no_grad():
        up = float(model(x64 + h * v)[0, target])
        down = float(model(x64 - h * v)[0, target])
    fd = (up - down) / (2 * h)
    ad = float((torch.from_numpy(grad) * v).sum())
    scale = float(np.linalg.norm(grad)) * float(v.norm())
    return abs(fd - ad) / scale if scale > 0 else abs(fd - ad)


def _torch_gradient(model: Any, entry: ZooEntry, inputs: tuple[Any, ...], target: int, dtype: Any) -> np.ndarray:
    """d logits[0, target] / d input with torch autograd in ``dtype`` (token models: d / d the word-embedding
    lookup's output, ``(1, L, D)``); BatchNorm written out (:func:`explicit_batch_norm`)."""
    with explicit_batch_norm():
        return _torch_gradient_plain(model, entry, inputs, target, dtype)


def _torch_gradient_plain(model: Any, entry: ZooEntry, inputs: tuple[Any, ...], target: int,
                          dtype: Any) -> np.ndarray:
    import torch

    m = model.to(dtype)
    if entry.kind == "tokens":
        emb = m.inner.get_input_embeddings()
        store: dict[str, Any] = {}

        def hook(_mod: Any, _inp: Any, out: Any) -> Any:
            out.retain_grad()
            store["e"] = out
            return out

        handle = emb.register_forward_hook(hook)
        try:
            y = m(*inputs)
            y[0, target].backward()
        finally:
            handle.remove()
        return store["e"].grad.detach().to(torch.float64).numpy()
    x = inputs[0].detach().to(dtype).requires_grad_(True)
    y = m(x)
    y[0, target].backward()
    return x.grad.detach().to(torch.float64).numpy()


def _ulp_perturbed(x: Any, seed: int) -> Any:
    """``x · (1 + 2⁻²⁴·n)``, ``n ~ N(0, 1)`` elementwise: a change of the size of rounding ``x`` to float32."""
    import torch

    n = np.random.default_rng(seed).standard_normal(tuple(x.shape))
    return (x.detach().to(torch.float64) * (1 + 2.0**-24 * torch.from_numpy(n))).to(x.dtype)


def torch32_ulp_spread(model32: Any, entry: ZooEntry, inputs: tuple[Any, ...], target: int, g64: np.ndarray,
                       draws: int = ULP_DRAWS) -> float:
    """The largest error, against the float64 gradient ``g64`` at ``x``, of torch's float32 gradient at
    :func:`_ulp_perturbed` copies of ``x`` (float inputs only).

    torch's float32 gradient at ``x`` itself is one sample of float32 error; an ill-conditioned model
    (LeViT) moves its float32 gradient by far more than that when its input moves by one rounding, which
    any other float32 implementation of the same forward (onnxruntime's) effectively does.
    """
    errs = [rel_err(_torch_gradient(model32, entry, (_ulp_perturbed(inputs[0], k),) + tuple(inputs[1:]), target,
                                    _float32()), g64) for k in range(draws)]
    return max(errs)


def _float32() -> Any:
    import torch

    return torch.float32


def torch32_error(res: dict[str, Any]) -> float:
    """torch's own float32 error of a run: at ``x``, or at input-rounding-sized changes of ``x`` if larger."""
    return max(float(res.get("grad_err_torch32", 0.0)), float(res.get("grad_err_torch32_ulp", 0.0)))


def float64_twin(proto: Any) -> Any:
    """The same ONNX graph in float64 (float initializers, graph inputs/outputs/value infos, ``Cast`` to float
    and ``Constant`` tensors become double), for ONNX's reference evaluator. Weights stay the float32 values."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    for i, t in enumerate(list(g.initializer)):
        if t.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
    return m


def float64_backward(ex: Any, proto: Any, x: np.ndarray, target: int,
                     acts: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """onnxlrp's ``gradient`` backward (its layers' VJPs) run in float64 on the float64 activations of the same
    graph (``proto``, the file ``ex`` was loaded from, evaluated by ONNX's reference evaluator in float64); or on
    ``acts`` if given. Returns the gradient and the float64 activations. Convolutions compute their VJP in
    float32 (their kernels are float32), so a graph's convolution layers stay float32 arithmetic."""
    from onnx.reference import ReferenceEvaluator

    from onnxlrp import composites as comps
    from onnxlrp.rules import RuleContext

    plan = ex._engine.plan_for(x.shape)  # noqa: SLF001 - a diagnostic of the engine's own backward
    names = list(plan.forward.names)
    if acts is None:
        ref = ReferenceEvaluator(float64_twin(proto))
        feeds = {ex.input_name: x.astype(np.float64)}
        everything = ref.run(None, feeds, intermediate=True)
        acts = {n: np.asarray(everything[n], np.float64) for n in names}
        acts[ex.input_name] = x.astype(np.float64)
    classes = int(np.prod(acts[plan.graph.output_name].shape[1:]))
    start = np.zeros((1, x.shape[0], classes))
    start[0, :, target] = 1.0
    g = plan.backward(acts, start, comps.gradient().rule_for, RuleContext(np))
    return np.asarray(g, np.float64)[0], acts


def graph_directional_check(proto: Any, input_name: str, x: np.ndarray, target: int, grad: np.ndarray,
                            seed: int = 0, h: float = 1e-7) -> float:
    """:func:`directional_check` of a gradient against the float64 twin of the ONNX graph itself (ONNX's
    reference evaluator): ``|(f(x + hv) − f(x − hv)) / 2h − <grad, v>| / (‖grad‖ ‖v‖)``. ``h`` is 1e-7: on
    LeViT a step of 1e-6 already crosses HardSwish kinks (the check then falls linearly with ``h``, 1e-5 at
    1e-6, 3e-9 at 1e-7)."""
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(float64_twin(proto))
    v = np.random.default_rng(seed).standard_normal(x.shape)
    x64 = x.astype(np.float64)
    up, down = (float(np.asarray(ref.run(None, {input_name: x64 + s * h * v})[0]).reshape(x.shape[0], -1)[0, target])
                for s in (1, -1))
    fd = (up - down) / (2 * h)
    g = np.asarray(grad, np.float64).reshape(x.shape)
    scale = float(np.linalg.norm(g) * np.linalg.norm(v))
    return abs(fd - float((g * v).sum())) / scale if scale > 0 else abs(fd - float((g * v).sum()))


def conditioning(name: str, exporter: str, cache: Path = CACHE_DIR) -> dict[str, float]:
    """Where a float image model's float32 gradient error comes from (``--conditioning``), all against torch
    autograd in float64 at ``x``: onnxlrp as it runs; torch in float32 at ``x`` and at input-rounding-sized
    changes of ``x``; onnxlrp's backward in float32 on the exact (float64, rounded) activations of the exported
    graph; in float64 on onnxruntime's float32 activations; in float64 on the float64 activations (and that
    gradient's directional finite-difference check against the float64 graph itself: it is the graph's exact
    gradient when this is ~1e-8); and onnxruntime's float32 forward against the float64 one (the largest and
    median relative error per tensor)."""
    import onnx
    import torch

    from onnxlrp import Explainer

    entry = ZOO_BY_NAME[name]
    if entry.kind == "tokens":
        raise ValueError("--conditioning takes a model with a float input")
    path = export_path(entry, exporter, cache)
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `python tools/coverage.py --only {name} --export-only` first")
    model = build_model(entry)
    inputs = example_inputs(entry)
    x = inputs[0].numpy()
    with torch.no_grad():
        target = int(np.argmax(model(*inputs)[0].numpy()))
    g64 = _torch_gradient(model, entry, inputs, target, torch.float64)
    m32 = build_model(entry)
    out: dict[str, float] = {"torch_f32": rel_err(_torch_gradient(m32, entry, inputs, target, torch.float32), g64)}
    out["torch_f32_ulp"] = torch32_ulp_spread(m32, entry, inputs, target, g64)
    ex = Explainer(str(path), device="cpu", threads=1)
    out["onnxlrp_f32"] = rel_err(np.asarray(ex.explain(x, target=target, method="gradient"), np.float64), g64)
    proto = onnx.load(str(path))
    g_exact, acts64 = float64_backward(ex, proto, x, target)
    out["onnxlrp_f64_backward_f64_acts"] = rel_err(g_exact.reshape(g64.shape), g64)
    out["onnxlrp_f64_directional"] = graph_directional_check(proto, ex.input_name, x, target, g_exact)
    acts32 = {k: v.astype(np.float32) for k, v in acts64.items()}
    g_b32, _ = float64_backward(ex, None, x, target, acts=acts32)
    out["onnxlrp_f32_backward_exact_acts"] = rel_err(g_b32.reshape(g64.shape), g64)
    plan = ex._engine.plan_for(x.shape)  # noqa: SLF001
    ort_acts = {k: np.asarray(v, np.float64) for k, v in plan.run_forward(x).items()}
    g_ort, _ = float64_backward(ex, None, x, target, acts=ort_acts)
    out["onnxlrp_f64_backward_ort_acts"] = rel_err(g_ort.reshape(g64.shape), g64)
    errs = sorted(rel_err(ort_acts[n], acts64[n]) for n in acts64 if acts64[n].size > 1 and n != ex.input_name)
    out["ort_forward_max"], out["ort_forward_median"] = errs[-1], errs[len(errs) // 2]
    return out


def gradient_verdict(res: dict[str, Any]) -> str:
    """The verdict on a run's gradient error (see the report's notes): ``ok`` within :data:`GRAD_TOL`;
    ``float32`` within :data:`COND_FACTOR` × torch's float32 error at ``x``; ``tie`` when float32 ties were found;
    ``float32`` within that factor of torch's float32 error at input-rounding-sized changes of ``x`` (checked after
    the ties: a tie flipped by the change makes that error large too); ``reference?`` when the float64 autograd
    fails its finite-difference check; else ``MISMATCH``."""
    err = float(res["grad_err"])
    if err <= GRAD_TOL:
        return "ok"
    if err <= COND_FACTOR * float(res.get("grad_err_torch32", 0.0)):
        return "float32"  # ill-conditioned: torch's own float32 gradient is off by a like amount
    if res.get("tie_count", 0) > 0:
        return "tie"
    if err <= COND_FACTOR * torch32_error(res):
        return "float32"
    if res.get("reference_check", 0.0) > REF_TOL:
        return "reference?"  # the float64 autograd itself disagrees with finite differences
    return "MISMATCH"


def run_job(name: str, exporter: str, cache: Path = CACHE_DIR, tie_tol: float = TIE_TOL,
            export_only: bool = False) -> dict[str, Any]:
    """Everything measured for one model × exporter (runs in a child process of :func:`main`).

    With ``export_only`` the model is only built and exported into the cache (status ``exported``).
    """
    import torch

    torch.set_num_threads(1)
    entry = ZOO_BY_NAME[name]
    res: dict[str, Any] = {"model": name, "exporter": exporter, "source": entry.source, "covers": entry.covers,
                           "kind": entry.kind, "started": _now()}
    t_start = time.perf_counter()
    clock = [t_start]
    stage_seconds: dict[str, float] = {}
    res["stage_seconds"] = stage_seconds
    stage = "build"

    def enter(new: str) -> str:
        now = time.perf_counter()
        stage_seconds[stage] = round(now - clock[0], 2)
        clock[0] = now
        return new

    try:
        model = build_model(entry)
        inputs = example_inputs(entry)
        with torch.no_grad():
            y32 = model(*inputs).double().numpy()
        stage = enter("export")
        path = export_path(entry, exporter, cache)
        if not path.exists():
            res["export"] = export(model, entry, exporter, path)
        import onnx

        proto = onnx.load(str(path))
        res["nodes"] = len(proto.graph.node)
        res["op_types"] = dict(Counter(n.op_type for n in proto.graph.node))
        res["onnx_mb"] = round(path.stat().st_size / 2**20, 2)
        del proto
        if export_only:
            res["status"] = "exported"
            return res
        stage = enter("onnxruntime")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds = {n: t.numpy() for n, t in zip(input_names(entry), inputs, strict=True)}
        y_ort = sess.run(["logits"], feeds)[0]
        res["export_err"] = rel_err(y_ort, y32)
        res["forward_ms"] = 1e3 * _median_time(lambda: sess.run(["logits"], feeds))
        target = int(np.argmax(y32[0]))
        res["target"] = target
        stage = enter("load")
        from onnxlrp import Explainer, UnsupportedModelError, list_methods

        with collect_builder_refusals() as collected:
            try:
                ex = Explainer(str(path), device="cpu", threads=1)
                if entry.kind != "tokens":
                    ex.layers(shape=(1,) + entry.shape)  # build the plan now: a dynamic-shape model refuses here
            except UnsupportedModelError as exc:
                res["status"] = "refused"
                res["message"] = str(exc)
                res["refusing_ops"] = refusal_ops(str(exc), collected)
                res["refusals"] = sorted({f"{op}: {why}" for op, why in collected})[:20]
                return res
        res["status"] = "explained"
        x_in: Any = feeds if entry.kind == "tokens" else feeds["input"]

        stage = enter("gradient")
        if entry.kind == "tokens":  # the embedded tokens' gradient (N, L, D); summed per token it would be ~0
            g = np.asarray(ex.explain(x_in, target=target, method="gradient", per_token=False), np.float64)
        else:
            g = np.asarray(ex.explain(x_in, target=target, method="gradient"), np.float64)
        g64 = _torch_gradient(model, entry, inputs, target, torch.float64)
        g32 = _torch_gradient(build_model(entry), entry, inputs, target, torch.float32)
        if g.shape != g64.shape and g.size == g64.size:
            g = g.reshape(g64.shape)
        res["grad_err"] = rel_err(g, g64)
        res["grad_err_torch32"] = rel_err(g32, g64)
        if entry.kind != "tokens":  # float inputs: torch's float32 gradient at input-rounding-sized changes of x
            res["grad_err_torch32_ulp"] = torch32_ulp_spread(build_model(entry), entry, inputs, target, g64)
        with contextlib.suppress(Exception):  # the reference's own check (float inputs only)
            if entry.kind != "tokens":
                res["reference_check"] = directional_check(model.to(torch.float64), inputs[0], target, g64)
            plain = _torch_gradient_plain(model, entry, inputs, target, torch.float64)
            res["torch_bn_err"] = rel_err(plain, g64)  # torch's own BatchNorm backward against the written-out form
        stage = enter("ties")
        m64 = model.to(torch.float64)
        ins64 = tuple(t.to(torch.float64) if t.is_floating_point() else t for t in inputs)
        detector = TieDetector(tie_tol)
        with torch.no_grad(), detector:
            m64(*ins64)
        res["ties"] = dict(detector.counts)
        res["tie_count"] = detector.total()
        res["decisions_checked"] = int(sum(detector.checked.values()))
        res["gradient"] = gradient_verdict(res)

        stage = enter("methods")
        methods: dict[str, str] = {}
        from onnxlrp import METHODS

        for method in list_methods():
            opts = {k: v for k, v in SAMPLING_OPTIONS.items() if k in getattr(METHODS[method], "options", ())}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    heat = np.asarray(ex.explain(x_in, target=target, method=method, **opts))
                    if not np.all(np.isfinite(heat)):
                        methods[method] = "nonfinite"
                    else:
                        relevant = [w for w in caught if "Relevance" in type(w.message).__name__]
                        notes = [w for w in caught if issubclass(w.category, UserWarning) and w not in relevant]
                        methods[method] = ("warning: " + str(relevant[0].message)[:160] if relevant else
                                           "note: " + str(notes[0].message)[:160] if notes else "ok")
                except Exception as exc:  # noqa: BLE001 - every failure is a finding
                    text = _first_line(exc)
                    methods[method] = "nonfinite: " + text if ("overflow" in text or "NaN" in text) else \
                        "error: " + text
        res["methods"] = methods
        stage = enter("timing")
        timing: dict[str, float] = {}
        for method in ("lrp", "epsilon_plus_flat"):
            if methods.get(method, "").startswith(("ok", "warning")):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = _median_time(lambda m=method: ex.explain(x_in, target=target, method=m))
                timing[method] = round(t / (res["forward_ms"] / 1e3), 1)
        res["time_ratio"] = timing
    except Exception as exc:  # noqa: BLE001
        res["status"] = "export failed" if stage == "export" else "error"
        res["stage"] = stage
        res["message"] = _first_line(exc, 600)
        res["traceback"] = traceback.format_exc()[-2000:]
    finally:
        enter("")
        res["seconds"] = round(time.perf_counter() - t_start, 1)
    return res


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------------------------ the parent


PRELOAD = ["numpy", "torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxscript"]


def _set_child_env() -> None:
    """One thread per job, no network for Hugging Face, before torch is imported anywhere."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _child_entry(name: str, exporter: str, result: str, cache: str, tie_tol: float, export_only: bool,
                 log: str) -> None:
    """The body of one child process: run the job, write its result as JSON (output to ``log``)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    warnings.simplefilter("ignore")
    res = run_job(name, exporter, Path(cache), tie_tol, export_only)
    res["commit"] = git_commit()
    Path(result).write_text(json.dumps(res))


_CONTEXT: Any = None


def _context() -> Any:
    """A forkserver that has imported torch, timm, onnx and onnxruntime once: each job forks from it
    (seconds saved per job) and still runs in its own process."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing as mp

        _set_child_env()
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _CONTEXT = ctx
    return _CONTEXT


def run_child(name: str, exporter: str, cache: Path, timeout: float, tie_tol: float,
              export_only: bool = False) -> dict[str, Any]:
    """Run :func:`run_job` in its own process with a timeout; a crash or a hang becomes a result."""
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.{exporter}.log"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        t0 = time.perf_counter()
        if __name__ == "__main__":  # run as a script: fork from the preloaded server
            proc = _context().Process(target=_child_entry, args=(name, exporter, str(out), str(cache), tie_tol,
                                                                 export_only, str(log)))
            proc.start()
            proc.join(timeout)
            timed_out = proc.is_alive()
            if timed_out:
                proc.kill()
                proc.join()
            code = proc.exitcode
        else:  # imported (tests): the server could not import this module by name; a fresh interpreter can
            _set_child_env()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, exporter, str(out), "--cache",
                   str(cache), "--tie-tol", str(tie_tol)] + (["--export-only"] if export_only else [])
            with open(log, "w") as sink:
                try:
                    code = subprocess.run(cmd, stdout=sink, stderr=sink, timeout=timeout, cwd=REPO_ROOT).returncode
                    timed_out = False
                except subprocess.TimeoutExpired:
                    code, timed_out = None, True
        if timed_out:
            return {"model": name, "exporter": exporter, "status": "timeout", "seconds": round(timeout),
                    "message": f"no result within {timeout:.0f} s", "started": _now()}
        if out.exists():
            res = json.loads(out.read_text())
        else:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            res = {"model": name, "exporter": exporter, "status": "crash", "started": _now(),
                   "message": f"exit code {code}: " + " / ".join(tail)[-500:]}
        res.setdefault("seconds", round(time.perf_counter() - t0, 1))
        return res


def git_commit() -> str:
    """The repository's HEAD commit (short), with ``+dirty`` when tracked engine files are modified."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "onnxlrp"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """The cached results, keyed ``model|exporter``."""
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def save_results(path: Path, results: dict[str, dict[str, Any]]) -> None:
    """Write the results atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ the report


def _fmt_err(v: float | None) -> str:
    return "—" if v is None else f"{v:.1e}"


def _status_cell(r: dict[str, Any]) -> str:
    st = r.get("status", "?")
    if st == "refused":
        return "refused: " + ", ".join(f"`{o}`" for o in r.get("refusing_ops", []))
    if st in ("error", "export failed", "crash", "timeout"):
        msg = str(r.get("message", "")).replace("|", "/").replace("\n", " ")
        return f"**{st}**" + (f" ({r.get('stage')})" if r.get("stage") else "") + f": {msg[:90]}"
    return st


def _method_cells(r: dict[str, Any]) -> tuple[str, str]:
    methods = r.get("methods") or {}
    bad = sorted(m for m, s in methods.items() if s.startswith("nonfinite"))
    warn = sorted(m for m, s in methods.items() if s.startswith("warning"))
    err = sorted(m for m, s in methods.items() if s.startswith("error"))
    note = sorted(m for m, s in methods.items() if s.startswith("note"))
    nan = ", ".join(bad) if bad else ("none" if methods else "—")
    other = []
    if warn:
        other.append("warn: " + ", ".join(warn))
    if err:
        other.append("error: " + ", ".join(err))
    if note:
        other.append("note: " + ", ".join(note))
    return nan, "; ".join(other) if other else ("—" if not methods else "none")


def _grad_cell(r: dict[str, Any]) -> str:
    if r.get("grad_err") is None:
        return "—"
    verdict = r.get("gradient", "")
    mark = {"ok": "", "tie": " (tie)", "float32": " (f32)", "reference?": " (ref?)",
            "MISMATCH": " **MISMATCH**"}.get(verdict, "")
    return f"{r['grad_err']:.1e}{mark}"


def render_report(results: dict[str, dict[str, Any]], command: str, commit: str, names: Sequence[str]) -> str:
    """The markdown of docs/coverage.md from the results of the zoo's models ``names``."""
    rows = [results[k] for n in names for e in EXPORTERS if (k := f"{n}|{e}") in results]
    for r in rows:  # the verdicts of the current rules, also for cached results
        if r.get("grad_err") is not None:
            r["gradient"] = gradient_verdict(r)
    by_status = Counter(r.get("status", "?") for r in rows)
    models_done = sorted({r["model"] for r in rows})
    explained_models = sorted({r["model"] for r in rows if r.get("status") == "explained"})
    both = [n for n in models_done if all(results.get(f"{n}|{e}", {}).get("status") == "explained"
                                          for e in EXPORTERS)]
    blockers: dict[str, set[str]] = defaultdict(set)
    sole: Counter[str] = Counter()
    for r in rows:
        if r.get("status") == "refused":
            ops = r.get("refusing_ops", [])
            for op in ops:
                blockers[op].add(f"{r['model']} ({r['exporter']})")
            if len(ops) == 1:
                sole[ops[0]] += 1
    ranking = sorted(blockers.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    mismatches = [r for r in rows if r.get("gradient") == "MISMATCH"]
    ties = [r for r in rows if r.get("gradient") == "tie"]
    nonfinite = [r for r in rows if any(s.startswith("nonfinite") for s in (r.get("methods") or {}).values())]
    failing = [r for r in rows if r.get("status") in ("error", "export failed", "crash", "timeout")]
    dates = sorted(r.get("started", "") for r in rows if r.get("started"))
    commits = sorted({r.get("commit", "?") for r in rows})

    out: list[str] = []
    out.append("# Coverage: the architecture zoo\n")
    out.append("What onnxlrp explains today, measured on current architectures from timm, torchvision and "
               "transformers (tiny configurations, random weights made to behave like trained ones), each "
               "exported with both PyTorch exporters. Written by `tools/coverage.py` (issue 9); how each "
               "column is measured is in the tool's docstring and at the end of this page.\n")
    out.append(f"* Date: {dates[0] if dates else '?'} to {dates[-1] if dates else '?'}")
    out.append(f"* Command: `{command}`")
    out.append(f"* onnxlrp commit: {', '.join(commits)} (report written at {commit})")
    try:
        import onnxruntime
        import torch

        versions = f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
        with contextlib.suppress(ImportError):
            import timm
            import transformers

            versions += f", timm {timm.__version__}, transformers {transformers.__version__}"
        out.append(f"* Versions: {versions}")
    except ImportError:
        pass
    out.append(f"* Machine: {os.cpu_count()} CPU cores (shared), one thread per job; times are medians and "
               "noisy.\n")

    out.append("## Summary\n")
    out.append(f"* {len(models_done)} models, {len(rows)} model × exporter runs: "
               + ", ".join(f"{by_status[s]} {s}" for s in sorted(by_status)) + ".")
    out.append(f"* Models explained with at least one exporter: {len(explained_models)}; with both: {len(both)}.")
    cond = [r for r in rows if r.get("gradient") == "float32"]
    refq = [r for r in rows if r.get("gradient") == "reference?"]
    out.append(f"* `gradient` vs float64 autograd: {sum(r.get('gradient') == 'ok' for r in rows)} within "
               f"{GRAD_TOL:g}; {len(cond)} above it but within {COND_FACTOR:g}× torch's own float32 error "
               f"(ill-conditioned: f32); {len(ties)} above it on float32 ties; {len(refq)} where the reference "
               f"failed its own finite-difference check; **{len(mismatches)} mismatches** (none of these: a bug).")
    out.append(f"* Runs with NaN/inf in some method: {len(nonfinite)}.\n")

    out.append("### Refusing ops, by how many runs each blocks\n")
    if ranking:
        out.append("A run may be blocked by several ops; *sole* counts the runs that op alone blocks "
                   "(supporting it makes them explainable, unless a later check refuses).\n")
        out.append("| op | runs blocked | sole | models |")
        out.append("| --- | ---: | ---: | --- |")
        for op, models in ranking:
            names_txt = ", ".join(sorted(models))
            out.append(f"| `{op}` | {len(models)} | {sole[op]} | {names_txt} |")
    else:
        out.append("No refusals.")
    out.append("")
    if mismatches:
        out.append("### Gradient mismatches (bugs)\n")
        for r in mismatches:
            out.append(f"* {r['model']} ({r['exporter']}): gradient error {r['grad_err']:.2e}, no tie "
                       f"(torch float32: {r.get('grad_err_torch32', float('nan')):.1e}); reproduce with "
                       f"`python tools/coverage.py --only {r['model']} --exporter {r['exporter']}`")
        out.append("")
    if failing:
        out.append("### Runs that failed before the engine was reached or crashed\n")
        for r in failing:
            msg = str(r.get("message", "")).replace("\n", " ")
            out.append(f"* {r['model']} ({r['exporter']}): {r.get('status')} at {r.get('stage', '?')}: {msg[:300]}")
        out.append("")
    per_method: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        for m, st in (r.get("methods") or {}).items():
            kind = st.split(":", 1)[0]
            if kind != "ok":
                per_method[m][kind] += 1
    if per_method:
        out.append("### Method findings, by method\n")
        out.append("Runs (of the explained ones) where a method returned no map (*error*: the message is in "
                   "*Method findings in full* below), raised a `RelevanceWarning` (*warning*: total |relevance| "
                   "above 1000× the start) or would have returned NaN/inf (*nonfinite*); *note*: another warning "
                   "(e.g. a dynamo export that runs only at batch 1, explained one sample at a time).\n")
        out.append("| method | error | warning | nonfinite | note |")
        out.append("| --- | ---: | ---: | ---: | ---: |")
        for m in sorted(per_method, key=lambda k: (-sum(per_method[k].values()), k)):
            c = per_method[m]
            out.append(f"| `{m}` | {c['error']} | {c['warning']} | {c['nonfinite']} | {c['note']} |")
        out.append("")

    out.append("## Model × exporter\n")
    out.append("Gradient: relative error `max|g − g64| / max|g64|` of onnxlrp's `gradient` against torch autograd "
               "in float64; *torch f32*: torch's own float32 autograd against the same reference, at `x` / the "
               f"largest over {ULP_DRAWS} copies `x·(1 + 2⁻²⁴·N(0, 1))` (an input-rounding-sized change: how far an "
               "ill-conditioned model's float32 gradient moves); *ties*: "
               f"float32-tie decisions found (within {TIE_TOL:g} of the tensor's max|value|). Time: `lrp` and "
               "`epsilon_plus_flat` over the onnxruntime forward (one sample, one thread; the forward's time in "
               "brackets — for the tiniest models a fixed per-call cost dominates the ratio).\n")
    out.append("| model | exporter | status | gradient | torch f32 | ties | NaN/inf methods | other method findings "
               "| time lrp / ε+♭ (forward) |")
    out.append("| --- | --- | --- | --- | --- | ---: | --- | --- | --- |")
    for n in names:
        for e in EXPORTERS:
            r = results.get(f"{n}|{e}")
            if r is None:
                continue
            nan, other = _method_cells(r)
            tr = r.get("time_ratio") or {}
            time_cell = " / ".join(f"{tr[m]:g}×" if m in tr else "—" for m in ("lrp", "epsilon_plus_flat")) \
                if tr else "—"
            if tr and r.get("forward_ms") is not None:
                time_cell += f" ({r['forward_ms']:.2g} ms)"
            ties = r.get("tie_count")
            t32 = _fmt_err(r.get("grad_err_torch32"))
            if r.get("grad_err_torch32_ulp") is not None:
                t32 += f" / {_fmt_err(r.get('grad_err_torch32_ulp'))}"
            out.append(f"| {n} | {e} | {_status_cell(r)} | {_grad_cell(r)} | {t32} "
                       f"| {'—' if ties is None else ties} | {nan} | {other} | {time_cell} |")
    out.append("")
    out.append("## The zoo\n")
    out.append("| model | source | input | what it brings |")
    out.append("| --- | --- | --- | --- |")
    for n in names:
        entry = ZOO_BY_NAME.get(n)
        if entry is not None:
            shape = "×".join(str(d) for d in entry.shape)
            what = {"tokens": f"token ids, length {shape}", "embeds": f"embeddings {shape}"}.get(entry.kind, shape)
            out.append(f"| {n} | {entry.source} | {what} | {entry.covers} |")
    out.append("")
    details = [r for r in rows if (r.get("methods") and any(not s.startswith("ok") for s in r["methods"].values()))]
    if details:
        out.append("## Method findings in full\n")
        for r in details:
            for m, s in sorted(r["methods"].items()):
                if not s.startswith("ok"):
                    out.append(f"* {r['model']} ({r['exporter']}) `{m}`: {s.replace('|', '/')}")
        out.append("")
    refused = [r for r in rows if r.get("status") == "refused"]
    if refused:
        out.append("## Refusal messages\n")
        for r in refused:
            msg = str(r.get("message", "")).replace("\n", " ")
            out.append(f"* {r['model']} ({r['exporter']}): {msg[:400]}")
        out.append("")
    out.append("## How it is measured\n")
    out.append(
        "* Weights: `make_trained_like` in the tool — constant-initialised parameters (biases, norm gains, "
        "layer-scale and skip gains, tokens) randomised; BatchNorm statistics measured on random inputs, "
        "then perturbed.\n"
        "* Exports: `torch.onnx.export(..., dynamo=False)` opset 17 and `dynamo=True` opset 18, dynamic "
        "batch axis, cached in `benchmarks/.cache/coverage/`.\n"
        "* Input: one sample of N(0, 1) values (token models: random ids, the last 3 positions padded); "
        "target: the predicted class.\n"
        f"* Ties: a torch dispatch mode watches the float64 forward; a ReLU-like decision within "
        f"{TIE_TOL:g}·max|input| of its threshold, or a max-pool window / max reduction whose two largest "
        "values are that close, counts as a tie (exact hits are structural and not counted).\n"
        f"* Verdict of a gradient error above {GRAD_TOL:g}: *f32* when it is within {COND_FACTOR:g}× torch's own "
        "float32 autograd error, the larger of the two *torch f32* numbers (the model is ill-conditioned; torch in "
        "float32 is as far off), *tie* when ties "
        "were found, *ref?* when the float64 reference fails a directional finite-difference check "
        f"(above {REF_TOL:g}), else **MISMATCH**.\n"
        "* The reference writes evaluation-mode BatchNorm out as `(x − mean)·rsqrt(var + eps)·w + b`: torch "
        "2.14.1's own BatchNorm backward on the CPU returns wrong input gradients when the incoming gradient "
        "is channels-last with a batch stride that does not span the sample (batch 1, after "
        "`flatten(2).transpose(1, 2).mean(1)`: LeViT, EfficientFormerV2, MobileViT heads); the *torch BN* "
        "error of each run is in `results.json` (`torch_bn_err`).\n"
        "* Methods: every method of `onnxlrp.list_methods()`; SmoothGrad with 4 samples, Integrated "
        "Gradients with 4 steps. *nonfinite*: the engine refused a NaN/inf map; *warning*: a "
        "`RelevanceWarning` (relevance grew a thousandfold).\n"
        "* The dynamo exporter, given a batch-1 example, bakes batch 1 into some reshapes although the input "
        "declares `N` (torch.export specialises size-1 dimensions): such exports run only at batch 1. The "
        "Explainer then explains one sample at a time after the first failure at a larger batch and says so "
        "once (`BatchOneWarning`): SmoothGrad, the first method here that batches several points, shows it as a "
        "*note*.\n"
        "* Each model × exporter runs in its own process (forked from a server that has imported torch once) "
        "with a timeout.\n"
        "* Where an *f32* verdict's error comes from: `python tools/coverage.py --conditioning NAME EXPORTER` "
        "runs onnxlrp's backward in float64 on the float64 twin of the exported graph (ONNX's reference "
        "evaluator) and in float32 on its rounded activations, and compares onnxruntime's float32 forward with "
        "it. LeViT (TorchScript): onnxlrp 1.3e-3; the float64 backward is the graph's exact gradient "
        "(directional check 3e-9) and is 2.5e-4 from torch's float64 gradient (the export folds BatchNorm into "
        "float32 weights; this model amplifies a weight rounding ~4000×); the float32 backward on exact "
        "activations 2.5e-4 (it adds nothing); the float64 backward on onnxruntime's float32 activations 1.3e-3 "
        "(onnxruntime's forward is off by 2.3e-5 per tensor, median): ill-conditioning, not a bug.")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="models to run (default: the whole zoo)")
    p.add_argument("--exporter", choices=[*EXPORTERS, "both"], default="both")
    p.add_argument("--jobs", type=int, default=2, help="child processes at once (default 2)")
    p.add_argument("--timeout", type=float, default=420.0, help="seconds per model × exporter (default 420)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the report (default docs/coverage.md)")
    p.add_argument("--cache", type=Path, default=CACHE_DIR, help="exports and results.json")
    p.add_argument("--tie-tol", type=float, default=TIE_TOL)
    p.add_argument("--report-only", action="store_true", help="write the report from cached results")
    p.add_argument("--no-report", action="store_true", help="only run and cache the results")
    p.add_argument("--export-only", action="store_true", help="only build and export into the cache (no report)")
    p.add_argument("--list", action="store_true", help="print the zoo and exit")
    p.add_argument("--conditioning", nargs=2, metavar=("NAME", "EXPORTER"),
                   help="where a model's float32 gradient error comes from (float64 runs of onnxlrp's backward)")
    p.add_argument("--child", nargs=3, metavar=("NAME", "EXPORTER", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        name, exporter, result = args.child
        res = run_job(name, exporter, args.cache, args.tie_tol, args.export_only)
        res["commit"] = git_commit()
        Path(result).write_text(json.dumps(res))
        return 0
    if args.conditioning:
        for key, value in conditioning(*args.conditioning, cache=args.cache).items():
            print(f"{key:34s} {value:.2e}")
        return 0
    if args.list:
        for e in ZOO:
            print(f"{e.name:28s} {e.source:13s} {e.kind:7s} {str(e.shape):16s} {e.covers}")
        return 0
    unknown = [n for n in args.only or [] if n not in ZOO_BY_NAME]
    if unknown:
        p.error(f"unknown model(s) {unknown}; see --list")
    names = list(args.only) if args.only else [e.name for e in ZOO]
    exporters = list(EXPORTERS) if args.exporter == "both" else [args.exporter]
    results_path = args.cache / "results.json"
    if not args.report_only:
        jobs = [(n, e) for n in names for e in exporters]
        done = 0
        t0 = time.perf_counter()

        def one(job: tuple[str, str]) -> dict[str, Any]:
            return run_child(job[0], job[1], args.cache, args.timeout, args.tie_tol, args.export_only)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for res in pool.map(one, jobs):
                done += 1
                res.setdefault("commit", git_commit())
                if not args.export_only:
                    results = load_results(results_path)
                    results[f"{res['model']}|{res['exporter']}"] = res
                    save_results(results_path, results)
                grad = _grad_cell(res)
                print(f"[{done}/{len(jobs)} {time.perf_counter() - t0:6.0f}s] {res['model']:28s} "
                      f"{res['exporter']:11s} {_status_cell(res)[:90]:90s} grad {grad} ({res.get('seconds')} s)",
                      flush=True)
    if args.no_report or args.export_only:
        return 0
    results = load_results(results_path)
    all_names = [e.name for e in ZOO]
    command = "python tools/coverage.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_report(results, command.strip(), git_commit(), all_names))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
