"""The i-RevNet block: an additive coupling with optional ψ down-sampling and zero padding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .compile import CompileSpec, compiled
from .layers import Bottleneck, InjectivePad, InvertibleDownsampling, Pair, merge, split
from .precision import conv_precision_key

__all__ = ["IRevBlock", "ReverseStep"]


class ReverseStep(NamedTuple):
    """What :meth:`IRevBlock.reverse` rebuilds: the padded input pair, F(x2), and the VJP point."""

    x1: Tensor
    x2: Tensor
    f: Tensor
    point: Tensor


class IRevBlock(nn.Module):
    """One invertible block j.

    ``forward((x1, x2)) = (S(x2), S(x1) + F_j(x2))``: the halves swap. ``S`` is the
    identity for ``stride=1`` and ψ (block size 2) for ``stride=2``. The inverse is
    ``x2 = S⁻¹(a)``, ``x1 = S⁻¹(b − F_j(x2))``.

    Args:
        in_channels: channels of the incoming pair, both halves together.
        out_channels: channels of EACH half of the outgoing pair.
        stride: 1, or 2 to down-sample spatially by 2 (then ``out_channels`` must be
            ``2 * in_channels``, since ψ quadruples the channels of each half).
        first: the first block of a network has no BN/ReLU in front of F.
        dropout: dropout probability inside F.
        mult: bottleneck width divisor.

    A stride-1 block whose output has more channels than its input is *injective*: it
    merges the pair, appends ``2*out_channels - in_channels`` zero channels at the end,
    and splits again. Its inverse drops them.

    Invariants: ``inverse(forward(x)) == x`` up to rounding, in eval mode and in train
    mode (BN uses the batch statistics of the reconstructed half, which equal the
    forward's); ``inverse`` never updates BatchNorm buffers.

    ``compile_spec``: when set (see :meth:`irevnet.IRevNet.compile_blocks`), the forward
    and the core of the reverse step run ``torch.compile``d code shared by all blocks.
    """

    compile_spec: CompileSpec | None = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        first: bool = False,
        dropout: float = 0.0,
        mult: int = 4,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 2:
            if in_channels % 2 or out_channels != 2 * in_channels:
                raise ValueError(
                    "a stride-2 block needs an even in_channels and out_channels == 2*in_channels "
                    f"(ψ quadruples each half), got in_channels={in_channels}, out_channels={out_channels}"
                )
            pad = 0
        else:
            pad = 2 * out_channels - in_channels
            if pad < 0:
                raise ValueError(
                    f"a stride-1 block cannot reduce channels: in_channels={in_channels} > "
                    f"2*out_channels={2 * out_channels}"
                )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.pad = InjectivePad(pad)
        self.psi = InvertibleDownsampling(2 if stride == 2 else 0)
        f_in = (in_channels + pad) - (in_channels + pad) // 2
        self.bottleneck = Bottleneck(f_in, out_channels, stride=stride, first=first, dropout=dropout, mult=mult)

    @property
    def injective(self) -> bool:
        return self.pad.num_channels > 0

    # -- pieces shared by forward, inverse and the memory-saving backward -------------
    def pad_pair(self, x: Pair) -> Pair:
        """Injective zero padding of a pair (identity for bijective blocks)."""
        return split(self.pad(merge(*x))) if self.injective else x

    def unpad_pair(self, x: Pair) -> Pair:
        """Left inverse and adjoint of :meth:`pad_pair`: drop the padded channels."""
        if not self.injective:
            return x
        return split(self.pad.inverse(merge(*x)))

    # -- exact zeros: what the forward made exactly zero, the reverse step restores ------
    def padding_zeros(self, a: Tensor) -> Tensor | None:
        """``(C,)`` bool over the channels of the output half ``a``: where injective padding put zeros.

        ``None`` for a bijective block. (Injective blocks have stride 1, so ``a`` is the
        padded ``x2`` itself: its last channels are the padding's.)
        """
        if not self.injective:
            return None
        keep = max(self.in_channels - self.out_channels, 0)  # real channels that landed in x2
        return torch.arange(a.shape[1], device=a.device) >= keep

    def forward_with_zeros(self, x: Pair) -> tuple[Pair, Tensor | None]:
        """``forward(x)`` and the channels of its first half ``a`` that are exactly zero (``(C,)`` bool).

        The memory-saving forward records them for every block, a superset of
        :meth:`padding_zeros` (padding and the channels it feeds, e.g. the second block's
        input in ``cifar10``); one (compiled) call. The mask is ``None`` when no channel is
        zero and that is free to know (CPU tensors); on an accelerator it is kept as is,
        since asking would synchronize.
        """
        y, mask = self._compiled(_forward_zeros_core, x)(self, x)
        if mask.device.type == "cpu" and not bool(mask.any()):
            return y, None
        return y, mask

    def restore_zeros(self, a: Tensor, zeros: Tensor | None = None) -> Tensor:
        """Set the channels of the output half ``a`` listed in ``zeros`` to exact zeros.

        ``zeros`` defaults to :meth:`padding_zeros`. The forward had exact zeros there; a
        reconstruction carries rounding errors instead, which F's leading BatchNorm (whose
        running variance on an always-zero channel decays to ~0 in training) would amplify
        by up to 1/sqrt(eps), and on which a ReLU at its kink would let the noise's sign
        decide whether a gradient flows. The map's derivative is the identity, so a
        gradient taken through it is the gradient with respect to the exact input.
        """
        if zeros is None:
            zeros = self.padding_zeros(a)
        if zeros is None:
            return a
        # a − a = +0 exactly for finite a; the subtracted term carries no gradient.
        return a - (a * zeros.view(1, -1, 1, 1)).detach()

    # -- the block as a function, its reverse step and its inverse ----------------------
    def _compiled(self, fn: Callable[..., Any], x: Pair) -> Callable[..., Any]:
        """``fn``, or its compiled version for a call on the pair ``x`` when the block is compiled
        (and not already being traced)."""
        if self.compile_spec is None or torch.compiler.is_compiling():
            return fn
        return compiled(self.compile_spec, fn, self.graph_key(x))

    def graph_key(self, x: Pair) -> tuple[Any, ...]:
        """What selects the compiled graph of a call on the pair ``x``: the kind of block, the
        shapes, dtype and device, grad and train mode, autocast and, where compiled code bakes
        it in (``max-autotune``'s convolution templates), the float32 convolution precision."""
        a, b = x
        device = a.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        spec = self.compile_spec
        conv = conv_precision_key() if spec is not None and (spec.mode or "").startswith("max-autotune") else None
        return (
            self.in_channels,
            self.out_channels,
            self.stride,
            self.bottleneck.first,
            tuple(a.shape),
            tuple(b.shape),
            a.dtype,
            a.device,
            torch.is_grad_enabled(),
            self.training,
            autocast,
            conv,
        )

    def forward(self, x: Pair | Tensor) -> Pair | Tensor:
        """The block on a pair; on a merged representation (one tensor, as sequential feature
        extractors and a torch.fx trace pass it) it splits, applies itself and merges."""
        if not isinstance(x, tuple):
            return merge(*self.forward(split(x)))
        return self._compiled(_forward_core, x)(self, x)

    def reverse(self, y: Pair, *, zeros: Tensor | None = None, vjp: bool = False) -> ReverseStep:
        """The reverse step: rebuild the block's padded input ``(x1, x2)`` from its output, recomputing F.

        ``y = (a, b)`` is the block's output pair. Returns ``ReverseStep(x1, x2, f, point)``::

            x2 = S⁻¹(a), exact zeros restored    (exact: S is a permutation of entries)
            f  = F(x2)                            BatchNorm on batch statistics, no buffer updated
            x1 = S⁻¹(b − f)                       the only step with rounding error

        ``zeros``: channels of ``a`` that were exactly zero in the forward (see
        :meth:`forward_with_zeros`; default :meth:`padding_zeros`). With ``vjp=True`` (the
        memory-saving backward) ``point`` is a fresh leaf copy of ``a`` that requires
        grad, ``f`` is differentiable with respect to it and to the parameters, and
        ``x1``, ``x2`` are detached; :meth:`input_grad` takes ``∂f/∂point``. Otherwise
        ``point`` is ``a`` and everything is an ordinary function of ``y``. The pair is in
        padded coordinates: :meth:`unpad_pair` drops the padding.
        """
        a, b = y
        if vjp:
            # Only f is differentiated: cut b off too, or a compiled core (one autograd node
            # for all its outputs) would send the VJP on into b's history.
            a, b = a.detach().requires_grad_(), b.detach()
        x1, x2, f = self._compiled(_reverse_core, (a, b))(self, a, b, zeros, vjp)
        return ReverseStep(x1, x2, f, a)

    def input_grad(self, grad_y: Pair, grad_f_a: Tensor) -> Pair:
        """Loss gradient with respect to the block's input pair (the adjoint of the coupling).

        ``grad_y = (g_a, g_b)`` is the gradient with respect to the output pair and
        ``grad_f_a = (∂F(S⁻¹a)/∂a)ᵀ g_b``, the vector-Jacobian product at
        :meth:`reverse`'s ``point``. S is orthogonal (its adjoint is S⁻¹) and dropping the
        padded channels is the adjoint of the padding::

            g_x1 = S⁻¹(g_b),    g_x2 = S⁻¹(g_a + (∂F(S⁻¹a)/∂a)ᵀ g_b) = S⁻¹(g_a) + (∂F/∂x2)ᵀ g_b
        """
        grad_a, grad_b = grad_y
        return self.unpad_pair((self.psi.inverse(grad_b), self.psi.inverse(grad_a + grad_f_a)))

    @property
    def draws_random(self) -> bool:
        """Whether a call draws from the RNG (dropout in train mode)."""
        return self.bottleneck.draws_random

    def inverse(self, y: Pair) -> Pair:
        step = self.reverse(y)
        return self.unpad_pair((step.x1, step.x2))

    def extra_repr(self) -> str:
        kind = "injective" if self.injective else "bijective"
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}, {kind}"


# The functions that are compiled (module level, the block an argument: one compiled code
# for all blocks; see irevnet.compile).
def _forward_core(block: IRevBlock, x: Pair) -> Pair:
    """``forward((x1, x2)) = (S(x2), S(x1) + F(x2))`` after the injective padding."""
    x1, x2 = block.pad_pair(x)
    fx2 = block.bottleneck(x2)
    return block.psi(x2), block.psi(x1) + fx2


def _forward_zeros_core(block: IRevBlock, x: Pair) -> tuple[Pair, Tensor]:
    y = _forward_core(block, x)
    return y, _zero_channels(y[0])


def _zero_channels(a: Tensor) -> Tensor:
    # One fused reduction (max |a|) without materializing |a|; NaN compares unequal.
    return torch.linalg.vector_norm(a, ord=float("inf"), dim=(0, 2, 3)) == 0


def _reverse_core(
    block: IRevBlock, a: Tensor, b: Tensor, zeros: Tensor | None, vjp: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``(x1, x2, f)`` of :meth:`IRevBlock.reverse`: exact zeros, S⁻¹, F and the coupling's subtraction."""
    x2 = block.psi.inverse(block.restore_zeros(a, zeros))
    f = block.bottleneck(x2, update_stats=False)
    if vjp:
        return block.psi.inverse(b - f.detach()), x2.detach(), f
    return block.psi.inverse(b - f), x2, f
