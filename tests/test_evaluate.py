"""Tests of onnxlrp.evaluate and ``onnxlrp evaluate``: metrics on cases whose answer is known.

The toy model is linear and looks only at a box in the top-left corner of a 3x16x16 input:
``logit_0 = Σ_box w ⊙ x − 10``, ``logit_1 = 0`` (the offset keeps the probability away from 1).
Its exact relevance is ``w ⊙ x`` (``w ⊙ (x − r)`` against a reference image ``r``), so MoRF on
the true map is the best possible order: at every step it removes at least as much score as
any other order.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlrp import Explainer
from onnxlrp.evaluate import (
    Curve,
    EvalSettings,
    blur,
    discrimination,
    evaluate_heatmap,
    heatmap_correlation,
    insertion_deletion,
    line_chart,
    load_regions,
    localisation,
    patch_order,
    patch_relevance,
    perturbation_curve,
    plot_curves,
    pointing_game,
    random_curve,
    reference_image,
    region_for,
    region_share,
    relevance_mass_accuracy,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "efficientnet_lite0.onnx"
PHOTO3 = ROOT / "data" / "images" / "zebra_elephant3.jpg"
REGIONS3 = ROOT / "data" / "regions" / "zebra_elephant3.json"

C, H, W = 3, 16, 16
BOX = (slice(0, 8), slice(0, 8))  # rows, columns the model looks at
PATCH = 2  # 64 patches, 16 of them in the box
OFFSET = -10.0  # bias of class 0


def _box_mask() -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[BOX] = True
    return m


def _weights() -> np.ndarray:
    rng = np.random.default_rng(1)
    w = np.zeros((C, H, W), dtype=np.float32)
    w[:, BOX[0], BOX[1]] = rng.uniform(0.1, 1.0, size=(C, 8, 8)).astype(np.float32)
    return w


def _toy_model() -> onnx.ModelProto:
    w = _weights().reshape(1, -1)
    weight = np.concatenate([w, np.zeros_like(w)]).astype(np.float32)  # (2, C*H*W)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "box_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(np.array([OFFSET, 0], np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def toy() -> Explainer:
    return Explainer(_toy_model(), device="cpu", threads=1)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(2).uniform(0.2, 1.0, size=(C, H, W)).astype(np.float32) * 0.2


def _random_heat(seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).normal(size=(C, H, W)).astype(np.float32)


# ------------------------------------------------------------------ curves and their summaries


def test_aopc_and_auc_definitions() -> None:
    c = Curve("morf", "zero", 0, 1, np.array([0.0, 0.5, 1.0]), np.array([3.0, 2.0, 1.0]), np.array([1.0, 0.5, 0.0]))
    assert c.aopc("logit") == pytest.approx((0 + 1 + 2) / 3)  # mean drop over steps 0..L, step 0 included
    assert c.aopc("prob") == pytest.approx((0 + 0.5 + 1) / 3)
    assert c.auc("prob") == pytest.approx(0.5)
    assert c.auc("logit") == pytest.approx(2.0)
    d = c.to_dict()
    assert d["aopc_logit"] == pytest.approx(1.0) and d["fractions"] == [0.0, 0.5, 1.0]


def test_patch_relevance_and_order() -> None:
    r = np.arange(25, dtype=np.float64).reshape(5, 5)
    s = patch_relevance(r, 2)
    assert s.shape == (3, 3) and s.sum() == r.sum()
    assert s[2, 2] == 24 and s[0, 0] == 0 + 1 + 5 + 6
    assert patch_order(s, "morf")[0] == 4 and patch_order(s, "lerf")[0] == 0  # 12+13+17+18 = 60 is the largest
    np.testing.assert_array_equal(patch_order(s, "morf"), np.argsort(-s.ravel(), kind="stable"))
    ties = np.zeros((4, 4))
    assert sorted(patch_order(ties, "morf", seed=3)) == list(range(16))
    assert not np.array_equal(patch_order(ties, "morf", seed=3), np.arange(16))  # ties are not broken by position


def test_curve_endpoints_and_fractions(toy: Explainer, x: np.ndarray) -> None:
    heat = _weights() * x
    c = perturbation_curve(toy, x, heat, 0, "morf", "zero", patch=PATCH, steps=4)
    np.testing.assert_allclose(c.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    assert c.logit[0] == pytest.approx(float((_weights() * x).sum()) + OFFSET, rel=1e-5)
    assert c.logit[-1] == pytest.approx(OFFSET, abs=1e-5)  # everything zeroed
    assert c.prob[-1] == pytest.approx(1 / (1 + np.exp(-OFFSET)), rel=1e-4)  # two classes: a sigmoid
    assert 0.5 < c.prob[0] < 0.99
    # 16 of the 64 patches hold the whole score: the first MoRF quarter removes all of it
    assert c.logit[1] == pytest.approx(OFFSET, abs=1e-5)
    lerf = perturbation_curve(toy, x, heat, 0, "lerf", "zero", patch=PATCH, steps=4)
    np.testing.assert_allclose(lerf.logit[:4], c.logit[0], rtol=1e-5)  # the 48 empty patches go first


def test_batching_does_not_change_the_curve(toy: Explainer, x: np.ndarray) -> None:
    heat = _random_heat(0)
    a = perturbation_curve(toy, x, heat, 0, "morf", "mean", patch=PATCH, steps=9, batch_size=1)
    b = perturbation_curve(toy, x, heat, 0, "morf", "mean", patch=PATCH, steps=9, batch_size=64)
    np.testing.assert_allclose(a.logit, b.logit, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("perturbation", ["zero", "mean"])
def test_true_relevance_drops_fastest(toy: Explainer, x: np.ndarray, perturbation: str) -> None:
    ref = reference_image(x, perturbation)
    true = _weights() * (x - ref)  # the exact contribution of every pixel against the reference
    kw = dict(patch=PATCH, steps=16)
    good = perturbation_curve(toy, x, true, 0, "morf", perturbation, **kw)
    for seed in range(3):
        bad = perturbation_curve(toy, x, _random_heat(seed), 0, "morf", perturbation, **kw)
        assert np.all(good.logit <= bad.logit + 1e-5)  # greedy top-k of an additive score is optimal
        assert good.aopc() > bad.aopc() + 0.1 * abs(good.aopc())
        assert good.auc() < bad.auc()
    lerf = perturbation_curve(toy, x, true, 0, "lerf", perturbation, **kw)
    rnd = random_curve(toy, x, 0, perturbation, repeats=4, **kw)
    assert lerf.aopc() < rnd.aopc() < good.aopc()


def test_random_heatmap_is_like_random_order(toy: Explainer, x: np.ndarray) -> None:
    kw = dict(patch=PATCH, steps=16)
    heats = [perturbation_curve(toy, x, _random_heat(s), 0, "morf", "zero", **kw).aopc() for s in range(12)]
    rnd = random_curve(toy, x, 0, "zero", repeats=12, seed=50, **kw).aopc()
    best = perturbation_curve(toy, x, _weights() * x, 0, "morf", "zero", **kw).aopc()
    assert abs(np.mean(heats) - rnd) < 0.1 * best, (np.mean(heats), rnd, best)


def test_insertion_deletion(toy: Explainer, x: np.ndarray) -> None:
    true = _weights() * x
    good = insertion_deletion(toy, x, true, 0, start="zero", baseline="zero", patch=PATCH, steps=16)
    assert good.insertion.logit[0] == pytest.approx(OFFSET, abs=1e-5)
    assert good.insertion.logit[-1] == pytest.approx(float(true.sum()) + OFFSET, rel=1e-5)
    assert good.deletion.kind == "deletion" and good.insertion.kind == "insertion"
    for seed in range(3):
        bad = insertion_deletion(toy, x, _random_heat(seed), 0, start="zero", baseline="zero", patch=PATCH,
                                 steps=16)
        assert good.auc_insertion > bad.auc_insertion
        assert good.auc_deletion < bad.auc_deletion
    d = good.to_dict()
    assert set(d) >= {"auc_insertion", "auc_deletion", "insertion", "deletion"}


def test_evaluate_heatmap_summary(toy: Explainer, x: np.ndarray) -> None:
    from onnxlrp.evaluate import Region

    st = EvalSettings(patch=PATCH, steps=8, perturbation="zero", insertion_start="blur", random_repeats=2)
    regions = [Region("box", (0,), _box_mask()), Region("rest", (1,), ~_box_mask())]
    rnd = random_curve(toy, x, 0, "zero", patch=PATCH, steps=8, repeats=2)
    ev = evaluate_heatmap(toy, x, _weights() * x, 0, st, method="true", regions=regions, random=rnd)
    s = ev.summary()
    assert s["aopc_morf"] > s["aopc_random"] > s["aopc_lerf"]
    assert s["mass_accuracy"] == pytest.approx(1.0) and s["pointing_hit"] == 1.0
    assert s["share_own"] == pytest.approx(1.0) and s["share_other"] == pytest.approx(0.0)
    assert ev.deletion is ev.morf
    json.dumps(ev.to_dict())  # JSON-ready


# ------------------------------------------------------------------ references and blur


def test_blur_and_references(x: np.ndarray) -> None:
    const = np.full((C, H, W), 0.7, dtype=np.float32)
    np.testing.assert_allclose(blur(const, 2.0), 0.7, rtol=1e-6)
    np.testing.assert_allclose(blur(const, kind="box", size=5), 0.7, rtol=1e-6)
    delta = np.zeros((1, 21, 21), dtype=np.float32)
    delta[0, 10, 10] = 1
    g = blur(delta, 1.5)[0]
    assert g.sum() == pytest.approx(1.0, rel=1e-5) and g.argmax() == 10 * 21 + 10
    np.testing.assert_allclose(g, g.T, atol=1e-7)
    b = blur(delta, kind="box", size=3)[0]
    np.testing.assert_allclose(b[9:12, 9:12], 1 / 9, rtol=1e-5)
    assert b.sum() == pytest.approx(1.0, rel=1e-5)
    nhwc = blur(np.moveaxis(x, 0, -1), 2.0, layout="NHWC")
    np.testing.assert_allclose(np.moveaxis(nhwc, -1, 0), blur(x, 2.0), rtol=1e-5, atol=1e-6)
    m = reference_image(x, "mean")
    np.testing.assert_allclose(m[:, 0, 0], x.mean(axis=(1, 2)), rtol=1e-5)
    lo = np.array([-1.0, 0.0, 2.0], dtype=np.float32).reshape(1, 3, 1, 1)
    n = reference_image(x, "noise", low=lo, high=lo + 0.5, seed=4)
    assert np.all(n >= lo[0]) and np.all(n <= lo[0] + 0.5)
    np.testing.assert_array_equal(n, reference_image(x, "noise", low=lo, high=lo + 0.5, seed=4))


# ------------------------------------------------------------------ localisation and discrimination


def test_localisation() -> None:
    box = _box_mask()
    inside = np.zeros((C, H, W), dtype=np.float32)
    inside[:, 2:5, 3:6] = 1.0
    inside[:, 12, 12] = -5.0  # negative relevance outside does not count against the mass
    assert relevance_mass_accuracy(inside, box) == pytest.approx(1.0)
    assert pointing_game(inside, box).hit
    half = np.zeros((H, W))
    half[0, 0], half[15, 15] = 1.0, 3.0
    assert relevance_mass_accuracy(half, box) == pytest.approx(0.25)
    p = pointing_game(half, box)
    assert not p.hit and p.point == (15, 15) and p.distance == pytest.approx(np.hypot(8, 8))
    assert pointing_game(half, box, margin=12).hit
    assert not pointing_game(np.zeros((H, W)), box).hit  # an empty map points nowhere
    loc = localisation(inside, box)
    assert loc.to_dict()["mass_accuracy"] == pytest.approx(1.0)


def test_correlation_and_shares() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(C, H, W))
    assert heatmap_correlation(a, a) == pytest.approx(1.0)
    assert heatmap_correlation(a, -a) == pytest.approx(-1.0)
    assert abs(heatmap_correlation(a, rng.normal(size=(C, H, W)))) < 0.2
    box = _box_mask()
    other = np.zeros((H, W), dtype=bool)
    other[8:, 8:] = True
    ha = np.where(box, 1.0, 0.0) - np.where(other, 1.0, 0.0)  # + on its own object, - on the other
    hb = -ha
    assert region_share(ha, box) == pytest.approx(0.5) and region_share(ha, other) == pytest.approx(-0.5)
    d = discrimination(ha, hb, box, other)
    assert d.correlation == pytest.approx(-1.0)
    assert (d.a_on_a, d.a_on_b, d.b_on_b, d.b_on_a) == pytest.approx((0.5, -0.5, 0.5, -0.5))
    assert d.own_minus_other == pytest.approx(1.0)
    assert np.isnan(discrimination(ha, hb).a_on_a)  # no regions: no shares


def test_load_regions() -> None:
    regs = load_regions(REGIONS3, (224, 224), (1110, 619))
    zebra, elephant = region_for(regs, 340), region_for(regs, 386)
    assert zebra is not None and elephant is not None and region_for(regs, 1) is None
    assert zebra.mask.shape == (224, 224) and zebra.mask.any() and not (zebra.mask & elephant.mask).any()
    from onnxlrp.errors import InputError

    with pytest.raises(InputError, match="1110x619 photo"):
        load_regions(REGIONS3, (224, 224), (640, 400))


def test_plots(toy: Explainer, x: np.ndarray) -> None:
    img = line_chart([("a", np.linspace(0, 1, 5), np.arange(5.0), (255, 0, 0))], "t", size=(200, 150))
    assert img.shape == (150, 200, 3) and img.dtype == np.uint8 and (img != 255).any()
    c = perturbation_curve(toy, x, _weights() * x, 0, "morf", "zero", patch=PATCH, steps=4)
    fig = plot_curves([("m1", [c]), ("m2", [("deletion", c)])], "logit", columns=2, size=(200, 150))
    assert fig.shape[1] > 400


# ------------------------------------------------------------------ the command line, end to end


def _run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "onnxlrp.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def test_cli_evaluate_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    res = _run("evaluate", MODEL, PHOTO3, "-m", "sglrp,gradcam", "--target", "zebra", "--target", "african elephant",
               "--regions", REGIONS3, "--patch", "32", "--steps", "4", "--random-repeats", "1", "-b", "4",
               "--threads", "2", "--output", out, "--progress")
    assert res.returncode == 0, res.stderr
    assert "AOPC MoRF" in res.stdout and "340 zebra" in res.stdout and "340 vs 386" in res.stdout
    assert "image-methods" in res.stderr  # the progress bar
    names = {p.name for p in out.iterdir()}
    assert {"evaluation.csv", "discrimination.csv", "evaluation.json", "zebra_elephant3_zebra_perturbation.png",
            "zebra_elephant3_African_elephant_insertion_deletion.png"} <= names
    written = [Path(line.split("wrote ", 1)[1]) for line in res.stdout.splitlines() if line.startswith("wrote ")]
    assert all(p.is_file() for p in written) and len(written) == len(names)
    rows = list(csv.DictReader((out / "evaluation.csv").open()))
    assert len(rows) == 4 and {r["method"] for r in rows} == {"sglrp", "gradcam"}
    sg = {int(r["target"]): r for r in rows if r["method"] == "sglrp"}
    assert float(sg[340]["share_own"]) > 0.1 > -0.1 > float(sg[340]["share_other"])  # the paper's claim
    assert 0 <= float(sg[340]["mass_accuracy"]) <= 1
    disc = list(csv.DictReader((out / "discrimination.csv").open()))
    assert len(disc) == 2
    doc = json.loads((out / "evaluation.json").read_text())
    res0 = doc["images"][0]["results"][0]
    assert doc["settings"]["patch"] == 32 and len(res0["curves"]["morf"]["logit"]) == 5
    assert set(doc["images"][0]["random"]) == {"340", "386"}


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--regions", "{tmp}/missing.json"], 1, "regions file not found"),
    (["--patch", "0"], 2, "--patch"),
])
def test_cli_evaluate_errors(tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = _run("evaluate", MODEL, PHOTO3, *argv, "--output", tmp_path / "o")
    assert res.returncode == code, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxlrp: error: ") and needle in lines[0], res.stderr
    assert not (tmp_path / "o").exists()
