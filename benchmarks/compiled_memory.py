"""Resident memory of a compiled explanation graph against the plain onnxruntime session of the same model.

    python benchmarks/compiled_memory.py [--model vgg16 --model resnet50 ...] [--method epsilon_plus_flat ...]

Each measurement runs in a fresh subprocess: the growth of the resident set size (RSS, /proc/self/statm)
after creating the session and running it once at batch 1, and the process's peak RSS growth. The compiled
graph is measured in a default session and with ``session.disable_prepacking`` (what onnxlrp's own sessions
of compiled graphs use: onnxruntime otherwise packs the classifier weight once per reading node). The compiled
graph is written to a temporary file first (by another subprocess), so that compiling does not count.
Models are those of ``benchmarks/models.py`` (cached random-weight torchvision exports, the shipped model).
``--explainer`` measures ``onnxlrp.Explainer`` instead: at init, after one explain (its compiled fast path), peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
import numpy as np
import onnxruntime as ort

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6

path, compiled, prepack = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
base, peak0 = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
so = ort.SessionOptions()
so.intra_op_num_threads = 2
if not prepack:
    so.add_session_config_entry("session.disable_prepacking", "1")
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
loaded = rss() - base
shape = [d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape]
feed = {s.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
if compiled and len(s.get_inputs()) > 1:
    feed["target"] = np.zeros([1], np.int64)
s.run(None, feed)
print(json.dumps({"loaded_mb": loaded, "after_run_mb": rss() - base,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3 - base}))
"""


def measure(path: str, compiled: bool, prepack: bool = True) -> dict[str, float]:
    """RSS growth of a fresh process that loads ``path`` in onnxruntime and runs it once."""
    out = subprocess.run([sys.executable, "-c", CHILD, path, "1" if compiled else "0", "1" if prepack else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


EXPLAINER = r"""
import json, resource, sys
import numpy as np
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6
import onnxlrp
path, method = sys.argv[1], sys.argv[2]
base = rss()
ex = onnxlrp.Explainer(path, device="cpu", threads=2)
init = rss() - base
shape = [d or 1 for d in ex.input_shape]
ex.explain(np.random.default_rng(0).standard_normal(shape).astype(np.float32), 0, method)
print(json.dumps({"init_mb": init, "after_mb": rss() - base,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3 - base}))
"""


def explainer_memory(names: list[str], methods: list[str]) -> None:
    """The Explainer itself (the default fast path): RSS growth at init, after one explain, and the peak."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import models as bench_models  # noqa: E402 - benchmarks/models.py

    print("| model | method | Explainer() MB | after one explain MB | peak MB |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        spec = bench_models.get_model(name)
        for method in methods:
            out = subprocess.run([sys.executable, "-c", EXPLAINER, str(spec.path), method], capture_output=True,
                                 text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {name} | {method} | {r['init_mb']:.0f} | {r['after_mb']:.0f} | {r['peak_mb']:.0f} |", flush=True)


def main() -> None:
    """Print a markdown table: model, method, ORT session MB, compiled MB, ratio."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import models as bench_models  # noqa: E402 - benchmarks/models.py

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append")
    ap.add_argument("--method", action="append")
    ap.add_argument("--explainer", action="store_true", help="measure onnxlrp.Explainer (init, one explain) instead")
    args = ap.parse_args()
    names = args.model or ["vgg16", "resnet50", "efficientnet_lite0"]
    methods = args.method or ["lrp_epsilon", "epsilon_plus_flat"]
    if args.explainer:
        explainer_memory(names, methods)
        return
    print("| model | method | ORT session MB | compiled MB | ratio | compiled, no prepacking MB | ratio | "
          "ORT peak MB | compiled peak MB (no prepacking) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            spec = bench_models.get_model(name)
            plain = measure(str(spec.path), False)
            for method in methods:
                out = Path(tmp) / f"{name}.{method}.onnx"
                subprocess.run([sys.executable, "-m", "onnxlrp.cli", "compile", str(spec.path), "-m", method, "-o",
                                str(out), "--no-verify"], check=True, capture_output=True)
                comp = measure(str(out), True)
                lean = measure(str(out), True, prepack=False)
                ref = plain["after_run_mb"]
                after = comp["after_run_mb"]
                print(f"| {name} | {method} | {ref:.0f} | {after:.0f} | {after / ref:.2f}× | "
                      f"{lean['after_run_mb']:.0f} | {lean['after_run_mb'] / ref:.2f}× | {plain['peak_mb']:.0f} | "
                      f"{lean['peak_mb']:.0f} |", flush=True)
                out.unlink()


if __name__ == "__main__":
    main()
