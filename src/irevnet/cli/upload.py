"""``irevnet upload SOURCE OWNER/NAME``: a model folder with a model card, pushed to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..io.hub import is_repo_id
from ..io.names import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from .common import SOURCE_HELP, add_force_argument, check_outputs, dir_path, model_path


def _repo_id(text: str) -> str:
    if not is_repo_id(text):
        raise argparse.ArgumentTypeError(f"expected a Hub repository id owner/name, got {text!r}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upload", help="push a model to the Hugging Face Hub as a model folder with a model card",
        description="Write the model as a model folder (config.json + model.safetensors) with a model card "
        "(README.md: architecture, parameters, preprocessing, class names, the run's metrics when SOURCE is a "
        "training run or one of its checkpoints, citation) and upload it to OWNER/NAME (created if needed) "
        "in one commit. Needs pip install 'irevnet[hub]' and a token (HF_TOKEN or `hf auth login`). "
        "--dry-run DIR writes the files into DIR and uploads nothing.")
    p.add_argument("model", metavar="SOURCE", type=model_path, help=SOURCE_HELP)
    p.add_argument("repo_id", metavar="OWNER/NAME", type=_repo_id, help="the Hub model repository")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, metavar="BRANCH", help="an existing branch to commit to (default: main)")
    p.add_argument("--message", default=None, help="the commit message")
    p.add_argument("--dry-run", default=None, metavar="DIR", type=dir_path,
                   help="write config.json, model.safetensors and README.md into DIR instead of uploading")
    add_force_argument(p)
    p.set_defaults(func=run)


def run_metrics(checkpoint: Path) -> dict[str, Any]:
    """The figures of the run that wrote ``checkpoint`` (a run folder's best.pt or last.pt) for the
    card: data set, recipe, epochs, and the metrics of the epoch whose weights these are."""
    from ..training.run_dir import RunDir

    run = RunDir(checkpoint.parent)
    rows = run.read_metrics()
    if checkpoint.name not in (run.BEST, run.LAST) or not rows or not (run.path / run.CONFIG).is_file():
        return {}
    train = json.loads((run.path / run.CONFIG).read_text()).get("train", {})
    evaluated = [r for r in rows if "eval_top1" in r]
    row = max(evaluated, key=lambda r: r["eval_top1"]) if checkpoint.name == run.BEST and evaluated else rows[-1]
    out: dict[str, Any] = {"data": train.get("data"), "recipe": train.get("recipe", {}).get("name"),
                           "epochs trained": rows[-1]["epoch"], "epoch of these weights": row["epoch"],
                           "train_loss": row["loss"], "train_top1": row["top1"]}
    out.update({k: row[k] for k in ("eval_loss", "eval_top1", "eval_top5") if k in row})
    return {k: v for k, v in out.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    if args.dry_run is not None:
        check_outputs([Path(args.dry_run) / n for n in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)], force=args.force,
                      inputs=[args.model])

    from ..io.card import write_card
    from ..io.load import load_model
    from ..io.source import resolve_source
    from ..model import config_of

    source = resolve_source(args.model)
    model = load_model(source.given)
    metrics = run_metrics(source.path) if source.kind in ("checkpoint", "run folder") and source.path else {}
    if args.dry_run is not None:
        model.save_pretrained(args.dry_run)
        card = write_card(args.dry_run, config_of(model), repo_id=args.repo_id, metrics=metrics)
        print(f"wrote {Path(args.dry_run) / CONFIG_NAME}, {WEIGHTS_NAME} and {card.name} (nothing uploaded)")
        return 0
    url = model.push_to_hub(args.repo_id, metrics=metrics, private=args.private or None, revision=args.revision,
                            commit_message=args.message)
    print(f"uploaded {args.model} to {args.repo_id}: {url}")
    return 0
