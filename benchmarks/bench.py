"""Benchmark onnxlrp against the plain onnxruntime forward pass and against Zennit.

One run times, per model × batch size, on one random input (normal, fixed seed):

* the plain onnxruntime forward (``InferenceSession`` on the model file, ``ORT_ENABLE_ALL``);
* each onnxlrp method on the engine (``Explainer(kernels="engine").explain`` with a fixed target; one warm-up
  call first, so building the plan and the modified weights is excluded from the median and reported on its
  own) and as a compiled graph (``onnxlrp.compiler.compile_explanation`` run in a plain onnxruntime session,
  the ``compiled`` column; ``--no-compiled`` skips it) — the Explainer's default CPU path runs the latter;
* Zennit's equivalent on the same weights when torch and Zennit import and the model comes from torchvision
  (the cached random-weight exports of ``benchmarks/models.py``) or is the shipped EfficientNet-Lite0.

After one warm-up per job, ``--repeat`` rounds time every job once, round-robin, and the medians are reported.

Usage (see benchmarks/README.md)::

    python benchmarks/bench.py --model vgg16 --model resnet50 --batch 1 --batch 8
    python benchmarks/bench.py --model efficientnet_lite0 --methods lrp_epsilon,gradient --repeat 3 --markdown
    python benchmarks/bench.py --model resnet50 --profile --repeat 2      # where onnxlrp's time goes
    python benchmarks/bench.py --model vgg16 --memory                    # peak memory, one subprocess each

The thread count (``--threads``, default 2) goes to onnxruntime (intra-op), torch (``set_num_threads``) and
the BLAS/OpenMP pools; the latter read their environment variables when NumPy is first imported, so this
script sets them before importing anything else.
"""

from __future__ import annotations

import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _threads_from_argv(argv: list[str], default: int = 2) -> int:
    """The value of ``--threads`` in ``argv`` (read before argparse, since it must act before NumPy loads)."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return default


def _set_thread_env(argv: list[str]) -> None:
    """Set the BLAS/OpenMP thread variables; re-execute if NumPy was already imported with other values."""
    want = str(_threads_from_argv(argv))
    stale = any(os.environ.get(v) != want for v in _THREAD_VARS)
    for var in _THREAD_VARS:
        os.environ[var] = want
    if stale and "numpy" in sys.modules and not os.environ.get("_ONNXLRP_BENCH_REEXEC"):
        os.environ["_ONNXLRP_BENCH_REEXEC"] = "1"
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *argv])


if __name__ == "__main__":
    _set_thread_env(sys.argv[1:])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent


def _load_models_module() -> Any:
    """Import ``benchmarks/models.py`` by path (the repository also has a ``models/`` data folder)."""
    spec = importlib.util.spec_from_file_location("onnxlrp_bench_models", BENCH_DIR / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench_models = _load_models_module()

DEFAULT_METHODS = "lrp_epsilon,gradient,epsilon_plus_flat,lrp,clrp,sglrp"
MB = 1024.0 * 1024.0


# ==========================================================================================================
# Zennit equivalents


@dataclass(frozen=True)
class ZennitEquivalent:
    """What Zennit runs for an onnxlrp method, and how its heatmap relates to onnxlrp's."""

    variant: str  # key of ZennitRunner.variants
    exact: bool  # same rules as onnxlrp (an agreement check makes sense)
    scale: str = "logit"  # "logit": onnxlrp starts from y_t, Zennit from 1; "none": both from 1
    times_input: bool = False


ZENNIT_EQUIVALENTS: dict[str, ZennitEquivalent] = {
    "epsilon_plus_flat": ZennitEquivalent("EpsilonPlusFlat", True),
    "epsilon_alpha2_beta1_flat": ZennitEquivalent("EpsilonAlpha2Beta1Flat", True),
    "epsilon_gamma_box": ZennitEquivalent("EpsilonGammaBox", True),
    "lrp_epsilon": ZennitEquivalent("Epsilon(1e-7)", True),
    # no bounded-Deep-Taylor / CLRP / SGLRP in Zennit: EpsilonPlusFlat (one pass) is the stand-in
    "lrp": ZennitEquivalent("EpsilonPlusFlat", False),
    "clrp": ZennitEquivalent("EpsilonPlusFlat", False),
    "sglrp": ZennitEquivalent("EpsilonPlusFlat", False),
    "gradient": ZennitEquivalent("autograd", True, "none"),
    "input_x_gradient": ZennitEquivalent("autograd", True, "none", times_input=True),
    "guided_backprop": ZennitEquivalent("GuidedBackprop", True, "none"),
}

CAVEATS = {
    "standin": "Zennit has no bounded-Deep-Taylor LRP, CLRP or SGLRP composite: the Zennit column of `lrp`, `clrp` "
               "and `sglrp` is one EpsilonPlusFlat pass (a stand-in of similar cost; no agreement check). "
               "`clrp`/`sglrp` propagate two relevance maps (target and dual) in one batched onnxlrp backward.",
    "effnet_add": "EfficientNet-Lite0: its residual sums are plain `x + inputs` in efficientnet_lite_pytorch, so "
                  "Zennit gives them the gradient (no canonizer maps them to `zennit.layer.Sum`), while onnxlrp "
                  "applies the Z rule to every `Add`: LRP heatmaps differ (timings remain comparable). BatchNorms are "
                  "merged into the convolutions with `NamedMergeBatchNorm` (the padded convolutions are not leaf "
                  "modules, so `SequentialMergeBatchNorm` would miss them).",
    "epsilon": "Zennit's `Epsilon(1e-7)` column is a LayerMapComposite: Epsilon(1e-7) on Conv/Linear plus Zennit's "
               "base map (Pass on activations, Norm on sums and average pools); onnxlrp's `lrp_epsilon` uses a safe "
               "division for sums and pools, so small differences at residual adds are expected.",
}


