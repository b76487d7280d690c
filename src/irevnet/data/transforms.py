"""The paper's input pipelines: CIFAR (crop + flip) and ImageNet (random-resized crop + jitter).

Every transform maps a PIL image to a float32 tensor ``(3, H, W)`` normalized per channel
with the data set's mean and standard deviation.
"""

from __future__ import annotations

from torchvision import transforms as T

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "cifar_transform", "imagenet_transform",
]

Stats = tuple[float, float, float]

# Per-channel statistics of the training sets (the values the reference code uses).
CIFAR10_MEAN: Stats = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: Stats = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN: Stats = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: Stats = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)


def cifar_transform(*, train: bool, mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD) -> T.Compose:
    """32x32 pipeline: train adds a random 32x32 crop of the 4-pixel zero-padded image and a flip."""
    augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    return T.Compose([*augment, T.ToTensor(), T.Normalize(mean, std)])


def imagenet_transform(*, train: bool, size: int = 224, resize: int = 256) -> T.Compose:
    """ImageNet pipeline: train = random-resized crop ``size``, flip, colour jitter (0.4 each);
    eval = resize the short side to ``resize``, centre crop ``size`` (the checkpoint's protocol)."""
    if train:
        head = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)]
    else:
        head = [T.Resize(resize), T.CenterCrop(size)]
    return T.Compose([*head, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
