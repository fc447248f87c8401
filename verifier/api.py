"""The Python API: :func:`load` a model, :func:`compute_bounds` over input boxes."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import TYPE_CHECKING

import networkx as nx
import torch

from .errors import VerifierInputError
from .engine import evaluate
from .ops import CACHE
from .options import check_domain_construction, check_options, check_samples, option_types

_LOG = logging.getLogger(__name__)  # --verbose (verifier/logs.py)

if TYPE_CHECKING:  # the fidelity module (onnxruntime, the domains) is imported when a check runs
    from .fidelity import FidelityReport
    from .ir.cache import Entry

BOUND_DTYPES = (torch.float32, torch.float64)


def as_float_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a float32/float64 tensor, refusing what would be computed wrongly.

    Tensors and array-likes are accepted (array-likes of integers are read as float64);
    integer, boolean, complex, float16 and bfloat16 tensors raise :class:`VerifierInputError` (integer arithmetic truncates and half
    precision rounds the bounds: neither is sound), as do NaN entries and tensors on a
    device other than ``cpu``/``cuda`` (``meta`` has no values)."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise VerifierInputError(f"{name} must be a tensor of numbers: {exc}") from None
        if value.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            value = value.double()  # Python or NumPy integers given as numbers, not tensors
    if value.dtype not in BOUND_DTYPES:
        raise VerifierInputError(f"{name} has dtype {str(value.dtype).replace('torch.', '')}; bounds are computed "
                                 f"in float32 or float64 (convert with .double())")
    if value.device.type not in ("cpu", "cuda"):
        raise VerifierInputError(f"{name} is on device '{value.device}'; tensors must be on cpu or cuda "
                                 f"(a '{value.device.type}' tensor holds no values to bound)")
    if bool(torch.isnan(value).any()):
        raise VerifierInputError(f"{name} contains NaN")
    return value


class Model:
    """An imported ONNX model: its IR ``graph`` plus shapes and a forward pass.

    ``input_shape``/``output_shape`` are per-sample (ONNX shapes with the batch axis
    set to 1); every tensor passed in or out has a leading batch axis of our own.
    """

    def __init__(self, graph: nx.DiGraph, fidelity: FidelityReport | None = None, cache_entry: Entry | None = None):
        self.graph = graph
        self.fidelity = fidelity
        self.cache_entry = cache_entry  # the IR cache entry it came from or was stored in
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
        """Outputs ``(B, output_size)`` (flattened) for a batch of inputs ``x`` (float32 or
        float64; see :meth:`as_batch` for the shapes accepted). Raises
        :class:`VerifierInputError` for another dtype, a device other than cpu/cuda, an
        empty batch, or a shape that does not fit.

        Values are not checked (this is the model's arithmetic, also used inside attacks):
        NaN or infinite inputs propagate as in IEEE arithmetic, so an output that depends
        on a NaN input is NaN."""
        if not isinstance(x, torch.Tensor) or x.dtype not in BOUND_DTYPES:
            raise VerifierInputError(f"model input must be a float32 or float64 tensor, got "
                                     f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.device.type not in ("cpu", "cuda"):
            raise VerifierInputError(f"model input is on device '{x.device}'; use a cpu or cuda tensor")
        if x.numel() == 0:
            raise VerifierInputError(f"model input holds no values (shape {list(x.shape)})")
        x = self.as_batch(x)
        y = evaluate(self.graph_for(x.device, x.dtype), x)
        return y.reshape(y.shape[0], -1)

    __call__ = forward

    def check(self, lower: torch.Tensor | None = None, upper: torch.Tensor | None = None,
              samples: int = 4) -> FidelityReport:
        """Compare the IR with onnxruntime on ``samples`` inputs from ``[lower, upper]``
        (:func:`~verifier.fidelity.check_fidelity`; ``None``: the default box ``[−1, 1]``),
        set and return :attr:`fidelity`.

        With a cache entry (``load(..., cache=True)``) a check that passed before on the
        same box and sample count is not run again: its recorded report is returned (the
        check is deterministic, so it would pass again); a check that passes is recorded.
        Raises :class:`~verifier.errors.FidelityError` on a mismatch (never recorded),
        :class:`~verifier.errors.ModelError` when onnxruntime cannot run the model and
        :class:`VerifierInputError` for ``samples`` not an integer in ``[1, MAX_SAMPLES]``."""
        from .fidelity import FidelityReport, check_fidelity

        samples = check_samples(samples)
        entry, key = self.cache_entry, None
        if entry is not None:
            from .ir.cache import box_key

            key = box_key(lower, upper, samples)
            report = _report_from_fields(FidelityReport, entry.report(key))
            if report is not None:
                self.fidelity = report
                return report
        report = check_fidelity(self.graph, lower, upper, samples=samples)
        if entry is not None and report.ok:
            entry.record(key, dataclasses.asdict(report))
        self.fidelity = report
        return report

    def __repr__(self) -> str:
        return f"Model({os.path.basename(self.path)!r}, input={list(self.input_shape)}, output={list(self.output_shape)})"


def load(path: str | os.PathLike, check: bool = True, lower: torch.Tensor | None = None,
         upper: torch.Tensor | None = None, samples: int = 4, cache: bool = False) -> Model:
    """Import an ONNX model. With ``check`` (default), its IR must agree with onnxruntime
    on ``samples`` random inputs from ``[lower, upper]`` (default ``[−1, 1]``) or a
    :class:`~verifier.errors.FidelityError` names the first diverging node.

    With ``cache`` (the CLI's default; off when ``VERIFIER_NO_CACHE=1``), the IR is read
    from the on-disk cache of imported models (:mod:`verifier.ir.cache`, keyed by the
    file's content and the verifier's code and versions) when it holds this file, else
    imported and stored; a check already passed on the same box is not repeated
    (:meth:`Model.check`). Cached or not, the IR, the checks and so every bound and verdict
    are the same.

    ``path`` must be a ``str`` or ``os.PathLike``; ``lower``/``upper`` a number (the same
    bound for every input) or a tensor/array with one value per model input (any shape
    holding ``input_size`` values).

    Raises :class:`~verifier.errors.ModelError` for a missing, corrupt or unsupported
    file and :class:`VerifierInputError` for a path of another type, ``samples`` not an
    integer in ``[1, MAX_SAMPLES]``, ``cache`` not a bool, or a sampling box that is
    non-finite, empty, or whose size does not match the model's input."""
    if not isinstance(path, (str, os.PathLike)):
        raise VerifierInputError(f"path must be a file path (str or os.PathLike), not {type(path).__name__}")
    if not isinstance(cache, bool):
        raise VerifierInputError(f"cache must be True or False, not {cache!r}")
    samples = check_samples(samples)
    box = {}
    for name, value in (("lower", lower), ("upper", upper)):
        if value is not None:
            value = as_float_tensor(value, name)
            if not bool(torch.isfinite(value).all()):
                raise VerifierInputError(f"{name} must be finite")
            box[name] = value.double().cpu().reshape(-1)
    from .ir.cache import import_cached

    graph, entry = import_cached(path, use_cache=cache)
    model = Model(graph, cache_entry=entry)
    _LOG.debug("%s: %d IR nodes, %d inputs, %d outputs", path, graph.number_of_nodes(), model.input_size,
               model.output_size)
    size = model.input_size
    for name, value in box.items():
        if value.numel() not in (1, size):
            raise VerifierInputError(f"{name} has {value.numel()} values; the model input has {size} "
                                     f"(give one number or one value per input)")
        box[name] = value.expand(size).clone()
    lower, upper = box.get("lower"), box.get("upper")
    if lower is not None and upper is not None and bool(torch.any(lower > upper)):
        raise VerifierInputError("the sampling box is empty (some lower bound exceeds its upper bound)")
    if check and ((lower is None) != (upper is None)):  # one side given: the default [-1, 1] on the other
        default = torch.full((size,), 1.0 if lower is None else -1.0, dtype=torch.float64)
        lower, upper = (default, upper) if lower is None else (lower, default)
        if bool(torch.any(lower > upper)):
            raise VerifierInputError("the sampling box is empty: with one side given, the other is the default "
                                     "±1 (give both lower and upper)")
    if check:
        model.check(lower, upper, samples)
        _LOG.debug("%s: agrees with onnxruntime on %d sampled inputs", path, samples)
    return model


def _report_from_fields(report_type: type, fields: dict | None):
    """The recorded report ``fields`` as a ``report_type`` (the fidelity report dataclass), or
    ``None`` unless they are exactly its fields, with their types, of a check that passed."""
    if not isinstance(fields, dict) or set(fields) != {f.name for f in dataclasses.fields(report_type)} \
            or fields.get("ok") is not True:
        return None
    for name, value in fields.items():
        allowed = {"samples": (int,), "ok": (bool,), "first_divergence": (str, type(None)),
                   "overflow": (str, type(None))}.get(name, (float, int))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            return None
    return report_type(**fields)


def compute_bounds(model: Model, lower: torch.Tensor, upper: torch.Tensor, domain: str = "box",
                   C: torch.Tensor | None = None, **domain_options) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound bounds on the model's outputs for all inputs in the box ``[lower, upper]``.

    Raises :class:`VerifierInputError` when ``lower``/``upper`` are not float32/float64
    (integer or half-precision arithmetic would give unsound bounds), are not on cpu/cuda,
    hold no values (a batch of 0), contain NaN, differ in shape, form an empty box, when ``C`` is malformed or non-finite, or for an unknown
    domain or option. A bound that overflows (huge boxes) is returned as ``∓inf``.

    ``lower``/``upper``: one box or a batch (see :meth:`Model.as_batch`); the computation
    runs on their device and in their dtype. Without ``C`` the result is ``(lb, ub)``
    of shape ``(B, output_size)`` (flattened outputs); with ``C`` — ``(k, output_size)``
    or ``(B, k, output_size)`` — it bounds ``C·f(x)`` and has shape ``(B, k)``.
    """
    if not isinstance(model, Model):
        raise VerifierInputError(f"model must be a verifier.Model (from verifier.load), got {type(model).__name__}")
    lower, upper = as_float_tensor(lower, "lower"), as_float_tensor(upper, "upper")
    if lower.numel() == 0 or upper.numel() == 0:
        raise VerifierInputError(f"lower {list(lower.shape)} / upper {list(upper.shape)} hold no values "
                                 f"(a batch of 0 boxes has nothing to bound)")
    if lower.shape != upper.shape:
        raise VerifierInputError(f"lower {list(lower.shape)} and upper {list(upper.shape)} differ in shape")
    lower, upper = model.as_batch(lower), model.as_batch(upper.to(lower))
    if bool(torch.any(lower > upper)):
        raise VerifierInputError("the input box is empty (some lower bound exceeds its upper bound)")
    if C is not None:
        C = as_float_tensor(C, "C").to(lower)
        if not bool(torch.isfinite(C).all()):
            raise VerifierInputError("C must be finite")
        if C.dim() not in (2, 3) or C.shape[-1] != model.output_size or (C.dim() == 3 and C.shape[0] not in (1, lower.shape[0])):
            raise VerifierInputError(f"C has shape {list(C.shape)}; expected (k, {model.output_size}) or "
                                     f"({lower.shape[0]}, k, {model.output_size})")
    graph = model.graph_for(lower.device, lower.dtype)
    from .domains import available_domains

    domains = available_domains()
    if domain not in domains:
        raise VerifierInputError(f"unknown domain '{domain}'; installed domains: {', '.join(sorted(domains))}")
    options = check_options(domain_options, option_types(domains[domain]), f"domain '{domain}'")
    lb, ub = check_domain_construction(domain, domains[domain], options).bound(graph, lower, upper, C)
    # inf − inf (boxes so large that a bound overflows) is NaN: no finite bound is known,
    # so the sound answer is the whole line
    return torch.nan_to_num(lb, nan=-math.inf, posinf=math.inf, neginf=-math.inf), \
        torch.nan_to_num(ub, nan=math.inf, posinf=math.inf, neginf=-math.inf)
