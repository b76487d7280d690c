"""torch.hub entry points from this checkout (hubconf.py), offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from irevnet import create_model
from irevnet.config import get_preset
from irevnet.factory import entrypoint_names

REPO = str(Path(__file__).resolve().parents[1])


def test_every_preset_loads_through_torch_hub():
    for name, preset in entrypoint_names().items():
        with torch.device("meta"):
            model = torch.hub.load(REPO, name, source="local", trust_repo=True, verbose=False)
        assert model.config == get_preset(preset)
    small = torch.hub.load(REPO, "irevnet_301", source="local", blocks=(1, 1, 2, 1), input_shape=(3, 64, 64),
                           verbose=False)
    assert small.config.name == "imagenet-b" and small.depth == 5


def test_weights_from_a_model_folder(tmp_path):
    model = create_model("cifar10", blocks=(1, 1, 1))
    model.save_pretrained(tmp_path / "m")
    loaded = torch.hub.load(REPO, "irevnet_cifar10", source="local", weights=str(tmp_path / "m"), verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="holds a 'cifar10' model, not 'imagenet-b'"):
        torch.hub.load(REPO, "irevnet_301", source="local", weights=str(tmp_path / "m"), verbose=False)
    with pytest.raises(ValueError, match="needs weights="):
        torch.hub.load(REPO, "irevnet_301", source="local", pretrained=True, verbose=False)
    with pytest.raises(RuntimeError, match="Cannot find callable irevnet_999"):
        torch.hub.load(REPO, "irevnet_999", source="local", verbose=False)
