"""Fuzz of the Python API with careless and hostile arguments.

Every call either returns a correct, finite result or raises an ``OnnxLrpError`` subclass whose
message names the bad argument; no other exception type ever escapes, and no heatmap or logit
with NaN/inf is ever returned.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import helpers_onnx as H
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxlrp import DeviceError, Explainer, InputError, ModelLoadError, OnnxLrpError, list_methods

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
FAST = {"smoothgrad": {"n_samples": 2}, "integrated_gradients": {"steps": 2}}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Explainer]:
    arch = H.arch_image(seed=5)
    path = H.save_checked(arch.model, tmp_path_factory.mktemp("fuzz_api"), "image", arch.shape)
    return path, Explainer(str(path), device="cpu")


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the constructor


@pytest.mark.parametrize("bad", [None, 123, 1.5, ["a.onnx"], {"m": 1}, object()])
def test_model_argument_of_the_wrong_type(bad: object) -> None:
    with pytest.raises(ModelLoadError, match=f"not {type(bad).__name__}"):
        Explainer(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"device": 5}, DeviceError, "device"),
    ({"device": "tpu"}, DeviceError, "tpu"),
    ({"threads": "two"}, InputError, "threads"),
    ({"threads": 0}, InputError, "threads"),
    ({"threads": -1}, InputError, "threads"),
    ({"threads": True}, InputError, "threads"),
    ({"threads": 2.5}, InputError, "threads"),
    ({"kernels": "fast"}, InputError, "kernels"),
    ({"memory_budget": "lots"}, InputError, "memory_budget"),
    ({"memory_budget": -5}, InputError, "memory_budget"),
    ({"output": 7}, InputError, "output"),
])
def test_constructor_options(model: tuple[Path, Explainer], kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Explainer(model[0], **kwargs)


# ---------------------------------------------------------------------------------------------
# targets


@pytest.mark.parametrize(("target", "match"), [
    ("zebra", "class indices"),
    (b"zebra", "class indices"),
    (10**30, "too large"),
    (-(10**30), "too large"),
    (2.5, r"integers.*2\.5"),
    (float("nan"), "integers"),
    (float("inf"), "integers"),
    ([True, False], "integers"),
    (np.array(["a", "b"]), "class indices"),
    ([[1], [2, 3]], "integers"),
    (-1, "out of range"),
    (4, "out of range"),
    (2**62, "out of range"),
    ([0, 1, 2], "one class per sample"),
])
def test_bad_targets(model: tuple[Path, Explainer], x: np.ndarray, target: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        model[1].explain(x, target=target, method="gradient")  # type: ignore[arg-type]


def test_bad_targets_list(model: tuple[Path, Explainer], x: np.ndarray) -> None:
    for targets, match in (([], "no target"), (["a"], "class indices"), ([10**40], "too large"),
                           ([[0, 1, 2]], r"\(T, 2\)"), ([0.5], "integers")):
        with pytest.raises(InputError, match=match):
            model[1].explain(x, targets=targets, method="lrp")


# ---------------------------------------------------------------------------------------------
# method options


BAD_OPTIONS = [
    ("lrp_epsilon", "epsilon", "abc"), ("lrp_epsilon", "epsilon", -1), ("lrp_epsilon", "epsilon", 0),
    ("lrp_epsilon", "epsilon", float("nan")), ("lrp_epsilon", "epsilon", float("inf")),
    ("lrp_epsilon", "epsilon", None.__class__), ("lrp_epsilon", "epsilon", [0.1]),
    ("epsilon_gamma_box", "gamma", -1), ("epsilon_gamma_box", "gamma", "x"),
    ("epsilon_gamma_box", "gamma", float("nan")),
    ("integrated_gradients", "steps", "ten"), ("integrated_gradients", "steps", 0),
    ("integrated_gradients", "steps", 2.5),
    ("integrated_gradients", "steps", 10**7), ("integrated_gradients", "steps", True),
    ("integrated_gradients", "baseline", float("nan")), ("integrated_gradients", "baseline", np.zeros((5, 5))),
    ("integrated_gradients", "batch_size", 0), ("smoothgrad", "n_samples", 0), ("smoothgrad", "n_samples", "many"),
    ("smoothgrad", "seed", "abc"), ("smoothgrad", "seed", -1), ("smoothgrad", "seed", 1.5),
    ("smoothgrad", "noise_scale", -0.1), ("smoothgrad", "noise_scale", float("inf")),
    ("lrp", "low", float("nan")), ("lrp", "high", float("inf")), ("lrp", "low", "a"), ("lrp", "low", np.zeros(7)),
    ("lrp", "low", 1e39), ("lrp", "bias", "yes"), ("lrp", "bias", 2), ("gradcam", "layer", 5), ("gradcam", "layer", ""),
]


@pytest.mark.parametrize(("method", "key", "value"), BAD_OPTIONS)
def test_bad_option_values(model: tuple[Path, Explainer], x: np.ndarray, method: str, key: str,
                           value: object) -> None:
    with pytest.raises(InputError, match=key):
        model[1].explain(x, target=0, method=method, **{key: value})


def test_low_above_high(model: tuple[Path, Explainer], x: np.ndarray) -> None:
    with pytest.raises(InputError, match="low must not exceed high"):
        model[1].explain(x, target=0, method="lrp", low=1.0, high=0.0)


def test_relu_and_method_types(model: tuple[Path, Explainer], x: np.ndarray) -> None:
    with pytest.raises(InputError, match="relu"):
        model[1].explain(x, target=0, relu="yes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown method"):
        model[1].explain(x, target=0, method=5)  # type: ignore[arg-type]


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.lists(st.floats(-2, 2), max_size=3),
)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(list_methods()), key=st.sampled_from(
    ["epsilon", "gamma", "steps", "n_samples", "seed", "noise_scale", "batch_size", "low", "high", "baseline", "bias"]),
    value=_values)
def test_any_option_value_is_a_result_or_an_input_error(model: tuple[Path, Explainer], x: np.ndarray, method: str,
                                                          key: str, value: object) -> None:
    from onnxlrp import METHODS

    if key not in METHODS[method].options:
        return
    opts = dict(FAST.get(method, {}))
    opts[key] = value
    if key in ("steps", "n_samples") and isinstance(value, int) and value > 4:
        opts[key] = 4  # a valid count: keep the run short (large counts are checked above)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            heat = model[1].explain(x, target=1, method=method, **opts)
    except InputError as exc:
        assert key in str(exc) or "low" in str(exc)
        return
    assert heat.shape == x.shape and np.all(np.isfinite(heat))


# ---------------------------------------------------------------------------------------------
# extreme inputs: finite results or a clear refusal


@pytest.mark.parametrize("fixture", ["densenet", "resnet", "vgg", "mobilenet"])
def test_huge_inputs_give_finite_maps_or_say_overflow(fixture: str) -> None:
    ex = Explainer(FIXTURES / f"{fixture}.onnx", device="cpu")
    shape = [d or 1 for d in ex.input_shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * np.float32(1e30)
    for method in list_methods():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                heat = ex.explain(x, target=1, method=method, **FAST.get(method, {}))
        except InputError as exc:
            assert "overflow" in str(exc)
            continue
        assert np.all(np.isfinite(heat)), method


def test_scores_that_overflow_are_refused(model: tuple[Path, Explainer]) -> None:
    x = np.full((1, 3, 6, 6), 3e38, np.float32)
    with pytest.raises(InputError, match="NaN or infinite"):
        model[1].predict(x)
    with pytest.raises(InputError, match="NaN or infinite"):
        model[1].explain(x, target=0, method="lrp")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(model: tuple[Path, Explainer], value: float) -> None:
    x = np.zeros((1, 3, 6, 6), np.float32)
    x[0, 1, 2, 3] = value
    with pytest.raises(InputError, match="NaN or infinite"):
        model[1].explain(x, target=0)


@pytest.mark.parametrize("bad", ["abc", [[1, 2], [3]], {"a": 1}, None, np.zeros((0, 3, 6, 6)), np.zeros((3, 6, 6))])
def test_bad_input_arrays(model: tuple[Path, Explainer], bad: object) -> None:
    with pytest.raises(InputError):
        model[1].explain(bad, target=0)


def test_every_error_is_an_onnxlrp_error(model: tuple[Path, Explainer], x: np.ndarray) -> None:
    """A grab-bag of wrong calls: only OnnxLrpError subclasses come out."""
    ex = model[1]
    calls = [
        lambda: ex.explain(x, target=0, method="lrp", epsilon=1.0),
        lambda: ex.explain(x, target=0, targets=[0]),
        lambda: ex.explain(x.astype(np.complex64), target=0),
        lambda: ex.layers("nope"),
        lambda: ex.layers("lrp", shape=(1, 3, 0, 6)),
        lambda: ex.predict("x"),
    ]
    for call in calls:
        with pytest.raises(OnnxLrpError):
            call()
