"""Building a run: the model (and its EMA), the data and its loaders, the optimizer, schedule and
loss, from a :class:`~irevnet.training.options.TrainConfig`. Every rank builds the same parts."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset, Subset

from ..config import IRevNetConfig
from ..data import DataSplits, build_datasets
from ..data.registry import AUGMENTATION
from ..errors import ConfigError
from ..io.load import init_weights_from
from ..model import IRevNet
from .data_loading import ResumableSampler, default_workers, ignore_stop_signals, train_loader
from .device import amp_dtype, grad_scaler, resolve_device
from .distributed import DistContext
from .ema import model_ema
from .monitor import ReconstructionMonitor
from .optim import build_criterion, build_optimizer
from .options import TrainConfig, check_options, fit_to_data, resolve_model_config
from .state import seed_everything
from .steps import Criterion

__all__ = ["Parts", "build"]

log = logging.getLogger(__name__)

Loader = Iterable[tuple[Tensor, Tensor]]


@dataclass
class Parts:
    """What a run trains with.

    ``model`` holds the trained weights; ``net`` is what the steps call (``model``, or DDP
    around it); ``ema`` averages ``model`` when the recipe keeps an EMA. ``written`` names the
    weights evaluated first and written as the checkpoints' model: ``"ema"`` or ``"trained"``.
    ``batch_per_rank`` images per micro-batch and process; ``batches_per_epoch`` micro-batches
    per epoch and process.
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    model: IRevNet
    net: nn.Module
    ema: AveragedModel | None
    written: str
    data: DataSplits
    sampler: ResumableSampler
    loader: Loader
    eval_loader: Loader
    monitor: ReconstructionMonitor | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_step: bool
    criterion: Criterion
    scaler: torch.amp.GradScaler
    batch_per_rank: int
    batches_per_epoch: int
    workers: int

    @property
    def weights(self) -> dict[str, IRevNet]:
        """The models a run evaluates: ``{"trained": ...}``, and ``"ema"`` with an EMA; ``written`` first."""
        both = {"trained": self.model}
        if self.ema is not None:
            both["ema"] = cast(IRevNet, self.ema.module)
        return {self.written: both[self.written], **both}

    @property
    def written_model(self) -> IRevNet:
        return self.weights[self.written]


def build(cfg: TrainConfig, ctx: DistContext) -> Parts:
    """Check ``cfg`` and build its parts (collective under torchrun only through DDP's construction)."""
    batch_per_rank = check_options(cfg, ctx.world_size)
    device = resolve_device(cfg.device, ctx.local_rank)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    draft = resolve_model_config(cfg)
    # Images become inputs through its data config; synthetic data takes its shape and classes.
    data = build_datasets(
        cfg.data, cfg.data_dir, config=draft, synthetic_size=cfg.synthetic_size, val_split=cfg.val_split
    )
    model = _model(fit_to_data(draft, cfg, data), cfg, ctx, device)
    recipe = cfg.recipe
    ema = model_ema(model, recipe.ema_decay, warmup=recipe.ema_warmup) if recipe.ema_decay > 0 else None
    # Per-rank streams from here on (dropout): ranks see different masks.
    seed_everything(cfg.seed + 7919 * ctx.rank)

    workers = default_workers(cfg.data, ctx.local_world_size) if cfg.workers is None else cfg.workers
    assert data.train is not None  # built with a training split
    sampler = ResumableSampler(data.train, rank=ctx.rank, world_size=ctx.world_size, seed=cfg.seed)
    loader, eval_loader = _loaders(cfg, ctx, data, sampler, model.config, device, batch_per_rank, workers)
    # A fixed held-out batch whose reconstruction error is recorded at each evaluation (rank 0).
    monitor = (
        ReconstructionMonitor.from_dataset(data.eval, threshold=cfg.recon_threshold, device=device)
        if ctx.is_main and cfg.eval_every > 0
        else None
    )
    batches_per_epoch = math.ceil(sampler.num_samples / batch_per_rank)
    optimizer, scheduler, per_step = build_optimizer(model, recipe, math.ceil(batches_per_epoch / cfg.accum))
    # After the EMA's copy: the hybrid objective hooks the trained model's head alone.
    criterion = build_criterion(recipe, model)
    net: nn.Module = model
    if ctx.enabled:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return Parts(
        device=device,
        amp_dtype=amp_dtype(cfg.amp),
        model=model,
        net=net,
        ema=ema,
        written="ema" if ema is not None and cfg.ema_as_model else "trained",
        data=data,
        sampler=sampler,
        loader=loader,
        eval_loader=eval_loader,
        monitor=monitor,
        optimizer=optimizer,
        scheduler=scheduler,
        per_step=per_step,
        criterion=criterion,
        scaler=grad_scaler(device, cfg.amp),
        batch_per_rank=batch_per_rank,
        batches_per_epoch=batches_per_epoch,
        workers=workers,
    )


