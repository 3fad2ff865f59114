"""Refusals: each raises the right ``onnxlrp.errors`` class with a message that names the culprit
(node, op, tensor, file, class index, method or option).
"""

from __future__ import annotations

import os
import re
import warnings
import zlib
from pathlib import Path

import helpers_onnx as H
import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import onnxlrp
from onnxlrp import DeviceError, Explainer, InputError, ModelLoadError, OnnxLrpError, UnsupportedModelError


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("errors")


@pytest.fixture(scope="module")
def image_model(folder: Path) -> tuple[Path, Explainer]:
    arch = H.arch_image(seed=3)
    path = H.save_checked(arch.model, folder, "image", arch.shape)
    return path, Explainer(str(path), device="cpu")


def test_errors_share_a_base_class() -> None:
    for cls in (ModelLoadError, UnsupportedModelError, InputError, DeviceError):
        assert issubclass(cls, OnnxLrpError)
        assert getattr(onnxlrp.errors, cls.__name__) is cls


# ---------------------------------------------------------------------------------------------
# unsupported graphs


def test_unsupported_einsum_on_the_path(folder: Path) -> None:
    b = H.Builder()
    h = b.relu(b.gemm("x", 4, 5))
    e = b.op("Einsum", [h, b.const(b.weight([5, 3], 5))], equation="ni,ij->nij")
    b.nodes[-1].name = "my_einsum"
    y = b.op("ReduceSum", [e, b.ints([1])], keepdims=0, out="scores")  # type: ignore[list-item]
    path = H.save_checked(b.model([None, 4], [(y, H.FLOAT)], 13), folder, "einsum", (4,))  # type: ignore[list-item]
    # Einsum of two activations is a product, with a constant in the dense form a dense layer (tests/test_attention.py);
    # other forms with a constant operand are refused by name
    with pytest.raises(UnsupportedModelError, match=r"my_einsum.*Einsum") as info:
        Explainer(str(path), device="cpu")
    assert "constant operand" in str(info.value) and "dense form" in str(info.value)


def test_unsupported_lrn_on_the_path(folder: Path) -> None:
    b = H.Builder()
    h = b.relu(b.conv("x", 3, 4, [3, 3], pads=[1, 1, 1, 1]))
    h = b.op("LRN", [h], size=3)
    b.nodes[-1].name = "local_norm"
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [h])]), 4, 2)  # type: ignore[arg-type]
    path = H.save_checked(b.model([None, 3, 5, 5], [(y, H.FLOAT)], 13), folder, "lrn", (3, 5, 5))
    with pytest.raises(UnsupportedModelError, match=r"local_norm.*\bLRN\b"):
        Explainer(str(path), device="cpu")


def test_unsupported_op_off_the_path_is_fine(folder: Path) -> None:
    """An Einsum that does not lie between the input and the explained output is no obstacle."""
    b = H.Builder()
    y = b.gemm("x", 4, 3)
    side = b.op("Einsum", ["x"], equation="ni->n")
    path = H.save_checked(b.model([None, 4], [(y, H.FLOAT), (side, H.FLOAT)], 13), folder, "side", (4,))  # type: ignore[list-item]
    ex = Explainer(str(path), device="cpu")
    assert ex.explain(np.ones((1, 4), np.float32), target=0, method="gradient").shape == (1, 4)


def test_dynamic_shape_model_refused_at_explain_time(folder: Path) -> None:
    """With a dynamic spatial size the graph is only checked when an input arrives; the error is the same."""
    b = H.Builder()
    h = b.op("LRN", [b.conv("x", 3, 2, [1, 1])], size=3)
    b.nodes[-1].name = "late_lrn"
    y = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    path = H.save_checked(b.model([None, 3, "H", "W"], [(y, H.FLOAT)], 13), folder, "dyn_lrn", (3, 5, 5))
    ex = Explainer(str(path), device="cpu")
    with pytest.raises(UnsupportedModelError, match="late_lrn.*LRN"):
        ex.explain(np.zeros((1, 3, 5, 5), np.float32), target=0)


