"""Loading an untrusted ONNX file: a bounded read, every tensor checked, external data confined.

:func:`load_model` reads a model from a path (a regular file, at most the protobuf limit, read
once), bytes or a ModelProto, and refuses before anything runs what could hurt: IR/opset
versions out of range, malformed nodes, tensors whose data does not fit their type and shape,
non-finite weights (checked on the file's bytes without copying them out of the protobuf; ``±inf``
is let through only in mask and fill constants, see :class:`_InfPolicy`), and
external data outside the model's folder — read by onnxlrp itself, so that onnxruntime never
opens a path a model names. :func:`tensor_array` decodes one tensor with those checks.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelLoadError, UnsupportedModelError
from .paths import MAX_MODEL_BYTES, confined, read_bounded, regular_file

R = TypeVar("R")
P = ParamSpec("P")


def _gc_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with Python's cyclic garbage collector paused (and restored after).

    Preparing a graph of 100 000 nodes allocates millions of small, acyclic objects; each
    allocation burst triggers full collections that scan every live object, which cost a third
    of the preparation time (measured: 12.0 s → 7.8 s CPU for 100 000 nodes). Reference
    counting still frees everything as usual.
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()

    return run


# ---------------------------------------------------------------------------------------------
# loading


@_gc_paused
def load_model(source: str | os.PathLike[str] | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Read an ONNX model from a path, bytes or a ModelProto and check it before anything runs it.

    A path must name a regular file of at most :data:`~onnxlrp.paths.MAX_MODEL_BYTES` bytes; it is
    read once, with a bound (FIFOs, devices, sockets and files that grow while read are refused).
    Every tensor of the model (initializers, sparse initializers, tensor attributes, sub-graphs,
    model-local functions) is then checked: external data must live inside the model's folder
    (an absolute location or one that escapes the folder through ``../`` or a symlink is
    refused) and is read into the model here, so onnxruntime never opens a file; each tensor's
    data must match its type and dims, and float data must be finite — except that ``±inf`` (never
    NaN) may fill a constant of the main graph whose every use is a selection or an additive mask
    (:class:`_InfPolicy`: ``Where`` branches, ``Add``/``Sub``/``Max``/``Min``, ``Clip`` bounds,
    comparisons), as the TorchScript exporter writes for attention masks. IR version and opset must
    be ones onnx knows. Raises :class:`ModelLoadError` (or :class:`UnsupportedModelError` for an
    opset) naming the file, tensor or version.
    """
    if isinstance(source, onnx.ModelProto):
        model, base, where = source, None, "the model"
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        model, base, where = _parse(data, "the bytes given"), None, "the model"
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if not os.path.lexists(path):
            raise ModelLoadError(f"model file not found: {path}")
        data = read_bounded(path, "model file", MAX_MODEL_BYTES)
        model, base, where = _parse(data, str(path)), path.resolve().parent, str(path)
    else:
        raise ModelLoadError(
            f"the model must be a file path, bytes or an onnx.ModelProto, not {type(source).__name__}"
        )
    if not model.graph.node:
        raise ModelLoadError(f"{where} has no graph nodes: not an ONNX model file (or an empty one)")
    _check_versions(model, where)
    policy = _InfPolicy(model)
    _check_nodes(model, policy)
    _check_tensors(model, data if not isinstance(source, onnx.ModelProto) else None, policy)
    for t, where_t, key in _load_external(model, base):
        _check_tensor(t, where_t, policy.inf_ok(key))
    return model


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError, ValueError...
        if where == "the bytes given":
            raise ModelLoadError(f"the bytes given are not an ONNX model ({exc.__class__.__name__})") from None
        raise ModelLoadError(f"{where} is not a readable ONNX model ({exc.__class__.__name__})") from None


_MIN_IR = 3  # IR 3 introduced opset imports; older files cannot say which ops they use


