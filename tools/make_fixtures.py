"""Build the Zennit reference fixtures used by ``tests/test_fidelity_zennit.py``.

The script builds four small PyTorch image classifiers with fixed, seeded weights, exports each to ONNX
(TorchScript exporter, and the dynamo exporter where it works), runs Zennit on them and stores reference
heatmaps under ``tests/fixtures/``::

    python tools/make_fixtures.py --out tests/fixtures

ONNX files: ``<name>.onnx`` from the TorchScript exporter (opset 17, Conv+BN folded) and ``<name>_dynamo.onnx``
from the dynamo exporter (opset 18: it has no opset-17 implementations and cannot down-convert ``ReduceMean``;
needs ``onnxscript``); both with input ``input`` (dynamic batch), output ``logits`` and inline weights.

It needs ``torch`` and ``zennit`` (the ``crosscheck`` extra); ``onnxlrp`` itself does not. The module is
importable too: the tests use :func:`build_model`, :func:`zennit_reference` and :func:`make_inputs` to
recompute references live when torch and Zennit are installed.

Models (input ``3x16x16``, 10 classes):

``vgg``
    three conv-ReLU-maxpool blocks, flatten, linear-ReLU, linear.
``resnet``
    conv+BN+ReLU stem, a basic block, a basic block with a strided 1x1 projection shortcut, a bottleneck
    block, global average pooling, linear.
``mobilenet``
    depthwise-separable block with squeeze-excitation, an inverted residual block with squeeze-excitation
    and a residual addition, a strided inverted residual block, 1x1 head conv, ReLU6 everywhere, global
    average pooling, linear.
``densenet``
    an Inception-like module (1x1, 1x1+3x3, 5x5 and avgpool+1x1 branches, concatenated), an average-pool
    transition, a two-layer dense block with pre-activation BatchNorm after concatenations (BNs that
    cannot be folded into a conv), final BN+ReLU, global average pooling, linear.

Conventions of the references (also written into each ``<name>_ref.npz`` as ``meta``):

* Zennit's native usage: ``zennit.attribution.Gradient`` with the composite and an output gradient that is
  a one-hot vector of ones at the target (unscaled). onnxlrp's LRP maps start from ``y_t``, so compare
  onnxlrp with ``ref * logits[n, t]``; the plain ``gradient`` compares unscaled.
* BatchNorm following a conv is merged into it with ``NamedMergeBatchNorm`` and explicit (conv, bn) pairs
  (checked on the traced graph); the dense block's pre-activation BNs are left alone (Zennit: ``Pass``).
  Zennit 0.5.1 leaves ``eps`` in the emptied BN, so its canonized model is off by ``1/sqrt(1 + 1e-5)`` per
  merged BN; the canonizer used here also sets that ``eps`` to 0 (see :func:`exact_merge_canonizer`).
  (``SequentialMergeBatchNorm`` is not usable: it pairs ``densenet``'s dense BNs with the previous conv.)
* Residual additions run through ``zennit.layer.Sum`` during attribution (Zennit's ``Norm`` rule), and as
  a plain ``a + b`` for export; both give identical outputs.
* The squeeze-excitation gate multiplication is a plain tensor op, so Zennit gives it the gradient
  (signal receives ``R * gate``, the gate receives ``sum_hw R * signal`` which then flows through the
  gate branch with the composite's rules; ``Sigmoid`` is an activation, i.e. ``Pass``). For ``mobilenet``
  the npz additionally holds ``<method>_gatesignal_*``: the same composites with all relevance of the
  gate product sent to the signal and none to the gate (the rule in docs/methods.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

try:  # Zennit is only needed for the references, not for building or exporting the models
    from zennit.layer import Sum as _SumModule
except ImportError:  # pragma: no cover - fallback so the builders import without zennit

    class _SumModule(nn.Module):  # type: ignore[no-redef]
        """Stand-in for ``zennit.layer.Sum`` (sum over the last axis)."""

        def __init__(self, dim: int = -1) -> None:
            super().__init__()
            self.dim = dim

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            """Sum over ``self.dim``."""
            return torch.sum(input, dim=self.dim)


MODEL_NAMES: tuple[str, ...] = ("vgg", "resnet", "mobilenet", "densenet")
METHODS: tuple[str, ...] = ("epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box", "gradient")
LRP_METHODS: tuple[str, ...] = METHODS[:3]
INPUT_SHAPE: tuple[int, int, int] = (3, 16, 16)
NUM_CLASSES = 10
LOW, HIGH = -3.0, 3.0
EPSILON = 1e-6  # Zennit's default epsilon / stabilizer of the composites
GAMMA = 0.25  # Zennit's default gamma of EpsilonGammaBox
OPSET = 17  # TorchScript exporter
OPSET_DYNAMO = 18  # the dynamo exporter has no implementations below 18 (and cannot always down-convert)
WEIGHT_SEED = 1234
INPUT_SEED = 2024
NUM_SAMPLES = 2
GATE_MODES: tuple[str, ...] = ("gradient", "signal")


# --------------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------------


class ResidualAdd(nn.Module):
    """A residual sum ``a + b``.

    For export it is the plain ``a + b``; with ``use_sum_module = True`` (set by :func:`attribution_mode`)
    it runs ``zennit.layer.Sum`` over the stacked operands, which Zennit's composites map to the ``Norm``
    rule (proportional split). Both give bit-identical outputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.use_sum_module = False
        self.sum = _SumModule(dim=-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Return ``a + b``."""
        if self.use_sum_module:
            return self.sum(torch.stack((a, b), dim=-1))
        return a + b


class _SignalOnlyMul(torch.autograd.Function):
    """``signal * gate`` whose backward sends the incoming relevance unchanged to the signal, none to the gate."""

    @staticmethod
    def forward(ctx: Any, signal: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Forward product."""
        ctx.gate_shape = gate.shape
        return signal * gate

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All relevance to the signal, zero to the gate."""
        return grad, grad.new_zeros(ctx.gate_shape)


class GateMul(nn.Module):
    """The squeeze-excitation product ``signal * gate``.

    ``mode = "gradient"`` (default, and always for export) is the plain tensor product, which Zennit
    treats with the gradient. ``mode = "signal"`` keeps the forward but passes all relevance to the signal.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mode = "gradient"

    def forward(self, signal: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Return ``signal * gate``."""
        if self.mode == "signal":
            return _SignalOnlyMul.apply(signal, gate)
        return signal * gate


class ConvBN(nn.Sequential):
    """``Conv2d`` (no bias) followed by ``BatchNorm2d``; the pair Zennit's canonizer merges.

    ``branch_end`` marks the last BN of a residual branch; :func:`init_weights` gives it a smaller scale.
    """

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, branch_end: bool = False
    ) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
                bn=nn.BatchNorm2d(cout),
            )
        )
        self.bn.branch_end = branch_end


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.sigmoid = nn.Sigmoid()
        self.mul = GateMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` channel-wise."""
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return self.mul(x, gate)


# --------------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------------


class SmallVGG(nn.Module):
    """Three conv-ReLU-maxpool blocks (16 -> 8 -> 4 -> 2), flatten, linear-ReLU, linear."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.classifier(self.flatten(self.features(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; a strided 1x1 conv+BN projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBN(cin, cout, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2 = ConvBN(cout, cout, 3, branch_end=True)
        self.shortcut = ConvBN(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None
        self.add = ResidualAdd()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(branch(x) + shortcut(x))``."""
        out = self.conv2(self.relu1(self.conv1(x)))
        short = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(self.add(out, short))


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1 reduce, 3x3, 1x1 expand) with identity shortcut."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(channels, mid, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = ConvBN(mid, mid, 3)
        self.relu2 = nn.ReLU()
        self.conv3 = ConvBN(mid, channels, 1, branch_end=True)
        self.add = ResidualAdd()
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(branch(x) + x)``."""
        out = self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.relu3(self.add(out, x))


class SmallResNet(nn.Module):
    """Stem, basic block, strided basic block with projection, bottleneck, GAP, linear."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBN(3, 8, 3)
        self.stem_relu = nn.ReLU()
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.layer3 = Bottleneck(16, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        x = self.layer3(self.layer2(self.layer1(self.stem_relu(self.stem(x)))))
        return self.fc(self.flatten(self.pool(x)))


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 conv+BN+ReLU6, squeeze-excitation, pointwise 1x1 conv+BN+ReLU6."""

    def __init__(self, cin: int, cout: int, se_reduced: int) -> None:
        super().__init__()
        self.dw = ConvBN(cin, cin, 3, groups=cin)
        self.dw_act = nn.ReLU6()
        self.se = SqueezeExcite(cin, se_reduced)
        self.pw = ConvBN(cin, cout, 1)
        self.pw_act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        return self.pw_act(self.pw(self.se(self.dw_act(self.dw(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, optional SE, linear 1x1 projection, residual if possible."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int, se_reduced: int | None) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden, 1)
        self.expand_act = nn.ReLU6()
        self.dw = ConvBN(hidden, hidden, 3, stride=stride, groups=hidden)
        self.dw_act = nn.ReLU6()
        self.se = SqueezeExcite(hidden, se_reduced) if se_reduced else None
        residual = stride == 1 and cin == cout
        self.project = ConvBN(hidden, cout, 1, branch_end=residual)
        self.add = ResidualAdd() if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        out = self.dw_act(self.dw(self.expand_act(self.expand(x))))
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return out if self.add is None else self.add(out, x)


class SmallMobileNet(nn.Module):
    """Stem, depthwise-separable+SE, inverted residual+SE (residual add), strided inverted residual, head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBN(3, 8, 3)
        self.stem_act = nn.ReLU6()
        self.block1 = DepthwiseSeparable(8, 16, se_reduced=4)
        self.block2 = InvertedResidual(16, 16, expand=2, stride=1, se_reduced=8)
        self.block3 = InvertedResidual(16, 24, expand=2, stride=2, se_reduced=None)
        self.head = ConvBN(24, 32, 1)
        self.head_act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        x = self.block3(self.block2(self.block1(self.stem_act(self.stem(x)))))
        x = self.head_act(self.head(x))
        return self.fc(self.flatten(self.pool(x)))


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1 then 3x3; 5x5; 3x3 avgpool then 1x1), concatenated."""

    def __init__(self, cin: int, cbranch: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(ConvBN(cin, cbranch, 1), nn.ReLU())
        self.b2 = nn.Sequential(ConvBN(cin, cbranch, 1), nn.ReLU(), ConvBN(cbranch, cbranch, 3), nn.ReLU())
        self.b3 = nn.Sequential(ConvBN(cin, cbranch, 5), nn.ReLU())
        self.b4 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), ConvBN(cin, cbranch, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the branches along channels."""
        return torch.cat((self.b1(x), self.b2(x), self.b3(x), self.b4(x)), dim=1)


class DenseLayer(nn.Module):
    """Pre-activation dense layer: ``cat(x, conv(relu(bn(x))))``; ``bn`` follows a concatenation."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Append ``growth`` new channels."""
        return torch.cat((x, self.conv(self.relu(self.bn(x)))), dim=1)


class SmallDenseNet(nn.Module):
    """Stem, Inception-like module, avgpool transition, two dense layers, BN+ReLU, GAP, linear."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBN(3, 8, 3)
        self.stem_relu = nn.ReLU()
        self.inception = InceptionModule(8, 4)
        self.transition = nn.AvgPool2d(2)
        self.dense1 = DenseLayer(16, 8)
        self.dense2 = DenseLayer(24, 8)
        self.final_bn = nn.BatchNorm2d(32)
        self.final_relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        x = self.transition(self.inception(self.stem_relu(self.stem(x))))
        x = self.final_relu(self.final_bn(self.dense2(self.dense1(x))))
        return self.fc(self.flatten(self.pool(x)))


MODEL_CLASSES: dict[str, Callable[[], nn.Module]] = {
    "vgg": SmallVGG,
    "resnet": SmallResNet,
    "mobilenet": SmallMobileNet,
    "densenet": SmallDenseNet,
}


def init_weights(model: nn.Module, seed: int) -> None:
    """Overwrite every parameter and BatchNorm buffer with seeded NumPy draws (reproducible across torch versions).

    Conv/linear weights: He-normal (std ``sqrt(2 / fan_in)``); the classifier layer uses ``sqrt(1 / fan_in)``.
    Biases: ``N(0, 0.1)``. BatchNorm: weight ``U(0.6, 1.4)`` (``U(0.2, 0.5)`` for the last BN of a residual
    branch, which keeps cancellations ``branch ~ -shortcut`` at the residual sums mild: the Norm rule
    amplifies float32 rounding there by ``|branch| / |sum|``), bias ``N(0, 0.1)``, running mean ``N(0, 0.1)``,
    running var ``U(0.6, 1.4)`` -- non-trivial, so folding them is exercised.
    """
    rng = np.random.default_rng(seed)
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]

    def fill(t: torch.Tensor, values: np.ndarray) -> None:
        with torch.no_grad():
            t.copy_(torch.from_numpy(values.astype(np.float32)).reshape(t.shape))

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            gain = 1.0 if module is last_linear else 2.0
            fill(module.weight, rng.normal(0.0, np.sqrt(gain / fan_in), module.weight.shape))
            if module.bias is not None:
                fill(module.bias, rng.normal(0.0, 0.1, module.bias.shape))
        elif isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            low, high = (0.2, 0.5) if getattr(module, "branch_end", False) else (0.6, 1.4)
            fill(module.weight, rng.uniform(low, high, n))
            fill(module.bias, rng.normal(0.0, 0.1, n))
            fill(module.running_mean, rng.normal(0.0, 0.1, n))
            fill(module.running_var, rng.uniform(0.6, 1.4, n))


def build_model(name: str, seed: int = WEIGHT_SEED) -> nn.Module:
    """Build fixture model ``name`` (one of :data:`MODEL_NAMES`) with seeded weights, in eval mode, float32."""
    model = MODEL_CLASSES[name]()
    init_weights(model, seed + MODEL_NAMES.index(name))
    return model.eval()


def make_inputs(num: int = NUM_SAMPLES, seed: int = INPUT_SEED, shape: tuple[int, ...] = INPUT_SHAPE) -> np.ndarray:
    """Standard normal images ``(num, *shape)`` float32, clipped to ``[LOW, HIGH]`` (the ZBox bounds)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal((num, *shape)), LOW, HIGH).astype(np.float32)


