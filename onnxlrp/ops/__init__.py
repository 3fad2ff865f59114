"""Op registry: one module per op family; importing this package registers them all."""

from . import (  # noqa: F401  (import registers the builders)
    attention,
    conv_transpose,
    elementwise,
    fused,
    linear,
    normalization,
    pooling,
    reindex,
    resize,
)
from .base import Layer, NodeContext, Unsupported, lookup, register, registered_ops

__all__ = ["Layer", "NodeContext", "Unsupported", "lookup", "register", "registered_ops"]
