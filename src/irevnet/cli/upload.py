"""``irevnet upload SOURCE OWNER/NAME``: a model folder with a model card, pushed to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io.hub import is_repo_id
from ..io.names import CARD_NAME, CONFIG_NAME, RUN_CONFIG, RUN_METRICS, WEIGHTS_NAME
from ..io.source import Source, resolve_source
from .common import SOURCE_HELP, add_force_argument, check_outputs, dir_path, model_path


def _repo_id(text: str) -> str:
    if not is_repo_id(text):
        raise argparse.ArgumentTypeError(f"expected a Hub repository id owner/name, got {text!r}")
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "upload",
        help="push a model to the Hugging Face Hub as a model folder with a model card",
        description="Write the model as a model folder (config.json + model.safetensors) with a model card "
        "(README.md: architecture, parameters, preprocessing, class names, the run's metrics when SOURCE is a "
        "training run or one of its checkpoints, citation) and upload it to OWNER/NAME (created if needed) "
        "in one commit. Needs pip install 'irevnet[hub]' and a token (HF_TOKEN or `hf auth login`). "
        "--dry-run DIR writes the files into DIR and uploads nothing.",
    )
    p.add_argument("model", metavar="SOURCE", type=model_path, help=SOURCE_HELP)
    p.add_argument("repo_id", metavar="OWNER/NAME", type=_repo_id, help="the Hub model repository")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, metavar="BRANCH", help="an existing branch to commit to (default: main)")
    p.add_argument("--message", default=None, help="the commit message")
    p.add_argument(
        "--dry-run",
        default=None,
        metavar="DIR",
        type=dir_path,
        help="write config.json, model.safetensors and README.md into DIR instead of uploading",
    )
    add_force_argument(p)
    p.set_defaults(func=run)


def _files_read(source: Source) -> list[Path]:
    """The files ``irevnet upload`` reads from ``source``: never written, even with --force."""
    if source.path is None:
        return []
    if source.kind == "model folder":
        return [source.path / CONFIG_NAME, source.path / WEIGHTS_NAME]
    return [source.path, source.path.parent / RUN_CONFIG, source.path.parent / RUN_METRICS]


def run(args: argparse.Namespace) -> int:
    source = resolve_source(args.model)
    if args.dry_run is not None:
        check_outputs(
            [Path(args.dry_run) / n for n in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)],
            force=args.force,
            inputs=_files_read(source),
        )

    from ..io.card import write_card
    from ..io.load import load_model
    from ..model import config_of
    from ..training.run_dir import RunDir

    model = load_model(source.given)
    metrics = (
        {}
        if source.path is None or source.kind == "model folder"
        else RunDir(source.path.parent).model_metrics(source.path.name)
    )
    if args.dry_run is not None:
        model.save_pretrained(args.dry_run)
        card = write_card(args.dry_run, config_of(model), repo_id=args.repo_id, metrics=metrics)
        print(f"wrote {Path(args.dry_run) / CONFIG_NAME}, {WEIGHTS_NAME} and {card.name} (nothing uploaded)")
        return 0
    url = model.push_to_hub(
        args.repo_id, metrics=metrics, private=args.private or None, revision=args.revision, commit_message=args.message
    )
    print(f"uploaded {args.model} to {args.repo_id}: {url}")
    return 0
