#!/usr/bin/env bash
# VNN-COMP install_tool.sh: install this repository (editable) into the current Python.
# Usage: install_tool.sh v1        (set PYTHON to choose the interpreter; default python3)
set -euo pipefail

. "$(dirname "$0")/common.sh"
check_args 1 "v1" "$@"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m pip install -e "$REPO"
# Byte-compile now, so that no instance's first run pays for compiling the sources.
"$PYTHON" -m compileall -q "$REPO/verifier" "$REPO/plugins" > /dev/null
"$PYTHON" - <<'PY'
import platform

import onnx
import onnxruntime
import torch

import verifier

print(f"verifier {verifier.__version__}, python {platform.python_version()}, torch {torch.__version__}, "
      f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, cuda {torch.cuda.is_available()}")
PY
"$PYTHON" -m verifier.cli domains
