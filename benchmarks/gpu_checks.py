"""Exactness on the GPU: the precision policy, memory-saving vs plain, dropout/BN/RNG, CUDA-graph replays.

    python benchmarks/gpu_checks.py             # on the GPU (about 2 minutes; prints one line per check)
    python benchmarks/gpu_checks.py --eager     # without the compiled checks (the preflight failed)
    python benchmarks/gpu_checks.py --smoke     # CPU, tiny models, aot_eager: checks that it runs

Exit status 1 if a check fails. In order:

1. Inverse error, eval and train mode, ``cifar10`` and ``imagenet-b``: the exact path
   (``forward_features`` / ``inverse`` in IEEE float32, the default) and, for comparison,
   the same under PyTorch's default flags (``set_full_float32(False)``: TF32 convolutions).
2. Gradients against a float64 reference (no dropout): plain and memory-saving, under
   PyTorch's default flags (what training uses) and under ``full_float32()``.
3. Dropout, BatchNorm, RNG and autocast: memory-saving vs plain with dropout 0.1, the
   CUDA RNG state after a step, BatchNorm buffers after 3 SGD steps, bf16/fp16 autocast.
4. Compiled blocks (``compile_blocks(mode="reduce-overhead")``: CUDA graphs): steps 3 and
   4 from the same RNG state, which CUDA-graph trees *replay* (step 1 warms up, step 2
   records), against eager; gradient accumulation with one step mark per optimizer step;
   BatchNorm buffers after 3 SGD steps; the inverse, replayed; CUDA graphs skipped
   (inductor's own counter). Compared under ``full_float32()``, so that only kernel
   rounding separates them.

``--budget-s`` skips the checks that would start after that many seconds, saying so.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F

from gpu_common import CompileCounters, Deadline, Machine
from irevnet import IRevNet
from irevnet.precision import full_float32

failures = 0


def check(name: str, value: float, bound: float) -> None:
    global failures
    ok = value <= bound
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.2e} (bound {bound:.0e})", flush=True)


def info(name: str, value: float) -> None:
    print(f"     {name}: {value:.2e}", flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def flat_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Relative difference of all gradients taken as one vector."""
    return rel(torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b]))


def max_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(rel(x, y) for x, y in zip(a, b))


def rng_state(m: Machine) -> torch.Tensor:
    return torch.cuda.get_rng_state(m.device) if m.device.type == "cuda" else torch.get_rng_state()


def set_rng_state(m: Machine, state: torch.Tensor) -> None:
    """The generator dropout draws from on the device (CUDA's, or the CPU's in smoke runs)."""
    if m.device.type == "cuda":
        torch.cuda.set_rng_state(state, m.device)
    else:
        torch.set_rng_state(state)


