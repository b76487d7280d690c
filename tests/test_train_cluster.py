"""Training on clusters: stop signals, SIGKILL and torchrun (DDP, restarts) with exact resume, the
divergence guard, recipes, data order, CLI errors.

The signal tests send real SIGTERM / SIGKILL to subprocesses. A hook in the child only
pauses one step (writing its pid to a file) so that the signal lands at a known step.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import pkgutil
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import irevnet
import irevnet.io.formats as ckpt
from irevnet import CheckpointError, ConfigError, IRevNet, IRevNetConfig, IRevNetError, create_model, load_model
from irevnet.cli.main import main
from irevnet.convert import ConversionError, load_reference_checkpoint
from irevnet.data import CorruptImageError, build_datasets
from irevnet.data.imagefolder import load_image
from irevnet.errors import OutOfMemoryError, TrainingDivergedError
from irevnet.training import build_criterion, build_optimizer, get_recipe
from irevnet.training import trainer as trainer_module
from irevnet.training.data_loading import ResumableSampler, SeededItems, default_workers, train_loader
from irevnet.training.preemption import PREEMPTED_EXIT_CODE
from irevnet.training.trainer import TrainConfig, train

TINY = ["--preset", "digits", "--data", "synthetic", "--model", "blocks=1,1", "--no-progress", "--device", "cpu"]


def _cfg(out: Path, **kw) -> TrainConfig:
    recipe = get_recipe("digits").replace(**{"epochs": kw.pop("epochs", 1), "dropout": 0.1, **kw.pop("recipe", {})})
    return TrainConfig(preset="digits", data="synthetic", out=str(out), recipe=recipe, synthetic_size=128,
                       model_overrides={"blocks": (1, 1)}, device="cpu", progress=False, **kw)


def _env() -> dict[str, str]:
    # TORCH_DISABLE_SHARE_RDZV_TCP_STORE: restarted workers otherwise may read the previous attempt's
    # gloo addresses from torchrun's shared store (pytorch/pytorch#135712) and fail to connect.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def _assert_same_state(a: dict, b: dict) -> None:
    """Same weights, same trainer position and the same optimizer state, bit for bit."""
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), \
        [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    ta, tb = a["trainer"], b["trainer"]
    assert (ta["epoch"], ta["batch"], ta["step"]) == (tb["epoch"], tb["batch"], tb["step"])
    sa, sb = ta["optimizer"]["state"], tb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i] if torch.is_tensor(sa[i][k]))
    for key in ("model", "ema"):  # the weights beside the checkpoint's model, with an EMA
        assert (key in ta) == (key in tb)
        assert all(torch.equal(ta[key][k], tb[key][k]) for k in ta.get(key, {}))


# -- structure: one error base, the model built from its configuration ------------------
def _library_exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in the package's modules, the command-line layer aside."""
    import timm  # noqa: F401  (imported first, timm's registration hook does not fire inside irevnet.timm_models)

    found = []
    for info in pkgutil.walk_packages(irevnet.__path__, "irevnet."):
        if info.name.endswith("__main__") or info.name.startswith("irevnet.cli"):
            continue
        module = importlib.import_module(info.name)
        found += [c for c in vars(module).values()
                  if inspect.isclass(c) and issubclass(c, BaseException) and c.__module__ == module.__name__]
    return found


def test_library_errors_share_one_base_class(tmp_path):
    classes = _library_exception_classes()
    assert {ConfigError, CheckpointError, CorruptImageError, ConversionError, TrainingDivergedError,
            OutOfMemoryError} <= set(classes)  # the walk sees every module, including the lazily imported ones
    assert [c.__qualname__ for c in classes if not issubclass(c, IRevNetError)] == []
    # Raised where the library meets bad input, and caught by `except IRevNetError`.
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    for raise_it, cls in [(lambda: create_model("nope"), ConfigError),
                          (lambda: load_model(tmp_path / "garbage.pt"), CheckpointError),
                          (lambda: load_image(str(tmp_path / "garbage.png")), CorruptImageError),
                          (lambda: load_reference_checkpoint(tmp_path / "absent.pth"), ConversionError)]:
        with pytest.raises(IRevNetError) as e:
            raise_it()
        assert type(e.value) is cls, e.value
        assert "--" not in str(e.value)  # messages name Python options, not the CLI's flags
    with pytest.raises(ValueError, match="unknown preset"):  # `except ValueError` keeps working
        create_model("nope")


