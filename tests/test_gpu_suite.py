"""The lent GPU machine promises only PyTorch and NumPy: the core and the GPU suite's scripts must need nothing else.

Each test runs a fresh interpreter without site-packages (``python -S``) whose path holds
only torch, numpy and what they depend on (symlinks into this environment), plus ``src``
and ``benchmarks``. The whole suite's smoke run (``bash benchmarks/gpu_suite.sh --smoke``,
a few minutes) is not part of the tests: ``make gpu-smoke`` runs it.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("tqdm", "torchvision", "sklearn", "matplotlib", "PIL", "safetensors", "timm", "huggingface_hub", "onnx")


def _distributions(names: tuple[str, ...]) -> list[md.Distribution]:
    """``names`` and everything they require (environment markers evaluated, no extras)."""
    seen: set[str] = set()
    found, todo = [], list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # an optional requirement this platform does not install
            continue
        found.append(dist)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


@pytest.fixture(scope="module")
def minimal_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of symlinks to the top-level modules of torch, numpy and their requirements."""
    site = tmp_path_factory.mktemp("site")
    for dist in _distributions(("torch", "numpy")):
        for f in dist.files or []:
            top = f.parts[0]
            if top.endswith((".dist-info", ".data")) or top in ("..", "__pycache__"):
                continue
            src, link = Path(str(dist.locate_file(top))), site / top
            if src.exists() and not link.exists():
                link.symlink_to(src)
    assert not any((site / name).exists() for name in OPTIONAL)
    return site


def _run(site: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(ROOT / "src"), str(ROOT / "benchmarks")]),
               OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    return subprocess.run([sys.executable, "-S", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


CORE = """
import contextlib, io, runpy, sys, torch, torch.nn.functional as F, irevnet
from irevnet.precision import full_float32
model = irevnet.create_model("cifar10", blocks=(1, 1, 1))
x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
for saving in (False, True):
    model.set_memory_efficient(saving)
    with full_float32():
        F.cross_entropy(model(x), y).backward()
model.compile_blocks(backend="aot_eager")
F.cross_entropy(model(x), y).backward()
model.eval()
with torch.no_grad():
    err = (model.inverse(model.forward_features(x)) - x).abs().max().item()
assert err < 1e-4, err
import gpu_checks, gpu_speed, gpu_train, memory  # the GPU suite's sections import here too
# Two of the suite's scripts, run as scripts (one interpreter start instead of three).
for argv in (["benchmarks/gpu_preflight.py", "--smoke"], ["benchmarks/gpu_train.py", sys.argv[1], "--smoke"]):
    sys.argv, out, code = argv, io.StringIO(), None
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as e:
            code = e.code
    print("script", argv[0], code, repr(out.getvalue()))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {OPTIONAL})
print("ok", loaded)
"""


@pytest.mark.slow
def test_core_and_gpu_suite_scripts_need_only_torch_and_numpy(minimal_site: Path, tmp_path: Path) -> None:
    """Models, memory-saving training, the precision policy, compiled blocks and the inverse; the GPU
    suite's section modules import; the preflight runs; the train section, which needs more, says so."""
    proc = _run(minimal_site, "-c", CORE.replace("{OPTIONAL}", repr(set(OPTIONAL))), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    *_, preflight, train, loaded = proc.stdout.strip().splitlines()
    assert preflight.startswith("script benchmarks/gpu_preflight.py 0 'preflight: ok"), preflight
    assert train == "script benchmarks/gpu_train.py 0 " + repr(
        "train: skipped: irevnet train needs tqdm and torchvision, not importable here (where PyPI is reachable: "
        "bash benchmarks/gpu_suite.sh --fetch-deps, then carry benchmarks/.gpu-deps)\n"), train
    assert not (tmp_path / "train-run").exists()
    assert loaded == "ok []"
