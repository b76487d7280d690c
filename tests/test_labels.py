"""Models know what they predict: class names from the data, saved in the run, the checkpoint and the
model folder (Hugging Face's id2label), shown by `info`, used by `eval --per-class` and `predict`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from irevnet import CheckpointError, ConfigError, IRevNet, create_model, load_model, save_model
from irevnet.cli.common import read_images
from irevnet.cli.main import main
from irevnet.config import get_preset
from irevnet.data import build_datasets
from irevnet.io.formats import read_checkpoint
from irevnet.predict import PerClassAccuracy, predict

NAMES = ("cat", "dog", "owl")


def test_label_names_follow_the_classes():
    config = get_preset("digits-b").replace(num_classes=3, label_names=list(NAMES))
    assert config.label_names == NAMES and config == config.replace(label_names=None)  # names are not compared
    assert config.replace(num_classes=4).label_names is None  # the names of three classes do not name four
    assert config.replace(dropout=0.1).label_names == NAMES
    assert "label_names" not in get_preset("digits-b").to_dict()  # files without names stay as they were
    with pytest.raises(ConfigError, match="label_names has 2 names but num_classes is 3"):
        config.replace(label_names=("a", "b"))
    with pytest.raises(ConfigError, match=r"must be distinct, but \['a'\] occur"):
        config.replace(label_names=("a", "a", "b"))
    with pytest.raises(ConfigError, match="sequence of strings"):
        config.replace(label_names=(0, 1, 2))
    model = IRevNet(config)
    model.reset_classifier(5)
    assert model.config.label_names is None


def test_names_are_saved_in_checkpoints_and_as_id2label_in_model_folders(tmp_path):
    model = create_model("digits-b", blocks=(1, 1), num_classes=3, label_names=NAMES)
    save_model(model, tmp_path / "m.pt")
    assert read_checkpoint(tmp_path / "m.pt")["config"]["label_names"] == list(NAMES)
    assert load_model(tmp_path / "m.pt").config.label_names == NAMES
    model.save_pretrained(tmp_path / "folder")
    doc = json.loads((tmp_path / "folder" / "config.json").read_text())
    assert doc["id2label"] == {"0": "cat", "1": "dog", "2": "owl"} and doc["label2id"] == {"cat": 0, "dog": 1, "owl": 2}
    assert "label_names" not in doc["config"]  # one place: id2label
    assert IRevNet.from_pretrained(tmp_path / "folder").config.label_names == NAMES
    doc["label2id"]["cat"] = 2
    (tmp_path / "folder" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="label2id does not invert id2label"):
        load_model(tmp_path / "folder")


def test_data_sets_name_their_classes(tmp_path):
    assert build_datasets("digits", config=get_preset("digits")).class_names == tuple("0123456789")
    _tree(tmp_path)
    assert build_datasets("imagefolder", tmp_path, config=get_preset("digits-b")).class_names == ("cat", "dog")
    assert build_datasets("synthetic", config=get_preset("digits-b"), synthetic_size=4).class_names is None


def _tree(root: Path) -> None:
    """train/ and val/ of two classes, three small images each."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8), mode="L").save(
                    root / split / label / f"{i}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A digits-b model trained one epoch on a two-class image folder (names: cat, dog)."""
    root = tmp_path_factory.mktemp("labels")
    _tree(root / "data")
    assert main(["train", "--preset", "digits-b", "--model", "blocks=1,1", "--data", "imagefolder", "--data-dir",
                 str(root / "data"), "--epochs", "1", "--batch-size", "6", "--workers", "0", "--no-progress",
                 "--out", str(root / "run"), "--save-pretrained", str(root / "model")]) == 0
    return root


