"""``irevnet train``: train a preset with a named recipe, resumable, on one process or under torchrun."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..config import list_presets
from ..data.registry import DATASETS
from ..training.preemption import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE, exit_code
from ..training.recipes import get_recipe, list_recipes, parse_overrides, recipe_for_preset
from .common import (
    SOURCE_HELP,
    add_model_overrides_argument,
    add_workers_argument,
    check_writable,
    dir_path,
    existing_dir,
    fraction,
    model_overrides,
    model_path,
    nonnegative_int,
    positive_float,
    positive_int,
    seed,
)

if TYPE_CHECKING:
    from ..training.options import TrainConfig

#: Recipe fields with flags of their own (``--epochs``, ...); the others are set with ``--set KEY=VALUE``.
RECIPE_FLAGS = ("epochs", "batch_size", "lr")
#: ``--amp`` values: the keys of :data:`irevnet.training.device.AMP_DTYPES` (kept here so that
#: parsing the command line does not import torch).
AMP_CHOICES = ("bf16", "fp16")
#: ``--compile`` modes: the modes of :data:`irevnet.compile.MODES` (kept here for the same reason).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a preset with the paper's recipe (single process or torchrun/DDP), resumable",
        description="Train a model preset. Under `torchrun --nproc-per-node N -m irevnet train ...` it runs "
        "DistributedDataParallel over all ranks; rank 0 writes RUN/{config.json,metrics.jsonl,last.pt,best.pt} "
        "(last.pt: the resumable training state; best.pt: the best model alone). "
        f"On SIGTERM or SIGUSR1 it finishes the current step, writes RUN/last.pt and exits with status "
        f"{PREEMPTED_EXIT_CODE} (Ctrl-C: the same, with status {INTERRUPTED_EXIT_CODE}; a second Ctrl-C stops at "
        "once); run the same command with --resume to continue.",
    )
    p.add_argument("--preset", required=True, choices=list_presets(), help="model preset")
    add_common_arguments(p)
    p.add_argument(
        "--out", required=True, metavar="RUN", type=dir_path, help="run folder (checkpoints, metrics, config)"
    )
    p.add_argument(
        "--recipe",
        default=None,
        choices=list_recipes(),
        help="hyper-parameters (default: the preset's: digits, cifar10, cifar100 or imagenet)",
    )
    p.add_argument("--epochs", type=positive_int, default=None, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override the recipe's global batch size")
    p.add_argument("--lr", type=positive_float, default=None, help="override the recipe's learning rate")
    p.add_argument(
        "--set",
        dest="recipe_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any recipe field, e.g. --set weight_decay=1e-4 --set lr_milestones=30,60 (repeatable)",
    )
    add_model_overrides_argument(p, "override a model config field, e.g. --model blocks=2,2 (repeatable)")
    p.add_argument(
        "--init-from",
        type=model_path,
        default=None,
        metavar="SOURCE",
        help=f"fine-tune: start from these weights ({SOURCE_HELP}); weights only, and a new classifier "
        "when the number of classes differs",
    )
    p.add_argument(
        "--save-pretrained",
        nargs="?",
        const="",
        default=None,
        type=dir_path,
        metavar="DIR",
        help="when the run completes, also write its model (best.pt's, else the final one) as a model "
        "folder: DIR/config.json + DIR/model.safetensors, loadable with IRevNet.from_pretrained, "
        "irevnet eval and --init-from (DIR defaults to RUN/model)",
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        default="no",
        choices=["yes", "auto"],
        help="continue from RUN/last.pt; `--resume auto` starts fresh when it is absent "
        "(use under torchrun --max-restarts). With --epochs, a run (finished or not) gets more epochs: "
        "the remaining steps follow the schedule of a run planned with that many",
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--accum", type=positive_int, default=1, metavar="K", help="gradient accumulation steps")
    p.add_argument("--memory-efficient", action="store_true", help="recompute activations through the inverse")
    p.add_argument(
        "--full-float32",
        action="store_true",
        help="train in IEEE float32: every step and evaluation with TF32 and bf16 off (by default they "
        "follow PyTorch's float32 flags: TF32 convolutions on Ampere and newer GPUs, several times "
        "faster). Φ, its inverse and the reconstruction monitor are IEEE float32 either way",
    )
    p.add_argument(
        "--allow-tf32",
        action="store_true",
        help="kept for old command lines: training follows PyTorch's float32 flags by default",
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help="torch.compile each block (inductor; MODE: default, reduce-overhead = CUDA "
        "graphs, max-autotune, max-autotune-no-cudagraphs); exits with an error where compiling cannot work",
    )
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across ranks (CUDA only)")
    p.add_argument(
        "--eval-every", type=nonnegative_int, default=1, metavar="N", help="evaluate every N epochs (0: never)"
    )
    p.add_argument(
        "--save-every",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="also write RUN/last.pt every N optimizer steps (exact mid-epoch resume; default 0: at epoch ends only)",
    )
    p.add_argument(
        "--skip-nonfinite",
        type=nonnegative_int,
        default=0,
        metavar="K",
        help="skip up to K optimizer steps whose loss or gradient is NaN/inf before stopping "
        "(default 0: stop at the first, keeping the last good checkpoint)",
    )
    p.add_argument(
        "--raw-weights",
        action="store_true",
        help="with a recipe's ema_decay > 0: evaluate and write the trained weights as the model and keep "
        "the EMA in the trainer state (default: the EMA is the model)",
    )
    p.add_argument(
        "--recon-threshold",
        type=_recon_threshold,
        default=None,
        metavar="X",
        help="warn once when the mean relative reconstruction error of 64 held-out images, measured at "
        "each evaluation, exceeds X (default: 1e-3; off: never warn)",
    )
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN/tensorboard (needs tensorboard)")
    p.set_defaults(func=run)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Data, device and loader options shared by ``irevnet train`` and ``irevnet eval``."""
    p.add_argument("--data", required=True, choices=DATASETS, help="data set")
    p.add_argument("--data-dir", default=None, type=existing_dir, help="folder of the data set (cifar*, imagefolder)")
    p.add_argument(
        "--val-split",
        type=fraction,
        default=None,
        metavar="F",
        help="imagefolder without val/: hold out this fraction of each class of DATA_DIR/<class>/* (or "
        "DATA_DIR/train/<class>/*) as the validation split, the same images whatever --seed; eval of a "
        "run's checkpoint takes the run's value",
    )
    p.add_argument(
        "--synthetic-size",
        type=positive_int,
        default=2560,
        help="train items of --data synthetic (eval: a quarter of it)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--amp", default=None, choices=AMP_CHOICES, help="autocast dtype (training with fp16 adds a GradScaler)"
    )
    add_workers_argument(p)
    p.add_argument(
        "--decode-on",
        default="workers",
        choices=["workers", "device"],
        help="imagefolder JPEGs: decode and augment in the loader workers (default) or on the training "
        "device (CUDA: nvJPEG; the workers only read files; same augmentation, exact resume kept)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _recon_threshold(text: str) -> float:
    """``--recon-threshold``: a finite number > 0, or ``off`` (returned as 0.0: never warn)."""
    return 0.0 if text == "off" else positive_float(text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Resolve recipe and overrides: explicit flags beat ``--set``, which beats the named recipe."""
    from ..training.options import TrainConfig

    recipe = get_recipe(args.recipe) if args.recipe else recipe_for_preset(args.preset)
    overrides = parse_overrides(recipe, args.recipe_overrides)
    for key in RECIPE_FLAGS:
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    return TrainConfig(
        preset=args.preset,
        data=args.data,
        data_dir=args.data_dir,
        out=args.out,
        recipe=recipe.replace(**overrides),
        model_overrides=model_overrides(args),
        seed=args.seed,
        resume=args.resume,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        accum=args.accum,
        workers=args.workers,
        decode_on=args.decode_on,
        memory_efficient=args.memory_efficient,
        full_float32=args.full_float32,
        allow_tf32=args.allow_tf32,
        compile=args.compile,
        sync_bn=args.sync_bn,
        eval_every=args.eval_every,
        save_every=args.save_every,
        skip_nonfinite=args.skip_nonfinite,
        ema_as_model=not args.raw_weights,
        synthetic_size=args.synthetic_size,
        progress=not args.no_progress,
        tensorboard=args.tensorboard,
        init_from=args.init_from,
        val_split=args.val_split,
        save_pretrained=os.path.join(args.out, "model") if args.save_pretrained == "" else args.save_pretrained,
        **({} if args.recon_threshold is None else {"recon_threshold": args.recon_threshold or None}),
    )


def run(args: argparse.Namespace) -> int:
    check_writable([args.out] + ([args.save_pretrained] if args.save_pretrained else []))  # before any work

    from ..training.trainer import train

    result = train(config_from_args(args))
    if result.preempted:
        return exit_code(result.stopped_by)  # the trainer logged where it stopped; --resume continues
    if result.history and int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1]
        top1 = f", eval top-1 {last['eval_top1']:.4f}" if "eval_top1" in last else ""
        for other, name in (("trained", "trained weights"), ("ema", "EMA")):
            if f"eval_{other}_top1" in last:
                top1 += f" ({name}: {last[f'eval_{other}_top1']:.4f})"
        if "recon_rel_error" in last:
            top1 += f", reconstruction error {last['recon_rel_error']:.1e} (floor {last['recon_floor']:.1e})"
        best = f"{result.best_top1:.4f}" if result.best_top1 >= 0 else "n/a"
        print(
            f"epoch {last['epoch']}: train loss {last['loss']:.4f}{top1}; best eval top-1 {best}; run folder {args.out}"
        )
    return 0