def test_non_classifier_output(folder: Path) -> None:
    b = H.Builder()
    y = b.op("Relu", [b.conv("x", 3, 4, [3, 3])], out="feature_map")
    path = H.save_checked(b.model([None, 3, 6, 6], [(y, H.FLOAT)], 13), folder, "fmap", (3, 6, 6))  # type: ignore[list-item]
    with pytest.raises(UnsupportedModelError, match=r"feature_map.*\[1, 4, 4, 4\].*classifier"):
        Explainer(str(path), device="cpu")


def test_unknown_output_name(image_model: tuple[Path, Explainer]) -> None:
    path, _ = image_model
    with pytest.raises(InputError, match="no_such_output"):
        Explainer(str(path), device="cpu", output="no_such_output")


# ---------------------------------------------------------------------------------------------
# inputs, targets, methods, options


def test_wrong_input_shape_and_rank(image_model: tuple[Path, Explainer]) -> None:
    _, ex = image_model
    with pytest.raises(InputError, match=r"\[2, 3, 5, 6\].*'x'.*\[\?, 3, 6, 6\]"):
        ex.explain(np.zeros((2, 3, 5, 6), np.float32), target=0)
    with pytest.raises(InputError, match=r"\[3, 6, 6\].*'x'.*rank 4"):
        ex.explain(np.zeros((3, 6, 6), np.float32), target=0)
    with pytest.raises(InputError, match="NaN"):
        ex.explain(np.full((1, 3, 6, 6), np.nan, np.float32), target=0)
    with pytest.raises(InputError, match=r"\[1, 6, 6, 3\]"):
        ex.predict(np.zeros((1, 6, 6, 3), np.float32))


@pytest.mark.parametrize("target", [4, 17, -1])
def test_target_out_of_range(target: int, image_model: tuple[Path, Explainer]) -> None:
    _, ex = image_model
    x = np.zeros((2, 3, 6, 6), np.float32)
    with pytest.raises(InputError, match=rf"class index {target} .*4 classes"):
        ex.explain(x, target=target, method="lrp")
    with pytest.raises(InputError, match=rf"class index {target} "):
        ex.explain(x, targets=[0, target], method="gradient")
    with pytest.raises(InputError, match=rf"class index {target} "):
        ex.explain(x, target=[1, target], method="gradcam")


def test_target_shape_mismatch(image_model: tuple[Path, Explainer]) -> None:
    _, ex = image_model
    with pytest.raises(InputError, match="one class per sample"):
        ex.explain(np.zeros((2, 3, 6, 6), np.float32), target=[0, 1, 2])


def test_unknown_method(image_model: tuple[Path, Explainer]) -> None:
    _, ex = image_model
    with pytest.raises(InputError, match=r"'deep_lift'.*available: .*\blrp\b.*sglrp"):
        ex.explain(np.zeros((1, 3, 6, 6), np.float32), target=0, method="deep_lift")


@pytest.mark.parametrize(("method", "option"), [("gradient", "epsilon"), ("lrp", "gamma"), ("sglrp", "steps"),
                                                ("gradcam", "low")])
def test_unknown_option(method: str, option: str, image_model: tuple[Path, Explainer]) -> None:
    _, ex = image_model
    with pytest.raises(InputError, match=rf"'{method}'.*\b{option}\b"):
        ex.explain(np.zeros((1, 3, 6, 6), np.float32), target=0, method=method, **{option: 1.0})


# ---------------------------------------------------------------------------------------------
# files


def test_missing_file(folder: Path) -> None:
    path = folder / "nowhere" / "model.onnx"
    with pytest.raises(ModelLoadError, match=re.escape(str(path))):
        Explainer(str(path), device="cpu")


@pytest.mark.parametrize("content", [b"this is not an ONNX model\n" * 4, b"\x89PNG\r\n\x1a\n" + bytes(range(200))])
def test_file_that_is_not_onnx(content: bytes, folder: Path) -> None:
    path = folder / f"garbage{len(content)}.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=re.escape(str(path))):
        Explainer(str(path), device="cpu")


