"""``onnxlrp explain-text``: a text classifier's decision, token by token, in the terminal and as HTML.

The text is tokenised with a Hugging Face ``tokenizer.json`` (the ``tokenizers`` package, extra
``onnxlrp[text]``), the token ids and an attention mask are fed to the model, and the relevance
of each token (summed over the embedding axis; see :mod:`onnxlrp.inputs`) is printed with the
token's background coloured red (for the class) or blue (against), intensity ∝ |relevance| /
max |relevance| of that text. ``--output page.html`` writes the same as a page.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelLoadError
from ..paths import confined, read_bounded
from ..render import atomic_open
from .common import (
    TOP_PRINTED,
    UsageError,
    class_name,
    labels_for,
    load_explainer,
    method_list,
    positive_int,
    resolve_class,
    softmax,
)

MAX_TOKENIZER_BYTES = 64 << 20
MAX_TEXT_CHARS = 100_000


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``explain-text``."""
    p = sub.add_parser(
        "explain-text", help="token relevance of a text classifier (terminal colours, HTML)",
        description="Tokenise TEXT with a tokenizer.json, run the model and print every token coloured by its "
                    "relevance for the class (red for, blue against); --output writes an HTML page.")
    p.add_argument("model", help="the ONNX model file (token ids in, class scores out)")
    p.add_argument("text", nargs="+", help="the text(s) to explain")
    p.add_argument("--tokenizer", metavar="FILE",
                   help="a Hugging Face tokenizer.json (default: metadata onnxlrp.tokenizer, beside the model)")
    p.add_argument("-m", "--method", default="attnlrp", metavar="NAME", help="method (default attnlrp)")
    p.add_argument("-t", "--target", default="top", metavar="CLASS",
                   help="class index, a name from the label file, or 'top' (default)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line (default: metadata onnxlrp.labels)")
    p.add_argument("--max-length", type=positive_int, default=512, metavar="N",
                   help="truncate each text to N tokens (default 512)")
    p.add_argument("-o", "--output", metavar="FILE.html", help="also write an HTML page")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="colour the terminal output (default: when stdout is a terminal)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    p.set_defaults(func=run)
    return p


def _tokenizer(args: argparse.Namespace, ex: Any) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError("explain-text needs the tokenizers package: pip install 'onnxlrp[text]'") from None
    if args.tokenizer:
        path, what = Path(args.tokenizer), "--tokenizer"
        error: type[Exception] = InputError
    else:
        name = ex.metadata.get("onnxlrp.tokenizer")
        if not name:
            raise UsageError("give --tokenizer FILE (the model's metadata names no onnxlrp.tokenizer)")
        what = "metadata onnxlrp.tokenizer"
        path = confined(Path(args.model).resolve().parent, name, what, ModelLoadError)
        error = ModelLoadError
    data = read_bounded(path, what, MAX_TOKENIZER_BYTES, error)  # type: ignore[arg-type]
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - any parse failure of a foreign file
        raise InputError(f"{what}: {path} is not a tokenizer.json ({str(exc).splitlines()[0][:120]})") from None


def _feeds(ex: Any, tok: Any, texts: list[str], max_length: int) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """Token ids and attention mask for the texts (padded to the longest), and each text's tokens."""
    plan = ex.input_plan
    if getattr(ex, "tokens", False):
        raise InputError("this is a compiled text graph: explain-text takes the original model; run the compiled "
                         "graph from Python (onnxlrp.compiler.CompiledExplainer) or in any ONNX runtime")
    if plan is None or plan.kind != "embedding":
        raise InputError("this model does not take token ids (its explained input is not an embedding lookup); "
                         "use 'onnxlrp explain' for images")
    encs = []
    for t in texts:
        if len(t) > MAX_TEXT_CHARS:
            raise InputError(f"a text of {len(t)} characters is longer than the limit of {MAX_TEXT_CHARS}")
        e = tok.encode(t)
        if not e.ids:
            raise InputError(f"the text {t[:40]!r} gives no tokens")
        encs.append(e)
    fixed = ex.input_shape[1] if len(ex.input_shape) > 1 else None
    length = int(fixed) if fixed else min(max(len(e.ids) for e in encs), max_length)  # a fixed length pads/cuts
    ids = np.zeros((len(encs), length), np.int64)
    mask = np.zeros((len(encs), length), np.int64)
    tokens = []
    for i, e in enumerate(encs):
        n = min(len(e.ids), length)
        ids[i, :n] = e.ids[:n]
        mask[i, :n] = 1
        tokens.append(list(e.tokens[:n]))
    feeds = {plan.source: ids}
    masks = [n for n in plan.fixed if "mask" in n.lower()]
    for n in masks:
        feeds[n] = mask
    return feeds, tokens


