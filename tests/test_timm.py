"""timm integration: every preset by name, pretrained_cfg data config, features_only, local weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import irevnet
from irevnet.config import get_preset
from irevnet.data.transforms import eval_transform
from irevnet.factory import entrypoint_names

timm = pytest.importorskip("timm")
SRC = str(Path(__file__).resolve().parents[1] / "src")

# Parameter counts of the presets (README; cifar10 and imagenet-b are the reference code's).
PARAMETERS = {"irevnet_digits": 329_610, "irevnet_cifar10": 6_274_826, "irevnet_cifar100": 6_320_996,
              "irevnet_imagenet_a": 199_033_960, "irevnet_301": 125_120_356}


def test_every_preset_is_a_timm_model():
    assert set(timm.list_models("irevnet_*")) == set(entrypoint_names())
    assert entrypoint_names()["irevnet_301"] == "imagenet-b"
    for name, preset in entrypoint_names().items():
        with torch.device("meta"):  # the full architectures, without allocating their weights
            model = timm.create_model(name)
        assert isinstance(model, irevnet.IRevNet) and model.config == get_preset(preset)
        if name in PARAMETERS:
            assert model.num_parameters() == PARAMETERS[name]


@pytest.mark.parametrize("name, image_hw", [("irevnet_301", (300, 400)), ("irevnet_cifar10", (32, 32)),
                                            ("irevnet_digits", (20, 16))])
def test_resolve_model_data_config_gives_our_eval_transform(name, image_hw):
    with torch.device("meta"):
        model = timm.create_model(name)
    data_config = timm.data.resolve_model_data_config(model)
    cfg = get_preset(entrypoint_names()[name])
    assert data_config["input_size"] == cfg.input_shape and data_config["crop_pct"] == cfg.data.crop_pct
    assert tuple(data_config["mean"]) == cfg.data_config["mean"] and tuple(data_config["std"]) == cfg.data_config["std"]
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*image_hw, 3), dtype=np.uint8))
    if cfg.input_shape[0] == 1:
        img = img.convert("L")
    theirs = timm.data.create_transform(**data_config)(img)
    torch.testing.assert_close(theirs, eval_transform(cfg)(img), rtol=0, atol=1e-6)


def test_features_only_gives_per_stage_maps():
    model = timm.create_model("irevnet_cifar10", blocks=(2, 2, 2), num_classes=5).eval()
    features = timm.create_model("irevnet_cifar10", blocks=(2, 2, 2), features_only=True).eval()
    features.load_state_dict({f"model.{k}": v for k, v in model.state_dict().items() if not k.startswith("head.fc")},
                             strict=False)
    assert features.feature_info.channels() == [32, 128, 512] and features.feature_info.reduction() == [1, 2, 4]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = features(x)
        _, every = model.forward_intermediates(x)
    assert [tuple(m.shape) for m in maps] == [(2, 32, 32, 32), (2, 128, 16, 16), (2, 512, 8, 8)]
    for m, j in zip(maps, (1, 3, 5)):  # the last block of each stage
        torch.testing.assert_close(m, every[j], rtol=0, atol=0)
    picked = timm.create_model("irevnet_cifar10", blocks=(2, 2, 2), features_only=True, out_indices=(0, -1))
    assert picked.feature_info.channels() == [32, 512]


def test_timm_keyword_arguments():
    model = timm.create_model("irevnet_301", blocks=(1, 1, 2, 1), img_size=64, num_classes=3, drop_rate=0.1)
    assert model.config.input_shape == (3, 64, 64) and model.num_classes == 3 and model.config.dropout == 0.1
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 64, 64)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)
    with torch.device("meta"):  # an injective layout accepts other channel counts
        grey = timm.create_model("irevnet_imagenet_a", blocks=(1, 1, 1, 1), img_size=(32, 64), in_chans=1)
    assert grey.config.input_shape == (1, 32, 64) and grey.pretrained_cfg["mean"] == (pytest.approx(0.449),)


def test_unknown_names_and_options_are_named():
    with pytest.raises(RuntimeError, match="Unknown model.*irevnet_999"):
        timm.create_model("irevnet_999")
    with pytest.raises(TypeError, match="unknown model option.*colour"):
        timm.create_model("irevnet_cifar10", colour=3)


def test_pretrained_weights_from_a_model_folder(tmp_path):
    model = irevnet.create_model("cifar10", blocks=(1, 1, 1), num_classes=4)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    model.save_pretrained(tmp_path / "m")
    loaded = timm.create_model("irevnet_cifar10", blocks=(1, 1, 1), num_classes=4, pretrained=True,
                               pretrained_cfg_overlay={"file": str(tmp_path / "m" / "model.safetensors"),
                                                       "num_classes": 4})  # else timm drops the classifier
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_pretrained_weights_from_a_run_checkpoint():
    """A run's best.pt: its folder's config.json holds the run's settings, not a model's; timm reads
    the checkpoint's state_dict as before."""
    best = Path(__file__).parent / "data" / "written-by-eeefafb" / "run" / "best.pt"
    loaded = timm.create_model("irevnet_digits_b", blocks=(1, 1), pretrained=True,
                               pretrained_cfg_overlay={"file": str(best)})
    want = torch.load(best, weights_only=True)["state_dict"]
    assert loaded.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_registration_is_lazy_and_optional():
    # import irevnet does not import timm; importing timm afterwards registers the presets.
    out = _run("import sys, irevnet; assert 'timm' not in sys.modules; import timm; "
               "print(sorted(timm.list_models('irevnet_*')))")
    assert out.returncode == 0, out.stderr
    assert "'irevnet_301'" in out.stdout
    # Without timm, irevnet imports and works; asking for the registration names the extra.
    out = _run("import sys; sys.modules['timm'] = None; import irevnet; irevnet.create_model('digits')\n"
               "try:\n    import irevnet.timm_models\nexcept ImportError as e:\n    print(e)")
    assert out.returncode == 0, out.stderr
    assert "pip install 'irevnet[timm]'" in out.stdout and not out.stderr


