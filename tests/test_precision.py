"""The precision policy, observed at every convolution.

Classification and training (``model(x)``, its backward, the memory-saving recompute)
follow PyTorch's global float32 flags; the representation (``forward_features``,
``forward_intermediates``, ``inverse``) and the analyses run in IEEE float32; a training
step under ``full_float32()`` runs in IEEE float32 throughout. Hooks on every ``Conv2d``
read the flags a convolution runs under, through PyTorch's public API: its forward (a
forward hook, which also fires in the memory-saving recompute) and its backward (a hook on
the output's gradient, which fires just before the convolution's backward). Afterwards the
caller's flags must be back, exactly. CPU only: the flags are the same global state on
every device; what they cost on a GPU is measured by benchmarks, not here.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from irevnet import create_model
from irevnet.precision import Float32Flags, full_float32

NEW_API = hasattr(torch.backends.cudnn, "conv")  # the fp32_precision settings (PyTorch >= 2.9)


def _read(getter: Callable[[], Any]) -> Any:
    try:
        return getter()
    except RuntimeError as e:  # legacy and new APIs mixed: PyTorch refuses to answer
        return f"refused: {str(e)[:40]}"


def _conv_flags() -> tuple[Any, ...]:
    """What decides a float32 convolution's precision, as a user reads it (public API)."""
    b = torch.backends
    legacy = _read(lambda: b.cudnn.allow_tf32)
    return (legacy, b.cudnn.conv.fp32_precision, b.mkldnn.conv.fp32_precision) if NEW_API else (legacy,)


IEEE = (False, "ieee", "ieee") if NEW_API else (False,)


def _ieee() -> tuple[Any, ...]:
    """What convolutions must see under full_float32 from the current flags: IEEE; a legacy flag PyTorch
    refuses to read (APIs mixed) stays as found, unreadable."""
    legacy = _conv_flags()[0]
    return (legacy, *IEEE[1:]) if isinstance(legacy, str) else IEEE


def _public_flags() -> dict[str, object]:
    """Every float32 flag as a user reads it through PyTorch's public API."""
    b = torch.backends
    flags = {name: _read(getter) for name, getter in [
        ("cudnn.allow_tf32", lambda: b.cudnn.allow_tf32), ("cuda.matmul.allow_tf32", lambda: b.cuda.matmul.allow_tf32),
        ("float32_matmul_precision", torch.get_float32_matmul_precision)]}
    if NEW_API:
        for name, obj in [("generic", b), ("cudnn", b.cudnn), ("cudnn.conv", b.cudnn.conv), ("cudnn.rnn", b.cudnn.rnn),
                          ("cuda.matmul", b.cuda.matmul), ("mkldnn", b.mkldnn), ("mkldnn.conv", b.mkldnn.conv),
                          ("mkldnn.matmul", b.mkldnn.matmul), ("mkldnn.rnn", b.mkldnn.rnn)]:
            flags[name + ".fp32_precision"] = obj.fp32_precision
    return flags


def _set_legacy_tf32() -> None:
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True


def _set_matmul_medium() -> None:
    torch.set_float32_matmul_precision("medium")  # TF32 on CUDA, bf16 in oneDNN (CPU)


def _set_new_api() -> None:
    torch.backends.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    torch.backends.mkldnn.conv.fp32_precision = "bf16"
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"


def _set_mixed() -> None:
    """Legacy and new APIs mixed: PyTorch then refuses to read ``cudnn.allow_tf32``."""
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.conv.fp32_precision = "ieee"


SETTINGS = {"default": lambda: None, "legacy_tf32": _set_legacy_tf32, "matmul_medium": _set_matmul_medium}
if NEW_API:
    SETTINGS["new_api_tf32_bf16"] = _set_new_api
    SETTINGS["mixed"] = _set_mixed


@pytest.fixture(autouse=True)
def _restore_global_flags():
    """These tests change process-global flags: put the session's back, whatever happens."""
    saved, generic = Float32Flags.capture(), torch.backends.fp32_precision if NEW_API else None
    yield
    if NEW_API:
        torch.backends.fp32_precision = generic
    saved.apply()
    assert Float32Flags.capture() == saved


class ConvSpy:
    """Records ``(phase, event, conv name, flags)`` at every convolution of ``model``.

    ``event`` is ``"forward"`` (forward hook; in the backward phase: the memory-saving
    recompute) or ``"backward"`` (the gradient of the convolution's output arrives: its
    backward runs next, under the same flags). ``phase`` is set by the test.
    """

    def __init__(self, model: nn.Module) -> None:
        self.records: list[tuple[str, str, str, tuple[Any, ...]]] = []
        self.phase = "forward"
        self.convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_hook(self._hook(name))

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.records.append((self.phase, "forward", name, _conv_flags()))
            if output.requires_grad:
                phase = self.phase
                output.register_hook(lambda g: self.records.append((phase + "/grad", "backward", name, _conv_flags())))
        return hook

    def flags(self) -> set[tuple[Any, ...]]:
        return {r[3] for r in self.records}

    def events(self) -> dict[tuple[str, str], list[str]]:
        """``(phase, event) -> conv names`` in call order."""
        out: dict[tuple[str, str], list[str]] = {}
        for phase, event, name, _ in self.records:
            out.setdefault((phase, event), []).append(name)
        return out


