"""Models and comparisons shared by the IR cache tests (``test_ir_cache.py``,
``test_ir_cache_folders.py``; their fixtures ``cache_dir`` and ``calls`` are in conftest.py):
the model files every hit is compared on, exact IR equality, the cache's entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from benchdata import benchmarks_dir
from onnx_builders import GraphBuilder, save_model
from verifier.ir import cache as ir_cache
from verifier.ir.graph import topological_order

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "models" / "mnist_small.onnx"
MNIST_SPEC = REPO / "models" / "properties" / "mnist_0_eps0.02.vnnlib"
MNIST_SAT_SPEC = REPO / "models" / "properties" / "mnist_5_eps0.3.vnnlib"
CASES = Path(__file__).resolve().parent / "cases"
SMALL = CASES / "models" / "small5x3.onnx"


def zoo_model(seed: int = 0) -> onnx.ModelProto:
    """A small net through many converters: conv, pooling, pad, transpose, slice, gather (a
    numpy index), gemm, concat, reduce, clip (into relus), softmax."""
    g = GraphBuilder(np.random.default_rng(seed), (1, 2, 6, 6))
    h = g.op("Relu", g.op("Conv", g.x, g.weight(3, 2, 3, 3), g.rand(3), pads=[1, 1, 1, 1]))
    h = g.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Pad", h, g.ints([0, 0, 1, 0, 0, 0, 0, 1]), g.const(np.float32(0.5)))
    h = g.op("Slice", g.op("Transpose", h, perm=[0, 2, 3, 1]), g.ints([1]), g.ints([3]), g.ints([1]))
    h = g.op("Reshape", g.op("LeakyRelu", h, alpha=0.2), g.ints([1, -1]))
    a = g.op("Gather", h, g.ints([0, 2, 5]), axis=1)
    b = g.op("Sigmoid", g.op("Gemm", h, g.weight(4, 24), g.rand(4), transB=1))
    h = g.op("Concat", a, b, axis=1)
    h = g.op("ReduceSum", g.op("Reshape", h, g.ints([1, 7, 1])), g.ints([2]), keepdims=0)
    h = g.op("Clip", h, g.const(np.float32(-1)), g.const(np.float32(2)))
    return g.model(g.op("Softmax", h, axis=1))


def model_files(tmp_path) -> list[Path]:
    """The shipped MNIST net, the small cases (float32, float16, batched matmul, clip), the
    zoo and, when present, one ACAS Xu and one oval21 net."""
    files = [MNIST, SMALL, CASES / "models" / "small5x3_f16.onnx",
             CASES / "field" / "case04_matmul_3d_batched" / "model_a.onnx",
             CASES / "field" / "case15_clip_optional_inputs" / "model_b.onnx",
             save_model(zoo_model(), tmp_path, "zoo")]
    bench = benchmarks_dir()
    if bench is not None:
        files += [bench / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx",
                  bench / "oval21" / "onnx" / "cifar_base_kw.onnx"]
    return [f for f in files if f.is_file()]


def equal_values(a, b) -> bool:
    """Exact equality of IR values: same types, tensors and arrays equal in dtype, shape, strides
    and every bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and \
            bool(torch.equal(a, b) or (torch.isnan(a) == torch.isnan(b)).all() and torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and np.shape(a) == np.shape(b) and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal_values(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(equal_values(a[k], b[k]) for k in a)
    return a == b


def assert_same_ir(ours, fresh) -> None:
    """Nodes, edges and graph attributes in the same order with the same data."""
    assert list(ours.nodes) == list(fresh.nodes)
    for node in fresh.nodes:
        for key in ("kind", "params", "attrs", "shape", "source"):
            assert equal_values(ours.nodes[node][key], fresh.nodes[node][key]), (node, key)
    assert list(ours.edges(data=True)) == list(fresh.edges(data=True))
    public = lambda g: {k: v for k, v in g.graph.items() if not k.startswith("_") and k != "order"}  # noqa: E731
    assert equal_values(public(ours), public(fresh))
    assert topological_order(ours) == topological_order(fresh)


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*" + ir_cache.SUFFIX)) if folder.is_dir() else []