def pick_targets(logits: np.ndarray) -> np.ndarray:
    """Two targets: the top-1 class of sample 0, and the other class whose smallest |logit| is largest."""
    top = int(np.argmax(logits[0]))
    strength = np.abs(logits).min(axis=0)
    strength[top] = -np.inf
    return np.array([top, int(np.argmax(strength))], dtype=np.int64)


# --------------------------------------------------------------------------------------------------------
# canonizers and attribution mode
# --------------------------------------------------------------------------------------------------------


def bn_merge_pairs(model: nn.Module) -> list[tuple[tuple[str, ...], str]]:
    """The ``(conv names, bn name)`` pairs for ``NamedMergeBatchNorm``: every :class:`ConvBN`."""
    return [((f"{name}.conv",), f"{name}.bn") for name, m in model.named_modules() if isinstance(m, ConvBN)]


def unmerged_batchnorms(model: nn.Module) -> list[str]:
    """Names of BatchNorm modules that no conv is merged into (Zennit passes relevance through them)."""
    merged = {bn for _, bn in bn_merge_pairs(model)}
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and n not in merged]


def verify_bn_pairs(model: nn.Module) -> None:
    """Check on the ``torch.fx`` graph that each merged BN reads exactly, and only, its conv's output."""
    graph = torch.fx.symbolic_trace(model).graph
    nodes = {n.target: n for n in graph.nodes if n.op == "call_module"}
    for (conv_name,), bn_name in bn_merge_pairs(model):
        bn_node, conv_node = nodes[bn_name], nodes[conv_name]
        if bn_node.args[0] is not conv_node or len(conv_node.users) != 1:
            raise AssertionError(f"{bn_name} does not directly and exclusively follow {conv_name}")
    for bn_name in unmerged_batchnorms(model):
        src = nodes[bn_name].args[0]
        if src.op == "call_module" and isinstance(model.get_submodule(src.target), nn.Conv2d):
            raise AssertionError(f"{bn_name} follows a conv but is not merged")


