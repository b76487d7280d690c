import copy

import pytest
import torch

import irevnet
from floor import (check, check_reconstruction, floor_of_batch,
                   relative_error, sensitivity)
from trained import briefly_trained_cifar
from irevnet import create_model, list_presets
from irevnet.analysis.inversion import float64_copy
from irevnet.config import get_preset


def small_shape(model):
    """Inputs for the ImageNet presets at 64x64 (same weights, 12x fewer pixels)."""
    c, h, w = model.input_shape
    return (c, 64, 64) if h > 64 else (c, h, w)


def test_list_presets():
    assert set(list_presets()) >= {"digits", "cifar10", "cifar100", "imagenet-a", "imagenet-b"}


@pytest.mark.parametrize("preset,params", [("imagenet-b", 125_120_356), ("cifar10", 6_274_826)])
def test_parameter_counts_match_reference(preset, params):
    assert create_model(preset).num_parameters() == params


def test_imagenet_b_is_bijective_with_paper_shapes():
    m = create_model("imagenet-b")
    assert not m.injective
    assert m.depth == 100 and m.describe()["layers"] == 301
    assert m.feature_shape() == (3072, 7, 7)
    assert m.describe()["phi_size"] == m.describe()["input_size"] == 3 * 224 * 224


def test_imagenet_a_layout():
    m = create_model("imagenet-a")
    assert m.injective
    d = m.describe()
    assert d["after_init_psi"] == [48, 56, 56]
    assert [2 * s["channels_per_half"] for s in d["stages"]] == [96, 384, 1536, 6144]
    # down-sampling at blocks 5, 9 and 15 of 18
    assert [i + 1 for i, b in enumerate(m.blocks) if b.stride == 2] == [5, 9, 15]
    assert m.depth == 18


@pytest.mark.parametrize("preset", list_presets())
def test_the_configuration_plan_is_the_built_network(preset):
    """Every block, feature_info entry and stage end the model has is the configuration's plan."""
    config = get_preset(preset)
    with torch.device("meta"):
        model = create_model(preset)
    plan = config.plan
    assert [(b.in_channels, b.out_channels, b.stride, b.injective, b.bottleneck.first) for b in model.blocks] == \
        [(p.in_channels, p.out_channels, p.stride, p.pad > 0, p.first) for p in plan]
    assert [b.bottleneck.in_channels for b in model.blocks] == [p.bottleneck_in_channels for p in plan]
    ends = [j for j in range(len(plan)) if j == len(plan) - 1 or model.stage_index[j + 1] != model.stage_index[j]]
    assert list(config.stage_ends) == ends and len(ends) == len(config.blocks)
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == [(p.channels, p.reduction) for p in plan]
    # The shapes a forward produces (on the meta device: shapes without arithmetic).
    x = torch.empty(1, *config.input_shape, device="meta")
    assert [tuple(z.shape[1:]) for z in model.forward_intermediates(x, intermediates_only=True)] == \
        [p.output_shape(config.input_shape[1:]) for p in plan] == model.block_output_shapes()
    assert tuple(model.init_psi(x).shape[1:]) == config.embedding_shape
    assert model.feature_shape() == config.feature_shape() == (model.num_features, *model.block_output_shapes()[-1][1:])


def test_overrides():
    m = create_model("cifar10", num_classes=7, blocks=(1, 2, 1), dropout=0.2)
    assert m.depth == 4 and m.head.fc.out_features == 7
    assert m.blocks[0].bottleneck.drop.p == 0.2
    with pytest.raises(TypeError, match="unknown model option"):
        create_model("cifar10", colour="blue")


# Bounds from the rounding model (tests/floor.py): error <= 2·u·κ, κ emulated on the same input
# in the same mode. In train mode BatchNorm's batch statistics make the inverse of a deep
# network at initialization ill-conditioned (κ ~ 5e4 on cifar10, float32 errors ~1e-4), eval
# mode is far better conditioned (κ ~ 3); which kernels run decides the error within the bound.
def test_cifar100_is_cifar10_with_another_head():
    """So Φ and Φ⁻¹ of the two are the same function family: test_inverse_exact_at_init checks cifar10's."""
    a, b = get_preset("cifar10").to_dict(), get_preset("cifar100").to_dict()
    assert {k for k in a if a[k] != b[k]} == {"name", "description", "num_classes", "data"}


@pytest.mark.numerics
@pytest.mark.parametrize("preset", ["digits", *(pytest.param(name, marks=pytest.mark.slow)
                                                 for name in ("cifar10", "imagenet-a", "imagenet-b"))])
def test_inverse_exact_at_init(preset):
    model = create_model(preset)
    # Two ImageNet images (24,576 entries: the norms still sum thousands of independent terms,
    # tests/floor.py): the same ratios error / bound as four (0.03-0.06), in 2/3 of the time.
    x = torch.randn(2 if model.input_shape[1] > 64 else 4, *small_shape(model))
    # The model and its float64 copy, kept side by side (converting 200M parameters back and forth costs more).
    models = {torch.float32: model, torch.float64: float64_copy(model)}
    for train in (True, False):
        for m in models.values():
            m.train(train)
        with torch.no_grad():  # the same BatchNorm statistics (a train-mode pass updates them): the same function
            for b64, b in zip(models[torch.float64].buffers(), model.buffers(), strict=True):
                b64.copy_(b)
        kappa = sensitivity(model, x)
        for dtype, m in models.items():
            with torch.no_grad():
                err = relative_error(m.inverse(m.forward_features(x.to(dtype))), x)
            check(err, kappa.batch_bound("inverse", dtype), f"{'train' if train else 'eval'} {dtype}")


