#!/usr/bin/env bash
# The numerical tests (pytest -m numerics) under each CPU kernel variant, 1 and 2 threads.
#
# Which kernels compute a convolution or a sum decides its rounding errors: MKL's code path
# (MKL_CBWR), ATen's vectorized kernels (ATEN_CPU_CAPABILITY), oneDNN's ISA
# (ONEDNN_MAX_CPU_ISA) and the thread count. The bounds in tests/floor.py must hold under all
# of them; each run also shuffles the test order (pytest-randomly) and draws other data
# (IREVNET_TEST_SEED, seeds 0-2). AVX-512 variants run only where the CPU has AVX-512.
# Prints one line per variant and, at the end, the worst ratio error / bound per check.
#
# Usage: tests/numerics_variants.sh [PYTHON [PYTEST ARGS...]]   (make test-numerics)
# e.g. tests/numerics_variants.sh .venv/bin/python -k digits   (a quick subset)
# THREADS="1" (or "2") runs one thread count only: two OpenMP threads on a busy machine wait on
# each other at every barrier and run many times slower, so run them when the cores are free.
set -u
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-python}}
shift $(($# > 0 ? 1 : 0))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

variants=("default" "MKL_CBWR=COMPATIBLE" "MKL_CBWR=AVX2" "ATEN_CPU_CAPABILITY=default" "ATEN_CPU_CAPABILITY=avx2"
          "ONEDNN_MAX_CPU_ISA=AVX2" "ONEDNN_MAX_CPU_ISA=SSE41")
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    variants+=("MKL_CBWR=AVX512" "ATEN_CPU_CAPABILITY=avx512" "ONEDNN_MAX_CPU_ISA=AVX512_CORE")
else
    echo "(this CPU has no AVX-512: MKL_CBWR=AVX512, ATEN_CPU_CAPABILITY=avx512 skipped)"
fi

printf '%-30s %-7s %-5s %-6s %-7s %-7s %s\n' variant threads seed order passed failed seconds
status=0
run=0
for variant in "${variants[@]}"; do
    for threads in ${THREADS:-1 2}; do
        run=$((run + 1))
        seed=$((run % 3))
        env_args=(OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" IREVNET_TEST_SEED="$seed"
                  NUMERICS_RATIOS="$work/ratios-$run.jsonl")
        [ "$variant" != default ] && env_args+=("$variant")
        start=$(date +%s)
        env "${env_args[@]}" "$PY" -m pytest -q -m numerics -p randomly --randomly-seed="$run" \
            -p no:cacheprovider "$@" >"$work/log-$run.txt" 2>&1
        rc=$?
        seconds=$(($(date +%s) - start))
        summary=$(tail -n 1 "$work/log-$run.txt")
        passed=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
        failed=0
        for n in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$summary" | grep -oE '^[0-9]+'); do failed=$((failed + n)); done
        printf '%-30s %-7s %-5s %-6s %-7s %-7s %s\n' "$variant" "$threads" "$seed" "$run" "${passed:-0}" "$failed" "$seconds"
        echo "$variant threads=$threads" >"$work/name-$run.txt"
        if [ "$rc" -ne 0 ]; then
            status=1
            grep -E '^(FAILED|ERROR)' "$work/log-$run.txt" | sed 's/^/    /'
        fi
    done
done

"$PY" - "$work" <<'PY'
import json, pathlib, sys

work = pathlib.Path(sys.argv[1])
worst = {}
for path in sorted(work.glob("ratios-*.jsonl")):
    name = (work / path.name.replace("ratios-", "name-").replace(".jsonl", ".txt")).read_text().strip()
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = (r["test"].removeprefix("tests/"), r["what"])
        if key not in worst or r["ratio"] > worst[key][0]:
            worst[key] = (r["ratio"], name)
print(f"\nworst error / bound per check over {len(list(work.glob('ratios-*.jsonl')))} runs:")
for (test, what), (ratio, name) in sorted(worst.items()):
    print(f"  {ratio:8.3g}  {test} [{what}]  ({name})")
PY
exit $status
