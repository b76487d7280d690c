"""Figure 4, local conditioning: singular values of the Jacobian ∂Φ/∂x at an input.

The input perturbation is restricted to a pixel window ``(top, left, height, width)``:
the Jacobian is then the ``Φ.numel() x (C * height * width)`` matrix of partial derivatives of Φ
with respect to the pixels inside the window. The paper (100x100 window of an ImageNet
image) finds the normalized singular values decay fast, so the local inverse is
ill-conditioned although Φ is exactly invertible.

Three methods, all built on ``torch.func`` Jacobian-vector products (the model is run in
eval mode on a private copy):

- ``"exact"``: the full Jacobian column by column in float64 (``vmap`` of ``jvp`` over the
  identity, in chunks) and its SVD: every singular value to ~1e-13 relative to σ₁.
- ``"float32"``: the same columns in float32, four to six times faster on a CPU, and the
  eigenvalues of their Gram matrix in float64 (cheaper than an SVD; the products of float32
  numbers are exact in float64). By Weyl's inequality every σ_i moves
  by at most ‖E‖₂ ≤ ‖E‖_F, E the columns' rounding error, so every σ_i/σ₁ is within
  ``2‖E‖_F/σ₁`` of the exact value. ‖E‖_F is estimated from a few columns recomputed in
  float64 (:data:`CHECK_COLUMNS`, evenly spaced over the window) as their relative error
  times ‖Ĵ‖_F (:func:`float32_error_bound`); :func:`spectrum_summary` reports the bound as
  ``normalized_abs_error``.
- ``"lanczos"``: the top ``k`` singular values by ARPACK's implicitly restarted Lanczos
  (:func:`scipy.sparse.linalg.svds`) on the operator ``v -> J v`` (``jvp``) /
  ``u -> Jᵀ u`` (``vjp``) in float64, never forming J. Accuracy: ARPACK stops when every
  returned Ritz value has converged to relative tolerance ``tol`` (default 1e-6); the tests
  check the top values against the exact SVD to relative error 1e-5. Only the top ``k``
  values are known, so the condition number is then only bounded from below by σ₁/σ_k.

``"auto"`` (the default) picks by the window's input dimension n: exact up to
:data:`FLOAT64_MAX_DIMS`, float32 columns up to :data:`EXACT_MAX_DIMS`, Lanczos above.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, svds
from torch import Tensor
from torch.func import jvp, vjp, vmap
from tqdm.auto import tqdm

from ..model import IRevNet
from .inversion import copy_in_dtype

__all__ = [
    "CHECK_COLUMNS",
    "EXACT_MAX_DIMS",
    "FLOAT64_MAX_DIMS",
    "METHODS",
    "PAPER_WINDOW_FRACTION",
    "WHOLE_IMAGE_MAX_DIMS",
    "Window",
    "default_window",
    "float32_error_bound",
    "jacobian_singular_values",
    "jacobian_spectrum",
    "spectrum_summary",
]

log = logging.getLogger(__name__)

#: (top, left, height, width) of the perturbed pixel box.
Window = tuple[int, int, int, int]

METHODS = ("auto", "exact", "float32", "lanczos")
#: Largest window input dimension (C * height * width) for which "auto" builds the whole Jacobian.
EXACT_MAX_DIMS = 4096
#: Largest window input dimension for which "auto" builds it in float64 (a few seconds on any model
#: that fits a CPU's memory); from there to EXACT_MAX_DIMS, from float32 columns.
FLOAT64_MAX_DIMS = 256
#: Float32 columns recomputed in float64 to estimate the float32 Jacobian's error.
CHECK_COLUMNS = 16


#: Largest input dimension (C * H * W) whose whole image is the default window.
WHOLE_IMAGE_MAX_DIMS = 1024
#: The paper's window: 100 of an ImageNet image's 224 pixels on each side.
PAPER_WINDOW_FRACTION = 100 / 224


def default_window(input_shape: tuple[int, int, int]) -> Window | None:
    """The whole image (None) up to :data:`WHOLE_IMAGE_MAX_DIMS` input dimensions, else the paper's window:
    a centred box of 100/224 of each side (100x100 on 224x224, 14x14 on 32x32: 588 dimensions
    instead of 3,072 for CIFAR, so the default spectrum of a deep CIFAR model takes seconds, not minutes).
    """
    c, h, w = input_shape
    if c * h * w <= WHOLE_IMAGE_MAX_DIMS:
        return None
    hh, ww = (max(1, round(side * PAPER_WINDOW_FRACTION)) for side in (h, w))
    return (h - hh) // 2, (w - ww) // 2, hh, ww


def _windowed_features(model: IRevNet, x: Tensor, window: Window) -> Callable[[Tensor], Tensor]:
    """``v (C*height*width,) -> Φ(x + v placed in the window).flatten()``; its Jacobian at 0 is ∂Φ/∂x on the window."""
    c, h, w = x.shape
    top, left, hh, ww = window
    pads = (left, w - left - ww, top, h - top - hh)

    def f(v: Tensor) -> Tensor:
        delta = F.pad(v.reshape(1, c, hh, ww), pads)
        return model.forward_features(x.unsqueeze(0) + delta).reshape(-1)

    return f


def _check_window(window: Window | None, shape: Sequence[int]) -> Window:
    """``window`` as ints, or the whole image of ``shape`` (..., H, W); ValueError if it does not fit."""
    h, w = shape[-2:]
    if window is None:
        return 0, 0, h, w
    top, left, hh, ww = (int(v) for v in window)
    if hh < 1 or ww < 1 or top < 0 or left < 0 or top + hh > h or left + ww > w:
        raise ValueError(f"window (top, left, height, width)={tuple(window)} does not fit in a {h}x{w} image")
    return top, left, hh, ww


def jacobian_singular_values(
    model: IRevNet,
    x: Tensor,
    window: Window | None = None,
    *,
    method: str = "auto",
    k: int | None = None,
    exact_max_dims: int = EXACT_MAX_DIMS,
    float64_max_dims: int = FLOAT64_MAX_DIMS,
    chunk_size: int = 256,
    tol: float = 1e-6,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> Tensor:
    """Singular values of ∂Φ/∂x at ``x`` (one input (C, H, W)), perturbing only the pixels in ``window``.

    Returns a 1-D float64 CPU tensor, decreasing: all ``n = C*height*width`` values with
    ``method="exact"`` or ``"float32"`` (or the top ``k`` of them if ``k`` is given), the top
    ``k`` with ``method="lanczos"`` (``k`` default ``min(300, n - 1)``). ``"auto"`` is exact
    when ``n <= float64_max_dims``, float32 when ``n <= exact_max_dims``, else Lanczos (see the
    module docstring for the accuracy of each). ``dtype``: the precision of the exact and
    Lanczos methods. ``chunk_size`` bounds how many JVPs run at once (memory); ``seed`` fixes
    ARPACK's start vector. ``model`` itself is not modified. ``progress`` shows a bar: Jacobian
    columns with an ETA, or Jacobian-vector products with their rate (Lanczos).
    """
    if x.ndim != 3 or x.shape[0] != model.input_shape[0]:
        raise ValueError(f"x must be one input (C, H, W) like {model.input_shape}, got shape {tuple(x.shape)}")
    window = _check_window(window, tuple(x.shape))
    n = x.shape[0] * window[2] * window[3]
    method = _resolve(method, n, exact_max_dims=exact_max_dims, float64_max_dims=float64_max_dims)
    with warnings.catch_warnings():
        # torch's forward-mode AD scripts its decompositions on first use (a deprecation notice).
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        if method == "lanczos":
            return _lanczos(*_function(model, x, window, dtype), k, tol=tol, seed=seed, progress=progress)
        f, v0 = _function(model, x, window, torch.float32 if method == "float32" else dtype)
        columns = _columns(f, v0, torch.arange(n), chunk_size, progress=progress)  # (n, m): Jᵀ
    log.debug("Jacobian %d x %d from %s columns", columns.shape[1], n, columns.dtype)
    s = _gram_singular_values(columns) if method == "float32" else torch.linalg.svdvals(columns.T)
    return s.cpu() if k is None else s[:k].cpu()


def _gram_singular_values(columns: Tensor, block: int = 4096) -> Tensor:
    """Singular values (decreasing, float64) of the float32 matrix ``columns`` (n, m), n <= m, from its
    float64 Gram matrix: a few times cheaper than an SVD of the (m, n) matrix.

    Products of float32 numbers are exact in float64, so the Gram matrix is off by its sums'
    rounding only (~1e-16 relative): far below the float32 columns' own error, which
    :func:`float32_error_bound` measures. Summed over blocks of ``block`` outputs (memory).
    """
    gram = sum(part.double() @ part.double().T for part in columns.split(block, dim=1))
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt()


def _resolve(
    method: str, n: int, *, exact_max_dims: int = EXACT_MAX_DIMS, float64_max_dims: int = FLOAT64_MAX_DIMS
) -> str:
    """The method that ``method`` means for a window of ``n`` input dimensions ("auto" picks by ``n``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method != "auto":
        return method
    return "exact" if n <= float64_max_dims else "float32" if n <= exact_max_dims else "lanczos"


def float32_error_bound(
    model: IRevNet, x: Tensor, window: Window | None, singular_values: Tensor, *, columns: int = CHECK_COLUMNS
) -> float:
    """A bound on ``|σ̂_i/σ̂_1 - σ_i/σ_1|`` for the ``singular_values`` σ̂ of the float32 method at ``x``.

    Weyl: ``|σ̂_i - σ_i| <= ‖E‖₂ <= ‖E‖_F`` for the float32 Jacobian Ĵ = J + E, so each normalized
    value is off by at most ``2‖E‖_F/σ̂_1``. ``‖E‖_F`` is estimated as ``‖Ĵ‖_F`` (the norm of
    ``singular_values``, which must be all of them) times the relative error of ``columns``
    columns, evenly spaced over the window, computed in float32 and in float64.
    """
    window = _check_window(window, tuple(x.shape))
    n = x.shape[0] * window[2] * window[3]
    which = torch.linspace(0, n - 1, min(columns, n)).round().long().unique()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        approx, exact = (
            _columns(*_function(model, x, window, dtype), which, len(which)).double()
            for dtype in (torch.float32, torch.float64)
        )
    relative = float((approx - exact).norm() / exact.norm().clamp_min(1e-300))
    return 2 * relative * float(singular_values.norm() / singular_values[0])


def _function(
    model: IRevNet, x: Tensor, window: Window, dtype: torch.dtype
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """``(f, v0)``: :func:`_windowed_features` of a private copy of ``model`` in eval mode, in
    ``dtype``, and the point 0 of its ``n`` inputs (the Jacobian of ``f`` at ``v0`` is ∂Φ/∂x on the window).

    Eval mode: BatchNorm uses its running statistics (the function the checkpoint defines).
    """
    net = copy_in_dtype(model, dtype).eval().requires_grad_(False)
    x = x.detach().to(device=next(net.parameters()).device, dtype=dtype)
    return _windowed_features(net, x, window), x.new_zeros(x.shape[0] * window[2] * window[3])


def _columns(
    f: Callable[[Tensor], Tensor], v0: Tensor, which: Tensor, chunk_size: int, *, progress: bool = False
) -> Tensor:
    """Columns ``which`` (indices) of the Jacobian of ``f`` at ``v0``, by batched JVPs: ``(len(which), m)``."""
    column = vmap(lambda e: jvp(f, (v0,), (e,))[1])
    chunks = []
    with tqdm(total=len(which), desc="Jacobian", unit="column", disable=not progress, leave=False) as bar:
        for start in range(0, len(which), chunk_size):
            idx = which[start : start + chunk_size].to(v0.device)
            basis = torch.zeros(len(idx), v0.numel(), dtype=v0.dtype, device=v0.device)
            basis[torch.arange(len(idx), device=v0.device), idx] = 1
            chunks.append(column(basis))
            bar.update(len(idx))
    return torch.cat(chunks)


def _lanczos(
    f: Callable[[Tensor], Tensor], v0: Tensor, k: int | None, *, tol: float, seed: int, progress: bool = False
) -> Tensor:
    """The top ``k`` singular values of the Jacobian of ``f`` at ``v0`` by ARPACK, from JVPs and VJPs only."""
    n = v0.numel()
    m = f(v0).numel()
    k = min(300, n - 1) if k is None else k
    if not 1 <= k < min(m, n):
        raise ValueError(f"the Lanczos method needs 1 <= k < min(outputs, inputs) = {min(m, n)}, got k={k}")
    pull = vjp(f, v0)[1]

    def to_torch(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64).reshape(-1)).to(v0.device, v0.dtype)

    # ARPACK's iteration count is not known in advance: the bar counts products and shows their rate.
    bar = tqdm(desc=f"Lanczos (top {k})", unit="product", disable=not progress, leave=False)

    def counted(product: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        def run(a: np.ndarray) -> np.ndarray:
            out = product(a)
            bar.update(1)
            return out

        return run

    op = LinearOperator(
        (m, n),
        dtype=np.float64,
        matvec=counted(lambda u: jvp(f, (v0,), (to_torch(u),))[1].double().cpu().numpy()),
        rmatvec=counted(lambda w: pull(to_torch(w))[0].double().cpu().numpy()),
    )
    with bar:
        s = svds(op, k=k, tol=tol, return_singular_vectors=False, random_state=seed)
    return torch.from_numpy(np.sort(s)[::-1].copy())


def jacobian_spectrum(model: IRevNet, x: Tensor, window: Window | None = None, **kwargs: Any) -> Tensor:
    """Sorted singular values of ∂Φ/∂x at ``x``, normalized by the largest (so the first is 1).

    ``x``: one input of shape ``model.input_shape``; ``window``: ``(top, left, height, width)``
    pixel box that the perturbation is restricted to, None for the whole image.
    ``kwargs`` go to :func:`jacobian_singular_values` (method, k, ...). The condition number
    of the windowed Jacobian is ``1 / spectrum[-1]`` when all values were computed.
    """
    s = jacobian_singular_values(model, x, window, **kwargs)
    return s / s[0]


def spectrum_summary(
    model: IRevNet, images: Tensor, window: Window | None = None, *, progress: bool = True, **kwargs: Any
) -> dict[str, Any]:
    """:func:`jacobian_singular_values` at each image of ``images`` (N, C, H, W), as plain data.

    Returns ``{"window": [top, left, height, width], "input_dims": n, "complete": bool,
    "method": "exact" | "float32" | "lanczos", "singular_values": [[σ...] per image],
    "normalized": [[σ/σ₁...] per image], "condition_number": [σ₁/σ_n per image] (None unless
    complete), "top_ratio": [σ₁/σ_last computed per image], "normalized_abs_error": [bound per
    image] (float32 only, else None)}``. ``complete`` is True when all ``n`` values were
    computed; with the float32 method every ``normalized`` value is within
    ``normalized_abs_error`` of the exact one (see the module docstring).
    """
    box = _check_window(window, tuple(images.shape[1:]))
    n = images.shape[1] * box[2] * box[3]
    limits = {key: kwargs[key] for key in ("exact_max_dims", "float64_max_dims") if key in kwargs}
    kwargs["method"] = method = _resolve(kwargs.get("method", "auto"), n, **limits)
    values, errors = [], []
    for img in tqdm(images, desc="spectrum", unit="image", disable=not progress, leave=False):
        values.append(jacobian_singular_values(model, img, window, progress=progress, **kwargs))
        if method == "float32" and len(values[-1]) == n:
            errors.append(float32_error_bound(model, img, window, values[-1]))
    complete = all(len(s) == n for s in values)
    if errors and any(float(s[-1] / s[0]) <= e for s, e in zip(values, errors, strict=False)):
        log.warning(
            "the smallest singular values are below the float32 Jacobian's accuracy (%.1e relative to "
            "σ_1): the condition number is not resolved; use the exact method",
            max(errors),
        )
    return {
        "window": list(box),
        "input_dims": n,
        "complete": complete,
        "method": method,
        "singular_values": [s.tolist() for s in values],
        "normalized": [(s / s[0]).tolist() for s in values],
        "condition_number": [float(s[0] / s[-1]) for s in values] if complete else None,
        "top_ratio": [float(s[0] / s[-1]) for s in values],
        "normalized_abs_error": errors or None,
    }
