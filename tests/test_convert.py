"""Conversion of reference-format checkpoints (built here by tests/reference_impl.py)."""

from __future__ import annotations

import argparse

import pytest
import torch

import reference_impl as ref_impl
from floor import check, check_reconstruction, per_image_relative_error, sensitivity, unit_roundoff
from irevnet import create_model, load_model, save_model
from irevnet.cli.main import main
from irevnet.convert import (
    ConversionError,
    convert_reference_state_dict,
    load_reference_checkpoint,
    read_reference_state_dict,
    reference_key_map,
)

SMALL_B = dict(blocks=(1, 1, 2, 1), input_shape=(3, 64, 64), num_classes=10)
SMALL_B_ARGS = ["--preset", "imagenet-b", "--model", "blocks=1,1,2,1", "--model", "input_shape=3,64,64",
                "--model", "num_classes=10"]


def small_reference_b(seed: int = 0) -> ref_impl.RefIRevNet:
    torch.manual_seed(seed)
    return ref_impl.randomize(ref_impl.imagenet_b(blocks=(1, 1, 2, 1), in_shape=(3, 64, 64), num_classes=10),
                              seed).eval()


@pytest.fixture
def ref_b(tmp_path):
    """A random small imagenet-b-layout reference model and its checkpoint, in the authors' format."""
    model = small_reference_b()
    return model, ref_impl.save_reference_checkpoint(model, tmp_path / "ref.pth.tar")


def test_full_imagenet_b_maps_every_key_and_shape():
    # Meta tensors: the 125M-parameter layouts are built without memory or time.
    with torch.device("meta"):
        ref, ours = ref_impl.imagenet_b(), create_model("imagenet-b")
    assert sum(p.numel() for p in ref.parameters()) == 125_120_356  # the reference impl is the paper's model
    sd = {"module." + k: v for k, v in ref.state_dict().items()}
    mapped, report = convert_reference_state_dict(sd, ours)
    assert report.ok and not report.defaulted, report.format()
    assert set(mapped) == set(ours.state_dict()) and report.converted == len(sd) == 1802
    key_map = reference_key_map(ours)
    assert key_map["stack.0.bottleneck_block.0.weight"] == "blocks.0.bottleneck.conv1.weight"
    assert key_map["stack.0.bottleneck_block.7.weight"] == "blocks.0.bottleneck.conv3.weight"
    assert key_map["stack.1.bottleneck_block.0.running_var"] == "blocks.1.bottleneck.bn0.running_var"
    assert key_map["stack.99.bottleneck_block.9.weight"] == "blocks.99.bottleneck.conv3.weight"
    assert key_map["bn1.running_mean"] == "head.norm.running_mean" and key_map["linear.bias"] == "head.fc.bias"


@pytest.mark.numerics
def test_imagenet_b_outputs_equal_reference(ref_b):
    ref, path = ref_b
    ours = load_reference_checkpoint(path, "imagenet-b", **SMALL_B)
    assert not ours.training
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits_ref, phi_ref = ref(x)
        phi = ours.forward_features(x)
        logits = ours.forward_head(phi)
    assert phi.shape == (3, 3072, 2, 2)  # bijective: Φ has as many values as x
    # The reference is another float32 computation of the same layers: both within the rounding
    # model's bound of the exact values, so within twice it of each other (tests/floor.py).
    kappa = sensitivity(ours, x)
    check(per_image_relative_error(phi, phi_ref), kappa.bound("forward", computations=2), "phi")
    check(per_image_relative_error(logits, logits_ref), kappa.bound("logits", computations=2), "logits")
    assert logits.abs().max() > 0.1  # not a trivially zero comparison
    check_reconstruction(ours, x)


