"""``onnxlrp evaluate``: measure explanation quality on images (see ``docs/cli.md``).

For every image, method and target class: region perturbation (MoRF, LeRF, random order; AOPC),
insertion/deletion (AUC), and with ``--regions`` the localisation on the target's region
(relevance mass accuracy, pointing game) and the signed shares on its own and the other
regions; with two or more targets, the class discrimination of every pair (correlation of
the maps, shares). Prints a table, writes ``evaluation.csv``, ``discrimination.csv``,
``evaluation.json`` and PNG plots of the curves. The metrics are :mod:`onnxlrp.evaluate`'s.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..evaluate import (
    PERTURBATIONS,
    Curve,
    EvalSettings,
    HeatmapEvaluation,
    Region,
    discrimination,
    evaluate_heatmap,
    load_regions,
    plot_curves,
    random_curve,
    region_for,
)
from ..image import expand_inputs, image_size, input_range, load_images
from ..paths import read_bounded
from ..render import save_png
from .common import (
    DEFAULT_OUTPUT,
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
    number,
    parse_floats_arg,
    parse_option,
    positive_int,
    report_error,
    resolve_class,
    show_progress,
    softmax,
    unique_stems,
    warn,
    write_csv,
    write_text,
    z_box,
)

__all__ = ["add_parser", "run"]

METRIC_COLUMNS = ["aopc_morf", "aopc_lerf", "aopc_random", "aopc_morf_prob", "aopc_lerf_prob", "aopc_random_prob",
                  "auc_insertion", "auc_deletion", "mass_accuracy", "pointing_hit", "share_own", "share_other"]
MAX_REGIONS_BYTES = 16 * 2**20  # a regions file larger than this is refused
DISCRIMINATION_COLUMNS = ["correlation", "a_on_a", "a_on_b", "b_on_b", "b_on_a", "own_minus_other"]


_count = number(int, lambda v: v >= 0, "a whole number >= 0")
_fraction = number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_non_negative = number(float, lambda v: v >= 0, "a number >= 0")
_positive = number(float, lambda v: v > 0, "a positive number")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to the ``onnxlrp`` parser's subparsers; return its parser."""
    p = subparsers.add_parser(
        "evaluate", help="measure explanation quality (pixel flipping, insertion/deletion, localisation)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure how good the explanations of a model are on images: region perturbation "
                    "(MoRF/LeRF/random, AOPC), insertion/deletion (AUC), and with --regions the localisation "
                    "(relevance mass accuracy, pointing game) and the class discrimination (correlation of two "
                    "classes' maps, signed share on each object's region).",
        epilog="examples:\n"
               "  onnxlrp evaluate model.onnx photo.jpg -m lrp -m sglrp --target zebra --target 'african elephant' "
               "\\\n      --regions data/regions/ --output eval/\n"
               "  onnxlrp evaluate model.onnx photos/ -m gradient,gradcam --patch 16 --steps 14 --perturbation blur")
    p.add_argument("model", help="the ONNX model file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of images")
    g = p.add_argument_group("what to evaluate")
    g.add_argument("-m", "--method", action="append", metavar="NAME",
                   help="method (repeatable, or comma-separated; 'all' = every method; default sglrp)")
    g.add_argument("-t", "--target", action="append", metavar="CLASS",
                   help="class to explain: an index, a name from the label file, or 'top' (the default); "
                        "repeatable: with two or more, every pair is also measured for class discrimination")
    g.add_argument("--regions", action="append", metavar="FILE|DIR",
                   help="object regions in the data/regions JSON format (a file, or a directory of them), matched "
                        "to an image by the stem of the file's \"image\" entry (or of the JSON file); repeatable")
    g.add_argument("--low", type=parse_floats_arg, metavar="V[,V,V]",
                   help="lower end of the Z^B input box (as in explain); default: the preset's true range")
    g.add_argument("--high", type=parse_floats_arg, metavar="V[,V,V]", help="upper end of the Z^B input box")
    g.add_argument("--option", action="append", type=parse_option, metavar="KEY=VALUE",
                   help="a method option, as in explain (e.g. n_samples=16, steps=16)")
    g = p.add_argument_group("metrics")
    g.add_argument("--patch", type=positive_int, default=8, metavar="P",
                   help="patch side in input pixels for the perturbation curves (default 8)")
    g.add_argument("--steps", type=positive_int, default=28, metavar="L",
                   help="steps per curve: L+1 model runs from 0 to --max-fraction of the patches (default 28)")
    g.add_argument("--perturbation", choices=PERTURBATIONS, default="mean",
                   help="what a removed patch becomes in MoRF/LeRF/random and deletion: the image's channel mean, "
                        "a Gaussian blur (--sigma), a box blur (--box-size), uniform noise in the input range, or 0 "
                        "(default mean)")
    g.add_argument("--insertion-start", choices=PERTURBATIONS, default="blur",
                   help="the image insertion starts from (default blur)")
    g.add_argument("--max-fraction", type=_fraction, default=1.0, metavar="F",
                   help="fraction of the patches perturbed at the last MoRF/LeRF/random step (default 1)")
    g.add_argument("--random-repeats", type=_count, default=3, metavar="N",
                   help="random orders averaged for the random control (0: none; default 3)")
    g.add_argument("--sigma", type=_positive, default=5.0, metavar="S", help="Gaussian blur std in pixels (default 5)")
    g.add_argument("--box-size", type=positive_int, default=15, metavar="N", help="box blur width (default 15)")
    g.add_argument("--margin", type=_non_negative, default=0.0, metavar="PX",
                   help="pointing game tolerance in input pixels (default 0)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random orders, tie-breaks and noise (default 0)")
    add_preprocessing_args(p, "preprocessing (as in explain)")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", metavar="DIR",
                   help=f"directory for CSV, JSON and plots (default {DEFAULT_OUTPUT}/)")
    g.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="write PNG plots of the curves (default: yes)")
    g = p.add_argument_group("running")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    g.add_argument("--threads", type=positive_int, metavar="N", help="onnxruntime threads (default: its choice)")
    g.add_argument("-b", "--batch-size", type=positive_int, default=32, metavar="N",
                   help="perturbed images per model run (default 32)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--output-name", metavar="NAME", help="the model output to explain (default: the first float one)")
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------------------- regions


