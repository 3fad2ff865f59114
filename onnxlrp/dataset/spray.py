"""Spectral Relevance Analysis (SpRAy) of an onnxlrp result store: which strategies does the model use for a class?

SpRAy (Lapuschkin et al., *Unmasking Clever Hans predictors and assessing what machines really
learn*, Nature Communications 2019) clusters the heatmaps of one class: images the model
decides on for the same reason get similar maps, and a small cluster whose maps all light up
the same odd spot (a watermark, a frame, a tag in a corner) is a "Clever Hans" strategy.

What :func:`run_spray` computes, for one method and one target of a store written by
``onnxlrp explain-dataset`` (the Parquet store described in ``docs/dataset.md``):

1. **Maps.** Every row of that method and target (``top``: each image's predicted class,
   ``rank == 1``); one row per image (the first by image path if an image occurs twice). A map
   stored with channels is summed over its channel axis, giving one ``(H, W)`` map per image.
2. **Features.** Each map is downsampled to ``size x size`` by area averaging (each output pixel
   is the mean of the input area it covers, fractional pixels weighted by their overlap) and
   divided by the sum of its absolute values (``norm="l1"``, the default: every map carries the
   same total relevance, so a faint map and a strong map of the same shape are the same
   feature, and where the relevance sits decides) or by its largest absolute value
   (``norm="max"``). An all-zero map stays zero. On the Clever-Hans set (``docs/spray.md``) L1
   separates the marked images and max-abs does not: the mark's few strong pixels set a
   marked map's maximum, which shrinks the rest of that map.
3. **Affinity.** The k-nearest-neighbour graph of the features (Euclidean distance, ``k =
   neighbors``, binary connectivity), symmetrised as ``A = (G + G^T) / 2``.
4. **Spectrum and eigengap.** The smallest ``max_clusters + 1`` eigenvalues
   ``0 = lambda_1 <= lambda_2 <= ...`` of the normalised Laplacian ``I - D^-1/2 A D^-1/2``
   (SciPy's symmetric eigensolvers). With ``clusters="auto"`` the number of clusters is the
   ``K`` in ``2..max_clusters`` with the largest gap ``lambda_{K+1} - lambda_K``: K groups of
   images that are well connected inside and weakly between give K eigenvalues near 0 and then a
   jump.
5. **Clustering.** scikit-learn's ``spectral_embedding`` (K eigenvectors of the normalised
   Laplacian, the trivial one included, as ``SpectralClustering`` does) and ``KMeans`` (10
   starts) on it. Clusters are numbered by size, 0 the largest. Each image's ``distance`` is
   its distance to its cluster's centre in the embedding; the members nearest the centre are the
   cluster's most *central* images.
6. **2-D picture.** t-SNE (scikit-learn, perplexity ``min(30, (N - 1) / 3)``, PCA start) of the
   features, or UMAP when ``umap-learn`` is installed and ``embedding="umap"``.

:func:`write_outputs` writes ``clusters.csv``, ``cluster_<k>.png``, ``embedding.png``,
``eigenvalues.png``, ``spray.json``, ``report.md`` and ``report.html`` (every file atomically).

Every user mistake (no store, an empty store, an unknown method or target, fewer images than
``neighbors + 1``, UMAP without ``umap-learn``) raises :class:`~onnxlrp.errors.InputError`.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..render import write_csv, write_text
from .store import STORE_DIR, read_manifest
from .store import schema as store_schema

__all__ = [
    "DEFAULT_NEIGHBORS",
    "DISPLAY_SIZE",
    "NORMS",
    "SprayMaps",
    "SprayResult",
    "affinity",
    "area_downsample",
    "choose_clusters",
    "cluster",
    "laplacian_spectrum",
    "load_maps",
    "normalise",
    "run_spray",
    "write_outputs",
]

#: The mean heatmaps and thumbnails are kept at most this many pixels on a side (area-averaged).
DISPLAY_SIZE = 128
#: The map normalisations ``norm=`` accepts.
NORMS = ("l1", "max")
#: The default number of nearest neighbours of the affinity graph (see docs/spray.md for the choice).
DEFAULT_NEIGHBORS = 20
#: How many central images each cluster's picture shows.
CENTRAL = 6
_META_COLUMNS = ["image_path", "image_id", "target", "target_name", "target_spec", "rank", "logit", "probability"]


# --------------------------------------------------------------------------------------- maths


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of area averaging along one axis: row i averages input cells over its share.

    Output cell ``i`` covers ``[i * n_in / n_out, (i + 1) * n_in / n_out)`` of the input axis;
    entry ``(i, j)`` is the length of the overlap of input cell ``[j, j + 1)`` with it, divided by
    the cover's length, so each row sums to 1 (enlarging repeats cells, like nearest neighbour).
    """
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return overlap / (n_in / n_out)