@contextmanager
def attribution_mode(model: nn.Module, gate: str = "gradient") -> Iterator[nn.Module]:
    """Temporarily run residual sums through ``zennit.layer.Sum`` and set the SE gate's backward ``gate``."""
    if gate not in GATE_MODES:
        raise ValueError(f"gate must be one of {GATE_MODES}")
    adds = [m for m in model.modules() if isinstance(m, ResidualAdd)]
    muls = [m for m in model.modules() if isinstance(m, GateMul)]
    try:
        for m in adds:
            m.use_sum_module = True
        for m in muls:
            m.mode = gate
        yield model
    finally:
        for m in adds:
            m.use_sum_module = False
        for m in muls:
            m.mode = "gradient"


def exact_merge_canonizer(model: nn.Module, exact: bool = True) -> Any:
    """``NamedMergeBatchNorm`` over :func:`bn_merge_pairs`; with ``exact`` the emptied BN is an exact identity.

    Zennit 0.5.1 merges a BN into its conv and resets the BN to mean 0, var 1, weight 1, bias 0 but keeps
    its ``eps`` (1e-5), so the "identity" BN still scales by ``1 / sqrt(1 + eps)`` (about ``1 - 5e-6`` per
    merged BN): the canonized model is not the model. ``exact=True`` also sets the emptied BN's ``eps`` to
    0 while the canonizer is applied (restored on removal), so the references belong to the real model,
    whose exported ONNX has the BN folded exactly.
    """
    from zennit.canonizers import NamedMergeBatchNorm

    class ExactNamedMergeBatchNorm(NamedMergeBatchNorm):
        """``NamedMergeBatchNorm`` whose emptied BN has ``eps = 0`` (an exact identity)."""

        def register(self, linears: Any, batch_norm: nn.BatchNorm2d) -> None:
            super().register(linears, batch_norm)
            self.saved_eps = batch_norm.eps
            batch_norm.eps = 0.0

        def remove(self) -> None:
            self.batch_norm.eps = self.saved_eps
            super().remove()

    cls = ExactNamedMergeBatchNorm if exact else NamedMergeBatchNorm
    return cls(bn_merge_pairs(model))


