import os

import pytest
import torch

import trained

# Under pytest-xdist (`make test` runs two workers) the workers share the cores: one intra-op
# thread each, and in the subprocesses they start, unless the caller set a count. The numerical
# bounds hold for 1 or 2 threads (tests/floor.py).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    # `make test` hands each worker the next test of the collection as it finishes one
    # (--dist load --maxschedchunk 1): the tests marked slow (up to a minute or two each) go
    # first, so that none starts when the other worker has nothing left to run.
    # pytest-randomly's shuffle stays within each group.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def _share_trained_models(tmp_path_factory):
    # Each xdist worker is a process of its own: the models of tests/trained.py are trained by
    # the first worker that asks and read from this run's shared folder by the others.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        trained.SHARED = tmp_path_factory.getbasetemp().parent / "trained"
    yield
    trained.SHARED = None


@pytest.fixture(autouse=True)
def _seed(request):
    # Deterministic data per test; tests that check RNG handling set their own state. Tests
    # marked `numerics` draw from IREVNET_TEST_SEED (default 0): their rounding-error bounds
    # must hold for any draw, and tests/numerics_variants.sh varies it.
    numerics = request.node.get_closest_marker("numerics") is not None
    torch.manual_seed(int(os.environ.get("IREVNET_TEST_SEED", "0")) if numerics else 0)
    yield
