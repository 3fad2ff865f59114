"""Loading/preprocessing (onnxlrp.image) and pictures (onnxlrp.render): fast, no model needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnxlrp.errors import InputError
from onnxlrp.image import (
    PRESETS,
    Preprocess,
    detect_layout,
    expand_inputs,
    image_size,
    input_range,
    load_image,
    load_images,
    load_rgb,
    parse_floats,
    region_mask,
    scale_box,
)
from onnxlrp.render import (
    colormap,
    grid,
    heatmap_to_rgb,
    normalize,
    overlay,
    relevance_map,
    save_heatmap,
)

ROOT = Path(__file__).resolve().parent.parent
PHOTO3 = ROOT / "data" / "images" / "zebra_elephant3.jpg"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture
def solid(tmp_path: Path) -> Path:
    """A 40x30 (w x h) PNG of one colour, R=10, G=20, B=30."""
    p = tmp_path / "solid.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(p)
    return p


# ------------------------------------------------------------------ image


def test_imagenet_preset_matches_the_reference_recipe() -> None:
    x = load_image(PHOTO3, 224, "imagenet", "NCHW", "bicubic")
    with Image.open(PHOTO3) as im:
        rgb = im.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    ref = ((np.asarray(rgb, np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-6)


def test_presets_values_and_channel_order(solid: Path) -> None:
    px = np.array([10.0, 20.0, 30.0])
    x = load_image(solid, (8, 6), "caffe")
    assert x.shape == (3, 8, 6)
    np.testing.assert_allclose(x[:, 0, 0], px[::-1] - np.array(PRESETS["caffe"].mean), atol=1e-4)  # BGR
    np.testing.assert_allclose(load_image(solid, 4, "tf")[:, 0, 0], px / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(load_image(solid, 4, "none")[:, 0, 0], px / 255, atol=1e-6)
    np.testing.assert_allclose(load_image(solid, 4, "imagenet")[:, 0, 0], (px / 255 - IMAGENET_MEAN) / IMAGENET_STD,
                               atol=1e-5)
    custom = load_image(solid, 4, "none", mean=[0.5], std=[2.0])
    np.testing.assert_allclose(custom[:, 0, 0], (px / 255 - 0.5) / 2, atol=1e-6)


def test_layout_size_and_grey(solid: Path) -> None:
    assert load_image(solid, (5, 7), layout="NHWC").shape == (5, 7, 3)
    grey = load_image(solid, (5, 7), "none", channels=1)
    assert grey.shape == (1, 5, 7)
    expected = round(0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255  # PIL's "L" conversion
    assert abs(float(grey[0, 0, 0]) - expected) < 1.5 / 255
    batch = load_images([solid, solid], Preprocess(size=(4, 4), layout="NHWC"))
    assert batch.shape == (2, 4, 4, 3)
    assert load_rgb(solid, (3, 9)).shape == (3, 9, 3)
    assert image_size(solid) == (40, 30)


def test_input_range_is_the_presets_true_range() -> None:
    lo, hi = input_range(Preprocess("imagenet"))
    assert lo.shape == hi.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(lo.ravel(), -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-6)
    np.testing.assert_allclose(hi.ravel(), (1 - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6)
    lo, hi = input_range(Preprocess("caffe", layout="NHWC"))
    assert lo.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(lo.ravel(), [-103.939, -116.779, -123.68], rtol=1e-6)
    np.testing.assert_allclose(hi.ravel(), [255 - 103.939, 255 - 116.779, 255 - 123.68], rtol=1e-6)
    lo, hi = input_range(Preprocess("tf"))
    np.testing.assert_allclose([lo.min(), hi.max()], [-1, 1])
    lo, hi = input_range(Preprocess("none", channels=1))
    assert lo.shape == (1, 1, 1, 1) and float(hi.item()) == 1.0


def test_detect_layout() -> None:
    assert detect_layout([None, 3, 224, 224]) == "NCHW"
    assert detect_layout([None, 224, 224, 3]) == "NHWC"
    assert detect_layout([None, 3, 224, 224], first_transpose_perm=[0, 3, 1, 2]) == "NHWC"
    assert detect_layout([None, 224, 224, 3], {"onnxlrp.layout": "nchw"}) == "NCHW"
    with pytest.raises(InputError):
        detect_layout([None, 3, 8, 8], {"onnxlrp.layout": "CHWN"})


def test_bad_inputs_raise_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(bad)
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="preset"):
        Preprocess("vgg")
    with pytest.raises(InputError, match="NCHW or NHWC"):
        Preprocess(layout="CHW")
    with pytest.raises(InputError):
        parse_floats("1,x")
    assert parse_floats("1, 2 3") == (1.0, 2.0, 3.0)


def test_expand_inputs(tmp_path: Path, solid: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    for name in ("b.png", "a.JPG", "notes.txt"):
        (d / name).write_bytes(solid.read_bytes())
    assert [p.name for p in expand_inputs([d])] == ["a.JPG", "b.png"]
    assert expand_inputs([solid, d])[0] == solid
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([tmp_path / "nope.jpg"])


def test_boxes_map_onto_the_resized_input() -> None:
    assert scale_box((0, 0, 1110, 619), (1110, 619), (224, 224)) == (0, 0, 224, 224)
    x0, y0, x1, y1 = scale_box((555, 0, 1110, 619), (1110, 619), (224, 224))
    assert (x0, x1) == (112, 224)
    m = region_mask([(555, 0, 1110, 619)], (1110, 619), (224, 224))
    assert m.shape == (224, 224) and m[:, 112:].all() and not m[:, :112].any()
    m = region_mask([(0, 0, 10, 10), (20, 20, 30, 30)], (40, 40), (4, 4))
    assert m.sum() == 2 and m[0, 0] and m[2, 2]


def test_region_files() -> None:
    for i in range(1, 6):
        doc = json.loads((ROOT / "data" / "regions" / f"zebra_elephant{i}.json").read_text())
        path = ROOT / doc["image"]
        assert image_size(path) == (doc["width"], doc["height"])
        labels = [r["label"] for r in doc["regions"]]
        assert labels == ["zebra", "elephant"]
        masks = []
        for r in doc["regions"]:
            for x0, y0, x1, y1 in r["boxes"]:
                assert 0 <= x0 < x1 <= doc["width"] and 0 <= y0 < y1 <= doc["height"]
            masks.append(region_mask(r["boxes"], (doc["width"], doc["height"]), (224, 224)))
        assert masks[0].any() and masks[1].any()
        assert (masks[0] & masks[1]).mean() < 0.01  # the two animals' regions barely overlap


# ------------------------------------------------------------------ render


def test_seismic_colours() -> None:
    lut = colormap("seismic", 5)
    assert lut.tolist() == [[0, 0, 76], [0, 0, 255], [255, 255, 255], [255, 0, 0], [128, 0, 0]]
    rgb = heatmap_to_rgb(np.array([[2.0, 0.0, -2.0, 1.0, -1.0]]))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 5, 3)
    assert rgb[0, 0].tolist() == [128, 0, 0]  # max |h| -> dark red
    assert rgb[0, 1].tolist() == [255, 255, 255]  # zero stays white
    assert rgb[0, 2].tolist() == [0, 0, 76]  # -max |h| -> dark blue
    assert rgb[0, 3].tolist() == [255, 0, 0] and rgb[0, 4].tolist() == [0, 0, 255]
    # symmetric: a map's negative is the mirrored colours
    h = np.random.default_rng(0).normal(size=(6, 6))
    a, b = heatmap_to_rgb(h), heatmap_to_rgb(-h)
    np.testing.assert_array_equal(a[..., 0] == 255, b[..., 2] == 255)


def test_relevance_map_and_normalize() -> None:
    h = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(relevance_map(h, "NCHW"), h.sum(0))
    np.testing.assert_allclose(relevance_map(h, "NHWC"), h.sum(-1))
    assert normalize(np.zeros((3, 3))).tolist() == np.zeros((3, 3)).tolist()
    v = normalize(np.array([np.nan, np.inf, -4.0, 2.0]))
    assert v.tolist() == [0.0, 0.0, -1.0, 0.5]
    v = normalize(np.array([0.0, 1.0, 2.0, 100.0]), percentile=50)
    np.testing.assert_allclose(v, [0.0, 2 / 3, 1.0, 1.0])  # the 50th percentile of |h| is 1.5: saturates above
    assert heatmap_to_rgb(np.zeros((2, 2))).min() == 255  # an all-zero map is white


def test_overlay_and_files(tmp_path: Path) -> None:
    photo = np.full((4, 5, 3), 200, dtype=np.uint8)
    h = np.zeros((4, 5))
    h[0, 0], h[1, 1] = 1.0, -1.0
    out = overlay(photo, h)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert out[2, 2, 0] == out[2, 2, 1] == out[2, 2, 2]  # no relevance: the grey photo
    assert out[0, 0, 0] > out[0, 0, 2] and out[1, 1, 2] > out[1, 1, 0]
    p = save_heatmap(tmp_path / "sub" / "h.png", np.ones((3, 6, 7)))
    with Image.open(p) as im:
        assert im.size == (7, 6) and im.mode == "RGB"


def test_grid_layout() -> None:
    panels = [np.zeros((20, 30, 3), np.uint8), np.full((10, 10, 3), 255, np.uint8), np.zeros((20, 30, 3), np.uint8)]
    g = grid(panels, ["input", "lrp", "a very long title that does not fit"], pad=2)
    assert g.dtype == np.uint8 and g.shape[1] == 3 * (30 + 2) + 2
    assert g.shape[0] > 20 + 2 * 2  # room for the titles
    g2 = grid(panels, columns=2, pad=2)
    assert g2.shape == (2 * (20 + 2) + 2, 2 * (30 + 2) + 2, 3)
    with pytest.raises(ValueError):
        grid([])


def test_grid_enlarges_small_panels() -> None:
    g = grid([np.zeros((16, 16, 3), np.uint8)], pad=0, min_size=100)
    assert g.shape == (112, 112, 3)  # 16 x 7: the smallest whole factor reaching 100


# ------------------------------------------------------------------ every PIL mode, high bit depth, hostile files


def _png(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: list[bytes],
         extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A PNG file written by hand (Pillow cannot write 16-bit RGB): filter byte 0 on every row."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    head = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = zlib.compress(b"".join(b"\x00" + r for r in raw_rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + b"".join(chunk(k, d) for k, d in extra)
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _grey_photo(size: tuple[int, int] = (96, 64)) -> np.ndarray:
    with Image.open(PHOTO3) as im:
        return np.asarray(im.convert("L").resize(size, Image.Resampling.BILINEAR))


def test_16_bit_grey_png_reads_as_its_8_bit_picture(tmp_path: Path) -> None:
    """Pillow's own I;16 -> RGB conversion clips at 255 (a white picture); onnxlrp scales by 1/257."""
    grey = _grey_photo()
    p8, p16 = tmp_path / "g8.png", tmp_path / "g16.png"
    Image.fromarray(grey).save(p8)
    Image.fromarray(grey.astype(np.uint16) * 257).save(p16)
    with Image.open(p16) as im:
        assert im.mode == "I;16"
        assert np.asarray(im.convert("RGB")).min() == 255  # what onnxlrp must not do
    for channels in (1, 3):
        for preset in ("imagenet", "caffe"):
            a = load_image(p8, (40, 50), preset, channels=channels)
            b = load_image(p16, (40, 50), preset, channels=channels)
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(load_rgb(p8, (40, 50)), load_rgb(p16, (40, 50)))


