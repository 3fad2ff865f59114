#!/usr/bin/env python
"""Write ``docs/evaluation.md``: every method on the shipped EfficientNet-Lite0 and the five photos.

For each photo of ``data/images`` and each target (340 zebra, and 386 African elephant where the
photo's regions file has an elephant region) every method of ``onnxlrp.list_methods()`` is
explained once (both targets in one pass) and measured with :mod:`onnxlrp.evaluate`: region
perturbation (MoRF/LeRF/random, AOPC), insertion/deletion (AUC), localisation on the target's
region (relevance mass accuracy, pointing game) and zebra-vs-elephant discrimination
(correlation, signed shares). Writes the report, its figures and the raw numbers under
``docs/images/evaluation/``, copies the seed's published figure into ``docs/images/seed_figure/``
and prints the command and the timing. Everything is seeded: two runs give the same numbers.

    python tools/make_evaluation_report.py            # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import PIL  # noqa: E402

import onnxlrp  # noqa: E402
from onnxlrp import Explainer, list_methods  # noqa: E402
from onnxlrp.evaluate import (  # noqa: E402
    Curve,
    EvalSettings,
    HeatmapEvaluation,
    discrimination,
    evaluate_heatmap,
    load_regions,
    plot_curves,
    random_curve,
    region_for,
)
from onnxlrp.image import Preprocess, image_size, input_range, load_images, load_rgb  # noqa: E402
from onnxlrp.methods import METHODS  # noqa: E402
from onnxlrp.render import grid, heatmap_to_rgb, save_png  # noqa: E402

ZEBRA, ELEPHANT = 340, 386
NAMES = {ZEBRA: "zebra", ELEPHANT: "African elephant"}
#: Cheaper settings for the sampling methods in this report (their defaults are 64).
REPORT_OPTIONS: dict[str, dict[str, Any]] = {"smoothgrad": {"n_samples": 16}, "integrated_gradients": {"steps": 16}}
#: The seed's published figure: file -> onnxlrp method (VGG16, zebra_elephant3.jpg, target zebra).
SEED_FIGURE = {
    "01_input.png": "input", "02_gradcam.png": "gradcam", "03_gbp.png": "guided_backprop",
    "04_guided_gradcam.png": "guided_gradcam", "05_lrp.png": "lrp", "06_clrp.png": "clrp", "07_sglrp.png": "sglrp",
    "08_sglrp_seq_a.png": "sglrp_seq_a", "09_sglrp_seq_b.png": "sglrp_seq_b", "10_lrp_preset_a.png": "lrp_preset_a",
    "11_lrp_preset_b.png": "lrp_preset_b", "12_lrp_epsilon.png": "lrp_epsilon",
}
CONTRAST = ["lrp", "clrp", "sglrp", "sglrp_seq_a", "sglrp_seq_b"]
GRID_PHOTO = "zebra_elephant3"
CLIP = 99.5  # display: maps scaled by this percentile of |h| (the seed-comparison table, the second grid)


# ------------------------------------------------------------------------------------ helpers


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return f"{platform.system()} {platform.machine()}, {cpu or 'unknown CPU'}, {usable} usable CPU cores " \
           f"(of {os.cpu_count()}), {platform.platform()}"


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head or "unknown"


def _mean(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _f(v: float, fmt: str = "{:.3f}") -> str:
    return "–" if not np.isfinite(v) else fmt.format(v)


def _words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _bold_best(rows: list[list[str]], values: list[list[float]], directions: list[str | None]) -> None:
    """Bold the best value of each column (``"max"``/``"min"``; None: leave)."""
    for j, d in enumerate(directions):
        if d is None:
            continue
        col = np.array([v[j] for v in values], dtype=np.float64)
        if not np.isfinite(col).any():
            continue
        best = np.nanmax(col) if d == "max" else np.nanmin(col)
        for i in range(len(rows)):
            if np.isfinite(col[i]) and abs(col[i] - best) < 5e-4:
                rows[i][j + 1] = f"**{rows[i][j + 1]}**"


def _mean_curve(curves: list[Curve], kind: str) -> Curve:
    c0 = curves[0]
    return Curve(kind, c0.perturbation, -1, c0.patch, c0.fractions, np.mean([c.logit for c in curves], axis=0),
                 np.mean([c.prob for c in curves], axis=0))


# ------------------------------------------------------------------------------------ the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = Preprocess("imagenet", (224, 224), "NCHW", "bicubic")
    lo, hi = input_range(spec)
    ex = Explainer(args.model, device="cpu", threads=args.threads)
    settings = EvalSettings(patch=args.patch, steps=args.steps, perturbation="mean", insertion_start="blur",
                            random_repeats=3, sigma=5.0, seed=0, batch_size=args.batch_size)
    methods = args.methods or list_methods()
    photos = sorted(Path(args.images).glob("*.jpg"))
    if args.only:
        photos = [p for p in photos if p.stem in args.only]
    options = {}
    for m in methods:
        o = dict(REPORT_OPTIONS.get(m, {}))
        if "low" in METHODS[m].options:
            o.update(low=lo, high=hi)
        options[m] = o

    rows: list[dict[str, Any]] = []  # one per photo x method x target
    pairs: list[dict[str, Any]] = []  # one per photo x method (zebra vs elephant)
    curves: dict[str, dict[str, list[Curve]]] = {m: {"morf": [], "lerf": [], "insertion": []} for m in methods}
    randoms: list[Curve] = []
    grid_heats: dict[str, np.ndarray] = {}
    probs_of: dict[str, dict[int, float]] = {}
    ranks_of: dict[str, dict[int, int]] = {}
    top10: dict[str, float] = {}
    t_explain = dict.fromkeys(methods, 0.0)
    t_eval = dict.fromkeys(methods, 0.0)
    t0 = time.monotonic()
    for photo in photos:
        regions = load_regions(Path(args.regions) / f"{photo.stem}.json", spec.size, image_size(photo))
        x = load_images([photo], spec)
        logits = ex.predict(x)[0].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        targets = [ZEBRA] + ([ELEPHANT] if region_for(regions, ELEPHANT) is not None else [])
        probs_of[photo.stem] = {t: float(p[t]) for t in targets}
        ranks_of[photo.stem] = {t: int((p > p[t]).sum()) + 1 for t in targets}
        rnd = {t: random_curve(ex, x[0], t, settings.perturbation, patch=settings.patch, steps=settings.steps,
                               batch_size=settings.batch_size, seed=settings.seed, repeats=settings.random_repeats)
               for t in targets}
        randoms.extend(rnd.values())
        for m in methods:
            ts = time.monotonic()
            heat = np.asarray(ex.explain(x, targets=targets, method=m, **options[m]))[:, 0]
            t_explain[m] += time.monotonic() - ts
            ts = time.monotonic()
            evs: dict[int, HeatmapEvaluation] = {}
            for ti, t in enumerate(targets):
                ev = evaluate_heatmap(ex, x[0], heat[ti], t, settings, method=m, regions=regions, random=rnd[t])
                evs[t] = ev
                curves[m]["morf"].append(ev.morf)
                curves[m]["lerf"].append(ev.lerf)
                curves[m]["insertion"].append(ev.insertion)
                s = ev.summary()
                rows.append({"image": photo.stem, "method": m, "target": t, "prob": float(p[t]), **s,
                             "pointing_point": list(ev.localisation.pointing.point) if ev.localisation else None})
            t_eval[m] += time.monotonic() - ts
            if len(targets) == 2:
                d = discrimination(heat[0], heat[1], region_for(regions, ZEBRA).mask,  # type: ignore[union-attr]
                                   region_for(regions, ELEPHANT).mask)  # type: ignore[union-attr]
                pairs.append({"image": photo.stem, "method": m, **d.to_dict()})
            if photo.stem == GRID_PHOTO:
                grid_heats[m] = heat[0]
                mag = np.sort(np.abs(heat[0].astype(np.float64).sum(axis=0)).ravel())[::-1]
                top10[m] = float(mag[:10].sum() / mag.sum()) if mag.sum() > 0 else float("nan")
            print(f"  {photo.name:22s} {m:26s} explain {t_explain[m]:6.1f} s  evaluate {t_eval[m]:6.1f} s  "
                  f"(total {time.monotonic() - t0:6.0f} s)", flush=True)
    return {"settings": settings, "methods": methods, "photos": [p.stem for p in photos], "rows": rows,
            "pairs": pairs, "curves": curves, "randoms": randoms, "grid_heats": grid_heats, "probs": probs_of,
            "ranks": ranks_of, "top10": top10, "t_explain": t_explain, "t_eval": t_eval, "spec": spec}


# ------------------------------------------------------------------------------------ figures


def figures(res: dict[str, Any], fig_dir: Path, seed_src: Path, seed_dst: Path, photo_dir: Path) -> dict[str, str]:
    fig_dir.mkdir(parents=True, exist_ok=True)
    methods = res["methods"]
    rnd = _mean_curve(res["randoms"], "random")
    pert = [(m, [_mean_curve(res["curves"][m]["morf"], "morf"), _mean_curve(res["curves"][m]["lerf"], "lerf"), rnd])
            for m in methods]
    insdel = [(m, [_mean_curve(res["curves"][m]["insertion"], "insertion"),
                   ("deletion", _mean_curve(res["curves"][m]["morf"], "deletion"))]) for m in methods]
    out = {}
    out["perturbation"] = str(save_png(fig_dir / "perturbation_curves.png",
                                        plot_curves(pert, "logit", columns=5, size=(260, 190),
                                                    xlabel="fraction of patches removed")))
    out["insdel"] = str(save_png(fig_dir / "insertion_deletion_curves.png",
                                  plot_curves(insdel, "prob", columns=5, size=(260, 190),
                                              xlabel="fraction inserted / deleted")))
    # heatmaps of the paper's photo, target zebra: the seed's order first, then the rest
    spec = res["spec"]
    heats = res["grid_heats"]
    if heats:
        photo = load_rgb(photo_dir / f"{GRID_PHOTO}.jpg", spec.size, spec.resample)
        seed_order = [m for m in SEED_FIGURE.values() if m in heats]
        order = seed_order + [m for m in methods if m not in seed_order]
        titles = [f"zebra ({res['probs'][GRID_PHOTO][ZEBRA]:.2f})"] + order
        panels = [photo] + [heatmap_to_rgb(heats[m]) for m in order]
        out["grid"] = str(save_png(fig_dir / f"{GRID_PHOTO}_grid_zebra.png", grid(panels, titles, columns=7)))
        panels = [photo] + [heatmap_to_rgb(heats[m], percentile=CLIP) for m in order]
        out["grid_clip"] = str(save_png(fig_dir / f"{GRID_PHOTO}_grid_zebra_p{CLIP:g}.png",
                                        grid(panels, titles, columns=7)))
        save_png(fig_dir / f"{GRID_PHOTO}_input.png", photo)
        for m in seed_order:
            save_png(fig_dir / f"{GRID_PHOTO}_zebra_{m}.png", heatmap_to_rgb(heats[m], percentile=CLIP))
    # the seed's published figure, copied unchanged
    seed_dst.mkdir(parents=True, exist_ok=True)
    for name in SEED_FIGURE:
        src = seed_src / name
        if src.is_file() and src.resolve() != (seed_dst / name).resolve():
            shutil.copyfile(src, seed_dst / name)
    return out


def write_numbers(res: dict[str, Any], fig_dir: Path) -> list[str]:
    cols = ["image", "method", "target", "prob", "aopc_morf", "aopc_lerf", "aopc_random", "aopc_morf_prob",
            "aopc_lerf_prob", "aopc_random_prob", "auc_insertion", "auc_deletion", "mass_accuracy", "pointing_hit",
            "share_own", "share_other"]
    p1 = fig_dir / "metrics.csv"
    with p1.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in res["rows"]:
            w.writerow([("" if isinstance(r[c], float) and not np.isfinite(r[c]) else
                         (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])) for c in cols])
    p2 = fig_dir / "discrimination.csv"
    dcols = ["image", "method", "correlation", "a_on_a", "a_on_b", "b_on_b", "b_on_a", "own_minus_other"]
    with p2.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "method", "correlation", "zebra_on_zebra", "zebra_on_elephant", "elephant_on_elephant",
                    "elephant_on_zebra", "own_minus_other"])
        for d in res["pairs"]:
            w.writerow([d[c] if isinstance(d[c], str) else f"{d[c]:.6g}" for c in dcols])
    return [str(p1), str(p2)]


# ------------------------------------------------------------------------------------ the report


def _by(rows: list[dict[str, Any]], **keys: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in keys.items())]


def report(res: dict[str, Any], figs: dict[str, str], numbers: list[str], meta: dict[str, str]) -> str:
    methods = res["methods"]
    rows, pairs = res["rows"], res["pairs"]
    st: EvalSettings = res["settings"]
    n_rows = len(_by(rows, method=methods[0]))
    n_pairs = len(_by(pairs, method=methods[0]))
    n_patches = (224 // st.patch) ** 2
    report_dir = Path(meta["report"]).resolve().parent

    def link(p: str | Path) -> str:
        return Path(os.path.relpath(Path(p).resolve(), report_dir)).as_posix()

    L: list[str] = []
    a = L.append
    a("# Evaluation of the explanations: EfficientNet-Lite0 on the five photos")
    a("")
    a(f"*Written by `{meta['command']}` — do not edit by hand; run it again. Date {meta['date']}, "
      f"runtime {meta['runtime']}.*")
    a("")
    with_ele = sum(1 for s in res["photos"] if ELEPHANT in res["probs"][s])
    every = "Every method of `onnxlrp.list_methods()`" if methods == list_methods() else \
        f"The methods {', '.join(f'`{m}`' for m in methods)}"
    a(f"{every} explain the shipped `models/efficientnet_lite0.onnx` on the "
      f"{len(res['photos'])} photos of `data/images/`, for the target **340 zebra** and, where the photo's "
      f"`data/regions/*.json` has an elephant region ({with_ele} of {len(res['photos'])} photos), "
      "**386 African elephant**: "
      f"{n_rows} (photo, target) cases and {n_pairs} zebra-vs-elephant pairs per method. The metrics are "
      "`onnxlrp.evaluate`'s, the same as `onnxlrp evaluate` (see `docs/cli.md`).")
    a("")
    a("## How it was measured")
    a("")
    a("* **Input**: preset `imagenet`, bicubic resize to 224×224, as the command line; `lrp`, `clrp`, `sglrp` and "
      "`epsilon_gamma_box` get the preset's per-channel input range as their Z^B box, as the command line passes.")
    a(f"* **Options changed for this report** (to keep the run short): `smoothgrad` with "
      f"`n_samples={REPORT_OPTIONS['smoothgrad']['n_samples']}` and `integrated_gradients` with "
      f"`steps={REPORT_OPTIONS['integrated_gradients']['steps']}` (both default to 64). Every other method runs "
      "with its defaults.")
    a(f"* **Region perturbation** (Samek et al., 2017): the heatmap, summed over the colour channels, is cut into "
      f"{st.patch}×{st.patch} patches ({n_patches}); patches are removed most relevant first (MoRF), least relevant "
      f"first (LeRF) or in random order, {n_patches // st.steps} patches (1/{st.steps} of the image) per step, "
      f"{st.steps} steps until the whole image is removed. A removed patch takes the photo's per-channel **mean**. "
      f"The random control is the mean of {st.random_repeats} seeded random orders; it does not depend on the "
      "heatmap, so it is the same number for every method. "
      "**AOPC** = `1/(L+1) Σ_{k=0..L} (f(x₀) − f(x_k))` with `f` the target's **logit** (Samek's definition, "
      f"L = {st.steps}, the k = 0 term is 0): higher is better for MoRF, lower for LeRF.")
    a(f"* **Insertion / deletion** (Petsiuk et al., 2018), same patches and steps: deletion is the MoRF curve "
      f"(mean replacement); insertion starts from a Gaussian blur of the photo (σ = {st.sigma:g} px) and puts the "
      "most relevant patches back first. **AUC** = trapezoid area under the target's softmax **probability** over "
      "the fraction 0…1: higher is better for insertion, lower for deletion.")
    a("* **Localisation** on the target's region (its boxes in `data/regions/`): relevance mass accuracy "
      "(Arras et al., 2022) = positive relevance inside / all positive relevance; pointing game = the pixel of "
      "largest relevance lies inside (no tolerance margin).")
    a("* **Class discrimination** (zebra vs African elephant on the same photo): Pearson correlation of the two "
      "maps (lower = more class-specific); signed share `Σ_region h / Σ|h|` of each map on its own object's "
      "region and on the other object's region.")
    a("* All numbers are means over the cases; tie-breaks, random orders and SmoothGrad's noise are seeded, so a "
      "re-run gives the same numbers (the timings differ). Per-case numbers: "
      + ", ".join(f"[`{Path(n).name}`]({link(n)})" for n in numbers) + ".")
    a("")
    a("Target probabilities (softmax of the model's logits):")
    a("")
    a(_table(["photo", "p(zebra)", "rank", "p(African elephant)", "rank"],
             [[f"`{s}.jpg`", f"{res['probs'][s][ZEBRA]:.4f}", str(res["ranks"][s][ZEBRA]),
               _f(res["probs"][s].get(ELEPHANT, float("nan")), "{:.4f}"), str(res["ranks"][s].get(ELEPHANT, "–"))]
              for s in res["photos"]]))
    a("")
    low_ele = [s for s in res["photos"] if res["ranks"][s].get(ELEPHANT, 0) > 5]
    if low_ele:
        a(f"On {', '.join(f'`{s}.jpg`' for s in low_ele)} the African elephant is not among the model's top-5 "
          "classes: its explanations there explain a class the model hardly sees, and the elephant cases weigh "
          "as much as the others in the means below.")
        a("")

    # ---- faithfulness
    a("## Faithfulness: region perturbation and insertion/deletion")
    a("")
    hdr = ["method", "AOPC MoRF ↑", "AOPC LeRF ↓", "AOPC random", "MoRF − random ↑", "AUC insertion ↑",
           "AUC deletion ↓"]
    trs, vals = [], []
    for m in methods:
        rs = _by(rows, method=m)
        v = [_mean([r["aopc_morf"] for r in rs]), _mean([r["aopc_lerf"] for r in rs]),
             _mean([r["aopc_random"] for r in rs])]
        v += [v[0] - v[2], _mean([r["auc_insertion"] for r in rs]), _mean([r["auc_deletion"] for r in rs])]
        vals.append(v)
        trs.append([f"`{m}`"] + [_f(x) for x in v])
    _bold_best(trs, vals, ["max", "min", None, "max", "max", "min"])
    a(_table(hdr, trs))
    a("")
    a(f"AOPC in logit units, AUC of the probability; mean over the {n_rows} cases; best per column in bold. "
      "Mean curves over the cases (logit; MoRF red, LeRF blue, random grey):")
    a("")
    a(f"![mean MoRF/LeRF/random curves per method]({link(figs['perturbation'])})")
    a("")
    a("Mean insertion (green) and deletion (red) curves, probability:")
    a("")
    a(f"![mean insertion/deletion curves per method]({link(figs['insdel'])})")
    a("")

    # ---- localisation
    a("## Localisation on the target's region")
    a("")
    hdr = ["method", "mass accuracy, zebra ↑", "mass accuracy, elephant ↑", "mass accuracy, all ↑",
           "pointing game hits ↑"]
    trs, vals = [], []
    for m in methods:
        rs = _by(rows, method=m)
        z = _mean([r["mass_accuracy"] for r in rs if r["target"] == ZEBRA])
        e = _mean([r["mass_accuracy"] for r in rs if r["target"] == ELEPHANT])
        allm = _mean([r["mass_accuracy"] for r in rs])
        hits = [r["pointing_hit"] for r in rs if np.isfinite(r["pointing_hit"])]
        vals.append([z, e, allm, float(np.sum(hits)) if hits else float("nan")])
        trs.append([f"`{m}`", _f(z), _f(e), _f(allm), f"{int(np.sum(hits))}/{len(hits)}"])
    _bold_best(trs, vals, ["max", "max", "max", "max"])
    a(_table(hdr, trs))
    a("")
    zebra_area = []
    for s in res["photos"]:
        regs = load_regions(Path(res["regions_dir"]) / f"{s}.json", (224, 224))
        zebra_area.append(float(region_for(regs, ZEBRA).mask.mean()))  # type: ignore[union-attr]
    ele_area = []
    for s in res["photos"]:
        regs = load_regions(Path(res["regions_dir"]) / f"{s}.json", (224, 224))
        r = region_for(regs, ELEPHANT)
        if r is not None:
            ele_area.append(float(r.mask.mean()))
    a(f"For scale: a map spread evenly over the image has a mass accuracy equal to the region's share of the "
      f"image, here {_mean(zebra_area):.3f} for the zebra regions and {_mean(ele_area):.3f} for the elephant "
      "regions on average.")
    a("")

    # ---- discrimination
    a("## Class discrimination: zebra vs African elephant")
    a("")
    hdr = ["method", "correlation ↓", "share on own object ↑", "share on other object ↓", "own − other ↑",
           "cases own > 0 > other"]
    trs, vals = [], []
    for m in methods:
        ds = _by(pairs, method=m)
        own = [d["a_on_a"] for d in ds] + [d["b_on_b"] for d in ds]
        oth = [d["a_on_b"] for d in ds] + [d["b_on_a"] for d in ds]
        sep = sum(1 for o, t in zip(own, oth, strict=True) if o > 0 > t)
        v = [_mean([d["correlation"] for d in ds]), _mean(own), _mean(oth), _mean(own) - _mean(oth), float(sep)]
        vals.append(v)
        trs.append([f"`{m}`", _f(v[0]), _f(v[1], "{:+.3f}"), _f(v[2], "{:+.3f}"), _f(v[3], "{:+.3f}"),
                    f"{sep}/{len(own)}"])
    _bold_best(trs, vals, ["min", "max", "min", "max", "max"])
    a(_table(hdr, trs))
    a("")
    a(f"Correlation: mean over the {n_pairs} photos; shares: mean over the {2 * n_pairs} (photo, target) cases "
      "(share of `Σ|h|`, signed: a negative share means the map speaks *against* the target there).")
    a("")

    # ---- per photo, the contrastive family
    a("### Per photo: LRP and its contrastive variants")
    a("")
    present = [m for m in CONTRAST if m in methods]
    hdr = ["photo", "target"] + [f"`{m}` own / other" for m in present]
    trs = []
    for s in res["photos"]:
        for t in (ZEBRA, ELEPHANT):
            cells = []
            for m in present:
                r = _by(rows, image=s, method=m, target=t)
                if not r:
                    continue
                cells.append(f"{r[0]['share_own']:+.2f} / {r[0]['share_other']:+.2f}")
            if cells:
                trs.append([f"`{s}`", NAMES[t]] + cells)
    a(_table(hdr, trs, "ll" + "r" * len(present)))
    a("")
    hdr = ["photo"] + [f"corr `{m}`" for m in present]
    trs = [[f"`{s}`"] + [_f(_by(pairs, image=s, method=m)[0]["correlation"]) if _by(pairs, image=s, method=m)
                         else "–" for m in present] for s in res["photos"]]
    a(_table(hdr, trs))
    a("")

    # ---- the claim
    a("## The paper's claim on this model")
    a("")
    a(claim_text(res))
    a("")

    # ---- heatmaps next to the seed
    if "grid" in figs:
        a(f"## Heatmaps of `{GRID_PHOTO}.jpg`, target zebra, next to the seed's published figure")
        a("")
        a("All methods on EfficientNet-Lite0 (the maps measured above; `smoothgrad`/`integrated_gradients` with "
          "the report's reduced samples/steps), each map scaled by its own largest |value| as `onnxlrp explain` "
          "draws it (red positive, blue negative, white 0):")
        a("")
        a(f"![all methods, zebra_elephant3.jpg, target zebra]({link(figs['grid'])})")
        a("")
        top = res["top10"]
        heavy = [m for m in top if top[m] > 0.1]
        if heavy:
            a("Some maps are almost white at this scale because a handful of pixels dominate them: the 10 largest "
              "of the 50,176 pixels carry "
              + _words([f"{100 * top[m]:.0f} % of `Σ|h|` in `{m}`" for m in heavy]) + ". "
              "The same maps scaled by the "
              f"{CLIP:g}th percentile of |h| instead (the strongest pixels saturate):")
        else:
            a(f"The same maps scaled by the {CLIP:g}th percentile of |h| (the strongest pixels saturate):")
        a("")
        a(f"![all methods, percentile scaling]({link(figs['grid_clip'])})")
        a("")
        a("The seed's published figure (VGG16 in Keras + iNNvestigate; the PNGs are the seed's own, from the SGLRP "
          "paper's repository `uchidalab/softmaxgradient-lrp`, Apache-2.0, copied unchanged into "
          f"`docs/images/seed_figure/`) beside onnxlrp's map of the same method on EfficientNet-Lite0 (scaled by "
          f"the {CLIP:g}th percentile of |h|, as the second grid). The models "
          "differ, so the pictures are not expected to match pixel for pixel; compare where each method puts "
          "positive and negative relevance.")
        a("")
        a("| method | seed: VGG16 (published) | onnxlrp: EfficientNet-Lite0 |")
        a("| --- | --- | --- |")
        fig_dir = Path(figs["grid"]).parent
        for name, m in SEED_FIGURE.items():
            ours = fig_dir / (f"{GRID_PHOTO}_input.png" if m == "input" else f"{GRID_PHOTO}_zebra_{m}.png")
            seed = Path(meta["seed_figure"]) / name
            if m != "input" and m not in res["grid_heats"]:
                continue
            a(f"| `{m}` | <img src=\"{link(seed)}\" width=\"200\"> | <img src=\"{link(ours)}\" width=\"200\"> |")
        a("")

    # ---- the run
    a("## The run")
    a("")
    a(f"* Command: `{meta['command']}` (from the repository root)")
    a(f"* Date: {meta['date']}")
    a(f"* Machine: {meta['machine']}; onnxruntime on the CPU, `--threads {meta['threads']}`")
    a(f"* Versions: {meta['versions']}")
    a(f"* Runtime: {meta['runtime']} in all. Per method, over the {len(res['photos'])} photos "
      "(explain: both targets in one pass; evaluate: MoRF, LeRF and insertion curves, "
      f"{3 * (st.steps + 1)} model runs per case, in batches of {st.batch_size}):")
    a("")
    a(_table(["method", "explain (s)", "evaluate (s)"],
             [[f"`{m}`", f"{res['t_explain'][m]:.1f}", f"{res['t_eval'][m]:.1f}"] for m in methods]))
    a("")
    return "\n".join(L)


def claim_text(res: dict[str, Any]) -> str:
    """The verdict on SGLRP vs LRP, written from the numbers of this run."""
    pairs, rows = res["pairs"], res["rows"]
    if not _by(pairs, method="lrp") or not _by(pairs, method="sglrp"):
        return "Not measured: the run did not include both `lrp` and `sglrp` on photos with two regions."
    out = ["The SGLRP paper claims that SGLRP separates the target class from the other object better than LRP: "
           "LRP's map lights up both animals whatever the target, SGLRP's is positive on the target and negative "
           "on the other object. Measured here with the signed region shares and the correlation of the two "
           "classes' maps:", ""]

    def stats(m: str) -> dict[str, Any]:
        ds = _by(pairs, method=m)
        own = [d["a_on_a"] for d in ds] + [d["b_on_b"] for d in ds]
        oth = [d["a_on_b"] for d in ds] + [d["b_on_a"] for d in ds]
        return {"own": _mean(own), "other": _mean(oth), "corr": _mean([d["correlation"] for d in ds]),
                "sep": sum(1 for o, t in zip(own, oth, strict=True) if o > 0 > t), "n": len(own),
                "neg_other": sum(1 for t in oth if t < 0)}

    lrp, sg = stats("lrp"), stats("sglrp")
    out.append(f"* **LRP** puts {lrp['own']:+.3f} of `Σ|h|` on the target's own object and {lrp['other']:+.3f} on "
               f"the other object (mean), is negative on the other object in {lrp['neg_other']} of {lrp['n']} "
               f"cases, and its zebra and elephant maps correlate at {lrp['corr']:.3f}.")
    out.append(f"* **SGLRP** puts {sg['own']:+.3f} on the own object and {sg['other']:+.3f} on the other, is "
               f"positive on the own and negative on the other object in {sg['sep']} of {sg['n']} cases, and its "
               f"two maps correlate at {sg['corr']:.3f}.")
    better = []
    worse = []
    for s in res["photos"]:
        for t in (ZEBRA, ELEPHANT):
            a = _by(rows, image=s, method="lrp", target=t)
            b = _by(rows, image=s, method="sglrp", target=t)
            if not a or not b:
                continue
            sep_l = a[0]["share_own"] - a[0]["share_other"]
            sep_s = b[0]["share_own"] - b[0]["share_other"]
            ok = b[0]["share_own"] > 0 > b[0]["share_other"]
            (better if sep_s > sep_l and ok else worse).append((s, t, b[0]["share_own"], b[0]["share_other"],
                                                                a[0]["share_own"], a[0]["share_other"]))
    total = len(better) + len(worse)
    holds = len(better) == total and sg["corr"] < lrp["corr"]
    mostly = len(better) >= 0.7 * total and sg["other"] < lrp["other"] and sg["corr"] < lrp["corr"]
    out.append("")
    if holds:
        out.append(f"**The claim holds on this model in every case** ({len(better)} of {total}): SGLRP's own-minus-"
                   "other share is larger than LRP's, and SGLRP is positive on the target and negative on the other "
                   "animal.")
    elif mostly:
        out.append(f"**The claim mostly holds on this model**: in {len(better)} of {total} cases SGLRP is positive "
                   "on the target, negative on the other animal and separates them more than LRP does.")
    else:
        out.append(f"**The claim does not hold in general on this model**: SGLRP separates the two animals better "
                   f"than LRP (own share positive, other share negative, larger own-minus-other) in only "
                   f"{len(better)} of {total} cases.")
    close = [c for c in better if min(c[2], -c[3]) < 0.05]
    if close:
        out.append("")
        out.append("It holds narrowly (a share within 0.05 of 0) in "
                   + _words([f"`{s}.jpg`, target {NAMES[t]} (SGLRP {so:+.3f} / {sx:+.3f})"
                             for s, t, so, sx, _, _ in close]) + ".")
    if sg["corr"] < -0.9:
        out.append("")
        out.append(f"SGLRP's zebra and elephant maps are close to mirror images of each other (mean correlation "
                   f"{sg['corr']:.3f}, while LRP's two maps are nearly the same picture, {lrp['corr']:.3f}): "
                   "both SGLRP maps are the difference between a class's LRP map and the (rescaled) maps of the "
                   "other classes, and where LRP's class maps are this alike that difference changes little but "
                   "its sign.")
    if worse:
        out.append("")
        out.append("Where it does not (SGLRP own / other share vs LRP's):")
        out.append("")
        for s, t, so, sx, lo_, lx in worse:
            why = "SGLRP is not negative on the other animal" if sx >= 0 else (
                "SGLRP is not positive on the target" if so <= 0 else "LRP separates more")
            out.append(f"* `{s}.jpg`, target {NAMES[t]}: SGLRP {so:+.3f} / {sx:+.3f}, LRP {lo_:+.3f} / {lx:+.3f} "
                       f"— {why}.")
    # CLRP and the one-pass variants, briefly
    extra = []
    for m in ("clrp", "sglrp_seq_a", "sglrp_seq_b"):
        if _by(pairs, method=m):
            x = stats(m)
            extra.append(f"`{m}` {x['own']:+.3f} / {x['other']:+.3f} (own / other; {x['sep']} of {x['n']} cases "
                         f"separated, correlation {x['corr']:.3f})")
    if extra:
        out.append("")
        out.append("The other contrastive methods: " + "; ".join(extra) + ".")
    # does separating cost faithfulness?
    def m_of(m: str, key: str) -> float:
        return _mean([r[key] for r in _by(rows, method=m)])

    def cmp(key: str, higher_is_better: bool) -> str:
        a, b = m_of("sglrp", key), m_of("lrp", key)
        if abs(a - b) <= 0.05 * max(abs(a), abs(b)):  # within 5 %: no difference worth a word
            return "equal"
        return "better" if (a > b) == higher_is_better else "worse"

    out.append("")
    verdicts = {"AOPC MoRF": cmp("aopc_morf", True), "insertion AUC": cmp("auc_insertion", True),
                "deletion AUC": cmp("auc_deletion", False), "relevance mass accuracy": cmp("mass_accuracy", True)}
    good = [k for k, v in verdicts.items() if v == "better"]
    bad = [k for k, v in verdicts.items() if v == "worse"]
    better_on = _words(good) or "none of " + _words(list(verdicts))
    same = [k for k, v in verdicts.items() if v == "equal"]
    out.append(f"Beyond the claim, on the same cases SGLRP scores better than LRP on {better_on}, worse on "
               f"{_words(bad) or 'none'}" + (f", and about the same (within 5 %) on {_words(same)}" if same else "")
               + ".")
    out.append(f"Faithfulness of the same maps (means over all cases): AOPC MoRF LRP {m_of('lrp', 'aopc_morf'):.3f} "
               f"vs SGLRP {m_of('sglrp', 'aopc_morf'):.3f} (random order {m_of('lrp', 'aopc_random'):.3f}); "
               f"insertion AUC LRP {m_of('lrp', 'auc_insertion'):.3f} vs SGLRP {m_of('sglrp', 'auc_insertion'):.3f}; "
               f"deletion AUC LRP {m_of('lrp', 'auc_deletion'):.3f} vs SGLRP {m_of('sglrp', 'auc_deletion'):.3f}.")
    rnd = m_of("sglrp", "aopc_random")
    for m in ("lrp", "sglrp"):
        v = m_of(m, "aopc_morf")
        if v <= rnd + 0.05 * abs(rnd):
            out.append(f"On the logit-based AOPC, `{m}`'s most-relevant-first order ({v:.3f}) is no better than "
                       f"the random order ({rnd:.3f}). `{m}` marks the other animal as negative, so MoRF removes it "
                       "last; but for the target's *logit* the other animal is positive evidence (LRP puts "
                       f"{lrp['other']:+.3f} of its map there), so the logit stays up until the end (see the MoRF "
                       "curves). The probability-based insertion AUC, where the other animal competes in the "
                       "softmax, does reward the contrast.")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "efficientnet_lite0.onnx"))
    ap.add_argument("--images", default=str(ROOT / "data" / "images"), help="folder of the photos")
    ap.add_argument("--regions", default=str(ROOT / "data" / "regions"), help="folder of the regions files")
    ap.add_argument("--output", default=str(ROOT / "docs" / "evaluation.md"))
    ap.add_argument("--figures", default=str(ROOT / "docs" / "images" / "evaluation"))
    ap.add_argument("--seed-figure", default=str(ROOT.parent / "shared" / "data" / "seed_figure"),
                    help="the seed's published figure (copied into docs/images/seed_figure/)")
    ap.add_argument("--seed-figure-copy", default=str(ROOT / "docs" / "images" / "seed_figure"),
                    help="where the report's copy of the seed's figure goes")
    ap.add_argument("--methods", nargs="*", help="methods (default: all)")
    ap.add_argument("--only", nargs="*", help="photo stems to use (default: all five; for a quick check)")
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    args = ap.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [_rel(Path(sys.argv[0])), *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {command}", flush=True)
    start = time.monotonic()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res = run(args)
    res["regions_dir"] = args.regions
    fig_dir = Path(args.figures)
    seed_dst = Path(args.seed_figure_copy)
    seed_src = Path(args.seed_figure)
    if not seed_src.is_dir():
        print(f"note: {seed_src} not found; keeping the copies in {_rel(seed_dst)}", flush=True)
        seed_src = seed_dst
    figs = figures(res, fig_dir, seed_src, seed_dst, Path(args.images))
    numbers = write_numbers(res, fig_dir)
    elapsed = time.monotonic() - start
    meta = {
        "command": command, "date": date, "report": str(Path(args.output)), "seed_figure": str(seed_dst),
        "runtime": f"{elapsed / 60:.1f} min ({elapsed:.0f} s)",
        "machine": _machine(), "threads": str(args.threads),
        "versions": f"onnxlrp {onnxlrp.__version__} (git {_git()}), Python {platform.python_version()}, "
                    f"NumPy {np.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
                    f"Pillow {PIL.__version__}",
    }
    text = report(res, figs, numbers, meta)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    (fig_dir / "run.json").write_text(json.dumps({**meta, "settings": res["settings"].to_dict(),
                                                  "report_options": REPORT_OPTIONS}, indent=1) + "\n")
    print(f"wrote {_rel(out)} and {len(list(fig_dir.iterdir()))} files in {_rel(fig_dir)}")
    print(f"time: {elapsed:.0f} s ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
