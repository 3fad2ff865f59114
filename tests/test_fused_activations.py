"""Element-wise activations written as several nodes (SiLU, GELU in its Erf and tanh forms, Mish,
HardSwish written out, Swish-β, QuickGELU) are recognised as one activation, whatever the order the
exporter wrote them in: ``onnxlrp info`` names them, the gradient is exact (float64 finite
differences), and the LRP composites give them the activation rule (relevance passes), as Zennit
does for ``nn.SiLU``/``nn.GELU``. Live check against Zennit's EpsilonPlusFlat when torch is installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops._op import OpRunUnaryNum

from onnxlrp import Explainer
from onnxlrp.ops.fused import erf

INV_SQRT2 = 1 / math.sqrt(2)


def silu(b: H.Builder, x: str) -> str:
    return b.op("Mul", [x, b.op("Sigmoid", [x])])  # type: ignore[list-item]


def silu_reversed(b: H.Builder, x: str) -> str:
    return b.op("Mul", [b.op("Sigmoid", [x]), x])  # type: ignore[list-item]


def swish_beta(b: H.Builder, x: str) -> str:
    return b.op("Mul", [x, b.op("Sigmoid", [b.op("Mul", [x, b.const(np.float32(1.5))])])])  # type: ignore[list-item]


def gelu_erf_torchscript(b: H.Builder, x: str) -> str:
    """``Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)`` (torch.onnx.export's order)."""
    e = b.op("Erf", [b.op("Div", [x, b.const(np.float32(math.sqrt(2)))])])
    return b.op("Mul", [b.op("Mul", [x, b.op("Add", [e, b.const(np.float32(1))])]), b.const(np.float32(0.5))])


def gelu_erf_half_first(b: H.Builder, x: str) -> str:
    """``Mul(Mul(x, 0.5), Add(1, Erf(Mul(x, 1/√2))))``."""
    half = b.op("Mul", [x, b.const(np.float32(0.5))])
    e = b.op("Erf", [b.op("Mul", [x, b.const(np.float32(INV_SQRT2))])])
    return b.op("Mul", [half, b.op("Add", [b.const(np.float32(1)), e])])  # type: ignore[list-item]


def gelu_tanh(b: H.Builder, x: str) -> str:
    cube = b.op("Pow", [x, b.const(np.float32(3))])
    inner = b.op("Add", [x, b.op("Mul", [cube, b.const(np.float32(0.044715))])])
    t = b.op("Tanh", [b.op("Mul", [inner, b.const(np.float32(math.sqrt(2 / math.pi)))])])
    return b.op("Mul", [b.op("Mul", [x, b.const(np.float32(0.5))]), b.op("Add", [t, b.const(np.float32(1))])])


def quick_gelu(b: H.Builder, x: str) -> str:
    return b.op("Mul", [x, b.op("Sigmoid", [b.op("Mul", [b.const(np.float32(1.702)), x])])])  # type: ignore[list-item]


def mish(b: H.Builder, x: str) -> str:
    return b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])])  # type: ignore[list-item]


def hardswish_written_out(b: H.Builder, x: str) -> str:
    c = b.op("Clip", [b.op("Add", [x, b.const(np.float32(3))]), b.const(np.float32(0)), b.const(np.float32(6))])
    return b.op("Div", [b.op("Mul", [x, c]), b.const(np.float32(6))])  # type: ignore[list-item]


PATTERNS: dict[str, tuple[Callable[[H.Builder, str], str], str]] = {
    "silu": (silu, "SiLU"),
    "silu_reversed": (silu_reversed, "SiLU"),
    "swish_beta": (swish_beta, "Elementwise"),
    "gelu_erf_torchscript": (gelu_erf_torchscript, "GELU"),
    "gelu_erf_half_first": (gelu_erf_half_first, "GELU"),
    "gelu_tanh": (gelu_tanh, "GELU(tanh)"),
    "quick_gelu": (quick_gelu, "QuickGELU"),
    "mish": (mish, "Mish"),
    "hardswish_written_out": (hardswish_written_out, "HardSwish"),
}


def _net(act: Callable[[H.Builder, str], str], seed: int = 0) -> H.Arch:
    """Conv → act → Conv → act → GAP → Gemm, and a second branch reusing the first conv's output."""
    b = H.Builder(seed)
    h = b.conv("x", 3, 6, [3, 3], pads=[1, 1, 1, 1])
    a = act(b, h)
    h2 = act(b, b.conv(a, 6, 5, [3, 3], pads=[1, 1, 1, 1]))
    h2 = b.op("Flatten", [b.op("GlobalAveragePool", [h2])])
    y = b.gemm(h2, 5, 4)  # type: ignore[arg-type]
    return H._finish(b, "act", (3, 5, 5), y, 17)


class _Erf64(OpRunUnaryNum):
    """ONNX's reference ``Erf`` rounds to float32 (``np.vectorize(otypes="f")``); this one keeps float64."""

    op_domain = ""

    def _run(self, x):  # type: ignore[no-untyped-def]
        return (np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype),)


class _Reference64(H.Reference64):
    def __init__(self, model, output):  # type: ignore[no-untyped-def]
        _Erf64.__name__ = "Erf"
        self.evaluator = ReferenceEvaluator(H.to_float64(H.with_outputs(model, [output])), new_ops=[_Erf64])
        self.output = output


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fused")


def test_erf_approximation() -> None:
    t = np.linspace(-6, 6, 2001)
    ref = np.array([math.erf(v) for v in t])
    assert np.max(np.abs(erf(np, t) - ref)) < 2e-7


