"""Compile an explanation method into one ONNX graph: the model's forward, then its backward.

:func:`compile_explanation` builds the same :class:`~onnxlrp.plan.Plan` the engine builds, then
runs the engine's own backward pass — the same layers, rules and post-processing — with the
array module set to :class:`~onnxlrp.compiler.primitives.GraphTracer`, which writes every
operation as ONNX nodes after the model's forward nodes. The result takes the model input and
an int64 ``target`` and returns the logits and the heatmap(s); any ONNX runtime can run it.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..backend import Backend
from ..errors import InputError, OnnxLrpError, UnsupportedModelError
from ..graph import PreparedModel, opset_of, prepare
from ..loading import load_model
from ..methods import METHODS, Method, start_relevance
from ..options import check_options
from ..plan import Plan
from ..propagation import composite_for, normalised, post
from ..rules import RuleContext
from .primitives import GraphTracer
from .tracer import MARKER, BatchDependent, Traced, TraceError, weight_key

MIN_OPSET = 17  # Shape(start, end), ScatterElements(reduction="add"), Reduce* with axes
TARGET = "target"
LOGITS = "logits"
HEATMAP = "heatmap"
TOTALS = "relevance_total"

# activations whose output is never negative
_NONNEG = {"Relu", "Sigmoid", "HardSigmoid", "Softplus"}


def compilable_methods() -> list[str]:
    """The methods :func:`compile_explanation` compiles (the propagation and gradient families, Grad-CAM)."""
    return [name for name, m in METHODS.items() if m.family in ("lrp", "gradient", "cam")]


def compile_explanation(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto,
    method: str = "epsilon_plus_flat",
    *,
    targets: int = 1,
    predicted: bool = False,
    shape: tuple[int, ...] | None = None,
    batch: int | None = None,
    output: str | None = None,
    relu: bool = False,
    verify: bool = True,
    input: str | None = None,
    **options: Any,
) -> onnx.ModelProto:
    """An ONNX model computing ``method``'s heatmaps next to the model's logits.

    The compiled model's inputs are the model's input and, unless ``predicted``, an int64
    ``target`` shaped ``[N]`` (``targets=1``) or ``[N, targets]``; with ``predicted=True`` each
    sample's predicted class is explained and there is no ``target`` input. Its outputs are
    ``logits`` (the scores before a trailing softmax) and ``heatmap``: shaped like the input, with
    a leading axis of ``targets`` entries when ``targets > 1``.

    ``shape`` is the sample shape (without the batch) for a model whose input shape is dynamic.
    The batch axis stays dynamic unless the model fixes it or ``batch`` is given. ``options`` are
    the method's options as for :meth:`~onnxlrp.Explainer.explain` (``epsilon``, ``gamma``,
    ``bias``, ``low``, ``high``: constants baked into the graph). With ``verify`` (the default)
    the compiled graph is run once on random inputs at two batch sizes and compared with the
    engine (``Explainer.explain``); a compiled graph that disagrees beyond 1e-4 relative is
    refused, and a batch-size dependence falls back to a fixed batch with a warning.

    Text models (token ids, attention masks, token types; see :mod:`onnxlrp.inputs`) compile to a
    graph that takes the model's own inputs by name and returns one relevance per token ``[N, L]``
    (summed over the embedding axis, as ``Explainer.explain`` gives it); ``shape`` is then the
    token count when the model's is dynamic, and ``input`` names the explained input where the
    model has several candidates. Every mask and every text of that length runs on the one graph.

    Raises :class:`~onnxlrp.errors.UnsupportedModelError` naming the layer, its op type and the
    reason when something cannot be compiled.
    """
    m = _method(method)
    k = _count("targets", targets)
    if batch is not None:
        batch = _count("batch", batch)
    if not isinstance(predicted, bool | np.bool_) or (predicted and k != 1):
        raise InputError("predicted=True explains one class per sample (the predicted one): use targets=1")
    proto = load_model(model)
    from ..inputs import needs_plan

    if needs_plan(proto):
        from .tokens import compile_tokens

        return compile_tokens(proto, m, k, predicted, shape, batch, output, relu, verify, input, options)
    proto = _opset_at_least(proto, MIN_OPSET)
    prepared = prepare(proto, output)
    sample = _sample_shape(prepared, shape)
    opts = check_options(m.name, m.options, options, (1,) + sample)
    fixed = prepared.input_dims[0] if prepared.input_dims else None
    n0 = fixed or batch or MARKER
    # built with the weights as in-memory stubs: the check below feeds them from prepared.weights (no serialised
    # copy), and they are written into the graph only once it passed
    try:
        compiled = _build(prepared, m, n0, n0 != MARKER, sample, k, predicted, relu, opts, attach=False)
    except _PlanError as exc:
        if n0 != MARKER:
            raise UnsupportedModelError(str(exc)) from None
        warnings.warn(f"{m.name}: the batch axis could not be kept dynamic ({exc}); compiled for batch 1",
                      RuntimeWarning, stacklevel=2)
        n0 = 1
        compiled = _build(prepared, m, 1, True, sample, k, predicted, relu, opts, attach=False)
    if verify:
        from .verify import verify_compiled

        problem = verify_compiled(compiled, prepared, m.name, sample, n0 if n0 != MARKER else None, k, predicted,
                                  relu, opts)
        if problem and n0 == MARKER:
            warnings.warn(f"{m.name}: the graph compiled with a dynamic batch disagrees with the engine "
                          f"({problem}); compiled for batch 1 instead", RuntimeWarning, stacklevel=2)
            compiled = _build(prepared, m, 1, True, sample, k, predicted, relu, opts, attach=False)
            problem = verify_compiled(compiled, prepared, m.name, sample, 1, k, predicted, relu, opts)
        if problem:
            raise UnsupportedModelError(f"{m.name}: the compiled graph disagrees with the engine ({problem}); "
                                        "please report this model")
    attach_weights(compiled, prepared.weights)
    return compiled


def attach_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> None:
    """Write the data of ``model``'s in-memory stub initializers (see :func:`onnxlrp.graph.detach_weights`) into it."""
    for i, t in enumerate(model.graph.initializer):
        if t.name in weights and t.data_location == onnx.TensorProto.EXTERNAL:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(weights[t.name], t.name))


