import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed(request):
    # Deterministic data per test; tests that check RNG handling set their own state. Tests
    # marked `numerics` draw from IREVNET_TEST_SEED (default 0): their rounding-error bounds
    # must hold for any draw, and tests/numerics_variants.sh varies it.
    numerics = request.node.get_closest_marker("numerics") is not None
    torch.manual_seed(int(os.environ.get("IREVNET_TEST_SEED", "0")) if numerics else 0)
    yield
