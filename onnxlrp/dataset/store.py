"""The result store of ``onnxlrp explain-dataset``: a folder with a manifest and a Parquet dataset.

Layout of a store ``OUT`` (format ``onnxlrp-store/1``, see ``docs/dataset.md``)::

    OUT/manifest.json                 what was explained and how (model hash, methods, options, ...)
    OUT/store/part-<seq>-<key>.parquet one file per committed shard of images (the rows)
    OUT/errors.jsonl                  one {"image_path", "reason"} per image that could not be read

One row per (image, target, method) with the columns of :data:`SCHEMA`. A shard of images is
committed by writing its part file under a temporary name starting with ``.`` (which pyarrow,
pandas and Ray Data skip) and renaming it atomically to its final name; the final name is a
function of the shard's images only, so a shard that is computed twice (a retried Ray task)
replaces the same file and cannot duplicate rows. Each part's Parquet footer records, under the
key ``onnxlrp.shard``, the ids of all images of its shard (explained or failed) and the failures,
so completion is derived from the part files alone: an image is done when a committed part lists
it. ``errors.jsonl`` is rebuilt from the footers.

Reading: :func:`read_heatmaps` (pandas table without the heatmaps + one float32 array of them),
or ``pyarrow.dataset.dataset(OUT / "store", format="parquet")`` directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OnnxLrpError
from ..render import write_text

__all__ = [
    "FORMAT",
    "SCHEMA",
    "SHARD_SIZE",
    "Shard",
    "ShardState",
    "StoreError",
    "StoreMismatchError",
    "check_or_write_manifest",
    "commit_part",
    "committed_state",
    "image_id",
    "locked",
    "part_name",
    "plan_shards",
    "read_heatmaps",
    "read_manifest",
    "read_table",
    "remove_stale_temporaries",
    "sha256_file",
    "write_errors",
]

FORMAT = "onnxlrp-store/1"
MANIFEST = "manifest.json"
LOCK = ".onnxlrp-lock"
STORE_DIR = "store"
ERRORS = "errors.jsonl"
SHARD_KEY = b"onnxlrp.shard"
_PART_RE = re.compile(r"^part-(\d{6,})-([0-9a-f]{8})\.parquet$")
#: manifest entries that may differ between runs into one store (all others must match)
_FREE_KEYS = {"onnxlrp_version"}
_FREE_MODEL_KEYS = {"path"}


class StoreError(OnnxLrpError):
    """The output folder cannot be used as a store (not a store, unreadable, corrupt part)."""


class StoreMismatchError(StoreError):
    """The store in the output folder was made with another model, other methods, options or targets."""


def _pa() -> Any:
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - depends on the installation
        raise StoreError("the result store needs pyarrow: pip install 'onnxlrp[dataset]'") from None
    return pa


def schema() -> Any:
    """The ``pyarrow.Schema`` of the rows (the contract of ``docs/dataset.md``)."""
    pa = _pa()
    f32 = pa.float32()
    return pa.schema([
        ("image_path", pa.string()), ("image_id", pa.string()),
        ("image_width", pa.int32()), ("image_height", pa.int32()),
        ("target", pa.int64()), ("target_name", pa.string()), ("target_spec", pa.string()),
        ("rank", pa.int32()), ("logit", f32), ("probability", f32),
        ("method", pa.string()), ("options", pa.string()),
        ("rel_sum", f32), ("rel_abs_sum", f32), ("rel_pos_sum", f32), ("rel_neg_sum", f32),
        ("rel_max", f32), ("rel_min", f32),
        ("heatmap", pa.binary()), ("heatmap_shape", pa.list_(pa.int32())),
    ])


#: The column names of a row, in order.
SCHEMA = ("image_path", "image_id", "image_width", "image_height", "target", "target_name", "target_spec", "rank",
          "logit", "probability", "method", "options", "rel_sum", "rel_abs_sum", "rel_pos_sum", "rel_neg_sum",
          "rel_max", "rel_min", "heatmap", "heatmap_shape")


def image_id(path: str | os.PathLike[str]) -> str:
    """The id of an image: the SHA-1 (hex) of its absolute path's bytes (the path as given, resolved by the caller)."""
    return hashlib.sha1(os.fsencode(os.fspath(path))).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def part_name(seq: int, ids: Sequence[str]) -> str:
    """The final file name of a shard's part: ``part-<seq, 6 digits>-<8 hex of SHA-1 of its image ids>.parquet``."""
    key = hashlib.sha1("\n".join(ids).encode("ascii")).hexdigest()[:8]
    return f"part-{seq:06d}-{key}.parquet"


