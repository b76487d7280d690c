# Quick start: `make demo` and `make test` on a fresh clone (needs only python3.11 and make).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo lint test test-fast test-numerics gpu-smoke install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The exact versions of constraints.txt (torch and torchvision from this machine's local files);
# pyproject.toml itself only states ranges, so irevnet installs beside any tested PyTorch.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,lint,hub,timm,onnx]'

demo: install
	$(BIN)/irevnet demo --out runs/demo

# Formatting, lint and types of src/ (pyproject.toml configures ruff and mypy): seconds once mypy's cache exists.
lint: install
	$(BIN)/ruff format --check src
	$(BIN)/ruff check src
	$(BIN)/mypy

# Lint, then every test, the slow ones (subprocess training runs, torchrun, compile) included: what CI runs.
# TEST_WORKERS processes (pytest-xdist) of one thread each share the tests, each taking the next
# one as it finishes the last, slow tests first (tests/conftest.py). `make test TEST_WORKERS=8` on
# a larger machine.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist load --maxschedchunk 1
test: lint
	$(PYTEST)

# While developing: all but the tests marked slow (pyproject.toml lists the marker), in ~1 min.
test-fast: install
	$(PYTEST) -m "not slow"

# benchmarks/gpu_suite.sh on the CPU: every section with tiny sizes, to check that the GPU run will
# run to its end (a few minutes; not part of `make test`). Output in $$OUT (default /tmp/irevnet-gpu).
gpu-smoke: install
	PYTHON=$(BIN)/python bash benchmarks/gpu_suite.sh --smoke

# The numerical tests under each CPU kernel variant (MKL, ATen, oneDNN code paths; 1 and 2
# threads): one line per variant, then the worst ratio error / bound per check.
test-numerics: install
	tests/numerics_variants.sh $(BIN)/python

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
