"""The intermediate representation: one ``networkx.DiGraph`` per model.

Nodes are normalised ops (see :mod:`verifier.ops` for their semantics); each edge
carries the input ``slots`` its source feeds (usually one). ``graph.graph`` holds ``input``/``output`` node ids, the ONNX tensor
names, and ``order`` (a topological order computed once).
"""

from .graph import input_node, output_node, parameter_count, summary, topological_order


def __getattr__(name: str):
    """``import_onnx`` on first use: the importer pulls in onnx and every converter, which a
    model read from the IR cache (:mod:`verifier.ir.cache`) does not need."""
    if name == "import_onnx":
        from .onnx_import import import_onnx

        return import_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "import_onnx",
    "input_node",
    "output_node",
    "parameter_count",
    "summary",
    "topological_order",
]
