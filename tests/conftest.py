import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    # Deterministic data per test; tests that check RNG handling set their own state.
    torch.manual_seed(0)
    yield
