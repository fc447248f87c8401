"""Check the IR against onnxruntime: same outputs on random inputs, or name where they part."""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np
import onnx
import onnxruntime as ort
import torch

from .domains.box import BoxDomain
from .engine import evaluate, propagate
from .errors import FidelityError, ModelError, VerifierInputError
from .ir.graph import input_node, output_node, predecessors_by_slot
from .ir.onnx_validate import printable
from .ops import CACHE, LINEAR_PART

# ``|ours − ref| ≤ atol·max(1, max|ref|) + rtol·|ref|``, per the model's precision: two
# float32 implementations (torch, onnxruntime) of a deep conv net differ by rounding of
# ~1e-6 relative to the output scale (2.4e-6 measured on oval21's cifar_deep_kw); a real
# semantic mismatch (padding, layout, an op's attribute) is orders of magnitude larger.
# float16 models run in half precision in onnxruntime (each op rounds to 11 significant
# bits, ε = 9.8e-4) while the IR evaluates the same float16 weights in float32, so a few
# rounding steps per layer leave ~1e-3 relative differences; 1e-2 still exposes a wrong
# semantics (which moves outputs by a large fraction of their scale).
TOLERANCES = {"float16": (1e-2, 1e-2), "float32": (1e-4, 1e-5), "float64": (1e-7, 1e-8)}
#: onnxruntime's name of an input type → the numpy dtype it must be fed.
ORT_INPUT_TYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}
RTOL, ATOL = TOLERANCES["float32"]


@dataclass
class FidelityReport:
    """Outcome of comparing the IR with onnxruntime on ``samples`` inputs."""

    samples: int
    max_abs_error: float
    max_rel_error: float
    ok: bool
    first_divergence: str | None = None
    rtol: float = RTOL
    atol: float = ATOL
    overflow: str | None = None  # where the model's float type can overflow over the box

    def describe(self) -> str:
        verdict = "agrees with" if self.ok else "DISAGREES with"
        text = (f"IR {verdict} onnxruntime on {self.samples} random inputs "
                f"(max abs error {self.max_abs_error:.2e}, max rel error {self.max_rel_error:.2e}; "
                f"tolerance rtol={self.rtol:g}, atol={self.atol:g}·max(1, |y|))")
        if self.first_divergence:
            text += f"; first diverging node: {self.first_divergence}"
        if self.overflow:
            text += f"; warning: {self.overflow}"
        return printable(text)


def session(model_path: str, outputs: list[str] | None = None) -> tuple[ort.InferenceSession, list[str]]:
    """An onnxruntime session for the model, optionally exposing intermediate tensors.

    Raises :class:`ModelError` naming the file when onnxruntime cannot load the model."""
    try:
        proto = onnx.load(model_path)
    except Exception as exc:
        raise ModelError(f"cannot read ONNX model {model_path} ({type(exc).__name__})") from None
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == 0:
            dims[0].dim_param = "batch"  # a batch axis written as 0 accepts any size
    if outputs:
        existing = {o.name for o in proto.graph.output}
        for name in outputs:
            if name not in existing:
                proto.graph.output.append(onnx.helper.make_value_info(name, onnx.TypeProto()))
    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as exceptions (ModelError); print nothing
    if outputs:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(printable(f"onnxruntime cannot load the model {model_path}: {message[:300]}")) from None
    return sess, [o.name for o in sess.get_outputs()]


def _ort_dtype(sess: ort.InferenceSession, model_path: str):
    info = sess.get_inputs()[0]
    if info.type not in ORT_INPUT_TYPES:
        raise ModelError(f"input '{info.name}' of {model_path} has type {info.type}; "
                         f"supported input types are float16, float32 and float64")
    return info.name, ORT_INPUT_TYPES[info.type]


def input_numpy_dtype(graph: nx.DiGraph) -> type:
    """The numpy dtype onnxruntime is fed for this model: its input's declared element type
    (``np.float16``, ``np.float32`` or ``np.float64``, from ``graph.graph["model_dtype"]``)."""
    return {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}[graph.graph["model_dtype"]]