def _rgb(v: float) -> tuple[int, int, int]:
    """Background colour of a relevance in [-1, 1]: white → red (positive) or blue (negative)."""
    a = min(abs(v), 1.0)
    fade = int(round(255 * (1 - a)))
    return (255, fade, fade) if v >= 0 else (fade, fade, 255)


def _terminal(tokens: list[str], rel: np.ndarray, color: bool) -> str:
    scale = float(np.abs(rel).max()) or 1.0
    parts = []
    for t, r in zip(tokens, rel, strict=False):
        if color:
            red, green, blue = _rgb(float(r) / scale)
            parts.append(f"\x1b[48;2;{red};{green};{blue}m\x1b[38;2;0;0;0m{t}\x1b[0m")
        else:
            parts.append(f"{t}({float(r):+.3g})")
    return " ".join(parts)


def _html(rows: list[tuple[str, str, list[str], np.ndarray]], model: str, method: str) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>onnxlrp explain-text</title>",
           "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}span.t{padding:0 .15em;margin:.05em;"
           "border-radius:.2em;display:inline-block}table{border-collapse:collapse}td{padding:0 .6em}</style>",
           f"</head><body><h1>{html.escape(Path(model).name)}: {html.escape(method)}</h1>",
           "<p>Red: evidence for the class; blue: against. Each text is scaled by its own largest |relevance|.</p>"]
    for text, title, tokens, rel in rows:
        scale = float(np.abs(rel).max()) or 1.0
        out.append(f"<h2>{html.escape(title)}</h2><p><i>{html.escape(text)}</i></p><p>")
        for t, r in zip(tokens, rel, strict=False):
            red, green, blue = _rgb(float(r) / scale)
            out.append(f"<span class='t' style='background:rgb({red},{green},{blue})' "
                       f"title='{float(r):+.4g}'>{html.escape(t)}</span>")
        out.append("</p><table><tr><th>token</th><th>relevance</th></tr>")
        out.extend(f"<tr><td>{html.escape(t)}</td><td>{float(r):+.4g}</td></tr>" for t, r in zip(tokens, rel,
                                                                                             strict=False))
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Run ``onnxlrp explain-text``; return the exit status."""
    method = method_list([args.method])
    if len(method) != 1:
        raise UsageError("give one method")
    if args.output and not args.output.lower().endswith((".html", ".htm")):
        raise UsageError(f"--output {args.output} must end in .html")
    ex = load_explainer(args)
    tok = _tokenizer(args, ex)
    feeds, tokens = _feeds(ex, tok, list(args.text), args.max_length)
    labels, source = labels_for(args, ex)
    logits = ex.predict(feeds)
    probs = softmax(logits)
    spec = resolve_class(args.target, labels, source or "the label file")
    targets = probs.argmax(axis=1) if spec is None else np.full(len(args.text), spec)
    if np.any((targets < 0) | (targets >= logits.shape[1])):
        raise InputError(f"class index {int(targets[0])} is out of range: the model has {logits.shape[1]} classes")
    rel = np.asarray(ex.explain(feeds, target=targets, method=method[0]))
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    rows = []
    for i, text in enumerate(args.text):
        order = np.argsort(-probs[i], kind="stable")[: min(TOP_PRINTED, probs.shape[1])]
        print(text)
        for rank, c in enumerate(order, start=1):
            print(f"  {rank}. {int(c):5d}  {class_name(int(c), labels):<30s} {probs[i, c]:.4f}")
        t = int(targets[i])
        title = f"{method[0]} for class {t} {class_name(t, labels)} ({probs[i, t]:.4f})"
        print(f"  {title}:")
        print("  " + _terminal(tokens[i], rel[i, : len(tokens[i])], color))
        rows.append((text, title, tokens[i], rel[i, : len(tokens[i])]))
    if args.output:
        with atomic_open(args.output, "w", encoding="utf-8") as fh:
            fh.write(_html(rows, args.model, method[0]))
        print(f"wrote {args.output}")
    return 0
