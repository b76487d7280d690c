"""Helpers shared by several CLI commands: the one-line-error parser, argparse value types,
output-path checks and model loading.

Option values are validated while the command line is parsed (the ``type=`` helpers
below), so a bad value is refused in one line with exit code 2 before anything slow
(importing torch, building a model, reading data) happens. The helpers import nothing
heavy; :func:`model_from_spec` imports the model stack when it is called.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..config import did_you_mean
from ..errors import CheckpointError
from ..io.hub import is_hub_id
from ..io.names import CHECKPOINT_SUFFIXES, CONFIG_NAME, WEIGHTS_NAME
from ..io.source import resolve_source

if TYPE_CHECKING:
    from torch import Tensor

    from ..config import IRevNetConfig
    from ..model import IRevNet

#: Largest value accepted for a seed (what NumPy and scikit-learn accept).
MAX_SEED = 2**32 - 1


class CLIError(ValueError):
    """A refused command line (bad value, output that exists, ...): one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line: ``irevnet train: error: ... (see --help)``, exit 2;
    a value that is none of an option's choices (or a mistyped command) names the closest one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Python 3.15 suggests by default (3.14 on request), in the same hook: the guess would be
        # given twice. An attribute, not the keyword, which Python < 3.14 does not take.
        self.suggest_on_error = False

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's one check of `choices` (options and sub-commands alike); its message is kept
        # and the suggestion appended.
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as e:
            hint = did_you_mean(value, [str(c) for c in action.choices or ()]) if isinstance(value, str) else ""
            if not hint:
                raise
            raise argparse.ArgumentError(action, f"{e.message}; {hint}") from None


class CommandParser(Parser):
    """A sub-command's parser: options may come between positional arguments
    (``irevnet invert CKPT a.png --no-progress b.png``), and an argument it does not know is
    refused by the sub-command itself, so the hint names ``irevnet COMMAND --help``.

    argparse hands a sub-command everything after its name through ``parse_known_args``;
    the top-level parser would otherwise report the leftovers under its own name.
    """

    _intermixed = False  # True while parse_known_intermixed_args runs its two passes

    def parse_known_args(  # type: ignore[override]  # one signature for typeshed's overloads
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixed:
            return super().parse_known_args(args, namespace)
        self._intermixed = True
        try:
            parsed, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed = False
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, []


# ---------------------------------------------------------------------------------------------
# argparse value types: each returns the parsed value or raises ArgumentTypeError (one line).


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer ``low <= n <= high`` (either bound optional)."""

    def parse(text: str) -> int:
        n = _int(text)
        if (low is not None and n < low) or (high is not None and n > high):
            bounds = (
                f"between {low} and {high}"
                if low is not None and high is not None
                else f">= {low}"
                if low is not None
                else f"<= {high}"
            )
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, got {text!r}")
        return n

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


positive_int = int_range(1)
nonnegative_int = int_range(0)
seed = int_range(0, MAX_SEED)


def _finite_float(text: str, *, zero: bool) -> float:
    """A finite float > 0 (``zero``: >= 0); ``nan``, ``inf`` and negatives are refused."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not zero):
        raise argparse.ArgumentTypeError(f"expected a finite number {'>=' if zero else '>'} 0, got {text!r}")
    return x


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < x < 1:  # nan fails too
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (exclusive), got {text!r}")
    return x


def positive_float(text: str) -> float:
    """A finite float > 0 (``nan``, ``inf``, 0 and negatives are refused)."""
    return _finite_float(text, zero=False)


def nonnegative_float(text: str) -> float:
    """A finite float >= 0 (``nan``, ``inf`` and negatives are refused)."""
    return _finite_float(text, zero=True)


def existing_file(text: str) -> str:
    """A path that exists and is a file (not a folder)."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return text


def existing_dir(text: str) -> str:
    """A path that exists and is a folder."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a folder")
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return text


def dir_path(text: str) -> str:
    """A folder to write into: it may not exist yet, but must not be a file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a folder (it would be created)")
    return text


def file_path(text: str) -> str:
    """A file to write: it may not exist yet, but must not be a folder."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file name")
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} names a folder, expected a file name")
    return text


