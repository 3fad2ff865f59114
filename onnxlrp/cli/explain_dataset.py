"""``onnxlrp explain-dataset``: explain every image of a dataset into a resumable Parquet store.

Reads the images under the inputs given (files, folders searched recursively, glob patterns,
``@list.txt`` files of paths), explains them in shards of ``--shard-size`` images, locally or
on Ray (``--ray``), and commits each shard atomically into the store in ``--output`` (see
:mod:`onnxlrp.dataset.store` and ``docs/dataset.md``). Running the same command again continues
where a previous run stopped. Unreadable images are listed in ``OUT/errors.jsonl``; the exit
status is still 0, with a warning line saying how many failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..dataset.store import SHARD_SIZE
from ..errors import InputError
from ..image import IMAGE_EXTENSIONS
from ..paths import read_bounded
from .common import (
    Progress,
    UsageError,
    add_preprocessing_args,
    check_option_keys,
    labels_for,
    load_explainer,
    method_list,
    method_options,
    model_spec,
    parse_floats_arg,
    parse_option,
    parse_size,
    positive_int,
    resolve_class,
    show_progress,
    warn,
    z_box,
)

__all__ = ["add_parser", "collect_images", "run"]

MAX_LIST_BYTES = 256 * 2**20  # an @list file larger than this is refused
GLOB_CHARS = set("*?[")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``explain-dataset`` subcommand to the ``onnxlrp`` parser's subparsers; return its parser."""
    p = sub.add_parser(
        "explain-dataset", help="explain every image of a dataset into a Parquet result store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Explain every image under the inputs with every method and target class, and write one row "
                    "per (image, target, method) with the heatmap into a resumable Parquet store (see "
                    "docs/dataset.md). Run the same command again to continue an interrupted run.",
        epilog="examples:\n"
               "  onnxlrp explain-dataset model.onnx photos/ --method lrp --method sglrp --output runs/audit/\n"
               "  onnxlrp explain-dataset model.onnx 'photos/**/*.jpg' @more.txt --top-k 3 --pool 32x32 -o runs/a/\n"
               "  onnxlrp explain-dataset model.onnx photos/ --ray auto --workers 8 --output runs/audit/\n"
               "exit status: 0 when every image was explained or listed in OUT/errors.jsonl (a warning says how\n"
               "many could not be read), 1 for an error, 2 for a usage error, 130 when interrupted.")
    p.add_argument("model", help="the ONNX model file")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively), glob patterns ('**' recursive), or @FILE: "
                        "a text file of paths, one per line (relative to the file's folder)")
    g = p.add_argument_group("what to explain")
    g.add_argument("-m", "--method", action="append", metavar="NAME",
                   help="method (repeatable, or comma-separated; default sglrp); see 'onnxlrp methods'")
    g.add_argument("-t", "--target", action="append", metavar="CLASS",
                   help="class to explain: an index, a class name, or 'top' (the predicted class, the default); "
                        "repeatable")
    g.add_argument("-k", "--top-k", type=positive_int, metavar="K", help="explain the K best classes of each image")
    g.add_argument("--low", type=parse_floats_arg, metavar="V[,V,V]", help="lower end of the Z^B input box "
                   "(default: the preset's true range)")
    g.add_argument("--high", type=parse_floats_arg, metavar="V[,V,V]", help="upper end of the Z^B input box")
    g.add_argument("--option", action="append", type=parse_option, metavar="KEY=VALUE",
                   help="a method option, passed to every chosen method that takes it")
    add_preprocessing_args(p)
    g = p.add_argument_group("the store")
    g.add_argument("-o", "--output", required=True, metavar="OUT", help="the store's folder (new, empty, or a store "
                   "made by the same command, which is continued)")
    g.add_argument("--overwrite", action="store_true", help="replace a store made with other settings")
    g.add_argument("--pool", type=parse_size, metavar="S|HxW",
                   help="average-pool the stored heatmaps to this size (default: the model's input size)")
    g.add_argument("--keep-channels", action="store_true", help="store one map per input channel instead of their sum")
    g.add_argument("--shard-size", type=positive_int, metavar="N",
                   help="images per shard, the unit that is committed and resumed (default: 64, fewer when that "
                        "gives less than 4 shards per worker)")
    g = p.add_argument_group("running")
    g.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="run on Ray: 'auto' joins the running cluster, 'local' starts one here, or a cluster address")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="worker processes (local, default 1: one process using all cores measured fastest) or Ray "
                        "actors (default: the cluster's CPUs / --cpus-per-worker)")
    g.add_argument("--cpus-per-worker", type=_positive_float, default=1.0, metavar="C",
                   help="CPUs each Ray actor reserves (default 1)")
    g.add_argument("--gpus-per-worker", type=_positive_float, default=0.0, metavar="G",
                   help="GPUs each Ray actor reserves (default 0); use with --device cuda or auto")
    g.add_argument("--threads", type=positive_int, metavar="N", help="onnxruntime threads per worker")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    g.add_argument("-b", "--batch-size", type=positive_int, default=8, metavar="N", help="images per batch (default 8)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar with images/s and ETA on stderr (default: when stderr is a terminal)")
    g.add_argument("--output-name", metavar="NAME", help="the model output to explain (default: the first float one)")
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------------------- inputs


