"""The verifier's IR of a torch module, with its parameters bound to the module's tensors.

:class:`LiveModel` exports the module to ONNX once, imports that file with the
verifier's own front-end (so every normalisation pass runs exactly as for any ONNX
model), then binds every IR parameter to the module parameter it came from. Bounds from
any registered domain are then differentiable in the module's parameters: the training
objectives call the verifier's domains, never a copy of their maths.

Binding is by value: before the export every parameter is overwritten with distinct
random values (then restored), so each IR tensor equals exactly one parameter, possibly
transposed or reshaped (a dense layer becomes ``y = x Wᵀ + b``). A parameter that no IR
tensor equals (e.g. a BatchNorm folded into a convolution) is an error, and after binding
the IR's forward pass must equal the module's on random inputs.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable

import networkx as nx
import torch
import torch.nn as nn

import verifier
from verifier.domains import get_domain
from verifier.domains.base import Domain
from verifier.errors import VerifierInputError
from verifier.engine import evaluate
from verifier.ir.graph import topological_order
from verifier.engine import evaluate_from as engine_evaluate_from


def export_onnx(module: nn.Module, input_shape: tuple[int, ...], path: str, opset: int | None = None) -> None:
    """Export ``module`` (per-sample input shape ``input_shape``) with a dynamic batch axis."""
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            param = next(module.parameters(), None)
            dummy = torch.zeros(1, *input_shape, dtype=torch.float32,
                                device=param.device if param is not None else "cpu")
            kwargs = {} if opset is None else {"opset_version": opset}
            torch.onnx.export(module, dummy, path, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True,
                              **kwargs)
    finally:
        module.train(was_training)


@dataclass
class Binding:
    """IR ``node``'s parameter ``name`` is ``transform(param)``."""

    node: str
    name: str
    param: nn.Parameter
    param_name: str
    transform: Callable[[torch.Tensor], torch.Tensor]
    how: str


def _match(value: torch.Tensor, params: dict[str, nn.Parameter]):
    """The parameter (and the view of it) that ``value`` equals exactly, or ``None``."""
    value = value.detach().cpu().float()
    for name, p in params.items():
        q = p.detach().cpu().float()
        if q.numel() != value.numel():
            continue
        if q.shape == value.shape and torch.equal(q, value):
            return name, (lambda t: t), "same"
        if q.dim() == 2 and tuple(q.t().shape) == tuple(value.shape) and torch.equal(q.t(), value):
            return name, (lambda t: t.t()), "transpose"
        if torch.equal(q.reshape(-1), value.reshape(-1)):
            shape = tuple(value.shape)
            return name, (lambda t, s=shape: t.reshape(s)), f"reshape{list(shape)}"
        if q.dim() == 2 and torch.equal(q.t().reshape(-1), value.reshape(-1)):
            shape = tuple(value.shape)
            return name, (lambda t, s=shape: t.t().reshape(s)), f"transpose+reshape{list(shape)}"
    return None


