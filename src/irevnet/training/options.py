"""What a run is: :class:`TrainConfig` and its checks, the model configuration it resolves to,
and what :func:`~irevnet.training.trainer.train` returns (:class:`TrainResult`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import IRevNetConfig, get_preset
from ..data import DataSplits
from ..errors import ConfigError
from ..model import IRevNet
from .monitor import DEFAULT_RECON_THRESHOLD
from .recipes import Recipe

__all__ = ["TrainConfig", "TrainResult", "check_options", "fit_to_data", "resolve_model_config"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved (with the resolved model config) as ``RUN/config.json``.

    ``resume``: ``"no"`` starts fresh and refuses a folder that already holds ``last.pt``;
    ``"yes"`` requires ``RUN/last.pt``; ``"auto"`` resumes when it exists (what a job
    restarted by torchrun ``--max-restarts`` or requeued by a scheduler needs; a torchelastic
    restart implies it). A resumed run may have more (or fewer) ``recipe.epochs`` than it was
    started with: see :func:`~irevnet.training.optim.load_schedule`. ``eval_every``: evaluate
    every N epochs and after the last one (0: never). ``save_every``: also write ``last.pt``
    every N optimizer steps (0: at epoch ends only). ``skip_nonfinite``: optimizer steps with a
    non-finite loss or gradient that may be skipped before the run stops (0: stop at the
    first). ``workers``: loader processes per rank (``None``:
    :func:`~irevnet.training.data_loading.default_workers`). ``decode_on``: ``"device"``
    decodes ImageFolder JPEGs and augments them on the training device
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
    written to the checkpoints (the trained weights ride in the trainer state); False swaps the
    two. Both are evaluated.
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
    """What :func:`~irevnet.training.trainer.train` returns on every rank: the trained (unwrapped)
    model and the epoch records.

    ``model`` is the model as written to the checkpoints: the EMA when the recipe keeps one
    (and ``ema_as_model``); it carries no hook of the training objective.
    ``history`` holds every epoch of the run on rank 0 (earlier ones read back from
    ``metrics.jsonl`` when resumed), only this process's epochs on other ranks.
    ``preempted``: a stop signal ended the run early; ``RUN/last.pt`` holds its position;
    ``stopped_by`` names the signal (``"SIGTERM"``, ``"SIGINT"``, ...; ``None`` when it reached
    another rank only).
    """

    model: IRevNet
    history: list[dict[str, Any]]
    best_top1: float
    preempted: bool = False
    step: int = 0
    stopped_by: str | None = None


def resolve_model_config(cfg: TrainConfig, data: DataSplits | None = None) -> IRevNetConfig:
    """The configuration of the model ``cfg`` trains: the preset, the user's overrides, then
    (with ``data``) the data's classes (with their names) and input shape and the recipe's
    dropout (:func:`fit_to_data`).

    Without ``data``: the configuration before the data is known (synthetic data takes its
    shape and classes from it).
    """
    if "dropout" in cfg.model_overrides:
        raise ConfigError(
            "dropout is a recipe field (the recipe is its one source); set it in the recipe, not as a model override",
            option="dropout",
        )
    config = get_preset(cfg.preset).replace(**cfg.model_overrides)
    return config if data is None else fit_to_data(config, cfg, data)


def fit_to_data(config: IRevNetConfig, cfg: TrainConfig, data: DataSplits) -> IRevNetConfig:
    """``config`` (from :func:`resolve_model_config` without data) with the classes (and their
    names) and input shape of ``data`` and the dropout of ``cfg.recipe``."""
    for key in ("num_classes", "input_shape"):
        # An explicit override that contradicts the data would fail later, deep in the loss.
        if key in cfg.model_overrides and getattr(config, key) != getattr(data, key):
            raise ConfigError(
                f"model {key}={getattr(config, key)} contradicts data set {cfg.data}, which has "
                f"{key} {getattr(data, key)}",
                option=key,
            )
    if data.num_classes != config.num_classes:
        log.info(
            "%s has %d classes: building %s with num_classes=%d",
            cfg.data,
            data.num_classes,
            cfg.preset,
            data.num_classes,
        )
    return config.replace(
        num_classes=data.num_classes,
        input_shape=tuple(data.input_shape),
        dropout=cfg.recipe.dropout,
        label_names=data.class_names,
    )


def check_options(cfg: TrainConfig, world_size: int) -> int:
    """Refuse option values that cannot run (:class:`~irevnet.errors.ConfigError` naming the
    option); returns the images each process loads per micro-batch."""
    for name, value, least in (
        ("accum", cfg.accum, 1),
        ("eval_every", cfg.eval_every, 0),
        ("workers", 0 if cfg.workers is None else cfg.workers, 0),
        ("save_every", cfg.save_every, 0),
        ("skip_nonfinite", cfg.skip_nonfinite, 0),
    ):
        if value < least:
            raise ConfigError(f"{name} must be >= {least}, got {value}", option=name)
    if cfg.save_pretrained is not None:
        folder = Path(cfg.save_pretrained)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"{folder} is a file; save_pretrained names the model folder to write", option="save_pretrained"
            )
        if folder.resolve() == Path(cfg.out).resolve():
            raise ConfigError(
                "save_pretrained cannot be the run folder itself (its config.json is the run's); "
                f"use e.g. {Path(cfg.out) / 'model'}",
                option="save_pretrained",
            )
    if cfg.full_float32 and cfg.allow_tf32:
        raise ConfigError(
            "full_float32 (train in IEEE float32) contradicts allow_tf32; choose one", option="full_float32"
        )
    denom = world_size * cfg.accum
    if cfg.recipe.batch_size % denom:
        raise ConfigError(
            f"batch_size {cfg.recipe.batch_size} is not divisible by world_size x accum = {denom}", option="batch_size"
        )
    return cfg.recipe.batch_size // denom