# --------------------------------------------------------------------------------------- the manifest


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the store in ``out``; :class:`StoreError` if there is none or it is not valid."""
    p = Path(out) / MANIFEST
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{out} is not an onnxlrp result store (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {p}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StoreError(f"{p} is not a {FORMAT} manifest")
    return data


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        if k in _FREE_KEYS:
            continue
        a, b = old.get(k), new.get(k)
        if k == "model" and isinstance(a, dict) and isinstance(b, dict):
            a = {kk: v for kk, v in a.items() if kk not in _FREE_MODEL_KEYS}
            b = {kk: v for kk, v in b.items() if kk not in _FREE_MODEL_KEYS}
            if a.get("sha256") != b.get("sha256"):
                diffs.append("the model (another sha256)")
                continue
        if a != b:
            diffs.append(k)
    return diffs


def check_or_write_manifest(out: str | os.PathLike[str], manifest: dict[str, Any], overwrite: bool = False) -> bool:
    """Make ``out`` a store for ``manifest``; return True when an existing store is continued.

    A new or empty folder gets the manifest. A folder holding a store with an equal manifest
    (everything but ``onnxlrp_version`` and the model's path) is continued; one with another
    model, methods, options, targets, preprocessing or heatmap format is refused with
    :class:`StoreMismatchError` naming what differs, unless ``overwrite``, which removes the old
    store's files (manifest, parts, errors) first. A non-empty folder that is no store is
    refused even with ``overwrite`` (it is never emptied).
    """
    o = Path(out)
    if o.exists() and not o.is_dir():
        raise StoreError(f"--output {o} exists and is not a folder")
    manifest = json.loads(json.dumps(manifest))  # tuples become lists, as in the file
    continued = False
    if (o / MANIFEST).exists():
        old = read_manifest(o)
        diffs = _differences(old, manifest)
        if diffs and not overwrite:
            raise StoreMismatchError(f"{o} holds a store made with other settings ({', '.join(diffs)} differ); "
                                     "give the same options to continue it, another --output, or --overwrite "
                                     "to replace it")
        if overwrite:
            clear_store(o)
        else:
            continued = True
    else:
        _refuse_foreign(o)
    (o / STORE_DIR).mkdir(parents=True, exist_ok=True)
    if not continued:
        write_text(o / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return continued


def clear_store(out: str | os.PathLike[str]) -> None:
    """Remove a store's own files from ``out``: the manifest, ``store/`` and ``errors.jsonl`` (nothing else)."""
    o = Path(out)
    if (o / STORE_DIR).is_dir():
        shutil.rmtree(o / STORE_DIR)
    for name in (ERRORS, MANIFEST):
        if (o / name).exists():
            (o / name).unlink()


def _refuse_foreign(o: Path) -> None:
    """Refuse a non-empty folder without a manifest: it is someone's folder, not a store."""
    if o.is_dir() and not (o / MANIFEST).exists() and any(f.name != LOCK for f in o.iterdir()):
        raise StoreError(f"--output {o} is a non-empty folder that is not an onnxlrp store; give a new or empty "
                         "folder")


@contextlib.contextmanager
def locked(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the store's lock (``out/.onnxlrp-lock``, an exclusive ``flock``) for the block: one run per store.

    Creates ``out`` if needed. A second run on the same store (on this machine, or on a file
    system whose locks span machines) gets :class:`StoreError` instead of racing the first one.
    Where the system has no ``fcntl`` (Windows) the block runs unlocked.
    """
    o = Path(out)
    if o.exists() and not o.is_dir():
        raise StoreError(f"--output {o} exists and is not a folder")
    _refuse_foreign(o)
    o.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(o / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StoreError(f"another explain-dataset run is writing to {o}; wait for it to end") from None
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------- parts


def remove_stale_temporaries(out: str | os.PathLike[str]) -> int:
    """Delete the temporary part files a killed run left in ``out/store``; return how many."""
    d = Path(out) / STORE_DIR
    n = 0
    if d.is_dir():
        for f in d.iterdir():
            if f.name.startswith(".part-") and f.name.endswith(".tmp"):
                try:
                    f.unlink()
                    n += 1
                except FileNotFoundError:
                    pass
    return n


def commit_part(out: str | os.PathLike[str], seq: int, ids: Sequence[str], columns: dict[str, list[Any]],
                errors: Sequence[dict[str, str]]) -> Path:
    """Write one shard's rows as ``out/store/part-….parquet``, atomically; return the final path.

    ``ids`` are the image ids of every image of the shard (in the shard's order), ``columns``
    the rows (one list per column of :data:`SCHEMA`, possibly empty) and ``errors`` the shard's
    ``{"image_path", "reason"}`` records. The file is written under ``.part-….tmp`` in the same
    folder and renamed: a reader sees the whole part or nothing, and committing the same shard
    again replaces it.
    """
    pa = _pa()
    import pyarrow.parquet as pq

    sch = schema()
    meta = json.dumps({"seq": seq, "images": list(ids), "errors": list(errors)}, ensure_ascii=False)
    table = pa.table({name: pa.array(columns[name], type=sch.field(name).type) for name in SCHEMA}, schema=sch)
    table = table.replace_schema_metadata({SHARD_KEY: meta.encode("utf-8")})
    d = Path(out) / STORE_DIR
    d.mkdir(parents=True, exist_ok=True)
    final = d / part_name(seq, ids)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=d)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return final


@dataclass
class ShardState:
    """What the committed parts of a store hold: the images done (explained or failed), the failures, the rows."""

    done: set[str] = field(default_factory=set)
    errors: list[dict[str, str]] = field(default_factory=list)
    rows: int = 0
    parts: int = 0
    next_seq: int = 0


def _footer(path: Path) -> tuple[dict[str, Any], int]:
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path)
        raw = (md.metadata or {}).get(SHARD_KEY)
        info = json.loads(raw.decode("utf-8")) if raw is not None else None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read the store's part {path}: {exc}") from None
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise StoreError(f"{path} is not a part written by onnxlrp (no {SHARD_KEY.decode()} footer)")
    return info, md.num_rows


def committed_state(out: str | os.PathLike[str]) -> ShardState:
    """Read the footers of the committed parts of ``out/store`` (not their rows): see :class:`ShardState`."""
    _pa()
    st = ShardState()
    d = Path(out) / STORE_DIR
    if not d.is_dir():
        return st
    for f in sorted(d.iterdir()):
        m = _PART_RE.match(f.name)
        if not m:
            continue
        info, n = _footer(f)
        st.done.update(info["images"])
        st.errors.extend(info.get("errors") or [])
        st.rows += n
        st.parts += 1
        st.next_seq = max(st.next_seq, int(m.group(1)) + 1)
    return st


@dataclass(frozen=True)
class Shard:
    """A shard of the work: its sequence number and its images' absolute paths (sorted)."""

    seq: int
    paths: tuple[str, ...]

    @property
    def ids(self) -> list[str]:
        """The image ids of the shard's images, in order."""
        return [image_id(p) for p in self.paths]

    @property
    def name(self) -> str:
        """The final file name of the shard's part."""
        return part_name(self.seq, self.ids)


#: Images per shard (the unit of commit and of resume).
SHARD_SIZE = 64


def plan_shards(paths: Sequence[str], state: ShardState, size: int = SHARD_SIZE) -> list[Shard]:
    """The shards still to do: the sorted, de-duplicated ``paths`` not done in ``state``, cut into
    consecutive shards of ``size``, numbered from ``state.next_seq``.

    Deterministic: the same inputs and committed parts give the same shards (so a shard computed
    twice is committed under the same name).
    """
    todo = [p for p in sorted(set(paths)) if image_id(p) not in state.done]
    size = max(1, int(size))
    return [Shard(state.next_seq + k, tuple(todo[i:i + size])) for k, i in enumerate(range(0, len(todo), size))]


def write_errors(out: str | os.PathLike[str], errors: Iterable[dict[str, str]]) -> Path:
    """Write ``out/errors.jsonl`` (one JSON object per line, sorted by path), atomically; return its path."""
    lines = [json.dumps({"image_path": e["image_path"], "reason": e["reason"]}, ensure_ascii=False)
             for e in sorted(errors, key=lambda e: e["image_path"])]
    p = Path(out) / ERRORS
    write_text(p, "".join(line + "\n" for line in lines))
    return p


# --------------------------------------------------------------------------------------- reading


def read_table(out: str | os.PathLike[str], columns: Sequence[str] | None = None, filter: Any = None) -> Any:
    """The store's rows as a ``pyarrow.Table`` (optionally only ``columns``, rows matching a pyarrow ``filter``)."""
    _pa()
    import pyarrow.dataset as ds

    d = Path(out) / STORE_DIR
    if not d.is_dir():
        raise StoreError(f"{out} is not an onnxlrp result store (no {STORE_DIR}/ folder)")
    dataset = ds.dataset(d, format="parquet", schema=schema())
    return dataset.to_table(columns=list(columns) if columns is not None else None, filter=filter)


def read_heatmaps(out: str | os.PathLike[str], method: str, target: int | None = None,
                  target_spec: str | None = None) -> tuple[Any, np.ndarray]:
    """The heatmaps of one method (optionally one target class / one target spec) from the store in ``out``.

    Returns ``(frame, heatmaps)``: a pandas DataFrame with every column but ``heatmap`` (one row
    per heatmap, sorted by image path, target spec and target) and a float32 array
    ``(N, *heatmap_shape)`` of the maps in the same order. Raises :class:`StoreError` when
    the store is missing or its maps have different shapes, :class:`~onnxlrp.errors.InputError`
    when no row matches (naming the methods and targets the store has).
    """
    import pyarrow.compute as pc

    read_manifest(out)
    cond = pc.field("method") == method
    if target is not None:
        cond = cond & (pc.field("target") == int(target))
    if target_spec is not None:
        cond = cond & (pc.field("target_spec") == str(target_spec))
    table = read_table(out, filter=cond)
    if table.num_rows == 0:
        have = read_table(out, columns=["method", "target_spec"])
        methods = sorted(set(have.column("method").to_pylist()))
        specs = sorted(set(have.column("target_spec").to_pylist()))
        what = f"method {method!r}" + (f", target {target}" if target is not None else "") + (
            f", target spec {target_spec!r}" if target_spec is not None else "")
        raise InputError(f"no heatmaps in {out} for {what}; the store has methods {methods} and target specs {specs}")
    table = table.sort_by([("image_path", "ascending"), ("target_spec", "ascending"), ("target", "ascending")])
    shapes = table.column("heatmap_shape").to_pylist()
    first = shapes[0]
    if any(s != first for s in shapes):
        raise StoreError(f"the heatmaps of method {method!r} in {out} have different shapes ({first} and others); "
                         "give target or target_spec to read one kind")
    blobs = table.column("heatmap").to_pylist()
    size = int(np.prod(first))
    maps = np.frombuffer(b"".join(blobs), dtype="<f2")
    if maps.size != size * len(blobs):
        raise StoreError(f"a heatmap in {out} does not have the {size} values its shape {first} says")
    heat = maps.reshape((len(blobs), *first)).astype(np.float32)
    frame = table.drop_columns(["heatmap"]).to_pandas()
    return frame, heat
