"""How many data-loader workers keep a GPU busy? Decode + augment throughput of the ImageNet pipeline.

Writes realistic JPEGs (default 500x375, quality 90, photo-like content: smooth shapes plus
texture, ~100 KB each, like ImageNet's average) into a temporary ImageFolder tree
(``train/`` and ``val/``), then measures, in one process with one thread (a loader worker),
how many images per second ``irevnet``'s own pipelines produce: decode (PIL) + the training
transform (random-resized crop 224, flip, colour jitter, to tensor, normalize) and decode +
the eval transform (resize 256, centre crop 224). Optionally it also times a real
``DataLoader`` with several workers. From the per-worker rate it prints how many workers a
given GPU training rate needs::

    python benchmarks/data_throughput.py                      # 560 img/s: one H200 on imagenet-b
    python benchmarks/data_throughput.py --gpu-img-s 560 2000 --loader-workers 1 2
    python benchmarks/data_throughput.py --decode-on cuda     # irevnet train --decode-on device

``--decode-on DEVICE`` also measures the device-decoding pipeline (``irevnet train --decode-on
device``): what a worker still does (read the file) per second, and batches of 64 decoded and
augmented on DEVICE (nvJPEG on CUDA), with the largest pixel difference from the worker
pipeline on the same items and augmentation draws (8-bit levels).

Nothing is downloaded; the images are deleted afterwards (unless ``--dir`` is given).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

from irevnet.config import get_preset
from irevnet.data import build_datasets

IMAGENET = get_preset("imagenet-b")  # its data config: random-resized crop 224 for training, 256/224 for eval


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like RGB image: a smooth colour field, a few soft shapes, and grain (JPEG-realistic sizes)."""
    low = rng.random((height // 25 + 2, width // 25 + 2, 3)) * 255
    img = Image.fromarray(low.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(4):
        cy, cx, r = rng.random() * height, rng.random() * width, 20 + rng.random() * min(width, height) / 3
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        arr[mask] = arr[mask] * 0.5 + rng.random(3) * 127
    arr += rng.normal(0, 16, arr.shape)  # sensor grain: keeps the JPEG from compressing to nothing
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_imagefolder(root: Path, *, images: int, classes: int, width: int, height: int, seed: int = 0) -> float:
    """``images`` JPEGs per split under ``root/{train,val}/<class>/``; returns the mean file size in KB."""
    rng = np.random.default_rng(seed)
    sizes = []
    for split in ("train", "val"):
        for i in range(images):
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{split}_{i:06d}.JPEG"
            _photo(rng, width, height).save(path, quality=90)
            sizes.append(path.stat().st_size)
    return float(np.mean(sizes)) / 1024


def per_worker_rate(dataset, n: int, repeats: int) -> float:
    """Images per second of ``dataset[i]`` in this process (one thread, like a loader worker); best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            dataset[i % len(dataset)]
        best = max(best, n / (time.perf_counter() - start))
    return best


def loader_rate(dataset, workers: int, batch_size: int, batches: int) -> float:
    """Images per second through a DataLoader with ``workers`` processes (after one warm-up batch)."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size * (batches + 1))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        seen += next(it)[0].shape[0]
    return seen / (time.perf_counter() - start)


def device_decode_rates(train, device: torch.device, repeats: int, batch_size: int = 64) -> None:
    """Print the worker's share (file reads) and the device's decode + augment rate for ``--decode-on device``."""
    from irevnet.data.transforms import denormalize, train_transform
    from irevnet.training.data_loading import seeded_rngs
    from irevnet.training.device_decode import DeviceDecoder, EncodedImages, collate_encoded

    encoded = EncodedImages(train)
    read_rate = per_worker_rate(encoded, len(encoded), repeats)
    config = IMAGENET
    decoder = DeviceDecoder(train_transform(config, augment="imagenet", tensor_input=True), device)
    batches = [collate_encoded([(*encoded[i], seed) for i in range(b, min(b + batch_size, len(encoded)))])
               for seed, b in enumerate(range(0, len(encoded) - batch_size + 1, batch_size))]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    decoder(*batches[0][0::2], batches[0][3])  # warm-up (nvJPEG handles, kernels)
    best = 0.0
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for images, _, seed, paths in batches:
            decoder(images, seed, paths)
        sync()
        best = max(best, len(batches) * batch_size / (time.perf_counter() - start))
    images, _, seed, paths = batches[0]
    x = decoder(images, seed, paths).cpu()
    with seeded_rngs(seed):  # the worker pipeline, same items, same draws
        ref = torch.stack([train[i][0] for i in range(batch_size)])
    levels = ((denormalize(x, config) - denormalize(ref, config)).abs() * 255).max().item()
    print(f"\n| --decode-on device ({device}) | img/s |\n|---|---:|")
    print(f"| worker: read files (per worker) | {read_rate:.0f} |")
    print(f"| {device}: decode + train transform, batch {batch_size} | {best:.0f} |")
    print(f"\nlargest difference from the worker pipeline on the same batch: {levels:.1f} levels of 255")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200, help="JPEGs per split (default 200)")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the JPEGs (default 500x375)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the images; the best is reported")
    p.add_argument("--gpu-img-s", type=float, nargs="+", default=[560.0],
                   help="GPU training rates (img/s per GPU) to size the workers for (default 560: imagenet-b, "
                   "bf16, batch 64 on one H200)")
    p.add_argument("--loader-workers", type=int, nargs="*", default=[],
                   help="also time a DataLoader with these numbers of workers (batch 64)")
    p.add_argument("--decode-on", default=None, metavar="DEVICE",
                   help="also time decoding + augmentation on this device (cuda, or cpu to try it here)")
    p.add_argument("--dir", default=None, help="write the images here and keep them (default: a temporary folder)")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)  # what each DataLoader worker runs with

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        t0 = time.perf_counter()
        kb = write_imagefolder(root, images=args.images, classes=args.classes, width=width, height=height)
        print(f"wrote {2 * args.images} JPEGs of {width}x{height} ({kb:.0f} KB on average) to {root} "
              f"in {time.perf_counter() - t0:.1f} s")
        splits = build_datasets("imagefolder", root, config=IMAGENET)
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            cpus = os.cpu_count()
        print(f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs available, torch "
              f"{torch.__version__}, Pillow {Image.__version__}; one process, one thread")
        rates = {}
        for name, data in (("train", splits.train), ("eval", splits.eval)):
            per_worker_rate(data, min(20, args.images), 1)  # warm-up (imports, caches)
            rates[name] = per_worker_rate(data, args.images, args.repeats)
        print("\n| pipeline | img/s per worker | ms per image |\n|---|---:|---:|")
        for name, rate in rates.items():
            print(f"| decode + {name} transform | {rate:.0f} | {1000 / rate:.2f} |")
        print("\n| GPU train img/s | workers for training | workers for evaluation at the same rate |\n|---:|---:|---:|")
        for gpu in args.gpu_img_s:
            print(f"| {gpu:.0f} | {math.ceil(gpu / rates['train'])} | {math.ceil(gpu / rates['eval'])} |")
        if args.loader_workers:
            print("\n| DataLoader workers | train img/s |\n|---:|---:|")
            for w in args.loader_workers:
                print(f"| {w} | {loader_rate(splits.train, w, 64, max(2, 2 * args.images // 64)):.0f} |")
        if args.decode_on:
            device_decode_rates(splits.train, torch.device(args.decode_on), args.repeats)
        print("\nEvery worker needs a CPU core of its own: with 8 GPUs per node, multiply the workers by 8.")


if __name__ == "__main__":
    main()
