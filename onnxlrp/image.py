"""Loading photos and turning them into model inputs.

A *preset* says how pixel values become input values, per channel ``c``::

    x[c] = (pixel[c] * scale - mean[c]) / std[c]        pixel in 0..255

with the channels in RGB or BGR order. The presets:

============ ===== ========== ========================================== ==================
preset       order scale      mean                                       std
============ ===== ========== ========================================== ==================
``imagenet`` RGB   1/255      0.485, 0.456, 0.406                        0.229, 0.224, 0.225
``caffe``    BGR   1          103.939, 116.779, 123.68 (B, G, R)         1, 1, 1
``tf``       RGB   1/127.5    1, 1, 1 (so x is in [-1, 1])               1, 1, 1
``none``     RGB   1/255      0, 0, 0 (so x is in [0, 1])                1, 1, 1
============ ===== ========== ========================================== ==================

``imagenet`` is torchvision's normalisation, ``caffe`` the one of the original VGG16 weights that
the SGLRP paper used (Keras ``preprocess_input`` in its default mode), ``tf`` the Keras
MobileNet/Inception one. A photo is resized straight to the model's size (no crop, the aspect
ratio is not kept) with a PIL filter, ``bicubic`` unless the model's metadata or the caller says
otherwise. Models with one input channel get the photo in grey levels (PIL ``L``), with the
first channel's mean and std.

Any Pillow mode is read. 8-bit modes are converted by Pillow (alpha dropped); 16-bit grey
(``I;16``, ``I;16B``, ``I``) is divided by 257 and float images (``F``) are taken as 0..1 when
their maximum is at most 1, else as 0..255, so that a high-bit-depth picture reaches the model
as its 8-bit version does instead of clipped by Pillow's conversion (see :func:`_pixels`).
Files are read bounded: regular files only, at most :data:`MAX_IMAGE_BYTES` bytes and
:data:`MAX_IMAGE_PIXELS` pixels.

The *input range* of a preset, ``(0·scale − mean)/std`` to ``(255·scale − mean)/std`` per
channel, is the box ``[low, high]`` that the Z^B rule of ``lrp``/``clrp``/``sglrp`` needs.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .paths import read_bounded

__all__ = [
    "open_image",
    "HIGH_DEPTH_MODES",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "PRESETS",
    "RESAMPLE",
    "Preprocess",
    "Preset",
    "detect_layout",
    "expand_inputs",
    "image_size",
    "input_range",
    "load_image",
    "load_images",
    "load_rgb",
    "load_sample",
    "parse_floats",
    "preprocess",
    "region_mask",
    "scale_box",
]

#: File name endings taken from a directory given as input.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: PIL resize filters by name.
RESAMPLE: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preset:
    """How pixels (0..255) become input values: ``(pixel * scale - mean) / std`` per channel.

    ``mean`` and ``std`` are given in the preset's channel ``order`` (``"RGB"`` or ``"BGR"``).
    """

    name: str
    order: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    summary: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("imagenet", "RGB", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
               "RGB in [0, 1], minus the ImageNet mean, divided by the ImageNet std (torchvision)"),
        Preset("caffe", "BGR", 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0),
               "BGR in 0..255 minus the ImageNet mean pixel (Caffe/Keras VGG16, the SGLRP paper)"),
        Preset("tf", "RGB", 1 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), "RGB scaled to [-1, 1] (Keras 'tf' mode)"),
        Preset("none", "RGB", 1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB in [0, 1]"),
    ]
}


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn a photo into one model input sample.

    ``size`` is ``(height, width)``; ``layout`` is ``"NCHW"`` or ``"NHWC"``; ``channels`` 3 (colour)
    or 1 (grey); ``mean``/``std`` override the preset's (one value, or one per channel in the
    preset's channel order).
    """

    preset: str = "imagenet"
    size: tuple[int, int] = (224, 224)
    layout: str = "NCHW"
    resample: str = "bicubic"
    channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(f"unknown preprocessing preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        if self.resample not in RESAMPLE:
            raise InputError(f"unknown resize filter {self.resample!r}; choose from {', '.join(RESAMPLE)}")
        if self.channels not in (1, 3):
            raise InputError(f"images can feed models with 1 or 3 input channels, not {self.channels}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise InputError(f"size must be (height, width) with positive values, not {self.size}")
        for label, v in (("mean", self.mean), ("std", self.std)):
            if v is not None and len(v) not in (1, self.channels):
                raise InputError(f"--{label} takes 1 or {self.channels} values, not {len(v)}")
        if self.std is not None and any(s == 0 for s in self.std):
            raise InputError("std must not be 0")

    def stats(self) -> tuple[float, np.ndarray, np.ndarray]:
        """``(scale, mean, std)`` with mean and std as float32 arrays of one value per model channel."""
        p = PRESETS[self.preset]
        mean = np.asarray(self.mean if self.mean is not None else p.mean, dtype=np.float64)
        std = np.asarray(self.std if self.std is not None else p.std, dtype=np.float64)
        c = self.channels
        mean = np.broadcast_to(mean if mean.size != 3 or c == 3 else mean[:1], (c,))
        std = np.broadcast_to(std if std.size != 3 or c == 3 else std[:1], (c,))
        return p.scale, mean.astype(np.float32), std.astype(np.float32)

    def channel_shape(self) -> tuple[int, ...]:
        """Shape that broadcasts a per-channel vector against a batch in this layout."""
        return (1, self.channels, 1, 1) if self.layout == "NCHW" else (1, 1, 1, self.channels)

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed sample (no batch axis)."""
        h, w = self.size
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)


#: An image file larger than this is not read (bytes).
MAX_IMAGE_BYTES = 1 << 30
#: An image with more pixels than this is refused before it is decoded (Pillow's own warning threshold).
MAX_IMAGE_PIXELS = 89_478_485
#: Modes with more than 8 bits per sample: read as floats, scaled to 0..255 (see :func:`_high_depth_grey`).
HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def _open(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file, apply its EXIF orientation, and load it; errors become :class:`InputError`.

    Only a regular file of at most :data:`MAX_IMAGE_BYTES` is read (a pipe, ``/dev/zero``, a
    socket or a symlink loop is refused before any byte is read), in one bounded read, so a
    file that changes while it is read is refused or decoded whole, never half. An image of
    more than :data:`MAX_IMAGE_PIXELS` pixels (or with no pixels) is refused before it is
    decoded; Pillow bounds the text and colour-profile chunks it decompresses.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise InputError(f"no such file: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a directory, not an image")
    data = read_bounded(p, "cannot read image", MAX_IMAGE_BYTES, InputError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    raise InputError(f"cannot read image {p}: it has no pixels ({w}x{h})")
                if w * h > MAX_IMAGE_PIXELS:
                    raise InputError(f"cannot read image {p}: {w}x{h} pixels is more than the limit of "
                                     f"{MAX_IMAGE_PIXELS}")
                im.load()
                return ImageOps.exif_transpose(im)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {p}: not an image format PIL knows") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"cannot read image {p}: {exc}") from None
    except MemoryError:
        raise InputError(f"cannot read image {p}: not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file can make a decoder raise anything
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"cannot read image {p}: {text}") from None


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """The image file opened with one bounded read, EXIF orientation applied (see :func:`load_sample`'s
    limits); errors are :class:`~onnxlrp.errors.InputError`. Its ``size`` is the original size."""
    return _open(path)


def _high_depth_grey(im: Image.Image) -> np.ndarray:
    """A high-bit-depth grey image as float32 values in 0..255.

    16-bit (``I;16``, ``I;16B``, …) and 32-bit integer (``I``) images are taken as 0..65535
    and divided by 257 (so 65535 is 255, and 257·v is v); ``I`` values outside 0..65535 are
    clipped. Float images (``F``) are taken as 0..1 when their largest value is at most 1
    (then multiplied by 255), else as 0..255; values are clipped to 0..255. A NaN or
    infinite pixel is an :class:`InputError`.
    """
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise InputError("the image has NaN or infinite pixel values")
        if a.size and float(a.max()) <= 1.0:
            a = a * np.float32(255.0)
        return np.clip(a, 0.0, 255.0).astype(np.float32)
    return (np.clip(a.astype(np.float64), 0, 65535) / 257.0).astype(np.float32)


def _to_8bit(im: Image.Image, mode: str) -> Image.Image:
    """An 8-bit image converted to ``mode`` (``RGB`` or ``L``): alpha is dropped, palettes expanded, CMYK converted."""
    if im.mode in ("La", "RGBa"):  # premultiplied alpha: Pillow converts these only via LA / RGBA
        im = im.convert("LA" if im.mode == "La" else "RGBA")
    elif im.mode == "LAB":  # CIELAB (TIFF, JPEG): a colour transform, not a channel copy
        from PIL import ImageCms

        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        im = ImageCms.applyTransform(im, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
    with warnings.catch_warnings():  # palette transparency in bytes: irrelevant once alpha is dropped
        warnings.simplefilter("ignore", UserWarning)
        try:
            return im.convert(mode)
        except ValueError as exc:
            raise InputError(f"cannot convert an image of mode {im.mode} to {mode}: {exc}") from None


def _pixels(im: Image.Image, channels: int, size: tuple[int, int] | None, resample: str) -> np.ndarray:
    """The pixels as float32 ``(H, W, channels)`` in 0..255, resized to ``size = (height, width)`` if given.

    8-bit images are converted by Pillow (``RGB`` or ``L``) and resized as 8-bit images;
    high-bit-depth images (:data:`HIGH_DEPTH_MODES`) are scaled to 0..255 as floats
    (:func:`_high_depth_grey`). If every scaled value is an 8-bit level (a 16-bit image whose
    values are multiples of 257, a float image of multiples of 1/255), the image is the 8-bit
    picture it holds and is read exactly as that; otherwise it is resized as floats and clipped
    to 0..255, keeping the extra precision (it then differs from its 8-bit rounding by what
    the rounding loses, about one grey level).
    """
    if im.mode in HIGH_DEPTH_MODES:
        values = _high_depth_grey(im)
        levels = np.rint(values)
        if np.abs(values - levels).max(initial=0.0) <= 1e-3:  # only 8-bit levels: read as the 8-bit image it is
            return _pixels(Image.fromarray(levels.astype(np.uint8), mode="L"), channels, size, resample)
        grey = Image.fromarray(values, mode="F")
        if size is not None and grey.size != (size[1], size[0]):
            grey = grey.resize((int(size[1]), int(size[0])), RESAMPLE[resample])
        g = np.clip(np.asarray(grey, dtype=np.float32), 0.0, 255.0)[..., None]
        return g if channels == 1 else np.repeat(g, 3, axis=2)
    im = _to_8bit(im, "L" if channels == 1 else "RGB")
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((int(size[1]), int(size[0])), RESAMPLE[resample])
    px = np.asarray(im, dtype=np.float32)
    return px[..., None] if channels == 1 else px


def load_rgb(path: str | os.PathLike[str], size: tuple[int, int] | None = None,
             resample: str = "bicubic") -> np.ndarray:
    """The photo as an ``(H, W, 3)`` uint8 RGB array, resized to ``size = (height, width)`` if given.

    High-bit-depth images are scaled to 8 bits as :func:`load_image` scales them (rounded).
    """
    if resample not in RESAMPLE:
        raise InputError(f"unknown resize filter {resample!r}; choose from {', '.join(RESAMPLE)}")
    return _display(_open(path), size, resample)


def _display(im: Image.Image, size: tuple[int, int] | None, resample: str) -> np.ndarray:
    px = _pixels(im, 3, size, resample)
    return np.clip(np.rint(px), 0, 255).astype(np.uint8)


def load_sample(path: str | os.PathLike[str], spec: Preprocess, with_rgb: bool = False,
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """One photo, read once: the model input sample (as :func:`preprocess`) and, with ``with_rgb``,
    the ``(H, W, 3)`` uint8 picture resized to the model's size (as :func:`load_rgb`)."""
    im = _open(path)
    x = preprocess(im, spec)
    return x, (_display(im, spec.size, spec.resample) if with_rgb else None)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of an image file after its EXIF orientation, as PIL reports it."""
    return _open(path).size


def load_image(
    path: str | os.PathLike[str],
    size: tuple[int, int] | int = (224, 224),
    preset: str = "imagenet",
    layout: str = "NCHW",
    resample: str = "bicubic",
    *,
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """One photo as a float32 model input sample, ``(C, H, W)`` for NCHW or ``(H, W, C)`` for NHWC.

    The photo is converted to RGB (or grey for ``channels=1``), resized straight to
    ``size = (height, width)`` with the ``resample`` filter, put in the preset's channel order and
    normalised: ``(pixel * scale - mean) / std`` (see the module docstring). Raises
    :class:`~onnxlrp.errors.InputError` for a missing or unreadable file.
    """
    if isinstance(size, int):
        size = (size, size)
    spec = Preprocess(preset, (int(size[0]), int(size[1])), layout, resample, channels,
                      None if mean is None else tuple(float(m) for m in mean),
                      None if std is None else tuple(float(s) for s in std))
    return preprocess(_open(path), spec)


def preprocess(image: Image.Image | np.ndarray, spec: Preprocess) -> np.ndarray:
    """Turn a PIL image (or an ``(H, W, 3)`` uint8 RGB array) into one sample as ``spec`` says.

    Any Pillow mode is taken: 8-bit modes (``1``, ``L``, ``P``, ``LA``, ``RGBA``, ``CMYK``, …) are
    converted by Pillow, alpha dropped; 16-bit and float modes are scaled to 0..255 as floats
    (see :func:`_pixels`).
    """
    im = Image.fromarray(np.asarray(image, dtype=np.uint8)) if isinstance(image, np.ndarray) else image
    px = _pixels(im, spec.channels, spec.size, spec.resample)
    if spec.channels == 3 and PRESETS[spec.preset].order == "BGR":
        px = px[..., ::-1]
    scale, mean, std = spec.stats()
    x = (px * np.float32(scale) - mean) / std
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def load_images(paths: Iterable[str | os.PathLike[str]], spec: Preprocess) -> np.ndarray:
    """Several photos as one float32 batch ``(N,) + spec.sample_shape()``."""
    samples = [preprocess(_open(p), spec) for p in paths]
    if not samples:
        return np.zeros((0,) + spec.sample_shape(), dtype=np.float32)
    return np.stack(samples)


def input_range(spec: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """The true range of the preprocessed input per channel: ``(low, high)``, float32.

    ``low = (0 * scale - mean) / std`` and ``high = (255 * scale - mean) / std``, each shaped
    ``(1, C, 1, 1)`` for NCHW or ``(1, 1, 1, C)`` for NHWC so that they broadcast against a batch.
    """
    scale, mean, std = spec.stats()
    lo = (0.0 - mean) / std
    hi = (255.0 * scale - mean) / std
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)  # a negative std flips the box
    shape = spec.channel_shape()
    return lo.reshape(shape).astype(np.float32), hi.reshape(shape).astype(np.float32)


def detect_layout(dims: Sequence[int | None], metadata: dict[str, str] | None = None,
                  first_transpose_perm: Sequence[int] | None = None) -> str:
    """``"NCHW"`` or ``"NHWC"`` for a 4-D image input.

    In order: the model's ``onnxlrp.layout`` metadata; a ``Transpose`` with perm ``[0, 3, 1, 2]``
    applied to the input first (a Keras/tf2onnx export) means NHWC; else a static last axis of 1
    or 3 with a second axis that is neither means NHWC; else NCHW.
    """
    meta = (metadata or {}).get("onnxlrp.layout")
    if meta:
        if meta.upper() not in ("NCHW", "NHWC"):
            raise InputError(f"the model's metadata onnxlrp.layout={meta!r} is neither NCHW nor NHWC")
        return meta.upper()
    if first_transpose_perm is not None and list(first_transpose_perm) == [0, 3, 1, 2]:
        return "NHWC"
    if len(dims) == 4 and dims[3] in (1, 3) and dims[1] not in (1, 3):
        return "NHWC"
    return "NCHW"


def expand_inputs(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image files from files and directories (a directory's image files, sorted, not recursive).

    A directory contributes its regular files (symlinks to files followed) whose names end in
    one of :data:`IMAGE_EXTENSIONS`; sub-directories, links to directories, pipes, sockets and
    broken links in it are skipped, so a link cycle cannot make the walk loop. A file given by
    name is taken whatever it is; :func:`load_image` refuses what is not a regular file. Raises
    :class:`~onnxlrp.errors.InputError` for a path that does not exist or a directory
    without images.
    """
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise InputError(f"directory {p} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
            out.extend(found)
        elif p.exists():
            out.append(p)
        elif p.is_symlink():
            raise InputError(f"{p} is a broken symbolic link or a symlink loop")
        else:
            raise InputError(f"no such file or directory: {p}")
    return out


def scale_box(box: Sequence[float], image_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, ...]:
    """Map a box ``(x0, y0, x1, y1)`` in a photo of ``image_size = (width, height)`` onto the
    resized model input of ``size = (height, width)`` (a straight resize, as :func:`load_image` does)."""
    sx = size[1] / image_size[0]
    sy = size[0] / image_size[1]
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def region_mask(boxes: Iterable[Sequence[float]], image_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Boolean ``(height, width)`` mask of the input pixels whose centres fall in any of ``boxes``.

    Boxes are ``(x0, y0, x1, y1)`` in the original photo's pixels (``image_size = (width, height)``);
    the input is the photo resized straight to ``size = (height, width)``.
    """
    h, w = size
    cx = (np.arange(w) + 0.5) * image_size[0] / w
    cy = (np.arange(h) + 0.5) * image_size[1] / h
    mask = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask |= ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]
    return mask


def parse_floats(text: str | Sequence[Any]) -> tuple[float, ...]:
    """``"0.5,0.4 0.3"`` or a sequence of numbers as a tuple of floats (for --mean/--std/--low/--high)."""
    parts = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    try:
        return tuple(float(v) for v in parts)
    except ValueError:
        raise InputError(f"expected numbers separated by commas, got {text!r}") from None