def test_empty_file_names_the_file(folder: Path) -> None:
    path = folder / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=re.escape(str(path))):
        Explainer(str(path), device="cpu")


def test_directory_instead_of_file(folder: Path) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(str(folder))):
        Explainer(str(folder), device="cpu")


def _external(folder: Path, location: str, data_file: Path) -> Path:
    """The image model with its first initializer stored externally at ``location`` (data written to data_file)."""
    arch = H.arch_image(seed=3)
    model = onnx.ModelProto()
    model.CopyFrom(arch.model)
    t = model.graph.initializer[0]
    data = numpy_helper.to_array(t).tobytes()
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_bytes(data)
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    sub = folder / "models"
    sub.mkdir(exist_ok=True)
    path = sub / f"ext_{zlib.crc32(location.encode())}.onnx"
    onnx.save(model, str(path))
    return path


def test_external_data_inside_the_folder_loads(folder: Path, image_model: tuple[Path, Explainer]) -> None:
    path = _external(folder, "weights/w0.bin", folder / "models" / "weights" / "w0.bin")
    ex = Explainer(str(path), device="cpu")
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(ex.predict(x), image_model[1].predict(x))


def test_external_data_with_dotdot_is_refused(folder: Path) -> None:
    outside = folder / "outside.bin"
    path = _external(folder, "../outside.bin", outside)
    assert (path.parent / "../outside.bin").resolve() == outside.resolve()  # the file is really there
    name = onnx.load(str(path), load_external_data=False).graph.initializer[0].name
    with pytest.raises(ModelLoadError, match=rf"'{re.escape(name)}'.*\.\./outside\.bin.*outside"):
        Explainer(str(path), device="cpu")


def test_external_data_with_absolute_path_is_refused(folder: Path) -> None:
    target = (folder / "abs" / "w.bin").resolve()
    path = _external(folder, str(target), target)
    with pytest.raises(ModelLoadError, match=rf"{re.escape(str(target))}.*absolute"):
        Explainer(str(path), device="cpu")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_external_data_through_a_symlink_out_is_refused(folder: Path) -> None:
    outside = folder / "outside2.bin"
    path = _external(folder, "link.bin", outside)
    link = path.parent / "link.bin"
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(outside)
    with pytest.raises(ModelLoadError, match=r"link\.bin.*outside"):
        Explainer(str(path), device="cpu")


# ---------------------------------------------------------------------------------------------
# devices


def test_cuda_without_gpu_raises_device_error(image_model: tuple[Path, Explainer]) -> None:
    if onnxlrp.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="cuda"):
        Explainer(str(image_model[0]), device="cuda")