def zennit_available() -> tuple[bool, str]:
    """Whether torch and Zennit import (and why not)."""
    try:
        import torch  # noqa: F401
        import zennit  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return False, f"{exc.__class__.__name__}: {exc}"
    return True, ""


def _effnet_bn_pairs(model: Any) -> list[tuple[tuple[str], str]]:
    """(conv name, BatchNorm name) pairs of an efficientnet_lite_pytorch model, for ``NamedMergeBatchNorm``."""
    pairs: list[tuple[tuple[str], str]] = []
    names = dict(model.named_modules())
    for conv, bn in (("_conv_stem", "_bn0"), ("_conv_head", "_bn1")):
        if conv in names and bn in names:
            pairs.append(((conv,), bn))
    for i, _ in enumerate(model._blocks):
        p = f"_blocks.{i}."
        for conv, bn in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
            if p + conv in names and p + bn in names:
                pairs.append(((p + conv,), p + bn))
    return pairs


class ZennitRunner:
    """The torch twin of a benchmark model and Zennit attributors for it."""

    def __init__(self, spec: Any, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
        self.torch = torch
        self.kind = spec.torch_kind
        self.device = "cuda" if device == "cuda" else "cpu"
        t0 = time.perf_counter()
        self.model = spec.torch_factory().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.load_s = time.perf_counter() - t0

    def sync(self) -> None:
        """Wait for the GPU (no-op on the CPU)."""
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Plain torch forward (for the weights check)."""
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(x).to(self.device)).cpu().numpy()

    def canonizers(self) -> list[Any]:
        """Zennit's recommended canonizers for the model family."""
        from zennit.canonizers import NamedMergeBatchNorm
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer

        if self.kind == "vgg":
            return [VGGCanonizer()]
        if self.kind == "resnet":
            return [ResNetCanonizer()]
        if self.kind == "efficientnet_lite":
            return [NamedMergeBatchNorm(_effnet_bn_pairs(self.model))]
        return []

    def composite(self, variant: str, x: Any) -> Any:
        """The Zennit composite of ``variant`` (None for plain autograd)."""
        from zennit import composites as zc
        from zennit.layer import Sum
        from zennit.rules import Epsilon, Norm, Pass
        from zennit.types import Activation, AvgPool, Convolution
        from zennit.types import Linear as AnyLinear

        canon = self.canonizers()
        if variant == "EpsilonPlusFlat":
            return zc.EpsilonPlusFlat(canonizers=canon)
        if variant == "EpsilonAlpha2Beta1Flat":
            return zc.EpsilonAlpha2Beta1Flat(canonizers=canon)
        if variant == "EpsilonGammaBox":
            axes = tuple(range(1, x.ndim))
            low = x.amin(dim=axes, keepdim=True).expand_as(x)
            high = x.amax(dim=axes, keepdim=True).expand_as(x)
            return zc.EpsilonGammaBox(low=low, high=high, canonizers=canon)
        if variant == "Epsilon(1e-7)":
            layer_map = [(Activation, Pass()), (Sum, Norm()), (AvgPool, Norm()),
                         (Convolution, Epsilon(epsilon=1e-7)), (AnyLinear, Epsilon(epsilon=1e-7))]
            return zc.LayerMapComposite(layer_map=layer_map, canonizers=canon)
        if variant == "GuidedBackprop":
            return zc.GuidedBackprop()
        if variant == "autograd":
            return None
        raise KeyError(variant)

    @contextlib.contextmanager
    def attributor(self, variant: str, x_np: np.ndarray, targets: Sequence[int]) -> Iterator[Callable[[], np.ndarray]]:
        """Yield a callable that computes Zennit's heatmap (forward + backward) and returns it as NumPy."""
        torch = self.torch
        from zennit.attribution import Gradient

        x = torch.from_numpy(x_np).to(self.device)
        with torch.no_grad():
            n_cls = self.model(x[:1]).shape[1]
        onehot = torch.zeros((x.shape[0], n_cls), device=self.device)
        onehot[torch.arange(x.shape[0]), torch.as_tensor(list(targets))] = 1.0
        comp = self.composite(variant, x)
        if comp is None:
            def run() -> np.ndarray:
                xi = x.detach().requires_grad_(True)
                out = self.model(xi)
                (g,) = torch.autograd.grad(out, xi, grad_outputs=onehot)
                res = g.detach().cpu().numpy()
                self.sync()
                return res

            yield run
            return
        with Gradient(model=self.model, composite=comp) as attr:
            def run_lrp() -> np.ndarray:
                _, rel = attr(x, onehot)
                res = rel.detach().cpu().numpy()
                self.sync()
                return res

            yield run_lrp


# ==========================================================================================================
# timing helpers


@dataclass
class Timing:
    """Warm-up time and the repeated times of one callable (seconds)."""

    first: float
    times: list[float]

    @property
    def median(self) -> float:
        """Median of the repeated runs."""
        return statistics.median(self.times)


SETTLE_S = 0.2


def time_it(fn: Callable[[], Any], repeat: int) -> tuple[Timing, Any]:
    """One warm-up call, then ``repeat`` timed calls; returns the timing and the last result.

    Starts with a short idle pause, so that the thread pools of whatever ran before (onnxruntime, OpenBLAS,
    torch's OpenMP all spin-wait for a while after their work) are asleep when the measurement begins.
    """
    time.sleep(SETTLE_S)
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return Timing(first, times), out


def resolve_targets(target: str, logits: np.ndarray) -> list[int]:
    """One class per sample: ``top`` → each sample's largest logit, else the given int for all."""
    if str(target) == "top":
        return [int(t) for t in logits.argmax(axis=1)]
    return [int(target)] * logits.shape[0]


def make_input(shape: tuple[int, ...], batch: int, seed: int) -> np.ndarray:
    """The benchmark input: standard normal, float32, fixed seed."""
    return np.random.default_rng(seed).standard_normal((batch, *shape), dtype=np.float32)


def ort_session(path: Path | bytes, device: str, threads: int) -> Any:
    """A plain onnxruntime session on the model file or bytes (ORT_ENABLE_ALL, ``threads`` intra-op threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=providers)


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """``max|ours - ref| / max|ref|`` in float64."""
    ref64 = np.asarray(ref, dtype=np.float64)
    denom = np.abs(ref64).max()
    if denom == 0:
        return float("nan")
    return float(np.abs(np.asarray(ours, dtype=np.float64) - ref64).max() / denom)


def _plan_for(ex: Any, shape: tuple[int, ...]) -> float | None:
    """Build (and time) the explainer's plan for ``shape``; None when the engine has no ``_plan``."""
    plan = getattr(ex, "_plan", None)
    if plan is None:
        return None
    t0 = time.perf_counter()
    plan(tuple(shape))
    return time.perf_counter() - t0


def _sync_fn(device: str) -> Callable[[], None]:
    if device != "cuda":
        return lambda: None
    try:
        import cupy  # type: ignore[import-not-found]

        return cupy.cuda.runtime.deviceSynchronize
    except Exception:  # noqa: BLE001
        return lambda: None


# ==========================================================================================================
# profiling (monkeypatches the engine for the duration of a ``with``)


class _TimedRule:
    """Wraps a rule; times each call and files it under (op type, rule)."""

    def __init__(self, rule: Any, prof: EngineProfiler) -> None:
        self.rule = rule
        self.prof = prof

    def __call__(self, layer: Any, ctx: Any, ins: Any, outs: Any, gouts: Any) -> Any:
        key = (layer.op_type, str(self.rule))
        prof = self.prof
        prof.current = key
        prof.sync()
        t0 = time.perf_counter()
        try:
            return self.rule(layer, ctx, ins, outs, gouts)
        finally:
            prof.sync()
            dt = time.perf_counter() - t0
            prof.current = None
            prof.ops[key] += dt
            prof.op_calls[key] += 1
            prof.layers[(layer.name, layer.op_type, str(self.rule))] += dt


class EngineProfiler:
    """Per-stage and per-op timers around the engine, installed by monkeypatching (benchmark only).

    Stages: ``forward`` (``Plan.run_forward``: onnxruntime with every intermediate as an output, plus the copy
    to the backend), ``start`` (start relevance), ``bounds`` (Z^B bounds), ``backward`` (``Plan.backward``),
    ``post`` (``Explainer._post``); ``other`` is the rest of ``explain`` (input checks, casts, composites).
    Inside the backward, each rule call is timed under (op type, rule), and the linear layers' products
    (``lin``/``lin_t``: convolutions and matrix products) are timed separately.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.sync = _sync_fn(device)
        self.stages: dict[str, float] = defaultdict(float)
        self.ops: dict[tuple[str, str], float] = defaultdict(float)
        self.op_calls: dict[tuple[str, str], int] = defaultdict(int)
        self.products: dict[tuple[str, str], float] = defaultdict(float)
        self.layers: dict[tuple[str, str, str], float] = defaultdict(float)
        self.calls = 0
        self.total = 0.0
        self.current: tuple[str, str] | None = None
        self._undo: list[tuple[Any, str, Any]] = []

    def _patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        orig = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        self._undo.append((owner, name, orig))
        setattr(owner, name, make(orig))

    def _stage(self, stage: str) -> Callable[[Any], Any]:
        def make(orig: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                self.sync()
                t0 = time.perf_counter()
                try:
                    return orig(*args, **kwargs)
                finally:
                    self.sync()
                    self.stages[stage] += time.perf_counter() - t0

            return wrapper

        return make

    def _product(self, orig: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.current is None:
                return orig(*args, **kwargs)
            self.sync()
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                self.sync()
                self.products[self.current] += time.perf_counter() - t0

        return wrapper

    def __enter__(self) -> EngineProfiler:
        from onnxlrp import plan as plan_mod
        from onnxlrp import propagation as prop_mod
        from onnxlrp.ops import linear as lin_mod

        plan_cls = plan_mod.Plan
        self._patch(plan_cls, "run_forward", self._stage("forward"))
        self._patch(plan_cls, "bounds", self._stage("bounds"))
        self._patch(prop_mod, "start_relevance", self._stage("start"))
        self._patch(prop_mod, "post", self._stage("post"))

        prof = self

        def make_backward(orig: Any) -> Any:
            def backward(plan_self: Any, acts: Any, start: Any, rule_for: Any, ctx: Any, *args: Any,
                         **kwargs: Any) -> Any:
                def timed_rule_for(layer: Any) -> Any:
                    return _TimedRule(rule_for(layer), prof)

                prof.sync()
                t0 = time.perf_counter()
                try:
                    return orig(plan_self, acts, start, timed_rule_for, ctx, *args, **kwargs)
                finally:
                    prof.sync()
                    prof.stages["backward"] += time.perf_counter() - t0

            return backward

        self._patch(plan_cls, "backward", make_backward)
        for cls_name in ("ConvLayer", "DenseLayer"):
            cls = getattr(lin_mod, cls_name, None)
            if cls is None:
                continue
            for meth in ("lin", "lin_t"):
                if meth in cls.__dict__:
                    self._patch(cls, meth, self._product)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)
        self._undo.clear()

    def run(self, fn: Callable[[], Any], repeat: int) -> None:
        """Call ``fn`` ``repeat`` times under the timers."""
        time.sleep(SETTLE_S)
        for _ in range(repeat):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            self.total += time.perf_counter() - t0
            self.calls += 1

    def report(self) -> dict[str, Any]:
        """Mean milliseconds per call: stages, op types (with their products) and the slowest layers."""
        n = max(self.calls, 1)
        ms = 1e3 / n
        stages = {k: v * ms for k, v in self.stages.items()}
        stages["other"] = self.total * ms - sum(stages.values())
        rules = sum(self.ops.values()) * ms
        ops = [
            {"op": op, "rule": rule, "calls": self.op_calls[(op, rule)] // n, "ms": t * ms,
             "products_ms": self.products.get((op, rule), 0.0) * ms}
            for (op, rule), t in sorted(self.ops.items(), key=lambda kv: -kv[1])
        ]
        layers = [
            {"layer": name, "op": op, "rule": rule, "ms": t * ms}
            for (name, op, rule), t in sorted(self.layers.items(), key=lambda kv: -kv[1])[:8]
        ]
        return {"total_ms": self.total * ms, "stages_ms": stages,
                "backward_bookkeeping_ms": stages.get("backward", 0.0) - rules, "ops": ops, "slowest_layers": layers}


# ==========================================================================================================
# results


@dataclass
class MethodResult:
    """One model × batch × method row."""

    model: str
    batch: int
    method: str
    onnxlrp: Timing | None = None
    zennit_variant: str | None = None
    zennit: Timing | None = None
    agree: float | None = None
    exact: bool = False
    error: str = ""
    compiled: Timing | None = None  # the compiled explanation graph (onnxlrp.compiler) in a plain ORT session
    compiled_forward: Timing | None = None  # the plain forward, timed in the same rounds as the compiled graph
    compile_s: float | None = None
    compiled_agree: float | None = None  # compiled vs engine, max |diff| / max |engine|
    compiled_error: str = ""


@dataclass
class CaseResult:
    """Everything measured for one model × batch size."""

    model: str
    batch: int
    source: str
    targets: list[int] = field(default_factory=list)
    forward: Timing | None = None
    session_s: float = 0.0
    explainer_init_s: float = 0.0
    plan_s: float | None = None
    torch_load_s: float | None = None
    weights_check: float | None = None
    zennit_status: str = ""
    methods: list[MethodResult] = field(default_factory=list)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _ms(t: float | None) -> str:
    return "—" if t is None else f"{t * 1e3:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def _targets_text(targets: list[int]) -> str:
    if not targets:
        return "—"
    if len(set(targets)) == 1:
        return str(targets[0])
    return ",".join(str(t) for t in targets[:4]) + ("…" if len(targets) > 4 else "")


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """A markdown table, or aligned plain text."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


# ==========================================================================================================
# the benchmark of one model × batch


@dataclass
class _Job:
    """One thing to time: a callable, or a context manager that yields one (Zennit's hooks)."""

    name: str
    fn: Callable[[], Any] | None = None
    ctx: Callable[[], contextlib.AbstractContextManager[Callable[[], Any]]] | None = None
    first: float = 0.0
    times: list[float] = field(default_factory=list)
    result: Any = None
    error: str = ""

    def once(self) -> float:
        """Run once; returns the seconds of the call alone (entering Zennit's context is not timed)."""
        with contextlib.ExitStack() as stack:
            fn = self.fn if self.ctx is None else stack.enter_context(self.ctx())
            assert fn is not None
            t0 = time.perf_counter()
            self.result = fn()
            return time.perf_counter() - t0

    @property
    def timing(self) -> Timing | None:
        return None if self.error or not self.times else Timing(self.first, self.times)


def run_rounds(jobs: list[_Job], repeat: int, log: Callable[[str], None], label: str) -> None:
    """One warm-up per job, then ``repeat`` rounds that time every job once, round-robin.

    Interleaving makes the ratios robust to slow drifts of the machine's load (other processes, CPU clock):
    within one round every library sees about the same machine. Each call starts after a short idle pause
    (``SETTLE_S``), so the previous job's spin-waiting thread pools are asleep.
    """
    for job in jobs:
        log(f"{label} warm-up: {job.name}")
        time.sleep(SETTLE_S)
        try:
            job.first = job.once()
        except Exception as exc:  # noqa: BLE001 - report and go on with the other jobs
            job.error = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc) else ''}"
            log(f"  failed: {job.error}")
    live = [j for j in jobs if not j.error]
    for r in range(repeat):
        log(f"{label} round {r + 1}/{repeat}")
        for job in live:
            time.sleep(SETTLE_S)
            job.times.append(job.once())


