"""The pictures and reports of a SpRAy run, drawn with Pillow (no matplotlib).

* ``cluster_<k>.png``: the cluster's mean map (the mean of its members' normalised maps,
  coloured with :func:`onnxlrp.render.heatmap_to_rgb`: red positive, blue negative, each picture
  scaled to its own largest absolute value) beside its most central images (nearest the
  cluster's centre in the eigen-embedding) and their maps.
* ``embedding.png``: the t-SNE (or UMAP) coordinates, one dot per image, coloured by cluster.
* ``eigenvalues.png``: the smallest eigenvalues of the normalised Laplacian, with the eigengap
  that chose the number of clusters marked.
* ``report.md`` / ``report.html``: the parameters, the clusters (size, share, mean probability of
  the target, central images) and the pictures.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import OnnxLrpError
from ..image import load_rgb
from ..render import grid, heatmap_to_rgb, save_png

if TYPE_CHECKING:
    from .spray import SprayResult

__all__ = ["PALETTE", "reports", "save_cluster_png", "save_embedding_png", "save_eigenvalues_png"]

#: Cluster colours (the "tab10" qualitative palette), reused cyclically beyond ten clusters.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
MEAN_MIN = 192  #: the mean map is enlarged (whole factors) to at least this many pixels
THUMB_MIN = 96  #: thumbnails are enlarged (whole factors) to at least this many pixels


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _photo(path: str, shape: tuple[int, int]) -> np.ndarray:
    """The image at ``path`` resized to ``shape`` (H, W), or a grey panel if it cannot be read any more."""
    try:
        return load_rgb(path, size=shape, resample="bilinear")
    except (OnnxLrpError, OSError, ValueError):
        return np.full(shape + (3,), 200, dtype=np.uint8)


def save_cluster_png(path: str | os.PathLike[str], result: SprayResult, c: int) -> Path:
    """Write cluster ``c``'s picture: a title, its mean map, its central images over their maps."""
    rows = result.maps.rows
    size = result.sizes()[c]
    share = size / max(len(rows), 1)
    mean = grid([heatmap_to_rgb(result.means[c])], [f"mean of {size} maps"], min_size=MEAN_MIN)
    central = result.central[c]
    shape = result.maps.display.shape[1:]
    photos = [_photo(str(rows["image_path"].iloc[i]), shape) for i in central]
    heats = [heatmap_to_rgb(result.maps.display[i]) for i in central]
    titles = [Path(str(rows["image_path"].iloc[i])).name for i in central]
    titles += [f"d = {result.distance[i]:.3g}" for i in central]
    members = grid(photos + heats, titles, columns=max(len(central), 1), min_size=THUMB_MIN)
    font = _font(16)
    title = (f"cluster {c}: {size} of {len(rows)} images ({share:.0%}) - {result.maps.method}, "
             f"target {result.maps.target_label}; right: the {len(central)} most central images and their maps")
    head = 30
    w = mean.shape[1] + members.shape[1]
    h = head + max(mean.shape[0], members.shape[0])
    canvas = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(canvas).text((8, 6), title, fill="black", font=font)
    canvas.paste(Image.fromarray(mean), (0, head))
    canvas.paste(Image.fromarray(members), (mean.shape[1], head))
    return save_png(path, np.asarray(canvas))


