"""Reconstruction monitoring during training (irevnet.training.monitor).

The monitor's figures are checked against a computation written out here (the float32
round trip in eval mode, the exact float64 inverse of the rounded Φ) and against models
whose reconstruction error is known by construction.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from floor import floor_factor
from irevnet import IRevNet, create_model
from irevnet.training.monitor import DEFAULT_RECON_THRESHOLD, ReconstructionMonitor
from trained import briefly_trained_cifar


def _noise(n: int = 8) -> TensorDataset:
    return TensorDataset(torch.rand(n, 3, 32, 32), torch.zeros(n, dtype=torch.long))


def _mean_relative_error(x_hat: Tensor, x: Tensor) -> float:
    """Mean over images of ||x_hat - x|| / ||x||, in float64."""
    diff = (x_hat.double() - x.double()).flatten(1).norm(dim=1)
    return (diff / x.double().flatten(1).norm(dim=1)).mean().item()


class _LossyInverse(IRevNet):
    """An i-RevNet whose inverse scales what it rebuilds by ``1 + LOSS``: a known relative error."""

    LOSS = 1e-2

    def inverse(self, phi: Tensor, **kwargs) -> Tensor:
        return super().inverse(phi, **kwargs) * (1 + self.LOSS)


def _lossy_copy(model: IRevNet, loss: float) -> _LossyInverse:
    lossy = _LossyInverse(model.config)
    lossy.load_state_dict(model.state_dict())
    lossy.LOSS = loss
    return lossy


def test_monitor_measures_the_float32_inverse_in_eval_mode_against_the_exact_one():
    model = briefly_trained_cifar().train()  # BatchNorm statistics far from the init
    data = _noise()
    x = data.tensors[0][:6]
    monitor = ReconstructionMonitor.from_dataset(data, size=6, threshold=None)
    assert torch.equal(monitor.x, x)  # the first images: the same at every evaluation
    before = copy.deepcopy(model.state_dict())
    measured = monitor.measure(model)
    assert monitor.measure(model) == measured
    assert model.training  # measured in eval mode, mode restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no BatchNorm update
    # Written out: the float32 round trip in eval mode; the exact float64 inverse of Φ, and of Φ rounded to float32.
    reference = copy.deepcopy(model).eval()
    exact = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        error = _mean_relative_error(reference.inverse(reference.forward_features(x)), x)
        phi64 = exact.forward_features(x.double())
        exact_error = _mean_relative_error(exact.inverse(phi64), x)
        floor = _mean_relative_error(exact.inverse(phi64.float().double()), x)
    assert measured["recon_rel_error"] == pytest.approx(error, rel=1e-6)
    assert measured["recon_floor"] == pytest.approx(floor, rel=1e-6)
    # The figure is float32's loss, not the float64 inverse's: the exact inverse is exact to
    # float64 rounding (~1e-16 per operation, a 1e-10 bound leaves 1e6 for the depth and the
    # conditioning) and float32 rounding alone (the floor, > 0) costs far more.
    assert exact_error < 1e-10 and 0 < floor and exact_error < 1e-3 * measured["recon_rel_error"]
    assert measured["recon_rel_error"] <= floor_factor(model) * floor  # tests/floor.py's argument


def test_monitor_measures_a_model_trained_with_dropout():
    """A train-mode round trip is undefined with dropout (the mask is random); the monitor measures in eval mode."""
    model = create_model("cifar10", blocks=(2, 2, 2), dropout=0.5).train()
    with torch.no_grad(), pytest.raises(RuntimeError, match="undefined in train mode with dropout"):
        model.inverse(model.forward_features(_noise(4).tensors[0]))
    measured = ReconstructionMonitor.from_dataset(_noise(4), threshold=None).measure(model)
    assert measured["recon_rel_error"] <= floor_factor(model) * measured["recon_floor"]
    assert model.training


@pytest.mark.parametrize("loss", [1e-2, float("nan")])
def test_monitor_warns_once_about_a_lossy_inverse(caplog, loss):
    """An inverse off by 1 % (or NaN) is past the default threshold; the monitor reports that error."""
    model = _lossy_copy(create_model("cifar10", blocks=(2, 2, 2)), loss)
    monitor = ReconstructionMonitor.from_dataset(_noise(), size=6)
    assert monitor.threshold == DEFAULT_RECON_THRESHOLD < 1e-2
    with caplog.at_level(logging.WARNING, logger="irevnet"):
        first = monitor.measure(model)
        monitor.measure(model)
    warnings = [r.getMessage() for r in caplog.records if "losing precision" in r.getMessage()]
    assert len(warnings) == 1 and f"exceeds {DEFAULT_RECON_THRESHOLD:.3g}" in warnings[0]
    assert f"{first['recon_rel_error']:.3g}" in warnings[0]
    if loss == loss:
        # (1 + loss) x_hat - x = loss x + (1 + loss)(x_hat - x): within float32 rounding (1e-6
        # relative at this depth, at init) of the scale error itself.
        assert first["recon_rel_error"] == pytest.approx(loss, rel=1e-3)


@pytest.mark.numerics
def test_monitor_below_threshold_or_disabled_stays_silent(caplog):
    model = create_model("cifar10", blocks=(2, 2, 2))  # at the init Φ⁻¹ is well conditioned (~1e-6)
    with caplog.at_level(logging.WARNING, logger="irevnet"):
        assert ReconstructionMonitor.from_dataset(_noise(), threshold=1e-3).measure(model)["recon_rel_error"] < 1e-3
        ReconstructionMonitor.from_dataset(_noise(), threshold=None).measure(_lossy_copy(model, 1e-2))
    assert not caplog.records


@pytest.mark.parametrize("threshold, n, match", [(0.0, 4, "must be > 0"), (-1.0, 4, "must be > 0"),
                                                 (1e-3, 0, "empty data set")])
def test_monitor_rejects_bad_settings(threshold, n, match):
    with pytest.raises(ValueError, match=match):
        ReconstructionMonitor.from_dataset(_noise(n), threshold=threshold)