@pytest.mark.slow
@pytest.mark.numerics
def test_inverse_exact_after_training_steps():
    """Trained weights and BatchNorm statistics (not just the init) keep the inverse within its bound."""
    model = briefly_trained_cifar()
    assert int(model.blocks[1].bottleneck.bn0.num_batches_tracked) == 30
    x = torch.rand(8, 3, 32, 32)
    model.eval()
    check_reconstruction(model, x, "eval")
    model.double()
    check_reconstruction(model, x, "eval")
    model.train()
    check_reconstruction(model, x, "train")


@pytest.mark.slow
@pytest.mark.numerics
def test_train_mode_float32_is_within_its_bound_where_the_function_is_ill_conditioned():
    """Train mode at init: the exact inverse of Φ merely rounded to float32 is already off by
    more than 1e-6 (the floor, a float64 computation: no kernel decides it), and our float32
    error stays within the rounding model's bound."""
    model = create_model("cifar10").train()
    x = torch.randn(4, 3, 32, 32)
    assert floor_of_batch(model, x) > 1e-6  # the function itself amplifies float32 rounding
    check_reconstruction(model, x, "train")


def test_inverse_does_not_change_state_in_train_mode():
    model = create_model("cifar10", blocks=(2, 2, 2)).train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        phi = model.forward_features(x)
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model.inverse(phi)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training


def test_inverse_raises_in_train_mode_with_dropout():
    model = create_model("digits", dropout=0.1).train()
    phi = model.forward_features(torch.rand(2, 1, 8, 8))
    with pytest.raises(RuntimeError, match="dropout"):
        model.inverse(phi)
    model.eval()
    check_reconstruction(model, torch.rand(2, 1, 8, 8))


def test_forward_head_and_intermediates():
    model = create_model("cifar10", blocks=(2, 2, 2)).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    phi = model.forward_features(x)
    assert phi.shape == (2, 512, 8, 8)
    assert torch.equal(model(x), model.forward_head(phi))
    assert model.forward_head(phi, pre_logits=True).shape == (2, 512)
    final, inter = model.forward_intermediates(x)
    assert len(inter) == model.depth
    assert torch.equal(inter[-1], phi) and torch.equal(final, phi)
    assert [tuple(t.shape[1:]) for t in inter] == model.block_output_shapes()
    assert [f["num_chs"] for f in model.feature_info] == [s[0] for s in model.block_output_shapes()]
    for depth, z in enumerate(inter, start=1):  # float64, within the rounding model's bound (tests/floor.py)
        check(relative_error(model.inverse(z, depth=depth), x),
              sensitivity(model, x, depth=depth).batch_bound("inverse", torch.float64), f"depth {depth}")


def test_forward_intermediates_has_timms_semantics():
    model = create_model("cifar10", blocks=(2, 2, 2)).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    _, every = model.forward_intermediates(x)
    # An int takes the last n blocks, a list the given ones (negative from the end), in block order.
    _, last2 = model.forward_intermediates(x, 2)
    assert all(torch.equal(a, b) for a, b in zip(last2, every[-2:]))
    only = model.forward_intermediates(x, [-1, 1], intermediates_only=True)
    assert len(only) == 2 and torch.equal(only[0], every[1]) and torch.equal(only[1], every[-1])
    # stop_early: the forward ends at the last selected block, which is then the final output.
    final, early = model.forward_intermediates(x, [0, 2], stop_early=True)
    assert torch.equal(final, every[2]) and torch.equal(early[0], every[0])
    assert [j for j, _ in model.iter_intermediates(x, [3, 1])] == [1, 3]
    for bad in ([6], [-7], 0, 7):
        with pytest.raises(ValueError, match="out of range|must be in 1..6"):
            model.forward_intermediates(x, bad)
    with pytest.raises(ValueError, match="no norm layer"):
        model.forward_intermediates(x, norm=True)


def test_reset_classifier():
    model = create_model("cifar10", blocks=(1, 1, 1)).eval()
    x = torch.randn(2, 3, 32, 32)
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(0)
    assert model.num_classes == 0 and torch.equal(model(x), pooled)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.config.num_classes == 7 and model.get_classifier().out_features == 7
    with pytest.raises(ValueError, match="average only"):
        model.reset_classifier(3, global_pool="max")


@pytest.mark.parametrize(
    "shape,match",
    [((2, 1, 32, 32), "expected 3 input channel"),
     ((2, 3, 30, 32), "divisible by the network's total down-sampling 4"),
     ((3, 32, 32), "expected a 4-D input")],
)
def test_bad_input_errors(shape, match):
    model = create_model("cifar10", blocks=(1, 1, 1))
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


def test_bad_representation_errors():
    model = create_model("cifar10", blocks=(1, 1, 1))
    with pytest.raises(ValueError, match=r"inverse expects a representation of shape \(N, 512, H, W\)"):
        model.inverse(torch.randn(2, 256, 8, 8))
    with pytest.raises(ValueError, match="inverse expects"):
        model.inverse(torch.randn(512, 8, 8))
    with pytest.raises(ValueError, match="depth must be in"):
        model.inverse(torch.randn(2, 512, 8, 8), depth=9)


def test_unknown_preset_error():
    with pytest.raises(ValueError, match="unknown preset 'resnet50'; available presets: cifar10"):
        create_model("resnet50")


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="equal length"):
        irevnet.IRevNet(blocks=(1, 1), strides=(1,), channels=(4, 16))
    with pytest.raises(ValueError, match="at least 2 are needed"):
        create_model("digits", init_block_size=0)
    with pytest.raises(ValueError, match="mult must be >= 1"):
        create_model("digits", mult=0)
