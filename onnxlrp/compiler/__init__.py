"""Explanations compiled to ONNX: the engine's backward pass recorded as a graph any runtime can run.

The rules are written once against an array module; :mod:`.tracer` is a third implementation of
that interface which records ONNX nodes, so the compiled graph runs the very code NumPy and CuPy run.
"""

from .build import HEATMAP, LOGITS, TARGET, compilable_methods, compile_explanation
from .runner import CompiledExplainer
from .tracer import MARKER, Traced, TraceError, Tracer
from .verify import run_compiled

__all__ = ["HEATMAP", "LOGITS", "MARKER", "TARGET", "CompiledExplainer", "TraceError", "Traced", "Tracer",
           "compilable_methods", "compile_explanation", "run_compiled"]
