"""The intermediate representation: one ``networkx.DiGraph`` per model.

Nodes are normalised ops (see :mod:`verifier.ops` for their semantics); each edge
carries the input ``slots`` its source feeds (usually one). ``graph.graph`` holds ``input``/``output`` node ids, the ONNX tensor
names, and ``order`` (a topological order computed once).
"""

from .graph import input_node, output_node, parameter_count, summary, topological_order
from .onnx_import import import_onnx

__all__ = [
    "import_onnx",
    "input_node",
    "output_node",
    "parameter_count",
    "summary",
    "topological_order",
]
