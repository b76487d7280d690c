"""Model configuration and the registry of named presets (the paper's architectures)."""

from __future__ import annotations

import dataclasses
import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["BlockPlan", "DataConfig", "IRevNetConfig", "get_preset", "list_presets", "register_preset"]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
GLOBAL_POOLS = ("avg", "")  # timm's names: global average pooling, none
# Per-channel statistics of the training sets (the values the reference code uses).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """How images become model inputs: the one definition of a model's preprocessing.

    The fields are timm's ``pretrained_cfg`` fields (the input size is the model's
    ``input_shape``): evaluation resizes the short side to ``floor(size / crop_pct)`` with
    ``interpolation``, centre-crops ``size``, scales pixels to [0, 1] and normalizes with
    ``(x - mean) / std`` per channel. ``mean``/``std`` ``None``: inputs are plain [0, 1]
    pixels (mean 0, std 1 for any number of channels). Every pipeline derives from it:
    :mod:`irevnet.data.transforms` (evaluation, training, ``irevnet invert``/``analyze``),
    export metadata and timm's ``resolve_model_data_config``.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("data config: give both mean and std, or neither (plain [0, 1] pixels)")
        if self.mean is not None and self.std is not None:
            object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
            object.__setattr__(self, "std", tuple(float(v) for v in self.std))
            if len(self.mean) != len(self.std) or not self.mean:
                raise ValueError(
                    f"data config: mean and std need one entry per channel, got {self.mean} and {self.std}"
                )
            if any(s <= 0 for s in self.std):
                raise ValueError(f"data config: std must be positive, got {self.std}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"data config: crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"data config: interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        return cls(**_checked_keys(cls, data, "data config"))


def did_you_mean(name: str, names: Sequence[str]) -> str:
    """``"did you mean 'x'?"`` for the closest of ``names`` to the mistyped ``name``
    (``difflib``'s similarity, at least 0.6), or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(names), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class BlockPlan:
    """One invertible block as a configuration lays it out (see :attr:`IRevNetConfig.plan`).

    ``in_channels``: channels of the incoming pair, both halves; ``out_channels``: channels
    of each outgoing half; ``pad``: zero channels a stride-1 block appends to reach
    ``2 * out_channels`` (``> 0``: the block is injective; ψ blocks, stride 2, pad none);
    ``reduction``: the spatial down-sampling of its output relative to the network's input.
    The merged output of block ``index`` is ``(channels, H / reduction, W / reduction)``.
    """

    index: int
    stage: int
    in_channels: int
    out_channels: int
    stride: int
    reduction: int
    stage_end: bool

    @property
    def pad(self) -> int:
        return 0 if self.stride == 2 else 2 * self.out_channels - self.in_channels

    @property
    def channels(self) -> int:
        """Channels of the merged output (both halves)."""
        return 2 * self.out_channels

    @property
    def first(self) -> bool:
        """The network's first block (its bottleneck has no BN/ReLU in front)."""
        return self.index == 0

    @property
    def bottleneck_in_channels(self) -> int:
        """Channels entering F: the second half of the padded pair (the larger one when odd)."""
        c = self.in_channels + self.pad
        return c - c // 2

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int, int]:
        """``(C, H, W)`` of the merged output for an input of spatial size ``input_hw``."""
        return self.channels, input_hw[0] // self.reduction, input_hw[1] // self.reduction


def unknown_key_error(key: str, names: Sequence[str], what: str) -> ConfigError:
    """The error for ``key``, which is none of ``names``: it names the key, the closest valid one and all of them."""
    hint = did_you_mean(key, names)
    return ConfigError(
        f"{what} has an unknown key {key!r}{f' ({hint})' if hint else ''}; valid keys: {', '.join(names)}"
    )


def _checked_keys(cls: type, data: Any, what: str) -> dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``; an unknown or missing key raises ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object (a dict), got {type(data).__name__}")
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    for key in data:
        if key not in names:
            raise unknown_key_error(key, names, what)
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{what} lacks the required key(s) {', '.join(map(repr, missing))}")
    return dict(data)


