"""The Explainer's default CPU path (compiled graphs, ``kernels="auto"``) against the engine (``kernels="engine"``).

Every propagation and gradient method the fast path takes must give the engine's heatmaps: 1e-5 relative
(max |diff| / max |engine|), with the same blow-up warning, and the compiled path really taken (a session
was made). Float32 ties between
the two forwards (onnxruntime fuses differently when intermediate tensors are outputs) are proven as in
``test_compiler``: the engine's backward on the compiled graph's own forward tensors agrees (for maps that cancel,
CLRP/SGLRP, within twice the engine's own float32 spread between its NumPy and onnxruntime kernels).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest

from onnxlrp import Explainer, InputError, RelevanceWarning
from onnxlrp.compiler import compile_explanation
from onnxlrp.compiler.verify import same_forward_error

FIX = Path(__file__).parent / "fixtures"
SHIPPED = Path(__file__).parents[1] / "models" / "efficientnet_lite0.onnx"
METHODS = ["lrp", "sglrp", "clrp", "lrp_epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "gradient",
           "input_x_gradient", "guided_backprop"]
TOL = 1e-5


@pytest.mark.parametrize("path", [FIX / "vgg.onnx", FIX / "resnet.onnx", FIX / "densenet.onnx", SHIPPED])
def test_fast_path_equals_engine(path: Path) -> None:
    fast = Explainer(str(path), device="cpu")
    engine = Explainer(str(path), device="cpu", kernels="engine")
    assert fast._fast is not None and engine._fast is None
    shape = tuple(d or 8 for d in fast.input_shape[1:])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2,) + shape).astype(np.float32)
    tg = rng.integers(0, engine.predict(x).shape[1], 2)
    for method in [m for m in METHODS if m in _known()]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ref = engine.explain(x, tg, method)
        unstable = any(issubclass(w.category, RelevanceWarning) for w in caught)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = fast.explain(x, tg, method)
        assert any(issubclass(w.category, RelevanceWarning) for w in caught) == unstable, method  # the same warning
        err = H.rel_err(got, ref)
        if err > TOL and not unstable:
            proto = compile_explanation(str(path), method, batch=2, verify=False)
            same = same_forward_error(proto, engine, x, tg, method)
            # maps that cancel (CLRP/SGLRP): up to twice the engine's own spread, its NumPy against its ORT kernels
            own = H.rel_err(Explainer(str(path), device="cpu", kernels="array").explain(x, tg, method), ref)
            assert same <= max(TOL, 2 * own), (f"{path.name} {method}: fast path vs engine {err:.3g}, same forward "
                                               f"{same:.3g}, the engine's own spread {own:.3g}")
    assert len(fast._fast._sessions) > 0  # the compiled path was taken


def test_fast_path_keeps_the_engine_checks() -> None:
    """Scores that overflow float32 are refused on the fast path (its diagnostic output), as on the engine."""
    fast = Explainer(str(FIX / "vgg.onnx"), device="cpu")
    x = np.full((1,) + tuple(fast.input_shape[1:]), 3e38, np.float32)
    with pytest.raises(InputError, match="NaN or infinite"):
        fast.explain(x, 0, "lrp_epsilon")
    assert len(fast._fast._sessions) == 1  # it was the compiled graph that refused


def _known() -> set[str]:
    from onnxlrp import METHODS as ALL

    return set(ALL)
