"""Compile text models: token ids (and masks, token types) in, one relevance per token out.

The engine explains a text model one set of fixed inputs at a time (:func:`onnxlrp.inputs.specialise`:
the masks and ids become constants of a single-input model). The compiler builds the layers the
same way, once, for inputs of the compiled shape, but records which folded constants derive from
those inputs (:attr:`onnxlrp.graph.Graph.side`); the tracer reads each of them from the model's own
forward at run time instead of baking its value in. The compiled graph therefore takes the model's
real inputs — ids, attention mask, token types — and serves every mask and every text of that
length. A rule that would bake a mask-derived value anyway is caught by the check at compile time,
which compares the graph with the engine on random ids and random padding.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import onnx

from ..errors import InputError, UnsupportedModelError
from ..inputs import InputPlan, choose_input, graph_inputs, specialise
from ..methods import Method
from ..options import check_options
from .build import HEATMAP, LOGITS, MIN_OPSET, TARGET, _build, _opset_at_least, _PlanError
from .tracer import MARKER, tracing_marker


def token_setup(proto: onnx.ModelProto, shape: Any, input_name: str | None) -> tuple[InputPlan, tuple[int, ...]]:
    """The input plan of a text model and the shape of its explained inputs' sample (without the batch)."""
    plan = choose_input(proto, input_name)
    src = next(i for i in graph_inputs(proto) if i.name == plan.source)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in src.type.tensor_type.shape.dim][1:]
    if shape is not None:
        try:
            s = tuple(int(d) for d in ((shape,) if isinstance(shape, int | np.integer) else shape))
        except (TypeError, ValueError):
            raise InputError(f"shape must be the token count (or the sample shape of {plan.source!r}), "
                             f"not {shape!r}") from None
        if len(s) != len(dims) or any(d < 1 for d in s) or any(w is not None and w != d for w, d in zip(dims, s,
                                                                                                       strict=True)):
            raise InputError(f"shape {list(s)} does not fit the input {plan.source!r} {['N', *dims]}")
        return plan, s
    if any(d is None for d in dims):
        shown = ["N", *["?" if d is None else d for d in dims]]
        raise InputError(f"the input {plan.source!r} has the dynamic shape {shown}: "
                         "give the number of tokens to compile for (shape=(128,) or --shape 128)")
    return plan, tuple(int(d) for d in dims)  # type: ignore[arg-type]


def default_feeds(plan: InputPlan, n: int, sample: tuple[int, ...],
                  proto: onnx.ModelProto | None = None) -> dict[str, np.ndarray]:
    """Inputs of ``n`` samples the layers are built from: token id 0, masks all ones, other inputs 0.

    ``sample`` is the explained input's sample shape; another input takes its declared dimensions where
    they are fixed and the explained input's leading ones where not (a mask ``[N, L]`` beside ``[N, L, D]``)."""
    declared = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
                for i in (graph_inputs(proto) if proto is not None else [])}
    feeds = {}
    for name in [plan.source, *plan.fixed]:
        rank = plan.ranks.get(name, len(sample) + 1)
        dims = declared.get(name) or [None] * max(rank, 0)
        if name == plan.source:
            shape = (n,) + tuple(sample)
        elif rank >= 1 and all(d is not None or i - 1 < len(sample) for i, d in enumerate(dims) if i):
            shape = (n,) + tuple(d if d is not None else sample[i - 1] for i, d in enumerate(dims) if i)
        else:
            raise UnsupportedModelError(f"input {name!r} (rank {rank}) has dimensions the compiler cannot take from "
                                        f"{plan.source!r} {['N', *sample]}: it cannot choose its value")
        fill = 1 if "mask" in name.lower() and name != plan.source else 0
        feeds[name] = np.full(shape, fill, dtype=plan.dtypes[name])
    return feeds


def explained_shape(proto: onnx.ModelProto, plan: InputPlan, feeds: dict[str, np.ndarray]) -> tuple[int, ...]:
    """The shape of the explained tensor for these feeds (the embedding lookup, run on one sample)."""
    if plan.kind == "float":
        return tuple(feeds[plan.source].shape)
    from ..inputs import front_model
    from ..runtime import make_session

    sess = make_session(front_model(proto, plan))
    need = [i.name for i in sess.get_inputs()]
    one = sess.run([plan.explained], {k: feeds[k][:1] for k in need})[0]
    return (feeds[plan.source].shape[0],) + tuple(one.shape[1:])