def grads(m: Machine, model: IRevNet, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None = None,
          ieee: bool = False) -> list[torch.Tensor]:
    """One step's parameter gradients (a step mark first; ``ieee``: the whole step under full_float32)."""
    scale = 2.0**12 if amp is torch.float16 else 1.0  # fp16 gradients underflow without loss scaling
    model.zero_grad(set_to_none=True)
    m.mark(model)
    with full_float32() if ieee else nullcontext():
        with torch.autocast(m.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        (loss * scale).backward()
    return [p.grad.detach().float() / scale for p in model.parameters()]


def trained_like(model: IRevNet) -> IRevNet:
    """BatchNorm biases as after training. At initialization the channels that zero padding feeds
    are constant and their BatchNorm amplifies rounding by up to 1/sqrt(eps): float32 gradients
    there are ~1e-2 from float64 in plain autograd itself, which would hide what is compared."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=gen))
    return model


def inverse_checks(m: Machine) -> None:
    for preset in ("cifar10", "imagenet-b"):
        model = m.model(preset)
        x = torch.randn(m.batch(8), *model.input_shape, device=m.device)
        for train in (False, True):
            model.train(train)
            mode = "train" if train else "eval"
            with torch.no_grad():
                check(f"{preset} inverse, IEEE float32 (the default), {mode} mode",
                      rel(model.inverse(model.forward_features(x)), x), 1e-3 if train else 1e-5)
                model.set_full_float32(False)
                info(f"{preset} inverse under PyTorch's default flags (TF32 convolutions), {mode} mode",
                     rel(model.inverse(model.forward_features(x)), x))
                model.set_full_float32(True)
        del model


def gradient_checks(m: Machine) -> None:
    """Plain and memory-saving gradients against float64, under the same flags."""
    model = trained_like(m.model("cifar10", blocks=(6, 6, 6)))
    x = torch.randn(m.batch(32), *model.input_shape, device=m.device)
    y = torch.randint(0, 10, (x.shape[0],), device=m.device)
    reference = grads(m, copy.deepcopy(model).double(), x.double(), y)
    for ieee in (False, True):
        flags = "full_float32()" if ieee else "PyTorch's default flags"
        e_plain = flat_rel(grads(m, model.set_memory_efficient(False), x, y, ieee=ieee), reference)
        e_saving = flat_rel(grads(m, model.set_memory_efficient(True), x, y, ieee=ieee), reference)
        print(f"     {flags}: |g_plain - g_float64| {e_plain:.2e}, |g_saving - g_float64| {e_saving:.2e} "
              f"(relative, all gradients), ratio {e_saving / e_plain:.2f}", flush=True)
        if ieee:  # the same arithmetic: memory-saving is as close to float64 as plain autograd is
            check("memory-saving error vs float64 / plain error vs float64, full_float32", e_saving / e_plain, 1.5)


def rng_bn_autocast_checks(m: Machine) -> None:
    plain = trained_like(m.model("cifar10", blocks=(6, 6, 6), dropout=0.1))
    saving = copy.deepcopy(plain).set_memory_efficient(True)
    x = torch.randn(m.batch(32), *plain.input_shape, device=m.device)
    y = torch.randint(0, 10, (x.shape[0],), device=m.device)
    state = rng_state(m)
    set_rng_state(m, state)
    reference = grads(m, copy.deepcopy(plain), x, y, ieee=True)
    amps = [None, torch.bfloat16] + ([torch.float16] if m.device.type == "cuda" else [])
    for amp in amps:
        name = "fp32" if amp is None else str(amp).split(".")[-1]
        set_rng_state(m, state)
        g_plain, after_plain = grads(m, plain, x, y, amp, ieee=amp is None), rng_state(m)
        set_rng_state(m, state)
        g_saving, after_saving = grads(m, saving, x, y, amp, ieee=amp is None), rng_state(m)
        if amp is None:
            check("memory-saving vs plain, dropout 0.1, full_float32, max rel over tensors", max_rel(g_saving, g_plain),
                  1e-4)
        else:  # memory-saving must be as close to the fp32 gradients as plain autocast is
            e_plain, e_saving = flat_rel(g_plain, reference), flat_rel(g_saving, reference)
            check(f"memory-saving {name} error vs fp32 / plain {name} error vs fp32", e_saving / e_plain, 1.5)
        check(f"RNG state after the step equals plain's ({name})", float(not torch.equal(after_plain, after_saving)), 0)
    check("BatchNorm buffers after 3 steps, saving vs plain (max abs diff)",
          max((a.float() - b.float()).abs().max().item() for a, b in zip(plain.buffers(), saving.buffers())), 1e-3)


def compiled_checks(m: Machine, deadline: Deadline) -> None:
    """CUDA-graph replays of compiled blocks against eager, under full_float32."""
    assert m.spec is not None
    eager = trained_like(m.model("cifar10", blocks=(1, 1, 1), dropout=0.1))
    x = torch.randn(m.batch(32), *eager.input_shape, device=m.device)
    y = torch.randint(0, 10, (x.shape[0],), device=m.device)
    state = rng_state(m)
    set_rng_state(m, state)
    reference, rng_ref = grads(m, copy.deepcopy(eager), x, y, ieee=True), rng_state(m)
    counters = CompileCounters()
    for saving in (False, True):
        label = f"compiled {m.spec.mode or m.spec.backend} {'saving' if saving else 'plain'}"
        if deadline.left() < 30:
            print(f"skip {label}: time budget", flush=True)
            continue
        start = time.perf_counter()
        try:
            model = copy.deepcopy(eager).set_memory_efficient(saving)
            model.compile_blocks(backend=m.spec.backend, mode=m.spec.mode)
            for step in range(1, 5):  # 1 warms up, 2 records, 3 and 4 replay
                set_rng_state(m, state)
                g, after = grads(m, model, x, y, ieee=True), rng_state(m)
                if step >= 3:
                    check(f"{label}: step {step} (a replay) vs eager, dropout 0.1, max rel over tensors",
                          max_rel(g, reference), 1e-4)
                    check(f"{label}: step {step}: RNG state after the step equals eager's",
                          float(not torch.equal(after, rng_ref)), 0)
            accumulation_check(m, label, eager, model, x, y, state)
            batchnorm_check(m, label, eager, model, x, y, state)
            model.eval()
            errors = []
            for _ in range(4):
                m.mark(model)
                with torch.no_grad():
                    errors.append(rel(model.inverse(model.forward_features(x)), x))
            check(f"{label}: inverse, eval mode, replays 3 and 4 (max)", max(errors[2:]), 1e-5)
            print(f"     {label}: {time.perf_counter() - start:.1f} s, {counters.delta()}", flush=True)
        except Exception as e:  # a crash is a failed check, and the others still run
            check(f"{label}: ran without error ({type(e).__name__}: {str(e).splitlines()[0][:160]})", 1.0, 0)
    check("CUDA graphs skipped (inductor's counter)", float(counters.delta()["cudagraph_skips"]), 0)


def accumulation_check(m: Machine, label: str, eager: IRevNet, model: IRevNet, x: torch.Tensor, y: torch.Tensor,
                       state: torch.Tensor) -> None:
    """Two micro-batches per optimizer step, one step mark before the first: the accumulated ``.grad``."""
    def accumulate(net: IRevNet) -> list[torch.Tensor]:
        set_rng_state(m, state)
        net.zero_grad(set_to_none=True)
        m.mark(net)
        with full_float32():
            for xb, yb in ((x, y), (x.flip(0), y.flip(0))):
                (F.cross_entropy(net(xb), yb) / 2).backward()
        return [p.grad.detach().clone() for p in net.parameters()]

    reference = accumulate(copy.deepcopy(eager))
    got = [accumulate(model) for _ in range(4)][2:]  # calls 3 and 4 replay
    check(f"{label}: gradient accumulation, 2 micro-batches, replays (max rel over tensors)",
          max(max_rel(g, reference) for g in got), 1e-4)


def batchnorm_check(m: Machine, label: str, eager: IRevNet, model: IRevNet, x: torch.Tensor, y: torch.Tensor,
                    state: torch.Tensor) -> None:
    """BatchNorm buffers after 3 SGD steps (replays from step 3 on), from the same weights as eager's."""
    assert m.spec is not None
    compiled = copy.deepcopy(eager).set_memory_efficient(model.memory_efficient)
    compiled.compile_blocks(backend=m.spec.backend, mode=m.spec.mode)
    runs = []
    for net in (copy.deepcopy(eager), compiled):
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        for _ in range(3):
            set_rng_state(m, state)
            grads(m, net, x, y, ieee=True)
            opt.step()
        runs.append(list(net.buffers()))
    check(f"{label}: BatchNorm buffers after 3 SGD steps vs eager (max abs diff)",
          max((a.float() - b.float()).abs().max().item() for a, b in zip(*runs)), 1e-3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models, aot_eager")
    p.add_argument("--eager", action="store_true", help="skip the compiled checks")
    p.add_argument("--budget-s", type=float, default=None, help="skip checks that would start later than this")
    args = p.parse_args(argv)
    m = Machine.from_args(args.smoke, eager_only=args.eager)
    deadline = Deadline(args.budget_s)
    print(m.describe(), flush=True)
    sections: list[tuple[str, Callable[[], None]]] = [
        ("inverse", lambda: inverse_checks(m)), ("gradients vs float64", lambda: gradient_checks(m)),
        ("dropout, BatchNorm, RNG, autocast", lambda: rng_bn_autocast_checks(m)),
    ]
    if m.spec is not None:
        sections.append(("compiled blocks, CUDA-graph replays", lambda: compiled_checks(m, deadline)))
    for name, run in sections:
        if deadline.left() < 10:
            print(f"== {name}: skipped (time budget)", flush=True)
            continue
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        run()
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
    if args.smoke:  # batch 8 and tiny models: BatchNorm gradients are too ill-conditioned for the GPU bounds
        print(f"{failures} failure(s) (smoke run: the bounds are for the GPU run's sizes; exit status 0)", flush=True)
        return 0
    print(f"{failures} failure(s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
