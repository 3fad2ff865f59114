"""A plan: the layer graph for one input shape, its forward session and the backward pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .backend import Backend
from .errors import UnsupportedModelError
from .graph import Graph, PreparedModel, build_graph, canonicalize
from .ops.base import Array, Layer, Unsupported
from .ops.linear import ConvLayer
from .rules import Rule, RuleContext
from .runtime import Forward


class Plan:
    """Everything that depends on the input shape: canonical graph, layers, forward session."""

    def __init__(self, prepared: PreparedModel, shape: tuple[int, ...], backend: Backend,
                 threads: int | None = None, shared: dict[str, Forward] | None = None,
                 accel: Any = None, force_canonical: bool = False, forward: bool = True) -> None:
        """Build the layers for input ``shape``.

        The graph is first parsed as exported (with onnxlrp's own constant folding); only if
        that meets something it cannot handle is it canonicalised by onnxruntime's basic
        optimisations and parsed again. ``shared`` caches the forward session of the first
        route, which serves every input shape. ``forward=False`` builds the layers only (no session: the
        compiler records the forward as part of its own graph).
        """
        self.backend = backend
        try:
            if force_canonical:
                raise UnsupportedModelError("canonicalisation requested")
            self.graph: Graph = build_graph(prepared.model, prepared.input_name, prepared.output_name, shape,
                                            prepared.weights, prepared.side)
            key = "exported"
            model = prepared.model
        except UnsupportedModelError:
            model = canonicalize(prepared, shape)
            self.graph = build_graph(model, prepared.input_name, prepared.output_name, shape, prepared.weights,
                                     prepared.side)
            key = ""
        self.model: onnx.ModelProto = model  # the graph the forward runs (as exported, or canonicalised)
        self.cache: dict[Any, Any] = {}  # x-independent rule denominators (W², Flat), per layer and shape
        self._forward: Forward | None = None
        self._make_forward = None
        if forward:
            def make() -> Forward:
                fwd = shared.get(key) if (shared is not None and key) else None
                if fwd is None or not set(self.graph.tensors) <= set(fwd.names) | {prepared.input_name}:
                    fwd = Forward(model, prepared.input_name, prepared.output_name, self.graph.tensors, backend,
                                  threads, prepared.weights)
                    if shared is not None and key:
                        shared[key] = fwd
                return fwd

            self._make_forward = make  # the session is made on first use (a compiled graph may serve every call)
        if accel is not None and not backend.is_gpu:
            for layer in self.graph.linear_layers:
                if isinstance(layer, ConvLayer):
                    layer.accel = accel

    @property
    def forward(self) -> Forward:
        """The onnxruntime session exposing every tensor the backward needs (made on first use)."""
        if self._forward is None:
            if self._make_forward is None:
                raise UnsupportedModelError("this plan was built without a forward session")
            self._forward = self._make_forward()
        return self._forward

    def run_forward(self, x: np.ndarray) -> dict[str, Array]:
        """Forward pass: every tensor the backward needs, on the backend's device."""
        return self.forward.run(x)

    def logits(self, acts: dict[str, Array]) -> Array:
        """The explained output as ``(N, classes)``."""
        y = acts[self.graph.output_name]
        return y.reshape(y.shape[0], -1)

    def bounds(self, low: Array, high: Array, xp: Any = None) -> dict[str, tuple[Array, Array]]:
        """Map input bounds (shaped like the input) through the re-indexing/affine layers before the first
        linear layers, so that Z^B sees the bounds of its own input (``xp``: the array module, default the
        plan's backend)."""
        xp = xp or self.backend.xp
        res: dict[str, tuple[Array, Array]] = {self.graph.input_name: (low, high)}
        for layer in self.graph.layers:
            if layer.kind not in ("reindex", "affine") or len(layer.inputs) != 1 or layer.inputs[0] not in res:
                continue
            lo, hi = res[layer.inputs[0]]
            mapper = getattr(layer, "map_bounds", None)
            if mapper is not None:  # a map with mixed-sign weights (cubic Resize): the exact image of the box
                res[layer.outputs[0]] = mapper(xp, lo, hi)
                continue
            try:
                a, b = layer.forward(xp, [lo])[0], layer.forward(xp, [hi])[0]
            except Unsupported:
                continue
            res[layer.outputs[0]] = (xp.minimum(a, b), xp.maximum(a, b))
        return res

    def backward(
        self,
        acts: dict[str, Array],
        start: Array,
        rule_for: Callable[[Layer], Rule],
        ctx: RuleContext,
        stop_at: str | None = None,
    ) -> Array:
        """Propagate ``start`` (``(K, N, classes)``) from the output back to the input (or to ``stop_at``).

        Layers run in reverse topological order; relevance arriving at a tensor from several
        consumers is summed. Returns ``(K,) + shape`` of the input (or of ``stop_at``).
        """
        g = self.graph
        xp = self.backend.xp
        k = start.shape[0]
        if ctx.vanishing is None:
            ctx.vanishing = {z: acts.get(a) if a else None for z, a in self.vanishing_below_zero(rule_for).items()}
        rel: dict[str, Array] = {g.output_name: start.reshape((k,) + tuple(g.output_shape))}
        target = stop_at or g.input_name
        for layer in reversed(g.layers):
            if target in layer.outputs:
                break
            gouts = [rel.pop(o, None) for o in layer.outputs]
            if all(r is None for r in gouts):
                continue
            ins = [acts[i] for i in layer.inputs]
            outs = [acts[o] for o in layer.outputs]
            rins = rule_for(layer)(layer, ctx, ins, outs, gouts)
            for name, r in zip(layer.inputs, rins, strict=True):
                if r is None:
                    continue
                rel[name] = rel[name] + r if name in rel else r
        out = rel.get(target)
        if out is None:
            shape = g.shapes[target]
            return xp.zeros((k,) + tuple(shape), dtype=xp.float32)
        return out

    def vanishing_below_zero(self, rule_for: Callable[[Layer], Any]) -> dict[str, str | None]:
        """Outputs of linear layers whose relevance is exactly 0 wherever the output is negative, under these rules;
        each mapped to the output of the plain ReLU that reads it (None where none does).

        That holds for ``z`` when its only readers are ReLU-like activations (ReLU, ``Clip`` from 0: the
        activation is 0 where ``z < 0``) that pass relevance through, and the relevance of the activation
        ``a`` is 0 wherever ``a = 0``: every reader of ``a`` takes relevance in proportion to its input
        (``R_in = a ⊙ c``: ε, Z⁺, Alpha-Beta, Gamma, the Z rule; :attr:`Rule.proportional`), or is a pure
        re-indexing or max-pool (by its gradient) or another ReLU-like activation whose own output has that
        property. Then the ε rule's denominator may ignore the sign of ``z`` (see ``LinearRule._divide``).
        """
        from .ops.elementwise import ActivationLayer
        from .ops.pooling import MaxPoolLayer
        from .ops.reindex import (
            ConcatLayer,
            ExpandLayer,
            ReshapeLayer,
            SliceLayer,
            SplitLayer,
            TileLayer,
            TransposeLayer,
        )
        from .rules.base import Gradient, Pass

        g = self.graph
        consumers = g.consumers()
        rules: dict[int, Any] = {}

        def rule_of(layer: Layer) -> Any:
            if id(layer) not in rules:
                r = rule_for(layer)
                rules[id(layer)] = getattr(r, "rule", r)  # the compiler wraps rules (the wrapper names the rule)
            return rules[id(layer)]

        def relu(layer: Layer) -> str:  # "plain": max(z, 0); "capped": a Clip from 0 with an upper bound; ""
            if type(layer) is not ActivationLayer:
                return ""
            lo, hi = getattr(layer, "bounds", (None, None))
            if layer.op_type == "Relu" or (layer.op_type == "Clip" and lo == 0 and hi is None):
                return "plain"
            return "capped" if layer.op_type == "Clip" and lo == 0 else ""

        copies = (ReshapeLayer, TransposeLayer, ConcatLayer, SplitLayer, SliceLayer, ExpandLayer, TileLayer,
                  MaxPoolLayer)
        memo: dict[str, bool] = {}

        def zero_at_zero(t: str) -> bool:  # the relevance of t is 0 wherever t is 0
            if t in memo:
                return memo[t]
            memo[t] = False  # (a cycle cannot occur in a DAG; this only guards the recursion)
            ok = t != g.output_name
            for c in consumers.get(t, []) if ok else []:
                r = rule_of(c)
                if getattr(r, "proportional", False):
                    continue
                if isinstance(c, copies) and isinstance(r, (Gradient, Pass)) and all(map(zero_at_zero, c.outputs)):
                    continue
                if relu(c) and isinstance(r, Pass) and zero_at_zero(c.outputs[0]):
                    continue
                ok = False
                break
            memo[t] = ok
            return ok

        out: dict[str, str | None] = {}
        for layer in g.linear_layers:
            z = layer.outputs[0]
            readers = consumers.get(z, [])
            if readers and z != g.output_name and all(
                    relu(c) and isinstance(rule_of(c), Pass) and zero_at_zero(c.outputs[0]) for c in readers):
                out[z] = next((c.outputs[0] for c in readers if relu(c) == "plain"), None)
        return out


def plan_summary(plan: Plan, rule_for: Callable[[Layer], Any] | None = None) -> list[dict[str, str]]:
    """One row per layer: name, op, description, output shape and (optionally) the rule it gets."""
    rows = []
    for layer in plan.graph.layers:
        row = {
            "name": layer.name,
            "op": layer.op_type,
            "kind": layer.kind,
            "layer": layer.describe(),
            "output": "x".join(str(d) for d in layer.output_shapes[0]) if layer.output_shapes else "",
        }
        if rule_for is not None:
            row["rule"] = str(rule_for(layer))
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Engine:
    """What the method families need from an :class:`~onnxlrp.Explainer`: plans and the backend.

    ``plan_for(shape)`` returns the (cached) plan of an input shape; ``fixed_batch`` is the
    model's fixed batch size or None; ``per_call(shape, passes)`` is how many samples of
    ``shape[1:]`` one backward call may hold within the memory budget.
    """

    plan_for: Callable[[tuple[int, ...]], Plan]
    backend: Backend
    fixed_batch: int | None
    per_call: Callable[[tuple[int, ...], int], int]
