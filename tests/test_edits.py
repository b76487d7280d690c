"""Edits in Φ (irevnet.analysis.edits): what inverting an edited representation means, exactly."""

from __future__ import annotations

import json

import pytest
import torch

import irevnet
from floor import LAMBDA, check, per_image_relative_error, representation_sensitivity, sensitivity, unit_roundoff
from irevnet.analysis import edit_and_invert, quadrants, representation_edits, stage_ends
from irevnet.cli.main import main


@pytest.fixture
def model64():
    torch.manual_seed(0)
    model = irevnet.create_model("digits-b").double()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            model(torch.rand(32, 1, 8, 8, dtype=torch.float64))
    return model.eval()


def test_quadrants_partition_the_grid():
    for h, w in [(1, 1), (2, 2), (7, 7), (3, 8)]:
        cover = torch.zeros(h, w, dtype=torch.int64)
        for rows, cols in quadrants(h, w).values():
            cover[rows, cols] += 1
        assert torch.all(cover == 1)
    assert list(quadrants(1, 1)) == ["top-left"]
    assert len(quadrants(2, 2)) == 4


def test_stage_ends():
    assert stage_ends(irevnet.create_model("digits-b")) == [2, 8]
    assert stage_ends(irevnet.create_model("cifar10", blocks=(1, 2, 3))) == [1, 3, 6]


@pytest.mark.numerics
def test_edits_are_exact_preimages(model64):
    # float64 round trips, each image within the rounding model's bound (tests/floor.py): x -> z -> x
    # for the identity edit, z' -> x -> z' for an edited z'.
    f64 = torch.float64
    x = torch.rand(3, 1, 8, 8, dtype=f64)
    for depth in (1, 2, 8):
        check(per_image_relative_error(edit_and_invert(model64, x, lambda z: z, depth=depth), x),
              sensitivity(model64, x, depth=depth).bound(dtype=f64), f"identity, depth {depth}")

    def halve(z):
        z[:, :5] *= 0.5
        return z
    for depth in (2, 8):
        x_e = edit_and_invert(model64, x, halve, depth=depth)
        with torch.no_grad():
            z, z_e = (model64.forward_intermediates(v, [depth - 1], intermediates_only=True)[0] for v in (x, x_e))
        edited = halve(z.clone())
        bound = LAMBDA * unit_roundoff(f64) * representation_sensitivity(model64, edited, depth=depth)
        check(per_image_relative_error(z_e, edited), bound, f"halved, depth {depth}")
    with pytest.raises(ValueError, match="depth must be in"):
        edit_and_invert(model64, x, halve, depth=0)


@pytest.mark.numerics
def test_representation_edits_compose_to_the_full_swap(model64):
    g = torch.Generator().manual_seed(1)
    x_a, x_b = torch.rand(2, 4, 1, 8, 8, generator=g, dtype=torch.float64)
    model64.train()
    res = representation_edits(model64, x_a, x_b)
    assert model64.training  # mode restored
    model64.eval()
    names = list(res["images"])
    assert names[:6] == ["top-left ← x_b", "top-right ← x_b", "bottom-left ← x_b", "bottom-right ← x_b",
                         "channels 1/2 ← x_b", "channels 2/2 ← x_b"]
    assert names[6:] == ["block 2: zero 1/2", "block 2: zero 2/2", "block 8: zero 1/2", "block 8: zero 2/2"]
    f64 = torch.float64
    with torch.no_grad():
        phi_a, phi_b = model64.forward_features(x_a), model64.forward_features(x_b)
        # A region swap changes Φ only in that region: Φ(Φ⁻¹(swapped)) is the swapped Φ, within
        # the bound of that float64 round trip (tests/floor.py).
        swapped = phi_a.clone()
        swapped[:, :, :1, :1] = phi_b[:, :, :1, :1]
        z = model64.forward_features(res["images"]["top-left ← x_b"])
        check(per_image_relative_error(z, swapped),
              LAMBDA * unit_roundoff(f64) * representation_sensitivity(model64, swapped), "region swap")
        # Zeroing after block 2 zeroes exactly that group there (the same bound, relative to ‖z2‖).
        z_a = model64.forward_intermediates(x_a, [1], intermediates_only=True)[0]
        zeroed = z_a.clone()
        zeroed[:, :2] = 0
        z2 = model64.forward_intermediates(res["images"]["block 2: zero 1/2"], [1], intermediates_only=True)[0]
        check(per_image_relative_error(z2, zeroed),
              LAMBDA * unit_roundoff(f64) * representation_sensitivity(model64, zeroed, depth=2), "zeroed group")
        assert z2[:, 2:].abs().min() > 0
    # Swapping both channel halves is the full swap: the pixel change is the whole difference.
    assert all(0 < c < 1.5 for c in res["change"]["channels 1/2 ← x_b"])
    full = edit_and_invert(model64, x_a, lambda z: phi_b.clone())
    check(per_image_relative_error(full, x_b), sensitivity(model64, x_b).bound(dtype=f64), "full swap")
    assert res["kind"]["block 8: zero 2/2"] == "zero" and res["kind"]["top-left ← x_b"] == "spatial"


def test_cli_edits(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = irevnet.save_model(irevnet.create_model("digits-b"), tmp_path / "b.pt")
    out = tmp_path / "out"
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(out), "--only", "edits", "--pairs", "2",
                 "--no-progress"]) == 0
    assert "share of the x_a→x_b difference" in capsys.readouterr().out
    res = json.loads((out / "edits.json").read_text())
    assert len(res["pairs"]) == 2 and len(res["mean_change"]) == 10
    assert (out / "edits.png").stat().st_size > 1000
