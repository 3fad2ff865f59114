"""Models with several inputs, and text models whose input is token ids.

The engine explains one float tensor. For a model with several inputs the explained tensor is

* its float input, when it has exactly one (the other inputs, e.g. masks, are held fixed); or
* for integer token ids, the output of the embedding lookup: a ``Gather`` whose data is a float
  weight table and whose indices come from the ids input. Relevance arrives at the embedded
  tokens ``(N, L, D)`` and is reported per token, summed over the embedding axis.

Every other input (attention masks, token types, …) is passed by name and held fixed: for one
call, :func:`specialise` turns the model into a single-input model whose fixed inputs are
constants and whose explained tensor is its input, so everything downstream — constant
folding, layers, rules — is the single-input engine's, exact for those inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import InputError, UnsupportedModelError
from .graph import PreparedModel

_FLOAT = onnx.TensorProto.FLOAT
_INTS = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
         onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
         onnx.TensorProto.BOOL}


@dataclass
class InputPlan:
    """Which tensor is explained, where it comes from, and which inputs are held fixed."""

    explained: str  # the explained tensor: a float graph input, or the output of an embedding Gather
    source: str  # the graph input it comes from (the token ids for an embedding)
    kind: str  # "float" | "embedding"
    fixed: list[str]  # the other graph inputs, held fixed
    reason: str  # one sentence: why this tensor
    dtypes: dict[str, np.dtype] = field(default_factory=dict)  # graph input name -> NumPy dtype
    ranks: dict[str, int] = field(default_factory=dict)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The model's real inputs (graph inputs that are not initializers)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def needs_plan(model: onnx.ModelProto) -> bool:
    """True when the model is not a single float-input model (several inputs, or integer ids)."""
    ins = graph_inputs(model)
    return len(ins) != 1 or ins[0].type.tensor_type.elem_type != _FLOAT


def choose_input(model: onnx.ModelProto, name: str | None = None) -> InputPlan:
    """Decide the explained tensor of a multi-input or token-id model (see the module docstring).

    ``name`` picks a graph input (a float input, or the ids input of an embedding) explicitly.
    """
    ins = graph_inputs(model)
    if not ins:
        raise UnsupportedModelError("the model has no inputs")
    dtypes, ranks = {}, {}
    for i in ins:
        t = i.type.tensor_type
        if not i.type.HasField("tensor_type"):
            raise UnsupportedModelError(f"input {i.name!r} is not a tensor")
        try:
            dtypes[i.name] = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        except (KeyError, TypeError, ValueError):
            raise UnsupportedModelError(f"input {i.name!r} has an element type onnxlrp cannot feed") from None
        ranks[i.name] = len(t.shape.dim) if t.HasField("shape") else -1
    names = [i.name for i in ins]
    if name is not None and name not in names:
        raise InputError(f"input {name!r} is not an input of the model (inputs: {', '.join(names)})")
    floats = [i.name for i in ins if i.type.tensor_type.elem_type == _FLOAT]
    embeddings = _embedding_lookups(model, {i.name for i in ins if i.type.tensor_type.elem_type in _INTS})
    if name is not None and name in floats:
        chosen, kind, src = name, "float", name
        reason = f"the float input {name!r} was chosen"
    elif name is not None:
        if name not in embeddings:
            raise UnsupportedModelError(f"input {name!r} is neither a float input nor token ids looked up in an "
                                        "embedding table (a Gather on a float weight)")
        chosen, kind, src = embeddings[name], "embedding", name
        reason = f"the token ids {name!r} were chosen; their embedding lookup {chosen!r} is explained"
    elif len(floats) == 1:
        chosen, kind, src = floats[0], "float", floats[0]
        reason = f"{floats[0]!r} is the model's only float input"
    elif len(floats) > 1:
        raise UnsupportedModelError(f"the model has several float inputs ({', '.join(floats)}); name the one to "
                                    "explain with input=")
    elif embeddings:
        rows = _table_rows(model, embeddings)
        best = max(rows.values())
        top = [n for n, r in rows.items() if r == best]
        if len(top) > 1:
            raise UnsupportedModelError(f"several integer inputs are looked up in embedding tables of {best} rows "
                                        f"({', '.join(top)}); name the one to explain with input=")
        src, chosen = top[0], embeddings[top[0]]
        kind = "embedding"
        others = f" (the largest table: {best} rows; {', '.join(n for n in rows if n != src)} held fixed)" \
            if len(rows) > 1 else ""
        reason = (f"{src!r} holds token ids{others}: the output {chosen!r} of their embedding lookup is explained "
                  "and relevance is reported per token")
    else:
        raise UnsupportedModelError(
            f"the model's inputs ({', '.join(f'{n} {dtypes[n]}' for n in names)}) have no float input and no token "
            "ids looked up in an embedding table (a Gather on a float weight); nothing to explain")
    fixed = [n for n in names if n != src]
    return InputPlan(chosen, src, kind, fixed, reason, dtypes, ranks)


def _embedding_lookups(model: onnx.ModelProto, int_inputs: set[str]) -> dict[str, str]:
    """Integer input -> the output of the first ``Gather`` that looks its values up in a float initializer."""
    float_inits = {t.name for t in model.graph.initializer if t.data_type == _FLOAT}
    consts = set(float_inits)
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts.update(node.output)
    # follow the ids through the index-preserving ops exporters put before the lookup
    carry: dict[str, str] = {n: n for n in int_inputs}
    found: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) >= 2 and node.input[0] in consts and node.input[1] in carry:
            found.setdefault(carry[node.input[1]], node.output[0])
        elif node.op_type in ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten") and node.input \
                and node.input[0] in carry:
            carry[node.output[0]] = carry[node.input[0]]
    return found


def _table_rows(model: onnx.ModelProto, embeddings: dict[str, str]) -> dict[str, int]:
    """Integer input -> the number of rows of the table its embedding lookup reads."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            dims[node.output[0]] = list(node.attribute[0].t.dims)
    table_of = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.output}
    return {src: int((dims.get(table_of.get(out, ""), [0]) or [0])[0]) for src, out in embeddings.items()}


