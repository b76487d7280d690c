"""timm integration: every preset by name, pretrained_cfg data config, features_only, local weights."""

from __future__ import annotations

import copy
import importlib
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import irevnet
from floor import check, unit_roundoff
from irevnet.config import get_preset
from irevnet.data.transforms import eval_transform
from irevnet.factory import entrypoint_names
from irevnet.summary import describe_config

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
    # The same resized pixels v, normalized elementwise by both: v/255, - mean, / std round three
    # times each, within u of |result| <= |x| + |mean|/std.
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in (cfg.data_config["mean"], cfg.data_config["std"]))
    bound = 6 * unit_roundoff(torch.float32) * (theirs.abs() + mean / std)
    check((theirs - eval_transform(cfg)(img)).abs(), bound, "transform")


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
    # (That irevnet imports and trains without timm installed: tests/test_gpu_suite.py's core test.)
    # Nor dynamo (2.5 s of every command's start) until something compiles: not even a memory-saving
    # step, whose autograd function and precision flags are torch.compiler.disable'd lazily.
    out = _run("import sys, torch, irevnet; m = irevnet.create_model('digits').set_memory_efficient(True); "
               "m(torch.rand(2, 1, 8, 8)).sum().backward(); "
               "assert 'timm' not in sys.modules and 'torch._dynamo' not in sys.modules; import timm; "
               "print(sorted(timm.list_models('irevnet_*')))")
    assert out.returncode == 0, out.stderr
    assert "'irevnet_301'" in out.stdout
    # Importing the registry module first (it imports timm itself) registers too, without a warning.
    out = _run("import irevnet.timm_models, timm; print(sorted(timm.list_models('irevnet_*')))")
    assert out.returncode == 0 and "'irevnet_301'" in out.stdout and not out.stderr, (out.stdout, out.stderr)


