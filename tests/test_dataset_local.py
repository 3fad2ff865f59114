"""``onnxlrp explain-dataset`` on this machine: inputs, the rows, errors, resume after SIGKILL, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from helpers_dataset import CLASSES, photos, tiny_model  # noqa: E402

from onnxlrp import Explainer  # noqa: E402
from onnxlrp.cli import main  # noqa: E402
from onnxlrp.dataset import read_heatmaps, read_manifest, read_table  # noqa: E402
from onnxlrp.dataset.store import committed_state  # noqa: E402
from onnxlrp.image import Preprocess, load_images  # noqa: E402

KEY = ["image_id", "target", "method"]


def _cli(*args: object) -> tuple[int, str, str]:
    return _run_main([str(a) for a in args])


def _run_main(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def test_rows_match_the_explainer(tmp_path: Path, model: Path) -> None:
    imgs = photos(tmp_path / "photos", 7, sub=3)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    bad = tmp_path / "photos" / "sub" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    rc, so, se = _cli("explain-dataset", model, tmp_path / "photos", "--method", "lrp", "--method", "gradient",
                      "--target", "top", "--target", "zebra", "--output", out, "--batch-size", "3",
                      "--shard-size", "4")
    assert rc == 0, se
    assert "8 images; 0 already in the store; 8 to explain in 2 shard(s)" in so
    assert se.strip().splitlines()[-1].startswith("onnxlrp: warning: 1 image(s) could not be read or explained")
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["image_path"] for e in errors] == [str(bad.resolve())] and "cannot read image" in errors[0]["reason"]

    t = read_table(out).to_pandas()
    assert not t.duplicated(KEY).any()
    ex = Explainer(model)
    x = load_images(imgs, Preprocess("none", (16, 16)))
    logits = ex.predict(x)
    top = logits.argmax(axis=1)
    # a class chosen by two specs ("top" and "zebra") is stored once, with the first spec
    expected = sum(1 if c == 2 else 2 for c in top) * 2
    assert len(t) == expected
    assert set(t["image_path"]) == {str(p.resolve()) for p in imgs}
    frame, heat = read_heatmaps(out, "lrp", target=2)
    assert heat.shape == (7, 16, 16)
    order = [imgs.index(next(p for p in imgs if str(p.resolve()) == q)) for q in frame["image_path"]]
    ref = np.asarray(ex.explain(x[order], target=2, method="lrp", low=0.0, high=1.0))
    np.testing.assert_allclose(heat, ref.sum(axis=1), rtol=2e-3, atol=2e-3 * np.abs(ref.sum(axis=1)).max())
    np.testing.assert_allclose(frame["rel_sum"], ref.sum(axis=(1, 2, 3)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(frame["rel_max"], ref.max(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(frame["logit"], logits[order, 2], rtol=1e-5)
    ranks = (logits[order] > logits[order, 2:3]).sum(axis=1) + 1
    assert list(frame["rank"]) == list(ranks)
    assert set(frame["target_name"]) == {"zebra"} and set(frame["image_width"]) == {24}
    assert set(frame["image_height"]) == {20}
    assert json.loads(frame["options"].iloc[0]) == {"high": [1.0] * 3, "low": [0.0] * 3}
    m = read_manifest(out)
    assert m["methods"] == ["lrp", "gradient"] and m["targets"] == ["top", "zebra"] and m["top_k"] is None
    assert m["heatmap"] == {"dtype": "float16", "channels": "sum", "pool": None}
    assert m["model"]["num_classes"] == 5 and len(m["model"]["sha256"]) == 64

    # the same command again: nothing to do, nothing duplicated
    rc, so, se = _cli("explain-dataset", model, tmp_path / "photos", "--method", "lrp", "--method", "gradient",
                      "--target", "top", "--target", "zebra", "--output", out, "--shard-size", "4")
    assert rc == 0 and "8 already in the store" in so and "0 to explain" in so
    assert len(read_table(out).to_pandas()) == expected
    # other settings are refused (exit 1, one line), --overwrite replaces the store
    rc, so, se = _cli("explain-dataset", model, tmp_path / "photos", "--method", "lrp", "--output", out)
    assert rc == 1 and se.startswith("onnxlrp: error:") and "methods" in se and "--overwrite" in se
    assert len(se.strip().splitlines()) == 1
    rc, so, se = _cli("explain-dataset", model, tmp_path / "photos", "--method", "lrp", "--output", out,
                      "--overwrite", "--top-k", "2", "--keep-channels", "--pool", "4x8")
    assert rc == 0, se
    t = read_table(out).to_pandas()
    assert len(t) == 14 and sorted(set(t["target_spec"])) == ["top-1", "top-2"]
    assert all(list(s) == [3, 4, 8] for s in t["heatmap_shape"])


def test_inputs_globs_lists_and_nhwc(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m" / "nhwc.onnx", nhwc=True)
    a = photos(tmp_path / "a", 3, seed=1, sub=1)
    b = photos(tmp_path / "b", 2, seed=2)
    (tmp_path / "list.txt").write_text(f"# a list\n\nb/{b[0].name}\n{b[1]}\n")
    odd = tmp_path / "a" / os.fsdecode(b"odd\xff.png")  # a name that is not UTF-8 cannot go into the store
    odd.write_bytes(a[1].read_bytes())
    out = tmp_path / "out"
    rc, so, se = _cli("explain-dataset", model, str(tmp_path / "a" / "**" / "*.png"), f"@{tmp_path / 'list.txt'}",
                      b[0], "--method", "gradient", "--target", "crane bird", "-o", out, "--pool", "8")
    assert rc == 0, se
    assert "skipping 1 file(s) whose names are not valid UTF-8" in se
    t = read_table(out).to_pandas()
    assert sorted(t["image_path"]) == sorted(str(p.resolve()) for p in a + b)
    assert set(t["target_name"]) == {"crane bird"} and set(t["target"]) == {CLASSES.index("crane bird")}
    assert all(list(s) == [8, 8] for s in t["heatmap_shape"])  # spatial axes in image order, not NHWC
    ex = Explainer(model)
    x = load_images([a[0]], Preprocess("none", (16, 16), "NHWC"))
    ref = np.asarray(ex.explain(x, target=3, method="gradient"))[0].sum(axis=-1)
    frame, heat = read_heatmaps(out, "gradient")
    i = list(frame["image_path"]).index(str(a[0].resolve()))
    np.testing.assert_allclose(heat[i], ref.reshape(8, 2, 8, 2).mean(axis=(1, 3)), rtol=2e-3,
                               atol=2e-3 * np.abs(ref).max())


@pytest.mark.parametrize(("args", "code", "text"), [
    (["--target", "unicorn"], 1, "unknown class name 'unicorn'"),
    (["--target", "7"], 1, "class index 7 is out of range"),
    (["--top-k", "2", "--target", "1"], 2, "either --target or --top-k"),
    (["--pool", "32"], 2, "larger than the heatmap"),
    (["--gpus-per-worker", "1"], 2, "need --ray"),
    (["--method", "nope"], 2, "unknown method"),
])
def test_refusals(tmp_path: Path, model: Path, args: list[str], code: int, text: str) -> None:
    photos(tmp_path / "p", 1)
    rc, _, se = _cli("explain-dataset", model, tmp_path / "p", "-o", tmp_path / "out", *args)
    assert rc == code and text in se and se.startswith("onnxlrp: error:") and "Traceback" not in se


def test_missing_inputs_and_foreign_output(tmp_path: Path, model: Path) -> None:
    rc, _, se = _cli("explain-dataset", model, tmp_path / "nothing", "-o", tmp_path / "out")
    assert rc == 1 and "no such file or directory" in se
    rc, _, se = _cli("explain-dataset", model, str(tmp_path / "*.png"), "-o", tmp_path / "out")
    assert rc == 1 and "no file matches" in se
    photos(tmp_path / "p", 1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    rc, _, se = _cli("explain-dataset", model, tmp_path / "p", "-o", tmp_path / "mine", "--overwrite")
    assert rc == 1 and "not an onnxlrp store" in se and (tmp_path / "mine" / "thesis.tex").exists()
    assert sorted(f.name for f in (tmp_path / "mine").iterdir()) == ["thesis.tex"]  # not even a lock file


def test_one_run_per_store(tmp_path: Path, model: Path) -> None:
    from onnxlrp.dataset.store import locked

    photos(tmp_path / "p", 2)
    with locked(tmp_path / "out"):
        rc, _, se = _cli("explain-dataset", model, tmp_path / "p", "-o", tmp_path / "out")
    assert rc == 1 and "another explain-dataset run is writing to" in se
    assert _cli("explain-dataset", model, tmp_path / "p", "-o", tmp_path / "out")[0] == 0


def test_process_pool_gives_the_same_rows(tmp_path: Path, model: Path) -> None:
    photos(tmp_path / "p", 6)
    base = ["explain-dataset", model, tmp_path / "p", "--method", "lrp", "--shard-size", "2"]
    assert _cli(*base, "-o", tmp_path / "one")[0] == 0
    rc, _, se = _cli(*base, "-o", tmp_path / "two", "--workers", "2")
    assert rc == 0, se
    one = read_table(tmp_path / "one").to_pandas().sort_values(KEY).reset_index(drop=True)
    two = read_table(tmp_path / "two").to_pandas().sort_values(KEY).reset_index(drop=True)
    assert len(one) == 6 and list(one["image_id"]) == list(two["image_id"])
    assert list(one["heatmap"]) == list(two["heatmap"])


def test_sigkill_then_rerun_is_exactly_once(tmp_path: Path, model: Path) -> None:
    """Kill a run with SIGKILL after its first shards are committed; the same command completes the store."""
    photos(tmp_path / "p", 48)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "onnxlrp.cli", "explain-dataset", str(model), str(tmp_path / "p"), "--method",
           "smoothgrad", "--option", "n_samples=48", "--top-k", "2", "--shard-size", "2", "--batch-size", "1",
           "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            parts = list((out / "store").glob("part-*.parquet")) if (out / "store").is_dir() else []
            if len(parts) >= 2:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed = committed_state(out)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 2 <= killed.parts < 24
    assert read_table(out).num_rows == killed.rows  # only whole parts are visible
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{len(killed.done)} already in the store" in res.stdout
    t = read_table(out, columns=KEY + ["target_spec"]).to_pandas()
    assert len(t) == 48 * 2 and not t.duplicated(KEY).any()
    assert sorted(t["target_spec"].value_counts().to_dict().items()) == [("top-1", 48), ("top-2", 48)]


def docs_snippets() -> list[str]:
    """The Python code blocks of docs/dataset.md's section "Reading the store"."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "dataset.md").read_text(encoding="utf-8")
    section = text.split("## Reading the store", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def run_snippet(code: str, out: Path) -> None:
    """Run a docs snippet on the store in ``out`` (its ``runs/audit`` paths replaced)."""
    code = code.replace('"runs/audit/store"', repr(str(out / "store"))).replace('"runs/audit/"', repr(str(out)))
    assert "runs/audit" not in code
    exec(compile(code, "docs/dataset.md", "exec"), {})


def test_docs_reading_snippets(tmp_path: Path, model: Path) -> None:
    photos(tmp_path / "p", 3)
    out = tmp_path / "audit"
    assert _cli("explain-dataset", model, tmp_path / "p", "--method", "lrp", "--method", "sglrp", "--target", "top",
                "-o", out)[0] == 0
    snippets = docs_snippets()
    assert len(snippets) == 3 and "ray.data.read_parquet" in snippets[2]
    for code in snippets[:2]:  # the Ray Data one runs in test_dataset_ray.py
        run_snippet(code, out)
