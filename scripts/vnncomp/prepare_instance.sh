#!/usr/bin/env bash
# VNN-COMP prepare_instance.sh: stop stray verifier runs, then load and validate the
# model and spec once (import, size check, onnxruntime agreement, Box bounds). The import
# and the passed agreement check go into the IR cache (README, "The IR cache"; keyed by
# the file's content, so run_instance.sh's own decompressed copy hits it): the competition
# does not time this step, and run_instance.sh then skips both. It also starts a persistent
# worker (`verifier serve --detach`, docs/serve.md) unless one is running, so that
# run_instance.sh's `verifier verify` skips Python's start-up, the imports and the exit.
# Usage: prepare_instance.sh v1 BENCHMARK ONNX VNNLIB
# Environment: PYTHON (default python3); VERIFIER_NO_KILL=1 skips stopping other runs;
# VERIFIER_NO_SERVE=1 starts no server (and the verifier uses none); VERIFIER_SERVE_IDLE:
# seconds without a command after which the server stops (default 300); VERIFIER_SOCKET,
# VERIFIER_CACHE_DIR / VERIFIER_NO_CACHE as for the verifier (the same for both scripts).
set -uo pipefail

. "$(dirname "$0")/common.sh"
check_args 4 "v1 BENCHMARK ONNX VNNLIB" "$@"
BENCHMARK="$2"
ONNX="$3"
VNNLIB="$4"
PYTHON="${PYTHON:-python3}"
echo "preparing $BENCHMARK: $ONNX $VNNLIB"

# Stray runs of this user's `verifier verify` from a previous instance (never this script).
if [ "${VERIFIER_NO_KILL:-0}" != "1" ]; then
    for pid in $(pgrep -u "$(id -u)" -f "verifier(\.cli)? verify" || true); do
        [ "$pid" != "$$" ] && kill -9 "$pid" 2>/dev/null || true
    done
fi

# Compressed files are decompressed beside a temporary copy.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
plain() {
    case "$1" in
        *.gz) out="$WORK/$(basename "${1%.gz}")"; gzip -dc "$1" > "$out" && echo "$out" ;;
        *) echo "$1" ;;
    esac
}
ONNX_FILE="$(plain "$ONNX")" || { echo "error: cannot decompress $ONNX" >&2; exit 1; }
VNNLIB_FILE="$(plain "$VNNLIB")" || { echo "error: cannot decompress $VNNLIB" >&2; exit 1; }

# The server warms up (seconds) while the model is checked; --detach returns once it listens,
# or at once when one is already running.
SERVER=""
case "${VERIFIER_NO_SERVE:-}" in
    ""|0) "$PYTHON" -m verifier.cli serve --detach --idle-timeout "${VERIFIER_SERVE_IDLE:-300}" & SERVER=$! ;;
esac

"$PYTHON" -m verifier.cli bounds "$ONNX_FILE" "$VNNLIB_FILE" --domain box --json > /dev/null
STATUS=$?
if [ -n "$SERVER" ] && ! wait "$SERVER"; then
    echo "note: no verifier server started; run_instance.sh runs the verifier on its own" >&2
fi
if [ "$STATUS" -ne 0 ]; then
    echo "error: $ONNX / $VNNLIB failed validation (exit $STATUS)" >&2
    exit 1
fi
exit 0