@dataclass(frozen=True)
class IRevNetConfig:
    """Everything needed to build an :class:`~irevnet.model.IRevNet`.

    ``blocks``, ``strides`` and ``channels`` are per stage: number of blocks, stride of
    the stage's first block, output channels per half. ``init_block_size`` is the block
    size of the initial ψ (0 or 1: none). ``input_shape`` is (C, H, W). ``num_classes`` 0:
    no classifier (the head returns pooled features, timm's convention). ``data`` is the
    preprocessing that turns images into inputs (:class:`DataConfig`). ``label_names``: the
    name of each class, in index order (an ImageFolder's class folders, CIFAR's label names;
    ``None``: unknown); like ``description`` it is left out of comparisons, since it does not
    change the function, and :meth:`replace` drops it when ``num_classes`` changes without it.

    The head (:class:`~irevnet.model.ClassifierHead`) is ``BN → ReLU`` (``head_norm``), then
    ``global_pool`` (timm's names: ``"avg"``, or ``""`` for none: the head returns maps, the
    classifier applied at every position), then the classifier.
    """

    blocks: tuple[int, ...]
    strides: tuple[int, ...]
    channels: tuple[int, ...]
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    init_block_size: int = 2
    dropout: float = 0.0
    mult: int = 4
    name: str = "custom"
    description: str = field(default="", compare=False)
    data: DataConfig = DataConfig()
    label_names: tuple[str, ...] | None = field(default=None, compare=False)
    global_pool: str = "avg"
    head_norm: bool = True

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        for key in ("blocks", "strides", "channels", "input_shape"):
            try:
                object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a sequence of integers, got {getattr(self, key)!r}") from None
        if not (len(self.blocks) == len(self.strides) == len(self.channels)) or not self.blocks:
            raise ConfigError(
                "blocks, strides and channels must be non-empty and of equal length (one entry per stage), "
                f"got {len(self.blocks)}, {len(self.strides)}, {len(self.channels)}"
            )
        if any(b < 1 for b in self.blocks):
            raise ConfigError(f"every stage needs at least one block, got blocks={self.blocks}")
        if len(self.input_shape) != 3:
            raise ConfigError(f"input_shape must be (C, H, W), got {self.input_shape}", option="input_shape")
        self._check_input_size()
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0 (0: no classifier), got {self.num_classes}")
        if self.mult < 1:
            raise ConfigError(f"mult must be >= 1, got {self.mult}")
        if self.global_pool not in GLOBAL_POOLS:
            raise ConfigError(
                f"global_pool must be 'avg' (global average pooling) or '' (none: the head returns "
                f"maps), got {self.global_pool!r}; an i-RevNet pools by average only",
                option="global_pool",
            )
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", DataConfig.from_dict(self.data))
        if not isinstance(self.data, DataConfig):
            raise TypeError(f"data must be a DataConfig, got {type(self.data).__name__}")
        if self.data.mean is not None and len(self.data.mean) != self.input_shape[0]:
            raise ValueError(
                f"the data config's mean/std have {len(self.data.mean)} entries but input_shape "
                f"{self.input_shape} has {self.input_shape[0]} channel(s)"
            )
        if self.label_names is not None:
            self._check_label_names()

    def _check_label_names(self) -> None:
        names = self.label_names
        if names is None:
            return
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"label_names must be a sequence of strings, got {names!r}", option="label_names")
        names = tuple(names)
        if len(names) != self.num_classes:
            raise ConfigError(
                f"label_names has {len(names)} names but num_classes is {self.num_classes}", option="label_names"
            )
        twice = sorted(n for n, count in Counter(names).items() if count > 1)  # linear: 21k ImageNet names
        if twice:
            raise ConfigError(
                f"label_names must be distinct, but {twice[:5]} occur more than once", option="label_names"
            )
        object.__setattr__(self, "label_names", names)

    @property
    def downsampling(self) -> int:
        """Total spatial reduction factor of the invertible part."""
        return max(self.init_block_size, 1) * int(2 ** sum(1 for s in self.strides if s == 2))

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` after the initial ψ: the representation that enters the first block as a pair."""
        c, h, w = self.input_shape
        f = max(self.init_block_size, 1)
        return c * f * f, h // f, w // f

    @property
    def plan(self) -> tuple[BlockPlan, ...]:
        """Every block in order: its channels, stride, padding, stage and output reduction.

        The one derivation of the architecture's shapes: the model builds its blocks from it,
        and :func:`~irevnet.summary.describe_config`, timm's ``feature_info`` and the
        analyses read it. (The plan does not validate: an impossible layout, e.g. a
        stride-1 stage with fewer channels than its input, is rejected when the model builds.)
        """
        plan: list[BlockPlan] = []
        channels_in, reduction = self.embedding_shape[0], max(self.init_block_size, 1)
        for stage, (depth, stride, ch) in enumerate(zip(self.blocks, self.strides, self.channels, strict=True)):
            for i in range(depth):
                s = stride if i == 0 else 1
                reduction *= s
                plan.append(
                    BlockPlan(
                        index=len(plan),
                        stage=stage,
                        in_channels=channels_in,
                        out_channels=ch,
                        stride=s,
                        reduction=reduction,
                        stage_end=i == depth - 1,
                    )
                )
                channels_in = 2 * ch
        return tuple(plan)

    @property
    def stage_ends(self) -> tuple[int, ...]:
        """0-based index of the last block of each stage."""
        return tuple(p.index for p in self.plan if p.stage_end)

    @property
    def num_features(self) -> int:
        """Channels of Φ, the merged output of the last block."""
        return 2 * self.channels[-1]

    def feature_shape(self, input_hw: tuple[int, int] | None = None) -> tuple[int, int, int]:
        """``(C, H, W)`` of Φ for an input of spatial size ``input_hw`` (default: ``input_shape``'s)."""
        return self.plan[-1].output_shape(input_hw or self.input_shape[1:])

    def _check_input_size(self) -> None:
        """Height and width must be positive multiples of :attr:`downsampling` (every ψ halves them exactly)."""
        f = self.downsampling
        _, h, w = self.input_shape
        if h >= f and w >= f and not h % f and not w % f:
            return
        halvings = sum(1 for s in self.strides if s == 2)
        near = (self.input_shape[0], *(max(f, round(v / f) * f) for v in (h, w)))
        raise ConfigError(
            f"input_shape {self.input_shape}: height and width must be multiples of {f}, the model's total "
            f"down-sampling (initial ψ block size {max(self.init_block_size, 1)} x 2^{halvings} from its "
            f"{halvings} stride-2 stage(s)); the nearest valid input_shape is {near}",
            option="input_shape",
        )

    def replace(self, **overrides: Any) -> IRevNetConfig:
        """A copy with ``overrides``; ``data`` as a dict changes only the data-config fields it names
        (e.g. ``replace(data={"crop_pct": 1.0})``; an unknown one raises ``ValueError``)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown model option(s): {sorted(unknown)}")
        if isinstance(overrides.get("data"), dict):
            overrides["data"] = DataConfig.from_dict({**self.data.to_dict(), **overrides["data"]})
        if overrides.get("num_classes", self.num_classes) != self.num_classes:
            overrides.setdefault("label_names", None)  # the names of other classes
        return dataclasses.replace(self, **overrides)

    @property
    def data_config(self) -> dict[str, Any]:
        """The preprocessing as timm's data-config dict: ``input_size``, ``interpolation``,
        ``mean``, ``std``, ``crop_pct``, ``crop_mode`` (what ``timm.data.resolve_model_data_config``
        returns for this model, and what :mod:`irevnet.data.transforms` builds from)."""
        c = self.input_shape[0]
        d = self.data
        return {
            "input_size": self.input_shape,
            "interpolation": d.interpolation,
            "mean": d.mean if d.mean is not None else (0.0,) * c,
            "std": d.std if d.std is not None else (1.0,) * c,
            "crop_pct": d.crop_pct,
            "crop_mode": "center",
        }

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        out["data"] = self.data.to_dict()
        # Files of models without class names and with the usual head stay as they were.
        for key, usual in (("label_names", None), ("global_pool", "avg"), ("head_norm", True)):
            if out[key] == usual:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IRevNetConfig:
        """Inverse of :meth:`to_dict` (e.g. a checkpoint's or ``config.json``'s configuration).

        Strict: an unknown or misspelled key, a missing required key or a bad value raises
        ``ValueError`` naming it. A dict without ``"data"`` (written before configurations
        carried their preprocessing) takes the data config of the preset of the same name.
        """
        kwargs = _checked_keys(cls, data, "model config")
        for key, kinds in _SCALAR_TYPES.items():
            value = kwargs.get(key)
            if key in kwargs and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
                raise ValueError(
                    f"model config key {key!r} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}"
                )
        if "data" not in kwargs and kwargs.get("name") in _PRESETS:
            kwargs["data"] = _PRESETS[kwargs["name"]].data
        try:
            return cls(**kwargs)
        except TypeError as e:  # e.g. blocks=3 instead of [3]
            raise ValueError(f"model config has a value of the wrong type: {e}") from None


_PRESETS: dict[str, IRevNetConfig] = {}
# JSON types of the scalar fields, checked by IRevNetConfig.from_dict.
_SCALAR_TYPES = {
    "num_classes": (int,),
    "init_block_size": (int,),
    "mult": (int,),
    "dropout": (int, float),
    "name": (str,),
    "description": (str,),
    "global_pool": (str,),
    "head_norm": (bool,),
}


def register_preset(config: IRevNetConfig) -> IRevNetConfig:
    _PRESETS[config.name] = config
    return config


def get_preset(name: str) -> IRevNetConfig:
    try:
        return _PRESETS[name]
    except KeyError:
        hint = did_you_mean(name, list_presets())
        raise ConfigError(
            f"unknown preset {name!r}{f' ({hint})' if hint else ''}; available presets: {', '.join(list_presets())}"
        ) from None


def list_presets() -> list[str]:
    """Names of the registered model configurations."""
    return sorted(_PRESETS)


register_preset(
    IRevNetConfig(
        name="digits",
        description="small injective i-RevNet for scikit-learn's 8x8 digits: ψ to 4x4, zero-padded to 64 channels",
        blocks=(4, 4),
        strides=(1, 2),
        channels=(32, 128),
        input_shape=(1, 8, 8),
        num_classes=10,
        init_block_size=2,
    )
)
register_preset(
    IRevNetConfig(
        name="digits-b",
        description="small bijective i-RevNet for scikit-learn's 8x8 digits: ψ to 4x4x4, no zero padding, "
        "Φ of 16x2x2 = 64 entries (as many as the image), for exact densities and metamers",
        blocks=(2, 6),
        strides=(1, 2),
        channels=(2, 8),
        input_shape=(1, 8, 8),
        num_classes=10,
        init_block_size=2,
        mult=1,
    )
)
register_preset(
    IRevNetConfig(
        name="cifar10",
        description="reference CIFAR i-RevNet, injective (3 input channels zero-padded to 32)",
        blocks=(18, 18, 18),
        strides=(1, 2, 2),
        channels=(16, 64, 256),
        input_shape=(3, 32, 32),
        num_classes=10,
        init_block_size=0,
        data=DataConfig(mean=CIFAR10_MEAN, std=CIFAR10_STD),
    )
)
register_preset(
    _PRESETS["cifar10"].replace(
        name="cifar100",
        num_classes=100,
        description="reference CIFAR i-RevNet with 100 classes",
        data=DataConfig(mean=CIFAR100_MEAN, std=CIFAR100_STD),
    )
)
# The reference ImageNet evaluation: resize the short side to 256, centre crop 224.
_IMAGENET_DATA = DataConfig(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875)
register_preset(
    IRevNetConfig(
        name="imagenet-a",
        description="injective ImageNet i-RevNet (a): ψ twice (48 ch at 56x56), zero-padded to 96, "
        "down-sampling at blocks 5, 9 and 15 of 18",
        blocks=(4, 4, 6, 4),
        strides=(1, 2, 2, 2),
        channels=(48, 192, 768, 3072),
        input_shape=(3, 224, 224),
        num_classes=1000,
        init_block_size=4,
        data=_IMAGENET_DATA,
    )
)
register_preset(
    IRevNetConfig(
        name="imagenet-b",
        description="bijective ImageNet i-RevNet (b), i-RevNet-301, the authors' checkpoint",
        blocks=(6, 16, 72, 6),
        strides=(2, 2, 2, 2),
        channels=(24, 96, 384, 1536),
        input_shape=(3, 224, 224),
        num_classes=1000,
        init_block_size=2,
        data=_IMAGENET_DATA,
    )
)
