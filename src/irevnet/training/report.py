"""What a run tells: ``RUN/config.json``, one ``metrics.jsonl`` record and one log line per epoch,
and TensorBoard scalars. Rank 0 alone reports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .build import Parts
from .distributed import DistContext
from .options import TrainConfig
from .run_dir import RunDir
from .state import Progress
from .stats import Stats

__all__ = ["Reporter"]

log = logging.getLogger(__name__)


class Reporter:
    """Writes the run folder's reports on rank 0 (``main``); a no-op on the other ranks."""

    def __init__(self, run: RunDir, cfg: TrainConfig, *, main: bool) -> None:
        self.run, self.cfg, self.main = run, cfg, main
        self.writer: Any = None
        if main and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "tensorboard logging needs the tensorboard package: pip install 'irevnet[tensorboard]'",
                    option="tensorboard",
                ) from None
            self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def config(self, parts: Parts, ctx: DistContext) -> None:
        """Write ``RUN/config.json``: the run's options, the resolved model configuration, where it runs."""
        if self.main:
            model = parts.model
            self.run.write_config(
                {
                    "train": self.cfg.to_dict(),
                    "model": model.config.to_dict(),
                    "parameters": model.num_parameters(),
                    "world_size": ctx.world_size,
                    "batch_per_rank": parts.batch_per_rank,
                    "workers": parts.workers,
                    "device": str(parts.device),
                    "train_images": len(parts.data.train),  # type: ignore[arg-type]  # Dataset declares no __len__
                    "eval_images": len(parts.data.eval),  # type: ignore[arg-type]
                    "torch": torch.__version__,
                }
            )

    def started(self, parts: Parts, ctx: DistContext, resume_from: Path | None, progress: Progress) -> None:
        """Log where the run starts (or resumes) and what it trains on."""
        cfg = self.cfg
        if resume_from is not None:
            log.info(
                "resuming %s from %s at epoch %d/%d, step %d",
                self.run.path,
                resume_from,
                progress.epoch + 1,
                cfg.recipe.epochs,
                progress.step,
            )
        log.info(
            "training %s (%s parameters) on %s: %d images, %d process(es) x %d per batch x accum %d, "
            "%d loader worker(s), %s",
            cfg.preset,
            f"{parts.model.num_parameters():,}",
            cfg.data,
            len(parts.data.train),  # type: ignore[arg-type]  # torch's Dataset declares no __len__
            ctx.world_size,
            parts.batch_per_rank,
            cfg.accum,
            parts.workers,
            parts.device,
        )

    def stopped(self, parts: Parts, progress: Progress, signal: str | None) -> None:
        """Log that a stop signal (``signal``, or None: one received by another rank) ended the run, saved."""
        log.warning(
            "stopped by %s at epoch %d, batch %d/%d (step %d): saved %s; continue with resume",
            signal or "a stop signal on another rank",
            progress.epoch + 1,
            progress.batch,
            parts.batches_per_epoch,
            progress.step,
            self.run.last,
        )

    @staticmethod
    def record(epoch: int, stats: Stats, lr: float) -> dict[str, Any]:
        """The ``metrics.jsonl`` record of a trained epoch (1-based ``epoch``), before evaluation adds its figures."""
        return {
            "epoch": epoch,
            "loss": stats.loss,
            "top1": stats.top1,
            "top5": stats.top5,
            "lr": lr,
            "img_per_s": stats.images_per_second,
            "epoch_seconds": stats.seconds,
            "compile_seconds": stats.compile_seconds,
            "samples": stats.samples,
        }

    def epoch(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl``, add it to TensorBoard and log its line."""
        if not self.main:
            return
        self.run.append_metrics(record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, record["epoch"])
        text = ""
        if "eval_top1" in record:
            text = f" | eval top1 {record['eval_top1']:.4f} top5 {record['eval_top5']:.4f}"
            for other in ("ema", "trained"):
                if f"eval_{other}_top1" in record:
                    text += (
                        f" ({'trained weights' if other == 'ema' else 'EMA'}; {other}: top1 "
                        f"{record[f'eval_{other}_top1']:.4f})"
                    )
        if "recon_rel_error" in record:
            text += f" | recon {record['recon_rel_error']:.1e} (floor {record['recon_floor']:.1e})"
        compiled = f", {record['compile_seconds']:.1f} s compiling" if record["compile_seconds"] else ""
        log.info(
            "epoch %d/%d: loss %.4f top1 %.4f lr %.3g | %.0f img/s, %.1f s%s%s",
            record["epoch"],
            self.cfg.recipe.epochs,
            record["loss"],
            record["top1"],
            record["lr"],
            record["img_per_s"],
            record["epoch_seconds"],
            compiled,
            text,
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
