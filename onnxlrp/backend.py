"""The array module: NumPy on the CPU, CuPy on a CUDA GPU.

Everything else in onnxlrp receives an :class:`Backend` and writes ``xp.`` for array code,
so the CPU and GPU paths are the same code. Only this module imports CuPy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DeviceError


@functools.lru_cache(maxsize=1)
def _cupy_or_reason() -> tuple[Any, str]:
    """Import CuPy and check that a GPU is usable; return ``(cupy, "")`` or ``(None, why)``."""
    try:
        import cupy  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001 - any import failure means "no GPU path"
        return None, f"CuPy is not installed ({exc.__class__.__name__}); install onnxlrp[gpu]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001
        return None, f"CuPy found no usable CUDA device ({exc})"
    if count < 1:
        return None, "CuPy found no CUDA device"
    return cupy, ""


def cuda_available() -> bool:
    """Return True when CuPy is installed and sees at least one CUDA device."""
    return _cupy_or_reason()[0] is not None


@dataclass(frozen=True)
class Backend:
    """An array module and its device name (``"cpu"`` or ``"cuda"``)."""

    xp: Any
    device: str

    @property
    def is_gpu(self) -> bool:
        """True for the CuPy backend."""
        return self.device == "cuda"

    def asarray(self, a: Any, dtype: Any = np.float32) -> Any:
        """Move ``a`` (NumPy or CuPy) to this backend as a contiguous array of ``dtype``."""
        if self.is_gpu:
            return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))
        if hasattr(a, "get") and not isinstance(a, np.ndarray):
            a = a.get()
        return np.ascontiguousarray(np.asarray(a, dtype=dtype))

    def to_numpy(self, a: Any) -> np.ndarray:
        """Return ``a`` as a NumPy array (copying from the GPU when needed)."""
        if self.is_gpu and not isinstance(a, np.ndarray):
            return self.xp.asnumpy(a)
        return np.asarray(a)


def may_be_true(xp: Any, mask: Any) -> bool:
    """Whether boolean ``mask`` is true anywhere.

    The one question the rules ask of the data. An array module that cannot look at values (the
    ONNX tracer of :mod:`onnxlrp.compiler`) answers it from what it knows statically and otherwise
    says True ("maybe") — the branch that is exact for every input.
    """
    static = getattr(xp, "static_any", None)
    if static is not None:
        return bool(static(mask))
    return bool(xp.any(mask))


def get_backend(device: str = "auto") -> Backend:
    """Pick the array module for ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    ``"auto"`` takes the GPU when CuPy sees one and quietly falls back to NumPy otherwise;
    ``"cuda"`` without a usable GPU raises :class:`DeviceError` saying why.
    """
    if device is None:
        device = "auto"
    if not isinstance(device, str):
        raise DeviceError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    device = device.lower()
    if device == "cpu":
        return Backend(np, "cpu")
    if device in ("cuda", "gpu"):
        cupy, why = _cupy_or_reason()
        if cupy is None:
            raise DeviceError(f"device='cuda' was requested but no GPU is usable: {why}")
        return Backend(cupy, "cuda")
    if device == "auto":
        cupy, _ = _cupy_or_reason()
        return Backend(cupy, "cuda") if cupy is not None else Backend(np, "cpu")
    raise DeviceError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'")
