"""Fine-tuning: a replaced classifier round-trips through save/load, and weights initialize a
new model (`init_weights_from`, `irevnet train --init-from`) with a new head when the classes differ."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from irevnet import CheckpointError, create_model, load_model, save_model
from irevnet import init_weights_from


def _randomize_bn(model):
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)


@pytest.mark.parametrize("how", ["assign", "reset_classifier"])
def test_a_replaced_head_round_trips(tmp_path, how):
    torch.manual_seed(0)
    model = create_model("digits", blocks=(1, 1))
    if how == "assign":
        model.head.fc = nn.Linear(model.num_features, 3)
    else:
        model.reset_classifier(3)
        assert model.config.num_classes == 3
    model.eval()
    loaded = load_model(save_model(model, tmp_path / "m.pt")).eval()
    assert loaded.config.num_classes == 3
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_foreign_head_is_refused_with_advice(tmp_path):
    model = create_model("digits", blocks=(1, 1))
    model.head.fc = nn.Sequential(nn.Linear(model.num_features, 3))
    with pytest.raises(ValueError, match="reset_classifier"):
        save_model(model, tmp_path / "m.pt")


def test_init_weights_from_copies_phi_and_replaces_a_head_of_another_size(tmp_path, caplog):
    torch.manual_seed(0)
    source = create_model("digits", blocks=(1, 1))
    _randomize_bn(source)
    save_model(source, tmp_path / "run" / "best.pt")
    target = create_model("digits", blocks=(1, 1), num_classes=4)
    with caplog.at_level(logging.INFO, logger="irevnet.io"):
        assert init_weights_from(target, tmp_path / "run") is False  # a run folder: its best.pt
    assert "new classifier for 4 classes (the checkpoint's predicts 10)" in caplog.text
    source.eval(), target.eval()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(target.forward_features(x), source.forward_features(x))
        assert torch.equal(target.forward_head(source.forward_features(x), pre_logits=True),
                           source.forward_head(source.forward_features(x), pre_logits=True))
    assert target(x).shape == (3, 4)

    same = create_model("digits", blocks=(1, 1), input_shape=(1, 16, 16)).eval()  # another input size is fine
    assert init_weights_from(same, tmp_path / "run" / "best.pt") is True
    with torch.no_grad():
        assert torch.equal(same(x), source(x))


def test_init_weights_from_a_model_folder(tmp_path):
    torch.manual_seed(0)
    source = create_model("digits", blocks=(1, 1))
    _randomize_bn(source)
    source.save_pretrained(tmp_path / "model")
    target = create_model("digits", blocks=(1, 1))
    assert init_weights_from(target, tmp_path / "model") is True
    source.eval(), target.eval()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))
    with pytest.raises(CheckpointError, match=r"architecture differs .*blocks \(1, 1\) vs \(1, 2\)"):
        init_weights_from(create_model("digits", blocks=(1, 2)), tmp_path / "model")


def test_init_weights_from_refuses_another_architecture(tmp_path):
    save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"architecture differs .*blocks \(1, 1\) vs \(1, 2\)"):
        init_weights_from(create_model("digits", blocks=(1, 2)), tmp_path / "m.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without model.safetensors, best.pt or last.pt"):
        init_weights_from(create_model("digits", blocks=(1, 1)), tmp_path / "empty")


def test_init_weights_from_refuses_mis_shaped_tensors(tmp_path):
    """Same configuration, a tensor of another shape (a hand-edited file): a CheckpointError
    naming the file, from a checkpoint and from a model folder alike, and the model unchanged."""
    from safetensors.torch import save_file

    model = create_model("digits", blocks=(1, 1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.fc.weight"] = torch.zeros(3, 3)
    save_model(model, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state_dict"] = state
    torch.save(payload, tmp_path / "m.pt")
    model.save_pretrained(tmp_path / "folder")
    save_file(state, str(tmp_path / "folder" / "model.safetensors"))
    target = create_model("digits", blocks=(1, 1))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    for source in ("m.pt", "folder"):
        with pytest.raises(CheckpointError, match=rf"{source}.*does not fit the model.*head\.fc\.weight"):
            init_weights_from(target, tmp_path / source)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


@pytest.mark.parametrize("kind", ["checkpoint", "model folder"])
def test_train_init_from_fine_tunes_with_a_new_head(tmp_path, caplog, kind):
    """`irevnet train --init-from`: the run starts from the given weights (Φ), with a fresh classifier."""
    from irevnet.cli.main import main

    torch.manual_seed(0)
    source = create_model("digits", blocks=(1, 1), num_classes=3)
    _randomize_bn(source)
    pretrained = save_model(source, tmp_path / "pre.pt") if kind == "checkpoint" else source.save_pretrained(
        tmp_path / "pre")
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert main(["train", "--preset", "digits", "--data", "digits", "--model", "blocks=1,1", "--init-from",
                     str(pretrained), "--out", str(run), "--epochs", "1", "--lr", "1e-12",
                     "--no-progress"]) == 0
    assert f"initialized Φ from {pretrained}; " in caplog.text
    assert "new classifier for 10 classes (the checkpoint's predicts 3)" in caplog.text
    tuned = load_model(run / "last.pt")
    # lr 1e-12: each weight moves by 1e-12 times its update plus one rounding (u|w| = 6e-8|w|),
    # within 1e-6 for |w| < 16 and updates below 1e5.
    for name, value in source.state_dict().items():
        if name.startswith("blocks.") and value.is_floating_point() and "running" not in name:
            assert torch.allclose(tuned.state_dict()[name], value, rtol=0, atol=1e-6), name
    assert tuned.config.num_classes == 10


def test_train_init_from_refuses_a_missing_source(tmp_path, capsys):
    from irevnet.cli.main import main

    assert main(["train", "--preset", "digits", "--data", "digits", "--init-from", str(tmp_path / "nope.pt"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "argument --init-from: " in capsys.readouterr().err
