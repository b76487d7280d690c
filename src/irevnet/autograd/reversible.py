"""Backpropagation through a chain of i-RevNet blocks without stored activations.

The forward runs every block under ``no_grad`` and keeps only the final pair (and the
input of each block listed in ``keep``: the model passes the first block of each stage,
a fixed number of pairs whatever the depth). The backward walks the blocks in reverse.
For block j with output ``(a, b)`` and output gradients ``(g_a, g_b)`` the block's
reverse step (:meth:`~irevnet.blocks.IRevBlock.reverse`, the same one its inverse uses)
rebuilds the input and recomputes F_j once, with grad; the vector-Jacobian product of
F_j and the adjoint of the coupling (:meth:`~irevnet.blocks.IRevBlock.input_grad`) give
the input gradient:

    x2   = S⁻¹(a)                          exact (S is a permutation of entries)
    f    = F_j(x2)                         recomputed; BatchNorm buffers left alone
    x1   = S⁻¹(b − f)                      the only step with rounding error
    g_x1 = S⁻¹(g_b)                        S is orthogonal: Sᵀ = S⁻¹
    g_x2 = S⁻¹(g_a) + (∂F_j/∂x2)ᵀ g_b,     g_θj = (∂F_j/∂θj)ᵀ g_b

then drops the channels that injective padding appended (dropping is both the left
inverse and the adjoint of the padding). F is thus evaluated twice per training step:
once in the forward, once in the backward. At a block listed in ``keep`` the walk
continues from the stored exact input instead of the rebuilt one, so rounding errors
accumulate over one stage, not the whole network (in float32 that cuts the gradient
error on a 60-block model from up to ~1e-1 to ~1e-4, relative).

State that is reproduced exactly:

- BatchNorm: the forward is an ordinary module call, so running statistics are updated
  once per step, as in plain autograd; the recompute normalizes with the batch
  statistics (the function the forward computed) and updates no buffer.
- Dropout: the CPU RNG state (and the CUDA one, for CUDA inputs) is recorded before
  each block that draws a mask and replayed inside :func:`torch.random.fork_rng`, so
  masks match and the global RNG state after the step is the plain run's.
- Autocast: the recompute runs under the autocast state captured at forward time.
- Float32 precision: the recompute (and its backward) runs under the TF32 / bf16 flags
  captured at forward time (:class:`~irevnet.precision.Float32Flags`), whatever the global
  flags are when the backward runs. Plain autograd's backward runs under the global flags,
  normally the forward's: both modes then do the same arithmetic (TF32 where the flags
  allow it, IEEE float32 under :func:`~irevnet.precision.full_float32`).
- Exact zeros: channels of ``a`` that were exactly zero in the forward (one bool per
  channel and block, :meth:`~irevnet.blocks.IRevBlock.forward_with_zeros`) are reset to exact
  zeros before the recompute, by the mechanism the inverse uses for the padding
  (:meth:`~irevnet.blocks.IRevBlock.restore_zeros`). The
  rebuilt tensors otherwise carry rounding errors of order 1e-16 (float64) where the
  forward had zeros: injective padding, and the channels it feeds, e.g. the second
  block's input in the ``cifar10`` preset. There BatchNorm meets a constant channel
  and ReLU sits exactly on its kink, so the noise's sign, not the data, would decide
  whether a gradient flows (a relative error of order 1, not 1e-10, in a BN bias).

Memory: the forward keeps the output pair, the ``keep`` inputs, one bool per channel and
block and, with dropout, one RNG state per block (a few KiB, independent of the batch);
the backward holds one block's graph at a time. All parameter gradients are returned
together at the end of the backward: with ``zero_grad(set_to_none=True)`` (the default)
they become ``.grad`` without a copy.

Parameters are inputs of the autograd function, so they receive gradients even when the
network's input does not require grad, and each one is accumulated exactly once per
backward (what DistributedDataParallel's reducer expects). They are also saved for
backward (no memory: they are alive anyway), so that modifying one in place before the
backward raises autograd's usual error instead of silently recomputing with new weights.
Higher-order gradients are not supported (``once_differentiable``). The forward calls
:meth:`~irevnet.blocks.IRevBlock.forward_with_zeros`, not the block module itself, so
forward hooks registered on the blocks do not run in memory-saving training.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..compile import eager
from ..layers import Pair
from ..precision import Float32Flags

if TYPE_CHECKING:
    from ..blocks import IRevBlock

__all__ = ["grad_needed", "reversible_forward"]


@dataclass(frozen=True)
class _RngState:
    """The generator states one block's dropout draws from, replayable later."""

    device: torch.device
    cpu: Tensor
    cuda: Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> _RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(device, torch.get_rng_state(), cuda)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body from the captured states; restore the current ones on exit."""
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@dataclass(frozen=True)
class _AutocastState:
    """Autocast settings of one device type, as at forward time (the backward thread has its own)."""

    device_type: str
    enabled: bool
    dtype: torch.dtype
    cache_enabled: bool

    @classmethod
    def capture(cls, device_type: str) -> _AutocastState:
        return cls(
            device_type,
            torch.is_autocast_enabled(device_type),
            torch.get_autocast_dtype(device_type),
            torch.is_autocast_cache_enabled(),
        )

    def restore(self) -> torch.autocast:
        return torch.autocast(
            self.device_type, dtype=self.dtype, enabled=self.enabled, cache_enabled=self.cache_enabled
        )


def _block_backward(
    block: IRevBlock,
    y: Pair,
    grad_y: Pair,
    zeros: Tensor | None,
    params: Sequence[Tensor],
    needs_grad: Sequence[bool],
    rng: _RngState | None,
    autocast: _AutocastState,
) -> tuple[Pair, Pair, list[Tensor | None]]:
    """One step of the reverse walk: ``(input, grad of input, grads of params)`` of ``block``.

    ``y`` is the block's output pair and ``grad_y`` the loss gradient with respect to it;
    ``zeros`` is what :meth:`~irevnet.blocks.IRevBlock.forward_with_zeros` recorded;
    ``params`` are ``block.parameters()``, and ``needs_grad[i]`` says whether ``params[i]``
    gets a gradient (``None`` otherwise). The block does the arithmetic
    (:meth:`~irevnet.blocks.IRevBlock.reverse`, :meth:`~irevnet.blocks.IRevBlock.input_grad`);
    this function supplies the forward's RNG and autocast state and the vector-Jacobian product.
    """
    replay: AbstractContextManager[None] = rng.replay() if rng is not None else nullcontext()
    with torch.enable_grad(), autocast.restore(), replay:
        step = block.reverse(y, zeros=zeros, vjp=True)
    wanted = [p for p, need in zip(params, needs_grad, strict=True) if need]
    # Plain autograd casts the gradient of `psi(x1) + fx2` to fx2's dtype (autocast).
    grads = torch.autograd.grad(step.f, [step.point, *wanted], grad_y[1].to(step.f.dtype), allow_unused=True)
    remaining = iter(grads[1:])
    param_grads = [next(remaining) if need else None for need in needs_grad]
    # The point always reaches F's first convolution, so grads[0] is never None.
    return block.unpad_pair((step.x1, step.x2)), block.input_grad(grad_y, grads[0]), param_grads


class _ReversibleFunction(torch.autograd.Function):
    """``(x1, x2, *θ) -> blocks[-1](...blocks[0]((x1, x2)))`` storing the output pair and the ``keep`` inputs.

    ``θ`` must be ``[p for block in blocks for p in block.parameters()]``, in that order.
    """

    @staticmethod
    def forward(
        ctx: Any, blocks: Sequence[IRevBlock], keep: frozenset[int], x1: Tensor, x2: Tensor, *params: Tensor
    ) -> Pair:
        ctx.blocks = blocks
        ctx.keep = sorted(keep)
        ctx.autocast = _AutocastState.capture(x1.device.type)
        ctx.float32_flags = Float32Flags.capture()
        ctx.rng_states = []
        ctx.zero_masks = []
        kept: list[Tensor] = []
        pair = (x1, x2)
        for j, block in enumerate(blocks):  # grad mode is off inside Function.forward: nothing is stored
            if j in keep:
                kept.extend(pair)
            ctx.rng_states.append(_RngState.capture(x1.device) if block.draws_random else None)
            # An ordinary forward (BatchNorm statistics are updated once) that also says which
            # channels of its first half are exactly zero.
            pair, zeros = block.forward_with_zeros(pair)
            ctx.zero_masks.append(zeros)
        # Saving the parameters costs nothing (they are alive anyway) and makes autograd
        # raise, as in plain mode, if one is modified in place before the backward.
        ctx.save_for_backward(*pair, *kept, *params)
        return pair

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_a: Tensor, grad_b: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        y: Pair = (saved[0], saved[1])
        kept = {j: (saved[2 + 2 * i], saved[3 + 2 * i]) for i, j in enumerate(ctx.keep)}
        grad_y: Pair = (grad_a, grad_b)
        needs_param = ctx.needs_input_grad[4:]
        end = len(needs_param)
        per_block: list[list[Tensor | None]] = []
        with ctx.float32_flags.applied():  # the recompute uses the forward's arithmetic
            for j in reversed(range(len(ctx.blocks))):
                block = ctx.blocks[j]
                params = list(block.parameters())
                start = end - len(params)
                y, grad_y, grads = _block_backward(
                    block,
                    y,
                    grad_y,
                    ctx.zero_masks[j],
                    params,
                    needs_param[start:end],
                    ctx.rng_states[j],
                    ctx.autocast,
                )
                y = kept.get(j, y)  # restart from the exact input: rounding accumulates within a segment only
                per_block.append(grads)
                end = start
        param_grads = [g for grads in reversed(per_block) for g in grads]
        grad_x1 = grad_y[0] if ctx.needs_input_grad[2] else None
        grad_x2 = grad_y[1] if ctx.needs_input_grad[3] else None
        return (None, None, grad_x1, grad_x2, *param_grads)


def grad_needed(blocks: nn.Module, pair: Pair) -> bool:
    """Whether a forward through ``blocks`` builds an autograd graph (else nothing is stored anyway)."""
    if not torch.is_grad_enabled():
        return False
    return any(t.requires_grad for t in pair) or any(p.requires_grad for p in blocks.parameters())


@eager  # dynamo runs this eagerly (graph break); the rest of the model compiles
def reversible_forward(blocks: nn.Sequential, pair: Pair, *, keep: Collection[int] = ()) -> Pair:
    """Apply ``blocks`` (a list of :class:`~irevnet.blocks.IRevBlock`) to ``pair`` without storing activations.

    Same result as ``for block in blocks: pair = block(pair)`` (bitwise in the forward),
    and a backward that rebuilds each block's input from its output instead of reading
    it from memory. Shapes: whatever the blocks map ``pair`` to. ``keep``: indices of
    blocks whose input is stored, to restart the reverse walk from exact values (use a
    number that does not grow with depth, e.g. one per stage).

    Raises:
        NotImplementedError: a :class:`torch.nn.SyncBatchNorm` in train mode, whose
            recompute would need a second, identical all-reduce of batch statistics.
    """
    if any(isinstance(m, nn.SyncBatchNorm) and m.training for m in blocks.modules()):
        raise NotImplementedError(
            "memory-efficient mode does not support SyncBatchNorm in train mode: the backward recomputes "
            "each block, and its batch statistics would then be local, not synchronized. Use BatchNorm2d "
            "(per-process statistics) or model.set_memory_efficient(False)."
        )
    params = [p for block in blocks for p in block.parameters()]
    a, b = _ReversibleFunction.apply(blocks, frozenset(keep), *pair, *params)
    return a, b
