"""Files a model points at: confined to the model's folder, read with a bound.

A model file is untrusted input. Every path it names (external tensor data, the label file of
its metadata) is resolved relative to the model's folder and must stay inside it: an absolute
path, a ``..`` that climbs out, or a symlink whose target lies outside is refused. Files are
read only when they are regular files (not FIFOs, devices or directories) and not larger than a
stated maximum, so ``/dev/zero`` or a pipe can never be read without end.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ModelLoadError, OnnxLrpError

MAX_MODEL_BYTES = 2**31 - 1  # a protobuf message (the .onnx file without external data) cannot be larger


def confined(base: Path, location: str, what: str, error: type[OnnxLrpError] = ModelLoadError) -> Path:
    """``base / location`` resolved (symlinks followed), refused unless it lies inside ``base``.

    ``what`` names the referring thing in the message (``"initializer 'w'"``,
    ``"metadata onnxlrp.labels"``). Raises ``error`` (default :class:`ModelLoadError`).
    """
    if not location or "\x00" in location:
        raise error(f"{what}: empty or invalid path {location!r}; refused")
    if os.path.isabs(location) or Path(location).drive:
        raise error(f"{what}: path {location!r} is absolute; only paths inside the model's folder are allowed")
    root = base.resolve()
    target = (root / location).resolve()
    if target != root and root not in target.parents:
        raise error(f"{what}: path {location!r} points outside the model's folder {root}; refused")
    return target


def regular_file(path: Path, what: str, max_bytes: int, error: type[OnnxLrpError] = ModelLoadError) -> int:
    """The size of ``path`` after checking it is a regular file of at most ``max_bytes`` bytes.

    FIFOs, character devices (``/dev/zero``), sockets and directories are refused before any
    byte is read.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what}: file not found: {path}") from None
    except OSError as exc:
        raise error(f"{what}: cannot access {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what}: {path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what}: {path} is not a regular file (a pipe, device or socket); refused")
    if st.st_size > max_bytes:
        raise error(f"{what}: {path} is {st.st_size} bytes, more than the limit of {max_bytes}")
    return int(st.st_size)


def read_bounded(path: Path, what: str, max_bytes: int, error: type[OnnxLrpError] = ModelLoadError) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``; a file that grows while read is refused)."""
    size = regular_file(path, what, max_bytes, error)
    try:
        with open(path, "rb") as f:
            data = f.read(size + 1)
    except OSError as exc:
        raise error(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > size:
        raise error(f"{what}: {path} changed while it was read; refused")
    return data


__all__ = ["MAX_MODEL_BYTES", "confined", "read_bounded", "regular_file"]