def area_downsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(N, H, W)`` maps resized to ``(N, h, w)`` by area averaging (see :func:`_area_matrix`), in float64.

    The mean of each map is kept exactly when ``H, W`` are multiples of ``h, w`` and up to the
    fractional-cell weights otherwise; a map already of size ``(h, w)`` is returned unchanged.
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 3:
        raise InputError(f"expected maps shaped (N, H, W), got {list(m.shape)}")
    h, w = size
    if m.shape[1:] == (h, w):
        return m
    rows, cols = _area_matrix(m.shape[1], h), _area_matrix(m.shape[2], w)
    return np.einsum("ih,nhw,jw->nij", rows, m, cols, optimize=True)


def normalise(features: np.ndarray, norm: str = "l1") -> np.ndarray:
    """Each row divided by its largest absolute value (``"max"``) or the sum of its absolute values (``"l1"``).

    A row that is all zero stays zero.
    """
    if norm not in NORMS:
        raise InputError(f"unknown normalisation {norm!r}; choose from {', '.join(NORMS)}")
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    scale = np.abs(x).max(axis=1) if norm == "max" else np.abs(x).sum(axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    return (x / scale[:, None]).reshape(np.shape(features))


def affinity(features: np.ndarray, neighbors: int) -> Any:
    """The symmetrised k-nearest-neighbour graph ``(G + G^T) / 2`` of the rows (scipy CSR, N x N).

    ``G[i, j] = 1`` when ``j`` is one of the ``neighbors`` nearest rows to ``i`` (Euclidean,
    ``i`` itself excluded), scikit-learn's ``kneighbors_graph``.
    """
    from sklearn.neighbors import kneighbors_graph

    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    if not 1 <= neighbors < len(x):
        raise InputError(f"{neighbors} nearest neighbours need at least {neighbors + 1} images; there are {len(x)}")
    g = kneighbors_graph(x, n_neighbors=neighbors, mode="connectivity", include_self=False)
    return (0.5 * (g + g.T)).tocsr()


def laplacian_spectrum(adjacency: Any, count: int) -> np.ndarray:
    """The ``count`` smallest eigenvalues (ascending) of the normalised Laplacian ``I - D^-1/2 A D^-1/2``.

    Dense ``scipy.linalg.eigh`` up to 2000 nodes; beyond, ``scipy.sparse.linalg.eigsh`` for the
    largest eigenvalues of ``2I - L`` (the same eigenvectors, eigenvalues ``2 - lambda``).
    Values are clipped to the Laplacian's range [0, 2].
    """
    import scipy.linalg
    import scipy.sparse
    import scipy.sparse.csgraph
    import scipy.sparse.linalg

    lap = scipy.sparse.csgraph.laplacian(scipy.sparse.csr_matrix(adjacency, dtype=np.float64), normed=True)
    n = lap.shape[0]
    count = max(1, min(count, n))
    if n <= 2000 or count >= n - 1:
        vals = scipy.linalg.eigh(lap.toarray(), eigvals_only=True, subset_by_index=[0, count - 1])
    else:
        shifted = 2.0 * scipy.sparse.identity(n, format="csr") - lap
        mu = scipy.sparse.linalg.eigsh(shifted, k=count, which="LA", return_eigenvectors=False, tol=1e-8)
        vals = 2.0 - mu
    return np.clip(np.sort(np.asarray(vals, dtype=np.float64)), 0.0, 2.0)


def choose_clusters(eigenvalues: np.ndarray, max_clusters: int) -> int:
    """The eigengap's number of clusters: the ``K`` in ``2..max_clusters`` maximising ``lambda_{K+1} - lambda_K``.

    ``eigenvalues`` are ascending (``lambda_1`` first); ties go to the smaller K. With fewer than
    three eigenvalues the answer is 2 (or 1 for a single image).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    top = min(max_clusters, len(lam) - 1)
    if top < 2:
        return max(1, min(2, len(lam)))
    gaps = lam[2:top + 1] - lam[1:top]  # gaps[K - 2] = lambda_{K+1} - lambda_K, K = 2..top
    return int(np.argmax(gaps)) + 2


def cluster(adjacency: Any, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spectral clustering of the graph into ``k`` groups: ``(labels, embedding, distance)``.

    ``embedding`` is scikit-learn's ``spectral_embedding`` with ``k`` components (the trivial
    eigenvector kept, as ``SpectralClustering`` does); ``labels`` come from ``KMeans`` (10
    starts, ``random_state=seed``) on it, renumbered so that cluster 0 is the largest (ties: the
    one whose first member comes first); ``distance`` is each row's distance to its cluster's
    centre.
    """
    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding

    n = adjacency.shape[0]
    k = max(1, min(k, n))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        emb = spectral_embedding(adjacency, n_components=k, drop_first=False, random_state=seed)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(emb)
    raw = km.labels_
    sizes = np.bincount(raw, minlength=k)
    first = np.array([np.flatnonzero(raw == c)[0] if sizes[c] else n for c in range(k)])
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    labels = relabel[raw]
    distance = np.linalg.norm(emb - km.cluster_centers_[raw], axis=1)
    return labels, emb, distance


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """A 2-D embedding ``(N, 2)`` of the rows: t-SNE (scikit-learn) or UMAP (``umap-learn``)."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = len(x)
    if n < 3:
        return np.column_stack([np.arange(n, dtype=np.float64), np.zeros(n)])
    if method == "umap":
        umap = _umap()
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)
    if method != "tsne":
        raise InputError(f"unknown embedding {method!r}; choose tsne or umap")
    from sklearn.manifold import TSNE

    perplexity = max(1.0, min(30.0, (n - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def _umap() -> Any:
    try:
        import umap
    except ImportError:
        raise InputError("--embedding umap needs the umap-learn package (pip install umap-learn); "
                         "or use --embedding tsne") from None
    return umap


# --------------------------------------------------------------------------------------- reading the store


@dataclass
class SprayMaps:
    """The maps of one method and target, one per image, ready for the analysis.

    ``rows`` are the store's columns without the heatmap (a pandas DataFrame, sorted by image
    path); ``features`` ``(N, size*size)`` float64 are the downsampled, normalised maps;
    ``display`` ``(N, h, w)`` float32 the maps area-averaged to at most ``DISPLAY_SIZE`` pixels a
    side and normalised the same way (for the pictures); ``shape`` the stored heatmap shape.
    """

    rows: Any
    features: np.ndarray
    display: np.ndarray
    shape: tuple[int, ...]
    method: str
    target: str
    target_label: str
    manifest: dict[str, Any] = field(default_factory=dict)


def _dataset(store: Path) -> Any:
    """The store's Parquet parts as a ``pyarrow.dataset`` with the store's schema (an empty store is refused)."""
    import pyarrow.dataset as ds

    parts = store / STORE_DIR
    if not parts.is_dir() or not any(parts.glob("*.parquet")):
        raise InputError(f"the store {store} is empty: no Parquet files in {parts}")
    try:
        return ds.dataset(str(parts), format="parquet", schema=store_schema())
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a broken file
        raise InputError(f"cannot read the store {parts}: {' '.join(str(exc).split())}") from None


def _scan(dataset: Any, columns: list[str], filt: Any) -> Iterator[Any]:
    """Record batches of ``columns`` matching ``filt``; a broken file is an :class:`InputError`."""
    try:
        yield from dataset.to_batches(columns=columns, filter=filt, batch_size=256)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the store: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # pyarrow.lib.ArrowException and friends
        if type(exc).__module__.startswith("pyarrow"):
            raise InputError(f"cannot read the store: {' '.join(str(exc).split())}") from None
        raise


def _select(store: Path, dataset: Any, method: str, target: str) -> tuple[Any, Any, str]:
    """The filter expression for ``method`` and ``target``, the metadata rows it selects, and the target's label."""
    import pyarrow.dataset as ds

    try:
        missing = [c for c in _META_COLUMNS + ["method", "heatmap", "heatmap_shape"] if c not in dataset.schema.names]
    except Exception as exc:
        raise InputError(f"cannot read the store: {exc}") from None
    if missing:
        raise InputError(f"the store {store} lacks the column(s) {', '.join(missing)}; is it an onnxlrp store?")
    import pyarrow as pa

    tables = list(_scan(dataset, ["method"], None))
    methods = sorted(set(pa.Table.from_batches(tables, schema=pa.schema([dataset.schema.field("method")]))
                         .column("method").to_pylist()) - {None}) if tables else []
    if not methods:
        raise InputError(f"the store {store} is empty: it has no rows")
    if method not in methods:
        raise InputError(f"the store has no maps of method {method!r}; it has {', '.join(methods)}")
    by_method = ds.field("method") == method
    meta = _table(dataset, ["target", "target_name"], by_method)
    targets = meta.column("target").to_pylist()
    names = meta.column("target_name").to_pylist()
    known: dict[int, str | None] = {}
    for t, nm in zip(targets, names, strict=True):
        if t is not None and (t not in known or known[t] is None):
            known[t] = nm
    spec = target.strip()
    if spec.lower() == "top":
        return by_method & (ds.field("rank") == 1), meta, "top (each image's predicted class)"
    listed = ", ".join(f"{t} ({n})" if n else str(t) for t, n in sorted(known.items())[:20])
    more = f" and {len(known) - 20} more" if len(known) > 20 else ""
    if re.fullmatch(r"[+-]?\d{1,18}", spec):
        t = int(spec)
        if t not in known:
            raise InputError(f"the store has no {method} maps for target {t}; its targets: {listed}{more}")
    else:
        key = spec.casefold()
        hits = sorted(t for t, n in known.items() if n is not None and n.strip().casefold() == key)
        if not hits:
            hits = sorted(t for t, n in known.items()
                          if n is not None and key in (p.strip().casefold() for p in n.split(",")))
        if not hits:
            raise InputError(f"unknown target {spec!r}: no {method} maps for a class of that name; "
                             f"the store's targets: {listed}{more}")
        t = hits[0]
    name = known.get(t)
    return by_method & (ds.field("target") == t), meta, f"{t} ({name})" if name else str(t)