def _check_versions(model: onnx.ModelProto, where: str) -> None:
    """Refuse IR versions and default-domain opsets that onnx does not know (onnxruntime would throw)."""
    ir = int(model.ir_version)
    if not _MIN_IR <= ir <= onnx.IR_VERSION:
        raise ModelLoadError(
            f"{where} has IR version {ir}; onnxlrp reads IR versions {_MIN_IR} to {onnx.IR_VERSION}"
        )
    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not 1 <= imp.version <= newest:
            raise UnsupportedModelError(
                f"{where} imports ONNX opset {imp.version}; onnxlrp knows opsets 1 to {newest}"
            )


# every place an ONNX model can hold a tensor, with a description for messages


def _tensor_sites(model: onnx.ModelProto, initializers: bool = True) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every TensorProto of the model and where it lives (for error messages); without the main
    graph's initializers when ``initializers`` is False."""
    for t, where, _ in _keyed_sites(model, initializers):
        yield t, where


def _keyed_sites(model: onnx.ModelProto, initializers: bool = True
                 ) -> Iterator[tuple[onnx.TensorProto, str, str | None]]:
    """:func:`_tensor_sites` with a key: the main-graph tensor the value defines (an initializer's
    name, the output of a ``Constant`` or ``ConstantOfShape`` holding it), None elsewhere."""
    yield from _graph_sites(model.graph, "", initializers)
    for f in model.functions:
        yield from _node_sites(f.node, f" in function {f.name!r}")
    for k, info in enumerate(model.training_info):
        yield from _graph_sites(info.initialization, f" in training_info[{k}].initialization")
        yield from _graph_sites(info.algorithm, f" in training_info[{k}].algorithm")


def _graph_sites(g: onnx.GraphProto, ctx: str, initializers: bool = True
                 ) -> Iterator[tuple[onnx.TensorProto, str, str | None]]:
    main = ctx == ""
    for t in g.initializer if initializers else ():
        yield t, f"initializer {t.name!r}{ctx}", t.name if main else None
    for s in g.sparse_initializer:
        yield s.values, f"sparse initializer {s.values.name!r}{ctx}", None
        yield s.indices, f"indices of sparse initializer {s.values.name!r}{ctx}", None
    yield from _node_sites(g.node, ctx)


def _node_label(node: onnx.NodeProto) -> str:
    return f"node {node.name or (node.output[0] if node.output else '')!r} ({node.op_type})"


_VALUE_NODES = {"Constant", "ConstantOfShape"}  # nodes whose output is made of their 'value' attribute


def _node_sites(nodes: Iterable[onnx.NodeProto], ctx: str) -> Iterator[tuple[onnx.TensorProto, str, str | None]]:
    # every tensor-holding field is looked at, whatever the attribute's declared type says
    for node in nodes:
        for a in node.attribute:
            sparse = ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors)
            subs = ([a.g] if a.HasField("g") else []) + list(a.graphs)
            has_t = a.HasField("t")
            if not (has_t or len(a.tensors) or sparse or subs):
                continue
            here = f"attribute {a.name!r} of {_node_label(node)}{ctx}"
            if has_t:
                key = node.output[0] if (ctx == "" and a.name == "value" and node.op_type in _VALUE_NODES
                                         and node.domain in ("", "ai.onnx") and len(node.output) == 1) else None
                yield a.t, f"tensor {a.t.name!r} in {here}" if a.t.name else f"tensor in {here}", key
            for k, t in enumerate(a.tensors):
                yield t, f"tensor {k} ({t.name!r}) in {here}", None
            for k, s in enumerate(sparse):
                yield s.values, f"sparse tensor {k} ({s.values.name!r}) in {here}", None
                yield s.indices, f"indices of sparse tensor {k} ({s.values.name!r}) in {here}", None
            for g in subs:
                yield from _graph_sites(g, f" in sub-graph {g.name!r} of {_node_label(node)}{ctx}")


