"""A third array module: it records ONNX nodes instead of computing.

The rules, the layers' VJPs and the kernels are written once against an array module ``xp``
(NumPy on the CPU, CuPy on the GPU). :class:`Tracer` is the same interface for a third
backend: every call on a :class:`Traced` value appends ONNX nodes to a graph under
construction and returns a new :class:`Traced` carrying only the static facts Python code may
read (shape, dtype). Running the unchanged backward pass with ``xp = Tracer(...)`` therefore
writes the backward pass as an ONNX graph — no rule is written twice.

Three rules keep the recorded graph honest:

* **Constant folding.** An operation whose operands are all constants (weights, ``W⁺``, the
  x-free denominators of W²/Flat) is computed at trace time with NumPy and becomes an
  initializer; only work that depends on the input reaches the graph.
* **The batch axis is symbolic.** Tracing runs at the marker batch size :data:`MARKER`
  (8191, a prime no layer size is a multiple of; text models a smaller prime, see
  :func:`tracing_marker`); any shape entry that is a multiple of it
  carries the batch and is written as a run-time value (``-1`` in a ``Reshape``, a computed
  shape elsewhere), so the compiled graph takes any batch size.
* **No data-dependent Python decisions.** ``bool()`` of a traced value raises
  :class:`TraceError`; the one decision the rules make on data (does an activation have a
  negative element?) goes through :meth:`Tracer.static_any`, which answers from what is known
  statically (the output of a ReLU is never negative) and otherwise says "maybe" — the branch
  that is exact for every input.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

MARKER = 8191  # the batch size tracing runs at: no real dimension is a multiple of it
_marker = [MARKER]  # the marker of the trace in progress (see tracing_marker)


@contextlib.contextmanager
def tracing_marker(marker: int) -> Iterator[None]:
    """Trace with another marker batch size: a prime no dimension of the model is a multiple of (text models
    trace at a small one, where constants built from the masks grow with the batch as ``[N, 1, L, L]``)."""
    old = _marker[0]
    _marker[0] = int(marker)
    try:
        yield
    finally:
        _marker[0] = old

_ONNX_TYPE = {
    np.dtype(np.float32): onnx.TensorProto.FLOAT,
    np.dtype(np.float64): onnx.TensorProto.DOUBLE,
    np.dtype(np.bool_): onnx.TensorProto.BOOL,
    np.dtype(np.int64): onnx.TensorProto.INT64,
    np.dtype(np.int32): onnx.TensorProto.INT32,
}


class TraceError(Exception):
    """The traced code did something a static graph cannot express (a data-dependent decision)."""


class BatchDependent(TraceError):
    """A constant of the layer graph depends on the batch size (index arrays of a gather across the merged
    batch axis): the graph can only be compiled for one batch size."""


def _is_batch(d: int) -> bool:
    return isinstance(d, (int, np.integer)) and int(d) != 0 and int(d) % _marker[0] == 0


def broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...]:
    """NumPy's broadcast of ``shapes`` (raises :class:`TraceError` when they do not broadcast)."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError as exc:
        raise TraceError(f"shapes {[list(s) for s in shapes]} do not broadcast") from exc


