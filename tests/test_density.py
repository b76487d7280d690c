"""The bijective digits preset and exact densities: log p(x) = log N(Φ(x); 0, I)."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from irevnet import create_model
from irevnet.model import standard_normal_log_prob


def test_digits_b_is_bijective_with_64_entries():
    model = create_model("digits-b")
    assert not model.injective and not any(b.injective for b in model.blocks)
    assert model.feature_shape() == (16, 2, 2)
    assert math.prod(model.feature_shape()) == math.prod(model.input_shape) == 64
    assert model.num_parameters() == 10_650
    assert model.describe()["kind"] == "bijective"


def test_digits_b_inverse_is_exact():
    model = create_model("digits-b").double().eval()
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        x_rec = model.inverse(model.forward_features(x))
    assert ((x_rec - x).norm() / x.norm()).item() <= 1e-14


@pytest.fixture
def digits_b64():
    """digits-b in float64 with non-trivial BatchNorm statistics and affine parameters."""
    torch.manual_seed(0)
    model = create_model("digits-b").double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
        model.train()
        for _ in range(3):
            model(3 * torch.rand(32, 1, 8, 8, dtype=torch.float64))
    return model


def test_standard_normal_log_prob_matches_torch_distributions():
    z = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(z), ref, rtol=0, atol=1e-12)


def test_log_prob_eval_mode_equals_change_of_variables(digits_b64):
    """Eval mode: each example's Jacobian ∂Φ/∂x (64x64) has log|det| = 0, so log p(x) = log N(Φ(x))."""
    model = digits_b64.eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    logp = model.log_prob(x)
    assert logp.shape == (3,)
    for i in range(3):
        jac = jacobian(lambda v: model.forward_features(v.view(1, 1, 8, 8)).flatten(), x[i].flatten())
        assert jac.shape == (64, 64)
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign != 0 and abs(logdet.item()) <= 1e-8
        # The Jacobian is far from orthogonal, so the zero log-det is structural, not trivial.
        assert torch.linalg.svdvals(jac)[0] / torch.linalg.svdvals(jac)[-1] > 2
        phi = model.forward_features(x[i : i + 1]).flatten()
        ref = torch.distributions.Normal(0.0, 1.0).log_prob(phi).sum() + logdet
        assert abs(logp[i].item() - ref.item()) <= 1e-8


def test_log_prob_train_mode_is_exact_for_the_batch(digits_b64):
    """Train mode: BatchNorm couples the examples; the batch-to-Φ map (256x256) still has log|det| = 0,
    so the sum of log_prob is the exact joint log-density of the batch, while the per-example
    diagonal blocks of the Jacobian are no longer volume-preserving."""
    model = digits_b64.train()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    jac = jacobian(lambda v: model.forward_features(v.view(4, 1, 8, 8)).flatten(), x.flatten())
    model.load_state_dict(state)  # the Jacobian's forwards updated running statistics
    sign, logdet = torch.linalg.slogdet(jac)
    assert sign != 0 and abs(logdet.item()) <= 1e-8
    blocks = [torch.linalg.slogdet(jac[64 * i : 64 * (i + 1), 64 * i : 64 * (i + 1)])[1].item() for i in range(4)]
    assert max(abs(b) for b in blocks) > 1e-3
    joint = torch.distributions.Normal(0.0, 1.0).log_prob(model.forward_features(x)).sum() + logdet
    model.load_state_dict(state)
    assert abs(model.log_prob(x).sum().item() - joint.item()) <= 1e-8


def test_log_prob_refuses_injective_models():
    with pytest.raises(ValueError, match="bijective model.*injective"):
        create_model("digits", blocks=(1, 1)).log_prob(torch.rand(2, 1, 8, 8))
