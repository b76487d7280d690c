"""Per-block torch.compile (``IRevNet.compile_blocks``) against eager mode, plain and memory-saving.

Most tests use the ``aot_eager`` backend: dynamo and AOTAutograd build and run the same
graphs as inductor (forward, recompute, backward, shared across blocks), with eager
kernels, in seconds. One test runs inductor itself on a tiny model.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._dynamo.utils import counters

import irevnet
from irevnet import IRevNet
from cudagraph_sim import CudaGraphSim
from floor import (LAMBDA, buffer_sensitivity, check, cross_entropy_bound, differences, gradient_difference_bound, relative_error, sensitivity, unit_roundoff)
from irevnet.cli.main import main
from irevnet.compile import CompileSpec, CompileUnavailableError, compiled

SMALL = dict(blocks=(2, 2, 2), channels=(4, 16, 64), input_shape=(3, 8, 8), num_classes=5)


def _model(dtype: torch.dtype = torch.float32, *, dropout: float = 0.0, **overrides: Any) -> IRevNet:
    torch.manual_seed(0)
    model = irevnet.create_model("cifar10", **{**SMALL, **overrides}, dropout=dropout).to(dtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # BN biases as after training (at init some gradients are pure rounding noise)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
    return model


def _batch(model: IRevNet, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, *model.input_shape, generator=gen, dtype=dtype)
    return x, torch.randint(0, model.config.num_classes, (4,), generator=gen)


def _step(model: IRevNet, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
    """(loss, [grad of x, *grads of parameters], RNG state after) of one step from a fixed RNG state."""
    x = x.clone().requires_grad_()
    torch.manual_seed(7)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [x.grad, *(p.grad for p in model.parameters())], torch.get_rng_state()


@pytest.mark.numerics
def _max_rel(got: list[Tensor], ref: list[Tensor]) -> float:
    return max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(got, ref, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_compiled_step_matches_eager(memory_efficient: bool) -> None:
    """Loss, gradients, BatchNorm buffers and RNG state after a step: as in eager mode."""
    eager = _model().set_memory_efficient(memory_efficient)
    compiled = copy.deepcopy(eager).compile_blocks(backend="aot_eager")
    assert compiled.compile_spec == CompileSpec("aot_eager") and eager.compile_spec is None
    x, y = _batch(eager)
    # Two float32 computations of the same step: within twice the rounding model's bound (tests/floor.py).
    loss_bound = cross_entropy_bound(eager, x, y, computations=2)
    grad_bound = gradient_difference_bound((eager, compiled), x, y, torch.float32, rng_seed=7)
    loss_e, grads_e, rng_e = _step(eager, x, y)
    loss_c, grads_c, rng_c = _step(compiled, x, y)
    check(abs(loss_c.item() - loss_e.item()), loss_bound, "loss")
    check(differences(grads_c, grads_e), grad_bound, "gradients")
    assert torch.equal(rng_c, rng_e)
    for (name, ref), (_, got) in zip(eager.named_buffers(), compiled.named_buffers(), strict=True):
        assert torch.equal(got, ref), name
    compiled.eval()
    with torch.no_grad():  # the inverse runs the compiled reverse step
        phi = compiled.forward_features(x)
        assert torch.equal(phi, eager.eval().forward_features(x))
        inverse_error = relative_error(compiled.inverse(phi), x)
    check(inverse_error, sensitivity(eager, x).batch_bound(), "inverse")  # tests/floor.py


@pytest.mark.slow
def test_compiled_memory_saving_with_dropout_matches_plain_eager() -> None:
    """Dropout masks drawn by compiled blocks and replayed by the compiled recompute are eager's."""
    plain = _model(torch.float64, dropout=0.1)
    compiled = copy.deepcopy(plain).set_memory_efficient(True).compile_blocks(backend="aot_eager")
    x, y = _batch(plain, torch.float64)
    _, grads_p, rng_p = _step(plain, x, y)
    _, grads_c, rng_c = _step(compiled, x, y)
    bound = gradient_difference_bound((plain, compiled), x, y, torch.float64, rng_seed=7)  # as test_reversible.py
    check(differences(grads_c, grads_p), bound, "gradients")
    assert torch.equal(rng_c, rng_p)


