"""Falsification: random sampling and PGD inside an input box, against a region's
unsafe set, with every hit re-checked by onnxruntime before it counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .api import Model
from .deadline import Deadline, interruptible
from .fidelity import run_onnxruntime
from .ops.surrogate import surrogate_gradients
from .spec.model import InputRegion


@dataclass
class Counterexample:
    """An input (flattened, as onnxruntime consumed it) and onnxruntime's output."""

    x: np.ndarray
    y: np.ndarray
    region_index: int


_NP_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def model_np_dtype(model: Model):
    """The numpy dtype onnxruntime executes the model in (float16, float32 or float64)."""
    return _NP_DTYPES.get(model.graph.graph["model_dtype"], np.float32)


def eval_dtype(model: Model, region: InputRegion | None = None) -> torch.dtype:
    """The torch dtype the search evaluates the model in: float64 for float64 models and for
    boxes that hold no point of the model's dtype in some coordinate (where the counterexample
    is confirmed on the float64 copy, see :func:`confirm`), else float32 (float16 models
    included: torch runs them in float32)."""
    if model.graph.graph["model_dtype"] == torch.float64:
        return torch.float64
    if region is not None and not _representable(region, model_np_dtype(model)).all():
        return torch.float64
    return torch.float32


def _box_arrays(region: InputRegion):
    n = region.lower.numel()
    lower = region.lower.reshape(-1).double().cpu().numpy()
    upper = region.upper.reshape(-1).double().cpu().numpy()
    ls = np.zeros(n, bool) if region.lower_strict is None else region.lower_strict.reshape(-1).cpu().numpy()
    us = np.zeros(n, bool) if region.upper_strict is None else region.upper_strict.reshape(-1).cpu().numpy()
    return lower, upper, ls, us


def _representable(region: InputRegion, dtype) -> np.ndarray:
    """``(n,)`` bool: the coordinate's interval (strict sides open) holds a value of ``dtype``."""
    lower, upper, ls, us = _box_arrays(region)
    with np.errstate(over="ignore"):
        lo = lower.astype(dtype)
        lo = np.where(lo.astype(np.float64) < lower, np.nextafter(lo, dtype(np.inf)), lo)
        lo = np.where(ls & (lo.astype(np.float64) <= lower), np.nextafter(lo, dtype(np.inf)), lo)
    first = lo.astype(np.float64)
    return np.where(us, first < upper, first <= upper) & np.isfinite(first)


def _into_box(x: np.ndarray, lower, upper, ls, us, dtype) -> np.ndarray:
    """``x`` ``(n,)`` float64 → the nearest value of ``dtype`` per coordinate that lies in the box
    (strict sides open), moved inward one ulp at a time when rounding or the box's edge put it
    outside; coordinates with no such value stay outside (the caller checks)."""
    x = np.clip(x, lower, upper)
    with np.errstate(over="ignore"):
        xr = x.astype(dtype)
        for _ in range(4):
            xd = xr.astype(np.float64)
            below = np.where(ls, xd <= lower, xd < lower)
            above = np.where(us, xd >= upper, xd > upper)
            if not (below.any() or above.any()):
                break
            xr = np.where(below, np.nextafter(xr, dtype(np.inf)), xr)
            xr = np.where(above, np.nextafter(xr, dtype(-np.inf)), xr)
    return xr


def float64_session(model: Model):
    """An onnxruntime session of a float64 copy of the model (cached on its graph), or
    ``None`` when the model cannot be converted: float initializers, graph inputs/outputs,
    value infos, ``Constant``/``ConstantOfShape`` values and ``Cast``-to-float nodes all
    become double."""
    graph = model.graph.graph
    if "_ort_session_f64" not in graph:
        graph["_ort_session_f64"] = _build_float64_session(graph["path"])
    return graph["_ort_session_f64"]


def _build_float64_session(path: str):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)

    def cast_tensor(t):
        if t.data_type in floats:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))

    def cast_graph(g):
        for t in g.initializer:
            cast_tensor(t)
        for v in list(g.input) + list(g.output) + list(g.value_info):
            if v.type.tensor_type.elem_type in floats:
                v.type.tensor_type.elem_type = TensorProto.DOUBLE
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    cast_tensor(attr.t)
                elif attr.type == onnx.AttributeProto.GRAPH:
                    cast_graph(attr.g)
                elif node.op_type in ("Cast", "CastLike", "RandomNormal", "RandomUniform", "EyeLike") \
                        and attr.name in ("to", "dtype") and attr.i in floats:
                    attr.i = TensorProto.DOUBLE
    try:
        proto = onnx.load(path)
        cast_graph(proto.graph)
        for value in list(proto.graph.input) + list(proto.graph.output):
            dims = value.type.tensor_type.shape.dim
            if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == 0:
                dims[0].dim_param = "batch"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # an op without a double kernel: no float64 confirmation for this model
        return None


def _run_float64(model: Model, x: np.ndarray) -> np.ndarray | None:
    sess = float64_session(model)
    if sess is None:
        return None
    name = sess.get_inputs()[0].name
    out = sess.get_outputs()[0].name
    return sess.run([out], {name: x.astype(np.float64).reshape(model.input_shape)})[0].reshape(-1)


