"""Data sets for `irevnet train` / `irevnet eval`, built in their real on-disk formats."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import CIFAR10, CIFAR100

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
    # Eval protocol: a uniform red image maps to exactly (red - mean) / std per channel.
    expected = (torch.tensor([200, 10, 10]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x.mean(dim=(1, 2)), expected, atol=1e-5, rtol=0)
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
