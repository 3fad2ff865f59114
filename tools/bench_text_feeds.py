"""Time ``explain`` on a text model when every call brings new attention masks.

Exports a BERT classifier with random weights (``transformers``, dynamo exporter; ``--hidden``,
``--layers`` …) unless ``--model`` names an ONNX file with inputs ``input_ids``/``attention_mask``,
then times: the first call (8 texts, 8 different masks), later calls of 8 texts with new masks
(median of 5), and 8 calls of one text each; and counts the onnxruntime sessions created. Then
the same later calls on the compiled graph (``compile_explanation``: masks are its inputs), with
its compile time and its largest difference to the engine.

    python tools/bench_text_feeds.py                      # tiny BERT: hidden 32, 2 layers, vocabulary 100
    python tools/bench_text_feeds.py --hidden 256 --layers 4 --heads 4 --vocab 30522

To compare with another version of onnxlrp, run it with that version first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import onnxlrp.explainer as explainer_module
import onnxlrp.runtime as runtime
from onnxlrp import Explainer

TEXTS = 8
LENGTH = 16  # --length


def export_bert(path: Path, hidden: int, layers: int, heads: int, vocab: int) -> None:
    """A random-weight ``BertForSequenceClassification`` (2 classes) exported with the dynamo exporter."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=4 * hidden,
                                  max_position_embeddings=max(64, LENGTH), num_labels=2, attn_implementation="eager")
    bert = transformers.BertForSequenceClassification(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.randint(1, vocab, (2, LENGTH))
    mask = torch.ones(2, LENGTH, dtype=torch.long)
    mask[1, 10:] = 0
    n = torch.export.Dim("N")
    torch.onnx.export(Logits().eval(), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=18, dynamo=True,
                      dynamic_shapes={"input_ids": {0: n}, "attention_mask": {0: n}})


def batch(seed: int, vocab: int) -> dict[str, np.ndarray]:
    """8 texts with 8 different padding masks (which ones depends on ``seed``)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((TEXTS, LENGTH), np.int64)
    for i in range(TEXTS):
        mask[i, LENGTH - 1 - (i + seed) % TEXTS:] = 0
    return {"input_ids": rng.integers(1, vocab, (TEXTS, LENGTH)).astype(np.int64), "attention_mask": mask}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=100)
    ap.add_argument("--method", default="attnlrp")
    ap.add_argument("--length", type=int, default=16, help="tokens per text (default 16)")
    args = ap.parse_args()
    global LENGTH
    LENGTH = args.length
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = Path(tmp) / "bert.onnx"
            export_bert(path, args.hidden, args.layers, args.heads, args.vocab)
        made = [0]
        real = runtime.make_session

        def counting(*a, **k):  # type: ignore[no-untyped-def]
            made[0] += 1
            return real(*a, **k)

        runtime.make_session = counting
        explainer_module.make_session = counting  # type: ignore[attr-defined]
        ex = Explainer(path, device="cpu")
        t = time.perf_counter()
        ex.explain(batch(0, args.vocab), target=1, method=args.method)
        first = time.perf_counter() - t
        later = []
        for seed in range(1, 6):
            t = time.perf_counter()
            ex.explain(batch(seed, args.vocab), target=1, method=args.method)
            later.append(time.perf_counter() - t)
        texts = batch(7, args.vocab)
        t = time.perf_counter()
        for i in range(TEXTS):
            ex.explain({k: v[i:i + 1] for k, v in texts.items()}, target=1, method=args.method)
        singles = time.perf_counter() - t
        # the compiled graph (onnxlrp compile): the masks are its inputs, one session serves every call
        from onnxlrp.compiler import compile_explanation
        from onnxlrp.compiler.runner import CompiledExplainer

        t = time.perf_counter()
        ce = CompiledExplainer(compile_explanation(str(path), args.method, shape=(LENGTH,)), device="cpu")
        compile_s = time.perf_counter() - t
        comp, errs = [], []
        for seed in range(1, 6):
            b = batch(seed, args.vocab)
            t = time.perf_counter()
            heat = ce.explain(b, 1)
            comp.append(time.perf_counter() - t)
            full = ex.explain(b, target=1, method=args.method, per_token=False)
            errs.append(float(np.abs(heat - full.sum(-1)).max() / np.abs(full).sum(-1).max()))
    print(f"{args.method}: first call ({TEXTS} texts) {first:.3f} s; later calls of {TEXTS} texts with new masks: "
          f"median {np.median(later):.3f} s; {TEXTS} calls of 1 text: {singles:.3f} s; "
          f"onnxruntime sessions created: {made[0]}")
    print(f"compiled: compile + check {compile_s:.2f} s once; calls of {TEXTS} texts with new masks: median "
          f"{np.median(comp):.4f} s; largest difference to the engine {max(errs):.2g} (per token, relative to Σ|R|)")


if __name__ == "__main__":
    main()
