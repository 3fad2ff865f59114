"""The forward pass through onnxruntime, exposing the intermediate tensors the backward needs."""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .backend import Backend
from .errors import DeviceError, InputError, UnsupportedModelError


def onnxruntime() -> Any:
    """The onnxruntime module, or a clear error saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeviceError(
            "onnxruntime is not installed: pip install 'onnxlrp[cpu]' (or 'onnxlrp[gpu]' for onnxruntime-gpu + CuPy)"
        ) from None
    return ort


def providers_for(backend: Backend) -> list[str]:
    """onnxruntime execution providers for the backend: CUDA only when asked for and present."""
    ort = onnxruntime()

    if backend.is_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model: onnx.ModelProto, backend: Backend | None = None, threads: int | None = None,
                 weights: dict[str, np.ndarray] | None = None, basic: bool = False,
                 optimized_path: str | None = None, prepack: bool = True) -> Any:
    """An onnxruntime InferenceSession for ``model`` (quiet logging, no spin-waiting).

    ``weights`` supplies the data of the model's stub initializers (see
    :func:`onnxlrp.graph.detach_weights`) as external initializers, without a serialised copy (the
    session keeps the buffers alive; onnxruntime 1.32 still copies them into buffers of its own).
    ``basic`` selects the basic optimisation level (standard ONNX ops only) instead of all;
    ``optimized_path`` writes the optimised model there.
    ``prepack=False`` keeps onnxruntime from pre-packing weights into copies of its own (a compiled
    explanation graph reads the classifier weight twice, forward and transposed, and would hold two
    packed copies besides the fed buffer: VGG16 ε 1394 → 886 MB resident after a run,
    ``python benchmarks/compiled_memory.py``).
    """
    ort = onnxruntime()
    so = session_options(threads)
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if basic else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    kept = []
    if weights:
        names = []
        for t in model.graph.initializer:
            if t.name in weights and t.data_location == onnx.TensorProto.EXTERNAL:
                names.append(t.name)
                kept.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(weights[t.name])))
        if names:
            so.add_external_initializers(names, kept)
    providers = providers_for(backend) if backend is not None else ["CPUExecutionProvider"]
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's Fail, InvalidGraph, InvalidProtobuf, NotImplemented...
        raise UnsupportedModelError(f"onnxruntime cannot load the model: {ort_message(exc)}") from None
    sess._onnxlrp_weights = kept  # the session reads these buffers: keep them alive with it
    return sess




def session_options(threads: int | None = None) -> Any:
    """Session options shared by every onnxruntime session of onnxlrp.

    Spinning is off: an explanation alternates between several sessions (the forward, the
    backward's convolution kernels) and NumPy, and idle onnxruntime threads that spin-wait
    steal the cores the next step needs (measured: 20 small sessions run in turn took 340 ms
    with spinning, 23 ms without).
    """
    ort = onnxruntime()
    so = ort.SessionOptions()
    so.log_severity_level = 4  # fatal only: every failure reaches the user as an onnxlrp error instead
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return so


class FeedSession:
    """An onnxruntime session whose fixed inputs (attention masks, token types) are fed with every run.

    ``run(names, inputs)`` runs ``session`` on ``inputs`` plus ``feeds``: one session serves every
    call of a text model, whatever its masks, instead of one model copy and session per mask.
    """

    def __init__(self, session: Any, feeds: dict[str, np.ndarray]) -> None:
        self.session = session
        self.feeds = dict(feeds)

    def run(self, names: list[str] | None, inputs: dict[str, Any]) -> list[Any]:
        """``session.run`` with the fixed feeds added."""
        return self.session.run(names, {**self.feeds, **inputs})

    def get_inputs(self) -> list[Any]:
        """The session's inputs."""
        return self.session.get_inputs()


class Forward:
    """Runs the canonical graph once and returns every tensor the layers read or write."""

    def __init__(self, canonical: onnx.ModelProto, input_name: str, output_name: str, tensors: list[str],
                 backend: Backend, threads: int | None = None, weights: dict[str, np.ndarray] | None = None) -> None:
        m = onnx.ModelProto()
        m.CopyFrom(canonical)
        del m.graph.output[:]
        self.names = [output_name] + [t for t in tensors if t not in (input_name, output_name)]
        for t in self.names:
            m.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
        self.input_name = input_name
        self.output_name = output_name
        self.backend = backend
        self.session = make_session(m, backend, threads, weights)

    def bind(self, feeds: dict[str, np.ndarray]) -> Forward:
        """This forward pass (the same session) with ``feeds`` as the values of the model's other inputs."""
        bound = copy.copy(self)
        base = self.session.session if isinstance(self.session, FeedSession) else self.session
        bound.session = FeedSession(base, feeds)
        return bound

    def run(self, x: np.ndarray) -> dict[str, Any]:
        """All intermediate tensors for input ``x`` (on the backend's device), plus ``x`` itself."""
        outs = run_session(self.session, self.names, self.input_name, x)
        b = self.backend
        acts = {n: b.asarray(v) for n, v in zip(self.names, outs, strict=True)}
        acts[self.input_name] = b.asarray(x)
        return acts


def ort_message(exc: BaseException) -> str:
    """The first line of an onnxruntime exception, with onnxruntime's bracketed status prefix removed."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else exc.__class__.__name__
    line = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*", "", line)
    return line[:500]


_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")


def run_session(session: Any, names: list[str] | None, input_name: str, x: np.ndarray) -> list[Any]:
    """``session.run`` with onnxruntime's failures turned into onnxlrp errors.

    A failure inside a node (an impossible Reshape for this input, a shape mismatch) is an
    :class:`UnsupportedModelError` naming the node, its op type and the input shape; running out
    of memory and any other failure is an :class:`InputError` naming the input shape.
    """
    try:
        return session.run(names, {input_name: x})
    except MemoryError:
        raise InputError(f"not enough memory to run the model on input shape {list(x.shape)}") from None
    except Exception as exc:  # noqa: BLE001 - Fail, InvalidArgument, RuntimeException, NotImplemented...
        msg = ort_message(exc)
        node = _NODE.search(str(exc))
        if "allocat" in msg.lower():
            raise InputError(f"not enough memory to run the model on input shape {list(x.shape)}: {msg}") from None
        if node is not None:
            raise UnsupportedModelError(
                f"onnxruntime failed in node {node.group(2)!r} (op {node.group(1)}) on input shape "
                f"{list(x.shape)}: {msg}"
            ) from None
        raise InputError(f"onnxruntime could not run the model on input shape {list(x.shape)}: {msg}") from None


class BatchOneWarning(UserWarning):
    """The model declares a dynamic batch axis but runs only at batch 1: it is explained one sample at a time."""


def batch_one_reason(plan_for: Any, sample_shape: tuple[int, ...]) -> str | None:
    """Why the model runs only at batch 1, or None when it does not (or fails at batch 1 too).

    Exporters that trace with a one-sample example (``torch.onnx.export(..., dynamo=True)``
    specialises size-1 dimensions) declare the batch axis dynamic but bake 1 into reshapes: the
    graph then cannot be built, or onnxruntime cannot run it, at batch 2. ``plan_for(shape)``
    builds the plan of an input shape (see :class:`onnxlrp.plan.Plan`); the test builds and runs
    the plans of batch 1 and 2 on zeros and compares the number of score rows.
    """
    one = (1,) + tuple(int(d) for d in sample_shape)
    two = (2,) + one[1:]
    try:
        plan = plan_for(one)
        rows = plan.logits(plan.run_forward(np.zeros(one, np.float32))).shape[0]
    except (UnsupportedModelError, InputError):
        return None
    if rows != 1:
        return None
    try:
        plan = plan_for(two)
        rows = plan.logits(plan.run_forward(np.zeros(two, np.float32))).shape[0]
    except (UnsupportedModelError, InputError) as exc:
        return str(exc)
    return None if rows == 2 else f"the output has {rows} row(s) for 2 samples"


def check_input(x: Any, dims: list[int | None], name: str) -> np.ndarray:
    """Validate ``x`` against the model's declared input dims and return it as float32 NumPy."""
    if hasattr(x, "get") and not isinstance(x, np.ndarray):  # a CuPy array
        x = x.get()
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input cannot be converted to a float32 array: {exc}") from None
    if dims and arr.ndim != len(dims):
        raise InputError(
            f"input has shape {list(arr.shape)} but model input {name!r} expects rank {len(dims)} "
            f"({_dims_str(dims)}), batch first"
        )
    for i, (have, want) in enumerate(zip(arr.shape, dims, strict=False)):
        if want is not None and i > 0 and have != want:
            raise InputError(
                f"input has shape {list(arr.shape)} but model input {name!r} expects {_dims_str(dims)}"
            )
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise InputError("input must have a batch axis with at least one sample")
    if not np.all(np.isfinite(arr)):
        raise InputError("input contains NaN or infinite values")
    return np.ascontiguousarray(arr)


def _dims_str(dims: list[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