def test_without_timm_the_registry_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` finds when it is not installed
    monkeypatch.delitem(sys.modules, "irevnet.timm_models")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImportError, match=re.escape("pip install 'irevnet[timm]'")):
            importlib.import_module("irevnet.timm_models")
    assert irevnet.create_model("digits").num_parameters() == PARAMETERS["irevnet_digits"]


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


def test_factory_options_and_cfg_fields_follow_timm():
    model = timm.create_model("irevnet_301", device="meta", dtype=torch.float64)
    assert {(t.device.type, t.dtype) for t in model.parameters()} == {("meta", torch.float64)}
    assert model.in_chans == 3 and model.head_hidden_size == model.num_features == 3072
    cfg = model.pretrained_cfg
    assert cfg["pool_size"] == (7, 7) and cfg["first_conv"] + ".weight" in model.state_dict()
    assert model.get_submodule(cfg["first_conv"]) is model.blocks[0].bottleneck.conv1
    small = irevnet.create_model("cifar10", blocks=(1, 1, 1), device="meta", dtype=torch.float16)
    assert {(t.device.type, t.dtype) for t in small.parameters()} == {("meta", torch.float16)}
    assert small.pretrained_cfg["pool_size"] == (8, 8)


def test_no_pooling_and_the_classifier_at_every_position(tmp_path):
    """global_pool="" (timm: none) returns maps, the classifier applied at each position; it is saved."""
    torch.manual_seed(0)
    model = timm.create_model("irevnet_cifar10", blocks=(1, 1, 1), num_classes=5).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        phi = model.forward_features(x)
        normed = torch.relu(model.head.norm(phi))
        logits = model(x)
        model.reset_classifier(0, "")
        assert model.num_classes == 0 and model.config.global_pool == ""
        torch.testing.assert_close(model(x), normed, rtol=0, atol=0)
        model.reset_classifier(0, "avg")
        torch.testing.assert_close(model(x), normed.mean((2, 3)), rtol=0, atol=0)
        model.reset_classifier(5, "")
        per_position = model(x)
        assert per_position.shape == (2, 5, 8, 8)
        w, b = model.head.fc.weight, model.head.fc.bias
        torch.testing.assert_close(per_position, torch.einsum("kc,nchw->nkhw", w, normed) + b[:, None, None])
        model.reset_classifier(3)  # global_pool None: the pooling stays as it is
        assert model.config.global_pool == "" and model(x).shape == (2, 3, 8, 8)
    assert logits.shape == (2, 5)
    unpooled = timm.create_model("irevnet_cifar10", blocks=(1, 1, 1), num_classes=0, global_pool="")
    assert unpooled(torch.randn(1, 3, 32, 32)).shape == (1, 512, 8, 8)
    unpooled.save_pretrained(tmp_path / "m")
    again = irevnet.IRevNet.from_pretrained(tmp_path / "m")
    assert again.config == unpooled.config and again(torch.randn(1, 3, 32, 32)).shape == (1, 512, 8, 8)
    with pytest.raises(ValueError, match="average only"):
        timm.create_model("irevnet_cifar10", global_pool="max")
    with pytest.raises(ValueError, match="average only"):
        model.reset_classifier(3, "max")


def test_set_grad_checkpointing_is_the_memory_saving_backward():
    model = timm.create_model("irevnet_digits_b").double().train()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    grads = []
    for enabled in (False, True):
        model.set_grad_checkpointing(enabled)
        assert model.memory_efficient is enabled
        model.zero_grad()
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    # docs/memory.md: gradients equal plain autograd's up to rounding (float64: ~1e-16 per operation).
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g1, g0, rtol=1e-9, atol=1e-12)


def test_group_matcher_gives_layer_decay_by_depth():
    from timm.models import group_parameters
    from timm.optim import param_groups_layer_decay

    model = timm.create_model("irevnet_cifar10", blocks=(2, 1, 2), num_classes=3)
    fine = group_parameters(model, model.group_matcher(), reverse=True)
    coarse = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    for name, _ in model.named_parameters():
        if name.startswith("blocks."):
            j = int(name.split(".")[1])
            assert fine[name] == j and coarse[name] == model.stage_index[j]
        else:  # the head: after every block and stage
            assert name.startswith("head.") and fine[name] == 5 and coarse[name] == 3
    groups = param_groups_layer_decay(model, weight_decay=0.1, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert scale["blocks.0.bottleneck.conv1.weight"] == 0.5**5 and scale["blocks.4.bottleneck.conv3.weight"] == 0.5
    assert scale["head.fc.weight"] == 1.0
    assert model.no_weight_decay() == set()


def test_prune_intermediate_layers_keeps_an_invertible_model(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("irevnet_cifar10", blocks=(2, 2, 2), num_classes=4).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)

        unchanged = copy.deepcopy(model)
        assert unchanged.prune_intermediate_layers([-1], prune_head=False) == [5]
        torch.testing.assert_close(unchanged(x), logits, rtol=0, atol=0)

        pruned = copy.deepcopy(model)
        assert pruned.prune_intermediate_layers([0, 2]) == [0, 2]
        assert pruned.depth == 3 and pruned.config.blocks == (2, 1) and pruned.config.strides == (1, 2)
        assert [f["num_chs"] for f in pruned.feature_info] == [32, 32, 128] and pruned.num_features == 128
        # Φ ends at block 2; the head (sized for the full Φ) is gone: no norm, pooling or classifier.
        phi = pruned.forward_features(x)
        torch.testing.assert_close(phi, taps[2], rtol=0, atol=0)
        torch.testing.assert_close(pruned(x), phi, rtol=0, atol=0)
        assert not [n for n, _ in pruned.named_parameters() if n.startswith("head.")]
        assert relative_error(pruned.inverse(phi), x) < 1e-12
        assert pruned.describe()["parameters"] == describe_config(pruned.config)["parameters"]
        pruned.save_pretrained(tmp_path / "pruned")
        again = irevnet.IRevNet.from_pretrained(tmp_path / "pruned").double().eval()
        torch.testing.assert_close(again(x), phi, rtol=0, atol=0)

        norm_only = copy.deepcopy(model)
        norm_only.prune_intermediate_layers(6, prune_norm=True, prune_head=False)
        assert norm_only.head.norm is None and norm_only.num_classes == 4
        torch.testing.assert_close(norm_only(x), norm_only.head.fc(taps[-1].mean((2, 3))), rtol=0, atol=0)


def relative_error(a, b):
    return float((a - b).norm() / b.norm())
