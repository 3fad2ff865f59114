"""Spectral Relevance Analysis (``onnxlrp spray``, :mod:`onnxlrp.dataset.spray`).

The unit tests build tiny stores by writing Parquet per the store contract (docs/dataset.md);
the Clever-Hans test explains the shipped demo set with ``onnxlrp explain-dataset`` and checks
that SpRAy isolates the marked images in one cluster whose mean map lights up the mark.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("sklearn")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from onnxlrp.cli import main  # noqa: E402
from onnxlrp.dataset import spray as S  # noqa: E402
from onnxlrp.errors import InputError, OnnxLrpError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLEVER_HANS = ROOT / "data" / "clever_hans"
MARK = (slice(1, 5), slice(1, 5))  # rows, columns of the mark (tools/make_clever_hans.py MARK_BOX)

_SCHEMA = pa.schema([
    ("image_path", pa.string()), ("image_id", pa.string()), ("image_width", pa.int32()),
    ("image_height", pa.int32()), ("target", pa.int64()), ("target_name", pa.string()),
    ("target_spec", pa.string()), ("rank", pa.int32()), ("logit", pa.float32()), ("probability", pa.float32()),
    ("method", pa.string()), ("options", pa.string()), ("rel_sum", pa.float32()), ("rel_abs_sum", pa.float32()),
    ("rel_pos_sum", pa.float32()), ("rel_neg_sum", pa.float32()), ("rel_max", pa.float32()),
    ("rel_min", pa.float32()), ("heatmap", pa.binary()), ("heatmap_shape", pa.list_(pa.int32())),
])


def write_store(out: Path, maps: np.ndarray, method: str = "lrp", target: int = 3, name: str | None = "cat",
                spec: str = "3", rank: int = 1, parts: int = 2) -> list[str]:
    """A store per the contract: one row per map (image ``/data/img_XXX.png``), split into ``parts`` files."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "onnxlrp-store/1", "onnxlrp_version": "test",
                "model": {"path": "/m.onnx", "sha256": "0" * 64, "input_name": "input",
                          "input_shape": [None, 3, 16, 16], "num_classes": 10},
                "preprocess": {"preset": "none", "size": [16, 16], "layout": "NCHW"}, "methods": [method],
                "options": {method: {}}, "targets": [spec], "top_k": None,
                "heatmap": {"dtype": "float16", "channels": "sum" if maps.ndim == 3 else "all", "pool": None},
                "labels": None}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "store").mkdir(exist_ok=True)
    paths = [f"/data/img_{i:03d}.png" for i in range(len(maps))]
    for k, idx in enumerate(np.array_split(np.arange(len(maps)), parts)):
        m = maps[idx]
        cols = {
            "image_path": [paths[i] for i in idx],
            "image_id": [hashlib.sha1(paths[i].encode()).hexdigest() for i in idx],
            "image_width": [16] * len(idx), "image_height": [16] * len(idx),
            "target": [target] * len(idx), "target_name": [name] * len(idx), "target_spec": [spec] * len(idx),
            "rank": [rank] * len(idx), "logit": [1.0] * len(idx), "probability": [0.5] * len(idx),
            "method": [method] * len(idx), "options": ["{}"] * len(idx),
            **{c: [float(f(x)) for x in m] for c, f in (("rel_sum", np.sum), ("rel_abs_sum", lambda x: np.abs(x).sum()),
                                                         ("rel_pos_sum", lambda x: x[x > 0].sum()),
                                                         ("rel_neg_sum", lambda x: x[x < 0].sum()),
                                                         ("rel_max", np.max), ("rel_min", np.min))},
            "heatmap": [x.astype("<f2").tobytes() for x in m], "heatmap_shape": [list(x.shape) for x in m],
        }
        pq.write_table(pa.table(cols, schema=_SCHEMA), out / "store" / f"part-{k:06d}-{k:08x}.parquet")
    return paths


