import pytest
import torch

from floor import check, per_image_relative_error, sensitivity
from irevnet.blocks import IRevBlock
from irevnet.layers import InjectivePad, InvertibleDownsampling, depth_to_space, merge, space_to_depth, split


@pytest.mark.parametrize("block_size", [2, 3, 4])
def test_psi_matches_reference_index_formula(block_size):
    n, c, h, w, b = 2, 3, 4 * block_size, 2 * block_size, block_size
    x = torch.randn(n, c, h, w)
    y = space_to_depth(x, b)
    assert y.shape == (n, b * b * c, h // b, w // b)
    # Independent formula: output channel (i*b + j)*C + c holds x[c, b*r + i, b*s + j].
    expected = torch.empty_like(y)
    for i in range(b):
        for j in range(b):
            for ch in range(c):
                expected[:, (i * b + j) * c + ch] = x[:, ch, i::b, j::b]
    assert torch.equal(y, expected)


def test_psi_order_differs_from_pixel_unshuffle():
    x = torch.randn(1, 3, 4, 4)
    assert not torch.equal(space_to_depth(x, 2), torch.nn.PixelUnshuffle(2)(x))
    # ... but they hold the same values (both are permutations of the input).
    assert torch.equal(space_to_depth(x, 2).flatten().sort().values, x.flatten().sort().values)


@pytest.mark.parametrize("block_size", [0, 1, 2, 4])
def test_psi_inverse_is_exact(block_size):
    psi = InvertibleDownsampling(block_size)
    x = torch.randn(2, 3, 16, 8)
    assert torch.equal(psi.inverse(psi(x)), x)
    assert torch.equal(depth_to_space(space_to_depth(x, max(block_size, 1)), max(block_size, 1)), x)


def test_psi_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible by block size 2"):
        space_to_depth(torch.randn(1, 3, 5, 4), 2)


def test_split_merge_reference_halves():
    x = torch.randn(2, 5, 3, 3)
    x1, x2 = split(x)
    assert x1.shape[1] == 2 and x2.shape[1] == 3  # odd C: the extra channel goes to x2
    assert torch.equal(merge(x1, x2), x)


def test_injective_pad_appends_zeros_at_end():
    pad = InjectivePad(5)
    x = torch.randn(2, 3, 4, 4)
    y = pad(x)
    assert y.shape == (2, 8, 4, 4)
    assert torch.equal(y[:, :3], x) and torch.count_nonzero(y[:, 3:]) == 0
    assert torch.equal(pad.inverse(y), x)


@pytest.mark.parametrize("in_ch,out_ch,stride", [(8, 4, 1), (3, 16, 1), (8, 16, 2), (12, 16, 1)])
def test_block_inverse_exact(in_ch, out_ch, stride):
    block = IRevBlock(in_ch, out_ch, stride=stride).double()
    x = torch.randn(4, in_ch, 8, 8, dtype=torch.float64)
    pair = split(x)
    for mode in (True, False):
        block.train(mode)
        with torch.no_grad():
            y = block(pair)
            assert y[0].shape == y[1].shape == (4, out_ch, 8 // stride, 8 // stride)
            x_rec = merge(*block.inverse(y))
        assert torch.allclose(x_rec, x, rtol=0, atol=1e-12)
    assert block.injective == (stride == 1 and 2 * out_ch != in_ch)


def test_block_constructor_errors():
    with pytest.raises(ValueError, match="stride-2 block needs"):
        IRevBlock(8, 8, stride=2)
    with pytest.raises(ValueError, match="cannot reduce channels"):
        IRevBlock(16, 4)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        IRevBlock(8, 4, stride=3)


@pytest.mark.parametrize("block_size", [2, 3])
def test_psi_keeps_channels_last(block_size):
    """ψ and ψ⁻¹ copy once, in the input's memory format: NHWC in, NHWC out, same values."""
    cl = torch.channels_last
    x = torch.randn(2, 6, 2 * block_size, 3 * block_size)
    for inp in (x.contiguous(memory_format=cl), split(x.contiguous(memory_format=cl))[1]):  # a channel slice too
        ref = inp.contiguous()
        y = space_to_depth(inp, block_size)
        assert y.is_contiguous(memory_format=cl) and not y.is_contiguous()
        assert torch.equal(y, space_to_depth(ref, block_size))
        back = depth_to_space(y, block_size)
        assert back.is_contiguous(memory_format=cl) and torch.equal(back, ref)
    assert space_to_depth(x, block_size).is_contiguous()  # NCHW stays NCHW


@pytest.mark.numerics
@pytest.mark.parametrize("preset", ["cifar10", "imagenet-b"])
def test_channels_last_survives_the_blocks(preset):
    """A channels_last model on a channels_last input keeps NHWC through ψ, padding and every block."""
    from irevnet import create_model

    cl = torch.channels_last
    shape = {"cifar10": dict(blocks=(2, 2, 2)), "imagenet-b": dict(blocks=(1, 2, 1, 1), input_shape=(3, 32, 32))}
    torch.manual_seed(0)
    model = create_model(preset, **shape[preset]).eval()
    x = torch.randn(2, *model.input_shape)
    kappa = sensitivity(model, x)
    with torch.no_grad():
        phi_ref = model.forward_features(x)
        model.to(memory_format=cl)
        pair = model._embed(x.contiguous(memory_format=cl))
        for j, block in enumerate(model.blocks):
            pair = block(pair)
            # the second half always; the first too, except where it is a channel slice (injective split)
            assert pair[1].is_contiguous(memory_format=cl), j
            assert pair[0].is_contiguous(memory_format=cl) or pair[0].stride(1) == 1, j
        phi = merge(*pair)
        # NHWC runs other kernels: two float32 computations of Φ, and a round trip (tests/floor.py).
        check(per_image_relative_error(phi, phi_ref), kappa.bound("forward", computations=2), "phi")
        check(per_image_relative_error(model.inverse(phi), x), kappa.bound(), "round trip")
