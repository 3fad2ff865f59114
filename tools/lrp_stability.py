"""Why onnxlrp's ``lrp`` departs from the letter of the spec: the numbers quoted in docs/methods.md.

Runs the shipped EfficientNet-Lite0 on ``data/images/zebra_elephant3.jpg`` (target 340 "zebra", the
ImageNet preset's input box) and prints, for each rule variant, the heatmap's total relevance
(the start relevance is ``y_t``), its share on the zebra and elephant regions of
``data/regions/zebra_elephant3.json`` (of Σ|h|) and the share of the ten largest pixels:

* ``spec-literal``: methods.md word for word — Alpha-Beta(1,0) *with* bias, W² on every linear
  layer not followed by a ReLU, ReLUs passing relevance through;
* ``lrp bias=True`` / ``lrp``: onnxlrp's bounded Deep Taylor with and without the bias;
* ``W² on all non-ReLU layers``: ``lrp`` but with W² also on the projection convolutions;
* the iNNvestigate presets with and without the bias.

    python tools/lrp_stability.py
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxlrp import Explainer  # noqa: E402
from onnxlrp import composites as C  # noqa: E402
from onnxlrp.image import Preprocess, input_range, load_images, region_mask  # noqa: E402
from onnxlrp.methods import METHODS  # noqa: E402
from onnxlrp.rules import GateToSignal, SafeDivide, alpha_beta_innvestigate, wsquare, zbox  # noqa: E402


def _bounded(bias: bool, w2_everywhere: bool, relu_pass: bool) -> C.Composite:
    """A bounded-Deep-Taylor composite with the given departures from onnxlrp's ``lrp``."""
    zb, w2, ab = zbox(SafeDivide()), wsquare(SafeDivide(), bias=False), alpha_beta_innvestigate(1.0, 0.0, bias)

    def linear(layer):  # type: ignore[no-untyped-def]
        if layer.first:
            return zb
        if layer.followed_by_relu:
            return ab
        return w2 if (w2_everywhere or layer.classifier) else ab

    other = {"affine": C.PASS, "batchnorm": C.PASS, "gate": GateToSignal()}
    if relu_pass:
        other["activation"] = C.PASS
    return C.Composite("variant", linear, other, needs_bounds=True)


def main() -> int:
    """Print the table."""
    ex = Explainer(ROOT / "models" / "efficientnet_lite0.onnx", device="cpu")
    spec = Preprocess("imagenet", (224, 224), "NCHW", "bicubic")
    x = load_images([ROOT / "data" / "images" / "zebra_elephant3.jpg"], spec)
    low, high = input_range(spec)
    doc = json.loads((ROOT / "data" / "regions" / "zebra_elephant3.json").read_text())
    masks = {r["label"]: region_mask(r["boxes"], (doc["width"], doc["height"]), (224, 224)) for r in doc["regions"]}
    t = 340
    y_t = float(ex.predict(x)[0, t])
    variants = {
        "spec-literal": ("lrp", lambda: _bounded(True, True, True), {}),
        "lrp bias=True": ("lrp", None, {"bias": True}),
        "lrp (default)": ("lrp", None, {}),
        "W² on all non-ReLU layers": ("lrp", lambda: _bounded(False, True, False), {}),
        "lrp_preset_a (bias)": ("lrp_preset_a", None, {}),
        "lrp_preset_a bias=False": ("lrp_preset_a", None, {"bias": False}),
        "lrp_preset_b (bias)": ("lrp_preset_b", None, {}),
        "lrp_preset_b bias=False": ("lrp_preset_b", None, {"bias": False}),
    }
    print(f"EfficientNet-Lite0, zebra_elephant3.jpg, target {t} (y_t = {y_t:.2f})\n")
    print("| variant | Σ h | zebra share | elephant share | top-10 pixels' share |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (method, composite, opts) in variants.items():
        m = METHODS[method]
        if composite is not None:
            METHODS["_variant"] = dataclasses.replace(m, name="_variant", composite=composite, options=("low", "high"))
            method = "_variant"
        kw = {"low": low, "high": high} if "low" in METHODS[method].options else {}
        h = np.asarray(ex.explain(x, target=t, method=method, **kw, **opts), np.float64)[0].sum(0)
        tot = np.abs(h).sum()
        top = np.sort(np.abs(h).ravel())[-10:].sum() / tot
        print(f"| {name} | {h.sum():+.3g} | {h[masks['zebra']].sum() / tot:+.3f} | "
              f"{h[masks['elephant']].sum() / tot:+.3f} | {top:.3f} |")
    METHODS.pop("_variant", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
