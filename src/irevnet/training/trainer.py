"""The engine of ``irevnet train``: one process or many (torchrun / DDP), resumable bit for bit.

The pieces live in their own modules: the run folder (:mod:`.run_dir`), RNG and position
state (:mod:`.state`), the collectives (:mod:`.distributed`), device and AMP
(:mod:`.device`), the data order (:mod:`.data_loading`), stop signals (:mod:`.preemption`)
and the optimizer step (:mod:`.loop`). This module runs the loop.

Invariants:

- Only rank 0 writes files and logs; every rank holds identical weights after each step
  (DDP averages gradients; BatchNorm buffers are broadcast from rank 0).
- The batches of epoch ``e`` and their augmentation are a pure function of
  ``(seed, e, rank, world_size)`` (:mod:`.data_loading`), so a checkpoint taken anywhere,
  mid-epoch included, fixes every later batch.
- ``last.pt`` carries the optimizer, scheduler, grad scaler, the position (epoch, micro-batch,
  optimizer step), every rank's RNG states and the EMA; resuming from it continues exactly
  as if the run had not stopped (bit-identical on CPU with the same world size). ``best.pt``
  holds the model alone (no trainer state), so reading it never loads optimizer momentum.
- Ranks take every stop decision together (a stop signal, a non-finite loss): one small
  all-reduce per optimizer step.
- The recipe's ``batch_size`` is the global batch: each rank loads
  ``batch_size / (world_size * accum)`` images per step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder
from tqdm.auto import tqdm

from ..compile import mark_step
from ..precision import full_float32
from ..config import IRevNetConfig, get_preset
from ..data import DataSplits, build_datasets
from ..data.registry import AUGMENTATION
from ..data.transforms import eval_transform, train_transform
from ..errors import CheckpointError, ConfigError, OutOfMemoryError, TrainingDivergedError
from ..io.formats import read_checkpoint
from ..io.load import init_weights_from, load_model, save_pretrained
from ..model import IRevNet
from .data_loading import ResumableSampler, default_workers, train_loader
from .device_decode import DeviceDecodedLoader, DeviceDecoder, EncodedImages, collate_encoded
from .device import amp_dtype, grad_scaler, resolve_device
from .distributed import (DistContext, any_flags, broadcast_buffers, gather_objects, init_distributed, max_int,
                          reduce_stats)
from .ema import ModelEma
from .loop import EpochStats, evaluate, forward_backward, grads_finite, micro_batch_groups, optimizer_step
from .monitor import DEFAULT_RECON_THRESHOLD, ReconstructionMonitor
from .optim import build_criterion, build_optimizer
from .preemption import StopSignals
from .recipes import Recipe
from .run_dir import RunDir
from .state import Progress, check_resumable, rng_state, seed_everything, set_rng_state

__all__ = ["TrainConfig", "TrainResult", "train", "resolve_model_config"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved (with the resolved model config) as ``RUN/config.json``.

    ``resume``: ``"no"`` starts fresh and refuses a folder that already holds ``last.pt``;
    ``"yes"`` requires ``RUN/last.pt``; ``"auto"`` resumes when it exists (what a job
    restarted by torchrun ``--max-restarts`` or requeued by a scheduler needs; a torchelastic
    restart implies it). ``eval_every``: evaluate every N epochs and after the last one
    (0: never). ``save_every``: also write ``last.pt`` every N optimizer steps (0: at epoch
    ends only). ``skip_nonfinite``: optimizer steps with a non-finite loss or gradient that
    may be skipped before the run stops (0: stop at the first). ``workers``: loader processes
    per rank (``None``: :func:`~irevnet.training.data_loading.default_workers`). ``decode_on``:
    ``"device"`` decodes ImageFolder JPEGs and augments them on the training device
    (:mod:`~irevnet.training.device_decode`; nvJPEG on CUDA), the workers only read files.
    ``full_float32``: train in IEEE float32: every step's forward and backward and the evaluation
    run under :func:`irevnet.precision.full_float32`; by default they follow PyTorch's float32
    flags (TF32 convolutions on Ampere and newer GPUs), while Φ, Φ⁻¹ and the reconstruction
    monitor are IEEE float32 either way. ``allow_tf32`` (kept for old configurations; training
    follows the flags by default): the returned model's Φ and Φ⁻¹ follow them too
    (:meth:`~irevnet.model.IRevNet.set_full_float32`).
    ``init_from``: a checkpoint or run folder whose weights start the run (fine-tuning; see
    :func:`irevnet.init_weights_from`); a resumed run continues from its own ``last.pt`` instead.
    ``ema_as_model``: when the recipe keeps an EMA of the weights, the EMA is the model that is
    evaluated and written to the checkpoints (the trained weights ride in the trainer state);
    False swaps the two.
    ``recon_threshold``: at each evaluation rank 0 measures the reconstruction error of the
    first 64 eval images (:class:`~irevnet.training.monitor.ReconstructionMonitor`) and warns
    once when it exceeds this (None: never warns).
    ``save_pretrained``: when the run completes, also write its model -- ``best.pt``'s, else
    (never evaluated) the final one -- as a model folder there (``config.json`` +
    ``model.safetensors``, see :meth:`~irevnet.model.IRevNet.save_pretrained`).
    ``val_split``: imagefolder data in one tree of class folders: this fraction of each class is
    held out as the evaluation split (:func:`~irevnet.data.imagefolder.held_out_indices`, the same
    images whatever ``seed``); recorded in ``config.json`` and ``last.pt``, so that ``irevnet eval``
    and a resumed run use the same split. ``data_dir`` is recorded as an absolute path.
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
    workers: int | None = None
    decode_on: Literal["workers", "device"] = "workers"
    memory_efficient: bool = False
    full_float32: bool = False
    allow_tf32: bool = False
    compile: str | None = None  # torch.compile mode for the blocks ("default", "reduce-overhead", ...); None: eager
    recon_threshold: float | None = DEFAULT_RECON_THRESHOLD
    sync_bn: bool = False
    eval_every: int = 1
    save_every: int = 0
    skip_nonfinite: int = 0
    ema_as_model: bool = True
    synthetic_size: int = 2560
    progress: bool = True
    tensorboard: bool = False
    init_from: str | None = None
    save_pretrained: str | None = None
    val_split: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["recipe"] = self.recipe.to_dict()
        d["model_overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_overrides.items()}
        return d


@dataclass
class TrainResult:
    """What :func:`train` returns on every rank: the trained (unwrapped) model and the epoch records.

    ``model`` is the model as written to the checkpoints: the EMA when the recipe keeps one.
    ``history`` holds every epoch of the run on rank 0 (earlier ones read back from
    ``metrics.jsonl`` when resumed), only this process's epochs on other ranks.
    ``preempted``: a stop signal ended the run early; ``RUN/last.pt`` holds its position.
    """

    model: IRevNet
    history: list[dict[str, Any]]
    best_top1: float
    preempted: bool = False
    step: int = 0


def resolve_model_config(cfg: TrainConfig, data: DataSplits | None = None) -> IRevNetConfig:
    """The configuration of the model ``cfg`` trains: the preset, the data's classes (with their
    names) and input shape, the user's overrides, and the recipe's dropout -- resolved here, once.

    Without ``data``: the configuration before the data is known (synthetic data takes its
    shape and classes from it).
    """
    overrides = dict(cfg.model_overrides)
    if "dropout" in overrides:
        raise ConfigError("dropout is a recipe field (the recipe is its one source); set it in the recipe, "
                          "not as a model override", option="dropout")
    config = get_preset(cfg.preset).replace(**overrides)
    if data is None:
        return config
    for key in ("num_classes", "input_shape"):
        # An explicit override that contradicts the data would fail later, deep in the loss.
        if key in overrides and getattr(config, key) != getattr(data, key):
            raise ConfigError(f"model {key}={getattr(config, key)} contradicts data set {cfg.data}, which has "
                              f"{key} {getattr(data, key)}", option=key)
    if data.num_classes != config.num_classes:
        log.info("%s has %d classes: building %s with num_classes=%d", cfg.data, data.num_classes, cfg.preset,
                 data.num_classes)
    return config.replace(num_classes=data.num_classes, input_shape=tuple(data.input_shape),
                          dropout=cfg.recipe.dropout, label_names=data.class_names)


class _Trainer:
    def __init__(self, cfg: TrainConfig, ctx: DistContext) -> None:
        if cfg.data_dir is not None:  # config.json names the folder for eval, whatever its working directory
            cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(cfg.data_dir))
        self.cfg, self.dist = cfg, ctx
        self.run = RunDir(cfg.out)
        self.device = resolve_device(cfg.device, ctx.local_rank)
        self.amp_dtype = amp_dtype(cfg.amp)
        recipe = cfg.recipe
        for name, value, least in (("accum", cfg.accum, 1), ("eval_every", cfg.eval_every, 0),
                                   ("workers", 0 if cfg.workers is None else cfg.workers, 0),
                                   ("save_every", cfg.save_every, 0), ("skip_nonfinite", cfg.skip_nonfinite, 0)):
            if value < least:
                raise ConfigError(f"{name} must be >= {least}, got {value}", option=name)
        if cfg.save_pretrained is not None:
            folder = Path(cfg.save_pretrained)
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"{folder} is a file; save_pretrained names the model folder to write",
                                  option="save_pretrained")
            if folder.resolve() == self.run.path.resolve():
                raise ConfigError("save_pretrained cannot be the run folder itself (its config.json is the run's); "
                                  f"use e.g. {self.run.path / 'model'}", option="save_pretrained")
        if cfg.full_float32 and cfg.allow_tf32:
            raise ConfigError("full_float32 (train in IEEE float32) contradicts allow_tf32; choose one",
                              option="full_float32")
        denom = ctx.world_size * cfg.accum
        if recipe.batch_size % denom:
            raise ConfigError(f"batch_size {recipe.batch_size} is not divisible by world_size x accum = {denom}",
                              option="batch_size")
        self.batch_per_rank = recipe.batch_size // denom

        seed_everything(cfg.seed)  # identical initial weights on every rank
        draft = resolve_model_config(cfg)
        # Images become inputs through its data config; synthetic data takes its shape and classes.
        self.data: DataSplits = build_datasets(cfg.data, cfg.data_dir, config=draft, synthetic_size=cfg.synthetic_size,
                                               val_split=cfg.val_split)
        self.model = self._build_model(resolve_model_config(cfg, self.data))
        self.ema = ModelEma(self.model, recipe.ema_decay) if recipe.ema_decay > 0 else None
        # Per-rank streams from here on (dropout): ranks see different masks.
        seed_everything(cfg.seed + 7919 * ctx.rank)

        self.workers = default_workers(cfg.data, ctx.local_world_size) if cfg.workers is None else cfg.workers
        self.sampler = ResumableSampler(self.data.train, rank=ctx.rank, world_size=ctx.world_size, seed=cfg.seed)
        self.loader, self.eval_loader = self._loaders()
        # A fixed held-out batch whose reconstruction error is recorded at each evaluation (rank 0).
        self.monitor = (ReconstructionMonitor.from_dataset(self.data.eval, threshold=cfg.recon_threshold,
                                                           device=self.device)
                        if ctx.is_main and cfg.eval_every > 0 else None)
        self.batches_per_epoch = math.ceil(self.sampler.num_samples / self.batch_per_rank)
        steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.accum)
        self.optimizer, self.scheduler, self.per_step = build_optimizer(self.model, recipe, steps_per_epoch)
        self.criterion = build_criterion(recipe, self.model)
        self.scaler = grad_scaler(self.device, cfg.amp)
        self.net: nn.Module = self.model
        if ctx.enabled:
            cuda = self.device.type == "cuda"
            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if cuda else None)
        self.progress = Progress()
        self.last_saved: tuple[Path, int] | None = None  # the last good checkpoint and its optimizer step

    def _mark_step(self) -> None:
        mark_step(self.model.compile_spec, self.device)  # CUDA graphs (--compile reduce-overhead): a new step

    def _precision(self) -> AbstractContextManager[None]:
        """The float32 arithmetic of training and evaluation: PyTorch's flags, or IEEE with ``full_float32``."""
        return full_float32() if self.cfg.full_float32 else nullcontext()

    def _loaders(self) -> tuple[Iterable[tuple[Tensor, Tensor]], Iterable[tuple[Tensor, Tensor]]]:
        """The training loader (resumable order, seeded augmentation) and this rank's evaluation loader."""
        cfg, ctx, pin = self.cfg, self.dist, self.device.type == "cuda"
        train_set, eval_set, collate = self.data.train, self.data.eval, None
        if cfg.decode_on == "device":
            if not isinstance(train_set, ImageFolder):
                raise ConfigError(f"decoding on the device reads image files: it needs imagefolder data, not "
                                  f"{cfg.data}", option="decode_on")
            if self.device.type != "cuda":
                log.warning("decoding JPEGs in the training process on %s: slower than loader workers (decode_on="
                            "'device' is meant for CUDA, where nvJPEG decodes)", self.device)
            train_set, eval_set, collate = EncodedImages(train_set), EncodedImages(eval_set), collate_encoded
        loader = train_loader(train_set, self.sampler, batch_size=self.batch_per_rank, workers=self.workers,
                              pin_memory=pin, collate_fn=collate, defer_seeding=collate is not None)
        # Each rank evaluates a disjoint shard; the sums are all-reduced (exact, no padding).
        shard = Subset(eval_set, range(ctx.rank, len(eval_set), ctx.world_size))
        # Its own generator: drawing the workers' base seed must not advance the global RNG (dropout).
        eval_loader = DataLoader(shard, batch_size=self.batch_per_rank * cfg.accum, num_workers=self.workers,
                                 pin_memory=pin, persistent_workers=self.workers > 0, collate_fn=collate,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        if collate is None:
            return loader, eval_loader
        config = self.model.config
        return (DeviceDecodedLoader(loader, DeviceDecoder(train_transform(config, augment=AUGMENTATION[cfg.data],
                                                                          tensor_input=True), self.device)),
                DeviceDecodedLoader(eval_loader, DeviceDecoder(eval_transform(config, tensor_input=True), self.device)))

    def _build_model(self, config: IRevNetConfig) -> IRevNet:
        cfg = self.cfg
        model = IRevNet(config)
        if cfg.memory_efficient:
            model.set_memory_efficient(True)
        model.set_full_float32(not cfg.allow_tf32)
        if cfg.init_from:  # every rank reads the same weights; a resumed run then restores its own
            init_weights_from(model, cfg.init_from)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_bn:
            if cfg.memory_efficient:
                # The recompute normalizes with local batch statistics (see docs/memory.md).
                raise ConfigError("sync_bn cannot be combined with memory_efficient (SyncBatchNorm is not supported "
                                  "by the memory-saving backward); drop one of the two", option="sync_bn")
            if not (self.dist.enabled and self.device.type == "cuda"):
                raise ConfigError("sync_bn needs several processes on CUDA devices (SyncBatchNorm has no CPU kernel)",
                                  option="sync_bn")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # returns the same IRevNet, BNs swapped
        if cfg.compile is not None:
            model.compile_blocks(mode=cfg.compile)  # CompileUnavailableError here, before any step
        return model

    @property
    def written_model(self) -> IRevNet:
        """The model evaluated and written to the checkpoints: the EMA when there is one (and ``ema_as_model``)."""
        return self.ema.module if self.ema is not None and self.cfg.ema_as_model else self.model

    @property
    def _weights_in_state(self) -> tuple[str, IRevNet] | None:
        """With an EMA, the weights that are not the checkpoint's model: ``("model", trained)`` or ``("ema", EMA)``."""
        if self.ema is None:
            return None
        return ("model", self.model) if self.cfg.ema_as_model else ("ema", self.ema.module)

    # -- state ------------------------------------------------------------------------
    def _trainer_state(self) -> dict[str, Any]:
        """Everything to continue the run (collective: every rank takes part)."""
        # With an EMA, the weights that are not the checkpoint's model ride in the state.
        beside: dict[str, Any] = {}
        if self._weights_in_state is not None:
            key, net = self._weights_in_state
            beside[key] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        return {
            **self.progress.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": gather_objects(rng_state(self.device), self.dist),  # one entry per rank
            "world_size": self.dist.world_size,
            # The data order: ResumableSampler(seed), epoch and batch as above.
            "data_order": {"sampler_seed": self.sampler.seed, "val_split": self.cfg.val_split},
            **beside,
        }

    def _resume_path(self) -> Path | None:
        last, mode = self.run.last, self.cfg.resume
        # torchrun restarted us after a failure: continue, never start over. The count is per
        # node (healthy nodes keep 0), so all ranks agree on the maximum.
        if mode == "no" and max_int(int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")), self.dist,
                                    self.device) > 0:
            mode = "auto"
        if mode == "yes" and not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist (resume 'auto' starts fresh when it is "
                                    "absent)")
        if mode == "no" and last.is_file():
            raise ConfigError(f"{self.run.path} already holds a run ({last}); resume it or choose another output "
                              "folder", option="resume")
        return last if mode != "no" and last.is_file() else None

    def _restore(self, path: Path) -> None:
        payload = read_checkpoint(path)
        state = check_resumable(path, payload, self.model.config, self.cfg.recipe.to_dict())
        self.written_model.load_state_dict(payload["state_dict"])
        if self._weights_in_state is not None:
            key, net = self._weights_in_state
            if key not in state:
                raise CheckpointError(f"{path} holds no {'trained' if key == 'model' else 'EMA'} weights in its "
                                      "trainer state: it was written with another ema_as_model setting",
                                      option="ema_as_model")
            net.load_state_dict(state[key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress.from_state(state)
        if state["data_order"]["sampler_seed"] != self.sampler.seed:
            raise ConfigError(f"{path} was trained with seed {state['data_order']['sampler_seed']}, this run has "
                              f"{self.sampler.seed}; resume with the same seed", option="seed")
        if state["data_order"].get("val_split") != self.cfg.val_split:  # another split: other training images
            raise ConfigError(f"{path} was trained with val_split {state['data_order'].get('val_split')}, this run "
                              f"has {self.cfg.val_split}; resume with the same split", option="val_split")
        if state["world_size"] == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank], self.device)
        else:
            log.warning("%s was written by %d processes, this run has %d: RNG streams are re-seeded and the "
                        "epoch restarts from its beginning, so the run is not bit-identical to an uninterrupted "
                        "one", path, state["world_size"], self.dist.world_size)
            seed_everything(self.cfg.seed + 7919 * self.dist.rank + 104729 * self.progress.epoch)
            # Positions inside the epoch belong to the old sharding.
            self.progress.start_epoch(self.progress.epoch)
        self.last_saved = (path, self.progress.step)

    def _save(self, *, best: bool = False) -> None:
        state = self._trainer_state()  # collective
        if self.dist.is_main:
            extras = {"trainer": state, "recipe": self.cfg.recipe.to_dict()}
            # best.pt before last.pt: if we die in between, the resumed run redoes this epoch
            # (deterministically) and rewrites best.pt; the reverse order could lose it.
            if best:
                self.run.save_best(self.written_model)
            self.run.save_last(self.written_model, **extras)
        self.last_saved = (self.run.last, self.progress.step)

    def _write_config(self) -> None:
        self.run.write_config({
            "train": self.cfg.to_dict(), "model": self.model.config.to_dict(),
            "parameters": self.model.num_parameters(), "world_size": self.dist.world_size,
            "batch_per_rank": self.batch_per_rank, "workers": self.workers, "device": str(self.device),
            "train_images": len(self.data.train), "eval_images": len(self.data.eval), "torch": torch.__version__})

    # -- loop -------------------------------------------------------------------------
    def fit(self, on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> TrainResult:
        cfg, main = self.cfg, self.dist.is_main
        resume_from = self._resume_path()
        if resume_from is not None:
            self._restore(resume_from)
        history: list[dict[str, Any]] = []
        if main:
            self.run.create()
            self._write_config()
            # Drop records of epochs after the checkpoint (killed between the two writes).
            history = self.run.truncate_metrics(self.progress.epoch)
        if resume_from is not None:
            log.info("resuming %s from %s at epoch %d/%d, step %d", self.run.path, resume_from,
                     self.progress.epoch + 1, cfg.recipe.epochs, self.progress.step)
        writer = self._tensorboard() if main and cfg.tensorboard else None
        log.info("training %s (%s parameters) on %s: %d images, %d process(es) x %d per batch x accum %d, "
                 "%d loader worker(s), %s", cfg.preset, f"{self.model.num_parameters():,}", cfg.data,
                 len(self.data.train), self.dist.world_size, self.batch_per_rank, cfg.accum, self.workers,
                 self.device)
        try:
            with StopSignals() as stop:
                while self.progress.epoch < cfg.recipe.epochs:
                    if not self._train_epoch(stop):
                        return self._preempted(stop, history)
                    record = self._finish_epoch(writer)
                    history.append(record)
                    if on_epoch_end is not None:
                        on_epoch_end(self.progress.epoch - 1, record)
                    if self._stop_requested(stop) and self.progress.epoch < cfg.recipe.epochs:
                        return self._preempted(stop, history, saved=True)
        except torch.OutOfMemoryError as e:
            raise OutOfMemoryError(
                f"out of memory on {self.device} with {self.batch_per_rank} images per process and step: "
                f"{str(e).splitlines()[0]}", batch_per_process=self.batch_per_rank, device=str(self.device)) from e
        finally:
            if writer is not None:
                writer.close()
        if main and cfg.save_pretrained:
            self._save_pretrained(cfg.save_pretrained)
        return TrainResult(self.written_model, history, self.progress.best_top1, step=self.progress.step)

    def _save_pretrained(self, folder: str) -> None:
        """Write the run's model (``best.pt``'s, else the final one) as a model folder."""
        best = self.run.best.is_file()
        save_pretrained(load_model(self.run.best) if best else self.written_model, folder)
        log.info("wrote the %s model to %s (config.json + model.safetensors)", "best" if best else "final", folder)

    def _stop_requested(self, stop: StopSignals) -> bool:
        return any_flags([stop.requested], self.dist, self.device)[0]

    def _preempted(self, stop: StopSignals, history: list[dict[str, Any]], saved: bool = False) -> TrainResult:
        if not saved:
            self._save()
        p = self.progress
        name = stop.received.name if stop.received is not None else "a stop signal on another rank"
        log.warning("stopped by %s at epoch %d, batch %d/%d (step %d): saved %s; continue with resume",
                    name, p.epoch + 1, p.batch, self.batches_per_epoch, p.step, self.run.last)
        return TrainResult(self.written_model, history, p.best_top1, preempted=True, step=p.step)

    def _train_epoch(self, stop: StopSignals) -> bool:
        """Train the rest of epoch ``progress.epoch``; False when a stop signal ended it early (saved)."""
        cfg, p = self.cfg, self.progress
        self.sampler.set_epoch(p.epoch, start=p.batch * self.batch_per_rank)
        self.net.train()
        start, seconds_before = time.perf_counter(), p.sums[4]
        remaining = math.ceil((self.batches_per_epoch - p.batch) / cfg.accum)
        bar = tqdm(micro_batch_groups(self.loader, cfg.accum), total=remaining, leave=False, unit="step",
                   desc=f"epoch {p.epoch + 1}/{cfg.recipe.epochs}", disable=not (cfg.progress and self.dist.is_main))
        self.optimizer.zero_grad(set_to_none=True)
        for group in bar:
            with self._precision():
                s = forward_backward(self.net, group, accum=cfg.accum, device=self.device, criterion=self.criterion,
                                     amp_dtype=self.amp_dtype, scaler=self.scaler if self.scaler.is_enabled() else None,
                                     channels_last=cfg.channels_last, before_step=self._mark_step)
            # With fp16 the GradScaler skips steps with inf/NaN gradients itself (and lowers its scale).
            bad = not s.loss_finite or (not self.scaler.is_enabled() and not grads_finite(self.model.parameters()))
            stop_now, bad = any_flags([stop.requested, bad], self.dist, self.device)
            if bad:
                self._nonfinite(s.loss_finite)
            optimizer_step(self.optimizer, scaler=self.scaler if self.scaler.is_enabled() else None,
                           scheduler=self.scheduler if self.per_step else None, skip=bad)
            if self.ema is not None and not bad:
                self.ema.update(self.model)
            p.batch += len(group)
            p.step += 1
            p.sums = [p.sums[0] + s.loss_sum, p.sums[1] + s.correct1, p.sums[2] + s.correct5, p.sums[3] + s.samples,
                      seconds_before + time.perf_counter() - start]
            if not bar.disable:
                n = max(p.sums[3], 1)
                bar.set_postfix(loss=f"{p.sums[0] / n:.3f}", acc=f"{p.sums[1] / n:.3f}",
                                img_s=f"{p.sums[3] * self.dist.world_size / max(p.sums[4], 1e-9):.0f}")
            if stop_now:
                bar.close()
                return False
            if cfg.save_every and p.step % cfg.save_every == 0 and p.batch < self.batches_per_epoch:
                self._save()
                log.info("step %d: saved %s", p.step, self.run.last)
        return True

    def _nonfinite(self, loss_finite: bool) -> None:
        p, cfg = self.progress, self.cfg
        what = "gradient" if loss_finite else "loss"
        where = f"step {p.step + 1} (epoch {p.epoch + 1}, batch {p.batch + 1}/{self.batches_per_epoch})"
        if p.skipped < cfg.skip_nonfinite:
            p.skipped += 1
            log.warning("non-finite %s at %s: step skipped (%d of %d allowed)", what, where, p.skipped,
                        cfg.skip_nonfinite)
            return
        if self.last_saved is None:
            kept = "no checkpoint has been written yet. Lower the learning rate"
        else:
            kept = (f"the last good checkpoint is {self.last_saved[0]} (step {self.last_saved[1]}), left intact. "
                    "Resume from it with a lower learning rate")
        allowed = f" after skipping {p.skipped} such step(s)" if cfg.skip_nonfinite else ""
        raise TrainingDivergedError(f"non-finite {what} at {where}{allowed}: the run stopped without saving; "
                                    f"{kept}, or allow skipping such steps", option="skip_nonfinite")

    def _finish_epoch(self, writer: Any) -> dict[str, Any]:
        """Epoch ``progress.epoch`` is trained: reduce its statistics, evaluate, log, save."""
        cfg, p = self.cfg, self.progress
        loss_sum, c1, c5, n, seconds = p.sums
        stats = reduce_stats(EpochStats(loss_sum / max(n, 1), c1 / max(n, 1), c5 / max(n, 1), int(n), seconds),
                             self.dist, self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        if not self.per_step:
            self.scheduler.step()
        broadcast_buffers(self.model, self.dist)
        if self.ema is not None:
            broadcast_buffers(self.ema.module, self.dist)
        epoch = p.epoch + 1
        record: dict[str, Any] = {"epoch": epoch, "loss": stats.loss, "top1": stats.top1, "top5": stats.top5,
                                  "lr": lr, "img_per_s": stats.images_per_second, "epoch_seconds": stats.seconds,
                                  "samples": stats.samples}
        if cfg.eval_every > 0 and (epoch % cfg.eval_every == 0 or epoch == cfg.recipe.epochs):
            # The bare model: DDP's forward is a collective, and shards may differ by a batch.
            with self._precision():
                ev = evaluate(self.written_model, self.eval_loader, device=self.device, amp_dtype=self.amp_dtype,
                              channels_last=cfg.channels_last, before_batch=self._mark_step,
                              desc=f"eval {epoch}/{cfg.recipe.epochs}", progress=cfg.progress and self.dist.is_main)
            ev = reduce_stats(ev, self.dist, self.device)
            record.update(eval_loss=ev.loss, eval_top1=ev.top1, eval_top5=ev.top5)
            if self.monitor is not None:
                self._mark_step()
                record.update(self.monitor.measure(self.written_model))
        is_best = "eval_top1" in record and record["eval_top1"] > p.best_top1
        if is_best:
            p.best_top1 = record["eval_top1"]
        p.start_epoch(epoch)
        if self.dist.is_main:
            self.run.append_metrics(record)
        self._save(best=is_best)
        if writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    writer.add_scalar(key, value, epoch)
        ev_text = (f" | eval top1 {record['eval_top1']:.4f} top5 {record['eval_top5']:.4f}"
                   if "eval_top1" in record else "")
        if "recon_rel_error" in record:
            ev_text += f" | recon {record['recon_rel_error']:.1e} (floor {record['recon_floor']:.1e})"
        log.info("epoch %d/%d: loss %.4f top1 %.4f lr %.3g | %.0f img/s, %.1f s%s", epoch, cfg.recipe.epochs,
                 record["loss"], record["top1"], record["lr"], record["img_per_s"], record["epoch_seconds"], ev_text)
        return record

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard logging needs the tensorboard package: pip install "
                              "'irevnet[tensorboard]'", option="tensorboard") from None
        return SummaryWriter(log_dir=str(self.run.path / "tensorboard"))


def train(cfg: TrainConfig, *, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; under torchrun, with DDP over all ranks.

    ``on_epoch_end(epoch, record)`` is called on every rank after the epoch's files are written.
    SIGTERM / SIGUSR1 stop the run after the current optimizer step with ``last.pt`` saved
    (the result has ``preempted=True``); a non-finite loss or gradient raises
    :class:`~irevnet.errors.TrainingDivergedError` (beyond ``cfg.skip_nonfinite`` skipped steps).
    """
    ctx, created = init_distributed(cfg.device)
    if not ctx.is_main:
        logging.getLogger("irevnet").setLevel(logging.WARNING)  # rank 0 alone logs
    try:
        result = _Trainer(cfg, ctx).fit(on_epoch_end)
        if created:
            dist.barrier()  # every rank done before any tears down
        return result
    finally:
        # torch 2.4's gloo teardown can hang in one rank once a peer has left (1 run in 4 without
        # the barrier, about 1 in 20 with it); there the process exit releases the group instead.
        if created and torch.__version__ >= "2.5":
            dist.destroy_process_group()
