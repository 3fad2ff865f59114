"""Hostile and careless model files (issue 11): each one is refused with the documented
``OnnxLrpError`` subclass and a message naming the problem, or explained correctly — never
another exception type, never a hang.

Models are generated here with ``onnx.helper`` (builders from ``helpers_onnx``) and kept tiny;
the few cases that could block (a FIFO) run in a subprocess with a timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import helpers_onnx as H
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxlrp import Explainer, InputError, ModelLoadError, OnnxLrpError, UnsupportedModelError
from onnxlrp import graph as G
from onnxlrp import loading as L
from onnxlrp.paths import MAX_MODEL_BYTES

ROOT = Path(__file__).resolve().parents[1]


def explain(source: object, x: np.ndarray | None = None, method: str = "gradient") -> np.ndarray | None:
    """Load ``source``; with ``x``, explain class 0 (the outcome every test asserts on)."""
    ex = Explainer(source, device="cpu")  # type: ignore[arg-type]
    return None if x is None else ex.explain(x, target=0, method=method)


def mlp() -> onnx.ModelProto:
    """A two-layer ``[N, 4] → 3`` classifier (the base of most hostile variants)."""
    b = H.Builder(5)
    return b.model([None, 4], [(b.gemm(b.relu(b.gemm("x", 4, 6)), 6, 3), H.FLOAT)], 13)


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


X4 = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# 1. endless or odd model files


def test_device_file_is_refused_without_reading() -> None:
    with pytest.raises(ModelLoadError, match=r"/dev/zero.*not a regular file"):
        explain("/dev/zero")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=rf"{tmp_path}.*directory"):
        explain(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    code = (
        "import sys\nfrom onnxlrp import Explainer, ModelLoadError\n"
        "try:\n    Explainer(sys.argv[1], device='cpu')\n"
        "except ModelLoadError as e:\n    print('REFUSED', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert res.stdout.startswith("REFUSED"), res.stdout + res.stderr
    assert "not a regular file" in res.stdout and str(fifo) in res.stdout


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
def test_socket_is_refused() -> None:
    with tempfile.TemporaryDirectory(prefix="s") as tmp:  # a short path: unix socket names are limited
        path = os.path.join(tmp, "m.onnx")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            with pytest.raises(ModelLoadError, match="not a regular file"):
                explain(path)
        finally:
            sock.close()


def test_file_larger_than_protobuf_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:  # sparse: no disk space used
        f.truncate(MAX_MODEL_BYTES + 1)
    with pytest.raises(ModelLoadError, match=rf"huge\.onnx.*{MAX_MODEL_BYTES + 1} bytes.*limit"):
        explain(path)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no procfs")
def test_file_that_grows_while_read_is_refused() -> None:
    """procfs files say 0 bytes and then yield text: exactly a file that grew after it was measured."""
    with pytest.raises(ModelLoadError, match="changed while it was read"):
        explain("/proc/self/status")


def test_symlinked_model_file_loads(tmp_path: Path) -> None:
    real = H.save_checked(mlp(), tmp_path / "real", "mlp", (4,))
    link = tmp_path / "link.onnx"
    link.symlink_to(real)
    np.testing.assert_array_equal(explain(link, X4), explain(real, X4))


@pytest.mark.parametrize("source", [None, 123, 4.5, ["model.onnx"]])
def test_source_of_the_wrong_type(source: object) -> None:
    with pytest.raises(OnnxLrpError, match=type(source).__name__):
        explain(source)


# ---------------------------------------------------------------------------------------------
# 2. external data wherever a tensor can live


def _external(t: TensorProto, location: str) -> None:
    """Turn ``t`` into an external tensor stored at ``location`` (its bytes are not written here)."""
    data = numpy_helper.to_array(t).tobytes()
    t.ClearField("raw_data")
    for name in ("float_data", "int32_data", "int64_data", "double_data"):
        t.ClearField(name)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        e = t.external_data.add()
        e.key, e.value = key, value


def _const_node(name: str, value: np.ndarray, out: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], name=name, value=numpy_helper.from_array(value, f"{name}_value"))


def _site_model(site: str, location: str) -> tuple[onnx.ModelProto, str]:
    """The MLP with one tensor stored externally at ``location`` in the given site; returns (model, tensor name)."""
    m = mlp()
    g = m.graph
    vec = np.arange(4, dtype=np.float32)
    if site == "initializer":
        t = g.initializer[0]
        _external(t, location)
        return m, t.name
    if site == "sparse_initializer":
        values = numpy_helper.from_array(vec, "sparse_w")
        indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "sparse_w_idx")
        _external(values, location)
        g.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [8]))
        return m, "sparse_w"
    if site == "constant":
        node = _const_node("evil_const", vec, "unused_c")
        _external(node.attribute[0].t, location)
        g.node.insert(0, node)
        return m, "evil_const"
    if site == "tensors_list":
        t = numpy_helper.from_array(vec, "listed")
        _external(t, location)
        g.node[0].attribute.append(helper.make_attribute("evil_list", [t]))
        return m, "listed"
    if site == "sparse_constant":
        values = numpy_helper.from_array(vec, "sparse_c")
        _external(values, location)
        sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.arange(4, dtype=np.int64), "i"), [8])
        g.node.insert(0, helper.make_node("Constant", [], ["unused_s"], name="sparse_const", sparse_value=sparse))
        return m, "sparse_const"
    if site == "subgraph":
        node = _const_node("inner_const", vec, "inner_out")
        _external(node.attribute[0].t, location)
        then = helper.make_graph([node], "then", [], [helper.make_tensor_value_info("inner_out", H.FLOAT, [4])])
        cond = numpy_helper.from_array(np.array(True), "cond")
        g.initializer.append(cond)
        g.node.append(helper.make_node("If", ["cond"], ["if_out"], name="branch", then_branch=then, else_branch=then))
        return m, "inner_const"
    if site == "function":
        node = _const_node("fn_const", vec, "fn_out")
        _external(node.attribute[0].t, location)
        fn = helper.make_function("local", "leak", [], ["fn_out"], [node], [helper.make_opsetid("", 13)])
        m.functions.append(fn)
        m.opset_import.append(helper.make_opsetid("local", 1))
        g.node.append(helper.make_node("leak", [], ["leaked"], domain="local", name="call_leak"))
        return m, "fn_const"
    raise AssertionError(site)


SITES = ["initializer", "sparse_initializer", "constant", "tensors_list", "sparse_constant", "subgraph", "function"]


@pytest.mark.parametrize("site", SITES)
def test_external_data_escaping_the_folder_is_refused_everywhere(site: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(64, dtype=np.float32).tobytes())
    folder = tmp_path / "models"
    folder.mkdir()
    model, name = _site_model(site, "../secret.bin")
    path = folder / "m.onnx"
    onnx.save(model, str(path))
    # onnxruntime would open '../secret.bin' relative to the working directory: put it there
    monkeypatch.chdir(folder)
    with pytest.raises(ModelLoadError, match=rf"{name}.*\.\./secret\.bin.*outside"):
        explain(path)


@pytest.mark.parametrize("site", SITES)
def test_external_data_absolute_or_from_bytes_is_refused(site: str, tmp_path: Path) -> None:
    target = tmp_path / "abs.bin"
    target.write_bytes(bytes(64))
    model, name = _site_model(site, str(target))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match=rf"{name}.*absolute"):
        explain(path)
    with pytest.raises(ModelLoadError, match=rf"{name}.*external data.*file path"):
        explain(model.SerializeToString())
    with pytest.raises(ModelLoadError, match=rf"{name}.*external data.*file path"):
        explain(model)


def test_external_data_through_symlink_in_function_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(bytes(64))
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "w.bin").symlink_to(tmp_path / "secret.bin")
    model, name = _site_model("function", "w.bin")
    onnx.save(model, str(folder / "m.onnx"))
    with pytest.raises(ModelLoadError, match=rf"{name}.*w\.bin.*outside"):
        explain(folder / "m.onnx")


def test_external_constant_inside_the_folder_is_read_by_onnxlrp(tmp_path: Path) -> None:
    """A legitimate external Constant on the path: onnxlrp reads it into the model; same result as inline."""
    b = H.Builder(7)
    w = b.weight([6, 4], 4)
    b.nodes.append(_const_node("w_const", w, "w_out"))
    y = b.gemm(b.relu(b.op("Gemm", ["x", "w_out"], transB=1)), 6, 3)  # type: ignore[arg-type]
    inline = b.model([None, 4], [(y, H.FLOAT)], 13)
    external = copy(inline)
    _external(external.graph.node[0].attribute[0].t, "data/w.bin")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "w.bin").write_bytes(w.tobytes())
    onnx.save(external, str(tmp_path / "ext.onnx"))
    np.testing.assert_array_equal(explain(tmp_path / "ext.onnx", X4), explain(inline, X4))


@pytest.mark.parametrize(("offset", "length"), [("0", "1000000"), ("-4", "16"), ("abc", "16"), ("60", "16")])
def test_external_data_offsets_outside_the_file(offset: str, length: str, tmp_path: Path) -> None:
    model, name = _site_model("initializer", "w.bin")
    (tmp_path / "w.bin").write_bytes(bytes(64))
    for e in model.graph.initializer[0].external_data:
        if e.key == "offset":
            e.value = offset
        if e.key == "length":
            e.value = length
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelLoadError, match=rf"{name}.*(offset|length)"):
        explain(tmp_path / "m.onnx")


# ---------------------------------------------------------------------------------------------
# 3. non-finite weights


def _with_bad_values(arr: np.ndarray, n_nan: int, n_inf: int) -> np.ndarray:
    arr = arr.copy()
    arr.flat[:n_nan] = np.nan
    arr.flat[n_nan:n_nan + n_inf] = -np.inf
    return arr


@pytest.mark.parametrize("as_bytes", [False, True])  # bytes: checked where the data lies in the file
def test_nan_and_inf_initializer_is_refused_with_a_count(as_bytes: bool) -> None:
    m = mlp()
    t = m.graph.initializer[0]
    t.CopyFrom(numpy_helper.from_array(_with_bad_values(numpy_helper.to_array(t), 2, 1), t.name))
    with pytest.raises(ModelLoadError, match=rf"initializer '{t.name}' has 3 non-finite values.*2 NaN, 1 infinite"):
        explain(m.SerializeToString() if as_bytes else m)


def test_merged_protobuf_messages_are_checked_as_parsed() -> None:
    """Two serialized models back to back parse as one (graphs merge): the NaN in the second part counts."""
    bad = onnx.ModelProto()
    bad.graph.initializer.append(numpy_helper.from_array(np.array([1.0, np.nan], np.float32), "sneaky"))
    with pytest.raises(ModelLoadError, match="'sneaky' has 1 non-finite value"):
        explain(mlp().SerializeToString() + bad.SerializeToString())
    twice = mlp().graph.initializer[0]  # raw_data given twice in one tensor: the last one counts
    good, nan = numpy_helper.to_array(twice), np.full(twice.dims, np.nan, np.float32)
    patch = onnx.ModelProto()
    t = patch.graph.initializer.add()
    t.CopyFrom(numpy_helper.from_array(good, twice.name))
    extra = onnx.TensorProto(raw_data=nan.tobytes()).SerializeToString()
    msg = bytearray(t.SerializeToString() + extra)
    m = mlp()
    del m.graph.initializer[0]
    graph_field = b"\x2a" + _varint(len(msg)) + bytes(msg)  # GraphProto.initializer (field 5)
    data = m.SerializeToString() + b"\x3a" + _varint(len(graph_field)) + graph_field  # ModelProto.graph (7)
    with pytest.raises(ModelLoadError, match=rf"'{twice.name}' has {nan.size} non-finite"):
        explain(data)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_non_finite_large_initializer_is_refused() -> None:
    """A weight large enough to be detached from the protobuf (≥ 1024 elements)."""
    b = H.Builder(2)
    y = b.gemm(b.relu(b.gemm("x", 64, 40)), 40, 3)
    m = b.model([None, 64], [(y, H.FLOAT)], 13)
    t = next(t for t in m.graph.initializer if np.prod(t.dims) >= 1024)
    t.CopyFrom(numpy_helper.from_array(_with_bad_values(numpy_helper.to_array(t), 0, 1), t.name))
    for source in (m, m.SerializeToString()):
        with pytest.raises(ModelLoadError, match=rf"'{t.name}' has 1 non-finite value of 2560"):
            explain(source)
    with pytest.raises(ModelLoadError, match=rf"'{t.name}'"):
        G.detach_weights(m)  # and the detaching step refuses it too, were it called on an unchecked model


@pytest.mark.parametrize("site", ["constant", "subgraph", "function", "value_float", "sparse_initializer"])
def test_non_finite_constant_anywhere_is_refused(site: str) -> None:
    if site == "value_float":
        m = mlp()
        m.graph.node.insert(0, helper.make_node("Constant", [], ["c"], name="inf_scalar", value_float=float("inf")))
        name = "inf_scalar"
    else:
        m, name = _site_model(site, "x.bin")
        for t, _ in L._tensor_sites(m):  # undo the external storage, store NaNs instead
            if t.data_location == TensorProto.EXTERNAL:
                del t.external_data[:]
                t.data_location = TensorProto.DEFAULT
                t.raw_data = np.full(4, np.nan, np.float32).tobytes()
    with pytest.raises(ModelLoadError, match=rf"{name}.*(non-finite|not finite)"):
        explain(m)


def _masked_model(site: str, fill: float = -np.inf) -> tuple[onnx.ModelProto, str]:
    """``x [N, 4]`` → Gemm → ``+ mask`` (the last of the ``width`` columns filled with ``fill``) → Softmax → Gemm
    → 3 scores, the mask's ``fill`` held at ``site``; also the name of the tensor holding ``fill``."""
    b = H.Builder(7)
    width = 1024 if site == "big_initializer" else 6
    h = b.gemm("x", 4, width)
    keep = b.const(np.arange(width) < width - 1, "keep")
    zero = b.const(np.float32(0.0), "zero")
    row = np.where(np.arange(width) < width - 1, 0.0, fill).astype(np.float32)
    if site in ("initializer", "big_initializer", "also_a_factor", "unused"):
        holder = b.const(row, "mask")
        mask = holder
        if site == "also_a_factor":  # the same constant is also a Mul factor: a weight, not a mask
            h = b.op("Mul", [h, holder])
        if site == "unused":
            mask = b.const(np.zeros(width, np.float32), "mask")
    elif site == "mul_factor":
        holder = b.const(np.where(np.arange(width) < width - 1, 1.0, fill).astype(np.float32), "factor")
        h, mask = b.op("Mul", [h, holder]), b.const(np.zeros(width, np.float32), "mask")
    elif site == "cast_to_int":
        holder = b.op("Constant", [], value=numpy_helper.from_array(np.array([fill], np.float32), "neg"))
        shift = b.op("Cast", [b.op("Cast", [holder], to=TensorProto.INT64)], to=TensorProto.FLOAT)
        mask = b.op("Where", [keep, zero, shift])
    else:
        if site == "value_float":
            holder = b.op("Constant", [], value_float=fill)
        elif site == "constant_of_shape":
            holder = b.op("ConstantOfShape", [b.ints([width])],
                          value=numpy_helper.from_array(np.array([fill], np.float32), "fill"))
        else:  # "constant": TorchScript's Constant of shape (1,), here expanded before the Where
            holder = b.op("Constant", [], value=numpy_helper.from_array(np.array([fill], np.float32), "neg"))
        mask = b.op("Where", [keep, zero, b.op("Expand", [holder, b.ints([width])])])
    s = b.op("Softmax", [b.op("Add", [h, mask])], axis=-1)
    if site == "clip":  # ±inf bounds: no clamp
        holder = b.const(np.float32(fill), "low")
        s = b.op("Clip", [s, holder, b.const(np.float32(-fill), "high")])
    return b.model([None, 4], [(b.gemm(s, width, 3), H.FLOAT)], 13), holder


