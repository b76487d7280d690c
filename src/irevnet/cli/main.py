"""``irevnet`` / ``python -m irevnet``: the command-line entry point.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed namespace, returns an exit code).
To add a command, write the module and list it in ``COMMANDS``.

Start-up is kept fast (``irevnet --help`` well under a second): the command modules
import only the standard library and torch-free parts of irevnet at module level, and
import torch, torchvision, matplotlib and scikit-learn inside ``run`` when needed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import __version__
from .common import CLIError, Parser

COMMANDS = ["info", "demo", "convert", "invert", "export", "train", "eval", "analyze"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="irevnet", description="i-RevNet: deep invertible networks (ICLR 2018).")
    parser.add_argument("--version", action="version", version=f"irevnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Bad option values are refused while parsing, in one line, with exit code 2 (as are the
    expected errors of running a command); ``--help`` and ``--version`` return 0.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a refused command line (already printed)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `irevnet info ... | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except (CLIError, ValueError, FileNotFoundError, RuntimeError) as e:
        # Expected user errors (bad preset, unreadable checkpoint, ...): one line, no traceback.
        if args.verbose:
            raise
        print(f"irevnet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
