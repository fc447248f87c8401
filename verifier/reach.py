"""Reachable sets of two outputs over an input box, as polygons (``verifier reach``).

For two outputs ``(Y_i, Y_j)`` of a model over an input box, three sound outer sets and a
cloud of sampled outputs (the IR forward in float64, which the load checks against
onnxruntime), drawn by :mod:`verifier.reach_plot` the way Wong & Kolter (2018, seed 003,
Fig. 1) draw the convex outer bound beside the true reachable set:

- **Box**: the rectangle ``[l_i, u_i] × [l_j, u_j]`` of interval bounds;
- **DeepZ**: the zonotope ``a + G e`` (``e ∈ [−1, 1]^m``) of the output, projected on the two
  outputs: the 2-D zonotope ``c + Σ_k g_k e_k`` whose polygon is exact
  (:func:`zonotope_polygon`: generators sorted by angle, Minkowski sum of segments);
- **CROWN**: ``K`` linear bounds ``c_k·(Y_i, Y_j) ≥ l_k`` for the unit directions
  ``c_k = (cos θ_k, sin θ_k)``, ``θ_k = 2πk/K`` (one backward pass with a ``C`` of ``K``
  rows), intersected as half-planes (:func:`halfplane_polygon`).

Every sampled output lies in every polygon when the domains are sound; :func:`reach_sets`
checks this and raises :class:`ReachSoundnessError` when one does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import VerifierInputError

from .reach_cli import DEFAULT_DIRECTIONS, DEFAULT_SAMPLES, MAX_CORNER_INPUTS  # noqa: F401 (defaults live with the options)
CHUNK = 8192  # samples per forward pass
ATTACK_STEPS, ATTACK_RESTARTS = 40, 2  # projected sign-gradient steps and starts per direction
DOMAINS = ("box", "deepz", "crown")


class ReachSoundnessError(RuntimeError):
    """A sampled output lies outside a domain's polygon: a soundness bug, never bad input."""


@dataclass
class ReachSets:
    """Outputs ``outputs = (i, j)`` over one input box: ``samples`` ``(N, 2)`` sampled outputs
    (``Y_i``, ``Y_j``), ``extremes`` ``(M, 2)`` outputs at inputs found by pushing
    ``c·(Y_i, Y_j)`` down along each direction ``c`` (:func:`extreme_outputs`), and per
    domain (``box``, ``deepz``, ``crown``) a convex polygon as ``(V, 2)`` vertices in
    counter-clockwise order (a segment or a point when the set is flat). ``directions`` is
    the number of CROWN directions."""

    outputs: tuple[int, int]
    samples: np.ndarray
    extremes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    polygons: dict[str, np.ndarray] = field(default_factory=dict)
    directions: int = DEFAULT_DIRECTIONS


# --- input ------------------------------------------------------------------------------------
def parse_input_box(text: str, size: int, option: str = "--input-box") -> tuple[torch.Tensor, torch.Tensor]:
    """``"l1:u1,l2:u2,..."`` as float64 ``(lower, upper)`` of shape ``(size,)``: one
    ``low:high`` pair per model input (flattened order), finite, ``low <= high``. Raises
    :class:`VerifierInputError` naming ``option`` and the pair otherwise."""
    pairs = [p.strip() for p in str(text).split(",")]
    if len(pairs) != size:
        raise VerifierInputError(f"{option}: {len(pairs)} low:high pair(s) given but the model has {size} inputs; "
                                 f"give one pair per input, e.g. " + ",".join(["-1:1"] * min(size, 3))
                                 + (",..." if size > 3 else ""))
    lows, highs = [], []
    for index, pair in enumerate(pairs):
        low, sep, high = pair.partition(":")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            lo = hi = math.nan
        if not sep or not (math.isfinite(lo) and math.isfinite(hi)):
            raise VerifierInputError(f"{option}: pair {index} {pair!r} is not low:high with two finite numbers")
        if lo > hi:
            raise VerifierInputError(f"{option}: pair {index} {pair!r} has low > high (an empty interval)")
        lows.append(lo)
        highs.append(hi)
    return torch.tensor(lows, dtype=torch.float64), torch.tensor(highs, dtype=torch.float64)


