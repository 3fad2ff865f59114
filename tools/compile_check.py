"""Compile every propagation/gradient method for ONNX models and compare with the engine.

    python tools/compile_check.py [MODEL.onnx ...] [--methods a,b] [--out docs/compiled.md]

For each model × method: compile (``onnxlrp.compiler.compile_explanation``, dynamic batch), run the
compiled graph in a plain onnxruntime session at batch 2 on random inputs, and compare the heatmaps with
``Explainer.explain`` (relative error max|diff| / max|engine|). An error above 1e-5 is checked for a
float32 tie: the engine's backward is run on the compiled graph's own forward tensors
(``onnxlrp.compiler.verify.same_forward_error``); when that agrees to 1e-5, the two forwards rounded a
ReLU/max-pool decision differently (onnxruntime fuses differently when intermediate tensors are outputs)
and the row says "tie" with both numbers. A map for which the engine raises a RelevanceWarning (its
relevance blew up a thousandfold: rounding is amplified without bound) is marked "unstable".
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxlrp import Explainer, RelevanceWarning  # noqa: E402
from onnxlrp.compiler import compilable_methods, compile_explanation, run_compiled  # noqa: E402
from onnxlrp.compiler.verify import same_forward_error  # noqa: E402
from onnxlrp.errors import OnnxLrpError  # noqa: E402


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| / max |b| (0 when both are zero)."""
    m = float(np.abs(b).max())
    d = float(np.abs(a - b).max())
    return 0.0 if d == 0 else d / max(m, 1e-30)


def check(path: str, method: str, n: int = 2, seed: int = 0) -> dict[str, object]:
    """One model × method row."""
    ex = Explainer(path, device="cpu", kernels="engine")  # the reference: the layer-by-layer engine
    dims = ex.input_shape
    sample = tuple(d if d is not None else 8 for d in dims[1:])
    fixed = dims[0]
    n = fixed or n
    t0 = time.perf_counter()
    try:
        cm = compile_explanation(path, method, verify=False, shape=sample)
    except OnnxLrpError as exc:
        return {"status": "refused", "why": str(exc)[:160]}
    t_compile = time.perf_counter() - t0
    dim = cm.graph.input[0].type.tensor_type.shape.dim[0]
    if dim.HasField("dim_value"):  # compiled for a fixed batch (a batch-dependent graph; the warning says why)
        n = int(dim.dim_value)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + sample).astype(np.float32)
    c = ex.predict(x).shape[1]
    tg = rng.integers(0, c, size=n)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = ex.explain(x, tg, method)
    unstable = any(issubclass(w.category, RelevanceWarning) for w in caught)
    _, heat = run_compiled(cm, x, tg.astype(np.int64))
    err = rel(heat, ref)
    row: dict[str, object] = {"status": "ok" if err <= 1e-5 else "MISMATCH", "err": err, "compile_s": t_compile,
                              "nodes": len(cm.graph.node)}
    if err > 1e-5:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            same = same_forward_error(cm, ex, x, tg, method)
        row["same_forward"] = same
        if same <= 1e-5:
            row["status"] = "tie"
        elif unstable:
            row["status"] = "unstable"
    return row


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--methods", default=",".join(compilable_methods()))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    models = args.models or sorted(glob.glob("tests/fixtures/*.onnx")) + ["models/efficientnet_lite0.onnx"]
    lines = ["| model | method | status | rel. error | nodes | compile s |", "|---|---|---|---|---|---|"]
    for path in models:
        for method in args.methods.split(","):
            try:
                row = check(path, method)
            except OnnxLrpError as exc:
                row = {"status": "engine refuses", "why": str(exc)[:120]}
            except Exception as exc:  # noqa: BLE001 - a report tool: record and go on
                row = {"status": "ERROR", "why": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
            err = row.get("err")
            extra = f" (same-forward error {row['same_forward']:.2g})" if "same_forward" in row else ""
            why = row.get("why", "")
            line = (f"| {Path(path).name} | {method} | {row['status']}{extra} {why} | "
                    f"{'' if err is None else f'{err:.2g}'} | {row.get('nodes', '')} | "
                    f"{row.get('compile_s', 0):.2f} |")
            print(line, flush=True)
            lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
