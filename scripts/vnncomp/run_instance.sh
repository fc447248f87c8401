#!/usr/bin/env bash
# VNN-COMP run_instance.sh: verify one instance and write the VNN-COMP result file.
# Usage: run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT
# The verifier gets TIMEOUT minus a safety margin (max(3 s, 5 %), for Python start-up)
# and is killed at TIMEOUT if it overruns, leaving `timeout` in RESULTS_FILE. When the
# server prepare_instance.sh starts is running, `verify` is served by it without Python's
# start-up (docs/serve.md); signals and the exit status are as without it.
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

BUDGET="$(awk -v t="$TIMEOUT" 'BEGIN { if (t !~ /^([0-9]+([.][0-9]*)?|[.][0-9]+)$/ || t + 0 <= 0) exit 1;
    m = t * 0.05; if (m < 3) m = 3; b = t - m; if (b < 1) b = (t < 1 ? t : 1); printf "%.3f", b }')" || {
    echo "error: TIMEOUT must be a positive number of seconds, got '$TIMEOUT'" >&2
    exit 1
}
RESULTS_DIR="$(dirname -- "$RESULTS_FILE")"
if [ ! -d "$RESULTS_DIR" ] || [ -d "$RESULTS_FILE" ]; then
    echo "error: RESULTS_FILE '$RESULTS_FILE' must be a file path in an existing folder" >&2
    exit 1
fi
# The result file is replaced atomically (temporary file + rename): never a torn verdict.
put_result() {
    local tmp="$RESULTS_FILE.tmp.$$"
    printf '%s\n' "$1" > "$tmp" && mv -f -- "$tmp" "$RESULTS_FILE"
}
echo "running $BENCHMARK: $ONNX $VNNLIB (timeout $TIMEOUT s, verifier budget $BUDGET s)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK" "$RESULTS_FILE.tmp.$$"' EXIT
plain() {
    case "$1" in
        *.gz) out="$WORK/$(basename "${1%.gz}")"; gzip -dc "$1" > "$out" && echo "$out" ;;
        *) echo "$1" ;;
    esac
}
ONNX_FILE="$(plain "$ONNX")" || { put_result error; exit 1; }
VNNLIB_FILE="$(plain "$VNNLIB")" || { put_result error; exit 1; }

rm -f "$RESULTS_FILE"
# shellcheck disable=SC2086
timeout --kill-after=2 "$TIMEOUT" "$PYTHON" -m verifier.cli verify "$ONNX_FILE" "$VNNLIB_FILE" \
    --timeout "$BUDGET" --result-file "$RESULTS_FILE" ${VERIFIER_ARGS:-}
STATUS=$?
if [ "$STATUS" -eq 124 ] || [ "$STATUS" -eq 137 ]; then
    put_result timeout
elif [ ! -s "$RESULTS_FILE" ]; then
    put_result error
fi
exit 0