def test_true_16_bit_and_big_endian_and_float_tiff(tmp_path: Path) -> None:
    grey = _grey_photo().astype(np.float64)
    fine = grey * 257 + np.random.default_rng(0).integers(0, 257, grey.shape)  # real 16-bit detail
    p16 = tmp_path / "fine.png"
    Image.fromarray(fine.astype(np.uint16)).save(p16)
    x = load_image(p16, (64, 96), "none", channels=1)[0] * 255  # no resize: the scaled values themselves
    np.testing.assert_allclose(x, fine / 257, atol=1e-3)
    big = tmp_path / "big.tif"
    Image.new("I;16B", (6, 4), 30000).save(big)
    with Image.open(big) as im:
        assert im.mode == "I;16B"
    np.testing.assert_allclose(load_image(big, (4, 6), "none")[:, 0, 0] * 255, 30000 / 257, atol=1e-3)
    for scale, name in ((1 / 255, "unit.tif"), (1.0, "levels.tif")):  # 0..1 floats and 0..255 floats
        p = tmp_path / name
        Image.fromarray((grey * scale).astype(np.float32)).save(p)
        with Image.open(p) as im:
            assert im.mode == "F"
        np.testing.assert_allclose(load_image(p, (64, 96), "none")[0] * 255, grey, atol=1e-3)
    nan = tmp_path / "nan.tif"
    Image.fromarray(np.full((4, 4), np.nan, np.float32)).save(nan)
    with pytest.raises(InputError, match="NaN"):
        load_image(nan, 4)
    i32 = tmp_path / "i32.tif"
    Image.fromarray(np.full((4, 4), 2**20, np.int32)).save(i32)
    assert load_rgb(i32).max() == 255  # 32-bit integers above 65535 clip at white


