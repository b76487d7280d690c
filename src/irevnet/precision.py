"""Float32 precision: PyTorch's global TF32 / bf16 flags, read, set to IEEE float32 and restored.

PyTorch lets float32 convolutions and matmuls run in reduced precision through global flags:
TF32 on NVIDIA Ampere and newer (``torch.backends.cudnn.allow_tf32`` is **on** by default;
``torch.backends.cuda.matmul.allow_tf32``, ``torch.set_float32_matmul_precision``) and, on
PyTorch >= 2.9, the ``fp32_precision`` settings of the ``cudnn``/``cuda`` and ``mkldnn``
(oneDNN, CPU) backends, which can also ask for bf16. TF32 keeps 10 mantissa bits, so an
inverse computed from such a forward is exact only to ~1e-3 of the signal (on an H200 the
``imagenet-b`` reconstruction error was 2.7e-4 relative with the defaults, 6.7e-7 with TF32
off).

The policy (README, "Float32 precision policy"): classification and training follow these
flags, like any PyTorch model, because that is where speed matters; the representation a
user inverts (``forward_features``, ``forward_intermediates``, ``inverse``) runs in IEEE
float32 through :func:`full_float32`, because there exactness is the point. The
memory-saving backward replays the flags its forward ran with (:class:`Float32Flags`), so
plain and memory-saving training do the same arithmetic.

Only public PyTorch APIs are used: the legacy flags (``torch.backends.cudnn.allow_tf32``,
``torch.get/set_float32_matmul_precision``) on every supported version, and the per-operator
``fp32_precision`` attributes where they exist (PyTorch >= 2.9). The flags are process-global,
not thread-local: two threads that run models concurrently with different settings (e.g.
``nn.DataParallel``) may see each other's flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from .compile import eager

__all__ = ["Float32Flags", "full_float32"]


def _backend(path: str) -> Any:
    """``torch.backends.<path>``, e.g. ``"cudnn.conv"``.

    The ``fp32_precision`` settings are attributes of the module objects PyTorch installs in place
    of ``torch.backends.cudnn`` etc. at import time; its type stubs only see the plain modules.
    """
    obj: Any = torch.backends
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def _operators() -> tuple[tuple[str, Any], ...]:
    """``(name, object with an fp32_precision attribute)`` of every operator-level setting, or ()."""
    if not hasattr(torch.backends.cudnn, "conv"):  # PyTorch < 2.9: the legacy flags are the whole state
        return ()
    names = ("cudnn.conv", "cudnn.rnn", "cuda.matmul", "mkldnn.conv", "mkldnn.matmul", "mkldnn.rnn")
    return tuple((name, _backend(name)) for name in names)


# Only the operator-level settings are written: an operator's own value overrides its backend's
# and the generic one, so the backend-wide settings never need to change (PyTorch offers no public
# setter for the oneDNN-wide one).
_OPERATORS = _operators()


def _read(getter: Callable[[], Any]) -> Any:
    """A legacy flag's value, or None where PyTorch refuses to read it (legacy and new APIs mixed)."""
    try:
        return getter()
    except RuntimeError:
        return None


def _set_cudnn_allow_tf32(value: bool) -> None:
    torch.backends.cudnn.allow_tf32 = value


@dataclass(frozen=True)
class Float32Flags:
    """The global flags that decide whether float32 ops may use reduced precision.

    ``operators``: the ``fp32_precision`` each operator-level setting reads (``cudnn.conv``,
    ``cudnn.rnn``, ``cuda.matmul``, ``mkldnn.conv``, ``mkldnn.matmul``, ``mkldnn.rnn``; empty
    before PyTorch 2.9), which is what the kernels use: the operator's own value, else
    inherited from its backend's or the generic setting. ``cudnn_allow_tf32`` and ``matmul_precision``: the legacy
    ``torch.backends.cudnn.allow_tf32`` and ``torch.get_float32_matmul_precision()``, which
    PyTorch keeps as state of their own and refuses to read when they disagree with the
    operator-level settings (None: unreadable, then left as found).
    """

    operators: tuple[str, ...]
    cudnn_allow_tf32: bool | None
    matmul_precision: str | None

    @classmethod
    @eager  # global state, not tensor code: compiled callers run it eagerly
    def capture(cls) -> Float32Flags:
        """The current global flags."""
        return cls(
            tuple(obj.fp32_precision for _, obj in _OPERATORS),
            _read(lambda: torch.backends.cudnn.allow_tf32),
            _read(torch.get_float32_matmul_precision),
        )

    def as_ieee(self) -> Float32Flags:
        """These flags with every reduced-precision permission withdrawn (unreadable legacy flags left as they are)."""
        return replace(
            self,
            operators=("ieee",) * len(self.operators),
            cudnn_allow_tf32=None if self.cudnn_allow_tf32 is None else False,
            matmul_precision=None if self.matmul_precision is None else "highest",
        )

    @property
    def exact(self) -> bool:
        """Whether these flags allow nothing but IEEE float32 (as :func:`full_float32` sets them)."""
        return self == self.as_ieee()

    @eager
    def apply(self) -> None:
        """Make these the global flags."""
        # Legacy setters first: they also write operator-level settings, which then get their values.
        if self.cudnn_allow_tf32 is not None:
            _set_cudnn_allow_tf32(self.cudnn_allow_tf32)
        if self.matmul_precision is not None:
            torch.set_float32_matmul_precision(self.matmul_precision)
        for (_, obj), value in zip(_OPERATORS, self.operators, strict=False):
            # An operator reads its own setting, else its backend's, else the generic one: where
            # inheriting gives the value, inherit, so that the user's later changes of a backend-wide
            # or generic setting still reach it.
            obj.fp32_precision = "none"
            if obj.fp32_precision != value:
                obj.fp32_precision = value

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
    return Float32Flags.capture().as_ieee().applied()


def conv_precision_key() -> object:
    """What decides the precision of float32 convolutions right now, as a hashable value.

    Compiled code that bakes the choice in (inductor's Triton convolution templates, under
    ``max-autotune``) must be keyed on it: dynamo does not guard on these flags.
    """
    if _OPERATORS:
        return _OPERATORS[0][1].fp32_precision, _backend("cudnn.fp32_precision"), _backend("fp32_precision")
    return _read(lambda: torch.backends.cudnn.allow_tf32)
