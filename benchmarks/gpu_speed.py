"""Train-step and inverse speed on one GPU: eager vs per-block compiled, plain vs memory-saving, fp32 vs bf16.

    python benchmarks/gpu_speed.py                        # the issue's table, on the GPU (~8 min)
    python benchmarks/gpu_speed.py --smoke                # tiny models on the CPU, aot_eager: checks that it runs
    python benchmarks/gpu_speed.py --configs cifar10:128 --variants eager,compiled --no-bf16

For every ``preset:batch`` of ``--configs`` it prints one row per variant of the train step
(zero_grad, forward, cross-entropy, backward, SGD step with momentum), all on one model
architecture with fresh weights, in one process:

- ``eager`` / ``compiled`` (``model.compile_blocks(mode=--mode)``), each in ``plain`` and
  ``saving`` (memory-saving) mode, fp32 and (unless ``--no-bf16``) bf16 autocast with
  channels_last;
- img/s (median of ``--repeats`` runs of ``--steps`` steps), the ratio to eager plain fp32
  of the same configuration, the step time relative to compiled plain of the same
  precision, and peak activation memory (CUDA: ``max_memory_allocated`` over the timed
  steps minus what was allocated before them: weights, optimizer state);
- ``first step s``: the first step of the variant, compile included (graphs of one
  preset, batch, dtype and mode are shared by every model of that preset, so only the
  first compiled variant of a configuration pays for them);
- then eval-mode forward and inverse img/s, eager and compiled;
- then (``--depth-check``, on by default) compile + first step of compiled memory-saving
  ``cifar10`` at 1x and 2x the blocks per stage, in fresh dynamo state, with inductor's
  caches off: the target is < 20% growth.

Compile caches are off for the whole run (``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``) so
that compile seconds are cold figures. Warnings that PyTorch logs about CUDA graphs
being skipped are counted and printed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")  # before torch: cold compile figures

import torch
import torch.nn.functional as F

import irevnet

SMOKE_OVERRIDES = dict(blocks=(2, 2, 2), channels=(4, 16, 64), input_shape=(3, 8, 8), num_classes=10)
SMOKE_OVERRIDES_B = dict(blocks=(1, 1), strides=(2, 2), channels=(12, 48), input_shape=(3, 16, 16), num_classes=10)


@dataclass
class Result:
    name: str
    img_s: float
    step_s: float
    first_s: float
    peak_mib: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], None], device: torch.device, steps: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        runs.append((time.perf_counter() - start) / steps)
    return statistics.median(runs)


def _model(preset: str, overrides: dict, device: torch.device, *, saving: bool, compiled: bool, mode: str | None,
           bf16: bool, backend: str) -> irevnet.IRevNet:
    torch.manual_seed(0)
    model = irevnet.create_model(preset, **overrides).to(device).set_memory_efficient(saving)
    if bf16:
        model.to(memory_format=torch.channels_last)
    if compiled:
        model.compile_blocks(backend=backend, mode=mode)
    return model


def _cudagraphs(mode: str | None) -> bool:
    return mode in ("reduce-overhead", "max-autotune")


def train_variant(preset: str, overrides: dict, batch: int, device: torch.device, args: argparse.Namespace, *,
                  saving: bool, compiled: bool, bf16: bool) -> Result:
    model = _model(preset, overrides, device, saving=saving, compiled=compiled, mode=args.mode, bf16=bf16,
                   backend=args.backend)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *model.input_shape, device=device)
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.config.num_classes, (batch,), device=device)
    mark = compiled and _cudagraphs(args.mode)

    def step() -> None:
        if mark:
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        step()
    peak = None
    if device.type == "cuda":
        opt.zero_grad(set_to_none=True)
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    step_s = _median_time(step, device, args.steps, args.repeats)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    name = f"{'compiled' if compiled else 'eager':8s} {'saving' if saving else 'plain':6s} {'bf16' if bf16 else 'fp32'}"
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Result(name, batch / step_s, step_s, first, peak)


def eval_speeds(preset: str, overrides: dict, batch: int, device: torch.device, args: argparse.Namespace,
                compiled: bool) -> tuple[float, float]:
    """(forward img/s, inverse img/s) in eval mode, no grad, fp32."""
    model = _model(preset, overrides, device, saving=False, compiled=compiled, mode=args.mode, bf16=False,
                   backend=args.backend).eval()
    x = torch.randn(batch, *model.input_shape, device=device)
    with torch.no_grad():
        phi = model.forward_features(x)
    mark = compiled and _cudagraphs(args.mode)

    def run(fn: Callable[[], object]) -> Callable[[], None]:
        def go() -> None:
            if mark:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.no_grad():
                fn()
        return go

    fwd, inv = run(lambda: model.forward_features(x)), run(lambda: model.inverse(phi))
    for _ in range(args.warmup + 1):
        fwd(), inv()
    t_fwd = _median_time(fwd, device, args.steps, args.repeats)
    t_inv = _median_time(inv, device, args.steps, args.repeats)
    return batch / t_fwd, batch / t_inv


def depth_check(device: torch.device, args: argparse.Namespace, smoke: bool) -> list[tuple[int, float, float, int]]:
    """Compile + first step of compiled memory-saving cifar10 at d and 2d blocks per stage, fresh dynamo state.

    Per depth: (blocks per stage, wall seconds, this process's CPU seconds, graphs compiled).
    CPU seconds are what a loaded machine distorts least.
    """
    from torch._dynamo.utils import counters

    out = []
    base = SMOKE_OVERRIDES if smoke else {}
    d = 3 if smoke else 18  # from 3 blocks per stage on, no new kind of block appears
    batch = 8 if smoke else 128
    for depth in (d, 2 * d):
        torch._dynamo.reset()
        counters.clear()
        overrides = {**base, "blocks": (depth,) * 3}
        cpu = time.process_time()
        r = train_variant("cifar10", overrides, batch, device, argparse.Namespace(**{**vars(args), "steps": 1,
                          "repeats": 1, "warmup": 0}), saving=True, compiled=True, bf16=False)
        out.append((depth, r.first_s, time.process_time() - cpu, counters["stats"]["unique_graphs"]))
    return out


class _SkipCounter:
    """Counts log records that say CUDA graphs were skipped (inductor logs them as warnings)."""

    def __init__(self) -> None:
        import logging

        self.messages: dict[str, int] = {}
        handler = logging.Handler()
        handler.emit = self._emit  # type: ignore[method-assign]
        logging.getLogger("torch").addHandler(handler)

    def _emit(self, record) -> None:  # noqa: ANN001
        msg = record.getMessage()
        if "skipping cudagraphs" in msg.lower():
            key = msg.splitlines()[0][:160]
            self.messages[key] = self.messages.get(key, 0) + 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny models, few steps, on the CPU unless --device is given")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--configs", default="cifar10:128,cifar10:512,imagenet-b:64", help="preset:batch,...")
    p.add_argument("--variants", default="eager,compiled", help="eager, compiled or both")
    p.add_argument("--modes", default="plain,saving", help="plain, saving or both")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast + channels_last variants")
    p.add_argument("--mode", default="reduce-overhead", help="torch.compile mode of the blocks (default: CUDA graphs)")
    p.add_argument("--backend", default=None, help="torch.compile backend (default inductor; aot_eager with --smoke)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 10; 1 with --smoke)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs, the median is shown (default 3; 1 with --smoke)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (default 3; 1 with --smoke)")
    p.add_argument("--no-depth-check", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device (use --smoke for a CPU run)")
        return 1
    if device.type == "cpu" and args.mode in ("reduce-overhead", "max-autotune"):
        args.mode = None  # CUDA graphs are a GPU feature
    for key, default, smoke in (("steps", 10, 1), ("repeats", 3, 1), ("warmup", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, smoke if args.smoke else default)
    args.backend = args.backend or ("aot_eager" if args.smoke else "inductor")
    if args.backend != "inductor":
        args.mode = None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}; torch {torch.__version__}; compile backend {args.backend}, mode {args.mode}; "
          f"TF32 conv {torch.backends.cudnn.allow_tf32}, matmul {torch.backends.cuda.matmul.allow_tf32}", flush=True)
    skips = _SkipCounter()
    variants = [v.strip() for v in args.variants.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    precisions = [False] if args.no_bf16 else [False, True]
    for spec in args.configs.split(","):
        preset, batch = spec.split(":")
        batch = int(batch)
        overrides: dict = {}
        if args.smoke:
            overrides = SMOKE_OVERRIDES if preset.startswith("cifar") else SMOKE_OVERRIDES_B
            batch = min(batch, 8)
        print(f"\n== {preset}, batch {batch}{' (smoke: tiny model)' if args.smoke else ''}", flush=True)
        print(f"{'variant':22s} {'img/s':>9s} {'x eager':>8s} {'/ compiled plain':>17s} {'peak MiB':>9s} "
              f"{'first step s':>13s}", flush=True)
        results: dict[tuple[str, str, bool], Result] = {}
        for bf16 in precisions:
            for variant in variants:
                for mode in modes:
                    try:
                        r = train_variant(preset, overrides, batch, device, args, saving=mode == "saving",
                                          compiled=variant == "compiled", bf16=bf16)
                    except Exception as e:  # report and go on: one failing variant must not hide the others
                        print(f"{variant} {mode} {'bf16' if bf16 else 'fp32'}: FAILED {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}", flush=True)
                        continue
                    results[variant, mode, bf16] = r
                    ref = results.get(("eager", "plain", False))
                    cplain = results.get(("compiled", "plain", bf16))
                    ratio = f"{r.img_s / ref.img_s:8.2f}" if ref else f"{'-':>8s}"
                    rel = f"{r.step_s / cplain.step_s:17.2f}" if cplain else f"{'-':>17s}"
                    peak = f"{r.peak_mib:9.0f}" if r.peak_mib is not None else f"{'-':>9s}"
                    print(f"{r.name:22s} {r.img_s:9.0f} {ratio} {rel} {peak} {r.first_s:13.1f}", flush=True)
        for variant in variants:
            try:
                f_img, i_img = eval_speeds(preset, overrides, batch, device, args, compiled=variant == "compiled")
            except Exception as e:
                print(f"{variant} eval: FAILED {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                continue
            print(f"{variant:8s} eval fp32: forward {f_img:9.0f} img/s, inverse {i_img:9.0f} img/s, "
                  f"inverse/forward {i_img / f_img:.2f}", flush=True)
    if not args.no_depth_check and "compiled" in variants:
        print("\n== compile + first step, compiled memory-saving cifar10, fresh dynamo state, caches off", flush=True)
        try:
            (d1, t1, c1, g1), (d2, t2, c2, g2) = depth_check(device, args, args.smoke)
            print(f"{d1} blocks per stage: {t1:.1f} s ({c1:.1f} CPU s, {g1} graphs); {d2} blocks per stage: "
                  f"{t2:.1f} s ({c2:.1f} CPU s, {g2} graphs); ratio {t2 / t1:.2f} (CPU {c2 / c1:.2f})", flush=True)
        except Exception as e:
            print(f"depth check: FAILED {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
    if skips.messages:
        print("\nCUDA graphs skipped:")
        for msg, n in skips.messages.items():
            print(f"  {n}x {msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
