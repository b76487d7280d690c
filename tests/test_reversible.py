"""Memory-saving training (``set_memory_efficient``) against plain autograd on the same weights and data."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

import irevnet
from floor import check, differences, gradient_difference_bound, relative_error, sensitivity, unit_roundoff
from irevnet import IRevNet

# 60 blocks; the first is injective (3 input channels zero-padded to 16), stages 2 and 3
# start with stride-2 blocks; BN in train mode and dropout in every block.
DEEP: dict[str, Any] = dict(
    blocks=(20, 20, 20), channels=(8, 32, 128), input_shape=(3, 8, 8), num_classes=5, dropout=0.1
)
# Bijective, initial ψ, every stage starting with a stride-2 block.
BIJECTIVE: dict[str, Any] = dict(
    blocks=(3, 3), strides=(2, 2), channels=(24, 96), input_shape=(3, 16, 16), num_classes=5, dropout=0.1
)
# Small and fast, for the behaviour tests.
SHALLOW: dict[str, Any] = dict(
    blocks=(2, 2, 2), channels=(4, 16, 64), input_shape=(3, 8, 8), num_classes=5, dropout=0.1
)
CONFIGS = {"deep": ("cifar10", DEEP), "bijective": ("imagenet-b", BIJECTIVE), "shallow": ("cifar10", SHALLOW)}


def _trained_like(model: nn.Module, seed: int) -> None:
    """Give BatchNorm random biases, as training does.

    At initialization every BN bias is 0, and ``BN → ReLU → conv → BN`` is then invariant to
    the scale of the first BN: the exact gradient of those BN weights is 0 and the computed
    one is rounding noise, whose relative difference between two runs measures nothing.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))


def _models(name: str, dtype: torch.dtype, *, seed: int = 0, trained: bool = True) -> tuple[IRevNet, IRevNet]:
    """(plain, memory-saving) copies of one randomly initialized model."""
    preset, overrides = CONFIGS[name]
    torch.manual_seed(seed)
    plain = irevnet.create_model(preset, **overrides).to(dtype)
    if trained:
        _trained_like(plain, seed)
    return plain, copy.deepcopy(plain).set_memory_efficient(True)


def _batch(model: IRevNet, dtype: torch.dtype, n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *model.input_shape, generator=gen, dtype=dtype)
    return x, torch.randint(0, model.config.num_classes, (n,), generator=gen)


