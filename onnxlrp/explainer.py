"""The public entry point: :class:`Explainer`, a thin facade over the method families.

The families live in their own modules: :mod:`onnxlrp.propagation` (LRP rules and modified
gradients: one forward, one batched backward), :mod:`onnxlrp.sampling` (SmoothGrad, Integrated
Gradients) and :mod:`onnxlrp.cam` (Grad-CAM). The Explainer loads the model, validates what it
is given (:mod:`onnxlrp.options`), keeps one :class:`~onnxlrp.plan.Plan` per input shape, splits
large batches into chunks that fit its memory budget (:mod:`onnxlrp.memory`) and hands each
chunk to the method's family.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from . import cam, propagation, sampling
from .accel import OrtConvKernels
from .backend import Backend, get_backend
from .compiler.fast import FastPath
from .errors import InputError, ModelLoadError, UnsupportedModelError
from .graph import PreparedModel, load_model, prepare
from .inputs import (
    InputPlan,
    check_feeds,
    choose_input,
    feeds_key,
    front_model,
    needs_plan,
    rebind,
    run_time_feeds,
    runtime_model,
    specialise,
)
from .memory import bytes_per_sample, chunk_size, parse_budget
from .methods import METHODS, Method
from .options import check_options, check_targets
from .plan import Engine, Plan, plan_summary
from .propagation import RelevanceWarning
from .runtime import BatchOneWarning, Forward, batch_one_reason, check_input, make_session

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
        ``"auto"``: on the CPU, propagation and gradient methods run as one compiled ONNX graph
        (:mod:`onnxlrp.compiler`: the engine's own rules recorded as nodes; 0.9–2.9× the
        engine's speed on the benchmark models of benchmarks/RESULTS.md), other methods on the
        engine with onnxruntime's convolution kernels;
        ``"engine"``: the engine with onnxruntime's convolution kernels for every method;
        ``"array"``: the NumPy/CuPy kernels everywhere (the code the GPU runs). The environment
        variable ``ONNXLRP_COMPILED=0`` makes ``"auto"`` behave as ``"engine"``.
    memory_budget:
        Bytes (or a string such as ``"512MiB"``) one explanation call may hold at once; larger
        batches are split into chunks that fit, with the same results. Default: the
        ``ONNXLRP_MEMORY_BUDGET`` environment variable, else 1 GiB. An input of which one
        sample alone would need more memory than the system has available is refused.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | onnx.ModelProto,
        device: str = "auto",
        output: str | None = None,
        threads: int | None = None,
        kernels: str = "auto",
        memory_budget: int | float | str | None = None,
        input: str | None = None,
        _force_canonical: bool = False,
        _forward: Forward | None = None,
        _prepared: PreparedModel | None = None,
    ) -> None:
        if not isinstance(model, str | os.PathLike | bytes | bytearray | onnx.ModelProto):
            raise ModelLoadError(f"model must be a file path, the model's bytes or an onnx.ModelProto, "
                                 f"not {type(model).__name__}")
        if kernels not in ("auto", "engine", "array"):
            raise InputError(f"kernels must be 'auto', 'engine' or 'array', not {kernels!r}")
        if output is not None and not isinstance(output, str):
            raise InputError(f"output must be the name of a model output (a string), not {output!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
                                    or not 1 <= int(threads) <= 1024):
            raise InputError(f"threads must be a whole number from 1 to 1024 (or None), not {threads!r}")
        if input is not None and not isinstance(input, str):
            raise InputError(f"input must be the name of a model input (a string), not {input!r}")
        self.memory_budget = parse_budget(memory_budget)
        self.backend: Backend = get_backend(device)
        self._force_canonical = _force_canonical  # tests: always take onnxruntime's canonicalisation route
        self.threads = None if threads is None else int(threads)
        self._kernels = kernels
        self._output = output
        proto = load_model(model) if _prepared is None else None  # _prepared: a text model's specialisation
        self.input_plan: InputPlan | None = None
        if proto is not None and (needs_plan(proto) or input is not None):
            # several inputs or token ids: each call is explained by a single-input model specialised to the
            # call's fixed inputs (see onnxlrp.inputs)
            self.input_plan = choose_input(proto, input)
            self._full_model = proto
            self._front: Any = None
            self._inner: OrderedDict[tuple[Any, ...], Explainer] = OrderedDict()
            # one forward session per explained shape, the fixed inputs fed at run time (see _specialised)
            self._shared: OrderedDict[tuple[tuple[int, ...], ...], tuple[PreparedModel, Forward | None]] = OrderedDict()
            self.prepared = None  # type: ignore[assignment]
            self.fixed_batch = None
            self.batch_one = False
            return
        self.prepared = _prepared if _prepared is not None else prepare(proto, output)  # type: ignore[arg-type]
        self._plans: OrderedDict[tuple[int, ...], Plan] = OrderedDict()
        self._predict_session: Any = None
        self._forwards: dict[str, Any] = {}
        if _forward is not None:  # a session shared with other explainers of one text model (see _specialised)
            self._forwards["exported"] = _forward
        # on the CPU, convolutions of the backward run on onnxruntime's kernels (see onnxlrp.accel)
        self._accel = None if self.backend.is_gpu or kernels == "array" else OrtConvKernels(self.threads)
        # on the CPU, propagation and gradient methods run as one compiled graph (see onnxlrp.compiler.fast)
        self._fast = FastPath(self.prepared, self.threads) if (
            kernels == "auto" and not self.backend.is_gpu and os.environ.get("ONNXLRP_COMPILED", "1") != "0") else None
        dims = self.prepared.input_dims
        self.fixed_batch = dims[0] if dims else None
        self.batch_one = False  # a dynamic batch axis with batch 1 baked in: explained one sample at a time
        self._engine = Engine(self._plan, self.backend, self.fixed_batch, self._per_call)
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
        """Name of the explained model input (for token models: the embedding lookup's output)."""
        if self.input_plan is not None:
            return self.input_plan.explained
        return self.prepared.input_name

    @property
    def input_shape(self) -> list[int | None]:
        """Declared input shape (None for dynamic dimensions); for token models, that of the ids."""
        if self.input_plan is not None:
            vi = next(i for i in self._full_model.graph.input if i.name == self.input_plan.source)
            return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in vi.type.tensor_type.shape.dim]
        return list(self.prepared.input_dims)

    @property
    def output_name(self) -> str:
        """Name of the explained tensor (before a removed softmax)."""
        if self.input_plan is not None:
            return self._last_inner().output_name
        return self.prepared.output_name

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props``."""
        if self.input_plan is not None:
            return {p.key: p.value for p in self._full_model.metadata_props}
        return dict(self.prepared.metadata)

    @property
    def num_classes(self) -> int:
        """Number of class scores (known once a plan exists; builds one for a static input shape)."""
        if self.input_plan is not None:
            return self._last_inner().num_classes
        return next(iter(self._plans.values())).graph.num_classes if self._plans else self._plan_any().graph.num_classes

    def _last_inner(self) -> Explainer:
        if self.input_plan is None or not self._inner:
            raise InputError("this model takes several inputs: call predict() or explain() with a dict of inputs first")
        return next(reversed(self._inner.values()))

    def _plan_any(self) -> Plan:
        dims = self.prepared.input_dims
        if not dims or any(d is None for d in dims[1:]):
            raise InputError("the model's input shape is dynamic; call predict() or explain() with an input first")
        return self._plan((self.fixed_batch or 1,) + tuple(int(d) for d in dims[1:]))  # type: ignore[arg-type]

    def _plan(self, shape: tuple[int, ...]) -> Plan:
        shape = tuple(int(d) for d in shape)
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
        """The layer list (one dict per layer); with ``method``, the rule each layer gets.

        For a model with several inputs: the layers of the last call's specialised model.
        """
        if self.input_plan is not None:
            return self._last_inner().layers(method)
        if shape is not None:
            dims = self.prepared.input_dims
            try:
                shape = tuple(int(d) for d in shape)
            except (TypeError, ValueError):
                raise InputError(f"shape must be a sequence of whole numbers, not {shape!r}") from None
            if (dims and len(shape) != len(dims)) or min(shape, default=0) < 1 or any(
                    d is not None and d != s for d, s in zip(dims[1:], shape[1:], strict=False)):
                raise InputError(f"shape {list(shape)} does not fit model input {self.input_name!r} "
                                 f"{['?' if d is None else d for d in dims]}")
        plan = self._plan(tuple(shape)) if shape is not None else self._plan_any()
        rule_for = None
        if method is not None:
            m = self._method(method)
            if m.composite is not None:
                rule_for = m.composite().rule_for
        return plan_summary(plan, rule_for)

    # ------------------------------------------------------------------ memory
    def bytes_per_sample(self, sample_shape: Sequence[int], passes: int = 1, batch: int | None = None) -> int:
        """Estimated peak bytes of explaining one sample of ``sample_shape`` with ``passes`` start relevances.

        Counts the forward's intermediate tensors and a few relevance tensors per pass, from the
        shapes of the plan for ``batch`` samples (default 1; built if needed, nothing runs).
        """
        shape = (self.fixed_batch or batch or 1,) + tuple(int(d) for d in sample_shape)
        plan = self._plan(shape)
        sizes = [int(np.prod(plan.graph.shapes[t])) for t in plan.graph.tensors if t in plan.graph.shapes]
        return bytes_per_sample(sizes, shape[0], passes)

    def _per_call(self, shape: tuple[int, ...], passes: int) -> int:
        """Samples of ``shape[1:]`` that one call may hold within the memory budget (at least 1)."""
        per = self.bytes_per_sample(shape[1:], passes, batch=shape[0])
        what = f"explaining an input of shape {list(shape[1:])} ({passes} pass(es))"
        return chunk_size(per, self.memory_budget, max(shape[0], 1), what)

    def _chunks(self, n: int, per_call: int) -> list[slice]:
        """Slices of at most ``per_call`` samples (whole multiples of a fixed batch size)."""
        if self.fixed_batch:
            if n % self.fixed_batch:
                raise InputError(f"the model has a fixed batch size of {self.fixed_batch}; got {n} samples")
            step = self.fixed_batch
        else:
            step = max(1, min(per_call, n))
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def _fall_back_to_batch_one(self, shape: tuple[int, ...]) -> bool:
        """After a failure at batch > 1: if the model runs only at batch 1, explain one sample at a time from now on.

        Warns once (:class:`~onnxlrp.runtime.BatchOneWarning`); False when the failure has another cause.
        """
        if self.fixed_batch:
            return False
        reason = batch_one_reason(self._plan, tuple(shape[1:]))
        if reason is None:
            return False
        self.fixed_batch, self.batch_one = 1, True
        self._engine = Engine(self._plan, self.backend, 1, self._per_call)
        warnings.warn(f"the model declares a dynamic batch axis but runs only at batch 1 (at batch 2: {reason}); "
                      "it is explained one sample at a time", BatchOneWarning, stacklevel=3)
        return True

    # ------------------------------------------------------------------ prediction
    def _check(self, x: Any) -> np.ndarray:
        """``x`` validated against the model input (rank, fixed dims, finite) as contiguous float32 NumPy."""
        if isinstance(x, Mapping | str | bytes) or x is None:
            raise InputError(f"the input must be an array of numbers shaped like model input "
                             f"{self.prepared.input_name!r}, not {type(x).__name__}")
        try:
            if np.iscomplexobj(x):
                raise InputError("the input is complex; the model takes real float32 numbers")
            with np.errstate(over="ignore", invalid="ignore"):
                xs = check_input(x, self.prepared.input_dims, self.prepared.input_name)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise InputError(f"the input cannot be read as a float32 array ({exc.__class__.__name__}: {exc})") from None
        if 0 in xs.shape:
            raise InputError(f"the input has shape {list(xs.shape)}: every axis needs at least one element")
        return xs

    # ------------------------------------------------------------------ several inputs, token ids
    def _specialised(self, x: Any) -> tuple[Explainer, np.ndarray]:
        """For a multi-input model: the single-input explainer of this call's fixed inputs, and its input."""
        plan = self.input_plan
        assert plan is not None
        if not isinstance(x, Mapping):
            raise InputError(f"this model takes the inputs {', '.join(plan.dtypes)}: pass a dict of arrays by name "
                             f"(explained: {plan.explained!r}; {plan.reason})")
        feeds = check_feeds(plan, x)
        if plan.kind == "embedding":
            if self._front is None:
                self._front = make_session(front_model(self._full_model, plan), self.backend, self.threads)
            need = [i.name for i in self._front.get_inputs()]
            try:
                emb = self._front.run([plan.explained], {n: feeds[n] for n in need})[0]
            except Exception as exc:  # noqa: BLE001 - e.g. a token id beyond the embedding table
                msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
                raise InputError(f"the embedding lookup {plan.explained!r} failed on these token ids: {msg}") from None
            emb = np.ascontiguousarray(emb, dtype=np.float32)
        else:
            emb = np.ascontiguousarray(feeds[plan.source], dtype=np.float32)
        names = ([plan.source] if plan.kind == "embedding" else []) + plan.fixed
        key = feeds_key(feeds, names) + (emb.shape,)
        inner = self._inner.get(key)
        if inner is None:
            # the layers are built for these fixed inputs (constants of the prepared model); the forward pass runs
            # on one session per explained shape that takes them as run-time inputs
            # (the engine, not the compiled fast path: that would compile a graph and a session per mask set)
            kw = {"device": self.device, "output": self._output, "threads": self.threads,
                  "kernels": "engine" if self._kernels == "auto" else self._kernels,
                  "memory_budget": self.memory_budget}
            shapes = (emb.shape,) + tuple(feeds[n].shape for n in plan.fixed)
            shared = self._shared.get(shapes)
            if shared is None:
                inner = Explainer(specialise(self._full_model, plan, feeds, emb.shape), **kw)  # type: ignore[arg-type]
                self._share_forward(inner, shapes)
            else:
                template, forward = shared
                prepared = rebind(template, plan, feeds)
                inner = Explainer(prepared.model, **kw, _prepared=prepared,  # type: ignore[arg-type]
                                  _forward=None if forward is None else forward.bind(run_time_feeds(plan, feeds)))
                self._shared.move_to_end(shapes)
            self._inner[key] = inner
            while len(self._inner) > 2:
                self._inner.popitem(last=False)
        else:
            self._inner.move_to_end(key)
        return inner, emb

    def _share_forward(self, inner: Explainer, shapes: tuple[tuple[int, ...], ...]) -> None:
        """Keep, for these ``shapes`` (explained tensor, fixed inputs), ``inner``'s prepared model and a forward
        session of the whole model.

        Later calls with other fixed inputs rebind the prepared model's constants to theirs
        (:func:`~onnxlrp.inputs.rebind`) and run on the session, which takes the fixed inputs at run
        time and exposes the tensors ``inner``'s layers read (none when ``inner`` took onnxruntime's
        canonicalisation: its tensors are the canonical graph's).
        """
        assert self.input_plan is not None
        if "exported" not in inner._forwards:  # plans make their forward session on first use: make it now
            for plan in list(inner._plans.values())[:1]:
                try:
                    plan.forward  # noqa: B018 - the property makes and shares the session
                except UnsupportedModelError:
                    pass
        own = inner._forwards.get("exported")
        forward = None
        if own is not None:
            try:
                forward = Forward(runtime_model(self._full_model, self.input_plan), self.input_plan.explained,
                                  own.output_name, own.names, self.backend, self.threads)
            except UnsupportedModelError:
                forward = None
        self._shared[shapes] = (inner.prepared, forward)
        while len(self._shared) > 2:
            self._shared.popitem(last=False)

    def predict(self, x: Any) -> np.ndarray:
        """The class scores the explanations start from (pre-softmax logits), ``(N, classes)`` float32.

        ``x`` is an array, or for a model with several inputs a dict of arrays by input name.
        Raises :class:`~onnxlrp.errors.InputError` when a score is NaN or infinite (the forward
        overflowed on this input).
        """
        if self.input_plan is not None:
            inner, emb = self._specialised(x)
            return inner.predict(emb)
        xs = self._check(x)
        if self._predict_session is None:
            shared = self._forwards.get("exported")  # the explanation's forward session serves any batch size
            self._predict_session = shared.session if shared is not None else make_session(
                self.prepared.model, self.backend, self.threads, self.prepared.weights)
        try:
            logits = self._predict_chunks(xs)
        except (InputError, UnsupportedModelError):
            if xs.shape[0] == 1 or not self._fall_back_to_batch_one(xs.shape):
                raise
            logits = self._predict_chunks(xs)
        propagation.check_logits(logits)
        return logits

    def _predict_chunks(self, xs: np.ndarray) -> np.ndarray:
        """The scores of ``xs``, run in chunks that fit the memory budget."""
        try:
            per_call = self._per_call(xs.shape, 0)
        except UnsupportedModelError:  # a model that cannot be explained can still be run
            per_call = xs.shape[0]
        outs = []
        for sl in self._chunks(xs.shape[0], per_call):
            try:
                y = self._predict_session.run([self.prepared.output_name], {self.prepared.input_name: xs[sl]})[0]
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"onnxruntime could not run the model on input {list(xs[sl].shape)}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}") from None
            if y.shape[0] != xs[sl].shape[0]:
                raise InputError(f"the model returned {y.shape[0]} score row(s) for {xs[sl].shape[0]} samples")
            outs.append(np.asarray(y, dtype=np.float32).reshape(y.shape[0], -1))
        logits = np.concatenate(outs)
        propagation.check_logits(logits)
        return logits

    # ------------------------------------------------------------------ explanation
    def _method(self, name: str) -> Method:
        if not isinstance(name, str) or name not in METHODS:
            raise InputError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
        return METHODS[name]

    def explain(
        self,
        x: Any,
        target: int | Sequence[int] | None = None,
        method: str = "lrp",
        *,
        targets: Sequence[int] | np.ndarray | None = None,
        relu: bool = False,
        per_token: bool = True,
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
        False for ``lrp``/``clrp``/``sglrp``, True for the presets A/B), ``epsilon`` (> 0),
        ``gamma`` (≥ 0), ``layer`` (Grad-CAM tensor name), ``n_samples``, ``noise_scale``,
        ``seed``, ``steps``, ``baseline``, ``batch_size``. Every option is checked (type, range,
        finiteness) and a bad one raises :class:`~onnxlrp.errors.InputError`.

        For a model with several inputs ``x`` is a dict of arrays by input name: the explained
        tensor is its float input or, for token ids, the output of their embedding lookup
        (``input_plan`` says which and why); the other inputs are held fixed (a missing ``*mask*``
        input is all ones, another missing one all zeros). For token ids the map is per token,
        ``(N, L)``, summed over the embedding axis; ``per_token=False`` returns the embedded tokens'
        relevance ``(N, L, D)``.

        A batch larger than the memory budget allows is explained in chunks (same result). The
        result is always finite: where the arithmetic overflows float32, an
        :class:`~onnxlrp.errors.InputError` says so. An LRP map whose total |relevance| exceeds
        its start relevance a thousandfold raises a :class:`RelevanceWarning` (a rule's
        denominators crossed zero; see ``bias``).
        """
        if self.input_plan is not None:
            inner, emb = self._specialised(x)
            heat = inner.explain(emb, target, method, targets=targets, relu=relu, **options)
            if self.input_plan.kind == "embedding" and per_token:
                heat = heat.sum(axis=-1)
            return heat
        m = self._method(method)
        if not isinstance(relu, bool | np.bool_):
            raise InputError(f"relu must be True or False, not {relu!r}")
        was_gpu_input = self.backend.is_gpu and not isinstance(x, np.ndarray) and hasattr(x, "__cuda_array_interface__")
        xs = self._check(x)
        opts = check_options(m.name, m.options, options, xs.shape)
        n = xs.shape[0]
        if target is None and targets is None and m.family in ("lrp", "gradient"):
            tg = None  # the predicted class, taken from the explanation's own forward pass
            t_count = 1
        else:
            logits = self.predict(xs) if target is None and targets is None else None
            num_classes = logits.shape[1] if logits is not None else self._num_classes_for(xs)
            tg = check_targets(target, targets, n, num_classes, logits)
            t_count = tg.shape[0]
        try:
            parts = self._explain_chunks(m, xs, tg, t_count, opts)
        except (InputError, UnsupportedModelError):
            if (n == 1 and m.family != "sampling") or not self._fall_back_to_batch_one(xs.shape):
                raise
            parts = self._explain_chunks(m, xs, tg, t_count, opts)
        xp = self.backend.xp
        heat = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=1)
        if relu:
            heat = xp.maximum(heat, 0)
        heat = heat.astype(xp.float32)
        if not bool(xp.all(xp.isfinite(heat))):
            raise InputError(f"{m.name}: the heatmap overflowed float32 on this input (largest |x| = "
                             f"{float(np.abs(xs).max()):.3g}); a map with NaN or infinite values is never returned")
        if targets is None:
            heat = heat[0]
        if self.backend.is_gpu and not was_gpu_input:
            return self.backend.to_numpy(heat)
        return heat

    def _explain_chunks(self, m: Method, xs: np.ndarray, tg: np.ndarray | None, t_count: int,
                        opts: dict[str, Any]) -> list[Array]:
        """The heatmaps of ``xs`` in chunks that fit the memory budget (whole multiples of a fixed batch)."""
        n = xs.shape[0]
        if m.family == "sampling":
            per_call = n  # sampling bounds its own calls (one sample at a time, batch_size points)
        else:
            per_call = self._per_call(xs.shape, propagation.passes(m, t_count) + (1 if m.family == "cam" else 0))
        parts = []
        for sl in self._chunks(n, per_call):
            chunk_opts = {k: (v[sl] if k in ("low", "high", "baseline") else v) for k, v in opts.items()}
            parts.append(self._run(m, xs[sl], None if tg is None else tg[:, sl], chunk_opts))
        return parts

    def _num_classes_for(self, xs: np.ndarray) -> int:
        shape = (self.fixed_batch or xs.shape[0],) + xs.shape[1:]
        try:
            return self._plan(shape).graph.num_classes
        except UnsupportedModelError:
            if shape[0] == 1:
                raise
            return self._plan((1,) + xs.shape[1:]).graph.num_classes  # a model that runs only at batch 1

    def _run(self, m: Method, x: np.ndarray, tg: np.ndarray | None, opts: dict[str, Any]) -> Array:
        """One chunk through the method's family."""
        if m.family == "cam":
            assert tg is not None
            original = {o for node in self.prepared.model.graph.node for o in node.output}
            return cam.gradcam(self._engine, original, x, tg, opts.get("layer"), guided=m.name == "guided_gradcam")
        if m.family == "sampling":
            assert tg is not None
            return sampling.sample(self._engine, m, x, tg, opts)
        if self._fast is not None:
            heat = self._fast.propagate(m, x, tg, opts)
            if heat is not None:
                return heat
        return propagation.propagate(self._engine, m, x, tg, opts)


def supported_ops() -> list[str]:
    """The ONNX op types the engine can explain (after constant folding of shape arithmetic).

    Shape-arithmetic ops (``Shape``, ``Gather`` of shapes, ``ConstantOfShape``, ``Cast`` …) are
    accepted wherever they fold into constants; a trailing ``Softmax``/``LogSoftmax`` is removed.
    """
    from .ops import registered_ops

    return registered_ops()


__all__ = ["Explainer", "RelevanceWarning", "supported_ops"]
