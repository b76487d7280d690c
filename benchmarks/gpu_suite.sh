#!/usr/bin/env bash
# Every GPU figure of benchmarks/README.md in one run of at most 9 minutes on one H100/H200
# (run from the source tree with the machine's own PyTorch; only torch and numpy are assumed).
#
#   bash benchmarks/gpu_suite.sh               # on the GPU machine: figures to $OUT (default /tmp/irevnet-gpu)
#   bash benchmarks/gpu_suite.sh --smoke       # on a CPU: the same sections, tiny sizes, < 3 minutes
#   bash benchmarks/gpu_suite.sh --fetch-deps  # where PyPI is reachable: the train section's wheels,
#                                              # unpacked in benchmarks/.gpu-deps (git-ignored: carry it)
#
# Sections, in order, each written to $OUT/NN-name.log line by line (a kill keeps what ran),
# all of them to $OUT/gpu_suite.log, the speed rows also to $OUT/speed.jsonl:
#   preflight  a tiny torch.compile(mode="reduce-overhead") step; if it fails, the reason, and
#              the sections below run eager only
#   exactness  benchmarks/gpu_checks.py: the precision policy's inverse errors, memory-saving vs
#              plain against float64, dropout/BN/RNG/autocast, CUDA-graph replays
#   speed      benchmarks/gpu_speed.py: eager/compiled x plain/memory-saving x fp32/bf16, eval and
#              inverse img/s, compile counts; stops starting rows when its share of the budget is spent
#   train      benchmarks/gpu_train.py: irevnet train --compile reduce-overhead, 2 epochs of synthetic
#              cifar10: img/s of epoch 1 (compile included) and epoch 2 (steady), eval, reconstruction
#              monitor; needs tqdm and torchvision: the machine's, else benchmarks/.gpu-deps, else skipped
# Budget (GPU_SUITE_BUDGET_S, default 540 s): preflight <= 60 s, exactness <= 150 s, train <= 100 s,
# speed the rest. Each section prints its elapsed time.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
DEPS="$PWD/benchmarks/.gpu-deps"

fetch_deps() {  # wheels for the GPU machine's Python and PyTorch (defaults: the lent machine's, see benchmarks/README.md)
  local py="${GPU_PYTHON:-3.12}" torch="${GPU_TORCH:-2.11.0}" minor wheels
  minor="${torch#2.}"; minor="${minor%%.*}"
  wheels="$(mktemp -d)"
  rm -rf "$DEPS"; mkdir -p "$DEPS"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$wheels" tqdm pillow "torchvision==0.$((minor + 15)).*" || return 1
  for w in "$wheels"/*.whl; do "$PY" -m zipfile -e "$w" "$DEPS"; done
  rm -rf "$wheels"
  echo "benchmarks/.gpu-deps: $(ls "$DEPS" | grep -c dist-info) packages, $(du -sh "$DEPS" | cut -f1) (Python $py, torch $torch)"
}

SMOKE=0
case "${1:-}" in
  --fetch-deps) fetch_deps; exit $? ;;
  --smoke) SMOKE=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_suite.sh [--smoke | --fetch-deps]" >&2; exit 2 ;;
esac
OUT="${OUT:-/tmp/irevnet-gpu}"; mkdir -p "$OUT"
BUDGET="${GPU_SUITE_BUDGET_S:-540}"
FLAGS=(); [ "$SMOKE" = 1 ] && FLAGS=(--smoke)
T0=$SECONDS
left() { echo $((BUDGET - (SECONDS - T0))); }
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }

section() {  # section NN name timeout command...: run it, its output to $OUT/NN-name.log and the suite's log
  local nn="$1" name="$2" limit="$3"; shift 3
  local start=$SECONDS rc
  echo "== $name (limit ${limit} s, $(left) s of the budget left)"
  if [ "$limit" -le 5 ]; then echo "$name: skipped, budget spent"; return 1; fi
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$nn-$name.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "$name: stopped at its time limit (${limit} s); what it printed is kept"
  echo "== $name: exit status $rc, $((SECONDS - start)) s"
  return "$rc"
}

{
  echo "irevnet GPU suite$([ "$SMOKE" = 1 ] && echo ', smoke run (CPU, tiny sizes: figures mean nothing)'), budget ${BUDGET} s"
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)" \
    || { echo "suite: $PY cannot import torch (set PYTHON=/path/to/python)"; exit 1; }
  for mod in numpy triton tqdm torchvision PIL; do
    "$PY" -c "import $mod" 2>/dev/null && echo "  $mod: yes" || echo "  $mod: no"
  done

  COMPILED=1
  section 01 preflight 60 "$PY" benchmarks/gpu_preflight.py "${FLAGS[@]}" || COMPILED=0
  EAGER=(); [ "$COMPILED" = 0 ] && { EAGER=(--eager); echo "preflight failed: compiled rows and checks are left out"; }

  limit=$(min 150 $(($(left) - 200)))
  section 02 exactness "$limit" "$PY" benchmarks/gpu_checks.py "${FLAGS[@]}" "${EAGER[@]}" --budget-s $((limit - 20))

  limit=$(($(left) - 110))
  rm -f "$OUT/speed.jsonl"
  section 03 speed "$limit" env OUT="$OUT" "$PY" benchmarks/gpu_speed.py "${FLAGS[@]}" "${EAGER[@]}" \
    --budget-s $((limit - 20))

  if ! "$PY" -c "import tqdm, torchvision" 2>/dev/null && [ -d "$DEPS" ]; then
    export PYTHONPATH="$PYTHONPATH:$DEPS"; echo "train: tqdm and torchvision from benchmarks/.gpu-deps"
  fi
  section 04 train "$(min 100 $(($(left) - 5)))" "$PY" benchmarks/gpu_train.py "$OUT" "${FLAGS[@]}" "${EAGER[@]}"
  echo "suite: $((SECONDS - T0)) s"
} 2>&1 | tee "$OUT/gpu_suite.log"