def test_irevnet_is_built_from_its_config_object():
    config = IRevNetConfig(blocks=(1, 1), strides=(1, 2), channels=(32, 128), input_shape=(1, 8, 8), num_classes=3)
    torch.manual_seed(0)
    a = IRevNet(config)
    torch.manual_seed(0)
    b = IRevNet(**config.to_dict())  # keywords are the config's fields, with the config's defaults
    assert a.config == b.config == config
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert IRevNet(config, num_classes=7).config == config.replace(num_classes=7)
    assert IRevNet(blocks=(1,), strides=(2,), channels=(24,)).config.input_shape == IRevNetConfig.input_shape
    assert create_model("digits").config == IRevNet(IRevNetConfig.from_dict(create_model("digits").config.to_dict())).config


def test_dropout_has_one_source_the_recipe(tmp_path):
    result = train(_cfg(tmp_path, recipe={"dropout": 0.2}, eval_every=0))
    assert result.model.config.dropout == 0.2
    cfg = _cfg(tmp_path / "b")
    cfg.model_overrides = {"blocks": (1, 1), "dropout": 0.3}
    with pytest.raises(ConfigError, match="dropout is a recipe field"):
        train(cfg)


def test_evaluating_does_not_change_the_training(tmp_path):
    """Evaluation draws nothing from the RNG that dropout uses: the weights do not depend on --eval-every."""
    weights = [train(_cfg(tmp_path / str(every), epochs=2, eval_every=every, recon_threshold=None)).model.state_dict()
               for every in (0, 1)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# -- CLI error reporting ------------------------------------------------------------------
def test_cli_reports_library_errors_in_one_line_with_the_flag(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path), "--epochs", "2", "--set", "warmup_epochs=3"]) == 2
    err = capsys.readouterr().err
    assert err == "irevnet train: error: --set warmup_epochs=...: recipe warmup_epochs must be in [0, epochs=2], got 3.0\n"
    assert main(["train", *TINY, "--out", str(tmp_path), "--set", "optimizer=lion"]) == 2
    assert "--set optimizer=...: unknown optimizer 'lion'; use sgd or adamw" in capsys.readouterr().err
    with pytest.raises(ConfigError):  # --debug shows the traceback of handled errors too
        main(["--debug", "train", *TINY, "--out", str(tmp_path), "--epochs", "2", "--set", "warmup_epochs=3"])


