"""ImageFolder data at the model's input size: chosen by the preset, ``--model input_shape=...`` or
the checkpoint, with the transforms scaled to it; a size the down-sampling does not divide is
refused, naming input_shape and the divisor, before any work."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from floor import check, image_sensitivity
from irevnet import ConfigError, create_model, load_model
from irevnet.cli.main import main
from irevnet.config import get_preset
from irevnet.data.transforms import denormalize, eval_transform

# A bijective imagenet-b with two small stages: down-sampling 2 x 2 x 2 = 8.
SMALL_B = ["--model", "blocks=1,1", "--model", "strides=2,2", "--model", "channels=24,96"]


def _tree(root: Path) -> None:
    """train/ and val/ with 2 classes of odd-sized JPEG, PNG and greyscale PNG images."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (51, 37, 3), dtype=np.uint8)).save(folder / "a.jpg")
            Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(folder / "b.png")
            Image.fromarray(rng.integers(0, 256, (83, 29), dtype=np.uint8), mode="L").save(folder / "c.png")


def test_train_eval_invert_and_analyze_at_the_chosen_input_size(tmp_path, capsys, caplog):
    _tree(tmp_path / "data")
    data, run = ["--data", "imagefolder", "--data-dir", str(tmp_path / "data")], tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="irevnet"):
        assert main(["train", "--preset", "imagenet-b", *data, "--model", "input_shape=3,64,64", *SMALL_B,
                     "--epochs", "1", "--batch-size", "6", "--workers", "0", "--no-progress", "--out", str(run)]) == 0
    assert "imagenet-b's input_shape (3, 64, 64)" in caplog.text
    model = load_model(run / "best.pt")
    assert model.input_shape == (3, 64, 64) and model.config.num_classes == 2
    capsys.readouterr()
    # eval, invert and analyze take the size from the checkpoint.
    assert main(["eval", str(run / "best.pt"), *data, "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 6
    out = tmp_path / "inv.png"
    assert main(["invert", str(run / "best.pt"), str(tmp_path / "data/val/cat/a.jpg"),
                 str(tmp_path / "data/val/dog/c.png"), "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["preprocessing"]["input_size"] == [3, 64, 64]
    # Each image within the rounding model's bound, in pixel units (tests/floor.py).
    kappa = image_sensitivity(model, [str(tmp_path / "data/val/cat/a.jpg"), str(tmp_path / "data/val/dog/c.png")])
    check(torch.tensor([r["relative_error"] for r in report["images"]]), kappa.bound(), "invert")
    assert main(["analyze", str(run / "best.pt"), *data, "--only", "reconstruct", "--out", str(tmp_path / "an"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "an" / "reconstruct.json").read_text())["images"] == 6


def test_a_cifar_preset_on_imagefolder_data_is_a_32_pixel_model_and_says_so(tmp_path, caplog):
    _tree(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="irevnet"):
        assert main(["train", "--preset", "cifar10", "--data", "imagefolder", "--data-dir", str(tmp_path / "data"),
                     "--model", "blocks=1,1,1", "--epochs", "1", "--batch-size", "6", "--workers", "0",
                     "--eval-every", "0", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "cifar10's input_shape (3, 32, 32)" in caplog.text
    assert load_model(tmp_path / "run" / "last.pt").input_shape == (3, 32, 32)


def test_an_input_size_the_down_sampling_does_not_divide_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"input_shape \(3, 60, 60\).* multiples of 32.*\(3, 64, 64\)") as e:
        create_model("imagenet-b", input_shape=(3, 60, 60))
    assert e.value.option == "input_shape"
    with pytest.raises(ConfigError, match=r"multiples of 4.*nearest valid input_shape is \(3, 32, 36\)"):
        get_preset("cifar10").replace(input_shape=(3, 32, 35))
    # An empty data folder: the size is refused first (before the data is read or the run folder made).
    (tmp_path / "empty").mkdir()
    assert main(["train", "--preset", "imagenet-b", "--data", "imagefolder", "--data-dir", str(tmp_path / "empty"),
                 "--model", "input_shape=3,60,60", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model input_shape=...: input_shape (3, 60, 60)" in err
    assert "multiples of 32" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("size", [(100, 40), (40, 100), (64, 96)])
def test_a_non_square_input_is_cropped_from_the_image_never_padded(size):
    """Evaluation at H x W resizes the image to cover H/crop_pct x W/crop_pct (aspect kept), then crops."""
    config = get_preset("imagenet-b").replace(input_shape=(3, 64, 96))
    white = Image.new("RGB", size[::-1], (255, 255, 255))
    for tensor_input in (False, True):
        img = torch.full((3, *size), 255, dtype=torch.uint8) if tensor_input else white
        x = eval_transform(config, tensor_input=tensor_input)(img)
        assert x.shape == (3, 64, 96)
        torch.testing.assert_close(denormalize(x, config), torch.ones_like(x), rtol=0, atol=1e-6)
