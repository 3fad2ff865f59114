"""ONNX file → a list of layers in topological order (a DAG), ready for the backward pass.

The road: load and check the file (:func:`onnxlrp.loading.load_model`), pick the explained input and
output and strip a trailing Softmax (:func:`prepare`), fix the input shape and let
onnxruntime's *basic* optimisations canonicalise the graph — constant folding of shape
arithmetic and exporter padding sub-graphs, Conv+BatchNorm fusion, MatMul+Add → Gemm,
Identity/Dropout removal (:func:`canonicalize`) — then build one :class:`~onnxlrp.ops.Layer`
per node, fold what is left to fold (BatchNorm or a per-channel scale/bias after a
Gemm/MatMul/Conv) and annotate what the composites need (:func:`build_graph`). The NaN guard
that PyTorch's SDPA writes after the attention softmax is read as an identity (:func:`nan_guard`).

Nothing here runs a tensor op of the model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import InputError, UnsupportedModelError
from .loading import (  # noqa: F401  (load_model, tensor_array: public here too)
    _FLOAT_TYPES,
    _check_finite,
    _gc_paused,
    _node_label,
    _type_name,
    load_model,
    opset_of,
    tensor_array,
)
from .ops import Layer, NodeContext, Unsupported, lookup
from .ops.elementwise import ActivationLayer, AffineLayer, BatchNormLayer
from .ops.fused import FusedActivationLayer, FusedGroup, find_fused_activations
from .ops.linear import ConvLayer, DenseLayer, LinearLayer
from .ops.normalization import NormGroup, find_fused_norms
from .ops.reindex import PadLayer, batch_axis_problems

_SOFTMAX = {"Softmax", "LogSoftmax"}
IN_MEMORY = "onnxlrp-weights-in-memory"  # external-data location of detached weights
T = TypeVar("T")
_FLOAT = onnx.TensorProto.FLOAT



# ---------------------------------------------------------------------------------------------
# choosing input and output, stripping the softmax


@dataclass
class PreparedModel:
    """The model reduced to one float input → one class-score output (pre-softmax)."""

    model: onnx.ModelProto
    input_name: str
    input_dims: list[int | None]  # None for dynamic dimensions
    output_name: str
    original_output: str
    softmax_stripped: str | None  # op type of the removed trailing Softmax/LogSoftmax
    metadata: dict[str, str] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # detached initializer data (stubs in model)
    # constants that stand for run-time inputs (a text model's masks and ids, see onnxlrp.compiler.tokens):
    # the layer graph records which folded arrays derive from them (Graph.side) for the compiler
    side: frozenset[str] = frozenset()


@_gc_paused
def prepare(model: onnx.ModelProto, output: str | None = None) -> PreparedModel:
    """Pick the explained input and output, strip a trailing Softmax/LogSoftmax (and a NaN guard after
    it, see :func:`nan_guard`), prune the rest."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise UnsupportedModelError(
            f"the model has {len(inputs)} inputs ({names}); onnxlrp explains single-input classifiers"
        )
    inp = inputs[0]
    ttype = inp.type.tensor_type
    if not inp.type.HasField("tensor_type") or ttype.elem_type != _FLOAT:
        raise UnsupportedModelError(
            f"input {inp.name!r} is not a float32 tensor (type {_type_name(ttype.elem_type)}); "
            "onnxlrp explains float32 models"
        )
    dims: list[int | None] = []
    if ttype.HasField("shape"):
        for d in ttype.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                raise UnsupportedModelError(
                    f"input {inp.name!r} declares dimension {d.dim_value} in its shape; dimensions cannot be negative"
                )
            dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None)

    float_outputs = [
        o.name for o in g.output if o.type.HasField("tensor_type") and o.type.tensor_type.elem_type == _FLOAT
    ]
    if output is not None:
        if output not in [o.name for o in g.output]:
            raise InputError(
                f"output {output!r} is not an output of the model (outputs: {', '.join(o.name for o in g.output)})"
            )
        if output not in float_outputs:
            raise UnsupportedModelError(f"output {output!r} is not a float32 tensor; choose a class-score output")
        chosen = output
    elif not float_outputs:
        raise UnsupportedModelError(
            "the model has no float32 tensor output to explain (outputs: "
            + ", ".join(o.name for o in g.output)
            + ")"
        )
    else:
        chosen = float_outputs[0]

    io = [(_reads(n), list(n.output)) for n in g.node]
    order, producer = _topological_order(g, io)
    explained, stripped = chosen, None
    name = chosen
    for _ in range(8):  # walk back over identities to a softmax
        k = producer.get(name)
        if k is None:
            break
        node = g.node[k]
        guarded = _proto_guard(g, node, producer)
        if guarded is not None:  # Softmax → NaN guard at the output: the guard goes with the softmax
            name = guarded
            continue
        if node.op_type in ("Identity",) and node.input:
            name = node.input[0]
            continue
        if node.op_type in _SOFTMAX and node.input:
            explained, stripped = node.input[0], node.op_type
        break
    keep, used = _needed(explained, io, producer)

    # the pruned copy, its large weights moved out into arrays as they are copied (copying the model whole first
    # would leave a second copy of every weight in the protobuf arena of the copy: VGG16 held 1.7 GB, not 0.6)
    new = onnx.ModelProto()
    for fd, val in model.ListFields():
        if fd.name != "graph":
            _set_field(new, fd, val)
    ng = new.graph
    for fd, val in g.ListFields():
        if fd.name not in ("node", "initializer", "value_info", "output"):
            _set_field(ng, fd, val)
    ng.node.extend(g.node[k] for k in (order if order is not None else range(len(io))) if k in keep)
    ng.value_info.extend(v for v in g.value_info if v.name in used)
    ng.output.append(helper.make_tensor_value_info(explained, _FLOAT, None))
    weights: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if t.name not in used:
            continue
        if _detachable(t):
            arr = tensor_array(t, f"initializer {t.name!r}")  # load_model checked every tensor's values
            weights[t.name] = arr
            ng.initializer.append(_stub(t, arr))
        else:
            ng.initializer.add().CopyFrom(t)
    meta = {p.key: p.value for p in model.metadata_props}
    return PreparedModel(new, inp.name, dims, explained, chosen, stripped, meta, weights)


