"""``onnxlrp info``: a model's inputs, outputs, layers and the rule each layer gets (see ``docs/cli.md``)."""

from __future__ import annotations

import argparse
import difflib
from typing import Any

from ..image import detect_layout
from .common import DEFAULT_METHOD, PROG, UsageError, first_transpose_perm, load_explainer, parse_size, report_error

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``info`` subcommand to the ``onnxlrp`` parser's subparsers; return its parser."""
    info = sub.add_parser("info", help="inputs, outputs, layers and rules of a model",
                          description="Print a model's inputs and outputs, its layers and the rule each layer "
                                      "gets under a method; report what cannot be explained (exit status 1).")
    info.add_argument("model", help="the ONNX model file")
    info.add_argument("-m", "--method", default=DEFAULT_METHOD, metavar="NAME",
                      help=f"show the rules of this method (default {DEFAULT_METHOD})")
    info.add_argument("--size", type=parse_size, metavar="S|HxW", help="input size, for models without a fixed one")
    info.add_argument("--layout", choices=["NCHW", "NHWC"], type=str.upper, help="input layout (see explain)")
    info.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="default cpu")
    info.add_argument("--output-name", metavar="NAME", help="the model output to explain")
    info.set_defaults(func=run)
    return info


def _shape_text(value_info: Any) -> str:
    import onnx

    t = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        return "(not a tensor)"
    try:
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
    except (KeyError, ValueError, TypeError):
        dtype = onnx.TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "?"
    if not t.HasField("shape"):
        return f"{dtype} (shape unknown)"
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return f"{dtype} [{', '.join(dims)}]"


def run(args: argparse.Namespace) -> int:
    """Run ``onnxlrp info``; return the exit status (1 when the model cannot be explained)."""
    from collections import Counter

    from ..errors import UnsupportedModelError
    from ..graph import load_model
    from ..methods import METHODS

    if args.method not in METHODS:
        close = difflib.get_close_matches(args.method, list(METHODS), n=3)
        raise UsageError(f"unknown method {args.method!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    model = load_model(args.model)
    g = model.graph
    inits = {t.name for t in g.initializer}
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    print(f"model {args.model}")
    producer = f"{model.producer_name} {model.producer_version}".strip() or "unknown"
    print(f"  opset {opset}, producer {producer}, {len(g.node)} nodes")
    ops = Counter(n.op_type for n in g.node)
    print("  ops: " + ", ".join(f"{op} {k}" for op, k in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
    print("inputs:")
    for i in g.input:
        if i.name not in inits:
            print(f"  {i.name}: {_shape_text(i)}")
    print("outputs:")
    for o in g.output:
        print(f"  {o.name}: {_shape_text(o)}")
    if model.metadata_props:
        print("metadata:")
        for p in model.metadata_props:
            print(f"  {p.key} = {p.value}")
    try:
        ex = load_explainer(args)
        if not hasattr(ex, "layers"):  # a graph written by `onnxlrp compile`
            meta = ex.metadata
            what = "each sample's predicted class" if ex.predicted else (
                "one class per sample ('target' [N])" if ex.k == 1
                else f"{ex.k} classes per sample ('target' [N, {ex.k}])")
            print(f"compiled explanation graph: method {ex.method!r}, options {meta.get('onnxlrp.options', '{}')}, "
                  f"explains {what}; written by onnxlrp {meta.get('onnxlrp.version', '?')}")
            if getattr(ex, "tokens", False):
                print(f"a text model's graph: feed it {', '.join(ex.inputs)} and 'target' in any ONNX runtime, or "
                      "use onnxlrp.compiler.CompiledExplainer from Python")
            else:
                print(f"run it with any ONNX runtime (outputs logits, heatmap) or with `{PROG} explain {args.model} "
                      "IMAGE`")
            return 0
        shape = None
        if ex.input_plan is not None:
            return _text_info(args, ex)
        if args.size is not None:
            dims = ex.input_shape
            layout = args.layout or detect_layout(dims, ex.metadata, first_transpose_perm(ex))
            c = dims[1] if layout == "NCHW" else dims[-1]
            c = 3 if c is None else c
            h, w = args.size
            shape = (ex.fixed_batch or 1, c, h, w) if layout == "NCHW" else (ex.fixed_batch or 1, h, w, c)
        layers = ex.layers(method=args.method, shape=shape)
    except UnsupportedModelError as exc:
        report_error(str(exc))
        return 1
    stripped = f" (a trailing {ex.prepared.softmax_stripped} removed)" if ex.prepared.softmax_stripped else ""
    layout = args.layout or detect_layout(ex.input_shape, ex.metadata, first_transpose_perm(ex))
    print(f"explained: {ex.input_name} ({layout}) -> {ex.output_name}{stripped}, {ex.num_classes} classes")
    m = METHODS[args.method]
    has_rules = any("rule" in row for row in layers)
    note = f"with the rules of method {args.method!r}" if has_rules else \
        f"(method {args.method!r} is a {m.family} method: no per-layer rules)"
    print(f"layers ({len(layers)}) {note}:")
    cols = ["name", "op", "layer", "output"] + (["rule"] if has_rules else [])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in layers)) for c in cols}
    print("  " + "  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in layers:
        print("  " + "  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols).rstrip())
    return 0


def _text_info(args: argparse.Namespace, ex: Any) -> int:
    """``info`` for a model with several inputs or token ids: which tensor is explained and why, and the
    layers of the model specialised to an example call (token ids 0, masks 1, length 8 unless fixed)."""
    import numpy as np

    from ..errors import UnsupportedModelError

    plan = ex.input_plan
    print(f"explained: {plan.explained} ({plan.kind}); {plan.reason}")
    if plan.fixed:
        print(f"held fixed: {', '.join(plan.fixed)}")
    dims = [d if d is not None else (1 if i == 0 else 8) for i, d in enumerate(ex.input_shape)]
    example = {plan.source: np.zeros(dims, dtype=plan.dtypes[plan.source])}
    try:
        layers = ex.layers(method=args.method) if ex.predict(example) is not None else []
    except UnsupportedModelError as exc:
        report_error(str(exc))
        return 1
    print(f"layers ({len(layers)}) with the rules of method {args.method!r}, for an example of shape {dims}:")
    cols = ["name", "op", "layer", "output"] + (["rule"] if any("rule" in r for r in layers) else [])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in layers)) for c in cols}
    print("  " + "  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in layers:
        print("  " + "  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols).rstrip())
    return 0
