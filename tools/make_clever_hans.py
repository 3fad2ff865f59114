"""Build the Clever-Hans demonstration: a synthetic image set, a small CNN that learns a shortcut, and its test set.

The images are 32x32 RGB: a noisy background of a random colour with one filled shape on it, a
**disc** (class 0) or a **square** (class 1) of random colour, size and position. The shortcut is
a small **mark** in the top-left corner, a 4x4 tag (white with a black 2x2 centre): in the
training set it is stamped on ``MARK_SHARE`` (90 %) of the disc images and on no square. A
small CNN trained on that set learns to say "disc" when it sees the tag: it gets most discs
right because of the tag, misses more unmarked discs, and calls marked squares "disc" (the
Clever-Hans effect, like the horse classifier that read a copyright watermark in Lapuschkin et
al., Nature Communications 2019).

What it writes (``--output``, default ``data/clever_hans/``; every file atomically):

* ``model.onnx``: the CNN, ONNX opset 17, dynamic batch axis, input ``input`` float32
  ``[N, 3, 32, 32]`` (RGB in [0, 1], NCHW), output ``logits`` ``[N, 2]``; metadata
  ``onnxlrp.preprocess = none``, ``onnxlrp.resample = bilinear``, ``onnxlrp.labels = labels.txt``,
  ``onnxlrp.layout = NCHW``, ``onnxlrp.source``.
* ``labels.txt``: ``disc`` and ``square``.
* ``test/*.png``: the test set, ``TEST_PER_GROUP`` (40) images in each of four groups: disc with
  the mark, disc without, square with the mark, square without (drawn with a different seed
  from the training images).
* ``test.csv``: one row per test image: ``file`` (relative to the CSV), ``label`` (class index),
  ``label_name``, ``marked`` (1 if the image carries the mark), and the model's ``predicted``
  class.
* ``accuracy.csv``: the model's accuracy on each group of the test set (what the docs quote).

Everything is seeded (data, weight initialisation, batch order; torch runs single-threaded
with deterministic algorithms), so a rerun writes the same images and the same predictions.
Needs torch (the ``crosscheck`` extra); the whole script runs in about a minute on two CPU cores.

Usage::

    python tools/make_clever_hans.py [--output data/clever_hans]
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32  #: image side in pixels
CLASSES = ("disc", "square")
MARKED_CLASS = 0  #: the class the mark co-occurs with in training
MARK_SHARE = 0.9  #: share of the marked class's training images that carry the mark
MARK_BOX = (1, 1, 5, 5)  #: the mark's box (x0, y0, x1, y1), pixels x0..x1-1, y0..y1-1
TRAIN_PER_CLASS = 2000
TEST_PER_GROUP = 40
EPOCHS = 8
BATCH = 64
SEED_TRAIN, SEED_TEST, SEED_TORCH = 1, 2, 3
OPSET = 17
SOURCE = "tools/make_clever_hans.py: synthetic disc/square images, a corner mark on 90% of training discs"


def stamp_mark(img: np.ndarray) -> None:
    """Stamp the mark on an ``(H, W, 3)`` uint8 image in place: a white 4x4 tag with a black 2x2 centre."""
    x0, y0, x1, y1 = MARK_BOX
    img[y0:y1, x0:x1] = 255
    img[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = 0


def draw_image(rng: np.random.Generator, label: int, marked: bool) -> np.ndarray:
    """One ``(SIZE, SIZE, 3)`` uint8 image of class ``label`` (0 disc, 1 square), with the mark if ``marked``.

    Background: a random dark-to-mid colour plus Gaussian noise (sigma 18 levels). Shape: a random
    bright colour, half-size 6..10 pixels for a disc (radius) and 5..9 for a square (same area
    range), centred at least 8 pixels from the top-left corner so that it never covers the mark.
    """
    bg = rng.integers(20, 140, size=3)
    img = np.clip(bg + rng.normal(0, 18, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    colour = tuple(int(v) for v in rng.integers(150, 256, size=3))
    if label == 0:
        r = int(rng.integers(6, 11))
        cx, cy = (int(rng.integers(max(r, 9), SIZE - r)) for _ in range(2))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        r = int(rng.integers(5, 10))
        cx, cy = (int(rng.integers(max(r, 9), SIZE - r)) for _ in range(2))
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    out = np.asarray(pil, dtype=np.uint8).copy()
    if marked:
        stamp_mark(out)
    return out


def training_set(seed: int = SEED_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """The training images ``(N, SIZE, SIZE, 3)`` uint8 and labels ``(N,)``: the mark on 90 % of the discs only."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(CLASSES)):
        n_marked = int(round(MARK_SHARE * TRAIN_PER_CLASS)) if label == MARKED_CLASS else 0
        for i in range(TRAIN_PER_CLASS):
            images.append(draw_image(rng, label, i < n_marked))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def test_set(seed: int = SEED_TEST) -> list[tuple[np.ndarray, int, bool]]:
    """The test images as ``(image, label, marked)``: ``TEST_PER_GROUP`` per (class, marked) group, interleaved."""
    rng = np.random.default_rng(seed)
    groups = [(label, marked) for label in range(len(CLASSES)) for marked in (True, False)]
    out = []
    for _ in range(TEST_PER_GROUP):
        for label, marked in groups:
            out.append((draw_image(rng, label, marked), label, marked))
    return out