#: Figure formats the commands write (``irevnet.analysis.plotting.FORMATS``; the suffix of a figure
#: path picks one). Listed here so that parsing the command line does not import matplotlib.
FIGURE_FORMATS = ("png", "pdf", "svg")
FIGURE_SUFFIXES = tuple(f".{f}" for f in FIGURE_FORMATS)


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        default="png",
        choices=FIGURE_FORMATS,
        help="figure file format: png (200 dpi), pdf or svg (vector; default: png)",
    )


def figure_path(text: str) -> str:
    """A figure file to write, ending in one of :data:`FIGURE_SUFFIXES` (so the path written is
    exactly the path given: no suffix is ever appended)."""
    file_path(text)
    if Path(text).suffix.lower() not in FIGURE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a file name ending in {', '.join(FIGURE_SUFFIXES)}")
    return text


#: Help of a model-source argument (:func:`model_path`).
SOURCE_HELP = "a checkpoint file, model folder, training run folder (its best.pt, else last.pt) or Hub id"


def model_path(text: str) -> str:
    """A model source: a checkpoint file, a model folder, a training run folder (its best.pt, else
    last.pt) or a Hugging Face Hub id (:func:`irevnet.io.source.resolve_source`; no torch import)."""
    try:
        resolve_source(text)
    except CheckpointError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def model_spec(text: str) -> str:
    """A preset name or a model source (:func:`model_path`), checked without importing torch."""
    from ..config import list_presets

    if text in list_presets():
        return text
    if not Path(text).exists() and not is_hub_id(text):
        hint = did_you_mean(text, list_presets())
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a preset ({', '.join(list_presets())}) nor an existing checkpoint file, model "
            f"folder or run folder, nor a Hub id (owner/name){f'; {hint}' if hint else ''}"
        )
    return model_path(text)


def _checkpoint_file(dst: str) -> bool:
    """A model destination is a checkpoint file when it ends in .pt/.pth or is an existing file."""
    return Path(dst).suffix in CHECKPOINT_SUFFIXES or Path(dst).is_file()


def model_output(text: str) -> str:
    """Where to write a model: a checkpoint file (``.pt``/``.pth``, or an existing file) or a
    model folder (any other name)."""
    return file_path(text) if _checkpoint_file(text) else dir_path(text)


def model_output_files(dst: str) -> list[str]:
    """The files that writing a model to ``dst`` creates (see :func:`model_output`)."""
    if _checkpoint_file(dst):
        return [dst]
    return [str(Path(dst) / CONFIG_NAME), str(Path(dst) / WEIGHTS_NAME)]


def write_model(model: IRevNet, dst: str, **extras: Any) -> str:
    """Write ``model`` to ``dst``: a checkpoint file when it ends in .pt/.pth (``extras`` ride
    along), else a model folder (config.json + model.safetensors, the model alone). Returns
    a description of what was written."""
    from ..io.load import save_model

    if _checkpoint_file(dst):
        save_model(model, dst, **extras)
        return dst
    model.save_pretrained(dst)
    return f"{Path(dst) / CONFIG_NAME} and {WEIGHTS_NAME}"


# ---------------------------------------------------------------------------------------------
# Outputs: never overwrite an input, refuse to overwrite an existing output unless --force, refuse
# an unwritable location before any work.


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    paths: Iterable[str | os.PathLike[str]], *, force: bool, inputs: Iterable[str | os.PathLike[str]] = ()
) -> None:
    """Refuse (:class:`CLIError`) to write any of ``paths`` that is one of ``inputs`` (even with
    ``force``), that is a folder, that exists (unless ``force``), or whose folder is not writable
    (:func:`check_writable`)."""
    out_paths, in_paths = [Path(p) for p in paths], [Path(i) for i in inputs]
    existing = []
    for path in out_paths:
        if any(_same_file(path, i) or path.resolve() == i.resolve() for i in in_paths):
            raise CLIError(f"refusing to write {str(path)!r}: it is one of the inputs")
        if path.is_dir():
            raise CLIError(f"cannot write {str(path)!r}: it is a folder")
        if path.exists():
            existing.append(str(path))
    if existing and not force:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise CLIError(
            f"{shown} already exist{'s' if len(existing) == 1 else ''}; pass --force to overwrite "
            "or choose another output"
        )
    check_writable(p.parent for p in out_paths)