@pytest.mark.parametrize("site", ["initializer", "big_initializer", "constant", "value_float", "constant_of_shape",
                                  "clip"])
@pytest.mark.parametrize("as_bytes", [False, True])
def test_infinite_mask_fill_loads(site: str, as_bytes: bool) -> None:
    """``-inf`` in a mask or fill constant (as the TorchScript exporter writes for attention masks) loads, and the
    model explains like its twin filled with float32's lowest finite value instead (rel. error ≤ 1e-6; measured 0)."""
    m, _ = _masked_model(site)
    twin, _ = _masked_model(site, float(np.finfo(np.float32).min))
    got = explain(m.SerializeToString() if as_bytes else m, X4)
    assert got is not None and np.all(np.isfinite(got)) and np.abs(got).max() > 0
    assert H.rel_err(got, explain(twin, X4)) <= 1e-6  # type: ignore[arg-type]


@pytest.mark.parametrize("site", ["mul_factor", "also_a_factor", "cast_to_int", "unused"])
def test_infinity_outside_a_mask_is_refused(site: str) -> None:
    """``±inf`` where it is not a mask or fill value — a Mul factor, a constant that is also a factor, a value cast
    to an integer, a constant nothing reads — is refused as before, naming the tensor."""
    m, holder = _masked_model(site)
    named = f"initializer '{holder}'" if any(t.name == holder for t in m.graph.initializer) else r"\(Constant\)"
    for source in (m, m.SerializeToString()):
        with pytest.raises(ModelLoadError, match=rf"{named} has 1 non-finite value of \d+ \(0 NaN, 1 infinite\); "
                                                 "refused; ±inf is accepted only in mask and fill constants"):
            explain(source)