@pytest.mark.numerics
def test_cifar10_layout_bare_state_dict_without_counters(tmp_path):
    # An old-style checkpoint: non-zip format, no wrapper dict, no `module.` prefix, no num_batches_tracked.
    torch.manual_seed(1)
    ref = ref_impl.randomize(ref_impl.cifar10(blocks=(2, 2, 2)), seed=1).eval()
    path = ref_impl.save_reference_checkpoint(ref, tmp_path / "cifar.pth", data_parallel=False,
                                              wrapped=False, with_counters=False, legacy=True)
    state_dict, metadata = read_reference_state_dict(path)
    assert metadata == {} and not any(k.startswith("module.") for k in state_dict)
    ours = load_reference_checkpoint(path, "cifar10", blocks=(2, 2, 2))
    assert ours.injective
    x = torch.randn(4, 3, 32, 32)
    kappa = sensitivity(ours, x)  # two float32 computations of the same layers, as above
    with torch.no_grad():
        logits_ref, phi_ref = ref(x)
        phi = ours.forward_features(x)
        check(per_image_relative_error(phi, phi_ref), kappa.bound("forward", computations=2), "phi")
        check(per_image_relative_error(ours.forward_head(phi), logits_ref), kappa.bound("logits", computations=2), "logits")
        check(per_image_relative_error(ours.inverse(phi), ref.inverse(phi_ref)), kappa.bound(computations=2), "inverse")


def test_missing_counters_are_reported_as_defaulted():
    ours = create_model("imagenet-b", **SMALL_B)
    sd = {k: v for k, v in small_reference_b().state_dict().items() if not k.endswith("num_batches_tracked")}
    _, report = convert_reference_state_dict(sd, ours)
    assert report.ok and len(report.defaulted) == sum(k.endswith("num_batches_tracked") for k in ours.state_dict())
    assert "num_batches_tracked" in report.format()


def test_round_trip_through_our_keys():
    ours = create_model("imagenet-b", **SMALL_B)
    ref_impl.randomize(ours, seed=3)
    ours_sd = ours.state_dict()
    as_reference = {ref_key: ours_sd[k] for ref_key, k in reference_key_map(ours).items()}
    assert set(as_reference) == set(small_reference_b().state_dict())  # our export is reference-shaped
    back, report = convert_reference_state_dict(as_reference, create_model("imagenet-b", **SMALL_B))
    assert report.ok and back.keys() == ours_sd.keys()
    assert all(torch.equal(back[k], ours_sd[k]) for k in ours_sd)


def test_cli_convert_writes_a_loadable_checkpoint(ref_b, tmp_path, capsys):
    ref, path = ref_b
    dst = tmp_path / "converted.pt"
    assert main(["convert", str(path), str(dst), *SMALL_B_ARGS]) == 0
    out = capsys.readouterr().out
    assert "tensors converted" in out and "best_prec1=74.018" in out
    model = load_model(dst).eval()
    assert model.config.name == "imagenet-b" and model.config.blocks == (1, 1, 2, 1)
    payload = torch.load(dst, weights_only=True)
    assert payload["reference_metadata"]["epoch"] == 128 and payload["converted_from"] == str(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # two float32 computations of the same logits (tests/floor.py)
        check(per_image_relative_error(model(x), ref(x)[0]), sensitivity(model, x).bound("logits", computations=2))
    # Saving the loaded model again reproduces the same weights (checkpoint round trip).
    save_model(model, tmp_path / "again.pt")
    again = load_model(tmp_path / "again.pt").state_dict()
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())


def test_cli_convert_writes_a_model_folder(ref_b, tmp_path, capsys):
    ref, path = ref_b
    dst = tmp_path / "imagenet-b"
    assert main(["convert", str(path), str(dst), *SMALL_B_ARGS]) == 0
    assert f"wrote {dst}/config.json and model.safetensors" in capsys.readouterr().out
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]
    model = load_model(dst).eval()
    assert model.config.data.crop_pct == 0.875
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # two float32 computations of the same logits (tests/floor.py)
        check(per_image_relative_error(model(x), ref(x)[0]), sensitivity(model, x).bound("logits", computations=2))


def _corrupt(path, tmp_path, edit):
    payload = torch.load(path, weights_only=True)
    edit(payload["state_dict"])
    bad = tmp_path / "bad.pth"
    torch.save(payload, bad)
    return bad