def _table(dataset: Any, columns: list[str], filt: Any) -> Any:
    import pyarrow as pa

    schema = pa.schema([dataset.schema.field(c) for c in columns])
    return pa.Table.from_batches(list(_scan(dataset, columns, filt)), schema=schema)


def _decode(blob: bytes, shape: list[int], path: str) -> np.ndarray:
    """One stored heatmap (little-endian float16 bytes) as a float32 array of ``shape``; non-finite values become 0."""
    shape_t = tuple(int(s) for s in shape or [])
    if len(shape_t) not in (2, 3) or min(shape_t, default=0) < 1:
        raise InputError(f"the store's heatmap of {path} has shape {list(shape_t)}; expected [H, W] or [C, H, W]")
    if blob is None or len(blob) != 2 * math.prod(shape_t):
        raise InputError(f"the store's heatmap of {path} has {0 if blob is None else len(blob)} bytes, "
                         f"not {2 * math.prod(shape_t)} for shape {list(shape_t)}")
    h = np.frombuffer(blob, dtype="<f2").astype(np.float32).reshape(shape_t)
    return np.where(np.isfinite(h), h, np.float32(0.0))


def load_maps(store: str | os.PathLike[str], method: str, target: str = "top", size: int = 32,
              norm: str = "l1") -> SprayMaps:
    """Read the maps of ``method`` and ``target`` (a class index, a class name, or ``top``) from a store.

    See the module docstring, steps 1-2. The store is read in batches: only the downsampled
    features and the display-size maps are kept in memory, never all full-size heatmaps.
    """
    import pandas as pd

    if norm not in NORMS:
        raise InputError(f"unknown normalisation {norm!r}; choose from {', '.join(NORMS)}")
    if size < 1:
        raise InputError(f"--size must be a positive number of pixels, not {size}")
    root = Path(store)
    manifest = read_manifest(root)
    dataset = _dataset(root)
    filt, _, label = _select(root, dataset, method, target)
    meta_parts: list[Any] = []
    feats: list[np.ndarray] = []
    disp: list[np.ndarray] = []
    shape: tuple[int, ...] | None = None
    full: tuple[int, ...] | None = None
    for batch in _scan(dataset, _META_COLUMNS + ["heatmap", "heatmap_shape"], filt):
        if batch.num_rows == 0:
            continue
        cols = batch.to_pydict()
        maps = []
        for blob, shp, path in zip(cols["heatmap"], cols["heatmap_shape"], cols["image_path"], strict=True):
            h = _decode(blob, shp, path)
            if h.ndim == 3:
                h = h.sum(axis=0)  # stored maps with channels are [C, H, W] whatever the model's layout
            if full is None:
                shape, full = tuple(int(s) for s in shp), h.shape
            elif h.shape != full:
                raise InputError(f"the store's {method} maps differ in size ({list(h.shape)} for {path}, "
                                 f"{list(full)} before); SpRAy compares maps of one size")
            maps.append(h)
        stack = np.stack(maps)
        dh, dw = (min(s, DISPLAY_SIZE) for s in stack.shape[1:])
        feats.append(normalise(area_downsample(stack, (size, size)).reshape(len(stack), -1), norm))
        disp.append(normalise(area_downsample(stack, (dh, dw)), norm).astype(np.float32))
        meta_parts.append(pd.DataFrame({c: cols[c] for c in _META_COLUMNS}))
    if not meta_parts:
        raise InputError(f"the store has no {method} maps for target {label}")
    rows = pd.concat(meta_parts, ignore_index=True)
    features = np.concatenate(feats)
    display = np.concatenate(disp)
    order = np.lexsort((rows["target"].to_numpy(), rows["image_path"].astype(str).to_numpy()))
    rows = rows.iloc[order].reset_index(drop=True)
    keep = ~rows["image_id"].duplicated().to_numpy()
    sel = order[keep]
    rows = rows[keep].reset_index(drop=True)
    return SprayMaps(rows, features[sel], display[sel], shape or (), method, target, label, manifest)