def confirm(model: Model, region: InputRegion, x: torch.Tensor, region_index: int = 0) -> Counterexample | None:
    """Re-evaluate candidate inputs ``x`` ``(B, n)`` with onnxruntime; return the first whose
    executed input lies in the box as written (:meth:`InputRegion.contains`, strict sides open)
    and whose onnxruntime output is unsafe as written (:meth:`InputRegion.is_unsafe`, strict
    rows strict), or ``None``.

    Precision rule: each candidate is clipped to the box and rounded per coordinate to the
    nearest value of the model's own dtype (float16/float32/float64) that lies in the box
    (moved inward by one ulp when rounding left it). When every coordinate has such a value,
    that point is run in the model as it is and reported. When some coordinate's interval holds
    no value of the model's dtype (an interval narrower than its spacing, e.g. ``[0.1,
    0.100000001]`` for float32), the float64 point is run on a float64 copy of the model
    (initializers and casts converted to double; see :func:`float64_session`) and reported with
    that copy's output. Never both: a point outside the box is never reported."""
    np_dtype = model_np_dtype(model)
    lower, upper, ls, us = _box_arrays(region)
    wide = np_dtype is np.float64 or bool(_representable(region, np_dtype).all())
    for row in x.detach().cpu().double().reshape(x.shape[0], -1).numpy():
        if not np.isfinite(row).all():
            continue
        if wide:
            xr = _into_box(row, lower, upper, ls, us, np_dtype)
            if not bool(region.contains(torch.as_tensor(xr.astype(np.float64))[None])[0]):
                continue
            y = run_onnxruntime(model.graph, xr.reshape(1, *model.input_shape)).reshape(-1)
        else:
            xr = _into_box(row, lower, upper, ls, us, np.float64)
            if not bool(region.contains(torch.as_tensor(xr)[None])[0]):
                continue
            y = _run_float64(model, xr)
            if y is None:
                return None
        if bool(region.is_unsafe(torch.as_tensor(y.astype(np.float64))[None])[0]):
            return Counterexample(xr, y, region_index)
    return None


def confirm_candidates(model: Model, region: InputRegion, x: torch.Tensor, region_index: int = 0,
                       limit: int = 8) -> Counterexample | None:
    """Evaluate candidate inputs ``x`` ``(B, n)`` and :func:`confirm` (at most ``limit`` of)
    those whose output lies in the closed unsafe set — the check branch-and-bound runs on box
    centres and relaxation minimisers."""
    with torch.no_grad():
        violation = region.violation(model(x.to(eval_dtype(model, region))).double())
    unsafe = violation <= 0
    return confirm(model, region, x[unsafe][:limit], region_index) if bool(unsafe.any()) else None


def attack_region(model: Model, region: InputRegion, deadline: Deadline, region_index: int = 0,
                  samples: int = 512, restarts: int = 16, steps: int = 60, seed: int = 0,
                  device: str | torch.device = "cpu") -> Counterexample | None:
    """Search the box for an input whose output is unsafe.

    Minimises the region's violation ``v(y) = min_d max_i (A_di y − b_di)`` (``v ≤ 0`` means
    unsafe): first over ``samples`` uniform points (plus the box centre), then by
    projected sign-gradient descent from the ``restarts`` best points, step size decaying
    from a quarter of the box width. Candidates with ``v ≤ 0`` are confirmed with
    onnxruntime (:func:`confirm`: strictly as written, in the precision the box needs). The
    model is evaluated in :func:`eval_dtype` (float32 for float16/float32 models unless the box
    needs float64).

    Boxes over which the model's own float execution can overflow are refused before any
    attack by the caller (``verify`` runs :func:`~verifier.fidelity.check_overflow` on every
    region): onnxruntime's outputs would be inf/NaN there.
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = eval_dtype(model, region)
    lower = region.lower.to(device=device, dtype=dtype)
    upper = region.upper.to(device=device, dtype=dtype)
    width = upper - lower
    points = lower + width * torch.rand((samples, lower.numel()), generator=gen, dtype=dtype).to(device)
    points = torch.cat([((lower + upper) / 2)[None], points])

    def violation(x: torch.Tensor) -> torch.Tensor:
        return region.violation(model(x).double())

    with torch.no_grad():
        v = violation(points)
    order = torch.argsort(v)
    hit = confirm(model, region, points[order[: min(8, int((v <= 0).sum()))]], region_index) if bool((v <= 0).any()) else None
    if hit is not None or deadline.expired():
        return hit

    x = points[order[:restarts]].clone()
    best_x, best_v = x.clone(), v[order[:restarts]].clone()
    for step in range(steps):
        if deadline.expired():
            break
        x.requires_grad_(True)
        with surrogate_gradients(model.graph):  # where steps and a saturated output softmax give none
            vx = violation(x)
        grad, = torch.autograd.grad(interruptible(vx.sum()), x)
        with torch.no_grad():
            improved = vx < best_v
            best_x[improved], best_v[improved] = x.detach()[improved], vx.detach()[improved]
            if bool((vx <= 0).any()):
                hit = confirm(model, region, x.detach()[vx <= 0], region_index)
                if hit is not None:
                    return hit
            size = 0.25 * width * (1 + np.cos(np.pi * step / steps)) / 2
            x = torch.max(torch.min(x.detach() - size * grad.sign(), upper), lower)
    with torch.no_grad():
        v = violation(x)
    if bool((v <= 0).any()):
        return confirm(model, region, x[v <= 0], region_index)
    return None
