"""Certified accuracy of a model over L∞ balls on a test set: one function used both at
the end of training (on the exported ONNX file) and by ``verifier certify``, so the same
model, data, ε, domain and count give the same number."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import onnx
import torch

import verifier
from verifier.api import compute_bounds
from verifier.errors import VerifierInputError
from verifier.outputs import write_atomic

from .live import margin_matrix
from .objectives import box_around, pgd_attack

METADATA_PREFIX = "verifier."


@dataclass
class Certificate:
    clean_accuracy: float
    pgd_accuracy: float
    certified_accuracy: float
    domain: str
    eps: float
    count: int
    dtype: str
    data: str

    def describe(self) -> str:
        return (f"{self.data}, first {self.count} test points, eps={self.eps:g}: clean {self.clean_accuracy:.4f}, "
                f"PGD {self.pgd_accuracy:.4f}, certified ({self.domain}) {self.certified_accuracy:.4f}")


def verified_mask(lb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A point is verified when every margin ``f_y − f_j`` (``j ≠ y``) has a positive lower bound."""
    lb = lb.clone()
    lb[torch.arange(len(y)), y] = float("inf")
    return lb.min(1).values > 0


def certify_model(model: verifier.Model, x: torch.Tensor, y: torch.Tensor, eps: float, domain: str = "crown",
                  batch: int = 50, dtype: torch.dtype = torch.float64, pgd_steps: int = 20, seed: int = 0,
                  clip=(0.0, 1.0), data: str = "mnist", **options) -> Certificate:
    """Clean, PGD and certified accuracy of an imported ONNX model on ``(x, y)``.

    Checked first (:class:`~verifier.errors.VerifierInputError`): ``eps`` finite and ``>= 0``,
    ``domain`` installed and ``options`` its own, ``(x, y)`` non-empty, finite, inside
    ``clip``, of the model's input size, labels in ``0..outputs-1``."""
    from .validation import DataError, check_arrays, check_domain, check_int, check_real, check_seed

    if not isinstance(model, verifier.Model):
        raise VerifierInputError(f"model must be a verifier.Model (verifier.load(path)), not {type(model).__name__}")
    eps = check_real("--eps", eps, 0.0)
    batch = check_int("batch", batch, 1)
    pgd_steps = check_int("pgd_steps", pgd_steps, 0)
    seed = check_seed("seed", seed)
    if dtype not in (torch.float32, torch.float64):
        raise VerifierInputError(f"dtype {dtype}: use torch.float32 or torch.float64")
    check_domain("--domain", domain, options)
    check_arrays(f"test data ({data})", "x_test", x, "y_test", y, clip)
    if x[0].numel() != model.input_size:
        raise DataError(f"test data ({data}) has samples of shape {list(x.shape[1:])} ({x[0].numel()} values) but "
                        f"the model takes {model.input_size} values of shape {list(model.input_shape)}")
    if int(y.max()) >= model.output_size:
        raise DataError(f"test data ({data}) has label {int(y.max())} but the model has {model.output_size} "
                        f"outputs; labels must be in 0..{model.output_size - 1}")
    x, y = torch.as_tensor(x), torch.as_tensor(y).long()
    classes = model.output_size
    clean = pgd = certified = 0
    gen = torch.Generator().manual_seed(seed)
    graph_shape = model.input_shape

    def forward(t):
        return model(t.reshape(t.shape[0], *graph_shape).to(dtype))

    for start in range(0, len(y), batch):
        xb, yb = x[start:start + batch].to(dtype), y[start:start + batch]
        with torch.no_grad():
            clean += int((forward(xb).argmax(1) == yb).sum())
        adv = pgd_attack(forward, xb, yb, eps, pgd_steps, clip=clip, generator=gen)
        with torch.no_grad():
            pgd += int((forward(adv).argmax(1) == yb).sum())
            lo, hi = box_around(xb, eps, clip)
            lb, _ = compute_bounds(model, lo.reshape(lo.shape[0], *graph_shape), hi.reshape(hi.shape[0], *graph_shape),
                                   domain=domain, C=margin_matrix(yb, classes).to(dtype), **options)
            certified += int(verified_mask(lb, yb).sum())
    n = len(y)
    return Certificate(clean / n, pgd / n, certified / n, domain, float(eps), n, str(dtype).replace("torch.", ""), data)


def write_metadata(path: str, values: dict, target: str | None = None) -> None:
    """Add ``verifier.<key>`` metadata_props (JSON-encoded values) to an ONNX file; the
    result replaces ``target`` (default ``path``) atomically."""
    proto = onnx.load(path)
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        full = METADATA_PREFIX + key
        text = value if isinstance(value, str) else json.dumps(value)
        if full in existing:
            existing[full].value = text
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = full, text
    write_atomic(target or path, proto.SerializeToString())


def read_metadata(path: str) -> dict:
    """The ``verifier.*`` metadata_props of an ONNX file, JSON-decoded where possible."""
    out = {}
    for p in onnx.load(path).metadata_props:
        if p.key.startswith(METADATA_PREFIX):
            try:
                out[p.key[len(METADATA_PREFIX):]] = json.loads(p.value)
            except json.JSONDecodeError:
                out[p.key[len(METADATA_PREFIX):]] = p.value
    return out


def certificate_metadata(cert: Certificate) -> dict:
    return {"certificate": asdict(cert), "certified_accuracy": cert.certified_accuracy,
            "certified_domain": cert.domain, "certified_count": cert.count, "certified_eps": cert.eps}