def test_48_and_64_bit_png_read_by_their_high_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb8 = rng.integers(0, 256, (5, 7, 3))
    for colour_type, channels in ((2, 3), (6, 4)):
        px = rgb8 if channels == 3 else np.concatenate([rgb8, np.full((5, 7, 1), 200)], axis=2)
        wide = (px * 256 + rng.integers(0, 256, px.shape)).astype(">u2")  # the low byte is noise
        p = tmp_path / f"wide{colour_type}.png"
        p.write_bytes(_png(7, 5, 16, colour_type, [wide[y].tobytes() for y in range(5)]))
        np.testing.assert_array_equal(load_rgb(p), rgb8)


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                                  "LAB", "HSV", "I", "I;16", "I;16B", "F"])
def test_every_pil_mode_gives_a_finite_sample(mode: str) -> None:
    src = Image.fromarray(np.random.default_rng(2).integers(0, 256, (9, 11, 3)).astype(np.uint8))
    if mode in ("I", "I;16", "I;16B", "F"):
        im = Image.fromarray(np.asarray(src.convert("L"), np.uint16) * 257).convert("I")
        if mode != "I":
            im = im.convert(mode) if mode != "I;16B" else Image.new("I;16B", (11, 9), 40000)
    else:
        im = src.convert(mode)
    from onnxlrp.image import preprocess

    for channels in (1, 3):
        x = preprocess(im, Preprocess("none", (6, 5), "NCHW", "bilinear", channels))
        assert x.shape == (channels, 6, 5) and np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1


