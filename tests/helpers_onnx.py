"""Small ONNX models and NumPy references for the engine tests (``tests/test_engine_*.py``).

Everything here is built with ``onnx.helper`` and NumPy: no torch. Weights are float32 values
(He-scaled normals, small uniform biases), so a float64 copy of a model (:func:`to_float64`)
holds exactly the same network and can serve as a float64 reference through ONNX's reference
evaluator (onnxruntime has no float64 kernels for Conv, the pools or several activations).

* :class:`Builder`: a tiny graph builder (``conv``, ``gemm``, ``bn``, ``op`` ...).
* ``arch_*`` functions: one small classifier each (dense, 1-d/2-d/3-d conv, grouped and
  depthwise conv, residual, pools, Concat/Split/Slice/Pad with a standalone BatchNorm,
  squeeze-excitation, Swish, NHWC input, reshapes, scikit-learn style two outputs), each with
  its opset; :data:`ARCHS` lists them by name.
* :func:`save_checked`: ``onnx.save`` to a folder, ``onnx.checker`` and one onnxruntime run.
* :func:`naive_conv` / :func:`naive_conv_transpose` / :func:`conv_matrix`: loop convolutions in
  float64, the test side's own definition of ONNX ``Conv``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

FLOAT = TensorProto.FLOAT


# ---------------------------------------------------------------------------------------------
# the graph builder


class Builder:
    """Collects nodes and initializers; ``model()`` wraps them into a ModelProto."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def fresh(self, prefix: str) -> str:
        """A new unique tensor/node name."""
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, value: np.ndarray | Sequence[float] | float, prefix: str = "c") -> str:
        """An initializer (float64 values are stored as float32; integers keep their type)."""
        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values: Sequence[int], prefix: str = "i") -> str:
        """An int64 initializer (axes, shapes, pads, splits)."""
        return self.const(np.asarray(values, dtype=np.int64), prefix)

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, out: str | None = None,
           **attrs: object) -> str | list[str]:
        """Append a node; returns its output name (a list when ``n_out > 1``)."""
        outs = [out] if out is not None and n_out == 1 else [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def weight(self, shape: Sequence[int], fan_in: int) -> np.ndarray:
        """He-scaled normal weights as float32 values."""
        return (self.rng.standard_normal(tuple(shape)) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def bias(self, n: int, scale: float = 0.2) -> np.ndarray:
        """Small uniform biases of both signs."""
        return self.rng.uniform(-scale, scale, n).astype(np.float32)

    def conv(self, x: str, cin: int, cout: int, kernel: Sequence[int], group: int = 1, bias: bool = True,
             **attrs: object) -> str:
        """A Conv with random weights ``(cout, cin / group, *kernel)``."""
        kernel = list(kernel)
        fan_in = cin // group * int(np.prod(kernel))
        ins = [x, self.const(self.weight([cout, cin // group] + kernel, fan_in), "W")]
        if bias:
            ins.append(self.const(self.bias(cout), "B"))
        return self.op("Conv", ins, kernel_shape=kernel, group=group, **attrs)  # type: ignore[return-value]

    def gemm(self, x: str, fin: int, fout: int, trans_b: int = 1, alpha: float = 1.0, beta: float = 1.0,
             bias: bool = True) -> str:
        """A Gemm; the stored weight is ``(fout, fin)`` with ``transB=1``, else ``(fin, fout)``."""
        w = self.weight([fout, fin], fin)
        ins = [x, self.const(w if trans_b else w.T.copy(), "W")]
        if bias:
            ins.append(self.const(self.bias(fout), "B"))
        return self.op("Gemm", ins, transB=trans_b, alpha=alpha, beta=beta)  # type: ignore[return-value]

    def matmul_add(self, x: str, fin: int, fout: int) -> str:
        """``MatMul`` by a constant ``(fin, fout)`` weight, then ``Add`` of a constant bias."""
        y = self.op("MatMul", [x, self.const(self.weight([fin, fout], fin), "W")])
        return self.op("Add", [y, self.const(self.bias(fout), "B")])  # type: ignore[return-value,list-item]

    def bn(self, x: str, c: int, epsilon: float = 1e-3) -> str:
        """Inference BatchNormalization with random (well-conditioned) statistics."""
        r = self.rng
        params = [
            r.uniform(0.5, 1.5, c), r.uniform(-0.3, 0.3, c), r.uniform(-0.3, 0.3, c), r.uniform(0.5, 1.5, c)
        ]
        names = [self.const(p, "bn") for p in params]
        return self.op("BatchNormalization", [x] + names, epsilon=epsilon)  # type: ignore[return-value]

    def relu(self, x: str) -> str:
        """Relu."""
        return self.op("Relu", [x])  # type: ignore[return-value]

    def model(self, input_shape: Sequence[int | str | None], outputs: Sequence[tuple[str, int]], opset: int,
              input_name: str = "x") -> onnx.ModelProto:
        """The model: one float input (``None`` dims become the symbolic batch ``N``) and the given outputs."""
        dims = ["N" if d is None else d for d in input_shape]
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(input_name, FLOAT, dims)],
            [helper.make_tensor_value_info(name, etype, None) for name, etype in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = min(model.ir_version, 9)
        return infer_output_shapes(model)


def infer_output_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give the graph outputs the shapes ONNX shape inference finds (the checker wants a shape)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        vi = known.get(out.name)
        if vi is not None and vi.type.tensor_type.HasField("shape"):
            out.type.tensor_type.shape.CopyFrom(vi.type.tensor_type.shape)
    return model


# ---------------------------------------------------------------------------------------------
# architectures


@dataclass
class Arch:
    """A small classifier: the model, one sample's input shape and the name of its pre-softmax scores."""

    name: str
    model: onnx.ModelProto
    shape: tuple[int, ...]
    logits: str
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def opset(self) -> int:
        """The default-domain opset."""
        return next(int(o.version) for o in self.model.opset_import if o.domain in ("", "ai.onnx"))


def _finish(b: Builder, name: str, shape: Sequence[int], logits: str, opset: int, softmax: str | None = None,
            batch: int | None = None, **notes: object) -> Arch:
    out = logits
    if softmax is not None:
        out = b.op(softmax, [logits], axis=1)  # type: ignore[assignment]
    model = b.model([batch] + list(shape), [(out, FLOAT)], opset)
    return Arch(name, model, tuple(shape), logits, dict(notes))


def arch_mlp(seed: int = 0, softmax: str | None = None, batch: int | None = None, opset: int = 13) -> Arch:
    """Tabular ``[N, 6]``: Gemm(transB=1, alpha, beta) → Relu → MatMul+Add → Tanh → Gemm(transB=0) → 5 scores."""
    b = Builder(seed)
    h = b.relu(b.gemm("x", 6, 8, trans_b=1, alpha=0.7, beta=1.3))
    h = b.op("Tanh", [b.matmul_add(h, 8, 7)])
    y = b.gemm(h, 7, 5, trans_b=0)  # type: ignore[arg-type]
    return _finish(b, "mlp", (6,), y, opset, softmax, batch)


def arch_mlp_relu(seed: int = 0, bias: bool = True, softmax: str | None = None, opset: int = 17) -> Arch:
    """Tabular ``[N, 6]``: Gemm → Relu → Gemm → Relu → Gemm (a plain ReLU net, biases optional)."""
    b = Builder(seed)
    h = b.relu(b.gemm("x", 6, 9, bias=bias))
    h = b.relu(b.gemm(h, 9, 8, bias=bias))
    y = b.gemm(h, 8, 4, bias=bias)
    return _finish(b, "mlp_relu", (6,), y, opset, softmax)


def arch_conv1d(seed: int = 1) -> Arch:
    """1-d ``[N, 2, 12]``: Conv(pad 1) → LeakyRelu → MaxPool → Conv(stride 2, dilation 2) → Elu → GAP → Gemm."""
    b = Builder(seed)
    h = b.op("LeakyRelu", [b.conv("x", 2, 4, [3], pads=[1, 1])], alpha=0.1)
    h = b.op("MaxPool", [h], kernel_shape=[2], strides=[2])  # -> 6
    h = b.op("Elu", [b.conv(h, 4, 5, [2], strides=[2], dilations=[2], pads=[1, 0])], alpha=0.8)  # type: ignore[arg-type]
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    y = b.gemm(h, 5, 3)  # type: ignore[arg-type]
    return _finish(b, "conv1d", (2, 12), y, 14)


def arch_conv2d_pads(seed: int = 2) -> Arch:
    """2-d ``[N, 2, 9, 9]``: strides, asymmetric pads, dilations, auto_pad SAME_UPPER and SAME_LOWER.

    (onnxruntime refuses dilations together with auto_pad SAME_*, so those come separately.)
    """
    b = Builder(seed)
    h = b.relu(b.conv("x", 2, 3, [3, 3], strides=[2, 2], pads=[0, 1, 1, 2]))  # -> 3x4x5
    h = b.relu(b.conv(h, 3, 4, [3, 2], dilations=[2, 1], pads=[2, 0, 2, 1]))  # 4x4x5
    h = b.relu(b.conv(h, 4, 4, [2, 2], strides=[1, 2], auto_pad="SAME_UPPER"))  # 4x4x3, pads end
    h = b.relu(b.conv(h, 4, 3, [2, 2], strides=[2, 1], auto_pad="SAME_LOWER"))  # 3x2x3, pads begin
    h = b.op("Flatten", [h])
    y = b.gemm(h, 18, 4)  # type: ignore[arg-type]
    return _finish(b, "conv2d_pads", (2, 9, 9), y, 15)


def arch_grouped(seed: int = 3) -> Arch:
    """Grouped conv (groups=2), depthwise with channel multiplier 2, plain depthwise, ReLU6, GlobalMaxPool."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 4, 6, [3, 3], group=2, pads=[1, 1, 1, 1]))
    h = b.conv(h, 6, 12, [3, 3], group=6, strides=[2, 2])  # depthwise, multiplier 2 -> 12x3x3
    h = b.op("Clip", [h, b.const(np.float32(0.0)), b.const(np.float32(6.0))])
    h = b.relu(b.conv(h, 12, 12, [2, 2], group=12, pads=[0, 0, 1, 1]))  # plain depthwise
    h = b.op("Flatten", [b.op("GlobalMaxPool", [h])])
    y = b.gemm(h, 12, 4)  # type: ignore[arg-type]
    return _finish(b, "grouped", (4, 7, 7), y, 16)


def arch_conv3d(seed: int = 4) -> Arch:
    """3-d ``[N, 2, 4, 5, 5]``: Conv3d → Relu → Conv3d(stride 2) → Relu → ReduceMean (axes as input, opset 18)."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 2, 3, [3, 3, 3], pads=[1, 1, 1, 1, 1, 1]))
    h = b.relu(b.conv(h, 3, 4, [2, 3, 3], strides=[2, 2, 2], pads=[0, 1, 1, 0, 0, 0]))
    h = b.op("ReduceMean", [h, b.ints([2, 3, 4])], keepdims=0)
    y = b.gemm(h, 4, 3)  # type: ignore[arg-type]
    return _finish(b, "conv3d", (2, 4, 5, 5), y, 18)


def arch_residual(seed: int = 5, softmax: str | None = None) -> Arch:
    """Conv → BN → Relu → Conv → BN → Add(skip) → Relu → AveragePool(count_include_pad=1) → Gemm (BN folded)."""
    b = Builder(seed)
    h0 = b.relu(b.bn(b.conv("x", 3, 4, [3, 3], pads=[1, 1, 1, 1]), 4))
    h = b.bn(b.conv(h0, 4, 4, [3, 3], pads=[1, 1, 1, 1]), 4)
    h = b.relu(b.op("Add", [h, h0]))  # type: ignore[arg-type]
    h = b.op("AveragePool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)
    h = b.op("Flatten", [h])  # 4x3x3
    y = b.gemm(h, 36, 5)  # type: ignore[arg-type]
    return _finish(b, "residual", (3, 6, 6), y, 13, softmax)


def arch_pools(seed: int = 6) -> Arch:
    """MaxPool with pads and ceil_mode, AveragePool(count_include_pad=0, pads), ReduceMean with axes attribute."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 2, 3, [3, 3], pads=[1, 1, 1, 1]))  # 3x7x7
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1)  # 4x4
    h = b.relu(b.conv(h, 3, 4, [1, 1]))  # type: ignore[arg-type]
    h = b.op("AveragePool", [h], kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1], count_include_pad=0)
    h = b.op("ReduceMean", [h], axes=[2, 3], keepdims=1)
    y = b.gemm(b.op("Flatten", [h]), 4, 3)  # type: ignore[arg-type]
    return _finish(b, "pools", (2, 7, 7), y, 13)


def arch_concat_bn(seed: int = 7) -> Arch:
    """Two conv branches → Concat → BatchNorm (standalone) → Relu → Split → Slice / Pad → Concat → Gemm."""
    b = Builder(seed)
    a = b.relu(b.conv("x", 2, 2, [3, 3], pads=[1, 1, 1, 1]))
    c = b.op("Sigmoid", [b.conv("x", 2, 3, [1, 1])])
    h = b.relu(b.bn(b.op("Concat", [a, c], axis=1), 5))  # type: ignore[arg-type]
    p1, p2 = b.op("Split", [h, b.ints([2, 3])], n_out=2, axis=1)
    s = b.op("Slice", [p1, b.ints([1, 0]), b.ints([5, 6]), b.ints([2, 3]), b.ints([1, 2])])  # 2x4x3
    p = b.op("Pad", [p2, b.ints([0, 0, 1, 0, 0, 0, 0, 2]), b.const(np.float32(0.5))])  # 3x7x8
    p = b.op("GlobalAveragePool", [b.op("HardSigmoid", [p], alpha=0.3, beta=0.4)])
    f = b.op("Concat", [b.op("Flatten", [s]), b.op("Flatten", [p])], axis=1)  # 24 + 3
    y = b.gemm(f, 27, 4)  # type: ignore[arg-type]
    return _finish(b, "concat_bn", (2, 6, 6), y, 17)


def arch_se_gate(seed: int = 8) -> Arch:
    """Conv → Relu → squeeze-excitation (GAP → conv → relu → conv → sigmoid → Mul) → Conv → HardSwish → GAP."""
    b = Builder(seed)
    h = b.relu(b.conv("x", 3, 4, [3, 3], pads=[1, 1, 1, 1]))
    g = b.op("GlobalAveragePool", [h])
    g = b.relu(b.conv(g, 4, 2, [1, 1]))  # type: ignore[arg-type]
    g = b.op("Sigmoid", [b.conv(g, 2, 4, [1, 1])])
    h = b.op("Mul", [h, g])  # type: ignore[list-item]
    h = b.op("HardSwish", [b.conv(h, 4, 5, [3, 3], strides=[2, 2])])  # type: ignore[arg-type]
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    y = b.gemm(h, 5, 3)  # type: ignore[arg-type]
    return _finish(b, "se_gate", (3, 6, 6), y, 14)


def arch_swish(seed: int = 9) -> Arch:
    """Tabular with Swish ``x·sigmoid(x)``, HardSigmoid, LeakyRelu and Elu, opset 19."""
    b = Builder(seed)
    h = b.gemm("x", 5, 8)
    h = b.op("Mul", [h, b.op("Sigmoid", [h])])  # type: ignore[list-item]
    h = b.op("LeakyRelu", [b.gemm(h, 8, 6)], alpha=0.2)  # type: ignore[arg-type]
    h = b.op("Elu", [b.op("HardSigmoid", [h])])
    y = b.gemm(h, 6, 3)  # type: ignore[arg-type]
    return _finish(b, "swish", (5,), y, 19)


def arch_image(seed: int = 10, nhwc: bool = False, softmax: str | None = None, batch: int | None = None,
               opset: int = 20) -> Arch:
    """A small image CNN; with ``nhwc`` the input is ``[N, H, W, C]`` and a Transpose comes first.

    Conv → Relu → MaxPool → Conv → Relu → GAP → Squeeze → Unsqueeze → Flatten → Gemm. The NCHW
    twin (same seed) has exactly the same weights.
    """
    b = Builder(seed)
    x = b.op("Transpose", ["x"], perm=[0, 3, 1, 2]) if nhwc else "x"
    h = b.relu(b.conv(x, 3, 4, [3, 3], pads=[1, 1, 1, 1]))  # type: ignore[arg-type]
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])  # 4x3x3 (of 6x6)
    h = b.relu(b.conv(h, 4, 5, [3, 3], pads=[1, 1, 1, 1]))  # type: ignore[arg-type]
    h = b.op("Squeeze", [b.op("GlobalAveragePool", [h]), b.ints([2, 3])])  # N x 5
    h = b.op("Flatten", [b.op("Unsqueeze", [h, b.ints([2])])])  # type: ignore[list-item]
    y = b.gemm(h, 5, 4)  # type: ignore[arg-type]
    shape = (6, 6, 3) if nhwc else (3, 6, 6)
    return _finish(b, "nhwc" if nhwc else "nchw", shape, y, opset, softmax, batch)


def arch_reshape(seed: int = 11) -> Arch:
    """Conv → Tanh → Reshape [0, -1] → Gemm → Clip(0, 6) → Unsqueeze → HardSwish → Squeeze → Gemm, opset 21."""
    b = Builder(seed)
    h = b.op("Tanh", [b.conv("x", 2, 3, [2, 2])])  # 3x4x4
    h = b.op("Reshape", [h, b.ints([0, -1])])
    h = b.gemm(h, 48, 6)  # type: ignore[arg-type]
    h = b.op("Clip", [h, b.const(np.float32(0.0)), b.const(np.float32(6.0))])
    h = b.op("Squeeze", [b.op("HardSwish", [b.op("Unsqueeze", [h, b.ints([1])])]), b.ints([1])])
    y = b.gemm(h, 6, 3)  # type: ignore[arg-type]
    return _finish(b, "reshape", (2, 5, 5), y, 21)


def arch_sklearn(seed: int = 12, with_label: bool = True) -> Arch:
    """scikit-learn style: Gemm → Relu → Gemm → Softmax → ``probabilities``; ArgMax → Cast → int64 ``label``.

    The ``label`` output comes first. ``with_label=False`` gives the logits-only twin (same weights).
    """
    b = Builder(seed)
    h = b.relu(b.gemm("x", 4, 7))
    y = b.gemm(h, 7, 3)
    if not with_label:
        model = b.model([None, 4], [(y, FLOAT)], 15)
        return Arch("sklearn_logits", model, (4,), y)
    probs = b.op("Softmax", [y], out="probabilities", axis=1)
    b.op("Cast", [b.op("ArgMax", [probs], axis=1, keepdims=0)], out="label", to=TensorProto.INT64)
    model = b.model([None, 4], [("label", TensorProto.INT64), (probs, FLOAT)], 15)  # type: ignore[list-item]
    return Arch("sklearn", model, (4,), y)


ARCHS: dict[str, Callable[[], Arch]] = {
    "mlp": arch_mlp,
    "conv1d": arch_conv1d,
    "conv2d_pads": arch_conv2d_pads,
    "grouped": arch_grouped,
    "conv3d": arch_conv3d,
    "residual": arch_residual,
    "pools": arch_pools,
    "concat_bn": arch_concat_bn,
    "se_gate": arch_se_gate,
    "swish": arch_swish,
    "nhwc": lambda: arch_image(nhwc=True),
    "nchw": arch_image,
    "reshape": arch_reshape,
    "sklearn": arch_sklearn,
}


# ---------------------------------------------------------------------------------------------
# saving, running, float64 twins


def save_checked(model: onnx.ModelProto, folder: Path, name: str, sample_shape: Sequence[int] | None = None,
                 batch: int = 2) -> Path:
    """``onnx.save`` the model to ``folder/name.onnx``, run ``onnx.checker`` and one onnxruntime forward."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))
    sess = ort_session(path)
    if sample_shape is not None:
        fixed = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
        batch = fixed or batch
        x = np.random.default_rng(0).standard_normal((batch,) + tuple(sample_shape)).astype(np.float32)
        outs = sess.run(None, {sess.get_inputs()[0].name: x})
        for o in outs:
            assert o.shape[0] == batch
            if o.dtype == np.float32:
                assert np.all(np.isfinite(o))
    return path


def ort_session(model: onnx.ModelProto | Path | str) -> ort.InferenceSession:
    """A one-thread CPU onnxruntime session."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are ``names`` (float tensors of unknown shape)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    for n in names:
        m.graph.output.append(helper.make_tensor_value_info(n, FLOAT, None))
    return m


def to_float64(model: onnx.ModelProto, decompose_batchnorm: bool = True) -> onnx.ModelProto:
    """The same network in float64: float initializers, inputs, outputs and Cast targets become double.

    ``decompose_batchnorm`` spells BatchNormalization out for ONNX's reference evaluator (see below);
    onnxruntime needs no such help.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, t in enumerate(list(g.initializer)):
        if t.data_type == FLOAT:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    if decompose_batchnorm:
        _decompose_batchnorm(m)
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = TensorProto.DOUBLE
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
    return m


def _decompose_batchnorm(model: onnx.ModelProto) -> None:
    """Replace inference BatchNormalization by ``(x − μ) · (γ/√(σ²+ε)) + β`` (float64 constants).

    ONNX's reference evaluator runs BatchNormalization-9 (used for opsets 9–13) with batch
    statistics because the schema gives ``momentum`` a default value; spelling the inference
    formula out keeps the float64 reference faithful to onnxruntime.
    """
    g = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in list(inferred.value_info) + list(inferred.input)}
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type != "BatchNormalization":
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale, bias, mean, var = (inits[n] for n in node.input[1:5])
        shape = (-1,) + (1,) * (ranks[node.input[0]] - 2)
        y = node.output[0]
        consts = {f"{y}__mu": mean, f"{y}__k": scale / np.sqrt(var + eps), f"{y}__b": bias}
        for name, v in consts.items():
            g.initializer.append(numpy_helper.from_array(v.reshape(shape), name))
        nodes.append(helper.make_node("Sub", [node.input[0], f"{y}__mu"], [f"{y}__c"]))
        nodes.append(helper.make_node("Mul", [f"{y}__c", f"{y}__k"], [f"{y}__s"]))
        nodes.append(helper.make_node("Add", [f"{y}__s", f"{y}__b"], [y]))
    del g.node[:]
    g.node.extend(nodes)


class Reference64:
    """The float64 twin of a model through ONNX's reference evaluator: ``f(x)`` for a batch of inputs."""

    def __init__(self, model: onnx.ModelProto, output: str) -> None:
        self.evaluator = ReferenceEvaluator(to_float64(with_outputs(model, [output])))
        self.output = output

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.evaluator.run(None, {self.evaluator.input_names[0]: np.asarray(x, dtype=np.float64)})[0]
        return np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)

    def jacobian(self, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
        """Central finite differences: ``(N, classes) + x.shape[1:]`` (all coordinates in one batched call)."""
        x = np.asarray(x, dtype=np.float64)
        n, d = x.shape[0], int(np.prod(x.shape[1:]))
        eye = np.eye(d).reshape((d,) + x.shape[1:]) * h
        pts = np.concatenate([x[i][None] + s * eye for i in range(n) for s in (1.0, -1.0)])
        y = self(pts).reshape(n, 2, d, -1)
        jac = (y[:, 0] - y[:, 1]) / (2 * h)  # (N, d, classes)
        return jac.transpose(0, 2, 1).reshape((n, jac.shape[2]) + x.shape[1:])


# ---------------------------------------------------------------------------------------------
# loop convolutions (the test side's definition of ONNX Conv)


def _conv_params(nd: int, strides: Sequence[int] | None, dilations: Sequence[int] | None,
                 pads: Sequence[int] | None) -> tuple[list[int], list[int], list[int]]:
    return (list(strides or [1] * nd), list(dilations or [1] * nd), list(pads or [0] * (2 * nd)))


def naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, strides: Sequence[int] | None = None,
               dilations: Sequence[int] | None = None, pads: Sequence[int] | None = None,
               group: int = 1) -> np.ndarray:
    """ONNX ``Conv`` by loops over output channels, positions, input channels and kernel offsets (float64)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    nd = len(kernel)
    strides, dilations, pads = _conv_params(nd, strides, dilations, pads)
    assert c == cg * group
    padded = np.zeros((n, c) + tuple(x.shape[2 + i] + pads[i] + pads[i + nd] for i in range(nd)))
    padded[(slice(None), slice(None)) + tuple(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(nd))] = x
    out = [(padded.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    y = np.zeros((n, m) + tuple(out))
    per_group = m // group
    for mo in range(m):
        g = mo // per_group
        for pos in itertools.product(*(range(o) for o in out)):
            acc = np.zeros(n) + (0.0 if b is None else float(b[mo]))
            for ci in range(cg):
                for off in itertools.product(*(range(k) for k in kernel)):
                    idx = tuple(pos[i] * strides[i] + off[i] * dilations[i] for i in range(nd))
                    acc = acc + w[(mo, ci) + off] * padded[(slice(None), g * cg + ci) + idx]
            y[(slice(None), mo) + pos] = acc
    return y


def naive_conv_transpose(v: np.ndarray, w: np.ndarray, in_spatial: Sequence[int],
                         strides: Sequence[int] | None = None, dilations: Sequence[int] | None = None,
                         pads: Sequence[int] | None = None, group: int = 1) -> np.ndarray:
    """The adjoint of :func:`naive_conv` by scattering every output back over its window (loops)."""
    v = np.asarray(v, np.float64)
    w = np.asarray(w, np.float64)
    n, m = v.shape[:2]
    out = v.shape[2:]
    cg = w.shape[1]
    kernel = w.shape[2:]
    nd = len(kernel)
    strides, dilations, pads = _conv_params(nd, strides, dilations, pads)
    c = cg * group
    padded = np.zeros((n, c) + tuple(in_spatial[i] + pads[i] + pads[i + nd] for i in range(nd)))
    per_group = m // group
    for mo in range(m):
        g = mo // per_group
        for pos in itertools.product(*(range(o) for o in out)):
            val = v[(slice(None), mo) + pos]
            for ci in range(cg):
                for off in itertools.product(*(range(k) for k in kernel)):
                    idx = tuple(pos[i] * strides[i] + off[i] * dilations[i] for i in range(nd))
                    padded[(slice(None), g * cg + ci) + idx] += w[(mo, ci) + off] * val
    crop = (slice(None), slice(None)) + tuple(slice(pads[i], pads[i] + in_spatial[i]) for i in range(nd))
    return padded[crop]


def conv_matrix(w: np.ndarray, in_shape: Sequence[int], **conv_kw: object) -> np.ndarray:
    """The dense matrix ``(out_size, in_size)`` of a bias-free convolution of one sample ``(C, *S)``.

    Column ``j`` is the convolution of the ``j``-th unit vector (pushed through :func:`naive_conv`).
    """
    d = int(np.prod(in_shape))
    units = np.eye(d).reshape((d,) + tuple(in_shape))
    cols = naive_conv(units, w, None, **conv_kw)  # type: ignore[arg-type]
    return cols.reshape(d, -1).T.copy()


def dense_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """All initializers as NumPy arrays (float64 for float tensors)."""
    res = {}
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        res[t.name] = a.astype(np.float64) if a.dtype == np.float32 else a
    return res


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """``max|got − ref| / max|ref|`` (the tests' tolerance measure)."""
    ref = np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref)))
    diff = float(np.max(np.abs(np.asarray(got, np.float64) - ref)))
    return diff / scale if scale > 0 else diff