def run_onnxruntime(graph: nx.DiGraph, x: np.ndarray, sess: ort.InferenceSession | None = None) -> np.ndarray:
    """Reference outputs ``(B, *output_shape)`` for a batch ``x`` of ``(B, *input_shape)``
    (any float dtype), one sample at a time so that models with a fixed batch size of 1 work.

    ``x`` is cast (round to nearest) to the model's declared input type (float16, float32
    or float64, see :func:`input_numpy_dtype`) before it is fed; callers that need the
    exact input onnxruntime saw must round to that dtype themselves first. The result has
    the model's output dtype as onnxruntime returns it (float16 for float16 models).
    Raises :class:`ModelError` when onnxruntime cannot load or run the model."""
    if sess is None:
        sess = graph.graph.get("_ort_session")
        if sess is None:
            sess, _ = session(graph.graph["path"])
            graph.graph["_ort_session"] = sess
    in_name, np_dtype = _ort_dtype(sess, graph.graph["path"])
    outs = []
    try:
        for sample in np.asarray(x):
            outs.append(sess.run([graph.graph["output_name"]], {in_name: sample.astype(np_dtype)})[0])
    except Exception as exc:  # a model that loads but cannot run (a shape error deep inside, say)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(printable(f"onnxruntime cannot run the model {graph.graph['path']}: {message[:300]}")) from None
    return np.stack(outs)


def _tolerance(graph: nx.DiGraph) -> tuple[float, float]:
    return TOLERANCES[str(graph.graph["model_dtype"]).replace("torch.", "")]


def _ir_dtype(graph: nx.DiGraph) -> torch.dtype:
    """The dtype the IR's own evaluation runs in (float32 for float16 models)."""
    return graph.graph.get("ir_dtype", graph.graph["model_dtype"])