def _region_files(items: list[str] | None) -> dict[str, Path]:
    """Regions files by the stem of the image they describe."""
    out: dict[str, Path] = {}
    for item in items or []:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".json")
            if not files:
                raise InputError(f"directory {p} has no .json regions files")
        elif p.is_file():
            files = [p]
        else:
            raise InputError(f"regions file not found: {p}")
        for f in files:
            try:
                doc = json.loads(read_bounded(f, "regions file", MAX_REGIONS_BYTES, InputError).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise InputError(f"cannot read regions file {f}: {exc}") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("regions"), list):
                raise InputError(f"regions file {f} has no \"regions\" list")
            stem = Path(str(doc.get("image") or f.name)).stem
            out[stem] = f
    return out


# --------------------------------------------------------------------------------------- output


def _num(v: Any) -> Any:
    """A JSON/CSV-ready number: NaN and infinities become None."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return _num(obj)


def _cell(v: Any, fmt: str = "{:.3f}") -> str:
    v = _num(v)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return fmt.format(v) if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = [indent + "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                                 strict=True)))]
    for r in rows:
        lines.append(indent + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(line.rstrip() for line in lines)


METRIC_HEADER = ["class", "method", "AOPC MoRF", "LeRF", "random", "AUC ins", "AUC del", "mass acc", "pointing",
                 "share own", "other"]


def _metric_row(cls: str, method: str, s: dict[str, Any], mean: bool = False) -> list[str]:
    point = _num(s["pointing_hit"])
    if point is None:
        point_txt = "-"
    elif mean:
        point_txt = f"{point:.2f}"
    else:
        point_txt = "hit" if point == 1 else "miss"
    return [cls, method, _cell(s["aopc_morf"]), _cell(s["aopc_lerf"]), _cell(s["aopc_random"]),
            _cell(s["auc_insertion"]), _cell(s["auc_deletion"]), _cell(s["mass_accuracy"]), point_txt,
            _cell(s["share_own"], "{:+.3f}"), _cell(s["share_other"], "{:+.3f}")]


def _nanmean(values: list[Any]) -> float:
    v = np.array([float("nan") if _num(x) is None else float(x) for x in values], dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


# --------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Run ``onnxlrp evaluate``; return the exit status (errors are raised for :func:`onnxlrp.cli.main`).

    An image that cannot be read is reported (one line on stderr) and skipped; the others are
    measured and written, and the exit status is 1.
    """
    methods = method_list(args.method)
    check_option_keys(args.option)
    try:
        settings = EvalSettings(patch=args.patch, steps=args.steps, perturbation=args.perturbation,
                                insertion_start=args.insertion_start, max_fraction=args.max_fraction,
                                random_repeats=args.random_repeats, sigma=args.sigma, box=args.box_size,
                                seed=args.seed, batch_size=args.batch_size, margin=args.margin)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    paths = expand_inputs(args.images)
    region_files = _region_files(args.regions)
    out = Path(args.output) if args.output else Path(DEFAULT_OUTPUT)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a directory")

    ex = load_explainer(args)
    spec = model_spec(args, ex)
    if spec.layout not in ("NCHW", "NHWC"):
        raise InputError(f"unknown layout {spec.layout}")
    labels, label_source = labels_for(args, ex)
    target_specs = args.target or ["top"]
    targets = [resolve_class(t, labels, label_source or "the label file") for t in target_specs]
    lo, hi = input_range(spec)  # the true input range: uniform-noise perturbations draw from it
    options = method_options(methods, args.option or [], z_box(args, spec))
    stems = unique_stems(paths)
    names = OutputNames(out)
    failed: set[int] = set()
    regions_of: dict[int, list[Region]] = {}
    for i, path in enumerate(paths):
        f = region_files.get(path.stem)
        if f is not None:
            try:
                size = image_size(path)
            except InputError as exc:
                report_error(str(exc))
                failed.add(i)
                continue
            regions_of[i] = load_regions(f, spec.size, size)
    if region_files and not regions_of:
        warn("no --regions file matches an image; localisation and shares are skipped")

    h, w = spec.size
    print(f"model {args.model}: input {ex.input_name} {spec.layout} {spec.channels}x{h}x{w}, "
          f"preset {spec.preset}, resample {spec.resample}, device {ex.device}")
    rnd = f"random x{settings.random_repeats}" if settings.random_repeats else "no random control"
    print(f"metrics: {settings.patch}x{settings.patch} patches, {settings.steps} steps up to "
          f"{settings.max_fraction:.0%} of them, perturbation {settings.perturbation} (MoRF, LeRF, {rnd}; "
          f"deletion = MoRF), insertion from {settings.insertion_start}; AOPC of the logit (Samek et al. 2017: mean "
          f"drop over steps 0..L), AUC of the probability (trapezoid over the fraction)")
    sys.stdout.flush()

    progress = Progress(len(paths) * len(methods), show_progress(args), unit="image-methods")
    records: list[dict[str, Any]] = []
    disc_rows: list[dict[str, Any]] = []
    images_json: list[dict[str, Any]] = []
    plots: list[tuple[Path, np.ndarray]] = []
    try:
        for i, path in enumerate(paths):
            if i in failed:
                progress.update((i + 1) * len(methods))
                continue
            try:
                x = load_images([path], spec)
            except InputError as exc:
                progress.clear()
                report_error(str(exc))
                failed.add(i)
                progress.update((i + 1) * len(methods))
                continue
            if ex.fixed_batch and ex.fixed_batch > 1:
                x = np.concatenate([x, np.repeat(x, ex.fixed_batch - 1, axis=0)])
            logits = ex.predict(x)[:1]
            n_cls = logits.shape[1]
            probs = softmax(logits)[0]
            tg: list[int] = []
            for t in targets:
                c = int(np.argmax(logits[0])) if t is None else int(t)
                if not 0 <= c < n_cls:
                    raise InputError(f"class index {c} is out of range: the model has {n_cls} classes "
                                     f"(0..{n_cls - 1})")
                if c not in tg:
                    tg.append(c)
            regions = regions_of.get(i)
            sample = x[0]
            randoms: dict[int, Curve | None] = {}
            for c in tg:
                randoms[c] = random_curve(ex, sample, c, settings.perturbation, patch=settings.patch,
                                          steps=settings.steps, max_fraction=settings.max_fraction,
                                          batch_size=settings.batch_size, seed=settings.seed, layout=spec.layout,
                                          low=lo, high=hi, sigma=settings.sigma, box=settings.box,
                                          repeats=settings.random_repeats) if settings.random_repeats else None
            evals: dict[str, dict[int, HeatmapEvaluation]] = {}
            image_disc: list[dict[str, Any]] = []
            for mi, m in enumerate(methods):
                heat = np.asarray(ex.explain(x, targets=tg, method=m, **options[m]))[:, 0]
                evals[m] = {}
                for ti, c in enumerate(tg):
                    evals[m][c] = evaluate_heatmap(ex, sample, heat[ti], c, settings, method=m, regions=regions,
                                                   random=randoms[c], layout=spec.layout, low=lo, high=hi)
                for a in range(len(tg)):
                    for b in range(a + 1, len(tg)):
                        ra = region_for(regions, tg[a]) if regions else None
                        rb = region_for(regions, tg[b]) if regions else None
                        d = discrimination(heat[a], heat[b], ra.mask if ra else None, rb.mask if rb else None,
                                           spec.layout)
                        image_disc.append({"image": str(path), "method": m, "class_a": tg[a],
                                           "name_a": class_name(tg[a], labels), "class_b": tg[b],
                                           "name_b": class_name(tg[b], labels), **d.to_dict()})
                progress.update(i * len(methods) + mi + 1)
            progress.clear()
            _print_image(path, tg, probs, labels, methods, evals, image_disc)
            disc_rows.extend(image_disc)
            entry: dict[str, Any] = {"image": str(path), "regions": str(region_files.get(path.stem) or "") or None,
                                     "targets": [{"class": c, "name": class_name(c, labels),
                                                  "prob": float(probs[c]), "logit": float(logits[0, c])} for c in tg],
                                     "random": {str(c): r.to_dict() for c, r in randoms.items() if r is not None},
                                     "results": [], "discrimination": image_disc}
            for m in methods:
                for c in tg:
                    ev = evals[m][c]
                    summ = ev.summary()
                    rec = {"image": str(path), "method": m, "target": c, "class": class_name(c, labels),
                           "prob": float(probs[c]), "logit": float(logits[0, c]),
                           **{k: summ[k] for k in METRIC_COLUMNS}}
                    records.append(rec)
                    d = ev.to_dict(curves=True)
                    d["curves"].pop("random", None)  # stored once per class above
                    entry["results"].append(d)
            images_json.append(entry)
            if args.plots:
                for c in tg:
                    slug = class_slug(c, labels)
                    pert = [(f"{m}", [evals[m][c].morf, evals[m][c].lerf]
                             + ([randoms[c]] if randoms[c] is not None else [])) for m in methods]
                    insdel = [(f"{m}", [evals[m][c].insertion, ("deletion", evals[m][c].deletion)]) for m in methods]
                    plots.append((names.claim(f"{stems[i]}_{slug}_perturbation", ".png"),
                                  plot_curves(pert, "logit", columns=4, xlabel="fraction of patches removed")))
                    plots.append((names.claim(f"{stems[i]}_{slug}_insertion_deletion", ".png"),
                                  plot_curves(insdel, "prob", columns=4,
                                              xlabel="fraction of patches inserted / deleted")))
            sys.stdout.flush()
    finally:
        progress.close()

    if len(paths) - len(failed) > 1:
        _print_means(records, disc_rows, methods)
    if len(failed) == len(paths):
        return 1  # no image could be read (each was reported): nothing to write
    written = _write_outputs(out, args, spec, settings, methods, records, disc_rows, images_json, plots)
    for p in written:
        print(f"wrote {p}")
    return 1 if failed else 0