# --------------------------------------------------------------------------------------- the analysis


@dataclass
class SprayResult:
    """What :func:`run_spray` found.

    ``labels`` the cluster of each image (0 the largest); ``k`` the number of clusters and
    ``auto`` whether the eigengap chose it; ``eigenvalues`` the smallest ``max_clusters + 1``
    eigenvalues of the normalised Laplacian; ``spectral`` ``(N, k)`` the eigen-embedding;
    ``distance`` each image's distance to its cluster centre there; ``xy`` ``(N, 2)`` the t-SNE
    or UMAP coordinates; ``means`` ``(k, h, w)`` each cluster's mean display map; ``central``
    the row indices of each cluster's most central images (nearest first).
    """

    maps: SprayMaps
    labels: np.ndarray
    k: int
    auto: bool
    eigenvalues: np.ndarray
    spectral: np.ndarray
    distance: np.ndarray
    xy: np.ndarray
    means: np.ndarray
    central: list[list[int]]
    params: dict[str, Any]

    def sizes(self) -> list[int]:
        """The number of images in each cluster."""
        return [int(v) for v in np.bincount(self.labels, minlength=self.k)]


def run_spray(store: str | os.PathLike[str], method: str, target: str = "top", clusters: int | str = "auto",
              size: int = 32, neighbors: int = DEFAULT_NEIGHBORS, max_clusters: int = 10, embedding: str = "tsne",
              norm: str = "l1", seed: int = 0, threads: int | None = None) -> SprayResult:
    """Spectral Relevance Analysis of ``method``'s maps for ``target`` in ``store`` (see the module docstring).

    ``clusters`` is ``"auto"`` (the eigengap in ``2..max_clusters``) or a number of clusters.
    ``threads`` caps the BLAS/OpenMP threads of NumPy, SciPy and scikit-learn (default: their own
    choice, all cores); on a busy machine 1 is often fastest (t-SNE's OpenMP threads spin).
    """
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be a positive integer, not {threads}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _run_spray(store, method, target, clusters, size, neighbors, max_clusters, embedding, norm, seed)


