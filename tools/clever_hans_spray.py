"""Reproduce the SpRAy walkthrough of docs/spray.md: the pictures and every number it quotes.

1. ``onnxlrp explain-dataset data/clever_hans/model.onnx data/clever_hans/test --method lrp
   --target disc --output STORE`` (a temporary folder unless ``--store`` is given);
2. ``onnxlrp spray STORE --method lrp --target disc`` with the command line's defaults (the
   same call, through :func:`onnxlrp.dataset.spray.run_spray`), its pictures copied to
   ``docs/images/spray/``;
3. scores the clusters against ``data/clever_hans/test.csv`` (which images carry the mark) and
   writes ``docs/images/spray/clusters.csv`` (each cluster's make-up, purity and recall of the
   marked images, the mark's share of its mean map's positive relevance) and
   ``docs/images/spray/neighbors.csv`` (the same for other ``--neighbors`` and ``--normalize``
   choices: number of clusters the eigengap picks, purity and recall of the cluster with the
   most marked images).

Usage::

    python tools/clever_hans_spray.py [--store DIR] [--output docs/images/spray]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "clever_hans"
MARK = (slice(1, 5), slice(1, 5))  #: rows, columns of the mark (make_clever_hans.MARK_BOX)
SWEEP = [(n, "l1") for n in (5, 10, 15, 20, 25, 30, 40)] + [(n, "max") for n in (10, 20, 30)]


def score(labels: np.ndarray, marked: np.ndarray) -> tuple[int, float, float]:
    """The cluster holding the most marked images, its purity (marked share) and recall (share of all marked)."""
    best = int(np.argmax([marked[labels == c].sum() for c in range(int(labels.max()) + 1)]))
    inside = labels == best
    return best, float(marked[inside].mean()), float(marked[inside].sum() / marked.sum())


def main(argv: list[str] | None = None) -> int:
    """Run the walkthrough; print and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=None, help="store folder (default: a temporary folder)")
    ap.add_argument("--output", type=Path, default=ROOT / "docs" / "images" / "spray")
    args = ap.parse_args(argv)

    from onnxlrp.cli import main as cli
    from onnxlrp.dataset import spray as S
    from onnxlrp.dataset.spray import write_csv

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp) / "store"
        rc = cli(["explain-dataset", str(DATA / "model.onnx"), str(DATA / "test"), "--method", "lrp",
                  "--target", "disc", "--output", str(store), "--no-progress"])
        if rc:
            return rc
        res = S.run_spray(store, "lrp", "disc", threads=1)
        S.write_outputs(res, Path(tmp) / "spray")
        out: Path = args.output
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("cluster_*.png"):
            old.unlink()
        for f in [*(Path(tmp) / "spray").glob("*.png")]:
            shutil.copyfile(f, out / f.name)

        rows = list(csv.DictReader((DATA / "test.csv").open(encoding="utf-8")))
        truth = {Path(r["file"]).name: r for r in rows}
        names = [Path(p).name for p in res.maps.rows["image_path"]]
        marked = np.array([int(truth[n]["marked"]) for n in names])
        group = np.array([f"{truth[n]['label_name']}_{'marked' if truth[n]['marked'] == '1' else 'clean'}"
                          for n in names])
        best, purity, recall = score(res.labels, marked)
        table = []
        for c in range(res.k):
            inside = res.labels == c
            pos = np.clip(res.means[c], 0, None)
            share = pos[MARK].sum() / pos.sum() if pos.sum() > 0 else 0.0
            table.append([c, int(inside.sum()), *(int((group[inside] == g).sum()) for g in
                                                  ("disc_marked", "square_marked", "disc_clean", "square_clean")),
                          f"{marked[inside].mean():.3f}", f"{marked[inside].sum() / marked.sum():.3f}",
                          f"{share:.3f}"])
        header = ["cluster", "images", "disc_marked", "square_marked", "disc_clean", "square_clean",
                  "purity_marked", "recall_marked", "mark_share_of_positive_mean_relevance"]
        write_csv(out / "clusters.csv", header, table)
        print(f"K = {res.k} (eigengap), eigenvalues {np.round(res.eigenvalues, 4).tolist()}")
        print(" ".join(header))
        for r in table:
            print(" ".join(str(v) for v in r))
        area = 16 / res.means[best].size
        pos = np.clip(res.means[best], 0, None)
        share = pos[MARK].sum() / pos.sum()
        print(f"marked cluster {best}: purity {purity:.3f}, recall {recall:.3f}; the mark is {area:.4f} of the "
              f"pixels and holds {share:.3f} of the mean map's positive relevance ({share / area:.1f}x its area)")

        from threadpoolctl import threadpool_limits

        sweep = []
        for neighbors, norm in SWEEP:
            with threadpool_limits(limits=1):
                maps = S.load_maps(store, "lrp", "disc", norm=norm)
                adj = S.affinity(maps.features, neighbors)
                k = S.choose_clusters(S.laplacian_spectrum(adj, 11), 10)
                labels, _, _ = S.cluster(adj, k)
            _, p, r = score(labels, marked)
            sweep.append([neighbors, norm, k, f"{p:.3f}", f"{r:.3f}"])
        write_csv(out / "neighbors.csv", ["neighbors", "normalize", "clusters", "purity_marked", "recall_marked"],
                  sweep)
        print("neighbors normalize clusters purity recall")
        for r in sweep:
            print(" ".join(str(v) for v in r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