def _close(ours: np.ndarray, ref: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> tuple[bool, float, float]:
    ours, ref = ours.astype(np.float64), ref.astype(np.float64)
    with np.errstate(all="ignore"):
        diff = np.abs(ours - ref)
        same = (ours == ref) | (np.isnan(ours) & np.isnan(ref))  # equal infinities, both NaN
        diff[same] = 0.0
        diff[np.isnan(diff)] = np.inf
        finite = ref[np.isfinite(ref)]
        scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
        tol = np.where(np.isfinite(ref), atol * scale + rtol * np.abs(ref), 0.0)
        ok = bool(np.all(diff <= tol))
        rel = float(np.max(diff / np.maximum(np.abs(ref), atol))) if diff.size else 0.0
    return ok, float(diff.max()) if diff.size else 0.0, rel


def _first_divergence(graph: nx.DiGraph, x: np.ndarray) -> str | None:
    names = {name: ir for name, ir in graph.graph["onnx_to_ir"].items() if ir != input_node(graph)}
    sess, out_names = session(graph.graph["path"], sorted(names))
    in_name, np_dtype = _ort_dtype(sess, graph.graph["path"])
    try:
        ref = dict(zip(out_names, sess.run(out_names, {in_name: x[0].astype(np_dtype)})))
    except Exception:  # exposing intermediate tensors can fail where the plain model runs
        return None
    with torch.no_grad():
        ours = evaluate(graph, torch.as_tensor(x[:1].astype(np_dtype)).to(_ir_dtype(graph)), keep_all=True)
    by_ir = {}
    for name, ir in names.items():
        by_ir.setdefault(ir, name)
    for ir in nx.topological_sort(graph):
        name = by_ir.get(ir)
        if name is None or name not in ref:
            continue
        value = ours[ir][0].numpy()
        if value.shape != ref[name].shape or not _close(value, ref[name], *_tolerance(graph))[0]:
            node = graph.nodes[ir]
            return f"'{node['source']}' (IR {node['kind']} '{ir}', tensor '{name}')"
    return None


#: the largest magnitude a value may reach in the model's float type before the search refuses
#: the box: half the type's largest finite value, which leaves room for the rounding of a
#: float computation (relative n·ε for a dot product of n terms) on top of the real bound.
_OVERFLOW_LIMITS = {torch.float16: float(np.finfo(np.float16).max) / 2,
                    torch.float32: float(np.finfo(np.float32).max) / 2,
                    torch.float64: float(np.finfo(np.float64).max) / 2}


def overflow_risk(graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor) -> str | None:
    """Where the model's own float execution can overflow over the box ``[lower, upper]``
    (or over any of a batch of boxes ``(R, *input_shape)``, in one pass), or ``None`` when
    it cannot.

    The verifier bounds the model's real-arithmetic function (in float64), and onnxruntime
    runs it in the declared type; the two agree up to rounding only while every value stays
    finite in that type. An interval (IBP) pass in float64 bounds every IR node's value,
    and for linear ops (dense, conv, pooling, scaling) also every partial sum, by
    ``|W|·max(|l|, |u|) + max|b|`` (average pools: the window's sum); a magnitude above half the type's largest finite value
    (float32: 1.7e38, float16: 32752, float64: 9e307; for float64 models the pass's own
    overflow to ``±inf`` counts) or a NaN bound is reported, naming the node. Without the
    float64 check a float64 model that overflows had ``±inf`` bounds on every subdomain, so
    a search without a timeout never ended."""
    limit = _OVERFLOW_LIMITS.get(graph.graph["model_dtype"])
    if limit is None:
        return None
    source = input_node(graph)
    if any(v.dtype != torch.float64 for _, d in graph.nodes(data=True) for v in d["params"].values()):
        copy = graph.copy()
        copy.graph = {k: v for k, v in graph.graph.items() if not k.startswith("_")}
        for _, data in copy.nodes(data=True):
            data.pop(CACHE, None)
            data["params"] = {k: v.detach().to(device="cpu", dtype=torch.float64) for k, v in data["params"].items()}
        graph = copy
    shape = tuple(graph.nodes[source]["shape"])
    lo = torch.as_tensor(lower).detach().to(device="cpu", dtype=torch.float64).reshape(-1, *shape)
    hi = torch.as_tensor(upper).detach().to(device="cpu", dtype=torch.float64).reshape(-1, *shape)
    type_name = str(graph.graph["model_dtype"]).replace("torch.", "")
    with torch.no_grad(), np.errstate(all="ignore"):
        states = propagate(graph, BoxDomain(), lo, hi, keep=True)
        for node_id, (low, high) in states.items():  # topological order
            node = graph.nodes[node_id]
            magnitude = torch.maximum(low.abs(), high.abs())
            if not magnitude.numel():
                peak = 0.0
            else:
                peak = float("nan") if bool(torch.isnan(magnitude).any()) else float(magnitude.max())
            what = "values"
            if node["kind"] in LINEAR_PART and not peak > limit:
                (pred,) = predecessors_by_slot(graph, node_id)[:1]
                pl, ph = states[pred]
                partial = LINEAR_PART[node["kind"]](node, torch.maximum(pl.abs(), ph.abs()), True)
                bias = node["params"].get("bias")
                partial_peak = (float(partial.max()) if partial.numel() else 0.0) + \
                    (float(bias.abs().max()) if bias is not None and bias.numel() else 0.0)
                if node["kind"] in ("avgpool", "global_avgpool"):  # a window is summed, then divided
                    window = node["attrs"]["kernel"] if node["kind"] == "avgpool" else graph.nodes[pred]["shape"][2:]
                    top = torch.maximum(pl.abs(), ph.abs())
                    partial_peak = max(partial_peak, (float(top.max()) if top.numel() else 0.0) * math.prod(window))
                if not partial_peak <= limit:
                    peak, what = partial_peak, "partial sums"
            if not peak <= limit:
                where = "the input" if node_id == source else \
                    f"node '{node['source']}' (IR {node['kind']} '{node_id}')"
                reach = "have an undefined (NaN) bound" if peak != peak else f"can reach {peak:.3g}"
                return (f"{what} of {where} {reach} over the input box, beyond half of {type_name}'s "
                        f"largest value {limit * 2:.3g}: onnxruntime's {type_name} execution can overflow to "
                        f"inf/NaN there while the verifier bounds real arithmetic, so no verdict would be sound "
                        f"(rescale the model or narrow the box)")
    return None


def check_overflow(graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, path: str | None = None) -> None:
    """Raise :class:`FidelityError` when the model's float execution can overflow over the box
    (:func:`overflow_risk`); the search calls this for every region before deciding it."""
    risk = overflow_risk(graph, lower, upper)
    if risk is not None:
        raise FidelityError(printable(f"model {path or graph.graph.get('path', '')}: {risk}"))


def check_fidelity(
    graph: nx.DiGraph,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    samples: int = 4,
    seed: int = 0,
    raise_on_mismatch: bool = True,
) -> FidelityReport:
    """Compare the IR's forward pass (in its ``ir_dtype``) with onnxruntime (fed the model's
    declared input type) on ``samples`` inputs drawn uniformly from ``[lower, upper]``
    (default ``[−1, 1]``) and rounded to that type, elementwise
    ``|ours − ref| ≤ atol·max(1, max|ref|) + rtol·|ref|`` (see ``TOLERANCES``). On a mismatch, find the first IR node whose value
    differs from the tensor of the same name in onnxruntime.

    The box is also checked for float overflow (:func:`overflow_risk`): with an explicit box
    (the spec's, which the caller will verify over) a risk is a mismatch; over the default
    ``[−1, 1]`` it is only reported (``report.overflow``).
    """
    shape = tuple(graph.nodes[input_node(graph)]["shape"])
    gen = torch.Generator().manual_seed(seed)
    lo = torch.full(shape, -1.0, dtype=torch.float64) if lower is None else lower.double().cpu().reshape(shape)
    hi = torch.full(shape, 1.0, dtype=torch.float64) if upper is None else upper.double().cpu().reshape(shape)
    x = lo + (hi - lo) * torch.rand((samples, *shape), generator=gen, dtype=torch.float64)
    x = x.to(graph.graph["model_dtype"])  # inputs representable in the model's input type
    with torch.no_grad():
        ours = evaluate(graph, x.to(_ir_dtype(graph))).numpy()
    ref = run_onnxruntime(graph, x.numpy())
    if ref.shape[1:] != tuple(graph.nodes[output_node(graph)]["shape"]) and ref.size == ours.size:
        ref = ref.reshape(ours.shape)
    if ours.shape != ref.shape:
        report = FidelityReport(samples, float("inf"), float("inf"), False,
                                f"output shape {list(ours.shape[1:])} vs onnxruntime {list(ref.shape[1:])}")
    else:
        rtol, atol = _tolerance(graph)
        ok, abs_err, rel_err = _close(ours, ref, rtol, atol)
        report = FidelityReport(samples, abs_err, rel_err, ok, rtol=rtol, atol=atol)
        if not ok:
            report.first_divergence = _first_divergence(graph, x.numpy())
    explicit = lower is not None and upper is not None
    try:
        report.overflow = overflow_risk(graph, lo, hi)
    except VerifierInputError:  # an op undefined somewhere in the box (e.g. 1/x with 0 inside)
        if explicit:
            raise
        report.overflow = None  # over the default [−1, 1] there is nothing to verify: not the model's fault
    if report.overflow is not None and explicit:
        report.ok = False  # the box the caller will verify over: a verdict there would be unsound
        if raise_on_mismatch and report.first_divergence is None:
            raise FidelityError(printable(f"model {graph.graph.get('path', '')}: {report.overflow}"))
    if raise_on_mismatch and not report.ok:
        raise FidelityError(report.describe())
    return report
