"""Float32 reconstruction error against the conditioning floor after a short, aggressive training.

The training is the one of ``tests/test_model.py::test_inverse_exact_after_training_steps``
(``cifar10`` with blocks (2, 2, 2), 30 SGD steps, lr 0.1, momentum 0.9, batch 16 of uniform
noise with arbitrary labels), once per seed. For each seed it prints, in eval mode on 8
held-out noise images in [0, 1]:

- ``float32``: relative L2 error of ``inverse(forward_features(x))`` in float32, and its max abs error;
- ``floor``: relative error of the exact (float64) inverse applied to the float64 Φ(x)
  rounded to float32 (:func:`irevnet.analysis.conditioning_floor`);
- ``ratio`` = float32 / floor, and the float64 relative error.

    python benchmarks/inverse_conditioning.py [--seeds 0 1 ...] [--steps 30]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from irevnet import create_model
from irevnet.analysis import conditioning_floor


def trained(seed: int, steps: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("cifar10", blocks=(2, 2, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        x = torch.rand(16, 3, 32, 32)
        y = (x.mean(dim=(1, 2, 3)) * 20).long() % 10
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def measure(seed: int, steps: int) -> dict[str, float]:
    model = trained(seed, steps).eval()
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        return _errors(model, x) | {"seed": seed}


def _errors(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    x_hat = model.inverse(model.forward_features(x))
    floor_per_image = conditioning_floor(model, x)
    norms = x.double().flatten(1).norm(dim=1)
    floor = ((floor_per_image * norms).square().sum().sqrt() / norms.square().sum().sqrt()).item()
    m64 = model.double()
    err64 = rel(m64.inverse(m64.forward_features(x.double())), x)
    err32 = rel(x_hat, x)
    return {"float32": err32, "max_abs": (x_hat - x).abs().max().item(), "floor": floor,
            "ratio": err32 / floor, "float64": err64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {torch.backends.cpu.get_cpu_capability()}")
    print("| seed | float32 relative error | float32 max abs error | floor (relative) | ratio "
          "| float64 relative error |")
    print("|---:|---:|---:|---:|---:|---:|")
    for seed in args.seeds:
        r = measure(seed, args.steps)
        print(f"| {seed} | {r['float32']:.2e} | {r['max_abs']:.2e} | {r['floor']:.2e} | {r['ratio']:.2f} | "
              f"{r['float64']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