def _run_spray(store: str | os.PathLike[str], method: str, target: str, clusters: int | str, size: int,
               neighbors: int, max_clusters: int, embedding: str, norm: str, seed: int) -> SprayResult:
    if embedding not in ("tsne", "umap"):
        raise InputError(f"unknown embedding {embedding!r}; choose tsne or umap")
    if embedding == "umap":
        _umap()
    auto = isinstance(clusters, str)
    if auto and str(clusters).strip().lower() != "auto":
        raise InputError(f"--clusters must be 'auto' or a positive integer, not {clusters!r}")
    if not auto and int(clusters) < 1:
        raise InputError(f"--clusters must be 'auto' or a positive integer, not {clusters!r}")
    if max_clusters < 2:
        raise InputError(f"--max-clusters must be at least 2, not {max_clusters}")
    if neighbors < 1:
        raise InputError(f"--neighbors must be at least 1, not {neighbors}")
    maps = load_maps(store, method, target, size=size, norm=norm)
    n = len(maps.features)
    if n < neighbors + 1:
        raise InputError(f"{n} image(s) have {method} maps for target {maps.target_label}: "
                         f"--neighbors {neighbors} needs at least {neighbors + 1}; lower --neighbors")
    if not auto and int(clusters) > n:
        raise InputError(f"--clusters {clusters} is more than the {n} images")
    adj = affinity(maps.features, neighbors)
    lam = laplacian_spectrum(adj, max(max_clusters, 1 if auto else int(clusters)) + 1)
    k = choose_clusters(lam, max_clusters) if auto else int(clusters)
    labels, spectral, distance = cluster(adj, k, seed)
    xy = embed_2d(maps.features, embedding, seed)
    means = np.stack([maps.display[labels == c].mean(axis=0) for c in range(k)])
    central = [[int(i) for i in np.flatnonzero(labels == c)[np.argsort(distance[labels == c], kind="stable")]
                [:CENTRAL]] for c in range(k)]
    params = {"store": str(Path(store).resolve()), "method": method, "target": target,
              "target_label": maps.target_label, "clusters": "auto" if auto else int(clusters), "size": size,
              "neighbors": neighbors, "max_clusters": max_clusters, "embedding": embedding, "norm": norm,
              "seed": seed, "images": n, "heatmap_shape": list(maps.shape)}
    return SprayResult(maps, labels, k, auto, lam, spectral, distance, xy, means, central, params)