def run_case(spec: Any, batch: int, methods: list[str], args: argparse.Namespace,
             zennit: ZennitRunner | None, log: Callable[[str], None]) -> CaseResult:
    """Time the forward, onnxlrp and Zennit for one model and batch size."""
    from onnxlrp import Explainer

    res = CaseResult(spec.name, batch, spec.source)
    x = make_input(spec.input_shape, batch, args.seed)
    label = f"[{spec.name} b={batch}]"

    log(f"{label} setup")
    t0 = time.perf_counter()
    sess = ort_session(spec.path, args.device, args.threads)
    res.session_s = time.perf_counter() - t0
    in_name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    logits = np.asarray(sess.run([out_name], {in_name: x})[0]).reshape(batch, -1)
    targets = resolve_targets(args.target, logits)
    res.targets = targets

    t0 = time.perf_counter()
    # the engine (layer by layer); the compiled graphs are timed in their own column
    ex = Explainer(str(spec.path), device=args.device, threads=args.threads, kernels="engine")
    res.explainer_init_s = time.perf_counter() - t0
    res.plan_s = _plan_for(ex, x.shape)
    if zennit is not None:
        res.torch_load_s = zennit.load_s
        res.weights_check = relative_error(zennit.logits(x), logits)
        if res.weights_check > 1e-3:
            res.notes.append(f"torch and onnxruntime logits differ by {res.weights_check:.1e} (relative): "
                             "Zennit may not run on the same weights")

    fwd_job = _Job("forward", fn=lambda: sess.run([out_name], {in_name: x})[0])
    lrp_jobs = {m: _Job(f"onnxlrp {m}", fn=lambda m=m: ex.explain(x, target=targets, method=m)) for m in methods}
    z_jobs: dict[str, _Job] = {}
    if zennit is not None:
        for m in methods:
            eq = ZENNIT_EQUIVALENTS.get(m)
            if eq is not None and eq.variant not in z_jobs:
                z_jobs[eq.variant] = _Job(f"Zennit {eq.variant}",
                                          ctx=lambda v=eq.variant: zennit.attributor(v, x, targets))
    run_rounds([fwd_job, *lrp_jobs.values(), *z_jobs.values()], args.repeat, log, label)
    res.forward = fwd_job.timing
    # the compiled graphs, one at a time (each holds its own weights and activation arena), each timed in rounds
    # with the plain forward again, so that its ratio compares numbers measured side by side
    c_jobs: dict[str, tuple[_Job, _Job]] = {}
    c_setup: dict[str, float | str] = {}
    if not args.no_compiled:
        from onnxlrp.compiler import compile_explanation

        for m in methods:
            log(f"{label} compiling {m}")
            try:
                t0 = time.perf_counter()
                proto = compile_explanation(str(spec.path), m, verify=False).SerializeToString()
                c_setup[m] = time.perf_counter() - t0
                csess = ort_session(proto, args.device, args.threads)
                del proto
            except Exception as exc:  # noqa: BLE001 - report and go on
                c_setup[m] = f"{exc.__class__.__name__}: {str(exc)[:160]}"
                continue
            feed = {in_name: x, "target": np.asarray(targets, np.int64)}
            pair = (_Job("forward", fn=lambda: sess.run([out_name], {in_name: x})[0]),
                    _Job(f"compiled {m}", fn=lambda s=csess, f=feed: s.run(["heatmap"], f)[0]))
            run_rounds(list(pair), args.repeat, log, f"{label} compiled {m}")
            pair[1].result = np.asarray(pair[1].result)
            c_jobs[m] = pair
            del csess, pair
            gc.collect()

    forward_alone = None
    plan_fn = getattr(ex, "_plan", None)
    if args.profile and plan_fn is not None:
        # the engine's forward with intermediates on its own (no NumPy/BLAS work in between)
        plan = plan_fn(tuple(x.shape))
        forward_alone = time_it(lambda: plan.run_forward(x), max(3, args.repeat))[0].median

    for method in methods:
        job = lrp_jobs[method]
        mr = MethodResult(spec.name, batch, method, onnxlrp=job.timing)
        res.methods.append(mr)
        if isinstance(c_setup.get(method), str):
            mr.compiled_error = str(c_setup[method])
        elif method in c_jobs:
            fj, cj = c_jobs[method]
            mr.compile_s = float(c_setup[method])
            mr.compiled, mr.compiled_forward = cj.timing, fj.timing
            if cj.error:
                mr.compiled_error = cj.error
            elif not job.error:
                mr.compiled_agree = relative_error(np.asarray(cj.result), np.asarray(job.result))
        if job.error:
            mr.error = "onnxlrp: " + job.error
            continue
        if args.profile:
            log(f"{label} profiling {method}")
            with EngineProfiler(args.device) as prof:
                prof.run(lambda m=method: ex.explain(x, target=targets, method=m), max(1, args.repeat))
            rep = prof.report()
            rep["plain_forward_ms"] = res.forward.median * 1e3 if res.forward else float("nan")
            if forward_alone is not None:
                rep["forward_alone_ms"] = forward_alone * 1e3
            res.profiles[method] = rep
        eq = ZENNIT_EQUIVALENTS.get(method)
        if eq is None or eq.variant not in z_jobs:
            continue
        zj = z_jobs[eq.variant]
        mr.zennit_variant, mr.exact, mr.zennit = eq.variant, eq.exact, zj.timing
        if zj.error:
            mr.error = "Zennit: " + zj.error
        elif eq.exact:
            ref = zj.result * x if eq.times_input else zj.result
            if eq.scale == "logit":
                yt = logits[np.arange(batch), targets]
                ref = ref * yt.reshape((batch,) + (1,) * (x.ndim - 1))
            mr.agree = relative_error(np.asarray(job.result), ref)
    return res