def test_cli_reports_out_of_memory_with_the_batch_and_lets_bugs_through(tmp_path, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module, "forward_backward", oom)
    assert main(["train", *TINY, "--out", str(tmp_path / "a"), "--synthetic-size", "64", "--batch-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "out of memory on cpu with 32 images per process and step: CUDA out of memory" in err
    assert "--batch-size" in err and "--accum" in err and err.count("\n") == 1

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(trainer_module, "forward_backward", bug)
    with pytest.raises(KeyError, match="a bug"):  # not flattened into a one-line message
        main(["train", *TINY, "--out", str(tmp_path / "b"), "--synthetic-size", "64"])


# -- data order ------------------------------------------------------------------------
class _Noisy(Dataset):
    """An augmentation that draws from torch's, numpy's and python's global RNGs."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int):
        return torch.rand(2) + float(np.random.rand()) + random.random(), i


def test_data_order_resumes_mid_epoch_and_augmentation_ignores_workers():
    data = _Noisy()
    sampler = ResumableSampler(data, rank=1, world_size=2, seed=5)
    batches = {}
    for workers in (0, 2):
        sampler.set_epoch(3)
        before = torch.get_rng_state()
        batches[workers] = list(train_loader(data, sampler, batch_size=4, workers=workers, pin_memory=False))
        if workers == 0:
            assert torch.equal(torch.get_rng_state(), before)  # the training RNG (dropout) is untouched
    assert len(batches[0]) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                        for a, b in zip(batches[0], batches[2]))
    sampler.set_epoch(3, start=4)  # resume after the first batch
    tail = list(train_loader(data, sampler, batch_size=4, workers=0, pin_memory=False))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(tail, batches[0][1:])) and len(tail) == 2
    sampler.set_epoch(4)
    assert not torch.equal(next(iter(train_loader(data, sampler, batch_size=4, workers=0, pin_memory=False)))[0],
                           batches[0][0][0])
    assert SeededItems(data)[(5, 9)][1] == 5


def test_default_workers():
    assert default_workers("digits") == default_workers("synthetic") == 0
    assert 1 <= default_workers("imagefolder") <= 8
    assert default_workers("imagefolder", local_world_size=10**6) == 1


# -- recipes ------------------------------------------------------------------------------
def test_cosine_schedule_with_warmup_adamw_and_label_smoothing():
    model = create_model("digits", blocks=(1, 1))
    recipe = get_recipe("digits").replace(optimizer="adamw", schedule="cosine", warmup_epochs=1, epochs=4,
                                          lr=0.01, weight_decay=0.05, label_smoothing=0.1)
    opt, sched, per_step = build_optimizer(model, recipe, steps_per_epoch=10)
    assert per_step and isinstance(opt, torch.optim.AdamW)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.05, 0.0}
    assert all(p.ndim <= 1 for p in opt.param_groups[1]["params"]) and all(p.ndim > 1 for p in opt.param_groups[0]["params"])
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01)  # linear warm-up over one epoch
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01 * 1e-2
    assert lrs[10 + 15] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 15 / 30)))
    logits, y = torch.randn(5, 10), torch.arange(5)
    assert build_criterion(recipe)(logits, y) == F.cross_entropy(logits, y, label_smoothing=0.1)
    assert "imagenet-adamw" in __import__("irevnet").training.list_recipes()
    with pytest.raises(ConfigError, match=r"warmup_epochs must be in \[0, epochs=4\]"):
        recipe.replace(warmup_epochs=5)


def test_ema_is_evaluated_and_written_as_the_model(tmp_path):
    # Evaluated once, after epoch 2: best.pt and the model folder hold the final EMA.
    result = train(_cfg(tmp_path, epochs=2, recipe={"ema_decay": 0.5}, eval_every=2,
                        save_pretrained=str(tmp_path / "model")))
    payload = ckpt.read_checkpoint(tmp_path / "last.pt")
    raw = payload["trainer"]["model"]
    ema = payload["state_dict"]
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    assert all(torch.equal(v, ema[k]) for k, v in result.model.state_dict().items())
    best = ckpt.read_checkpoint(tmp_path / "best.pt")
    assert "trainer" not in best and all(torch.equal(best["state_dict"][k], v) for k, v in ema.items())
    assert all(torch.equal(IRevNet.from_pretrained(tmp_path / "model").state_dict()[k], v) for k, v in ema.items())
    eval_set = build_datasets("synthetic", config=result.model.config, synthetic_size=128).eval
    evaluated = trainer_module.evaluate(load_model(tmp_path / "last.pt"), DataLoader(eval_set, batch_size=128))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval_top1"] == evaluated.top1 and rows[-1]["eval_loss"] == pytest.approx(evaluated.loss)
    # The trained weights are evaluated too; both checkpoints say which weights their model is.
    trained = create_model("digits", blocks=(1, 1), dropout=0.1)
    trained.load_state_dict(raw)
    evaluated = trainer_module.evaluate(trained, DataLoader(eval_set, batch_size=128))
    assert rows[-1]["eval_trained_top1"] == evaluated.top1 and "eval_ema_top1" not in rows[-1]
    assert best["weights"] == payload["weights"] == "ema"
    # --raw-weights: the trained weights are the model, the EMA rides in the trainer state.
    swapped = train(_cfg(tmp_path / "raw", epochs=2, recipe={"ema_decay": 0.5}, eval_every=2, ema_as_model=False))
    payload_raw = ckpt.read_checkpoint(tmp_path / "raw" / "last.pt")
    assert all(torch.equal(payload_raw["state_dict"][k], raw[k]) for k in raw)
    assert all(torch.equal(payload_raw["trainer"]["ema"][k], ema[k]) for k in ema) and "model" not in payload_raw["trainer"]
    assert all(torch.equal(v, raw[k]) for k, v in swapped.model.state_dict().items())
    row = json.loads((tmp_path / "raw" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "eval_ema_top1" in row and "eval_trained_top1" not in row and payload_raw["weights"] == "trained"


# -- divergence guard ------------------------------------------------------------------
def test_divergence_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss at step 2 \(epoch 1, batch 2/8\): the run "
                       r"stopped without saving; the last good checkpoint is .*last\.pt \(step 1\), left intact"):
        train(_cfg(tmp_path, recipe={"lr": 1e30, "batch_size": 16}, save_every=1))
    good = ckpt.read_checkpoint(tmp_path / "last.pt")
    assert good["trainer"]["step"] == 1
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())
    with pytest.raises(TrainingDivergedError, match=r"loss at step 4 .*after skipping 2 such step\(s\).*no checkpoint"):
        train(_cfg(tmp_path / "b", recipe={"lr": 1e30, "batch_size": 16}, skip_nonfinite=2))


def _poison_step(monkeypatch, step: int) -> None:
    """Make the gradients of optimizer step ``step`` non-finite (a stand-in for a bad batch)."""
    real, calls = trainer_module.forward_backward, [0]

    def poisoned(model, *args, **kwargs):
        stats = real(model, *args, **kwargs)
        calls[0] += 1
        if calls[0] == step:
            next(model.parameters()).grad[0] = float("nan")
        return stats

    monkeypatch.setattr(trainer_module, "forward_backward", poisoned)


def test_skip_nonfinite_skips_a_bad_step_and_fp16_scaler_skipping_is_left_alone(tmp_path, monkeypatch):
    _poison_step(monkeypatch, 2)
    with pytest.raises(TrainingDivergedError, match="non-finite gradient at step 2"):
        train(_cfg(tmp_path / "guard", recipe={"batch_size": 16}))
    _poison_step(monkeypatch, 2)
    result = train(_cfg(tmp_path / "skip", recipe={"batch_size": 16}, skip_nonfinite=1))
    assert ckpt.read_checkpoint(tmp_path / "skip" / "last.pt")["trainer"]["skipped"] == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    # fp16: the GradScaler skips the step and lowers its scale; the guard does not interfere.
    _poison_step(monkeypatch, 2)
    train(_cfg(tmp_path / "fp16", recipe={"batch_size": 16}, amp="fp16"))
    state = ckpt.read_checkpoint(tmp_path / "fp16" / "last.pt")["trainer"]
    assert state["skipped"] == 0 and state["scaler"]["scale"] < 2.0**16


# -- stop signals and exact resume -------------------------------------------------------
_CHILD = """
import os, sys, time
from pathlib import Path
import irevnet.training.trainer as trainer
from irevnet.cli.main import main

out, pause = sys.argv[1], int(sys.argv[2])
real, calls = trainer.forward_backward, [0]

def forward_backward(*args, **kwargs):
    calls[0] += 1
    if calls[0] == pause and os.environ.get("RANK", "0") == os.environ.get("PAUSE_RANK", "0"):
        Path(out + ".pid").write_text(str(os.getpid()))  # the test signals this process now
        deadline = time.monotonic() + 30
        while not Path(out + ".signalled").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return real(*args, **kwargs)

trainer.forward_backward = forward_backward
sys.exit(main(["train", *sys.argv[3:], "--out", out, "--resume", "auto"]))
"""


def _signal_when_paused(proc: subprocess.Popen, out: Path, sig: signal.Signals) -> None:
    deadline = time.monotonic() + 120
    pid_file = Path(f"{out}.pid")
    while not pid_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid_file.exists(), "the run never reached the step to signal"
    time.sleep(0.05)  # the pid file may be visible before its content
    os.kill(int(pid_file.read_text()), sig)
    Path(f"{out}.signalled").touch()


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_and_sigkill_then_resume_are_bit_identical(tmp_path):
    """One uninterrupted run, and one stopped three times, each attempt resuming the last:
    SIGTERM mid-epoch, SIGKILL during the first step of epoch 2, SIGKILL mid-epoch; the fourth
    attempt, `irevnet train --resume` as a user would type it, finishes: both end in the same state."""
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    # 8 steps per epoch, 2 epochs; adamw + cosine + label smoothing + EMA exercise every piece of state.
    args = [*TINY, "--synthetic-size", "128", "--batch-size", "16", "--epochs", "2", "--seed", "3",
            "--set", "dropout=0.1", "--set", "optimizer=adamw", "--set", "schedule=cosine",
            "--set", "warmup_epochs=0.5", "--set", "label_smoothing=0.1", "--set", "ema_decay=0.9",
            "--lr", "0.01", "--save-every", "3"]
    run = lambda out, pause: subprocess.Popen([sys.executable, str(child), str(out), str(pause), *args],  # noqa: E731
                                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ref, out = run(tmp_path / "ref", 0), tmp_path / "run"
    # The pause counts the steps of each attempt: the steps 5, 8 + 1 = 9 and 11 of the run.
    # Positions (epoch index, batch, step) of the save each attempt leaves.
    for pause, sig, position in ((5, signal.SIGTERM, (0, 5, 5)), (4, signal.SIGKILL, (1, 0, 8)),
                                 (3, signal.SIGKILL, (1, 1, 9))):
        proc = run(out, pause)
        _signal_when_paused(proc, out, sig)
        _, err = proc.communicate(timeout=120)
        for name in (".pid", ".signalled"):
            Path(f"{out}{name}").unlink()
        if sig == signal.SIGTERM:  # saved after finishing the step
            assert proc.returncode == PREEMPTED_EXIT_CODE, err
            assert "stopped by SIGTERM at epoch 1, batch 5/8 (step 5)" in err
        else:  # the last save stands: the end of epoch 1 (step 8), then step 9's (--save-every 3)
            assert proc.returncode == -signal.SIGKILL and ("resuming" in err) == (pause != 5)
        state = ckpt.read_checkpoint(out / "last.pt")["trainer"]
        assert (state["epoch"], state["batch"], state["step"]) == position
    resumed = subprocess.run([sys.executable, "-m", "irevnet", "train", *args, "--out", str(out), "--resume"],
                             env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    assert ref.wait(timeout=120) == 0, ref.stderr.read()
    reference = ckpt.read_checkpoint(tmp_path / "ref" / "last.pt")
    _assert_same_state(reference, ckpt.read_checkpoint(out / "last.pt"))
    rows = [[(r["epoch"], r["loss"], r["eval_top1"]) for r in _rows(tmp_path / name)] for name in ("ref", "run")]
    assert rows[0] == rows[1] and len(rows[0]) == 2
    # best.pt: the same model alone (no trainer state)
    best_ref, best = (ckpt.read_checkpoint(tmp_path / name / "best.pt") for name in ("ref", "run"))
    assert best.keys() == best_ref.keys() == {"format", "version", "config", "state_dict", "weights"}
    assert all(torch.equal(best_ref["state_dict"][k], v) for k, v in best["state_dict"].items())


_WORKER = """
import json, logging, os, sys, time, torch
from pathlib import Path
import irevnet.io.formats as ckpt
import irevnet.training.trainer as trainer
from irevnet.training import get_recipe
from irevnet.training.preemption import exit_code
from irevnet.training.trainer import TrainConfig, train

logging.basicConfig(level=logging.INFO)
out, attempt, rank = sys.argv[1], int(os.environ["TORCHELASTIC_RESTART_COUNT"]), os.environ["RANK"]

def crash(epoch, record):
    if epoch == 0 and attempt == 0 and rank == "1":
        sys.exit(3)  # attempt 0: a rank dies after the first checkpoint; torchrun restarts every rank

real, calls = trainer.forward_backward, [0]

def forward_backward(*args, **kwargs):
    calls[0] += 1  # attempt 1: rank 1 waits at its third micro-batch for the test's SIGTERM
    if attempt == 1 and rank == "1" and calls[0] == 3:
        Path(out + ".pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + 30
        while not Path(out + ".signalled").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return real(*args, **kwargs)

trainer.forward_backward = forward_backward
if attempt == 2 and rank == "0":  # attempt 2 resumes from the save of the stop
    state = ckpt.read_checkpoint(Path(out) / "last.pt")["trainer"]
    Path(out + ".stop.json").write_text(json.dumps([state["epoch"], state["step"], state["batch"], len(state["rng"])]))
# The configuration of DDP_ARGS, through the Python API; resume is left at "no": a torchelastic restart implies it.
cfg = TrainConfig(preset="digits", data="synthetic", out=out, synthetic_size=128, device="cpu", progress=False, seed=1,
                  recipe=get_recipe("digits").replace(epochs=2, dropout=0.1, batch_size=16),
                  model_overrides={"blocks": (1, 1)}, memory_efficient=True, accum=2)
result = train(cfg, on_epoch_end=crash)
if result.preempted:
    sys.exit(exit_code(result.stopped_by))  # as `irevnet train` does: torchrun restarts the ranks
torch.save(result.model.state_dict(), f"{out}.rank{rank}.pt")
"""

# 2 processes x 2 micro-batches of 4 per optimizer step, 64 images per rank: 8 steps per epoch.
# DDP with memory-saving recompute and accumulation (no_sync), the combination peers get wrong.
DDP_ARGS = [*TINY, "--synthetic-size", "128", "--batch-size", "16", "--epochs", "2", "--seed", "1",
            "--set", "dropout=0.1", "--memory-efficient", "--accum", "2", "--save-every", "2"]
FILES = {"config.json", "metrics.jsonl", "last.pt", "best.pt"}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_torchrun_ddp_restarts_and_stops_then_resumes_bit_identical(tmp_path):
    """One uninterrupted DDP run, and one in three attempts: a rank dies after epoch 1 (torchrun
    restarts every rank, which resume), then rank 1 gets SIGTERM mid-epoch (every rank saves and
    stops; torchrun restarts them again, from that save): both end in the same state."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # One job at a time: two concurrent standalone rendezvous can race for the same port.
    ref = subprocess.run([*torchrun, "-m", "irevnet", "train", *DDP_ARGS, "--out", str(tmp_path / "ref")],
                         env=_env(), capture_output=True, text=True, timeout=180)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert ref.stdout.count("epoch 2: train loss") == 1  # rank 0 alone reports
    (tmp_path / "worker.py").write_text(_WORKER)
    run = tmp_path / "elastic"
    job = subprocess.Popen([*torchrun, "--max-restarts", "2", str(tmp_path / "worker.py"), str(run)], env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _signal_when_paused(job, run, signal.SIGTERM)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    assert err.count("resuming") == 2, err[-3000:]  # rank 0 reports, after each of the two restarts
    assert "stopped by SIGTERM at epoch 2, batch 6/16 (step 11)" in err  # rank 1 (16 micro-batches per epoch)
    assert f"failed (exitcode: {PREEMPTED_EXIT_CODE})" in err  # torchrun restarted the stopped ranks
    # Rank 0 stopped at rank 1's step: epoch 2 (index 1), step 8 + 3, its 6th micro-batch (accum 2).
    assert json.loads(Path(f"{run}.stop.json").read_text()) == [1, 11, 6, 2]

    reference = ckpt.read_checkpoint(tmp_path / "ref" / "last.pt")
    ranks = [torch.load(f"{run}.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], v) for k, v in ranks[1].items())  # DDP kept the ranks in step
    assert all(torch.equal(reference["state_dict"][k], v) for k, v in ranks[0].items())
    for folder in (tmp_path / "ref", run):
        assert {p.name for p in folder.iterdir()} == FILES
        assert [r["epoch"] for r in _rows(folder)] == [1, 2]
        payload = ckpt.read_checkpoint(folder / "last.pt")
        _assert_same_state(reference, payload)
        assert payload["trainer"]["world_size"] == 2 and len(payload["trainer"]["rng"]) == 2
        assert json.loads((folder / "config.json").read_text())["world_size"] == 2