@pytest.mark.parametrize("name", list(PATTERNS))
def test_pattern_is_one_activation_with_an_exact_gradient(name: str, folder: Path) -> None:
    act, label = PATTERNS[name]
    arch = _net(act)
    ex = Explainer(str(H.save_checked(arch.model, folder, name, arch.shape)), device="cpu")
    rows = ex.layers("epsilon_plus_flat")
    fused = [r for r in rows if r["kind"] == "activation"]
    assert [r["op"] for r in fused] == [label, label], rows
    assert all(r["rule"] == "pass" for r in fused)
    assert not any(r["kind"] == "gate" for r in rows)
    x = np.random.default_rng(1).standard_normal((2,) + arch.shape).astype(np.float32)
    jac = _Reference64(arch.model, arch.logits).jacobian(x)
    got = ex.explain(x, targets=[0, 1, 2, 3], method="gradient")
    for t in range(4):
        assert H.rel_err(got[t], jac[:, t]) < 1e-5, (name, t)


@pytest.mark.parametrize("name", ["silu", "gelu_erf_torchscript", "mish"])
def test_lrp_passes_relevance_through_the_activation(name: str, folder: Path) -> None:
    """On a bias-free net whose activations are the only non-linearity, epsilon LRP conserves y_t."""
    act, _ = PATTERNS[name]
    b = H.Builder(4)
    h = act(b, b.conv("x", 3, 6, [3, 3], pads=[1, 1, 1, 1], bias=False))
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    y = b.gemm(h, 6, 3, bias=False)  # type: ignore[arg-type]
    arch = H._finish(b, "cons", (3, 5, 5), y, 17)
    ex = Explainer(str(H.save_checked(arch.model, folder, f"cons_{name}", arch.shape)), device="cpu")
    x = np.random.default_rng(2).standard_normal((1,) + arch.shape).astype(np.float32)
    yt = ex.predict(x)[0, 1]
    heat = ex.explain(x, target=1, method="lrp_epsilon", epsilon=1e-9)
    # the activation passes R unchanged: the conv's output relevance sums to y_t, and the conv's ε rule
    # conserves it up to the ε stabiliser
    assert abs(heat.sum() - yt) < 1e-4 * max(1.0, abs(yt))


def test_a_gate_of_two_different_sources_stays_a_gate(folder: Path) -> None:
    """Squeeze-excitation (a sigmoid of another branch times the signal) is not an activation."""
    arch = H.arch_se_gate()
    ex = Explainer(str(H.save_checked(arch.model, folder, "se", arch.shape)), device="cpu")
    kinds = [r["kind"] for r in ex.layers()]
    assert "gate" in kinds


def test_per_channel_scale_after_gelu_is_not_absorbed(folder: Path) -> None:
    """A layer-scale gain (a per-channel constant) after the activation stays a layer of its own."""
    b = H.Builder(6)
    h = gelu_erf_torchscript(b, b.conv("x", 3, 4, [3, 3], pads=[1, 1, 1, 1]))
    h = b.op("Mul", [h, b.const(np.linspace(0.5, 2, 4).reshape(1, 4, 1, 1).astype(np.float32))])
    h = b.relu(h)
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    y = b.gemm(h, 4, 3)  # type: ignore[arg-type]
    arch = H._finish(b, "ls", (3, 5, 5), y, 17)
    ex = Explainer(str(H.save_checked(arch.model, folder, "ls", arch.shape)), device="cpu")
    ops = [r["op"] for r in ex.layers()]
    assert "GELU" in ops and "Mul" in ops, ops


@pytest.mark.crosscheck
@pytest.mark.parametrize("act", ["silu", "gelu"])
@pytest.mark.parametrize("dynamo", [False, True])
def test_zennit_epsilon_plus_flat_on_silu_and_gelu_nets(act: str, dynamo: bool, folder: Path) -> None:
    """Live: torch exports (both exporters) of a 3-conv SiLU/GELU net; our EpsilonPlusFlat = Zennit's."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("zennit")
    from zennit.composites import EpsilonPlusFlat

    torch.manual_seed(0)
    layer = torch.nn.SiLU if act == "silu" else torch.nn.GELU
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), layer(), torch.nn.Conv2d(8, 8, 3, padding=1), layer(),
        torch.nn.Conv2d(8, 6, 3, padding=1), layer(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(6, 5),
    ).eval().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    path = folder / f"torch_{act}_{'dynamo' if dynamo else 'ts'}.onnx"
    export_kw = {"dynamo": True} if dynamo else {"dynamo": False}
    torch.onnx.export(net.float(), x.float(), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes=None if dynamo else {"x": {0: "N"}}, opset_version=18, **export_kw)
    net.double()
    target = 2
    comp = EpsilonPlusFlat(epsilon=1e-6)
    xr = x.clone().requires_grad_(True)
    with comp.context(net) as modified:
        out = modified(xr)
        start = torch.nn.functional.one_hot(torch.full((2,), target), 5).double() * out.detach()
        (grad,) = torch.autograd.grad(out, xr, start)
    ref = (grad).numpy()
    ex = Explainer(str(path), device="cpu")
    assert any(r["op"] in ("SiLU", "GELU", "Gelu") for r in ex.layers("epsilon_plus_flat"))
    got = ex.explain(x.float().numpy(), target=target, method="epsilon_plus_flat")
    assert H.rel_err(got, ref) < 1e-4