def compile_prepared(prepared: PreparedModel, method: str, sample: tuple[int, ...], targets: int, predicted: bool,
                     opts: dict[str, Any], diagnostics: bool = False, batch: int | None = None) -> onnx.ModelProto:
    """Compile for a model :func:`~onnxlrp.graph.prepare` already checked (the Explainer's fast path): for batch
    ``batch`` (the model's own fixed batch wins; None: dynamic), no verification, options already validated. The
    model's large weights stay in-memory stubs: run it with ``make_session(proto, ..., weights=prepared.weights)``
    (the proto does not carry them)."""
    m = _method(method)
    if opset_of(prepared.model) < MIN_OPSET:
        raise UnsupportedModelError(f"opset {opset_of(prepared.model)} < {MIN_OPSET}")
    fixed = (prepared.input_dims[0] if prepared.input_dims else None) or batch
    return _build(prepared, m, fixed or MARKER, fixed is not None, tuple(sample), targets, predicted, False, opts,
                  diagnostics, attach=False)


class _PlanError(UnsupportedModelError):
    """The layer graph could not be built at the tracing batch size."""


def _method(name: Any) -> Method:
    if not isinstance(name, str) or name not in METHODS:
        raise InputError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    m = METHODS[name]
    if m.family not in ("lrp", "gradient", "cam"):
        raise UnsupportedModelError(f"method {name!r} ({m.family} family) cannot be compiled yet; compilable: "
                                    + ", ".join(compilable_methods()))
    return m


