"""Where a compiled explanation graph spends its time: onnxruntime's own profiler, summed by op type.

    python benchmarks/compiled_profile.py MODEL [--method lrp_epsilon] [--threads 2] [--runs 5]

MODEL is a name of ``benchmarks/models.py`` (``vgg16``, ``resnet50``, ``efficientnet_lite0``,
``mobilenet_v3_large``) or an ``.onnx`` path. Nodes the compiler wrote are named ``lrp_*``; after
onnxruntime's layout optimisation (NCHWc) some keep only their output's name, so the split into forward
and backward is by node name and approximate; the reorder nodes onnxruntime inserts are listed on their own.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    """Print the op types by total time (ms per run) and share."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import onnxruntime as ort

    import models as bench_models  # noqa: E402 - benchmarks/models.py
    from onnxlrp.compiler import compile_explanation

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--method", default="lrp_epsilon")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    spec = bench_models.get_model(args.model)
    proto = compile_explanation(str(spec.path), args.method, verify=False)
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "prof")
        so.log_severity_level = 3
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
        feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32),
                "target": np.zeros([shape[0]], np.int64)}
        sess.run(None, feed)  # warm-up, not counted
        sess.end_profiling()
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(args.runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    total: collections.Counter[tuple[str, str]] = collections.Counter()
    count: collections.Counter[tuple[str, str]] = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"].get("op_name", "?")
        part = "reorder" if op.startswith("Reorder") else ("backward" if "lrp" in e["name"] else "forward")
        total[(part, op)] += e["dur"]
        count[(part, op)] += 1
    all_us = sum(total.values())
    print(f"{args.model}, {args.method}, batch {shape[0]}, {args.threads} threads: "
          f"{all_us / args.runs / 1e3:.1f} ms of kernels per run")
    print("| part | op | ms per run | nodes | share |")
    print("| --- | --- | --- | --- | --- |")
    for (part, op), us in total.most_common(15):
        print(f"| {part} | {op} | {us / args.runs / 1e3:.1f} | {count[(part, op)] // args.runs} | "
              f"{100 * us / all_us:.0f}% |")


if __name__ == "__main__":
    main()