# --------------------------------------------------------------------------------------- outputs


def write_outputs(result: SprayResult, output: str | os.PathLike[str]) -> list[Path]:
    """Write the CSV, the pictures, ``spray.json`` and the Markdown and HTML reports into ``output``; return the files.

    ``clusters.csv`` has one row per image: ``image_path``, ``image_id``, ``target``,
    ``target_name``, ``logit``, ``probability``, ``rank``, ``cluster``, ``distance`` (to the
    cluster centre in the eigen-embedding), ``spectral_1..K`` (the eigen-embedding) and ``x``,
    ``y`` (t-SNE/UMAP), sorted by image path.
    """
    from . import spray_plots

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.maps.rows
    k = result.k
    header = ["image_path", "image_id", "target", "target_name", "logit", "probability", "rank", "cluster",
              "distance"] + [f"spectral_{j + 1}" for j in range(result.spectral.shape[1])] + ["x", "y"]
    body = []
    for i in range(len(rows)):
        r = rows.iloc[i]
        body.append([r["image_path"], r["image_id"], int(r["target"]), "" if r["target_name"] is None else
                     r["target_name"], f"{float(r['logit']):.6g}", f"{float(r['probability']):.6g}", int(r["rank"]),
                     int(result.labels[i]), f"{result.distance[i]:.6g}"]
                    + [f"{v:.6g}" for v in result.spectral[i]] + [f"{v:.6g}" for v in result.xy[i]])
    files = [write_csv(out / "clusters.csv", header, body)]
    for c in range(k):
        files.append(spray_plots.save_cluster_png(out / f"cluster_{c}.png", result, c))
    files.append(spray_plots.save_embedding_png(out / "embedding.png", result))
    files.append(spray_plots.save_eigenvalues_png(out / "eigenvalues.png", result))
    summary = dict(result.params, k=k, chosen_by="eigengap" if result.auto else "--clusters",
                   eigenvalues=[round(float(v), 6) for v in result.eigenvalues],
                   sizes=result.sizes(),
                   cluster_summary=[{"cluster": c, "images": result.sizes()[c],
                              "central": [str(rows["image_path"].iloc[i]) for i in result.central[c]]}
                             for c in range(k)])
    files.append(write_text(out / "spray.json", json.dumps(summary, indent=2) + "\n"))
    md, html = spray_plots.reports(result)
    files.append(write_text(out / "report.md", md))
    files.append(write_text(out / "report.html", html))
    return files
