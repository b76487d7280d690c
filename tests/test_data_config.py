"""The per-model data config (the one source of preprocessing) and strict configuration parsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from irevnet import DataConfig, IRevNetConfig, create_model, list_presets
from irevnet.config import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, get_preset
from irevnet.data.transforms import eval_transform, resize_size, train_transform


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_round_trips_through_a_dict(name):
    cfg = get_preset(name)
    again = IRevNetConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.data == cfg.data
    assert cfg.data_config["input_size"] == cfg.input_shape and len(cfg.data_config["mean"]) == cfg.input_shape[0]


def test_preset_data_configs():
    assert get_preset("imagenet-b").data == get_preset("imagenet-a").data
    assert get_preset("imagenet-b").data.crop_pct == 0.875 and resize_size(get_preset("imagenet-a")) == 256
    assert get_preset("cifar10").data == DataConfig(mean=CIFAR10_MEAN, std=CIFAR10_STD)
    assert get_preset("cifar100").data.mean != CIFAR10_MEAN
    digits = get_preset("digits").data_config
    assert digits["mean"] == (0.0,) and digits["std"] == (1.0,) and digits["crop_pct"] == 1.0


@pytest.mark.parametrize("key, hint", [("num_clases", "did you mean 'num_classes'"), ("colour", "valid keys")])
def test_from_dict_refuses_unknown_keys_naming_them(key, hint):
    data = get_preset("cifar10").to_dict()
    data[key] = 3
    with pytest.raises(ValueError, match=rf"unknown key '{key}'.*{hint}"):
        IRevNetConfig.from_dict(data)


def test_from_dict_names_missing_and_bad_values():
    data = get_preset("cifar10").to_dict()
    del data["channels"]
    with pytest.raises(ValueError, match="lacks the required key.*'channels'"):
        IRevNetConfig.from_dict(data)
    bad = {**get_preset("cifar10").to_dict(), "blocks": "eighteen"}
    with pytest.raises(ValueError, match="blocks must be a sequence of integers"):
        IRevNetConfig.from_dict(bad)
    bad = {**get_preset("cifar10").to_dict(), "blocks": 18}
    with pytest.raises(ValueError, match="blocks must be a sequence of integers"):
        IRevNetConfig.from_dict(bad)
    bad = {**get_preset("cifar10").to_dict(), "num_classes": "ten"}
    with pytest.raises(ValueError, match="key 'num_classes' must be int, got 'ten'"):
        IRevNetConfig.from_dict(bad)
    with pytest.raises(ValueError, match="must be a JSON object"):
        IRevNetConfig.from_dict([1, 2])


def test_data_config_is_strict_and_consistent_with_the_input():
    data = get_preset("imagenet-b").to_dict()
    data["data"]["crop_percent"] = 0.9
    with pytest.raises(ValueError, match="data config has an unknown key 'crop_percent'.*did you mean 'crop_pct'"):
        IRevNetConfig.from_dict(data)
    with pytest.raises(ValueError, match="3 entries but input_shape .* has 1 channel"):
        get_preset("cifar10").replace(input_shape=(1, 32, 32))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        DataConfig(interpolation="lanczos")
    with pytest.raises(ValueError, match="crop_pct must be in"):
        DataConfig(crop_pct=1.5)
    with pytest.raises(ValueError, match="both mean and std"):
        DataConfig(mean=(0.5,))


def test_model_overrides_set_fields_of_the_data_config():
    """`--model data.FIELD=VALUE`: parsed to the field's type, merged into the preset's data config."""
    from irevnet.training import parse_overrides

    cifar = get_preset("cifar10")
    got = parse_overrides(cifar, ["data.crop_pct=0.9", "data.interpolation=bicubic", "blocks=1,1,1"])
    assert got == {"data": {"crop_pct": 0.9, "interpolation": "bicubic"}, "blocks": (1, 1, 1)}
    assert cifar.replace(**got).data == DataConfig(mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=0.9,
                                                   interpolation="bicubic")
    # digits has no mean/std (None): the field's annotation gives the type; `none` clears them again.
    digits = get_preset("digits")
    got = parse_overrides(digits, ["data.mean=0.5", "data.std=0.25"])
    assert digits.replace(**got).data == DataConfig(mean=(0.5,), std=(0.25,))
    assert parse_overrides(cifar, ["data.mean=none", "data.std=none"]) == {"data": {"mean": None, "std": None}}
    assert cifar.replace(data={"mean": None, "std": None}).data == DataConfig()


@pytest.mark.parametrize("item, message", [
    ("data.crop=1", r"DataConfig has an unknown key 'crop' \(did you mean 'crop_pct'\?\); valid keys: mean, std"),
    ("num_clases=3", r"IRevNetConfig has an unknown key 'num_clases' \(did you mean 'num_classes'\?\)"),
    ("data.crop_pct=big", r"bad value in override 'data.crop_pct=big': expected a number, got 'big'"),
    ("data.mean=0.5,x,0.5", r"expected comma-separated numbers, got '0.5,x,0.5'"),
    ("data=1", r"data is a group of fields \(mean, std, crop_pct, interpolation\); set them one by one"),
    ("blocks.first=1", r"blocks has no fields"),
])
def test_model_overrides_name_the_bad_key_or_value(item, message):
    from irevnet.errors import ConfigError
    from irevnet.training import parse_overrides

    with pytest.raises(ConfigError, match=message):
        parse_overrides(get_preset("cifar10"), [item])


def test_a_config_without_data_takes_its_presets():
    """Checkpoints written before configurations carried their preprocessing still load it."""
    legacy = get_preset("imagenet-b").to_dict()
    del legacy["data"]
    assert IRevNetConfig.from_dict(legacy).data.mean == IMAGENET_MEAN
    custom = {**legacy, "name": "mine"}
    assert IRevNetConfig.from_dict(custom).data == DataConfig()


def test_the_model_carries_its_data_config():
    model = create_model("cifar10", blocks=(1, 1, 1))
    assert model.config.data == get_preset("cifar10").data
    mine = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bicubic")
    assert create_model("cifar10", blocks=(1, 1, 1), data=mine).config.data_config["interpolation"] == "bicubic"


def test_cifar_training_augmentation_is_the_papers():
    """At 32x32 the derived pipeline is the reference one: pad-4 random crop, flip, CIFAR mean/std."""
    img = _image(32, 32)
    reference = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    ours = train_transform(get_preset("cifar10"), augment="cifar")
    for seed in range(4):
        torch.manual_seed(seed)
        expected = reference(img)
        torch.manual_seed(seed)
        assert torch.equal(ours(img), expected)
    # Evaluation of a 32x32 image is only the normalization.
    torch.testing.assert_close(eval_transform(get_preset("cifar10"))(img), reference.transforms[-1](T.ToTensor()(img)),
                               rtol=0, atol=0)


def test_imagenet_training_augmentation_yields_the_input_size():
    cfg = get_preset("imagenet-b").replace(input_shape=(3, 64, 64))
    x = train_transform(cfg, augment="imagenet")(_image(90, 120))
    assert x.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="unknown augmentation 'mnist'"):
        train_transform(cfg, augment="mnist")