@pytest.mark.parametrize("where", ["conv", "gemm"])
def test_infinite_weight_is_refused(where: str) -> None:
    """An infinite weight of a Conv or a Gemm is no mask: refused, even without NaN."""
    b = H.Builder(3)
    if where == "conv":
        y = b.op("Flatten", [b.conv("x", 3, 2, [3, 3])])
        m = b.model([None, 3, 4, 4], [(b.gemm(y, 8, 3), H.FLOAT)], 13)
    else:
        m = mlp()
    t = next(t for t in m.graph.initializer if t.name.startswith("W"))
    t.CopyFrom(numpy_helper.from_array(_with_bad_values(numpy_helper.to_array(t), 0, 1), t.name))
    for source in (m, m.SerializeToString()):
        with pytest.raises(ModelLoadError, match=rf"'{t.name}' has 1 non-finite value.*0 NaN, 1 infinite"):
            explain(source)


def test_nan_mask_fill_is_refused() -> None:
    """NaN is never a mask value."""
    for site in ("initializer", "constant", "value_float"):
        m, _ = _masked_model(site, np.nan)
        with pytest.raises(ModelLoadError, match=r"\(1 NaN, 0 infinite\); refused$|is not finite"):
            explain(m)


def test_infinite_fill_check_is_linear() -> None:
    """5000 ``-inf`` constants concatenated, then moved through 5000 Identities to a ``Where``: each tensor is looked
    at once (a walk per constant would take 25 M steps); and an Identity cycle (refused later) does not hang it."""
    n = 5000
    nodes = [helper.make_node("Constant", [], [f"c{i}"], value=numpy_helper.from_array(np.array([-np.inf],
                                                                                                np.float32)))
             for i in range(n)]
    nodes.append(helper.make_node("Concat", [f"c{i}" for i in range(n)], ["t0"], axis=0))
    nodes += [helper.make_node("Identity", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    nodes.append(helper.make_node("Where", ["keep", "zero", f"t{n}"], ["mask"]))
    nodes.append(helper.make_node("Add", ["x", "mask"], ["y"]))
    inits = [numpy_helper.from_array(np.ones(n, bool), "keep"), numpy_helper.from_array(np.float32(0), "zero")]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", H.FLOAT, ["N", n])],
                          [helper.make_tensor_value_info("y", H.FLOAT, ["N", n])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    start = time.process_time()
    L.load_model(m)
    assert time.process_time() - start < 3.0  # measured: 0.5 s (a walk per constant: 170 s)
    cyc = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([-np.inf], np.float32))),
         helper.make_node("Concat", ["c", "b"], ["a"], axis=0), helper.make_node("Identity", ["a"], ["b"]),
         helper.make_node("Add", ["x", "b"], ["y"])],
        "cycle", [helper.make_tensor_value_info("x", H.FLOAT, ["N", 2])], [helper.make_tensor_value_info("y", H.FLOAT,
                                                                                                         None)])
    with pytest.raises(UnsupportedModelError, match="cycle|written by"):
        explain(helper.make_model(cyc, opset_imports=[helper.make_opsetid("", 13)]))