def blobs(n_per: int, centres: list[tuple[int, int]], size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_per`` maps per centre: a Gaussian blob (sigma 1.5 px) there, random strength, plus weak noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    maps, labels = [], []
    for c, (cy, cx) in enumerate(centres):
        for _ in range(n_per):
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
            maps.append(rng.uniform(0.5, 3.0) * blob + rng.normal(0, 0.02, (size, size)))
            labels.append(c)
    return np.asarray(maps, dtype=np.float32), np.asarray(labels)


# --------------------------------------------------------------------------------------- maths


def test_area_downsample_block_means_and_fractional_weights():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(2, 8, 12))
    small = S.area_downsample(m, (4, 3))
    np.testing.assert_allclose(small, m.reshape(2, 4, 2, 3, 4).mean(axis=(2, 4)))
    odd = S.area_downsample(m, (3, 5))  # 8/3 and 12/5 rows/columns per output cell: fractional overlaps
    np.testing.assert_allclose(odd.mean(axis=(1, 2)), m.mean(axis=(1, 2)))
    np.testing.assert_allclose(S._area_matrix(7, 3).sum(axis=1), 1.0)
    assert S.area_downsample(m, (8, 12)) is not None and np.array_equal(S.area_downsample(m, (8, 12)), m)


def test_normalise_l1_and_max():
    x = np.array([[1.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(S.normalise(x, "l1"), [[0.25, -0.75, 0.0], [0, 0, 0]])
    np.testing.assert_allclose(S.normalise(x, "max"), [[1 / 3, -1.0, 0.0], [0, 0, 0]])
    with pytest.raises(InputError, match="normalisation"):
        S.normalise(x, "l2")


def test_choose_clusters_takes_the_largest_gap():
    assert S.choose_clusters(np.array([0, 0.01, 0.02, 0.5, 0.55, 0.6]), 5) == 3
    assert S.choose_clusters(np.array([0, 0.01, 0.8, 0.85, 0.9]), 4) == 2
    assert S.choose_clusters(np.array([0, 0, 0, 0, 0.01, 0.02, 0.9]), 4) == 4  # bounded by max_clusters
    assert S.choose_clusters(np.array([0.0, 0.3]), 10) == 2


@pytest.mark.parametrize("centres", [[(3, 3), (12, 12)], [(3, 3), (3, 12), (12, 8)],
                                     [(2, 2), (2, 13), (13, 2), (13, 13)]])
def test_eigengap_finds_well_separated_clusters(tmp_path, centres):
    maps, truth = blobs(15, centres)
    write_store(tmp_path, maps)
    res = S.run_spray(tmp_path, "lrp", "3", size=16, neighbors=8, threads=1)
    assert res.auto and res.k == len(centres)
    # every found cluster is exactly one true group (the adjusted Rand index would be 1)
    rows = {p: i for i, p in enumerate(f"/data/img_{i:03d}.png" for i in range(len(maps)))}
    found = np.array([res.labels[list(res.maps.rows["image_path"]).index(p)] for p in rows])
    for c in range(res.k):
        assert len(set(truth[found == c])) == 1
    assert sorted(res.sizes()) == [15] * len(centres)
    assert res.spectral.shape == (len(maps), res.k) and res.xy.shape == (len(maps), 2)


def test_channels_are_summed_and_outputs_written(tmp_path):
    maps, _ = blobs(12, [(3, 3), (12, 12)])
    with_channels = np.stack([maps / 3] * 3, axis=1)  # [C, H, W] as the store keeps channels
    write_store(tmp_path / "s", with_channels, name=None)
    res = S.run_spray(tmp_path / "s", "lrp", "top", size=8, neighbors=5, clusters=2, threads=1)
    assert res.maps.shape == (3, 16, 16) and res.maps.display.shape == (24, 16, 16)
    assert res.k == 2 and not res.auto and res.maps.target_label.startswith("top")
    files = S.write_outputs(res, tmp_path / "out")
    names = {f.name for f in files}
    assert {"clusters.csv", "cluster_0.png", "cluster_1.png", "embedding.png", "eigenvalues.png", "spray.json",
            "report.md", "report.html"} <= names
    rows = list(csv.DictReader((tmp_path / "out" / "clusters.csv").open(encoding="utf-8")))
    assert len(rows) == 24 and {"cluster", "spectral_1", "spectral_2", "x", "y"} <= set(rows[0])
    assert sorted({r["cluster"] for r in rows}) == ["0", "1"]
    assert "cluster_0.png" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert not list((tmp_path / "out").glob(".*.tmp"))


# --------------------------------------------------------------------------------------- mistakes


def test_errors_name_the_problem(tmp_path):
    maps, _ = blobs(6, [(3, 3), (12, 12)])
    write_store(tmp_path / "s", maps)
    with pytest.raises(InputError, match="no maps of method 'sglrp'; it has lrp"):
        S.run_spray(tmp_path / "s", "sglrp", "3", neighbors=3)
    with pytest.raises(InputError, match=r"no lrp maps for target 7; its targets: 3 \(cat\)"):
        S.run_spray(tmp_path / "s", "lrp", "7", neighbors=3)
    with pytest.raises(InputError, match="unknown target 'dog'"):
        S.run_spray(tmp_path / "s", "lrp", "dog", neighbors=3)
    with pytest.raises(InputError, match="--neighbors 12 needs at least 13"):
        S.run_spray(tmp_path / "s", "lrp", "cat", neighbors=12)
    with pytest.raises(InputError, match="more than the 12 images"):
        S.run_spray(tmp_path / "s", "lrp", "cat", neighbors=3, clusters=13)
    (tmp_path / "empty" / "store").mkdir(parents=True)
    (tmp_path / "empty" / "manifest.json").write_text((tmp_path / "s" / "manifest.json").read_text())
    with pytest.raises(InputError, match="is empty"):
        S.run_spray(tmp_path / "empty", "lrp", "3")
    with pytest.raises(Exception, match="not an onnxlrp result store") as err:
        S.run_spray(tmp_path / "nowhere", "lrp", "3")
    assert isinstance(err.value, OnnxLrpError)


def test_umap_without_umap_learn_is_a_clear_error(tmp_path):
    try:
        import umap  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("umap-learn is installed")
    with pytest.raises(InputError, match="umap-learn"):
        S.run_spray(tmp_path, "lrp", embedding="umap")


def test_cli_errors_are_one_line(tmp_path, capsys):
    maps, _ = blobs(6, [(3, 3), (12, 12)])
    write_store(tmp_path / "s", maps)
    assert main(["spray", str(tmp_path / "s"), "--method", "gradient", "--neighbors", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onnxlrp: error: the store has no maps of method 'gradient'") and err.count("\n") == 1
    assert main(["spray", str(tmp_path / "s"), "--method", "lrp", "--clusters", "0"]) == 2
    assert "--clusters" in capsys.readouterr().err
    assert main(["spray", str(tmp_path / "s"), "--method", "lrp", "--max-clusters", "1"]) == 2
    capsys.readouterr()
    assert main(["spray", str(tmp_path / "s"), "-m", "lrp", "-t", "cat", "--neighbors", "4", "--size", "8",
                 "--threads", "1", "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "12 images, lrp maps for target 3 (cat): 2 clusters (eigengap)" in out
    assert (tmp_path / "o" / "report.md").is_file()


# --------------------------------------------------------------------------------------- Clever Hans


def test_spray_isolates_the_clever_hans_mark(tmp_path, capsys):
    """The shipped demo: SpRAy on the LRP maps for "disc" puts the marked images in one cluster (docs/spray.md)."""
    pytest.importorskip("onnxruntime")
    store = tmp_path / "store"
    assert main(["explain-dataset", str(CLEVER_HANS / "model.onnx"), str(CLEVER_HANS / "test"), "--method", "lrp",
                 "--target", "disc", "--output", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    res = S.run_spray(store, "lrp", "disc", threads=1)  # the command line's defaults
    truth = {r["file"].split("/")[-1]: int(r["marked"]) for r in csv.DictReader(
        (CLEVER_HANS / "test.csv").open(encoding="utf-8"))}
    marked = np.array([truth[Path(p).name] for p in res.maps.rows["image_path"]])
    assert len(marked) == 160 and marked.sum() == 80
    best = int(np.argmax([marked[res.labels == c].sum() for c in range(res.k)]))
    inside = res.labels == best
    purity, recall = marked[inside].mean(), marked[inside].sum() / marked.sum()
    assert purity >= 0.9 and recall >= 0.9, (res.k, res.sizes(), purity, recall)
    mean = res.means[best]
    assert np.unravel_index(np.argmax(mean), mean.shape)[0] in range(1, 5)  # the hottest pixel is in the mark
    assert np.unravel_index(np.argmax(mean), mean.shape)[1] in range(1, 5)
    pos = np.clip(mean, 0, None)
    share = pos[MARK].sum() / pos.sum()
    assert share >= 5 * 16 / mean.size  # the mark (1.6 % of the pixels) holds over 5x its area's share
    for c in range(res.k):  # no other cluster's mean map puts half as large a share on the mark
        other = np.clip(res.means[c], 0, None)
        if c != best and other.sum() > 0:
            assert other[MARK].sum() / other.sum() < share / 2