def test_hostile_image_files(tmp_path: Path) -> None:
    """Pipes, devices, loops, bombs and empty images: an InputError naming the file, never a hang."""
    import os
    import zlib

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_image(fifo, 4)
    if Path("/dev/zero").exists():
        with pytest.raises(InputError, match="not a regular file"):
            load_image("/dev/zero", 4)
    loop = tmp_path / "loop.png"
    loop.symlink_to(tmp_path / "loop.png")
    with pytest.raises(InputError, match="loop.png"):
        load_image(loop, 4)
    with pytest.raises(InputError, match="symlink loop"):
        expand_inputs([loop])
    row = [b"\x00" * 3]
    bomb = zlib.compress(b"\x00" * (64 << 20))  # 64 MiB of text in a 64 kB chunk
    for kind, data in ((b"zTXt", b"k\x00\x00" + bomb), (b"iCCP", b"icc\x00\x00" + bomb)):
        p = tmp_path / f"{kind.decode()}.png"
        p.write_bytes(_png(1, 1, 8, 2, row, [(kind, data)]))
        try:
            x = load_image(p, 2)  # Pillow may skip the chunk: then the one pixel is read
            assert np.all(np.isfinite(x))
        except InputError as exc:
            assert p.name in str(exc)
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png(100_000, 100_000, 8, 0, [b"\x00" * 10]))  # claims 10^10 pixels
    with pytest.raises(InputError, match="huge.png.*pixels"):  # refused before 10 GB are allocated
        load_image(huge, 4)
    empty = tmp_path / "empty.png"
    empty.write_bytes(_png(0, 0, 8, 2, []))
    with pytest.raises(InputError, match="empty.png"):
        load_image(empty, 4)
    thin = tmp_path / "thin.png"
    Image.new("RGB", (100_000, 1), (255, 0, 0)).save(thin)
    assert load_rgb(thin, (3, 3))[1, 1].tolist() == [255, 0, 0]