def make_composite(method: str, model: nn.Module, low: float = LOW, high: float = HIGH, exact_bn: bool = True) -> Any:
    """Zennit composite for ``method`` (``None`` for ``gradient``) with the BN-merging canonizer for ``model``."""
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat

    canonizers = [exact_merge_canonizer(model, exact=exact_bn)]
    if method == "epsilon_plus_flat":
        return EpsilonPlusFlat(canonizers=canonizers)
    if method == "epsilon_alpha2_beta1_flat":
        return EpsilonAlpha2Beta1Flat(canonizers=canonizers)
    if method == "epsilon_gamma_box":
        return EpsilonGammaBox(low=low, high=high, canonizers=canonizers)
    if method == "gradient":
        return None
    raise ValueError(f"unknown method {method!r}")


def zennit_reference(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    targets: np.ndarray | list[int],
    method: str,
    *,
    low: float = LOW,
    high: float = HIGH,
    gate: str = "gradient",
    dtype: torch.dtype = torch.float64,
    exact_bn: bool = True,
) -> np.ndarray:
    """Zennit attribution of ``model`` at ``x`` for each target, shape ``(T, N, C, H, W)``.

    Runs on a deep copy of ``model`` converted to ``dtype``; ``x`` is cast likewise. The output gradient
    is a one-hot of ones at the target (Zennit's convention, unscaled). ``gate`` selects the SE-gate
    backward (see :class:`GateMul`); ``exact_bn`` selects :func:`exact_merge_canonizer`'s fix. Raises if the
    canonized forward deviates from the plain forward (beyond rounding, when ``exact_bn``).
    """
    from zennit.attribution import Gradient

    work = copy.deepcopy(model).to(dtype).eval()
    xt = torch.as_tensor(np.asarray(x)).to(dtype)
    with torch.no_grad():
        plain = work(xt)
    maps = []
    with attribution_mode(work, gate=gate):
        for t in targets:
            onehot = torch.zeros_like(plain)
            onehot[:, int(t)] = 1.0
            attributor = Gradient(model=work, composite=make_composite(method, work, low, high, exact_bn))
            out, attr = attributor(xt.clone(), attr_output=onehot)
            tol = (1e-5 if dtype == torch.float32 else 1e-12) if exact_bn else 1e-3
            if (out.detach() - plain).abs().max() > tol * plain.abs().max():
                raise AssertionError(f"canonized forward differs from the plain forward ({method})")
            maps.append(attr.detach().cpu().numpy())
    return np.stack(maps)


