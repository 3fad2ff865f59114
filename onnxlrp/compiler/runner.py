"""Run a compiled explanation graph with the interface of :class:`~onnxlrp.Explainer`.

``onnxlrp explain model.explain.onnx image.jpg`` and ``onnxlrp info`` use this when the model
file carries ``onnxlrp.method`` in its metadata (it was written by ``onnxlrp compile``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx

from ..backend import get_backend
from ..errors import InputError, ModelLoadError
from ..inputs import InputPlan, check_feeds
from ..loading import load_model
from ..options import check_targets
from ..runtime import make_session, ort_message
from .build import HEATMAP, LOGITS, TARGET

METHOD_KEY = "onnxlrp.method"


def is_compiled(model: onnx.ModelProto) -> bool:
    """True for a model written by :func:`~onnxlrp.compiler.compile_explanation`."""
    return any(p.key == METHOD_KEY for p in model.metadata_props)


class CompiledExplainer:
    """A compiled explanation graph: ``predict`` and ``explain`` as :class:`~onnxlrp.Explainer` has them.

    The method, its options and the number of targets per call were fixed when the graph was
    compiled; ``explain`` refuses another method or options, and runs the graph once per target
    row when it was compiled for one target per sample.
    """

    def __init__(self, model: str | os.PathLike[str] | bytes | onnx.ModelProto, device: str = "auto",
                 threads: int | None = None) -> None:
        proto = load_model(model)
        meta = {p.key: p.value for p in proto.metadata_props}
        if METHOD_KEY not in meta:
            raise ModelLoadError("this model was not written by `onnxlrp compile` (no onnxlrp.method metadata)")
        outs = [o.name for o in proto.graph.output]
        if outs[:2] != [LOGITS, HEATMAP]:
            raise ModelLoadError(f"a compiled explanation graph has the outputs logits and heatmap, not {outs}")
        self.method: str = meta[METHOD_KEY]
        self.metadata: dict[str, str] = meta
        spec = meta.get("onnxlrp.targets", "1")
        self.predicted = spec == "predicted"
        self.k = 1 if self.predicted else int(spec)
        inits = {t.name for t in proto.graph.initializer}
        ins = [i for i in proto.graph.input if i.name not in inits]
        self.input_name: str = ins[0].name
        dims = ins[0].type.tensor_type.shape.dim
        self.input_shape: list[int | None] = [int(d.dim_value) if d.HasField("dim_value") else None for d in dims]
        self.fixed_batch: int | None = self.input_shape[0]
        # a text model's graph takes its own inputs (ids, masks, token types) by name
        self.inputs: dict[str, np.dtype] = {
            i.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
            for i in ins if i.name != TARGET}
        self.tokens: bool = len(self.inputs) > 1 or self.inputs[self.input_name].kind != "f"
        self._plan = InputPlan(self.input_name, self.input_name, "embedding" if self.tokens else "float",
                               [n for n in self.inputs if n != self.input_name], "the compiled graph's inputs",
                               dict(self.inputs), {i.name: len(i.type.tensor_type.shape.dim) for i in ins})
        self.input_plan = None
        self.prepared = SimpleNamespace(model=proto, softmax_stripped=None)  # what the CLI's helpers read
        self.backend = get_backend(device)
        self.session = make_session(proto, self.backend, threads, prepack=False)

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"``."""
        return self.backend.device

    def _feeds(self, x: Any) -> tuple[dict[str, Any], int]:
        """The graph's inputs for ``x`` (an array, or for a text graph a dict by input name) and the batch size."""
        if not self.tokens:
            if isinstance(x, Mapping):
                raise InputError(f"this compiled graph takes one array ({self.input_name!r}), not a dict")
            arr = np.ascontiguousarray(x, dtype=np.float32)
            return {self.input_name: arr}, arr.shape[0]
        if not isinstance(x, Mapping):
            raise InputError(f"this compiled graph explains a text model: pass a dict of arrays by input name "
                             f"({', '.join(self.inputs)})")
        # the Explainer's checks and defaults (a missing mask all ones, another input zeros)
        feed: dict[str, Any] = dict(check_feeds(self._plan, x))
        ref = feed[self.input_name].shape
        return feed, int(ref[0]) if ref else 0

    def _run(self, x: Any, target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        feed, n = self._feeds(x)
        if not self.predicted:
            if target is None:
                target = np.zeros((n,) if self.k == 1 else (n, self.k), np.int64)
            feed[TARGET] = np.ascontiguousarray(target, dtype=np.int64)
        if self.fixed_batch == 1 and n > 1:  # a graph compiled for batch 1 runs the samples one at a time
            parts = [self._run_feed({k: v[i:i + 1] for k, v in feed.items()}) for i in range(n)]
            axis = 1 if self.k > 1 and not self.predicted else 0
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts], axis=axis))
        if self.fixed_batch is not None and n != self.fixed_batch:
            raise InputError(f"this graph was compiled for batch {self.fixed_batch}, not {n}")
        return self._run_feed(feed)

    def _run_feed(self, feed: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        try:
            logits, heat = self.session.run([LOGITS, HEATMAP], feed)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are not OnnxLrpErrors
            raise InputError(f"the compiled graph could not run on this input: {ort_message(exc)}") from None
        return np.asarray(logits), np.asarray(heat)

    def predict(self, x: Any) -> np.ndarray:
        """The class scores ``(N, classes)`` (before a softmax the original model ends with)."""
        logits = self._run(x, None)[0]
        return logits.reshape(logits.shape[0], -1)

    def explain(self, x: Any, target: int | Sequence[int] | None = None, method: str | None = None, *,
                targets: Sequence[int] | np.ndarray | None = None, relu: bool = False, **options: Any) -> np.ndarray:
        """Heatmaps as :meth:`onnxlrp.Explainer.explain` returns them, from the compiled graph."""
        if method is not None and method != self.method:
            raise InputError(f"this compiled graph explains with {self.method!r} only, not {method!r}; "
                             "compile the model for that method, or explain the original model")
        if options:
            raise InputError(f"the options of a compiled graph are fixed ({self.metadata.get('onnxlrp.options')}); "
                             f"got {', '.join(options)}")
        if not self.tokens:
            x = np.asarray(x, dtype=np.float32)
        n = self._feeds(x)[1]
        if self.predicted:
            logits, heat = self._run(x, None)
            if target is not None or targets is not None:
                tg = check_targets(target, targets, n, logits.shape[1], None)
                if np.any(tg != logits.reshape(n, -1).argmax(axis=1)[None]):
                    raise InputError("this graph was compiled to explain each sample's predicted class only")
            heat = heat[None]
        else:
            logits = self.predict(x) if target is None and targets is None else None
            c = (logits if logits is not None else self.predict(x)).shape[1]
            tg = check_targets(target, targets, n, c, logits)
            if self.k == tg.shape[0]:
                heat = self._run(x, tg.T if self.k > 1 else tg[0])[1]
                heat = heat if self.k > 1 else heat[None]
            elif self.k == 1:
                heat = np.stack([self._run(x, row)[1] for row in tg])
            else:
                raise InputError(f"this graph was compiled for {self.k} targets per sample, not {tg.shape[0]}")
        if relu:
            heat = np.maximum(heat, 0)
        if not np.all(np.isfinite(heat)):
            raise InputError(f"{self.method}: the heatmap overflowed float32 on this input; a map with NaN or "
                             "infinite values is never returned")
        return heat if targets is not None else heat[0]


__all__ = ["CompiledExplainer", "is_compiled"]