class LiveModel:
    """A torch ``module`` and the verifier IR ``graph`` bound to its parameters.

    ``input_shape`` is the per-sample input shape (e.g. ``(1, 28, 28)``). Bounds take
    boxes ``(B, *input_shape)`` and return ``(B, k)``; see :meth:`bounds`.
    """

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], check: bool = True, seed: int = 12345):
        self.module = module
        self.input_shape = tuple(input_shape)
        self.graph, self.bindings = self._build(seed)
        if check:
            self.check()

    # --- construction ----------------------------------------------------------------
    def _build(self, seed: int) -> tuple[nx.DiGraph, list[Binding]]:
        params = dict(self.module.named_parameters())
        saved = {n: p.detach().clone() for n, p in params.items()}
        gen = torch.Generator().manual_seed(seed)
        try:
            with torch.no_grad():  # fingerprint: distinct random values in every parameter
                for p in params.values():
                    p.copy_(torch.randn(p.shape, generator=gen).to(p) * 0.1)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "module.onnx")
                export_onnx(self.module, self.input_shape, path)
                graph = verifier.load(path, check=False).graph
            graph.graph.pop("_ort_session", None)
            bindings = []
            for node_id in topological_order(graph):
                for name, value in graph.nodes[node_id]["params"].items():
                    found = _match(value, params)
                    if found is not None:
                        pname, transform, how = found
                        bindings.append(Binding(node_id, name, params[pname], pname, transform, how))
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(saved[n])
        bound = {b.param_name for b in bindings}
        missing = [n for n, p in params.items() if p.requires_grad and n not in bound]
        if missing:
            raise VerifierInputError(
                f"parameters {missing} of the module do not appear unchanged in its verifier IR (a BatchNorm folded "
                f"into a convolution, or a parameter used inside a constant expression); put the model in a form "
                f"without them (e.g. fold BatchNorm first) to train it with verifier bounds")
        return graph, bindings

    def refresh(self) -> nx.DiGraph:
        """Point every bound IR parameter at the module's current tensors; return the graph."""
        for b in self.bindings:
            params = self.graph.nodes[b.node]["params"]
            params[b.name] = b.transform(b.param)
        return self.graph

    def check(self, samples: int = 4, low: float = 0.0, high: float = 1.0, atol: float = 1e-4) -> float:
        """IR forward == module forward on random inputs in ``[low, high]``; returns the max error."""
        p = next(self.module.parameters())
        gen = torch.Generator().manual_seed(0)
        x = (low + (high - low) * torch.rand((samples, *self.input_shape), generator=gen)).to(p)
        was = self.module.training
        self.module.eval()
        with torch.no_grad():
            ours = self.forward_ir(x)
            ref = self.module(x).reshape(samples, -1)
        self.module.train(was)
        err = float((ours - ref).abs().max())
        if not err <= atol * max(1.0, float(ref.abs().max())):
            raise VerifierInputError(f"the verifier IR of the module disagrees with the module (max error {err:.3g})")
        return err

    # --- evaluation and bounds -----------------------------------------------------------
    def forward_ir(self, x: torch.Tensor) -> torch.Tensor:
        """The IR's forward pass on ``x`` ``(B, *input_shape)``, outputs ``(B, n)``."""
        y = evaluate(self.refresh(), x.unsqueeze(1))
        return y.reshape(y.shape[0], -1)

    def bounds(self, domain: str | Domain, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor | None = None,
               lower_only: bool = False, **options) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bounds of ``C·f(x)`` over the boxes ``[lower, upper]`` ``(B, *input_shape)`` from the
        verifier's domain ``domain`` (name or instance), differentiable in the parameters.

        ``lower_only`` asks a backward domain for the lower bound alone (one backward
        pass instead of two); the upper bound is then ``None``."""
        graph = self.refresh()
        dom = get_domain(domain, **options) if isinstance(domain, str) else domain
        lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
        if lower_only:
            return dom.lower_bound(graph, lo, hi, C), None
        return dom.bound(graph, lo, hi, C)

    def parameter_nodes(self) -> dict[str, list[str]]:
        """Module parameter name → IR nodes it is bound to."""
        out: dict[str, list[str]] = {}
        for b in self.bindings:
            out.setdefault(b.param_name, []).append(b.node)
        return out


def margin_matrix(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``(B, classes, classes)``: rows ``e_y − e_j`` (the row ``j = y`` is zero)."""
    eye = torch.eye(classes, device=labels.device)
    return eye[labels].unsqueeze(1) - eye.unsqueeze(0)


def ir_prefix(graph: nx.DiGraph, node: str) -> nx.DiGraph:
    """The sub-IR computing ``node`` (its ancestors), with ``node`` as output. Parameters are
    shared with ``graph`` (refresh ``graph`` first)."""
    keep = nx.ancestors(graph, node) | {node}
    sub = graph.subgraph(keep).copy()
    sub.graph = {k: v for k, v in graph.graph.items() if k not in ("order", "_preds", "_ort_session")}
    sub.graph["output"] = node
    for n in sub.nodes:
        sub.nodes[n].update(graph.nodes[n])  # same dicts' content (params shared by reference)
        sub.nodes[n]["params"] = graph.nodes[n]["params"]
    return sub


def evaluate_from(graph: nx.DiGraph, node: str, value: torch.Tensor) -> torch.Tensor:
    """The flattened output ``(B, n)`` of ``graph`` when ``node`` takes ``value``
    ``(B, *shape)`` (:func:`verifier.engine.evaluate_from`)."""
    out = engine_evaluate_from(graph, node, value)
    return out.reshape(out.shape[0], -1)
