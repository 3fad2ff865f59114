"""Pictures of heatmaps: a diverging colour map, PNG heatmaps, overlays on the photo, the grid figure.

A heatmap is drawn from a 2-D relevance map (the relevance of an input sample summed over its
channel axis, :func:`relevance_map`) divided by its largest absolute value, so that 0 is always
the middle of the colour map (white) and the strongest pixel, whatever its sign, reaches an end:
red for positive relevance, blue for negative.

The default colour map, ``seismic``, is matplotlib's of that name (written out here, matplotlib
is not needed): linear between the colours dark blue (0, 0, 0.3), blue (0, 0, 1), white, red
(1, 0, 0) and dark red (0.5, 0, 0) at 0, 1/4, 1/2, 3/4 and 1, sampled into a 256-entry table.
``bwr`` is the same without the dark ends.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLORMAPS",
    "atomic_open",
    "write_csv",
    "write_text",
    "colormap",
    "grid",
    "heatmap_to_rgb",
    "normalize",
    "overlay",
    "relevance_map",
    "save_heatmap",
    "save_png",
]

#: Colour maps as evenly spaced RGB nodes (0..1) from the most negative to the most positive value.
COLORMAPS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "seismic": ((0.0, 0.0, 0.3), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0)),
    "bwr": ((0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0)),
}


def colormap(name: str = "seismic", n: int = 256) -> np.ndarray:
    """The ``(n, 3)`` uint8 table of a colour map: entry ``i`` is the colour at ``i / (n - 1)`` of its range."""
    return _colorize(np.linspace(-1.0, 1.0, n), name)


def _colorize(v: np.ndarray, name: str) -> np.ndarray:
    """Colours (uint8 RGB, shape ``v.shape + (3,)``) of values ``v`` in [-1, 1], interpolated between the nodes."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colour map {name!r}; choose from {', '.join(COLORMAPS)}")
    nodes = np.asarray(COLORMAPS[name], dtype=np.float64)
    pos = np.linspace(-1.0, 1.0, len(nodes))
    v = np.clip(np.asarray(v, dtype=np.float64), -1.0, 1.0)
    rgb = np.stack([np.interp(v, pos, nodes[:, k]) for k in range(3)], axis=-1)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def relevance_map(heat: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """The 2-D map ``(H, W)`` of one sample: relevance summed over the channel axis.

    ``heat`` is one sample, ``(C, H, W)`` for NCHW or ``(H, W, C)`` for NHWC; a 2-D array is
    returned unchanged (as float64).
    """
    h = np.asarray(heat, dtype=np.float64)
    if h.ndim == 2:
        return h
    if h.ndim != 3:
        raise ValueError(f"expected one sample (C, H, W) / (H, W, C) or a 2-D map, got shape {list(h.shape)}")
    return h.sum(axis=0 if layout == "NCHW" else -1)


def normalize(h: np.ndarray, scale: float | None = None, percentile: float | None = None) -> np.ndarray:
    """``h / scale`` clipped to [-1, 1]; default ``scale = max |h|`` (an all-zero map stays 0).

    With ``percentile`` (0 < p <= 100) and no ``scale``, the scale is that percentile of
    ``|h|`` instead of its maximum: the few strongest pixels saturate and weaker structure
    becomes visible. Non-finite values (NaN, ±inf) become 0 and do not count towards the scale.
    """
    h = np.asarray(h, dtype=np.float64)
    h = np.where(np.isfinite(h), h, 0.0)
    if scale is None and percentile is not None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], not {percentile}")
        s = float(np.percentile(np.abs(h), percentile)) if h.size else 0.0
    else:
        s = float(np.abs(h).max()) if scale is None and h.size else float(scale or 0.0)
    if s <= 0:
        return np.zeros_like(h)
    return np.clip(h / s, -1.0, 1.0)


