"""Compile every propagation/gradient method for ONNX models and compare with the engine.

    python tools/compile_check.py [MODEL.onnx ...] [--methods a,b] [--out docs/compiled.md]

For each model × method: compile (``onnxlrp.compiler.compile_explanation``, dynamic batch), run the
compiled graph in a plain onnxruntime session at batch 2 on random inputs, and compare the heatmaps with
``Explainer.explain`` (relative error max|diff| / max|engine|). An error above 1e-5 is checked for a
float32 tie: the engine is run again on the input scaled by (1 + 2⁻²³) (one ulp); when the engine itself
moves by at least a tenth of the disagreement, the input sits on a ReLU/max-pool decision that the
compiled graph's (differently fused) forward rounds the other way, and the row says "tie" with both numbers.
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

from onnxlrp import Explainer  # noqa: E402
from onnxlrp.compiler import compilable_methods, compile_explanation, run_compiled  # noqa: E402
from onnxlrp.errors import OnnxLrpError  # noqa: E402


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| / max |b| (0 when both are zero)."""
    m = float(np.abs(b).max())
    d = float(np.abs(a - b).max())
    return 0.0 if d == 0 else d / max(m, 1e-30)


def check(path: str, method: str, n: int = 2, seed: int = 0) -> dict[str, object]:
    """One model × method row."""
    ex = Explainer(path, device="cpu")
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
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + sample).astype(np.float32)
    c = ex.predict(x).shape[1]
    tg = rng.integers(0, c, size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ex.explain(x, tg, method)
        _, heat = run_compiled(cm, x, tg.astype(np.int64))
        err = rel(heat, ref)
        row: dict[str, object] = {"status": "ok" if err <= 1e-5 else "MISMATCH", "err": err, "compile_s": t_compile,
                                  "nodes": len(cm.graph.node)}
        if err > 1e-5:
            moved = rel(ex.explain(x * np.float32(1 + 2 ** -23), tg, method), ref)
            row["ulp_move"] = moved
            if moved >= 0.1 * err:
                row["status"] = "tie"
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
            extra = f" (1-ulp move {row['ulp_move']:.2g})" if "ulp_move" in row else ""
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