# ==========================================================================================================
# peak memory (one subprocess per measurement)


def _rss_mb() -> float:
    """Current resident set size (MB)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_mb(reset_ok: bool) -> float:
    """Peak RSS (MB): VmHWM since the reset, else ``ru_maxrss`` (the whole process's peak)."""
    if reset_ok:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_main(payload: str) -> int:
    """``--_child``: load one model for one library, then run one method twice and print the peak memory."""
    job = json.loads(payload)
    spec = bench_models.get_model(job["model"], job["source"], job["seed"])
    x = make_input(spec.input_shape, job["batch"], job["seed"])
    threads, device, lib, method, targets = job["threads"], job["device"], job["lib"], job["method"], job["targets"]
    gpu_before = None
    if lib == "forward":
        sess = ort_session(spec.path, device, threads)
        in_name = sess.get_inputs()[0].name

        def work() -> Any:
            return sess.run(None, {in_name: x})
    elif lib == "onnxlrp":
        from onnxlrp import Explainer

        ex = Explainer(str(spec.path), device=device, threads=threads, kernels="engine")
        _plan_for(ex, x.shape)

        def work() -> Any:
            return ex.explain(x, target=targets, method=method)

        if device == "cuda":
            import cupy  # type: ignore[import-not-found]

            gpu_before = cupy.get_default_memory_pool().total_bytes()
    else:
        runner = ZennitRunner(spec, device, threads)
        stack = contextlib.ExitStack()
        work = stack.enter_context(runner.attributor(method, x, targets))
        if device == "cuda":
            runner.torch.cuda.reset_peak_memory_stats()
            gpu_before = runner.torch.cuda.memory_allocated()
    gc.collect()
    base = _rss_mb()
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    reset_ok = _reset_peak()
    t0 = time.perf_counter()
    work()
    work()
    seconds = (time.perf_counter() - t0) / 2
    peak = _peak_mb(reset_ok)
    out = {"base_mb": base, "peak_mb": peak, "delta_mb": peak - base, "load_peak_mb": base_maxrss,
           "peak_source": "VmHWM after reset" if reset_ok else "ru_maxrss", "seconds": seconds}
    if gpu_before is not None:
        if lib == "onnxlrp":
            import cupy  # type: ignore[import-not-found]

            out["gpu_delta_mb"] = (cupy.get_default_memory_pool().total_bytes() - gpu_before) / MB
        else:
            out["gpu_delta_mb"] = (runner.torch.cuda.max_memory_allocated() - gpu_before) / MB
    print(json.dumps(out))
    return 0


def run_memory(spec_name: str, spec: Any, batch: int, targets: list[int], methods: list[str],
               args: argparse.Namespace, with_zennit: bool, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Peak memory of the forward, each onnxlrp method and each Zennit equivalent, one subprocess each."""
    jobs: list[tuple[str, str]] = [("forward", "-")]
    jobs += [("onnxlrp", m) for m in methods]
    if with_zennit:
        variants = []
        for m in methods:
            eq = ZENNIT_EQUIVALENTS.get(m)
            if eq is not None and eq.variant not in variants:
                variants.append(eq.variant)
        jobs += [("zennit", v) for v in variants]
    rows = []
    for lib, method in jobs:
        job = {"model": spec_name, "source": args.source, "seed": args.seed, "batch": batch, "lib": lib,
               "method": method, "threads": args.threads, "device": args.device, "targets": targets}
        log(f"[{spec.name} b={batch}] memory: {lib} {method}")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads), "--_child",
               json.dumps(job)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        row: dict[str, Any] = {"lib": lib, "method": method}
        if proc.returncode == 0 and proc.stdout.strip():
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            row["error"] = tail[-1][:200] if tail else f"exit status {proc.returncode}"
            log("  " + row["error"])
        rows.append(row)
    return rows


# ==========================================================================================================
# reporting


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_header(argv: Sequence[str], args: argparse.Namespace) -> list[str]:
    """Lines describing the command, the machine, the libraries and the date."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = ""
    with contextlib.suppress(OSError):
        load = f", load average {os.getloadavg()[0]:.2f} at start"
    libs = []
    for dist in ("onnxlrp", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "cupy-cuda12x", "torch", "torchvision",
                 "zennit", "efficientnet-lite-pytorch"):
        v = _version(dist)
        if v:
            libs.append(f"{dist} {v}")
    blas = ""
    with contextlib.suppress(Exception):
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]  # type: ignore[attr-defined]
    gpu = ""
    if args.device == "cuda":
        with contextlib.suppress(Exception):
            import torch

            gpu = f"; GPU: {torch.cuda.get_device_name(0)}"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- command: `python benchmarks/bench.py {shlex.join(argv)}`",
        f"- machine: {cpu}, {cores} logical cores ({usable} usable){mem}{load}{gpu}",
        f"- threads: {args.threads} (onnxruntime intra-op, torch, BLAS/OpenMP); device: {args.device}; "
        f"repeat: {args.repeat} (median) after 1 warm-up; target: {args.target}; input seed {args.seed}",
        f"- python {platform.python_version()}; " + ", ".join(libs) + (f"; NumPy BLAS: {blas}" if blas else ""),
        f"- date: {date}",
    ]


