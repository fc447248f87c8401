"""The Python API: :func:`load` a model, :func:`compute_bounds` over input boxes."""

from __future__ import annotations

import math
import os

import networkx as nx
import torch

from .domains import get_domain
from .errors import VerifierInputError
from .ir import evaluate, import_onnx
from .ir.fidelity import FidelityReport, check_fidelity
from .ops import CACHE


class Model:
    """An imported ONNX model: its IR ``graph`` plus shapes and a forward pass.

    ``input_shape``/``output_shape`` are per-sample (ONNX shapes with the batch axis
    set to 1); every tensor passed in or out has a leading batch axis of our own.
    """

    def __init__(self, graph: nx.DiGraph, fidelity: FidelityReport | None = None):
        self.graph = graph
        self.fidelity = fidelity
        self._copies: dict[tuple, nx.DiGraph] = {}

    @property
    def path(self) -> str:
        return self.graph.graph["path"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.graph.nodes[self.graph.graph["input"]]["shape"])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.graph.nodes[self.graph.graph["output"]]["shape"])

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_size(self) -> int:
        return math.prod(self.output_shape)

    def graph_for(self, device: torch.device | str, dtype: torch.dtype) -> nx.DiGraph:
        """The IR with parameters on ``device`` in ``dtype`` (cached)."""
        key = (str(torch.device(device)), dtype)
        if key not in self._copies:
            copy = self.graph.copy()
            copy.graph = dict(self.graph.graph)
            copy.graph.pop("_ort_session", None)
            for _, data in copy.nodes(data=True):
                data.pop(CACHE, None)  # values derived from the original's parameters
                data["params"] = {k: v.to(device=device, dtype=dtype) for k, v in data["params"].items()}
            self._copies[key] = copy
        return self._copies[key]

    def as_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Accept ``input_shape``, ``(B, *input_shape)``, ``(input_size,)``, ``(B, input_size)``
        or, when the model's own batch axis is 1, an ONNX-style batch ``(B, *input_shape[1:])``;
        return ``(B, *input_shape)``."""
        shape = self.input_shape
        if shape and shape[0] == 1 and x.dim() == len(shape) and tuple(x.shape[1:]) == shape[1:]:
            return x.reshape(x.shape[0], *shape)
        if tuple(x.shape) == shape or (x.dim() == 1 and x.numel() == self.input_size):
            return x.reshape(1, *shape)
        if tuple(x.shape[1:]) == shape or (x.dim() == 2 and x.shape[1] == self.input_size):
            return x.reshape(x.shape[0], *shape)
        raise VerifierInputError(f"input of shape {list(x.shape)} does not fit the model input {list(shape)} "
                                 f"({self.input_size} values per sample)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(B, output_size)`` (flattened) for a batch of inputs."""
        x = self.as_batch(x)
        y = evaluate(self.graph_for(x.device, x.dtype), x)
        return y.reshape(y.shape[0], -1)

    __call__ = forward

    def __repr__(self) -> str:
        return f"Model({os.path.basename(self.path)!r}, input={list(self.input_shape)}, output={list(self.output_shape)})"


def load(path: str | os.PathLike, check: bool = True, lower: torch.Tensor | None = None,
         upper: torch.Tensor | None = None, samples: int = 4) -> Model:
    """Import an ONNX model. With ``check`` (default), its IR must agree with onnxruntime
    on ``samples`` random inputs from ``[lower, upper]`` (default ``[−1, 1]``) or a
    :class:`~verifier.errors.FidelityError` names the first diverging node."""
    graph = import_onnx(path)
    report = check_fidelity(graph, lower, upper, samples=samples) if check else None
    return Model(graph, report)


def compute_bounds(model: Model, lower: torch.Tensor, upper: torch.Tensor, domain: str = "box",
                   C: torch.Tensor | None = None, **domain_options) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound bounds on the model's outputs for all inputs in the box ``[lower, upper]``.

    ``lower``/``upper``: one box or a batch (see :meth:`Model.as_batch`); the computation
    runs on their device and in their dtype. Without ``C`` the result is ``(lb, ub)``
    of shape ``(B, output_size)`` (flattened outputs); with ``C`` — ``(k, output_size)``
    or ``(B, k, output_size)`` — it bounds ``C·f(x)`` and has shape ``(B, k)``.
    """
    lower, upper = model.as_batch(lower), model.as_batch(upper.to(lower))
    if bool(torch.any(lower > upper)):
        raise VerifierInputError("the input box is empty (some lower bound exceeds its upper bound)")
    if C is not None:
        C = C.to(lower)
        if C.shape[-1] != model.output_size:
            raise VerifierInputError(f"C has {C.shape[-1]} columns but the model has {model.output_size} outputs")
    graph = model.graph_for(lower.device, lower.dtype)
    try:
        instance = get_domain(domain, **domain_options)
    except TypeError as exc:
        raise VerifierInputError(f"bad option for domain '{domain}': {exc}") from None
    return instance.bound(graph, lower, upper, C)
