"""The i-RevNet: an invertible feature map Φ followed by a (non-invertible) linear head."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .autograd import grad_needed, reversible_forward
from .blocks import IRevBlock
from .compile import CompileSpec, check_compile_support
from .config import DataConfig, IRevNetConfig
from .layers import InvertibleDownsampling, Pair, merge, split
from .precision import full_float32

__all__ = ["IRevNet", "ClassifierHead", "standard_normal_log_prob"]


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per example: ``(N, ...) -> (N,)``, summed over all other dimensions."""
    z = z.flatten(1)
    return -0.5 * (z.square().sum(dim=1) + z.shape[1] * math.log(2 * math.pi))


class ClassifierHead(nn.Module):
    """Projection onto the classes: ``BN → ReLU → global average pool → linear``.

    ``(N, C, H, W) -> (N, num_classes)``. The only part of the network that discards
    information. (The reference code builds this BN with ``momentum=0.9``, a TensorFlow
    habit; running statistics are a training detail and do not change the function of a
    given checkpoint, so we keep PyTorch's default.)
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, phi: Tensor, *, pre_logits: bool = False) -> Tensor:
        x = F.relu(self.norm(phi)).mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)


class IRevNet(nn.Module):
    """i-RevNet (Jacobsen, Smeulders, Oyallon, ICLR 2018).

    ``x (N, C, H, W) --ψ--> split --blocks--> merge = Φ(x) --head--> logits``.

    Φ(x) has shape ``(N, 2*channels[-1], H/f, W/f)`` with ``f = downsampling``; it is a
    one-to-one function of ``x`` and :meth:`inverse` rebuilds ``x`` from it. Bijective
    configurations have ``Φ.numel() == x.numel()``; injective ones (zero padding) are
    larger.

    Use :func:`irevnet.create_model` to build a named preset. Keyword arguments are the
    fields of :class:`~irevnet.config.IRevNetConfig`.
    """

    def __init__(
        self,
        *,
        blocks: tuple[int, ...],
        strides: tuple[int, ...],
        channels: tuple[int, ...],
        input_shape: tuple[int, int, int] = (3, 224, 224),
        num_classes: int = 1000,
        init_block_size: int = 2,
        dropout: float = 0.0,
        mult: int = 4,
        name: str = "custom",
        description: str = "",
        data: DataConfig = DataConfig(),
    ) -> None:
        super().__init__()
        cfg = IRevNetConfig(
            blocks=blocks, strides=strides, channels=channels, input_shape=input_shape,
            num_classes=num_classes, init_block_size=init_block_size, dropout=dropout,
            mult=mult, name=name, description=description, data=data,
        )
        self.config = cfg
        in_chans, height, width = cfg.input_shape
        if height % cfg.downsampling or width % cfg.downsampling:
            raise ValueError(
                f"input_shape {cfg.input_shape} is not divisible by the network's total down-sampling "
                f"{cfg.downsampling}"
            )
        self.init_psi = InvertibleDownsampling(cfg.init_block_size)
        channels_in = in_chans * self.init_psi.factor**2
        if channels_in < 2:
            raise ValueError(
                f"the initial representation has {channels_in} channel(s); at least 2 are needed to split "
                "it into a pair (use init_block_size >= 2 for single-channel images)"
            )
        layers: list[IRevBlock] = []
        self.stage_index: list[int] = []  # stage of each block
        for stage, (depth, stride, ch) in enumerate(zip(cfg.blocks, cfg.strides, cfg.channels)):
            for i in range(depth):
                layers.append(IRevBlock(
                    channels_in, ch, stride=stride if i == 0 else 1, first=not layers,
                    dropout=cfg.dropout, mult=cfg.mult,
                ))
                self.stage_index.append(stage)
                channels_in = 2 * ch
        self.blocks = nn.ModuleList(layers)
        # First block of each stage: memory-saving training keeps these blocks' inputs.
        self._stage_starts = [j for j, s in enumerate(self.stage_index) if j == 0 or s != self.stage_index[j - 1]]
        self.num_features = channels_in
        self.head = ClassifierHead(channels_in, cfg.num_classes)
        self.memory_efficient = False
        self.full_float32 = True

    @classmethod
    def from_config(cls, config: IRevNetConfig) -> "IRevNet":
        return cls(**{k: getattr(config, k) for k in config.__dataclass_fields__})

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

    def feature_shape(self, input_hw: tuple[int, int] | None = None) -> tuple[int, int, int]:
        """Shape (C, H, W) of Φ for an input of spatial size ``input_hw`` (default: input_shape)."""
        h, w = input_hw or self.input_shape[1:]
        f = self.downsampling
        return self.num_features, h // f, w // f

    def block_output_shapes(self, input_hw: tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
        """(C, H, W) of the merged representation after each block."""
        h, w = input_hw or self.input_shape[1:]
        h, w = h // self.init_psi.factor, w // self.init_psi.factor
        shapes = []
        for block in self.blocks:
            if block.stride == 2:
                h, w = h // 2, w // 2
            shapes.append((2 * block.out_channels, h, w))
        return shapes

    # -- validation -----------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        c = self.input_shape[0]
        f = self.downsampling
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"expected a 4-D input (N, {c}, H, W), got a {x.ndim}-D tensor of shape {tuple(x.shape)}")
        if x.shape[1] != c:
            raise ValueError(
                f"expected {c} input channel(s) (N, {c}, H, W), got {x.shape[1]} in shape {tuple(x.shape)}"
            )
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"input height and width must be divisible by the network's total down-sampling {f}, "
                f"got {x.shape[2]}x{x.shape[3]} (this configuration expects {self.input_shape[1]}x{self.input_shape[2]})"
            )

    def _check_representation(self, z: Tensor, depth: int) -> None:
        expected_c = self.num_features if depth == self.depth else 2 * self.blocks[depth - 1].out_channels
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != expected_c:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"inverse expects a representation of shape (N, {expected_c}, H, W) after block {depth} "
                f"(Φ of this model is (N, {', '.join(map(str, self.feature_shape()))}) for a "
                f"{self.input_shape[1]}x{self.input_shape[2]} input), got {got}"
            )

    # -- memory-saving training -------------------------------------------------------
    def set_memory_efficient(self, enabled: bool = True) -> "IRevNet":
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
    def set_full_float32(self, enabled: bool = True) -> "IRevNet":
        """Compute Φ and Φ⁻¹ in full IEEE float32 whatever the global TF32 flags (default; returns ``self``).

        PyTorch lets cuDNN convolutions use TF32 by default on Ampere and newer GPUs, and
        ``torch.backends.*.fp32_precision`` / ``torch.set_float32_matmul_precision`` can ask
        for TF32 or bf16 on other backends; an inverse is then only exact to ~1e-3 of the
        signal. While enabled, :meth:`forward_features`, :meth:`forward_intermediates`,
        :meth:`inverse` and the memory-saving recompute run with all of those flags set to
        IEEE float32 (:mod:`irevnet.precision`); the caller's flags are restored afterwards.
        The head always follows the global flags. ``set_full_float32(False)`` lets the
        global flags apply: faster convolutions on such GPUs for training, at the cost of
        reconstructions accurate to about 1e-3 only while TF32 is on.
        """
        self.full_float32 = bool(enabled)
        return self

    def _precision(self) -> AbstractContextManager[None]:
        return full_float32() if self.full_float32 else nullcontext()

    # -- compiled blocks ----------------------------------------------------------------
    def compile_blocks(
        self, enabled: bool = True, *, backend: str = "inductor", mode: str | None = None
    ) -> "IRevNet":
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
            block.compile_spec = spec
        return self

    @property
    def compile_spec(self) -> CompileSpec | None:
        """How the blocks are compiled (``None``: eager)."""
        return self.blocks[0].compile_spec

    # -- forward --------------------------------------------------------------------
    def _embed(self, x: Tensor) -> Pair:
        self._check_input(x)
        return split(self.init_psi(x))

    def _run_blocks(self, pair: Pair) -> Pair:
        if self.memory_efficient and grad_needed(self.blocks, pair):
            return reversible_forward(self.blocks, pair, keep=self._stage_starts)
        # Plain autograd; also memory-efficient mode when no graph is built (no_grad,
        # inference_mode, nothing requires grad): then nothing is stored either way.
        for block in self.blocks:
            pair = block(pair)
        return pair

    def forward_features(self, x: Tensor) -> Tensor:
        """Φ(x): ``(N, C, H, W) -> (N, num_features, H/f, W/f)``, the representation before the head."""
        with self._precision():
            return merge(*self._run_blocks(self._embed(x)))

    def forward_head(self, phi: Tensor, *, pre_logits: bool = False) -> Tensor:
        """Logits ``(N, num_classes)`` from Φ (or pooled features with ``pre_logits=True``)."""
        return self.head(phi, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

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
        if self.injective:
            raise ValueError(
                f"log_prob needs a bijective model, but {self.config.name!r} is injective: its zero padding "
                f"puts Φ ({math.prod(self.feature_shape())} entries) on a subspace of dimension "
                f"{math.prod(self.input_shape)}, which has no density (use a bijective preset such as "
                "'digits-b' or 'imagenet-b')"
            )
        return standard_normal_log_prob(self.forward_features(x))

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """The merged representation after every block (``depth`` tensors).

        Entry ``j-1`` is Φ_j(x), the output of block ``j``; ``inverse(z, depth=j)`` rebuilds
        ``x`` from it, so each one carries all the information of the input.
        """
        with self._precision():
            pair = self._embed(x)
            out = []
            for block in self.blocks:
                pair = block(pair)
                out.append(merge(*pair))
        return out

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
            z_c = self.input_shape[0] * self.init_psi.factor**2
            if not isinstance(phi, Tensor) or phi.ndim != 4 or phi.shape[1] != z_c:
                raise ValueError(f"inverse(depth=0) expects (N, {z_c}, H, W), got {getattr(phi, 'shape', phi)}")
            return self.init_psi.inverse(phi)
        self._check_representation(phi, depth)
        with self._precision():
            pair = split(phi)
            for j in reversed(range(depth)):  # (slicing the ModuleList would build a new one per call)
                pair = self.blocks[j].inverse(pair)
            return self.init_psi.inverse(merge(*pair))

    # -- classifier -----------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        """The final linear layer (timm's convention)."""
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer by a freshly initialized one with ``num_classes`` outputs
        (timm's convention; for fine-tuning). ``config.num_classes`` follows, so
        :func:`~irevnet.save_model` and :func:`~irevnet.load_model` round-trip the new model.
        Φ and its inverse are untouched."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        fc = self.head.fc
        self.head.fc = nn.Linear(self.num_features, num_classes, device=fc.weight.device, dtype=fc.weight.dtype)
        self.config = self.config.replace(num_classes=num_classes)

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