def _set_field(msg: Any, fd: Any, val: Any) -> None:
    """Copy one field (a value, a message or a repeated field) into ``msg``."""
    repeated = getattr(fd, "is_repeated", None)  # protobuf ≥ 5.28; older ones have label
    if repeated is None:
        repeated = fd.label == fd.LABEL_REPEATED
    if repeated:
        getattr(msg, fd.name).extend(val)
    elif fd.message_type is not None:
        getattr(msg, fd.name).CopyFrom(val)
    else:
        setattr(msg, fd.name, val)


_RANK_ONE_UP = {"Softmax", "LogSoftmax", "Gemm", "Conv", "Concat", "Flatten", "LayerNormalization"}  # rank ≥ 1


def nan_guard(node: onnx.NodeProto, producer: Callable[[str], onnx.NodeProto | None],
              fill_rank: Callable[[str], int | None], rank_at_least: Callable[[str, int], bool]) -> str | None:
    """The softmax output ``s`` that ``node`` guards, if it is a NaN guard; else None.

    A guard is ``Where(IsNaN(s), c, s)`` or ``Where(Not(IsNaN(s)), s, c)`` with ``s`` the output of
    a ``Softmax`` and ``c`` a float constant of one element whose rank does not exceed ``s``'s.
    PyTorch's SDPA decomposition writes one after the softmax of attention: a fully masked row
    (every logit ``-inf``) gives NaN there, replaced by ``c = 0``; otherwise the guard is the
    identity. ``producer(name)`` gives the node writing a tensor, ``fill_rank(name)`` the rank of
    a one-element float constant (None if the tensor is none), ``rank_at_least(name, r)`` whether
    a tensor has rank ≥ r.

    The layer graph reads a guard as ``Identity(s)`` (:func:`build_graph`); the forward pass keeps
    it, so predictions are the model's. Where the guard fires, the forward's ``s`` holds NaN, which
    every rule and the gradient carry on (the attention weights multiply what flows through them),
    so the explanation is refused, never made as if the guard had not fired. Only a softmax's
    output qualifies: a guard elsewhere (``IsInf`` on masked logits, ``IsNaN`` before a rule that
    zeroes non-finite inputs) may fire on inputs the model is meant for, and reading it as the
    identity would explain another function than the one that ran.
    """
    if node.op_type != "Where" or node.domain not in ("", "ai.onnx") or len(node.input) != 3:
        return None
    cond, a, b = node.input
    test = producer(cond)
    negated = False
    if test is not None and test.op_type == "Not" and test.domain in ("", "ai.onnx") and test.input:
        negated, test = True, producer(test.input[0])
    if test is None or test.op_type != "IsNaN" or test.domain not in ("", "ai.onnx") or not test.input:
        return None
    x = test.input[0]
    fill, kept = (b, a) if negated else (a, b)
    src = producer(x) if x else None
    if kept != x or src is None or src.op_type != "Softmax" or src.domain not in ("", "ai.onnx"):
        return None
    r = fill_rank(fill)
    return x if r is not None and rank_at_least(x, r) else None


def _proto_guard(g: onnx.GraphProto, node: onnx.NodeProto, producer: dict[str, int]) -> str | None:
    """:func:`nan_guard` on the model as exported (no shapes: a rank-1 fill needs an op of rank ≥ 1 before it)."""
    if node.op_type != "Where":
        return None
    inits = {t.name: t for t in g.initializer}

    def prod(name: str) -> onnx.NodeProto | None:
        return g.node[producer[name]] if name in producer else None

    def fill_rank(name: str) -> int | None:
        t = inits.get(name)
        if t is None:
            node = prod(name)
            if node is None or node.op_type != "Constant" or len(node.attribute) != 1:
                return None
            a = node.attribute[0]
            if a.name == "value_float":
                return 0
            t = a.t if a.name == "value" and a.HasField("t") else None
        if t is None or t.data_type not in _FLOAT_TYPES or int(np.prod(t.dims, dtype=np.int64)) != 1:
            return None
        return len(t.dims)

    def rank_at_least(name: str, r: int) -> bool:
        p = prod(name)
        return r == 0 or (r == 1 and p is not None and p.op_type in _RANK_ONE_UP)

    return nan_guard(node, prod, fill_rank, rank_at_least)


def _captured(node: onnx.NodeProto) -> list[str]:
    """Tensors the sub-graphs of ``node`` read from the enclosing scope (and their own names)."""
    names: list[str] = []
    for a in node.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for sub in g.node:
                names.extend(i for i in sub.input if i)
                names.extend(_captured(sub))
    return names


