"""The coverage zoo's own logic (``tools/coverage.py``): tie detection, refusal parsing, the trained-like
weights, the report, and one model end to end (the 1-D signal CNN, TorchScript export).

The tool lives in ``tools/``; it is loaded from its path under a name of its own so that it cannot shadow
the ``coverage`` package. Needs torch (skipped without it); the end-to-end test takes a few seconds.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

TOOL = Path(__file__).resolve().parents[1] / "tools" / "coverage.py"


def _load_tool():
    name = "onnxlrp_coverage_tool"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cov = _load_tool()


# ------------------------------------------------------------------------------------------------ ties


def test_relu_ties_near_but_not_exact() -> None:
    """A ReLU input within tol·max|x| of 0 is a tie; one exactly at 0 is not; the rest are not."""
    x = torch.tensor([1.0, -2.0, 4e-7, -3e-7, 0.0, 1e-5], dtype=torch.float64)  # max|x| = 2
    det = cov.TieDetector(1e-6)
    with torch.no_grad(), det:
        torch.relu(x)
    assert det.counts["relu"] == 2  # 4e-7 and -3e-7 are within 2e-6; 0.0 is exact; 1e-5 is not near
    assert det.checked["relu"] == 6
    assert det.total() == 2


def test_bounded_activation_ties_at_both_bounds() -> None:
    """ReLU6 (hardtanh 0..6) ties at 0 and at 6, HardSwish at ±3."""
    x = torch.tensor([6.0 + 1e-6, 6.0 - 1e-3, 2e-6, 3.0], dtype=torch.float64)
    det = cov.TieDetector(1e-6)
    with torch.no_grad(), det:
        torch.nn.functional.relu6(x)
        torch.nn.functional.hardswish(torch.tensor([3.0 - 1e-7, -3.0 + 0.5, 10.0], dtype=torch.float64))
    assert det.counts["hardtanh"] == 2  # 6 + 1e-6 (tol 6e-6 at the bound 6) and 2e-6 (tol 6.00e-6 at 0)
    assert det.counts["hardswish"] == 1


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_window_ties(ceil_mode: bool) -> None:
    """A max-pool window whose two largest values differ by less than tol·max|x| is one tie; a window of
    exactly equal values (dead ReLUs) is not; padding never ties."""
    x = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 2.0, 2.0 - 1e-9  # window (0, 0): near tie
    x[0, 0, 2, 2], x[0, 0, 3, 3] = 1.0, 0.5  # window (1, 1): clear winner
    det = cov.TieDetector(1e-6)
    with torch.no_grad(), det:
        torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=ceil_mode)
    assert det.counts["max_pool2d"] == 1
    det3 = cov.TieDetector(1e-6)
    volume = torch.stack([x, 0.5 * x], dim=2)  # depth 2, the second slice smaller: no exact copies
    with torch.no_grad(), det3:
        torch.nn.functional.max_pool3d(volume, (2, 2, 2), padding=(0, 1, 0))
    assert det3.counts["max_pool3d"] == 1  # the same pair, in a padded 3-D window


def test_tie_detection_leaves_the_forward_alone() -> None:
    """The dispatch mode only looks: the values computed under it are the plain ones."""
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2)).double()
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        plain = net(x)
        with cov.TieDetector():
            watched = net(x)
    assert torch.equal(plain, watched)


# ------------------------------------------------------------------------------------------------ refusals


def test_refusal_ops_from_message_and_collected() -> None:
    msg = ("the model cannot be explained: node 'n1' (op Erf): op type Erf is not supported; node 'n2' (op Foo.Bar): "
           "custom-domain op x.Bar cannot be explained (and 3 more). Re-export the model")
    assert cov.refusal_ops(msg) == ["Erf", "Foo.Bar"]
    assert cov.refusal_ops(msg, [("TopK", "not supported"), ("Erf", "x")]) == ["Erf", "Foo.Bar", "TopK"]
    assert cov.refusal_ops("the model has 2 inputs (input_ids, attention_mask); onnxlrp explains ...") == \
        ["<several inputs>"]
    assert cov.refusal_ops("input 'ids' is not a float32 tensor (type INT64); onnxlrp explains float32 models") == \
        ["<int64 input>"]


def _model_with(op: str) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node(op, ["h"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_builder_refusals_are_all_collected() -> None:
    """Wrapping the op registry sees the refused op even when the message were to leave it out."""
    from onnxlrp import Explainer, UnsupportedModelError, supported_ops
    from onnxlrp import graph as G

    op = next(o for o in ("Sin", "Cos", "Tan", "Asin", "Sinh", "Round") if o not in supported_ops())
    original = G.lookup
    with cov.collect_builder_refusals() as found, pytest.raises(UnsupportedModelError) as err:
        Explainer(_model_with(op), device="cpu").layers(shape=(1, 4))
    assert G.lookup is original  # the wrapper is removed again
    assert (op, "not supported") in found
    assert op in cov.refusal_ops(str(err.value), found)


# ------------------------------------------------------------------------------------------------ weights


def test_make_trained_like_randomises_constants_and_bn() -> None:
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    entry = cov.ZooEntry("unit_tiny", "custom", "", (3, 6, 6), ("none",))
    net(torch.randn(1, 3, 6, 6))  # materialise the lazy layer
    with torch.no_grad():
        net[1].weight.fill_(1.0)
        net[1].bias.zero_()
    cov.make_trained_like(net, entry)
    bn = net[1]
    assert not net.training
    assert len(set(bn.weight.tolist())) == 4 and all(0.7 <= v <= 1.3 for v in bn.weight.tolist())
    assert len(set(bn.bias.tolist())) == 4 and all(-0.1 <= v <= 0.1 for v in bn.bias.tolist())
    assert not torch.allclose(bn.running_var, torch.ones(4)) and not torch.allclose(bn.running_mean, torch.zeros(4))
    # the statistics were measured: normalised activations have a moderate scale
    with torch.no_grad():
        z = bn(net[0](torch.randn(16, 3, 6, 6)))
    assert 0.3 < float(z.std()) < 3.0


# ------------------------------------------------------------------------------------------------ report


def _row(model: str, exporter: str, **kw) -> dict:
    base = {"model": model, "exporter": exporter, "started": "2026-12-01 12:00 UTC", "commit": "abc"}
    base.update(kw)
    return base


def test_report_ranks_refusing_ops_and_lists_mismatches() -> None:
    names = ["vit_tiny", "swin_tiny", "resnet18"]
    results = {
        "vit_tiny|torchscript": _row("vit_tiny", "torchscript", status="refused", refusing_ops=["Erf", "Softmax"],
                                     message="m"),
        "vit_tiny|dynamo": _row("vit_tiny", "dynamo", status="refused", refusing_ops=["Softmax"], message="m"),
        "swin_tiny|dynamo": _row("swin_tiny", "dynamo", status="refused", refusing_ops=["Softmax"], message="m"),
        "resnet18|torchscript": _row("resnet18", "torchscript", status="explained", grad_err=3e-4,
                                     grad_err_torch32=1e-7, gradient="MISMATCH", tie_count=0,
                                     methods={"lrp": "ok", "epsilon_plus_flat": "nonfinite: InputError: overflowed"},
                                     time_ratio={"lrp": 5.0}),
        "resnet18|dynamo": _row("resnet18", "dynamo", status="explained", grad_err=2e-2, gradient="tie", tie_count=3,
                                methods={"lrp": "ok"}),
    }
    text = cov.render_report(results, "python tools/coverage.py", "abc", names)
    ranking = text[text.index("### Refusing ops"):text.index("## Model × exporter")]
    assert ranking.index("`Softmax` | 3 | 2 |") < ranking.index("`Erf` | 1 | 0 |")
    assert "1 mismatches" in text.replace("**", "") and "resnet18 (torchscript): gradient error 3.00e-04" in text
    assert "Runs with NaN/inf in some method: 1" in text
    assert "| resnet18 | torchvision |" in text and "5×" in text
    assert "3 refused" in text and "2 explained" in text


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_signal_cnn_end_to_end(tmp_path: Path) -> None:
    """Build, export (TorchScript), explain: gradient equal to float64 autograd, every method finite."""
    res = cov.run_job("signal_cnn1d", "torchscript", cache=tmp_path)
    assert res["status"] == "explained", res.get("message")
    assert res["export_err"] < 1e-5
    assert res["grad_err"] < 1e-5 and res["gradient"] == "ok"
    assert res["grad_err_torch32"] < 1e-5
    assert not [m for m, s in res["methods"].items() if s.startswith("nonfinite")]
    assert res["methods"]["gradient"] == "ok" and res["methods"]["lrp"] == "ok"
    assert res["time_ratio"]["lrp"] > 0
    assert (tmp_path / f"signal_cnn1d.torchscript.{cov.ZOO_BY_NAME['signal_cnn1d'].key()}.onnx").exists()


# ------------------------------------------------------------------------------------------------ the reference


def test_explicit_batch_norm_gives_the_exact_gradient() -> None:
    """The float64 reference: evaluation-mode BatchNorm followed by flatten/transpose/mean (a transformer head).

    The exact gradient of ``mean over tokens of bn(x)[:, c]`` is ``w_c / sqrt(var_c + eps) / tokens`` on
    channel ``c`` and zero elsewhere; the written-out BatchNorm gives it, and the directional finite
    difference agrees with it.
    """
    from torch import nn

    torch.manual_seed(0)
    bn = nn.BatchNorm2d(12).eval().double()
    with torch.no_grad():
        bn.running_var.uniform_(0.5, 2.0)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.weight.uniform_(0.5, 1.5)

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = bn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(x).flatten(2).transpose(1, 2).mean(1)

    head = Head()
    x = torch.randn(1, 12, 4, 4, dtype=torch.float64)
    entry = cov.ZooEntry("unit_head", "custom", "", (12, 4, 4), ("none",))
    g = cov._torch_gradient(head, entry, (x,), 3, torch.float64)
    exact = np.zeros((1, 12, 4, 4))
    exact[0, 3] = float(bn.weight[3] / torch.sqrt(bn.running_var[3] + bn.eps)) / 16
    assert np.abs(g - exact).max() <= 1e-15
    assert cov.directional_check(head, x, 3, g) < 1e-8
    wrong = exact.copy()
    wrong[0, 5] = 0.1
    assert cov.directional_check(head, x, 3, wrong) > 1e-3


@pytest.mark.slow
def test_command_line_runs_a_child_and_writes_the_report(tmp_path: Path) -> None:
    """``--only`` one model, one exporter: a child process runs it, results.json is merged, the report written;
    a timeout becomes a result instead of stopping the run."""
    out = tmp_path / "coverage.md"
    assert cov.main(["--only", "signal_cnn1d", "--exporter", "torchscript", "--jobs", "1", "--cache", str(tmp_path),
                     "--out", str(out)]) == 0
    results = cov.load_results(tmp_path / "results.json")
    assert results["signal_cnn1d|torchscript"]["status"] == "explained"
    text = out.read_text()
    assert "| signal_cnn1d | torchscript | explained |" in text
    assert "1 explained" in text
    slow = cov.run_child("signal_cnn1d", "dynamo", tmp_path, timeout=0.5, tie_tol=1e-6)
    assert slow["status"] == "timeout"
