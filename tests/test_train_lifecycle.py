"""The training engine's lifecycle: the EMA and its warm-up, the hook of the hybrid objective,
Ctrl-C, extending a run, compile time apart from throughput, and run folders of the earlier trainer."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import irevnet.io.formats as ckpt
import irevnet.training.trainer as trainer_module
from irevnet import CheckpointError, create_model, init_weights_from, load_model
from irevnet.cli.main import main
from irevnet.training import TrainConfig, get_recipe, train
from irevnet.training.build import build
from irevnet.training.distributed import DistContext
from irevnet.training.ema import ema_decay_at, model_ema
from irevnet.training.resume import restore
from irevnet.compile import graphs_compiled

EEEFAFB_RUN = Path(__file__).parent / "data" / "written-by-eeefafb" / "run-ema-stopped"


def _cfg(out: Path, **kw) -> TrainConfig:
    recipe = get_recipe("digits").replace(**{"epochs": kw.pop("epochs", 1), **kw.pop("recipe", {})})
    return TrainConfig(preset="digits", data="synthetic", out=str(out), recipe=recipe, synthetic_size=128,
                       model_overrides={"blocks": (1, 1)}, device="cpu", progress=False, **kw)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- EMA -------------------------------------------------------------------------------------
def test_ema_warms_up_then_keeps_its_decay():
    """The k-th averaging update uses min(decay, (1 + k) / (10 + k)); the first copies the weights."""
    assert [ema_decay_at(0.99, k) for k in (1, 2, 890)] == [2 / 11, 3 / 12, 0.99]
    assert ema_decay_at(0.99, 1, warmup=False) == 0.99
    net = nn.Linear(3, 2, dtype=torch.float64)
    ema = model_ema(net, 0.5)
    expected = None
    for k in range(4):
        with torch.no_grad():
            net.weight.add_(1.0)
        ema.update_parameters(net)
        w = net.weight.detach().clone()
        d = ema_decay_at(0.5, k)
        expected = w if expected is None else d * expected + (1 - d) * w
        torch.testing.assert_close(ema.module.weight, expected, rtol=1e-15, atol=0)
    assert int(ema.n_averaged) == 4 and not ema.module.training and not ema.module.weight.requires_grad
    with pytest.raises(ValueError, match="decay must be in"):
        model_ema(net, 1.0)


@pytest.mark.slow
def test_ema_with_warmup_is_evaluated_with_the_trained_weights_on_digits(tmp_path):
    """ema_decay 0.99 over 6 epochs of digits (132 steps): without the warm-up, 0.99^132 = 26% of
    the EMA would still be the random initialization (0.43 eval top-1 on the CPU it was tried on);
    with it the EMA follows the training and matches the trained weights (~0.97 both)."""
    cfg = TrainConfig(preset="digits", data="digits", out=str(tmp_path), device="cpu", progress=False,
                      recipe=get_recipe("digits").replace(epochs=6, ema_decay=0.99), eval_every=6,
                      recon_threshold=None)
    row = train(cfg).history[-1]
    assert row["eval_top1"] >= 0.9 and row["eval_trained_top1"] >= 0.9
    assert ckpt.read_checkpoint(tmp_path / "best.pt")["weights"] == "ema"


# -- the hybrid objective's hook -------------------------------------------------------------------
def test_the_trained_model_carries_no_hook_of_the_hybrid_objective(tmp_path):
    cfg = TrainConfig(preset="digits-b", data="synthetic", out=str(tmp_path), synthetic_size=128, device="cpu",
                      progress=False, recipe=get_recipe("digits-b").replace(epochs=1, nll_weight=1.0), eval_every=0)
    model = train(cfg).model
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


# -- compile time --------------------------------------------------------------------------------
def test_compiled_graphs_are_counted():
    before = graphs_compiled()
    torch.compile(lambda x: x * 2 + 1, backend="eager")(torch.ones(3))
    assert graphs_compiled() == before + 1


def test_steps_that_compile_are_kept_out_of_the_throughput(tmp_path, monkeypatch):
    """A step during which a graph is compiled counts as compile time, not as img/s."""
    calls = [0]

    def graphs() -> int:  # a graph appears during the first step of the run (the 2nd reading)
        calls[0] += 1
        return int(calls[0] >= 2)

    monkeypatch.setattr(trainer_module, "graphs_compiled", graphs)
    rows = train(_cfg(tmp_path, recipe={"batch_size": 32}, epochs=2)).history
    first, second = rows
    assert 0 < first["compile_seconds"] < first["epoch_seconds"] and second["compile_seconds"] == 0
    # 4 steps of 32: the first compiled, the other 3 are the throughput.
    assert first["img_per_s"] == pytest.approx(96 / (first["epoch_seconds"] - first["compile_seconds"]), rel=1e-12)
    assert second["img_per_s"] == pytest.approx(128 / second["epoch_seconds"], rel=1e-12)
    assert first["samples"] == second["samples"] == 128


# -- extending a run -----------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_a_finished_run_gets_more_epochs_on_the_longer_schedule(tmp_path, caplog, schedule):
    """--resume --epochs 3 on a 2-epoch run: epoch 3 is trained, the schedule stretched over 3
    epochs (the lr of the resumed steps is that of a run planned with 3)."""
    recipe = {"schedule": schedule, "warmup_epochs": 0.5 if schedule == "cosine" else 0.0}
    finished = train(_cfg(tmp_path / "run", epochs=2, recipe=recipe)).history
    planned = train(_cfg(tmp_path / "planned", epochs=3, recipe=recipe)).history
    # Restored for 3 epochs after its 4 steps, the lr is the 3-epoch schedule's after 4 steps.
    cfg = _cfg(tmp_path / "run", epochs=3, resume="yes", recipe=recipe)
    parts = build(cfg, DistContext())
    restore(tmp_path / "run" / "last.pt", parts, cfg, DistContext())
    assert parts.optimizer.param_groups[0]["lr"] == planned[1]["lr"] != finished[1]["lr"]
    with caplog.at_level(logging.INFO, logger="irevnet"):
        extended = train(cfg).history
    assert [r["epoch"] for r in extended] == [1, 2, 3] and extended[2]["lr"] == planned[2]["lr"]
    assert f"the run had 2 epochs, now 3: the {schedule} schedule is stretched over 3 epochs" in caplog.text
    assert ckpt.read_checkpoint(tmp_path / "run" / "last.pt")["trainer"]["step"] == 3 * 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["recipe"]["epochs"] == 3
    with pytest.raises(CheckpointError, match=r"has trained 3 epoch\(s\): epochs must be at least 3 to resume it"):
        train(_cfg(tmp_path / "run", epochs=2, resume="yes", recipe=recipe))


def test_the_cli_extends_a_run_with_resume_and_epochs(tmp_path, capsys):
    args = ["train", "--preset", "digits", "--data", "synthetic", "--synthetic-size", "64", "--model", "blocks=1,1",
            "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert "epoch 2: train loss" in capsys.readouterr().out and [r["epoch"] for r in _rows(tmp_path)] == [1, 2]


# -- Ctrl-C ---------------------------------------------------------------------------------------
_CHILD = """
import os, signal, sys, time
from pathlib import Path
import irevnet.training.trainer as trainer
from irevnet.cli.main import main

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
out, pause, interrupts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
real, calls = trainer.forward_backward, [0]