def _count(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= int(value) <= 4096:
        raise InputError(f"{what} must be a whole number from 1 to 4096, not {value!r}")
    return int(value)


def _opset_at_least(proto: onnx.ModelProto, want: int) -> onnx.ModelProto:
    if opset_of(proto) >= want:
        return proto
    try:
        from onnx import version_converter

        return version_converter.convert_version(proto, want)
    except Exception as exc:  # noqa: BLE001 - the converter's errors are plain exceptions
        raise UnsupportedModelError(f"the model's opset {opset_of(proto)} could not be converted to opset {want}, "
                                    f"which the compiled graph needs: {str(exc)[:200]}") from None


def _sample_shape(prepared: PreparedModel, shape: Any) -> tuple[int, ...]:
    dims = prepared.input_dims[1:]
    if shape is not None:
        try:
            s = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise InputError(f"shape must be the sample shape (without the batch), e.g. (3, 224, 224), "
                             f"not {shape!r}") from None
        if len(s) == len(dims) + 1:
            s = s[1:]
        if len(s) != len(dims) or any(d < 1 for d in s) or any(
                want is not None and want != d for want, d in zip(dims, s, strict=True)):
            raise InputError(f"shape {list(s)} does not fit the model input {['N', *dims]}")
        return s
    if any(d is None for d in dims):
        raise InputError(f"the model's input shape {['N', *['?' if d is None else d for d in dims]]} is dynamic: "
                         "give the sample shape to compile for (shape=(3, 224, 224) or --shape 3,224,224)")
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def nonneg_tensors(layers: list[Any]) -> set[str]:
    """Tensors that are never negative: outputs of ReLU-like activations (ReLU, ReLU6 and any ``Clip`` with a
    lower bound ≥ 0, sigmoids, softmax), and what pools, reductions and re-indexing make of them."""
    from ..ops.attention import SoftmaxLayer
    from ..ops.elementwise import ActivationLayer
    from ..ops.pooling import AvgPoolLayer, MaxPoolLayer, ReduceLayer
    from ..ops.reindex import (
        ConcatLayer,
        ExpandLayer,
        GatherLayer,
        PadLayer,
        ReshapeLayer,
        SliceLayer,
        SplitLayer,
        TileLayer,
        TransposeLayer,
    )

    keeps = (ReshapeLayer, TransposeLayer, ConcatLayer, SplitLayer, SliceLayer, GatherLayer, ExpandLayer, TileLayer,
             MaxPoolLayer, AvgPoolLayer, ReduceLayer)
    known: set[str] = set()
    for layer in layers:
        positive = False
        if isinstance(layer, SoftmaxLayer):
            positive = True
        elif type(layer) is ActivationLayer:
            lo = getattr(layer, "bounds", (None, None))[0]
            positive = layer.op_type in _NONNEG or (layer.op_type == "Clip" and lo is not None and lo >= 0)
        elif isinstance(layer, keeps) or (isinstance(layer, PadLayer) and layer.value >= 0):
            positive = bool(layer.inputs) and all(i in known for i in layer.inputs)
        if positive:
            known.update(layer.outputs)
    return known


def _build(prepared: PreparedModel, m: Method, n0: int, fixed: bool, sample: tuple[int, ...], k: int,
           predicted: bool, relu: bool, opts: dict[str, Any], diagnostics: bool = False,
           attach: bool = True, forward: onnx.ModelProto | None = None, per_token: bool = False) -> onnx.ModelProto:
    """Trace the backward of ``m`` at batch ``n0`` and assemble the compiled model.

    ``forward``: the model whose nodes compute the forward (a text model with its masks and ids as inputs,
    where ``prepared`` is its specialisation); ``per_token``: the heatmap summed over the last axis.

    ``diagnostics`` adds the output ``relevance_total``: Σ|R| of every pass and sample before the
    post-processing, in float64 (the quantity the engine's overflow and blow-up checks read).
    """
    try:
        plan = Plan(prepared, (n0,) + sample, Backend(np, "cpu"), threads=1, forward=False)
    except Exception as exc:  # noqa: BLE001 - at the marker batch size, retried with a fixed batch
        raise _PlanError(f"the layer graph could not be built for a dynamic batch: {exc}") from None
    if not fixed and plan.model is not prepared.model:
        raise _PlanError("the model needed onnxruntime's canonicalisation, which fixes the batch size")
    graph = plan.graph
    opset = opset_of(plan.model)
    tr = GraphTracer(graph.input_name, opset)
    tr.reuse = _weight_keys(prepared)
    tr.side = graph.side
    if fixed:
        tr.fixed_batch = n0
    signs = nonneg_tensors(plan.graph.layers)
    acts: dict[str, Traced] = {}
    for name in graph.tensors:
        acts[name] = tr.input(name, graph.shapes[name], np.float32, "nonneg" if name in signs else None)
    x = acts.setdefault(graph.input_name, tr.input(graph.input_name, (n0,) + sample))
    logits = plan.logits(acts)
    if predicted:
        tg = logits.argmax(axis=1)[None]
    elif k == 1:
        tg = tr.input(TARGET, (n0,), np.int64)[None]
    else:
        tg = tr.transpose(tr.input(TARGET, (n0, k), np.int64), (1, 0))
    if m.family == "cam":
        try:
            heat = _gradcam(prepared, plan, tr, acts, logits, tg, x, sample, m.name == "guided_gradcam",
                            opts.get("layer"))
            heat = (tr.maximum(heat, 0.0) if relu else heat).astype(np.float32)
            if per_token:
                heat = heat.sum(axis=-1)
        except TraceError as exc:
            raise UnsupportedModelError(f"{m.name} cannot be compiled: {exc}") from None
        return _assemble(prepared, plan, tr, heat[0] if k == 1 else heat, logits, m, n0, fixed, sample, k, predicted,
                         relu, opts, attach, forward)
    comp = composite_for(m, opts)
    ctx = RuleContext(tr, cache={})
    try:
        start, scale = normalised(start_relevance(m.start, logits, tg, xp=tr), tr)
        if comp.needs_bounds:
            ctx.bounds = plan.bounds(*_bounds(tr, x, opts.get("low"), opts.get("high")), xp=tr)
        rel = _backward(plan, acts, start, comp, ctx)
        totals = tr.abs(rel).sum(axis=tuple(range(2, rel.ndim)), dtype=np.float64) if diagnostics else None
        rel = rel * scale.reshape(scale.shape[:2] + (1,) * (rel.ndim - 2))
        heat = post(tr, m.post, rel, x, tg.shape[0])
        if relu:
            heat = tr.maximum(heat, 0.0)
        heat = heat.astype(np.float32)
        if per_token:
            heat = heat.sum(axis=-1)
        if k == 1:
            heat = heat[0]
    except TraceError as exc:
        raise UnsupportedModelError(f"{m.name} cannot be compiled: {exc}") from None
    model = _assemble(prepared, plan, tr, heat, logits, m, n0, fixed, sample, k, predicted, relu, opts, attach,
                      forward)
    if totals is not None:
        model.graph.node.append(helper.make_node("Identity", [tr.name_of(totals)], [TOTALS], name="lrp_totals"))
        model.graph.output.append(helper.make_tensor_value_info(TOTALS, onnx.TensorProto.DOUBLE, None))
        model.graph.initializer.extend(t for name, t in tr.initializers.items()
                                       if name not in {i.name for i in model.graph.initializer})
    return model


def _gradcam(prepared: PreparedModel, plan: Plan, tr: GraphTracer, acts: dict[str, Traced], logits: Traced,
             tg: Traced, x: Traced, sample: tuple[int, ...], guided: bool, layer: str | None) -> Traced:
    """Grad-CAM (and × guided backprop) as :func:`onnxlrp.cam.gradcam` computes it, traced.

    Without ``layer`` the default map is chosen as the engine chooses it (the last grid that receives
    gradient), by one engine run on a random input of batch 2; the choice depends on the graph's
    structure, not on the input.
    """
    from types import SimpleNamespace

    from .. import cam
    from ..methods import METHODS as _M
    from ..plan import Engine

    in_spatial = cam.input_spatial(plan, (1,) + sample)
    if layer is None:
        # at batch 2 the batch axis is unambiguous (at batch 1 a seq-first (T, 1, D) map can be taken for a
        # batch-first one, and the engine's own choice at batch 1 may differ: see the session note)
        n = tr.fixed_batch or 2
        probe = Plan(prepared, (n,) + sample, Backend(np, "cpu"), threads=1)
        engine = Engine(lambda shape: probe, Backend(np, "cpu"), n, lambda shape, passes: n)
        x0 = np.random.default_rng(0).standard_normal((n,) + sample).astype(np.float32)
        name = cam._default_map(engine, probe, x0, np.zeros((1, n), np.int64), in_spatial)[0]
    else:
        original = {o for node in prepared.model.graph.node for o in node.output}
        name = cam.cam_layer(plan, layer, original)
    grid = cam.read_grid(tuple(plan.graph.shapes[name]), in_spatial)
    if grid is None:
        raise UnsupportedModelError(f"Grad-CAM layer {name!r} does not read as a feature map on a grid")
    start = start_relevance("onehot", logits, tg, xp=tr)
    grad = _backward(plan, acts, start, _M["gradient"].composite(), RuleContext(tr), stop_at=name)  # type: ignore[misc]
    heat = cam.resize_to_input(SimpleNamespace(backend=SimpleNamespace(xp=tr)), plan,  # type: ignore[arg-type]
                               cam.weighted_map(tr, grid, acts[name], grad, len(plan.graph.shapes[name])), x.shape)
    if guided:
        gb = _backward(plan, acts, start, _M["guided_backprop"].composite(), RuleContext(tr))  # type: ignore[misc]
        heat = heat * gb
    return heat


def _backward(plan: Plan, acts: dict[str, Traced], start: Traced, comp: Any, ctx: RuleContext,
              stop_at: str | None = None) -> Traced:
    """``plan.backward`` with the tracer, naming the layer where tracing fails."""

    def rule_for(layer: Any) -> Any:
        rule = comp.rule_for(layer)

        def traced(lay: Any, c: Any, ins: Any, outs: Any, gouts: Any) -> Any:
            try:
                return rule(lay, c, ins, outs, gouts)
            except OnnxLrpError:
                raise
            except BatchDependent as exc:
                raise _PlanError(f"node {lay.name!r} (op {lay.op_type}): {exc}") from None
            except Exception as exc:  # noqa: BLE001 - TraceError, or array code the tracer does not offer
                why = str(exc) if isinstance(exc, TraceError) else f"{exc.__class__.__name__}: {exc}"
                raise UnsupportedModelError(f"node {lay.name!r} (op {lay.op_type}, rule {rule}) cannot be compiled: "
                                            f"{why}") from None

        traced.rule = rule  # type: ignore[attr-defined] - what Plan.vanishing_below_zero reads
        return traced

    return plan.backward(acts, start, rule_for, ctx, stop_at=stop_at)  # type: ignore[arg-type]


def _bounds(tr: GraphTracer, x: Traced, low: Any, high: Any) -> tuple[Traced, Traced]:
    """Z^B bounds shaped like ``x``: the given constants, or each sample's own minimum and maximum."""
    axes = tuple(range(1, x.ndim))
    if low is not None and high is not None and np.any(np.asarray(low) > np.asarray(high)):
        raise InputError("low must not exceed high")
    lo = x.min(axis=axes, keepdims=True) if low is None else tr.wrap(np.asarray(low, np.float32)[:1])
    hi = x.max(axis=axes, keepdims=True) if high is None else tr.wrap(np.asarray(high, np.float32)[:1])
    return tr.broadcast_to(lo, x.shape), tr.broadcast_to(hi, x.shape)


def _weight_keys(prepared: PreparedModel) -> dict[tuple[Any, ...], str]:
    """The model's large float32 weights by :func:`~onnxlrp.compiler.tracer.weight_key` (computed once per model)."""
    cached = prepared.__dict__.get("_onnxlrp_weight_keys")
    if cached is None:
        cached = {weight_key(arr): name for name, arr in prepared.weights.items()
                  if arr.dtype == np.float32 and name not in prepared.side}
        prepared.__dict__["_onnxlrp_weight_keys"] = cached
    return cached


def _assemble(prepared: PreparedModel, plan: Plan, tr: GraphTracer, heat: Traced, logits: Traced, m: Method,
              n0: int, fixed: bool, sample: tuple[int, ...], k: int, predicted: bool, relu: bool,
              opts: dict[str, Any], attach: bool = True, forward: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The model's forward nodes, the traced backward, inputs, outputs and metadata as one ModelProto
    (``attach``: with the model's weights inline; else as the in-memory stubs of :func:`~onnxlrp.graph.prepare`).
    ``forward``: a text model whose own nodes and inputs (ids, masks) replace the specialisation's."""
    from .. import __version__

    model = onnx.ModelProto()
    model.CopyFrom(plan.model if forward is None else forward)
    g = model.graph
    batch_dim: int | str = n0 if fixed else "N"
    if forward is not None:
        from ..inputs import graph_inputs

        real = graph_inputs(forward)
        del g.input[:]
        for i in real:  # declared fixed dimensions, else the explained input's leading ones (as tokens.default_feeds)
            dims = [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            g.input.append(helper.make_tensor_value_info(i.name, i.type.tensor_type.elem_type, [batch_dim] + [
                d if d is not None else (sample[j] if j < len(sample) else None) for j, d in enumerate(dims[1:])]))
        sample = tuple(heat.shape[1 if k == 1 else 2:])
    elif attach:  # else the weights stay stubs, fed from prepared.weights by make_session
        attach_weights(model, prepared.weights)
    g.node.extend(tr.nodes)
    g.initializer.extend(tr.initializers.values())
    if forward is None:
        del g.input[:]
        g.input.append(helper.make_tensor_value_info(plan.graph.input_name, onnx.TensorProto.FLOAT,
                                                     [batch_dim, *sample]))
    if not predicted:
        g.input.append(helper.make_tensor_value_info(TARGET, onnx.TensorProto.INT64,
                                                     [batch_dim] if k == 1 else [batch_dim, k]))
    del g.output[:]
    taken = {o for node in g.node for o in node.output} | {t.name for t in g.initializer}
    for name in (LOGITS, HEATMAP):
        if name in taken:  # the model has a tensor of that name: it becomes name/model
            _rename(g, name, f"{name}/model")
    g.node.append(helper.make_node("Identity", [_renamed(g, tr.name_of(logits))], [LOGITS], name="lrp_logits"))
    g.node.append(helper.make_node("Identity", [tr.name_of(heat)], [HEATMAP], name="lrp_heatmap"))
    g.output.append(helper.make_tensor_value_info(LOGITS, onnx.TensorProto.FLOAT, [batch_dim, logits.shape[1]]))
    g.output.append(helper.make_tensor_value_info(HEATMAP, onnx.TensorProto.FLOAT,
                                                  ([] if k == 1 else [k]) + [batch_dim, *sample]))
    del g.value_info[:]
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(prepared.metadata)
    meta.update({
        "onnxlrp.method": m.name,
        "onnxlrp.options": json.dumps({key: (v.tolist() if isinstance(v, np.ndarray) else v)
                                       for key, v in opts.items() if key not in ("low", "high")} | (
            {key: _bound_repr(opts[key]) for key in ("low", "high") if key in opts}), sort_keys=True),
        "onnxlrp.targets": "predicted" if predicted else str(k),
        "onnxlrp.relu": str(bool(relu)).lower(),
        "onnxlrp.version": __version__,
        "onnxlrp.explained_output": prepared.output_name,
    })
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.producer_name = "onnxlrp"
    model.producer_version = __version__
    return model


def _rename(g: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere in ``g`` (node inputs and outputs, initializers)."""
    for node in g.node:
        for j, n in enumerate(node.input):
            if n == old:
                node.input[j] = new
        for j, n in enumerate(node.output):
            if n == old:
                node.output[j] = new
    for t in g.initializer:
        if t.name == old:
            t.name = new


def _renamed(g: onnx.GraphProto, name: str) -> str:
    return f"{name}/model" if name in (LOGITS, HEATMAP) else name


def _bound_repr(v: Any) -> Any:
    """A Z^B bound for the metadata: one number, one per channel, or (for a full array) its shape only."""
    a = np.asarray(v, np.float64)
    a = a[0] if a.ndim > 1 else a  # the options are broadcast to (1,) + sample shape
    flat = a.reshape(-1)
    if flat.size == 0 or np.all(flat == flat[0]):
        return float(flat[0]) if flat.size else None
    per_channel = a.reshape(a.shape[0], -1)
    if np.all(per_channel == per_channel[:, :1]):
        return [float(c) for c in per_channel[:, 0]]
    return f"array of shape {list(a.shape)}"


__all__ = ["HEATMAP", "LOGITS", "TARGET", "TOTALS", "compilable_methods", "compile_explanation", "compile_prepared",
           "nonneg_tensors"]
