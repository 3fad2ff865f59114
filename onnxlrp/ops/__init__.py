"""Op registry: one module per op family; importing this package registers them all."""

from . import attention, elementwise, fused, linear, pooling, reindex  # noqa: F401  (import registers the builders)
from .base import Layer, NodeContext, Unsupported, lookup, register, registered_ops

__all__ = ["Layer", "NodeContext", "Unsupported", "lookup", "register", "registered_ops"]
