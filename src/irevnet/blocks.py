"""The i-RevNet block: an additive coupling with optional ψ down-sampling and zero padding."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from .compile import CompileSpec, compiled
from .layers import Bottleneck, InjectivePad, InvertibleDownsampling, Pair, merge, split

__all__ = ["IRevBlock"]


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

    @staticmethod
    def exact_zeros(a: Tensor) -> Tensor | None:
        """``(N, C, H, W) -> (C,)`` bool: channels of an output half ``a`` that are exactly zero.

        The memory-saving forward records this for every block, a superset of
        :meth:`padding_zeros` (padding and the channels it feeds, e.g. the second block's
        input in ``cifar10``). ``None`` when there are none and that is free to know (CPU
        tensors); on an accelerator the mask is kept as is, since asking would synchronize.
        """
        # One fused reduction (max |a|) without materializing |a|; NaN compares unequal.
        mask = torch.linalg.vector_norm(a, ord=float("inf"), dim=(0, 2, 3)) == 0
        if mask.device.type == "cpu" and not bool(mask.any()):
            return None
        return mask

    def restore_zeros(self, a: Tensor, zeros: Tensor | None = None) -> Tensor:
        """Set the channels of the output half ``a`` listed in ``zeros`` to exact zeros.

        ``zeros`` defaults to :meth:`padding_zeros`. The forward had exact zeros there; a
        reconstruction carries rounding errors instead, which F's leading BatchNorm (whose
        running variance on an always-zero channel decays to ~0 in training) would amplify
        by up to 1/sqrt(eps), and on which a ReLU at its kink would let the noise's sign
        decide whether a gradient flows.
        """
        if zeros is None:
            zeros = self.padding_zeros(a)
        if zeros is None:
            return a
        # A product zeroes them (±0 alike in every later sum) several times faster than masked_fill.
        return a * ~zeros.view(1, -1, 1, 1)

    # -- the block as a function, its reverse step and its inverse ----------------------
    def _compiled(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, or its compiled version when the block is compiled (and not already being traced)."""
        if self.compile_spec is None or torch.compiler.is_compiling():
            return fn
        return compiled(self.compile_spec, fn)

    def forward(self, x: Pair) -> Pair:
        return self._compiled(_forward_core)(self, x)

    def reverse(self, y: Pair, *, zeros: Tensor | None = None, vjp: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """The reverse step: rebuild the block's padded input ``(x1, x2)`` from its output, recomputing F.

        ``y = (a, b)`` is the block's output pair. Returns ``(x1, x2, f)``::

            x2 = S⁻¹(a), exact zeros restored    (exact: S is a permutation of entries)
            f  = F(x2)                            BatchNorm on batch statistics, no buffer updated
            x1 = S⁻¹(b − f)                       the only step with rounding error

        ``zeros``: channels of ``a`` that were exactly zero in the forward (see
        :meth:`exact_zeros`; default :meth:`padding_zeros`). With ``vjp=True`` (the
        memory-saving backward) ``x2`` is a fresh leaf that requires grad, ``f`` is
        differentiable with respect to it and to the parameters, and ``x1`` is detached.
        The pair is in padded coordinates: :meth:`unpad_pair` drops the padding.
        """
        a, b = y
        x2 = self.psi.inverse(self.restore_zeros(a, zeros))
        if vjp:
            # Only F(x2) is differentiated: cut b off too, or a compiled core (one autograd
            # node for x1 and f) would send the VJP on into b's history.
            x2, b = x2.detach().requires_grad_(), b.detach()
        x1, f = self._compiled(_reverse_core)(self, x2, b, vjp)
        return x1, x2, f

    def input_grad(self, grad_y: Pair, grad_f_x2: Tensor) -> Pair:
        """Loss gradient with respect to the block's input pair (the adjoint of the coupling).

        ``grad_y = (g_a, g_b)`` is the gradient with respect to the output pair and
        ``grad_f_x2 = (∂F/∂x2)ᵀ g_b``. S is orthogonal (its adjoint is S⁻¹) and dropping the
        padded channels is the adjoint of the padding::

            g_x1 = S⁻¹(g_b),    g_x2 = S⁻¹(g_a) + (∂F/∂x2)ᵀ g_b
        """
        grad_a, grad_b = grad_y
        return self.unpad_pair((self.psi.inverse(grad_b), self.psi.inverse(grad_a) + grad_f_x2))

    @property
    def draws_random(self) -> bool:
        """Whether a call draws from the RNG (dropout in train mode)."""
        return self.bottleneck.draws_random

    def inverse(self, y: Pair) -> Pair:
        x1, x2, _ = self.reverse(y)
        return self.unpad_pair((x1, x2))

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


def _reverse_core(block: IRevBlock, x2: Tensor, b: Tensor, vjp: bool) -> tuple[Tensor, Tensor]:
    """``(x1, f)`` of :meth:`IRevBlock.reverse` from the rebuilt ``x2``: F and the coupling's subtraction."""
    f = block.bottleneck(x2, update_stats=False)
    x1 = block.psi.inverse(b - (f.detach() if vjp else f))
    return x1, f
