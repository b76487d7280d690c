"""`irevnet invert` on image files, evaluation preprocessing, and torch.export of Φ and Φ⁻¹."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import reference_impl as ref_impl
from floor import check, image_sensitivity, per_image_relative_error, sensitivity
from irevnet import create_model, load_model, save_model
from irevnet.cli.main import main
from irevnet.config import get_preset
from irevnet.data.transforms import denormalize, eval_transform, resize_size
from irevnet.export import ONNX_TOLERANCE, load_exported
from trained import briefly_trained_cifar


def synthetic_images(folder, sizes=((96, 128), (120, 90), (64, 64))) -> list[str]:
    """Smooth test pictures of various sizes and aspect ratios: gradients, a disc, a sinusoid."""
    paths = []
    for k, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
        disc = ((yy - 0.5) ** 2 + (xx - 0.4) ** 2 < 0.08).astype(float)
        channels = [xx, yy, disc] if k % 2 == 0 else [0.5 + 0.5 * np.sin(8 * xx + 3 * k), disc, 1 - yy]
        rgb = (np.stack(channels, axis=-1) * 255).round().astype(np.uint8)
        path = folder / f"synthetic{k}.png"
        Image.fromarray(rgb).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def small_b_checkpoint(tmp_path):
    """A random imagenet-b-layout model at 64x64 with non-trivial BN statistics, saved as irevnet."""
    model = ref_impl.randomize(create_model("imagenet-b", blocks=(1, 1, 2, 1), input_shape=(3, 64, 64)))
    return save_model(model, tmp_path / "small-b.pt")


def test_imagenet_preprocessing_is_the_reference_protocol():
    cfg = get_preset("imagenet-b")
    assert resize_size(cfg) == 256
    assert cfg.data_config["mean"] == (0.485, 0.456, 0.406) and cfg.data_config["std"] == (0.229, 0.224, 0.225)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    x = eval_transform(cfg)(img)
    assert x.shape == (3, 224, 224)
    # Undoing the normalization gives back the resized, centre-cropped pixels in [0, 1].
    resized = np.asarray(img.resize((341, 256), Image.BILINEAR), dtype=np.float32) / 255  # short side 256
    top, left = (256 - 224) // 2, (341 - 224) // 2
    crop = torch.from_numpy(resized[top:top + 224, left:left + 224]).permute(2, 0, 1)
    torch.testing.assert_close(denormalize(x, cfg), crop, atol=2 / 255, rtol=0)


@pytest.mark.parametrize("preset, shape, mean", [
    ("cifar10", (3, 32, 32), (0.4914, 0.4822, 0.4465)),
    ("cifar100", (3, 32, 32), (0.5071, 0.4865, 0.4409)),
    ("digits", (1, 8, 8), (0.0,)),
])
def test_other_presets_resize_to_their_input(tmp_path, preset, shape, mean):
    cfg = get_preset(preset)
    assert cfg.data_config["mean"] == mean
    x = eval_transform(cfg)(Image.open(synthetic_images(tmp_path)[0]))
    assert x.shape == shape
    # Pixels in [0, 1] through (p - mean) / std and back: four roundings of numbers <= 1 / std
    # times std (Higham's model, elementwise, no sums): a few u = 6e-8 each, well within 1e-6.
    assert -1e-6 <= denormalize(x, cfg).min() and denormalize(x, cfg).max() <= 1 + 1e-6


def test_small_imagenet_uses_the_same_resize_ratio():
    cfg = get_preset("imagenet-b").replace(input_shape=(3, 64, 64))
    assert resize_size(cfg) == 73 and cfg.data_config["mean"] == (0.485, 0.456, 0.406)


@pytest.mark.numerics
def test_cli_invert_writes_grid_and_errors(small_b_checkpoint, tmp_path, capsys):
    images = synthetic_images(tmp_path)
    out = tmp_path / "figs" / "inverted.png"
    assert main(["invert", str(small_b_checkpoint), *images, "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["path"] for r in report["images"]] == images
    kappa = image_sensitivity(load_model(small_b_checkpoint), images)
    check(torch.tensor([r["relative_error"] for r in report["images"]]), kappa.bound(), "invert")
    assert all(r["max_abs_error"] > 0 and r["floor_relative_error"] > 0 for r in report["images"])
    printed = capsys.readouterr().out
    assert all(p in printed for p in images) and "max abs error" in printed and "conditioning floor" in printed


@pytest.mark.numerics
def test_cli_invert_float64_is_exact_where_float32_is_not(tmp_path, capsys):
    ckpt = save_model(briefly_trained_cifar().eval(), tmp_path / "trained.pt")
    images = synthetic_images(tmp_path)
    reports = {}
    for flag in ([], ["--float64"]):
        out = tmp_path / f"inverted{len(flag)}.png"
        assert main(["invert", str(ckpt), *images, "--out", str(out), *flag]) == 0
        reports[bool(flag)] = json.loads(out.with_suffix(".json").read_text())
    assert reports[False]["dtype"] == "float32" and reports[True]["dtype"] == "float64"
    assert all(r["floor_relative_error"] is None for r in reports[True]["images"])
    kappa = image_sensitivity(load_model(ckpt), images)
    for dtype, flag in ((torch.float32, False), (torch.float64, True)):
        check(torch.tensor([r["relative_error"] for r in reports[flag]["images"]]), kappa.bound(dtype=dtype), str(dtype))
    # float32 cannot come near float64: the rounding model puts them 2^29 = 5e8 apart.
    assert min(r["relative_error"] for r in reports[False]["images"]) > 1e3 * max(
        r["relative_error"] for r in reports[True]["images"])


@pytest.mark.slow
def test_cli_invert_interpolation_strip(small_b_checkpoint, tmp_path):
    a, b = synthetic_images(tmp_path)[:2]
    out = tmp_path / "strip.png"
    assert main(["invert", str(small_b_checkpoint), "--interpolate", a, b, "--steps", "5", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 2 * Image.open(out).size[1]  # a horizontal strip
    report = json.loads(out.with_suffix(".json").read_text())
    assert (report["a"], report["b"], report["t"]) == (a, b, [1.0, 0.75, 0.5, 0.25, 0.0])
    gap = report["mean_abs_difference_from_pixel_path"]
    assert len(gap) == 5 and max(gap[0], gap[-1]) <= report["endpoint_max_abs_error"] < max(gap[1:-1])
    # The ends of the path are Φ⁻¹(Φ(A)) and Φ⁻¹(Φ(B)), the very tensors `invert A B` reconstructs; its
    # errors are rounded once in float64, these in float32 (normalization undone, then the difference of
    # pixel values below 2): at most 3 float32 roundings of 2^-23 apart.
    assert main(["invert", str(small_b_checkpoint), a, b, "--out", str(tmp_path / "rec.png")]) == 0
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert report["endpoint_max_abs_error"] == pytest.approx(max(r["max_abs_error"] for r in rec["images"]),
                                                             rel=0, abs=3 * 2**-23)


@pytest.mark.parametrize("extra, message", [
    ([], "either IMAGE files"),
    (["missing.png"], "'missing.png' does not exist"),
    (["garbage.png"], "cannot decode image"),
])
def test_cli_invert_errors(small_b_checkpoint, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.png").write_bytes(b"not a png")
    assert main(["invert", str(small_b_checkpoint), *extra, "--out", "x.png"]) != 0
    assert message in capsys.readouterr().err


@pytest.mark.numerics
def test_export_forward_and_inverse_match_eager(tmp_path):
    # Injective layout: the exported inverse must also drop the zero-padded channels.
    model = ref_impl.randomize(create_model("cifar10", blocks=(1, 1, 1)), seed=2)
    ckpt = save_model(model, tmp_path / "cifar.pt")
    dst = tmp_path / "exported"
    assert main(["export", str(ckpt), str(dst)]) == 0
    meta = json.loads((dst / "meta.json").read_text())
    assert meta["input_shape"] == [3, 32, 32] and meta["phi_shape"] == [512, 8, 8]
    forward, inverse = load_exported(dst)
    eager = load_model(ckpt).eval()
    x = torch.randn(3, 3, 32, 32)  # a batch size other than the one traced
    # Two float32 computations of Φ, the logits and Φ⁻¹∘Φ (exported and eager): each within its
    # bound of the exact value, so within twice the bound of each other (tests/floor.py).
    kappa = sensitivity(eager, x)
    with torch.no_grad():
        logits, phi = forward(x)
        check(per_image_relative_error(phi, eager.forward_features(x)), kappa.bound("forward", computations=2), "phi")
        check(per_image_relative_error(logits, eager(x)), kappa.bound("logits", computations=2), "logits")
        check(per_image_relative_error(inverse(phi), eager.inverse(phi)), kappa.bound(computations=2), "inverse")
        check(per_image_relative_error(inverse(phi), x), kappa.bound(), "round trip")
    with pytest.raises(FileNotFoundError, match="not an irevnet export folder"):
        load_exported(tmp_path)


def _onnx_exporter_available() -> bool:
    import inspect
    from importlib.util import find_spec

    have = all(find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
    return have and "dynamo" in inspect.signature(torch.onnx.export).parameters


@pytest.mark.slow
@pytest.mark.skipif(not _onnx_exporter_available(), reason="needs irevnet[onnx] and PyTorch's dynamo ONNX exporter")
@pytest.mark.parametrize("preset, overrides", [
    ("cifar10", dict(blocks=(1, 1, 1))),  # injective: the inverse drops the zero-padded channels
    ("imagenet-b", dict(blocks=(1, 1, 2, 1), input_shape=(3, 64, 64))),  # bijective, ψ first
])
def test_onnx_export_matches_eager_in_onnxruntime(tmp_path, capsys, preset, overrides):
    import onnxruntime

    model = ref_impl.randomize(create_model(preset, **overrides), seed=3).eval()
    folder = model.save_pretrained(tmp_path / "model")  # export reads model folders too
    dst = tmp_path / "onnx"
    assert main(["export", str(folder), str(dst), "--format", "onnx"]) == 0
    assert "forward.onnx, inverse.onnx and meta.json" in capsys.readouterr().out
    assert sorted(p.name for p in dst.iterdir()) == ["forward.onnx", "inverse.onnx", "meta.json"]
    meta = json.loads((dst / "meta.json").read_text())
    # The export checked onnxruntime against eager itself, with a fixed tolerance (measured errors
    # ~4e-7; the rounding model's bounds below reach 2.5e-5 for these models).
    assert meta["program_format"] == "onnx" and max(meta["onnx_relative_errors"].values()) <= ONNX_TOLERANCE
    # Independently: batch size 1 (traced with 2), against the eager model; onnxruntime's
    # kernels are another float32 computation of the same layers (tests/floor.py).
    x = torch.randn(1, *model.input_shape)
    kappa = sensitivity(model, x)
    bounds = [kappa.bound("logits", computations=2), kappa.bound("forward", computations=2),
              kappa.bound(computations=2), kappa.bound()]
    forward = onnxruntime.InferenceSession(str(dst / "forward.onnx"), providers=["CPUExecutionProvider"])
    inverse = onnxruntime.InferenceSession(str(dst / "inverse.onnx"), providers=["CPUExecutionProvider"])
    logits, phi = (torch.from_numpy(a) for a in forward.run(None, {"x": x.numpy()}))
    x_rec = torch.from_numpy(inverse.run(None, {"phi": phi.numpy()})[0])
    with torch.no_grad():
        eager_phi = model.forward_features(x)
        pairs = ((logits, model(x)), (phi, eager_phi), (x_rec, model.inverse(phi)), (x_rec, x))
        for (got, want), bound, what in zip(pairs, bounds, ("logits", "phi", "inverse", "round trip")):
            check(per_image_relative_error(got, want), bound, what)


def test_onnx_export_without_the_extra_names_it(tmp_path, capsys, monkeypatch):
    ckpt = save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert main(["export", str(ckpt), str(tmp_path / "out"), "--format", "onnx"]) == 2
    assert "pip install 'irevnet[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written
