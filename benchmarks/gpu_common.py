"""What the GPU scripts share: the machine (GPU or CPU smoke run), tiny models, the time budget, compile counters.

``--smoke`` runs the same code on the CPU with tiny models and the ``aot_eager`` backend
(dynamo and AOTAutograd trace the same graphs, eager kernels run them): it shows that a
script runs to its end, its figures mean nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

import irevnet
from irevnet import IRevNet
from irevnet.compile import CompileSpec, compiled, mark_step

# Tiny layouts of the presets for smoke runs: the same kinds of block (first, injective,
# stride 2), one block per stage.
TINY = {
    "cifar10": dict(blocks=(1, 1, 1)),
    "imagenet-b": dict(blocks=(1, 1, 1, 1), input_shape=(3, 32, 32)),
}


@dataclass(frozen=True)
class Machine:
    """Where the scripts run: ``smoke`` (CPU, tiny models, aot_eager) or a CUDA device."""

    smoke: bool
    device: torch.device
    spec: CompileSpec | None  # how compiled rows compile the blocks; None: eager only

    @classmethod
    def from_args(cls, smoke: bool, compile_mode: str | None = "reduce-overhead", eager_only: bool = False
                  ) -> "Machine":
        if smoke:
            spec = CompileSpec("aot_eager")
        else:
            if not torch.cuda.is_available():
                sys.exit("no CUDA device (use --smoke for a CPU run)")
            spec = CompileSpec(mode=compile_mode)
        return cls(smoke, torch.device("cpu" if smoke else "cuda"), None if eager_only else spec)

    def model(self, preset: str, **overrides: Any) -> IRevNet:
        """A fresh model (seed 0) on the device; tiny in smoke runs."""
        torch.manual_seed(0)
        if self.smoke:
            overrides = {**TINY.get(preset, {}), **overrides}
        return irevnet.create_model(preset, **overrides).to(self.device)

    def batch(self, batch: int) -> int:
        """Smoke runs: a small batch, still one per configuration (as on the GPU, each its own graphs), >= 2
        (train-mode BatchNorm needs two values per channel at imagenet-b's 1x1 last stage)."""
        return max(2, batch // 64) if self.smoke else batch

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def mark(self, model: IRevNet) -> None:
        """A new step for CUDA graphs (no-op unless the model's blocks capture them on CUDA)."""
        mark_step(model.compile_spec, self.device)

    def describe(self) -> str:
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        else:
            name = f"CPU, {torch.get_num_threads()} threads (smoke run: tiny models, figures mean nothing)"
        b = torch.backends
        flags = f"cudnn.allow_tf32 {b.cudnn.allow_tf32}, matmul {torch.get_float32_matmul_precision()}"
        spec = f"{self.spec.backend} {self.spec.mode}" if self.spec else "none (eager only)"
        return f"{name}; torch {torch.__version__}; compile: {spec}; default flags: {flags}"


def kinds_of_block(model: IRevNet) -> int:
    """Blocks that compile different graphs (what the number of graphs scales with, not depth)."""
    return len({(b.in_channels, b.out_channels, b.stride, b.bottleneck.first) for b in model.blocks})


class CompileCounters:
    """Dynamo graphs, compiled block functions and skipped CUDA graphs since :meth:`start`.

    Inductor and dynamo count these themselves (``torch._dynamo.utils.counters``): graphs
    compiled (``stats.unique_graphs``), CUDA graphs skipped (``inductor.cudagraph_skips``).
    irevnet compiles one block function per graph key, so graphs beyond the new functions
    are recompilations.
    """

    def __init__(self) -> None:
        self.start()

    @staticmethod
    def _now() -> tuple[int, int, int]:
        from torch._dynamo.utils import counters

        return (counters["stats"]["unique_graphs"], compiled.cache_info().currsize,
                counters["inductor"]["cudagraph_skips"])

    def start(self) -> None:
        self._base = self._now()

    def delta(self) -> dict[str, int]:
        graphs, functions, skips = (a - b for a, b in zip(self._now(), self._base))
        return {"graphs": graphs, "recompiles": graphs - functions, "cudagraph_skips": skips}


class Deadline:
    """A time budget in seconds from construction (None: unlimited)."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()


class Results:
    """Figures as JSON lines in ``path`` (None: nowhere), written and flushed as soon as they exist."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def add(self, **record: Any) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def out_path(name: str) -> str | None:
    """``$OUT/name`` when the suite set ``OUT``."""
    out = os.environ.get("OUT")
    return os.path.join(out, name) if out else None
