"""The Ray runner: a local Ray with 2 CPUs, an actor killed in mid-run, the store complete and without duplicates."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from helpers_dataset import photos, tiny_model  # noqa: E402

from onnxlrp.dataset import read_table  # noqa: E402
from onnxlrp.dataset.local import run_local  # noqa: E402
from onnxlrp.dataset.ray_runner import CRASH_ENV, run_ray  # noqa: E402
from onnxlrp.dataset.rows import Job  # noqa: E402
from onnxlrp.dataset.store import ShardState, check_or_write_manifest, committed_state, plan_shards  # noqa: E402
from onnxlrp.image import Preprocess  # noqa: E402

KEY = ["image_id", "target", "method"]


@pytest.fixture(scope="module")
def crash_marker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray (2 CPUs) whose actors exit abruptly before committing their 2nd shard, once in all."""
    marker = tmp_path_factory.mktemp("ray") / "crashed"
    old = os.environ.get(CRASH_ENV)
    os.environ[CRASH_ENV] = f"{marker}:2"  # the workers Ray starts inherit the driver's environment
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield marker
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop(CRASH_ENV, None)
        else:
            os.environ[CRASH_ENV] = old


def _job(model: Path) -> Job:
    return Job(model=str(model), preprocess=Preprocess("none", (16, 16)), methods=("lrp", "gradient"),
               options={"lrp": {"low": 0.0, "high": 1.0}, "gradient": {}}, targets=(None, 2),
               target_specs=("top", "2"), labels=None, batch_size=4)


def test_killed_actor_store_complete_without_duplicates(tmp_path: Path, crash_marker: Path) -> None:
    model = tiny_model(tmp_path / "m" / "tiny.onnx")
    imgs = [str(p.resolve()) for p in photos(tmp_path / "p", 20)]
    (tmp_path / "p" / "bad.png").write_bytes(b"not a png")
    imgs.append(str((tmp_path / "p" / "bad.png").resolve()))
    job = _job(model)
    out = tmp_path / "ray"
    check_or_write_manifest(out, {"format": "onnxlrp-store/1", "methods": list(job.methods)})
    shards = plan_shards(imgs, ShardState(), size=3)
    seen: list[int] = []
    # one pass: Ray Data itself restarts the lost actor and retries its shard
    run_ray(job, out, shards, address="auto", workers=2, on_shard=lambda s: seen.append(s["seq"]), passes=1)
    assert crash_marker.exists(), "no actor was killed"
    st = committed_state(out)
    assert st.parts == len(shards) == 7 and len(st.done) == 21
    assert [e["image_path"] for e in st.errors] == [imgs[-1]]
    t = read_table(out).to_pandas()
    assert not t.duplicated(KEY).any()
    assert set(seen) == {s.seq for s in shards}

    # the same rows as the local runner
    local = tmp_path / "local"
    check_or_write_manifest(local, {"format": "onnxlrp-store/1", "methods": list(job.methods)})
    run_local(job, local, shards)
    u = read_table(local).to_pandas()
    t = t.sort_values(KEY).reset_index(drop=True)
    u = u.sort_values(KEY).reset_index(drop=True)
    assert len(t) == len(u) and list(t["image_id"]) == list(u["image_id"])
    assert list(t["heatmap"]) == list(u["heatmap"]) and list(t["target_spec"]) == list(u["target_spec"])


def test_cli_ray_matches_local(tmp_path: Path, crash_marker: Path) -> None:
    from onnxlrp.cli import main

    model = tiny_model(tmp_path / "m" / "tiny.onnx")
    photos(tmp_path / "p", 5)
    base = ["explain-dataset", str(model), str(tmp_path / "p"), "--method", "lrp", "--top-k", "2", "--shard-size", "2"]
    assert main([*base, "-o", str(tmp_path / "local")]) == 0
    assert main([*base, "-o", str(tmp_path / "ray"), "--ray", "auto", "--workers", "2"]) == 0
    one = read_table(tmp_path / "local").to_pandas().sort_values(KEY).reset_index(drop=True)
    two = read_table(tmp_path / "ray").to_pandas().sort_values(KEY).reset_index(drop=True)
    assert len(one) == 10 and list(one["heatmap"]) == list(two["heatmap"])
    assert ray.is_initialized()  # a cluster the command joined is left running


def test_docs_ray_data_snippet(tmp_path: Path, crash_marker: Path) -> None:
    from test_dataset_local import docs_snippets, run_snippet

    from onnxlrp.cli import main

    model = tiny_model(tmp_path / "m" / "tiny.onnx")
    photos(tmp_path / "p", 3)
    out = tmp_path / "audit"
    assert main(["explain-dataset", str(model), str(tmp_path / "p"), "--method", "lrp", "-o", str(out)]) == 0
    run_snippet(docs_snippets()[2], out)
