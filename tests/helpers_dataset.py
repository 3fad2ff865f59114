"""Fixtures of the dataset tests: a tiny image classifier and small generated photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

CLASSES = ["cat", "dog", "zebra", "crane bird", "tram"]


def tiny_model(path: Path, nhwc: bool = False) -> Path:
    """A 3x16x16 -> 5 class CNN (Conv, Relu, MaxPool, Conv, Relu, GlobalAveragePool, Flatten, Gemm) with a
    label file beside it; ``nhwc`` takes [N, 16, 16, 3] through a leading Transpose."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
             for n, s in [("w1", (4, 3, 3, 3)), ("b1", (4,)), ("w2", (6, 4, 3, 3)), ("b2", (6,)), ("wf", (5, 6)),
                          ("bf", (5,))]]
    first = "xt" if nhwc else "x"
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2])] if nhwc else []
    nodes += [
        helper.make_node("Conv", [first, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    shape = ["N", 16, 16, 3] if nhwc else ["N", 3, 16, 16]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in {"onnxlrp.preprocess": "none", "onnxlrp.labels": "labels.txt"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    (path.parent / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    return path


def photos(folder: Path, n: int, seed: int = 0, sub: int = 0) -> list[Path]:
    """``n`` random RGB photos of 20x24 pixels as PNG files in ``folder`` (the first ``sub`` in ``folder/sub``)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        d = folder / "sub" if i < sub else folder
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"img{seed}_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out