def _print_image(path: Path, tg: list[int], probs: np.ndarray, labels: list[str] | None, methods: list[str],
                 evals: dict[str, dict[int, HeatmapEvaluation]], disc: list[dict[str, Any]]) -> None:
    print(path)
    for c in tg:
        print(f"  target {c} {class_name(c, labels)}: probability {probs[c]:.4f}")
    rows = [_metric_row(f"{c} {class_name(c, labels)}", m, evals[m][c].summary()) for c in tg for m in methods]
    print(_table(METRIC_HEADER, rows))
    if disc:
        print("  class discrimination (correlation of the two maps; signed share of each map on each region):")
        header = ["classes", "method", "corr", "a on a", "a on b", "b on b", "b on a"]
        drows = [[f"{d['class_a']} vs {d['class_b']}", d["method"], _cell(d["correlation"]),
                  _cell(d["a_on_a"], "{:+.3f}"), _cell(d["a_on_b"], "{:+.3f}"), _cell(d["b_on_b"], "{:+.3f}"),
                  _cell(d["b_on_a"], "{:+.3f}")] for d in disc]
        print(_table(header, drows, "    "))


def _print_means(records: list[dict[str, Any]], disc_rows: list[dict[str, Any]], methods: list[str]) -> None:
    n_img = len({r["image"] for r in records})
    print(f"mean over {n_img} images and their targets:")
    rows = []
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        s = {k: _nanmean([r[k] for r in rs]) for k in METRIC_COLUMNS}
        rows.append(_metric_row("all", m, s, mean=True))
    print(_table(METRIC_HEADER, rows))
    if disc_rows:
        header = ["pairs", "method", "corr", "own share", "other share"]
        drows = []
        for m in methods:
            ds = [d for d in disc_rows if d["method"] == m]
            own = _nanmean([d["a_on_a"] for d in ds] + [d["b_on_b"] for d in ds])
            other = _nanmean([d["a_on_b"] for d in ds] + [d["b_on_a"] for d in ds])
            drows.append([str(len(ds)), m, _cell(_nanmean([d["correlation"] for d in ds])), _cell(own, "{:+.3f}"),
                          _cell(other, "{:+.3f}")])
        print("  class discrimination, mean over the pairs:")
        print(_table(header, drows, "    "))


