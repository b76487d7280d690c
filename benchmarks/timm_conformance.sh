#!/usr/bin/env bash
# timm's own generic model tests (tests/test_models.py of the installed timm's source
# distribution, with its pytest settings) run against every irevnet_* model, unmodified but
# for two additions:
#   - a conftest that imports irevnet (registering its models with timm);
#   - irevnet's registry module ("timm_models") added to FEAT_INTER_FILTERS, timm's list of
#     modules whose models implement forward_intermediates / prune_intermediate_layers.
#
#   TIMM_SDIST=/path/to/timm-1.0.31.tar.gz bash benchmarks/timm_conformance.sh [pytest args]
#
# The sdist (or a folder it was unpacked into) must be the installed timm's version: get it
# once with `pip download --no-deps --no-binary :all: timm==$(python -c 'import timm;
# print(timm.__version__)')`. Nothing is downloaded here: without it the script says why and
# exits 0 (skipped). Runs `pytest tests/test_models.py -k irevnet` niced, CPU only, one
# thread unless OMP_NUM_THREADS says otherwise; extra arguments go to pytest (e.g.
# `-k "irevnet and fx"`); timm's TIMEOUT variable raises its per-test timeouts. Which timm
# tests cannot hold for an invertible network, and why: docs/timm.md, "timm's own model tests".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
SDIST="${TIMM_SDIST:-}"

version="$("$PY" -c 'import timm; print(timm.__version__)' 2>/dev/null)" || {
  echo "SKIPPED: timm is not installed for $PY (pip install 'irevnet[timm]')"; exit 0; }
if [ -z "$SDIST" ] || [ ! -e "$SDIST" ]; then
  echo "SKIPPED: set TIMM_SDIST to timm $version's source distribution (a .tar.gz or its unpacked folder);"
  echo "  get it once with: pip download --no-deps --no-binary :all: timm==$version -d DIR"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/timm-conformance.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
if [ -d "$SDIST" ]; then
  src="$SDIST"
else
  tar -xzf "$SDIST" -C "$WORK"
  src="$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
fi
have="$(sed -n 's/^Version: //p' "$src/PKG-INFO" 2>/dev/null || true)"
if [ "$have" != "$version" ]; then
  echo "SKIPPED: $SDIST is timm ${have:-of unknown version}, but timm $version is installed"; exit 0
fi
[ -f "$src/tests/test_models.py" ] || { echo "SKIPPED: $src has no tests/test_models.py"; exit 0; }

mkdir -p "$WORK/run"
cp -r "$src/tests" "$WORK/run/tests"
cp "$src/pyproject.toml" "$WORK/run/"  # timm's pytest markers
printf '\nimport irevnet  # noqa: E402,F401  registers the irevnet_* models with timm\nimport timm  # noqa: E402,F401\n' \
  >> "$WORK/run/tests/conftest.py"
# Exactly one edit of timm's file: irevnet's module joins the forward_intermediates list.
"$PY" - "$WORK/run/tests/test_models.py" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
anchor = "FEAT_INTER_FILTERS = ["
assert text.count(anchor) == 1, "timm's test_models.py no longer has FEAT_INTER_FILTERS"
open(path, "w").write(text.replace(anchor, anchor + "'timm_models', ", 1))
EOF

cd "$WORK/run"
echo "timm $version tests from $SDIST; irevnet from $ROOT/src"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" TORCH_DEVICE=cpu
# timm's pytest settings (its pyproject.toml), in timm's order (-p no:randomly).
nice -n 10 "$PY" -m pytest tests/test_models.py -k irevnet -p no:randomly -p no:cacheprovider -q "$@"
