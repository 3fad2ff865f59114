"""``onnxlrp explain``: heatmaps for images (see ``docs/cli.md``).

Writes a heatmap PNG per image, method and class (optionally overlays, raw ``.npy`` and a grid
figure) and prints the top-5 predictions of every image and every file it wrote. An image that
cannot be read is reported on stderr (one line) and skipped; every other image is explained;
the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..image import Preprocess, expand_inputs, load_sample
from ..render import COLORMAPS, grid, heatmap_to_rgb, overlay, save_png
from .common import (
    DEFAULT_METHOD,
    DEFAULT_OUTPUT,
    GRID_MIN_PANEL,
    PROG,
    TOP_PRINTED,
    OutputNames,
    Progress,
    UsageError,
    add_preprocessing_args,
    check_option_keys,
    class_name,
    class_slug,
    labels_for,
    load_explainer,
    method_list,
    method_options,
    model_spec,
    parse_floats_arg,
    parse_option,
    parse_percentile,
    positive_int,
    report_error,
    resolve_class,
    save_npy,
    show_progress,
    softmax,
    unique_stems,
    warn,
    z_box,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``explain`` subcommand to the ``onnxlrp`` parser's subparsers; return its parser."""
    ex = sub.add_parser(
        "explain", help="write heatmaps for images", formatter_class=argparse.RawDescriptionHelpFormatter,
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
    g.add_argument("-k", "--top-k", type=positive_int, metavar="K", help="explain the K best classes of each image")
    g.add_argument("--relu", action="store_true", help="keep only positive relevance")
    g.add_argument("--low", type=parse_floats_arg, metavar="V[,V,V]",
                   help="lower end of the input box for Z^B (lrp, clrp, sglrp, epsilon_gamma_box), one value or "
                        "one per channel in model input units; default: the preset's true range")
    g.add_argument("--high", type=parse_floats_arg, metavar="V[,V,V]", help="upper end of the input box (see --low)")
    g.add_argument("--option", action="append", type=parse_option, metavar="KEY=VALUE",
                   help="a method option, passed to every chosen method that takes it (e.g. n_samples=16, steps=32, "
                        "epsilon=0.01, gamma=0.5, layer=NAME)")
    add_preprocessing_args(ex)
    g = ex.add_argument_group("output")
    g.add_argument("-o", "--output", metavar="PATH",
                   help=f"a directory (default {DEFAULT_OUTPUT}/) or, for a single heatmap, a .png file")
    g.add_argument("--overlay", action="store_true", help="also write the heatmap blended on the photo")
    g.add_argument("--save-npy", action="store_true", help="also write the raw relevance (float32, input shape)")
    g.add_argument("--grid", action="store_true", help="write the grid figure even for a single method "
                   "(it is written whenever several methods are chosen)")
    g.add_argument("--grid-columns", type=positive_int, metavar="N", help="panels per row in the grid (default: one "
                   "row up to 8 panels, else 7)")
    g.add_argument("--cmap", choices=list(COLORMAPS), default="seismic", help="colour map (default seismic)")
    g.add_argument("--clip-percentile", type=parse_percentile, metavar="P",
                   help="scale each picture by the P-th percentile of |relevance| instead of its maximum (e.g. 99.5): "
                        "the strongest pixels saturate, weaker structure shows; the .npy files are not affected")
    g = ex.add_argument_group("running")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    g.add_argument("--threads", type=positive_int, metavar="N", help="onnxruntime threads (default: its choice)")
    g.add_argument("-b", "--batch-size", type=positive_int, default=8, metavar="N",
                   help="images per batch (default 8)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--output-name", metavar="NAME", help="the model output to explain (default: the first float one)")
    ex.set_defaults(func=run)
    return ex


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
    names: OutputNames | None = None
    failed: list[Path] = field(default_factory=list)  # images that could not be read


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


def run(args: argparse.Namespace) -> int:
    """Run ``onnxlrp explain``; return the exit status (errors are raised for :func:`onnxlrp.cli.main`)."""
    methods = method_list(args.method)
    if args.top_k is not None and args.target:
        raise UsageError("give either --target or --top-k, not both")
    target_specs = args.target or ["top"]
    n_targets = args.top_k if args.top_k is not None else len(target_specs)
    check_option_keys(args.option)
    paths = expand_inputs(args.images)
    out_dir, out_file = _output_target(args, len(paths), len(methods), n_targets)

    ex = load_explainer(args)
    compiled = getattr(ex, "method", None) if not hasattr(ex, "layers") else None
    if compiled is not None:  # a graph written by `onnxlrp compile` explains with its own method only
        if args.method is None:
            methods = [compiled]
        elif methods != [compiled]:
            raise UsageError(f"{args.model} is a compiled {compiled!r} graph: it explains with --method {compiled} "
                             "only")
    spec = model_spec(args, ex)
    labels, label_source = labels_for(args, ex)
    targets = [resolve_class(t, labels, label_source or "the label file") for t in target_specs]
    if compiled is not None:
        if args.option or args.low is not None or args.high is not None:
            raise UsageError(f"{args.model} is a compiled graph: its options (and Z^B box) were fixed by `onnxlrp "
                             "compile`; explain the original model to use other ones")
        options: dict[str, dict[str, Any]] = {m: {} for m in methods}
    else:
        options = method_options(methods, args.option or [], z_box(args, spec))

    mean_std = ""
    if args.mean is not None or args.std is not None:
        _, m, s = spec.stats()
        mean_std = f", mean {m.round(4).tolist()}, std {s.round(4).tolist()}"
    h, w = spec.size
    print(f"model {args.model}: input {ex.input_name} {spec.layout} {spec.channels}x{h}x{w}, "
          f"preset {spec.preset}{mean_std}, resample {spec.resample}, device {ex.device}")

    job = _Job(spec, labels, methods, targets, args.top_k, options, out_dir, out_file,
               OutputNames(out_dir) if out_dir is not None else None)
    progress = Progress(len(paths), show_progress(args))
    try:
        _run_batches(args, ex, job, paths, progress)
    finally:
        progress.close()
    return 1 if job.failed else 0


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
    """Read the images (reporting and skipping those that cannot be read), explain them in batches, write."""
    stems = unique_stems(paths)
    step = ex.fixed_batch or args.batch_size
    make_grid = len(job.methods) > 1 or args.grid
    want_photo = bool(args.overlay or make_grid)
    pending: list[tuple[Path, str, np.ndarray, np.ndarray | None]] = []
    done = 0
    first = True
    for path, stem in zip(paths, stems, strict=True):
        try:
            x, photo = load_sample(path, job.spec, with_rgb=want_photo)
        except InputError as exc:
            progress.clear()
            report_error(str(exc))
            job.failed.append(path)
            done += 1
            progress.update(done)
            continue
        pending.append((path, stem, x, photo))
        if len(pending) == step:
            _explain_batch(args, ex, job, pending, progress, done, make_grid, first)
            done += len(pending)
            first = False
            pending = []
    if pending:
        _explain_batch(args, ex, job, pending, progress, done, make_grid, first)


def _explain_batch(args: argparse.Namespace, ex: Any, job: _Job,
                   batch: list[tuple[Path, str, np.ndarray, np.ndarray | None]], progress: Progress, done: int,
                   make_grid: bool, first: bool) -> None:
    """Predict, explain and write one batch of read images; ``done`` images were finished before it."""
    x = np.stack([item[2] for item in batch])
    n = len(batch)
    if ex.fixed_batch and n < ex.fixed_batch:  # pad a fixed-batch model's last batch
        x = np.concatenate([x, np.repeat(x[-1:], ex.fixed_batch - n, axis=0)])
    logits = ex.predict(x)
    num_classes = logits.shape[1]
    if job.labels is not None and len(job.labels) != num_classes and first:
        warn(f"the label file has {len(job.labels)} names but the model has {num_classes} classes")
    tg = _targets_for(job, logits)
    bad = tg[(tg < 0) | (tg >= num_classes)]
    if bad.size:
        raise InputError(f"class index {int(bad[0])} is out of range: the model has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    heats: dict[str, np.ndarray] = {}
    n_methods = len(job.methods)
    for mi, m in enumerate(job.methods):
        heats[m] = np.asarray(ex.explain(x, targets=tg, method=m, relu=args.relu, **job.options[m]))[:, :n]
        progress.update(done + n * (mi + 1) / n_methods)
    probs = softmax(logits[:n])
    progress.clear()
    for i, (path, stem, _, photo) in enumerate(batch):
        _write_sample(args, job, path, stem, photo, probs[i], tg[:, i], {m: h[:, i] for m, h in heats.items()},
                      make_grid)
    sys.stdout.flush()
    progress.update(done + n)


def _write_sample(args: argparse.Namespace, job: _Job, path: Path, stem: str, photo: np.ndarray | None,
                  probs: np.ndarray, classes: np.ndarray, heats: dict[str, np.ndarray], make_grid: bool) -> None:
    """Print one image's predictions and write its files (each atomically, under a name unique in the run)."""
    spec = job.spec
    print(path)
    k = min(TOP_PRINTED, probs.shape[0])
    for rank, c in enumerate(np.argsort(-probs, kind="stable")[:k], start=1):
        print(f"  {rank}. {c:5d}  {class_name(int(c), job.labels):<30s} {probs[c]:.4f}")
    written: list[Path] = []
    for ti, c in enumerate(int(v) for v in classes):
        cslug = class_slug(c, job.labels)
        panels: list[np.ndarray] = []
        for m, h in heats.items():
            sample = h[ti]
            rgb = heatmap_to_rgb(sample, args.cmap, layout=spec.layout, percentile=args.clip_percentile)
            if job.out_file is not None:
                png, over, npy = (job.out_file, job.out_file.with_name(job.out_file.stem + "_overlay.png"),
                                  job.out_file.with_suffix(".npy"))
            else:
                assert job.names is not None
                png = job.names.claim(f"{stem}_{m}_{cslug}", ".png")
                base = png.name[: -len(".png")]
                over = job.names.claim(f"{base}_overlay", ".png") if args.overlay else None
                npy = job.names.claim(base, ".npy") if args.save_npy else None
            written.append(save_png(png, rgb))
            if args.overlay:
                assert photo is not None and over is not None
                written.append(save_png(over, overlay(photo, sample, cmap=args.cmap, layout=spec.layout,
                                                      percentile=args.clip_percentile)))
            if args.save_npy:
                assert npy is not None
                written.append(save_npy(npy, np.asarray(sample, dtype=np.float32)))
            panels.append(rgb)
        if make_grid and job.names is not None:
            assert photo is not None
            title = f"{class_name(c, job.labels)} ({probs[c]:.2f})"
            columns = args.grid_columns or _default_columns(len(panels) + 1)
            img = grid([photo, *panels], [title, *heats], columns=columns, min_size=GRID_MIN_PANEL)
            written.append(save_png(job.names.claim(f"{stem}_grid_{cslug}", ".png"), img))
    for p in written:
        print(f"  wrote {p}")


def _default_columns(n: int) -> int:
    return n if n <= 8 else 7
