"""Time ``onnxlrp explain-dataset`` on one folder: the local runner (1 process, all cores; a pool of
processes) against the Ray runner (a local Ray, actors), with the shipped model and the seed photos.

    python benchmarks/dataset_bench.py                     # 64 images, lrp, every configuration, 2 rounds
    python benchmarks/dataset_bench.py --images 16 --repeat 1 --configs local-1 ray-2

Each configuration runs the command in a fresh process on a fresh store and reports the wall
time of the whole command (interpreter start, model load, Ray start, explaining, writing) and
of its explaining phase (what the command prints as "explained N images in S s": for Ray this
includes starting the actors, each loading the model, but not starting Ray). The configurations
run in interleaved rounds and each reports its fastest round, so that a machine shared with
other work penalises all of them alike. Writes ``benchmarks/dataset_results.json`` and the
figure ``docs/images/dataset/bench.png``; prints a Markdown table for docs/dataset.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "efficientnet_lite0.onnx"
PHOTOS = sorted((ROOT / "data" / "images").glob("*.jpg"))

#: name -> (extra command-line options, description)
CONFIGS: dict[str, tuple[list[str], str]] = {
    "local-1": ([], "local, 1 process x 2 threads (default)"),
    "local-2": (["--workers", "2"], "local, 2 processes x 1 thread"),
    "ray-2": (["--ray", "local", "--workers", "2"], "Ray (local), 2 actors x 1 CPU x 1 thread"),
    "ray-1x2": (["--ray", "local", "--workers", "1", "--cpus-per-worker", "2"], "Ray (local), 1 actor x 2 CPUs"),
}


def make_folder(folder: Path, n: int) -> None:
    """``n`` copies of the seed photos (cycled) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = PHOTOS[i % len(PHOTOS)]
        shutil.copyfile(src, folder / f"{src.stem}_{i:04d}.jpg")


def run_config(name: str, folder: Path, work: Path, method: str) -> dict[str, float | str]:
    """Run one configuration; return its timings."""
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh store every round
    cmd = [sys.executable, "-m", "onnxlrp.cli", "explain-dataset", str(MODEL), str(folder), "--method", method,
           "--output", str(out), "--no-progress", *CONFIGS[name][0]]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{name} failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res}")
    m = re.search(r"explained (\d+) images in ([\d.]+) s", res.stdout)
    if not m:
        raise SystemExit(f"{name}: no timing line in {res.stdout!r}")
    n, phase = int(m.group(1)), float(m.group(2))
    return {"config": name, "what": CONFIGS[name][1], "images": n, "wall_s": round(wall, 2),
            "explain_s": round(phase, 2), "images_per_s": round(n / phase, 3)}


def figure(results: list[dict], path: Path) -> None:
    """A bar chart of images/s (explaining phase, whole command), one pair of bars per configuration."""
    w, row, left = 760, 46, 300
    h = 60 + row * len(results)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    top = max(r["images"] / r["wall_s"] for r in results)
    top = max(top, max(r["images_per_s"] for r in results))
    scale = (w - left - 80) / top
    d.text((10, 10), "explain-dataset, EfficientNet-Lite0, lrp: images/s (dark: explaining phase, light: whole "
           "command)", fill="black", font=font)
    for i, r in enumerate(results):
        y = 40 + i * row
        d.text((10, y + 8), r["what"][:48], fill="black", font=font)
        phase, whole = r["images_per_s"], r["images"] / r["wall_s"]
        d.rectangle([left, y, left + phase * scale, y + 16], fill=(40, 80, 160))
        d.rectangle([left, y + 18, left + whole * scale, y + 34], fill=(150, 180, 230))
        d.text((left + phase * scale + 6, y + 2), f"{phase:.2f}", fill="black", font=font)
        d.text((left + whole * scale + 6, y + 20), f"{whole:.2f}", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def model_load_seconds(repeats: int = 3) -> float:
    """The median time to construct an Explainer of the shipped model (what every worker or actor pays once)."""
    from onnxlrp import Explainer

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        Explainer(str(MODEL))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def store_bytes_per_row(work: Path) -> float:
    """Mean bytes on disk per stored row (224x224 float16 map, zstd) of the first store written."""
    for out in sorted(work.glob("out-*")):
        files = list((out / "store").glob("part-*.parquet"))
        if files:
            import pyarrow.parquet as pq

            rows = sum(pq.read_metadata(f).num_rows for f in files)
            return sum(f.stat().st_size for f in files) / max(rows, 1)
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--method", default="lrp")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds; each configuration's fastest counts")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "dataset_results.json"))
    ap.add_argument("--figure", default=str(ROOT / "docs" / "images" / "dataset" / "bench.png"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_folder(work / "photos", args.images)
        rounds: dict[str, list[dict]] = {name: [] for name in args.configs}
        loads = [os.getloadavg()[0]]
        for _ in range(max(1, args.repeat)):
            for name in args.configs:
                r = run_config(name, work / "photos", work, args.method)
                print(json.dumps(r), flush=True)
                rounds[name].append(r)
                loads.append(os.getloadavg()[0])
        per_row = store_bytes_per_row(work)
    results = []
    for name in args.configs:
        best = min(rounds[name], key=lambda r: r["explain_s"])
        results.append({**best, "wall_s": min(r["wall_s"] for r in rounds[name]),
                        "explain_s_rounds": [r["explain_s"] for r in rounds[name]]})
    load = model_load_seconds()
    base = next((r for r in results if r["config"] == "local-1"), results[0])
    print(f"\nmodel load per worker/actor: {load:.2f} s; store: {per_row / 1024:.1f} KiB per row")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"1-minute load average during the runs {min(loads):.1f} to {max(loads):.1f}\n")
    print("| configuration | images | whole command (s) | explaining (s) | images/s | vs local-1 (explaining) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        over = (r["explain_s"] / base["explain_s"] - 1) * 100
        print(f"| {r['what']} | {r['images']} | {r['wall_s']:.1f} | {r['explain_s']:.1f} | {r['images_per_s']:.2f} | "
              f"{over:+.0f} % |")
    Path(args.json).write_text(json.dumps({"method": args.method, "images": args.images, "cores": os.cpu_count(),
                                           "repeat": args.repeat, "load_average": [min(loads), max(loads)],
                                           "model_load_s": round(load, 2), "bytes_per_row": round(per_row),
                                           "results": results}, indent=2) + "\n")
    figure(results, Path(args.figure))
    print(f"\nwrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()