def forward_backward(*args, **kwargs):
    calls[0] += 1
    if calls[0] == pause:
        for _ in range(interrupts):  # Ctrl-C during the step
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    return real(*args, **kwargs)

trainer.forward_backward = forward_backward
sys.exit(main(["train", *sys.argv[4:], "--out", out, "--resume", "auto"]))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_saves_mid_epoch_and_a_second_one_stops_at_once(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    args = ["--preset", "digits", "--data", "synthetic", "--synthetic-size", "128", "--model", "blocks=1,1",
            "--batch-size", "16", "--epochs", "1", "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # One Ctrl-C during step 3, and two: both runs at once.
    once, twice = (subprocess.Popen([sys.executable, str(child), str(tmp_path / out), "3", str(n), *args], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for out, n in (("once", 1), ("twice", 2)))
    err = once.communicate(timeout=120)[1]
    assert once.returncode == 130, err
    assert "stopped by SIGINT at epoch 1, batch 3/8 (step 3)" in err
    state = ckpt.read_checkpoint(tmp_path / "once" / "last.pt")["trainer"]
    assert (state["epoch"], state["batch"], state["step"]) == (0, 3, 3)
    err = twice.communicate(timeout=120)[1]
    assert twice.returncode == 130 and "interrupted" in err and "stopped by" not in err, err
    assert not (tmp_path / "twice" / "last.pt").exists()


# -- run folders of the earlier trainer ----------------------------------------------------------
def _eeefafb_run_config(out: Path, **kw) -> TrainConfig:
    """The configuration tests/data/written-by-eeefafb/run-ema-stopped was trained with (its README)."""
    return TrainConfig(preset="digits-b", data="digits", out=str(out), seed=0, device="cpu", progress=False,
                       model_overrides={"blocks": (1, 1)},
                       recipe=get_recipe("digits-b").replace(epochs=2, batch_size=64, ema_decay=0.9), **kw)


def test_a_checkpoint_of_the_earlier_trainer_restores_exactly():
    payload = ckpt.read_checkpoint(EEEFAFB_RUN / "last.pt")
    cfg = _eeefafb_run_config(EEEFAFB_RUN)
    parts = build(cfg, DistContext())
    progress = restore(EEEFAFB_RUN / "last.pt", parts, cfg, DistContext())
    assert (progress.epoch, progress.batch, progress.step) == (1, 8, 30)
    # Its positional sums become the named statistics of the unfinished epoch.
    loss_sum, c1, c5, n, seconds = payload["trainer"]["sums"]
    s = progress.stats
    assert (s.loss_sum, s.correct1, s.correct5, s.samples, s.seconds) == (loss_sum, c1, c5, n, seconds)
    assert s.samples == 8 * 64
    # The EMA is the checkpoint's model, the trained weights ride in the state; 30 updates so far.
    for net, state in ((parts.ema.module, payload["state_dict"]), (parts.model, payload["trainer"]["model"])):
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert int(parts.ema.n_averaged) == 30
    assert parts.optimizer.state_dict()["state"].keys() == payload["trainer"]["optimizer"]["state"].keys()


def test_a_run_folder_of_the_earlier_trainer_loads_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(EEEFAFB_RUN, run)
    assert main(["eval", str(run / "best.pt"), "--data", "digits", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 450
    model = create_model("digits-b", blocks=(1, 1))
    assert init_weights_from(model, run)  # a run folder: its best.pt
    assert all(torch.equal(v, load_model(run / "best.pt").state_dict()[k]) for k, v in model.state_dict().items())
    result = train(_eeefafb_run_config(run, resume="yes"))
    assert [r["epoch"] for r in result.history] == [1, 2] and result.step == 2 * 22
    assert result.history[1]["samples"] == 1347  # the sums before the interruption were kept
    assert "eval_trained_top1" in result.history[1] and "eval_trained_top1" not in result.history[0]
    payload = ckpt.read_checkpoint(run / "last.pt")
    assert payload["weights"] == "ema" and payload["trainer"]["epoch_stats"]["samples"] == 0
