"""The i-RevNet: an invertible feature map Φ followed by a (non-invertible) linear head."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, cast

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from .autograd import grad_needed, reversible_forward
from .blocks import IRevBlock
from .compile import CompileSpec, check_compile_support
from .config import GLOBAL_POOLS, IRevNetConfig
from .errors import CheckpointError, ConfigError
from .io.card import write_card
from .io.fit import load_fitting
from .io.formats import write_model_folder
from .io.hub import check_repo_id, upload_folder
from .io.source import PRETRAINED_KINDS
from .io.weights import Weights, read_weights
from .layers import InvertibleDownsampling, Pair, merge, split
from .precision import full_float32

__all__ = ["ClassifierHead", "IRevNet", "config_of", "standard_normal_log_prob", "take_indices", "unwrap_model"]


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per example: ``(N, ...) -> (N,)``, summed over all other dimensions."""
    z = z.flatten(1)
    return -0.5 * (z.square().sum(dim=1) + z.shape[1] * math.log(2 * math.pi))


def take_indices(num_blocks: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: ``(0-based block indices, the largest)``.

    ``None``: all blocks; an int ``n``: the last ``n``; a sequence: those blocks (negative
    ones count from the end). Out-of-range entries raise ``ValueError``.
    """
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"last-n indices must be in 1..{num_blocks}, got {indices}")
        take = list(range(num_blocks - indices, num_blocks))
    else:
        take = []
        for i in indices:
            j = num_blocks + int(i) if int(i) < 0 else int(i)
            if not 0 <= j < num_blocks:
                raise ValueError(f"block index {i} is out of range for a network of {num_blocks} blocks")
            take.append(j)
        if not take:
            raise ValueError("indices must select at least one block")
    return take, max(take)


def _check_input(x: Tensor, input_shape: tuple[int, int, int], downsampling: int) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``x`` is ``(N, C, H, W)`` with the configuration's ``C``
    and ``H``, ``W`` multiples of ``downsampling`` (``input_shape``: the configuration's ``(C, H, W)``)."""
    c, f = input_shape[0], downsampling
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D input (N, {c}, H, W), got a {x.ndim}-D tensor of shape {tuple(x.shape)}")
    if x.shape[1] != c:
        raise ValueError(f"expected {c} input channel(s) (N, {c}, H, W), got {x.shape[1]} in shape {tuple(x.shape)}")
    if x.shape[2] % f or x.shape[3] % f:
        raise ValueError(
            f"input height and width must be divisible by the network's total down-sampling {f}, "
            f"got {x.shape[2]}x{x.shape[3]} (this configuration expects {input_shape[1]}x{input_shape[2]})"
        )


# torch.fx records the check as one call (a Proxy is no Tensor and has no concrete shape);
# a traced graph still checks its input when it runs.
torch.fx.wrap("_check_input")


class ClassifierHead(nn.Module):
    """Projection onto the classes: ``BN → ReLU → global average pool → linear``.

    ``(N, C, H, W) -> (N, num_classes)``. The only part of the network that discards
    information. (The reference code builds this BN with ``momentum=0.9``, a TensorFlow
    habit; running statistics are a training detail and do not change the function of a
    given checkpoint, so we keep PyTorch's default.)

    timm's variants: ``num_classes`` 0, no classifier (the pooled features); ``global_pool``
    ``""``, no pooling: ``(N, num_classes or C, H, W)``, the classifier applied at every
    position; ``norm=False``, no ``BN → ReLU`` (what pruning leaves).
    """

    def __init__(self, in_features: int, num_classes: int, *, global_pool: str = "avg", norm: bool = True) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features) if norm else None
        self.global_pool = global_pool
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, phi: Tensor, *, pre_logits: bool = False) -> Tensor:
        x = F.relu(self.norm(phi)) if self.norm is not None else phi
        if self.global_pool:
            x = x.mean(dim=(2, 3))
        if pre_logits:
            return x
        # Unpooled maps: the linear map of channels at every position (a 1x1 convolution).
        return self.fc(x) if self.global_pool else self.fc(x.movedim(1, -1)).movedim(-1, 1)


