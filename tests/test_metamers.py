"""Metamers: x_a's logits, everything else from x_b (irevnet.analysis.metamers, `irevnet analyze --only metamers`)."""

from __future__ import annotations

import copy
import json

import matplotlib.image as mpimg
import pytest
import torch

import irevnet
import trained
from floor import LAMBDA, check, representation_sensitivity, sensitivity, unit_roundoff
from irevnet.analysis import head_statistics, impose_head_statistics, metamer_report, metamers
from irevnet.analysis.inversion import pairs_of_different_classes
from irevnet.cli.main import main
from irevnet.model import ClassifierHead


def logit_bounds(model, x_a, x_m):
    """(N,) bound on ``‖z(x_m) − z(x_a)‖ / ‖z(x_a)‖`` for float32 metamers (tests/floor.py).

    Φ_m has x_a's head statistics; ``x_m = Φ⁻¹(Φ_m)`` and Φ(x_m) is Φ_m up to the rounding of
    that round trip, ``LAMBDA·u·κ_rep‖Φ_m‖``, which the head passes on at most by its Lipschitz
    constant ``max|γ/σ|·‖W‖₂/sqrt(P)`` (BatchNorm, ReLU, mean of P entries, linear). The logits of
    x_a, of x_m and the projection's statistics are three float32 computations of the head.
    """
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        phi_m, z_a = model64.forward_features(x_m.double()), model64(x_a.double())
    head = model64.head
    lipschitz = ((head.norm.weight.abs() / (head.norm.running_var + head.norm.eps).sqrt()).max()
                 * torch.linalg.matrix_norm(head.fc.weight, ord=2) / phi_m[0, 0].numel() ** 0.5).item()
    u = unit_roundoff(torch.float32)
    kappa_rep = representation_sensitivity(model, phi_m)
    round_trip = lipschitz * LAMBDA * u * kappa_rep * phi_m.flatten(1).norm(dim=1) / z_a.norm(dim=1)
    return round_trip + 3 * sensitivity(model, x_a).bound("logits")


@pytest.fixture(scope="module")
def trained_digits_b():
    """digits-b after 8 epochs of its recipe (~0.9 test accuracy, a few seconds)."""
    return trained.trained_digits_b()


def _pairs(test_set, n):
    x, y = test_set.tensors
    pairs = pairs_of_different_classes(y[:200], n)
    return x[[i for i, _ in pairs]], x[[j for _, j in pairs]]


def test_projection_is_the_nearest_point_with_the_target_statistics():
    """Against a brute-force solution: with 2 entries per channel and an identity BatchNorm the
    feasible set {ReLU(v1) + ReLU(v2) = T} is a segment and two rays; project onto each."""
    head = ClassifierHead(64, 3).eval()
    head.norm.eps = 0.0
    g = torch.Generator().manual_seed(0)
    phi_b = torch.randn(4, 64, 1, 2, generator=g, dtype=torch.float64)
    phi_a = torch.randn(4, 64, 1, 2, generator=g, dtype=torch.float64)
    phi_a[0, :8] = -1.0  # zero targets: every positive entry of phi_b must go to 0
    got = impose_head_statistics(head, phi_b, phi_a)
    a, t = phi_b.flatten(2), torch.relu(phi_a.flatten(2)).sum(2, keepdim=True)  # (N, C, 2), (N, C, 1)
    lo = a[..., :1] - a[..., 1:] + t  # segment v = (s, T - s), s in [0, T]: nearest s = clamp((a1 - a2 + T)/2)
    s = (lo / 2).clamp(torch.zeros_like(t), t)
    candidates = [torch.cat([s, t - s], 2),
                  torch.cat([t, a[..., 1:].clamp_max(0)], 2),   # ray (T, ≤ 0)
                  torch.cat([a[..., :1].clamp_max(0), t], 2)]   # ray (≤ 0, T)
    dist = torch.stack([(c - a).norm(dim=2) for c in candidates])
    # A zero target: the whole quadrant v <= 0 is feasible.
    dist = torch.where(t.squeeze(2) == 0, (a.clamp_max(0) - a).norm(dim=2), dist)
    best = dist.min(dim=0).values
    # float64, a few operations on entries of size <= 5: errors of tens of u ~ 1e-14, within 1e-12.
    torch.testing.assert_close((got.flatten(2) - a).norm(dim=2), best, rtol=0, atol=1e-12)
    torch.testing.assert_close(head_statistics(head, got), head_statistics(head, phi_a), rtol=0, atol=1e-12)


def test_a_head_without_batchnorm_has_no_statistics_to_impose():
    head = ClassifierHead(8, 3, norm=False).eval()
    phi = torch.randn(2, 8, 2, 2)
    with pytest.raises(ValueError, match="no BatchNorm"):
        head_statistics(head, phi)
    with pytest.raises(ValueError, match="no BatchNorm"):
        impose_head_statistics(head, phi, phi)


