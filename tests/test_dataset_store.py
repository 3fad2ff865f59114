"""The result store: parts, resume bookkeeping, the manifest check, read_heatmaps, pooling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from onnxlrp.dataset import store  # noqa: E402
from onnxlrp.dataset.rows import pool_map  # noqa: E402
from onnxlrp.errors import InputError  # noqa: E402


def _rows(paths: list[str], method: str = "lrp", shape: tuple[int, ...] = (4, 6), target: int = 2) -> dict:
    cols: dict[str, list] = {k: [] for k in store.SCHEMA}
    for k, p in enumerate(paths):
        h = np.full(shape, k, dtype="<f2")
        row = dict(image_path=p, image_id=store.image_id(p), image_width=24, image_height=20, target=target,
                   target_name="zebra", target_spec="top", rank=1, logit=1.5, probability=0.5, method=method,
                   options="{}", rel_sum=1.0, rel_abs_sum=2.0, rel_pos_sum=1.5, rel_neg_sum=-0.5, rel_max=1.0,
                   rel_min=-1.0, heatmap=h.tobytes(), heatmap_shape=list(shape))
        for c in store.SCHEMA:
            cols[c].append(row[c])
    return cols


MANIFEST = {"format": store.FORMAT, "onnxlrp_version": "0.1.0", "model": {"path": "/m.onnx", "sha256": "ab"},
            "methods": ["lrp"], "targets": ["top"]}


def test_parts_resume_and_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert store.check_or_write_manifest(out, MANIFEST) is False
    paths = [f"/data/img{i:02d}.png" for i in range(10)]
    shards = store.plan_shards(paths[::-1], store.committed_state(out), size=4)
    assert [len(s.paths) for s in shards] == [4, 4, 2] and [s.seq for s in shards] == [0, 1, 2]
    assert list(shards[0].paths) == paths[:4]  # sorted
    for s in shards[:2]:
        store.commit_part(out, s.seq, s.ids, _rows(list(s.paths[:-1])), [{"image_path": s.paths[-1], "reason": "bad"}])
    # the same shard committed again (a retried task) replaces its part: no duplicate rows
    store.commit_part(out, shards[0].seq, shards[0].ids, _rows(list(shards[0].paths[:-1])),
                      [{"image_path": shards[0].paths[-1], "reason": "bad"}])
    st = store.committed_state(out)
    assert st.parts == 2 and st.rows == 6 and st.next_seq == 2 and len(st.done) == 8 and len(st.errors) == 2
    rest = store.plan_shards(paths, st, size=4)
    assert [list(s.paths) for s in rest] == [paths[8:]] and rest[0].seq == 2
    # a temporary part of a killed run is invisible to readers and removed at the next start
    (out / "store" / ".part-000002-deadbeef.parquet.x.tmp").write_bytes(b"PAR1 half")
    assert store.read_table(out).num_rows == 6
    assert store.remove_stale_temporaries(out) == 1
    store.write_errors(out, st.errors)
    lines = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["image_path"] for e in lines] == [paths[3], paths[7]] and lines[0]["reason"] == "bad"


def test_manifest_mismatch_overwrite_and_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store.check_or_write_manifest(out, MANIFEST)
    store.commit_part(out, 0, ["a"], _rows(["/x.png"]), [])
    moved = {**MANIFEST, "onnxlrp_version": "9", "model": {"path": "/elsewhere.onnx", "sha256": "ab"}}
    assert store.check_or_write_manifest(out, moved) is True  # version and model path may change
    with pytest.raises(store.StoreMismatchError, match=r"the model \(another sha256\)"):
        store.check_or_write_manifest(out, {**MANIFEST, "model": {"path": "/m.onnx", "sha256": "cd"}})
    with pytest.raises(store.StoreMismatchError, match="methods"):
        store.check_or_write_manifest(out, {**MANIFEST, "methods": ["sglrp"]})
    assert store.check_or_write_manifest(out, {**MANIFEST, "methods": ["sglrp"]}, overwrite=True) is False
    assert store.committed_state(out).rows == 0
    assert store.read_manifest(out)["methods"] == ["sglrp"]
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(store.StoreError, match="not an onnxlrp store"):
        store.check_or_write_manifest(foreign, MANIFEST, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_read_heatmaps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store.check_or_write_manifest(out, MANIFEST)
    store.commit_part(out, 1, ["b"], _rows(["/b.png", "/a.png"], target=3), [])
    store.commit_part(out, 0, ["a"], _rows(["/c.png"], method="sglrp", shape=(3, 4, 6)), [])
    frame, heat = store.read_heatmaps(out, "lrp")
    assert list(frame["image_path"]) == ["/a.png", "/b.png"] and "heatmap" not in frame.columns
    assert heat.dtype == np.float32 and heat.shape == (2, 4, 6)
    assert np.all(heat[0] == 1) and np.all(heat[1] == 0)  # sorted by path, maps follow their rows
    _, h3 = store.read_heatmaps(out, "sglrp", target=2)
    assert h3.shape == (1, 3, 4, 6)
    with pytest.raises(InputError, match="methods \\['lrp', 'sglrp'\\]"):
        store.read_heatmaps(out, "lrp", target=2)
    with pytest.raises(store.StoreError, match="no manifest.json"):
        store.read_heatmaps(tmp_path, "lrp")
    # the documented readers see the same rows
    import pyarrow.dataset as ds

    assert ds.dataset(out / "store", format="parquet").count_rows() == 3


def test_pool_map_is_adaptive_average_pooling() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 12, 10)).astype(np.float32)
    np.testing.assert_allclose(pool_map(a, (3, 5)), a.reshape(2, 3, 4, 5, 2).mean(axis=(2, 4)), rtol=1e-5, atol=1e-6)
    got = pool_map(a[0], (5, 3))
    want = np.array([[a[0, (i * 12) // 5: -((-(i + 1) * 12) // 5), (j * 10) // 3: -((-(j + 1) * 10) // 3)].mean()
                      for j in range(3)] for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="larger than the heatmap"):
        pool_map(a, (13, 2))
