"""The bijective digits preset and exact densities: log p(x) = log N(Φ(x); 0, I)."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from floor import LAMBDA, check, check_reconstruction, logdet_bound, sensitivity, unit_roundoff
from irevnet import create_model
from irevnet.model import standard_normal_log_prob


def test_digits_b_is_bijective_with_64_entries():
    model = create_model("digits-b")
    assert not model.injective and not any(b.injective for b in model.blocks)
    assert model.feature_shape() == (16, 2, 2)
    assert math.prod(model.feature_shape()) == math.prod(model.input_shape) == 64
    assert model.num_parameters() == 10_650
    assert model.describe()["kind"] == "bijective"


@pytest.mark.numerics
def test_digits_b_inverse_is_exact():
    model = create_model("digits-b").double().eval()
    check_reconstruction(model, torch.rand(8, 1, 8, 8, dtype=torch.float64))  # ~1e-15 (tests/floor.py)


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


@pytest.mark.numerics
def test_standard_normal_log_prob_matches_torch_distributions():
    z = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    terms = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1)
    # Two sums of K = 12 terms, each term off by a few u: each within (K + 3)·u·Σ|terms| of the
    # exact sum in any order (Higham 2002, eq. 4.4), so they differ by at most twice that.
    bound = 2 * (terms.shape[1] + 3) * unit_roundoff(torch.float64) * terms.abs().sum(1)
    check((standard_normal_log_prob(z) - terms.sum(1)).abs(), bound, "log N(z)")


@pytest.mark.numerics
def test_log_prob_eval_mode_equals_change_of_variables(digits_b64):
    """Eval mode: each example's Jacobian ∂Φ/∂x (64x64) has log|det| = 0, so log p(x) = log N(Φ(x))."""
    model = digits_b64.eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    logp = model.log_prob(x)
    assert logp.shape == (3,)
    kappa = sensitivity(model, x)
    for i in range(3):
        jac = jacobian(lambda v: model.forward_features(v.view(1, 1, 8, 8)).flatten(), x[i].flatten())
        assert jac.shape == (64, 64)
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign != 0
        check(abs(logdet.item()), logdet_bound(jac, kappa.forward[i].item()), "log|det| eval")
        # The Jacobian is far from orthogonal, so the zero log-det is structural, not trivial.
        assert torch.linalg.svdvals(jac)[0] / torch.linalg.svdvals(jac)[-1] > 2
        phi = model.forward_features(x[i : i + 1]).flatten()
        terms = torch.distributions.Normal(0.0, 1.0).log_prob(phi)
        ref = terms.sum() + logdet
        # log p(x) against log N(Φ) + log|det|: logdet within its bound of 0; Φ of a batch of 3
        # and of one image each within 2u·κ·‖Φ‖, moving log N by ‖Φ‖·‖ΔΦ‖; two sums of 64 terms.
        u = unit_roundoff(torch.float64)
        bound = (logdet_bound(jac, kappa.forward[i].item()) + 2 * LAMBDA * u * kappa.forward[i].item() * phi.square().sum()
                 + 2 * (phi.numel() + 3) * u * terms.abs().sum()).item()
        check(abs(logp[i].item() - ref.item()), bound, "log p eval")


@pytest.mark.numerics
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
    bound = logdet_bound(jac, sensitivity(model, x).forward_batch)
    assert sign != 0
    check(abs(logdet.item()), bound, "log|det| train")
    blocks = [torch.linalg.slogdet(jac[64 * i : 64 * (i + 1), 64 * i : 64 * (i + 1)])[1].item() for i in range(4)]
    assert max(abs(b) for b in blocks) > 1e-3
    phi = model.forward_features(x)
    terms = torch.distributions.Normal(0.0, 1.0).log_prob(phi)
    joint = terms.sum() + logdet
    model.load_state_dict(state)
    # The same Φ (one forward of the same batch each), two sums of 256 terms, logdet's bound.
    u = unit_roundoff(torch.float64)
    bound += 2 * (phi.numel() + 3) * u * terms.abs().sum().item()
    check(abs(model.log_prob(x).sum().item() - joint.item()), bound, "log p train")


def test_log_prob_refuses_injective_models():
    with pytest.raises(ValueError, match="bijective model.*injective"):
        create_model("digits", blocks=(1, 1)).log_prob(torch.rand(2, 1, 8, 8))
