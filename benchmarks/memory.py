"""Activation memory and train-step time: plain autograd vs memory-saving vs per-block checkpointing.

    python benchmarks/memory.py                                   # CPU, the README figures
    python benchmarks/memory.py --quick                           # seconds: checks the script runs
    python benchmarks/memory.py --device cuda                     # on a GPU (see below)

Modes. ``plain``: ordinary autograd, every activation stored. ``saving``:
``model.set_memory_efficient(True)`` (only the final pair and each stage's input are
stored; the backward rebuilds the rest through the inverse). ``checkpoint``:
``torch.utils.checkpoint`` (non-reentrant) around every block, the generic baseline: it
stores each block's input pair and reruns the block in the backward.

Activation memory, for models with ``d``, ``2d`` and ``4d`` blocks per stage (the
``cifar10`` stages otherwise), batch ``--batch-size``: peak memory over one forward AND
backward, minus the memory held before the forward (parameters and optimizer state,
after a warm-up step) minus the bytes of the gradients (``.grad`` is set to None before
the step, as ``zero_grad()`` does by default, and is allocated during the backward). A
plain run peaks at the start of its backward, before most gradients exist, so this
under-reports plain autograd by up to the gradient size: the comparison is conservative.

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
- CUDA with CUDA graphs (``--compile reduce-overhead`` or ``max-autotune``): a replayed
  graph writes into the graphs' private memory pool without calling the allocator, so
  ``max_memory_allocated`` does not see a replayed step. Each (mode, depth) then runs in
  a fresh subprocess: two warm-up steps (CUDA-graph trees warm up, then record), the
  measured replay, then the memory the process holds (``memory_reserved`` after
  ``empty_cache``, which keeps the pool: the graphs own it) minus parameters, optimizer
  state and gradients. That is the pool the step replays into plus allocator rounding:
  an upper bound, labelled ``pool`` in the output.
- CPU: PyTorch has no allocator peak counter, so each (mode, depth) runs in a fresh
  subprocess that reads the kernel's peak resident set size (``VmHWM`` in
  ``/proc/self/status``, reset by writing 5 to ``/proc/self/clear_refs`` just before the
  forward). The child runs with ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB, so glibc
  serves every tensor above that from mmap and returns it to the kernel when freed:
  resident memory then follows live tensors instead of glibc's cache. Smaller
  allocations (and framework overhead) are noise of a few MiB.

Train-step time: the full ``--time-preset`` (default ``cifar10``, 54 blocks) at
``--batch-size``, one step = forward, cross-entropy, backward, SGD step; the median of
``--steps`` steps per mode after one warm-up step, modes interleaved so that machine
load affects them alike. The floor for ``saving`` is about 4/3 of ``plain``: the same
forward and backward plus one more forward of every bottleneck.

On a GPU machine: ``pip install -e .`` (torch with CUDA), then
``python benchmarks/memory.py --device cuda`` (add ``--batch-size 128`` for the paper's
CIFAR batch). Name the GPU with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import irevnet
from irevnet import IRevNet
from irevnet.compile import CompileSpec, mark_step
from irevnet.layers import merge, split

MODES = ("plain", "saving", "checkpoint")
MiB = 2**20


def _logits(model: IRevNet, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode != "checkpoint":
        return model(x)
    pair = split(model.init_psi(x))
    for block in model.blocks:
        pair = checkpoint(block, pair, use_reentrant=False)
    return model.forward_head(merge(*pair))


def _build(
    preset: str, blocks: tuple[int, ...] | None, mode: str, device: torch.device, compile: dict | None = None
) -> IRevNet:
    """The model of one run; ``compile``: keyword arguments of ``compile_blocks`` (None: eager)."""
    torch.manual_seed(0)
    overrides = {} if blocks is None else {"blocks": blocks}
    model = irevnet.create_model(preset, dropout=0.1, memory_efficient=mode == "saving", **overrides)
    model.to(device).train()
    return model.compile_blocks(**compile) if compile else model


def _forward_backward(model: IRevNet, x: torch.Tensor, y: torch.Tensor, mode: str) -> None:
    """One step's forward and backward. With CUDA graphs a step begins with a step mark: the
    previous step's graph outputs may be overwritten from here on (none is used again)."""
    mark_step(model.compile_spec, x.device)
    F.cross_entropy(_logits(model, x, mode), y).backward()


def _train_step(model: IRevNet, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, mode: str) -> None:
    opt.zero_grad(set_to_none=True)  # before the mark: no gradient of the last step's graphs survives it
    _forward_backward(model, x, y, mode)
    opt.step()


