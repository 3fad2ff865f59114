"""Build ``tests/fixtures/vgg_keras.onnx``: the ``vgg`` fixture's weights as an NHWC Keras model, via tf2onnx.

Run it with the separate TensorFlow environment (never with the project's .venv)::

    python3 -m venv /work/tfenv
    /work/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0
    /work/tfenv/bin/python tools/make_keras_fixture.py --fixtures tests/fixtures

Inputs (written by ``tools/make_fixtures.py``):

* ``vgg.onnx`` -- the weights are read from it with the ``onnx`` package, in graph order: the three
  ``Conv`` nodes (weight ``OIHW``, bias) and the two ``Gemm`` nodes (``transB = 1``, weight ``(out, in)``).
* ``vgg_ref.npz`` -- its ``x`` (NCHW) and float64 ``logits`` are used to check the result.

The Keras model is the same network in NHWC: ``Conv2D(padding="same")`` kernels are the PyTorch weights
transposed to ``HWIO``; Keras' ``Flatten`` on NHWC flattens in ``(H, W, C)`` order while PyTorch flattens
``(C, H, W)``, so the rows of the first dense kernel are permuted accordingly. No softmax is added (the
PyTorch model has none). The ONNX file is checked against the PyTorch logits on the fixture images
(transposed to NHWC) with ``onnx.reference.ReferenceEvaluator`` (and with onnxruntime when installed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

OPSET = 17
INPUT_HW = (16, 16)


Params = list[tuple[np.ndarray, np.ndarray]]


def read_vgg_weights(onnx_path: Path) -> tuple[Params, Params]:
    """Conv ``(weight OIHW, bias)`` and dense ``(weight (out, in), bias)`` pairs of ``vgg.onnx``, in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs, denses = [], []
    for node in model.graph.node:
        if node.op_type == "Conv":
            convs.append((inits[node.input[1]], inits[node.input[2]]))
        elif node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            weight = inits[node.input[1]]
            if attrs.get("transB", 0) != 1:
                weight = weight.T
            denses.append((weight, inits[node.input[2]]))
    if len(convs) != 3 or len(denses) != 2:
        raise ValueError(f"unexpected vgg.onnx structure: {len(convs)} Conv, {len(denses)} Gemm")
    return convs, denses


def build_keras_vgg(convs: Params, denses: Params) -> object:
    """The NHWC Keras twin of ``make_fixtures.SmallVGG`` carrying the given PyTorch weights."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(*INPUT_HW, convs[0][0].shape[1]), name="input")
    x = inputs
    conv_layers = []
    for i, (w, _) in enumerate(convs):
        conv = layers.Conv2D(w.shape[0], w.shape[2], padding="same", name=f"conv{i + 1}")
        conv_layers.append(conv)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(layers.ReLU(name=f"relu{i + 1}")(conv(x)))
    flat_shape = tuple(int(d) for d in x.shape[1:])  # (H, W, C)
    x = layers.Flatten(name="flatten")(x)
    fc1 = layers.Dense(denses[0][0].shape[0], name="fc1")
    fc2 = layers.Dense(denses[1][0].shape[0], name="fc2")
    outputs = fc2(layers.ReLU(name="relu_fc1")(fc1(x)))
    model = keras.Model(inputs, outputs, name="vgg_keras")

    for conv, (w, b) in zip(conv_layers, convs, strict=True):
        conv.set_weights([w.transpose(2, 3, 1, 0), b])  # OIHW -> HWIO
    h, w_, c = flat_shape
    w1, b1 = denses[0]
    # PyTorch input index c*H*W + h*W + w  ->  Keras input index (h*W + w)*C + c
    kernel1 = w1.reshape(w1.shape[0], c, h, w_).transpose(2, 3, 1, 0).reshape(h * w_ * c, w1.shape[0])
    fc1.set_weights([kernel1, b1])
    w2, b2 = denses[1]
    fc2.set_weights([w2.T, b2])
    return model


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """Run an ONNX model with onnxruntime when available, else with ``onnx.reference``."""
    try:
        import onnxruntime as ort
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator

        model = onnx.load(str(path))
        return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
    parser.add_argument("--fixtures", type=Path, default=default, help="fixture folder (default: tests/fixtures)")
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tf2onnx

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    convs, denses = read_vgg_weights(args.fixtures / "vgg.onnx")
    model = build_keras_vgg(convs, denses)
    ref = np.load(args.fixtures / "vgg_ref.npz")
    x_nhwc = np.ascontiguousarray(ref["x"].transpose(0, 2, 3, 1))
    logits = ref["logits"]

    keras_out = np.asarray(model(x_nhwc, training=False), dtype=np.float64)
    keras_err = float(np.abs(keras_out - logits).max() / np.abs(logits).max())
    print(f"Keras vs PyTorch logits: max relative error {keras_err:.2e}")

    out_path = args.fixtures / "vgg_keras.onnx"
    spec = [tf.TensorSpec((None, *x_nhwc.shape[1:]), tf.float32, name="input")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, output_path=str(out_path))

    import onnx

    proto = onnx.load(str(out_path))
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    print(f"{out_path.name}: {out_path.stat().st_size / 1024:.1f} KiB, opset {OPSET}, nodes {ops}")
    for inp in proto.graph.input:
        print(f"  input {inp.name}: {[d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]}")
    onnx_out = run_onnx(out_path, x_nhwc).astype(np.float64)
    onnx_err = float(np.abs(onnx_out - logits).max() / np.abs(logits).max())
    print(f"vgg_keras.onnx vs PyTorch logits: max relative error {onnx_err:.2e}")
    if max(keras_err, onnx_err) > 1e-5:
        print("ERROR: the Keras model does not reproduce the PyTorch logits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
