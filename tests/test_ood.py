"""The hybrid objective (recipe field nll_weight) and OOD detection with exact densities."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import irevnet
from floor import check, sensitivity, unit_roundoff
from irevnet.analysis import auroc, log_prob_per_dim, ood_detection, shifted_copies
from irevnet.cli.main import main
from irevnet.training import HybridCriterion, get_recipe
from trained import trained_digits_b


@pytest.fixture(scope="module")
def hybrid_digits_b():
    """digits-b after 8 epochs of its recipe with the hybrid objective (a few seconds)."""
    return trained_digits_b(nll_weight=1.0)


def test_shifted_copies():
    x = torch.rand(5, 1, 8, 8)
    state = torch.get_rng_state()
    c = shifted_copies(x, noise=0.2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    lo, hi = x.min(), x.max()
    assert torch.equal(c["shifted"][:, :, 2:, 2:], x[:, :, :6, :6])
    assert torch.all(c["shifted"][:, :, :2] == lo) and torch.all(c["shifted"][:, :, :, :2] == lo)
    assert torch.equal(c["inverted"], lo + hi - x)
    assert c["noised"].min() >= lo and c["noised"].max() <= hi and not torch.equal(c["noised"], x)
    assert torch.equal(shifted_copies(x, seed=3)["noised"], c["noised"])


def test_auroc():
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert auroc([1.0, 3.0], [2.0]) == 0.5


@pytest.mark.numerics
def test_hybrid_criterion_adds_the_nll_per_dimension():
    torch.manual_seed(0)
    model = irevnet.create_model("digits-b")
    criterion = HybridCriterion(model, 0.5)
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    logits = model(x)
    loss = criterion(logits, y)
    # Train mode: the batch's joint log-density, per example and dimension.
    with torch.no_grad():
        nll = -model.log_prob(x).sum() / (6 * 64)
    # Two train-mode forwards of the same batch, each Φ within LAMBDA·u·κ‖Φ‖ (tests/floor.py), moving
    # Σ log N(Φ) by ‖Φ‖·‖ΔΦ‖; two sums of the 384 terms (any order: (n + 3)·u·Σ|t| each); the losses'
    # few roundings.
    u = unit_roundoff(torch.float32)
    with torch.no_grad():
        phi = copy.deepcopy(model).double().forward_features(x.double())
    terms = -0.5 * phi.square() - 0.5 * math.log(2 * math.pi)
    sums = 2 * sensitivity(model, x).batch_bound("forward") * phi.square().sum() + 2 * (terms.numel() + 3) * u * terms.abs().sum()
    bound = 0.5 * sums.item() / (6 * 64) + 8 * u * (abs(loss.item()) + abs(nll.item()))
    check(abs(loss.item() - (F.cross_entropy(logits, y) + 0.5 * nll).item()), bound, "hybrid loss")
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(RuntimeError, match="saw no forward"):
        criterion(logits, y)
    criterion.remove()
    model(x)
    assert criterion._phi is None  # the hook is gone
    with pytest.raises(ValueError, match="bijective model"):
        HybridCriterion(irevnet.create_model("digits", blocks=(1, 1)), 1.0)


@pytest.mark.slow
def test_hybrid_model_detects_shifted_digits(hybrid_digits_b):
    model, test_set = hybrid_digits_b
    x = test_set.tensors[0]
    res = ood_detection(model, x)
    assert set(res["auroc"]) == {"shifted", "noised", "inverted"} and res["images"] == len(x)
    # Above chance: contrast-inverted digits are far less dense than test digits.
    assert res["auroc"]["inverted"] > 0.9
    assert res["mean_log_prob_per_dim"]["test"] > res["mean_log_prob_per_dim"]["inverted"]
    lp = log_prob_per_dim(model, x[:4])
    with torch.no_grad():
        torch.testing.assert_close(lp, model.log_prob(x[:4]) / 64)
    assert all(math.isfinite(v) for v in res["log_prob_per_dim"]["test"])


@pytest.mark.slow
def test_cli_train_hybrid_and_analyze_ood(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "digits-b", "--data", "digits", "--out", str(run), "--epochs", "1",
                 "--set", "nll_weight=1", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["recipe"]["nll_weight"] == 1.0
    out = tmp_path / "an"
    assert main(["analyze", str(run / "last.pt"), "--data", "digits", "--out", str(out), "--only", "ood",
                 "--max-test", "100", "--no-progress"]) == 0
    assert "AUROC of log p(x)" in capsys.readouterr().out
    res = json.loads((out / "ood.json").read_text())
    assert res["images"] == 100 and len(res["log_prob_per_dim"]["noised"]) == 100
    assert (out / "ood.png").stat().st_size > 1000
    # The hybrid objective needs a density: injective presets are refused before training.
    assert main(["train", "--preset", "digits", "--data", "digits", "--out", str(tmp_path / "bad"), "--epochs", "1",
                 "--set", "nll_weight=1", "--no-progress"]) == 2
    assert "needs a bijective model" in capsys.readouterr().err


def test_checkpoints_from_before_the_hybrid_field_resume_with_its_default(tmp_path):
    """A last.pt written before recipes had nll_weight (and the other newer fields) resumes a run
    with their defaults, and refuses one that turns the hybrid objective on."""
    from irevnet.errors import CheckpointError
    from irevnet.training.state import check_resumable

    model = irevnet.create_model("digits-b")
    recipe = get_recipe("digits-b").to_dict()
    newer = ("nll_weight", "optimizer", "warmup_epochs", "label_smoothing", "ema_decay")
    old = {k: v for k, v in recipe.items() if k not in newer}
    payload = {"config": model.config.to_dict(), "trainer": {"step": 3}, "recipe": old}
    assert check_resumable(tmp_path / "last.pt", payload, model.config, recipe) == {"step": 3}
    with pytest.raises(CheckpointError, match=r"nll_weight: 0\.0 -> 1\.0"):
        check_resumable(tmp_path / "last.pt", payload, model.config, {**recipe, "nll_weight": 1.0})
