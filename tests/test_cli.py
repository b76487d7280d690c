import json
import subprocess
import sys

import matplotlib.image as mpimg
import pytest

from floor import floor_factor
from irevnet import load_model
from irevnet.cli.main import main


def test_info_preset(capsys):
    assert main(["info", "imagenet-b"]) == 0
    out = capsys.readouterr().out
    assert "125,120,356 parameters" in out and "bijective" in out and "3072x7x7" in out


def test_info_checkpoint_json(tmp_path, capsys):
    from irevnet import create_model, save_model

    save_model(create_model("cifar10", blocks=(1, 1, 1)), tmp_path / "c.pt")
    assert main(["info", str(tmp_path / "c.pt"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "injective" and d["blocks"] == 3 and d["phi_shape"] == [512, 8, 8]


def test_info_unknown_is_a_clear_error(capsys):
    assert main(["info", "nonexistent"]) == 2
    assert "neither a preset" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "irevnet", "info", "digits"], capture_output=True, text=True)
    assert r.returncode == 0 and "digits: i-RevNet, injective" in r.stdout


def test_demo_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "reconstruction_max_abs_error", "train_seconds", "params"):
        assert key in metrics
    model = load_model(out / "model.pt")
    # At the conditioning floor (tests/floor.py), whatever the trained function's conditioning.
    assert metrics["reconstruction_mean_relative_error"] <= (
        floor_factor(model) * metrics["reconstruction_floor_relative_error"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert model.num_parameters() == metrics["params"]
    for png in ("reconstruct.png", "interpolate.png"):
        img = mpimg.imread(out / png)
        assert img.ndim == 3 and img.shape[0] > 50 and img.std() > 0
        assert f"({png})" in (out / "report.md").read_text()
