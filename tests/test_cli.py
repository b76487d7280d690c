import itertools
import json
import subprocess
import sys

import matplotlib.image as mpimg
import pytest
import torch

from floor import check, sensitivity
from irevnet import load_model
from irevnet.cli.main import main
from irevnet.data import load_digits_split


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


@pytest.mark.slow
def test_demo_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    # --max-train: the SVMs of the separability and PCA analyses, fit on all 1,347 training
    # images, cost half the demo's time; 100 (10 per class) run the same code. The metamers' search
    # (100 pairs x 600 steps by default) runs the same code on 20 x 100 (tests/test_metamers.py: 100 x 600).
    assert main(["demo", "--out", str(out), "--epochs", "2", "--epochs-b", "2", "--max-train", "100",
                 "--metamer-pairs", "20", "--metamer-steps", "100", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "separability.json").read_text())["train_images"] == 100
    metamers = json.loads((out / "metamers.json").read_text())
    assert (metamers["pairs"], metamers["steps"]) == (20, 100)
    for key in ("test_accuracy", "reconstruction_max_abs_error", "train_seconds", "params"):
        assert key in metrics
    model = load_model(out / "model.pt")
    # The demo trains with irevnet train's engine: its run folders, with the same metrics.
    rows = {run: [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("train-digits", "train-digits-b")}
    for run in rows.values():
        assert [r["epoch"] for r in run] == [1, 2] and set(run[-1]) == {
            "epoch", "loss", "top1", "top5", "lr", "img_per_s", "epoch_seconds", "compile_seconds", "samples",
            "eval_loss", "eval_top1", "eval_top5", "recon_rel_error", "recon_floor"}
    assert metrics["test_accuracy"] == rows["train-digits"][-1]["eval_top1"]
    assert metrics["digits_b_test_accuracy"] == rows["train-digits-b"][-1]["eval_top1"]
    # The demo reconstructs the whole digits test split, each image within its bound (tests/floor.py).
    kappa = sensitivity(model.eval(), load_digits_split()[1].tensors[0])
    check(metrics["reconstruction_mean_relative_error"], kappa.bound().mean(), "demo")
    assert metrics["reconstruction_floor_relative_error"] > 0
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert model.num_parameters() == metrics["params"]
    for png in ("reconstruct.png", "interpolate.png"):
        img = mpimg.imread(out / png)
        assert img.ndim == 3 and img.shape[0] > 50 and img.std() > 0
        assert f"({png})" in (out / "report.md").read_text()


def test_demo_help_names_both_models_and_their_analyses(capsys):
    from irevnet.cli.demo import BIJECTIVE_ANALYSES, PAPER_ANALYSES

    assert main(["demo", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "`digits`" in text and "`digits-b`" in text and "model_b.pt" in text
    assert all(name in text for name in PAPER_ANALYSES + BIJECTIVE_ANALYSES)
    main(["--help"])
    assert "`digits-b`" in " ".join(capsys.readouterr().out.split())


def _check_summary(config):
    """describe_config (no torch) agrees with the model built from ``config``: parameters, shapes, kind."""
    from irevnet.model import IRevNet
    from irevnet.summary import describe_config

    d, model = describe_config(config), IRevNet.from_config(config).eval()
    assert d["parameters"] == model.num_parameters() and d["blocks"] == model.depth
    assert d["phi_shape"] == list(model.feature_shape()) == list(model.forward_features(
        torch.zeros(1, *config.input_shape)).shape[1:])
    assert d["kind"] == ("injective" if model.injective else "bijective")
    shapes = model.block_output_shapes()
    assert [s["output_shape"] for s in d["stages"]] == [list(shapes[i - 1]) for i in
                                                       itertools.accumulate(s["blocks"] for s in d["stages"])]
    assert d["after_init_psi"] == list(model.init_psi(torch.zeros(1, *config.input_shape)).shape[1:])


@pytest.mark.parametrize("preset", ["digits", "cifar10", "cifar100", "imagenet-a", "imagenet-b"])
def test_info_of_a_preset_needs_no_model_and_agrees_with_it(preset):
    from irevnet.config import get_preset

    config = get_preset(preset)
    if preset.startswith("imagenet"):  # the same architecture on a small input keeps the test fast
        config = config.replace(input_shape=(3, 32, 32))
    _check_summary(config)


def test_describe_config_matches_custom_models():
    from irevnet.config import get_preset

    for preset, overrides in [("digits", {"blocks": (1, 2), "num_classes": 3}),
                              ("cifar10", {"blocks": (1, 1, 1), "mult": 2, "init_block_size": 0}),
                              ("imagenet-b", {"blocks": (1, 1, 1, 1), "input_shape": (3, 64, 96)})]:
        _check_summary(get_preset(preset).replace(**overrides))


def test_help_and_info_import_no_heavy_library():
    """Start-up stays fast: parsing --help and `info PRESET` import neither torch nor the plotting/ML stacks."""
    code = ("import sys, contextlib, io\nfrom irevnet.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['--help']) == 0 and main(['train', '--help']) == 0 and main(['info', 'imagenet-b']) == 0\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'sklearn', 'scipy', 'PIL') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
