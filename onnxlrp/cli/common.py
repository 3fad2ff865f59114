"""What the ``onnxlrp`` commands share: option parsing, labels and classes, the model's preprocessing,
the progress bar, output names and atomic writes.

Every command module (``explain``, ``info``, ``methods``, ``evaluate``) imports this module and
none imports another. Errors: :class:`UsageError` (exit status 2) for a bad option or
combination of options; any :class:`~onnxlrp.errors.OnnxLrpError` (exit status 1) for the rest.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import math
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

from ..errors import InputError, ModelLoadError, OnnxLrpError
from ..image import PRESETS, RESAMPLE, Preprocess, detect_layout, input_range, parse_floats
from ..paths import confined, read_bounded
from ..render import atomic_open, write_csv, write_text

PROG = "onnxlrp"
DEFAULT_METHOD = "sglrp"
DEFAULT_OUTPUT = "onnxlrp-out"
TOP_PRINTED = 5
GRID_MIN_PANEL = 160  # grid panels of small models are enlarged to at least this many pixels
MAX_LABEL_BYTES = 16 * 2**20  # a label file larger than this is refused (ImageNet's is 10 kB)
MAX_SAMPLE_BYTES = 2**30  # one preprocessed sample (float32) larger than this is refused before any image is read
EXPLAIN_FACTOR = 32  # an explanation needs at least this many times one sample's input in memory
MAX_NAME_BYTES = 255  # longest file name (UTF-8 bytes) the common file systems take
STEM_BYTES = 120  # an input's part of an output file name, at most (UTF-8 bytes)
CLASS_BYTES = 60  # a class name's part of an output file name, at most


class UsageError(Exception):
    """A bad option or combination of options: exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``onnxlrp: error: ...``, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def warn(message: str) -> None:
    """Print ``onnxlrp: warning: MESSAGE`` on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def report_error(message: str) -> None:
    """Print ``onnxlrp: error: MESSAGE`` on stderr (one line: line breaks become spaces)."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


