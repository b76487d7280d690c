"""Correctness checks that need a GPU (CUDA RNG replay, fp16/bf16 autocast, cuDNN kernels, compiled blocks).

    python benchmarks/gpu_checks.py            # prints one line per check, exits 1 if any fails
    python benchmarks/gpu_checks.py --compiled # only the compiled-block checks (inductor, CUDA graphs)

The CPU test suite covers the same properties on the CPU; this script is run on the lent
GPU machine and its output recorded in benchmarks/README.md.
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F

import irevnet

failures = 0


def check(name: str, value: float, bound: float) -> None:
    global failures
    ok = value <= bound
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.2e} (bound {bound:.0e})", flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def inverse_checks(dev: torch.device) -> None:
    for preset, shape in (("cifar10", (3, 32, 32)), ("imagenet-b", (3, 224, 224)), ("imagenet-a", (3, 224, 224))):
        model = irevnet.create_model(preset).to(dev)
        x = torch.randn(8, *shape, device=dev)
        for train in (False, True):
            model.train(train)
            with torch.no_grad():
                err = rel(model.inverse(model.forward_features(x)), x)
            check(f"{preset} float32 inverse, {'train' if train else 'eval'} mode", err, 1e-5 if not train else 1e-3)
        del model
        torch.cuda.empty_cache()


def grads(model, x, y, amp):
    # fp16 gradients underflow without loss scaling (what GradScaler does in training).
    scale = 2.0**12 if amp is torch.float16 else 1.0
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=amp, enabled=amp is not None):
        loss = F.cross_entropy(model(x), y)
    (loss * scale).backward()
    return [p.grad.detach().float() / scale for p in model.parameters()]


def flat_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Relative difference of all gradients taken as one vector."""
    return rel(torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b]))


def memory_saving_checks(dev: torch.device) -> None:
    torch.manual_seed(0)
    plain = irevnet.create_model("cifar10", blocks=(6, 6, 6), dropout=0.1).to(dev)
    saving = copy.deepcopy(plain).set_memory_efficient(True)
    x = torch.randn(32, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (32,), device=dev)
    state = torch.cuda.get_rng_state(dev)
    reference = grads(copy.deepcopy(plain), x, y, None)  # fp32 plain autograd: what the low-precision runs approximate
    for amp in (None, torch.bfloat16, torch.float16):
        torch.cuda.set_rng_state(state, dev)
        g_plain = grads(plain, x, y, amp)
        after_plain = torch.cuda.get_rng_state(dev)
        torch.cuda.set_rng_state(state, dev)
        g_saving = grads(saving, x, y, amp)
        after_saving = torch.cuda.get_rng_state(dev)
        name = "fp32" if amp is None else str(amp).split(".")[-1]
        if amp is None:
            check("memory-saving vs plain grads, dropout 0.1, fp32, max rel over tensors",
                  max(rel(a, b) for a, b in zip(g_saving, g_plain)), 1e-4)
        else:
            # Low precision: memory-saving must be as close to the fp32 gradients as plain autocast is.
            e_plain, e_saving = flat_rel(g_plain, reference), flat_rel(g_saving, reference)
            print(f"     {name}: |g_plain - g_fp32| {e_plain:.2e}, |g_saving - g_fp32| {e_saving:.2e}, "
                  f"|g_saving - g_plain| {flat_rel(g_saving, g_plain):.2e} (relative, all gradients)")
            check(f"memory-saving {name} error vs fp32 / plain {name} error vs fp32", e_saving / e_plain, 1.5)
        check(f"CUDA RNG state after the step equals plain's ({name})", float(not torch.equal(after_plain, after_saving)), 0)
    bn_p = list(plain.buffers())
    bn_s = list(saving.buffers())
    check("BatchNorm buffers after 3 steps (max abs diff)",
          max((a.float() - b.float()).abs().max().item() for a, b in zip(bn_p, bn_s)), 1e-3)


def _step_grads(model, x, y, amp, state, dev, *, mark: bool = False):
    """Gradients of one step from CUDA RNG ``state``; returns (grads, CUDA RNG state after)."""
    torch.cuda.set_rng_state(state, dev)
    if mark:
        torch.compiler.cudagraph_mark_step_begin()
    g = grads(model, x, y, amp)
    return g, torch.cuda.get_rng_state(dev)


def compiled_checks(dev: torch.device) -> None:
    """Per-block compiled models (inductor) against eager plain autograd: CUDA graphs, dropout, bf16, fp16."""
    torch.manual_seed(0)
    eager = irevnet.create_model("cifar10", blocks=(4, 4, 4), dropout=0.1).to(dev)
    x = torch.randn(32, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (32,), device=dev)
    state = torch.cuda.get_rng_state(dev)
    reference = {amp: _step_grads(copy.deepcopy(eager), x, y, amp, state, dev) for amp in (None, torch.bfloat16,
                                                                                            torch.float16)}
    for mode in ("default", "reduce-overhead"):
        for saving in (False, True):
            label = f"compiled {mode} {'saving' if saving else 'plain'}"
            try:
                model = copy.deepcopy(eager).set_memory_efficient(saving).compile_blocks(mode=mode)
                mark = mode == "reduce-overhead"
                for amp in (None, torch.bfloat16, torch.float16):
                    name = "fp32" if amp is None else str(amp).split(".")[-1]
                    for _ in range(2):  # warm-up / recording runs of CUDA graphs, then the checked replay
                        g, after = _step_grads(model, x, y, amp, state, dev, mark=mark)
                    g_ref, after_ref = reference[amp]
                    check(f"{label}: CUDA RNG state after the step equals eager's ({name}, dropout 0.1)",
                          float(not torch.equal(after, after_ref)), 0)
                    if amp is None:
                        check(f"{label}: grads vs eager plain, fp32, dropout 0.1, max rel over tensors",
                              max(rel(a, b) for a, b in zip(g, g_ref)), 1e-4)
                    else:
                        e_ref, e_got = flat_rel(g_ref, reference[None][0]), flat_rel(g, reference[None][0])
                        check(f"{label}: {name} error vs fp32 / eager {name} error vs fp32", e_got / e_ref, 1.5)
                with torch.no_grad():
                    model.eval()
                    if mark:
                        torch.compiler.cudagraph_mark_step_begin()
                    err = rel(model.inverse(model.forward_features(x)), x)
                check(f"{label}: float32 inverse, eval mode", err, 1e-5)
                del model
            except Exception as e:  # a crash is a failed check, and the others still run
                check(f"{label}: ran without error ({type(e).__name__}: {str(e).splitlines()[0][:160]})", 1.0, 0)
    bn_eager = copy.deepcopy(eager)
    bn_comp = copy.deepcopy(eager).set_memory_efficient(True).compile_blocks(mode="reduce-overhead")
    try:
        for model, mark in ((bn_eager, False), (bn_comp, True)):
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            for i in range(3):
                _step_grads(model, x, y, None, state, dev, mark=mark)
                opt.step()
        check("compiled reduce-overhead saving: BatchNorm buffers after 3 SGD steps vs eager plain (max abs diff)",
              max((a.float() - b.float()).abs().max().item() for a, b in zip(bn_eager.buffers(), bn_comp.buffers())),
              1e-3)
    except Exception as e:
        check(f"compiled BatchNorm buffers: ran without error ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
              1.0, 0)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}", flush=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if "--compiled" not in sys.argv[1:]:
        inverse_checks(dev)
        memory_saving_checks(dev)
    compiled_checks(dev)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