class Traced:
    """A value of the graph under construction: an ONNX tensor name, or a NumPy constant.

    ``shape`` and ``dtype`` are static. ``sign`` records what is known of the values:
    ``"nonneg"``, or for booleans ``"all_false"``/``"all_true"``; None when nothing is known.
    Traced values are mutable in the NumPy sense: in-place operators and ``out=`` rebind the
    object to the new node's output, so aliases see the change as they would with NumPy.
    """

    __array_ufunc__ = None  # NumPy operators defer to ours (np.float32(2) * t → t.__rmul__)
    __array_priority__ = 1000

    def __init__(self, tr: Tracer, name: str | None, shape: Sequence[int], dtype: Any,
                 const: np.ndarray | None = None, sign: str | None = None) -> None:
        self.tr = tr
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.const = const
        self.sign = sign
        self.fill: float | None = None  # set by zeros/ones/full: a constant fill (slice assignment is a Pad)

    # -- static facts --------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements (at the marker batch size)."""
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __bool__(self) -> bool:
        raise TraceError("a Python decision on the values of an input-dependent tensor cannot be compiled")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.const is None:
            raise TraceError("an input-dependent tensor was converted to a NumPy array")
        return self.const if dtype is None else self.const.astype(dtype)

    def __repr__(self) -> str:
        what = "const" if self.const is not None else self.name
        return f"Traced({what}, shape={list(self.shape)}, {self.dtype})"

    def _rebind(self, other: Traced) -> Traced:
        self.fill = None  # no longer a constant fill
        self.name, self.shape, self.dtype, self.const, self.sign = (
            other.name, other.shape, other.dtype, other.const, other.sign)
        return self

    # -- arithmetic ----------------------------------------------------------------------------
    def __add__(self, o: Any) -> Traced:
        return self.tr.add(self, o)

    def __radd__(self, o: Any) -> Traced:
        return self.tr.add(o, self)

    def __sub__(self, o: Any) -> Traced:
        return self.tr.subtract(self, o)

    def __rsub__(self, o: Any) -> Traced:
        return self.tr.subtract(o, self)

    def __mul__(self, o: Any) -> Traced:
        return self.tr.multiply(self, o)

    def __rmul__(self, o: Any) -> Traced:
        return self.tr.multiply(o, self)

    def __truediv__(self, o: Any) -> Traced:
        return self.tr.divide(self, o)

    def __rtruediv__(self, o: Any) -> Traced:
        return self.tr.divide(o, self)

    def __pow__(self, o: Any) -> Traced:
        return self.tr.power(self, o)

    def __matmul__(self, o: Any) -> Traced:
        return self.tr.matmul(self, o)

    def __rmatmul__(self, o: Any) -> Traced:
        return self.tr.matmul(o, self)

    def __neg__(self) -> Traced:
        return self.tr.negative(self)

    def __abs__(self) -> Traced:
        return self.tr.abs(self)

    def __iadd__(self, o: Any) -> Traced:
        return self._rebind(self.tr.add(self, o).astype(self.dtype))

    def __isub__(self, o: Any) -> Traced:
        return self._rebind(self.tr.subtract(self, o).astype(self.dtype))

    def __imul__(self, o: Any) -> Traced:
        return self._rebind(self.tr.multiply(self, o).astype(self.dtype))

    def __itruediv__(self, o: Any) -> Traced:
        return self._rebind(self.tr.divide(self, o).astype(self.dtype))

    def __gt__(self, o: Any) -> Traced:
        return self.tr.compare("Greater", self, o)

    def __lt__(self, o: Any) -> Traced:
        return self.tr.compare("Less", self, o)

    def __ge__(self, o: Any) -> Traced:
        return self.tr.compare("GreaterOrEqual", self, o)

    def __le__(self, o: Any) -> Traced:
        return self.tr.compare("LessOrEqual", self, o)

    def __eq__(self, o: Any) -> Traced:  # type: ignore[override]
        return self.tr.compare("Equal", self, o)

    def __ne__(self, o: Any) -> Traced:  # type: ignore[override]
        return self.tr.logical_not(self.tr.compare("Equal", self, o))

    __hash__ = object.__hash__

    def __invert__(self) -> Traced:
        return self.tr.logical_not(self)

    def __and__(self, o: Any) -> Traced:
        return self.tr.logical("And", self, o)

    def __or__(self, o: Any) -> Traced:
        return self.tr.logical("Or", self, o)

    def __iand__(self, o: Any) -> Traced:
        return self._rebind(self.tr.logical("And", self, o))

    def __ior__(self, o: Any) -> Traced:
        return self._rebind(self.tr.logical("Or", self, o))

    # -- methods -------------------------------------------------------------------------------
    def astype(self, dtype: Any, copy: bool = True) -> Traced:
        """Cast (no node when the dtype is already ``dtype``)."""
        return self.tr.astype(self, dtype)

    def copy(self) -> Traced:
        """A new value object for the same tensor (later in-place changes do not touch this one)."""
        return Traced(self.tr, self.name, self.shape, self.dtype, self.const, self.sign)

    def reshape(self, *shape: Any) -> Traced:
        """Reshape (``-1`` allowed, as in NumPy)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self.tr.reshape(self, shape)

    def transpose(self, *axes: Any) -> Traced:
        """Permute the axes (reversed when none are given)."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return self.tr.transpose(self, axes or None)

    @property
    def T(self) -> Traced:  # noqa: N802 - NumPy's name
        """The axes reversed."""
        return self.tr.transpose(self, None)

    def swapaxes(self, a: int, b: int) -> Traced:
        """Exchange two axes."""
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return self.tr.transpose(self, perm)

    def sum(self, axis: Any = None, keepdims: bool = False, dtype: Any = None) -> Traced:
        """Sum over ``axis`` (all when None), optionally in ``dtype``."""
        return self.tr.sum(self, axis=axis, keepdims=keepdims, dtype=dtype)

    def mean(self, axis: Any = None, keepdims: bool = False, dtype: Any = None) -> Traced:
        """Mean over ``axis``."""
        return self.tr.mean(self, axis=axis, keepdims=keepdims, dtype=dtype)

    def max(self, axis: Any = None, keepdims: bool = False) -> Traced:
        """Maximum over ``axis``."""
        return self.tr.reduce("ReduceMax", self, axis, keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Traced:
        """Minimum over ``axis``."""
        return self.tr.reduce("ReduceMin", self, axis, keepdims)

    def argmax(self, axis: int = -1) -> Traced:
        """Index of the first maximum along ``axis``."""
        return self.tr.argmax(self, axis)

    def __getitem__(self, key: Any) -> Traced:
        return self.tr.getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.tr.setitem(self, key, value)


class Tracer:
    """The array module that records ONNX nodes (see the module docstring).

    ``batch_source`` is the name of a graph input whose first axis is the batch; the batch size is
    read from it where a shape must be computed at run time.
    """

    float32 = np.float32
    float64 = np.float64
    int64 = np.int64
    bool_ = np.bool_
    newaxis = None
    __name__ = "onnxlrp.compiler.tracer"

    def __init__(self, batch_source: str, opset: int = 18) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.batch_source = batch_source
        self.opset = opset
        self._count = itertools.count()
        self._const_names: dict[Any, str] = {}
        self._keep: list[Any] = []  # arrays whose id() keys _const_names stay alive
        self._batch_name: str | None = None
        self.fixed_batch: int | None = None  # set when the model's batch is fixed (no marker)
        # float32 arrays the graph already holds, by (shape, sha1 of the bytes): a constant equal to one of them
        # (a transposed Gemm weight, an unmodified kernel) reads that initializer instead of a copy
        self.reuse: dict[tuple[Any, ...], str] = {}
        # constant arrays that stand for run-time tensors (Graph.side: a text model's masks, ids and what is
        # computed from them), by id(): they are read from the graph at run time, never baked or folded
        self.side: dict[int, tuple[str, np.ndarray, Any, np.ndarray]] = {}
        self._side_cache: dict[int, Traced] = {}

    # -- graph bookkeeping ---------------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        """A new unique tensor name."""
        return f"lrp/{hint}_{next(self._count)}"

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> list[str]:
        """Append one node; returns its output names."""
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=outs[0].replace("lrp/", "lrp_"), **attrs))
        return outs

    def const_name(self, a: np.ndarray) -> str:
        """The initializer holding array ``a`` (one initializer per distinct array object or small value)."""
        a = np.asarray(a)
        if a.dtype == np.float16 or a.dtype.kind == "f" and a.dtype not in _ONNX_TYPE:
            a = a.astype(np.float32)
        key: Any
        if a.size <= 16:
            key = (a.dtype.str, a.shape, a.tobytes())
        else:
            key = id(a)
            if key not in self._const_names and self.reuse and a.dtype == np.float32:
                hit = self.reuse.get(weight_key(a))
                if hit is not None:
                    self._keep.append(a)
                    self._const_names[key] = hit
                    return hit
            self._keep.append(a)
        name = self._const_names.get(key)
        if name is None:
            name = self.fresh("c")
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(a), name)
            self._const_names[key] = name
        return name

    def input(self, name: str, shape: Sequence[int], dtype: Any = np.float32, sign: str | None = None) -> Traced:
        """A value the graph already has (a model tensor or a graph input)."""
        return Traced(self, name, shape, dtype, sign=sign)

    def name_of(self, t: Traced) -> str:
        """The tensor name of ``t`` (constants become initializers)."""
        if t.const is not None:
            return self.const_name(t.const)
        assert t.name is not None
        return t.name

    def wrap(self, a: Any, dtype: Any = None) -> Traced:
        """``a`` as a :class:`Traced` (arrays and scalars become constants)."""
        if isinstance(a, Traced):
            return a if dtype is None else a.astype(dtype)
        if self.side and isinstance(a, np.ndarray):
            live = self._side_tensor(a)
            if live is not None:
                return live if dtype is None else live.astype(dtype)
        arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        return Traced(self, None, arr.shape, arr.dtype, const=arr)

    def _side_tensor(self, a: np.ndarray) -> Traced | None:
        """The run-time tensor a side constant (or a reshaped view of one) stands for, or None."""
        base: Any = a
        while isinstance(base, np.ndarray):
            hit = self.side.get(id(base))
            if hit is not None and hit[1] is base:
                name, value, fn, raw = hit
                t = self._side_cache.get(id(base))
                if t is None:
                    t = Traced(self, name, raw.shape, raw.dtype)
                    t = t if fn is None else self.wrap(fn(self, t))
                    self._side_cache[id(base)] = t
                if base is a:
                    return t
                if a.size == value.size and a.flags.c_contiguous and value.flags.c_contiguous \
                        and np.shares_memory(a, value):
                    return t.reshape(a.shape)
                return None
            base = base.base
        return None

    def batch_size(self) -> str:
        """The run-time batch size as a 1-element int64 tensor."""
        if self._batch_name is None:
            shape = self.node("Shape", [self.batch_source], start=0, end=1)[0]
            self._batch_name = shape
        return self._batch_name

    def dims(self, shape: Sequence[int], allow_minus_one: bool = False) -> str:
        """An int64 shape tensor for ``shape`` whose batch-carrying entries are computed at run time."""
        shape = [int(d) for d in shape]
        batch = [i for i, d in enumerate(shape) if _is_batch(d)]
        if not batch or self.fixed_batch is not None:
            return self.const_name(np.asarray(shape, dtype=np.int64))
        if allow_minus_one and len(batch) == 1 and -1 not in shape:
            out = list(shape)
            out[batch[0]] = -1
            return self.const_name(np.asarray(out, dtype=np.int64))
        parts: list[str] = []
        static: list[int] = []
        for d in shape:
            if _is_batch(d):
                if static:
                    parts.append(self.const_name(np.asarray(static, dtype=np.int64)))
                    static = []
                n = self.batch_size()
                mult = d // _marker[0]
                m = self.const_name(np.asarray([mult], np.int64))
                parts.append(n if mult == 1 else self.node("Mul", [n, m])[0])
            else:
                static.append(d)
        if static:
            parts.append(self.const_name(np.asarray(static, dtype=np.int64)))
        return parts[0] if len(parts) == 1 else self.node("Concat", parts, axis=0)[0]

    # -- creation ------------------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Traced:
        """A constant (or ``a`` itself when traced)."""
        return self.wrap(a, dtype)

    def ascontiguousarray(self, a: Any, dtype: Any = None) -> Traced:
        """Layout is the runtime's business: the value itself."""
        return self.wrap(a, dtype)

    def _filled(self, shape: Any, value: float, dtype: Any) -> Traced:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        dtype = np.dtype(dtype or np.float32)
        batch = [i for i, d in enumerate(shape) if _is_batch(d)]
        if not batch:
            t = self.wrap(np.full(shape, value, dtype=dtype))
        elif all(shape[i] == _marker[0] for i in batch):
            # the same value for every sample: a constant with size-1 batch axes, broadcast at run time
            small = tuple(1 if i in batch else d for i, d in enumerate(shape))
            t = self.broadcast_to(self.wrap(np.full(small, value, dtype=dtype)), shape)
        else:
            val = numpy_helper.from_array(np.asarray([value], dtype=dtype), "value")
            t = Traced(self, self.node("ConstantOfShape", [self.dims(shape)], value=val)[0], shape, dtype)
        t.fill = value
        return t

    def zeros(self, shape: Any, dtype: Any = None) -> Traced:
        """Zeros."""
        return self._filled(shape, 0.0, dtype)

    def ones(self, shape: Any, dtype: Any = None) -> Traced:
        """Ones."""
        return self._filled(shape, 1.0, dtype)

    def empty(self, shape: Any, dtype: Any = None) -> Traced:
        """Zeros (a traced graph has no uninitialised memory)."""
        return self._filled(shape, 0.0, dtype)

    def zeros_like(self, a: Any, dtype: Any = None) -> Traced:
        """Zeros shaped like ``a``."""
        return self.zeros(a.shape, dtype or a.dtype)

    def ones_like(self, a: Any, dtype: Any = None) -> Traced:
        """Ones shaped like ``a``."""
        return self.ones(a.shape, dtype or a.dtype)

    def arange(self, n: int, dtype: Any = None) -> Traced:
        """``0 … n−1`` (static)."""
        if _is_batch(n):
            raise TraceError("arange over the batch size")
        return self.wrap(np.arange(int(n), dtype=dtype or np.int64))

    def full(self, shape: Any, value: float, dtype: Any = None) -> Traced:
        """A tensor filled with ``value``."""
        return self._filled(shape, value, dtype)

    # -- element-wise --------------------------------------------------------------------------
    def _result_dtype(self, *xs: Any) -> np.dtype:
        args = [x.dtype if isinstance(x, Traced) else x for x in xs]
        args = [np.dtype(a) if isinstance(a, np.dtype) else a for a in args]
        return np.result_type(*args)

    def _elementwise(self, op: str, np_fn: Any, xs: list[Any], dtype: Any = None, cast: bool = True,
                     sign: str | None = None, **attrs: Any) -> Traced:
        """One broadcasting ONNX op over ``xs`` (constants folded)."""
        rdt = np.dtype(dtype) if dtype is not None else self._result_dtype(*xs)
        ts = [self.wrap(x) for x in xs]
        if cast:
            ts = [t if t.dtype == rdt else t.astype(rdt) for t in ts]
        if all(t.const is not None for t in ts):
            return self.wrap(np.asarray(np_fn(*[t.const for t in ts])))
        shape = broadcast_shape(*[t.shape for t in ts])
        out_dtype = rdt
        if op in ("Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal", "And", "Or", "Not", "IsNaN", "IsInf"):
            out_dtype = np.dtype(np.bool_)
        name = self.node(op, [self.name_of(t) for t in ts], **attrs)[0]
        return Traced(self, name, shape, out_dtype, sign=sign)

    def add(self, a: Any, b: Any) -> Traced:
        """``a + b``."""
        if _is_zero_scalar(b) and isinstance(a, Traced):
            return self._keep_or_cast(a, b)
        sign = "nonneg" if _nonneg(a) and _nonneg(b) else None
        return self._elementwise("Add", np.add, [a, b], sign=sign)

    def _keep_or_cast(self, a: Traced, b: Any) -> Traced:
        # x + 0.0 is x except that it turns −0.0 into +0.0, which only the sign bit shows: the tracer's copysign
        # tests ``< 0`` (−0.0 counts as positive there already), so the Add is left out
        if np.result_type(a.dtype, b) == a.dtype:
            return a.copy()
        return self._elementwise("Add", np.add, [a, b], sign=a.sign)

    def subtract(self, a: Any, b: Any) -> Traced:
        """``a − b``."""
        return self._elementwise("Sub", np.subtract, [a, b])

    def multiply(self, a: Any, b: Any, out: Traced | None = None) -> Traced:
        """``a ⊙ b`` (booleans are cast to the other operand's float type: a Cast and a Mul run several times
        faster in onnxruntime than one broadcasting Where)."""
        a, b = self._bool_to_float(a, b)
        sign = "nonneg" if _nonneg(a) and _nonneg(b) else None
        r = self._elementwise("Mul", np.multiply, [a, b], sign=sign)
        return r if out is None else self._store(out, r)

    def _bool_to_float(self, a: Any, b: Any) -> tuple[Any, Any]:
        da = a.dtype if isinstance(a, (Traced, np.ndarray)) else None
        db = b.dtype if isinstance(b, (Traced, np.ndarray)) else None
        if da == np.bool_ and db is not None and db != np.bool_:
            a = self.astype(self.wrap(a), db)
        elif db == np.bool_ and da is not None and da != np.bool_:
            b = self.astype(self.wrap(b), da)
        elif da == np.bool_ and db is None:
            a = self.astype(self.wrap(a), np.float32)
        elif db == np.bool_ and da is None:
            b = self.astype(self.wrap(b), np.float32)
        return a, b

    def _store(self, out: Traced, r: Traced) -> Traced:
        """NumPy's ``out=``: the result lands in ``out`` (in its shape and dtype)."""
        r = r.astype(out.dtype)
        if r.shape != out.shape:
            r = self.broadcast_to(r, out.shape)
        return out._rebind(r)

    def divide(self, a: Any, b: Any) -> Traced:
        """``a / b``."""
        return self._elementwise("Div", np.divide, [a, b])

    true_divide = divide

    def power(self, a: Any, b: Any) -> Traced:
        """``a ** b``."""
        if isinstance(b, (int, float)) and b == 2:
            return self.multiply(a, a)
        return self._elementwise("Pow", np.power, [a, b])

    def negative(self, a: Any) -> Traced:
        """``−a``."""
        return self._elementwise("Neg", np.negative, [a])

    def abs(self, a: Any) -> Traced:
        """``|a|``."""
        return self._elementwise("Abs", np.abs, [a], sign="nonneg")

    absolute = abs

    def maximum(self, a: Any, b: Any) -> Traced:
        """Element-wise maximum."""
        if _is_zero_scalar(b) and _nonneg(a) and isinstance(a, Traced):
            return a.copy()
        sign = "nonneg" if _nonneg(a) or _nonneg(b) or _is_zero_scalar(b) or _is_zero_scalar(a) else None
        return self._elementwise("Max", np.maximum, [a, b], sign=sign)

    def minimum(self, a: Any, b: Any) -> Traced:
        """Element-wise minimum."""
        return self._elementwise("Min", np.minimum, [a, b])

    def exp(self, a: Any) -> Traced:
        """``exp(a)``."""
        return self._elementwise("Exp", np.exp, [a], sign="nonneg")

    def log(self, a: Any) -> Traced:
        """``log(a)``."""
        return self._elementwise("Log", np.log, [a])

    def log1p(self, a: Any) -> Traced:
        """``log(1 + a)``."""
        t = self.wrap(a)
        if t.const is not None:
            return self.wrap(np.log1p(t.const))
        return self.log(self.add(t, np.asarray(1.0, t.dtype)))

    def expm1(self, a: Any) -> Traced:
        """``exp(a) − 1``."""
        t = self.wrap(a)
        if t.const is not None:
            return self.wrap(np.expm1(t.const))
        return self.subtract(self.exp(t), np.asarray(1.0, t.dtype))

    def sqrt(self, a: Any) -> Traced:
        """``√a``."""
        return self._elementwise("Sqrt", np.sqrt, [a], sign="nonneg")

    def tanh(self, a: Any) -> Traced:
        """``tanh(a)``."""
        return self._elementwise("Tanh", np.tanh, [a])

    def erf(self, a: Any) -> Traced:
        """The error function."""
        import math as _m

        return self._elementwise("Erf", np.vectorize(_m.erf), [a])

    def sign(self, a: Any) -> Traced:
        """``sign(a)`` (0 at 0)."""
        return self._elementwise("Sign", np.sign, [a])

    def reciprocal(self, a: Any) -> Traced:
        """``1 / a``."""
        return self.divide(np.asarray(1.0, dtype=self._result_dtype(a)), a)

    def square(self, a: Any) -> Traced:
        """``a²``."""
        return self.multiply(a, a)

    def clip(self, a: Any, lo: Any, hi: Any) -> Traced:
        """``min(max(a, lo), hi)``."""
        r = a
        if lo is not None:
            r = self.maximum(r, lo)
        if hi is not None:
            r = self.minimum(r, hi)
        return r

    def copysign(self, a: Any, b: Any, out: Traced | None = None) -> Traced:
        """``|a|`` with the sign of ``b`` (``b ≥ +0`` is positive; −0 counts as negative as in NumPy)."""
        dt = self._result_dtype(a, b)
        mag = self.abs(a) if isinstance(a, Traced) else self.wrap(np.abs(np.asarray(a, dtype=dt)))
        neg = self.compare("Less", b, 0)  # −0.0 counts as positive (the rules add +0.0 before copysign)
        r = self.where(neg, self.negative(mag), mag)
        return r if out is None else self._store(out, r)

    def compare(self, op: str, a: Any, b: Any) -> Traced:
        """A comparison (boolean result; ``x < 0`` of a non-negative tensor is known false)."""
        sign = None
        if _is_zero_scalar(b) and _nonneg(a):
            sign = {"Less": "all_false", "GreaterOrEqual": "all_true"}.get(op)
        np_fn = {"Greater": np.greater, "Less": np.less, "GreaterOrEqual": np.greater_equal,
                 "LessOrEqual": np.less_equal, "Equal": np.equal}[op]
        return self._elementwise(op, np_fn, [a, b], sign=sign)

    def logical_not(self, a: Any) -> Traced:
        """``~a``."""
        t = self.wrap(a)
        sign = {"all_false": "all_true", "all_true": "all_false"}.get(t.sign or "")
        return self._elementwise("Not", np.logical_not, [t], cast=False, dtype=np.bool_, sign=sign)

    def logical(self, op: str, a: Any, b: Any) -> Traced:
        """``a & b`` or ``a | b`` of booleans."""
        fn = np.logical_and if op == "And" else np.logical_or
        return self._elementwise(op, fn, [self.wrap(a, np.bool_), self.wrap(b, np.bool_)], cast=False,
                                 dtype=np.bool_)

    def greater(self, a: Any, b: Any) -> Traced:
        """``a > b``."""
        return self.compare("Greater", a, b)

    def less(self, a: Any, b: Any) -> Traced:
        """``a < b``."""
        return self.compare("Less", a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Traced:
        """``a`` where ``cond``, else ``b``."""
        c = self.wrap(cond)
        if c.sign == "all_true":
            return self._broadcast_value(a, b, c)
        if c.sign == "all_false":
            return self._broadcast_value(b, a, c)
        dt = self._result_dtype(a, b)
        ta, tb = self.wrap(a).astype(dt), self.wrap(b).astype(dt)
        if c.const is not None and ta.const is not None and tb.const is not None:
            return self.wrap(np.where(c.const, ta.const, tb.const))
        shape = broadcast_shape(c.shape, ta.shape, tb.shape)
        name = self.node("Where", [self.name_of(c), self.name_of(ta), self.name_of(tb)])[0]
        return Traced(self, name, shape, dt)

    def _broadcast_value(self, a: Any, other: Any, c: Traced) -> Traced:
        dt = self._result_dtype(a, other)
        ta = self.wrap(a).astype(dt)
        shape = broadcast_shape(c.shape, ta.shape, self.wrap(other).shape)
        return ta.copy() if ta.shape == shape else self.broadcast_to(ta, shape)

    def astype(self, t: Traced, dtype: Any) -> Traced:
        """Cast ``t`` to ``dtype``."""
        dtype = np.dtype(dtype)
        if t.dtype == dtype:
            return t
        if t.const is not None:
            return self.wrap(t.const.astype(dtype))
        name = self.node("Cast", [t.name], to=_ONNX_TYPE[dtype])[0]  # type: ignore[list-item]
        return Traced(self, name, t.shape, dtype, sign=t.sign if dtype.kind == "f" else None)

    # -- shape ---------------------------------------------------------------------------------
    def reshape(self, t: Any, shape: Sequence[int]) -> Traced:
        """Reshape, with the batch-carrying entry left to the runtime."""
        t = self.wrap(t)
        shape = [int(d) for d in shape]
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            shape[shape.index(-1)] = t.size // known if known else 0
        if math.prod(shape) != t.size:
            raise TraceError(f"cannot reshape {list(t.shape)} to {shape}")
        if tuple(shape) == t.shape:
            return t
        if t.const is not None:
            return self.wrap(t.const.reshape(shape))
        name = self.node("Reshape", [t.name, self.dims(shape, allow_minus_one=True)])[0]  # type: ignore[list-item]
        return Traced(self, name, shape, t.dtype, sign=t.sign)

    def transpose(self, t: Any, axes: Sequence[int] | None = None) -> Traced:
        """Permute axes."""
        t = self.wrap(t)
        perm = list(range(t.ndim))[::-1] if axes is None else [int(a) % t.ndim for a in axes]
        if perm == list(range(t.ndim)):
            return t
        if t.const is not None:
            return self.wrap(np.ascontiguousarray(t.const.transpose(perm)))
        name = self.node("Transpose", [t.name], perm=perm)[0]  # type: ignore[list-item]
        return Traced(self, name, [t.shape[p] for p in perm], t.dtype, sign=t.sign)

    def broadcast_to(self, t: Any, shape: Sequence[int]) -> Traced:
        """Broadcast to ``shape``."""
        t = self.wrap(t)
        shape = tuple(int(d) for d in shape)
        if t.shape == shape:
            return t
        if t.const is not None and not any(_is_batch(d) for d in shape):
            return self.wrap(np.broadcast_to(t.const, shape).copy())
        broadcast_shape(t.shape, shape)
        name = self.node("Expand", [self.name_of(t), self.dims(shape)])[0]
        return Traced(self, name, shape, t.dtype, sign=t.sign)

    def expand_dims(self, t: Any, axis: int) -> Traced:
        """Insert an axis of length 1."""
        t = self.wrap(t)
        axis = axis % (t.ndim + 1)
        return self.reshape(t, t.shape[:axis] + (1,) + t.shape[axis:])

    def concatenate(self, ts: Sequence[Any], axis: int = 0) -> Traced:
        """Join along ``axis``."""
        ts = [self.wrap(t) for t in ts]
        dt = self._result_dtype(*ts)
        ts = [t.astype(dt) for t in ts]
        axis = axis % ts[0].ndim
        if all(t.const is not None for t in ts):
            return self.wrap(np.concatenate([t.const for t in ts], axis=axis))
        shape = list(ts[0].shape)
        shape[axis] = sum(t.shape[axis] for t in ts)
        name = self.node("Concat", [self.name_of(t) for t in ts], axis=axis)[0]
        return Traced(self, name, shape, dt)

    def stack(self, ts: Sequence[Any], axis: int = 0) -> Traced:
        """Stack along a new axis."""
        return self.concatenate([self.expand_dims(t, axis) for t in ts], axis=axis)

    def pad(self, t: Any, width: Sequence[tuple[int, int]], mode: str = "constant", constant_values: float = 0.0
            ) -> Traced:
        """Constant padding."""
        t = self.wrap(t)
        if mode != "constant":
            raise TraceError(f"pad mode {mode!r}")
        pads = [int(w[0]) for w in width] + [int(w[1]) for w in width]
        if not any(pads):
            return t
        if t.const is not None:
            return self.wrap(np.pad(t.const, width, mode="constant", constant_values=constant_values))
        shape = [d + int(w[0]) + int(w[1]) for d, w in zip(t.shape, width, strict=True)]
        value = self.const_name(np.asarray(constant_values, dtype=t.dtype))
        name = self.node("Pad", [t.name, self.const_name(np.asarray(pads, np.int64)), value])[0]  # type: ignore[list-item]
        return Traced(self, name, shape, t.dtype)

    def getitem(self, t: Traced, key: Any) -> Traced:
        """Basic indexing: integers, slices (any step), ``...`` and ``None``."""
        if t.const is not None and not isinstance(key, Traced):
            return self.wrap(np.asarray(t.const[key]))
        if not isinstance(key, tuple):
            key = (key,)
        if any(isinstance(k, (Traced, np.ndarray, list)) for k in key):
            raise TraceError("advanced (array) indexing of a traced tensor")
        n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (t.ndim - n_real) + key[i + 1:]
        else:
            key = key + (slice(None),) * (t.ndim - n_real)
        starts, ends, axes, steps, squeeze, new_axes = [], [], [], [], [], []
        out_shape: list[int] = []
        axis = 0
        pos = 0
        for k in key:
            if k is None:
                new_axes.append(pos)
                out_shape.append(1)
                pos += 1
                continue
            d = t.shape[axis]
            if isinstance(k, (int, np.integer)):
                i = int(k) % d
                starts.append(i)
                ends.append(i + 1)
                axes.append(axis)
                steps.append(1)
                squeeze.append(axis)
            else:
                r = range(d)[k]
                if len(r) != d or r.step != 1:
                    starts.append(r.start)
                    stop = r.stop if r.step > 0 or r.stop >= 0 else -(2 ** 62)
                    if r.step > 0 and r.stop >= d:
                        stop = 2 ** 62
                    ends.append(stop)
                    axes.append(axis)
                    steps.append(r.step)
                out_shape.append(len(r))
                pos += 1
            axis += 1
        r = t
        if axes:
            sliced = [t.shape[a] for a in range(t.ndim)]
            for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
                sliced[a] = len(range(t.shape[a])[slice(s, None if abs(e) >= 2 ** 62 else e, st)])
            name = self.node("Slice", [t.name, self.const_name(np.asarray(starts, np.int64)),  # type: ignore[list-item]
                                       self.const_name(np.asarray(ends, np.int64)),
                                       self.const_name(np.asarray(axes, np.int64)),
                                       self.const_name(np.asarray(steps, np.int64))])[0]
            r = Traced(self, name, sliced, t.dtype, sign=t.sign)
        if squeeze or new_axes:
            r = self.reshape(r, out_shape)
        return r

    def setitem(self, t: Traced, key: Any, value: Any) -> None:
        """``t[mask] = value`` for a boolean mask, or ``t[slices] = value`` for unit-step slices (a ``Pad`` of
        the value, merged with ``t`` by a constant mask unless ``t`` is a constant fill)."""
        if isinstance(key, Traced) and key.dtype == np.bool_:
            t._rebind(self.where(key, self.wrap(value).astype(t.dtype), t))
            return
        if not isinstance(key, tuple):
            key = (key,)
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (t.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (t.ndim - len(key))
        if len(key) != t.ndim or not all(isinstance(k, slice) for k in key):
            raise TraceError("assignment into a traced tensor with an index that is not unit-step slices")
        ranges = [range(d)[k] for d, k in zip(t.shape, key, strict=True)]
        if any(r.step < 1 for r in ranges):
            raise TraceError("assignment into a reversed slice of a traced tensor")
        region = tuple(len(r) for r in ranges)
        v = self.wrap(value).astype(t.dtype)
        if v.shape != region:
            v = self.broadcast_to(v, region)
        fill = t.fill
        placed = self._place(v, ranges, t.shape, 0.0 if fill is None else fill)
        if fill is not None:
            t._rebind(placed)
            return
        mask_shape = tuple(1 if _is_batch(d) and len(r) == d else d for d, r in zip(t.shape, ranges, strict=True))
        mask = np.zeros(mask_shape, bool)
        mask[tuple(slice(0, 1) if m == 1 and _is_batch(d) else slice(r.start, r.stop, r.step)
                   for m, d, r in zip(mask_shape, t.shape, ranges, strict=True))] = True
        t._rebind(self.where(mask, placed, t))

    def _place(self, v: Traced, ranges: list[range], shape: tuple[int, ...], fill: float) -> Traced:
        """``v`` written at positions ``ranges`` (positive steps) of a tensor of ``shape`` filled with ``fill``."""
        for a, r in enumerate(ranges):
            if r.step > 1 and len(r) > 1:  # interleave step−1 fill values after every element, drop the tail
                n = len(r)
                e = self.expand_dims(v, a + 1)
                gap = self.full(e.shape[: a + 1] + (r.step - 1,) + e.shape[a + 2:], fill, v.dtype)
                inter = self.concatenate([e, gap], axis=a + 1)
                inter = self.reshape(inter, v.shape[:a] + (n * r.step,) + v.shape[a + 1:])
                key = (slice(None),) * a + (slice(0, (n - 1) * r.step + 1),)
                v = self.getitem(inter, key)
        widths = []
        for d, r, cur in zip(shape, ranges, v.shape, strict=True):
            begin = r.start if len(r) else 0
            widths.append((begin, d - begin - cur))
        return self.pad(v, widths, constant_values=fill)

    # -- reductions ----------------------------------------------------------------------------
    def _axes(self, t: Traced, axis: Any) -> list[int]:
        if axis is None:
            return list(range(t.ndim))
        if isinstance(axis, (int, np.integer)):
            axis = (axis,)
        return sorted(int(a) % t.ndim for a in axis)

    def reduce(self, op: str, t: Any, axis: Any = None, keepdims: bool = False, dtype: Any = None) -> Traced:
        """``ReduceSum``/``ReduceMax``/``ReduceMin``/``ReduceMean`` over ``axis``."""
        t = self.wrap(t)
        if dtype is not None:
            t = t.astype(dtype)
        axes = self._axes(t, axis)
        np_fn = {"ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min, "ReduceMean": np.mean}[op]
        if t.const is not None:
            return self.wrap(np.asarray(np_fn(t.const, axis=tuple(axes), keepdims=keepdims)))
        if not axes:
            return t
        shape = [1 if a in axes else d for a, d in enumerate(t.shape)] if keepdims else [
            d for a, d in enumerate(t.shape) if a not in axes]
        if self.opset >= 18 or op == "ReduceSum" and self.opset >= 13:
            name = self.node(op, [t.name, self.const_name(np.asarray(axes, np.int64))],  # type: ignore[list-item]
                             keepdims=int(keepdims))[0]
        else:
            name = self.node(op, [t.name], axes=axes, keepdims=int(keepdims))[0]  # type: ignore[list-item]
        sign = t.sign if op != "ReduceSum" or t.sign == "nonneg" else None
        return Traced(self, name, shape, t.dtype, sign=sign)

    def sum(self, t: Any, axis: Any = None, keepdims: bool = False, dtype: Any = None) -> Traced:
        """Sum over ``axis``."""
        return self.reduce("ReduceSum", t, axis, keepdims, dtype)

    def mean(self, t: Any, axis: Any = None, keepdims: bool = False, dtype: Any = None) -> Traced:
        """Mean over ``axis``."""
        return self.reduce("ReduceMean", t, axis, keepdims, dtype)

    def max(self, t: Any, axis: Any = None, keepdims: bool = False) -> Traced:
        """Maximum over ``axis``."""
        return self.reduce("ReduceMax", t, axis, keepdims)

    amax = max

    def min(self, t: Any, axis: Any = None, keepdims: bool = False) -> Traced:
        """Minimum over ``axis``."""
        return self.reduce("ReduceMin", t, axis, keepdims)

    amin = min

    def argmax(self, t: Any, axis: int = -1) -> Traced:
        """Index of the first maximum along ``axis``."""
        t = self.wrap(t)
        axis = axis % t.ndim
        if t.const is not None:
            return self.wrap(np.argmax(t.const, axis=axis))
        name = self.node("ArgMax", [t.name], axis=axis, keepdims=0, select_last_index=0)[0]  # type: ignore[list-item]
        return Traced(self, name, [d for a, d in enumerate(t.shape) if a != axis], np.int64)

    def static_any(self, mask: Any) -> bool:
        """Whether ``mask`` may be true anywhere: answered from static knowledge, else True (maybe)."""
        m = self.wrap(mask)
        if m.const is not None:
            return bool(np.any(m.const))
        return m.sign != "all_false"

    def any(self, mask: Any) -> Any:
        """Data-dependent: only decidable statically (see :meth:`static_any`)."""
        m = self.wrap(mask)
        if m.const is not None:
            return bool(np.any(m.const))
        if m.sign == "all_false":
            return False
        if m.sign == "all_true":
            return True
        raise TraceError("xp.any() of an input-dependent tensor")

    def isfinite(self, a: Any) -> Traced:
        """Neither NaN nor ±inf."""
        t = self.wrap(a)
        if t.const is not None:
            return self.wrap(np.isfinite(t.const))
        bad = self.logical("Or", self._elementwise("IsNaN", np.isnan, [t], cast=False, dtype=np.bool_),
                           self._elementwise("IsInf", np.isinf, [t], cast=False, dtype=np.bool_))
        return self.logical_not(bad)

    def swapaxes(self, a: Any, i: int, j: int) -> Traced:
        """Exchange axes ``i`` and ``j``."""
        return self.wrap(a).swapaxes(i % self.wrap(a).ndim, j % self.wrap(a).ndim)

    def moveaxis(self, a: Any, src: int, dst: int) -> Traced:
        """Move axis ``src`` to position ``dst``."""
        t = self.wrap(a)
        perm = [i for i in range(t.ndim) if i != src % t.ndim]
        perm.insert(dst % t.ndim, src % t.ndim)
        return self.transpose(t, perm)

    def take(self, a: Any, index: Any, axis: int = 0) -> Traced:
        """``Gather`` of constant indices along ``axis``."""
        t, idx = self.wrap(a), np.asarray(self.wrap(index).const if isinstance(index, Traced) else index)
        if t.const is not None:
            return self.wrap(np.take(t.const, idx, axis=axis))
        axis = axis % t.ndim
        name = self.node("Gather", [t.name, self.const_name(idx.astype(np.int64))], axis=axis)[0]  # type: ignore[list-item]
        return Traced(self, name, t.shape[:axis] + idx.shape + t.shape[axis + 1:], t.dtype, sign=t.sign)

    def tile(self, a: Any, reps: Sequence[int]) -> Traced:
        """Repeat the tensor ``reps`` times along each axis."""
        t = self.wrap(a)
        reps = [int(r) for r in reps]
        reps = [1] * (t.ndim - len(reps)) + reps
        if t.const is not None:
            return self.wrap(np.tile(t.const, reps))
        name = self.node("Tile", [t.name, self.const_name(np.asarray(reps, np.int64))])[0]  # type: ignore[list-item]
        return Traced(self, name, [d * r for d, r in zip(t.shape, reps, strict=True)], t.dtype, sign=t.sign)

    def tensordot(self, a: Any, b: Any, axes: Any) -> Traced:
        """``tensordot`` over one pair of axes, as an ``Einsum``."""
        ta, tb = self.wrap(a), self.wrap(b)
        ia, ib = axes
        ia = [int(i) % ta.ndim for i in (ia if isinstance(ia, (list, tuple)) else [ia])]
        ib = [int(i) % tb.ndim for i in (ib if isinstance(ib, (list, tuple)) else [ib])]
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        la = [next(letters) for _ in range(ta.ndim)]
        lb = [next(letters) for _ in range(tb.ndim)]
        for i, j in zip(ia, ib, strict=True):
            lb[j] = la[i]
        out = [c for k, c in enumerate(la) if k not in ia] + [c for k, c in enumerate(lb) if k not in ib]
        return self.einsum(f"{''.join(la)},{''.join(lb)}->{''.join(out)}", ta, tb)

    def native_gather_vjp(self, g: Any, in_shape: Sequence[int], axis: int, index: np.ndarray) -> Traced:
        """Add ``g`` (``(K,) + gathered shape``) back at the gathered positions (repeats add up)."""
        tg = self.wrap(g)
        k = tg.shape[0]
        shape = tuple(int(d) for d in in_shape)
        idx = np.asarray(index, np.int64).reshape(-1)
        if self.fixed_batch is None and (_is_batch(idx.size) or _is_batch(shape[axis])):
            raise BatchDependent(f"a gather along an axis that holds the batch ({list(shape)}, axis {axis})")
        pre = math.prod(shape[:axis])
        post = math.prod(shape[axis + 1:])
        g4 = self.reshape(tg, (k, pre, idx.size, post))
        ind = self.broadcast_to(self.wrap(idx.reshape(1, 1, -1, 1)), g4.shape)
        zeros = self.zeros((k, pre, shape[axis], post), tg.dtype)
        name = self.node("ScatterElements", [self.name_of(zeros), self.name_of(ind), self.name_of(g4)], axis=2,
                         reduction="add")[0]
        return self.reshape(Traced(self, name, zeros.shape, tg.dtype), (k,) + shape)

    # -- matrix products -----------------------------------------------------------------------
    def matmul(self, a: Any, b: Any) -> Traced:
        """Matrix product with NumPy's broadcasting of the leading axes."""
        ta, tb = self.wrap(a), self.wrap(b)
        dt = self._result_dtype(ta, tb)
        ta, tb = ta.astype(dt), tb.astype(dt)
        if ta.const is not None and tb.const is not None:
            return self.wrap(np.matmul(ta.const, tb.const))
        if ta.ndim < 2 or tb.ndim < 2:
            raise TraceError("matmul of a vector")
        lead = broadcast_shape(ta.shape[:-2], tb.shape[:-2])
        shape = tuple(lead) + (ta.shape[-2], tb.shape[-1])
        name = self.node("MatMul", [self.name_of(ta), self.name_of(tb)])[0]
        return Traced(self, name, shape, dt)

    def einsum(self, spec: str, *ops: Any) -> Traced:
        """``Einsum`` (output shape from the spec)."""
        ts = [self.wrap(o) for o in ops]
        if all(t.const is not None for t in ts):
            return self.wrap(np.einsum(spec, *[t.const for t in ts]))
        lhs, rhs = spec.replace(" ", "").split("->")
        sizes: dict[str, int] = {}
        for term, t in zip(lhs.split(","), ts, strict=True):
            for ch, d in zip(term, t.shape, strict=True):
                sizes[ch] = max(sizes.get(ch, 1), d)
        dt = self._result_dtype(*ts)
        name = self.node("Einsum", [self.name_of(t.astype(dt)) for t in ts], equation=spec)[0]
        return Traced(self, name, [sizes[ch] for ch in rhs], dt)


def weight_key(a: np.ndarray) -> tuple[Any, ...]:
    """``(shape, sha1 of the bytes)`` of a float32 array: equal keys, equal arrays."""
    import hashlib

    return tuple(a.shape), hashlib.sha1(np.ascontiguousarray(a).view(np.uint8)).hexdigest()


def _is_zero_scalar(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool) and float(x) == 0.0


def _nonneg(x: Any) -> bool:
    if isinstance(x, Traced):
        if x.const is not None:
            return bool(np.all(x.const >= 0))
        return x.sign == "nonneg"
    if isinstance(x, np.ndarray):
        return bool(np.all(x >= 0))
    if isinstance(x, (int, float, np.floating, np.integer)):
        return float(x) >= 0
    return False
