"""`irevnet train` / `irevnet eval`: files, resume, speed flags, reliability.

Stop signals, SIGKILL and torchrun (DDP, restarts) with exact resume: test_train_cluster.py.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path

import logging

import pytest
import torch
from torch import nn

from floor import check, sensitivity
import irevnet.io.formats as ckpt
from irevnet import CheckpointError, ConfigError, DataConfig, IRevNet, create_model, load_model, save_model
from irevnet.analysis import reconstruct
from irevnet.config import get_preset
from irevnet.cli.main import main
from irevnet.data import build_datasets
from irevnet.training import get_recipe
from irevnet.training.stats import Stats
from irevnet.training.steps import forward_backward, micro_batch_groups, optimizer_step
from irevnet.training.trainer import TrainConfig, train

# A tiny digits-shaped model on random tensors: ~1 s per run, no scikit-learn import.
TINY = ["--preset", "digits", "--data", "synthetic", "--synthetic-size", "256", "--model", "blocks=1,1",
        "--set", "dropout=0.1", "--no-progress", "--device", "cpu"]
FILES = {"config.json", "metrics.jsonl", "last.pt", "best.pt"}


def _cfg(out: Path, **kw) -> TrainConfig:
    recipe = get_recipe("digits").replace(epochs=kw.pop("epochs", 2), dropout=0.1)
    return TrainConfig(preset="digits", data="synthetic", out=str(out), recipe=recipe, synthetic_size=256,
                       model_overrides={"blocks": (1, 1)}, device="cpu", progress=False, **kw)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_train_cli_writes_a_consistent_run_and_eval_reads_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--epochs", "2", "--lr", "0.02", "--set", "weight_decay=1e-4",
                 "--save-pretrained"]) == 0
    assert {p.name for p in run.iterdir()} == FILES | {"model"}  # no temp files left behind
    assert {p.name for p in (run / "model").iterdir()} == {"config.json", "model.safetensors"}
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"loss", "top1", "top5", "lr", "img_per_s", "epoch_seconds", "eval_top1", "eval_top5"} <= rows[0].keys()
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["recipe"]["lr"] == 0.02 and config["train"]["recipe"]["weight_decay"] == 1e-4
    assert config["model"]["blocks"] == [1, 1] and config["model"]["dropout"] == 0.1
    # The trainer's files are ordinary checkpoints: load_model ignores the trainer state.
    model = load_model(run / "last.pt")
    assert model.config.blocks == (1, 1) and ckpt.read_checkpoint(run / "last.pt")["trainer"]["epoch"] == 2
    capsys.readouterr()
    assert main(["eval", str(run / "best.pt"), "--data", "synthetic", "--synthetic-size", "256", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 64 and 0 <= result["top1"] <= result["top5"] <= 1
    best = max(r["eval_top1"] for r in rows)
    assert result["top1"] == pytest.approx(best)
    # best.pt is the model alone; RUN/model is the same model as a save_pretrained folder.
    assert set(ckpt.read_checkpoint(run / "best.pt")) == {"format", "version", "config", "state_dict"}
    assert main(["eval", str(run / "model"), "--data", "synthetic", "--synthetic-size", "256", "--no-progress",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == result["top1"]
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(IRevNet.from_pretrained(run / "model").eval()(x), load_model(run / "best.pt").eval()(x))


def test_train_fine_tunes_from_a_model_folder_and_writes_its_final_model_as_one(tmp_path, capsys, caplog):
    create_model("digits", blocks=(1, 1)).save_pretrained(tmp_path / "pre")
    run, final = tmp_path / "run", tmp_path / "final"
    with caplog.at_level(logging.INFO, logger="irevnet"):
        assert main(["train", *TINY, "--out", str(run), "--epochs", "1", "--eval-every", "0",
                     "--init-from", str(tmp_path / "pre"), "--save-pretrained", str(final)]) == 0
    assert f"initialized all weights from {tmp_path / 'pre'}" in caplog.text
    # Never evaluated: no best.pt, and the folder holds the final model (last.pt's weights).
    assert not (run / "best.pt").exists() and "wrote the final model" in caplog.text
    _assert_same_weights(IRevNet.from_pretrained(final).state_dict(), load_model(run / "last.pt").state_dict())
    assert main(["train", *TINY, "--out", str(tmp_path / "r2"), "--save-pretrained", str(tmp_path / "r2")]) == 2
    assert "cannot be the run folder itself" in capsys.readouterr().err and not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_train_monitors_reconstructions_and_warns_once(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="irevnet"):
        # blocks=1,1 reconstructs exactly (its first block moves the whole image to one half)
        assert main(["train", *TINY, "--model", "blocks=2,2", "--out", str(run), "--epochs", "2",
                     "--recon-threshold", "1e-12"]) == 0
    rows = _metrics(run)
    assert all(0 < r["recon_rel_error"] and 0 < r["recon_floor"] for r in rows)
    # The figure is that of the first 64 eval images, in eval mode: reconstruct() gives it again,
    # each image within the rounding model's bound (tests/floor.py).
    model = load_model(run / "last.pt")
    held_out = build_datasets("synthetic", config=model.config, synthetic_size=256).eval
    x = torch.stack([held_out[i][0] for i in range(64)])
    assert rows[-1]["recon_rel_error"] == reconstruct(model, x).relative_error.mean().item()
    check(rows[-1]["recon_rel_error"], sensitivity(model.eval(), x).bound().mean(), "monitor")
    warnings = [r.getMessage() for r in caplog.records if "losing precision" in r.getMessage()]
    assert len(warnings) == 1 and f"{rows[0]['recon_rel_error']:.3g}" in warnings[0]
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("recon" in line and "floor" in line for line in epoch_lines)
    assert "reconstruction error" in capsys.readouterr().out
    assert main(["train", *TINY, "--out", str(tmp_path / "bad"), "--recon-threshold", "0"]) == 2
    assert "expected a finite number > 0" in capsys.readouterr().err
    assert _cli_config(["--recon-threshold", "off"]).recon_threshold is None
    assert _cli_config([]).recon_threshold == 1e-3 and _cli_config(["--recon-threshold", "0.5"]).recon_threshold == 0.5


def _cli_config(extra: list[str]):
    import argparse

    from irevnet.cli.train import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return config_from_args(parser.parse_args(["train", *TINY, "--out", "unused", *extra]))


def test_train_model_overrides_reach_the_data_config():
    """`--model data.FIELD=VALUE` changes the trained model's preprocessing; config.json records it."""
    from irevnet.training.trainer import resolve_model_config

    cfg = _cli_config(["--model", "data.mean=0.5", "--model", "data.std=0.25", "--model", "data.crop_pct=0.75"])
    assert cfg.model_overrides["data"] == {"mean": (0.5,), "std": (0.25,), "crop_pct": 0.75}
    assert resolve_model_config(cfg).data == DataConfig(mean=(0.5,), std=(0.25,), crop_pct=0.75)
    assert json.loads(json.dumps(cfg.to_dict()))["model_overrides"]["data"]["mean"] == [0.5]


