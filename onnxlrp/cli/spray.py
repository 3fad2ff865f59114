"""``onnxlrp spray STORE``: Spectral Relevance Analysis of one method's maps for one class (see ``docs/spray.md``).

Reads the result store that ``onnxlrp explain-dataset`` wrote, clusters the maps of ``--method``
for ``--target`` (:mod:`onnxlrp.dataset.spray`) and writes ``clusters.csv``, one
``cluster_<k>.png`` per cluster, ``embedding.png``, ``eigenvalues.png``, ``spray.json``,
``report.md`` and ``report.html`` into ``--output`` (default ``STORE/spray/METHOD_TARGET``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import PROG, number, positive_int, slug

__all__ = ["add_parser", "run"]


def _clusters(text: str) -> int | str:
    """``auto`` or a positive integer (argparse ``type=`` of ``--clusters``)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return v


_at_least_2 = number(int, lambda v: v >= 2, "an integer >= 2")
_size = number(int, lambda v: 1 <= v <= 512, "a size from 1 to 512 pixels")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``spray`` subcommand to the ``onnxlrp`` parser's subparsers; return its parser."""
    from ..dataset.spray import DEFAULT_NEIGHBORS, NORMS

    p = sub.add_parser(
        "spray", help="Spectral Relevance Analysis: cluster one class's heatmaps in a result store",
        description="Cluster the heatmaps of one method and one class in a result store written by "
                    "'onnxlrp explain-dataset' (SpRAy, Lapuschkin et al. 2019): maps summed over channels, "
                    "area-averaged to SIZE x SIZE, normalised; k-nearest-neighbour graph; spectral clustering with "
                    "the eigengap choosing the number of clusters; a t-SNE picture. See docs/spray.md.")
    p.add_argument("store", metavar="STORE", help="the --output folder of 'onnxlrp explain-dataset'")
    p.add_argument("--method", "-m", required=True, help="the method whose maps to cluster (as stored)")
    p.add_argument("--target", "-t", default="top",
                   help="class index, class name (as stored), or 'top' for each image's predicted class (default)")
    p.add_argument("--clusters", type=_clusters, default="auto",
                   help="number of clusters, or 'auto' for the eigengap (default)")
    p.add_argument("--max-clusters", type=_at_least_2, default=10,
                   help="largest number of clusters 'auto' considers (default 10)")
    p.add_argument("--size", type=_size, default=32, help="maps are area-averaged to SIZE x SIZE (default 32)")
    p.add_argument("--neighbors", type=positive_int, default=DEFAULT_NEIGHBORS,
                   help=f"nearest neighbours in the affinity graph (default {DEFAULT_NEIGHBORS})")
    p.add_argument("--normalize", choices=NORMS, default=NORMS[0],
                   help="divide each map by the sum of its |values| (l1, default) or its largest |value| (max)")
    p.add_argument("--embedding", choices=("tsne", "umap"), default="tsne",
                   help="2-D picture: t-SNE (default) or UMAP (needs umap-learn)")
    p.add_argument("--seed", type=number(int, lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32-1"), default=0,
                   help="random seed of k-means, the spectral embedding and t-SNE (default 0)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads of the numerical libraries (default: all cores; 1 is often faster on a busy machine)")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="output folder (default STORE/spray/METHOD_TARGET)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the analysis, write its files, print the clusters and the files; return 0."""
    from ..dataset.spray import run_spray, write_outputs

    result = run_spray(args.store, args.method, args.target, clusters=args.clusters, size=args.size,
                       neighbors=args.neighbors, max_clusters=args.max_clusters, embedding=args.embedding,
                       norm=args.normalize, seed=args.seed, threads=args.threads)
    out = args.output if args.output is not None else (
        Path(args.store) / "spray" / f"{slug(args.method, 'method')}_{slug(args.target, 'target')}")
    files = write_outputs(result, out)
    how = "eigengap" if result.auto else "--clusters"
    print(f"{PROG} spray: {len(result.labels)} images, {args.method} maps for target {result.maps.target_label}: "
          f"{result.k} clusters ({how})")
    for c, n in enumerate(result.sizes()):
        print(f"  cluster {c}: {n} images ({n / len(result.labels):.1%})")
    for f in files:
        print(f"wrote {f}")
    return 0
