"""onnxlrp: Layer-wise Relevance Propagation and SGLRP for any image classifier exported to ONNX.

>>> from onnxlrp import Explainer
>>> ex = Explainer("model.onnx")                       # doctest: +SKIP
>>> heat = ex.explain(x, target=340, method="sglrp")   # doctest: +SKIP
"""

from .backend import cuda_available
from .errors import DeviceError, InputError, ModelLoadError, OnnxLrpError, UnsupportedModelError
from .explainer import Explainer, RelevanceWarning, supported_ops
from .methods import METHODS, list_methods

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "DeviceError",
    "Explainer",
    "InputError",
    "ModelLoadError",
    "OnnxLrpError",
    "RelevanceWarning",
    "UnsupportedModelError",
    "__version__",
    "cuda_available",
    "list_methods",
    "supported_ops",
]