def test_eval_imagefolder_val_tree_with_the_imagenet_protocol(tmp_path, capsys):
    from PIL import Image

    for c, color in (("n01", (255, 0, 0)), ("n02", (0, 0, 255))):
        for i in range(2):
            (tmp_path / "val" / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (300, 260), color).save(tmp_path / "val" / c / f"{i}.JPEG")
    model = create_model("digits", blocks=(1, 1), input_shape=(3, 224, 224), num_classes=2,
                         data=get_preset("imagenet-b").data)
    save_model(model, tmp_path / "m.pt")
    assert main(["eval", str(tmp_path / "m.pt"), "--data", "imagefolder", "--data-dir", str(tmp_path / "val"),
                 "--no-progress"]) == 0
    assert re.fullmatch(r"top-1 \d+\.\d{3}%  top-5 100\.000%  loss \S+  \(4 images, imagefolder\)\n",
                        capsys.readouterr().out)
    save_model(create_model("digits", blocks=(1, 1), input_shape=(3, 224, 224)), tmp_path / "m10.pt")
    with pytest.raises(ValueError, match="predicts 10 classes but imagefolder has 2"):
        main(["--debug", "eval", str(tmp_path / "m10.pt"), "--data", "imagefolder", "--data-dir", str(tmp_path)])


def test_resume_refuses_a_different_model(tmp_path):
    train(_cfg(tmp_path, epochs=1))
    cfg = _cfg(tmp_path, epochs=2, resume="yes")
    cfg.model_overrides = {"blocks": (2, 1)}
    with pytest.raises(CheckpointError, match="was trained with model"):
        train(cfg)


@pytest.mark.slow
def test_fresh_run_refuses_an_existing_run_and_resume_needs_one(tmp_path):
    train(_cfg(tmp_path, epochs=1))
    with pytest.raises(ValueError, match="already holds a run"):
        train(_cfg(tmp_path, epochs=1))
    with pytest.raises(FileNotFoundError, match="last.pt does not exist"):
        train(_cfg(tmp_path / "empty", resume="yes"))
    assert train(_cfg(tmp_path / "auto", resume="auto", epochs=1)).history[0]["epoch"] == 1


