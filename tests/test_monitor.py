"""Reconstruction monitoring during training (irevnet.training.monitor)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import TensorDataset

from floor import briefly_trained_cifar
from irevnet.analysis import reconstruct
from irevnet.training.monitor import ReconstructionMonitor


def _noise(n: int = 8) -> TensorDataset:
    return TensorDataset(torch.rand(n, 3, 32, 32), torch.zeros(n, dtype=torch.long))


def test_monitor_reports_error_and_floor_and_warns_once(caplog):
    model = briefly_trained_cifar().train()
    data = _noise()
    # Warn at half this model's error: its conditioning depends on the kernels its training ran.
    threshold = float(f"{reconstruct(model, data.tensors[0][:6]).relative_error.mean().item() / 2:.2g}")
    monitor = ReconstructionMonitor.from_dataset(data, size=6, threshold=threshold)
    assert torch.equal(monitor.x, data.tensors[0][:6])  # the first images: the same at every evaluation
    with caplog.at_level(logging.WARNING, logger="irevnet"):
        first = monitor.measure(model)
        second = monitor.measure(model)
    assert model.training  # measured in eval mode, mode restored
    rec = reconstruct(model, data.tensors[0][:6])
    assert first == second == {"recon_rel_error": rec.relative_error.mean().item(),
                               "recon_floor": rec.floor_relative_error.mean().item()}
    warnings = [r.getMessage() for r in caplog.records if "losing precision" in r.getMessage()]
    assert len(warnings) == 1 and f"{first['recon_rel_error']:.3g}" in warnings[0]
    assert f"exceeds {threshold:.3g}" in warnings[0]


def test_monitor_below_threshold_or_disabled_stays_silent(caplog):
    model = briefly_trained_cifar(steps=0)
    with caplog.at_level(logging.WARNING, logger="irevnet"):
        assert ReconstructionMonitor.from_dataset(_noise(), threshold=1e-3).measure(model)["recon_rel_error"] < 1e-3
        ReconstructionMonitor.from_dataset(_noise(), threshold=None).measure(briefly_trained_cifar())
    assert not caplog.records


@pytest.mark.parametrize("threshold, n, match", [(0.0, 4, "must be > 0"), (-1.0, 4, "must be > 0"),
                                                 (1e-3, 0, "empty data set")])
def test_monitor_rejects_bad_settings(threshold, n, match):
    with pytest.raises(ValueError, match=match):
        ReconstructionMonitor.from_dataset(_noise(n), threshold=threshold)