def print_report(cases: list[CaseResult], args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Print the tables (markdown with ``--markdown``)."""
    md = args.markdown
    out: list[str] = []
    if md:
        out += ["## onnxlrp benchmark", ""] + machine_header(argv, args) + [""]
    else:
        out += [line[2:].replace("`", "") for line in machine_header(argv, args)] + [""]

    caveats: list[str] = []

    def mark(key: str) -> str:
        if key not in caveats:
            caveats.append(key)
        return f"[{caveats.index(key) + 1}]"

    headers = ["model", "batch", "method", "ORT fwd ms", "onnxlrp ms", "onnxlrp ms/img", "onnxlrp/fwd",
               "compiled ms", "compiled/fwd", "warm-up ms", "Zennit", "Zennit ms", "Zennit ms/img",
               "Zennit/onnxlrp", "Zennit/compiled", "agree", "compiled vs engine"]
    rows = []
    for case in cases:
        fwd = case.forward.median if case.forward else None
        for mr in case.methods:
            ours = mr.onnxlrp.median if mr.onnxlrp else None
            theirs = mr.zennit.median if mr.zennit else None
            zname = mr.zennit_variant or "—"
            notes = []
            if mr.zennit_variant and not mr.exact:
                notes.append(mark("standin"))
            if mr.zennit_variant and case.model.startswith("efficientnet_lite") and mr.zennit_variant != "autograd":
                notes.append(mark("effnet_add"))
            if mr.zennit_variant == "Epsilon(1e-7)":
                notes.append(mark("epsilon"))
            if notes:
                zname += " " + "".join(notes)
            agree = "—" if mr.agree is None else f"{mr.agree:.1e}"
            if mr.error:
                agree = mr.error if not ours else agree + " (" + mr.error + ")"
            comp = mr.compiled.median if mr.compiled else None
            cfwd = mr.compiled_forward.median if mr.compiled_forward else None
            c_agree = mr.compiled_error[:60] if mr.compiled_error else (
                "—" if mr.compiled_agree is None else f"{mr.compiled_agree:.1e}")
            rows.append([
                case.model, str(case.batch), mr.method, _ms(fwd), _ms(ours),
                _ms(None if ours is None else ours / case.batch), _ratio(ours, fwd), _ms(comp), _ratio(comp, cfwd),
                _ms(mr.onnxlrp.first if mr.onnxlrp else None), zname, _ms(theirs),
                _ms(None if theirs is None else theirs / case.batch), _ratio(theirs, ours), _ratio(theirs, comp),
                agree, c_agree,
            ])
    out += ["### Times (median)" if md else "TIMES (median)", "", render(headers, rows, md), ""]
    for i, key in enumerate(caveats, 1):
        out.append(f"[{i}] {CAVEATS[key]}")
    if caveats:
        out.append("")

    s_headers = ["model", "batch", "weights", "target", "ORT session s", "Explainer() s", "plan build s",
                 "torch model s", "torch vs ORT logits", "Zennit"]
    s_rows = [[c.model, str(c.batch), c.source, _targets_text(c.targets), f"{c.session_s:.2f}",
               f"{c.explainer_init_s:.2f}",
               "—" if c.plan_s is None else f"{c.plan_s:.2f}",
               "—" if c.torch_load_s is None else f"{c.torch_load_s:.2f}",
               "—" if c.weights_check is None else f"{c.weights_check:.1e}", c.zennit_status or "yes"]
              for c in cases]
    out += ["### Setup (once per model × batch, not in the medians)" if md else "SETUP", "",
            render(s_headers, s_rows, md), ""]
    for c in cases:
        for note in c.notes:
            out.append(f"- {c.model} b={c.batch}: {note}")

    if any(c.memory for c in cases):
        m_headers = ["model", "batch", "method", "library", "RSS after load MB", "peak MB", "peak − load MB"]
        if args.device == "cuda":
            m_headers.append("GPU Δ MB")
        m_rows = []
        for c in cases:
            for r in c.memory:
                if "error" in r:
                    m_rows.append([c.model, str(c.batch), r["method"], r["lib"], "—", "—", r["error"]]
                                  + (["—"] if args.device == "cuda" else []))
                    continue
                row = [c.model, str(c.batch), r["method"], r["lib"], f"{r['base_mb']:.0f}", f"{r['peak_mb']:.0f}",
                       f"{r['delta_mb']:.0f}"]
                if args.device == "cuda":
                    row.append(f"{r['gpu_delta_mb']:.0f}" if "gpu_delta_mb" in r else "—")
                m_rows.append(row)
        out += ["### Peak memory (one fresh process each; warm-up + 1 call)" if md else "PEAK MEMORY", "",
                render(m_headers, m_rows, md), ""]

    for c in cases:
        for method, rep in c.profiles.items():
            out += profile_text(c, method, rep, md)
    print("\n".join(out))


def profile_text(case: CaseResult, method: str, rep: dict[str, Any], md: bool) -> list[str]:
    """The per-stage and per-op breakdown of one profiled method."""
    st = rep["stages_ms"]
    total = rep["total_ms"]
    order = ["forward", "start", "bounds", "backward", "post", "other"]
    title = f"Profile: {case.model}, batch {case.batch}, {method} (mean of profiled calls)"
    lines = [("### " if md else "") + title, ""]
    s_rows = [[k, f"{st.get(k, 0.0):.1f}", f"{100 * st.get(k, 0.0) / total:.0f}%"] for k in order if k in st]
    s_rows.append(["total", f"{total:.1f}", "100%"])
    if "forward_alone_ms" in rep:
        s_rows.append(["(forward with intermediates, run alone)", f"{rep['forward_alone_ms']:.1f}", "—"])
    s_rows.append(["(plain ORT forward)", f"{rep['plain_forward_ms']:.1f}", "—"])
    lines += [render(["stage", "ms", "share"], s_rows, md), ""]
    back = st.get("backward", 0.0) or 1.0
    o_rows = [[o["op"], o["rule"], str(o["calls"]), f"{o['ms']:.1f}", f"{100 * o['ms'] / back:.0f}%",
               f"{o['products_ms']:.1f}"] for o in rep["ops"]]
    o_rows.append(["(bookkeeping)", "relevance sums, dicts", "—", f"{rep['backward_bookkeeping_ms']:.1f}",
                   f"{100 * rep['backward_bookkeeping_ms'] / back:.0f}%", "—"])
    lines += [render(["op", "rule", "calls", "ms", "of backward", "of which products ms"], o_rows, md), ""]
    l_rows = [[lay["layer"], lay["op"], lay["rule"], f"{lay['ms']:.1f}"] for lay in rep["slowest_layers"]]
    lines += [render(["slowest layer", "op", "rule", "ms"], l_rows, md), ""]
    return lines


# ==========================================================================================================
# main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", action="append", metavar="NAME",
                   help="vgg16, resnet50, efficientnet_lite0 or a path to an .onnx file (repeatable; "
                        "default: vgg16, resnet50, efficientnet_lite0)")
    p.add_argument("--batch", action="append", type=int, metavar="N", help="batch size (repeatable; default 1)")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated onnxlrp methods")
    p.add_argument("--threads", type=int, default=2,
                   help="onnxruntime intra-op threads, torch.set_num_threads and BLAS/OpenMP threads")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median), after 1 warm-up")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--no-zennit", action="store_true", help="skip Zennit")
    p.add_argument("--no-compiled", action="store_true", help="skip the compiled explanation graphs")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (a subprocess per measurement)")
    p.add_argument("--profile", action="store_true", help="break onnxlrp's time down by stage and op type")
    p.add_argument("--markdown", action="store_true", help="print markdown tables with a header (for RESULTS.md)")
    p.add_argument("--json", type=Path, help="also write the raw results to this JSON file")
    p.add_argument("--source", default="auto", choices=("auto", "torchvision", "numpy"),
                   help="how vgg16/resnet50 are made: torchvision export (Zennit runs on the same weights) or "
                        "the NumPy/onnx.helper builder (no torch, no Zennit)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the input")
    p.add_argument("--target", default="top",
                   help="the explained class: an int, or 'top' (each sample's class with the largest logit in the "
                        "plain forward; fixed once, then the same for every method and library)")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.model = args.model or ["vgg16", "resnet50", "efficientnet_lite0"]
    args.batch = args.batch or [1]
    if args.target != "top":
        try:
            args.target = int(args.target)
        except ValueError:
            p.error("--target must be an int or 'top'")
    if args.repeat < 1 or args.threads < 1 or any(b < 1 for b in args.batch):
        p.error("--repeat, --threads and --batch must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the report; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._child:
        return child_main(args._child)

    import onnxlrp

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in onnxlrp.list_methods()]
    if unknown:
        print(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(onnxlrp.list_methods())}",
              file=sys.stderr)
        return 2
    if args.device == "cuda" and not onnxlrp.cuda_available():
        print("--device cuda: CuPy sees no GPU (install onnxlrp[gpu])", file=sys.stderr)
        return 2

    z_ok, z_why = (False, "--no-zennit") if args.no_zennit else zennit_available()
    cases: list[CaseResult] = []
    for name in args.model:
        spec = bench_models.get_model(name, args.source, args.seed, log=log)
        runner = None
        status = "yes"
        if not z_ok:
            status = f"no ({z_why})"
        elif spec.torch_factory is None:
            status = "no (no torch twin of this model)"
        else:
            try:
                runner = ZennitRunner(spec, args.device, args.threads)
            except Exception as exc:  # noqa: BLE001
                status = f"no ({exc.__class__.__name__}: {str(exc)[:120]})"
        for batch in args.batch:
            case = run_case(spec, batch, methods, args, runner, log)
            case.zennit_status = status
            if args.memory:
                case.memory = run_memory(name, spec, batch, case.targets, methods, args, runner is not None, log)
            cases.append(case)
        del runner
        gc.collect()

    print_report(cases, args, argv)
    if args.json:
        args.json.write_text(json.dumps({"header": machine_header(argv, args),
                                         "cases": [asdict(c) for c in cases]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
