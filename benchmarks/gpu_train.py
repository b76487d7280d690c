"""``irevnet train --compile reduce-overhead`` end to end: 2 epochs of synthetic ``cifar10``.

    python benchmarks/gpu_train.py OUT_DIR            # on the GPU
    python benchmarks/gpu_train.py OUT_DIR --eager    # without --compile (the preflight failed)
    python benchmarks/gpu_train.py OUT_DIR --smoke    # CPU, tiny model, eager

Prints, per epoch, img/s (epoch 1 includes compiling and CUDA-graph recording, epoch 2 is
steady), the evaluation's top-1 and the reconstruction monitor's error: the training
step, evaluation (its last batch is another shape) and the monitor (an inverse) all run
the compiled blocks. ``irevnet train`` needs tqdm and torchvision; where they are not
importable this prints one line saying so and exits 0 (``benchmarks/gpu_suite.sh
--fetch-deps`` brings them for the GPU machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--eager", action="store_true")
    args = p.parse_args(argv)
    missing = [m for m in ("tqdm", "torchvision") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"train: skipped: irevnet train needs {' and '.join(missing)}, not importable here (where PyPI is "
              "reachable: bash benchmarks/gpu_suite.sh --fetch-deps, then carry benchmarks/.gpu-deps)", flush=True)
        return 0
    run = args.out / "train-run"
    shutil.rmtree(run, ignore_errors=True)
    if args.smoke:  # eager: the CLI compiles with inductor, which alone takes minutes of C++ compiling on a CPU
        options = ["--model", "blocks=1,1,1", "--synthetic-size", "64", "--batch-size", "16", "--device", "cpu",
                   "--workers", "0"]
        print("train: smoke run, eager (irevnet train --compile uses inductor: minutes on a CPU)", flush=True)
    else:
        options = ["--synthetic-size", "6400", "--batch-size", "128", "--device", "cuda"]
        options += [] if args.eager else ["--compile", "reduce-overhead"]
    cmd = [sys.executable, "-m", "irevnet", "train", "--preset", "cifar10", "--data", "synthetic", "--epochs", "2",
           "--eval-every", "1", "--no-progress", "--out", str(run), *options]
    print("$ " + " ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc:
        return rc
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        note = "compile and CUDA-graph recording included" if r["epoch"] == 1 else "steady"
        print(f"train epoch {r['epoch']}: {r['img_per_s']:.0f} img/s ({note}), {r['epoch_seconds']:.1f} s; "
              f"eval top1 {r.get('eval_top1', float('nan')):.3f}; reconstruction error "
              f"{r.get('recon_rel_error', float('nan')):.1e} (floor {r.get('recon_floor', float('nan')):.1e})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