def test_finite_check_is_cheap() -> None:
    """One isfinite pass over the file's bytes: 16 M weights (64 MB) cost a small fraction of a second."""
    m = mlp()
    m.graph.initializer.append(numpy_helper.from_array(np.ones(16 * 2**20, np.float32), "big"))
    data = m.SerializeToString()
    model = onnx.load_model_from_string(data)
    start = time.process_time()
    L._check_tensors(model, data)
    assert time.process_time() - start < 0.5  # measured: 0.015 s; VGG16-sized 470 MB: 0.1 s


# ---------------------------------------------------------------------------------------------
# 4. malformed initializers


def _malform(kind: str) -> Callable[[TensorProto], None]:
    def raw_short(t: TensorProto) -> None:
        t.raw_data = t.raw_data[:-4]

    def raw_long(t: TensorProto) -> None:
        t.raw_data = t.raw_data + bytes(4)

    def float_data_wrong(t: TensorProto) -> None:
        n = int(np.prod(t.dims))
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * (n + 1))

    def no_data(t: TensorProto) -> None:
        t.ClearField("raw_data")

    def undefined(t: TensorProto) -> None:
        t.data_type = TensorProto.UNDEFINED

    def unknown(t: TensorProto) -> None:
        t.data_type = 977

    def negative_dim(t: TensorProto) -> None:
        t.dims[0] = -t.dims[0]

    def huge_dim(t: TensorProto) -> None:
        t.dims[0] = 10**12

    return locals()[kind]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("kind", "message"), [
    ("raw_short", r"92 bytes of raw data for a FLOAT tensor of shape \[6, 4\]"),
    ("raw_long", r"100 bytes of raw data"),
    ("float_data_wrong", r"25 values in float_data"),
    ("no_data", r"no data for a FLOAT tensor"),
    ("undefined", r"data type 0 \(UNDEFINED\)"),
    ("unknown", r"data type 977 \(unknown\)"),
    ("negative_dim", r"negative dimension"),
    ("huge_dim", r"1000000000000, 4"),
])
def test_malformed_initializer_is_refused_by_name(kind: str, message: str) -> None:
    m = mlp()
    t = next(t for t in m.graph.initializer if list(t.dims) == [6, 4])
    _malform(kind)(t)
    for source in (m, m.SerializeToString()):
        with pytest.raises(ModelLoadError, match=rf"initializer '{t.name}'.*{message}"):
            explain(source)
    with pytest.raises(ModelLoadError, match=rf"'{t.name}'"):
        G.tensor_array(t, f"initializer {t.name!r}")