def test_gradient_accumulation_matches_the_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(32, 5, dtype=torch.float64), torch.randint(0, 3, (32,))
    results = []
    for batch, accum in ((16, 1), (8, 2)):
        model = nn.Linear(5, 3).double()
        nn.init.constant_(model.weight, 0.1), nn.init.zeros_(model.bias)
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        loader = [(x[i:i + batch], y[i:i + batch]) for i in range(0, 32, batch)]
        stats = Stats()
        for group in micro_batch_groups(loader, accum):
            assert forward_backward(model, group, accum=accum, device=torch.device("cpu"), stats=stats)
            optimizer_step(opt)
        assert stats.read().samples == 32
        results.append(model.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)
    assert not torch.equal(results[0], torch.full_like(results[0], 0.1))


@pytest.mark.parametrize("options", [
    {"amp": "bf16"}, {"amp": "fp16"}, {"channels_last": True, "accum": 2}, {"memory_efficient": True},
    {"workers": 2}, {"allow_tf32": True, "memory_efficient": True},
])
def test_speed_options_train(tmp_path, options):
    result = train(_cfg(tmp_path, epochs=1, **options))
    row = result.history[0]
    assert torch.isfinite(torch.tensor(row["loss"])) and row["samples"] == 256
    assert result.model.full_float32 == (not options.get("allow_tf32", False))
    payload = ckpt.read_checkpoint(tmp_path / "last.pt")
    assert (payload["trainer"]["scaler"] != {}) == (options.get("amp") == "fp16")


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match=r"pip install 'irevnet\[tensorboard\]'"):
        train(_cfg(tmp_path, tensorboard=True))


def test_sync_bn_needs_cuda_processes(tmp_path):
    with pytest.raises(ConfigError, match="sync_bn needs several processes"):
        train(_cfg(tmp_path, sync_bn=True))
    with pytest.raises(ConfigError, match="cannot be combined with memory_efficient"):
        train(_cfg(tmp_path / "me", sync_bn=True, memory_efficient=True))


# -- reliability --------------------------------------------------------------------
def test_truncated_checkpoint_is_named_and_left_in_place(tmp_path):
    train(_cfg(tmp_path, epochs=1))
    last = tmp_path / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    before = (last.read_bytes(), (tmp_path / "best.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"last\.pt.*corrupt or truncated"):
        train(_cfg(tmp_path, epochs=2, resume="yes"))
    assert (last.read_bytes(), (tmp_path / "best.pt").read_bytes()) == before
    assert load_model(tmp_path / "best.pt").config.blocks == (1, 1)  # the previous good one still loads


class _Exploit:
    def __reduce__(self):
        return (os.makedirs, ("PWNED_BY_CHECKPOINT",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "irevnet", "version": 1, "trainer": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt"):
        ckpt.read_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


@pytest.mark.parametrize("where", ["torch.save", "os.fsync"])
def test_full_disk_never_destroys_the_last_good_checkpoint(tmp_path, monkeypatch, where):
    model = nn.Linear(2, 2)
    path = ckpt.atomic_save({"w": model.weight.detach()}, tmp_path / "last.pt")
    good = path.read_bytes()

    def no_space(*args, **kwargs):
        if where == "torch.save":
            args[1].write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch if where == "torch.save" else os, where.split(".")[1], no_space)
    with pytest.raises(OSError, match="No space left"):
        ckpt.atomic_save({"w": torch.zeros(1000)}, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_resume_refuses_a_changed_recipe(tmp_path):
    train(_cfg(tmp_path, epochs=1))
    cfg = _cfg(tmp_path, epochs=1, resume="yes")
    cfg.recipe = cfg.recipe.replace(lr=0.5)
    with pytest.raises(CheckpointError, match=r"different recipe \(lr: 0\.05 -> 0\.5\)"):
        train(cfg)


@pytest.mark.parametrize("field,value,match", [("accum", 0, "accum must be >= 1"),
                                               ("eval_every", -1, "eval_every must be >= 0"),
                                               ("workers", -2, "workers must be >= 0")])
def test_bad_numeric_options_are_clear_errors(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        train(_cfg(tmp_path, **{field: value}))


def test_model_override_contradicting_the_data_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.data = "digits"
    cfg.model_overrides = {"blocks": (1, 1), "num_classes": 5}
    with pytest.raises(ConfigError, match="model num_classes=5 contradicts data set digits, which has num_classes 10"):
        train(cfg)
    # With synthetic data the override decides the data's shape and classes.
    cfg = _cfg(tmp_path / "syn", epochs=1)
    cfg.model_overrides = {"blocks": (1, 1), "num_classes": 5}
    assert train(cfg).model.config.num_classes == 5
