"""The engine of ``irevnet train``: one process or many (torchrun / DDP), resumable bit for bit.

A run lives in one folder ``RUN``::

    RUN/config.json     the resolved configuration (recipe, model, run options)
    RUN/metrics.jsonl   one JSON object per finished epoch
    RUN/last.pt         written atomically after every epoch (weights + trainer state)
    RUN/best.pt         the epoch with the best eval top-1 so far

Invariants:

- Only rank 0 writes files and logs; every rank holds identical weights after each step
  (DDP averages gradients; BatchNorm buffers are broadcast from rank 0).
- Data order is a pure function of ``(seed, epoch)`` (a ``DistributedSampler`` re-seeded
  with ``set_epoch``, also with one process), so a checkpoint taken at an epoch boundary
  fixes every later batch.
- ``last.pt`` carries the optimizer, scheduler, grad scaler, epoch and every rank's RNG
  states; resuming from it continues exactly as if the run had not stopped (bit-identical
  on CPU with the same world size).
- The recipe's ``batch_size`` is the global batch: each rank loads
  ``batch_size / (world_size * accum)`` images per step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..checkpoint import CheckpointError, init_weights_from, read_checkpoint, save_model
from ..config import IRevNetConfig, get_preset
from ..data import DataSplits, build_datasets
from ..factory import create_model
from ..model import IRevNet
from .hybrid import HybridCriterion
from .loop import EpochStats, evaluate, train_epoch
from .recipes import Recipe, build_optimizer

__all__ = ["TrainConfig", "TrainResult", "train", "resolve_device", "AMP_DTYPES"]

log = logging.getLogger(__name__)

AMP_DTYPES: dict[str | None, torch.dtype | None] = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}
LAST, BEST, METRICS, CONFIG = "last.pt", "best.pt", "metrics.jsonl", "config.json"


@dataclass
class TrainConfig:
    """Everything that defines a run; saved (with the resolved model config) as ``RUN/config.json``.

    ``resume``: ``"no"`` starts fresh and refuses a folder that already holds ``last.pt``;
    ``"yes"`` requires ``RUN/last.pt``; ``"auto"`` resumes when it exists (what a job
    restarted by torchrun ``--max-restarts`` needs; a torchelastic restart implies it).
    ``eval_every``: evaluate every N epochs and after the last one (0: never).
    ``allow_tf32``: let Φ, Φ⁻¹ and the memory-saving recompute follow PyTorch's global TF32
    flags (:meth:`~irevnet.model.IRevNet.set_full_float32`); by default they run in IEEE float32.
    ``init_from``: a checkpoint or run folder whose weights start the run (fine-tuning; see
    :func:`irevnet.init_weights_from`); a resumed run continues from its own ``last.pt`` instead.
    """

    preset: str
    data: str
    out: str
    recipe: Recipe
    data_dir: str | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    resume: Literal["no", "yes", "auto"] = "no"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["bf16", "fp16"] | None = None
    channels_last: bool = False
    accum: int = 1
    workers: int = 0
    memory_efficient: bool = False
    allow_tf32: bool = False
    compile: str | None = None  # torch.compile mode for the blocks ("default", "reduce-overhead", ...); None: eager
    sync_bn: bool = False
    eval_every: int = 1
    synthetic_size: int = 2560
    progress: bool = True
    tensorboard: bool = False
    init_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["recipe"] = self.recipe.to_dict()
        d["model_overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_overrides.items()}
        return d


@dataclass
class TrainResult:
    """What :func:`train` returns on every rank: the trained (unwrapped) model and the epoch records.

    ``history`` holds every epoch of the run on rank 0 (earlier ones read back from
    ``metrics.jsonl`` when resumed), only this process's epochs on other ranks.
    """

    model: IRevNet
    history: list[dict[str, Any]]
    best_top1: float


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the GPU of this local rank when CUDA is present, else the CPU."""
    if spec not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {spec!r}; use auto, cpu or cuda")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but CUDA is not available")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


# -- RNG state as tensors and plain containers (checkpoints load with weights_only=True) ---
def _rng_state(device: torch.device) -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"]), p["gauss"]))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _seed_worker(worker_id: int, *, rank: int) -> None:
    """DataLoader workers: decorrelate ranks (torch hands every rank the same base seed)."""
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**63
    _seed_everything(seed)


