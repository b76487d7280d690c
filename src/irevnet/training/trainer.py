"""The engine of ``irevnet train``: the one epoch loop, on one process or many (torchrun / DDP),
resumable bit for bit.

The run is built by :mod:`.build` from its :mod:`.options`, saved and restored by
:mod:`.resume`, reported by :mod:`.report`; its steps are :mod:`.steps`. This module runs the
loop: epochs, optimizer steps, the divergence guard, stop signals and evaluation.

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
  all-reduce per optimizer step, the one time a step waits for the device.
- The recipe's ``batch_size`` is the global batch: each rank loads
  ``batch_size / (world_size * accum)`` images per step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..compile import graphs_compiled, mark_step
from ..errors import OutOfMemoryError, TrainingDivergedError
from ..io.load import load_model, save_pretrained
from ..precision import full_float32
from .build import Parts, build
from .distributed import DistContext, any_flags, broadcast_buffers, init_distributed, reduce_stats
from .hybrid import HybridCriterion
from .options import TrainConfig, TrainResult, resolve_model_config
from .preemption import StopSignals
from .report import Reporter
from .resume import restore, resume_path, save
from .run_dir import RunDir
from .state import Progress
from .steps import evaluate, forward_backward, grads_finite, micro_batch_groups, optimizer_step

__all__ = ["TrainConfig", "TrainResult", "resolve_model_config", "train"]

log = logging.getLogger(__name__)


class _Engine:
    def __init__(self, cfg: TrainConfig, ctx: DistContext, parts: Parts) -> None:
        self.cfg, self.dist, self.parts = cfg, ctx, parts
        self.run = RunDir(cfg.out)
        self.progress = Progress()
        self.last_saved: tuple[Path, int] | None = None  # the last good checkpoint and its optimizer step

    def _mark_step(self) -> None:
        mark_step(self.parts.model.compile_spec, self.parts.device)  # CUDA graphs: a new step

    def _precision(self) -> AbstractContextManager[None]:
        """The float32 arithmetic of training and evaluation: PyTorch's flags, or IEEE with ``full_float32``."""
        return full_float32() if self.cfg.full_float32 else nullcontext()

    def _save(self, *, best: bool = False) -> None:
        save(self.run, self.parts, self.progress, self.cfg, self.dist, best=best)
        self.last_saved = (self.run.last, self.progress.step)

    def fit(self, on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> TrainResult:
        cfg, parts, main = self.cfg, self.parts, self.dist.is_main
        resume_from = resume_path(self.run, cfg.resume, self.dist, parts)
        if resume_from is not None:
            self.progress = restore(resume_from, parts, cfg, self.dist)
            self.last_saved = (resume_from, self.progress.step)
        history: list[dict[str, Any]] = []
        reporter = Reporter(self.run, cfg, main=main)
        if main:
            self.run.create()
            reporter.config(parts, self.dist)
            # Drop records of epochs after the checkpoint (killed between the two writes).
            history = self.run.truncate_metrics(self.progress.epoch)
        reporter.started(parts, self.dist, resume_from, self.progress)
        try:
            with StopSignals() as stop:
                while self.progress.epoch < cfg.recipe.epochs:
                    if not self._train_epoch(stop):
                        return self._preempted(stop, history, reporter)
                    record = self._finish_epoch(reporter)
                    history.append(record)
                    if on_epoch_end is not None:
                        on_epoch_end(self.progress.epoch - 1, record)
                    if self._stop_requested(stop) and self.progress.epoch < cfg.recipe.epochs:
                        return self._preempted(stop, history, reporter, saved=True)
        except torch.OutOfMemoryError as e:
            raise OutOfMemoryError(
                f"out of memory on {parts.device} with {parts.batch_per_rank} images per process and step: "
                f"{str(e).splitlines()[0]}",
                batch_per_process=parts.batch_per_rank,
                device=str(parts.device),
            ) from e
        finally:
            reporter.close()
        if main and cfg.save_pretrained:
            best = self.run.best.is_file()
            save_pretrained(load_model(self.run.best) if best else parts.written_model, cfg.save_pretrained)
            log.info(
                "wrote the %s model to %s (config.json + model.safetensors)",
                "best" if best else "final",
                cfg.save_pretrained,
            )
        return TrainResult(parts.written_model, history, self.progress.best_top1, step=self.progress.step)

    def _stop_requested(self, stop: StopSignals) -> bool:
        return any_flags([stop.requested], self.dist, self.parts.device)[0]

    def _preempted(
        self, stop: StopSignals, history: list[dict[str, Any]], reporter: Reporter, saved: bool = False
    ) -> TrainResult:
        if not saved:
            self._save()
        name = stop.received.name if stop.received is not None else None
        reporter.stopped(self.parts, self.progress, name)
        p = self.progress
        return TrainResult(self.parts.written_model, history, p.best_top1, preempted=True, step=p.step, stopped_by=name)

    def _train_epoch(self, stop: StopSignals) -> bool:
        """Train the rest of epoch ``progress.epoch``; False when a stop signal ended it early (saved)."""
        cfg, p, parts = self.cfg, self.progress, self.parts
        parts.sampler.set_epoch(p.epoch, start=p.batch * parts.batch_per_rank)
        parts.net.train()
        scaler = parts.scaler if parts.scaler.is_enabled() else None
        remaining = math.ceil((parts.batches_per_epoch - p.batch) / cfg.accum)
        bar = tqdm(
            micro_batch_groups(parts.loader, cfg.accum),
            total=remaining,
            leave=False,
            unit="step",
            desc=f"epoch {p.epoch + 1}/{cfg.recipe.epochs}",
            disable=not (cfg.progress and self.dist.is_main),
        )
        parts.optimizer.zero_grad(set_to_none=True)
        clock = time.perf_counter()
        for group in bar:
            graphs, samples = graphs_compiled(), p.stats.samples
            with self._precision():
                loss_ok = forward_backward(
                    parts.net,
                    group,
                    accum=cfg.accum,
                    device=parts.device,
                    stats=p.stats,
                    criterion=parts.criterion,
                    amp_dtype=parts.amp_dtype,
                    scaler=scaler,
                    channels_last=cfg.channels_last,
                    before_step=self._mark_step,
                )
            # With fp16 the GradScaler skips steps with inf/NaN gradients itself (and lowers its scale).
            bad_grads = ~grads_finite(parts.model.parameters()) if scaler is None else False
            stop_now, bad_loss, bad_grads = any_flags([stop.requested, ~loss_ok, bad_grads], self.dist, parts.device)
            if bad_loss or bad_grads:
                self._nonfinite("loss" if bad_loss else "gradient")
            optimizer_step(
                parts.optimizer,
                scaler=scaler,
                scheduler=parts.scheduler if parts.per_step else None,
                skip=bad_loss or bad_grads,
            )
            if parts.ema is not None and not (bad_loss or bad_grads):
                parts.ema.update_parameters(parts.model)
            p.batch += len(group)
            p.step += 1
            now = time.perf_counter()
            p.stats.seconds += now - clock
            if graphs_compiled() != graphs:  # compile time is not throughput
                p.stats.compile_seconds += now - clock
                p.stats.compile_samples += p.stats.samples - samples
            clock = now
            if not bar.disable:
                s = p.stats.read()
                bar.set_postfix(
                    loss=f"{s.loss:.3f}", acc=f"{s.top1:.3f}", img_s=f"{s.images_per_second * self.dist.world_size:.0f}"
                )
            if stop_now:
                bar.close()
                return False
            if cfg.save_every and p.step % cfg.save_every == 0 and p.batch < parts.batches_per_epoch:
                self._save()
                log.info("step %d: saved %s", p.step, self.run.last)
        return True

    def _nonfinite(self, what: str) -> None:
        """A step's ``what`` ("loss" or "gradient") is not finite: skip it if allowed, else stop."""
        p, cfg = self.progress, self.cfg
        where = f"step {p.step + 1} (epoch {p.epoch + 1}, batch {p.batch + 1}/{self.parts.batches_per_epoch})"
        if p.skipped < cfg.skip_nonfinite:
            p.skipped += 1
            log.warning(
                "non-finite %s at %s: step skipped (%d of %d allowed)", what, where, p.skipped, cfg.skip_nonfinite
            )
            return
        if self.last_saved is None:
            kept = "no checkpoint has been written yet. Lower the learning rate"
        else:
            kept = (
                f"the last good checkpoint is {self.last_saved[0]} (step {self.last_saved[1]}), left intact. "
                "Resume from it with a lower learning rate"
            )
        allowed = f" after skipping {p.skipped} such step(s)" if cfg.skip_nonfinite else ""
        raise TrainingDivergedError(
            f"non-finite {what} at {where}{allowed}: the run stopped without saving; "
            f"{kept}, or allow skipping such steps",
            option="skip_nonfinite",
        )

    def _finish_epoch(self, reporter: Reporter) -> dict[str, Any]:
        """Epoch ``progress.epoch`` is trained: reduce its statistics, evaluate, report, save."""
        cfg, p, parts = self.cfg, self.progress, self.parts
        stats = reduce_stats(p.stats, self.dist, parts.device)
        lr = parts.optimizer.param_groups[0]["lr"]
        if not parts.per_step:
            parts.scheduler.step()
        for net in parts.weights.values():
            broadcast_buffers(net, self.dist)
        epoch = p.epoch + 1
        record = Reporter.record(epoch, stats, lr)
        if cfg.eval_every > 0 and (epoch % cfg.eval_every == 0 or epoch == cfg.recipe.epochs):
            record.update(self._evaluate(epoch))
        is_best = "eval_top1" in record and record["eval_top1"] > p.best_top1
        if is_best:
            p.best_top1 = record["eval_top1"]
        p.start_epoch(epoch)
        reporter.epoch(record)
        self._save(best=is_best)
        return record

    def _evaluate(self, epoch: int) -> dict[str, float]:
        """``eval_loss/top1/top5`` of the checkpoints' model, ``eval_{trained,ema}_*`` of the other
        weights (with an EMA), and the reconstruction monitor's figures."""
        parts, out = self.parts, {}
        for name, net in parts.weights.items():
            # The bare model: DDP's forward is a collective, and shards may differ by a batch.
            with self._precision():
                ev = evaluate(
                    net,
                    parts.eval_loader,
                    device=parts.device,
                    amp_dtype=parts.amp_dtype,
                    channels_last=self.cfg.channels_last,
                    before_batch=self._mark_step,
                    desc=f"eval {epoch}/{self.cfg.recipe.epochs}",
                    progress=self.cfg.progress and self.dist.is_main,
                )
            ev = reduce_stats(ev, self.dist, parts.device)
            prefix = "eval" if name == parts.written else f"eval_{name}"
            out.update({f"{prefix}_loss": ev.loss, f"{prefix}_top1": ev.top1, f"{prefix}_top5": ev.top5})
        if parts.monitor is not None:
            self._mark_step()
            out.update(parts.monitor.measure(parts.written_model))
        return out


def train(cfg: TrainConfig, *, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; under torchrun, with DDP over all ranks.

    ``on_epoch_end(epoch, record)`` is called on every rank after the epoch's files are written.
    SIGTERM, SIGUSR1 and SIGINT (Ctrl-C) stop the run after the current optimizer step with
    ``last.pt`` saved (the result has ``preempted=True``; a second one stops at once); a
    non-finite loss or gradient raises :class:`~irevnet.errors.TrainingDivergedError` (beyond
    ``cfg.skip_nonfinite`` skipped steps). The returned model carries no hook of the training
    objective.
    """
    if cfg.data_dir is not None:  # config.json names the folder for eval, whatever its working directory
        cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(cfg.data_dir))
    ctx, created = init_distributed(cfg.device)
    if not ctx.is_main:
        logging.getLogger("irevnet").setLevel(logging.WARNING)  # rank 0 alone logs
    try:
        parts = build(cfg, ctx)
        try:
            result = _Engine(cfg, ctx, parts).fit(on_epoch_end)
        finally:
            if isinstance(parts.criterion, HybridCriterion):
                parts.criterion.remove()  # its hook on the head would outlive the training
        if created:
            dist.barrier()  # every rank done before any tears down
        return result
    finally:
        # torch 2.4's gloo teardown can hang in one rank once a peer has left (1 run in 4 without
        # the barrier, about 1 in 20 with it); there the process exit releases the group instead.
        if created and torch.__version__ >= "2.5":
            dist.destroy_process_group()
