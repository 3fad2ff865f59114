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
