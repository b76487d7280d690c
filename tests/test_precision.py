"""The precision policy: Φ, Φ⁻¹ and the memory-saving recompute run in IEEE float32 whatever the global flags.

The flags are observed from inside the model (a hook on a bottleneck), while the global
flags ask for TF32 / bf16; afterwards the caller's flags must be back, exactly. CPU only:
the flags are the same global state on every device; what they cost on a GPU is measured
by benchmarks, not here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from irevnet import create_model
from irevnet.precision import Float32Flags, full_float32


def _public_flags() -> dict[str, object]:
    """The flags as a user reads them through PyTorch's public API."""
    b = torch.backends
    flags = {name: _read(getter) for name, getter in [
        ("cudnn.allow_tf32", lambda: b.cudnn.allow_tf32), ("cuda.matmul.allow_tf32", lambda: b.cuda.matmul.allow_tf32),
        ("float32_matmul_precision", torch.get_float32_matmul_precision)]}
    if hasattr(b.cudnn, "conv"):  # the fp32_precision API (PyTorch >= 2.9)
        for name, obj in [("generic", b), ("cudnn", b.cudnn), ("cudnn.conv", b.cudnn.conv), ("cudnn.rnn", b.cudnn.rnn),
                          ("cuda.matmul", b.cuda.matmul), ("mkldnn", b.mkldnn), ("mkldnn.conv", b.mkldnn.conv),
                          ("mkldnn.matmul", b.mkldnn.matmul), ("mkldnn.rnn", b.mkldnn.rnn)]:
            flags[name + ".fp32_precision"] = obj.fp32_precision
    return flags


def _read(getter):
    try:
        return getter()
    except RuntimeError as e:  # legacy and new APIs mixed: PyTorch refuses to answer
        return f"refused: {str(e)[:40]}"


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


SETTINGS = {"default": lambda: None, "legacy_tf32": _set_legacy_tf32, "matmul_medium": _set_matmul_medium}
if hasattr(torch.backends.cudnn, "conv"):
    SETTINGS["new_api_tf32_bf16"] = _set_new_api


@pytest.fixture(autouse=True)
def _restore_global_flags():
    """These tests change process-global flags: put the session's back, whatever happens."""
    saved = Float32Flags.capture()
    yield
    saved.apply()
    assert Float32Flags.capture() == saved


def _spy(model) -> list[Float32Flags]:
    """Flags seen inside the second block's bottleneck at every call (forward, inverse, recompute)."""
    seen: list[Float32Flags] = []
    model.blocks[1].bottleneck.register_forward_hook(lambda *_: seen.append(Float32Flags.capture()))
    return seen


def _model(**kwargs):
    return create_model("cifar10", blocks=(2, 1, 1), **kwargs)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_forward_and_inverse_run_in_full_float32_and_restore_the_flags(setting):
    SETTINGS[setting]()
    before, public = Float32Flags.capture(), _public_flags()
    model = _model().eval()
    seen = _spy(model)
    with torch.no_grad():
        phi = model.forward_features(torch.rand(2, 3, 32, 32))
        assert Float32Flags.capture() == before
        model.inverse(phi)
        model.forward_intermediates(torch.rand(2, 3, 32, 32))
    assert len(seen) == 3 and all(flags.exact for flags in seen)
    assert Float32Flags.capture() == before and _public_flags() == public


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s != "default"])
def test_opting_out_follows_the_global_flags(setting):
    SETTINGS[setting]()
    before = Float32Flags.capture()
    assert not before.exact
    model = _model().eval().set_full_float32(False)
    seen = _spy(model)
    with torch.no_grad():
        model.inverse(model.forward_features(torch.rand(2, 3, 32, 32)))
    assert seen == [before, before]


@pytest.mark.parametrize("exact", [True, False])
def test_memory_saving_recompute_uses_the_forwards_flags(exact):
    """The backward runs later, possibly under other global flags: it must replay the forward's."""
    _set_legacy_tf32()
    model = _model(memory_efficient=True).train().set_full_float32(exact)
    in_forward = Float32Flags.ieee() if exact else Float32Flags.capture()
    seen = _spy(model)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = F.cross_entropy(model(x), y)
    with full_float32():  # the global flags differ from the forward's when the backward runs ...
        global_at_backward = Float32Flags.capture()
        loss.backward()
        assert Float32Flags.capture() == global_at_backward  # ... and are left as they were
    forward_call, recompute_call = seen
    assert forward_call == in_forward and recompute_call == in_forward
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


def test_analyses_reconstruct_in_full_float32_even_when_the_model_opted_out():
    from irevnet.analysis import interpolate, reconstruct

    _set_legacy_tf32()
    before = Float32Flags.capture()
    model = _model().set_full_float32(False)
    seen = _spy(model)
    x = torch.rand(2, 3, 32, 32)
    reconstruct(model, x, floor=False)
    interpolate(model, x[:1], x[1:], steps=2)
    assert len(seen) == 6 and all(flags.exact for flags in seen)
    assert Float32Flags.capture() == before and model.training