def _write_csv(path: Path, cols: list[str], rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts) as CSV with the columns ``cols``, atomically; missing numbers become empty cells."""
    return write_csv(path, cols, [["" if _num(r[c]) is None else _num(r[c]) for c in cols] for r in rows])


def _write_outputs(out: Path, args: argparse.Namespace, spec: Any, settings: EvalSettings, methods: list[str],
                   records: list[dict[str, Any]], disc_rows: list[dict[str, Any]], images_json: list[dict[str, Any]],
                   plots: list[tuple[Path, np.ndarray]]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    written.append(_write_csv(out / "evaluation.csv",
                              ["image", "method", "target", "class", "prob", "logit", *METRIC_COLUMNS], records))
    if disc_rows:
        written.append(_write_csv(out / "discrimination.csv",
                                  ["image", "method", "class_a", "name_a", "class_b", "name_b",
                                   *DISCRIMINATION_COLUMNS], disc_rows))
    j_path = out / "evaluation.json"
    doc = {
        "model": str(args.model),
        "preprocess": {"preset": spec.preset, "size": list(spec.size), "layout": spec.layout,
                       "resample": spec.resample},
        "settings": settings.to_dict(),
        "definitions": {
            "aopc": "1/(L+1) * sum_{k=0..L} (f(x_0) - f(x_k)), f = target logit (aopc_*) or probability "
                    "(aopc_*_prob); Samek et al. 2017",
            "auc": "trapezoid area under the target probability over the fraction of patches, 0..1",
            "deletion": "the MoRF curve (perturbation as baseline)",
            "mass_accuracy": "positive relevance inside the target's region / all positive relevance",
            "pointing_hit": "1 if the largest value of the channel-summed map lies in the target's region "
                            "(within margin)",
            "share": "sum of the map over a region / sum of |map|; share_other: the union of regions of other classes",
        },
        "methods": methods,
        "images": images_json,
    }
    write_text(j_path, json.dumps(_clean(doc), indent=1) + "\n")
    written.append(j_path)
    for p, img in plots:
        written.append(save_png(p, img))
    return written
