"""Compile text models (token ids, masks) for several methods and check each graph against the engine.

    python tools/compile_text_check.py MODEL.onnx [...] [--methods a,b] [--shape L]

Each model × method is compiled with ``compile_explanation`` (its own check: the graph against
``Explainer.explain`` on random ids, random padding and random token types, per token relative to the
largest Σ_D |R| of a token, tolerance 1e-4), then run once more here on another random batch of 4 and
compared the same way (tolerance 1e-5 reported). Prints a markdown table: ok / refused (with the reason),
whether the batch axis stayed dynamic, the error.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxlrp import Explainer  # noqa: E402
from onnxlrp.compiler import CompiledExplainer, compile_explanation  # noqa: E402
from onnxlrp.compiler.tokens import check_feeds_random, table_rows, token_setup  # noqa: E402
from onnxlrp.errors import OnnxLrpError  # noqa: E402
from onnxlrp.inputs import needs_plan  # noqa: E402
from onnxlrp.loading import load_model  # noqa: E402

METHODS = "lrp_epsilon,epsilon_plus_flat,attnlrp,cp_lrp,gradient,input_x_gradient"


def main() -> None:
    """Print the model × method table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--shape", type=int, help="token count for models whose length is dynamic")
    args = ap.parse_args()
    print("| model | method | result | batch | error (per token, / max Σ|R|) |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.models:
        proto = load_model(path)
        if not needs_plan(proto):  # one float input: tools/compile_check.py checks it
            print(f"| {Path(path).name} | — | skipped: a single float input (tools/compile_check.py) | | |")
            continue
        shape = (args.shape,) if args.shape else None
        plan, tokens = token_setup(proto, shape, None)
        ex = Explainer(path, device="cpu", kernels="engine")
        name = Path(path).name.split(".")[0] + "." + Path(path).name.split(".")[1]
        for method in args.methods.split(","):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    compiled = compile_explanation(proto, method, shape=shape)
                except OnnxLrpError as exc:
                    print(f"| {name} | {method} | refused: {str(exc)[:160]} | | |", flush=True)
                    continue
            fixed = any("compiled for batch 1" in str(w.message) for w in caught)
            rng = np.random.default_rng(7)
            feeds = check_feeds_random(plan, 4, tokens, table_rows(proto, plan), rng, proto, full_first=False)
            tg = rng.integers(0, ex.predict(feeds).shape[1], size=4)
            heat = CompiledExplainer(compiled, device="cpu").explain(feeds, tg)
            full = ex.explain(feeds, tg, method, per_token=False)
            ref = full.sum(-1) if plan.kind == "embedding" else full
            scale = np.abs(full).sum(-1) if plan.kind == "embedding" else np.abs(full)
            err = float(np.abs(heat - ref).max() / max(float(scale.max()), 1e-30))
            status = "ok" if err <= 1e-5 else "DIFFERS"
            print(f"| {name} | {method} | {status} | {'1 (fixed)' if fixed else 'dynamic'} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