def _model(**kwargs: Any) -> nn.Module:
    return create_model("cifar10", blocks=(2, 1, 1), **kwargs)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=gen), torch.tensor([0, 1, 2, 3])


def _train_step(model: nn.Module, spy: ConvSpy, x: torch.Tensor, y: torch.Tensor) -> None:
    spy.phase = "forward"
    loss = F.cross_entropy(model(x), y)
    spy.phase = "backward"
    loss.backward()


def _expect_every_conv(spy: ConvSpy, memory_efficient: bool) -> None:
    """Each convolution ran once forward and once backward (memory-saving: and once recomputed)."""
    ev = spy.events()
    assert sorted(ev[("forward", "forward")]) == sorted(spy.convs)
    if memory_efficient:  # the forward stores nothing; the backward recomputes, then differentiates
        assert sorted(ev[("backward", "forward")]) == sorted(spy.convs)
        assert sorted(ev[("backward/grad", "backward")]) == sorted(spy.convs)
        assert ("forward/grad", "backward") not in ev
    else:
        assert sorted(ev[("forward/grad", "backward")]) == sorted(spy.convs)
        assert ("backward", "forward") not in ev


@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_classification_and_training_follow_the_global_flags(setting, memory_efficient):
    """Plain and memory-saving training do the same arithmetic: the caller's, like any PyTorch model."""
    SETTINGS[setting]()
    before, public = Float32Flags.capture(), _public_flags()
    model = _model(memory_efficient=memory_efficient).train()
    spy = ConvSpy(model)
    _train_step(model, spy, *_batch())
    _expect_every_conv(spy, memory_efficient)
    assert spy.flags() == {_conv_flags()}
    assert Float32Flags.capture() == before and _public_flags() == public


@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_full_float32_trains_in_ieee_float32(setting, memory_efficient):
    """The switch: a step under full_float32() runs every convolution, forward, recompute and backward, in IEEE."""
    SETTINGS[setting]()
    before, public = Float32Flags.capture(), _public_flags()
    model = _model(memory_efficient=memory_efficient).train()
    spy = ConvSpy(model)
    ieee = _ieee()
    with full_float32():
        assert Float32Flags.capture().exact and _conv_flags() == ieee
        _train_step(model, spy, *_batch())
    _expect_every_conv(spy, memory_efficient)
    assert spy.flags() == {ieee}
    assert Float32Flags.capture() == before and _public_flags() == public


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_representation_and_inverse_run_in_ieee_float32_and_restore_the_flags(setting):
    SETTINGS[setting]()
    before, public = Float32Flags.capture(), _public_flags()
    model = _model().eval()
    spy = ConvSpy(model)
    x, _ = _batch()
    with torch.no_grad():
        phi = model.forward_features(x)
        assert Float32Flags.capture() == before
        model.inverse(phi)
        model.forward_intermediates(x, indices=[1], intermediates_only=True)
        model.head(phi)  # the head has no convolution; it follows the global flags
    assert len(spy.records) == 3 * len(spy.convs) - 3 * 2  # forward, inverse, intermediates up to block 2 of 4
    assert spy.flags() == {_ieee()}
    assert Float32Flags.capture() == before and _public_flags() == public


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s not in ("default", "mixed")])
def test_opting_out_follows_the_global_flags(setting):
    SETTINGS[setting]()
    before = Float32Flags.capture()
    assert not before.exact
    model = _model().eval().set_full_float32(False)
    spy = ConvSpy(model)
    with torch.no_grad():
        model.inverse(model.forward_features(_batch()[0]))
    assert len(spy.records) == 2 * len(spy.convs) and spy.flags() == {_conv_flags()} != {IEEE}


@pytest.mark.parametrize("exact", [True, False])
def test_memory_saving_recompute_uses_the_forwards_flags(exact):
    """The backward runs later, possibly under other global flags: the recompute must replay the forward's."""
    _set_legacy_tf32()
    global_flags = _conv_flags()
    model = _model(memory_efficient=True).train()
    spy = ConvSpy(model)
    x, y = _batch()
    if exact:  # forward in IEEE, backward under the global (TF32) flags
        with full_float32():
            loss = F.cross_entropy(model(x), y)
        in_forward = IEEE
        spy.phase = "backward"
        loss.backward()
    else:  # forward under the global flags, backward under full_float32
        loss = F.cross_entropy(model(x), y)
        in_forward = global_flags
        spy.phase = "backward"
        with full_float32():
            at_backward = Float32Flags.capture()
            loss.backward()
            assert Float32Flags.capture() == at_backward  # ... and left as they were
    _expect_every_conv(spy, True)
    assert spy.flags() == {in_forward}
    assert _conv_flags() == global_flags
    assert all(p.grad is not None for p in model.blocks.parameters())