def heatmap_to_rgb(h: np.ndarray, cmap: str = "seismic", scale: float | None = None,
                   layout: str = "NCHW", percentile: float | None = None) -> np.ndarray:
    """Colour a relevance map: an ``(H, W, 3)`` uint8 RGB image.

    ``h`` is a 2-D map or one sample (summed over channels first, see :func:`relevance_map`).
    It is divided by ``scale`` (default ``max |h|``) so that 0 maps to the middle of the colour
    map (white for ``seismic``), +scale to its positive end (dark red) and -scale to its
    negative end (dark blue). ``percentile``: see :func:`normalize`.
    """
    return _colorize(normalize(relevance_map(h, layout), scale, percentile), cmap)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; when the block ends it replaces ``path`` atomically.

    The temporary file (``.NAME.XXXXXXXX.tmp`` in the same folder, so the rename never crosses
    file systems) is removed if the block raises (an error, Ctrl-C): a reader never sees a
    partial file, an interrupted write leaves ``path`` as it was, and two processes writing
    the same name leave one complete file. The folder is created if needed; the file gets the
    usual permissions (``0o666`` minus the umask).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:200]}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically (:func:`atomic_open`); return the path."""
    p = Path(path)
    with atomic_open(p, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return p


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file (a header row, then ``rows``) atomically; return the path."""
    import csv

    p = Path(path)
    with atomic_open(p, "w", encoding="utf-8", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(header)
        wr.writerows(rows)
    return p


def save_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` (or ``(H, W)``) uint8 array as a PNG atomically (:func:`atomic_open`); return the path."""
    p = Path(path)
    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    with atomic_open(p) as fh:
        img.save(fh, format="PNG")
    return p


def save_heatmap(path: str | os.PathLike[str], h: np.ndarray, cmap: str = "seismic",
                 scale: float | None = None, layout: str = "NCHW", percentile: float | None = None) -> Path:
    """Write the coloured heatmap of ``h`` (see :func:`heatmap_to_rgb`) as a PNG, one pixel per input pixel."""
    return save_png(path, heatmap_to_rgb(h, cmap, scale, layout, percentile))


def overlay(photo: np.ndarray, h: np.ndarray, alpha: float = 0.8, cmap: str = "seismic",
            scale: float | None = None, layout: str = "NCHW", percentile: float | None = None) -> np.ndarray:
    """The heatmap blended on the photo: ``(H, W, 3)`` uint8.

    The photo (``(H, W, 3)`` uint8, the size of the map) is shown in grey levels at reduced
    contrast (``64 + 0.6 * grey``); each
    pixel's heatmap colour is laid over it with opacity ``alpha * sqrt(|v|)``, ``v`` the
    normalised relevance in [-1, 1], so that irrelevant pixels show the photo and relevant
    ones show red or blue (the square root keeps weak relevance visible). ``scale`` and
    ``percentile``: see :func:`normalize`.
    """
    v = normalize(relevance_map(h, layout), scale, percentile)
    photo = np.asarray(photo, dtype=np.float64)
    if photo.ndim == 2:
        photo = photo[..., None].repeat(3, axis=2)
    if photo.shape[:2] != v.shape:
        raise ValueError(f"photo {list(photo.shape[:2])} and heatmap {list(v.shape)} differ in size")
    grey = photo[..., :3] @ np.array([0.299, 0.587, 0.114])
    base = (64.0 + 0.6 * grey)[..., None]  # grey, lower contrast, so that colours stand out
    colour = heatmap_to_rgb(v, cmap, scale=1.0).astype(np.float64)
    w = (float(alpha) * np.sqrt(np.abs(v)))[..., None]
    out = base * (1 - w) + colour * w
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def grid(panels: Sequence[np.ndarray], titles: Sequence[str] | None = None, columns: int | None = None,
         pad: int = 6, font_size: int = 14, min_size: int = 0) -> np.ndarray:
    """Panels side by side, each with its title above, as one ``(H, W, 3)`` uint8 image.

    ``panels`` are ``(h, w, 3)`` uint8 images (sizes may differ: each cell is as large as the
    largest panel, and a panel is centred in it); ``columns`` panels per row (default: all in one
    row, like the seed's figure). Panels whose larger side is below ``min_size`` are enlarged by
    a whole factor (nearest neighbour, pixels stay sharp). Background white, titles black, in
    PIL's default font.
    """
    if not panels:
        raise ValueError("grid() needs at least one panel")
    panels = [_enlarge(np.asarray(p, dtype=np.uint8), min_size) for p in panels]
    titles = list(titles) if titles is not None else [""] * len(panels)
    if len(titles) != len(panels):
        raise ValueError("grid() needs one title per panel")
    cols = max(1, min(columns or len(panels), len(panels)))
    rows = -(-len(panels) // cols)
    ph = max(p.shape[0] for p in panels)
    pw = max(p.shape[1] for p in panels)
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    th = max((probe.textbbox((0, 0), t or "Ag", font=font)[3] for t in titles), default=0) + pad if any(titles) else 0
    cw, ch = pw + pad, ph + th + pad
    canvas = Image.new("RGB", (cols * cw + pad, rows * ch + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * cw, pad + r * ch
        img = Image.fromarray(np.asarray(panel, dtype=np.uint8)).convert("RGB")
        canvas.paste(img, (x0 + (pw - img.width) // 2, y0 + th + (ph - img.height) // 2))
        if title:
            text = _fit(draw, title, font, pw)
            tw = draw.textlength(text, font=font)
            draw.text((x0 + (pw - tw) / 2, y0), text, fill="black", font=font)
    return np.asarray(canvas, dtype=np.uint8)


def _enlarge(panel: np.ndarray, min_size: int) -> np.ndarray:
    side = max(panel.shape[0], panel.shape[1])
    if side >= min_size or side == 0:
        return panel
    k = -(-min_size // side)
    return panel.repeat(k, axis=0).repeat(k, axis=1)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
         width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
