"""Image decoding (`irevnet.data.imagefolder.load_image`, the one path of invert, ImageFolder and
analyses): every PIL mode a user may have maps to the pixel values the file shows, in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from irevnet.data.imagefolder import decode_image, load_image

H, W = 8, 16
# A grey ramp over the full range, black to white: wrong scaling shows up as a wrong mean or contrast.
RAMP = np.tile(np.linspace(0.0, 1.0, W), (H, 1))
#: 8-bit quantization (what every decoded image has), plus JPEG's loss where used.
Q = 0.5 / 255 + 1e-9


def _decoded(path) -> np.ndarray:
    img = load_image(str(path))
    assert img.mode == "RGB"
    return np.asarray(img, dtype=np.float64) / 255


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


@pytest.mark.parametrize("mode, suffix, encode", [
    ("L", ".png", lambda v: Image.fromarray(np.round(v * 255).astype(np.uint8))),
    ("I;16", ".png", lambda v: Image.fromarray(np.round(v * 65535).astype(np.uint16))),
    ("I;16", ".tif", lambda v: Image.fromarray(np.round(v * 65535).astype(np.uint16))),
    ("I", ".tif", lambda v: Image.fromarray(np.round(v * 65535).astype(np.int32))),
    ("F", ".tif", lambda v: Image.fromarray(v.astype(np.float32))),
    ("1", ".png", lambda v: Image.fromarray(v >= 0.5)),
    ("RGB", ".png", lambda v: Image.fromarray(np.round(_grey(v) * 255).astype(np.uint8))),
    ("P", ".png", lambda v: Image.fromarray(np.round(_grey(v) * 255).astype(np.uint8)).quantize(256)),
    ("CMYK", ".tif", lambda v: Image.fromarray(np.round(_grey(v) * 255).astype(np.uint8)).convert("CMYK")),
    ("LA", ".png", lambda v: Image.fromarray(np.round(v * 255).astype(np.uint8)).convert("LA")),
    ("RGBA", ".png", lambda v: Image.fromarray(np.round(_grey(v) * 255).astype(np.uint8)).convert("RGBA")),
])
def test_every_mode_decodes_to_the_values_the_file_shows(tmp_path, mode, suffix, encode):
    img = encode(RAMP)
    assert img.mode == mode
    path = tmp_path / f"ramp{suffix}"
    img.save(path)
    expected = _grey((RAMP >= 0.5).astype(float) if mode == "1" else RAMP)
    got = _decoded(path)
    assert got.shape == (H, W, 3)
    tol = 2 / 255 if mode == "P" else Q  # a 256-colour palette may merge neighbouring greys
    np.testing.assert_allclose(got, expected, atol=tol)


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 255           # red ...
    rgba[..., 3] = np.round(RAMP * 255).astype(np.uint8)  # ... from transparent (left) to opaque (right)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = _decoded(tmp_path / "a.png")
    np.testing.assert_allclose(got[..., 0], 1.0, atol=Q)
    np.testing.assert_allclose(got[..., 1], 1.0 - RAMP, atol=1.5 / 255)  # white shows through where transparent
    np.testing.assert_allclose(got[..., 2], 1.0 - RAMP, atol=1.5 / 255)


def test_high_values_of_32_bit_integer_images_use_the_full_int32_range():
    a = np.round(RAMP * (2**31 - 1)).astype(np.int32)
    got = np.asarray(decode_image(Image.fromarray(a)), dtype=np.float64) / 255
    np.testing.assert_allclose(got, _grey(RAMP), atol=Q)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((H, W, 3), np.uint8)
    stored[:, : W // 4] = 255  # a white band on the left of the stored pixels
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    img.save(tmp_path / "photo.jpg", exif=exif, quality=100)
    got = _decoded(tmp_path / "photo.jpg")
    assert got.shape == (W, H, 3)  # displayed upright: portrait
    expected = np.rot90(stored, k=-1) / 255  # the left band ends up on top
    assert np.abs(got - expected).mean() < 0.02
    assert got[: W // 4].mean() > 0.95 and got[W // 4 + 1:].mean() < 0.05


def test_invert_reads_a_16_bit_image_at_its_real_brightness(tmp_path, capsys):
    """The issue's example: a dark 16-bit PNG must not come out (almost) white."""
    import json

    from irevnet import create_model, save_model
    from irevnet.cli.main import main

    save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    dark = Image.fromarray(np.round(RAMP * 0.25 * 65535).astype(np.uint16))  # 0 .. 25% grey
    dark.save(tmp_path / "dark16.png")
    Image.fromarray(np.round(RAMP * 0.25 * 255).astype(np.uint8)).save(tmp_path / "dark8.png")
    out = tmp_path / "inv.png"
    assert main(["invert", str(tmp_path / "m.pt"), str(tmp_path / "dark16.png"), str(tmp_path / "dark8.png"),
                 "--out", str(out)]) == 0
    a16, a8 = (np.asarray(load_image(str(tmp_path / f)), dtype=np.float64) for f in ("dark16.png", "dark8.png"))
    np.testing.assert_allclose(a16, a8, atol=1)
    assert a16.mean() / 255 < 0.2
    report = json.loads(out.with_suffix(".json").read_text())
    assert [i["path"] for i in report["images"]] == [str(tmp_path / "dark16.png"), str(tmp_path / "dark8.png")]