def test_blocks_share_compiled_code() -> None:
    """Twice the blocks per stage, the same graphs: compile work does not grow with depth.

    Dynamo's graphs are counted; the "eager" backend runs them as traced (AOTAutograd, which
    compiles each graph further, does not change which graphs dynamo makes), in half the time.
    """
    graphs = {}
    for depth in (3, 6):  # from 3 on, the blocks of a stage are of at most 3 kinds (first, second, others)
        torch._dynamo.reset()
        counters.clear()
        model = _model(blocks=(depth,) * 3).set_memory_efficient(True).compile_blocks(backend="eager")
        _step(model, *_batch(model))
        graphs[depth] = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs[3] == graphs[6] > 0


def _exercise(model: IRevNet, batch: int) -> None:
    """Every compiled function with and without grad: a plain and a memory-saving train step, Φ and Φ⁻¹ in eval mode."""
    x = torch.randn(batch, *model.input_shape)
    y = torch.randint(0, model.config.num_classes, (batch,))
    for saving in (False, True):
        model.set_memory_efficient(saving).train()
        F.cross_entropy(model(x), y).backward()
    model.eval()
    with torch.no_grad():
        model.inverse(model.forward_features(x))


@pytest.mark.slow
def test_one_graph_set_per_shape_whatever_ran_before() -> None:
    """cifar10 then imagenet-b shapes, at dynamo's default recompile limit, full graph: no recompile, no limit.

    Each kind of block compiles 5 graphs per shape (plain forward with grad; memory-saving
    forward and recompute; eval forward and inverse), each in a code object of its own, so
    no code object collects graphs as the process sees more shapes. (One code object per
    block function collected ~20 graphs per cifar10 shape and failed here.)
    """
    graphs: list[torch.fx.GraphModule] = []

    def counting(gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Any:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    before = compiled.cache_info().currsize
    cifar = irevnet.create_model("cifar10", blocks=(1, 1, 1)).compile_blocks(backend=counting)  # 3 kinds of block
    _exercise(cifar, 2)
    assert len(graphs) == 5 * 3 == compiled.cache_info().currsize - before
    with torch._dynamo.config.patch(recompile_limit=8):  # dynamo's default: irevnet must not need it raised
        imagenet = irevnet.create_model("imagenet-b", blocks=(1, 1, 1, 1)).compile_blocks(backend=counting)
        _exercise(imagenet, 1)
        assert len(graphs) == 5 * (3 + 4)
        _exercise(cifar, 3)  # another batch size: one more set
        assert len(graphs) == 5 * (3 + 4 + 3)
        _exercise(cifar, 2)  # seen before: nothing new
        assert len(graphs) == 5 * (3 + 4 + 3) == compiled.cache_info().currsize - before
    torch._dynamo.reset()


def test_compile_blocks_toggles_and_validates() -> None:
    model = _model()
    assert model.compile_blocks(backend="aot_eager") is model
    assert all(b.compile_spec == CompileSpec("aot_eager") for b in model.blocks)
    model.compile_blocks(False)
    assert model.compile_spec is None and all(b.compile_spec is None for b in model.blocks)
    with pytest.raises(ValueError, match="unknown compile mode"):
        model.compile_blocks(mode="fastest")
    with pytest.raises(ValueError, match="needs the inductor backend"):
        model.compile_blocks(backend="aot_eager", mode="reduce-overhead")


def test_unsupported_dynamo_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo.eval_frame

    def unsupported() -> None:
        raise RuntimeError("Python 3.99+ not yet supported for torch.compile")

    monkeypatch.setattr(torch._dynamo.eval_frame, "check_if_dynamo_supported", unsupported)
    with pytest.raises(CompileUnavailableError, match="torch.compile is not supported here .*3.99"):
        _model().compile_blocks(backend="aot_eager")


def test_missing_cxx_compiler_is_a_clear_error() -> None:
    import torch._inductor.config

    model = _model()
    with torch._inductor.config.patch({"cpp.cxx": ("no-such-c++-compiler",)}):
        with pytest.raises(CompileUnavailableError, match="needs a C\\+\\+ compiler"):
            model.compile_blocks()
    assert model.compile_spec is None  # nothing half-applied


def test_cli_compile_without_compiler_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line's side of test_missing_cxx_compiler_is_a_clear_error: one line, exit 2, before any work."""
    import torch._inductor.config

    with torch._inductor.config.patch({"cpp.cxx": ("no-such-c++-compiler",)}):
        code = main(["train", "--preset", "digits", "--data", "digits", "--epochs", "1", "--device", "cpu",
                     "--no-progress", "--compile", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("irevnet train: error: torch.compile's inductor backend needs a C++ compiler")
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_inductor_matches_eager_memory_saving() -> None:
    """The real backend on a tiny model (one stage, a few graphs), memory-saving mode, float32.

    Inductor fuses and reorders float32 arithmetic: loss, gradients and the BatchNorm statistics
    of the step are two float32 computations of the same values, within twice the rounding
    model's bound of each other (tests/floor.py; the BN bias fed by the first block's all-zero
    padded half is a cancelling sum, whose large bound the model knows).
    """
    eager = _model(blocks=(2,), strides=(1,), channels=(4,), input_shape=(3, 4, 4)).set_memory_efficient(True)
    compiled = copy.deepcopy(eager).compile_blocks()
    x, y = _batch(eager)
    loss_bound = cross_entropy_bound(eager, x, y, computations=2)
    grad_bound = gradient_difference_bound((eager, compiled), x, y, torch.float32, rng_seed=7)
    buffer_noise = buffer_sensitivity(eager, x)
    loss_e, grads_e, rng_e = _step(eager, x, y)
    loss_c, grads_c, rng_c = _step(compiled, x, y)
    check(abs(loss_c.item() - loss_e.item()), loss_bound, "loss")
    check(differences(grads_c, grads_e), grad_bound, "gradients")
    assert torch.equal(rng_c, rng_e)
    u = unit_roundoff(torch.float32)
    for (name, ref), (_, got) in zip(eager.named_buffers(), compiled.named_buffers(), strict=True):
        if ref.is_floating_point():
            check((got - ref).double().norm(), 2 * LAMBDA * u * buffer_noise[name], name)
        else:
            assert torch.equal(got, ref), name


def test_mark_step_only_for_cuda_graphs_on_cuda(monkeypatch):
    from irevnet.compile import mark_step

    calls = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for spec, device in ((None, cuda), (CompileSpec(), cuda), (CompileSpec(mode="max-autotune-no-cudagraphs"), cuda),
                         (CompileSpec(mode="reduce-overhead"), cpu)):
        mark_step(spec, device)
    assert calls == []
    mark_step(CompileSpec(mode="reduce-overhead"), cuda)
    mark_step(CompileSpec(mode="max-autotune"), cuda)
    assert len(calls) == 2


def _accumulated_grads(model: IRevNet, micro: list[tuple[Tensor, Tensor]], mark: Callable[[int], None]) -> list[Tensor]:
    """One optimizer step's gradients, accumulated over ``micro``; ``mark(i)`` runs before micro-batch i."""
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(micro):
        mark(i)
        (F.cross_entropy(model(x), y) / len(micro)).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.slow
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_cuda_graph_memory_rule_one_mark_per_optimizer_step(memory_efficient: bool) -> None:
    """Gradient accumulation under CUDA graphs' memory rule (simulated, tests/cudagraph_sim.py).

    A ``.grad`` is a graph output (the backward's); a step mark between two micro-batches
    lets the next replay overwrite it before the second backward accumulates into it. One
    mark per optimizer step, before the first micro-batch, gives the eager gradients; a
    mark per micro-batch does not (the rule the simulation enforces).
    """
    eager = _model(dropout=0.0).set_memory_efficient(memory_efficient)
    x, y = _batch(eager)
    micro = [(x[:2], y[:2]), (x[2:], y[2:])]
    reference = _accumulated_grads(eager, micro, lambda i: None)
    sim = CudaGraphSim()
    model = copy.deepcopy(eager).compile_blocks(backend=sim.backend)
    for _ in range(2):  # the second step runs after a mark that overwrote everything the first produced
        grads = _accumulated_grads(model, micro, lambda i: sim.mark() if i == 0 else None)
        assert _max_rel(grads, reference) <= 1e-5
    assert sim.steps()[0] == 0 and len(sim.steps()) == 3
    per_micro_batch = _accumulated_grads(model, micro, lambda i: sim.mark())
    assert not all(torch.isfinite(g).all() for g in per_micro_batch)


def _benchmark(name: str) -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["plain", "saving"])
def test_memory_benchmark_begins_every_step_with_a_mark(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """benchmarks/memory.py with compiled blocks: a step mark before each step, nothing kept across one."""
    memory = _benchmark("memory")
    sim = CudaGraphSim()
    monkeypatch.setattr(memory, "mark_step", sim.mark_step)
    built: list[IRevNet] = []
    build = memory._build
    monkeypatch.setattr(memory, "_build", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    memory.measure_activation_memory("cifar10", (1, 1, 1), mode, 2, torch.device("cpu"), {"backend": sim.backend})
    (model,) = built
    assert sim.steps()[0] == 0 and len(sim.steps()) == 3 and min(sim.steps()[1:]) > 0  # warm-up and measured step
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    memory._train_step(model, opt, x, y, mode)  # after the measured step's outputs were overwritten by this mark
    assert all(torch.isfinite(p).all() and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_trainer_marks_one_step_per_optimizer_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   memory_efficient: bool) -> None:
    """irevnet train --accum 2 --compile reduce-overhead under the CUDA-graph memory rule (simulated).

    One mark before each optimizer step (not between its micro-batches), each evaluation
    batch and the reconstruction monitor; the run then trains the eager run's weights
    (a mark per micro-batch overwrote the first micro-batch's ``.grad``: NaN, and the run stopped).
    """
    import irevnet.training.trainer as trainer
    from irevnet.training import get_recipe

    sim = CudaGraphSim()
    compile_blocks = IRevNet.compile_blocks
    monkeypatch.setattr(IRevNet, "compile_blocks",
                        lambda self, enabled=True, **kw: compile_blocks(self, enabled, backend=sim.backend))
    monkeypatch.setattr(trainer, "mark_step", sim.mark_step)
    recipe = get_recipe("digits").replace(epochs=1, dropout=0.1, batch_size=16)

    def run(out: Path, **kw: Any) -> trainer.TrainResult:
        return trainer.train(trainer.TrainConfig(
            preset="digits", data="synthetic", out=str(out), recipe=recipe, synthetic_size=64, accum=2,
            memory_efficient=memory_efficient, model_overrides={"blocks": (1, 1)}, device="cpu", progress=False,
            **kw))

    compiled_run = run(tmp_path / "compiled", compile="reduce-overhead")
    # 4 optimizer steps of 2 micro-batches, 1 evaluation batch (16 of 64 images), the monitor.
    assert sim.steps()[0] == 0 and len(sim.steps()) == 4 + 1 + 1 + 1 and min(sim.steps()[1:]) > 0
    eager_run = run(tmp_path / "eager")
    got, want = compiled_run.model.state_dict(), eager_run.model.state_dict()
    for name, ref in want.items():
        torch.testing.assert_close(got[name], ref, rtol=1e-4, atol=1e-6, msg=name)