def _reads(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads: its inputs, and for control flow (or custom ops) what its sub-graphs capture."""
    ins = list(node.input)
    if node.op_type in _CONTROL_FLOW or node.domain not in ("", "ai.onnx"):
        ins += _captured(node)
    return ins


def _topological_order(g: onnx.GraphProto, io: list[tuple[list[str], list[str]]]
                       ) -> tuple[list[int] | None, dict[str, int]]:
    """Check that the graph's nodes can run: no tensor written twice, no undefined input, no cycle.

    ``io[k]`` holds what node ``k`` reads (:func:`_reads`) and writes. Returns ``(order,
    producer)``: ``order`` is None when the nodes are already in topological order (the usual
    case), else an order that is; ``producer`` maps each tensor to the index of its node. Raises
    :class:`UnsupportedModelError` naming the node and tensor. Linear time.
    """
    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    defined |= {s.values.name for s in g.sparse_initializer}
    producer: dict[str, int] = {}
    for k, (_, outs) in enumerate(io):
        for o in outs:
            if not o:
                continue
            if o in producer or o in defined:
                first = g.node[producer[o]] if o in producer else None
                other = f"by {_node_label(first)}" if first is not None else "as a graph input or initializer"
                raise UnsupportedModelError(
                    f"tensor {o!r} is written by {_node_label(g.node[k])} and already {other}: "
                    "every tensor must have one producer"
                )
            producer[o] = k
    deps: list[list[int]] = []
    in_order = True
    for k, (ins, _) in enumerate(io):
        mine: list[int] = []
        for i in ins:
            if i in defined:
                continue
            p = producer.get(i)
            if p is None:
                if i in g.node[k].input:
                    raise UnsupportedModelError(
                        f"{_node_label(g.node[k])} reads tensor {i!r}, which no node, input or initializer defines"
                    )
                continue  # a sub-graph's own tensor
            mine.append(p)
            in_order &= p < k
        deps.append(mine)
    if in_order:
        return None, producer
    deps = [sorted(set(d)) for d in deps]
    users: list[list[int]] = [[] for _ in g.node]
    waiting = [len(d) for d in deps]
    for k, d in enumerate(deps):
        for p in d:
            users[p].append(k)
    ready = [k for k, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    while ready:
        k = ready.pop()
        order.append(k)
        for u in users[k]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) < len(g.node):
        k = next(k for k, w in enumerate(waiting) if w > 0)
        raise UnsupportedModelError(f"{_node_label(g.node[k])} is part of a cycle in the graph; refused")
    return order, producer


def detach_weights(model: onnx.ModelProto, min_elements: int = 1024,
                   check_finite: bool = True) -> dict[str, np.ndarray]:
    """Move the data of large initializers out of ``model`` into NumPy arrays, leaving stubs.

    A stub keeps the initializer's name, type and shape. The arrays are the engine's weights
    and are handed to onnxruntime from memory (:func:`onnxlrp.runtime.make_session`), so no
    serialised model carries them again.
    Malformed data, and with ``check_finite`` NaN/Inf values, raise :class:`ModelLoadError`
    naming the initializer (``prepare`` skips the finiteness pass: :func:`load_model` made it).
    """
    weights: dict[str, np.ndarray] = {}
    inits = model.graph.initializer
    for i, t in enumerate(inits):
        if not _detachable(t, min_elements):
            continue
        arr = tensor_array(t, f"initializer {t.name!r}")
        if check_finite and t.data_type in _FLOAT_TYPES:
            _check_finite(arr, f"initializer {t.name!r}")
        weights[t.name] = arr
        inits[i].CopyFrom(_stub(t, arr))
    return weights


def _detachable(t: onnx.TensorProto, min_elements: int = 1024) -> bool:
    """A large initializer whose data is still in the proto."""
    size = int(np.prod(t.dims, dtype=np.float64)) if len(t.dims) else 1
    return size >= min_elements and not _detached(t)


def _stub(t: onnx.TensorProto, arr: np.ndarray) -> onnx.TensorProto:
    """``t`` without its data: name, type and shape, the data marked as held in memory (see detach_weights)."""
    stub = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims))
    stub.data_location = onnx.TensorProto.EXTERNAL  # onnxruntime gets the data from memory
    for key, value in (("location", IN_MEMORY), ("offset", "0"), ("length", str(arr.nbytes))):
        entry = stub.external_data.add()
        entry.key, entry.value = key, value
    return stub


def _needed(output: str, io: list[tuple[list[str], list[str]]], producer: dict[str, int]) -> tuple[set[int], set[str]]:
    """The nodes (indices) the output depends on, and every tensor name they read or write."""
    keep: set[int] = set()
    stack = [output]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        k = producer.get(t)
        if k is None or k in keep:
            continue
        keep.add(k)
        stack.extend(n for n in io[k][0] if n)
    return keep, seen


# ---------------------------------------------------------------------------------------------
# canonicalisation through onnxruntime


def canonicalize(prepared: PreparedModel, shape: tuple[int, ...]) -> onnx.ModelProto:
    """Fix the input shape and run onnxruntime's basic graph optimisations; return the result.

    Basic level only: it folds constants, fuses Conv+BatchNorm and MatMul+Add and removes
    identities, and it writes standard ONNX ops (higher levels introduce ``com.microsoft`` ops).
    """
    from .runtime import make_session

    m = onnx.ModelProto()
    m.CopyFrom(prepared.model)
    g = m.graph
    for i in g.input:
        if i.name == prepared.input_name:
            shp = i.type.tensor_type.shape
            shp.ClearField("dim")
            for d in shape:
                shp.dim.add().dim_value = int(d)
    del g.value_info[:]
    for o in g.output:
        o.type.tensor_type.ClearField("shape")
    unknown = [n for n in g.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)]
    if unknown:
        raise UnsupportedModelError(
            "the model cannot be explained: "
            + "; ".join(f"{_node_label(n)}: op type {n.op_type} is not an ONNX op" for n in unknown[:5])
        )
    with tempfile.TemporaryDirectory(prefix="onnxlrp-") as tmp:
        out = os.path.join(tmp, "canonical.onnx")
        try:
            make_session(m, weights=prepared.weights, basic=True, optimized_path=out)
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            msg = msg.removeprefix("onnxruntime cannot load the model: ")
            raise UnsupportedModelError(
                f"onnxruntime cannot load this model with input shape {list(shape)}: {msg}"
            ) from None
        try:
            canon = onnx.load(out)
        except Exception as exc:  # noqa: BLE001 - onnxruntime wrote something onnx cannot read back
            raise UnsupportedModelError(
                f"the model canonicalised by onnxruntime for input shape {list(shape)} cannot be read back "
                f"({exc.__class__.__name__})"
            ) from None
    return canon


# ---------------------------------------------------------------------------------------------
# the layer graph


@dataclass
class Graph:
    """The explained graph: layers in topological order and the tensors the backward needs."""

    layers: list[Layer]
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    shapes: dict[str, tuple[int, ...]]
    tensors: list[str]  # every tensor a layer reads or writes (the forward must expose them)
    opset: int
    canonical: onnx.ModelProto
    # folded constants computed from run-time inputs held fixed (PreparedModel.side), by id(), as (tensor name,
    # array, fn, raw): ``array`` is ``fn(xp, tensor)`` (fn None: the tensor itself, whose folded value is ``raw``);
    # builders add what they derive from them (NodeContext.derive). The compiler reads those tensors at run time.
    side: dict[int, tuple[str, np.ndarray, Any, np.ndarray]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of class scores per sample."""
        return int(np.prod(self.output_shape[1:]))

    def producer(self) -> dict[str, Layer]:
        """Tensor name → the layer that writes it."""
        return {o: layer for layer in self.layers for o in layer.outputs}

    def consumers(self) -> dict[str, list[Layer]]:
        """Tensor name → the layers that read it."""
        res: dict[str, list[Layer]] = {}
        for layer in self.layers:
            for i in layer.inputs:
                res.setdefault(i, []).append(layer)
        return res

    @property
    def linear_layers(self) -> list[LinearLayer]:
        """The Conv/Gemm/MatMul layers in topological order."""
        return [layer for layer in self.layers if isinstance(layer, LinearLayer)]


def _detached(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == IN_MEMORY for e in t.external_data
    )


def _constants(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    consts: dict[str, np.ndarray] = {
        t.name: weights[t.name] if t.name in weights and _detached(t) else numpy_helper.to_array(t)
        for t in model.graph.initializer
    }
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            a = node.attribute[0]
            v = helper.get_attribute_value(a)
            if a.name == "value":
                consts[node.output[0]] = numpy_helper.to_array(v)
            elif a.name in ("value_float", "value_int"):
                consts[node.output[0]] = np.array(v, dtype=np.float32 if a.name == "value_float" else np.int64)
            elif a.name in ("value_floats", "value_ints"):
                consts[node.output[0]] = np.array(v, dtype=np.float32 if a.name == "value_floats" else np.int64)
    return consts


_MAX_FOLDED = 2**24  # elements: a constant the model asks to build larger than this is left to onnxruntime


def _folded_size(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> float:
    """An upper estimate of the elements ``node`` would create from constants (the ops that can blow up)."""
    def ints(k: int) -> np.ndarray:
        return np.asarray(consts[node.input[k]], dtype=np.float64).reshape(-1)

    op = node.op_type
    if op == "ConstantOfShape":
        return float(np.prod(ints(0)))
    if op == "Expand":  # the broadcast of the input's shape and the requested one
        try:
            out = np.broadcast_shapes(consts[node.input[0]].shape, tuple(int(d) for d in ints(1)))
        except (ValueError, OverflowError):
            return float("inf")
        return float(np.prod(np.asarray(out, dtype=np.float64)))
    if op == "Tile":
        return float(consts[node.input[0]].size) * float(np.prod(ints(1)))
    if op == "Range":
        start, limit, delta = (float(ints(k)[0]) for k in range(3))
        return abs((limit - start) / delta) if delta else float("inf")
    if op in ("Resize", "Upsample", "Pad", "Concat", "Einsum", "MatMul", "Gemm"):
        return float(sum(c.size for c in (consts.get(i) for i in node.input if i) if c is not None)) * 64
    return 0.0


def _fold_constant_node(node: onnx.NodeProto, consts: dict[str, np.ndarray], opset: int) -> bool:
    """Evaluate a node whose inputs are all constants with ONNX's reference evaluator.

    Nodes that would build a huge constant (a ``ConstantOfShape`` of a billion elements in a
    hostile file) are not evaluated.
    """
    from onnx.reference import ReferenceEvaluator

    try:
        if _folded_size(node, consts) > _MAX_FOLDED:
            return False
        ins = [n for n in node.input if n]
        g = helper.make_graph(
            [node],
            "fold",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(consts[n].dtype), consts[n].shape)
             for n in ins],
            [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        outs = ReferenceEvaluator(m).run(None, {n: consts[n] for n in ins})
    except Exception:  # noqa: BLE001 - leave it to the registry to report
        return False
    for name, v in zip([o for o in node.output if o], outs, strict=False):
        consts[name] = np.asarray(v)
    return True


_SMALL = 4096  # constants with at most this many elements stay values during shape inference


def _skeleton(model: onnx.ModelProto, nodes: list[_Node], consts: dict[str, np.ndarray],
              input_name: str, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """The dynamic part of the graph with small constants as values and big ones as typed inputs.

    Shape inference needs the weights' shapes but not their values, so this keeps it cheap
    on models with hundreds of megabytes of weights.
    """
    used = {n for nd in nodes for n in nd.inputs if n in consts}
    inputs = [helper.make_tensor_value_info(input_name, _FLOAT, list(input_shape))]
    inits = []
    for name in sorted(used):
        c = consts[name]
        if c.size <= _SMALL:
            inits.append(numpy_helper.from_array(np.asarray(c), name))
        else:
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(c.dtype), list(c.shape)))
    g = helper.make_graph([nd.proto for nd in nodes], "skeleton", inputs, [], initializer=inits)
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = max(int(model.ir_version), 4)  # IR 3 wanted every initializer among the inputs
    return m


def _infer_shapes(skel: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, data_prop=True)
    except Exception:  # noqa: BLE001 - partial information is fine, the fallback runs the model
        return {}
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if all(d >= 0 for d in dims):
            shapes[vi.name] = tuple(int(d) for d in dims)
    return shapes


@dataclass
class _Node:
    """A node with its op, domain and tensor names read once from the protobuf (field access is slow)."""

    proto: onnx.NodeProto
    op_type: str
    standard: bool  # default ONNX domain
    inputs: list[str]  # positional: "" for an absent optional input; sub-graph captures appended
    outputs: list[str]  # non-empty names only

    @classmethod
    def of(cls, node: onnx.NodeProto) -> _Node:
        op, domain = node.op_type, node.domain
        inputs = list(node.input)
        if op in _CONTROL_FLOW:
            inputs += [c for c in _captured(node) if c not in inputs]
        return cls(node, op, domain in ("", "ai.onnx"), inputs, [o for o in node.output if o])


def _fold(model: onnx.ModelProto, consts: dict[str, np.ndarray], input_name: str,
          input_shape: tuple[int, ...], opset: int) -> tuple[list[_Node], dict[str, tuple[int, ...]]]:
    """Constant-fold the graph for a fixed input shape: ``Shape``/``Size`` of tensors whose shape
    is known become constants, and so does every node whose inputs are all constant (exporters'
    shape arithmetic, run-time padding sub-graphs). Returns the remaining nodes and the shapes.

    Each pass is linear; a pass runs ONNX shape inference once; passes repeat only while a
    ``Shape``/``Size`` became foldable (at most 16).
    """
    nodes = [_Node.of(n) for n in model.graph.node if n.op_type != "Constant"]
    shapes: dict[str, tuple[int, ...]] = {}
    for _ in range(16):
        changed = False
        for nd in nodes:
            outs = nd.outputs
            if not nd.standard or all(o in consts for o in outs):
                continue
            if nd.op_type in ("Shape", "Size") and nd.inputs and nd.inputs[0] in shapes:
                shp = np.array(shapes[nd.inputs[0]], dtype=np.int64)
                if nd.op_type == "Size":
                    consts[outs[0]] = np.array(int(np.prod(shp)), dtype=np.int64)
                else:
                    start = next((a.i for a in nd.proto.attribute if a.name == "start"), 0)
                    end = next((a.i for a in nd.proto.attribute if a.name == "end"), None)
                    consts[outs[0]] = shp[start:end]
                changed = True
            elif nd.inputs and all((not n) or n in consts for n in nd.inputs):
                changed |= _fold_constant_node(nd.proto, consts, opset)
        nodes = [nd for nd in nodes if not all(o in consts for o in nd.outputs)]
        shapes = {input_name: tuple(input_shape)}
        shapes.update(_infer_shapes(_skeleton(model, nodes, consts, input_name, input_shape)))
        pending = any(
            nd.op_type in ("Shape", "Size") and nd.inputs and nd.inputs[0] in shapes for nd in nodes
        )
        if not changed and not pending:
            break
    return nodes, shapes


def _shapes_by_running(model: onnx.ModelProto, input_name: str, input_shape: tuple[int, ...],
                       names: list[str], weights: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Fallback: run the model once on zeros and read the shapes of the given tensors."""
    from .runtime import make_session, run_session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    types = _elem_types(m, [n for n in names if n not in have])
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_tensor_value_info(n, types[n], None))
    sess = make_session(m, weights=weights, basic=True)  # basic: onnxruntime keeps the model's node names
    outs = run_session(sess, names, input_name, np.zeros(input_shape, np.float32))
    return {n: tuple(int(d) for d in np.shape(v)) for n, v in zip(names, outs, strict=True)}


_INT64_OPS = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero", "NonMaxSuppression"}
_BOOL_OPS = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"}
_CONTROL_FLOW = {"Loop", "If", "Scan"}


def _elem_types(model: onnx.ModelProto, names: list[str]) -> dict[str, int]:
    """The element type of each named tensor: from ONNX type inference where it knows, else from the
    producing node (``Cast``'s ``to``, int64 for ``Shape``/``ArgMax``..., the first input's type for
    type-preserving ops), float32 by default. onnxruntime refuses outputs declared UNDEFINED."""
    known: dict[str, int] = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            known[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        known[t.name] = t.data_type
    for node in g.node:  # topological order: inputs are typed before the node
        outs = [o for o in node.output if o]
        if not outs or all(o in known for o in outs):
            continue
        if node.op_type == "Cast":
            ets = [next((int(a.i) for a in node.attribute if a.name == "to"), _FLOAT)]
        elif node.op_type in _INT64_OPS:
            ets = [onnx.TensorProto.INT64]
        elif node.op_type in _BOOL_OPS:
            ets = [onnx.TensorProto.BOOL]
        elif node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            ets = [node.attribute[0].t.data_type]
        elif node.op_type == "Loop":  # outputs: the loop-carried values, then scan outputs
            ets = [known.get(i, _FLOAT) for i in node.input[2:]]
        elif node.op_type in ("If", "Scan"):
            body = next((a.g for a in node.attribute if a.HasField("g")), None)
            ets = [o.type.tensor_type.elem_type or _FLOAT for o in body.output] if body is not None else []
        else:  # type-preserving ops: the first non-boolean input's type
            ets = [next((known[i] for i in node.input if known.get(i, onnx.TensorProto.BOOL) != onnx.TensorProto.BOOL),
                        _FLOAT)]
        for k, o in enumerate(node.output):
            if o:
                known.setdefault(o, ets[k] if k < len(ets) else ets[0] if len(ets) == 1 else _FLOAT)
    return {n: known.get(n, _FLOAT) or _FLOAT for n in names}


@_gc_paused
def build_graph(canon: onnx.ModelProto, input_name: str, output_name: str,
                input_shape: tuple[int, ...], weights: dict[str, np.ndarray] | None = None,
                side: Collection[str] = ()) -> Graph:
    """Turn the canonical model into layers; refuse (listing every culprit) what cannot be explained.

    ``side``: constants of ``canon`` that stand for run-time inputs held fixed; the folded constants
    computed from them are listed in :attr:`Graph.side`.
    """
    opset = opset_of(canon)
    weights = weights or {}
    consts = _constants(canon, weights)
    dyn_nodes, shapes = _fold(canon, consts, input_name, input_shape, opset)
    side_of = _side_consts(canon, consts, side) if side else {}
    guards = _guards(dyn_nodes, consts, shapes)
    on_path = _on_path(dyn_nodes, [[guards[id(nd)]] if id(nd) in guards else [i for i in nd.inputs if i]
                                   for nd in dyn_nodes], [nd.outputs for nd in dyn_nodes], input_name, output_name)
    flow = [nd.proto for nd in on_path if nd.op_type in _CONTROL_FLOW and nd.standard]
    if flow:
        ops = "/".join(sorted({n.op_type for n in flow}))
        raise UnsupportedModelError(
            "the model cannot be explained: "
            + "; ".join(f"node {n.name or n.output[0]!r} (op {n.op_type}) is control flow" for n in flow[:5])
            + f" on the path from the input to the output, and onnxlrp does not explain {ops}."
            " Re-export the model with loops unrolled and branches fixed."
        )
    needed = sorted({t for nd in dyn_nodes for t in nd.inputs + nd.outputs if t and t not in consts})
    missing = [t for t in needed if t not in shapes]
    if missing:
        from .memory import available_memory, fmt_bytes

        need = 64 * 4 * int(np.prod(input_shape))  # the fallback runs the model once: its tensors, roughly
        avail = available_memory()
        if avail is not None and need > avail:
            raise InputError(f"shape inference left {len(missing)} tensor shapes unknown (e.g. {missing[0]!r}); "
                             f"finding them means running the model once on an input of shape {list(input_shape)}, "
                             f"about {fmt_bytes(need)}, more than the {fmt_bytes(avail)} available; "
                             "use a smaller input")
        try:
            shapes.update(_shapes_by_running(canon, input_name, input_shape, missing, weights))
        except Exception as exc:  # noqa: BLE001
            raise UnsupportedModelError(f"cannot determine the shapes of {missing[:5]}: {exc}") from None
    producers = {o: nd.proto for nd in dyn_nodes for o in nd.outputs}
    as_identity = {}  # NaN guards read as Identity(x) (see nan_guard): builders see through them
    for nd in dyn_nodes:
        if id(nd) in guards:
            ident = helper.make_node("Identity", [guards[id(nd)]], nd.outputs[:1], name=nd.proto.name)
            as_identity[id(nd)] = _Node.of(ident)
            producers[nd.outputs[0]] = ident

    layers: list[Layer] = []
    problems: list[str] = []
    # element-wise activations written as several nodes (x*Sigmoid(x), GELU's Erf form, ...) become one layer
    # and so do normalisations written out (ReduceMean/Sub/Pow/Sqrt/Div: LayerNorm, RMSNorm), which win overlaps
    norms = find_fused_norms([nd.proto for nd in on_path], consts, shapes, {output_name})
    in_norm = {id(n) for g in norms for n in g.nodes}
    fused: list[FusedGroup | NormGroup] = [
        g for g in find_fused_activations([nd.proto for nd in on_path], consts, {output_name})
        if not any(id(n) in in_norm for n in g.nodes)
    ]
    fused += norms
    fused_last = {id(g.nodes[-1]): g for g in fused}
    fused_members = {id(n) for g in fused for n in g.nodes}
    for nd in on_path:
        node = nd.proto
        label = f"node {node.name or nd.outputs[0]!r} (op {nd.op_type})"
        if id(node) in fused_members:
            group = fused_last.get(id(node))
            if group is not None:
                try:
                    layers.append(FusedActivationLayer(group, consts, shapes, opset) if isinstance(group, FusedGroup)
                                  else group.layer(consts, shapes, opset))
                except Unsupported as exc:
                    problems.append(f"{label}: {exc}")
            continue
        if not nd.standard:
            problems.append(f"{label}: custom-domain op {node.domain}.{nd.op_type} cannot be explained")
            continue
        if id(nd) in as_identity:
            nd = as_identity[id(nd)]
            node = nd.proto
        builder = lookup(nd.op_type)
        if builder is None:
            problems.append(f"{label}: op type {nd.op_type} is not supported (see onnxlrp.supported_ops())")
            continue
        try:
            layers.append(builder(NodeContext(node, consts, shapes, opset, producers, side_of)))
        except Unsupported as exc:
            problems.append(f"{label}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a malformed node (missing inputs, attributes of the wrong type)
            problems.append(f"{label}: malformed node ({exc.__class__.__name__}: {str(exc)[:200]})")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UnsupportedModelError(
            "the model cannot be explained: " + "; ".join(problems[:5]) + more
            + ". Re-export the model without these ops, or replace them by supported ones."
        )
    layers = _reachable(layers, input_name, output_name)
    if not layers:
        raise UnsupportedModelError("the output does not depend on the input through any supported layer")
    if output_name not in {o for layer in layers for o in layer.outputs}:
        raise UnsupportedModelError(f"output {output_name!r} is not computed from the input")
    mixing = batch_axis_problems(layers, input_name, output_name, int(input_shape[0]))
    if mixing:
        raise UnsupportedModelError(
            "the model cannot be explained: " + "; ".join(mixing[:5])
            + ". onnxlrp explains each sample on its own; export the model so that samples stay separate."
        )

    _drop_identities(layers, output_name)
    _fold_pads_into_conv(layers)
    _fold_into_linear(layers)
    _annotate(layers, input_name, output_name)
    out_shape = shapes[output_name]
    if len(out_shape) < 2 or any(d != 1 for d in out_shape[2:]) or out_shape[0] != input_shape[0]:
        raise UnsupportedModelError(
            f"output {output_name!r} has shape {list(out_shape)}: not a classifier's score vector [N, classes]"
        )
    tensors = sorted({t for layer in layers for t in list(layer.inputs) + list(layer.outputs)})
    return Graph(layers, input_name, output_name, tuple(input_shape), out_shape, shapes, tensors, opset, canon,
                 side_of)


def _side_consts(model: onnx.ModelProto, consts: dict[str, np.ndarray],
                 side: Collection[str]) -> dict[int, tuple[str, np.ndarray, Any, np.ndarray]]:
    """The folded constants computed (through any chain of nodes) from the ``side`` constants, by ``id``."""
    marked = set(side)
    for node in model.graph.node:  # topological order; a shape does not depend on the values
        if node.op_type not in ("Shape", "Size") and any(i in marked for i in node.input if i):
            marked.update(o for o in node.output if o)
    return {id(consts[n]): (n, consts[n], None, consts[n]) for n in marked
            if n in consts and isinstance(consts[n], np.ndarray)}


def _guards(nodes: list[_Node], consts: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> dict[int, str]:
    """``id`` of each NaN-guard node among ``nodes`` (after constant folding) → the tensor it guards."""
    if not any(nd.op_type == "IsNaN" for nd in nodes):
        return {}
    producers = {o: nd.proto for nd in nodes for o in nd.outputs}

    def fill_rank(name: str) -> int | None:
        c = consts.get(name)
        return c.ndim if c is not None and c.dtype.kind == "f" and c.size == 1 else None

    def rank_at_least(name: str, r: int) -> bool:  # shape inference's rank, else the producer's op
        if r == 0 or (name in shapes and len(shapes[name]) >= r):
            return True
        p = producers.get(name)
        return name not in shapes and r == 1 and p is not None and p.op_type in _RANK_ONE_UP

    found = {}
    for nd in nodes:
        if nd.op_type == "Where" and nd.standard:
            x = nan_guard(nd.proto, producers.get, fill_rank, rank_at_least)
            if x is not None:
                found[id(nd)] = x
    return found


def _on_path(items: list[T], inputs: list[list[str]], outputs: list[list[str]], source: str, sink: str) -> list[T]:
    """The items (nodes or layers, in topological order) on a path from tensor ``source`` to ``sink``;
    ``inputs[k]`` / ``outputs[k]`` are the tensors item ``k`` reads and writes. Linear time."""
    fwd = {source}
    reach = []
    for k, ins in enumerate(inputs):
        if any(i in fwd for i in ins):
            fwd.update(outputs[k])
            reach.append(k)
    producer = {o: k for k in reach for o in outputs[k]}
    need: set[int] = set()
    stack, seen = [sink], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        k = producer.get(t)
        if k is not None and k not in need:
            need.add(k)
            stack.extend(inputs[k])
    return [items[k] for k in reach if k in need]


def _reachable(layers: list[Layer], input_name: str, output_name: str) -> list[Layer]:
    """Keep the layers on a path from the input to the output."""
    kept = _on_path(layers, [la.inputs for la in layers], [la.outputs for la in layers], input_name, output_name)
    produced = {o for layer in kept for o in layer.outputs}
    for layer in kept:  # inputs that are neither produced nor the model input cannot be explained
        for i in layer.inputs:
            if i != input_name and i not in produced:
                raise UnsupportedModelError(
                    f"node {layer.name!r} (op {layer.op_type}) reads tensor {i!r}, which is not computed "
                    "from the model input by a supported op"
                )
    return kept


def _channel_vector(c: np.ndarray, out_rank: int, axis: int, m: int) -> np.ndarray | None:
    """``c`` as a length-m vector if it only varies along ``axis`` of the output, else None."""
    c = np.asarray(c)
    if c.ndim > out_rank:
        return None
    full = c.reshape((1,) * (out_rank - c.ndim) + c.shape)
    for i, d in enumerate(full.shape):
        if i != axis and d != 1:
            return None
    if full.shape[axis] not in (1, m):
        return None
    return np.broadcast_to(full.reshape(-1), (m,)).astype(np.float64)


def _consumers(layers: list[Layer]) -> dict[str, list[Layer]]:
    res: dict[str, list[Layer]] = {}
    for layer in layers:
        for i in layer.inputs:
            res.setdefault(i, []).append(layer)
    return res


def _without(layers: list[Layer], removed: set[int]) -> None:
    """Remove the layers whose ``id`` is in ``removed``, in place, in one pass."""
    if removed:
        layers[:] = [layer for layer in layers if id(layer) not in removed]


def _fold_into_linear(layers: list[Layer]) -> None:
    """Fold BatchNorm and per-channel scale/shift layers into the linear layer before them.

    One pass in topological order; a linear layer absorbs a run of such layers (Conv → BN → Mul
    → Add) by looking at the single consumer of its current output again after each fold.
    """
    consumers = _consumers(layers)
    removed: set[int] = set()
    for lin in layers:
        if not isinstance(lin, LinearLayer) or id(lin) in removed:
            continue
        while True:
            users = consumers.get(lin.outputs[0], [])
            if len(users) != 1:
                break
            nxt = users[0]
            out_rank = len(lin.output_shapes[0])
            axis = 1 if isinstance(lin, ConvLayer) else out_rank - 1
            m = lin.out_channels
            scale = shift = None
            if isinstance(nxt, BatchNormLayer) and axis == 1:
                scale, shift = nxt.scale.astype(np.float64), nxt.shift.astype(np.float64)
            elif isinstance(nxt, AffineLayer):
                scale = _channel_vector(nxt.scale, out_rank, axis, m)
                shift = _channel_vector(nxt.shift, out_rank, axis, m)
            if scale is None or shift is None:
                break
            lin.fold_scale_shift(scale, shift, nxt.op_type)
            lin.outputs = list(nxt.outputs)
            lin.output_shapes = list(nxt.output_shapes)
            removed.add(id(nxt))
    _without(layers, removed)


def _drop_identities(layers: list[Layer], output_name: str) -> None:
    """Remove Identity/Dropout layers (and float-to-float Casts), rewiring their consumers.

    One pass in topological order: each removed layer's output becomes an alias of its
    (already resolved) input, and every layer's inputs are read through the aliases.
    """
    alias: dict[str, str] = {}
    removed: set[int] = set()
    for layer in layers:
        if alias:
            layer.inputs = [alias.get(i, i) for i in layer.inputs]
        if layer.op_type in ("Identity", "Dropout", "Cast") and layer.outputs[0] != output_name:
            alias[layer.outputs[0]] = layer.inputs[0]
            removed.add(id(layer))
    _without(layers, removed)


def _fold_pads_into_conv(layers: list[Layer]) -> None:
    """Fold a zero ``Pad`` of the spatial axes into the convolution that alone reads it (as onnxruntime does)."""
    consumers = _consumers(layers)
    removed: set[int] = set()
    for pad in layers:
        if not isinstance(pad, PadLayer):
            continue
        users = consumers.get(pad.outputs[0], [])
        if len(users) != 1 or not isinstance(users[0], ConvLayer) or pad.value != 0.0:
            continue
        conv = users[0]
        if any(pad.begin[:2]) or any(pad.end[:2]) or min(pad.begin + pad.end) < 0:
            continue
        nd = len(conv.weight.shape) - 2
        conv.pads = [conv.pads[i] + pad.begin[2 + i] for i in range(nd)] + [
            conv.pads[nd + i] + pad.end[2 + i] for i in range(nd)
        ]
        conv.inputs = list(pad.inputs)
        conv.input_shapes = list(pad.input_shapes)
        conv.folded.insert(0, "Pad")
        removed.add(id(pad))
    _without(layers, removed)


def _annotate(layers: list[Layer], input_name: str, output_name: str) -> None:
    """Mark the first linear layers (seen from the input), the classifier layers (whose output is the
    model output up to re-indexing) and the linear layers followed by a ReLU."""
    consumers = _consumers(layers)
    # tensors that are the input up to re-indexing / elementwise affine maps
    near_input = {input_name}
    for layer in layers:
        if layer.kind in ("reindex", "affine") and len(layer.inputs) == 1 and layer.inputs[0] in near_input:
            near_input.update(layer.outputs)
    for layer in layers:
        if not isinstance(layer, LinearLayer):
            continue
        layer.first = layer.inputs[0] in near_input
        users = consumers.get(layer.outputs[0], [])
        layer.followed_by_relu = (
            len(users) == 1 and isinstance(users[0], ActivationLayer) and users[0].relu_like
        )
    producer = {o: layer for layer in layers for o in layer.outputs}
    t = output_name
    while t in producer:
        layer = producer[t]
        if isinstance(layer, LinearLayer):
            layer.classifier = True
            break
        if layer.kind != "reindex" or len(layer.inputs) != 1:
            break
        t = layer.inputs[0]


__all__ = [
    "ConvLayer",
    "DenseLayer",
    "Graph",
    "PreparedModel",
    "build_graph",
    "canonicalize",
    "load_model",
    "opset_of",
    "prepare",
]