def check_writable(folders: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse (:class:`CLIError`) to write into any of ``folders`` where no file can be created.

    A folder that does not exist yet would be created: its deepest existing ancestor must then
    be a folder (not a file) in which files can be created. Each folder is probed by creating an
    unnamed temporary file in it (``O_TMPFILE`` on Linux: nothing ever appears in the folder),
    which sees what the actual write would see -- permissions, ACLs, a read-only file system,
    ``/proc`` -- even for root, for whom permission bits say little. Commands call this before
    any work, so that an unwritable output is a one-line refusal rather than a failure at the end.
    """
    probed: set[Path] = set()
    for folder in map(Path, folders):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise CLIError(f"cannot write to {str(folder)!r}: {str(existing)!r} is a file, not a folder")
        if existing in probed:
            continue
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as e:
            where = "there" if existing == folder else f"in {str(existing)!r}"
            raise CLIError(
                f"cannot write to {str(folder)!r}: no file can be created {where} ({e.strerror or e})"
            ) from None
        probed.add(existing)


# ---------------------------------------------------------------------------------------------
# Models


def model_from_spec(spec: str) -> IRevNet:
    """A preset name builds a fresh model; anything else is a model source (:func:`model_path`)."""
    from ..config import list_presets
    from ..factory import create_model
    from ..io.load import load_model

    if spec in list_presets():
        return create_model(spec)
    return load_model(spec)


def read_images(paths: list[str], config: IRevNetConfig, *, progress: bool = False) -> Tensor:
    """``(N, C, H, W)`` model inputs from image files, through the model's evaluation preprocessing
    (its data config); an unreadable image is a one-line error naming the file."""
    import torch
    from tqdm.auto import tqdm

    from ..data.imagefolder import CorruptImageError, load_image
    from ..data.transforms import eval_transform

    transform = eval_transform(config)
    out = []
    for path in tqdm(paths, desc="read", unit="image", disable=not progress or len(paths) < 2, leave=False):
        try:
            out.append(transform(load_image(path)))
        except CorruptImageError as e:
            raise ValueError(str(e)) from None
    return torch.stack(out)


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    """``--workers N``; ``None`` when absent: the command then takes
    :func:`irevnet.training.data_loading.default_workers` of its data set."""
    parser.add_argument(
        "--workers",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="data loader processes (per rank under torchrun); default: 0 for in-memory data sets "
        "(digits, synthetic), else the CPUs (a rank's share) less one, at most 8",
    )


def add_analysis_size_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-train``, ``--metamer-pairs``, ``--metamer-steps``: the sizes of the analyses' work that
    ``analyze`` and ``demo`` both let a user scale (:class:`irevnet.analysis.suite.AnalysisOptions`)."""
    parser.add_argument(
        "--max-train",
        type=positive_int,
        default=None,
        help="subsample the training split to this many images for the analyses that fit classifiers "
        "(separability, pca; default: all)",
    )
    parser.add_argument("--metamer-pairs", type=positive_int, default=100, help="metamers: number of pairs measured")
    parser.add_argument(
        "--metamer-steps",
        type=nonnegative_int,
        default=600,
        help="metamers: Adam steps of the pixel-space search before the exact projection (0: none)",
    )


def add_model_overrides_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--model KEY=VALUE`` (repeatable): overrides of the ``--preset`` configuration."""
    parser.add_argument("--model", dest="model_overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--model`` overrides, parsed to the types of ``--preset``'s configuration fields
    (``data.FIELD=VALUE``: a field of its data config) and checked against that configuration."""
    from ..config import get_preset
    from ..training.recipes import parse_overrides

    preset = get_preset(args.preset)
    overrides = parse_overrides(preset, args.model_overrides)
    preset.replace(**overrides)  # a bad value (crop_pct=2, mean without std, ...) fails here, before any work
    return overrides
