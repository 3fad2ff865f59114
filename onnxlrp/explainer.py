"""The public entry point: :class:`Explainer`."""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from .accel import OrtConvKernels
from .backend import Backend, get_backend
from .errors import InputError
from .graph import load_model, prepare
from .methods import METHODS, Method, start_relevance
from .plan import Plan, plan_summary
from .rules import RuleContext
from .runtime import check_input, make_session

Array = Any
_MAX_PLANS = 4


class Explainer:
    """Explain an ONNX classifier's decisions with LRP, SGLRP and gradient-based methods.

    Parameters
    ----------
    model:
        Path to an ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
    device:
        ``"auto"`` (GPU when CuPy sees one, else CPU), ``"cpu"`` or ``"cuda"``.
    output:
        Name of the model output to explain; default: the first float32 output. A trailing
        Softmax/LogSoftmax is removed: explanations start from the scores before it.
    threads:
        onnxruntime intra-op threads (default: onnxruntime's choice).
    kernels:
        ``"auto"``: on the CPU the backward's convolutions run on onnxruntime's kernels
        (faster); ``"array"``: the NumPy/CuPy kernels everywhere (the code the GPU runs).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | onnx.ModelProto,
        device: str = "auto",
        output: str | None = None,
        threads: int | None = None,
        kernels: str = "auto",
        _force_canonical: bool = False,
    ) -> None:
        if kernels not in ("auto", "array"):
            raise InputError(f"kernels must be 'auto' or 'array', not {kernels!r}")
        self.backend: Backend = get_backend(device)
        self._force_canonical = _force_canonical  # tests: always take onnxruntime's canonicalisation route
        self.threads = threads
        self.prepared = prepare(load_model(model), output)
        self._plans: OrderedDict[tuple[int, ...], Plan] = OrderedDict()
        self._predict_session: Any = None
        self._forwards: dict[str, Any] = {}
        # on the CPU, convolutions of the backward run on onnxruntime's kernels (see onnxlrp.accel)
        self._accel = None if self.backend.is_gpu or kernels == "array" else OrtConvKernels(threads)
        dims = self.prepared.input_dims
        self.fixed_batch = dims[0] if dims else None
        if dims and all(d is not None for d in dims[1:]):
            # check the graph now, so that an unsupported model is refused before anything runs
            self._plan((self.fixed_batch or 1,) + tuple(int(d) for d in dims[1:]))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ model facts
    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"``."""
        return self.backend.device

    @property
    def input_name(self) -> str:
        """Name of the explained model input."""
        return self.prepared.input_name

    @property
    def input_shape(self) -> list[int | None]:
        """Declared input shape (None for dynamic dimensions)."""
        return list(self.prepared.input_dims)

    @property
    def output_name(self) -> str:
        """Name of the explained tensor (before a removed softmax)."""
        return self.prepared.output_name

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props``."""
        return dict(self.prepared.metadata)

    @property
    def num_classes(self) -> int:
        """Number of class scores (known once a plan exists; builds one for a static input shape)."""
        return next(iter(self._plans.values())).graph.num_classes if self._plans else self._plan_any().graph.num_classes

    def _plan_any(self) -> Plan:
        dims = self.prepared.input_dims
        if not dims or any(d is None for d in dims[1:]):
            raise InputError("the model's input shape is dynamic; call predict() or explain() with an input first")
        return self._plan((self.fixed_batch or 1,) + tuple(int(d) for d in dims[1:]))  # type: ignore[arg-type]

    def _plan(self, shape: tuple[int, ...]) -> Plan:
        plan = self._plans.get(shape)
        if plan is None:
            plan = Plan(self.prepared, shape, self.backend, self.threads, self._forwards, self._accel,
                        self._force_canonical)
            self._plans[shape] = plan
            while len(self._plans) > _MAX_PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(shape)
        return plan

    def layers(self, method: str | None = None, shape: Sequence[int] | None = None) -> list[dict[str, str]]:
        """The layer list (one dict per layer); with ``method``, the rule each layer gets."""
        plan = self._plan(tuple(shape)) if shape is not None else self._plan_any()
        rule_for = None
        if method is not None:
            m = self._method(method)
            if m.composite is not None:
                rule_for = m.composite().rule_for
        return plan_summary(plan, rule_for)

    # ------------------------------------------------------------------ prediction
    def _check(self, x: Any) -> np.ndarray:
        return check_input(x, self.prepared.input_dims, self.prepared.input_name)

    def _batches(self, n: int, size: int | None = None) -> list[slice]:
        step = self.fixed_batch or size or n
        if self.fixed_batch and n % self.fixed_batch:
            raise InputError(f"the model has a fixed batch size of {self.fixed_batch}; got {n} samples")
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def predict(self, x: Any) -> np.ndarray:
        """The class scores the explanations start from (pre-softmax logits), ``(N, classes)`` float32."""
        xs = self._check(x)
        if self._predict_session is None:
            shared = self._forwards.get("exported")  # the explanation's forward session serves any batch size
            self._predict_session = shared.session if shared is not None else make_session(
                self.prepared.model, self.backend, self.threads, self.prepared.weights)
        outs = []
        for sl in self._batches(xs.shape[0]):
            try:
                y = self._predict_session.run([self.prepared.output_name], {self.prepared.input_name: xs[sl]})[0]
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"onnxruntime could not run the model on input {list(xs[sl].shape)}: "
                                 f"{str(exc).splitlines()[0]}") from None
            outs.append(np.asarray(y, dtype=np.float32).reshape(y.shape[0], -1))
        return np.concatenate(outs)

    # ------------------------------------------------------------------ explanation
    def _method(self, name: str) -> Method:
        if name not in METHODS:
            raise InputError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
        return METHODS[name]

    def _targets(self, target: Any, targets: Any, n: int, num_classes: int, logits: np.ndarray | None) -> np.ndarray:
        """Targets as a ``(T, N)`` int array (validated)."""
        if target is not None and targets is not None:
            raise InputError("give either target= (one per sample) or targets= (several per sample), not both")
        if targets is not None:
            t = np.asarray(targets)
            if t.ndim == 1:
                t = np.repeat(t[:, None], n, axis=1)
            elif t.ndim != 2 or t.shape[1] != n:
                raise InputError(f"targets must be a list of classes or a (T, {n}) array; got shape {list(t.shape)}")
        elif target is None:
            if logits is None:
                raise InputError("target=None needs the model's prediction")
            t = logits.argmax(axis=1)[None]
        else:
            t = np.asarray(target)
            if t.ndim == 0:
                t = np.full((1, n), t)
            elif t.ndim == 1 and t.shape[0] == n:
                t = t[None]
            else:
                raise InputError(f"target must be an int or one class per sample ({n}); got shape {list(t.shape)}")
        if t.size == 0:
            raise InputError("no target class given")
        if not np.issubdtype(t.dtype, np.integer):
            if np.all(np.mod(t, 1) == 0):
                t = t.astype(np.int64)
            else:
                raise InputError(f"target classes must be integers; got {t.ravel()[:5].tolist()}")
        bad = t[(t < 0) | (t >= num_classes)]
        if bad.size:
            raise InputError(f"class index {int(bad[0])} is out of range: the model has {num_classes} classes "
                             f"(0..{num_classes - 1})")
        return t.astype(np.int64)

    def explain(
        self,
        x: Any,
        target: int | Sequence[int] | None = None,
        method: str = "lrp",
        *,
        targets: Sequence[int] | np.ndarray | None = None,
        relu: bool = False,
        **options: Any,
    ) -> Array:
        """Heatmaps of ``method`` for ``x``: a float32 array shaped like ``x``.

        ``target`` is one class per sample (an int for all, a sequence with one per sample,
        or None for each sample's predicted class). ``targets`` explains several classes of
        every sample in one forward and one batched backward pass and returns an extra
        leading axis: ``(len(targets),) + x.shape``.

        LRP-family methods (``lrp``, ``clrp``, ``sglrp``, ``sglrp_seq_a/b``,
        ``lrp_preset_a/b``, ``lrp_epsilon`` and the Zennit composites) start from the target
        logit ``y_t``, so where the rules conserve relevance the heatmap sums to ``y_t``
        (``lrp``, ``clrp`` and ``sglrp`` use ``max(y, 0)`` as the seed does; CLRP and SGLRP
        heatmaps sum to 0). Gradient methods are seeded with 1 (``gradient`` = ``∂y_t/∂x``).
        ``relu=True`` clips the heatmap at 0. Method options: ``low``/``high`` (the input box
        of Z^B; scalars or arrays broadcastable to ``x``; default: each sample's min and max),
        ``bias`` (keep the bias in the Alpha-Beta denominators as iNNvestigate 1.0.8 did: default
        False for ``lrp``/``clrp``/``sglrp``, True for the presets A/B), ``epsilon``, ``gamma``,
        ``layer`` (Grad-CAM tensor name), ``n_samples``, ``noise_scale``, ``seed``, ``steps``,
        ``baseline``, ``batch_size``.

        An LRP map whose total |relevance| exceeds its start relevance a thousandfold raises a
        :class:`RelevanceWarning` (a rule's denominators crossed zero; see ``bias``).
        """
        m = self._method(method)
        bad = sorted(set(options) - set(m.options))
        if bad:
            allowed = ", ".join(m.options) or "none"
            raise InputError(f"method {method!r} does not take option(s) {', '.join(bad)} (it takes: {allowed})")
        was_gpu_input = self.backend.is_gpu and not isinstance(x, np.ndarray) and hasattr(x, "__cuda_array_interface__")
        xs = self._check(x)
        n = xs.shape[0]
        if target is None and targets is None and m.family in ("lrp", "gradient"):
            tg = None  # the predicted class, taken from the explanation's own forward pass
        else:
            logits = self.predict(xs) if target is None and targets is None else None
            num_classes = logits.shape[1] if logits is not None else self._num_classes_for(xs)
            tg = self._targets(target, targets, n, num_classes, logits)
        per_sample = {}
        for key in ("low", "high", "baseline"):
            if options.get(key) is not None:
                try:
                    per_sample[key] = np.broadcast_to(np.asarray(options[key], dtype=np.float32), xs.shape)
                except ValueError:
                    raise InputError(f"{key} must be a scalar or broadcastable to the input shape "
                                     f"{list(xs.shape)}") from None
        parts = []
        for sl in self._batches(n):
            opts = {**options, **{k: v[sl] for k, v in per_sample.items()}}
            parts.append(self._explain_batch(m, xs[sl], None if tg is None else tg[:, sl], opts))
        xp = self.backend.xp
        heat = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=1)
        if relu:
            heat = xp.maximum(heat, 0)
        heat = heat.astype(xp.float32)
        if targets is None:
            heat = heat[0]
        if self.backend.is_gpu and not was_gpu_input:
            return self.backend.to_numpy(heat)
        return heat

    def _num_classes_for(self, xs: np.ndarray) -> int:
        shape = (self.fixed_batch or xs.shape[0],) + xs.shape[1:]
        return self._plan(shape).graph.num_classes

    # ------------------------------------------------------------------ per-family drivers
    def _explain_batch(self, m: Method, x: np.ndarray, tg: np.ndarray | None, opts: dict[str, Any]) -> Array:
        if m.family == "cam":
            assert tg is not None
            return self._gradcam(x, tg, opts.get("layer"), guided=m.name == "guided_gradcam")
        if m.family == "sampling":
            assert tg is not None
            return self._sampling(m, x, tg, opts)
        return self._propagate(m, x, tg, opts)

    def _propagate(self, m: Method, x: np.ndarray, tg: np.ndarray | None, opts: dict[str, Any]) -> Array:
        """One forward, one batched backward: the LRP and gradient families."""
        assert m.composite is not None
        plan = self._plan(x.shape)
        acts = plan.run_forward(x)
        xp = self.backend.xp
        logits = self.backend.to_numpy(plan.logits(acts))
        if tg is None:
            tg = logits.argmax(axis=1)[None]
        start, scale = _normalised(start_relevance(m.start, logits, tg))
        kwargs = {}
        if "epsilon" in opts:
            kwargs["eps"] = float(opts["epsilon"])
        if "gamma" in opts:
            kwargs["gamma"] = float(opts["gamma"])
        if "bias" in opts:
            if not isinstance(opts["bias"], bool | np.bool_ | int):
                raise InputError(f"option bias must be True or False, not {opts['bias']!r}")
            kwargs["bias"] = bool(opts["bias"])
        comp = m.composite(**kwargs)
        ctx = RuleContext(xp, cache=plan.cache)
        if comp.needs_bounds:
            ctx.bounds = plan.bounds(*self._bounds(x, opts.get("low"), opts.get("high")))
        rel = plan.backward(acts, xp.asarray(start), comp.rule_for, ctx)
        if m.family == "lrp":
            _check_blow_up(m.name, self.backend.to_numpy(xp.abs(rel).sum(axis=tuple(range(2, rel.ndim)))),
                           np.abs(start).sum(axis=2))
        rel *= xp.asarray(scale.reshape(scale.shape[:2] + (1,) * (rel.ndim - 2)))
        return self._post(m.post, rel, acts[plan.graph.input_name], tg.shape[0])

    def _post(self, post: str, rel: Array, x: Array, t_count: int) -> Array:
        xp = self.backend.xp
        if post == "identity":
            return rel
        if post == "times_input":
            return rel * x
        if post == "contrast":
            target, dual = rel[:t_count], rel[t_count:]
            axes = tuple(range(2, rel.ndim))
            st = target.sum(axis=axes, keepdims=True, dtype=xp.float64)
            sd = dual.sum(axis=axes, keepdims=True, dtype=xp.float64)
            safe = xp.where(sd == 0, 1.0, sd)
            ratio = xp.where(sd == 0, 0.0, st / safe).astype(xp.float32)
            return target - dual * ratio
        raise ValueError(post)

    def _bounds(self, x: np.ndarray, low: Any, high: Any) -> tuple[Array, Array]:
        """Z^B bounds shaped like ``x``; default: each sample's own min and max."""
        axes = tuple(range(1, x.ndim))
        lo = x.min(axis=axes, keepdims=True) if low is None else low
        hi = x.max(axis=axes, keepdims=True) if high is None else high
        try:
            lo = np.broadcast_to(np.asarray(lo, dtype=np.float32), x.shape)
            hi = np.broadcast_to(np.asarray(hi, dtype=np.float32), x.shape)
        except ValueError:
            raise InputError(f"low/high must be scalars or broadcastable to the input shape {list(x.shape)}") from None
        if np.any(lo > hi):
            raise InputError("low must not exceed high")
        b = self.backend
        return b.asarray(lo), b.asarray(hi)

    def _gradient(self, x: np.ndarray, tg: np.ndarray, composite: str = "gradient", stop_at: str | None = None,
                  acts: dict[str, Array] | None = None) -> tuple[Array, dict[str, Array]]:
        """The (modified) gradient of the targets at ``x`` (or at ``stop_at``) and the activations;
        ``acts`` reuses a forward pass already made on ``x``."""
        plan = self._plan(x.shape)
        if acts is None:
            acts = plan.run_forward(x)
        xp = self.backend.xp
        start = xp.asarray(start_relevance("onehot", self.backend.to_numpy(plan.logits(acts)), tg))
        comp = METHODS[composite].composite()  # type: ignore[misc]
        return plan.backward(acts, start, comp.rule_for, RuleContext(xp), stop_at=stop_at), acts

    def _sampling(self, m: Method, x: np.ndarray, tg: np.ndarray, opts: dict[str, Any]) -> Array:
        """SmoothGrad and Integrated Gradients: many gradient evaluations, batched."""
        xp = self.backend.xp
        n = x.shape[0]
        t_count = tg.shape[0]
        if m.name == "smoothgrad":
            count = int(opts.get("n_samples", 64))
            scale = float(opts.get("noise_scale", 1.0))
            seed = opts.get("seed", 0)
            if count < 1 or scale < 0:
                raise InputError("smoothgrad needs n_samples >= 1 and noise_scale >= 0")
        else:
            count = int(opts.get("steps", 64))
            if count < 1:
                raise InputError("integrated_gradients needs steps >= 1")
            base = np.broadcast_to(np.asarray(opts.get("baseline", 0.0), dtype=np.float32), x.shape)
        per_call = max(1, int(opts.get("batch_size", 16)))
        total = xp.zeros((t_count,) + x.shape, dtype=xp.float32)
        for i in range(n):
            xi = x[i : i + 1]
            done = 0
            if m.name == "smoothgrad":  # the same noise for every sample: results do not depend on batching
                rng = np.random.default_rng(seed)
            while done < count:
                k = min(per_call, count - done)
                if m.name == "smoothgrad":
                    pts = xi + rng.normal(0.0, scale, size=(k,) + xi.shape[1:]).astype(np.float32)
                else:
                    alphas = (np.arange(done + 1, done + k + 1, dtype=np.float32) / count).reshape(
                        (k,) + (1,) * (x.ndim - 1))
                    pts = base[i : i + 1] + alphas * (xi - base[i : i + 1])
                if self.fixed_batch:
                    g = xp.concatenate([self._gradient(pts[j : j + 1], tg[:, [i]])[0] for j in range(k)], axis=1)
                else:
                    g, _ = self._gradient(np.ascontiguousarray(pts, dtype=np.float32), np.repeat(tg[:, [i]], k, 1))
                total[:, i] += g.sum(axis=1)
                done += k
        mean = total / xp.float32(count)
        if m.name == "integrated_gradients":
            mean = mean * self.backend.asarray(x - base)
        return mean

    def _gradcam(self, x: np.ndarray, tg: np.ndarray, layer: str | None, guided: bool) -> Array:
        plan = self._plan(x.shape)
        name = self._cam_layer(plan, layer)
        grad, acts = self._gradient(x, tg, stop_at=name)
        a = acts[name]  # (N, C, *S)
        spatial = tuple(range(3, grad.ndim))
        w = grad.mean(axis=spatial, keepdims=True)  # (T, N, C, 1..)
        cam = (w * a[None]).sum(axis=2)  # (T, N, *S)
        heat = self._resize_to_input(plan, cam, x.shape)
        if guided:
            gb, _ = self._gradient(x, tg, composite="guided_backprop", acts=acts)
            heat = heat * gb
        return heat

    def _cam_layer(self, plan: Plan, layer: str | None) -> str:
        g = plan.graph
        if layer is None:
            # feature maps come out of convolutions, pools and elementwise layers (channels first, as
            # ONNX defines them); re-indexing layers may have moved the channel axis (NHWC exports)
            spatial = [
                t for lay in g.layers if lay.kind != "reindex" for t in lay.outputs
                if len(g.shapes.get(t, ())) >= 3 and int(np.prod(g.shapes[t][2:])) > 1
            ]
            if not spatial:
                raise InputError("Grad-CAM needs a spatial feature map, and this model has none")
            return spatial[-1]
        if layer in g.shapes and any(layer in lay.outputs for lay in g.layers):
            if len(g.shapes[layer]) < 3:
                raise InputError(f"Grad-CAM layer {layer!r} has shape {list(g.shapes[layer])}: not a feature map "
                                 "(N, C, spatial...)")
            return layer
        original = {o for n in self.prepared.model.graph.node for o in n.output}
        if layer in original:
            raise InputError(f"tensor {layer!r} was fused away when the graph was canonicalised (e.g. a Conv output "
                             "merged with its BatchNorm); name the tensor after the fused op instead")
        raise InputError(f"Grad-CAM layer {layer!r} is not a tensor of the model")

    def _resize_to_input(self, plan: Plan, cam: Array, x_shape: tuple[int, ...]) -> Array:
        """Resize ``(T, N, *S)`` maps to the input's spatial size and broadcast over its channel axis."""
        xp = self.backend.xp
        nhwc = self._input_is_channels_last(plan)
        if len(x_shape) < 3:
            raise InputError("Grad-CAM needs an input with spatial axes")
        spatial = x_shape[1:-1] if nhwc else x_shape[2:]
        if len(spatial) != cam.ndim - 2:
            raise InputError(f"the feature map has {cam.ndim - 2} spatial axes but the input has {len(spatial)}")
        out = cam
        for ax, size in enumerate(spatial):
            out = _resize_axis(xp, out, 2 + ax, size)
        out = out[..., None] if nhwc else out[:, :, None]
        return xp.broadcast_to(out, (cam.shape[0],) + tuple(x_shape)).astype(xp.float32)

    @staticmethod
    def _input_is_channels_last(plan: Plan) -> bool:
        """True when the model transposes its input from NHWC to NCHW first (Keras/tf2onnx exports)."""
        g = plan.graph
        for layer in g.layers:
            if g.input_name in layer.inputs:
                perm = getattr(layer, "perm", None)
                r = len(g.input_shape)
                return perm is not None and list(perm) == [0, r - 1] + list(range(1, r - 1))
        return False


class RelevanceWarning(RuntimeWarning):
    """An LRP map carries far more relevance than it started with: the rules are unstable on this model."""


def _check_blow_up(method: str, total: np.ndarray, start: np.ndarray) -> None:
    ratio = float(np.max(total / np.maximum(start, 1e-30)))
    if ratio > 1e3:
        hint = " (try bias=False)" if method in ("lrp_preset_a", "lrp_preset_b", "sglrp_seq_a", "sglrp_seq_b") or (
            method in ("lrp", "clrp", "sglrp")) else ""
        warnings.warn(
            f"{method}: the heatmap's total |relevance| is {ratio:.3g} times the start relevance; some rule's "
            f"denominators crossed zero on this model, so a few pixels dominate the map{hint}",
            RelevanceWarning,
            stacklevel=5,
        )


def _normalised(start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each start relevance (per pass and sample) to max |R| = 1; return it and the scales.

    Every rule is linear (positively homogeneous) in the relevance, so the result is rescaled
    afterwards; this keeps tiny starts (SGLRP of an unlikely class: p ~ 1e-40) out of the
    subnormal range, where float32 arithmetic is both inexact and very slow.
    """
    scale = np.abs(start).max(axis=2, keepdims=True).astype(np.float32)
    scale[scale == 0] = 1.0
    return (start / scale).astype(np.float32), scale


def _resize_axis(xp: Any, a: Array, axis: int, size: int) -> Array:
    """Linear interpolation of ``a`` along ``axis`` to ``size`` samples (half-pixel centres)."""
    n = a.shape[axis]
    if n == size:
        return a
    pos = (np.arange(size) + 0.5) * (n / size) - 0.5
    pos = np.clip(pos, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(np.float32)
    mat = np.zeros((size, n), dtype=np.float32)
    mat[np.arange(size), lo] += 1 - frac
    mat[np.arange(size), hi] += frac
    moved = xp.moveaxis(a, axis, -1)
    res = xp.matmul(moved, xp.asarray(mat.T))
    return xp.moveaxis(res, -1, axis)


def supported_ops() -> list[str]:
    """The ONNX op types the engine can explain (after constant folding of shape arithmetic).

    Shape-arithmetic ops (``Shape``, ``Gather`` of shapes, ``ConstantOfShape``, ``Cast`` …) are
    accepted wherever they fold into constants; a trailing ``Softmax``/``LogSoftmax`` is removed.
    """
    from .ops import registered_ops

    return registered_ops()


__all__ = ["Explainer", "RelevanceWarning", "supported_ops"]
