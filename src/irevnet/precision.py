"""Full float32 arithmetic for Φ and Φ⁻¹, whatever the global TF32 / bf16 flags.

PyTorch lets float32 convolutions and matmuls run in reduced precision through global flags:
TF32 on NVIDIA Ampere and newer (``torch.backends.cudnn.allow_tf32`` is **on** by default;
``torch.backends.cuda.matmul.allow_tf32``, ``torch.set_float32_matmul_precision``) and, on
recent PyTorch, the ``fp32_precision`` settings of the ``cuda``/``cudnn`` and ``mkldnn``
(oneDNN, CPU) backends, which can also ask for bf16. TF32 keeps 10 mantissa bits, so an
inverse computed from such a forward is exact only to ~1e-3 of the signal; on an H200 the
``imagenet-b`` reconstruction error was 2.7e-4 relative with the defaults against 6.7e-7
with TF32 off (issue 10).

:class:`Float32Flags` is a snapshot of every such flag; :func:`full_float32` runs a block
with all of them set to IEEE float32 and restores the caller's flags afterwards, exactly.
The model applies it at its entry points (``forward_features``, ``forward_intermediates``,
``inverse``), and the memory-saving backward replays the flags its forward ran with.

The flags are process-global, not thread-local: two threads that run models concurrently
with different settings (e.g. ``nn.DataParallel``) may see each other's flags.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

__all__ = ["Float32Flags", "full_float32"]

# (backend, op) pairs of the fp32_precision settings (PyTorch >= 2.9), parents first so that
# restoring them in this order reproduces the same effective values.
_KEYS = (
    ("generic", "all"),
    ("cuda", "all"), ("cuda", "matmul"), ("cuda", "conv"), ("cuda", "rnn"),
    ("mkldnn", "all"), ("mkldnn", "matmul"), ("mkldnn", "conv"), ("mkldnn", "rnn"),
)
_HAS_FP32_PRECISION = hasattr(torch._C, "_get_fp32_precision_getter")


def _try(getter):  # type: ignore[no-untyped-def]
    """A legacy flag's value, or None where PyTorch refuses to read it (legacy and new APIs mixed)."""
    try:
        return getter()
    except RuntimeError:
        return None


@dataclass(frozen=True)
class Float32Flags:
    """The global flags that decide whether float32 ops may use reduced precision.

    ``fp32_precision``: the ``fp32_precision`` of each ``(backend, op)`` in ``_KEYS`` order
    (empty on PyTorch without that API); ``cudnn_allow_tf32`` and ``matmul_precision``: the
    legacy ``torch.backends.cudnn.allow_tf32`` and ``torch.get_float32_matmul_precision()``,
    kept in step because PyTorch refuses mixed states (None: unreadable, left as found).
    """

    fp32_precision: tuple[str, ...]
    cudnn_allow_tf32: bool | None
    matmul_precision: str | None

    @classmethod
    @torch.compiler.disable  # global state, not tensor code: compiled callers run it eagerly
    def capture(cls) -> "Float32Flags":
        """The current global flags."""
        new = tuple(torch._C._get_fp32_precision_getter(b, o) for b, o in _KEYS) if _HAS_FP32_PRECISION else ()
        return cls(new, _try(torch._C._get_cudnn_allow_tf32), _try(torch.get_float32_matmul_precision))

    @classmethod
    def ieee(cls) -> "Float32Flags":
        """Full float32 everywhere: no TF32, no bf16."""
        return cls(("ieee",) * len(_KEYS) if _HAS_FP32_PRECISION else (), False, "highest")

    @property
    def exact(self) -> bool:
        """Whether these flags allow nothing but IEEE float32."""
        return self == Float32Flags.ieee()

    @torch.compiler.disable
    def apply(self) -> None:
        """Make these the global flags."""
        # Legacy setters first: they also write some fp32_precision entries, which the new
        # values then set exactly.
        if self.cudnn_allow_tf32 is not None:
            torch._C._set_cudnn_allow_tf32(self.cudnn_allow_tf32)
        if self.matmul_precision is not None:
            torch.set_float32_matmul_precision(self.matmul_precision)
        for (backend, op), value in zip(_KEYS, self.fp32_precision):
            torch._C._set_fp32_precision_setter(backend, op, value)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Run the body under these flags; the caller's flags are restored on exit."""
        before = Float32Flags.capture()
        if before == self:  # nothing to do (e.g. nested calls): no global writes
            yield
            return
        self.apply()
        try:
            yield
        finally:
            before.apply()


def full_float32() -> AbstractContextManager[None]:
    """Context manager: IEEE float32 for every op in the body (TF32 and bf16 off), flags restored after."""
    return Float32Flags.ieee().applied()