def test_full_float32_context_manager_nests_and_restores():
    _set_matmul_medium()
    before = Float32Flags.capture()
    with full_float32():
        assert Float32Flags.capture().exact and torch.get_float32_matmul_precision() == "highest"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        with full_float32():
            assert Float32Flags.capture().exact
        assert Float32Flags.capture().exact
    assert Float32Flags.capture() == before and torch.get_float32_matmul_precision() == "medium"
    with pytest.raises(KeyError), full_float32():
        raise KeyError("the flags are restored on errors too")
    assert Float32Flags.capture() == before


@pytest.mark.skipif(not NEW_API, reason="the fp32_precision settings need PyTorch >= 2.9")
def test_mixed_legacy_and_new_flags_are_restored_as_found():
    """PyTorch refuses to read cudnn.allow_tf32 here; irevnet leaves that legacy state alone and restores the rest."""
    _set_mixed()
    public = _public_flags()
    assert str(public["cudnn.allow_tf32"]).startswith("refused")
    with full_float32():
        assert torch.backends.cudnn.conv.fp32_precision == "ieee" == torch.backends.mkldnn.conv.fp32_precision
    assert _public_flags() == public
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # consistent again: the legacy flag is the user's True
    assert torch.backends.cudnn.allow_tf32 is True


def test_analyses_run_in_full_float32_even_when_the_model_opted_out():
    """Measurements are exact: reconstructions, interpolations, and the metamers' logits (a classification)."""
    from irevnet.analysis import interpolate, reconstruct
    from irevnet.analysis.invariance import metamer_report

    _set_legacy_tf32()
    before = Float32Flags.capture()
    model = _model().set_full_float32(False)
    spy = ConvSpy(model)
    x, _ = _batch()
    reconstruct(model, x[:2], floor=False)
    interpolate(model, x[:1], x[1:2], steps=2)
    assert len(spy.records) == 6 * len(spy.convs) and spy.flags() == {IEEE}
    assert Float32Flags.capture() == before and model.training
    bijective = create_model("digits-b")  # metamers need a bijective model; by default its Φ is IEEE, the logits too
    spy = ConvSpy(bijective)
    metamer_report(bijective, torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), steps=0)
    assert set(spy.events()[("forward", "forward")]) == set(spy.convs) and spy.flags() == {IEEE}
    assert Float32Flags.capture() == before


def _train_cfg(out, **kw):
    from irevnet.training import get_recipe
    from irevnet.training.trainer import TrainConfig

    recipe = get_recipe("digits").replace(epochs=1, dropout=0.1)
    return TrainConfig(preset="digits", data="synthetic", out=str(out), recipe=recipe, synthetic_size=64,
                       model_overrides={"blocks": (1, 1)}, device="cpu", progress=False, **kw)


@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("switch", [False, True])
def test_irevnet_train_full_float32_switch(tmp_path, switch, memory_efficient):
    """irevnet train follows the global flags by default; --full-float32 trains (and evaluates) in IEEE float32."""
    from irevnet.training.trainer import train

    _set_legacy_tf32()
    global_flags = _conv_flags()
    seen: set[tuple[Any, ...]] = set()

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            seen.add(_conv_flags())
            if output.requires_grad:
                output.register_hook(lambda g: seen.add(_conv_flags()))

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:  # with evaluation only under the switch: the reconstruction monitor is IEEE float32 either way
        train(_train_cfg(tmp_path, full_float32=switch, memory_efficient=memory_efficient,
                         eval_every=1 if switch else 0))
    finally:
        handle.remove()
    assert seen == ({IEEE} if switch else {global_flags})
    assert _conv_flags() == global_flags


def test_full_float32_contradicts_allow_tf32(tmp_path):
    from irevnet import ConfigError
    from irevnet.training.trainer import train

    with pytest.raises(ConfigError, match="full_float32 .* contradicts allow_tf32"):
        train(_train_cfg(tmp_path, full_float32=True, allow_tf32=True))
    assert not (tmp_path / "last.pt").exists()


def test_cli_full_float32(tmp_path, capsys):
    import json

    from irevnet.cli.main import main

    args = ["train", "--preset", "digits", "--data", "synthetic", "--synthetic-size", "64", "--model", "blocks=1,1",
            "--epochs", "1", "--eval-every", "0", "--no-progress", "--device", "cpu", "--full-float32"]
    assert main([*args, "--allow-tf32", "--out", str(tmp_path / "both")]) == 2
    assert "full_float32 (train in IEEE float32) contradicts allow_tf32" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["full_float32"] is True
