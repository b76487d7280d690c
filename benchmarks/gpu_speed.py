"""Train-step and inverse speed on one GPU: eager vs compiled blocks, plain vs memory-saving, fp32 vs bf16.

    python benchmarks/gpu_speed.py                      # the table below, on the GPU, within --budget-s
    python benchmarks/gpu_speed.py --smoke              # tiny models on the CPU, aot_eager: checks that it runs
    python benchmarks/gpu_speed.py --eager              # without compiled rows (the preflight failed)

One row per variant of the train step (zero_grad, step mark, forward, cross-entropy,
backward, SGD with momentum), each on a fresh model, all under PyTorch's default float32
flags (the policy: TF32 convolutions where they allow it), so plain and memory-saving do
the same arithmetic. Rows run in this order, most wanted first; a row that would start
with too little of ``--budget-s`` left is skipped, saying so:

1. for each ``--configs`` entry (default ``cifar10:128``, ``imagenet-b:64``, ``cifar10:512``):
   eager plain, eager memory-saving, compiled plain, compiled memory-saving (fp32); then
   eval img/s: ``model(x)`` (default flags), ``forward_features`` and ``inverse`` (IEEE
   float32, the exact path), eager, and compiled for the first configuration;
2. eager plain under ``full_float32()`` (the arithmetic of IEEE training) for the first two
   configurations: what the precision policy gains;
3. for each ``--bf16-configs`` entry: eager plain, compiled plain, compiled memory-saving
   under bf16 autocast with channels_last.

Columns: img/s (median of ``--repeats`` runs of ``--steps`` steps), the ratio to eager plain
fp32 of the same configuration, the step time relative to compiled plain of the same
precision, peak memory, the seconds of the first ``--warmup`` steps (compile, CUDA-graph
warm-up and recording included) and, for compiled rows, the graphs dynamo compiled, the
recompilations among them and the CUDA graphs inductor skipped (its own counters).

Peak memory: ``max_memory_allocated`` over the timed steps minus what was allocated before
them (weights, optimizer state). Not for CUDA-graph rows: a replay writes into the graphs'
private pool without calling the allocator, so the allocator's peak does not see it
(``-``; ``benchmarks/memory.py --compile reduce-overhead`` measures the pool instead).

Compile budget: the graphs are one set per shape (``irevnet.compile``): a compiled plain
row compiles one graph (forward and backward) per kind of block, a memory-saving row two
(the no-grad forward, the recompute with its backward), eval rows two; ``cifar10`` has 6
kinds of block, ``imagenet-b`` 8. Inductor's caches are on (a later process recompiles from
them). Every row's figures are printed, and appended to ``$OUT/speed.jsonl``, as soon as
they exist. ``--depth-check`` adds compile + first step of compiled memory-saving
``cifar10`` at 18 and 36 blocks per stage, fresh dynamo state, caches off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gpu_common import CompileCounters, Deadline, Machine, Results, kinds_of_block, out_path
from irevnet import IRevNet
from irevnet.precision import full_float32


@dataclass
class Row:
    config: str
    name: str
    img_s: float
    step_s: float
    first_s: float
    peak_mib: float | None
    graphs: dict[str, int] | None


@dataclass(frozen=True)
class Variant:
    compiled: bool
    saving: bool
    bf16: bool = False
    ieee: bool = False

    @property
    def name(self) -> str:
        return (f"{'compiled' if self.compiled else 'eager':8s} {'saving' if self.saving else 'plain':6s} "
                f"{'bf16' if self.bf16 else 'fp32'}{' IEEE' if self.ieee else ''}")


class Bench:
    def __init__(self, m: Machine, args: argparse.Namespace) -> None:
        self.m, self.args = m, args
        self.deadline = Deadline(args.budget_s)
        self.results = Results(out_path("speed.jsonl"))
        self.rows: dict[tuple[str, Variant], Row] = {}
        self.compile_s = 60.0 if not m.smoke else 5.0  # the time a compiled row is expected to need, updated

    def _model(self, preset: str, v: Variant) -> IRevNet:
        model = self.m.model(preset).set_memory_efficient(v.saving)
        if v.bf16:
            model.to(memory_format=torch.channels_last)
        if v.compiled:
            assert self.m.spec is not None
            model.compile_blocks(backend=self.m.spec.backend, mode=self.m.spec.mode)
        return model

    def _time(self, fn: Callable[[], None]) -> float:
        runs = []
        for _ in range(self.args.repeats):
            self.m.sync()
            start = time.perf_counter()
            for _ in range(self.args.steps):
                fn()
            self.m.sync()
            runs.append((time.perf_counter() - start) / self.args.steps)
        return statistics.median(runs)

    def skip(self, what: str, needed: float) -> bool:
        if self.deadline.left() >= needed:
            return False
        print(f"{what}: skipped, {self.deadline.left():.0f} s of the budget left (needs ~{needed:.0f} s)", flush=True)
        self.results.add(row=what, skipped="time budget")
        return True

    def train_row(self, preset: str, batch: int, v: Variant) -> None:
        config = f"{preset}:{batch}"
        if self.skip(f"{config} {v.name}", self.compile_s if v.compiled else 10):
            return
        model = self._model(preset, v)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(batch, *model.input_shape, device=self.m.device)
        if v.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, model.config.num_classes, (batch,), device=self.m.device)

        def step() -> None:
            opt.zero_grad(set_to_none=True)  # before the mark: no gradient survives it
            self.m.mark(model)
            with full_float32() if v.ieee else nullcontext():
                with torch.autocast(self.m.device.type, dtype=torch.bfloat16, enabled=v.bf16):
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
            opt.step()

        counters = CompileCounters()
        self.m.sync()
        start = time.perf_counter()
        for _ in range(self.args.warmup):  # with CUDA graphs: warm-up, recording, a replay
            step()
        self.m.sync()
        first = time.perf_counter() - start
        graphs = counters.delta() if v.compiled else None
        cuda_graphs = v.compiled and self.m.spec is not None and self.m.spec.cuda_graphs
        base = None
        if self.m.device.type == "cuda" and not cuda_graphs:
            opt.zero_grad(set_to_none=True)
            self.m.sync()
            base = torch.cuda.memory_allocated(self.m.device)
            torch.cuda.reset_peak_memory_stats(self.m.device)
        step_s = self._time(step)
        peak = None if base is None else (torch.cuda.max_memory_allocated(self.m.device) - base) / 2**20
        if v.compiled:
            self.compile_s = max(self.compile_s, 1.5 * first)
        row = Row(config, v.name, batch / step_s, step_s, first, peak, graphs)
        self.rows[config, v] = row
        self._print(row, v)
        del model, opt
        if self.m.device.type == "cuda":
            torch.cuda.empty_cache()

    def _print(self, r: Row, v: Variant) -> None:
        ref = self.rows.get((r.config, Variant(False, False)))
        cplain = self.rows.get((r.config, Variant(True, False, v.bf16)))
        ratio = f"{r.img_s / ref.img_s:8.2f}" if ref else f"{'-':>8s}"
        rel = f"{r.step_s / cplain.step_s:8.2f}" if cplain else f"{'-':>8s}"
        peak = f"{r.peak_mib:9.0f}" if r.peak_mib is not None else f"{'-':>9s}"
        g = r.graphs
        counts = f"{g['graphs']:7d} {g['recompiles']:7d} {g['cudagraph_skips']:7d}" if g else ""
        print(f"{r.config:16s} {r.name:27s} {r.img_s:9.0f} {ratio} {rel} {peak} {r.first_s:9.1f} {counts}",
              flush=True)
        self.results.add(**asdict(r))

    def eval_row(self, preset: str, batch: int, compiled: bool) -> None:
        """Eval img/s, no grad: logits (default flags), forward_features and inverse (IEEE float32)."""
        config = f"{preset}:{batch}"
        label = f"{config} {'compiled' if compiled else 'eager'} eval"
        if self.skip(label, self.compile_s if compiled else 10):
            return
        model = self._model(preset, Variant(compiled, False)).eval()
        x = torch.randn(batch, *model.input_shape, device=self.m.device)
        self.m.mark(model)
        with torch.no_grad():
            phi = model.forward_features(x)  # computed eagerly from the blocks' outputs: safe across step marks

        def run(fn: Callable[[], Any]) -> Callable[[], None]:
            def go() -> None:
                self.m.mark(model)
                with torch.no_grad():
                    fn()
            return go

        figures = {}
        for name, fn in (("logits", lambda: model(x)), ("forward_features", lambda: model.forward_features(x)),
                         ("inverse", lambda: model.inverse(phi))):
            go = run(fn)
            for _ in range(self.args.warmup):
                go()
            figures[name] = batch / self._time(go)
        print(f"{label}: logits {figures['logits']:.0f} img/s (default flags); forward_features "
              f"{figures['forward_features']:.0f}, inverse {figures['inverse']:.0f} img/s (IEEE float32); "
              f"inverse / forward_features {figures['inverse'] / figures['forward_features']:.2f}", flush=True)
        self.results.add(row=label, **figures)

    def header(self, what: str) -> None:
        print(f"\n== {what}", flush=True)
        print(f"{'config':16s} {'variant':27s} {'img/s':>9s} {'x eager':>8s} {'/ c.plain':>8s} {'peak MiB':>9s} "
              f"{'first s':>9s} {'graphs':>7s} {'recomp':>7s} {'cg skip':>7s}", flush=True)


def _configs(spec: str, m: Machine) -> list[tuple[str, int]]:
    out = []
    for item in spec.split(","):
        if item.strip():
            preset, batch = item.strip().split(":")
            out.append((preset, m.batch(int(batch))))
    return out


def compile_plan(b: Bench, configs: list[tuple[str, int]], bf16: list[tuple[str, int]]) -> None:
    """How many graphs the compiled rows compile: one set per configuration and mode."""
    total = 0
    for preset, batch in configs:
        k = kinds_of_block(b.m.model(preset))
        n = k * (1 + 2) + (2 * k if (preset, batch) == configs[0] else 0)
        total += n
        print(f"compile plan {preset}:{batch}: {k} kinds of block -> {n} dynamo graphs (plain 1, memory-saving 2, "
              f"eval 2 per kind)", flush=True)
    for preset, batch in bf16:
        k = kinds_of_block(b.m.model(preset))
        total += 3 * k
        print(f"compile plan {preset}:{batch} bf16: {3 * k} dynamo graphs", flush=True)
    print(f"compile plan: {total} dynamo graphs in all (each with grad: a forward and a backward inductor graph)",
          flush=True)


def depth_check(b: Bench) -> None:
    """Compile + first step of compiled memory-saving cifar10 at d and 2d blocks per stage, fresh, caches off."""
    from torch._inductor import config as inductor_config

    d = 3 if b.m.smoke else 18
    batch = b.m.batch(128)
    for depth in (d, 2 * d):
        torch._dynamo.reset()
        counters = CompileCounters()
        cpu = time.process_time()
        with inductor_config.patch(force_disable_caches=True):
            model = b.m.model("cifar10", blocks=(depth,) * 3).set_memory_efficient(True)
            assert b.m.spec is not None
            model.compile_blocks(backend=b.m.spec.backend, mode=b.m.spec.mode)
            x = torch.randn(batch, *model.input_shape, device=b.m.device)
            y = torch.randint(0, 10, (batch,), device=b.m.device)
            start = time.perf_counter()
            b.m.mark(model)
            F.cross_entropy(model(x), y).backward()
            b.m.sync()
        print(f"depth check: {depth} blocks per stage: compile + first step {time.perf_counter() - start:.1f} s "
              f"({time.process_time() - cpu:.1f} CPU s), {counters.delta()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny models, few steps, on the CPU (aot_eager)")
    p.add_argument("--eager", action="store_true", help="no compiled rows")
    p.add_argument("--configs", default="cifar10:128,imagenet-b:64,cifar10:512", help="preset:batch,...")
    p.add_argument("--bf16-configs", default="cifar10:512,imagenet-b:64", help="preset:batch,... ('' for none)")
    p.add_argument("--mode", default="reduce-overhead", help="torch.compile mode of the blocks (default: CUDA graphs)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 5; 1 with --smoke)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs, the median is shown (default 3; 1 with --smoke)")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (CUDA graphs: warm-up, record, replay)")
    p.add_argument("--budget-s", type=float, default=None, help="skip rows that would start later than this")
    p.add_argument("--depth-check", action="store_true")
    args = p.parse_args(argv)
    args.steps = args.steps or (1 if args.smoke else 5)
    args.repeats = args.repeats or (1 if args.smoke else 3)
    m = Machine.from_args(args.smoke, args.mode, eager_only=args.eager)
    if m.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    b = Bench(m, args)
    print(m.describe(), flush=True)
    configs, bf16 = _configs(args.configs, m), _configs(args.bf16_configs, m)
    if m.smoke:  # the same code on fewer configurations: smoke runs are for "it runs", not figures
        configs, bf16 = configs[:2], bf16[-1:]
    if m.spec is not None:
        compile_plan(b, configs, bf16)
    modes = [False, True] if m.spec is not None else [False]
    b.header("fp32 (PyTorch's default flags)")
    for i, (preset, batch) in enumerate(configs):
        for compiled in modes:
            for saving in (False, True):
                b.train_row(preset, batch, Variant(compiled, saving))
        b.eval_row(preset, batch, compiled=False)
        if i == 0 and m.spec is not None:
            b.eval_row(preset, batch, compiled=True)
    b.header("IEEE float32 training (full_float32), eager plain")
    for preset, batch in configs[:2]:
        b.train_row(preset, batch, Variant(False, False, ieee=True))
        default, ieee = b.rows.get((f"{preset}:{batch}", Variant(False, False))), \
            b.rows.get((f"{preset}:{batch}", Variant(False, False, ieee=True)))
        if default and ieee:
            print(f"{preset}:{batch}: default flags {default.img_s / ieee.img_s:.2f}x the IEEE step's img/s", flush=True)
    if bf16:
        b.header("bf16 autocast + channels_last")
        for preset, batch in bf16:
            b.train_row(preset, batch, Variant(False, False, bf16=True))
            for saving in ([False, True] if m.spec is not None else []):
                b.train_row(preset, batch, Variant(True, saving, bf16=True))
    if args.depth_check and m.spec is not None:
        b.header("compile + first step vs depth (fresh dynamo state, caches off)")
        depth_check(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
