"""Error bounds for the numerical tests that hold on any x86-64 CPU, and the conditioning floor.

Which kernels compute a convolution (MKL's im2col + GEMM for float64, oneDNN for float32,
AVX2 or AVX-512 code, 1 or 2 threads) decides the order of every sum, so the rounding
error of Φ⁻¹(Φ(x)) differs from one CPU to the next (by 3x between ``MKL_CBWR`` settings on
one AMD EPYC). A bound calibrated on one CPU fails on another. The bounds here follow from
the rounding model of numerical analysis instead, with the input's conditioning measured
in the same run:

**Model** (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, §2.2, §3.1;
Higham & Mary, SIAM J. Sci. Comput. 41, 2019). Every operation returns its exact result
times ``(1 + δ)`` with ``|δ| <= u`` (u = 2^-24 in float32, 2^-53 in float64), the δ
independent with mean zero. What the kernel may choose, the order of each sum, enters only
through the partial sums that get rounded; we take the worst order:

- a convolution or linear output ``y = Σ_{k≤K} w_k a_k`` (K = C_in·kh·kw products, summed
  one after another in any order unrelated to their signs: partial sums grow at most like
  the total plus a random walk of the products) has error
  ``<= sqrt(K)·u·(sqrt(Σ w_k² a_k²) + |y|)``;
- BatchNorm ``y = γ(h - μ)/σ + β``: ``2u(|γ h/σ| + |γ μ/σ| + |β|)`` per entry and, in train
  mode, the statistics of ``M = N·H·W`` entries each off by ``sqrt(M)·u`` times their scale
  (one error per channel); global average pooling of ``P`` non-negative entries: ``sqrt(P)·u``
  relative;
- each coupling's addition ``b = S(x1) + F(x2)`` and subtraction ``x1 = S⁻¹(b − F(x2))``:
  ``u·|result|``. ψ, splitting, merging, padding and ReLU are exact.

:func:`sensitivity` *emulates* that model: it evaluates Φ and Φ⁻¹ in float64, from their
definitions, adding to every rounded result its bound above times a random sign (a seeded
generator), once with u = 2^-24 and once with u = 0, and returns the difference per unit
roundoff: κ = ‖x̂_noisy − x̂_clean‖ / (u‖x‖) (likewise for Φ and the logits). κ is a
property of the function and the input: float64 evaluation of 2^-24 perturbations does not
depend on the CPU to any digit that matters.

**Bound.** The real error is ``e = Σ_i J_i δ_i s_i`` (to first order), a sum of independent
mean-zero terms with ``|δ_i| <= u``, so ``E‖e‖² <= u² Σ_i ‖J_i s_i‖²``; the emulated error
has the same terms with ``|δ_i| = u`` exactly, so its mean square is that upper value. Both
norms sum thousands of independent terms and stay within a factor 2 of their root mean
square (the emulated κ moves by a few per cent between generator seeds), hence::

    error <= LAMBDA · u · κ,   LAMBDA = 2,

in float32 and in float64 alike (first order in u: the float64 error is the float32 one
times 2^-29; measured, the two ratios error / (u κ) agree to 2x). Two float32 computations
of the same function (ours and a reference, eager and compiled or exported) each obey it,
so they differ by at most twice that. Measured ratios error / (LAMBDA u κ) are 0.01-0.07:
the worst summation order of the model is what real, blocked kernels improve on; a wrong
formula (O(1) errors) or a silent loss of precision (a float32 step in a float64
computation: 2^29x) is far outside.

**Conditioning floor** (what the library reports, :func:`irevnet.analysis.conditioning_floor`):
the relative error of the exact float64 inverse applied to Φ(x) merely rounded to float32.
It counts one rounding of Φ, not the roundings of the L blocks or inside F, so it is no
bound on our error (the ratio error / floor measured 0.1 to 34 across presets and CPUs);
tests use it only to check the report itself.

Set ``NUMERICS_RATIOS=path`` to append each checked ratio error / bound as a JSON line
(``tests/numerics_variants.sh`` prints the worst per test across kernel variants).
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irevnet.analysis import conditioning_floor
from irevnet.analysis.inversion import float64_copy
from irevnet.layers import merge, split

LAMBDA = 2.0
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}


def unit_roundoff(dtype: torch.dtype) -> float:
    return UNIT_ROUNDOFF[dtype]


@dataclass(frozen=True)
class Sensitivity:
    """Emulated rounding errors per unit roundoff (see the module docstring), per image and batch-wise.

    ``inverse``: (N,) ``‖Δx̂_i‖ / (u‖x_i‖)`` of Φ⁻¹(Φ(x)); ``forward``: (N,) ``‖ΔΦ_i‖ / (u‖Φ_i‖)``;
    ``logits``: (N,) the same for the head's output (``None`` when the model has no classifier
    or ``depth`` stops short of Φ). The ``*_batch`` floats are relative over the whole batch.
    """

    inverse: Tensor
    forward: Tensor
    logits: Tensor | None
    inverse_batch: float
    forward_batch: float

    def bound(self, of: str = "inverse", dtype: torch.dtype = torch.float32, *, computations: int = 1) -> Tensor:
        """(N,) ``LAMBDA·u·κ`` per image for ``of`` in "inverse", "forward", "logits"; times ``computations``
        for the difference of that many computations (each within the bound of the exact value)."""
        return computations * LAMBDA * unit_roundoff(dtype) * getattr(self, of)

    def batch_bound(self, of: str = "inverse", dtype: torch.dtype = torch.float32) -> float:
        """``LAMBDA·u·κ`` relative over the whole batch, ``of`` "inverse" or "forward"."""
        return LAMBDA * unit_roundoff(dtype) * getattr(self, f"{of}_batch")


def check(error: float | Tensor, bound: float | Tensor, what: str = "") -> None:
    """Assert ``error <= bound`` (elementwise for tensors) and record the worst ratio (``NUMERICS_RATIOS``)."""
    error, bound = torch.as_tensor(error, dtype=torch.float64), torch.as_tensor(bound, dtype=torch.float64)
    ratio = torch.where(error == 0, 0.0, error / bound).max().item()  # 0/0: an exactly zero value, exact
    path = os.environ.get("NUMERICS_RATIOS")
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "what": what, "ratio": ratio}) + "\n")
    assert bool((error <= bound).all()), f"{what}: error {error.max().item():.3g} is {ratio:.3g}x its bound"


def relative_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| over the whole batch, in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def per_image_relative_error(a: Tensor, b: Tensor) -> Tensor:
    """(N,) ||a_i - b_i|| / ||b_i|| in float64."""
    return (a.double() - b.double()).flatten(1).norm(dim=1) / b.double().flatten(1).norm(dim=1)


# -- the emulated rounding model ---------------------------------------------------------
class _Noise:
    """Forward hooks that add each rounded result's bound times a random sign (scale ``u``; 0: exact)."""

    def __init__(self, model: nn.Module, seed: int, *, backward: bool = False) -> None:
        self.u = 0.0
        self.gen = torch.Generator().manual_seed(seed)
        self.pool_size = 1
        self.squares: dict[nn.Module, Tensor] = {}  # squared weights, once per layer
        self.inputs: dict[nn.Module, list[Tensor]] = {}  # of calls that build a graph, for the backward
        self.grad_noise: dict[Tensor, Tensor] = {}  # added to each parameter's gradient after the backward
        self.handles = []
        layers = {nn.Conv2d: (self._conv, self._conv_backward), nn.Linear: (self._linear, self._linear_backward),
                  nn.BatchNorm2d: (self._batch_norm, self._batch_norm_backward)}
        for m in model.modules():
            for kind, (forward_hook, backward_hook) in layers.items():
                if isinstance(m, kind):
                    if kind is nn.Linear:
                        self.handles.append(m.register_forward_pre_hook(self._pool))
                    if backward:
                        self.handles.append(m.register_forward_hook(self._keep_input))
                        self.handles.append(m.register_full_backward_hook(backward_hook))
                    self.handles.append(m.register_forward_hook(forward_hook))
        head = getattr(model, "head", None)
        if head is not None:
            self.handles.append(head.register_forward_pre_hook(self._head))

    def sign(self, shape: torch.Size) -> Tensor:
        return torch.randint(0, 2, shape, generator=self.gen, dtype=torch.float64).mul_(2).sub_(1)

    def rounded(self, t: Tensor, scale: Tensor) -> Tensor:
        return t if self.u == 0 else t + self.u * scale * self.sign(t.shape)

    def squared_weight(self, m: nn.Module) -> Tensor:
        if m not in self.squares:
            self.squares[m] = m.weight.square()
        return self.squares[m]

    def _conv(self, m: nn.Conv2d, inputs: tuple[Tensor, ...], y: Tensor) -> Tensor:
        if self.u == 0:
            return y
        a = inputs[0]
        k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        rms = F.conv2d(a.square(), self.squared_weight(m), None, m.stride, m.padding, m.dilation, m.groups).clamp_min(0).sqrt()
        return self.rounded(y, math.sqrt(k) * (rms + y.abs()))

    def _linear(self, m: nn.Linear, inputs: tuple[Tensor, ...], y: Tensor) -> Tensor:
        if self.u == 0:
            return y
        rms = F.linear(inputs[0].square(), self.squared_weight(m)).clamp_min(0).sqrt()
        return self.rounded(y, math.sqrt(m.in_features) * (rms + y.abs()))

    def _head(self, m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        self.pool_size = inputs[0].shape[-1] * inputs[0].shape[-2]

    def _pool(self, m: nn.Linear, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        # The classifier's input is the average of P entries >= 0 (after ReLU).
        return (self.rounded(inputs[0], math.sqrt(self.pool_size) * inputs[0].abs()),)

    def _batch_norm(self, m: nn.BatchNorm2d, inputs: tuple[Tensor, ...], y: Tensor) -> Tensor:
        if self.u == 0:
            return y
        h = inputs[0]
        c = (1, -1, 1, 1)
        if m.training:
            mu, var = h.mean(dim=(0, 2, 3), keepdim=True), h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        else:
            mu, var = m.running_mean.view(c), m.running_var.view(c)
        gamma = m.weight.view(c) if m.weight is not None else torch.ones_like(mu)
        beta = m.bias.view(c) if m.bias is not None else torch.zeros_like(mu)
        alpha = gamma / (var + m.eps).sqrt()
        y = self.rounded(y, 2 * ((h * alpha).abs() + (mu * alpha).abs() + beta.abs()))
        if m.training and m.running_mean is not None:
            # The running statistics take in the batch's, each a sum of M entries.
            step = (m.momentum if m.momentum is not None else 1.0) / (h.numel() // h.shape[1])
            with torch.no_grad():  # new tensors: autograd may hold the old ones
                for name, terms in (("running_mean", h), ("running_var", (h - mu).square())):
                    buffer = getattr(m, name)
                    noise = self.sum_bound(terms, (0, 2, 3)).view(-1) * self.sign(buffer.shape)
                    setattr(m, name, buffer + self.u * step * noise)
        if m.training and self.u:
            root_m = math.sqrt(h.numel() // h.shape[1])
            mean_error = root_m * h.abs().mean(dim=(0, 2, 3), keepdim=True) * alpha.abs()
            std_error = root_m / 2 * h.square().mean(dim=(0, 2, 3), keepdim=True) / (var + m.eps)
            y = y + self.u * (mean_error * self.sign(mu.shape) + (y - beta).abs() * std_error * self.sign(mu.shape))
        return y

    # -- the backward: the same model for the sums that gradients take ----------------------
    def _keep_input(self, m: nn.Module, inputs: tuple[Tensor, ...], y: Tensor) -> None:
        if torch.is_grad_enabled():
            self.inputs.setdefault(m, []).append(inputs[0].detach())

    def sum_bound(self, terms: Tensor, dims: tuple[int, ...]) -> Tensor:
        """Bound on the rounding of ``terms.sum(dims)``: ``sqrt(M)·(sqrt(Σ t²) + |Σ t|)`` for M terms."""
        count = math.prod(terms.shape[d] for d in dims)
        return math.sqrt(count) * (terms.square().sum(dims, keepdim=True).sqrt() + terms.sum(dims, keepdim=True).abs())

    def add_grad_noise(self, p: Tensor | None, scale: Tensor) -> None:
        if p is not None and self.u:
            noise = self.u * scale.reshape(p.shape) * self.sign(p.shape)
            self.grad_noise[p] = self.grad_noise.get(p, 0) + noise

    def _conv_backward(self, m: nn.Conv2d, grad_input: tuple[Tensor | None, ...], grad_output: tuple[Tensor, ...]):
        a, go = self.inputs[m].pop(), grad_output[0]
        if not self.u:
            return None
        args = (m.stride, m.padding, m.dilation, m.groups)
        # weight: a sum over the N·H·W output positions; bias: the same sums of go alone
        rms = torch.nn.grad.conv2d_weight(a.square(), m.weight.shape, go.square(), *args).clamp_min(0).sqrt()
        gw = torch.nn.grad.conv2d_weight(a, m.weight.shape, go, *args)
        self.add_grad_noise(m.weight, math.sqrt(go.numel() // go.shape[1]) * (rms + gw.abs()))
        if m.bias is not None:
            self.add_grad_noise(m.bias, self.sum_bound(go, (0, 2, 3)))
        gi = grad_input[0]
        if gi is None:
            return None
        # input: each entry sums at most C_out·kh·kw products
        k = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        rms = torch.nn.grad.conv2d_input(a.shape, self.squared_weight(m), go.square(), *args).clamp_min(0).sqrt()
        return (self.rounded(gi, math.sqrt(k) * (rms + gi.abs())),)

    def _linear_backward(self, m: nn.Linear, grad_input: tuple[Tensor | None, ...], grad_output: tuple[Tensor, ...]):
        a, go = self.inputs[m].pop(), grad_output[0]
        if not self.u:
            return None
        n = go.shape[0]
        self.add_grad_noise(m.weight, math.sqrt(n) * ((go.square().T @ a.square()).clamp_min(0).sqrt() + (go.T @ a).abs()))
        if m.bias is not None:
            self.add_grad_noise(m.bias, self.sum_bound(go, (0,)))
        gi = grad_input[0]
        if gi is None:
            return None
        rms = (go.square() @ self.squared_weight(m)).clamp_min(0).sqrt()
        return (self.rounded(gi, math.sqrt(m.out_features) * (rms + gi.abs())),)

    def _batch_norm_backward(self, m: nn.BatchNorm2d, grad_input: tuple[Tensor | None, ...],
                             grad_output: tuple[Tensor, ...]):
        h, g = self.inputs[m].pop(), grad_output[0]
        if not self.u:
            return None
        dims, c = (0, 2, 3), (1, -1, 1, 1)
        if m.training:
            mu, var = h.mean(dim=dims, keepdim=True), h.var(dim=dims, unbiased=False, keepdim=True)
        else:
            mu, var = m.running_mean.view(c), m.running_var.view(c)
        x_hat = (h - mu) / (var + m.eps).sqrt()
        alpha = (m.weight.view(c) if m.weight is not None else torch.ones_like(mu)) / (var + m.eps).sqrt()
        sum_g, sum_gx = self.sum_bound(g, dims), self.sum_bound(g * x_hat, dims)
        self.add_grad_noise(m.weight, sum_gx)
        self.add_grad_noise(m.bias, sum_g)
        gi = grad_input[0]
        if gi is None:
            return None
        if not m.training:
            return (self.rounded(gi, alpha.abs() * g.abs()),)
        # α(g − mean g − x̂·mean(g x̂)): a few roundings per entry, and the two means (one error per channel)
        count = h.numel() // h.shape[1]
        mean_g, mean_gx = g.mean(dims, keepdim=True), (g * x_hat).mean(dims, keepdim=True)
        gi = self.rounded(gi, 3 * alpha.abs() * (g.abs() + mean_g.abs() + x_hat.abs() * mean_gx.abs()))
        channel = alpha.abs() * (sum_g + x_hat.abs() * sum_gx) / count
        return (gi + self.u * channel * self.sign(mu.shape),)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _forward(model: nn.Module, x: Tensor, depth: int, noise: _Noise) -> Tensor:
    """Φ_depth(x) in float64, rounding as ``noise`` says (the coupling's addition; hooks do the layers)."""
    pair = split(model.init_psi(x.double()))
    for block in model.blocks[:depth]:
        a, b = block(pair)
        pair = (a, noise.rounded(b, b.abs()))
    return merge(*pair)


def _inverse(model: nn.Module, z: Tensor, depth: int, noise: _Noise) -> Tensor:
    """Φ_depth⁻¹(z) from the blocks' definition, ``x2 = S⁻¹(a)``, ``x1 = S⁻¹(b − F(x2))``.

    F is called as a module, so its BatchNorm hooks fire (statistics updates do not matter
    on the emulation's copy).
    """
    pair = split(z.double())
    for block in reversed(model.blocks[:depth]):
        a, b = pair
        x2 = block.psi.inverse(block.restore_zeros(a))
        x1 = block.psi.inverse(b - block.bottleneck(x2))
        pair = block.unpad_pair((noise.rounded(x1, x1.abs()), x2))
    return model.init_psi.inverse(merge(*pair))


def _emulate(model: nn.Module, x: Tensor, depth: int, noise: _Noise) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(Φ_depth(x), Φ_depth⁻¹(Φ_depth(x)), logits)`` in float64, rounding as ``noise`` says."""
    with torch.no_grad():
        phi = _forward(model, x, depth, noise)
        logits = None
        if depth == model.depth and isinstance(model.head.fc, nn.Linear):
            logits = model.forward_head(phi)
        return phi, _inverse(model, phi, depth, noise), logits


def _float64_copy(model: nn.Module) -> nn.Module:
    if model.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        raise ValueError("train-mode dropout: the inverse is undefined")
    return float64_copy(model)


def _norm_ratio(diff: Tensor, reference: Tensor, u: float) -> Tensor:
    """(N,) ``‖diff_i‖ / (u‖reference_i‖)``."""
    return diff.flatten(1).norm(dim=1) / (u * reference.flatten(1).norm(dim=1))


def sensitivity(
    model: nn.Module,
    x: Tensor,
    *,
    depth: int | None = None,
    to_pixels: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
) -> Sensitivity:
    """κ of Φ, of the logits and of Φ⁻¹(Φ(x)) for the model in its current mode (module docstring).

    ``x``: (N, C, H, W). ``depth``: stop after that many blocks (:meth:`IRevNet.inverse`'s
    ``depth``); ``to_pixels``: an affine map applied to inputs and reconstructions before
    the inverse's error is measured (as :func:`irevnet.analysis.reconstruct` does). The
    model is not changed (a float64 copy is used). Costs about four float64 passes.
    """
    m = _float64_copy(model)
    depth = m.depth if depth is None else depth
    noise = _Noise(m, seed)
    try:
        phi, x_hat, logits = _emulate(m, x, depth, noise)
        noise.u = unit_roundoff(torch.float32)
        phi_n, x_hat_n, logits_n = _emulate(m, x, depth, noise)
    finally:
        noise.remove()
    u = noise.u
    pix = to_pixels or (lambda t: t)
    ref, d_inv = pix(x.double()), pix(x_hat_n) - pix(x_hat)
    return Sensitivity(
        inverse=_norm_ratio(d_inv, ref, u),
        forward=_norm_ratio(phi_n - phi, phi, u),
        logits=None if logits is None else _norm_ratio(logits_n - logits, logits, u),
        inverse_batch=(d_inv.norm() / (u * ref.norm())).item(),
        forward_batch=((phi_n - phi).norm() / (u * phi.norm())).item(),
    )


def representation_sensitivity(model: nn.Module, z: Tensor, *, depth: int | None = None, seed: int = 0) -> Tensor:
    """(N,) κ of the other round trip, ``Φ_depth(Φ_depth⁻¹(z))``: ``‖Δẑ_i‖ / (u‖z_i‖)`` (module docstring).

    ``z``: representations after ``depth`` blocks (default all), e.g. edited ones. Its bound
    in ``dtype`` is ``LAMBDA·unit_roundoff(dtype)·κ`` per image, relative to ‖z_i‖.
    """
    m = _float64_copy(model)
    depth = m.depth if depth is None else depth
    noise = _Noise(m, seed)
    out = []
    try:
        with torch.no_grad():
            for u in (0.0, unit_roundoff(torch.float32)):
                noise.u = u
                out.append(_forward(m, _inverse(m, z, depth, noise), depth, noise))
    finally:
        noise.remove()
    return _norm_ratio(out[1] - out[0], z.double(), noise.u)


def gradient_sensitivity(model: nn.Module, x: Tensor, y: Tensor, *, rng_seed: int = 0, input_grad: bool = True,
                         seed: int = 0) -> Tensor:
    """Emulated rounding error of each gradient of one step, ``cross_entropy(model(x), y).backward()``,
    per unit roundoff and absolute: ``‖Δg‖ / u``, shape ``(1 + #parameters,)``, order ``[x, *parameters]``
    (x's entry 0 unless ``input_grad``). A computed gradient is within ``LAMBDA·u`` times it of the exact one.

    The rounding model of the module docstring for the forward, and for the backward its sums:
    each entry of a convolution's or linear layer's input gradient sums C_out·kh·kw (or C_out)
    products, each weight gradient entry N·H·W (or N); BatchNorm's gradients sum over its M
    entries (a few roundings per entry besides). Exact zeros stay exact (0 rounds to 0).
    ``rng_seed`` seeds the global RNG before the forward (dropout masks, as a float32 run seeded
    alike draws them); the global RNG is left as it was. A memory-saving model is emulated
    through its own recompute, except train-mode BatchNorm there, which it calls functionally.
    """
    m = copy.deepcopy(model).double().compile_blocks(False)
    noise = _Noise(m, seed, backward=True)
    grads = []
    try:
        for u in (0.0, unit_roundoff(torch.float32)):
            noise.u, noise.grad_noise, noise.inputs = u, {}, {}
            m.zero_grad(set_to_none=True)
            xx = x.double().clone().requires_grad_(input_grad)
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                # (hooks on a first layer whose input needs no gradient: only its parameters' matter)
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                torch.manual_seed(rng_seed)
                F.cross_entropy(m(xx), y).backward()
            for p, extra in noise.grad_noise.items():
                if p.grad is not None:
                    p.grad += extra
            zero = torch.zeros(1, dtype=torch.float64)
            grads.append([xx.grad if input_grad else zero, *(zero if p.grad is None else p.grad for p in m.parameters())])
    finally:
        noise.remove()
    return torch.stack([(b - a).norm() for a, b in zip(*grads)]) / noise.u


def gradient_difference_bound(models: Sequence[nn.Module], x: Tensor, y: Tensor, dtype: torch.dtype,
                              *, rng_seed: int = 0, input_grad: bool = True) -> Tensor:
    """Per tensor ``[x, *parameters]``, how far gradients of one step computed by ``models`` (the same
    function: plain and memory-saving, eager and compiled) in ``dtype`` may be apart: each is
    within ``LAMBDA·u`` times its emulated error of the exact gradient (:func:`gradient_sensitivity`)."""
    noise = [gradient_sensitivity(m, x, y, rng_seed=rng_seed, input_grad=input_grad) for m in models]
    return LAMBDA * unit_roundoff(dtype) * torch.stack(noise).sum(0)


def differences(got: Sequence[Tensor | None], ref: Sequence[Tensor | None]) -> Tensor:
    """``‖got_i − ref_i‖`` per tensor, in float64 (0 for a pair of missing gradients)."""
    assert len(got) == len(ref)
    return torch.stack([torch.zeros((), dtype=torch.float64) if a is None and b is None
                        else (a.double() - b.double()).norm() for a, b in zip(got, ref)])


def cross_entropy_bound(model: nn.Module, x: Tensor, y: Tensor, *, computations: int = 1) -> float:
    """Bound on how far ``computations`` float32 evaluations of ``cross_entropy(model(x), y)`` (the batch
    mean, model in its current mode) may be apart.

    Cross entropy is 2-Lipschitz in each image's logits z (its gradient ``softmax(z) − e_y`` has
    1-norm <= 2), the logits are within ``LAMBDA·u·κ‖z‖`` of exact (:func:`sensitivity`), and the
    loss itself sums C exponentials, takes a logarithm and subtracts: ``(C + 4)·u`` of its terms.
    """
    kappa = sensitivity(model, x)
    with torch.no_grad():
        z = _float64_copy(model)(x.double())
    lse, z_y = torch.logsumexp(z, dim=1), z.gather(1, y.view(-1, 1)).squeeze(1)
    own = (z.shape[1] + 4) * unit_roundoff(torch.float32) * (lse.abs() + z_y.abs())
    return (computations * (2 * kappa.bound("logits") * z.norm(dim=1) + own)).mean().item()


def buffer_sensitivity(model: nn.Module, x: Tensor, *, seed: int = 0) -> dict[str, Tensor]:
    """Emulated rounding error, per unit roundoff, of each BatchNorm running statistic after one
    train-mode forward of ``x``: ``{name: ‖Δbuffer‖ / u}`` (upstream roundings and the statistics'
    own sums of M entries; module docstring). The model is not changed."""
    m = _float64_copy(model).train()
    start = copy.deepcopy(m.state_dict())
    noise = _Noise(m, seed)
    buffers = []
    try:
        with torch.no_grad():
            for u in (0.0, unit_roundoff(torch.float32)):
                m.load_state_dict(start)
                noise.u = u
                m(x.double())
                buffers.append({k: v.clone() for k, v in m.named_buffers() if v.is_floating_point()})
    finally:
        noise.remove()
    return {k: (buffers[1][k] - v).norm() / noise.u for k, v in buffers[0].items()}


def image_sensitivity(model: nn.Module, paths: Sequence[str]) -> Sensitivity:
    """:func:`sensitivity` of the eval-mode model on the inputs ``irevnet invert`` builds from image files,
    the inverse's error in pixel units (normalization undone), as ``invert`` reports it."""
    from irevnet.data.imagefolder import load_image
    from irevnet.data.transforms import denormalize, eval_transform

    x = torch.stack([eval_transform(model.config)(load_image(p)) for p in paths])
    return sensitivity(model.eval(), x, to_pixels=lambda t: denormalize(t, model.config))


def check_reconstruction(model: nn.Module, x: Tensor, what: str = "reconstruction") -> tuple[float, float]:
    """Assert the batch's relative error of inverse(forward_features(x)), in the model's dtype and mode,
    is within its bound; returns ``(error, bound)``."""
    dtype = next(model.parameters()).dtype
    bound = sensitivity(model, x).batch_bound("inverse", dtype)
    x = x.to(dtype)
    with torch.no_grad():
        err = relative_error(model.inverse(model.forward_features(x)), x)
    check(err, bound, f"{what} {str(dtype).removeprefix('torch.')}")
    return err, bound


def logdet_bound(jac: Tensor, kappa: float) -> float:
    """Bound on ``|log|det J||`` as computed by ``slogdet`` for an (n, n) Jacobian whose exact log|det| is 0.

    To first order ``log|det(J + ΔJ)| = log|det J| + tr(J⁻¹ΔJ)`` and
    ``|tr(J⁻¹ΔJ)| <= n·cond(J)·‖ΔJ‖/‖J‖`` (2-norms). ΔJ has two parts: LU with partial
    pivoting is backward stable, ``|ΔJ| <= γ_n |L||U|`` (Higham 2002, Thm 9.3), evaluated here
    from the factors; and J's own rounding, each column a derivative of Φ computed through
    the same layers as Φ, so ``2u·κ`` relative like Φ (``kappa``: :attr:`Sensitivity.forward`).
    Summing the n logarithms adds ``n·u·Σ|log|U_ii||``.
    """
    n, u = jac.shape[0], unit_roundoff(jac.dtype)
    _, lower, upper = torch.linalg.lu(jac)
    norm = torch.linalg.matrix_norm(jac, ord=2)
    growth = (torch.linalg.matrix_norm(lower.abs() @ upper.abs(), ord=2) / norm).item()
    sv = torch.linalg.svdvals(jac)
    cond = (sv[0] / sv[-1]).item()
    gamma_n = n * u / (1 - n * u)
    return n * cond * (gamma_n * growth + LAMBDA * u * kappa) + n * u * upper.diagonal().abs().log().abs().sum().item()


# -- the conditioning floor (what the library reports) ----------------------------------
def floor_of_batch(model: torch.nn.Module, x: Tensor) -> float:
    """The conditioning floor of the batch ``x`` (relative L2 over the batch), model in its current mode."""
    per_image = conditioning_floor(model, x)
    norms = x.double().flatten(1).norm(dim=1)
    return ((per_image * norms).square().sum().sqrt() / norms.square().sum().sqrt()).item()


def floor_factor(model: torch.nn.Module) -> float:
    """How far above :func:`floor_of_batch` the training monitor's error may be: 5 sqrt(depth).

    The monitor reports the floor beside its error; rounding in each of the depth blocks of
    the inverse adds at most a few units of the floor, and independent roundings add like a
    random walk, hence sqrt(depth).
    """
    return 5.0 * math.sqrt(model.depth)