def parse_outputs(text: str | None, size: int, option: str = "--outputs") -> tuple[int, int]:
    """``"i,j"`` as two different output indices in ``0..size-1``; ``None`` means ``(0, 1)``
    for a model with exactly two outputs. Raises :class:`VerifierInputError` otherwise."""
    if text is None:
        if size == 2:
            return 0, 1
        raise VerifierInputError(f"the model has {size} output(s); choose two with {option} i,j (0-based, "
                                 f"flattened order)" if size > 2 else
                                 f"the model has {size} output; reach draws two outputs and needs a model with two or more")
    parts = [p.strip() for p in str(text).split(",")]
    try:
        i, j = (int(p) for p in parts)
    except ValueError:
        raise VerifierInputError(f"{option} {text!r}: must be two output indices i,j, e.g. 0,1") from None
    if i == j or not (0 <= i < size and 0 <= j < size):
        raise VerifierInputError(f"{option} {text!r}: two different indices in 0..{size - 1} (the model has {size} "
                                 f"outputs)")
    return i, j


# --- polygons ---------------------------------------------------------------------------------
def zonotope_polygon(centre: np.ndarray, generators: np.ndarray) -> np.ndarray:
    """The exact polygon of the 2-D zonotope ``{c + Σ_k g_k e_k : e ∈ [−1, 1]^m}``.

    ``centre`` ``(2,)``; ``generators`` ``(m, 2)``. Each generator is turned into the upper
    half-plane (``g`` or ``−g``, the same segment), zero ones dropped and the rest sorted by
    angle; from the lowest point ``c − Σ g_k`` the boundary adds ``2 g_k`` in that order,
    then subtracts them in the same order (Minkowski sum of segments, e.g. Althoff 2010,
    §2.2). Returns ``(V, 2)`` counter-clockwise vertices, ``V ≤ 2m`` (one vertex for
    ``m = 0``)."""
    centre = np.asarray(centre, dtype=np.float64).reshape(2)
    g = np.asarray(generators, dtype=np.float64).reshape(-1, 2)
    g = g[np.abs(g).sum(1) > 0]
    if len(g) == 0:
        return centre[None].copy()
    flip = (g[:, 1] < 0) | ((g[:, 1] == 0) & (g[:, 0] < 0))
    g[flip] *= -1
    g = g[np.argsort(np.arctan2(g[:, 1], g[:, 0]), kind="stable")]
    start = centre - g.sum(0)
    steps = np.concatenate([2 * g, -2 * g])
    vertices = start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)[:-1]])
    return vertices


def directions(k: int) -> np.ndarray:
    """``k`` unit vectors ``(cos θ, sin θ)``, ``θ = 2π i / k``: ``(k, 2)``; ``k`` a multiple
    of 4 (so ``±e1``, ``±e2`` are exact rows and the half-planes bound a polygon). Raises
    :class:`VerifierInputError` otherwise."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 4 or k % 4 or k > 4096:
        raise VerifierInputError(f"--directions {k!r}: must be a multiple of 4 in [4, 4096]")
    theta = 2 * np.pi * np.arange(k) / k
    c = np.stack([np.cos(theta), np.sin(theta)], 1)
    quarter = k // 4
    c[::quarter] = [[1, 0], [0, 1], [-1, 0], [0, -1]]
    return c


def halfplane_polygon(normals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The convex polygon ``{y : normals_k · y ≥ offsets_k for every k}``.

    ``normals`` ``(K, 2)`` must include ``±e1`` and ``±e2`` with finite offsets (the
    starting rectangle); rows with offset ``−inf`` say nothing and are skipped. The
    rectangle is clipped by each half-plane in turn (Sutherland–Hodgman). Returns ``(V, 2)``
    counter-clockwise vertices; ``(0, 2)`` when the half-planes do not intersect. Raises
    ``ValueError`` without the four axis rows or with a non-finite axis offset."""
    normals = np.asarray(normals, dtype=np.float64).reshape(-1, 2)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1)
    axis = {}
    for key, unit in (("x_lo", (1, 0)), ("y_lo", (0, 1)), ("x_hi", (-1, 0)), ("y_hi", (0, -1))):
        rows = np.nonzero((normals == unit).all(1))[0]
        if len(rows) == 0 or not np.isfinite(offsets[rows]).all():
            raise ValueError(f"halfplane_polygon needs the axis direction {unit} with a finite offset")
        axis[key] = offsets[rows].max()
    x0, y0, x1, y1 = axis["x_lo"], axis["y_lo"], -axis["x_hi"], -axis["y_hi"]
    if x0 > x1 or y0 > y1:
        return np.zeros((0, 2))
    poly = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    for n, b in zip(normals, offsets):
        if not np.isfinite(b) or len(poly) == 0:
            continue
        poly = _clip(poly, n, b)
    return _dedupe(poly)


