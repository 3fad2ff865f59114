"""Check a compiled explanation graph against the engine on random inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from .build import HEATMAP, LOGITS, TARGET

TOLERANCE = 1e-4  # max |diff| / max |engine| allowed at compile time (the tests hold 1e-5 on their fixtures)


def compiled_session(compiled: onnx.ModelProto | str, threads: int | None = None,
                     providers: list[str] | None = None) -> Any:
    """A plain onnxruntime session of a compiled graph (no weight prepacking: see docs/compile.md)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_prepacking", "1")
    if threads:
        so.intra_op_num_threads = threads
    src = compiled if isinstance(compiled, str) else compiled.SerializeToString()
    return ort.InferenceSession(src, so, providers=providers or ["CPUExecutionProvider"])


def run_compiled(compiled: Any, x: np.ndarray, target: np.ndarray | None = None,
                 threads: int | None = None, providers: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run a compiled graph (a ModelProto, a path, or a session of :func:`compiled_session`) in a plain onnxruntime
    session; returns ``(logits, heatmap)``."""
    sess = compiled if hasattr(compiled, "run") else compiled_session(compiled, threads, providers)
    feed = {sess.get_inputs()[0].name: x}
    if target is not None:
        feed[TARGET] = target
    logits, heat = sess.run([LOGITS, HEATMAP], feed)
    return logits, heat


def engine_reference(ex: Any, x: Any, method: str, rng: np.random.Generator, n: int, k: int, predicted: bool,
                     **kw: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, bool] | str:
    """The engine's side of a check on input ``x`` (an array, or a text model's dict of inputs) of ``n`` samples:
    ``(logits, targets, heatmaps, unstable)`` with random targets (``[N]``, ``[N, K]``, or None for the
    predicted class) and the RelevanceWarning flag; or a message saying why the engine could not."""
    import warnings

    from ..errors import OnnxLrpError
    from ..propagation import RelevanceWarning

    try:
        logits = ex.predict(x)
    except OnnxLrpError as exc:
        return f"the engine could not run: {exc}"
    c = logits.shape[1]
    tg = None if predicted else rng.integers(0, c, size=(n,) if k == 1 else (n, k)).astype(np.int64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if predicted or k == 1:
                ref = ex.explain(x, None if predicted else tg, method, **kw)
            else:  # one call per target column: the engine's targets= takes the same classes for every sample
                ref = np.stack([ex.explain(x, tg[:, j], method, **kw) for j in range(k)])
        except OnnxLrpError as exc:
            return f"the engine could not explain the check input: {exc}"
    return logits, tg, ref, any(issubclass(w.category, RelevanceWarning) for w in caught)


def logits_differ(logits: np.ndarray, ref: np.ndarray, n: int) -> str:
    """A message when the compiled graph's logits are not the model's (beyond 1e-3 of their scale), else ''."""
    err = float(np.max(np.abs(logits.reshape(n, -1) - ref.reshape(n, -1))))
    return f"batch {n}: logits differ by {err:.3g}" if err > 1e-3 * max(1.0, float(np.abs(ref).max())) else ""


def verify_compiled(compiled: onnx.ModelProto, prepared: Any, method: str, sample: tuple[int, ...],
                    fixed: int | None, k: int, predicted: bool, relu: bool, opts: dict[str, Any]) -> str:
    """Compare the compiled graph with the engine's ``Explainer.explain`` at two batch sizes; '' when they agree.

    ``prepared`` is the model the graph was compiled from (:func:`onnxlrp.graph.prepare`); the graph's weights
    may be its in-memory stubs, fed from ``prepared.weights``."""
    import warnings

    from ..errors import OnnxLrpError
    from ..explainer import Explainer
    from ..runtime import make_session

    rng = np.random.default_rng(0)
    # the reference: the layer-by-layer engine (not the compiled fast path), on the same prepared model
    ex = Explainer(prepared.model, device="cpu", kernels="engine", _prepared=prepared)
    try:
        sess = make_session(compiled, None, None, prepared.weights, prepack=False)
    except OnnxLrpError as exc:
        return str(exc)
    for n in ([fixed] if fixed else [1, 3]):
        x = rng.standard_normal((n,) + sample).astype(np.float32)
        options = dict(opts)
        for key in ("low", "high"):
            if key in options:
                options[key] = np.broadcast_to(options[key][:1], x.shape)
        engine = engine_reference(ex, x, method, rng, n, k, predicted, relu=relu, **options)
        if isinstance(engine, str):
            return engine
        logits_ref, tg, ref, unstable = engine
        try:
            logits, heat = run_compiled(sess, x, tg)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            return f"onnxruntime could not run it at batch {n}: {str(exc)[:300]}"
        problem = logits_differ(logits, logits_ref, n)
        if problem:
            return problem
        err = float(np.max(np.abs(heat - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
        if np.isfinite(err) and err <= TOLERANCE:
            continue
        if unstable:  # the map's relevance blew up: rounding is amplified without bound, no comparison holds
            continue
        if k == 1 and not predicted and not relu:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                same = same_forward_error(compiled, ex, x, tg, method, {
                    key: v for key, v in options.items()}, weights=prepared.weights)
            if same <= TOLERANCE:  # a float32 tie: the two forwards rounded a ReLU/max-pool decision differently
                continue
            return f"batch {n}: heatmap relative error {err:.3g} ({same:.3g} on the same forward tensors)"
        return f"batch {n}: heatmap relative error {err:.3g}"
    return ""


def same_forward_error(compiled: onnx.ModelProto, explainer: Any, x: np.ndarray, target: np.ndarray, method: str,
                       opts: dict[str, Any] | None = None, weights: dict[str, np.ndarray] | None = None) -> float:
    """The engine's backward run on the *compiled graph's own* forward tensors, against the compiled heatmap.

    A compiled graph and the engine may round a fused forward differently (onnxruntime fuses a
    convolution with its activation only when the activation is not also an output); where an input
    sits on a ReLU or max-pool decision (a float32 tie) the two heatmaps then differ. Feeding the
    engine the tensors the compiled graph computed removes that difference: what remains is the
    backward's own disagreement (relative, max |diff| / max |engine|). ``target`` is ``(N,)``.
    """
    from ..methods import METHODS
    from ..propagation import propagate

    plan = explainer._plan(x.shape)
    names = [t for t in plan.graph.tensors if t != plan.graph.input_name]
    m = onnx.ModelProto()
    m.CopyFrom(compiled)
    known = {o.name for o in m.graph.output}
    for t in names:
        if t not in known:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    from ..runtime import make_session

    sess = make_session(m, None, None, weights, prepack=False)  # ``weights``: the data of in-memory stubs
    outs = sess.run([HEATMAP, *names], {sess.get_inputs()[0].name: x, TARGET: target.astype(np.int64)})
    heat = outs[0]
    acts = dict(zip(names, outs[1:], strict=True))
    acts[plan.graph.input_name] = x
    if METHODS[method].family == "cam":
        from ..cam import gradcam

        ref = gradcam(explainer._engine, set(), x, target[None], (opts or {}).get("layer"),
                      method == "guided_gradcam", acts=acts)[0]
    else:
        ref = propagate(explainer._engine, METHODS[method], x, target[None], dict(opts or {}), acts=acts)[0]
    d = float(np.abs(heat - ref).max())
    return 0.0 if d == 0 else d / max(float(np.abs(ref).max()), 1e-30)
