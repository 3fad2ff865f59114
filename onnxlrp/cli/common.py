"""The ``onnxlrp`` command line: ``explain``, ``info`` and ``methods``.

``onnxlrp explain MODEL IMAGE [IMAGE|DIR ...]`` writes heatmaps (PNG, optionally overlays, raw
``.npy`` and a grid figure) and prints the top-5 predictions of every image and every file it
wrote. ``onnxlrp info MODEL`` prints the model's inputs, outputs and layers with the rule each
layer gets. ``onnxlrp methods`` lists the methods. See ``docs/cli.md``.

Exit status: 0 on success, 2 for a usage error (a bad option or a bad combination of options),
1 for every other error (a missing or unreadable file, a model that cannot be explained, an
unknown class, ...). An error is one line on stderr, ``onnxlrp: error: ...``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

from . import __version__
from .errors import InputError, OnnxLrpError
from .image import (
    PRESETS,
    RESAMPLE,
    Preprocess,
    detect_layout,
    expand_inputs,
    input_range,
    load_images,
    load_rgb,
    parse_floats,
)
from .render import COLORMAPS, grid, heatmap_to_rgb, overlay, save_png

__all__ = ["UsageError", "build_parser", "load_labels", "main", "resolve_class", "softmax"]

PROG = "onnxlrp"
DEFAULT_METHOD = "sglrp"
DEFAULT_OUTPUT = "onnxlrp-out"
TOP_PRINTED = 5
GRID_MIN_PANEL = 160  # grid panels of small models are enlarged to at least this many pixels


class UsageError(Exception):
    """A bad option or combination of options: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``onnxlrp: error: ...``, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------------------- helpers


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` scores, computed in float64."""
    y = np.asarray(logits, dtype=np.float64)
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def load_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file, one per line: line ``i`` (0-based) names class ``i``.

    Surrounding whitespace is stripped; trailing empty lines are dropped.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"label file not found: {p}")
    try:
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read label file {p}: {exc}") from None
    while lines and not lines[-1]:
        lines.pop()
    return lines


def resolve_class(spec: str, labels: Sequence[str] | None, source: str = "the label file") -> int | None:
    """The class index that ``spec`` names, or None for ``top`` (the predicted class).

    ``spec`` is an integer index, ``top``, or a class name from ``labels`` (case-insensitive
    exact match of a whole line; if none matches, of one of its comma-separated names). An
    unknown or ambiguous name raises :class:`~onnxlrp.errors.InputError` listing close matches.
    Indices are checked against the model's class count later, by the engine.
    """
    s = spec.strip()
    if s.lower() == "top":
        return None
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    if not labels:
        raise InputError(f"class name {s!r} needs class names: the model names no label file; give --labels FILE "
                         "or a class index")
    key = s.casefold()
    hits = [i for i, name in enumerate(labels) if name.casefold() == key]
    if not hits:
        hits = [i for i, name in enumerate(labels) if key in (part.strip().casefold() for part in name.split(","))]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        listed = ", ".join(f"{i} ({labels[i]})" for i in hits)
        raise InputError(f"class name {s!r} is ambiguous in {source}: {listed}; give the index")
    folded = {name.casefold(): name for name in labels if name}
    close = difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)
    close += [folded[n] for n in folded if key in n and folded[n] not in [folded[c] for c in close]][: 5 - len(close)]
    names = [folded[c] if c in folded else c for c in close]
    hint = f"; close matches: {', '.join(repr(n) for n in names)}" if names else ""
    raise InputError(f"unknown class name {s!r} (not in {source}, {len(labels)} classes){hint}")


def _slug(text: str) -> str:
    """A file-name-safe version of a class or method name."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return s or "class"


def _parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+)\s*)?", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH (positive integers), got {text!r}")
    h = int(m.group(1))
    return (h, int(m.group(2)) if m.group(2) is not None else h)


def _parse_floats_arg(text: str) -> tuple[float, ...]:
    try:
        v = parse_floats(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not v:
        raise argparse.ArgumentTypeError("expected at least one number")
    return v


def number(cast: type, ok: Any, what: str) -> Any:
    """An argparse ``type=``: ``cast(text)`` accepted when ``ok(value)``, else "expected <what>"."""

    def parse(text: str) -> Any:
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_parse_percentile = number(float, lambda v: 0 < v <= 100, "a percentile in (0, 100]")


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    key = key.strip()
    v: Any = value.strip()
    if v.lower() in ("true", "false"):
        return key, v.lower() == "true"
    for cast in (int, float):
        try:
            v = cast(v)
            break
        except ValueError:
            continue
    return key, v


class Progress:
    """A progress bar on a stream (stderr): ``[#####.....]  50% 5/10 images 0:04 eta 0:04``.

    On a terminal the bar redraws itself on one line; on anything else (a log file, a pipe) it
    prints one plain line each time a whole unit is done.
    """

    def __init__(self, total: int, enabled: bool, unit: str = "images", stream: TextIO | None = None,
                 width: int = 30) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0.0
        self.start = time.monotonic()
        self._shown = False
        self._last_line = -1
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    @staticmethod
    def _clock(seconds: float) -> str:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m}:{s:02d}"

    def update(self, done: float) -> None:
        """Set the amount done (in units, may be fractional) and redraw."""
        self.done = min(max(done, 0.0), float(self.total))
        self.draw()

    def text(self) -> str:
        """The bar as text (no control characters)."""
        frac = self.done / self.total
        filled = int(frac * self.width)
        elapsed = time.monotonic() - self.start
        eta = f" eta {self._clock(elapsed / frac - elapsed)}" if 0 < frac < 1 else ""
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {frac:4.0%} {int(self.done)}/{self.total} {self.unit} {self._clock(elapsed)}{eta}"

    def draw(self) -> None:
        """Redraw the bar (a terminal) or print a line if a whole unit was completed (anything else)."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write(f"\r{self.text()}\x1b[K")
            self._shown = True
        elif int(self.done) != self._last_line:
            self._last_line = int(self.done)
            self.stream.write(self.text() + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bar's line before other output is printed (a terminal only)."""
        if self.enabled and self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        """Finish: leave the final bar on its own line."""
        if self.enabled and self.tty and self._shown:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _first_transpose_perm(ex: Any) -> list[int] | None:
    """The perm of a Transpose applied directly to the model input, if there is one."""
    for node in ex.prepared.model.graph.node:
        if node.op_type == "Transpose" and ex.input_name in node.input:
            for a in node.attribute:
                if a.name == "perm":
                    return list(a.ints)
    return None


def _load_explainer(args: argparse.Namespace) -> Any:
    from .explainer import Explainer

    return Explainer(args.model, device=args.device, output=getattr(args, "output_name", None),
                     threads=getattr(args, "threads", None))


# --------------------------------------------------------------------------------------- explain


@dataclass
class _Job:
    """Everything the explain loop needs, resolved from the options and the model."""

    spec: Preprocess
    labels: list[str] | None
    methods: list[str]
    targets: list[int | None]  # None = the predicted class
    top_k: int | None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method
    out_dir: Path | None = None
    out_file: Path | None = None


def _model_spec(args: argparse.Namespace, ex: Any) -> Preprocess:
    """Preprocessing from the options, else from the model's metadata and input shape."""
    meta = ex.metadata
    dims = ex.input_shape
    if len(dims) != 4:
        raise InputError(f"the model's input {ex.input_name!r} has {len(dims)} axes "
                         f"({dims}); image models take 4 (N, C, H, W or N, H, W, C)")
    layout = args.layout or detect_layout(dims, meta, _first_transpose_perm(ex))
    c, h, w = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    if args.size is not None:
        size = args.size
        if (h is not None and h != size[0]) or (w is not None and w != size[1]):
            raise InputError(f"--size {size[0]}x{size[1]} does not fit the model's input {dims} ({layout})")
    elif h is not None and w is not None:
        size = (int(h), int(w))
    else:
        raise InputError(f"the model's input {dims} has no fixed image size; give --size")
    channels = 3 if c is None else int(c)
    if channels not in (1, 3):
        raise InputError(f"the model's input has {channels} channels ({layout} {dims}); "
                         "images give 1 (grey) or 3 (colour); is --layout right?")
    preset = args.preset or meta.get("onnxlrp.preprocess") or "imagenet"
    if preset not in PRESETS:
        raise InputError(f"the model's metadata asks for preprocessing {preset!r}, which onnxlrp does not know "
                         f"({', '.join(PRESETS)}); give --preset")
    resample = args.resample or meta.get("onnxlrp.resample") or "bicubic"
    if resample not in RESAMPLE:
        raise InputError(f"the model's metadata asks for resize filter {resample!r}, which onnxlrp does not know "
                         f"({', '.join(RESAMPLE)}); give --resample")
    return Preprocess(preset, size, layout, resample, channels, args.mean, args.std)


def _labels_for(args: argparse.Namespace, ex: Any) -> tuple[list[str] | None, str]:
    if args.labels:
        return load_labels(args.labels), str(args.labels)
    name = ex.metadata.get("onnxlrp.labels")
    if not name:
        return None, ""
    path = Path(args.model).resolve().parent / name
    if not path.is_file():
        _warn(f"the model names the label file {name!r}, but {path} does not exist; classes are shown as indices")
        return None, ""
    return load_labels(path), str(path)


def _method_list(names: Sequence[str] | None) -> list[str]:
    from .methods import list_methods

    chosen: list[str] = []
    for n in names or [DEFAULT_METHOD]:
        for part in n.split(","):
            part = part.strip()
            if not part:
                continue
            expand = list_methods() if part == "all" else [part]
            for m in expand:
                if m not in list_methods():
                    close = difflib.get_close_matches(m, list_methods(), n=3)
                    hint = f"; did you mean {', '.join(close)}?" if close else f"; see '{PROG} methods'"
                    raise UsageError(f"unknown method {m!r}{hint}")
                if m not in chosen:
                    chosen.append(m)
    return chosen


def z_box(args: argparse.Namespace, spec: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """The Z^B box: ``--low``/``--high`` where given, else the preprocessing's true input range."""
    lo, hi = input_range(spec)
    low = _channel_values(args.low, spec, "low")
    high = _channel_values(args.high, spec, "high")
    box = (lo if low is None else low, hi if high is None else high)
    if np.any(np.broadcast_to(box[0], spec.channel_shape()) > np.broadcast_to(box[1], spec.channel_shape())):
        raise UsageError("--low must not exceed --high")
    return box


def _method_options(methods: Sequence[str], given: Sequence[tuple[str, Any]], low_high: tuple[Any, Any],
                    ) -> dict[str, dict[str, Any]]:
    from .methods import METHODS

    extra = dict(given)
    unused = [k for k in extra if not any(k in METHODS[m].options for m in methods)]
    if unused:
        raise UsageError(f"no chosen method takes option(s) {', '.join(unused)}")
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        opts = {k: v for k, v in extra.items() if k in METHODS[m].options}
        if "low" in METHODS[m].options:
            opts["low"], opts["high"] = low_high
        out[m] = opts
    return out


def _channel_values(values: tuple[float, ...] | None, spec: Preprocess, name: str) -> np.ndarray | None:
    if values is None:
        return None
    if len(values) not in (1, spec.channels):
        raise UsageError(f"--{name} takes 1 or {spec.channels} values, not {len(values)}")
    return np.broadcast_to(np.asarray(values, dtype=np.float32), (spec.channels,)).reshape(spec.channel_shape())


def _output_target(args: argparse.Namespace, n_images: int, n_methods: int, n_targets: int) -> tuple[Path | None,
                                                                                                    Path | None]:
    out = Path(args.output) if args.output else Path(DEFAULT_OUTPUT)
    if out.suffix.lower() == ".png" and not out.is_dir():
        if n_images * n_methods * n_targets != 1:
            raise UsageError(f"--output {out} is a file, but this run writes "
                             f"{n_images} image(s) x {n_methods} method(s) x {n_targets} class(es); "
                             "give a directory")
        return None, out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a directory (a single heatmap file must end in .png)")
    return out, None


def _class_name(index: int, labels: list[str] | None) -> str:
    if labels and 0 <= index < len(labels) and labels[index]:
        return labels[index]
    return str(index)


def _class_slug(index: int, labels: list[str] | None) -> str:
    if labels and 0 <= index < len(labels) and labels[index]:
        name = labels[index]
        if sum(1 for n in labels if n == name) > 1:
            return f"{_slug(name)}-{index}"
        return _slug(name)
    return str(index)


def _stems(paths: Sequence[Path]) -> list[str]:
    """File-name stems for the inputs, made unique (``photo``, ``photo-2``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        s = _slug(p.stem)
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def _cmd_explain(args: argparse.Namespace) -> int:
    methods = _method_list(args.method)
    if args.top_k is not None and args.target:
        raise UsageError("give either --target or --top-k, not both")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    target_specs = args.target or ["top"]
    n_targets = args.top_k if args.top_k is not None else len(target_specs)
    for opt in args.option or []:
        if opt[0] in ("low", "high"):
            raise UsageError(f"give {opt[0]} with --{opt[0]}, not --option")
    paths = expand_inputs(args.images)
    out_dir, out_file = _output_target(args, len(paths), len(methods), n_targets)

    ex = _load_explainer(args)
    spec = _model_spec(args, ex)
    labels, label_source = _labels_for(args, ex)
    targets = [resolve_class(t, labels, label_source or "the label file") for t in target_specs]
    options = _method_options(methods, args.option or [], z_box(args, spec))

    mean_std = ""
    if args.mean is not None or args.std is not None:
        _, m, s = spec.stats()
        mean_std = f", mean {m.round(4).tolist()}, std {s.round(4).tolist()}"
    h, w = spec.size
    print(f"model {args.model}: input {ex.input_name} {spec.layout} {spec.channels}x{h}x{w}, "
          f"preset {spec.preset}{mean_std}, resample {spec.resample}, device {ex.device}")

    job = _Job(spec, labels, methods, targets, args.top_k, options, out_dir, out_file)
    show = bool(args.progress) or (args.progress is None and sys.stderr.isatty())
    progress = Progress(len(paths), show)
    try:
        _run_batches(args, ex, job, paths, progress)
    finally:
        progress.close()
    return 0


def _targets_for(job: _Job, logits: np.ndarray) -> np.ndarray:
    """``(T, N)`` class indices for a batch."""
    order = np.argsort(-logits, axis=1, kind="stable")
    if job.top_k is not None:
        if job.top_k > logits.shape[1]:
            raise InputError(f"--top-k {job.top_k} is more than the model's {logits.shape[1]} classes")
        return order[:, : job.top_k].T.copy()
    rows = [order[:, 0] if t is None else np.full(logits.shape[0], t) for t in job.targets]
    return np.stack(rows).astype(np.int64)


def _run_batches(args: argparse.Namespace, ex: Any, job: _Job, paths: list[Path], progress: Progress) -> None:
    spec = job.spec
    stems = _stems(paths)
    step = ex.fixed_batch or args.batch_size
    n_methods = len(job.methods)
    make_grid = n_methods > 1 or args.grid
    for start in range(0, len(paths), step):
        batch = paths[start : start + step]
        x = load_images(batch, spec)
        n = len(batch)
        if ex.fixed_batch and n < ex.fixed_batch:  # pad a fixed-batch model's last batch
            x = np.concatenate([x, np.repeat(x[-1:], ex.fixed_batch - n, axis=0)])
        logits = ex.predict(x)
        num_classes = logits.shape[1]
        if job.labels is not None and len(job.labels) != num_classes and start == 0:
            _warn(f"the label file has {len(job.labels)} names but the model has {num_classes} classes")
        tg = _targets_for(job, logits)
        bad = tg[(tg < 0) | (tg >= num_classes)]
        if bad.size:
            raise InputError(f"class index {int(bad[0])} is out of range: the model has {num_classes} classes "
                             f"(0..{num_classes - 1})")
        heats: dict[str, np.ndarray] = {}
        for mi, m in enumerate(job.methods):
            heats[m] = np.asarray(ex.explain(x, targets=tg, method=m, relu=args.relu, **job.options[m]))[:, :n]
            progress.update(start + n * (mi + 1) / n_methods)
        probs = softmax(logits[:n])
        progress.clear()
        for i, path in enumerate(batch):
            _write_sample(args, job, path, stems[start + i], probs[i], tg[:, i], {m: h[:, i] for m, h in heats.items()},
                          make_grid)
        sys.stdout.flush()
        progress.update(start + n)


def _write_sample(args: argparse.Namespace, job: _Job, path: Path, stem: str, probs: np.ndarray, classes: np.ndarray,
                  heats: dict[str, np.ndarray], make_grid: bool) -> None:
    """Print one image's predictions and write its files."""
    spec = job.spec
    print(path)
    k = min(TOP_PRINTED, probs.shape[0])
    for rank, c in enumerate(np.argsort(-probs, kind="stable")[:k], start=1):
        print(f"  {rank}. {c:5d}  {_class_name(int(c), job.labels):<30s} {probs[c]:.4f}")
    photo = load_rgb(path, spec.size, spec.resample) if (args.overlay or make_grid) else None
    written: list[Path] = []
    for ti, c in enumerate(int(v) for v in classes):
        cslug = _class_slug(c, job.labels)
        panels: list[np.ndarray] = []
        for m, h in heats.items():
            sample = h[ti]
            if job.out_file is not None:
                png = job.out_file
                base = png.with_suffix("")
            else:
                assert job.out_dir is not None
                base = job.out_dir / f"{stem}_{m}_{cslug}"
                png = base.with_name(base.name + ".png")
            rgb = heatmap_to_rgb(sample, args.cmap, layout=spec.layout, percentile=args.clip_percentile)
            written.append(save_png(png, rgb))
            if args.overlay:
                assert photo is not None
                written.append(save_png(base.with_name(base.name + "_overlay.png"),
                                        overlay(photo, sample, cmap=args.cmap, layout=spec.layout,
                                                percentile=args.clip_percentile)))
            if args.save_npy:
                npy = base.with_name(base.name + ".npy")
                np.save(npy, np.asarray(sample, dtype=np.float32))
                written.append(npy)
            panels.append(rgb)
        if make_grid and job.out_dir is not None:
            assert photo is not None
            title = f"{_class_name(c, job.labels)} ({probs[c]:.2f})"
            columns = args.grid_columns or _default_columns(len(panels) + 1)
            img = grid([photo, *panels], [title, *heats], columns=columns, min_size=GRID_MIN_PANEL)
            written.append(save_png(job.out_dir / f"{stem}_grid_{cslug}.png", img))
    for p in written:
        print(f"  wrote {p}")


def _default_columns(n: int) -> int:
    return n if n <= 8 else 7


# --------------------------------------------------------------------------------------- info


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


def _cmd_info(args: argparse.Namespace) -> int:
    from collections import Counter

    from .errors import UnsupportedModelError
    from .graph import load_model
    from .methods import METHODS

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
        ex = _load_explainer(args)
        shape = None
        if args.size is not None:
            dims = ex.input_shape
            layout = args.layout or detect_layout(dims, ex.metadata, _first_transpose_perm(ex))
            c = dims[1] if layout == "NCHW" else dims[-1]
            c = 3 if c is None else c
            h, w = args.size
            shape = (ex.fixed_batch or 1, c, h, w) if layout == "NCHW" else (ex.fixed_batch or 1, h, w, c)
        layers = ex.layers(method=args.method, shape=shape)
    except UnsupportedModelError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    stripped = f" (a trailing {ex.prepared.softmax_stripped} removed)" if ex.prepared.softmax_stripped else ""
    layout = args.layout or detect_layout(ex.input_shape, ex.metadata, _first_transpose_perm(ex))
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


# --------------------------------------------------------------------------------------- methods


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS, list_methods

    names = list_methods()
    width = max(len(n) for n in names)
    for n in names:
        m = METHODS[n]
        opts = f"  [options: {', '.join(m.options)}]" if m.options else ""
        print(f"{n.ljust(width)}  {m.family:<8s}  {m.summary}{opts}")
    return 0


# --------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``onnxlrp`` argument parser with its subcommands."""
    parser = _Parser(prog=PROG, description="Explain ONNX image classifiers with LRP, SGLRP and related methods.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    fmt = argparse.RawDescriptionHelpFormatter
    ex = sub.add_parser(
        "explain", help="write heatmaps for images", formatter_class=fmt,
        description="Explain a model's decision on images: write a heatmap per image, method and class, and print "
                    "the top-5 predictions.",
        epilog="examples:\n"
               "  onnxlrp explain model.onnx photo.jpg --target zebra\n"
               "  onnxlrp explain model.onnx photos/ --method lrp --method sglrp --top-k 2 --overlay\n"
               "  onnxlrp explain model.onnx photo.jpg --method all --output figure/\n"
               "  onnxlrp explain model.onnx photo.jpg --method sglrp --output heatmap.png")
    ex.add_argument("model", help="the ONNX model file")
    ex.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of images")
    g = ex.add_argument_group("what to explain")
    g.add_argument("-m", "--method", action="append", metavar="NAME",
                   help=f"method (repeatable, or comma-separated; 'all' = every method; default {DEFAULT_METHOD}); "
                        f"see '{PROG} methods'")
    g.add_argument("-t", "--target", action="append", metavar="CLASS",
                   help="class to explain: an index, a name from the label file (case-insensitive), or 'top' "
                        "(the predicted class, the default); repeatable")
    g.add_argument("-k", "--top-k", type=int, metavar="K", help="explain the K best classes of each image")
    g.add_argument("--relu", action="store_true", help="keep only positive relevance")
    g.add_argument("--low", type=_parse_floats_arg, metavar="V[,V,V]",
                   help="lower end of the input box for Z^B (lrp, clrp, sglrp, epsilon_gamma_box), one value or "
                        "one per channel in model input units; default: the preset's true range")
    g.add_argument("--high", type=_parse_floats_arg, metavar="V[,V,V]", help="upper end of the input box (see --low)")
    g.add_argument("--option", action="append", type=_parse_option, metavar="KEY=VALUE",
                   help="a method option, passed to every chosen method that takes it (e.g. n_samples=16, steps=32, "
                        "epsilon=0.01, gamma=0.5, layer=NAME)")
    g = ex.add_argument_group("preprocessing (defaults: the model's onnxlrp.* metadata, its input shape)")
    g.add_argument("--preset", choices=list(PRESETS),
                   help="imagenet: RGB [0,1], ImageNet mean/std; caffe: BGR 0..255 minus the mean pixel; "
                        "tf: RGB [-1,1]; none: RGB [0,1] (default: metadata onnxlrp.preprocess, else imagenet)")
    g.add_argument("--size", type=_parse_size, metavar="S|HxW", help="input size (default: the model's)")
    g.add_argument("--mean", type=_parse_floats_arg, metavar="M[,M,M]",
                   help="per-channel mean to subtract after scaling (replaces the preset's)")
    g.add_argument("--std", type=_parse_floats_arg, metavar="S[,S,S]", help="per-channel std (replaces the preset's)")
    g.add_argument("--resample", choices=list(RESAMPLE),
                   help="resize filter (default: metadata onnxlrp.resample, else bicubic)")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], type=str.upper,
                   help="input layout (default: metadata onnxlrp.layout, else detected from the graph)")
    g.add_argument("--labels", metavar="FILE", help="class names, one per line (default: metadata onnxlrp.labels)")
    g = ex.add_argument_group("output")
    g.add_argument("-o", "--output", metavar="PATH",
                   help=f"a directory (default {DEFAULT_OUTPUT}/) or, for a single heatmap, a .png file")
    g.add_argument("--overlay", action="store_true", help="also write the heatmap blended on the photo")
    g.add_argument("--save-npy", action="store_true", help="also write the raw relevance (float32, input shape)")
    g.add_argument("--grid", action="store_true", help="write the grid figure even for a single method "
                   "(it is written whenever several methods are chosen)")
    g.add_argument("--grid-columns", type=int, metavar="N", help="panels per row in the grid (default: one row "
                   "up to 8 panels, else 7)")
    g.add_argument("--cmap", choices=list(COLORMAPS), default="seismic", help="colour map (default seismic)")
    g.add_argument("--clip-percentile", type=_parse_percentile, metavar="P",
                   help="scale each picture by the P-th percentile of |relevance| instead of its maximum (e.g. 99.5): "
                        "the strongest pixels saturate, weaker structure shows; the .npy files are not affected")
    g = ex.add_argument_group("running")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    g.add_argument("--threads", type=int, metavar="N", help="onnxruntime threads (default: its choice)")
    g.add_argument("-b", "--batch-size", type=int, default=8, metavar="N", help="images per batch (default 8)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--output-name", metavar="NAME", help="the model output to explain (default: the first float one)")
    ex.set_defaults(func=_cmd_explain)

    info = sub.add_parser("info", help="inputs, outputs, layers and rules of a model",
                          description="Print a model's inputs and outputs, its layers and the rule each layer "
                                      "gets under a method; report what cannot be explained (exit status 1).")
    info.add_argument("model", help="the ONNX model file")
    info.add_argument("-m", "--method", default=DEFAULT_METHOD, metavar="NAME",
                      help=f"show the rules of this method (default {DEFAULT_METHOD})")
    info.add_argument("--size", type=_parse_size, metavar="S|HxW", help="input size, for models without a fixed one")
    info.add_argument("--layout", choices=["NCHW", "NHWC"], type=str.upper, help="input layout (see explain)")
    info.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="default cpu")
    info.add_argument("--output-name", metavar="NAME", help="the model output to explain")
    info.set_defaults(func=_cmd_info)

    meth = sub.add_parser("methods", help="list the explanation methods",
                          description="List every method: name, family, what it computes, its options.")
    meth.set_defaults(func=_cmd_methods)

    from . import cli_evaluate  # the evaluate subcommand lives in its own module

    cli_evaluate.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 success, 1 error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2

    def one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"{PROG}: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line_warning
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OnnxLrpError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `onnxlrp info model.onnx | head`
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except OSError as exc:  # files that cannot be written or read
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{PROG}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