def _step(
    model: IRevNet, x: Tensor, y: Tensor, *, input_grad: bool = True, rng_seed: int = 1, autocast: bool = False
) -> list[Tensor | None]:
    """One forward/backward from a fixed RNG state: ``[grad of x, *grads of parameters]``."""
    x = x.clone().requires_grad_(input_grad)
    torch.manual_seed(rng_seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = F.cross_entropy(model(x), y)
    loss.backward()  # outside autocast, as recommended: the recompute restores the forward's state
    return [x.grad, *(p.grad for p in model.parameters())]


def _rel(a: Tensor | None, b: Tensor | None) -> float:
    if a is None or b is None:
        raise AssertionError("a gradient is missing")
    diff = (a - b).norm()
    return 0.0 if diff == 0 else (diff / b.norm()).item()


def _max_rel(got: list[Tensor | None], ref: list[Tensor | None]) -> float:
    assert len(got) == len(ref)
    return max(_rel(a, b) for a, b in zip(got, ref))


# -- exactness ------------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("name", [pytest.param("deep", marks=pytest.mark.slow), "bijective"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_match_plain_autograd(name: str, dtype: torch.dtype) -> None:
    """Every gradient within the rounding model's bound of plain autograd's (tests/floor.py).

    Rebuilt inputs carry rounding that the recompute passes on. A tensor whose gradient is a
    cancelling sum (in ``deep``, the bias of the BN that follows the first block's all-zero
    padded half) is ill-conditioned: its κ, and so its bound, is large, and which kernels run
    decides how much of it a float32 run uses (on one CPU 1e-4 of it, with ATen's scalar
    kernels 2e-2 for some BN gradients, plain or memory-saving alike).
    """
    plain, saving = _models(name, dtype)
    assert plain.depth >= 50 or name == "bijective"
    x, y = _batch(plain, dtype)
    check(differences(_step(saving, x, y), _step(plain, x, y)), gradient_difference_bound((plain, saving), x, y, dtype, rng_seed=1))


@pytest.mark.numerics
def test_exact_zero_channels_at_initialization() -> None:
    """The rebuilt input must keep the forward's exact zeros (padding and what it feeds).

    At initialization the 2nd block's input has channels that are exactly 0 (zero padding
    passed through a bottleneck whose input is all zero), BN maps them to its bias 0, and
    ReLU sits on its kink: rounding noise there would decide whether a gradient flows
    (an error of order 1 in a BN bias). Errors are relative to the largest gradient,
    because the scale-invariant BN weights have pure-noise gradients at init.
    """
    plain, saving = _models("deep", torch.float64, trained=False)
    x, y = _batch(plain, torch.float64)
    # Absolute bounds: those pure-noise gradients have no relative error. A zero lost in the
    # rebuilt input would flip a ReLU, far outside (the emulation keeps exact zeros exact).
    check(differences(_step(saving, x, y), _step(plain, x, y)), gradient_difference_bound((plain, saving), x, y, torch.float64, rng_seed=1))


def test_recorded_zeros_include_the_padding() -> None:
    """One mechanism: the zeros the forward records cover those the inverse restores by default."""
    plain, _ = _models("deep", torch.float64)
    x, _ = _batch(plain, torch.float64)
    block = plain.blocks[0]
    assert block.injective
    with torch.no_grad():
        (a, b), recorded = block.forward_with_zeros(plain._embed(x))
        padding = block.padding_zeros(a)
        assert recorded is not None and padding is not None and bool(padding.any())
        assert bool((recorded | ~padding).all())  # padding ⊆ recorded
        noisy = a + 1e-3 * torch.randn_like(a)
        for zeros in (None, padding):
            assert torch.equal(block.reverse((noisy, b), zeros=zeros).x2[:, padding], torch.zeros_like(a[:, padding]))


@pytest.mark.slow
@pytest.mark.numerics
def test_batchnorm_buffers_match_after_steps() -> None:
    plain, saving = _models("deep", torch.float64)
    x, y = _batch(plain, torch.float64)
    optims = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (plain, saving)]
    for step in range(3):
        for model, opt in zip((plain, saving), optims):
            opt.zero_grad()
            _step(model, x, y, rng_seed=step)
            opt.step()
        for (name, ref), (_, got) in zip(plain.named_buffers(), saving.named_buffers()):
            if step == 0 or name.endswith("num_batches_tracked"):
                # One identical forward so far (or a counter): bitwise equal, no double update.
                assert torch.equal(got, ref), name
            else:  # weights now differ by rounding, and so do the statistics they produce
                # float64: the weights differ by lr times gradient differences within their rounding
                # bound (test_gradients_match_plain_autograd; ~1e-14 relative here), the statistics of
                # the next batch by as much times their sensitivity to the weights (measured: 0.7% of
                # this tolerance; not derived further).
                torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12, msg=name)
    assert all(int(b) == 3 for n, b in saving.named_buffers() if n.endswith("num_batches_tracked"))


def test_rng_state_after_step_matches_plain() -> None:
    plain, saving = _models("shallow", torch.float64)
    x, y = _batch(plain, torch.float64)
    states = []
    for model in (plain, saving):
        _step(model, x, y, rng_seed=123)
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])


@pytest.mark.numerics
def test_parameters_get_gradients_when_input_does_not_require_grad() -> None:
    plain, saving = _models("deep", torch.float64)
    x, y = _batch(plain, torch.float64)
    ref = _step(plain, x, y, input_grad=False)
    got = _step(saving, x, y, input_grad=False)
    assert got[0] is None and ref[0] is None
    check(differences(got, ref), gradient_difference_bound((plain, saving), x, y, torch.float64, rng_seed=1, input_grad=False))


@pytest.mark.numerics
def test_autograd_grad_matches_plain() -> None:
    plain, saving = _models("shallow", torch.float64)
    x, y = _batch(plain, torch.float64)
    grads = []
    for model in (plain, saving):
        xg = x.clone().requires_grad_()
        torch.manual_seed(0)
        loss = F.cross_entropy(model(xg), y)
        grads.append(list(torch.autograd.grad(loss, [xg, *model.parameters()])))
        assert all(p.grad is None for p in model.parameters())
    check(differences(grads[1], grads[0]), gradient_difference_bound((plain, saving), x, y, torch.float64))