class _PeakMeter:
    """Memory in use now and the peak since :meth:`reset`, in bytes, on one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def current(self) -> int:
        self._sync()
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return self._proc_status("VmRSS")

    def reset(self) -> None:
        self._sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM) to the current RSS

    def peak(self) -> int:
        self._sync()
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return self._proc_status("VmHWM")

    @staticmethod
    def _proc_status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{field} not found in /proc/self/status")


def _cuda_graphs(compile: dict | None) -> bool:
    return bool(compile) and CompileSpec(**compile).cuda_graphs


def measure_activation_memory(
    preset: str, blocks: tuple[int, ...], mode: str, batch_size: int, device: torch.device,
    compile: dict | None = None,
) -> int:
    """Peak over forward+backward minus parameters, optimizer state and gradients, in bytes.

    With CUDA graphs on a CUDA device: the pool the replayed step runs in (module docs).
    """
    model = _build(preset, blocks, mode, device, compile)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, *model.input_shape, device=device)
    y = torch.randint(0, model.config.num_classes, (batch_size,), device=device)
    graphs = _cuda_graphs(compile)
    for _ in range(2 if graphs else 1):  # allocates the optimizer state (and warms up, records the graphs)
        _train_step(model, opt, x, y, mode)
    opt.zero_grad(set_to_none=True)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if graphs and device.type == "cuda":
        _forward_backward(model, x, y, mode)  # a replay
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                          if isinstance(t, torch.Tensor))
        held = grad_bytes + state_bytes + sum(p.numel() * p.element_size() for p in model.parameters())
        return torch.cuda.memory_reserved(device) - held - x.numel() * x.element_size()
    meter = _PeakMeter(device)
    before = meter.current()
    meter.reset()
    _forward_backward(model, x, y, mode)
    return meter.peak() - before - grad_bytes


def _memory_in_subprocess(
    preset: str, blocks: tuple[int, ...], mode: str, batch_size: int, device: str, threads: int,
    compile: dict | None = None,
) -> int:
    """:func:`measure_activation_memory` in a fresh process (see the module docstring)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", json.dumps([preset, list(blocks), mode, batch_size, device, compile])]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def time_train_steps(
    preset: str, batch_size: int, device: torch.device, steps: int
) -> dict[str, float]:
    """Median seconds per train step for each mode, the modes interleaved step by step."""
    runs: dict[str, tuple[IRevNet, torch.optim.Optimizer]] = {}
    for mode in MODES:
        model = _build(preset, None, mode, device)
        runs[mode] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    x = torch.randn(batch_size, *runs["plain"][0].input_shape, device=device)
    y = torch.randint(0, runs["plain"][0].config.num_classes, (batch_size,), device=device)
    sync: Callable[[], None] = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for step in range(steps + 1):
        for mode, (model, opt) in runs.items():
            sync()
            start = time.perf_counter()
            _train_step(model, opt, x, y, mode)
            sync()
            if step:  # the first step is a warm-up
                times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(t) for mode, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--preset", default="cifar10", help="architecture of the memory runs (blocks per stage replaced)")
    p.add_argument("--depth", type=int, default=6, help="d: blocks per stage of the smallest memory run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--time-preset", default="cifar10", help="model of the timing runs, at its own depth")
    p.add_argument("--steps", type=int, default=5, help="timed train steps per mode")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads (CPU)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    p.add_argument("--compile", default=None, metavar="MODE",
                   help="compile the blocks (model.compile_blocks(mode=MODE), e.g. default or reduce-overhead) "
                   "for the memory runs: memory-saving must stay flat in depth when compiled too")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:  # one memory measurement, in its own process
        preset, blocks, mode, batch_size, device_name, compile = json.loads(args.child)
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        print(measure_activation_memory(preset, tuple(blocks), mode, batch_size, torch.device(device_name), compile))
        return
    if args.quick:
        args.depth, args.batch_size, args.steps = 1, 4, 1
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    stages = len(irevnet.create_model(args.preset).config.blocks)
    compile = {"mode": args.compile} if args.compile else None
    # A fresh process per measurement where the process's own counters are the measure (module docs).
    fresh = device.type == "cpu" or _cuda_graphs(compile)
    # torch.utils.checkpoint reruns a compiled block inside the backward: not what this compares.
    modes = [m for m in MODES if not (compile and m == "checkpoint")]

    kind = " (pool: CUDA graphs' memory, an upper bound)" if compile and _cuda_graphs(compile) and device.type == "cuda" else ""
    print(f"# activation memory (MiB){kind}, preset {args.preset}, batch {args.batch_size}, device {args.device}"
          f"{f', blocks compiled ({args.compile})' if args.compile else ''}")
    if len(modes) < len(MODES):
        print("# checkpoint: not run with compiled blocks (its recompute would rerun compiled blocks in the backward)")
    print(f"| blocks per stage | total blocks | {' | '.join(modes)} |")
    print("|---:|---:|" + "---:|" * len(modes))
    memory: dict[tuple[str, int], float] = {}
    depths = (args.depth, 2 * args.depth, 4 * args.depth)
    for depth in depths:
        blocks = (depth,) * stages
        for mode in modes:
            if fresh:
                used = _memory_in_subprocess(args.preset, blocks, mode, args.batch_size, args.device, args.threads,
                                             compile)
            else:
                used = measure_activation_memory(args.preset, blocks, mode, args.batch_size, device, compile)
            memory[mode, depth] = used / MiB
        row = " | ".join(f"{memory[m, depth]:.1f}" for m in modes)
        print(f"| {depth} | {depth * stages} | {row} |", flush=True)
    growth = " ".join(f"{m} {memory[m, depths[-1]] / memory[m, depths[0]]:.2f}x" for m in modes)
    print(f"\nmemory at 4d / at d: {growth}\n")

    seconds = time_train_steps(args.time_preset, args.batch_size, device, args.steps)
    print(f"# train step, preset {args.time_preset}, batch {args.batch_size}, device {args.device}, "
          f"threads {args.threads}, median of {args.steps}")
    print("| mode | seconds/step | / plain |")
    print("|---|---:|---:|")
    for mode in MODES:
        print(f"| {mode} | {seconds[mode]:.3f} | {seconds[mode] / seconds['plain']:.2f} |")


if __name__ == "__main__":
    main()