# where ±inf may be used: op → the input positions (None: any) that may read an infinite constant
_INF_SINKS: dict[str, set[int] | None] = {
    "Where": {1, 2},  # a branch (masked_fill), never the condition
    "Add": None, "Sub": None, "Max": None, "Min": None,  # additive masks, bounds
    "Clip": {1, 2},
    "Equal": None, "Less": None, "LessOrEqual": None, "Greater": None, "GreaterOrEqual": None,
}
# ops that only move or copy values: the infinite values go on to their output's uses
_INF_MOVES: dict[str, set[int] | None] = {
    "Identity": {0}, "Reshape": {0}, "Unsqueeze": {0}, "Squeeze": {0}, "Flatten": {0}, "Expand": {0},
    "Transpose": {0}, "Slice": {0}, "Gather": {0}, "Tile": {0}, "Concat": None, "Cast": {0},
}
_FLOAT_CASTS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


class _InfPolicy:
    """Which constants of the model may hold ``±inf``: mask and fill values, not weights.

    Exporters write ``-inf`` for the fill of an attention mask (``Where(mask, -inf, 0)``, an
    additive mask, a clamp bound). A constant of the main graph (initializer, ``Constant``,
    ``ConstantOfShape`` value) may hold ``±inf`` if every use of it — followed through ops that
    only move values (reshapes, ``Expand``, ``Gather``, ``Concat``, casts to float types) — is a
    ``Where`` branch, ``Add``/``Sub``/``Max``/``Min``, a ``Clip`` bound or a comparison, and it
    has at least one use. Anything else — a weight of a ``Conv``/``Gemm``/``MatMul``, a ``Mul``
    factor, a ``Where`` condition, a graph output, a value read inside a sub-graph or a function —
    is refused as before. The uses are collected once, on the first infinite constant.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self._uses: dict[str, list[tuple[onnx.NodeProto | None, int]]] | None = None
        self._ok: dict[str, bool] = {}

    def inf_ok(self, key: str | None) -> Callable[[], bool] | None:
        """A check for the constant ``key`` (None: the site may never hold ±inf)."""
        return None if key is None else (lambda: self.allows(key))

    def _collect(self) -> dict[str, list[tuple[onnx.NodeProto | None, int]]]:
        uses: dict[str, list[tuple[onnx.NodeProto | None, int]]] = {}
        g = self.model.graph
        for node in g.node:
            for k, name in enumerate(node.input):
                if name:
                    uses.setdefault(name, []).append((node, k))
            for a in node.attribute:  # a sub-graph may read any outer tensor by name: a use of unknown kind
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    for name in _subgraph_reads(sub):
                        uses.setdefault(name, []).append((None, -1))
        for o in g.output:
            uses.setdefault(o.name, []).append((None, -1))
        return uses

    def _step(self, t: str) -> tuple[bool, list[str]]:
        """Whether every use of ``t`` may read ``±inf``, and the tensors the values move on to."""
        assert self._uses is not None
        uses = self._uses.get(t)
        if not uses:
            return False, []  # nothing reads it: no mask (and a constant moved nowhere)
        moved: list[str] = []
        for node, k in uses:
            if node is None or node.domain not in ("", "ai.onnx"):
                return False, []
            op = node.op_type
            if op in _INF_SINKS:
                where = _INF_SINKS[op]
                if where is not None and k not in where:
                    return False, []
                continue
            where = _INF_MOVES.get(op, set())
            if (where is not None and k not in where) or not node.output or not all(node.output):
                return False, []
            if op == "Cast" and next((a.i for a in node.attribute if a.name == "to"), 0) not in _FLOAT_CASTS:
                return False, []
            moved.extend(node.output)
        return True, moved

    def allows(self, name: str) -> bool:
        """True if the tensor ``name`` of the main graph is used only where ``±inf`` is a mask or fill value.

        Each tensor is looked at once over all calls (a depth-first walk with memory): linear in the graph.
        """
        if self._uses is None:
            self._uses = self._collect()
        memo, pending = self._ok, {}
        stack = [name]
        while stack:
            t = stack[-1]
            if t in memo:
                stack.pop()
                continue
            if t not in pending:
                ok, moved = self._step(t)
                if not ok:
                    memo[t] = False
                    stack.pop()
                    continue
                pending[t] = moved
                todo = [o for o in moved if o not in memo and o not in pending]
                if todo:
                    stack.extend(todo)
                    continue
            memo[t] = all(memo.get(o, True) for o in pending[t])  # True: still open, on a cycle
            stack.pop()
        return memo[name]


def _subgraph_reads(g: onnx.GraphProto) -> Iterator[str]:
    """Every tensor name the nodes of ``g`` and of its nested sub-graphs read."""
    for node in g.node:
        yield from (i for i in node.input if i)
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _subgraph_reads(sub)


def _check_nodes(model: onnx.ModelProto, policy: _InfPolicy | None = None) -> None:
    """Every name the engine reads is text, and every float attribute is finite.

    Protobuf hands back ``bytes`` for a string field that is not valid UTF-8; such a model is
    refused here instead of failing somewhere later. Float attributes (``Constant`` values,
    alphas, epsilons) must be finite like the weights; a main-graph ``Constant``'s
    ``value_float(s)`` may be ``±inf`` where ``policy`` allows it (a mask fill).
    """
    def text(value: object, what: str) -> None:
        if type(value) is not str:
            raise ModelLoadError(f"{what} {value!r} is not valid UTF-8 text; refused")

    def walk(nodes: Iterable[onnx.NodeProto], ctx: str) -> None:
        for node in nodes:
            names = [node.op_type, node.domain, node.name, *node.input, *node.output]
            if any(type(v) is not str for v in names):
                for v in names:
                    text(v, f"a name or op type of a node{ctx}")
            for a in node.attribute:
                if a.HasField("f") or len(a.floats):
                    values = np.array([a.f, *a.floats], np.float64)
                    fill = (policy is not None and ctx == "" and node.op_type == "Constant" and len(node.output) == 1
                            and a.name in ("value_float", "value_floats") and not np.any(np.isnan(values)))
                    if not np.all(np.isfinite(values)) and not (fill and policy.allows(node.output[0])):
                        raise ModelLoadError(
                            f"attribute {a.name!r} of {_node_label(node)}{ctx} is not finite ({values.tolist()[:4]}); "
                            "refused"
                        )
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g.node, f" in sub-graph {g.name!r} of {_node_label(node)}{ctx}")

    g = model.graph
    for v in [*(i.name for i in g.input), *(o.name for o in g.output), *(t.name for t in g.initializer)]:
        text(v, "the graph input, output or initializer name")
    walk(g.node, "")
    for f in model.functions:
        walk(f.node, f" in function {f.name!r}")


def _uses_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0


_MAX_EXTERNAL_BYTES = 2**44  # external data files may exceed the protobuf limit; reads are bounded by offsets


def _load_external(model: onnx.ModelProto, base: Path | None) -> list[tuple[onnx.TensorProto, str, str | None]]:
    """Read every external tensor's bytes into the model, each from a file confined to ``base``;
    returns the tensors read, where they live and their key (see :func:`_keyed_sites`)."""
    external = [(t, where, key) for t, where, key in _keyed_sites(model) if _uses_external(t)]
    if not external:
        return []
    if base is None:
        raise ModelLoadError(
            f"{external[0][1]} has external data; load the model from its file path so the data can be found"
        )
    for t, where, _ in external:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location")
        if not location:
            raise ModelLoadError(f"{where} has external data without a location")
        target = confined(base, location, where)
        size = regular_file(target, f"{where}: external data file", _MAX_EXTERNAL_BYTES)
        try:
            offset = int(info.get("offset", "0") or 0)
            length = int(info["length"]) if info.get("length") else size - offset
        except ValueError:
            raise ModelLoadError(f"{where}: external data offset/length are not integers") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelLoadError(
                f"{where}: external data offset {offset} and length {length} lie outside {location!r} "
                f"({size} bytes)"
            )
        try:
            with open(target, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError as exc:
            raise ModelLoadError(f"{where}: cannot read external data {location!r}: {exc.strerror or exc}") from None
        if len(data) != length:
            raise ModelLoadError(f"{where}: external data file {location!r} changed while it was read; refused")
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
        t.raw_data = data
    return external


_FLOAT_TYPES = {
    getattr(onnx.TensorProto, n)
    for n in ("FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
              "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT4E2M1", "COMPLEX64", "COMPLEX128")
    if hasattr(onnx.TensorProto, n)
}
_KNOWN_TYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def _type_name(code: int) -> str:
    """``FLOAT``, ``INT64``... for an ONNX element type code; the number itself when it is no known type."""
    return onnx.TensorProto.DataType.Name(code) if code in _KNOWN_TYPES else f"{code} (not a known type)"


def tensor_array(t: onnx.TensorProto, where: str) -> np.ndarray:
    """The tensor's values as an array, after checking that its data fits its declared type and dims.

    Raises :class:`ModelLoadError` naming ``where`` for an undefined or unknown data type, a
    negative dimension, missing data, or data shorter or longer than the dims say.
    """
    if t.data_type not in _KNOWN_TYPES:
        name = "UNDEFINED" if t.data_type == onnx.TensorProto.UNDEFINED else "unknown"
        raise ModelLoadError(f"{where} has data type {t.data_type} ({name}); refused")
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{where} has a negative dimension in its shape {dims}")
    if _uses_external(t):
        raise ModelLoadError(f"{where} has external data that was not loaded; refused")
    try:
        return numpy_helper.to_array(t)
    except Exception:  # noqa: BLE001 - ValueError/TypeError/KeyError/UnicodeDecodeError for bad data
        dtype = onnx.TensorProto.DataType.Name(t.data_type)
        if t.HasField("raw_data"):
            stored = f"{len(t.raw_data)} bytes of raw data"
        else:
            field_name = helper.tensor_dtype_to_field(t.data_type) if t.data_type != onnx.TensorProto.STRING \
                else "string_data"
            stored = f"{len(getattr(t, field_name))} values in {field_name}"
        count = int(np.prod(dims, dtype=np.float64)) if dims else 1
        what = "no data" if stored.startswith("0 ") else stored
        raise ModelLoadError(
            f"{where}: {what} for a {dtype} tensor of shape {dims} ({count} elements); the data does not "
            "match the declared type and shape"
        ) from None


def _check_tensors(model: onnx.ModelProto, data: bytes | None = None, policy: _InfPolicy | None = None) -> None:
    """Every tensor's data fits its type and dims; every float tensor is finite (``±inf`` only where
    ``policy`` allows it: mask and fill constants).

    External tensors are skipped (checked once read). With the serialized model ``data``, the
    raw bytes of the top-level initializers are checked where they lie in ``data`` (no copy out
    of the protobuf: on VGG16 that copy alone would cost more than the check).
    """
    inits = model.graph.initializer
    spans = _raw_spans(data) if data is not None and len(inits) else None
    if spans is not None and [name for name, _ in spans] != [t.name for t in inits]:
        spans = None  # the wire format and the parsed model disagree: take the slow, certain road
    for k, t in enumerate(inits):
        span = spans[k][1] if spans is not None else None
        if _uses_external(t):
            continue
        inf_ok = policy.inf_ok(t.name) if policy is not None else None
        if span is None or t.data_type not in _NATIVE or not t.HasField("raw_data"):
            _check_tensor(t, f"initializer {t.name!r}", inf_ok)
            continue
        where = f"initializer {t.name!r}"
        dims = [int(d) for d in t.dims]
        if any(d < 0 for d in dims):
            raise ModelLoadError(f"{where} has a negative dimension in its shape {dims}")
        dtype = _NATIVE[t.data_type]
        count = int(np.prod(dims, dtype=np.float64)) if dims else 1
        offset, length = span
        if length != count * dtype.itemsize:
            raise ModelLoadError(
                f"{where}: {length} bytes of raw data for a {onnx.TensorProto.DataType.Name(t.data_type)} tensor of "
                f"shape {dims} ({count} elements); the data does not match the declared type and shape"
            )
        if t.data_type in _FLOAT_TYPES and count:
            _check_finite(np.frombuffer(data, dtype, count, offset), where, inf_ok)  # type: ignore[arg-type]
    for t, where, key in _keyed_sites(model, initializers=False):
        if not _uses_external(t):
            _check_tensor(t, where, policy.inf_ok(key) if policy is not None else None)


def _check_tensor(t: onnx.TensorProto, where: str, inf_ok: Callable[[], bool] | None = None) -> None:
    arr = tensor_array(t, where)
    if t.data_type in _FLOAT_TYPES and arr.size:
        _check_finite(arr, where, inf_ok)


_NATIVE = {  # little-endian dtypes of the raw data of the common numeric types
    getattr(onnx.TensorProto, n): np.dtype(d)
    for n, d in (("FLOAT", "<f4"), ("DOUBLE", "<f8"), ("FLOAT16", "<f2"), ("INT8", "i1"), ("UINT8", "u1"),
                 ("INT16", "<i2"), ("UINT16", "<u2"), ("INT32", "<i4"), ("UINT32", "<u4"), ("INT64", "<i8"),
                 ("UINT64", "<u8"))
}


def _fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """The protobuf fields in ``data[pos:end]``: ``(number, wire type, start, stop)`` of each value."""
    def varint(p: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            if p >= end or shift > 63:
                raise ValueError("bad varint")
            b = data[p]
            value |= (b & 0x7F) << shift
            p += 1
            if b < 0x80:
                return value, p
            shift += 7

    while pos < end:
        tag, pos = varint(pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, stop = varint(pos)
        elif wire == 1:
            stop = pos + 8
        elif wire == 2:
            length, pos = varint(pos)
            stop = pos + length
        elif wire == 5:
            stop = pos + 4
        else:
            raise ValueError("groups are not expected in ONNX")
        if stop > end:
            raise ValueError("truncated")
        yield number, wire, pos, stop
        pos = stop


def _raw_spans(data: bytes) -> list[tuple[str, tuple[int, int] | None]] | None:
    """For each top-level initializer of the serialized model, in order: its name and the (offset,
    length) of its ``raw_data`` in ``data`` (None without raw data). None if ``data`` cannot be walked.

    Protobuf semantics are followed: repeated ``graph`` fields merge (initializers concatenate),
    and of a scalar field given twice the last one counts.
    """
    spans: list[tuple[str, tuple[int, int] | None]] = []
    try:
        for number, wire, start, stop in _fields(data, 0, len(data)):
            if number != 7 or wire != 2:  # ModelProto.graph
                continue
            for n2, w2, s2, e2 in _fields(data, start, stop):
                if n2 != 5 or w2 != 2:  # GraphProto.initializer
                    continue
                name, raw = "", None
                for n3, w3, s3, e3 in _fields(data, s2, e2):
                    if n3 == 8 and w3 == 2:  # TensorProto.name
                        name = data[s3:e3].decode("utf-8")
                    elif n3 == 9 and w3 == 2:  # TensorProto.raw_data
                        raw = (s3, e3 - s3)
                spans.append((name, raw))
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return spans


def _check_finite(arr: np.ndarray, where: str, inf_ok: Callable[[], bool] | None = None) -> None:
    """Refuse NaN/Inf in ``arr``, saying how many values are bad (one ``isfinite`` pass when all are finite).

    ``±inf`` without NaN in a real tensor passes when ``inf_ok()`` says so (a mask or fill constant).
    """
    if arr.dtype.kind not in "fc":
        arr = arr.astype(np.float32)  # bfloat16 / float8 types of ml_dtypes
    finite = np.isfinite(arr)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    nan = int(np.count_nonzero(np.isnan(arr)))
    if nan == 0 and arr.dtype.kind == "f" and inf_ok is not None and inf_ok():
        return
    hint = ("; ±inf is accepted only in mask and fill constants (used by Where branches, Add/Sub/Max/Min, Clip "
            "bounds, comparisons)") if nan == 0 else ""
    raise ModelLoadError(
        f"{where} has {bad} non-finite value{'s' if bad != 1 else ''} of {arr.size} "
        f"({nan} NaN, {bad - nan} infinite); refused{hint}"
    )


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset version of the model."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1