def test_training_records_the_class_names_everywhere(trained):
    run_config = json.loads((trained / "run" / "config.json").read_text())
    assert run_config["model"]["label_names"] == ["cat", "dog"]
    for name in ("best.pt", "last.pt"):
        assert read_checkpoint(trained / "run" / name)["config"]["label_names"] == ["cat", "dog"]
    assert json.loads((trained / "model" / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog"}


def test_info_shows_the_class_names(trained, capsys):
    assert main(["info", str(trained / "model")]) == 0
    assert "  classes         cat, dog\n" in capsys.readouterr().out
    assert main(["info", str(trained / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label_names"] == ["cat", "dog"]


def test_eval_per_class_accuracy_by_name(trained, capsys):
    data = ["--data", "imagefolder", "--data-dir", str(trained / "data")]
    assert main(["eval", str(trained / "run"), *data, "--per-class", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["per_class"]
    assert [r["label"] for r in rows] == ["cat", "dog"] and [r["images"] for r in rows] == [3, 3]
    assert sum(r["top1"] * r["images"] for r in rows) / result["images"] == pytest.approx(result["top1"])
    assert main(["eval", str(trained / "run"), *data, "--per-class", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("  cat  top-1 ") and lines[2].endswith("(3 images)")


def test_eval_warns_when_the_model_names_its_classes_differently(trained, tmp_path, caplog):
    data = ["--data", "imagefolder", "--data-dir", str(trained / "data"), "--no-progress", "--json"]
    with caplog.at_level(logging.WARNING, logger="irevnet"):
        assert main(["eval", str(trained / "run"), *data]) == 0
    assert "names its classes differently" not in caplog.text
    save_model(create_model("digits-b", blocks=(1, 1), num_classes=2, label_names=("dog", "cat")), tmp_path / "m.pt")
    with caplog.at_level(logging.WARNING, logger="irevnet"):
        assert main(["eval", str(tmp_path / "m.pt"), *data]) == 0
    assert "names its classes differently from imagefolder (class 0: 'dog' vs 'cat')" in caplog.text


def test_per_class_accuracy_counts_each_true_class():
    acc = PerClassAccuracy(3)
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0], [0, 0, 2.0]])
    acc.update(logits, torch.tensor([0, 0, 1, 1]))
    assert acc.rows(NAMES) == [{"index": 0, "label": "cat", "images": 2, "top1": 0.5},
                               {"index": 1, "label": "dog", "images": 2, "top1": 0.0},
                               {"index": 2, "label": "owl", "images": 0, "top1": None}]


def test_predict_prints_the_top_k_names_with_the_model_probabilities(trained, capsys):
    images = [str(trained / "data" / "val" / c / "0.png") for c in ("cat", "dog")]
    assert main(["predict", str(trained / "model"), *images, "--top-k", "5", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = load_model(trained / "model").eval()
    with torch.no_grad():
        probs = model(read_images(images, model.config)).softmax(1)
    for entry, image, p in zip(result, images, probs):
        assert entry["image"] == image and len(entry["top_k"]) == 2  # at most the model's classes
        assert [t["label"] for t in entry["top_k"]] == [("cat", "dog")[i] for i in p.argsort(descending=True)]
        assert [t["probability"] for t in entry["top_k"]] == pytest.approx(sorted(p.tolist(), reverse=True))
    assert main(["predict", str(trained / "run" / "best.pt"), images[0], "--top-k", "1"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{images[0]}: {result[0]['top_k'][0]['label']} 0.") and line.count("\n") == 1


def test_predict_without_names_uses_class_indices():
    model = create_model("digits-b", blocks=(1, 1), num_classes=3)
    top = predict(model, torch.randn(4, 1, 8, 8), top_k=2)
    assert [len(t) for t in top] == [2] * 4 and {p.label for t in top for p in t} <= {"0", "1", "2"}
    assert all(t[0].probability >= t[1].probability and t[0].label == str(t[0].index) for t in top)
    assert model.training  # left in the mode it was in


def test_timm_takes_the_class_count_from_the_model_folder(tmp_path, caplog):
    timm = pytest.importorskip("timm")
    model = create_model("cifar10", blocks=(1, 1, 1), num_classes=2, label_names=("cat", "dog"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    model.save_pretrained(tmp_path / "m")
    file = {"file": str(tmp_path / "m" / "model.safetensors")}
    loaded = timm.create_model("irevnet_cifar10", blocks=(1, 1, 1), pretrained=True, pretrained_cfg_overlay=file)
    assert loaded.num_classes == 2 and loaded.config.label_names == ("cat", "dog")
    assert loaded.pretrained_cfg["label_names"] == ("cat", "dog")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))
    with caplog.at_level(logging.WARNING, logger="irevnet"):
        other = timm.create_model("irevnet_cifar10", blocks=(1, 1, 1), num_classes=5, pretrained=True,
                                  pretrained_cfg_overlay=file)
    assert other.num_classes == 5
    assert "hold a classifier for 2 classes; num_classes=5 replaces it with a new, randomly initialized one" \
        in caplog.text