def check_feeds(plan: InputPlan, x: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The inputs of one call as arrays of the model's types; missing fixed inputs get defaults.

    A missing input whose name contains ``mask`` is all ones (nothing masked); any other
    missing fixed input is all zeros (token types). The explained source is required.
    """
    unknown = sorted(set(x) - set(plan.dtypes))
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are "
                         f"{', '.join(plan.dtypes)}")
    if plan.source not in x:
        raise InputError(f"input {plan.source!r} is required (it is the explained input)")
    feeds: dict[str, np.ndarray] = {}
    for name, dtype in plan.dtypes.items():
        if name not in x:
            continue
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = np.asarray(x[name])
                if dtype.kind in "iub" and arr.dtype.kind == "f":
                    if not np.all(np.isfinite(arr)) or not np.all(np.mod(arr, 1) == 0):
                        raise InputError(f"input {name!r} must hold integers")
                arr = np.ascontiguousarray(arr.astype(dtype))
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"input {name!r} cannot be read as {dtype} values") from None
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise InputError(f"input {name!r} contains NaN or infinite values")
        if plan.ranks.get(name, -1) >= 0 and arr.ndim != plan.ranks[name]:
            raise InputError(f"input {name!r} has shape {list(arr.shape)}; the model expects rank {plan.ranks[name]}")
        if arr.ndim == 0 or arr.shape[0] == 0 or 0 in arr.shape:
            raise InputError(f"input {name!r} has shape {list(arr.shape)}: it needs a batch axis and no empty axis")
        feeds[name] = arr
    ref = np.asarray(feeds[plan.source]).shape
    for name in plan.fixed:
        if name not in feeds:
            if plan.ranks.get(name, -1) != len(ref):
                raise InputError(f"input {name!r} is required (its shape cannot be taken from {plan.source!r})")
            fill = 1 if "mask" in name.lower() else 0
            feeds[name] = np.full(ref, fill, dtype=plan.dtypes[name])
        elif feeds[name].shape[0] != ref[0]:
            raise InputError(f"input {name!r} has {feeds[name].shape[0]} samples but {plan.source!r} has {ref[0]}")
    return feeds


def front_model(model: onnx.ModelProto, plan: InputPlan) -> onnx.ModelProto:
    """The part of ``model`` that computes the explained tensor (the embedding lookup) from the inputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(plan.explained, _FLOAT, None))
    producers = {o: n for n in m.graph.node for o in n.output}
    keep, stack, seen = [], [plan.explained], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        n = producers.get(t)
        if n is not None and id(n) not in {id(k) for k in keep}:
            keep.append(n)
            stack.extend(i for i in n.input if i)
    order = {id(n): i for i, n in enumerate(m.graph.node)}
    nodes = sorted(keep, key=lambda n: order[id(n)])
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    inits = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    ins = [i for i in m.graph.input if i.name in used]
    del m.graph.input[:]
    m.graph.input.extend(ins)
    del m.graph.value_info[:]
    return m