def _walk(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively (links to folders are not followed, so no cycle can loop)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in files:
            f = Path(root) / name
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                found.append(f)
    return found


def _list_file(item: str) -> list[str]:
    p = Path(item[1:])
    if not p.exists():
        raise InputError(f"list file not found: {p}")
    data = read_bounded(p, "list file", MAX_LIST_BYTES, InputError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"list file {p} is not UTF-8 text") from None
    base = p.resolve().parent
    lines = [line.strip() for line in text.splitlines()]
    return [str(base / line) for line in lines if line and not line.startswith("#")]


def collect_images(items: list[str]) -> list[str]:
    """The absolute, resolved, sorted and de-duplicated paths of the images the inputs name.

    An input is an image file (taken whatever its extension), a folder (its files with an
    image extension, recursively), a glob pattern (``*``, ``?``, ``[...]``, ``**`` for any depth;
    matching files and folders as above), or ``@FILE``, a UTF-8 text file with one path (or
    pattern) per line, relative to its own folder; empty lines and lines starting with ``#``
    are skipped. A missing path, a pattern that matches nothing or no image at all is an
    :class:`~onnxlrp.errors.InputError`.
    """
    out: set[str] = set()

    def take(item: str, from_list: bool) -> None:
        p = Path(item)
        if p.is_dir():
            out.update(str(f.resolve()) for f in _walk(p))
        elif p.exists():
            out.add(str(p.resolve()))
        elif GLOB_CHARS & set(item):
            hits = glob.glob(item, recursive=True)
            if not hits:
                raise InputError(f"no file matches {item!r}")
            for h in hits:
                hp = Path(h)
                if hp.is_dir():
                    out.update(str(f.resolve()) for f in _walk(hp))
                elif hp.is_file():
                    out.add(str(hp.resolve()))
        elif p.is_symlink():
            raise InputError(f"{p} is a broken symbolic link or a symlink loop")
        else:
            raise InputError(f"no such file or directory: {p}" + (" (in a list file)" if from_list else ""))

    for item in items:
        if item.startswith("@") and len(item) > 1:
            for line in _list_file(item):
                take(line, True)
        else:
            take(item, False)
    if not out:
        raise InputError(f"no image files found in {', '.join(items)} ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(out)


def _utf8(path: str) -> bool:
    """Whether a path (as Python decodes file names: undecodable bytes as surrogates) is valid UTF-8 text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------------------- progress


class RateProgress(Progress):
    """:class:`~onnxlrp.cli.common.Progress` with the rate: ``[##..] 40% 26/64 images 0:20 1.30 images/s eta 0:29``."""

    def text(self) -> str:
        """The bar with the images per second since the start."""
        base = super().text()
        elapsed = time.monotonic() - self.start
        rate = f" {self.done / elapsed:.2f} {self.unit}/s" if elapsed > 0 and self.done > 0 else ""
        head, sep, eta = base.partition(" eta ")
        return f"{head}{rate}{sep}{eta}"


# --------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Run ``onnxlrp explain-dataset``; return the exit status (errors are raised for :func:`onnxlrp.cli.main`)."""
    from ..dataset import store
    from ..dataset.rows import Job, jsonable

    methods = method_list(args.method)
    if args.top_k is not None and args.target:
        raise UsageError("give either --target or --top-k, not both")
    if args.ray is None and (args.gpus_per_worker or args.cpus_per_worker != 1.0):
        raise UsageError("--gpus-per-worker and --cpus-per-worker need --ray")
    check_option_keys(args.option)
    target_specs = [t.strip() for t in args.target] if args.target else (["top"] if args.top_k is None else [])
    paths = collect_images(args.inputs)
    odd = [p for p in paths if not _utf8(p)]
    if odd:  # the store's strings and errors.jsonl are UTF-8: such a name cannot be stored
        example = odd[0].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        warn(f"skipping {len(odd)} file(s) whose names are not valid UTF-8 (e.g. {example}); rename them")
        paths = [p for p in paths if _utf8(p)]
        if not paths:
            raise InputError("no image file with a UTF-8 name to explain")

    ex = load_explainer(args)
    spec = model_spec(args, ex)
    labels, label_source = labels_for(args, ex)
    targets = [resolve_class(t, labels, label_source or "the label file") for t in target_specs]
    options = method_options(methods, args.option or [], z_box(args, spec))
    num_classes = ex.num_classes
    for t in targets:
        if t is not None and t >= num_classes:
            raise InputError(f"class index {t} is out of range: the model has {num_classes} classes "
                             f"(0..{num_classes - 1})")
    if args.top_k is not None and args.top_k > num_classes:
        raise InputError(f"--top-k {args.top_k} is more than the model's {num_classes} classes")
    if args.pool is not None and (args.pool[0] > spec.size[0] or args.pool[1] > spec.size[1]):
        raise UsageError(f"--pool {args.pool[0]}x{args.pool[1]} is larger than the heatmap "
                         f"({spec.size[0]}x{spec.size[1]})")

    model_path = str(Path(args.model).resolve())
    manifest = {
        "format": store.FORMAT,
        "onnxlrp_version": __version__,
        "model": {"path": model_path, "sha256": store.sha256_file(model_path), "input_name": ex.input_name,
                  "input_shape": ex.input_shape, "num_classes": num_classes},
        "preprocess": dataclasses.asdict(spec),
        "methods": methods,
        "options": jsonable(options),
        "targets": target_specs,
        "top_k": args.top_k,
        "heatmap": {"dtype": "float16", "channels": "all" if args.keep_channels else "sum",
                    "pool": list(args.pool) if args.pool is not None else None},
        "labels": str(Path(label_source).resolve()) if labels is not None and label_source else None,
    }
    job = Job(model=model_path, preprocess=spec, methods=tuple(methods), options=options,
              targets=tuple(targets), target_specs=tuple(target_specs), top_k=args.top_k,
              labels=tuple(labels) if labels is not None else None,
              channels="all" if args.keep_channels else "sum", pool=args.pool, batch_size=args.batch_size,
              device=args.device if args.ray else ex.device, output_name=args.output_name, threads=args.threads)

    out = Path(args.output)
    with store.locked(out):
        return _in_store(args, store, out, manifest, ex, job, paths, methods)


def _in_store(args: argparse.Namespace, store: Any, out: Path, manifest: dict[str, Any], ex: Any, job: Any,
              paths: list[str], methods: list[str]) -> int:
    """Check or write the manifest, then run (on Ray when asked); the caller holds the store's lock."""
    continued = store.check_or_write_manifest(out, manifest, overwrite=args.overwrite)
    store.remove_stale_temporaries(out)
    state = store.committed_state(out)
    ray_started = False
    workers = args.workers or 1
    if args.ray:
        from ..dataset.ray_runner import cluster_workers, init_ray

        ray_started = init_ray(args.ray)
        workers = args.workers or cluster_workers(args.cpus_per_worker)
    saved = signal.getsignal(signal.SIGTERM)
    if args.ray and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)  # Ray's own handler aborts the driver (exit 134)
    try:
        return _run(args, store, out, ex, job, paths, state, workers, continued, methods)
    finally:
        if args.ray and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, saved)
        if ray_started:
            import ray

            ray.shutdown()


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM during a Ray run: stop like Ctrl-C (committed parts stay, Ray is shut down, exit status 130)."""
    raise KeyboardInterrupt


def shard_size(todo: int, workers: int, given: int | None) -> int:
    """Images per shard: ``given``, else 64, made smaller (down to 1) so that every worker gets at least 4 shards."""
    if given is not None:
        return given
    return max(1, min(SHARD_SIZE, -(-todo // (4 * max(workers, 1)))))


def _run(args: argparse.Namespace, store: Any, out: Path, ex: Any, job: Any, paths: list[str], state: Any, workers: int,
         continued: bool, methods: list[str]) -> int:
    """Plan the shards still to do, run them locally or on Ray, write ``errors.jsonl``; return the exit status."""
    remaining = sum(1 for p in paths if store.image_id(p) not in state.done)
    shards = store.plan_shards(paths, state, shard_size(remaining, workers, args.shard_size))
    todo = sum(len(s.paths) for s in shards)
    where = f"Ray ({args.ray}), {workers} actor(s)" if args.ray else f"this machine, {workers} worker(s)"
    print(f"{len(paths)} images; {len(paths) - todo} already in the store{' (continued)' if continued else ''}; "
          f"{todo} to explain in {len(shards)} shard(s) on {where}; methods {', '.join(methods)}", flush=True)

    progress = RateProgress(todo, show_progress(args))
    count = {"images": 0}
    seen: set[int] = set()

    def on_images(n: int) -> None:
        count["images"] += n
        progress.update(count["images"])

    def on_shard_ray(summary: dict[str, Any]) -> None:
        if summary["seq"] not in seen:  # a retried shard is reported twice
            seen.add(summary["seq"])
            on_images(int(summary["images"]))

    started = time.monotonic()
    try:
        if args.ray:
            from ..dataset.ray_runner import run_ray

            run_ray(job, out, shards, address=args.ray, workers=workers, threads=args.threads,
                    gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                    on_shard=on_shard_ray)
        else:
            from ..dataset.local import run_local

            run_local(job, out, shards, workers=workers, explainer=ex if workers == 1 else None,
                      on_images=on_images)
    finally:
        progress.close()
        final = store.committed_state(out)
        store.write_errors(out, final.errors)
    failed = len(final.errors)
    took = time.monotonic() - started
    rate = f" ({todo / took:.2f} images/s)" if todo and took > 0 else ""
    print(f"explained {todo} images in {took:.1f} s{rate}")
    print(f"store {out}: {final.rows} rows for {len(final.done) - failed} images in {final.parts} part(s); "
          f"{failed} unreadable image(s) in {out / store.ERRORS}")
    if failed:
        warn(f"{failed} image(s) could not be read or explained; see {out / store.ERRORS}")
    sys.stdout.flush()
    return 0

