"""Does a state dict fit a model? The one check, naming every missing, unexpected and mis-shaped tensor.

``load_state_dict`` copies what fits before it refuses a mis-shaped tensor, and names only
what it meets first; :func:`check_fit` looks at everything before anything is copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..errors import CheckpointError

__all__ = ["Fit", "check_fit", "load_fitting"]


@dataclass(frozen=True)
class Fit:
    """How a state dict differs from the one expected; ``ok`` when it does not.

    ``missing``: expected keys it lacks; ``unexpected``: its keys that are not expected (or
    hold no tensor); ``misshaped``: ``(key, its shape, expected shape)``. All sorted.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)

    def describe(self, limit: int = 5) -> str:
        """One line: ``missing tensors: a, b; unexpected tensors: c; mis-shaped tensors: d (3, 3) (expected (4, 5))``,
        at most ``limit`` keys per kind."""

        def few(items: list[str]) -> str:
            return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")

        shaped = [f"{k} {got} (expected {want})" for k, got, want in self.misshaped]
        return "; ".join(
            f"{label}: {few(items)}"
            for label, items in (
                ("missing tensors", self.missing),
                ("unexpected tensors", self.unexpected),
                ("mis-shaped tensors", shaped),
            )
            if items
        )


def check_fit(expected: Mapping[str, Tensor], state: Mapping[str, Any], *, optional: Iterable[str] = ()) -> Fit:
    """Compare ``state`` with ``expected`` (a model's ``state_dict()``) by keys and shapes.

    Keys in ``optional`` may be absent from ``state`` (they are then not missing).
    """
    optional = set(optional)
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    return Fit(
        missing=sorted(set(expected) - set(state) - optional),
        unexpected=sorted(k for k in state if k not in expected or k not in tensors),
        misshaped=sorted(
            (k, tuple(v.shape), tuple(expected[k].shape))
            for k, v in tensors.items()
            if k in expected and v.shape != expected[k].shape
        ),
    )


def load_fitting(
    model: nn.Module, state: Mapping[str, Tensor], *, source: str, problem: str, optional: Iterable[str] = ()
) -> None:
    """Copy ``state`` into ``model`` if it fits (:func:`check_fit`), else raise
    :class:`~irevnet.errors.CheckpointError` ``"'source' problem: <what differs>"``, leaving the model unchanged.
    ``optional`` keys absent from ``state`` keep the model's values."""
    optional = set(optional)
    fit = check_fit(model.state_dict(), state, optional=optional)
    if not fit.ok:
        raise CheckpointError(f"{source!r} {problem}: {fit.describe()}")
    model.load_state_dict(state, strict=not optional)
