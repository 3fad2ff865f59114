"""Validation of what a caller passes to :meth:`onnxlrp.Explainer.explain`: targets and method options.

Every value is checked for type, range and finiteness before anything runs, and a bad one
raises :class:`~onnxlrp.errors.InputError` naming the option and the value, so that a
careless call never reaches the arithmetic (where ``epsilon="abc"`` would be a ``ValueError``
and ``low=nan`` a silently NaN heatmap).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError

MAX_COUNT = 1_000_000  # n_samples / steps: beyond this a call would run for days

_INT64_MAX = np.iinfo(np.int64).max


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; integral floats are accepted, bools and strings are not."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InputError(f"option {name} must be an integer, not {_show(value)}")
    if isinstance(value, numbers.Integral):
        v = int(value)
    else:
        f = float(value)
        if not math.isfinite(f) or f != int(f):
            raise InputError(f"option {name} must be an integer, not {_show(value)}")
        v = int(f)
    if v < low or (high is not None and v > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise InputError(f"option {name} must be {bound}, not {v}")
    return v


def as_float(name: str, value: Any, low: float, strict: bool = False) -> float:
    """``value`` as a finite float ``>= low`` (``> low`` when ``strict``)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InputError(f"option {name} must be a number, not {_show(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"option {name} must be a finite number, not {v}")
    if v < low or (strict and v == low):
        raise InputError(f"option {name} must be {'>' if strict else '>='} {low:g}, not {v:g}")
    return v


def as_bool(name: str, value: Any) -> bool:
    """``value`` as a bool: True/False (or 1/0)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise InputError(f"option {name} must be True or False, not {_show(value)}")


def as_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` (a scalar or an array broadcastable to ``shape``) as a finite float32 array of ``shape``."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range: caught as inf below
            arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"option {name} must be a number or an array of numbers, not {_show(value)}") from None
    try:
        arr = np.broadcast_to(arr, shape)
    except ValueError:
        raise InputError(f"option {name} has shape {list(arr.shape)}: it must be a scalar or broadcastable to the "
                         f"input shape {list(shape)}") from None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"option {name} contains NaN or infinite values (or values beyond float32's range)")
    return arr


def check_options(method: str, allowed: tuple[str, ...], options: Mapping[str, Any],
                  x_shape: tuple[int, ...]) -> dict[str, Any]:
    """The options of ``method`` validated and normalised; array options broadcast to ``x_shape``.

    Options given as ``None`` mean "the default" and are dropped.
    """
    bad = sorted(set(options) - set(allowed))
    if bad:
        takes = ", ".join(allowed) or "none"
        raise InputError(f"method {method!r} does not take option(s) {', '.join(bad)} (it takes: {takes})")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "epsilon":
            out[key] = as_float(key, value, 0.0, strict=True)
        elif key in ("gamma", "noise_scale"):
            out[key] = as_float(key, value, 0.0)
        elif key in ("n_samples", "steps"):
            out[key] = as_int(key, value, 1, MAX_COUNT)
        elif key == "batch_size":
            out[key] = as_int(key, value, 1)
        elif key == "seed":
            out[key] = as_int(key, value, 0, _INT64_MAX)
        elif key == "bias":
            out[key] = as_bool(key, value)
        elif key in ("low", "high", "baseline"):
            out[key] = as_array(key, value, x_shape)
        elif key == "layer":
            if not isinstance(value, str) or not value:
                raise InputError(f"option layer must be a tensor name (a non-empty string), not {_show(value)}")
            out[key] = value
        else:  # an option a method declares but this table does not know: a bug, not the user's
            raise AssertionError(f"no validation for option {key!r}")
    if "low" in out and "high" in out and np.any(out["low"] > out["high"]):
        raise InputError("option low must not exceed high")
    return out


def _class_array(name: str, value: Any) -> np.ndarray:
    """``value`` as an int64 array of class indices (validated types; ranges are checked later)."""
    names = f"{name} must be class indices (integers), not {_show(value)}; class names are resolved " \
        "from a label file by the command line (onnxlrp.cli.resolve_class)"
    if isinstance(value, str | bytes):
        raise InputError(names)
    try:
        t = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be integers or a sequence of integers, not {_show(value)}") from None
    if t.dtype.kind in "USV" or (t.dtype.kind == "O" and any(isinstance(v, str | bytes) for v in t.ravel())):
        raise InputError(names)
    if t.dtype.kind == "O":  # Python ints beyond int64, mixed types, ragged lists
        try:
            t = np.asarray([int(v) for v in t.ravel()], dtype=object).reshape(t.shape)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be integers, not {_show(value)}") from None
        if any(abs(int(v)) > _INT64_MAX for v in t.ravel()):
            raise InputError(f"{name} contains an integer too large to be a class index: {_show(value)}")
        t = t.astype(np.int64)
    if t.dtype.kind == "b" or t.dtype.kind not in "iuf":
        raise InputError(f"{name} must be integers, not {_show(value)}")
    if t.dtype.kind == "f":
        if not np.all(np.isfinite(t)) or not np.all(np.mod(t, 1) == 0):
            raise InputError(f"{name} classes must be integers; got {t.ravel()[:5].tolist()}")
        if np.any(np.abs(t) > 2**62):
            raise InputError(f"{name} contains a value too large to be a class index: {t.ravel()[:5].tolist()}")
    if t.dtype.kind == "u" and t.size and int(t.max()) > _INT64_MAX:
        raise InputError(f"{name} contains an integer too large to be a class index")
    return t.astype(np.int64)


def check_targets(target: Any, targets: Any, n: int, num_classes: int, logits: np.ndarray | None) -> np.ndarray:
    """Targets as a ``(T, N)`` int64 array: ``target`` (one per sample) or ``targets`` (several per sample)."""
    if target is not None and targets is not None:
        raise InputError("give either target= (one per sample) or targets= (several per sample), not both")
    if targets is not None:
        t = _class_array("targets", targets)
        if t.ndim == 1:
            t = np.repeat(t[:, None], n, axis=1)
        elif t.ndim != 2 or t.shape[1] != n:
            raise InputError(f"targets must be a list of classes or a (T, {n}) array; got shape {list(t.shape)}")
    elif target is None:
        if logits is None:
            raise InputError("target=None needs the model's prediction")
        t = logits.argmax(axis=1)[None]
    else:
        t = _class_array("target", target)
        if t.ndim == 0:
            t = np.full((1, n), t)
        elif t.ndim == 1 and t.shape[0] == n:
            t = t[None]
        else:
            raise InputError(f"target must be an int or one class per sample ({n}); got shape {list(t.shape)}")
    if t.size == 0:
        raise InputError("no target class given")
    bad = t[(t < 0) | (t >= num_classes)]
    if bad.size:
        raise InputError(f"class index {int(bad[0])} is out of range: the model has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return t.astype(np.int64)


__all__ = ["MAX_COUNT", "as_array", "as_bool", "as_float", "as_int", "check_options", "check_targets"]
