"""Invertible building blocks: ψ, split/merge, injective padding and the bottleneck F."""

from .bottleneck import Bottleneck, batch_norm
from .pairs import InjectivePad, Pair, merge, split
from .psi import InvertibleDownsampling, depth_to_space, space_to_depth

__all__ = [
    "Bottleneck",
    "InjectivePad",
    "InvertibleDownsampling",
    "Pair",
    "batch_norm",
    "depth_to_space",
    "merge",
    "space_to_depth",
    "split",
]
