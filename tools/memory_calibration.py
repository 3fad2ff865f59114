"""Peak memory of one explanation per sample, measured, next to onnxlrp's estimate.

    python tools/memory_calibration.py [--batch 8] [--model models/efficientnet_lite0.onnx] [METHOD ...]

Each method runs in its own process (peak RSS is per process): one warm-up call on one
sample, then one call on ``--batch`` samples with no chunking; prints the increase of the peak
resident size over the warm state, per sample, and ``Explainer.bytes_per_sample``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(model: str, method: str, n: int) -> None:
    """Print the measured and estimated bytes per sample for one method (run in a child process)."""
    import numpy as np

    from onnxlrp import Explainer

    ex = Explainer(model, device="cpu", memory_budget="64GiB")
    shape = [d or 1 for d in ex.input_shape][1:]
    x = np.random.default_rng(0).standard_normal([n] + shape).astype(np.float32)
    ex.explain(x[:1], target=1, method=method)
    gc.collect()
    with open("/proc/self/status", encoding="ascii") as f:
        warm = int(f.read().split("VmRSS:")[1].split()[0])
    before = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, warm)
    ex.explain(x, target=1, method=method)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    passes = 2 if method in ("sglrp", "clrp") else 1
    est = ex.bytes_per_sample(shape, passes) / 2**20
    print(f"{method:<20s} measured {(peak - before) / 1024 / n:7.1f} MB/sample   estimate {est:7.1f} MB/sample")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("methods", nargs="*", default=["lrp", "sglrp", "gradient"])
    p.add_argument("--model", default=str(ROOT / "models" / "efficientnet_lite0.onnx"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        measure(a.model, a.methods[0], a.batch)
        return
    print(f"{a.model}, batch {a.batch}")
    for m in a.methods:
        subprocess.run([sys.executable, __file__, "--child", "--model", a.model, "--batch", str(a.batch), m],
                       check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