def _frame(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    draw.rectangle(box, outline=(60, 60, 60), width=1)


def save_embedding_png(path: str | os.PathLike[str], result: SprayResult, side: int = 420) -> Path:
    """Write the 2-D embedding as a scatter plot coloured by cluster, with a legend."""
    xy = np.asarray(result.xy, dtype=np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    margin, legend_w, head = 40, 170, 34
    canvas = Image.new("RGB", (margin + side + 20 + legend_w, head + side + margin), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = _font(15), _font(12)
    name = "UMAP" if result.params.get("embedding") == "umap" else "t-SNE"
    draw.text((margin, 8), f"{name} of the {len(xy)} normalised maps, coloured by cluster", fill="black", font=font)
    box = (margin, head, margin + side, head + side)
    _frame(draw, box)
    pad = 12
    px = margin + pad + (xy[:, 0] - lo[0]) / span[0] * (side - 2 * pad)
    py = head + side - pad - (xy[:, 1] - lo[1]) / span[1] * (side - 2 * pad)
    r = 4 if len(xy) <= 2000 else 2
    for i in np.argsort(-np.bincount(result.labels)[result.labels], kind="stable"):  # small clusters on top
        col = PALETTE[int(result.labels[i]) % len(PALETTE)]
        draw.ellipse((px[i] - r, py[i] - r, px[i] + r, py[i] + r), fill=col, outline=tuple(v // 2 for v in col))
    draw.text((margin + side / 2 - 20, head + side + 10), f"{name} 1", fill="black", font=small)
    draw.text((6, head + side / 2), f"{name} 2", fill="black", font=small)
    sizes = result.sizes()
    for c in range(result.k):
        y = head + 6 + 20 * c
        if y > head + side - 16:
            draw.text((margin + side + 20, y), f"... {result.k - c} more", fill="black", font=small)
            break
        col = PALETTE[c % len(PALETTE)]
        draw.ellipse((margin + side + 20, y + 3, margin + side + 30, y + 13), fill=col)
        draw.text((margin + side + 36, y), f"cluster {c} ({sizes[c]})", fill="black", font=small)
    return save_png(path, np.asarray(canvas))


def save_eigenvalues_png(path: str | os.PathLike[str], result: SprayResult, width: int = 520,
                         height: int = 320) -> Path:
    """Write the spectrum: eigenvalue ``i`` against ``i``, the gap after ``lambda_K`` marked in red."""
    lam = np.asarray(result.eigenvalues, dtype=np.float64)
    left, right, top, bottom = 56, 20, 36, 40
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = _font(15), _font(12)
    how = "eigengap" if result.auto else "--clusters"
    draw.text((left, 8), f"smallest eigenvalues of the normalised Laplacian; K = {result.k} ({how})",
              fill="black", font=font)
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    _frame(draw, (x0, y0, x1, y1))
    ymax = max(float(lam.max()) * 1.08, 1e-6) if len(lam) else 1.0
    n = len(lam)

    def px(i: int) -> float:
        return x0 + 18 + (i - 1) / max(n - 1, 1) * (x1 - x0 - 36)

    def py(v: float) -> float:
        return y1 - v / ymax * (y1 - y0)

    for frac in (0.0, 0.5, 1.0):
        v = frac * ymax
        draw.line((x0 - 4, py(v), x0, py(v)), fill="black")
        draw.text((4, py(v) - 7), f"{v:.3g}", fill="black", font=small)
    for i in range(1, n + 1):
        draw.text((px(i) - 4, y1 + 6), str(i), fill="black", font=small)
    k = result.k
    if 1 <= k < n:
        xm = (px(k) + px(k + 1)) / 2
        draw.line((xm, py(lam[k - 1]), xm, py(lam[k])), fill=(214, 39, 40), width=3)
        draw.text((xm + 6, (py(lam[k - 1]) + py(lam[k])) / 2 - 7),
                  f"gap {lam[k] - lam[k - 1]:.3g}", fill=(214, 39, 40), font=small)
    pts = [(px(i + 1), py(v)) for i, v in enumerate(lam)]
    if len(pts) > 1:
        draw.line(pts, fill=(120, 120, 120), width=1)
    for i, (x, y) in enumerate(pts):
        col = PALETTE[0] if i < k else (127, 127, 127)
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=col)
    draw.text(((x0 + x1) / 2 - 10, height - 18), "i", fill="black", font=small)
    return save_png(path, np.asarray(canvas))


def _cluster_table(result: SprayResult) -> list[list[str]]:
    rows = result.maps.rows
    sizes = result.sizes()
    out = []
    for c in range(result.k):
        members = rows[result.labels == c]
        central = ", ".join(Path(str(rows["image_path"].iloc[i])).name for i in result.central[c][:3])
        out.append([str(c), str(sizes[c]), f"{sizes[c] / len(rows):.1%}",
                    f"{float(members['probability'].mean()):.3f}", central])
    return out


def reports(result: SprayResult) -> tuple[str, str]:
    """The Markdown and the HTML report (the same content; pictures linked by relative file name)."""
    p = result.params
    lam = ", ".join(f"{v:.4f}" for v in result.eigenvalues)
    k, ev = result.k, result.eigenvalues
    chosen = (f"the eigengap chose K = {k} (largest gap lambda_{k + 1} - lambda_{k} = {ev[k] - ev[k - 1]:.4f} "
              f"among K = 2..{p['max_clusters']})" if result.auto and k < len(ev)
              else f"K = {k} was given with --clusters")
    facts = [
        ("store", p["store"]), ("method", p["method"]), ("target", p["target_label"]),
        ("images", str(p["images"])), ("stored heatmap shape", str(p["heatmap_shape"])),
        ("features", f"channel sum, area-averaged to {p['size']}x{p['size']}, each map divided by its "
                     f"{'largest |value|' if p['norm'] == 'max' else 'sum of |values|'}"),
        ("affinity", f"symmetrised {p['neighbors']}-nearest-neighbour graph"),
        ("clusters", chosen), ("smallest eigenvalues", lam),
    ]
    header = ["cluster", "images", "share", "mean probability of the target", "most central images"]
    table = _cluster_table(result)
    title = f"SpRAy: {p['method']} maps, target {p['target_label']}"
    md = [f"# {title}", ""]
    md += [f"- **{k}**: {v}" for k, v in facts]
    md += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    md += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in table]
    md += ["", "![spectrum](eigenvalues.png)", "", "![embedding](embedding.png)", ""]
    for c in range(result.k):
        md += [f"## Cluster {c}", "", f"![cluster {c}](cluster_{c}.png)", ""]
    md += ["Per-image clusters and coordinates: [clusters.csv](clusters.csv).", ""]
    e = html.escape
    h = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{e(title)}</title>",
         "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
         "td,th{border:1px solid #aaa;padding:3px 8px}img{max-width:100%}</style></head><body>",
         f"<h1>{e(title)}</h1>", "<ul>"]
    h += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in facts]
    h += ["</ul>", "<table><tr>" + "".join(f"<th>{e(v)}</th>" for v in header) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in table]
    h += ["</table>", "<p><img src=\"eigenvalues.png\" alt=\"spectrum\"></p>",
          "<p><img src=\"embedding.png\" alt=\"embedding\"></p>"]
    for c in range(result.k):
        h += [f"<h2>Cluster {c}</h2>", f"<p><img src=\"cluster_{c}.png\" alt=\"cluster {c}\"></p>"]
    h += ["<p>Per-image clusters and coordinates: <a href=\"clusters.csv\">clusters.csv</a>.</p>", "</body></html>", ""]
    return "\n".join(md), "\n".join(h)
