"""Decoding on the training device (``--decode-on device``), checked on CPU: the same images, the
same augmentation draws, the same data order as the worker pipeline, and every non-plain file
decoded by the one decoding path."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from irevnet.cli.main import main
from irevnet.config import get_preset
from irevnet.data import build_datasets
from irevnet.data.imagefolder import CorruptImageError, load_image
from irevnet.data.transforms import denormalize, eval_transform, train_transform
from irevnet.training.data_loading import ResumableSampler, seeded_rngs, train_loader
from irevnet.training.device_decode import (DeviceDecodedLoader, DeviceDecoder, EncodedImages, collate_encoded,
                                            read_for_device)

CONFIG = get_preset("imagenet-b").replace(input_shape=(3, 32, 32))
# Each step that produces uint8 pixels (resize; brightness, contrast, saturation) rounds on the
# PIL path and truncates on the tensor path: at most one level apart per step.
_UINT8_STEPS = {"imagenet": 4, "eval": 1}


def _photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth random RGB image (bicubic upsampling of noise), so crops differ visibly."""
    w, h = size
    low = np.random.default_rng(seed).random((h // 10 + 2, w // 10 + 2, 3)) * 255
    return Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BICUBIC)


def _jpeg(path: Path, img: Image.Image, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90, **save)
    return path


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in 8-bit levels, in pixel space."""
    return (denormalize(a, CONFIG) - denormalize(b, CONFIG)).abs() * 255


@pytest.mark.parametrize("size", [(75, 50), (50, 61)])
def test_tensor_pipeline_draws_the_same_augmentation_as_the_pil_pipeline(size):
    img = _photo(0, size)
    cpu, device = (train_transform(CONFIG, augment="imagenet", tensor_input=t) for t in (False, True))
    for seed in range(4):
        with seeded_rngs(seed):
            a = cpu(img)
        with seeded_rngs(seed):
            b = device(pil_to_tensor(img))
        with seeded_rngs(seed + 100):
            other = device(pil_to_tensor(img))
        diff = _levels(a, b)
        assert diff.max() <= _UINT8_STEPS["imagenet"] + 1e-3 and diff.mean() < 1
        assert _levels(a, other).mean() > 10  # a different draw is a visibly different image
    e = _levels(eval_transform(CONFIG)(img), eval_transform(CONFIG, tensor_input=True)(pil_to_tensor(img)))
    assert e.max() <= _UINT8_STEPS["eval"] + 1e-3


def test_only_plain_jpegs_go_to_the_device(tmp_path):
    plain = _jpeg(tmp_path / "plain.jpg", _photo(1, (40, 30)))
    grey = _jpeg(tmp_path / "grey.jpg", _photo(2, (40, 30)).convert("L"))
    for path in (plain, grey):
        data = read_for_device(str(path))
        assert data.dim() == 1 and data.numpy().tobytes() == path.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: must be turned upright, which only the CPU path does
    rotated = _jpeg(tmp_path / "rotated.jpg", _photo(3, (40, 30)), exif=exif.tobytes())
    cmyk = _jpeg(tmp_path / "cmyk.jpg", _photo(4, (40, 30)).convert("CMYK"))
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((30, 40), 30000, dtype=np.uint16)).save(deep)
    for path in (rotated, cmyk, deep):
        decoded = read_for_device(str(path))
        assert torch.equal(decoded, pil_to_tensor(load_image(str(path))))
    assert read_for_device(str(rotated)).shape == (3, 40, 30)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match=r"bad\.jpg"):
        read_for_device(str(bad))


def test_decoder_gives_the_worker_pipelines_images(tmp_path):
    paths = [str(_jpeg(tmp_path / f"{i}.jpg", _photo(i, (60 + 7 * i, 45)))) for i in range(3)]
    paths.append(str(tmp_path / "3.png"))
    _photo(3, (33, 50)).save(paths[-1])
    batch = collate_encoded([(read_for_device(p), i % 2, p) for i, p in enumerate(paths)])
    assert batch[2] is None and batch[1].tolist() == [0, 1, 0, 1]
    decoded = DeviceDecoder(lambda t: t, "cpu").decode(batch[0], batch[3])
    for img, path in zip(decoded, paths):  # libjpeg-turbo on both paths: identical pixels
        assert torch.equal(img, pil_to_tensor(load_image(path)))
    x = DeviceDecoder(eval_transform(CONFIG, tensor_input=True), "cpu")(*batch[::2], batch[3])
    expected = torch.stack([eval_transform(CONFIG)(load_image(p)) for p in paths])
    assert x.shape == (4, 3, 32, 32) and _levels(x, expected).max() <= _UINT8_STEPS["eval"] + 1e-3


def test_undecodable_jpeg_in_a_batch_is_named(tmp_path):
    good = _jpeg(tmp_path / "good.jpg", _photo(0, (40, 30)))
    data = bytearray(good.read_bytes())
    dht = data.index(b"\xff\xc4")  # PIL's header parse skips the Huffman table; the decoder rejects it
    data[dht + 5:dht + 21] = b"\xff" * 16
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(bytes(data))
    images = [read_for_device(str(good)), read_for_device(str(broken))]
    assert images[1].dim() == 1
    with pytest.raises(CorruptImageError, match=r"broken\.jpg"):
        DeviceDecoder(lambda t: t, "cpu").decode(images, [str(good), str(broken)])


def _tree(root: Path, per_class: int = 6) -> None:
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            for i in range(per_class):
                img = _photo(100 * c + i, (48 + 5 * i, 40 + 3 * c))
                if i == 0:  # one PNG per class: decoded by the workers, the rest by the device
                    (root / split / name).mkdir(parents=True)
                    img.save(root / split / name / "0.png")
                else:
                    _jpeg(root / split / name / f"{i}.jpg", img)


def test_device_batches_match_the_workers_and_resume_mid_epoch(tmp_path):
    _tree(tmp_path)
    data = build_datasets("imagefolder", tmp_path, config=CONFIG)
    sampler = ResumableSampler(data.train, seed=3)
    decoder = DeviceDecoder(train_transform(CONFIG, augment="imagenet", tensor_input=True), "cpu")

    def device_batches(workers: int) -> list:
        return list(DeviceDecodedLoader(train_loader(EncodedImages(data.train), sampler, batch_size=4,
                                                     workers=workers, pin_memory=False,
                                                     collate_fn=collate_encoded, defer_seeding=True), decoder))

    sampler.set_epoch(2)
    cpu = list(train_loader(data.train, sampler, batch_size=4, workers=0, pin_memory=False))
    before = torch.get_rng_state()
    dev = device_batches(0)
    assert torch.equal(torch.get_rng_state(), before)  # the training RNG (dropout) is untouched
    assert len(dev) == len(cpu) == 3
    for (xd, yd), (xc, yc) in zip(dev, cpu):  # the same items with the same augmentation draws
        assert torch.equal(yd, yc) and _levels(xd, xc).max() <= _UINT8_STEPS["imagenet"] + 1e-3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(device_batches(1), dev))  # workers do not matter
    sampler.set_epoch(2, start=4)  # resume after the first batch
    assert all(torch.equal(a[0], b[0]) for a, b in zip(device_batches(0), dev[1:]))


def test_train_decode_on_device_cli(tmp_path, capsys):
    _tree(tmp_path / "data", per_class=3)
    args = ["train", "--preset", "imagenet-b", "--data", "imagefolder", "--data-dir", str(tmp_path / "data"),
            "--model", "input_shape=3,32,32", "--model", "blocks=1,1,1,1", "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--no-progress", "--recon-threshold", "off"]
    assert main([*args, "--out", str(tmp_path / "run"), "--decode-on", "device"]) == 0
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["samples"] == 6 and np.isfinite(record["loss"]) and np.isfinite(record["eval_loss"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["decode_on"] == "device"
    capsys.readouterr()
    assert main(["train", "--preset", "digits", "--data", "digits", "--out", str(tmp_path / "d"),
                 "--decode-on", "device", "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "imagefolder" in err and len(err.strip().splitlines()) == 1
