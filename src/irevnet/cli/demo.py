"""``irevnet demo``: train the `digits` model on the bundled digits, run the paper's analyses, write a report.

It then trains the bijective `digits-b` with the hybrid objective (cross-entropy + NLL) for
the analyses that need an exact inverse everywhere or a density: metamers, OOD detection
with exact log-densities, and edits in Φ. Both train with `irevnet train`'s engine
(:func:`irevnet.training.train`), into run folders inside the demo's folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..analysis.registry import ANALYSES, get
from ..io.names import RUN_BEST, RUN_CONFIG, RUN_LAST, RUN_METRICS
from .common import (
    add_analysis_size_arguments,
    add_force_argument,
    add_format_argument,
    check_outputs,
    dir_path,
    nonnegative_float,
    positive_int,
    seed,
)

if TYPE_CHECKING:
    from ..model import IRevNet
    from ..training import Recipe

log = logging.getLogger(__name__)

#: The paper's analyses, on `digits`; then the others (beyond the paper), on the bijective `digits-b`.
PAPER_ANALYSES = tuple(a.name for a in ANALYSES if a.paper)
BIJECTIVE_ANALYSES = tuple(a.name for a in ANALYSES if not a.paper)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="train `digits` and the bijective `digits-b` on the bundled digits, run the paper's analyses "
        "and those that need an exact inverse, write plots and a report",
        description="Train `digits` on scikit-learn's bundled 8x8 digits and run the paper's analyses on it "
        f"({', '.join(PAPER_ANALYSES)}); then train the bijective `digits-b` with the hybrid objective "
        f"(cross-entropy + NLL) and run the analyses that need a bijective model ({', '.join(BIJECTIVE_ANALYSES)}). "
        "Writes OUT/report.md, the two models (model.pt, model_b.pt), metrics.json, a figure + JSON per "
        "analysis, and the two trainings' run folders (OUT/train-digits, OUT/train-digits-b: those of irevnet "
        "train). About 1.5 minutes on 2 CPU cores; nothing is downloaded.",
    )
    p.add_argument("--out", default="runs/demo", type=dir_path, help="output folder (default: runs/demo)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the digits recipe's epoch count")
    p.add_argument("--epochs-b", type=positive_int, default=None, help="override the digits-b recipe's epoch count")
    p.add_argument(
        "--nll-weight",
        type=nonnegative_float,
        default=1.0,
        help="weight of the NLL per dimension in digits-b's hybrid objective (default: 1)",
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of the initialization and data order (the train/test split is always the "
        "standard one, seed 0, which `irevnet eval/analyze --data digits` also use)",
    )
    add_analysis_size_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_format_argument(p)
    add_force_argument(p)
    p.set_defaults(func=run)


#: What the demo writes into its folder, besides one PNG + JSON per analysis and the run folders.
DEMO_FILES = ("model.pt", "model_b.pt", "metrics.json", "report.md")
#: The run folder of each training, inside the demo's folder: `irevnet train`'s files.
RUNS = {"digits": "train-digits", "digits-b": "train-digits-b"}
RUN_FILES = (RUN_CONFIG, RUN_METRICS, RUN_LAST, RUN_BEST)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    # Before any heavy import, so that a refusal is immediate.
    check_outputs(
        [out / f for f in DEMO_FILES]
        + [out / f"{n}{ext}" for n in PAPER_ANALYSES + BIJECTIVE_ANALYSES for ext in (f".{args.format}", ".json")]
        + [out / run / f for run in RUNS.values() for f in RUN_FILES],
        force=args.force,
    )

    # Imported here, not at the top: torch, scikit-learn, SciPy and matplotlib cost seconds at start-up.
    import torch

    from ..analysis.suite import AnalysisOptions, run_analyses
    from ..data import load_digits_split
    from ..io.load import save_model
    from ..training import get_recipe

    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = load_digits_split()
    recipe = get_recipe("digits")
    if args.epochs is not None:
        recipe = recipe.replace(epochs=args.epochs)
    model, train_seconds, test = _train("digits", recipe, out, args)
    save_model(model, out / "model.pt", recipe=recipe.to_dict())

    # The untrained baseline of the separability analysis is this run's initial network:
    # the same configuration drawn with the same seed. Files are named as `irevnet analyze` names them.
    start = time.perf_counter()
    options = AnalysisOptions(
        seed=args.seed,
        max_train=args.max_train,
        metamer_pairs=args.metamer_pairs,
        metamer_steps=args.metamer_steps,
        progress=not args.no_progress,
        format=args.format,
    )
    results = run_analyses(model, train_set, test_set, out, PAPER_ANALYSES, options)
    analysis_seconds = time.perf_counter() - start

    # Beyond the paper: the bijective digits-b, trained with the hybrid objective.
    recipe_b = get_recipe("digits-b").replace(nll_weight=args.nll_weight)
    if args.epochs_b is not None:
        recipe_b = recipe_b.replace(epochs=args.epochs_b)
    model_b, train_seconds_b, test_b = _train("digits-b", recipe_b, out, args)
    save_model(model_b, out / "model_b.pt", recipe=recipe_b.to_dict())
    start = time.perf_counter()
    results.update(run_analyses(model_b, train_set, test_set, out, BIJECTIVE_ANALYSES, options))
    analysis_seconds_b = time.perf_counter() - start

    metrics = {
        "test_accuracy": test["eval_top1"],
        "test_top5": test["eval_top5"],
        "test_loss": test["eval_loss"],
        **_figures(results, PAPER_ANALYSES),
        "train_seconds": round(train_seconds, 2),
        "analysis_seconds": round(analysis_seconds, 2),
        "epochs": recipe.epochs,
        "params": model.num_parameters(),
        "digits_b_test_accuracy": test_b["eval_top1"],
        "digits_b_nll_weight": recipe_b.nll_weight,
        **_figures(results, BIJECTIVE_ANALYSES, prefix="digits_b_"),
        "digits_b_train_seconds": round(train_seconds_b, 2),
        "digits_b_analysis_seconds": round(analysis_seconds_b, 2),
        "digits_b_epochs": recipe_b.epochs,
        "digits_b_params": model_b.num_parameters(),
        "train_images": len(train_set),
        "test_images": len(test_set),
        "seed": args.seed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_report(out, metrics, results, args.format)
    print(
        f"digits: test accuracy {test['eval_top1']:.4f} | training {train_seconds:.1f} s, analyses "
        f"{analysis_seconds:.1f} s | report: {out / 'report.md'}"
    )
    print(
        f"digits-b (hybrid): test accuracy {test_b['eval_top1']:.4f} | training {train_seconds_b:.1f} s, analyses "
        f"{analysis_seconds_b:.1f} s"
    )
    for name, result in results.items():
        print(f"{name:12s} {get(name).headline(result)}")
    return 0


def _figures(results: dict[str, dict[str, Any]], names: tuple[str, ...], prefix: str = "") -> dict[str, Any]:
    """The headline figures of the analyses ``names`` (:mod:`irevnet.analysis.registry`), names prefixed."""
    return {prefix + key: value for name in names for key, value in get(name).figures(results[name]).items()}


def _train(preset: str, recipe: Recipe, out: Path, args: argparse.Namespace) -> tuple[IRevNet, float, dict[str, Any]]:
    """Train ``preset`` on the digits with ``recipe`` and ``args.seed`` by :func:`irevnet.training.train`,
    into the run folder ``out/RUNS[preset]``: (final model, seconds of training, last epoch's record,
    whose ``eval_*`` figures are the final model's on the test split)."""
    from ..training import TrainConfig, train

    run = out / RUNS[preset]
    for name in RUN_FILES:  # a previous demo's run (check_outputs allowed it: --force)
        (run / name).unlink(missing_ok=True)
    result = train(
        TrainConfig(
            preset=preset,
            data="digits",
            out=str(run),
            recipe=recipe,
            seed=args.seed,
            device="cpu",
            progress=not args.no_progress,
        )
    )
    last = result.history[-1]
    seconds = sum(r["epoch_seconds"] for r in result.history)
    log.info("%s: test accuracy %.4f after %.1f s of training (run folder %s)", preset, last["eval_top1"], seconds, run)
    return result.model, seconds, last


def _write_report(out: Path, m: dict[str, Any], results: dict[str, dict[str, Any]], fmt: str) -> None:
    """``report.md``: the training figures, then each analysis's section (:meth:`Analysis.section`)."""
    paper = "\n".join(get(name).section(results[name], f"{name}.{fmt}") for name in PAPER_ANALYSES)
    beyond = "\n".join(get(name).section(results[name], f"{name}.{fmt}", level=3) for name in BIJECTIVE_ANALYSES)
    headlines = "\n".join(f"| {get(name).title} | {get(name).headline(r)} |" for name, r in results.items())
    runs = (
        f"`{RUNS['digits']}/`, `{RUNS['digits-b']}/`: `irevnet train`'s run folders "
        "(per-epoch `metrics.jsonl`, `best.pt`, resumable `last.pt`)"
    )
    data = (
        f"{m['train_images']} train / {m['test_images']} test images "
        f"(stratified 75/25 split; seed {m['seed']} for initialization and data order)"
    )
    text = f"""# irevnet demo: i-RevNet on the bundled digits

| figure | value |
|---|---|
| test accuracy (top-1) | {m["test_accuracy"]:.4f} |
| training time | {m["train_seconds"]:.1f} s for {m["epochs"]} epochs ({m["threads"]} threads) |
| training runs | {runs} |
| analysis time | {m["analysis_seconds"]:.1f} s |
| parameters | {m["params"]:,} |
| data | {data} |
{headlines}

Each figure below has its numbers in the JSON file of the same name; `irevnet analyze model.pt
--data digits --out DIR` recomputes them (docs/analysis.md explains each analysis).

{paper}
## Beyond the paper: the bijective `digits-b`

`digits-b` ({m["digits_b_params"]:,} parameters) has a Φ of 16×2×2 = 64 entries, as many as
the image, so Φ⁻¹ is defined everywhere and log p(x) = log N(Φ(x); 0, I) is an exact
density. It was trained with the hybrid objective, cross-entropy + {m["digits_b_nll_weight"]:g} ×
NLL per dimension ({m["digits_b_epochs"]} epochs, {m["digits_b_train_seconds"]:.1f} s), and reaches
{m["digits_b_test_accuracy"]:.4f} test accuracy. `irevnet analyze model_b.pt --data digits --only
{" ".join(BIJECTIVE_ANALYSES)}` recomputes the figures below ({m["digits_b_analysis_seconds"]:.1f} s here).

{beyond}"""
    (out / "report.md").write_text(text)
