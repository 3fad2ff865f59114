"""The ``onnxlrp`` command line: ``explain``, ``info``, ``methods``, ``evaluate``, ``compile`` and more.

``onnxlrp explain MODEL IMAGE [IMAGE|DIR ...]`` writes heatmaps (PNG, optionally overlays, raw
``.npy`` and a grid figure) and prints the top-5 predictions of every image and every file it
wrote. ``onnxlrp info MODEL`` prints the model's inputs, outputs and layers with the rule each
layer gets. ``onnxlrp methods`` lists the methods; ``onnxlrp evaluate`` measures explanations.
See ``docs/cli.md``.

One module per command (:mod:`.explain`, :mod:`.info`, :mod:`.methods`, :mod:`.evaluate`), each
importing only the shared :mod:`.common`; this module builds the parser from them and runs it.

Exit status: 0 on success, 2 for a usage error (a bad option, a malformed or out-of-range
value, a bad combination of options), 1 for every other error (a missing or unreadable file, a
model that cannot be explained, an unknown class, an image that could not be read, not enough
memory, ...). An error is one line on stderr, ``onnxlrp: error: ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import OnnxLrpError
from . import compile, evaluate, explain, explain_dataset, explain_text, info, methods, spray
from .common import PROG, Parser, UsageError, load_labels, report_error, resolve_class, softmax

__all__ = ["UsageError", "build_parser", "load_labels", "main", "resolve_class", "softmax"]


def build_parser() -> argparse.ArgumentParser:
    """The ``onnxlrp`` argument parser with its subcommands."""
    parser = Parser(prog=PROG, description="Explain ONNX image classifiers with LRP, SGLRP and related methods.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in (explain, info, methods, evaluate, explain_dataset, explain_text, spray, compile):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 success, 1 error, 2 usage error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed by the parser
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2

    def one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    saved = warnings.showwarning
    warnings.showwarning = one_line_warning
    try:
        return int(args.func(args))
    except UsageError as exc:
        report_error(str(exc))
        return 2
    except OnnxLrpError as exc:
        report_error(str(exc))
        return 1
    except BrokenPipeError:  # e.g. `onnxlrp info model.onnx | head`
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except OSError as exc:  # files that cannot be written or read
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        report_error(f"{exc.strerror or exc}{where}")
        return 1
    except MemoryError:
        report_error("not enough memory for this run; try a smaller --batch-size or --size, or fewer methods")
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = saved


if __name__ == "__main__":
    sys.exit(main())
