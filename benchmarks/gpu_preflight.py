"""Can this machine compile with CUDA graphs? One tiny ``torch.compile(mode="reduce-overhead")`` step.

    python benchmarks/gpu_preflight.py           # on the GPU: inductor + Triton + CUDA graphs
    python benchmarks/gpu_preflight.py --smoke   # on the CPU: the same code, aot_eager

Compiles a small function (a conv, BatchNorm and ReLU with its backward), runs it three
times (CUDA-graph trees warm up, record, then replay), compares the replay with eager and
prints one line: ``preflight: ok ...`` and exit status 0, or ``preflight: FAILED <why>``
and exit status 1 (``benchmarks/gpu_suite.sh`` then runs the eager sections only).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from irevnet.compile import CompileSpec, CompileUnavailableError, check_compile_support


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, aot_eager backend")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.smoke else "cuda")
    spec = CompileSpec("aot_eager") if args.smoke else CompileSpec(mode="reduce-overhead")
    start = time.perf_counter()
    try:
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CompileUnavailableError("no CUDA device")
        check_compile_support(spec, device)
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).to(device)
        x = torch.randn(8, 4, 16, 16, device=device)

        def step(fn):  # noqa: ANN001, ANN202
            if spec.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            net.zero_grad(set_to_none=True)
            fn(x).square().mean().backward()
            return [p.grad.clone() for p in net.parameters()]

        compiled = spec.compile(net)
        for _ in range(3):  # warm-up, recording, replay
            got = step(compiled)
        want = step(net)
        err = max(((a - b).norm() / b.norm()).item() for a, b in zip(got, want))
        if not err <= 1e-3:  # TF32 / fused reductions differ from eager by ~1e-4 at most here
            raise RuntimeError(f"compiled replay differs from eager: relative error {err:.1e}")
    except Exception as e:  # any failure means: run the eager sections only
        why = str(e).strip().splitlines()[0][:240] if str(e).strip() else ""
        print(f"preflight: FAILED {type(e).__name__}: {why}", flush=True)
        return 1
    print(f"preflight: ok, {spec.backend} {spec.mode or ''} compile + 3 steps {time.perf_counter() - start:.1f} s, "
          f"replay vs eager {err:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
