"""Data sets for `irevnet train` / `irevnet eval`, built in their real on-disk formats."""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder

from floor import check, unit_roundoff
from irevnet.data import CorruptImageError, build_datasets, build_eval_dataset
from irevnet.data.synthetic import SyntheticImages
from irevnet.config import IMAGENET_MEAN, IMAGENET_STD, get_preset
from irevnet.data.transforms import eval_transform
from irevnet.training import get_recipe, parse_overrides, recipe_for_preset


CIFAR, IMAGENET = get_preset("cifar10"), get_preset("imagenet-b")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_cifar(root: Path, cls: type[CIFAR10], monkeypatch: pytest.MonkeyPatch, per_file: int = 4) -> None:
    """Tiny batches in the official python-pickle layout; torchvision's MD5 table is pointed at them."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "fine_labels" if cls is CIFAR100 else "labels"
    n_classes = 100 if cls is CIFAR100 else 10
    rng = np.random.default_rng(0)
    for name, _ in cls.train_list + cls.test_list:
        entry = {"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 label_key: [int(v) for v in rng.integers(0, n_classes, per_file)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / cls.meta["filename"]).write_bytes(pickle.dumps({cls.meta["key"]: [f"c{i}" for i in range(n_classes)]}))
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


@pytest.mark.parametrize("name, cls, classes", [("cifar10", CIFAR10, 10), ("cifar100", CIFAR100, 100)])
def test_cifar_from_pickle_folder(tmp_path, monkeypatch, name, cls, classes):
    _write_cifar(tmp_path, cls, monkeypatch)
    data = build_datasets(name, tmp_path, config=get_preset(name))
    n_train = 4 * len(cls.train_list)
    assert (len(data.train), len(data.eval), data.num_classes, data.input_shape) == (n_train, 4, classes, (3, 32, 32))
    assert data.class_names == tuple(f"c{i}" for i in range(classes))  # the label names of the meta file
    x, y = data.eval[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < classes
    # Normalized: raw pixels are in [0, 1], the normalized ones are not.
    assert x.min() < 0 < x.max() and x.abs().max() > 1
    # --data-dir may also name the batches folder itself.
    assert len(build_datasets(name, tmp_path / cls.base_folder, config=get_preset(name)).train) == n_train


def test_cifar_missing_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_1.*cifar-10-python\.tar\.gz"):
        build_datasets("cifar10", tmp_path, config=CIFAR)
    with pytest.raises(ValueError, match="needs data_dir"):
        build_datasets("cifar10", config=CIFAR)


def test_cifar_corrupt_files_are_reported(tmp_path, monkeypatch):
    _write_cifar(tmp_path, CIFAR10, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="corrupt or not the official"):
        build_datasets("cifar10", tmp_path, config=CIFAR)


def _png(path: Path, size=(40, 30), color=(200, 10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _tree(root: Path, classes=("cat", "dog"), per_class: int = 2) -> None:
    for split in ("train", "val"):
        for c in classes:
            for i in range(per_class):
                _png(root / split / c / f"{i}.png")


def test_imagefolder_train_val_with_paper_transforms(tmp_path):
    _tree(tmp_path)
    data = build_datasets("imagefolder", tmp_path, config=IMAGENET)
    assert (len(data.train), len(data.eval), data.num_classes) == (4, 4, 2)
    x, y = data.eval[3]
    assert x.shape == (3, 224, 224) and y == 1
    # Eval protocol: a uniform red image maps to exactly (red - mean) / std per channel, in every
    # pixel: resizing a uniform image keeps its value, and (v/255 - mean)/std rounds three times
    # here and three times in the reference (elementwise, no sums: no kernel decides it).
    v, mean, std = torch.tensor([200, 10, 10]) / 255, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = ((v - mean) / std).view(3, 1, 1)
    bound = 6 * unit_roundoff(torch.float32) * ((v + mean.abs()) / std).view(3, 1, 1)
    check((x - expected).abs(), bound.expand_as(x), "pixels")
    assert data.train[0][0].shape == (3, 224, 224)


def test_imagefolder_eval_accepts_val_or_a_class_tree(tmp_path):
    _tree(tmp_path)
    assert len(build_eval_dataset("imagefolder", tmp_path, config=IMAGENET).eval) == 4
    only_val = build_eval_dataset("imagefolder", tmp_path / "val", config=IMAGENET)
    assert only_val.train is None and only_val.num_classes == 2 and len(only_val.eval) == 4


def test_imagefolder_class_mismatch_and_missing_split(tmp_path):
    _tree(tmp_path)
    _png(tmp_path / "train" / "emu" / "0.png")
    with pytest.raises(ValueError, match="different classes.*emu"):
        build_datasets("imagefolder", tmp_path, config=IMAGENET)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_datasets("imagefolder", tmp_path / "nowhere", config=IMAGENET)


def test_imagenet_eval_transform_resizes_256_and_crops_224():
    img = Image.new("RGB", (400, 300))
    transform = eval_transform(IMAGENET)
    assert [type(t).__name__ for t in transform.transforms][:2] == ["Resize", "CenterCrop"]
    assert transform.transforms[0].size == 256 and transform(img).shape == (3, 224, 224)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_error_names_the_file(tmp_path, damage):
    _tree(tmp_path, per_class=1)
    bad = tmp_path / "val" / "dog" / "bad.jpg"
    if damage == "garbage":
        bad.write_bytes(b"this is not a JPEG")
    else:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    data = build_eval_dataset("imagefolder", tmp_path, config=IMAGENET)
    with pytest.raises(CorruptImageError, match=r"bad\.jpg"):
        list(DataLoader(data.eval, batch_size=2))


def test_synthetic_is_deterministic_and_shaped():
    a, b = SyntheticImages(8, (1, 8, 8), 10, seed=3), SyntheticImages(8, (1, 8, 8), 10, seed=3)
    assert torch.equal(a[5][0], b[5][0]) and a[5][0].shape == (1, 8, 8) and a[5][1] == 5
    assert not torch.equal(a[5][0], SyntheticImages(8, (1, 8, 8), 10, seed=4)[5][0])
    data = build_datasets("synthetic", config=CIFAR.replace(num_classes=7), synthetic_size=40)
    assert (len(data.train), len(data.eval), data.num_classes, data.input_shape) == (40, 10, 7, (3, 32, 32))


def test_paper_recipes_and_overrides():
    c, i = get_recipe("cifar10"), recipe_for_preset("imagenet-b")
    assert (c.lr, c.momentum, c.weight_decay, c.batch_size, c.epochs, c.lr_milestones, c.lr_gamma, c.dropout) == (
        0.1, 0.9, 5e-4, 128, 200, (60, 120, 160), 0.2, 0.1)
    assert (i.name, i.lr, i.weight_decay, i.batch_size, i.epochs, i.lr_milestones, i.lr_gamma) == (
        "imagenet", 0.1, 1e-4, 256, 128, (32, 64, 96), 0.1)
    got = parse_overrides(c, ["lr=0.2", "lr_milestones=30,60", "nesterov=true", "batch-size=64"])
    assert got == {"lr": 0.2, "lr_milestones": (30, 60), "nesterov": True, "batch_size": 64}
    with pytest.raises(ValueError, match="unknown key 'learning_rate'"):
        parse_overrides(c, ["learning_rate=1"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_overrides(c, ["lr"])
    with pytest.raises(ValueError, match="bad value"):
        parse_overrides(c, ["epochs=ten"])


def _flat_tree(root: Path, counts: dict[str, int]) -> None:
    """ROOT/<class>/<i>.png: tiny images, no train/ or val/ folders."""
    rng = np.random.default_rng(0)
    for c, n in counts.items():
        for i in range(n):
            _png(root / c / f"{i}.png", size=(8, 8), color=tuple(int(v) for v in rng.integers(0, 256, 3)))


def _paths(folder) -> list[str]:
    return [p for p, _ in folder.samples]


def test_val_split_holds_out_a_stratified_seeded_fraction_of_each_class(tmp_path):
    from irevnet.data.imagefolder import held_out_indices, load_imagefolder

    counts = {"ant": 10, "bee": 7, "cat": 2, "dog": 1, "emu": 40}
    _flat_tree(tmp_path, counts)
    train, val = load_imagefolder(tmp_path, train_transform=None, eval_transform=None, val_split=0.1)
    assert train.classes == val.classes == sorted(counts)  # every class keeps its index, held out or not
    assert sorted(_paths(train) + _paths(val)) == sorted(str(p) for p in tmp_path.glob("*/*.png"))
    assert not set(_paths(train)) & set(_paths(val))
    # Per class: floor(0.1 n + 1/2) held out, at least one and at most n - 1 (none of a single image).
    held = {c: sum(1 for _, y in val.samples if val.classes[y] == c) for c in counts}
    assert held == {"ant": 1, "bee": 1, "cat": 1, "dog": 0, "emu": 4}
    assert [y for _, y in val.samples] == val.targets and [y for _, y in train.samples] == train.targets
    # The split is a function of the paths and the seed: the same again, another with another seed.
    scan = ImageFolder(str(tmp_path))
    assert [scan.samples[i][0] for i in held_out_indices(scan, 0.1)] == _paths(val)
    other = load_imagefolder(tmp_path, train_transform=None, eval_transform=None, val_split=0.1, seed=1)[1]
    assert _paths(other) != _paths(val) and len(other) == len(val)
    # A new image in one class leaves every other class's split as it was.
    _png(tmp_path / "emu" / "new.png", size=(8, 8))
    grown = load_imagefolder(tmp_path, train_transform=None, eval_transform=None, val_split=0.1)[1]
    assert [p for p in _paths(grown) if "/emu/" not in p] == [p for p in _paths(val) if "/emu/" not in p]


def test_val_split_data_sets_for_train_and_eval_agree(tmp_path):
    _flat_tree(tmp_path / "flat", {"cat": 6, "dog": 6})
    data = build_datasets("imagefolder", tmp_path / "flat", config=IMAGENET, val_split=0.5)
    assert (len(data.train), len(data.eval), data.num_classes) == (6, 6, 2)
    assert data.eval[0][0].shape == data.train[0][0].shape == (3, 224, 224)
    held = build_eval_dataset("imagefolder", tmp_path / "flat", config=IMAGENET, val_split=0.5)
    assert _paths(held.eval) == _paths(data.eval) and held.train is None
    torch.testing.assert_close(held.eval[0][0], data.eval[0][0])  # the evaluation transform, both times
    # ROOT/train without ROOT/val: the split divides ROOT/train.
    _flat_tree(tmp_path / "kaggle" / "train", {"cat": 4, "dog": 4})
    data = build_datasets("imagefolder", tmp_path / "kaggle", config=IMAGENET, val_split=0.25)
    assert (len(data.train), len(data.eval)) == (6, 2) and data.eval.classes == ["cat", "dog"]


def test_val_split_refusals_name_the_option(tmp_path):
    from irevnet.errors import ConfigError, DataError

    _flat_tree(tmp_path / "flat", {"cat": 2, "dog": 2})
    with pytest.raises(DataError, match="has no train/ folder.*val_split") as e:
        build_datasets("imagefolder", tmp_path / "flat", config=IMAGENET)
    assert e.value.option == "val_split"
    _flat_tree(tmp_path / "half" / "train", {"cat": 2})
    with pytest.raises(DataError, match="has train/ but no val/.*val_split"):
        build_datasets("imagefolder", tmp_path / "half", config=IMAGENET)
    _tree(tmp_path / "both")
    with pytest.raises(ConfigError, match="already has a val/ split"):
        build_datasets("imagefolder", tmp_path / "both", config=IMAGENET, val_split=0.1)
    with pytest.raises(ConfigError, match="cifar10 has fixed train and test splits"):
        build_datasets("cifar10", tmp_path, config=CIFAR, val_split=0.1)
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ConfigError, match="val_split must be a fraction in"):
            build_datasets("imagefolder", tmp_path / "flat", config=IMAGENET, val_split=bad)
    _flat_tree(tmp_path / "singles", {"cat": 1, "dog": 1})
    with pytest.raises(DataError, match="no class has two images"):
        build_datasets("imagefolder", tmp_path / "singles", config=IMAGENET, val_split=0.5)


def test_train_on_a_flat_tree_then_eval_and_resume_use_the_recorded_split(tmp_path, capsys, caplog, monkeypatch):
    import json
    import shutil

    from irevnet.cli.main import main

    _flat_tree(tmp_path / "flat", {"cat": 8, "dog": 8, "emu": 8})
    data, run = ["--data", "imagefolder", "--data-dir", str(tmp_path / "flat")], tmp_path / "run"
    train = ["train", "--preset", "digits", "--model", "input_shape=3,8,8", "--model", "blocks=1,1", *data,
             "--epochs", "1", "--batch-size", "6", "--workers", "0", "--no-progress", "--out", str(run)]
    monkeypatch.chdir(tmp_path)  # the folder given relative to the working directory ...
    assert main([*("flat" if a == str(tmp_path / "flat") else a for a in train), "--val-split", "0.25"]) == 0
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["train"]["val_split"] == 0.25 and (recorded["train_images"], recorded["eval_images"]) == (18, 6)
    assert recorded["train"]["data_dir"] == str(tmp_path / "flat")  # ... is recorded absolute
    capsys.readouterr()
    # eval of the run's checkpoint on the same folder, named from another directory: the held-out
    # part, and it says so.
    monkeypatch.chdir(run)
    assert main(["eval", "best.pt", "--data", "imagefolder", "--data-dir", "../flat", "--no-progress"]) == 0
    assert "(6 images, imagefolder, the held-out 0.25 of each class (as recorded in config.json))" in (
        capsys.readouterr().out)
    # Another folder (a copy) is not the one the run split: all of it, with a warning that says why.
    shutil.copytree(tmp_path / "flat", tmp_path / "copy")
    with caplog.at_level(logging.WARNING, logger="irevnet"):
        assert main(["eval", "best.pt", "--data", "imagefolder", "--data-dir", "../copy", "--json",
                     "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 24
    assert f"held out 0.25 of {tmp_path / 'flat'}; ../copy is not that folder" in caplog.text
    assert main(["eval", str(run / "best.pt"), *data, "--val-split", "0.5", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 12  # an explicit split wins
    # Resuming with another split would train on other images: refused, naming the flag.
    assert main([*train, "--val-split", "0.5", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was trained with val_split 0.25, this run has 0.5" in err and "--val-split" in err
    assert main([*train, "--val-split", "0.25", "--resume"]) == 0  # the same split: nothing left to do
    # Without --val-split a flat tree is refused in one line that names the flag.
    assert main([*train[:-1], str(tmp_path / "run2")]) == 2
    assert "has no train/ folder" in (err := capsys.readouterr().err) and "--val-split" in err
    assert main([*train[:-1], str(tmp_path / "run3"), "--val-split", "1"]) == 2
    assert "argument --val-split: expected a fraction between 0 and 1" in capsys.readouterr().err
