#!/usr/bin/env bash
# VNN-COMP run_instance.sh: verify one instance and write the VNN-COMP result file.
# Usage: run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT
# The verifier gets TIMEOUT minus a safety margin (max(3 s, 5 %), for Python start-up)
# and is killed at TIMEOUT if it overruns, leaving `timeout` in RESULTS_FILE.
# Environment: PYTHON (default python3); VERIFIER_ARGS (extra `verifier verify` options).
set -uo pipefail

. "$(dirname "$0")/common.sh"
check_args 6 "v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT" "$@"
BENCHMARK="$2"
ONNX="$3"
VNNLIB="$4"
RESULTS_FILE="$5"
TIMEOUT="$6"
PYTHON="${PYTHON:-python3}"

BUDGET="$(awk -v t="$TIMEOUT" 'BEGIN { if (t + 0 <= 0 || t !~ /^[0-9.]+$/) exit 1;
    m = t * 0.05; if (m < 3) m = 3; b = t - m; if (b < 1) b = (t < 1 ? t : 1); printf "%.3f", b }')" || {
    echo "error: TIMEOUT must be a positive number of seconds, got '$TIMEOUT'" >&2
    exit 1
}
echo "running $BENCHMARK: $ONNX $VNNLIB (timeout $TIMEOUT s, verifier budget $BUDGET s)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
plain() {
    case "$1" in
        *.gz) out="$WORK/$(basename "${1%.gz}")"; gzip -dc "$1" > "$out" && echo "$out" ;;
        *) echo "$1" ;;
    esac
}
ONNX_FILE="$(plain "$ONNX")" || { echo "error" > "$RESULTS_FILE"; exit 1; }
VNNLIB_FILE="$(plain "$VNNLIB")" || { echo "error" > "$RESULTS_FILE"; exit 1; }

rm -f "$RESULTS_FILE"
# shellcheck disable=SC2086
timeout --kill-after=2 "$TIMEOUT" "$PYTHON" -m verifier.cli verify "$ONNX_FILE" "$VNNLIB_FILE" \
    --timeout "$BUDGET" --result-file "$RESULTS_FILE" ${VERIFIER_ARGS:-}
STATUS=$?
if [ "$STATUS" -eq 124 ] || [ "$STATUS" -eq 137 ]; then
    echo "timeout" > "$RESULTS_FILE"
elif [ ! -s "$RESULTS_FILE" ]; then
    echo "error" > "$RESULTS_FILE"
fi
exit 0
