"""The ``onnxlrp`` command line, run for real (subprocess) on the shipped model and photos.

The expensive run (four methods, two classes, overlays and .npy, on zebra_elephant3.jpg) happens
once per module (``zebra_run``); the tests of its files, its printout and the paper's claim all
read its output. The whole module takes well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxlrp.image import region_mask
from onnxlrp.methods import list_methods

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "efficientnet_lite0.onnx"
IMAGES = ROOT / "data" / "images"
PHOTO3 = IMAGES / "zebra_elephant3.jpg"
REGIONS3 = ROOT / "data" / "regions" / "zebra_elephant3.json"


def run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``onnxlrp ARGS...`` in a fresh interpreter; stdout/stderr captured as text."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "onnxlrp.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def written(stdout: str) -> list[Path]:
    """The files the command says it wrote."""
    return [Path(line.split("wrote ", 1)[1]) for line in stdout.splitlines() if line.strip().startswith("wrote ")]


def assert_one_line_error(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("onnxlrp: error: "), res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ------------------------------------------------------------------ one shared run on the real model

ZEBRA_METHODS = ["sglrp", "lrp", "clrp", "lrp_preset_a"]


@pytest.fixture(scope="module")
def zebra_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("zebra") / "out"
    res = run("explain", MODEL, PHOTO3, "--method", ",".join(ZEBRA_METHODS[:2]), "-m", ZEBRA_METHODS[2],
              "-m", ZEBRA_METHODS[3], "--target", "zebra", "--target", "african ELEPHANT", "--overlay", "--save-npy",
              "--output", out)
    assert res.returncode == 0, res.stderr
    return res, out


def test_explain_prints_top5_with_zebra_first(zebra_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    res, _ = zebra_run
    lines = res.stdout.splitlines()
    i = lines.index(str(PHOTO3))
    top = [line.split() for line in lines[i + 1 : i + 6]]
    assert [t[0] for t in top] == ["1.", "2.", "3.", "4.", "5."]
    assert top[0][1:] == ["340", "zebra", "0.3326"]
    assert top[1][1:] == ["386", "African", "elephant", "0.1255"]
    assert top[2][1:] == ["354", "Arabian", "camel", "0.0546"]
    assert res.stderr == ""  # no progress bar: stderr is not a terminal and --progress was not given


def test_explain_writes_every_file_it_prints(zebra_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    res, out = zebra_run
    files = written(res.stdout)
    expected = {f"zebra_elephant3_{m}_{c}{kind}" for m in ZEBRA_METHODS for c in ("zebra", "African_elephant")
                for kind in (".png", "_overlay.png", ".npy")}
    expected |= {"zebra_elephant3_grid_zebra.png", "zebra_elephant3_grid_African_elephant.png"}
    assert {f.name for f in files} == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for f in files:
        assert f.is_file()
        if f.suffix == ".png" and "grid" not in f.name:
            with Image.open(f) as im:
                assert im.size == (224, 224) and im.mode == "RGB"
        elif f.suffix == ".npy":
            a = np.load(f)
            assert a.shape == (3, 224, 224) and a.dtype == np.float32
    with Image.open(out / "zebra_elephant3_grid_zebra.png") as im:  # input + 4 methods in one row
        assert im.width >= 5 * 224 and 224 < im.height < 2 * 224


def test_heatmap_png_is_the_coloured_relevance(zebra_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = zebra_run
    h = np.load(out / "zebra_elephant3_lrp_preset_a_zebra.npy").sum(0)
    rgb = np.asarray(Image.open(out / "zebra_elephant3_lrp_preset_a_zebra.png"))
    peak = np.unravel_index(np.abs(h).argmax(), h.shape)
    assert rgb[peak].tolist() in ([128, 0, 0], [0, 0, 76])  # the strongest pixel reaches an end of the map
    zero = np.abs(h) < 1e-4 * np.abs(h).max()
    if zero.any():
        assert (rgb[zero] >= 254).all()  # ~0 relevance is white


# ------------------------------------------------------------------ the paper's claim, measured

def _regions() -> tuple[np.ndarray, np.ndarray]:
    doc = json.loads(REGIONS3.read_text())
    size = (doc["width"], doc["height"])
    masks = {r["label"]: region_mask(r["boxes"], size, (224, 224)) for r in doc["regions"]}
    return masks["zebra"], masks["elephant"]


def _sums(out: Path, method: str, cls: str) -> tuple[float, float]:
    """Relevance summed over the zebra and the elephant regions."""
    h = np.load(out / f"zebra_elephant3_{method}_{cls}.npy").sum(0).astype(np.float64)
    z, e = _regions()
    return float(h[z].sum()), float(h[e].sum())


# The paper's claim (SGLRP, ICCV-W 2019, Fig. 1), measured on EfficientNet-Lite0 and the regions of
# data/regions/zebra_elephant3.json. Shares of sum|h| measured when this test was written
# (`onnxlrp explain ... -m lrp,clrp,sglrp --target zebra --target "african elephant" --save-npy`):
#
#   method  target            zebra    elephant
#   lrp     zebra             +0.462   +0.275     LRP lights up both animals, for either target
#   lrp     African elephant  +0.402   +0.336
#   clrp    zebra             +0.358   -0.357
#   clrp    African elephant  -0.302   +0.316
#   sglrp   zebra             +0.352   -0.354     SGLRP: positive on the target, negative on the other
#   sglrp   African elephant  -0.326   +0.334
#
# The thresholds below (0.1 of sum|h|) leave room for numerical noise, not for a different picture.


def _shares(out: Path, method: str, cls: str) -> tuple[float, float]:
    z, e = _sums(out, method, cls)
    h = np.load(out / f"zebra_elephant3_{method}_{cls}.npy").sum(0).astype(np.float64)
    tot = float(np.abs(h).sum())
    assert tot > 0
    return z / tot, e / tot


def test_paper_claim_lrp_is_positive_on_both_animals(zebra_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    for cls in ("zebra", "African_elephant"):
        z, e = _shares(zebra_run[1], "lrp", cls)
        assert z > 0.1 and e > 0.1, (cls, z, e)


@pytest.mark.parametrize("method", ["sglrp", "clrp"])
def test_paper_claim_contrastive_methods_separate_the_classes(
    zebra_run: tuple[subprocess.CompletedProcess[str], Path], method: str
) -> None:
    z, e = _shares(zebra_run[1], method, "zebra")
    assert z > 0.1 and e < -0.1, ("zebra", z, e)
    z, e = _shares(zebra_run[1], method, "African_elephant")
    assert z < -0.1 and e > 0.1, ("African elephant", z, e)


def test_sglrp_sums_to_zero(zebra_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    h = np.load(zebra_run[1] / "zebra_elephant3_sglrp_zebra.npy").astype(np.float64)
    assert abs(h.sum()) < 1e-3 * np.abs(h).sum()


# ------------------------------------------------------------------ more runs on the real model


def test_directory_top_k_batches_and_progress(tmp_path: Path) -> None:
    res = run("explain", MODEL, IMAGES, "--top-k", "2", "-m", "lrp_epsilon", "--batch-size", "2", "--progress",
              "-o", tmp_path / "dir")
    assert res.returncode == 0, res.stderr
    files = written(res.stdout)
    assert len(files) == 10 and all(f.is_file() for f in files)
    for i in range(1, 6):
        assert str(IMAGES / f"zebra_elephant{i}.jpg") in res.stdout.splitlines()
        assert (tmp_path / "dir" / f"zebra_elephant{i}_lrp_epsilon_zebra.png").is_file()  # top-1 on every photo
    assert (tmp_path / "dir" / "zebra_elephant3_lrp_epsilon_African_elephant.png").is_file()
    assert (tmp_path / "dir" / "zebra_elephant5_lrp_epsilon_ostrich.png").is_file()
    assert res.stdout.count("model ") == 1  # the model is loaded once
    assert "5/5 images" in res.stderr  # the progress bar (plain lines: stderr is not a terminal)


def test_single_output_file_and_class_index(tmp_path: Path) -> None:
    out = tmp_path / "one" / "heat.png"
    res = run("explain", MODEL, IMAGES / "zebra_elephant1.jpg", "-m", "gradient", "--target", "386", "--output", out,
              "--overlay", "--save-npy")
    assert res.returncode == 0, res.stderr
    assert {f.name for f in written(res.stdout)} == {"heat.png", "heat_overlay.png", "heat.npy"}
    with Image.open(out) as im:
        assert im.size == (224, 224)


def test_info_lists_layers_and_rules() -> None:
    res = run("info", MODEL, "--method", "lrp")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "input: float32 [N, 3, 224, 224]" in out and "logits: float32 [N, 1000]" in out
    assert "onnxlrp.resample = bicubic" in out
    assert "layers (94) with the rules of method 'lrp'" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  /")]
    assert len(rows) == 94
    rules = {r[0]: r[-1] for r in rows}
    assert rules["/_conv_stem/Conv"] == "z-box"
    assert rules["/_fc/Gemm"] == "w-square"
    assert rules["/_blocks.1/_expand_conv/Conv"] == "alpha1-beta0-nobias"


# ------------------------------------------------------------------ a tiny model: every method, the grid


def _tiny_model(path: Path, op: str = "Relu", nhwc: bool = False) -> Path:
    """A 3x16x16 -> 5 class CNN (Conv, act, MaxPool, Conv, Relu, GlobalAveragePool, Flatten, Gemm, Softmax).

    ``nhwc``: the input is [N, 16, 16, 3] and a Transpose makes it NCHW first (as tf2onnx exports do);
    no layout metadata, so the CLI has to find it in the graph.
    """
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
             for n, s in [("w1", (4, 3, 3, 3)), ("b1", (4,)), ("w2", (6, 4, 3, 3)), ("b2", (6,)), ("wf", (5, 6)),
                          ("bf", (5,))]]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xt" if nhwc else "x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(op, ["c1"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
        helper.make_node("Softmax", ["y"], ["prob"], axis=1),
    ]
    if not nhwc:
        nodes = nodes[1:]
    shape = ["N", 16, 16, 3] if nhwc else ["N", 3, 16, 16]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in {"onnxlrp.preprocess": "none", "onnxlrp.labels": "tiny_labels.txt"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, path)
    (path.parent / "tiny_labels.txt").write_text("cat\ndog\nAfrican elephant\nzebra\ncrane bird\n")
    return path


def test_method_all_writes_the_grid(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    res = run("explain", model, IMAGES / "zebra_elephant1.jpg", "--method", "all", "--target", "ZEBRA",
              "--option", "n_samples=2", "--option", "steps=2", "-o", tmp_path / "all")
    assert res.returncode == 0, res.stderr
    names = {f.name for f in written(res.stdout)}
    assert names == {f"zebra_elephant1_{m}_zebra.png" for m in list_methods()} | {"zebra_elephant1_grid_zebra.png"}
    n = len(list_methods()) + 1
    with Image.open(tmp_path / "all" / "zebra_elephant1_grid_zebra.png") as im:
        cols = 7
        rows = -(-n // cols)
        assert cols * 160 < im.width < cols * 200  # 16-pixel panels enlarged to 160
        assert rows * 160 < im.height < rows * 220
    with Image.open(tmp_path / "all" / "zebra_elephant1_lrp_zebra.png") as im:
        assert im.size == (16, 16)


def test_nhwc_model_from_its_leading_transpose(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "nhwc.onnx", nhwc=True)
    res = run("explain", model, IMAGES / "zebra_elephant2.jpg", "-m", "lrp", "--save-npy", "--target", "2",
              "--preset", "caffe", "-o", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    assert "input x NHWC 3x16x16, preset caffe" in res.stdout
    assert np.load(tmp_path / "o" / "zebra_elephant2_lrp_African_elephant.npy").shape == (16, 16, 3)


def test_info_reports_an_unsupported_op(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "sin.onnx", op="Sin")
    res = run("info", model)
    assert "x: float32 [N, 3, 16, 16]" in res.stdout
    assert_one_line_error(res, 1, "Sin")
    res = run("explain", model, IMAGES / "zebra_elephant1.jpg", "-o", tmp_path / "o")
    assert_one_line_error(res, 1, "Sin", "not supported")


# ------------------------------------------------------------------ errors: one line, the right exit status


@pytest.fixture(scope="module")
def junk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("junk")
    (d / "bad.jpg").write_text("this is not an image")
    (d / "bad.onnx").write_text("this is not a model")
    (d / "empty").mkdir()
    return d


ERRORS = [
    # (arguments, exit status, words the message must contain)
    (["explain", "{model}", "{junk}/missing.jpg"], 1, ["no such file", "missing.jpg"]),
    (["explain", "{junk}/missing.onnx", "{photo}"], 1, ["model file not found"]),
    (["explain", "{junk}/bad.onnx", "{photo}"], 1, ["bad.onnx", "not a readable ONNX model"]),
    (["explain", "{model}", "{junk}/bad.jpg"], 1, ["cannot read image", "bad.jpg"]),
    (["explain", "{model}", "{junk}/empty"], 1, ["no image files"]),
    (["explain", "{model}", "{photo}", "--target", "zebar"], 1, ["unknown class name 'zebar'", "'zebra'"]),
    (["explain", "{model}", "{photo}", "--target", "elephant"], 1, ["'African elephant'", "'Indian elephant'"]),
    (["explain", "{model}", "{photo}", "--target", "1000"], 1, ["class index 1000 is out of range", "1000 classes"]),
    (["explain", "{model}", "{photo}", "--labels", "{junk}/nolabels.txt"], 1, ["label file not found"]),
    (["explain", "{model}", "{photo}", "--size", "100"], 1, ["does not fit the model's input"]),
    (["explain", "{model}", "{photo}", "--method", "sglrpp"], 2, ["unknown method 'sglrpp'", "sglrp"]),
    (["explain", "{model}", "{photo}", "--top-k", "2", "--target", "zebra"], 2, ["--target or --top-k"]),
    (["explain", "{model}", "{photo}", "--size", "big"], 2, ["--size"]),
    (["explain", "{model}", "{photo}", "--preset", "vgg"], 2, ["--preset", "invalid choice"]),
    (["explain", "{model}", "{photo}", "{photo}", "--output", "{junk}/x.png"], 2, ["give a directory"]),
    (["explain", "{model}", "{photo}", "--option", "n_samples=3"], 2, ["n_samples"]),
    (["explain", "{model}"], 2, ["required"]),
    (["info", "{junk}/bad.onnx"], 1, ["not a readable ONNX model"]),
    (["info", "{model}", "--method", "nope"], 2, ["unknown method"]),
    (["frobnicate"], 2, ["invalid choice"]),
]


def _error_id(case: tuple[list[str], int, list[str]]) -> str:
    return " ".join(a.replace("{model}", "M").replace("{photo}", "IMG").replace("{junk}/", "") for a in case[0])


@pytest.mark.parametrize(("args", "code", "needles"), ERRORS, ids=[_error_id(e) for e in ERRORS])
def test_errors_are_one_line(junk: Path, tmp_path: Path, args: list[str], code: int, needles: list[str]) -> None:
    subs = {"model": str(MODEL), "photo": str(PHOTO3), "junk": str(junk)}
    argv = [a.format(**subs) for a in args]
    if argv[0] == "explain" and len(argv) > 2 and "--output" not in argv:
        argv += ["--output", str(tmp_path / "o")]
    res = run(*argv, cwd=tmp_path)
    assert_one_line_error(res, code, *needles)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_help_on_every_command() -> None:
    for cmd in ([], ["explain"], ["info"], ["methods"]):
        res = run(*cmd, "--help")
        assert res.returncode == 0 and "usage: onnxlrp" in res.stdout, res.stderr
    assert "--top-k" in run("explain", "--help").stdout


def test_methods_lists_every_method() -> None:
    res = run("methods")
    assert res.returncode == 0
    names = [line.split()[0] for line in res.stdout.splitlines()]
    assert names == list_methods()


def test_exploding_relevance_is_a_one_line_warning(tmp_path: Path) -> None:
    """The with-bias preset B blows up on this BatchNorm-folded model: the CLI says so in one line."""
    res = run("explain", MODEL, PHOTO3, "-m", "lrp_preset_b", "--target", "zebra", "--output", tmp_path)
    assert res.returncode == 0, res.stderr
    warn = [line for line in res.stderr.splitlines() if line.startswith("onnxlrp: warning: lrp_preset_b")]
    assert len(warn) == 1 and "bias=False" in warn[0], res.stderr
    res = run("explain", MODEL, PHOTO3, "-m", "lrp_preset_b", "--target", "zebra", "--option", "bias=false",
              "--output", tmp_path)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr


def test_readme_pictures_are_what_the_readme_command_writes(
    zebra_run: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    """docs/images/ holds the output of the README's quick-start command; a change of the engine that
    changes these maps must come with regenerated pictures (decoded pixels compared, not PNG bytes)."""
    from PIL import Image

    for method in ("sglrp", "lrp"):
        name = f"zebra_elephant3_{method}_zebra.png"
        committed = np.asarray(Image.open(ROOT / "docs" / "images" / name).convert("RGB"), dtype=np.int16)
        fresh = np.asarray(Image.open(zebra_run[1] / name).convert("RGB"), dtype=np.int16)
        assert committed.shape == fresh.shape
        assert np.abs(committed - fresh).max() <= 2, f"docs/images/{name} is stale: rerun the README command"


# ------------------------------------------------------------------ high-bit-depth photos (in-process)


def _png48(path: Path, rgb16: np.ndarray) -> None:
    """A 48-bit RGB PNG written by hand (Pillow writes no 16-bit colour PNG)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_photos_predict_as_their_8_bit_originals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The zebra photo as 16-bit grey and 48-bit RGB PNGs: the same top-5 and probabilities as the 8-bit files
    (Pillow's own I;16 -> RGB conversion would make the grey one white: another prediction)."""
    from onnxlrp.cli import main

    with Image.open(PHOTO3) as im:
        rgb = np.asarray(im.convert("RGB"))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    files = {"rgb8.png": None, "rgb48.png": None, "grey8.png": None, "grey16.png": None}
    Image.fromarray(rgb).save(tmp_path / "rgb8.png")
    _png48(tmp_path / "rgb48.png", rgb.astype(np.uint16) * 257)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    code = main(["explain", str(MODEL), *(str(tmp_path / f) for f in files), "-m", "gradient", "-o",
                 str(tmp_path / "out")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    for f in files:
        i = out.index(str(tmp_path / f))
        files[f] = [line.split()[-1] for line in out[i + 1 : i + 6]], [line.split()[1] for line in out[i + 1 : i + 6]]
    assert files["rgb48.png"] == files["rgb8.png"] and files["rgb8.png"][1][0] == "340"
    assert files["grey16.png"] == files["grey8.png"]
    with Image.open(tmp_path / "grey16.png") as im:
        clipped = np.asarray(im.convert("RGB"))
    assert (clipped == 255).mean() > 0.95  # what the test guards against: Pillow's conversion makes it white


def test_one_module_per_command_importing_only_the_shared_one() -> None:
    """The design rule: onnxlrp/cli/<command>.py import onnxlrp.cli.common, never each other."""
    import ast

    commands = sorted(f.stem for f in (ROOT / "onnxlrp" / "cli").glob("*.py")
                      if f.stem not in ("__init__", "__main__", "common"))
    assert {"explain", "info", "methods", "evaluate"} <= set(commands)
    for name in commands:
        tree = ast.parse((ROOT / "onnxlrp" / "cli" / f"{name}.py").read_text(encoding="utf-8"))
        siblings = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        absolute = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert siblings <= {"common"}, (name, siblings)
        assert not any(m and m.startswith("onnxlrp.cli") for m in absolute), (name, absolute)
    import onnxlrp.cli as cli

    for public in ("main", "build_parser", "UsageError", "load_labels", "resolve_class", "softmax"):
        assert hasattr(cli, public)
    assert not (ROOT / "onnxlrp" / "cli.py").exists() and not (ROOT / "onnxlrp" / "cli_evaluate.py").exists()