# --------------------------------------------------------------------------------------- numbers


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` scores, computed in float64."""
    y = np.asarray(logits, dtype=np.float64)
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def number(cast: type, ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``cast(text)`` accepted when ``ok(value)``, else "expected <what>".

    Floats must be finite (``nan``, ``inf`` are refused whatever ``ok`` says).
    """

    def parse(text: str) -> Any:
        try:
            v = cast(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (isinstance(v, float) and not math.isfinite(v)) or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
parse_percentile = number(float, lambda v: 0 < v <= 100, "a percentile in (0, 100]")


def parse_size(text: str) -> tuple[int, int]:
    """``S`` or ``HxW`` (also ``H,W``) as ``(height, width)``, positive integers."""
    m = re.fullmatch(r"\s*(\d{1,9})\s*(?:[xX,]\s*(\d{1,9})\s*)?", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH (positive integers), got {text!r}")
    h = int(m.group(1))
    return (h, int(m.group(2)) if m.group(2) is not None else h)


def parse_floats_arg(text: str) -> tuple[float, ...]:
    """``V[,V,...]``: one or more finite numbers (for ``--mean``, ``--std``, ``--low``, ``--high``)."""
    try:
        v = parse_floats(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not v:
        raise argparse.ArgumentTypeError("expected at least one number")
    if not all(math.isfinite(x) for x in v):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return v


def _bool_text(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "yes", "1", "on"):
        return True
    if t in ("false", "no", "0", "off"):
        return False
    raise ValueError(text)


def _int_text(text: str) -> int:
    """An integer written as ``16``, ``+16`` or ``16.0`` (not ``1e3``: an exponent is a float)."""
    t = text.strip()
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    if re.fullmatch(r"[+-]?\d+\.0*", t):
        return int(float(t))
    raise ValueError(text)


_MAX_COUNT = 1_000_000  # n_samples / steps beyond this would run for days (the engine's bound too)
_INT64_MAX = 2**63 - 1

#: The type and range of every method option the command line passes on: (parse, accepted, expected).
OPTION_TYPES: dict[str, tuple[Callable[[str], Any], Callable[[Any], bool], str]] = {
    "epsilon": (float, lambda v: v > 0, "a positive number"),
    "gamma": (float, lambda v: v >= 0, "a number >= 0"),
    "noise_scale": (float, lambda v: v >= 0, "a number >= 0"),
    "baseline": (float, lambda v: True, "a number"),
    "n_samples": (_int_text, lambda v: 1 <= v <= _MAX_COUNT, f"an integer from 1 to {_MAX_COUNT}"),
    "steps": (_int_text, lambda v: 1 <= v <= _MAX_COUNT, f"an integer from 1 to {_MAX_COUNT}"),
    "batch_size": (_int_text, lambda v: v >= 1, "a positive integer"),
    "seed": (_int_text, lambda v: 0 <= v <= _INT64_MAX, "an integer >= 0"),
    "bias": (_bool_text, lambda v: True, "true or false"),
    "layer": (str, lambda v: bool(v), "a tensor name"),
}


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value parsed as :data:`OPTION_TYPES` says for ``KEY``.

    A malformed or out-of-range value (``epsilon=abc``, ``epsilon=-1``, ``steps=ten``,
    ``epsilon=nan``) is an ``ArgumentTypeError`` (exit status 2). A key no method takes is
    passed through as text; :func:`method_options` refuses it.
    """
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    key, value = key.strip(), value.strip()
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key not in OPTION_TYPES:
        return key, value
    cast, ok, what = OPTION_TYPES[key]
    try:
        v = cast(value)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"option {key} must be {what}, got {value!r}") from None
    if (isinstance(v, float) and not math.isfinite(v)) or not ok(v):
        raise argparse.ArgumentTypeError(f"option {key} must be {what}, got {value!r}")
    return key, v


# --------------------------------------------------------------------------------------- labels and classes


def load_labels(path: str | os.PathLike[str], what: str = "label file",
                error: type[OnnxLrpError] = InputError) -> list[str]:
    """Class names from a text file, one per line: line ``i`` (0-based) names class ``i``.

    Surrounding whitespace is stripped; trailing empty lines are dropped. The file must be a
    regular file (not a pipe or device) of at most 16 MiB, in UTF-8.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise error(f"{what} not found: {p}")
    data = read_bounded(p, what, MAX_LABEL_BYTES, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"cannot read {what} {p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = [line.strip() for line in text.splitlines()]
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
        if len(s) > 18 or int(s) < 0:
            shown = s if len(s) <= 24 else s[:21] + "..."
            raise InputError(f"class index {shown} is out of range (classes are numbered 0, 1, ...)")
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
        listed = ", ".join(f"{i} ({labels[i]})" for i in hits[:10])
        raise InputError(f"class name {s!r} is ambiguous in {source}: {listed}; give the index")
    folded = {name.casefold(): name for name in labels if name}
    close = difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)
    close += [folded[n] for n in folded if key in n and folded[n] not in [folded[c] for c in close]][: 5 - len(close)]
    names = [folded[c] if c in folded else c for c in close]
    hint = f"; close matches: {', '.join(repr(n) for n in names)}" if names else ""
    raise InputError(f"unknown class name {s!r} (not in {source}, {len(labels)} classes){hint}")


def labels_for(args: argparse.Namespace, ex: Any) -> tuple[list[str] | None, str]:
    """The class names (``--labels``, else the model's ``onnxlrp.labels`` file) and where they came from.

    The metadata path is untrusted: it must stay inside the model's folder (no absolute path,
    no ``..`` or symlink that leads out), else :class:`~onnxlrp.errors.ModelLoadError`. A
    metadata file that does not exist is a warning (classes are shown as indices).
    """
    if args.labels:
        return load_labels(args.labels), str(args.labels)
    name = ex.metadata.get("onnxlrp.labels")
    if not name:
        return None, ""
    what = "metadata onnxlrp.labels"
    path = confined(Path(args.model).resolve().parent, name, what, ModelLoadError)
    if not path.exists():
        warn(f"the model names the label file {name!r}, but {path} does not exist; classes are shown as indices")
        return None, ""
    return load_labels(path, what, ModelLoadError), str(path)


def class_name(index: int, labels: list[str] | None) -> str:
    """The class's name from the labels, else its index as text."""
    if labels and 0 <= index < len(labels) and labels[index]:
        return labels[index]
    return str(index)


def class_slug(index: int, labels: list[str] | None) -> str:
    """The class's part of a file name: its name made safe (``NAME-INDEX`` if the name occurs twice), or its index."""
    if labels and 0 <= index < len(labels) and labels[index]:
        name = labels[index]
        if sum(1 for n in labels if n == name) > 1:
            return f"{cap_bytes(slug(name), CLASS_BYTES - 8)}-{index}"
        return cap_bytes(slug(name), CLASS_BYTES)
    return str(index)


# --------------------------------------------------------------------------------------- methods and options


def method_list(names: Sequence[str] | None) -> list[str]:
    """The methods ``--method`` names (repeatable, comma-separated, ``all``), without repeats.

    An unknown or empty name (``-m ''``, ``-m ,``) is a :class:`UsageError`.
    """
    from ..methods import list_methods

    chosen: list[str] = []
    for n in names if names is not None else [DEFAULT_METHOD]:
        parts = [part.strip() for part in n.split(",")]
        if not any(parts) or (len(parts) > 1 and not all(parts)):
            raise UsageError(f"--method {n!r} names no method (an empty name); see '{PROG} methods'")
        for part in parts:
            expand = list_methods() if part == "all" else [part]
            for m in expand:
                if m not in list_methods():
                    close = difflib.get_close_matches(m, list_methods(), n=3)
                    hint = f"; did you mean {', '.join(close)}?" if close else f"; see '{PROG} methods'"
                    raise UsageError(f"unknown method {m!r}{hint}")
                if m not in chosen:
                    chosen.append(m)
    return chosen


def check_option_keys(given: Sequence[tuple[str, Any]] | None) -> None:
    """Refuse ``--option low=...``/``high=...`` (they have their own options)."""
    for key, _ in given or []:
        if key in ("low", "high"):
            raise UsageError(f"give {key} with --{key}, not --option")


def method_options(methods: Sequence[str], given: Sequence[tuple[str, Any]], low_high: tuple[Any, Any],
                   ) -> dict[str, dict[str, Any]]:
    """The options of each method: the ``--option``s it takes, and the Z^B box where it takes ``low``/``high``."""
    from ..methods import METHODS

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


def z_box(args: argparse.Namespace, spec: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """The Z^B box: ``--low``/``--high`` where given, else the preprocessing's true input range."""
    lo, hi = input_range(spec)
    low = _channel_values(args.low, spec, "low")
    high = _channel_values(args.high, spec, "high")
    box = (lo if low is None else low, hi if high is None else high)
    if not (np.all(np.isfinite(box[0])) and np.all(np.isfinite(box[1]))):
        raise UsageError("--low and --high must be finite numbers (in float32)")
    if np.any(np.broadcast_to(box[0], spec.channel_shape()) > np.broadcast_to(box[1], spec.channel_shape())):
        raise UsageError("--low must not exceed --high")
    return box


# --------------------------------------------------------------------------------------- the model


def first_transpose_perm(ex: Any) -> list[int] | None:
    """The perm of a Transpose applied directly to the model input, if there is one."""
    for node in ex.prepared.model.graph.node:
        if node.op_type == "Transpose" and ex.input_name in node.input:
            for a in node.attribute:
                if a.name == "perm":
                    return list(a.ints)
    return None


def load_explainer(args: argparse.Namespace) -> Any:
    """The :class:`~onnxlrp.Explainer` of ``args.model`` on ``args.device``; for a graph written by
    ``onnxlrp compile``, a :class:`~onnxlrp.compiler.runner.CompiledExplainer` that runs it."""
    from ..compiler.runner import CompiledExplainer, is_compiled
    from ..explainer import Explainer
    from ..loading import load_model

    proto = load_model(args.model)
    if is_compiled(proto):
        return CompiledExplainer(proto, device=args.device, threads=getattr(args, "threads", None))
    return Explainer(proto, device=args.device, output=getattr(args, "output_name", None),
                     threads=getattr(args, "threads", None))


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where the system does not say."""
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return int(pages) * int(page) if pages > 0 and page > 0 else None


def check_size(spec: Preprocess) -> None:
    """Refuse an input size whose explanation cannot fit in memory, before any image is read.

    One preprocessed sample takes ``C·H·W·4`` bytes (float32); the decoded photo resized to it
    about as much again. Refused (:class:`~onnxlrp.errors.InputError`) when one sample is
    larger than 1 GiB, or when ``EXPLAIN_FACTOR`` (32) times it exceeds the machine's
    physical memory.
    """
    h, w = spec.size
    sample = spec.channels * h * w * 4
    memory = physical_memory()
    need = EXPLAIN_FACTOR * sample
    if sample > MAX_SAMPLE_BYTES or (memory is not None and need > memory):
        limit = f"the limit is {_gib(MAX_SAMPLE_BYTES)} per sample"
        if memory is not None:
            limit += f" and {EXPLAIN_FACTOR}x a sample within this machine's {_gib(memory)} of memory"
        raise InputError(f"input size {h}x{w} ({spec.channels} channels) needs {_gib(sample)} per preprocessed "
                         f"sample and about {_gib(need)} to explain it; {limit}: give a smaller --size")


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**28 else f"{n / 2**20:.3g} MiB"


def model_spec(args: argparse.Namespace, ex: Any) -> Preprocess:
    """Preprocessing from the options, else from the model's metadata and input shape (size bound checked)."""
    meta = ex.metadata
    dims = ex.input_shape
    if len(dims) != 4:
        raise InputError(f"the model's input {ex.input_name!r} has {len(dims)} axes "
                         f"({dims}); image models take 4 (N, C, H, W or N, H, W, C)")
    layout = args.layout or detect_layout(dims, meta, first_transpose_perm(ex))
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
    spec = Preprocess(preset, size, layout, resample, channels, args.mean, args.std)
    check_size(spec)
    return spec


# --------------------------------------------------------------------------------------- output names


def slug(text: str, fallback: str = "class") -> str:
    """A file-name-safe version of a name: letters and digits (any script, NFC), ``.``, ``_``, ``-``.

    Everything else (path separators, spaces, control characters) becomes ``_``; leading and
    trailing dots and underscores are removed, so ``..`` or ``a/../b`` cannot leave a folder.
    An empty result is ``fallback``.
    """
    s = unicodedata.normalize("NFC", text)
    s = re.sub(r"[^\w.-]+", "_", s.strip()).strip("._")
    return s or fallback


def cap_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes; a cut name ends in ``~`` and 8 hex digits of its hash."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    digest = hashlib.sha1(raw).hexdigest()[:8]
    head = raw[: max(limit - 9, 1)].decode("utf-8", errors="ignore")
    return f"{head}~{digest}"


def name_key(name: str) -> str:
    """The key under which two file names are the same on a case-insensitive, normalising file system."""
    return unicodedata.normalize("NFC", name).casefold()


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """One output stem per input, unique in the run even on a case-insensitive file system.

    The stem is the input's file name without its extension, made safe (:func:`slug`) and cut
    to ``STEM_BYTES`` bytes. The first input with a stem keeps it; a later one with the same
    stem (ignoring case) gets ``STEM-2``, ``STEM-3``, … — the first number that is no other
    input's stem either (``a/photo.jpg``, ``b/photo.jpg``, ``c/photo-2.jpg`` give ``photo``,
    ``photo-3``, ``photo-2``).
    """
    bases = [cap_bytes(slug(p.stem, "image"), STEM_BYTES) for p in paths]
    taken_by_base = {name_key(b) for b in bases}
    used: set[str] = set()
    out: list[str] = []
    for b in bases:
        name = b
        if name_key(name) in used:
            k = 2
            while True:
                name = f"{b}-{k}"
                key = name_key(name)
                if key not in used and key not in taken_by_base:
                    break
                k += 1
        used.add(name_key(name))
        out.append(name)
    return out


class OutputNames:
    """The files of one run in one folder: each name is handed out once (ignoring case).

    ``claim("photo_lrp_zebra", ".png")`` returns ``FOLDER/photo_lrp_zebra.png``, or, if a file
    of that name (ignoring case) was already handed out in this run, ``…-2.png``. Names are
    cut to 255 UTF-8 bytes with their suffix, and always lie directly in ``folder``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()

    def claim(self, base: str, suffix: str) -> Path:
        """A file ``folder/base+suffix`` not handed out before in this run (see the class docstring)."""
        base = slug(base, "file")
        room = MAX_NAME_BYTES - len(suffix.encode("utf-8")) - 8  # room for "-NNNNNN"
        base = cap_bytes(base, room)
        name = base + suffix
        k = 2
        while name_key(name) in self.used:
            name = f"{base}-{k}{suffix}"
            k += 1
        self.used.add(name_key(name))
        path = self.folder / name
        if path.parent != self.folder or os.sep in name or (os.altsep and os.altsep in name):
            raise AssertionError(f"output name {name!r} leaves the output folder")  # slug() makes this impossible
        return path


# --------------------------------------------------------------------------------------- atomic writes


def save_npy(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a ``.npy`` file, atomically; return the path."""
    with atomic_open(path) as fh:
        np.save(fh, array)
    return path


# --------------------------------------------------------------------------------------- progress


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


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw the progress bar: ``--progress``, or by default when stderr is a terminal."""
    return bool(args.progress) or (args.progress is None and sys.stderr.isatty())


__all__ = [
    "DEFAULT_METHOD", "DEFAULT_OUTPUT", "GRID_MIN_PANEL", "OPTION_TYPES", "PROG", "TOP_PRINTED", "OutputNames",
    "Parser", "Progress", "UsageError", "atomic_open", "cap_bytes", "check_option_keys", "check_size", "class_name",
    "class_slug", "first_transpose_perm", "labels_for", "load_explainer", "load_labels", "method_list",
    "method_options", "model_spec", "name_key", "number", "parse_floats_arg", "parse_option", "parse_percentile",
    "parse_size", "physical_memory", "positive_int", "report_error", "resolve_class", "save_npy", "show_progress",
    "slug", "softmax", "unique_stems", "warn", "write_csv", "write_text", "z_box",
]


def add_preprocessing_args(parser: argparse.ArgumentParser,
                           title: str = "preprocessing (defaults: the model's onnxlrp.* metadata, its input shape)",
                           ) -> argparse._ArgumentGroup:
    """The preprocessing options shared by ``explain``, ``evaluate`` and ``explain-dataset``, as one group."""
    from ..image import PRESETS, RESAMPLE

    g = parser.add_argument_group(title)
    g.add_argument("--preset", choices=list(PRESETS),
                   help="imagenet: RGB [0,1], ImageNet mean/std; caffe: BGR 0..255 minus the mean pixel; "
                        "tf: RGB [-1,1]; none: RGB [0,1] (default: metadata onnxlrp.preprocess, else imagenet)")
    g.add_argument("--size", type=parse_size, metavar="S|HxW", help="input size (default: the model's)")
    g.add_argument("--mean", type=parse_floats_arg, metavar="M[,M,M]",
                   help="per-channel mean to subtract after scaling (replaces the preset's)")
    g.add_argument("--std", type=parse_floats_arg, metavar="S[,S,S]", help="per-channel std (replaces the preset's)")
    g.add_argument("--resample", choices=list(RESAMPLE),
                   help="resize filter (default: metadata onnxlrp.resample, else bicubic)")
    g.add_argument("--layout", choices=["NCHW", "NHWC"], type=str.upper,
                   help="input layout (default: metadata onnxlrp.layout, else detected from the graph)")
    g.add_argument("--labels", metavar="FILE", help="class names, one per line (default: metadata onnxlrp.labels)")
    return g
