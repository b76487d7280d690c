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
import dataclasses
import errno
import importlib
import logging
import os
import sys

from .. import __version__
from .common import CommandParser, Parser

COMMANDS = ["info", "demo", "convert", "invert", "export", "train", "eval", "predict", "analyze", "upload"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="irevnet", description="i-RevNet: deep invertible networks (ICLR 2018).")
    parser.add_argument("--version", action="version", version=f"irevnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of handled errors too (bad options, unusable files, out of memory)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def _flag(option: str) -> str:
    """The command-line spelling of a library option name."""
    from ..config import IRevNetConfig
    from ..training.recipes import Recipe
    from .train import RECIPE_FLAGS

    names = {
        "recipe": {f.name for f in dataclasses.fields(Recipe)},
        "model": {f.name for f in dataclasses.fields(IRevNetConfig)},
    }
    if option in names["recipe"]:
        return f"--set {option}=..." if option not in RECIPE_FLAGS else f"--{option.replace('_', '-')}"
    if option.split(".")[0] in names["model"]:  # data.crop_pct: a field of the nested data config
        return f"--model {option}=..."
    return "--" + option.replace("_", "-")


def _is_oom(e: BaseException) -> bool:
    """A device out of memory, or a CPU allocation torch could not make (a RuntimeError, not an OutOfMemoryError)."""
    torch = sys.modules.get("torch")  # loaded whenever torch raised it; not imported for --help
    return torch is not None and (
        isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "DefaultCPUAllocator: " in str(e))
    )


#: Errors of writing a file that the user fixes (a location that turned unwritable after the
#: commands' up-front check, a full disk): the message names the file.
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR)


def handled(e: BaseException) -> bool:
    """What the user can fix (bad option, unusable file, batch too big): reported in one line, exit 2.

    Anything else is a bug or a failure of the system and propagates with its traceback.
    """
    from ..errors import IRevNetError

    return (
        isinstance(e, (IRevNetError, ValueError, FileNotFoundError))
        or _is_oom(e)
        or (isinstance(e, OSError) and e.errno in _UNWRITABLE)
    )


def describe_error(e: BaseException) -> str:
    """One line for an error the CLI handles: the library's message, with the flag it is about."""
    from ..errors import ConfigError, IRevNetError, OutOfMemoryError

    if isinstance(e, OutOfMemoryError):
        return (
            f"{e}. Hint: lower the batch size (--batch-size; keep the global batch with --accum K), or "
            "use --memory-efficient, --amp bf16"
        )
    if _is_oom(e):
        return f"out of memory: {str(e).splitlines()[0]}. Hint: lower the batch size or the input size"
    message = str(e) or type(e).__name__
    option = getattr(e, "option", None)
    if isinstance(e, ConfigError) and option:
        return f"{_flag(option)}: {message}"
    if isinstance(e, IRevNetError) and option:
        return f"{message} (see {_flag(option)})"
    return message


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
    except Exception as e:
        if args.debug or not handled(e):
            raise
        print(f"irevnet {args.command}: error: {describe_error(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
