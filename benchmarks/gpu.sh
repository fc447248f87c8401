#!/usr/bin/env bash
# GPU check in one script (issue 14, deliverable 3): the domain soundness grid, the bound-speed
# benchmarks and two small VNN-COMP runs on one device, written to one markdown table.
#
# Usage (repository root, project installed, e.g. on an offline GPU machine with torch, onnx,
# onnxruntime, networkx, scipy and tqdm preinstalled:
#     pip install --no-deps --no-build-isolation -e .):
#
#     bash benchmarks/gpu.sh [OUT_DIR]
#
# Environment: DEVICE (default cuda), BENCH (default ../shared/benchmarks/vnncomp),
# SCALE (timeout scale of the VNN-COMP runs, default 0.25), MNIST_COUNT (10), OVAL_COUNT (5).
# Each stage has a wall-clock limit (the whole script stays under 8 minutes); a stage cut by
# its limit is reported as such in the table, never hidden. DEVICE=cpu runs the same script
# on a CPU machine (to check the script itself; its numbers are not the GPU's).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/gpu-out}
DEVICE=${DEVICE:-cuda}
BENCH=${BENCH:-../shared/benchmarks/vnncomp}
SCALE=${SCALE:-0.25}
MNIST_COUNT=${MNIST_COUNT:-10}
OVAL_COUNT=${OVAL_COUNT:-5}
mkdir -p "$OUT" || { echo "error: cannot create output folder $OUT" >&2; exit 2; }
TABLE="$OUT/gpu.md"

if [ "$DEVICE" != cpu ] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: DEVICE=$DEVICE but torch sees no CUDA device; run with DEVICE=cpu to check the script" >&2
    exit 2
fi
for sub in mnist_fc oval21; do
    [ -f "$BENCH/$sub/instances.csv" ] || { echo "error: $BENCH/$sub/instances.csv not found (set BENCH)" >&2; exit 2; }
done

# run_stage NAME LIMIT_S LOG CMD...: runs CMD under a time limit, records rc and seconds.
declare -a ROWS
run_stage() {
    local name=$1 limit=$2 log=$3; shift 3
    local start end rc status
    start=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$log" 2>&1
    rc=$?
    end=$SECONDS
    case $rc in
        0) status=ok ;;
        124|137) status="cut at ${limit} s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    ROWS+=("| $name | $status | $(( end - start )) | \`$(basename "$log")\` |")
    echo "$name: $status" >&2
}

# Every k-th instance, so that the sample spans the benchmark's nets and epsilons.
sample_instances() {  # BENCH_SUB COUNT OUT_CSV
    local total step
    total=$(grep -c . "$1/instances.csv")
    step=$(( total / $2 )); [ "$step" -ge 1 ] || step=1
    awk -v s="$step" -v n="$2" 'NF && (NR - 1) % s == 0 && c < n { print; c++ }' "$1/instances.csv" >"$3"
}
sample_instances "$BENCH/mnist_fc" "$MNIST_COUNT" "$OUT/mnist_fc_instances.csv"
sample_instances "$BENCH/oval21" "$OVAL_COUNT" "$OUT/oval21_instances.csv"

run_stage "domain soundness grid (pytest --device $DEVICE)" 120 "$OUT/soundness.log" \
    python -m pytest -q -p no:cacheprovider tests/test_domain_soundness.py --device "$DEVICE" \
        -k "box_bounds or deepz_bounds or crown_bounds or dual_lp_bounds"
run_stage "domains_speed.py (batch 1, 10)" 100 "$OUT/domains_speed.log" \
    python benchmarks/domains_speed.py --device "$DEVICE" --quick --markdown "$OUT/domains_speed.md"
run_stage "bounds_speed.py" 45 "$OUT/bounds_speed.log" \
    python benchmarks/bounds_speed.py "$BENCH" --device "$DEVICE" --markdown "$OUT/bounds_speed.md"
for sub in mnist_fc oval21; do
    rm -f "$OUT/$sub.csv"
    run_stage "vnncomp $sub ($(grep -c . "$OUT/${sub}_instances.csv") instances, timeouts x $SCALE)" 100 \
        "$OUT/vnncomp_$sub.log" \
        verifier vnncomp "$BENCH/$sub" --instances "$OUT/${sub}_instances.csv" \
            --timeout-scale "$SCALE" --device "$DEVICE" --output "$OUT/$sub.csv"
done

{
    echo "# benchmarks/gpu.sh on $DEVICE ($(python -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")'), $(date -u +%F))"
    echo
    echo "| stage | status | wall s | log |"
    echo "|---|---|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "## soundness grid"
    echo; tail -n 1 "$OUT/soundness.log"; echo
    for part in domains_speed bounds_speed; do
        echo "## $part"; echo
        if [ -s "$OUT/$part.md" ]; then cat "$OUT/$part.md"
        else echo "(no table; the last lines of $part.log:)"; echo; echo '```'; tail -n 25 "$OUT/$part.log"; echo '```'; fi
        echo
    done
    for sub in mnist_fc oval21; do
        echo "## vnncomp $sub"; echo
        if [ -s "$OUT/$sub.csv" ]; then
            verifier report "$OUT/$sub.csv" --reference "$BENCH/$sub/reference.csv" 2>&1 || true
        else
            echo "(no results: see vnncomp_$sub.log)"
        fi
        echo
    done
} >"$TABLE"
echo "table: $TABLE" >&2