def specialised_for_compile(proto: onnx.ModelProto, plan: InputPlan, n: int, sample: tuple[int, ...],
                            output: str | None) -> tuple[Any, tuple[int, ...]]:
    """The prepared single-input model the layers are built from, with its side constants named, and the
    explained sample shape."""
    from ..graph import prepare

    feeds = default_feeds(plan, n, sample, proto)
    shape = explained_shape(proto, plan, feeds)
    spec = specialise(proto, plan, feeds, shape)
    prepared = prepare(spec, output)
    side = frozenset([plan.source] if plan.kind == "embedding" else []) | frozenset(plan.fixed)
    return dataclasses.replace(prepared, side=side), tuple(shape[1:])


def check_feeds_random(plan: InputPlan, n: int, sample: tuple[int, ...], rows: int,
                       rng: np.random.Generator, proto: onnx.ModelProto | None = None,
                       full_first: bool = True) -> dict[str, np.ndarray]:
    """Random inputs for the compile-time check: random ids, masks padding each sample after a random length
    (the first sample unpadded with ``full_first``), token types drawn from their embedding table (``proto``'s)."""
    feeds = default_feeds(plan, n, sample, proto)
    if plan.kind == "embedding":
        feeds[plan.source] = rng.integers(0, max(rows, 1), size=feeds[plan.source].shape).astype(
            feeds[plan.source].dtype)
    from ..inputs import _embedding_lookups, _table_rows

    tables = _table_rows(proto, _embedding_lookups(proto, set(plan.fixed))) if proto is not None else {}
    for name in plan.fixed:
        if tables.get(name, 0) > 1:  # token types: any row of their table
            feeds[name] = rng.integers(0, tables[name], size=feeds[name].shape).astype(feeds[name].dtype)
        elif "mask" in name.lower():
            length = feeds[name].shape[-1]
            keep = rng.integers(1, length + 1, size=n)
            if full_first:
                keep[0] = length
            elif n == 1 or np.all(keep == length):
                keep[-1] = max(1, length // 2)  # at least one padded sample
            m = (np.arange(length)[None, :] < keep[:, None])
            feeds[name] = np.broadcast_to(m.reshape((n,) + (1,) * (feeds[name].ndim - 2) + (length,)),
                                          feeds[name].shape).astype(feeds[name].dtype)
    return feeds


def table_rows(proto: onnx.ModelProto, plan: InputPlan) -> int:
    """Rows of the embedding table the ids index (0 for a float input)."""
    if plan.kind != "embedding":
        return 0
    from ..inputs import _table_rows

    return _table_rows(proto, {plan.source: plan.explained}).get(plan.source, 0)


def verify_tokens(compiled: onnx.ModelProto, original: onnx.ModelProto, plan: InputPlan, method: str,
                  sample: tuple[int, ...], fixed: int | None, k: int, predicted: bool, relu: bool,
                  output: str | None, opts: dict[str, Any]) -> str:
    """Compare the compiled text graph with the engine's ``Explainer.explain`` on random ids and padding; '' when
    they agree."""
    from ..explainer import Explainer
    from .verify import TOLERANCE, compiled_session, engine_reference, logits_differ

    rng = np.random.default_rng(0)
    rows = table_rows(original, plan)
    ex = Explainer(original, device="cpu", output=output, kernels="engine",
                   input=plan.source if plan.kind == "embedding" else None)
    sess = compiled_session(compiled)
    for i, n in enumerate([fixed, fixed] if fixed else [1, 3]):
        feeds = check_feeds_random(plan, n, sample, rows, rng, original, full_first=i == 0)
        engine = engine_reference(ex, feeds, method, rng, n, k, predicted, relu=relu, per_token=False, **opts)
        if isinstance(engine, str):
            return engine
        logits_ref, tg, full, unstable = engine
        run_feeds = {i.name: feeds[i.name] for i in sess.get_inputs() if i.name in feeds}
        if tg is not None:
            run_feeds[TARGET] = tg
        try:
            logits, heat = sess.run([LOGITS, HEATMAP], run_feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            return f"onnxruntime could not run it at batch {n}: {str(exc)[:300]}"
        problem = logits_differ(logits, logits_ref, n)
        if problem:
            return problem
        # per token, the sum over the embedding axis cancels (a LayerNorm's gradient sums to 0 over it): the
        # error is relative to the largest Σ|R| of a token, the size of what was summed
        ref = full.sum(axis=-1) if plan.kind == "embedding" else full
        scale = np.abs(full).sum(axis=-1) if plan.kind == "embedding" else np.abs(full)
        err = float(np.max(np.abs(heat - ref)) / max(float(np.max(scale)), 1e-30))
        if not (np.isfinite(err) and err <= TOLERANCE) and not unstable:
            return f"batch {n}: heatmap relative error {err:.3g} (random ids and padding)"
    return ""


def compile_tokens(proto: onnx.ModelProto, m: Method, k: int, predicted: bool, shape: Any, batch: int | None,
                    output: str | None, relu: bool, verify: bool, input_name: str | None,
                    options: dict[str, Any]) -> onnx.ModelProto:
    """:func:`~onnxlrp.compiler.compile_explanation` for a text model (see the module docstring)."""
    proto = _opset_at_least(proto, MIN_OPSET)
    plan, tokens = token_setup(proto, shape, input_name)
    src = next(i for i in proto.graph.input if i.name == plan.source)
    d0 = src.type.tensor_type.shape.dim[0] if src.type.tensor_type.shape.dim else None
    fixed = int(d0.dim_value) if d0 is not None and d0.HasField("dim_value") else None
    marker = token_marker(proto, tokens)
    n0 = fixed or batch or marker

    def build(n: int) -> tuple[onnx.ModelProto, dict[str, Any]]:
        prepared, sample = specialised_for_compile(proto, plan, n, tokens, output)
        opts = check_options(m.name, m.options, options, (1,) + sample)
        with tracing_marker(marker):
            return _build(prepared, m, n, n != marker, sample, k, predicted, relu, opts, forward=proto,
                          per_token=plan.kind == "embedding"), opts

    def fall_back(why: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
        warnings.warn(f"{m.name}: the batch axis could not be kept dynamic ({why}); compiled for batch 1 "
                      "(batch=N fixes another batch size; CompiledExplainer runs larger batches one sample at a "
                      "time)", RuntimeWarning, stacklevel=4)
        return build(1)

    try:
        compiled, opts = build(n0)
    except _PlanError as exc:
        if n0 != marker:
            raise UnsupportedModelError(str(exc)) from None
        n0 = 1
        compiled, opts = fall_back(str(exc))
    if verify and n0 == marker:
        problem = verify_tokens(compiled, proto, plan, m.name, tokens, None, k, predicted, relu, output, opts)
        if problem:
            n0 = 1
            compiled, opts = fall_back(f"the graph traced for any batch disagrees with the engine: {problem}")
    if verify and n0 != marker:
        problem = verify_tokens(compiled, proto, plan, m.name, tokens, n0, k, predicted, relu, output, opts)
        if problem:
            raise UnsupportedModelError(f"{m.name}: the compiled graph disagrees with the engine ({problem}); "
                                        "please report this model")
    return compiled


def token_marker(proto: onnx.ModelProto, tokens: tuple[int, ...]) -> int:
    """The marker batch a text model is traced at: a prime small enough that constants built from its masks
    (``[N, 1, L, L]``) stay small, and no dimension of the model's weights or inputs is a multiple of."""
    length = max(tokens) if tokens else 1
    cap = max(31, min(MARKER, (1 << 22) // max(length * length, 1)))
    dims = {int(d) for t in proto.graph.initializer for d in t.dims if d > 1} | {int(d) for d in tokens if d > 1}
    for p in range(cap, 10, -1):
        if all(p % q for q in range(2, int(p ** 0.5) + 1)) and all(d % p for d in dims):
            return p
    return MARKER


__all__ = ["check_feeds_random", "compile_tokens", "default_feeds", "specialised_for_compile", "token_marker",
           "token_setup", "verify_tokens"]