# --------------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------------


def export_torchscript(model: nn.Module, path: Path) -> None:
    """Export with the TorchScript-based exporter (opset 17, input ``input``, dynamic batch)."""
    sample = torch.zeros(1, *INPUT_SHAPE)
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
    )


def export_dynamo(model: nn.Module, path: Path) -> None:
    """Export with the dynamo exporter (opset 18, weights inline, input ``input``, dynamic batch).

    Per-node metadata (stack traces, fx dumps) is stripped; the graph itself is left as exported (the
    exporter's optimizer already folds Conv+BN).
    """
    import onnx

    sample = torch.zeros(2, *INPUT_SHAPE)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (sample,),
        dynamo=True,
        opset_version=OPSET_DYNAMO,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
    )
    proto = program.model_proto
    # drop the exporter's per-node metadata (stack traces with local paths, fx node dumps): size and privacy
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save_model(proto, str(path), save_as_external_data=False)


def check_self_contained(path: Path) -> None:
    """Raise unless every initializer of the ONNX file at ``path`` is stored inline."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto)
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise AssertionError(f"{path.name}: initializer {init.name} is stored externally")


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the ONNX model at ``path`` on ``x`` with onnxruntime (CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-300))


def check_export(path: Path, model: nn.Module) -> dict[str, Any]:
    """Compare onnxruntime and torch (float32) on 3 fresh images; return size, opset, max relative error."""
    import onnx

    check_self_contained(path)
    x = make_inputs(3, seed=99)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    proto = onnx.load(str(path))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {"size": path.stat().st_size, "opset": opset, "rel_err": max_rel(onnx_logits(path, x), ref)}


# --------------------------------------------------------------------------------------------------------
# fixture generation
# --------------------------------------------------------------------------------------------------------


def reference_set(
    model: nn.Module, x: np.ndarray, targets: np.ndarray, gate: str = "gradient", methods: tuple[str, ...] = METHODS
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """float64 and float32 references of every method; returns the arrays and the err32 per method."""
    arrays: dict[str, np.ndarray] = {}
    err32: dict[str, float] = {}
    suffix = "" if gate == "gradient" else f"_gate{gate}"
    for method in methods:
        a64 = zennit_reference(model, x, targets, method, gate=gate, dtype=torch.float64)
        a32 = zennit_reference(model, x, targets, method, gate=gate, dtype=torch.float32)
        diff = np.abs(a32.astype(np.float64) - a64).reshape(a64.shape[0], a64.shape[1], -1).max(axis=2)
        scale = np.abs(a64).reshape(a64.shape[0], a64.shape[1], -1).max(axis=2)
        per = diff / scale
        key = f"{method}{suffix}"
        arrays[f"{key}_f64"] = a64
        arrays[f"{key}_f32"] = a32.astype(np.float32)
        arrays[f"{key}_err32"] = per
        err32[key] = max_rel(a32, a64)
    return arrays, err32


def generate(name: str, out: Path, dynamo: bool = True) -> dict[str, Any]:
    """Build, export, check and compute the references of model ``name``; return a summary."""
    import zennit

    model = build_model(name)
    verify_bn_pairs(model)
    x = make_inputs()
    xt = torch.from_numpy(x)
    with torch.no_grad():
        plain = model(xt)
        with attribution_mode(model):
            summed = model(xt)
    if not torch.equal(plain, summed):
        raise AssertionError(f"{name}: zennit.layer.Sum forward differs from a + b")

    summary: dict[str, Any] = {"name": name, "exports": {}}
    ts_path = out / f"{name}.onnx"
    export_torchscript(model, ts_path)
    summary["exports"]["torchscript"] = check_export(ts_path, model)
    if dynamo:
        dy_path = out / f"{name}_dynamo.onnx"
        try:
            export_dynamo(model, dy_path)
            summary["exports"]["dynamo"] = check_export(dy_path, model)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is reported and skipped
            dy_path.unlink(missing_ok=True)
            summary["exports"]["dynamo"] = {"skipped": f"{type(exc).__name__}: {exc}"[:500]}

    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        logits64 = model64(torch.from_numpy(x).double()).numpy()
    targets = pick_targets(logits64)
    arrays, err32 = reference_set(model, x, targets)
    has_gate = any(isinstance(m, GateMul) for m in model.modules())
    if has_gate:
        gate_arrays, gate_err32 = reference_set(model, x, targets, gate="signal", methods=LRP_METHODS)
        arrays.update(gate_arrays)
        err32.update(gate_err32)

    stock_bn: dict[str, float] = {}
    if bn_merge_pairs(model):
        for method in LRP_METHODS:
            stock = zennit_reference(model, x, targets, method, exact_bn=False)
            stock_bn[method] = max_rel(stock, arrays[f"{method}_f64"])

    meta = {
        "model": name,
        "zennit_version": zennit.__version__ if hasattr(zennit, "__version__") else _dist_version("zennit"),
        "torch_version": torch.__version__,
        "weight_seed": WEIGHT_SEED + MODEL_NAMES.index(name),
        "input_seed": INPUT_SEED,
        "input": "standard normal, clipped to [low, high]",
        "methods": {
            "epsilon_plus_flat": f"zennit.composites.EpsilonPlusFlat(epsilon={EPSILON}, stabilizer={EPSILON})",
            "epsilon_alpha2_beta1_flat": (
                f"zennit.composites.EpsilonAlpha2Beta1Flat(epsilon={EPSILON}, stabilizer={EPSILON})"
            ),
            "epsilon_gamma_box": (
                f"zennit.composites.EpsilonGammaBox(low={LOW}, high={HIGH}, epsilon={EPSILON}, "
                f"gamma={GAMMA}, stabilizer={EPSILON})"
            ),
            "gradient": "plain autograd gradient of the target logit (no composite)",
        },
        "canonizers": {
            "NamedMergeBatchNorm": bn_merge_pairs(model),
            "NamedMergeBatchNorm_fix": (
                "after merging, the emptied BN also gets eps = 0 so it is an exact identity (Zennit 0.5.1 keeps "
                "eps = 1e-5, scaling by 1/sqrt(1 + 1e-5) per merged BN); stock_bn_rel_diff = max relative "
                "difference of the float64 maps made with the stock canonizer"
            ),
            "stock_bn_rel_diff": stock_bn,
            "unmerged_batchnorm (zennit Pass rule)": unmerged_batchnorms(model),
            "residual_sum": "zennit.layer.Sum over torch.stack((branch, shortcut), -1) -> Norm rule (eps 1e-6)",
        },
        "convention": (
            "output gradient = one-hot of ones at the target, unscaled (zennit.attribution.Gradient); "
            "onnxlrp's LRP maps start from y_t, so compare onnxlrp with ref * logits[n, t]; "
            "the gradient compares unscaled"
        ),
        "layout": "<method>_f64 / <method>_f32: (T, N, C, H, W), targets first; <method>_err32: (T, N)",
        "se_gate": (
            "the squeeze-excitation product signal * sigmoid(...) is a plain tensor op: Zennit applies the "
            "gradient to it (signal gets R * gate, the gate branch gets sum_hw R * signal and propagates it with "
            "the composite's rules; Sigmoid is Pass). <method>_gatesignal_*: same composites, but the product "
            "sends all relevance to the signal and none to the gate (docs/methods.md)."
            if has_gate
            else "no squeeze-excitation gate in this model"
        ),
        "err32": err32,
        "err32_definition": "max|A32 - A64| / max|A64| over all targets and samples",
        "exports": summary["exports"],
    }
    np.savez_compressed(
        out / f"{name}_ref.npz",
        x=x,
        targets=targets,
        logits=logits64,
        low=np.float64(LOW),
        high=np.float64(HIGH),
        meta=np.array(json.dumps(meta)),
        **arrays,
    )
    summary["err32"] = err32
    summary["stock_bn"] = stock_bn
    summary["targets"] = targets.tolist()
    summary["logits"] = logits64
    return summary


def _dist_version(name: str) -> str:
    """Installed version of distribution ``name``."""
    from importlib.metadata import version

    return version(name)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
    parser.add_argument("--out", type=Path, default=default_out, help="output folder (default: tests/fixtures)")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--no-dynamo", action="store_true", help="skip the dynamo exporter")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    summaries = [generate(name, args.out, dynamo=not args.no_dynamo) for name in args.models]

    print("\nONNX exports (size, max relative error onnxruntime vs torch):")
    for s in summaries:
        for exporter, info in s["exports"].items():
            if "skipped" in info:
                print(f"  {s['name']:10s} {exporter:12s} SKIPPED: {info['skipped']}")
            else:
                size, opset, err = info["size"] / 1024, info["opset"], info["rel_err"]
                print(f"  {s['name']:10s} {exporter:12s} {size:7.1f} KiB  opset {opset}  rel err {err:.2e}")
    print("\nerr32 = max|A32 - A64| / max|A64|:")
    keys = sorted({k for s in summaries for k in s["err32"]}, key=lambda k: (k.split("_gate")[0], k))
    print(f"  {'method':42s}" + "".join(f"{s['name']:>12s}" for s in summaries))
    for key in keys:
        cells = "".join(f"{s['err32'][key]:12.2e}" if key in s["err32"] else f"{'-':>12s}" for s in summaries)
        print(f"  {key:42s}{cells}")
    print("\nmax relative change of the float64 maps with Zennit's stock NamedMergeBatchNorm (BN eps kept):")
    for s in summaries:
        if s["stock_bn"]:
            print(f"  {s['name']:10s} " + "  ".join(f"{k} {v:.2e}" for k, v in s["stock_bn"].items()))
    print("\ntargets / logits (float64):")
    for s in summaries:
        print(f"  {s['name']:10s} targets {s['targets']}  logits {np.round(s['logits'], 3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
