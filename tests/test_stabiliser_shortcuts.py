"""The ε stabiliser's sign test is left out only where it cannot change a number.

``LinearRule._divide`` uses ``z + ε`` for denominators that are sums of non-negative products (Z⁺) and
``|z| + ε`` for a layer whose output relevance is 0 wherever its output is negative
(``Plan.vanishing_below_zero``). Both must give exactly the heatmaps of the full stabiliser; the
analysis must say no where a rule after the ReLU is not proportional to its input (Flat, W²) or the
output also feeds a residual sum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxlrp.plan as plan_mod
from onnxlrp import Explainer
from onnxlrp import rules as R
from onnxlrp.methods import METHODS
from onnxlrp.ops.linear import LinearLayer
from onnxlrp.propagation import composite_for
from onnxlrp.rules.base import SafeDivide

FIX = Path(__file__).parent / "fixtures"
SHIPPED = Path(__file__).parent.parent / "models" / "efficientnet_lite0.onnx"


def _plan(ex: Explainer, shape: tuple[int, ...]) -> plan_mod.Plan:
    return ex._plan(shape)


@pytest.mark.parametrize("path", [FIX / "vgg.onnx", FIX / "resnet.onnx", SHIPPED])
def test_shortcuts_change_no_number(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ex = Explainer(str(path), device="cpu", kernels="engine")
    shape = (2,) + tuple(d or 8 for d in ex.prepared.input_dims[1:])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    methods = ["lrp_epsilon", "epsilon_plus_flat", "lrp", "sglrp", "epsilon_gamma_box", "attnlrp"]
    methods = [m for m in methods if m in METHODS]
    got = {m: ex.explain(x, [0, 1], m) for m in methods}
    plan = _plan(ex, shape)
    assert plan.vanishing_below_zero(composite_for(METHODS["lrp_epsilon"], {}).rule_for)  # some layers qualify
    monkeypatch.setattr(plan_mod.Plan, "vanishing_below_zero", lambda self, rule_for: {})
    monkeypatch.setattr(R.linear.LinearRule, "_divide",
                        staticmethod(lambda xp, ctx, layer, group, terms, g, z: group.stab.divide(xp, g, z)))
    for m in methods:
        ref = ex.explain(x, [0, 1], m)
        assert np.array_equal(got[m], ref), m  # bitwise: the shortcuts are exact


def test_analysis_says_no_where_it_must() -> None:
    ex = Explainer(str(FIX / "resnet.onnx"), device="cpu", kernels="engine")
    shape = (1,) + tuple(ex.prepared.input_dims[1:])
    plan = _plan(ex, shape)
    comp = composite_for(METHODS["lrp_epsilon"], {})
    yes = plan.vanishing_below_zero(comp.rule_for)
    consumers = plan.graph.consumers()
    for layer in plan.graph.linear_layers:
        z = layer.outputs[0]
        readers = consumers.get(z, [])
        if any(r.kind != "activation" for r in readers):  # e.g. a residual sum reads it: no
            assert z not in yes
    assert any(z in yes for z in (layer.outputs[0] for layer in plan.graph.linear_layers))

    flat = R.flat(SafeDivide())

    def flat_inside(layer):  # type: ignore[no-untyped-def]
        return flat if isinstance(layer, LinearLayer) else comp.rule_for(layer)

    assert plan.vanishing_below_zero(flat_inside) == {}  # Flat gives relevance to zero inputs