def _model(config: IRevNetConfig, cfg: TrainConfig, ctx: DistContext, device: torch.device) -> IRevNet:
    model = IRevNet(config)
    if cfg.memory_efficient:
        model.set_memory_efficient(True)
    model.set_full_float32(not cfg.allow_tf32)
    if cfg.init_from:  # every rank reads the same weights; a resumed run then restores its own
        init_weights_from(model, cfg.init_from)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn:
        if cfg.memory_efficient:
            # The recompute normalizes with local batch statistics (see docs/memory.md).
            raise ConfigError(
                "sync_bn cannot be combined with memory_efficient (SyncBatchNorm is not supported "
                "by the memory-saving backward); drop one of the two",
                option="sync_bn",
            )
        if not (ctx.enabled and device.type == "cuda"):
            raise ConfigError(
                "sync_bn needs several processes on CUDA devices (SyncBatchNorm has no CPU kernel)", option="sync_bn"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # returns the same IRevNet, BNs swapped
    if cfg.compile is not None:
        model.compile_blocks(mode=cfg.compile)  # CompileUnavailableError here, before any step
    return model


def _loaders(
    cfg: TrainConfig,
    ctx: DistContext,
    data: DataSplits,
    sampler: ResumableSampler,
    config: IRevNetConfig,
    device: torch.device,
    batch_per_rank: int,
    workers: int,
) -> tuple[Loader, Loader]:
    """The training loader (resumable order, seeded augmentation) and this rank's evaluation loader."""
    pin = device.type == "cuda"
    train_set, eval_set, collate = cast(Dataset[Any], data.train), data.eval, None
    if cfg.decode_on == "device":
        # Image files only: torchvision (with dynamo, ~2.5 s to import) stays out of other runs.
        from torchvision.datasets import ImageFolder

        from .device_decode import EncodedImages, collate_encoded

        if not isinstance(train_set, ImageFolder):
            raise ConfigError(
                f"decoding on the device reads image files: it needs imagefolder data, not {cfg.data}",
                option="decode_on",
            )
        if device.type != "cuda":
            log.warning(
                "decoding JPEGs in the training process on %s: slower than loader workers (decode_on="
                "'device' is meant for CUDA, where nvJPEG decodes)",
                device,
            )
        train_set, eval_set, collate = EncodedImages(train_set), EncodedImages(eval_set), collate_encoded
    loader = train_loader(
        train_set,
        sampler,
        batch_size=batch_per_rank,
        workers=workers,
        pin_memory=pin,
        collate_fn=collate,
        defer_seeding=collate is not None,
    )
    # Each rank evaluates a disjoint shard; the sums are all-reduced (exact, no padding).
    shard = Subset(eval_set, range(ctx.rank, len(eval_set), ctx.world_size))  # type: ignore[arg-type]  # Dataset: no __len__
    # Its own generator: drawing the workers' base seed must not advance the global RNG (dropout).
    eval_loader = DataLoader(
        shard,
        batch_size=batch_per_rank * cfg.accum,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        collate_fn=collate,
        worker_init_fn=ignore_stop_signals,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if collate is None:
        return loader, eval_loader
    return _decoded_on_device(loader, eval_loader, config, AUGMENTATION[cfg.data], device)


def _decoded_on_device(
    loader: DataLoader[Any], eval_loader: DataLoader[Any], config: IRevNetConfig, augment: str, device: torch.device
) -> tuple[Loader, Loader]:
    """The loaders of encoded images, decoded and transformed on ``device`` batch by batch."""
    from ..data.transforms import eval_transform, train_transform
    from .device_decode import DeviceDecodedLoader, DeviceDecoder

    return (
        DeviceDecodedLoader(loader, DeviceDecoder(train_transform(config, augment=augment, tensor_input=True), device)),
        DeviceDecodedLoader(eval_loader, DeviceDecoder(eval_transform(config, tensor_input=True), device)),
    )
