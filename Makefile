# Quick start: `make demo` and `make test` on a fresh clone (needs only python3.11 and make).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The exact versions of constraints.txt (torch and torchvision from this machine's local files);
# pyproject.toml itself only states ranges, so irevnet installs beside any tested PyTorch.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,hub,timm,onnx]'

demo: install
	$(BIN)/irevnet demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
