"""Figure 4, local conditioning: singular values of the Jacobian ∂Φ/∂x at an input.

The input perturbation is restricted to a pixel window ``(top, left, height, width)``:
the Jacobian is then the ``Φ.numel() x (C * height * width)`` matrix of partial derivatives of Φ
with respect to the pixels inside the window. The paper (100x100 window of an ImageNet
image) finds the normalized singular values decay fast, so the local inverse is
ill-conditioned although Φ is exactly invertible.

Two methods, both built on ``torch.func`` Jacobian-vector products (the model is run in
eval mode, in float64 by default, on a private copy):

- ``"exact"``: the full Jacobian column by column (``vmap`` of ``jvp`` over the identity,
  in chunks) and its SVD. Cost grows with the window's input dimension; the default
  switches away from it above ``exact_max_dims`` = 4,096.
- ``"lanczos"``: the top ``k`` singular values by ARPACK's implicitly restarted Lanczos
  (:func:`scipy.sparse.linalg.svds`) on the operator ``v -> J v`` (``jvp``) /
  ``u -> Jᵀ u`` (``vjp``), never forming J. Accuracy: ARPACK stops when every returned
  Ritz value has converged to relative tolerance ``tol`` (default 1e-6); the tests check
  the top values against the exact SVD to relative error 1e-5. Only the top ``k`` values
  are known, so the condition number is then only bounded from below by σ₁/σ_k.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, svds
from torch import Tensor
from torch.func import jvp, vjp, vmap
from tqdm.auto import tqdm

from ..model import IRevNet

__all__ = ["Window", "EXACT_MAX_DIMS", "default_window", "jacobian_singular_values", "jacobian_spectrum",
           "spectrum_summary"]

log = logging.getLogger(__name__)

#: (top, left, height, width) of the perturbed pixel box.
Window = tuple[int, int, int, int]

#: Largest window input dimension (C * height * width) for which "auto" builds the exact Jacobian.
EXACT_MAX_DIMS = 4096


def default_window(input_shape: tuple[int, int, int], side: int = 100) -> Window | None:
    """The whole image (None) when both sides are at most ``side``, else a centred ``side x side`` box.

    ``side=100`` gives the paper's 100x100 window on ImageNet-size inputs.
    """
    _, h, w = input_shape
    if h <= side and w <= side:
        return None
    hh, ww = min(h, side), min(w, side)
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
    chunk_size: int = 64,
    tol: float = 1e-6,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> Tensor:
    """Singular values of ∂Φ/∂x at ``x`` (one input (C, H, W)), perturbing only the pixels in ``window``.

    Returns a 1-D CPU tensor (float64 by default), decreasing: all ``n = C*height*width`` values with
    ``method="exact"`` (or the top ``k`` of them if ``k`` is given), the top ``k`` with
    ``method="lanczos"`` (``k`` default ``min(300, n - 1)``). ``"auto"`` is exact when
    ``n <= exact_max_dims``. ``chunk_size`` bounds how many JVPs run at once (memory);
    ``seed`` fixes ARPACK's start vector. ``model`` itself is not modified. ``progress`` shows a
    bar: Jacobian columns with an ETA (exact), or Jacobian-vector products with their rate (Lanczos).
    """
    if x.ndim != 3 or x.shape[0] != model.input_shape[0]:
        raise ValueError(f"x must be one input (C, H, W) like {model.input_shape}, got shape {tuple(x.shape)}")
    if method not in ("auto", "exact", "lanczos"):
        raise ValueError(f"method must be 'auto', 'exact' or 'lanczos', got {method!r}")
    window = _check_window(window, tuple(x.shape))
    n = x.shape[0] * window[2] * window[3]
    if method == "auto":
        method = "exact" if n <= exact_max_dims else "lanczos"
    # A private float64 copy in eval mode: BN uses running statistics (the function the
    # checkpoint defines), and float32 rounding would swamp the smallest singular values.
    net = copy.deepcopy(model).eval().to(dtype).requires_grad_(False)
    x = x.detach().to(device=next(net.parameters()).device, dtype=dtype)
    f = _windowed_features(net, x, window)
    v0 = x.new_zeros(n)
    with warnings.catch_warnings():
        # torch's forward-mode AD scripts its decompositions on first use (a deprecation notice).
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        if method == "exact":
            s = _exact(f, v0, chunk_size, progress=progress)
            return s if k is None else s[:k]
        return _lanczos(f, v0, k, tol=tol, seed=seed, progress=progress)


def _exact(f: Callable[[Tensor], Tensor], v0: Tensor, chunk_size: int, *, progress: bool = False) -> Tensor:
    """All singular values of the Jacobian of ``f`` at ``v0``, built column by column with JVPs."""
    n = v0.numel()
    basis = torch.eye(n, dtype=v0.dtype, device=v0.device)
    column = vmap(lambda e: jvp(f, (v0,), (e,))[1])
    chunks = []
    with tqdm(total=n, desc="Jacobian", unit="column", disable=not progress, leave=False) as bar:
        for start in range(0, n, chunk_size):
            chunks.append(column(basis[start:start + chunk_size]))
            bar.update(chunks[-1].shape[0])
    columns = torch.cat(chunks)  # (n, m): Jᵀ
    log.debug("exact Jacobian %d x %d", columns.shape[1], columns.shape[0])
    return torch.linalg.svdvals(columns).cpu()


def _lanczos(f: Callable[[Tensor], Tensor], v0: Tensor, k: int | None, *, tol: float, seed: int,
             progress: bool = False) -> Tensor:
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
        (m, n), dtype=np.float64,
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
    "singular_values": [[σ...] per image], "normalized": [[σ/σ₁...] per image],
    "condition_number": [σ₁/σ_n per image] (None unless complete), "top_ratio": [σ₁/σ_last
    computed per image]}``. ``complete`` is True when all ``n`` values were computed.
    """
    box = _check_window(window, tuple(images.shape[1:]))
    n = images.shape[1] * box[2] * box[3]
    values = [jacobian_singular_values(model, img, window, progress=progress, **kwargs)
              for img in tqdm(images, desc="spectrum", unit="image", disable=not progress, leave=False)]
    complete = all(len(s) == n for s in values)
    return {
        "window": list(box),
        "input_dims": n,
        "complete": complete,
        "singular_values": [s.tolist() for s in values],
        "normalized": [(s / s[0]).tolist() for s in values],
        "condition_number": [float(s[0] / s[-1]) for s in values] if complete else None,
        "top_ratio": [float(s[0] / s[-1]) for s in values],
    }
