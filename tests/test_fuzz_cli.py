"""The command line against hostile and careless input (issue 11): bad images among good ones, pipes,
devices, symlink loops and cycles, files that change while read, unicode and very long names,
concurrent runs into one folder, unwritable outputs, bad options, huge sizes, label files that
try to leave the model's folder.

Every case asserts the documented outcome (docs/cli.md): the exit status; stderr lines of the
form ``onnxlrp: error: ...`` and never a traceback; no file written outside ``--output``; no
partial or temporary file left behind. A tiny generated model keeps the module fast; ``main``
runs in-process except where separate processes are the point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxlrp.cli import main
from onnxlrp.cli.common import MAX_NAME_BYTES, OPTION_TYPES, unique_stems
from onnxlrp.errors import InputError
from onnxlrp.image import load_image
from onnxlrp.methods import METHODS
from onnxlrp.render import atomic_open

ROOT = Path(__file__).resolve().parent.parent
LABELS = "cat\ndog\nzebra\n"


def _model(path: Path, dynamic: bool = False, labels: str | None = "labels.txt") -> Path:
    """A 3x8x8 (or 3xHxW) -> 3 class CNN: Conv, Relu, GlobalAveragePool, Flatten, Gemm."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, s).astype(np.float32), n)
             for n, s in [("w1", (4, 3, 3, 3)), ("b1", (4,)), ("wf", (3, 4)), ("bf", (3,))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a1"]),
             helper.make_node("GlobalAveragePool", ["a1"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    shape = ["N", 3, "H", "W"] if dynamic else ["N", 3, 8, 8]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"onnxlrp.preprocess": "none"}
    if labels is not None:
        meta["onnxlrp.labels"] = labels
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    if labels == "labels.txt":
        (path.parent / "labels.txt").write_text(LABELS)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def _photo(path: Path, seed: int = 0, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    Image.fromarray(rgb).save(path, format="PNG")
    return path


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, list[str]]:
    """``main(args)`` in-process: exit status, stdout, stderr lines; asserts no traceback."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    for line in lines:
        assert line.startswith(("onnxlrp: error: ", "onnxlrp: warning: ")), err
    return code, out, lines


def _one_error(lines: list[str], *needles: str) -> str:
    errors = [line for line in lines if line.startswith("onnxlrp: error: ")]
    assert len(errors) == 1, lines
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def _no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not left, left


def _written(out: str) -> list[Path]:
    return [Path(line.split("wrote ", 1)[1]) for line in out.splitlines() if line.strip().startswith("wrote ")]


# ------------------------------------------------------------------ bad images among good ones


def _bad_images(folder: Path) -> dict[str, Path]:
    """Unreadable files of every kind, named by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _photo(folder / "source.png")
    png = good.read_bytes()
    jpeg = folder / "source.jpg"
    Image.open(good).save(jpeg)
    bad = {
        "random.png": os.urandom(300),
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "header_only.jpg": jpeg.read_bytes()[:200],
        "text.jpg": b"GIF89a but not really",
    }
    out = {}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    good.unlink()
    jpeg.unlink()
    return out


def test_one_bad_image_among_good_ones_is_reported_and_the_rest_explained(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    goods = [_photo(folder / f"{name}.png", i) for i, name in enumerate(["a", "c", "e", "g", "h"])]
    bads = _bad_images(folder)
    out = tmp_path / "out"
    code, stdout, lines = _cli(capsys, "explain", model, folder, "-m", "lrp", "--save-npy", "-b", "2", "-o", out)
    assert code == 1
    errors = [line for line in lines if line.startswith("onnxlrp: error: ")]
    assert len(errors) == len(bads)
    for name in bads:
        assert sum(name in e and "cannot read image" in e for e in errors) == 1, (name, errors)
    for g in goods:  # every good image, in the bad ones' batches and after them
        assert str(g) in stdout.splitlines()
        assert (out / f"{g.stem}_lrp_zebra.png").is_file() or any(out.glob(f"{g.stem}_lrp_*.png"))
    assert len(list(out.glob("*.npy"))) == len(goods)
    _no_temporaries(out)


def test_non_regular_inputs_are_reported_not_read(model: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    good = _photo(tmp_path / "in" / "good.png")
    fifo = tmp_path / "in" / "pipe.png"
    os.mkfifo(fifo)  # reading it would block for ever
    args = [good, fifo, tmp_path / "in"]  # the folder walk skips the pipe; given by name it is reported
    if Path("/dev/zero").exists():
        args.append("/dev/zero")
    out = tmp_path / "out"
    code, stdout, lines = _cli(capsys, "explain", model, *args, "-m", "gradient", "-o", out)
    assert code == 1
    errors = [line for line in lines if line.startswith("onnxlrp: error: ")]
    assert len(errors) == len(args) - 2 and all("not a regular file" in e for e in errors), errors
    assert stdout.count(str(good)) == 2  # given by name and found in the folder: both explained
    assert len(list(out.glob("good*_gradient_*.png"))) == 2


def test_symlink_loop_and_directory_cycle(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    _photo(folder / "good.png")
    (folder / "cycle").symlink_to(folder, target_is_directory=True)
    (folder / "self.png").symlink_to(folder / "self.png")
    out = tmp_path / "out"
    code, _, lines = _cli(capsys, "explain", model, folder, folder / "cycle", "-m", "gradient", "-o", out)
    assert code == 0, lines  # the loop inside the folder is skipped; the cycle is not walked into
    assert len(list(out.glob("*.png"))) == 2
    code, _, lines = _cli(capsys, "explain", model, folder / "self.png", "-o", tmp_path / "out2")
    assert code == 1
    _one_error(lines, "self.png", "symlink loop")
    assert not (tmp_path / "out2").exists()


def test_generated_corrupt_images_never_escape_as_anything_but_input_error(tmp_path: Path) -> None:
    """Seeded mutations of a PNG and a JPEG: bit flips, cut-offs, spliced chunks."""
    rng = np.random.default_rng(11)
    src = _photo(tmp_path / "src.png", size=(16, 16))
    jpg = tmp_path / "src.jpg"
    Image.open(src).save(jpg, quality=90)
    outcomes = {"ok": 0, "refused": 0}
    for i in range(60):
        data = bytearray((src if i % 2 else jpg).read_bytes())
        kind = i % 3
        if kind == 0:
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(8, len(data)))] = int(rng.integers(0, 256))
        elif kind == 1:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            at = int(rng.integers(8, len(data)))
            data[at:at] = zlib.compress(os.urandom(int(rng.integers(1, 200))))
        p = tmp_path / f"m{i}{'.png' if i % 2 else '.jpg'}"
        p.write_bytes(bytes(data))
        try:
            x = load_image(p, 8)
        except InputError as exc:
            assert p.name in str(exc)
            outcomes["refused"] += 1
        else:
            assert x.shape == (3, 8, 8) and np.all(np.isfinite(x))
            outcomes["ok"] += 1
    assert outcomes["refused"] > 0


def test_file_that_changes_while_read(tmp_path: Path) -> None:
    """A writer rewrites the file (growing, shrinking, whole) while it is read: a whole image or an InputError."""
    p = _photo(tmp_path / "moving.png", size=(64, 64))
    whole = p.read_bytes()
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            with open(p, "r+b") as fh:
                fh.truncate(len(whole) // (k % 3 + 1))
                fh.seek(0, os.SEEK_END)
                fh.write(whole[fh.tell():] + b"x" * (k % 5))

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(150):
            try:
                x = load_image(p, 8)
            except InputError as exc:
                assert "moving.png" in str(exc)
            else:
                assert np.all(np.isfinite(x))
    finally:
        stop.set()
        t.join()


# ------------------------------------------------------------------ output names


def test_output_names_are_unique_whatever_the_inputs_are_called(
        model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = "ž" * 120 + "x" * 10  # 250 UTF-8 bytes: the longest name (with .png) a file system takes
    names = ["a/photo.png", "b/photo.png", "c/photo-2.png", "d/PHOTO.png", "e/Photo.PNG", "f/зебра.png", "g/日本.png",
             "h/日本.png", f"i/{long}.png", f"j/{long}.png", "k/..png", "l/a b;c.png", "m/back\\slash.png",
             "n/cafe\u0301.png", "o/caf\u00e9.png"]
    paths = [_photo(tmp_path / "in" / n, i) for i, n in enumerate(names)]
    out = tmp_path / "out"
    before = _snapshot(tmp_path) - {p for p in _snapshot(tmp_path) if out in p.parents}
    code, stdout, lines = _cli(capsys, "explain", model, *paths, "-m", "lrp,gradient", "--overlay", "--save-npy",
                               "-o", out)
    assert code == 0, lines
    files = _written(stdout)
    per_image = 2 * 3 + 1  # two methods x (png, overlay, npy) + the grid
    assert len(files) == per_image * len(paths)
    keys = {f.name.casefold() for f in files}
    assert len(keys) == len(files)  # distinct even on a case-insensitive file system
    assert {p.name for p in out.iterdir()} == {f.name for f in files}
    assert all(f.parent == out and len(f.name.encode()) <= MAX_NAME_BYTES for f in files)
    assert (out / "photo_lrp_zebra.png").is_file() or any(out.glob("photo_lrp_*.png"))
    assert any(f.name.startswith("зебра_") for f in files) and any(f.name.startswith("日本_") for f in files)
    after = _snapshot(tmp_path) - {p for p in _snapshot(tmp_path) if out in p.parents or p == out}
    assert after == before  # nothing written outside --output
    _no_temporaries(out)


def test_unique_stems_rule() -> None:
    stems = unique_stems([Path("a/photo.jpg"), Path("b/photo.jpg"), Path("c/photo-2.jpg"), Path("d/PHOTO.jpg")])
    assert stems == ["photo", "photo-3", "photo-2", "PHOTO-4"]
    assert unique_stems([Path(".."), Path("a/.hidden.png")]) == ["image", "hidden"]
    long = unique_stems([Path("é" * 300 + ".png"), Path("é" * 300 + "x.png")])
    assert len(set(long)) == 2 and all(len(s.encode()) <= 120 for s in long)


# ------------------------------------------------------------------ atomic writes, concurrency, unwritable outputs


def test_interrupted_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "x.npy"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as fh:
        fh.write(b"partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_interrupt_during_a_run_leaves_no_partial_file(model: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxlrp.cli.common as common

    real = np.save

    def save_then_interrupt(fh: object, arr: np.ndarray) -> None:
        real(fh, arr)
        raise KeyboardInterrupt

    monkeypatch.setattr(common.np, "save", save_then_interrupt)
    out = tmp_path / "out"
    code = main(["explain", str(model), str(_photo(tmp_path / "p.png")), "--save-npy", "-o", str(out)])
    assert code == 130
    assert not list(out.glob("*.npy"))
    _no_temporaries(out)


def test_two_concurrent_runs_into_one_folder(model: Path, tmp_path: Path) -> None:
    photos = [_photo(tmp_path / "in" / f"p{i}.png", i) for i in range(6)]
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "onnxlrp.cli", "explain", str(model), *map(str, photos), "-m", "lrp,gradient",
           "--save-npy", "--overlay", "-o", str(out), "--threads", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert results[0][0].count("wrote") == results[1][0].count("wrote") == 6 * 7
    for f in out.iterdir():
        if f.suffix == ".npy":
            assert np.load(f).shape == (3, 8, 8)
        else:
            with Image.open(f) as im:
                im.load()
    assert len(list(out.iterdir())) == 6 * 7
    _no_temporaries(out)


def test_unwritable_output(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = _photo(tmp_path / "p.png")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, lines = _cli(capsys, "explain", model, photo, "-o", blocker / "out")
    assert code == 1
    _one_error(lines, "file")
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            code, _, lines = _cli(capsys, "explain", model, photo, "-o", ro)
            assert code == 1
            _one_error(lines, "ermission")
            assert not list(ro.iterdir())
        finally:
            ro.chmod(0o755)


# ------------------------------------------------------------------ options


def test_option_table_covers_every_method_option() -> None:
    declared = {o for m in METHODS.values() for o in m.options} - {"low", "high"}
    assert declared <= set(OPTION_TYPES)


BAD_OPTIONS = [
    (["-m", ""], "names no method"),
    (["-m", ","], "names no method"),
    (["-m", "lrp,"], "names no method"),
    (["-m", "lrp_epsilon", "--option", "epsilon=abc"], "epsilon"),
    (["-m", "lrp_epsilon", "--option", "epsilon=nan"], "epsilon"),
    (["-m", "lrp_epsilon", "--option", "epsilon=-1"], "epsilon"),
    (["-m", "lrp_epsilon", "--option", "epsilon=0"], "epsilon"),
    (["-m", "epsilon_gamma_box", "--option", "gamma=-1"], "gamma"),
    (["-m", "integrated_gradients", "--option", "steps=ten"], "steps"),
    (["-m", "integrated_gradients", "--option", "steps=0"], "steps"),
    (["-m", "smoothgrad", "--option", "seed=abc"], "seed"),
    (["-m", "smoothgrad", "--option", "n_samples=1e9"], "n_samples"),
    (["-m", "lrp", "--option", "bias=maybe"], "bias"),
    (["-m", "lrp", "--option", "=1"], "KEY=VALUE"),
    (["-m", "lrp", "--option", "unknown=1"], "unknown"),
    (["--low", "nan"], "--low"),
    (["--high", "inf"], "--high"),
    (["--low", "1", "--high", "0"], "--low"),
    (["--mean", "nan"], "--mean"),
    (["--batch-size", "0"], "--batch-size"),
    (["--top-k", "0"], "--top-k"),
    (["--threads", "0"], "--threads"),
    (["--threads", "-1"], "--threads"),
    (["--threads", "two"], "--threads"),
    (["--grid-columns", "0"], "--grid-columns"),
    (["--size", "0"], "--size"),
    (["--size", "9" * 40], "--size"),
    (["--clip-percentile", "nan"], "--clip-percentile"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_usage_errors(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      args: list[str], needle: str) -> None:
    out = tmp_path / "out"
    code, _, lines = _cli(capsys, "explain", model, _photo(tmp_path / "p.png"), *args, "-o", out)
    assert code == 2
    _one_error(lines, needle)
    assert not out.exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--target", "1" + "0" * 30], "out of range"),
    (["--target", "-1"], "out of range"),
    (["--target", "3"], "out of range"),
    (["-m", "gradcam", "--option", "layer=nope"], "nope"),
    (["--top-k", "4"], "--top-k 4"),
])
def test_bad_values_found_with_the_model_exit_1(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                args: list[str], needle: str) -> None:
    code, _, lines = _cli(capsys, "explain", model, _photo(tmp_path / "p.png"), *args, "-o", tmp_path / "out")
    assert code == 1
    _one_error(lines, needle)


def test_huge_size_is_refused_before_any_image_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dyn = _model(tmp_path / "m" / "dyn.onnx", dynamic=True)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for size, shown in (("50000", "50000x50000"), ("20000x30000", "20000x30000")):
        code, _, lines = _cli(capsys, "explain", dyn, fifo, "--size", size, "-o", tmp_path / "out")
        assert code == 1
        _one_error(lines, f"input size {shown}", "GiB")
    assert not (tmp_path / "out").exists()
    code, _, lines = _cli(capsys, "explain", dyn, _photo(tmp_path / "p.png"), "--size", "16x24", "-o",
                          tmp_path / "ok")
    assert code == 0, lines


def test_memory_error_is_one_line(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxlrp.cli.explain as explain

    def no_memory(*_: object, **__: object) -> None:
        raise MemoryError

    monkeypatch.setattr(explain, "load_sample", no_memory)
    code, _, lines = _cli(capsys, "explain", model, _photo(tmp_path / "p.png"), "-o", tmp_path / "out")
    assert code == 1
    _one_error(lines, "not enough memory")


# ------------------------------------------------------------------ label files the model points at


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[Path]:
    s = tmp_path / "secret.txt"
    s.write_text("password\nhunter2\nroot\n")
    yield s


@pytest.mark.parametrize("where", ["../secret.txt", "ABSOLUTE", "link.txt", "sub/../../secret.txt"])
def test_label_path_in_metadata_cannot_leave_the_model_folder(tmp_path: Path, secret: Path, where: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "link.txt").symlink_to(secret)
    name = str(secret) if where == "ABSOLUTE" else where
    m = _model(folder / "evil.onnx", labels=name)
    code, stdout, lines = _cli(capsys, "explain", m, _photo(tmp_path / "p.png"), "-o", tmp_path / "out")
    assert code == 1
    _one_error(lines, "onnxlrp.labels", name)
    assert "hunter2" not in stdout and not (tmp_path / "out").exists()


def test_label_files_that_are_not_regular_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    os.mkfifo(folder / "fifo.txt")
    m = _model(folder / "fifo.onnx", labels="fifo.txt")
    photo = _photo(tmp_path / "p.png")
    code, _, lines = _cli(capsys, "explain", m, photo, "-o", tmp_path / "out")
    assert code == 1
    _one_error(lines, "onnxlrp.labels", "not a regular file")
    plain = _model(folder / "plain.onnx", labels=None)
    if Path("/dev/zero").exists():
        code, _, lines = _cli(capsys, "explain", plain, photo, "--labels", "/dev/zero", "-o", tmp_path / "out")
        assert code == 1
        _one_error(lines, "/dev/zero", "not a regular file")
    (folder / "latin1.txt").write_bytes(b"caf\xe9\n")
    code, _, lines = _cli(capsys, "explain", plain, photo, "--labels", folder / "latin1.txt", "-o", tmp_path / "out")
    assert code == 1
    _one_error(lines, "UTF-8")
    missing = _model(folder / "missing.onnx", labels="nowhere.txt")
    code, _, lines = _cli(capsys, "explain", missing, photo, "-o", tmp_path / "out")
    assert code == 0 and len(lines) == 1 and "nowhere.txt" in lines[0] and "warning" in lines[0]


def test_evaluate_skips_a_bad_image_and_writes_the_rest(model: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    folder = tmp_path / "in"
    goods = [_photo(folder / "a.png", 1), _photo(folder / "c.png", 2)]
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "eval"
    code, _, lines = _cli(capsys, "evaluate", model, folder, "-m", "gradient", "--patch", "4", "--steps", "2",
                          "--random-repeats", "0", "-o", out)
    assert code == 1
    _one_error(lines, "b.png", "cannot read image")
    rows = list(csv.DictReader((out / "evaluation.csv").open(encoding="utf-8")))
    assert sorted(Path(r["image"]).name for r in rows) == [g.name for g in goods]
    assert len(list(out.glob("*_perturbation.png"))) == 2
    _no_temporaries(out)
    code, _, lines = _cli(capsys, "evaluate", model, folder / "b.png", "-o", tmp_path / "none")
    assert code == 1 and not (tmp_path / "none").exists()