# ---------------------------------------------------------------------------------------------
# 5. versions, and no onnxruntime exception escapes


@pytest.mark.parametrize(("field", "value", "error", "message"), [
    ("ir_version", 99, ModelLoadError, "IR version 99"),
    ("ir_version", 0, ModelLoadError, "IR version 0"),
    ("ir_version", -3, ModelLoadError, "IR version -3"),
    ("opset", 99, UnsupportedModelError, "opset 99"),
    ("opset", 0, UnsupportedModelError, "opset 0"),
])
def test_impossible_versions(field: str, value: int, error: type[OnnxLrpError], message: str) -> None:
    m = mlp()
    if field == "ir_version":
        m.ir_version = value
    else:
        m.opset_import[0].version = value
    with pytest.raises(error, match=message):
        explain(m)


def test_negative_input_dimension_is_refused() -> None:
    m = mlp()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -4
    with pytest.raises(UnsupportedModelError, match=r"input 'x'.*-4"):
        explain(m)


def test_onnxruntime_load_failure_is_wrapped() -> None:
    """A graph onnx parses but onnxruntime refuses (adding an int64 tensor to a float one)."""
    b = H.Builder(1)
    h = b.op("Add", [b.gemm("x", 4, 3), b.const(np.ones(3, np.int64))])
    b.nodes[-1].name = "mixed_add"
    m = b.model([None, 4], [(h, H.FLOAT)], 13)  # type: ignore[list-item]
    with pytest.raises(UnsupportedModelError, match="onnxruntime cannot load"):
        explain(m, X4)


def _bad_reshape() -> onnx.ModelProto:
    """``[N, 6] → Reshape [-1, 4]``: only possible when 6 N is a multiple of 4."""
    b = H.Builder(2)
    h = b.op("Reshape", [b.gemm("x", 4, 6), b.ints([-1, 4])])
    b.nodes[-1].name = "bad_reshape"
    return b.model([None, 4], [(b.gemm(h, 4, 3), H.FLOAT)], 13)  # type: ignore[arg-type]


def test_impossible_reshape_names_the_node() -> None:
    with pytest.raises(UnsupportedModelError, match=r"bad_reshape.*Reshape"):
        explain(_bad_reshape(), X4)


def test_onnxruntime_run_failure_is_wrapped() -> None:
    """The forward session serves every batch size: a failure inside a node names the node and the shape."""
    from onnxlrp.backend import get_backend
    from onnxlrp.runtime import Forward

    m = _bad_reshape()
    fw = Forward(m, "x", m.graph.output[0].name, [n.output[0] for n in m.graph.node], get_backend("cpu"))
    assert fw.run(X4)[m.graph.output[0].name].shape == (3, 3)
    with pytest.raises(UnsupportedModelError, match=r"'bad_reshape' \(op Reshape\) on input shape \[1, 4\]"):
        fw.run(X4[:1])


# ---------------------------------------------------------------------------------------------
# 6. opset 7 (IR 3)