def _clip(poly: np.ndarray, n: np.ndarray, b: float) -> np.ndarray:
    """``poly ∩ {y : n·y ≥ b}`` for a convex counter-clockwise polygon (Sutherland–Hodgman)."""
    out = []
    values = poly @ n - b
    for k in range(len(poly)):
        p, q, vp, vq = poly[k], poly[(k + 1) % len(poly)], values[k], values[(k + 1) % len(poly)]
        if vp >= 0:
            out.append(p)
        if (vp >= 0) != (vq >= 0):
            t = vp / (vp - vq)
            out.append(p + t * (q - p))
    return np.array(out).reshape(-1, 2)


def _dedupe(poly: np.ndarray) -> np.ndarray:
    """Consecutive repeated vertices removed (a flat polygon keeps its distinct corners)."""
    if len(poly) < 2:
        return poly
    keep = [poly[0]]
    for v in poly[1:]:
        if not np.array_equal(v, keep[-1]):
            keep.append(v)
    if len(keep) > 1 and np.array_equal(keep[0], keep[-1]):
        keep.pop()
    return np.array(keep)


def polygon_contains(vertices: np.ndarray, points: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
    """Boolean ``(N,)``: which of ``points`` ``(N, 2)`` lie in the convex counter-clockwise
    polygon ``vertices`` ``(V, 2)`` (a segment or a point included), up to ``tolerance``
    times the polygon's extent (plus an absolute ``tolerance``): every edge's cross
    product ``≥ −tol`` and the point inside the polygon's bounding box."""
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(vertices) == 0:
        return np.zeros(len(points), dtype=bool)
    scale = max(float(np.abs(vertices).max()), float(np.ptp(vertices, 0).max()), 1.0)
    tol = tolerance * scale
    inside = ((points >= vertices.min(0) - tol) & (points <= vertices.max(0) + tol)).all(1)
    for k in range(len(vertices)):
        p, q = vertices[k], vertices[(k + 1) % len(vertices)]
        edge = q - p
        length = float(np.hypot(*edge))
        if length == 0:
            continue
        cross = (edge[0] * (points[:, 1] - p[1]) - edge[1] * (points[:, 0] - p[0])) / length
        inside &= cross >= -tol
    return inside


def polygon_area(vertices: np.ndarray) -> float:
    """The shoelace area of a counter-clockwise polygon ``(V, 2)`` (0 for fewer than 3)."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    if len(v) < 3:
        return 0.0
    x, y = v[:, 0], v[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# --- the sets ---------------------------------------------------------------------------------
def sample_outputs(model, lower: torch.Tensor, upper: torch.Tensor, outputs: tuple[int, int], samples: int,
                   seed: int = 0) -> np.ndarray:
    """``(N, 2)`` outputs ``(Y_i, Y_j)`` of the IR forward (float64) at ``samples`` inputs
    drawn uniformly from ``[lower, upper]`` (``(n,)`` each), plus every corner of the box
    when it has at most ``2**MAX_CORNER_INPUTS`` corners (moving inputs only)."""
    gen = torch.Generator().manual_seed(seed)
    lower, upper = lower.reshape(-1).double(), upper.reshape(-1).double()
    moving = torch.nonzero(upper > lower).reshape(-1)
    parts = [lower + (upper - lower) * torch.rand((samples, lower.numel()), generator=gen, dtype=torch.float64)]
    if len(moving) <= MAX_CORNER_INPUTS:
        bits = torch.tensor(np.indices((2,) * len(moving)).reshape(len(moving), -1).T, dtype=torch.bool)
        corners = lower.repeat(len(bits), 1)
        corners[:, moving] = torch.where(bits, upper[moving], lower[moving])
        parts.append(corners)
    x = torch.cat(parts)
    with torch.no_grad():
        y = torch.cat([model(x[k:k + CHUNK]) for k in range(0, len(x), CHUNK)])
    return y[:, list(outputs)].numpy()


def extreme_outputs(model, lower: torch.Tensor, upper: torch.Tensor, outputs: tuple[int, int], normals: np.ndarray,
                    steps: int = ATTACK_STEPS, restarts: int = ATTACK_RESTARTS, seed: int = 0) -> np.ndarray:
    """``(K·restarts, 2)`` real outputs ``(Y_i, Y_j)`` near the edge of the reachable set: for
    each direction ``c_k`` of ``normals`` ``(K, 2)``, projected sign-gradient descent (Madry
    et al. 2018) of ``c_k·(Y_i, Y_j)`` over inputs in ``[lower, upper]`` (``(n,)`` each, float64),
    ``steps`` steps of a linearly shrinking size from a quarter of the box's width, from
    ``restarts`` uniform random starts. An inner estimate of the set: every point is a model
    output, so every sound polygon must contain it."""
    gen = torch.Generator().manual_seed(seed + 1)
    lo, hi = lower.reshape(1, -1).double(), upper.reshape(1, -1).double()
    c = torch.as_tensor(np.asarray(normals, dtype=np.float64)).repeat(restarts, 1)
    x = lo + (hi - lo) * torch.rand((len(c), lo.shape[1]), generator=gen, dtype=torch.float64)
    index = list(outputs)
    for t in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad((model(x)[:, index] * c).sum(), x)
        size = (hi - lo) * 0.25 * (1 - t / steps)
        x = torch.min(torch.max(x.detach() - size * grad.sign(), lo), hi)
    with torch.no_grad():
        return model(x)[:, index].numpy()


def _deepz_projection(model, lower: torch.Tensor, upper: torch.Tensor, outputs: tuple[int, int]):
    """The output zonotope of DeepZ projected on ``outputs``: centre ``(2,)`` and generators
    ``(m, 2)``."""
    from .domains.deepz import DeepZDomain
    from .engine import propagate

    lo, hi = model.as_batch(lower[None]), model.as_batch(upper[None])
    z = propagate(model.graph_for("cpu", torch.float64), DeepZDomain(), lo, hi)
    index = list(outputs)
    centre = z.centre.reshape(1, -1)[0, index]
    if z.factored:
        gens = z.scale[0, :, None] * z.shared.reshape(z.num_symbols, -1)[:, index]
    else:
        gens = z.generators.reshape(1, z.num_symbols, -1)[0][:, index]
    return centre.numpy(), gens.numpy()


def reach_sets(model, lower: torch.Tensor, upper: torch.Tensor, outputs: tuple[int, int],
               k: int = DEFAULT_DIRECTIONS, samples: int = DEFAULT_SAMPLES, seed: int = 0) -> ReachSets:
    """Box, DeepZ and CROWN polygons and sampled outputs of ``model`` (a
    :class:`verifier.Model`) for outputs ``outputs = (i, j)`` over the input box
    ``[lower, upper]`` (float64, ``(input_size,)`` each), in float64 on the CPU; ``k`` CROWN
    directions (:func:`directions`), ``samples`` uniform samples (plus the corners, see
    :func:`sample_outputs`) and the attacked outputs of :func:`extreme_outputs`, seeded with
    ``seed``.

    Raises :class:`VerifierInputError` for bad ``k`` or a set without finite bounds (a model
    whose values overflow float64 over the box), and :class:`ReachSoundnessError` when a
    sampled or attacked output lies outside a polygon (tolerance ``1e-9`` of its extent)."""
    from .api import compute_bounds

    normals = directions(k)
    lo, hi = lower.reshape(1, -1).double(), upper.reshape(1, -1).double()
    i, j = outputs
    with torch.no_grad():
        lb, ub = compute_bounds(model, lo, hi, domain="box")
        box = np.array([[lb[0, i], lb[0, j]], [ub[0, i], lb[0, j]], [ub[0, i], ub[0, j]], [lb[0, i], ub[0, j]]],
                       dtype=np.float64)
        centre, gens = _deepz_projection(model, lo[0], hi[0], outputs)
        C = torch.zeros((k, model.output_size), dtype=torch.float64)
        C[:, i], C[:, j] = torch.as_tensor(normals[:, 0]), torch.as_tensor(normals[:, 1])
        crown_lb, _ = compute_bounds(model, lo, hi, domain="crown", C=C)
    unbounded = [name for name, values in (("box", box), ("deepz", np.concatenate([centre.ravel(), gens.ravel()])),
                                           ("crown", crown_lb.numpy())) if not np.isfinite(values).all()]
    if unbounded:  # an overflowing model: its sets have no finite polygon
        raise VerifierInputError(f"the {', '.join(unbounded)} bounds of Y_{i}, Y_{j} over this input box are not "
                                 f"finite (the model's values overflow float64 there), so no set can be drawn; "
                                 f"narrow the box or rescale the model")
    sets = ReachSets(outputs, sample_outputs(model, lo[0], hi[0], outputs, samples, seed),
                     extreme_outputs(model, lo[0], hi[0], outputs, normals, seed=seed), directions=k)
    sets.polygons = {"box": _dedupe(box), "deepz": zonotope_polygon(centre, gens),
                     "crown": halfplane_polygon(normals, crown_lb[0].numpy())}
    points = np.concatenate([sets.samples, sets.extremes])
    for name, polygon in sets.polygons.items():
        outside = int((~polygon_contains(polygon, points)).sum())
        if outside:
            raise ReachSoundnessError(f"{outside} of {len(points)} sampled and attacked outputs lie outside the "
                                      f"{name} polygon: {name} is unsound on this model (please report it)")
    return sets
