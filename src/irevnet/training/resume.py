"""Saving and restoring a run: ``last.pt`` (weights + trainer state), ``best.pt``, and whether a
run folder is to be resumed. The state is everything :func:`~irevnet.training.trainer.train`
needs to continue exactly: optimizer, schedule, grad scaler, position, every rank's RNG
states, the data order's seed, and the weights beside the checkpoint's model (with an EMA)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..io.formats import read_checkpoint
from .build import Parts
from .distributed import DistContext, gather_objects, max_int
from .ema import set_updates
from .optim import load_schedule
from .options import TrainConfig
from .run_dir import RunDir
from .state import Progress, check_resumable, rng_state, seed_everything, set_rng_state

__all__ = ["restore", "resume_path", "save"]

log = logging.getLogger(__name__)


def resume_path(run: RunDir, mode: str, ctx: DistContext, parts: Parts) -> Path | None:
    """``RUN/last.pt`` when the run continues, None when it starts fresh (``mode``: TrainConfig.resume)."""
    last = run.last
    # torchrun restarted us after a failure: continue, never start over. The count is per
    # node (healthy nodes keep 0), so all ranks agree on the maximum.
    if mode == "no" and max_int(int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")), ctx, parts.device) > 0:
        mode = "auto"
    if mode == "yes" and not last.is_file():
        raise FileNotFoundError(f"cannot resume: {last} does not exist (resume 'auto' starts fresh when it is absent)")
    if mode == "no" and last.is_file():
        raise ConfigError(
            f"{run.path} already holds a run ({last}); resume it or choose another output folder", option="resume"
        )
    return last if mode != "no" and last.is_file() else None


def _beside(parts: Parts) -> dict[str, Any]:
    """With an EMA, the weights that are not the checkpoint's model, under the trainer-state key
    ``"model"`` (the trained weights) or ``"ema"``."""
    other = {name: net for name, net in parts.weights.items() if name != parts.written}
    return {"model" if name == "trained" else "ema": net for name, net in other.items()}


def save(
    run: RunDir, parts: Parts, progress: Progress, cfg: TrainConfig, ctx: DistContext, *, best: bool = False
) -> None:
    """Write ``last.pt`` (and ``best.pt`` first when ``best``); collective, rank 0 writes."""
    state = {
        **progress.to_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng": gather_objects(rng_state(parts.device), ctx),  # one entry per rank
        "world_size": ctx.world_size,
        # The data order: ResumableSampler(seed), epoch and batch as above.
        "data_order": {"sampler_seed": parts.sampler.seed, "val_split": cfg.val_split},
        **{key: {k: v.detach().cpu() for k, v in net.state_dict().items()} for key, net in _beside(parts).items()},
    }
    if ctx.is_main:
        # With an EMA, both files say which weights they hold as their model.
        weights = {"weights": parts.written} if parts.ema is not None else {}
        # best.pt before last.pt: if we die in between, the resumed run redoes this epoch
        # (deterministically) and rewrites best.pt; the reverse order could lose it.
        if best:
            run.save_best(parts.written_model, **weights)
        run.save_last(parts.written_model, trainer=state, recipe=cfg.recipe.to_dict(), **weights)


def restore(path: Path, parts: Parts, cfg: TrainConfig, ctx: DistContext) -> Progress:
    """Load ``last.pt`` into ``parts`` (weights, optimizer, schedule, scaler, RNG); its position."""
    payload = read_checkpoint(path)
    state = check_resumable(path, payload, parts.model.config, cfg.recipe.to_dict())
    parts.written_model.load_state_dict(payload["state_dict"])
    for key, net in _beside(parts).items():
        if key not in state:
            raise CheckpointError(
                f"{path} holds no {'trained' if key == 'model' else 'EMA'} weights in its "
                "trainer state: it was written with another ema_as_model setting",
                option="ema_as_model",
            )
        net.load_state_dict(state[key])
    progress = Progress.from_state(state)
    if parts.ema is not None:
        set_updates(parts.ema, progress.step - progress.skipped)  # every step not skipped updated it
    parts.optimizer.load_state_dict(state["optimizer"])
    lr = parts.optimizer.param_groups[0]["lr"]
    epochs = payload["recipe"]["epochs"]
    load_schedule(parts.scheduler, state["scheduler"], stretch=epochs != cfg.recipe.epochs)
    if epochs != cfg.recipe.epochs:
        log.info(
            "the run had %d epochs, now %d: %s; lr %.3g -> %.3g at step %d",
            epochs,
            cfg.recipe.epochs,
            f"the {cfg.recipe.schedule} schedule is stretched over {cfg.recipe.epochs} epochs (the remaining "
            f"steps follow a {cfg.recipe.epochs}-epoch run's)"
            if parts.per_step
            else "the step schedule keeps its milestones (epochs)",
            lr,
            parts.optimizer.param_groups[0]["lr"],
            progress.step,
        )
    parts.scaler.load_state_dict(state["scaler"])
    if state["data_order"]["sampler_seed"] != parts.sampler.seed:
        raise ConfigError(
            f"{path} was trained with seed {state['data_order']['sampler_seed']}, this run has "
            f"{parts.sampler.seed}; resume with the same seed",
            option="seed",
        )
    if state["data_order"].get("val_split") != cfg.val_split:  # another split: other training images
        raise ConfigError(
            f"{path} was trained with val_split {state['data_order'].get('val_split')}, this run "
            f"has {cfg.val_split}; resume with the same split",
            option="val_split",
        )
    if state["world_size"] == ctx.world_size:
        set_rng_state(state["rng"][ctx.rank], parts.device)
    else:
        log.warning(
            "%s was written by %d processes, this run has %d: RNG streams are re-seeded and the "
            "epoch restarts from its beginning, so the run is not bit-identical to an uninterrupted "
            "one",
            path,
            state["world_size"],
            ctx.world_size,
        )
        seed_everything(cfg.seed + 7919 * ctx.rank + 104729 * progress.epoch)
        # Positions inside the epoch belong to the old sharding.
        progress.start_epoch(progress.epoch)
    return progress
