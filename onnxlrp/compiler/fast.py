"""The Explainer's fast path: propagation and gradient methods through a compiled graph.

On the CPU one onnxruntime session running the compiled forward + backward is faster than the engine's
layer-by-layer backward (``benchmarks/bench.py``, benchmarks/RESULTS.md: 1.4–2.9× on EfficientNet-Lite0,
1.1–1.8× on ResNet50, about even on VGG16, whose large convolutions dominate both). :class:`FastPath`
compiles a method once per (method, options, targets per sample, input shape), keeps a few
sessions, and returns what :func:`onnxlrp.propagation.propagate` returns, with the same checks
(non-finite scores or relevance refused, the blow-up warning) from the graph's diagnostic output.
Anything the compiler refuses runs on the engine instead.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import InputError
from ..graph import PreparedModel
from ..methods import Method, start_relevance
from ..propagation import check_blow_up, check_logits, normalised
from ..runtime import make_session
from .build import HEATMAP, LOGITS, TARGET, TOTALS, compile_prepared

_MAX_SESSIONS = 3  # graphs kept per Explainer (each holds the modified weights and its activation arena)


def _key(m: Method, x_shape: tuple[int, ...], t_count: int | None, opts: dict[str, Any]) -> tuple[Any, ...]:
    """One compiled graph per method, input shape (batch included: graphs are compiled for one batch size, exact
    shapes everywhere), number of targets and options."""
    parts = []
    for k, v in sorted(opts.items()):
        if isinstance(v, np.ndarray):
            v = (v.shape, hashlib.sha1(np.ascontiguousarray(v[:1])).hexdigest())
        parts.append((k, v))
    return m.name, tuple(x_shape), t_count, tuple(parts)


class FastPath:
    """Compiled sessions for one prepared model (CPU)."""

    def __init__(self, prepared: PreparedModel, threads: int | None = None) -> None:
        self.prepared = prepared
        self.threads = threads
        self._sessions: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._refused: set[tuple[Any, ...]] = set()

    def _session(self, m: Method, x: np.ndarray, t_count: int | None, opts: dict[str, Any]) -> Any:
        """The session for this call's key, compiled on first use; None where the compiler refuses."""
        key = _key(m, x.shape, t_count, opts)
        if key in self._refused:
            return None
        sess = self._sessions.get(key)
        if sess is not None:
            self._sessions.move_to_end(key)
            return sess
        if any(isinstance(v, np.ndarray) and v.shape[0] > 1 and not np.all(v == v[:1]) for v in opts.values()):
            self._refused.add(key)  # per-sample Z^B boxes: the compiled graph holds one box as a constant
            return None
        baked = {k: (v[:1] if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
        try:
            proto = compile_prepared(self.prepared, m.name, tuple(x.shape[1:]), t_count or 1, t_count is None, baked,
                                     diagnostics=True, batch=x.shape[0])
            sess = make_session(proto, None, self.threads, self.prepared.weights, prepack=False)
        except Exception:  # noqa: BLE001 - whatever the compiler refuses or fails on runs on the engine
            self._refused.add(key)
            return None
        self._sessions[key] = sess
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sess

    def propagate(self, m: Method, x: np.ndarray, tg: np.ndarray | None, opts: dict[str, Any]) -> np.ndarray | None:
        """Heatmaps ``(T,) + x.shape`` as :func:`onnxlrp.propagation.propagate` computes them, or None when this
        call cannot run compiled (the caller then runs the engine)."""
        fixed = self.prepared.input_dims[0] if self.prepared.input_dims else None
        if fixed is not None and x.shape[0] != fixed:
            return None
        sess = self._session(m, x, None if tg is None else tg.shape[0], opts)
        if sess is None:
            return None
        feed: dict[str, Any] = {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        if tg is not None:
            feed[TARGET] = np.ascontiguousarray(tg[0] if tg.shape[0] == 1 else tg.T, dtype=np.int64)
        try:
            logits, heat, totals = sess.run([LOGITS, HEATMAP, TOTALS], feed)
        except Exception:  # noqa: BLE001 - a graph onnxruntime cannot run: this key runs on the engine from now on
            key = _key(m, x.shape, None if tg is None else tg.shape[0], opts)
            self._sessions.pop(key, None)
            self._refused.add(key)
            return None
        logits = np.asarray(logits).reshape(x.shape[0], -1)
        check_logits(logits)
        if tg is None:
            tg = logits.argmax(axis=1)[None]
        if not np.all(np.isfinite(totals)):
            big = float(np.abs(x).max())
            raise InputError(
                f"{m.name}: the relevance overflowed float32 on this input (largest |x| = {big:.3g});"
                " a heatmap with NaN or infinite values is never returned. Scale the input to the range the model "
                "was trained on (or, for a model with attention, give every sequence at least one unmasked token: a "
                "softmax over masked keys only is NaN)")
        if m.family == "lrp":
            start, _ = normalised(start_relevance(m.start, logits, tg))
            check_blow_up(m.name, np.asarray(totals), np.abs(start).sum(axis=2))
        heat = np.asarray(heat)
        return heat[None] if heat.ndim == x.ndim else heat


__all__ = ["FastPath"]
