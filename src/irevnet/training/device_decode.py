"""Decoding JPEGs on the training device (nvJPEG on CUDA) instead of in loader workers.

A loader worker decodes and augments ~130 ImageNet JPEGs per second (see
``benchmarks/data_throughput.py``), so a GPU training at 2,000 img/s needs 16 CPU cores of
workers. With ``decode_on="device"`` the workers only read files; the training process
decodes each batch in one call (``torchvision.io.decode_jpeg(..., device="cuda")``) and runs
the same augmentation on the device:

- The transform is the CPU pipeline's own (:func:`~irevnet.data.transforms.train_transform`
  with ``tensor_input=True``) and runs under the same per-batch seed, drawing the same random
  crops, flips and jitter in the same order as a worker would: a run resumes exactly, and a
  batch differs from the CPU path's only by interpolation rounding.
- Only plain JPEGs (RGB or grey, no EXIF rotation) go to the device; every other file (PNG,
  16-bit, CMYK, rotated photos) is decoded in the worker by the one decoding path,
  :func:`~irevnet.data.imagefolder.load_image`, so every image means what it means on CPU.
- Evaluation batches take the deterministic eval transform the same way.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from ..data.imagefolder import CorruptImageError, decode_image, decoding
from .data_loading import seeded_rngs

__all__ = ["DeviceDecodedLoader", "DeviceDecoder", "EncodedImages", "collate_encoded"]

_ORIENTATION = 0x0112  # the EXIF tag; 1 is upright
_BATCHED_DECODE = tuple(int(v) for v in torchvision.__version__.split(".")[:2]) >= (0, 20)  # lists since 0.20


def read_for_device(path: str) -> Tensor:
    """``path`` as a 1-D ``uint8`` tensor of its bytes when the device can decode it as is (a plain
    RGB or grey JPEG), else as the decoded ``(3, H, W)`` ``uint8`` image."""
    with open(path, "rb") as f:
        data = f.read()
    with decoding(path), Image.open(io.BytesIO(data)) as img:  # reads the header only
        if img.format == "JPEG" and img.mode in ("RGB", "L") and img.getexif().get(_ORIENTATION, 1) == 1:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return pil_to_tensor(decode_image(img))


class EncodedImages(Dataset[tuple[Tensor, int, str]]):
    """An ``ImageFolder``'s items as ``(image, label, path)`` with ``image`` from :func:`read_for_device`."""

    def __init__(self, folder: ImageFolder) -> None:
        self.samples, self.classes = folder.samples, folder.classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, str]:
        path, label = self.samples[index]
        return read_for_device(path), label, path


def collate_encoded(items: list[tuple[Any, ...]]) -> tuple[list[Tensor], Tensor, int | None, list[str]]:
    """``(images, labels, seed, paths)``: images stay a list (their sizes differ); ``seed`` is the
    batch's augmentation seed when the items carry one (training), else ``None``."""
    columns = list(zip(*items, strict=True))
    seed = columns[3][0] if len(columns) > 3 else None
    return list(columns[0]), torch.tensor(columns[1], dtype=torch.long), seed, list(columns[2])


def _decode_jpegs(data: list[Tensor], device: torch.device) -> list[Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec; decode_jpeg still works
        warnings.simplefilter("ignore", UserWarning)
        if _BATCHED_DECODE:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        return [decode_jpeg(d, mode=ImageReadMode.RGB, device=device) for d in data]


class DeviceDecoder:
    """``(images, seed, paths)`` of :func:`collate_encoded` -> ``(B, C, H, W)`` float32 model inputs on ``device``.

    ``transform`` maps one ``uint8`` ``(3, h, w)`` tensor on ``device`` to one model input; it
    runs under :func:`~irevnet.training.data_loading.seeded_rngs` ``(seed)`` when a seed is given.
    """

    def __init__(self, transform: Callable[[Tensor], Tensor], device: torch.device | str) -> None:
        self.transform, self.device = transform, torch.device(device)

    def decode(self, images: list[Tensor], paths: list[str]) -> list[Tensor]:
        """The batch's images as ``uint8`` tensors on the device, in order."""
        encoded = [i for i, t in enumerate(images) if t.dim() == 1]
        out = [t.to(self.device, non_blocking=True) if t.dim() == 3 else t for t in images]
        if encoded:
            try:
                decoded = _decode_jpegs([images[i] for i in encoded], self.device)
            except RuntimeError:
                decoded = []
                for i in encoded:  # find the file that failed: a batch error does not name it
                    try:
                        decoded += _decode_jpegs([images[i]], self.device)
                    except RuntimeError as e:
                        raise CorruptImageError(f"cannot decode image {paths[i]!r} on {self.device}: {e}") from None
            for i, img in zip(encoded, decoded, strict=True):
                out[i] = img
        return out

    def __call__(self, images: list[Tensor], seed: int | None, paths: list[str]) -> Tensor:
        decoded = self.decode(images, paths)
        # With a seed: the draws a worker makes for this batch on the CPU path.
        with seeded_rngs(seed) if seed is not None else contextlib.nullcontext():
            return torch.stack([self.transform(img) for img in decoded])


class DeviceDecodedLoader:
    """Iterates a loader of :func:`collate_encoded` batches and yields ``(x, y)`` decoded by ``decoder``."""

    def __init__(self, loader: DataLoader[Any], decoder: DeviceDecoder) -> None:
        self.loader, self.decoder = loader, decoder

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels, seed, paths in self.loader:
            yield self.decoder(images, seed, paths), labels
