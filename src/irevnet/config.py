"""Model configuration and the registry of named presets (the paper's architectures)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IRevNetConfig", "register_preset", "get_preset", "list_presets"]


@dataclass(frozen=True)
class IRevNetConfig:
    """Everything needed to build an :class:`~irevnet.model.IRevNet`.

    ``blocks``, ``strides`` and ``channels`` are per stage: number of blocks, stride of
    the stage's first block, output channels per half. ``init_block_size`` is the block
    size of the initial ψ (0 or 1: none). ``input_shape`` is (C, H, W).
    """

    blocks: tuple[int, ...]
    strides: tuple[int, ...]
    channels: tuple[int, ...]
    input_shape: tuple[int, int, int]
    num_classes: int
    init_block_size: int = 2
    dropout: float = 0.0
    mult: int = 4
    name: str = "custom"
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        for key in ("blocks", "strides", "channels", "input_shape"):
            object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))
        if not (len(self.blocks) == len(self.strides) == len(self.channels)) or not self.blocks:
            raise ValueError(
                "blocks, strides and channels must be non-empty and of equal length (one entry per stage), "
                f"got {len(self.blocks)}, {len(self.strides)}, {len(self.channels)}"
            )
        if any(b < 1 for b in self.blocks):
            raise ValueError(f"every stage needs at least one block, got blocks={self.blocks}")
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {self.input_shape}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.mult < 1:
            raise ValueError(f"mult must be >= 1, got {self.mult}")

    @property
    def downsampling(self) -> int:
        """Total spatial reduction factor of the invertible part."""
        return max(self.init_block_size, 1) * 2 ** sum(1 for s in self.strides if s == 2)

    def replace(self, **overrides: Any) -> "IRevNetConfig":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown model option(s): {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IRevNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_PRESETS: dict[str, IRevNetConfig] = {}


def register_preset(config: IRevNetConfig) -> IRevNetConfig:
    _PRESETS[config.name] = config
    return config


def get_preset(name: str) -> IRevNetConfig:
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(list_presets())}") from None


def list_presets() -> list[str]:
    """Names of the registered model configurations."""
    return sorted(_PRESETS)


register_preset(IRevNetConfig(
    name="digits",
    description="small injective i-RevNet for scikit-learn's 8x8 digits: ψ to 4x4, zero-padded to 64 channels",
    blocks=(4, 4), strides=(1, 2), channels=(32, 128),
    input_shape=(1, 8, 8), num_classes=10, init_block_size=2,
))
register_preset(IRevNetConfig(
    name="digits-b",
    description="small bijective i-RevNet for scikit-learn's 8x8 digits: ψ to 4x4x4, no zero padding, "
    "Φ of 16x2x2 = 64 entries (as many as the image), for exact densities and metamers",
    blocks=(2, 6), strides=(1, 2), channels=(2, 8),
    input_shape=(1, 8, 8), num_classes=10, init_block_size=2, mult=1,
))
register_preset(IRevNetConfig(
    name="cifar10",
    description="reference CIFAR i-RevNet, injective (3 input channels zero-padded to 32)",
    blocks=(18, 18, 18), strides=(1, 2, 2), channels=(16, 64, 256),
    input_shape=(3, 32, 32), num_classes=10, init_block_size=0,
))
register_preset(_PRESETS["cifar10"].replace(
    name="cifar100", num_classes=100,
    description="reference CIFAR i-RevNet with 100 classes",
))
register_preset(IRevNetConfig(
    name="imagenet-a",
    description="injective ImageNet i-RevNet (a): ψ twice (48 ch at 56x56), zero-padded to 96, "
    "down-sampling at blocks 5, 9 and 15 of 18",
    blocks=(4, 4, 6, 4), strides=(1, 2, 2, 2), channels=(48, 192, 768, 3072),
    input_shape=(3, 224, 224), num_classes=1000, init_block_size=4,
))
register_preset(IRevNetConfig(
    name="imagenet-b",
    description="bijective ImageNet i-RevNet (b), i-RevNet-301, the authors' checkpoint",
    blocks=(6, 16, 72, 6), strides=(2, 2, 2, 2), channels=(24, 96, 384, 1536),
    input_shape=(3, 224, 224), num_classes=1000, init_block_size=2,
))
