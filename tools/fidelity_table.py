"""Fidelity of onnxlrp against the Zennit reference fixtures: model x method x largest relative error.

Usage::

    python tools/fidelity_table.py [--fixtures tests/fixtures] [--device cpu] [--json out.json]

For every fixture ONNX file with a reference (``<name>.onnx`` and ``<name>_dynamo.onnx`` use
``<name>_ref.npz``, written by ``tools/make_fixtures.py``) and every method, onnxlrp's heatmaps are compared
with the float64 Zennit maps. The LRP composites of onnxlrp start from the target logit ``y_t`` while the
references start from 1, so the reference is scaled by ``logits[n, t]``; the gradient compares unscaled.

Per target ``t`` and sample ``n`` the relative error is ``max|heat - ref| / max|ref|`` and the tolerance
``max(1e-4, 2 * err32[t, n])`` where ``err32`` is Zennit's own float32-vs-float64 error stored in the
fixture. For models with a squeeze-excitation gate the fixture holds two conventions for the gate product
(``gradient``: Zennit's plain tensor op; ``signal``: all relevance to the signal, docs/methods.md); both
are reported. The helpers here are shared with ``tests/test_fidelity_zennit.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METHODS: tuple[str, ...] = ("epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box", "gradient")
LRP_METHODS: frozenset[str] = frozenset(METHODS[:3])
GATE_VARIANTS: dict[str, str] = {"gradient": "", "signal": "_gatesignal"}
MIN_TOL = 1e-4
DEFAULT_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def reference_path(onnx_path: Path) -> Path:
    """The ``<name>_ref.npz`` belonging to ``<name>.onnx`` or ``<name>_dynamo.onnx``."""
    base = onnx_path.stem.removesuffix("_dynamo")
    return onnx_path.with_name(f"{base}_ref.npz")


def fixture_models(fixtures: Path = DEFAULT_FIXTURES) -> list[Path]:
    """All fixture ONNX files that have a Zennit reference (a ``*_ref.npz`` with a ``meta`` record), sorted.

    Other references in the folder (LXT's, the torch-export gradients) have their own tests.
    """
    def zennit(p: Path) -> bool:
        ref = reference_path(p)
        if not ref.exists():
            return False
        with np.load(ref) as data:
            return "meta" in data.files

    return sorted(p for p in fixtures.glob("*.onnx") if zennit(p))


def load_reference(path: Path) -> dict[str, Any]:
    """Load a ``*_ref.npz`` into a dict (``meta`` parsed from JSON)."""
    with np.load(path) as data:
        ref: dict[str, Any] = {k: data[k] for k in data.files}
    ref["meta"] = json.loads(str(ref["meta"]))
    return ref


def gate_variants(ref: dict[str, Any], method: str) -> dict[str, str]:
    """The SE-gate conventions available for ``method`` in ``ref``: name -> key suffix."""
    return {name: sfx for name, sfx in GATE_VARIANTS.items() if f"{method}{sfx}_f64" in ref}


def expected_maps(ref: dict[str, Any], method: str, suffix: str = "") -> np.ndarray:
    """Reference ``(T, N, C, H, W)`` float64 in onnxlrp's convention (LRP maps scaled by ``y_t``)."""
    maps = ref[f"{method}{suffix}_f64"]
    if method not in LRP_METHODS:
        return maps
    targets = ref["targets"]
    scale = ref["logits"][:, targets].T  # (T, N): logits[n, targets[t]]
    return maps * scale[:, :, None, None, None]


def tolerances(ref: dict[str, Any], method: str, suffix: str = "") -> np.ndarray:
    """Relative tolerance per (target, sample): ``max(1e-4, 2 * err32)``."""
    return np.maximum(MIN_TOL, 2.0 * ref[f"{method}{suffix}_err32"])


def relative_errors(heat: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """``max|heat - expected| / max|expected|`` per leading (target, sample) pair."""
    t, n = expected.shape[:2]
    diff = np.abs(np.asarray(heat, np.float64) - expected).reshape(t, n, -1).max(axis=2)
    scale = np.abs(expected).reshape(t, n, -1).max(axis=2)
    return diff / np.maximum(scale, np.finfo(np.float64).tiny)


def explain_kwargs(ref: dict[str, Any], method: str) -> dict[str, float]:
    """Extra keyword arguments of ``Explainer.explain`` for ``method``."""
    if method == "epsilon_gamma_box":
        return {"low": float(ref["low"]), "high": float(ref["high"])}
    return {}


@dataclass
class Fidelity:
    """Errors of one model x method; ``errors``/``tols`` per gate convention, each ``(T, N)``."""

    model: str
    method: str
    errors: dict[str, np.ndarray] = field(default_factory=dict)
    tols: dict[str, np.ndarray] = field(default_factory=dict)
    failure: str | None = None  # set when explain raised

    def passes(self, variant: str) -> bool:
        """Whether every (target, sample) is within tolerance for the gate convention ``variant``."""
        return bool(np.all(self.errors[variant] <= self.tols[variant]))

    @property
    def best(self) -> str:
        """The gate convention with the smallest largest error."""
        return min(self.errors, key=lambda v: float(self.errors[v].max()))

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        if self.failure is not None:
            return {"error": self.failure}
        return {
            v: {"max_rel_err": float(e.max()), "tol": float(self.tols[v].min()), "pass": self.passes(v)}
            for v, e in self.errors.items()
        }


def evaluate(explainer: Any, ref: dict[str, Any], method: str, model: str = "") -> Fidelity:
    """Run ``explainer`` on the fixture's images and targets and compare with every gate convention."""
    x = ref["x"]
    targets = [int(t) for t in ref["targets"]]
    heat = np.asarray(explainer.explain(x, targets=targets, method=method, **explain_kwargs(ref, method)))
    expected_shape = (len(targets), *x.shape)
    if heat.shape != expected_shape:
        raise AssertionError(f"explain returned shape {heat.shape}, expected {expected_shape}")
    result = Fidelity(model=model, method=method)
    for variant, suffix in gate_variants(ref, method).items():
        result.errors[variant] = relative_errors(heat, expected_maps(ref, method, suffix))
        result.tols[variant] = tolerances(ref, method, suffix)
    return result


def format_table(results: list[Fidelity]) -> str:
    """Markdown table: one row per model, one column per method, largest relative error per cell.

    With two SE-gate conventions a cell lists both (``ok`` / ``no match``); ``ERROR``: explain raised.
    """
    models = list(dict.fromkeys(r.model for r in results))
    methods = [m for m in METHODS if any(r.method == m for r in results)]
    cells = {(r.model, r.method): r for r in results}
    lines = ["| model | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for model in models:
        row = []
        for method in methods:
            r = cells.get((model, method))
            if r is None:
                row.append("-")
                continue
            if r.failure is not None:
                row.append("ERROR")
                continue
            several = len(r.errors) > 1
            parts = []
            for variant, err in r.errors.items():
                mark = "ok" if r.passes(variant) else ("no match" if several else "FAIL")
                label = f"{variant}-gate " if several else ""
                parts.append(f"{label}{err.max():.1e} {mark}")
            row.append(" / ".join(parts))
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    from onnxlrp import Explainer

    results = []
    for path in fixture_models(args.fixtures):
        explainer = Explainer(str(path), device=args.device)
        ref = load_reference(reference_path(path))
        for method in args.methods:
            try:
                results.append(evaluate(explainer, ref, method, model=path.stem))
            except Exception as exc:  # noqa: BLE001 - report and go on with the next cell
                message = f"{type(exc).__name__}: {exc}"
                print(f"{path.stem} / {method}: {message}", file=sys.stderr)
                results.append(Fidelity(model=path.stem, method=method, failure=message))
    print(format_table(results))
    if args.json:
        payload = {f"{r.model}/{r.method}": r.summary() for r in results}
        args.json.write_text(json.dumps(payload, indent=2))
    failed = [r for r in results if r.failure is not None or not any(r.passes(v) for v in r.errors)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