@pytest.mark.parametrize("feature_cls", ["hook", "fx", "dict", "list"])
def test_every_feature_extractor_returns_the_block_outputs(feature_cls):
    """timm's hook, fx and sequential extractors give the merged Φ_j of feature_info, as the default one does."""
    torch.manual_seed(0)
    model = timm.create_model("irevnet_cifar10", blocks=(2, 2, 2)).eval()
    torch.manual_seed(0)  # the same weights: the blocks are built first
    features = timm.create_model("irevnet_cifar10", blocks=(2, 2, 2), features_only=True,
                                 feature_cls=feature_cls).eval()
    assert features.feature_info.channels() == [32, 128, 512] and features.feature_info.module_name() == \
        ["blocks.1", "blocks.3", "blocks.5"]
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model.double().forward_intermediates(x, indices=model.config.stage_ends, intermediates_only=True)
        maps = features.double()(x)
    maps = list(maps.values()) if isinstance(maps, dict) else maps
    assert [m.shape[1] for m in maps] == [32, 128, 512]
    # The same arithmetic on the same values; the extractors pass merged maps (the blocks split
    # them into views), which may select another convolution kernel, so summation order may
    # differ: ~1e-16 relative per operation in float64, far below 1e-12 after 6 blocks.
    for m, e in zip(maps, expected):
        torch.testing.assert_close(m, e, rtol=1e-12, atol=1e-12)


def test_torch_fx_traces_the_model():
    model = timm.create_model("irevnet_digits").double().eval()
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():  # bound: as in test_every_feature_extractor_returns_the_block_outputs
        torch.testing.assert_close(graph(x), model(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="expected 1 input channel"):  # the traced graph checks its input
        graph(torch.randn(3, 2, 8, 8, dtype=torch.float64))
    # Injective padding and ψ appear as calls: they branch on the memory layout when they run.
    calls = {n.target.__name__ for n in graph.graph.nodes if n.op == "call_function" and hasattr(n.target, "__name__")}
    assert {"_check_input", "space_to_depth", "pad"} <= calls