def _cnn(opset: int, ir: int) -> onnx.ModelProto:
    b = H.Builder(4)
    h = b.relu(b.conv("x", 3, 4, [3, 3], pads=[1, 1, 1, 1]))
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.relu(b.conv(h, 4, 5, [3, 3], pads=[1, 1, 1, 1]))  # type: ignore[arg-type]
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [h])]), 5, 3)  # type: ignore[list-item]
    inputs = [helper.make_tensor_value_info("x", H.FLOAT, ["N", 3, 6, 6])]
    if ir < 4:  # IR 3: every initializer is also a graph input
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in b.inits]
    g = helper.make_graph(b.nodes, "g", inputs, [helper.make_tensor_value_info(y, H.FLOAT, ["N", 3])], b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("shape_inference", [True, False])
def test_opset7_classifier_explains_like_opset17(shape_inference: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not shape_inference:  # the run-the-model fallback must declare typed outputs
        monkeypatch.setattr(G, "_infer_shapes", lambda skel: {})
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    old, new = Explainer(_cnn(7, 3), device="cpu"), Explainer(_cnn(17, 9), device="cpu")
    np.testing.assert_array_equal(old.predict(x), new.predict(x))
    for method in ("lrp", "gradient"):
        a, b = old.explain(x, target=1, method=method), new.explain(x, target=1, method=method)
        assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 7. control flow


def _loop_model() -> onnx.ModelProto:
    b = H.Builder(1)
    h = b.gemm("x", 4, 5)
    body = helper.make_graph(
        [helper.make_node("Relu", ["h_in"], ["h_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", H.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", H.FLOAT, None)])
    trip, cond = b.const(np.array(2, np.int64)), b.const(np.array(True))
    b.nodes.append(helper.make_node("Loop", [trip, cond, h], ["looped"], name="my_loop", body=body))
    return b.model([None, 4], [(b.gemm("looped", 5, 3), H.FLOAT)], 13)


def _if_model(constant_condition: bool) -> onnx.ModelProto:
    b = H.Builder(2)
    h = b.gemm("x", 4, 5)
    then = helper.make_graph([helper.make_node("Relu", [h], ["t_out"])], "then", [],
                             [helper.make_tensor_value_info("t_out", H.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", [h], ["e_out"])], "else", [],
                              [helper.make_tensor_value_info("e_out", H.FLOAT, None)])
    if constant_condition:
        cond = b.const(np.array(True))
    else:
        cond = b.op("Greater", [b.op("ReduceMax", [h], keepdims=0), b.const(np.float32(0))])  # type: ignore[list-item]
    b.nodes.append(helper.make_node("If", [cond], ["branched"], name="my_if", then_branch=then, else_branch=other))
    return b.model([None, 4], [(b.gemm("branched", 5, 3), H.FLOAT)], 13)


def test_loop_on_the_path_is_refused_by_name() -> None:
    H.ort_session(_loop_model())  # onnxruntime runs it
    with pytest.raises(UnsupportedModelError, match=r"'my_loop' \(op Loop\) is control flow"):
        explain(_loop_model(), X4)


def test_data_dependent_if_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedModelError, match=r"'my_if' \(op If\) is control flow"):
        explain(_if_model(False), X4)


def test_constant_if_folds_away() -> None:
    heat = explain(_if_model(True), X4)
    assert heat is not None and heat.shape == X4.shape and np.all(np.isfinite(heat))


# ---------------------------------------------------------------------------------------------
# 8. graph preparation is linear in the node count


def _long_chain(n: int, kinds: tuple[str, ...]) -> onnx.ModelProto:
    """Conv → ``n`` cheap nodes cycling through ``kinds`` (Identity, Relu, Add of a constant) → GAP → Gemm."""
    b = H.Builder(0)
    h = b.conv("x", 3, 4, [3, 3], pads=[1, 1, 1, 1])
    zero = b.const(np.zeros((1, 4, 1, 1), np.float32))
    nodes = b.nodes
    for k in range(n):
        op = kinds[k % len(kinds)]
        out = f"t{k}"
        nodes.append(helper.make_node(op, [h, zero] if op == "Add" else [h], [out], name=f"n{k}"))
        h = out
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [h])]), 4, 3)  # type: ignore[list-item]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", H.FLOAT, ["N", 3, 6, 6])],
                          [helper.make_tensor_value_info(y, H.FLOAT, None)], b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


def test_20000_identities_load_and_explain_quickly() -> None:
    """Was ~60 s to load (quadratic identity removal), and as long again for each new input shape."""
    m = _long_chain(20_000, ("Identity",))
    short = _long_chain(0, ("Identity",))
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)
    start = time.process_time()  # CPU time of this process (all threads): robust to a busy machine
    ex = Explainer(m, device="cpu")
    heat = ex.explain(x, target=1, method="lrp")
    heat2 = ex.explain(np.concatenate([x, x]), target=1, method="lrp")  # a new input shape: a new plan
    elapsed = time.process_time() - start
    assert elapsed < 20.0, f"{elapsed:.1f} s CPU"
    assert [la["op"] for la in ex.layers()] == ["Conv", "GlobalAveragePool", "Flatten", "Gemm"]
    ref = Explainer(short, device="cpu").explain(x, target=1, method="lrp")
    np.testing.assert_allclose(heat, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(heat2[1], ref[0], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_100000_simple_nodes_prepare_in_seconds() -> None:
    """load + prepare + layer graph for 100 000 Identity/Relu/Add nodes (no onnxruntime session)."""
    data = _long_chain(100_000, ("Identity", "Relu", "Add")).SerializeToString()
    start = time.process_time()
    p = G.prepare(G.load_model(data))
    graph = G.build_graph(p.model, p.input_name, p.output_name, (1, 3, 6, 6), p.weights)
    elapsed = time.process_time() - start
    assert len(graph.layers) == 66_670  # Identities dropped, each Add of zero kept as its own layer
    assert elapsed < 40.0, f"{elapsed:.1f} s CPU"


# ---------------------------------------------------------------------------------------------
# 9. fuzz: what an attacker or a broken exporter would hand us


def outcome_ok(source: object, x: np.ndarray = X4, method: str = "gradient") -> None:
    """The documented outcome: an OnnxLrpError, or a finite explanation shaped like ``x``."""
    try:
        heat = explain(source, x, method)
    except OnnxLrpError:
        return
    assert heat is not None and heat.shape == x.shape and np.all(np.isfinite(heat))


# ONNXLRP_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_models.py -k "mutat or bytes": a longer, random (not
# derandomized) fuzz run; by default each property runs a fixed set of examples and the file stays fast
_LONG = "ONNXLRP_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(max_examples=int(os.environ.get("ONNXLRP_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow], derandomize=not _LONG)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    with pytest.raises(ModelLoadError):
        explain(data)


@FUZZ
@given(st.data())
def test_truncated_model(data: st.DataObject) -> None:
    full = mlp().SerializeToString()
    cut = data.draw(st.integers(0, len(full) - 1))
    outcome_ok(full[:cut])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_bytes(flips: list[tuple[int, int]]) -> None:
    data = bytearray(mlp().SerializeToString())
    for pos, value in flips:
        data[pos % len(data)] = value
    outcome_ok(bytes(data))


@pytest.mark.parametrize("data", [
    b"\x08\x08\x3a\x05hello",  # field 7 (graph) holding a string that is no GraphProto
    b"\x08\x08\x38\x05",  # field 7 (graph) as a varint: the wrong wire type
    b"\x08" + b"\xff" * 20,  # a varint that never ends
    b"\x3a\xff\xff\xff\xff\x0f",  # a length far beyond the data
])
def test_protobuf_with_wrong_field_types(data: bytes) -> None:
    with pytest.raises(ModelLoadError, match="not an ONNX model|no graph nodes"):
        explain(data)


def test_cycle_is_refused() -> None:
    m = mlp()
    relu = m.graph.node[1]
    relu.input[0] = "loopback"
    m.graph.node.append(helper.make_node("Relu", [relu.output[0]], ["loopback"], name="back"))
    with pytest.raises(UnsupportedModelError, match=r"(Relu_6|back).*cycle"):
        explain(m, X4)


def test_unsorted_graph_is_sorted() -> None:
    m = mlp()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes[::-1])
    np.testing.assert_array_equal(explain(m, X4), explain(mlp(), X4))


def test_undefined_tensor_is_refused() -> None:
    m = mlp()
    m.graph.node[1].input[0] = "ghost"
    with pytest.raises(UnsupportedModelError, match=r"'Relu_6' \(Relu\) reads tensor 'ghost'"):
        explain(m, X4)


@pytest.mark.parametrize("clash", ["node", "input", "initializer"])
def test_tensor_written_twice_is_refused(clash: str) -> None:
    m = mlp()
    name = {"node": m.graph.node[1].output[0], "input": "x", "initializer": m.graph.initializer[0].name}[clash]
    m.graph.node.append(helper.make_node("Relu", ["x"], [name], name="dup"))
    with pytest.raises(UnsupportedModelError, match=rf"'{name}' is written by node 'dup'.*one producer"):
        explain(m, X4)


def test_empty_names() -> None:
    m = mlp()
    for n in m.graph.node:
        n.name = ""
    np.testing.assert_array_equal(explain(m, X4), explain(mlp(), X4))  # nodes are named by their outputs
    m = mlp()
    m.graph.input[0].name = ""
    m.graph.node[0].input[0] = ""
    with pytest.raises(UnsupportedModelError, match="Gemm_4"):
        explain(m, X4)


def test_zero_sized_dimension() -> None:
    m = mlp()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 0
    with pytest.raises(OnnxLrpError, match=r"Gemm_4.*\b0\b"):
        explain(m, X4)


def test_huge_declared_dimension_allocates_nothing() -> None:
    b = H.Builder(1)
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", ["x"])]), 3, 2)  # type: ignore[list-item]
    m = b.model([None, 3, 10**6, 10**6], [(y, H.FLOAT)], 13)
    ex = Explainer(m, device="cpu")  # the graph is checked for [1, 3, 1e6, 1e6] without running it
    assert ex.input_shape == [None, 3, 10**6, 10**6]
    with pytest.raises(InputError, match=r"\[1, 3, 4, 4\].*1000000"):
        ex.explain(np.ones((1, 3, 4, 4), np.float32), target=0)


def _conv_model(**attrs: object) -> onnx.ModelProto:
    b = H.Builder(1)
    kw: dict[str, object] = {"kernel_shape": [3, 3], **attrs}
    w = b.const(b.weight([4, 2 if kw.get("group", 1) != 1 else 4, 3, 3], 9))
    h = b.op("Conv", ["x", w], **kw)
    b.nodes[-1].name = "evil_conv"
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [h])]), 4, 2)  # type: ignore[list-item]
    g = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", H.FLOAT, ["N", 4, 6, 6])],
                          [helper.make_tensor_value_info(y, H.FLOAT, None)], b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 9
    return m