def specialise(model: onnx.ModelProto, plan: InputPlan, feeds: Mapping[str, np.ndarray],
               explained_shape: tuple[int, ...]) -> onnx.ModelProto:
    """``model`` for one call: fixed inputs become constants, the explained tensor the only input.

    For an embedding, the lookup node is removed and its output becomes the graph input (the ids
    stay available to the rest of the graph as a constant, e.g. for position ids).
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    constants = [n for n in ([plan.source] if plan.kind == "embedding" else []) + plan.fixed]
    for name in constants:
        g.initializer.append(numpy_helper.from_array(np.asarray(feeds[name]), name))
    keep_inputs = [i for i in g.input if i.name not in constants and i.name != plan.explained]
    del g.input[:]
    g.input.extend(keep_inputs)
    if plan.kind == "embedding":
        nodes = [n for n in g.node if plan.explained not in n.output]
        del g.node[:]
        g.node.extend(nodes)
    new_in = helper.make_tensor_value_info(plan.explained, _FLOAT, list(explained_shape))
    if plan.kind == "float":
        del g.input[:]
        g.input.extend([i for i in keep_inputs if i.name != plan.explained])
    g.input.insert(0, new_in)
    vis = [v for v in g.value_info if v.name != plan.explained]
    del g.value_info[:]
    g.value_info.extend(vis)
    _fold_gather_elements(m, set(constants))
    return m


def rebind(prepared: PreparedModel, plan: InputPlan, feeds: Mapping[str, np.ndarray]) -> PreparedModel:
    """A specialisation's prepared model (see :func:`specialise`) with the fixed inputs' constants set to ``feeds``.

    Everything else is shared with ``prepared`` (the weights are detached, so the copy is small):
    the next call's model without copying, checking and preparing the whole model again. The
    feeds must have the shapes of the specialisation's.
    """
    import dataclasses

    values = run_time_feeds(plan, feeds)
    m = onnx.ModelProto()
    m.CopyFrom(prepared.model)
    weights = dict(prepared.weights)
    for t in m.graph.initializer:
        if t.name not in values:
            continue
        new = np.asarray(values[t.name])
        if tuple(t.dims) != new.shape or t.data_type != helper.np_dtype_to_tensor_dtype(new.dtype):
            raise InputError(f"input {t.name!r} has shape {list(new.shape)}; this specialisation holds "
                             f"{list(t.dims)}")
        if t.name in weights:  # detached: the stub stays, the value is swapped
            weights[t.name] = new
        else:
            t.CopyFrom(numpy_helper.from_array(new, t.name))
    return dataclasses.replace(prepared, model=m, weights=weights)


def _fold_gather_elements(m: onnx.ModelProto, keep: Collection[str] = ()) -> None:
    """Replace each ``GatherElements`` of initializers (other than those named in ``keep``) by its value, in place.

    The dynamo exporter writes BERT's default token types as ``GatherElements`` of a buffer; ONNX's
    reference evaluator (onnx 1.23), which folds constants for the layer graph, fails on it, and the
    graph would then go through onnxruntime's canonicalisation (a session per specialisation).
    """
    g = m.graph
    values = {t.name: t for t in g.initializer if t.name not in keep}
    kept = []
    for node in g.node:
        if node.op_type == "GatherElements" and len(node.input) == 2 and all(i in values for i in node.input) \
                and values[node.input[0]].data_location != onnx.TensorProto.EXTERNAL:
            data, index = (numpy_helper.to_array(values[i]) for i in node.input)
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
            try:
                index = np.where(index < 0, index + data.shape[axis], index)
                out = np.take_along_axis(data, index.astype(np.int64), axis=axis)
            except (IndexError, ValueError, np.exceptions.AxisError):
                kept.append(node)
                continue
            t = numpy_helper.from_array(np.ascontiguousarray(out), node.output[0])
            g.initializer.append(t)
            values[t.name] = t
            continue
        kept.append(node)
    if len(kept) != len(g.node):
        del g.node[:]
        g.node.extend(kept)


def runtime_model(model: onnx.ModelProto, plan: InputPlan) -> onnx.ModelProto:
    """``model`` with the explained tensor as its first input and the other inputs kept as run-time inputs.

    One onnxruntime session of it serves the forward pass of every call (see
    :class:`onnxlrp.runtime.FeedSession`): the fixed inputs (and, for an embedding, the token ids)
    are fed with each run, where :func:`specialise` would make them constants of a model copy.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if plan.kind == "embedding":
        nodes = [n for n in g.node if plan.explained not in n.output]
        del g.node[:]
        g.node.extend(nodes)
    others = [i for i in g.input if i.name != plan.explained]
    del g.input[:]
    g.input.extend([helper.make_tensor_value_info(plan.explained, _FLOAT, None)] + others)
    vis = [v for v in g.value_info if v.name != plan.explained]
    del g.value_info[:]
    g.value_info.extend(vis)
    return m


def run_time_feeds(plan: InputPlan, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The values a :func:`runtime_model` session takes besides the explained tensor."""
    names = ([plan.source] if plan.kind == "embedding" else []) + plan.fixed
    return {n: np.ascontiguousarray(feeds[n]) for n in names}


def feeds_key(feeds: Mapping[str, np.ndarray], names: list[str]) -> tuple[Any, ...]:
    """A hashable key of the fixed inputs' values (shape, dtype and bytes)."""
    import hashlib

    h = hashlib.sha1()
    for n in names:
        a = np.ascontiguousarray(feeds[n])
        h.update(n.encode())
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(a.tobytes())
    return (h.hexdigest(),)


__all__ = ["InputPlan", "check_feeds", "choose_input", "feeds_key", "front_model", "graph_inputs", "needs_plan",
           "rebind", "run_time_feeds", "runtime_model", "specialise"]
