"""Print the op × domain table of docs/domains.md (``python docs/op_table.py``) or the
ONNX op list of docs/onnx-ops.md (``python docs/op_table.py --onnx``), both built from the
registries by :mod:`verifier.coverage`. Paste the output between the ``op-table`` (resp.
``onnx-ops``) markers; ``tests/test_docs_tables.py`` checks that both are current.
"""

from __future__ import annotations

import sys

from verifier.coverage import END, ONNX_END, ONNX_START, START, onnx_ops_table, op_table

__all__ = ["END", "ONNX_END", "ONNX_START", "START", "onnx_ops_table", "op_table"]

if __name__ == "__main__":
    print(onnx_ops_table() if "--onnx" in sys.argv[1:] else op_table())