# -- safety -----------------------------------------------------------------------------
def test_caller_tensors_are_neither_freed_nor_mutated() -> None:
    _, saving = _models("shallow", torch.float64)
    x, y = _batch(saving, torch.float64)
    x.requires_grad_()
    x_copy, x_version = x.detach().clone(), x._version
    phi = saving.forward_features(x)
    phi_copy = phi.detach().clone()
    F.cross_entropy(saving.forward_head(phi), y).backward()
    for held, copy_ in ((x, x_copy), (phi, phi_copy)):  # x's halves were the blocks' input
        assert held.untyped_storage().nbytes() == copy_.untyped_storage().nbytes()  # not freed
        assert torch.equal(held.detach(), copy_)
    assert x._version == x_version


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_forward_without_grad_stores_nothing(mode: Any) -> None:
    plain, saving = _models("shallow", torch.float64)
    x, _ = _batch(plain, torch.float64)
    x.requires_grad_()
    outs = []
    for model in (plain, saving):
        torch.manual_seed(0)
        with mode():
            outs.append(model(x))
    assert outs[1].grad_fn is None
    assert torch.equal(outs[0], outs[1])
    for (name, ref), (_, got) in zip(plain.named_buffers(), saving.named_buffers()):
        assert torch.equal(got, ref), name


def _saved_bytes(model: IRevNet, x: Tensor) -> int:
    """Bytes of the activations autograd saves for the backward during one forward (parameters excluded)."""
    total = 0
    params = {p.data_ptr() for p in model.parameters()}

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        if t.data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return total


def test_saved_activations_do_not_grow_with_depth() -> None:
    saved = {}
    for depth in (2, 8):
        torch.manual_seed(0)
        model = irevnet.create_model("cifar10", **{**SHALLOW, "blocks": (depth,) * 3})
        x, _ = _batch(model, torch.float32)
        saved["plain", depth] = _saved_bytes(model, x)
        saved["saving", depth] = _saved_bytes(model.set_memory_efficient(True), x)
        assert _saved_bytes(model.set_memory_efficient(False), x) == saved["plain", depth]
    assert saved["saving", 8] == saved["saving", 2]
    assert saved["plain", 8] > 3 * saved["plain", 2] > 3 * saved["saving", 2]
    assert irevnet.create_model("cifar10", **SHALLOW, memory_efficient=True).memory_efficient


def _saving_loss() -> tuple[IRevNet, Tensor]:
    """A small memory-saving model and its loss on one batch, the backward still to do."""
    _, saving = _models("shallow", torch.float64)
    x, y = _batch(saving, torch.float64)
    torch.manual_seed(0)
    return saving, F.cross_entropy(saving(x), y)


