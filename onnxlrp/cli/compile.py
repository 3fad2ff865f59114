"""``onnxlrp compile``: write a method's explanation as an ONNX graph any runtime can run.

``onnxlrp compile MODEL --method M --output OUT.onnx`` records the engine's backward pass for
``M`` as ONNX nodes after the model's forward (see :mod:`onnxlrp.compiler`). The written model
takes the model's input and an int64 ``target`` (``[N]``, or ``[N, K]`` with ``--targets K``; no
target input with ``--predicted``) and returns ``logits`` and ``heatmap``. Before it is written
it is run once on random inputs at two batch sizes and compared with ``onnxlrp explain``'s engine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import PROG, UsageError, check_option_keys, parse_floats_arg, parse_option, positive_int

__all__ = ["add_parser", "run"]

_MAX_PROTO = 1_900_000_000  # above this the weights go to a side file (protobuf's 2 GiB limit)


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(t) for t in text.replace("x", ",").split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected the sample shape as C,H,W (positive integers), got {text!r}"
                                         ) from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected the sample shape as C,H,W (positive integers), got {text!r}")
    return dims


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``compile`` subcommand to the ``onnxlrp`` parser's subparsers; return its parser."""
    p = sub.add_parser(
        "compile", help="compile an explanation method into an ONNX model",
        description="Write MODEL's forward pass and METHOD's backward pass as one ONNX model: inputs the "
                    "model's input(s) and an int64 'target', outputs 'logits' and 'heatmap'. It runs in any "
                    "ONNX runtime (onnxruntime CPU/CUDA, TensorRT, ...) without onnxlrp. A text model keeps its "
                    "inputs (token ids, attention mask, token types) and gets one relevance per token.")
    p.add_argument("model", help="the .onnx model")
    p.add_argument("-m", "--method", default="epsilon_plus_flat",
                   help="propagation or gradient method (default epsilon_plus_flat; `onnxlrp methods` lists them)")
    p.add_argument("-o", "--output", required=True, help="where to write the compiled .onnx model")
    tg = p.add_mutually_exclusive_group()
    tg.add_argument("--targets", type=positive_int, default=1, metavar="K",
                    help="classes explained per sample: 'target' is [N] for 1, [N, K] otherwise (heatmap [K, N, ...])")
    tg.add_argument("--predicted", action="store_true", help="explain each sample's predicted class (no target input)")
    p.add_argument("--shape", type=_shape, metavar="C,H,W",
                   help="sample shape for a model whose input shape is dynamic (a text model: the token count)")
    p.add_argument("--input", dest="input_name", metavar="NAME",
                   help="a text model's explained input (token ids or a float input) where it has several candidates")
    p.add_argument("--batch", type=positive_int, metavar="N", help="fix the batch size (default: dynamic)")
    p.add_argument("--low", type=parse_floats_arg, metavar="V[,V,V]",
                   help="lower end of the input box for Z^B methods: one value or one per channel")
    p.add_argument("--high", type=parse_floats_arg, metavar="V[,V,V]", help="upper end of the input box")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="a method option (epsilon, gamma, bias, layer); repeatable")
    p.add_argument("--relu", action="store_true", help="clip the heatmap at 0")
    p.add_argument("--output-name", dest="output_name", metavar="NAME", help="model output to explain")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the check against the engine on random inputs")
    p.set_defaults(func=run)
    return p


def _box(values: tuple[float, ...] | None, rank: int) -> Any:
    if values is None:
        return None
    if len(values) == 1:
        return float(values[0])
    return np.asarray(values, np.float32).reshape((len(values),) + (1,) * max(rank - 1, 0))


def run(args: argparse.Namespace) -> int:
    """Compile, verify and write the model; print what was written; return 0."""
    import onnx

    from ..compiler import compile_explanation
    from ..render import atomic_open

    check_option_keys(args.option)
    options: dict[str, Any] = dict(args.option)
    rank = len(args.shape) if args.shape else 3
    for key in ("low", "high"):
        v = _box(getattr(args, key), rank)
        if v is not None:
            options[key] = v
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"--output {out} is a folder; give a file name such as model.explain.onnx")
    t0 = time.perf_counter()
    proto = compile_explanation(args.model, args.method, targets=args.targets, predicted=args.predicted,
                                shape=args.shape, batch=args.batch, output=args.output_name, relu=args.relu,
                                verify=args.verify, input=args.input_name, **options)
    took = time.perf_counter() - t0
    if proto.ByteSize() > _MAX_PROTO:
        data = out.name + ".data"
        onnx.save_model(proto, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location=data)
        print(f"{PROG}: wrote {out} (+ {data})")
    else:
        with atomic_open(out, "wb") as fh:
            fh.write(proto.SerializeToString())
        print(f"{PROG}: wrote {out}")
    ins = ", ".join(f"{i.name}[{','.join(d.dim_param or str(d.dim_value) for d in i.type.tensor_type.shape.dim)}]"
                    for i in proto.graph.input)
    outs = ", ".join(o.name for o in proto.graph.output)
    checked = "checked against the engine" if args.verify else "not checked (--no-verify)"
    print(f"  method {args.method}; inputs {ins}; outputs {outs}; {len(proto.graph.node)} nodes; "
          f"{took:.1f} s; {checked}")
    return 0