@pytest.mark.parametrize("edit, expected", [
    (lambda sd: sd.__setitem__("module.stack.0.bottleneck_block.99.weight", sd.pop("module.stack.0.bottleneck_block.7.weight")),
     ["1 missing", "stack.0.bottleneck_block.7.weight", "1 unexpected", "stack.0.bottleneck_block.99.weight"]),
    (lambda sd: sd.pop("module.linear.bias"), ["1 missing", "linear.bias"]),
    (lambda sd: sd.__setitem__("module.stack.1.bottleneck_block.2.weight", torch.zeros(6, 24, 3, 3)),
     ["1 with a wrong shape", "stack.1.bottleneck_block.2.weight: [6, 24, 3, 3] vs [24, 24, 3, 3]"]),
], ids=["renamed", "missing", "misshaped"])
def test_cli_reports_bad_keys_and_exits_nonzero(ref_b, tmp_path, capsys, edit, expected):
    bad = _corrupt(ref_b[1], tmp_path, edit)
    dst = tmp_path / "out.pt"
    assert main(["convert", str(bad), str(dst), *SMALL_B_ARGS]) != 0
    err = capsys.readouterr().err
    assert str(bad) in err
    for text in expected:
        assert text in err
    assert not dst.exists()


def test_wrong_configuration_lists_shape_mismatches(ref_b):
    with pytest.raises(ConversionError, match=r"linear.weight: \[10, 3072\] vs \[1000, 3072\]"):
        load_reference_checkpoint(ref_b[1], "imagenet-b", blocks=(1, 1, 2, 1), input_shape=(3, 64, 64))


def test_refuses_pickled_code(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, path)  # needs code to unpickle
    assert main(["convert", str(path), str(tmp_path / "out.pt")]) != 0
    err = capsys.readouterr().err
    assert "refusing to load" in err and str(path) in err


@pytest.mark.parametrize("payload, match", [
    ({"format": "irevnet", "state_dict": {}}, "already an irevnet checkpoint"),
    ({"state_dict": []}, "not a non-empty dict"),
    ([torch.zeros(1)], "expected a dict"),
])
def test_unusable_files_are_named_in_errors(tmp_path, payload, match):
    path = tmp_path / "x.pth"
    torch.save(payload, path)
    with pytest.raises(ConversionError, match=match):
        read_reference_state_dict(path)
    with pytest.raises(ConversionError, match="does not exist"):
        read_reference_state_dict(tmp_path / "nope.pth")


def test_converted_checkpoint_evaluates_like_the_reference(tmp_path, capsys):
    """convert -> eval --data imagefolder gives the reference model's accuracy and loss
    under the reference protocol (resize 256, centre crop 224, ImageNet mean/std)."""
    import json

    import numpy as np
    import torchvision.transforms as T
    from PIL import Image

    torch.manual_seed(0)
    ref = ref_impl.randomize(ref_impl.imagenet_b(blocks=(1, 1, 1, 1), num_classes=3), seed=1).eval()
    src = ref_impl.save_reference_checkpoint(ref, tmp_path / "ref.pth.tar")
    rng = np.random.default_rng(0)
    images, labels = [], []
    for label, cls in enumerate(("a", "b", "c")):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(2):
            img = Image.fromarray(rng.integers(0, 256, (300, 280, 3), dtype=np.uint8))
            img.save(tmp_path / "val" / cls / f"{i}.png")
            images.append(img)
            labels.append(label)
    dst = tmp_path / "converted.pt"
    assert main(["convert", str(src), str(dst), "--preset", "imagenet-b", "--model", "blocks=1,1,1,1",
                 "--model", "num_classes=3"]) == 0
    capsys.readouterr()
    assert main(["eval", str(dst), "--data", "imagefolder", "--data-dir", str(tmp_path / "val"),
                 "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)

    protocol = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                          T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    x = torch.stack([protocol(img) for img in images])
    y = torch.tensor(labels)
    with torch.no_grad():
        logits = ref(x)[0]
    # `eval` computes the same logits with our layers: per image within 2·λ·u·κ·‖z‖ of these
    # (tests/floor.py). Each top-1 margin exceeds twice that, so the same classes win; cross
    # entropy is 2-Lipschitz in an image's logits (its gradient has 1-norm <= 2), plus a few
    # roundings of its own.
    diff = sensitivity(load_model(dst).eval(), x).bound("logits", computations=2) * logits.norm(dim=1)
    top2 = logits.topk(2, dim=1).values
    assert bool((top2[:, 0] - top2[:, 1] > 2 * diff).all())
    assert result["images"] == 6
    assert result["top1"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    check(abs(result["loss"] - loss), 2 * diff.mean().item() + 16 * unit_roundoff(torch.float32) * (abs(loss) + logits.abs().max().item()), "loss")