@pytest.mark.numerics
def test_second_backward() -> None:
    saving, loss = _saving_loss()
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in saving.parameters()]
    loss.backward()  # the graph was retained: the same gradients again, accumulated
    # The second computation is within the rounding model's bound of the first, plus the
    # accumulation's own rounding (tests/floor.py).
    x, y = _batch(saving, torch.float64)
    bound = gradient_difference_bound((saving, saving), x, y, torch.float64, input_grad=False)[1:]
    twice = [2 * g for g in first]
    u = unit_roundoff(torch.float64)
    check(differences([p.grad for p in saving.parameters()], twice),
          bound + u * torch.stack([t.norm() for t in twice]), "accumulated")
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_parameters_modified_before_backward_raise() -> None:
    """As in plain autograd: the recompute would silently use the new weights."""
    saving, loss = _saving_loss()
    with torch.no_grad():
        saving.blocks[1].bottleneck.conv2.weight.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_double_backward_raises_clear_error() -> None:
    saving, loss = _saving_loss()
    grads = torch.autograd.grad(loss, list(saving.parameters()), create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        sum(g.square().sum() for g in grads).backward()


def test_sync_batchnorm_is_rejected_in_training() -> None:
    _, saving = _models("shallow", torch.float32)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(saving)
    x, _ = _batch(saving, torch.float32)
    with pytest.raises(NotImplementedError, match="SyncBatchNorm"):
        model(x)


# -- inverse, mixed precision, torch.compile ------------------------------------------------
@pytest.mark.numerics
def test_inverse_unchanged_in_memory_saving_mode() -> None:
    plain, saving = _models("deep", torch.float64)
    plain.eval(), saving.eval()
    x, _ = _batch(plain, torch.float64)
    x.requires_grad_()  # the memory-saving path is taken for the forward
    phi = saving.forward_features(x)
    torch.testing.assert_close(phi, plain.forward_features(x), rtol=0, atol=0)
    with torch.no_grad():
        assert torch.equal(saving.inverse(phi), plain.inverse(phi))
        check(relative_error(saving.inverse(phi), x), sensitivity(plain, x.detach()).batch_bound("inverse", torch.float64))


@pytest.mark.slow
@pytest.mark.numerics
def test_bf16_autocast_matches_plain_autocast() -> None:
    """bf16 on CPU: gradients within 1e-4 of a plain autocast run (measured: ~3e-7).

    The recompute replays the forward's autocast state: F runs the same bf16 kernels on inputs
    rebuilt in float32 (within LAMBDA·u·κ of the forward's, tests/floor.py), so a bf16 rounding
    differs only where a rebuilt entry crosses a rounding boundary of bf16; no bound of the
    rounding model separates that from a recompute in float32 (both are bf16-rounding apart),
    so this margin is measured, not derived. Without replaying the autocast state in the backward the recompute would run in
    float32 while the forward ran in bf16, and the difference would be of order 1.
    """
    plain, saving = _models("deep", torch.float32)
    x, y = _batch(plain, torch.float32)
    assert _max_rel(_step(saving, x, y, autocast=True), _step(plain, x, y, autocast=True)) <= 1e-4


@pytest.mark.numerics
def test_bf16_autocast_inverse_stays_exact() -> None:
    """The inverse recomputes F in bf16 on bit-identical inputs: x1 = b − F(x2) has float32 rounding only."""
    _, saving = _models("deep", torch.float32)
    saving.eval()
    x, _ = _batch(saving, torch.float32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        err = (saving.inverse(saving.forward_features(x)) - x).abs().max().item()
    # measured 2.4e-7 on N(0, 1) inputs; a float32 inverse of this bf16 forward: 5e-3. Bit-identical
    # inputs make the last block exact to float32 rounding; earlier ones see inputs rebuilt to float32
    # accuracy, which change a bf16 rounding only where they cross its boundary: measured, not derived.
    assert err <= 1e-5


def test_torch_compile_matches_eager() -> None:
    """Dynamo graph-breaks around the memory-saving function; the result equals eager's.

    ``aot_eager`` exercises dynamo and AOTAutograd (what touches the autograd function)
    quickly; the default inductor backend only changes the kernels of the compiled head.
    """
    _, saving = _models("shallow", torch.float32)
    compiled = torch.compile(copy.deepcopy(saving), backend="aot_eager")
    x, y = _batch(saving, torch.float32)
    ref = _step(saving, x, y)
    state = torch.get_rng_state()
    got = _step(compiled, x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert _max_rel(got, ref) == 0.0


# -- DistributedDataParallel ------------------------------------------------------------
def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """Run one step with plain and memory-saving DDP replicas; save this rank's gradients."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        plain, _ = _models("shallow", torch.float64)
        x, y = _batch(plain, torch.float64, seed=100 + rank)  # each rank its own data
        result = {}
        for memory_efficient in (False, True):
            net = nn.parallel.DistributedDataParallel(copy.deepcopy(plain).set_memory_efficient(memory_efficient))
            torch.manual_seed(rank)  # dropout masks differ across ranks, not across modes
            F.cross_entropy(net(x), y).backward()
            result[memory_efficient] = [p.grad for p in net.parameters()]
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_gradients_match_plain_on_every_rank(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # Each rank's memory-saving and plain gradients are within the rounding model's bound of each
    # other (tests/floor.py); the averages (g0 + g1)/2 within the mean of the two bounds, plus
    # the averaging's roundings.
    plain, saving = _models("shallow", torch.float64)
    bounds = []
    for rank in range(2):
        x, y = _batch(plain, torch.float64, seed=100 + rank)
        bounds.append(gradient_difference_bound((plain, saving), x, y, torch.float64, rng_seed=rank)[1:])
    u = unit_roundoff(torch.float64)
    for res in results:
        norms = torch.stack([g.norm() for g in res[False]])
        check(differences(res[True], res[False]), (bounds[0] + bounds[1]) / 2 + 4 * u * norms, "averaged")
    # Allreduce hands both ranks the same reduced buffers and each divides them alike.
    assert _max_rel(results[1][True], results[0][True]) <= 1e-12