# -- files (rank 0 only) --------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _Trainer:
    def __init__(self, cfg: TrainConfig, dist_ctx: _Dist) -> None:
        self.cfg, self.dist = cfg, dist_ctx
        self.run_dir = Path(cfg.out)
        self.device = resolve_device(cfg.device, dist_ctx.local_rank)
        self.amp_dtype = AMP_DTYPES[cfg.amp]
        recipe = cfg.recipe
        for name, value, least in (("accum", cfg.accum, 1), ("eval_every", cfg.eval_every, 0),
                                   ("workers", cfg.workers, 0)):
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        denom = dist_ctx.world_size * cfg.accum
        if recipe.batch_size % denom:
            raise ValueError(f"batch_size {recipe.batch_size} is not divisible by world_size x accum = {denom}")
        self.batch_per_rank = recipe.batch_size // denom

        _seed_everything(cfg.seed)  # identical initial weights on every rank
        # The preset with the user's overrides: images become inputs through its data config,
        # synthetic data takes its shape and classes.
        preset = get_preset(cfg.preset).replace(**cfg.model_overrides)
        self.data: DataSplits = build_datasets(cfg.data, cfg.data_dir, config=preset,
                                               synthetic_size=cfg.synthetic_size)
        self.model = self._build_model(preset)
        # Per-rank streams from here on (dropout, augmentation): ranks see different data.
        _seed_everything(cfg.seed + 7919 * dist_ctx.rank)

        self.sampler = DistributedSampler(self.data.train, num_replicas=dist_ctx.world_size, rank=dist_ctx.rank,
                                          shuffle=True, seed=cfg.seed)
        pin = self.device.type == "cuda"
        self.loader = DataLoader(self.data.train, batch_size=self.batch_per_rank, sampler=self.sampler,
                                 num_workers=cfg.workers, pin_memory=pin,
                                 worker_init_fn=partial(_seed_worker, rank=dist_ctx.rank))
        # Each rank evaluates a disjoint shard; the sums are all-reduced (exact, no padding).
        shard = Subset(self.data.eval, range(dist_ctx.rank, len(self.data.eval), dist_ctx.world_size))
        self.eval_loader = DataLoader(shard, batch_size=self.batch_per_rank * cfg.accum,
                                      num_workers=cfg.workers, pin_memory=pin)
        steps_per_epoch = math.ceil(len(self.loader) / cfg.accum)
        self.optimizer, self.scheduler, self.per_batch = build_optimizer(self.model.parameters(), recipe,
                                                                         steps_per_epoch)
        # The hybrid objective reads Φ from a hook on the head, so it sees through DDP and memory saving.
        self.criterion = (HybridCriterion(self.model, recipe.nll_weight) if recipe.nll_weight
                          else torch.nn.functional.cross_entropy)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.net: nn.Module = self.model
        if dist_ctx.enabled:
            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if pin else None)

    def _build_model(self, preset: IRevNetConfig) -> IRevNet:
        cfg, data = self.cfg, self.data
        for key in ("num_classes", "input_shape"):
            # An explicit override that contradicts the data would fail later, deep in the loss.
            if key in cfg.model_overrides and getattr(preset, key) != getattr(data, key):
                raise ValueError(f"--model {key}={getattr(preset, key)} contradicts --data {cfg.data}, "
                                 f"which has {key} {getattr(data, key)}")
        kwargs: dict[str, Any] = {"dropout": cfg.recipe.dropout}
        if data.num_classes != preset.num_classes:
            log.info("%s has %d classes: building %s with num_classes=%d", cfg.data, data.num_classes,
                     cfg.preset, data.num_classes)
            kwargs["num_classes"] = data.num_classes
        if data.input_shape != preset.input_shape:
            kwargs["input_shape"] = data.input_shape
        kwargs.update(cfg.model_overrides)
        model = create_model(cfg.preset, memory_efficient=cfg.memory_efficient, **kwargs)
        model.set_full_float32(not cfg.allow_tf32)
        if cfg.init_from:  # every rank reads the same weights; a resumed run then restores its own
            init_weights_from(model, cfg.init_from)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_bn:
            if cfg.memory_efficient:
                # The recompute normalizes with local batch statistics (see docs/memory.md).
                raise ValueError("--sync-bn cannot be combined with --memory-efficient (SyncBatchNorm is not "
                                 "supported by the memory-saving backward); drop one of the two flags")
            if not (self.dist.enabled and self.device.type == "cuda"):
                raise ValueError("--sync-bn needs several processes on CUDA devices (SyncBatchNorm has no CPU kernel)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # returns the same IRevNet, BNs swapped
        if cfg.compile is not None:
            model.compile_blocks(mode=cfg.compile)  # CompileUnavailableError here, before any step
        return model

    # -- state ------------------------------------------------------------------------
    def _gather_rng(self) -> list[dict[str, Any]]:
        state = _rng_state(self.device)
        if not self.dist.enabled:
            return [state]
        states: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(states, state)
        return states

    def _trainer_state(self, epoch: int, best_top1: float) -> dict[str, Any]:
        return {
            "epoch": epoch,  # epochs completed
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self._gather_rng(),  # one entry per rank
            "world_size": self.dist.world_size,
            "best_top1": best_top1,
            # The data order is DistributedSampler(seed).set_epoch(epoch), epoch as above.
            "data_order": {"sampler_seed": self.sampler.seed},
        }

    def _resume_path(self) -> Path | None:
        last = self.run_dir / LAST
        mode = self.cfg.resume
        # torchrun restarted us after a failure: continue, never start over. The count is per
        # node (healthy nodes keep 0), so all ranks agree on the maximum.
        restarted = torch.tensor([int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))], device=self.device)
        if self.dist.enabled:
            dist.all_reduce(restarted, op=dist.ReduceOp.MAX)
        if mode == "no" and restarted.item() > 0:
            mode = "auto"
        if mode == "yes" and not last.is_file():
            raise FileNotFoundError(f"--resume: {last} does not exist (use --resume auto to start fresh when absent)")
        if mode == "no" and last.is_file():
            raise ValueError(f"{self.run_dir} already holds a run ({last}); pass --resume to continue it "
                                  "or choose another --out")
        return last if mode != "no" and last.is_file() else None

    def _restore(self, path: Path) -> tuple[int, float]:
        payload = read_checkpoint(path)
        saved = IRevNetConfig.from_dict(payload["config"])
        if saved != self.model.config:
            raise CheckpointError(f"{path} was trained with model {saved.to_dict()}, "
                                  f"but this run builds {self.model.config.to_dict()}")
        state = payload.get("trainer")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} holds weights only (no trainer state); it cannot be resumed")
        recipe = self.cfg.recipe.to_dict()
        # A recipe field added after the checkpoint was written (nll_weight) had its default there.
        saved_recipe = {"nll_weight": 0.0, **payload.get("recipe", {})}
        # The optimizer and scheduler states carry the old lr, milestones and step count,
        # so a changed recipe would be silently ignored; only more epochs of a step schedule resume.
        changed = sorted(k for k in recipe if saved_recipe.get(k) != recipe[k]
                         and not (k == "epochs" and recipe["schedule"] == "step"))
        if changed:
            raise CheckpointError(
                f"{path} was trained with a different recipe ({', '.join(f'{k}: {saved_recipe.get(k)!r} -> {recipe[k]!r}' for k in changed)}); "
                "resume with the same settings, or start a new run with --out")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.seed = state["data_order"]["sampler_seed"]
        if state["world_size"] == self.dist.world_size:
            _set_rng_state(state["rng"][self.dist.rank], self.device)
        else:
            log.warning("%s was written by %d processes, this run has %d: RNG streams are re-seeded, so the "
                        "run is not bit-identical to an uninterrupted one", path, state["world_size"],
                        self.dist.world_size)
            _seed_everything(self.cfg.seed + 7919 * self.dist.rank + 104729 * state["epoch"])
        return int(state["epoch"]), float(state["best_top1"])

    # -- loop -------------------------------------------------------------------------
    def _reduce(self, stats: EpochStats) -> EpochStats:
        """Sum the per-rank statistics over all ranks (exact counts, slowest rank's time)."""
        if not self.dist.enabled:
            return stats
        t = torch.tensor([stats.loss * stats.samples, stats.top1 * stats.samples, stats.top5 * stats.samples,
                          stats.samples, stats.seconds], dtype=torch.float64, device=self.device)
        secs = t[4:].clone()
        dist.all_reduce(t)
        dist.all_reduce(secs, op=dist.ReduceOp.MAX)
        n = max(t[3].item(), 1.0)
        return EpochStats(t[0].item() / n, round(t[1].item()) / n, round(t[2].item()) / n, int(t[3].item()),
                          secs.item())

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics (DDP only syncs them at the next forward).

        Each rank's last forward updated its running stats with its own batch; after this,
        the whole state is identical on all ranks, as checkpointed.
        """
        if self.dist.enabled:
            for buf in self.model.buffers():
                dist.broadcast(buf, src=0)

    def _write_config(self) -> None:
        doc = {"train": self.cfg.to_dict(), "model": self.model.config.to_dict(),
               "parameters": self.model.num_parameters(), "world_size": self.dist.world_size,
               "batch_per_rank": self.batch_per_rank, "device": str(self.device),
               "train_images": len(self.data.train), "eval_images": len(self.data.eval),
               "torch": torch.__version__}
        _atomic_write_text(self.run_dir / CONFIG, json.dumps(doc, indent=2) + "\n")

    def fit(self, on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> TrainResult:
        cfg, main = self.cfg, self.dist.is_main
        resume_from = self._resume_path()
        start, best = self._restore(resume_from) if resume_from else (0, -1.0)
        metrics_path = self.run_dir / METRICS
        history: list[dict[str, Any]] = []
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()
            # Drop records of epochs after the checkpoint (killed between the two writes).
            history = [r for r in _read_metrics(metrics_path) if r["epoch"] <= start] if resume_from else []
            _atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
        if resume_from is not None:
            log.info("resuming %s from %s at epoch %d/%d", self.run_dir, resume_from, start, cfg.recipe.epochs)
        writer = self._tensorboard() if main and cfg.tensorboard else None
        log.info("training %s (%s parameters) on %s: %d images, %d process(es) x %d per batch x accum %d, %s",
                 cfg.preset, f"{self.model.num_parameters():,}", cfg.data, len(self.data.train),
                 self.dist.world_size, self.batch_per_rank, cfg.accum, self.device)
        try:
            for epoch in range(start, cfg.recipe.epochs):
                record = self._epoch(epoch)
                self._sync_buffers()
                do_eval = cfg.eval_every > 0 and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.recipe.epochs)
                if do_eval:
                    # The bare model: DDP's forward is a collective, and shards may differ by a batch.
                    ev = self._reduce(evaluate(self.model, self.eval_loader, device=self.device,
                                               amp_dtype=self.amp_dtype, channels_last=cfg.channels_last))
                    record.update(eval_loss=ev.loss, eval_top1=ev.top1, eval_top5=ev.top5)
                is_best = do_eval and record["eval_top1"] > best
                best = record["eval_top1"] if is_best else best
                state = self._trainer_state(epoch + 1, best)  # collective: every rank takes part
                if main:
                    self._save(epoch, record, state, is_best, writer)
                history.append(record)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
        finally:
            if writer is not None:
                writer.close()
        return TrainResult(self.model, history, best)

    def _epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        stats = self._reduce(train_epoch(
            self.net, self.loader, self.optimizer, device=self.device,
            scheduler=self.scheduler if self.per_batch else None, accum=cfg.accum, amp_dtype=self.amp_dtype,
            scaler=self.scaler if self.scaler.is_enabled() else None, channels_last=cfg.channels_last,
            progress=cfg.progress and self.dist.is_main, desc=f"epoch {epoch + 1}/{cfg.recipe.epochs}",
            criterion=self.criterion))
        if not self.per_batch:
            self.scheduler.step()
        return {"epoch": epoch + 1, "loss": stats.loss, "top1": stats.top1, "top5": stats.top5, "lr": lr,
                "img_per_s": stats.images_per_second, "epoch_seconds": stats.seconds, "samples": stats.samples}

    def _save(self, epoch: int, record: dict[str, Any], state: dict[str, Any], is_best: bool, writer: Any) -> None:
        with (self.run_dir / METRICS).open("a") as f:
            f.write(json.dumps(record) + "\n")
        extras = {"trainer": state, "recipe": self.cfg.recipe.to_dict()}
        # best.pt before last.pt: if we die in between, the resumed run redoes this epoch
        # (deterministically) and rewrites best.pt; the reverse order could lose it.
        if is_best:
            save_model(self.model, self.run_dir / BEST, **extras)
        save_model(self.model, self.run_dir / LAST, **extras)
        if writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    writer.add_scalar(key, value, epoch + 1)
        ev = f" | eval top1 {record['eval_top1']:.4f} top5 {record['eval_top5']:.4f}" if "eval_top1" in record else ""
        log.info("epoch %d/%d: loss %.4f top1 %.4f lr %.3g | %.0f img/s, %.1f s%s", epoch + 1,
                 self.cfg.recipe.epochs, record["loss"], record["top1"], record["lr"], record["img_per_s"],
                 record["epoch_seconds"], ev)

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RuntimeError("--tensorboard needs the tensorboard package: pip install 'irevnet[tensorboard]'") from None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))


def _init_distributed(device_spec: str) -> tuple[_Dist, bool]:
    """Join the process group torchrun describes in the environment; ``(context, we_created_it)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist(), False
    created = not dist.is_initialized()
    if created:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = resolve_device(device_spec, local_rank).type == "cuda"
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))), created


def train(cfg: TrainConfig, *, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; under torchrun, with DDP over all ranks.

    ``on_epoch_end(epoch, record)`` is called on every rank after the epoch's files are written.
    """
    dist_ctx, created = _init_distributed(cfg.device)
    if not dist_ctx.is_main:
        logging.getLogger("irevnet").setLevel(logging.WARNING)  # rank 0 alone logs
    try:
        return _Trainer(cfg, dist_ctx).fit(on_epoch_end)
    finally:
        if created:
            dist.destroy_process_group()