@pytest.mark.parametrize(("attrs", "message"), [
    ({"kernel_shape": [0, 0]}, "kernel_shape"),
    ({"kernel_shape": [9, 9]}, "kernel_shape"),
    ({"strides": [0, 0]}, "strides"),
    ({"dilations": [0, 0]}, "dilations"),
    ({"pads": [-1, -1, -1, -1]}, "pads"),
    ({"pads": [1, 1]}, "pads"),
    ({"group": 3}, "channels"),
])
def test_conv_with_garbage_attributes(attrs: dict[str, object], message: str) -> None:
    with pytest.raises(UnsupportedModelError, match=rf"evil_conv.*{message}"):
        explain(_conv_model(**attrs), np.ones((1, 4, 6, 6), np.float32))


def test_output_that_is_not_float_or_missing() -> None:
    b = H.Builder(1)
    y = b.op("ArgMax", [b.gemm("x", 4, 3)], axis=1)
    with pytest.raises(UnsupportedModelError, match=r"no float32 tensor output.*argmax"):
        explain(b.model([None, 4], [(y, TensorProto.INT64)], 13))  # type: ignore[list-item]
    m = mlp()
    del m.graph.output[:]
    with pytest.raises(UnsupportedModelError, match=r"no float32 tensor output.*\(outputs: \)"):
        explain(m)