@pytest.mark.slow
def test_projection_with_a_trained_head(trained_digits_b):
    model, test_set = trained_digits_b
    x_a, x_b = _pairs(test_set, 20)
    with torch.no_grad():
        phi_a, phi_b = model.forward_features(x_a).double(), model.forward_features(x_b).double()
    head = model.head.double()
    try:
        got = impose_head_statistics(head, phi_b, phi_a)
        torch.testing.assert_close(head_statistics(head, got), head_statistics(head, phi_a), rtol=0, atol=1e-12)
        # No cheaper than the two obvious constructions: shift every entry of a channel, or
        # rescale its positive part (both in BatchNorm coordinates).
        scale = (head.norm.weight / torch.sqrt(head.norm.running_var + head.norm.eps)).view(1, -1, 1)
        shift = head.norm.bias.view(1, -1, 1) - head.norm.running_mean.view(1, -1, 1) * scale
        a, target = phi_b.flatten(2) * scale + shift, head_statistics(head, phi_a).unsqueeze(2) * 4
        ratio = target / torch.relu(a).sum(2, keepdim=True)
        rescaled = torch.where(a > 0, a * ratio, a)
        ok = torch.isfinite(ratio).expand_as(a)
        cost = ((got.flatten(2) * scale + shift - a) ** 2).sum(2)
        assert torch.all(cost <= torch.where(ok, (rescaled - a) ** 2, torch.inf).sum(2) + 1e-12)
        # Equal statistics already: nothing moves, bit for bit.
        assert torch.equal(impose_head_statistics(head, phi_b, phi_b), phi_b)
    finally:
        head.float()


@pytest.mark.slow
@pytest.mark.numerics
def test_metamers_have_the_logits_of_x_a_and_look_like_x_b(trained_digits_b):
    model, test_set = trained_digits_b
    x_a, x_b = _pairs(test_set, 100)
    model.train()
    x_m, res = metamer_report(model, x_a, x_b)
    assert model.training  # mode restored
    model.eval()
    assert all(p.grad is None for p in model.parameters())
    assert x_m.shape == x_a.shape and res["pairs"] == 100
    # float32: one inverse and one forward of rounding, then the head.
    bounds = logit_bounds(model, x_a, x_m)
    check(torch.tensor(res["logit_relative_error"]), bounds, "logits")
    # `irevnet analyze` checks its metamers against a fixed 1e-4 (test_cli_metamers: this model, pairs
    # drawn the same way), above every bound here.
    assert bounds.max() < 1e-4
    with torch.no_grad():
        assert torch.equal(model(x_m).argmax(1), model(x_a).argmax(1))
    assert res["same_prediction_as_a"] == 1.0
    assert res["closer_to_b"] > 0.8
    assert res["mean_distance_to_b"] < res["mean_distance_to_a"] < res["mean_distance_a_b"]
    # Without the pixel search (the nearest point in Φ alone) the logits are just as exact.
    x_d, direct = metamer_report(model, x_a[:20], x_b[:20], steps=0)
    check(torch.tensor(direct["logit_relative_error"]), logit_bounds(model, x_a[:20], x_d), "logits, no search")


@pytest.mark.slow
def test_metamers_refuse_injective_models_and_bad_pairs(trained_digits_b, tmp_path, capsys):
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="bijective model.*injective"):
        metamers(irevnet.create_model("digits", blocks=(1, 1)), x, x)
    with pytest.raises(ValueError, match="same shape"):
        metamers(trained_digits_b[0], x, x[:1])
    with pytest.raises(ValueError, match="penalty > 0"):
        metamers(trained_digits_b[0], x, x, penalty=0)
    ckpt = irevnet.save_model(irevnet.create_model("digits", blocks=(1, 1)), tmp_path / "inj.pt")
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(tmp_path / "o"), "--only", "metamers"]) == 2
    assert "metamers need(s) a bijective model" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_metamers(trained_digits_b, tmp_path, capsys):
    ckpt = irevnet.save_model(trained_digits_b[0], tmp_path / "b.pt")
    out = tmp_path / "out"
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(out), "--only", "metamers",
                 "--pairs", "4", "--metamer-pairs", "30", "--metamer-steps", "50", "--no-progress"]) == 0
    assert "closer to x_b" in capsys.readouterr().out
    res = json.loads((out / "metamers.json").read_text())
    assert res["pairs"] == 30 and res["max_logit_relative_error"] <= 1e-4
    assert all(a != b for a, b in res["labels"])
    assert mpimg.imread(out / "metamers.png").shape[0] > 100