def timm_cfg(config: IRevNetConfig) -> dict[str, Any]:
    """The fields of timm's ``pretrained_cfg`` that the configuration fixes: its data config,
    the number of classes (and their names, when known), the classifier's and the first
    convolution's module names, and the spatial size of Φ (``pool_size``) for the
    configuration's input size."""
    cfg = {
        **config.data_config,
        "num_classes": config.num_classes,
        "classifier": "head.fc",
        "first_conv": "blocks.0.bottleneck.conv1",
        "pool_size": config.feature_shape()[1:],
    }
    return cfg if config.label_names is None else {**cfg, "label_names": config.label_names}


def unwrap_model(model: nn.Module) -> IRevNet:
    """The :class:`IRevNet` inside DDP / torch.compile wrappers (``.module`` / ``._orig_mod``)."""
    while not isinstance(model, IRevNet):
        inner = getattr(model, "_orig_mod", None)
        inner = getattr(model, "module", None) if inner is None else inner
        if not isinstance(inner, nn.Module):
            raise TypeError(f"expected an IRevNet, got {type(model).__name__}")
        model = inner
    return model


def config_of(net: IRevNet) -> IRevNetConfig:
    """The configuration that rebuilds ``net``: ``num_classes`` follows a replaced classifier
    (``model.head.fc = nn.Linear(model.num_features, k)`` for fine-tuning; class names of
    another number of classes are dropped)."""
    head, fc = net.head, getattr(net.head, "fc", None)
    if net.config.num_classes == 0 and isinstance(head, ClassifierHead) and isinstance(fc, nn.Identity):
        return net.config  # no classifier (reset_classifier(0)): the head returns pooled features
    if (
        not isinstance(head, ClassifierHead)
        or not isinstance(fc, nn.Linear)
        or fc.bias is None
        or fc.in_features != net.num_features
    ):
        raise ValueError(
            f"cannot save this model: its head must be irevnet's ClassifierHead ending in "
            f"nn.Linear({net.num_features}, num_classes) (got {type(head).__name__} with {fc!r}); "
            "use model.reset_classifier(num_classes) to change the number of classes"
        )
    if fc.out_features == net.config.num_classes:
        return net.config
    return net.config.replace(num_classes=fc.out_features)