def test_unicode_and_very_long_names(tmp_path: Path) -> None:
    m = mlp()
    rename: dict[str, str] = {}
    for k, n in enumerate(m.graph.node):
        n.name = "名前🙂" * 2500 + str(k)  # 10 000 characters
        for j, o in enumerate(n.output):
            rename[o] = "τένσορ/\\:*?<>|" * 700 + f"{k}_{j}"
    for n in m.graph.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    for o in m.graph.output:
        o.name = rename[o.name]
    path = tmp_path / "ünïcødé 模型.onnx"
    onnx.save(m, str(path))
    np.testing.assert_array_equal(explain(path, X4, "lrp"), explain(mlp(), X4, "lrp"))
    m.graph.node[1].op_type = "Zebra"
    with pytest.raises(UnsupportedModelError, match="名前🙂.*Zebra") as info:
        explain(m, X4)
    assert len(str(info.value)) < 60_000


_ODD_INTS = [-(2**40), -5, -1, 0, 1, 2, 3, 7, 2**31, 10**12]
_OPS = ["Relu", "Conv", "Gemm", "Softmax", "Reshape", "Transpose", "MaxPool", "Flatten", "Loop", "Identity",
        "Concat", "Sigmoid", "Add", "Mul", "Squeeze", "Unsqueeze", "GlobalAveragePool", "Shape", "Zebra"]


def _mutate(m: onnx.ModelProto, draw: Callable[[st.SearchStrategy[object]], object]) -> str:
    """Apply one random structural mutation to ``m`` in place; returns what was done (for failure reports)."""
    g = m.graph
    nodes = list(g.node)
    node = nodes[draw(st.integers(0, len(nodes) - 1))]  # type: ignore[call-overload]
    tensors = sorted({t for n in nodes for t in [*n.input, *n.output]} | {i.name for i in g.input})
    kind = draw(st.sampled_from(["int_attr", "ints_attr", "rewire", "dims", "op_type", "delete", "input_type",
                                 "input_dims", "data_type", "drop_initializer"]))
    if kind in ("int_attr", "ints_attr"):
        attrs = [a for a in node.attribute if a.type == (onnx.AttributeProto.INT if kind == "int_attr"
                                                            else onnx.AttributeProto.INTS)]
        if not attrs:
            name = draw(st.sampled_from(["group", "axis", "transB", "keepdims"] if kind == "int_attr"
                                        else ["kernel_shape", "strides", "pads", "perm", "axes"]))
            node.attribute.append(helper.make_attribute(name, 1 if kind == "int_attr" else [1, 1]))
            attrs = [node.attribute[-1]]
        a = attrs[0]
        value = draw(st.sampled_from(_ODD_INTS))
        if kind == "int_attr":
            a.i = value  # type: ignore[assignment]
        elif len(a.ints):
            a.ints[draw(st.integers(0, len(a.ints) - 1))] = value  # type: ignore[call-overload]
        return f"{node.name}.{a.name} = {value}"
    if kind == "rewire" and node.input:
        k = draw(st.integers(0, len(node.input) - 1))  # type: ignore[call-overload]
        node.input[k] = draw(st.sampled_from(tensors + [""]))  # type: ignore[assignment]
        return f"{node.name}.input[{k}] = {node.input[k]!r}"
    if kind == "dims" and g.initializer:
        t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]  # type: ignore[call-overload]
        if len(t.dims):
            t.dims[0] = draw(st.sampled_from(_ODD_INTS))  # type: ignore[assignment]
        return f"{t.name}.dims = {list(t.dims)}"
    if kind == "op_type":
        node.op_type = draw(st.sampled_from(_OPS))  # type: ignore[assignment]
        return f"{node.name}.op_type = {node.op_type}"
    if kind == "delete":
        g.node.remove(node)
        return f"deleted {node.name}"
    if kind == "input_type":
        g.input[0].type.tensor_type.elem_type = draw(st.sampled_from([0, 2, 7, 10, 11, 99]))  # type: ignore[assignment]
        return f"input type {g.input[0].type.tensor_type.elem_type}"
    if kind == "input_dims":
        dims = g.input[0].type.tensor_type.shape.dim
        k = draw(st.integers(0, len(dims) - 1))  # type: ignore[call-overload]
        dims[k].dim_value = draw(st.sampled_from(_ODD_INTS[1:-1]))  # type: ignore[assignment]
        return f"input dim {k} = {dims[k].dim_value}"
    if kind == "data_type" and g.initializer:
        t = g.initializer[0]
        t.data_type = draw(st.sampled_from([0, 2, 7, 8, 11, 16, 99]))  # type: ignore[assignment]
        return f"{t.name}.data_type = {t.data_type}"
    if kind == "drop_initializer" and g.initializer:
        del g.initializer[draw(st.integers(0, len(g.initializer) - 1))]  # type: ignore[call-overload]
        return "dropped an initializer"
    return "nothing"


@settings(max_examples=int(os.environ.get("ONNXLRP_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow], derandomize=not _LONG)
@given(st.data())
def test_structural_mutations(data: st.DataObject) -> None:
    """One random edit of a small CNN or MLP (attributes, wiring, dims, op types, types): an
    OnnxLrpError naming something, or a finite explanation — never another exception."""
    small_cnn = data.draw(st.booleans())
    m = H.arch_image(seed=1).model if small_cnn else mlp()
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6) if small_cnn else (2, 4)).astype(np.float32)
    for _ in range(data.draw(st.integers(1, 2))):
        note = _mutate(m, data.draw)
        data.draw(st.just(note), label="mutation")
    outcome_ok(m, x, data.draw(st.sampled_from(["gradient", "lrp", "sglrp", "epsilon_plus_flat"])))
