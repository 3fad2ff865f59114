"""Exceptions raised by onnxlrp.

Every error a user can cause (a bad file, an unsupported op, a wrong input shape, a class
index out of range) is an :class:`OnnxLrpError` with a message that names the problem, so
that the command line can print one line and exit non-zero instead of a traceback.
"""

from __future__ import annotations


class OnnxLrpError(Exception):
    """Base class of every error onnxlrp raises for a user's mistake or an unsupported model."""


class ModelLoadError(OnnxLrpError):
    """The model file is missing, unreadable, not ONNX, or points outside its folder."""


class UnsupportedModelError(OnnxLrpError):
    """The graph contains an op or a pattern the engine cannot explain faithfully."""


class InputError(OnnxLrpError):
    """The input array, a target class or a method option is not valid for this model."""


class DeviceError(OnnxLrpError):
    """The requested device is not usable (for example ``device='cuda'`` without a GPU)."""
