"""Throughput (images/s) of forward, forward+backward and inverse for a preset.

    python benchmarks/throughput.py                      # cifar10, batch 32, CPU
    python benchmarks/throughput.py --preset imagenet-b --batch-size 64 --device cuda

Each figure is the median over ``--repeats`` timed runs of ``--iters`` iterations, after
``--warmup`` untimed iterations. forward: eval mode, no grad, logits. forward+backward:
train mode, cross-entropy loss, gradients of all parameters. inverse: eval mode, no grad,
Φ⁻¹ from a precomputed Φ. The inverse evaluates each F once, like the forward, so its
throughput should match the forward's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import irevnet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, *, device, warmup: int, iters: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        runs.append((time.perf_counter() - start) / iters)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cifar10")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = irevnet.create_model(args.preset).to(device)
    x = torch.randn(args.batch_size, *model.input_shape, device=device)
    y = torch.randint(0, model.config.num_classes, (args.batch_size,), device=device)

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    model.eval()
    with torch.no_grad():
        phi = model.forward_features(x)

    def inverse():
        with torch.no_grad():
            model.inverse(phi)

    timing = dict(warmup=args.warmup, iters=args.iters, repeats=args.repeats, device=device)
    model.eval()
    t_fwd = _time(forward, **timing)
    t_inv = _time(inverse, **timing)
    model.train()
    t_fb = _time(forward_backward, **timing)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.preset}, batch {args.batch_size}, {name}, torch {torch.__version__}")
    print("| pass | ms / batch | images / s |")
    print("|---|---|---|")
    for label, t in (("forward", t_fwd), ("forward+backward", t_fb), ("inverse", t_inv)):
        print(f"| {label} | {1000 * t:.1f} | {args.batch_size / t:.0f} |")
    print(f"inverse / forward throughput: {t_fwd / t_inv:.2f}")


if __name__ == "__main__":
    main()
