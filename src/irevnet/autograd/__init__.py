"""Custom autograd for i-RevNet: backpropagation without stored activations."""

from .reversible import grad_needed, reversible_forward

__all__ = ["grad_needed", "reversible_forward"]
