"""The paper's analyses: reconstructions, interpolations (and more, see the submodules)."""

from .reconstruct import interpolate, reconstruct

__all__ = ["interpolate", "reconstruct"]
