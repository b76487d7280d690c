"""The i-RevNet block: an additive coupling with optional ψ down-sampling and zero padding."""

from __future__ import annotations

from torch import Tensor, nn

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
    """

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

    def zero_padding(self, x2: Tensor) -> Tensor:
        """Set the channels of ``x2`` that the forward padded to exact zeros.

        The forward put exact zeros there; a reconstruction carries rounding errors
        instead, and F's leading BatchNorm (whose running variance on an always-zero
        channel decays to ~0 in training) would amplify them by up to 1/sqrt(eps).
        """
        if not self.injective:
            return x2
        keep = max(self.in_channels - x2.shape[1], 0)  # real channels that landed in x2
        if keep == x2.shape[1]:
            return x2
        return merge(x2[:, :keep], x2.new_zeros(x2.shape[0], x2.shape[1] - keep, *x2.shape[2:]))

    # -- the block as a function and its inverse ---------------------------------------
    def forward(self, x: Pair) -> Pair:
        x1, x2 = self.pad_pair(x)
        fx2 = self.bottleneck(x2)
        return self.psi(x2), self.psi(x1) + fx2

    def inverse(self, y: Pair) -> Pair:
        a, b = y
        x2 = self.zero_padding(self.psi.inverse(a))
        fx2 = self.bottleneck(x2, update_stats=False)
        x1 = self.psi.inverse(b - fx2)
        return self.unpad_pair((x1, x2))

    def extra_repr(self) -> str:
        kind = "injective" if self.injective else "bijective"
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}, {kind}"
