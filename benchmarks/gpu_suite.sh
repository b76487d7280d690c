#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one run (the lent GPU machine has its own
# PyTorch; irevnet runs from the source tree). Output goes to stdout and to $OUT if set.
#   bash benchmarks/gpu_suite.sh                 # every section (more than 15 minutes)
#   bash benchmarks/gpu_suite.sh checks speed    # only these sections, in this order
# Sections: checks, compiled-checks, speed, throughput, memory, memory-compiled, train, decode.
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/irevnet-gpu}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SECTIONS=("$@"); [ ${#SECTIONS[@]} -eq 0 ] && SECTIONS=(checks speed throughput memory train)
{
  nvidia-smi -L; $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__)"
  for section in "${SECTIONS[@]}"; do
    case "$section" in
      checks) echo "== checks"; timeout 300 $PY benchmarks/gpu_checks.py ;;
      compiled-checks) echo "== compiled checks"; timeout 240 $PY benchmarks/gpu_checks.py --compiled ;;
      speed) echo "== speed (eager vs compiled blocks, plain vs memory-saving, fp32 vs bf16)"
             timeout 540 $PY benchmarks/gpu_speed.py ;;
      throughput)
        echo "== throughput cifar10 b128"; timeout 90 $PY benchmarks/throughput.py --device cuda --preset cifar10 --batch-size 128 --iters 5
        echo "== throughput imagenet-b b32"; timeout 120 $PY benchmarks/throughput.py --device cuda --preset imagenet-b --batch-size 32 --iters 3 --repeats 3 ;;
      memory) echo "== memory"; timeout 150 $PY benchmarks/memory.py --device cuda --batch-size 128 ;;
      memory-compiled) echo "== memory, compiled blocks (reduce-overhead)"
             timeout 400 $PY benchmarks/memory.py --device cuda --batch-size 128 --compile reduce-overhead ;;
      train)
        for flags in "" "--memory-efficient" "--amp bf16 --channels-last" "--amp bf16 --channels-last --memory-efficient" \
                     "--compile reduce-overhead" "--compile reduce-overhead --memory-efficient"; do
          echo "== train cifar10 b128 $flags"
          rm -rf /tmp/gpu-train
          timeout 150 $PY -m irevnet train --preset cifar10 --data synthetic --synthetic-size 12800 --epochs 1 \
            --eval-every 0 --no-progress --device cuda --out /tmp/gpu-train $flags 2>&1 | grep -E "img/s|error|Error" | head -3
        done ;;
      decode) echo "== JPEG decoding: loader workers vs --decode-on device (nvJPEG)"
              timeout 240 $PY benchmarks/data_throughput.py --images 512 --gpu-img-s 560 2000 --decode-on cuda ;;
      *) echo "unknown section $section (checks, compiled-checks, speed, throughput, memory, memory-compiled, train, decode)" ;;
    esac
  done
} 2>&1 | tee "$OUT/gpu_suite.log"