class IRevNet(nn.Module):
    """i-RevNet (Jacobsen, Smeulders, Oyallon, ICLR 2018).

    ``x (N, C, H, W) --ψ--> split --blocks--> merge = Φ(x) --head--> logits``.

    Φ(x) has shape ``(N, 2*channels[-1], H/f, W/f)`` with ``f = downsampling``; it is a
    one-to-one function of ``x`` and :meth:`inverse` rebuilds ``x`` from it. Bijective
    configurations have ``Φ.numel() == x.numel()``; injective ones (zero padding) are
    larger.

    Build it from a configuration, ``IRevNet(config)``, from the configuration's fields as
    keywords, ``IRevNet(blocks=..., strides=..., channels=..., ...)`` (the defaults are
    :class:`~irevnet.config.IRevNetConfig`'s), or from a configuration with some fields
    replaced, ``IRevNet(config, num_classes=10)``. :func:`irevnet.create_model` builds a
    named preset. ``device`` and ``dtype``: where and in what floating-point type the
    parameters are created (e.g. ``device="meta"``: the architecture without memory), as
    for PyTorch's layers.
    """

    def __init__(
        self,
        config: IRevNetConfig | None = None,
        /,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **fields: Any,
    ) -> None:
        super().__init__()
        if config is None:
            config = IRevNetConfig(**fields)
        elif fields:
            config = config.replace(**fields)
        self.config = cfg = config
        if cfg.embedding_shape[0] < 2:
            raise ConfigError(
                f"the initial representation has {cfg.embedding_shape[0]} channel(s); at least 2 are needed to "
                "split it into a pair (use init_block_size >= 2 for single-channel images)"
            )
        with torch.device(device) if device is not None else nullcontext():
            self.init_psi = InvertibleDownsampling(cfg.init_block_size)
            # Sequential (one input, one output each; registered between ψ and the head, in the order
            # they run): timm's sequential feature extractors ("dict", "list", "hook") chain them.
            self.blocks = nn.Sequential(
                *(
                    IRevBlock(
                        p.in_channels,
                        p.out_channels,
                        stride=p.stride,
                        first=p.first,
                        dropout=cfg.dropout,
                        mult=cfg.mult,
                    )
                    for p in cfg.plan
                )
            )
            self.head = ClassifierHead(
                cfg.num_features, cfg.num_classes, global_pool=cfg.global_pool, norm=cfg.head_norm
            )
        if dtype is not None:
            self.to(dtype=dtype)
        self.memory_efficient = False
        self.full_float32 = True
        self._read_plan()
        self._pretrained_cfg: dict[str, Any] = {}

    def _read_plan(self) -> None:
        """The attributes that follow from the configuration's block plan."""
        plan = self.config.plan
        self.num_features = plan[-1].channels
        # First block of each stage: memory-saving training keeps these blocks' inputs.
        self._stage_starts = [p.index for p in plan if p.index == 0 or plan[p.index - 1].stage_end]
        # timm's per-feature description, one entry per block (Φ_j; reduction relative to the input).
        self.feature_info = [
            {"num_chs": p.channels, "reduction": p.reduction, "module": f"blocks.{p.index}", "stage": p.stage}
            for p in plan
        ]

    @classmethod
    def from_config(cls, config: IRevNetConfig) -> IRevNet:
        """The same as ``IRevNet(config)``."""
        return cls(config)

    # -- shapes ---------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) input the configuration was designed for."""
        return self.config.input_shape

    @property
    def downsampling(self) -> int:
        return self.config.downsampling

    @property
    def depth(self) -> int:
        """Number of invertible blocks."""
        return len(self.blocks)

    @property
    def injective(self) -> bool:
        """True when some block zero-pads (Φ is then larger than the input)."""
        return any(b.injective for b in self.blocks)

    @property
    def stage_index(self) -> list[int]:
        """The (0-based) stage of each block."""
        return [p.stage for p in self.config.plan]

    def feature_shape(self, input_hw: tuple[int, int] | None = None) -> tuple[int, int, int]:
        """Shape (C, H, W) of Φ for an input of spatial size ``input_hw`` (default: input_shape)."""
        return self.config.feature_shape(input_hw)

    def block_output_shapes(self, input_hw: tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
        """(C, H, W) of the merged representation after each block."""
        hw = input_hw or self.input_shape[1:]
        return [p.output_shape(hw) for p in self.config.plan]

    # -- validation -----------------------------------------------------------------
    def _check_representation(self, z: Tensor, depth: int) -> None:
        expected_c = self.config.plan[depth - 1].channels
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != expected_c:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"inverse expects a representation of shape (N, {expected_c}, H, W) after block {depth} "
                f"(Φ of this model is (N, {', '.join(map(str, self.feature_shape()))}) for a "
                f"{self.input_shape[1]}x{self.input_shape[2]} input), got {got}"
            )

    # -- memory-saving training -------------------------------------------------------
    def set_memory_efficient(self, enabled: bool = True) -> IRevNet:
        """Train without storing the blocks' activations (returns ``self``).

        When enabled, a forward that builds a graph keeps only the output of the last
        block; the backward rebuilds each block's input with its inverse and recomputes
        its bottleneck once (one extra forward per step), so activation memory no longer
        grows with depth. Gradients, BatchNorm statistics and dropout masks equal plain
        autograd's up to rounding (see ``docs/memory.md``). Forwards without grad,
        :meth:`forward_intermediates` and :meth:`inverse` are unaffected.
        """
        self.memory_efficient = bool(enabled)
        return self

    # -- float32 precision -----------------------------------------------------------
    def set_full_float32(self, enabled: bool = True) -> IRevNet:
        """Compute the representation in IEEE float32 whatever the global TF32 / bf16 flags (default; returns ``self``).

        While enabled, :meth:`forward_features`, :meth:`forward_intermediates` (and
        :meth:`iter_intermediates`, :meth:`log_prob`) and :meth:`inverse` set every float32
        precision flag to IEEE for their duration and restore the caller's flags afterwards
        (:func:`irevnet.precision.full_float32`): with TF32 an inverse is exact only to ~1e-3
        of the signal. Classification (:meth:`forward`) and training follow the global flags
        either way (see :meth:`forward`). ``set_full_float32(False)`` lets the global flags
        apply to the representation too: a faster inverse on such GPUs, accurate to about
        1e-3 while TF32 is on.
        """
        self.full_float32 = bool(enabled)
        return self

    def _precision(self) -> AbstractContextManager[None]:
        return full_float32() if self.full_float32 else nullcontext()

    # -- compiled blocks ----------------------------------------------------------------
    def compile_blocks(self, enabled: bool = True, *, backend: str = "inductor", mode: str | None = None) -> IRevNet:
        """Run every block through ``torch.compile`` (returns ``self``); ``enabled=False`` undoes it.

        The unit compiled is the block, not the network: blocks of one kind share compiled
        code, so compile time does not grow with depth. Compiled: each block's forward
        (training, inference, and the forward of memory-saving training) and its reverse
        step, which :meth:`inverse` and the memory-saving backward use (with grad, the
        recompute and its vector-Jacobian product). Results equal eager mode's up to
        kernel rounding; dropout masks, BatchNorm statistics and the RNG state are
        unchanged. ``backend``/``mode`` are ``torch.compile``'s (``mode="reduce-overhead"``:
        CUDA graphs per block). Compilation happens lazily, at the first call of each
        kind of block; call this after moving the model to its device, which is checked
        for what compiling needs (see :func:`irevnet.compile.check_compile_support`).

        Raises:
            CompileUnavailableError: compiling cannot work here (unsupported torch or
                Python, no C++ compiler for inductor on the CPU, no Triton on CUDA).
        """
        spec = CompileSpec(backend=backend, mode=mode) if enabled else None
        if spec is not None:
            device = next(self.parameters()).device
            check_compile_support(spec, device)
        for block in self.blocks:
            cast(IRevBlock, block).compile_spec = spec
        return self

    @property
    def compile_spec(self) -> CompileSpec | None:
        """How the blocks are compiled (``None``: eager)."""
        return cast(IRevBlock, self.blocks[0]).compile_spec

    # -- forward --------------------------------------------------------------------
    def _embed(self, x: Tensor) -> Pair:
        _check_input(x, self.input_shape, self.downsampling)
        return split(self.init_psi(x))

    def _run_blocks(self, pair: Pair) -> Pair:
        if isinstance(pair[0], torch.fx.Proxy):
            # Traced by torch.fx: the blocks pass the merged representation, so that the last node
            # of "blocks.j" in the graph is Φ_j, the map timm's and torchvision's feature extractors
            # return for that name (the eager pair path ends with the second half).
            z = merge(*pair)
            for block in self.blocks:
                z = block(z)
            return split(z)
        if self.memory_efficient and grad_needed(self.blocks, pair):
            return reversible_forward(self.blocks, pair, keep=self._stage_starts)
        # Plain autograd; also memory-efficient mode when no graph is built (no_grad,
        # inference_mode, nothing requires grad): then nothing is stored either way.
        for block in self.blocks:
            pair = block(pair)
        return pair

    def _features(self, x: Tensor) -> Tensor:
        """Φ(x) under the caller's float32 flags."""
        return merge(*self._run_blocks(self._embed(x)))

    def forward_features(self, x: Tensor) -> Tensor:
        """Φ(x): ``(N, C, H, W) -> (N, num_features, H/f, W/f)``, the representation before the head.

        In IEEE float32 whatever the global flags (see :meth:`set_full_float32`): this is the
        representation :meth:`inverse` maps back.
        """
        with self._precision():
            return self._features(x)

    def forward_head(self, phi: Tensor, *, pre_logits: bool = False) -> Tensor:
        """Logits ``(N, num_classes)`` from Φ (or pooled features with ``pre_logits=True``; without
        pooling, ``config.global_pool == ""``, maps ``(N, num_classes or C, H/f, W/f)``)."""
        return self.head(phi, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)``: ``forward_head(Φ(x))``.

        Classification and training follow PyTorch's float32 precision flags, like any PyTorch
        model (TF32 convolutions where they allow it: cuDNN's default on Ampere and newer GPUs).
        In memory-saving mode the backward replays the flags this forward ran with, so both
        modes do the same arithmetic. To train in IEEE float32, run the step (forward and
        backward) under :func:`irevnet.precision.full_float32`.
        """
        return self.forward_head(self._features(x))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of ``x`` under a standard normal on Φ: ``(N, C, H, W) -> (N,)``.

        ``log p(x) = log N(Φ(x); 0, I) + log|det ∂Φ/∂x|``, and the last term is 0: ψ permutes
        entries and an additive coupling ``(x1, x2) -> (x2, x1 + F(x2))`` has a unit-triangular
        Jacobian, so Φ preserves volume. Divide by ``x[0].numel()`` for nats per dimension.

        Eval mode: each entry is the density of that example. Train mode: BatchNorm normalizes
        with batch statistics, so Φ of one example depends on the others; the map from the
        whole batch to its Φ still preserves volume, so ``log_prob(x).sum()`` is the exact
        log-density of the batch as one sample, while single entries are not densities of
        single examples (and the forward updates BatchNorm running statistics, as any
        train-mode forward does).

        Raises ValueError for injective models: their Φ lies on a subspace of its space (the
        zero-padded directions), where a density on Φ does not exist.
        """
        self.require_density("log_prob")
        return standard_normal_log_prob(self.forward_features(x))

    def require_density(self, purpose: str) -> None:
        """Raise ValueError naming ``purpose`` unless the model is bijective (its Φ has a density)."""
        if self.injective:
            raise ValueError(
                f"{purpose} needs a bijective model, but {self.config.name!r} is injective: its zero padding "
                f"puts Φ ({math.prod(self.feature_shape())} entries) on a subspace of dimension "
                f"{math.prod(self.input_shape)}, which has no density (use a bijective preset such as "
                "'digits-b' or 'imagenet-b')"
            )

    def iter_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(j, Φ_{j+1}(x))`` for the selected blocks ``j`` (0-based), lazily.

        ``indices`` as in :meth:`forward_intermediates`. The forward stops after the last
        selected block, and only the current representation is alive: a consumer that keeps
        only, say, spatial means can walk 100 ImageNet-size blocks in the memory of one.
        """
        take, last = take_indices(self.depth, indices)
        wanted = set(take)
        with self._precision():
            pair = self._embed(x)
        for j, block in enumerate(self.blocks[: last + 1]):
            # Full float32 per step, not across the yield: the consumer runs under its own flags.
            with self._precision():
                pair = block(pair)
                z = merge(*pair) if j in wanted else None
            if z is not None:
                yield j, z

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The merged representations after the selected blocks, with timm's semantics.

        ``indices``: ``None`` every block, an int ``n`` the last ``n`` blocks, a sequence the
        given (0-based, negative from the end) blocks; entries follow :attr:`feature_info`.
        Block ``j`` (0-based) outputs Φ_{j+1}(x); ``inverse(z, depth=j + 1)`` rebuilds ``x``
        from it, so each one carries all the information of the input.

        Returns ``(Φ(x), intermediates)``, or only the list with ``intermediates_only``
        (then, as with ``stop_early``, the forward stops after the last selected block, and
        the first element is the representation there). ``norm`` and ``output_fmt`` exist
        for timm's feature wrappers: i-RevNet has no norm between Φ and the head.
        """
        if norm:
            raise ValueError("norm=True is not supported: an i-RevNet has no norm layer before its head")
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, last = take_indices(self.depth, indices)
        stop = last if (intermediates_only or stop_early) else self.depth - 1
        wanted, out, z = set(take), [], None
        for j, z in self.iter_intermediates(x, sorted(wanted | {stop})):
            if j in wanted:
                out.append(z)
        if intermediates_only:
            return out
        assert z is not None  # iter_intermediates yields every index asked for, ``stop`` included
        return z, out

    # -- inverse --------------------------------------------------------------------
    def inverse(self, phi: Tensor, *, depth: int | None = None) -> Tensor:
        """Rebuild the input from Φ (or from the representation after block ``depth``).

        ``(N, num_features, H/f, W/f) -> (N, C, H, W)``. Never changes the model's state:
        BatchNorm layers in train mode normalize with the batch statistics of the
        reconstructed tensors (the same as the forward's) but update no buffers.
        """
        depth = self.depth if depth is None else depth
        if not 0 <= depth <= self.depth:
            raise ValueError(f"depth must be in [0, {self.depth}], got {depth}")
        if self.training and self.config.dropout > 0:
            raise RuntimeError(
                "inverse() is undefined in train mode with dropout > 0: the forward drew a random mask that "
                "the inverse cannot know. Call model.eval() first (memory-efficient training replays the "
                "masks itself)."
            )
        if depth == 0:
            z_c = self.config.embedding_shape[0]
            if not isinstance(phi, Tensor) or phi.ndim != 4 or phi.shape[1] != z_c:
                raise ValueError(f"inverse(depth=0) expects (N, {z_c}, H, W), got {getattr(phi, 'shape', phi)}")
            return self.init_psi.inverse(phi)
        self._check_representation(phi, depth)
        with self._precision():
            pair = split(phi)
            for j in reversed(range(depth)):  # (slicing the Sequential would build a new one per call)
                pair = cast(IRevBlock, self.blocks[j]).inverse(pair)
            return self.init_psi.inverse(merge(*pair))

    # -- timm interface ----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def in_chans(self) -> int:
        """Input channels (timm's name)."""
        return self.input_shape[0]

    @property
    def head_hidden_size(self) -> int:
        """Width of the pre-logits features (timm's name): Φ's channels; the head has no hidden layer."""
        return self.num_features

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg``: the data config (``config.data_config``: input size, mean,
        std, crop, interpolation) over any weight-source fields timm set (``file``, ``hf_hub_id``, ...)."""
        return {**self._pretrained_cfg, **timm_cfg(self.config)}

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, Any] | Any) -> None:
        # timm assigns its registry entry here; the data fields always come from self.config.
        cfg = cfg if isinstance(cfg, dict) else dict(getattr(cfg, "__dict__", {}))
        self._pretrained_cfg = {k: v for k, v in cfg.items() if k not in self.config.data_config}

    default_cfg = pretrained_cfg  # timm's older name

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialized classifier for ``num_classes`` (0: none, the head returns
        its features). ``global_pool``: ``"avg"``, ``""`` (none: the head returns maps) or ``None``
        (unchanged). The configuration follows, so saved models rebuild the new head."""
        if global_pool not in (None, *GLOBAL_POOLS):
            raise ValueError(
                f"an i-RevNet pools by average only; global_pool={global_pool!r} is not supported "
                "(use 'avg', or '' for none)"
            )
        pool = self.head.global_pool if global_pool is None else global_pool
        self.config = self.config.replace(num_classes=num_classes, global_pool=pool)
        ref = next(self.blocks.parameters())
        fc = (
            nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        self.head.fc = fc.train(self.head.fc.training)
        self.head.global_pool = pool

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch for memory-saving training: :meth:`set_memory_efficient`.

        Not checkpointing: the backward rebuilds each block's input with the block's exact
        inverse instead of storing or recomputing it from a checkpoint, so activation memory
        stays flat in depth and the gradients equal plain autograd's up to rounding
        (``docs/memory.md``). Outputs are unchanged.
        """
        self.set_memory_efficient(enable)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups in order of depth for timm's optimizer factory (layer-wise learning-rate decay).

        The stem (the initial ψ, which has no parameters), then one group per block, or per
        stage with ``coarse``; the head, matched by neither, comes last.
        """
        if not coarse:
            return {"stem": r"^init_psi", "blocks": r"^blocks\.(\d+)\."}
        stages: dict[int, list[str]] = {}
        for p in self.config.plan:
            stages.setdefault(p.stage, []).append(str(p.index))
        return {
            "stem": r"^init_psi",
            "blocks": [(rf"^blocks\.(?:{'|'.join(ids)})\.", (stage,)) for stage, ids in stages.items()],
        }

    def no_weight_decay(self) -> set[str]:
        """Parameters to exempt from weight decay beyond timm's rule for 1-D ones (BatchNorm
        weights and biases; the convolutions have no biases): none."""
        return set()

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only what :meth:`forward_intermediates` needs for ``indices`` (timm's semantics).

        Drops the blocks after the last selected one; Φ (:meth:`forward_features`) then ends
        there, and the head, sized for the full network's Φ, goes with them: no classifier, no
        pooling, no norm. ``prune_norm``: drop the head's ``BN → ReLU``; ``prune_head``: drop the
        classifier and the pooling (``reset_classifier(0, "")``). The configuration follows
        (fewer blocks), so a pruned model saves and loads like any other, and its inverse
        rebuilds the input from its Φ. Returns the selected 0-based block indices.
        """
        take, last = take_indices(self.depth, indices)
        if last < self.depth - 1:
            cfg, stage = self.config, self.config.plan[last].stage
            blocks = (*cfg.blocks[:stage], last + 1 - sum(cfg.blocks[:stage]))
            self.config = cfg.replace(
                blocks=blocks, strides=cfg.strides[: stage + 1], channels=cfg.channels[: stage + 1]
            )
            self.blocks = self.blocks[: last + 1]
            self._read_plan()
            prune_norm = prune_head = True
        if prune_norm:
            self.head.norm = None
            self.config = self.config.replace(head_norm=False)
        if prune_head:
            self.reset_classifier(0, "")
        return take

    # -- model folders (Hugging Face convention) ---------------------------------------
    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``folder/config.json`` and ``folder/model.safetensors`` (see :mod:`irevnet.io.formats`),
        each atomically; returns the folder."""
        return write_model_folder(folder, config_of(self), self.state_dict())

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike[str],
        *,
        map_location: str | torch.device = "cpu",
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> IRevNet:
        """The model in a local folder written by :meth:`save_pretrained`, or on the Hugging Face Hub.

        A path that exists must be a model folder; otherwise ``model_id`` is read as a Hub id
        (``owner/name`` or ``owner/name@revision``; needs ``pip install 'irevnet[hub]'``).
        Any missing file, unknown configuration key or missing/mis-shaped tensor raises
        :class:`~irevnet.errors.CheckpointError` naming it. Returned in train mode, like any
        freshly built module: call ``.eval()`` before inference.
        """
        weights = read_weights(model_id, kinds=PRETRAINED_KINDS, revision=revision, cache_dir=cache_dir)
        return cls.from_weights(weights, map_location=map_location)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        metrics: dict[str, Any] | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        token: str | None = None,
        api: Any = None,
    ) -> str:
        """Upload this model to the Hugging Face Hub repository ``repo_id`` (``owner/name``, created if
        needed) as a model folder with a model card; returns the commit's URL.

        The commit holds ``config.json``, ``model.safetensors`` (:meth:`save_pretrained`) and
        ``README.md``, a card stating the architecture, preprocessing, classes, ``metrics`` (the
        figures of the run that trained it, e.g. ``{"data": "cifar10", "eval_top1": 0.91}``) and the
        paper (:func:`irevnet.io.card.model_card`). ``revision``: an existing branch (default: main);
        ``api``: a ``huggingface_hub.HfApi`` (default ``HfApi(token=token)``). Needs
        ``pip install 'irevnet[hub]'``; :meth:`from_pretrained` reads it back. The Hub's refusals and
        connection failures raise :class:`~irevnet.errors.HubError`.
        """
        check_repo_id(repo_id)  # before any file is written
        with tempfile.TemporaryDirectory(prefix="irevnet-push-") as folder:
            self.save_pretrained(folder)
            write_card(folder, config_of(self), repo_id=repo_id, metrics=metrics)
            return upload_folder(
                folder, repo_id, private=private, revision=revision, commit_message=commit_message, token=token, api=api
            )

    @classmethod
    def from_weights(cls, weights: Weights, *, map_location: str | torch.device = "cpu") -> IRevNet:
        """The model ``weights`` describe (see :func:`irevnet.io.weights.read_weights`), built and filled
        where the weights are (the CPU), then moved to ``map_location``; in train mode. Weights that
        do not fit their configuration raise :class:`CheckpointError`."""
        try:
            model = cls(weights.config)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{str(weights.source)!r} does not describe a valid model: {e}") from None
        load_fitting(
            model,
            weights.state,
            source=str(weights.path),
            problem="does not describe a valid model: its tensors do not fit its configuration",
        )
        return model.to(map_location)

    # -- introspection --------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> dict[str, Any]:
        """Summary used by ``irevnet info``: parameters, depth, per-stage shapes, Φ size.

        The configuration's :func:`~irevnet.summary.describe_config`, with the parameters
        counted on this model (a replaced head may differ from the configuration's).
        """
        from .summary import describe_config

        return {**describe_config(self.config), "parameters": self.num_parameters()}