def test_auto_device_falls_back_quietly(image_model: tuple[Path, Explainer]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ex = Explainer(str(image_model[0]), device="auto")
    assert ex.device == ("cuda" if onnxlrp.cuda_available() else "cpu")


def test_unknown_device(image_model: tuple[Path, Explainer]) -> None:
    with pytest.raises(DeviceError, match="tpu"):
        Explainer(str(image_model[0]), device="tpu")


def test_fixed_batch_that_does_not_divide(folder: Path) -> None:
    arch = H.arch_image(seed=3, batch=2)
    ex = Explainer(str(H.save_checked(arch.model, folder, "batch2", arch.shape)), device="cpu")
    assert ex.explain(np.zeros((4, 3, 6, 6), np.float32), target=0, method="gradient").shape == (4, 3, 6, 6)
    with pytest.raises(InputError, match=r"fixed batch size of 2.*3 samples"):
        ex.explain(np.zeros((3, 3, 6, 6), np.float32), target=0)


def test_non_integer_targets(image_model: tuple[Path, Explainer]) -> None:
    _, ex = image_model
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(ex.explain(x, target=2.0, method="gradient"),
                                  ex.explain(x, target=2, method="gradient"))
    with pytest.raises(InputError, match=r"integers.*2\.5"):
        ex.explain(x, target=2.5, method="gradient")


def test_model_from_bytes_and_proto(image_model: tuple[Path, Explainer], folder: Path) -> None:
    path, ex = image_model
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    want = ex.explain(x, target=1, method="lrp")
    for source in (path.read_bytes(), onnx.load(str(path))):
        np.testing.assert_array_equal(Explainer(source, device="cpu").explain(x, target=1, method="lrp"), want)
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        Explainer(b"\xff\xfe not protobuf", device="cpu")
    ext = _external(folder, "weights/w1.bin", folder / "models" / "weights" / "w1.bin")
    with pytest.raises(ModelLoadError, match="external data.*file path"):
        Explainer(ext.read_bytes(), device="cpu")


def test_quotient_and_product_of_two_activations_are_explained(folder: Path) -> None:
    """``Div`` of two activations (from two different layers) is a quotient whose denominator the LRP
    composites hold constant (kind ``quotient``); ``Mul`` of two activations is a bilinear product (kind
    ``product``, tests/test_attention.py). Both have their exact gradient. (A product or quotient of two
    functions of one tensor, ``x·relu(x)``, ``x / σ(x)``, is one fused activation.)"""
    for op, kind in (("Div", "quotient"), ("Mul", "product")):
        b = H.Builder()
        h, other = b.gemm("x", 4, 5), b.op("Sigmoid", [b.gemm("x", 4, 5)]) if op == "Div" else b.relu(b.gemm("x", 4, 5))
        y = b.gemm(b.op(op, [h, other]), 5, 2)  # type: ignore[list-item]
        b.nodes[-2].name = f"bilinear_{op}"
        model = b.model([None, 4], [(y, H.FLOAT)], 13)  # type: ignore[list-item]
        path = H.save_checked(model, folder, f"bilinear_{op}", (4,))
        ex = Explainer(str(path), device="cpu")
        rows = [r for r in ex.layers("lrp") if r["name"] == f"bilinear_{op}"]
        assert [r["kind"] for r in rows] == [kind]
        if op == "Div":
            assert rows[0]["rule"] == "signal-takes-all"
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        jac = H.Reference64(model, y).jacobian(x)
        got = ex.explain(x, targets=[0, 1], method="gradient")
        for t in range(2):
            assert H.rel_err(got[t], jac[:, t]) < 1e-5


def test_two_float_inputs_and_integer_input_without_embedding_are_refused(folder: Path) -> None:
    b = H.Builder()
    y = b.op("Add", [b.gemm("x", 4, 2), b.gemm("x2", 4, 2)])
    model = b.model([None, 4], [(y, H.FLOAT)], 13)  # type: ignore[list-item]
    model.graph.input.append(onnx.helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 4]))
    with pytest.raises(UnsupportedModelError, match=r"several float inputs \(x, x2\).*input="):
        Explainer(model, device="cpu")
    b = H.Builder()
    y = b.gemm(b.op("Cast", ["ids"], to=TensorProto.FLOAT), 4, 2)  # type: ignore[arg-type]
    model = b.model([None, 4], [(y, H.FLOAT)], 13, input_name="ids")
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(UnsupportedModelError, match=r"ids int64.*no float input and no token ids"):
        Explainer(model, device="cpu")


def test_gradcam_without_a_feature_map(folder: Path) -> None:
    arch = H.arch_mlp()
    ex = Explainer(str(H.save_checked(arch.model, folder, "mlp", arch.shape)), device="cpu")
    with pytest.raises(InputError, match="spatial feature map"):
        ex.explain(np.zeros((1, 6), np.float32), target=0, method="gradcam")


def test_output_option(folder: Path) -> None:
    arch = H.arch_sklearn()
    path = H.save_checked(arch.model, folder, "sk", arch.shape)
    assert Explainer(str(path), device="cpu", output="probabilities").output_name == arch.logits
    with pytest.raises(UnsupportedModelError, match="'label'.*not a float32"):
        Explainer(str(path), device="cpu", output="label")
