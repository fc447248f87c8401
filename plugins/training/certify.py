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


def check_eps_values(option: str, values) -> tuple[float, ...]:
    """``values`` (a number, a sequence of numbers, or a comma-separated string such as
    ``"0.01,0.02,0.05"``) as a tuple of finite radii ``>= 0`` in the order given. Raises
    :class:`~verifier.errors.VerifierInputError` naming ``option`` for an empty list, a
    word that is not a number, a negative or non-finite radius, or a radius given twice."""
    from .validation import check_real

    if isinstance(values, str):
        words = [w.strip() for w in values.split(",")]
        parsed = []
        for word in words:
            try:
                parsed.append(float(word))
            except ValueError:
                raise VerifierInputError(f"{option} {values!r}: {word!r} is not a number; give finite radii >= 0 "
                                         f"separated by commas, e.g. 0.01,0.02,0.05") from None
        values = parsed
    elif not isinstance(values, (list, tuple)):
        values = [values]
    if not values:
        raise VerifierInputError(f"{option}: no radius given; give finite radii >= 0, e.g. 0.01,0.02,0.05")
    radii = tuple(check_real(option, v, 0.0) for v in values)
    seen = set()
    for r in radii:
        if r in seen:
            raise VerifierInputError(f"{option}: radius {r:g} is given twice; give each radius once")
        seen.add(r)
    return radii


def certify_curve(model: verifier.Model, x: torch.Tensor, y: torch.Tensor, eps, domain: str = "crown",
                  batch: int = 50, dtype: torch.dtype = torch.float64, pgd_steps: int = 20, seed: int = 0,
                  clip=(0.0, 1.0), data: str = "mnist", **options) -> list[Certificate]:
    """Clean, PGD and certified accuracy of an imported ONNX model on ``(x, y)`` at each
    L∞ radius of ``eps`` (input units, e.g. pixel values in ``clip``): one
    :class:`Certificate` per radius, in the order given.

    ``x``: ``(N, *sample)`` with ``N * prod(sample)`` values matching the model input,
    ``y``: ``(N,)`` labels. A point is certified at ε when the lower bounds of ``domain``
    (one bound pass per batch and radius, ``C`` = the margins ``f_y − f_j``) over the box
    ``[x − ε, x + ε] ∩ clip`` are all positive (:func:`verified_mask`); PGD is Madry et
    al.'s projected sign-gradient attack on the same box with ``pgd_steps`` steps. The
    clean pass runs once; every radius uses the same attack setup, its own generator
    seeded with ``seed``, so each radius gives the numbers :func:`certify_model` gives for
    it alone. Soundness: certified ≤ PGD ≤ clean at every radius when the domain is sound.

    Checked first (:class:`~verifier.errors.VerifierInputError`): every radius finite and
    ``>= 0`` and given once (:func:`check_eps_values`), ``domain`` installed and
    ``options`` its own, ``(x, y)`` non-empty, finite, inside ``clip``, of the model's
    input size, labels in ``0..outputs-1``."""
    radii, batch, pgd_steps, seed, x, y = check_certify_inputs(model, x, y, eps, domain, batch, dtype, pgd_steps,
                                                                seed, clip, data, options)
    clean, pgd, certified = 0, [0] * len(radii), [0] * len(radii)
    generators = [torch.Generator().manual_seed(seed) for _ in radii]
    for start in range(0, len(y), batch):
        c, p, v = batch_counts(model, x[start:start + batch], y[start:start + batch], radii, generators, domain,
                               dtype, pgd_steps, clip, options)
        clean, pgd, certified = clean + c, [a + b for a, b in zip(pgd, p)], [a + b for a, b in zip(certified, v)]
    n, kind = len(y), str(dtype).replace("torch.", "")
    return [Certificate(clean / n, pgd[k] / n, certified[k] / n, domain, float(r), n, kind, data)
            for k, r in enumerate(radii)]


