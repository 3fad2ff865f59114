"""``onnxlrp methods``: the explanation methods, one line each (see ``docs/cli.md``)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``methods`` subcommand to the ``onnxlrp`` parser's subparsers; return its parser."""
    meth = sub.add_parser("methods", help="list the explanation methods",
                          description="List every method: name, family, what it computes, its options.")
    meth.set_defaults(func=run)
    return meth


def run(args: argparse.Namespace) -> int:
    """Print one line per method: name, family, summary, options; return 0."""
    from ..methods import METHODS, list_methods

    names = list_methods()
    width = max(len(n) for n in names)
    for n in names:
        m = METHODS[n]
        opts = f"  [options: {', '.join(m.options)}]" if m.options else ""
        print(f"{n.ljust(width)}  {m.family:<8s}  {m.summary}{opts}")
    return 0