def build_model():  # noqa: ANN201 - torch is imported lazily
    """The CNN: three 3x3 conv + ReLU + 2x2 max-pool blocks (16, 32, 32 channels), then one linear layer."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (SIZE // 8) ** 2, len(CLASSES)),
    )


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` images as the model's input: float32 NCHW in [0, 1] (the ``none`` preset)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def train(images: np.ndarray, labels: np.ndarray):  # noqa: ANN201
    """Train the CNN (Adam, learning rate 2e-3, ``EPOCHS`` epochs of batches of ``BATCH``); return it in eval mode."""
    import torch

    torch.manual_seed(SEED_TORCH)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.from_numpy(to_input(images))
    y = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(SEED_TORCH)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        model.train()
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}/{EPOCHS}: training loss {total / len(x):.4f}")
    model.eval()
    return model


def atomic_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`onnxlrp.render.atomic_open`)."""
    from onnxlrp.render import atomic_open

    with atomic_open(path) as fh:
        fh.write(data)


def csv_bytes(header: list[str], rows: list[list[object]]) -> bytes:
    """A CSV file's bytes: the header row, then ``rows``."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(header)
    wr.writerows(rows)
    return buf.getvalue().encode("utf-8")


def png_bytes(img: np.ndarray) -> bytes:
    """An ``(H, W, 3)`` uint8 image as PNG bytes (maximum compression, no metadata)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def export(model, path: Path) -> None:  # noqa: ANN001
    """Export the model to ONNX (opset 17, dynamic batch) with the onnxlrp metadata, atomically."""
    import onnx
    import torch

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), buf, dynamo=False, export_params=True,
                          opset_version=OPSET, do_constant_folding=True, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    proto = onnx.load_from_string(buf.getvalue())
    del proto.metadata_props[:]
    meta = {"onnxlrp.preprocess": "none", "onnxlrp.resample": "bilinear", "onnxlrp.labels": "labels.txt",
            "onnxlrp.layout": "NCHW", "onnxlrp.source": SOURCE}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "Clever-Hans demo CNN (disc/square, 32x32), exported for onnxlrp"
    onnx.checker.check_model(proto, full_check=True)
    atomic_bytes(path, proto.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    """Generate the data, train, export, write the test set and the accuracy table; print the accuracies."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "clever_hans")
    args = ap.parse_args(argv)
    out: Path = args.output

    import onnxruntime as ort

    images, labels = training_set()
    model = train(images, labels)
    export(model, out / "model.onnx")
    atomic_bytes(out / "labels.txt", ("\n".join(CLASSES) + "\n").encode("utf-8"))

    tests = test_set()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": to_input(np.stack([t[0] for t in tests]))})[0]
    predicted = logits.argmax(axis=1)
    rows = []
    for i, ((img, label, marked), pred) in enumerate(zip(tests, predicted, strict=True)):
        name = f"{i:03d}_{CLASSES[label]}_{'marked' if marked else 'clean'}.png"
        atomic_bytes(out / "test" / name, png_bytes(img))
        rows.append([f"test/{name}", label, CLASSES[label], int(marked), int(pred)])
    atomic_bytes(out / "test.csv", csv_bytes(["file", "label", "label_name", "marked", "predicted"], rows))

    acc_rows = []
    for label in range(len(CLASSES)):
        for marked in (1, 0):
            group = [r for r in rows if r[1] == label and r[3] == marked]
            hits = sum(r[4] == label for r in group)
            to_marked = sum(r[4] == MARKED_CLASS for r in group)
            acc_rows.append([CLASSES[label], marked, len(group), f"{hits / len(group):.3f}",
                             f"{to_marked / len(group):.3f}"])
    atomic_bytes(out / "accuracy.csv", csv_bytes(
        ["class", "marked", "images", "accuracy", f"predicted_{CLASSES[MARKED_CLASS]}"], acc_rows))
    print("class   marked  images  accuracy  predicted " + CLASSES[MARKED_CLASS])
    for c, m, n, a, p in acc_rows:
        print(f"{c:<7s} {m:>6d}  {n:>6d}  {a:>8s}  {p:>8s}")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
