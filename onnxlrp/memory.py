"""How much memory an explanation needs, and how large a batch may be at once.

An explanation holds the forward pass's intermediate tensors (every tensor a layer reads or
writes) and, during the backward pass, a few relevance tensors per start relevance. The
estimate below counts them from the plan's tensor shapes; :class:`onnxlrp.Explainer` splits a
large batch into chunks that fit its memory budget (results are the same as for one big
batch), and refuses an input of which even one sample would not fit in the memory available.
"""

from __future__ import annotations

import os
import re

from .errors import InputError

DEFAULT_BUDGET = 1 << 30  # 1 GiB per chunk: a laptop's share for one explanation
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
_BACKWARD_COPIES = 8  # relevance tensors alive at once per start relevance, and the rules' temporaries


def parse_budget(value: int | float | str | None) -> int:
    """A memory budget in bytes from an int, a float or a string such as ``"512MiB"`` or ``"2GB"``.

    ``None`` gives the ``ONNXLRP_MEMORY_BUDGET`` environment variable if set, else 1 GiB.
    """
    if value is None:
        value = os.environ.get("ONNXLRP_MEMORY_BUDGET") or DEFAULT_BUDGET
    if isinstance(value, bool):
        raise InputError(f"memory_budget must be a size in bytes (or a string like '2GiB'), not {value!r}")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise InputError(f"memory_budget {value!r} is not a size (examples: 1073741824, '512MiB', '2GB')")
        nbytes = float(m.group(1)) * _UNITS[m.group(2).lower()]
    elif isinstance(value, int | float):
        nbytes = float(value)
    else:
        raise InputError(f"memory_budget must be a size in bytes (or a string like '2GiB'), not {value!r}")
    if not nbytes >= 1 << 20 or nbytes != nbytes or nbytes == float("inf"):
        raise InputError(f"memory_budget must be a finite size of at least 1 MiB, not {value!r}")
    return int(nbytes)


def available_memory() -> int | None:
    """Bytes of memory the system can still give (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def bytes_per_sample(tensor_sizes: list[int], batch: int, passes: int) -> int:
    """Estimated peak bytes of one sample's explanation with ``passes`` start relevances.

    ``tensor_sizes`` are the element counts of the forward tensors at batch size ``batch``.
    The forward's tensors are counted twice (onnxruntime's buffers and the arrays handed to the
    backward), the backward keeps a few copies of the largest tensor per pass. Measured on
    EfficientNet-Lite0 at batch 8 (peak RSS increase per sample, ``tools/memory_calibration.py``):
    lrp 127 MB (estimate 138), sglrp 159 MB (175), gradient 75 MB (138).
    """
    per = [max(1, s // max(batch, 1)) for s in tensor_sizes] or [1]
    forward = 2 * sum(per)
    backward = passes * _BACKWARD_COPIES * max(per)
    return 4 * (forward + backward)


def fmt_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def chunk_size(per_sample: int, budget: int, n: int, what: str) -> int:
    """How many samples fit in ``budget``; refuses when one sample exceeds the memory available."""
    avail = available_memory()
    if avail is not None and per_sample > avail:
        raise InputError(f"{what} needs about {fmt_bytes(per_sample)} for one sample, more than the "
                         f"{fmt_bytes(avail)} of memory available; use a smaller input")
    return max(1, min(n, budget // max(per_sample, 1)))


__all__ = ["DEFAULT_BUDGET", "available_memory", "bytes_per_sample", "chunk_size", "fmt_bytes", "parse_budget"]