def check_certify_inputs(model, x, y, eps, domain: str, batch: int, dtype: torch.dtype, pgd_steps: int, seed: int,
                         clip, data: str, options: dict) -> tuple:
    """The checks of :func:`certify_curve` (errors named there); returns ``(radii, batch,
    pgd_steps, seed, x, y)`` converted (``y`` as int64)."""
    from .validation import DataError, check_arrays, check_domain, check_int, check_seed

    if not isinstance(model, verifier.Model):
        raise VerifierInputError(f"model must be a verifier.Model (verifier.load(path)), not {type(model).__name__}")
    radii = check_eps_values("--eps", eps)
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
    return radii, batch, pgd_steps, seed, torch.as_tensor(x), torch.as_tensor(y).long()


def batch_counts(model, x: torch.Tensor, y: torch.Tensor, radii, generators: list, domain: str, dtype: torch.dtype,
                 pgd_steps: int, clip, options: dict) -> tuple[int, list[int], list[int]]:
    """``(clean, [pgd per radius], [certified per radius])`` counts of one batch ``x``
    ``(B, *sample)``, ``y`` ``(B,)``: Madry et al.'s PGD from ``generators[k]`` (advanced by
    one draw per radius), and the domain's lower bounds on the margins ``f_y − f_j``
    (certified when all are positive). The step of :func:`certify_curve`, also run by the
    Ray workers of ``certify --ray`` (:mod:`verifier_plugins.training.ray_certify`)."""
    shape = model.input_shape

    def forward(t):
        return model(t.reshape(t.shape[0], *shape).to(dtype))

    x = x.to(dtype)
    with torch.no_grad():
        clean = int((forward(x).argmax(1) == y).sum())
    C = margin_matrix(y, model.output_size).to(dtype)
    pgd, certified = [], []
    for eps, generator in zip(radii, generators):
        adv = pgd_attack(forward, x, y, eps, pgd_steps, clip=clip, generator=generator)
        with torch.no_grad():
            pgd.append(int((forward(adv).argmax(1) == y).sum()))
            lo, hi = box_around(x, eps, clip)
            lb, _ = compute_bounds(model, lo.reshape(lo.shape[0], *shape), hi.reshape(hi.shape[0], *shape),
                                   domain=domain, C=C, **options)
            certified.append(int(verified_mask(lb, y).sum()))
    return clean, pgd, certified


def certify_model(model: verifier.Model, x: torch.Tensor, y: torch.Tensor, eps: float, domain: str = "crown",
                  batch: int = 50, dtype: torch.dtype = torch.float64, pgd_steps: int = 20, seed: int = 0,
                  clip=(0.0, 1.0), data: str = "mnist", **options) -> Certificate:
    """Clean, PGD and certified accuracy of an imported ONNX model on ``(x, y)`` at one
    radius ``eps``: :func:`certify_curve` with one radius (same checks and errors)."""
    return certify_curve(model, x, y, [eps], domain, batch, dtype, pgd_steps, seed, clip, data, **options)[0]


def stored_certificate_status(stored: dict, certs: list[Certificate]) -> tuple[str, Certificate | None]:
    """Compare a model's metadata certificate (``read_metadata(path)["certificate"]``)
    with the certificates just computed: ``("reproduced", cert)`` when one of ``certs``
    has the stored domain, count, ε and dtype and the same certified accuracy,
    ``("different", cert)`` when it has the same settings but another accuracy, and
    ``("not comparable", None)`` when none has the stored settings."""
    key = (stored.get("domain"), stored.get("count"), float(stored.get("eps", float("nan"))), stored.get("dtype"))
    for cert in certs:
        if (cert.domain, cert.count, cert.eps, cert.dtype) == key:
            status = "reproduced" if stored.get("certified_accuracy") == cert.certified_accuracy else "different"
            return status, cert
    return "not comparable", None


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
