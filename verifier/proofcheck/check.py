"""The proof checker: re-derive every leaf of a certificate, independently of the search.

``check_proof(MODEL, SPEC, PROOF)`` reads the model with its own ONNX reader
(:mod:`~verifier.proofcheck.network`), the spec with the VNN-LIB parser, and the
certificate (:mod:`~verifier.proofcheck.certificate`), refuses a certificate whose model
or spec hash differs, then for every region of the spec:

* ``box-tree`` (input splitting, or a region refuted on its whole box): the bisection
  tree covers the box by construction (each split's midpoint must lie in its node's
  range); every node's intermediate bounds are IBP ∩ its parent's, tightened by CROWN
  passes for split nodes; every leaf must refute every disjunct by the best of IBP on the
  outputs, the Lagrangian bound on the cheap bounds and on the CROWN-tightened bounds;
* ``relu-split``: the root's bounds are IBP, CROWN and the recorded α-CROWN intermediate
  passes; a disjunct is refuted at the root by the recorded final slopes, else its leaves'
  split signs must cover every phase (a complete case split) and each leaf must refute the
  disjunct with its α, β on the root bounds clamped by its splits (or be empty); a leaf
  an LP closed is checked from the LP's dual by weak duality
  (:mod:`~verifier.proofcheck.lp_leaf`); recorded max-pool relaxations (which window
  entry bounds each output) are used in the final pass and at every leaf; leaves without
  a dual and disjuncts closed by HiGHS's MILP are reported as trusted, not re-derived.

All bounds are computed by :mod:`~verifier.proofcheck.bounds` in outward-rounded float64.
A closed row needs ``lb > b`` (strict rows ``lb ≥ b``): no tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .blas import single_thread
from .bounds import Relaxation, clamped_domains, crown_bounds, interval_bounds, lagrangian_bound, spec_interval_bound
from .certificate import (CLAIM_TOLERANCE, CLAIM_TOLERANCE_FLOAT32, Certificate, CertificateError,
                          CertificateMalformed, CertificateUnreadable, LeafFailed, below_claim)
from .lp_leaf import check_lp_leaves
from .network import Network, UnsupportedModel, file_sha256, load_network

BATCH = 256  # ReLU-split subdomains bounded together
TREE_BATCH = 2048  # bisection-tree nodes handled together (their refinement passes are chunked by bounds.CHUNK) ...
TREE_ENTRIES = 1 << 22  # ... unless their bounds of every node would hold more entries than this (32 MiB)


class ProofRefused(ValueError):
    """The certificate does not belong to this model and spec, cannot be read, or is malformed
    (a missing or mistyped index key or array, an array of the wrong shape): exit 2."""


@dataclass
class CheckReport:
    """``valid``; ``message`` (``proof valid`` or the first failure); leaves re-derived;
    ``trusted``: what was taken on HiGHS's word; ``seconds`` in all, of which ``reading``
    (hashes, the spec, the ONNX model)."""

    valid: bool
    message: str
    leaves: int = 0
    trusted: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reading: float = 0.0


@dataclass
class Region:
    """One spec region in numpy: box ``(1, n)``, stacked rows ``C`` ``(k, m)``, ``b``,
    ``strict`` ``(k,)`` and each disjunct's row count."""

    lower: np.ndarray
    upper: np.ndarray
    C: np.ndarray
    b: np.ndarray
    strict: np.ndarray
    sizes: list[int]

    def closed(self, lb: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """``(B, D)``: disjunct closed (one refuted row) for lower bounds ``lb`` ``(B, k)``
        of the stacked rows (or, with ``rows``, of one disjunct's rows: ``(B, 1)``)."""
        b, strict = (self.b, self.strict) if rows is None else (self.b[rows], self.strict[rows])
        refuted = np.where(strict, lb >= b, lb > b)
        sizes = self.sizes if rows is None else [lb.shape[1]]
        return np.stack([chunk.any(1) for chunk in np.split(refuted, np.cumsum(sizes)[:-1], axis=1)], 1)

    def rows_of(self, d: int) -> slice:
        start = sum(self.sizes[:d])
        return slice(start, start + self.sizes[d])


def read_regions(spec_path: str) -> list[Region]:
    """The spec's regions, parsed by the project's VNN-LIB reader (which the checker trusts)."""
    from ..spec import read_vnnlib

    out = []
    for region in read_vnnlib(spec_path).regions:
        C, b, sizes = region.stacked()
        strict = np.concatenate([np.zeros(d.A.shape[0], bool) if d.strict is None
                                 else d.strict.reshape(-1).cpu().numpy().astype(bool) for d in region.disjuncts])
        out.append(Region(region.lower.reshape(1, -1).double().cpu().numpy(),
                          region.upper.reshape(1, -1).double().cpu().numpy(), C.double().cpu().numpy(),
                          b.double().cpu().numpy(), strict, list(sizes)))
    return out


def check_proof(model_path: str, spec_path: str, proof_path: str) -> CheckReport:
    """Check the certificate ``proof_path`` of ``unsat`` for the model and spec (module
    docstring), with one BLAS thread (:func:`~verifier.proofcheck.blas.single_thread`).
    Raises :class:`ProofRefused` for a certificate of another model or spec, or an
    unreadable or malformed one; returns a report whose ``valid`` is False naming the first failing
    leaf otherwise."""
    with single_thread():
        return _check_proof(model_path, spec_path, proof_path)


def _check_proof(model_path: str, spec_path: str, proof_path: str) -> CheckReport:
    start = time.perf_counter()
    try:
        cert = Certificate(proof_path)
    except CertificateError as exc:
        raise ProofRefused(str(exc)) from None
    index = cert.index
    for what, path in (("model", model_path), ("spec", spec_path)):
        entry = index.get(what)
        want = entry.get("sha256") if isinstance(entry, dict) else None
        got = file_sha256(path)
        if want != got:
            raise ProofRefused(f"{proof_path} certifies the {what} with SHA-256 {str(want)[:16]}…, not {path} "
                               f"(SHA-256 {got[:16]}…)")
    regions = read_regions(spec_path)  # a malformed spec is bad input (SpecError), not a bad certificate
    report = CheckReport(False, "", seconds=0.0)
    try:
        if index.get("result") != "unsat" or not index.get("certified"):
            reasons = "; ".join(index.get("uncertified") or []) or "no reason given"
            raise LeafFailed(f"the certificate is not a certified unsat ({reasons})")
        try:
            net = load_network(model_path)
        except UnsupportedModel as exc:
            raise LeafFailed(f"the checker cannot read the model: {exc}") from None
        report.reading = time.perf_counter() - start
        cert.tolerance = CLAIM_TOLERANCE_FLOAT32 if index.get("claims_dtype") == "float32" else CLAIM_TOLERANCE
        entries = {e["index"]: (f"regions[{n}]", e) for n, e in enumerate(index["regions"])}
        for at, entry in entries.values():
            if entry["index"] >= len(regions):
                raise CertificateMalformed(f"index.json: {at}.index is {entry['index']}, but the spec has "
                                           f"{len(regions)} region(s)")
        for r, region in enumerate(regions):
            at, entry = entries.get(r, (None, None))
            if entry is None:
                raise CertificateMalformed(f"region {r}: the certificate has nothing for it")
            if entry.get("kind") == "box-tree":
                report.leaves += check_box_tree(net, region, cert, r)
            elif entry.get("kind") == "relu-split":
                report.leaves += check_relu_split(net, region, cert, entry, report.trusted, at)
            else:
                raise CertificateMalformed(f"region {r}: unknown kind {entry.get('kind')!r}")
        report.valid, report.message = True, "proof valid"
    except CertificateUnreadable as exc:  # corrupt bytes: not a certificate (exit 2), as an unreadable index
        raise ProofRefused(str(exc)) from None
    except CertificateMalformed as exc:  # a missing array, one of the wrong kind or shape: not a certificate (exit 2)
        raise ProofRefused(f"{proof_path} is a malformed certificate: {exc}; give the certificate verify --proof "
                           f"wrote") from None
    except (CertificateError, LeafFailed) as exc:
        report.message = f"proof invalid: {exc}"
    except (IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:  # structure no check above names
        raise ProofRefused(f"{proof_path} is a malformed certificate ({type(exc).__name__}: {exc}); give the "
                           f"certificate verify --proof wrote") from None
    report.seconds = time.perf_counter() - start
    return report


def _shapes(net: Network, bounds) -> dict:
    return {r: bounds[i] for r, i in enumerate(net.relu_inputs)}


def _relaxation(net: Network, bounds) -> Relaxation:
    return Relaxation(_shapes(net, bounds))


def _cheap_leaf_bounds(net: Network, region: Region, lo, hi, known, claims, tolerance: float):
    """Lower bounds ``(B, k)`` of the stacked rows over boxes ``lo``/``hi``: the best of IBP
    on the outputs and the Lagrangian bound on IBP ∩ ``known`` bounds; and ``(B,)`` which
    boxes stay open or below their ``claims`` ``(B, k)`` (to be bounded again on
    CROWN-tightened bounds, :func:`_tight_leaf_bounds`)."""
    lam = np.broadcast_to(region.C, (len(lo), *region.C.shape))
    cheap = interval_bounds(net, lo, hi, known)
    lb = np.maximum(spec_interval_bound(region.C, *cheap[-1]),
                    lagrangian_bound(net, len(net.ops), lam, cheap, _relaxation(net, cheap)))
    return lb, ~region.closed(lb).all(1) | below_claim(lb, claims, tolerance).any(1)


def _tight_leaf_bounds(net: Network, region: Region, full) -> np.ndarray:
    """Lower bounds ``(B, k)`` of the stacked rows on CROWN-tightened bounds ``full``."""
    lam = np.broadcast_to(region.C, (len(full[0][0]), *region.C.shape))
    return np.maximum(lagrangian_bound(net, len(net.ops), lam, full, _relaxation(net, full)),
                      spec_interval_bound(region.C, *full[-1]))


def _rows(bounds, index):
    """Each node's bounds restricted to the boxes ``index`` (``None`` stays ``None``)."""
    return None if bounds is None else [(l[index], u[index]) for l, u in bounds]


def _leaf_verdict(region: Region, cert: Certificate, r: int, ids, lo, hi, lb: np.ndarray, claim: np.ndarray) -> None:
    """Raise :class:`LeafFailed` for the first input-split leaf ``ids`` whose bounds ``lb``
    ``(B, k)`` fall below its ``claim`` or leave a disjunct open."""
    short = np.nonzero(below_claim(lb, claim, cert.tolerance).any(1))[0]
    if len(short):
        i = short[0]
        row = int(np.nonzero(below_claim(lb[i], claim[i], cert.tolerance))[0][0])
        raise LeafFailed(f"region {r}, input-split leaf {int(ids[i])}: re-derived bound {lb[i, row]:.12g} of "
                         f"row {row} is below the certificate's claim {claim[i, row]:.12g}")
    closed = region.closed(lb)
    bad = np.nonzero(~closed.all(1))[0]
    if len(bad):
        i, d = bad[0], int(np.nonzero(~closed[bad[0]])[0][0])
        rows = region.rows_of(d)
        raise LeafFailed(f"region {r}, input-split leaf {int(ids[i])} (box {lo[i].tolist()} .. "
                         f"{hi[i].tolist()}): disjunct {d} not refuted (best row: lower bound "
                         f"{lb[i, rows].max():.9g}, needs > {region.b[rows][lb[i, rows].argmax()]:.9g})")


def check_box_tree(net: Network, region: Region, cert: Certificate, r: int) -> int:
    """Check region ``r``'s bisection tree; return the number of leaves."""
    dim, mid = cert.array(f"r{r}.tree.dim"), cert.array(f"r{r}.tree.mid")
    left, right = cert.array(f"r{r}.tree.left"), cert.array(f"r{r}.tree.right")
    claims = cert.array(f"r{r}.tree.claims")
    M = len(dim)
    if claims.shape == (1, 1) and M == 1 and len(region.b) != 1 and np.isnan(claims).all():
        claims = np.full((1, len(region.b)), np.nan)  # one leaf, no claim recorded (a single domain pass)
    if not (len(mid) == len(left) == len(right) == M >= 1) or claims.shape != (M, len(region.b)):
        raise CertificateMalformed(f"region {r}: tree arrays of different lengths")
    n = region.lower.shape[1]
    inner = dim >= 0
    if np.any(dim[inner] >= n) or np.any((left[inner] < 0) | (left[inner] >= M) | (right[inner] < 0) | (right[inner] >= M)):
        raise LeafFailed(f"region {r}: a split names an input or a child that does not exist")
    if np.any(~np.isnan(claims[inner])):  # only closed leaves are bounded by a claim
        raise LeafFailed(f"region {r}: split node {int(np.nonzero(inner & ~np.isnan(claims).all(1))[0][0])} carries a "
                         f"claim (only leaves do)")
    children = np.concatenate([left[inner], right[inner]])
    if len(np.unique(children)) != len(children) or np.any(children == 0) or len(children) != M - 1:
        raise LeafFailed(f"region {r}: the split nodes do not form a tree")
    pending = [(np.array([0]), region.lower.copy(), region.upper.copy(), None)]
    leaves = 0
    batch = max(BATCH, min(TREE_BATCH, TREE_ENTRIES // sum(net.sizes)))
    while pending:
        ids, lo, hi, known = pending.pop()
        if len(ids) > batch:
            pending.append((ids[batch:], lo[batch:], hi[batch:], _rows(known, slice(batch, None))))
            ids, lo, hi, known = ids[:batch], lo[:batch], hi[:batch], _rows(known, slice(0, batch))
        split = dim[ids] >= 0
        leaf, node = np.nonzero(~split)[0], np.nonzero(split)[0]
        reopen = leaf[:0]
        if len(leaf):
            claim = claims[ids[leaf]]
            lb, still = _cheap_leaf_bounds(net, region, lo[leaf], hi[leaf], _rows(known, leaf), claim, cert.tolerance)
            reopen = leaf[still]
        # one CROWN pass for the split nodes and the leaves the cheap bound left open
        both = np.concatenate([node, reopen])
        full = crown_bounds(net, lo[both], hi[both], _rows(known, both)) if len(both) else None
        if len(leaf):
            if len(reopen):
                lb[still] = np.maximum(lb[still], _tight_leaf_bounds(net, region, _rows(full, slice(len(node), None))))
            _leaf_verdict(region, cert, r, ids[leaf], lo[leaf], hi[leaf], lb, claim)
            leaves += len(leaf)
        if len(node):
            bounds = _rows(full, slice(0, len(node)))
            d, m = dim[ids[node]], mid[ids[node]]
            rows = np.arange(len(node))
            low, high = lo[node], hi[node]
            if np.any(~(low[rows, d] <= m) | ~(m <= high[rows, d])):
                raise LeafFailed(f"region {r}: a split point lies outside its node's range")
            left_hi, right_lo = high.copy(), low.copy()
            left_hi[rows, d], right_lo[rows, d] = m, m
            pending.append((np.concatenate([left[ids[node]], right[ids[node]]]), np.concatenate([low, right_lo]),
                            np.concatenate([left_hi, high]), [(np.concatenate([l, l]), np.concatenate([u, u]))
                                                              for l, u in bounds]))
    return leaves


def covers(signs: np.ndarray) -> bool:
    """Whether partial sign assignments ``(M, T)`` (``±1`` fixed, ``0`` free) cover every
    assignment of ``{−1, +1}^T``: a case split on the entry fixed most often, recursively.
    For the leaves of a split tree each row is visited once per level (at most
    ``M·(T + 1)`` visits); a set that needs more (rows copied into both sides of many
    splits) is answered ``False`` rather than searched exponentially."""
    stack, budget = [signs], signs.shape[0] * (signs.shape[1] + 1) + 1
    while stack:
        S = stack.pop()
        budget -= len(S)
        if budget < 0:
            return False
        if len(S) == 0:
            return False
        if np.any(~S.any(1)):
            continue
        j = int((S != 0).sum(0).argmax())
        for side in (1, -1):
            part = S[S[:, j] != -side].copy()
            part[:, j] = 0
            stack.append(part)
    return True


def _per_relu(flat: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Split the last axis of ``flat`` into each ReLU's entries."""
    return np.split(flat, np.cumsum(sizes)[:-1], axis=-1)


def check_relu_split(net: Network, region: Region, cert: Certificate, entry: dict, trusted: list[str],
                     at: str) -> int:
    """Check one ``relu-split`` region entry (``at``: its place in the index,
    ``"regions[n]"``); append what is trusted to ``trusted``; return the number of leaves
    re-derived. (Its counts agree with the stored arrays: :class:`Certificate` checked.)"""
    r = entry["index"]
    for m, item in enumerate(entry["disjuncts"]):
        if item["index"] >= len(region.sizes):
            raise CertificateMalformed(f"index.json: {at}.disjuncts[{m}].index is {item['index']}, but region {r} "
                                       f"of the spec has {len(region.sizes)} disjunct(s)")
    relus = net.relu_inputs
    sizes = [net.sizes[i] for i in relus]
    if list(entry.get("relus", [])) != sizes:
        raise CertificateMalformed(f"region {r}: the certificate's ReLU sizes {entry.get('relus')} are not the model's {sizes}")
    claims = {i: (cert.array(f"r{r}.claims.l{i}")[None], cert.array(f"r{r}.claims.u{i}")[None])
              for i in range(len(relus))}
    extra = {}
    for t in entry.get("intermediate", []):
        rows = cert.array(f"r{r}.inter{t}.rows")
        extra[int(t)] = (rows, {i: cert.array(f"r{r}.inter{t}.alpha{i}")[None] for i in range(int(t))})
    for t, (rows, slopes) in extra.items():
        if np.any((rows < 0) | (rows >= sizes[t])) or any(a.shape != (1, 2 * len(rows), sizes[i])
                                                          for i, a in slopes.items()):
            raise CertificateMalformed(f"region {r}: intermediate slopes of ReLU {t} have the wrong shape")
    bounds = crown_bounds(net, region.lower, region.upper, extra=extra)
    for i, node in enumerate(relus):
        (l, u), (cl, cu) = bounds[node], claims[i]
        if cl.shape != l.shape or cu.shape != u.shape:
            raise CertificateMalformed(f"region {r}: claimed bounds of ReLU {i} have the wrong shape")
        bad = np.nonzero((below_claim(l, cl, cert.tolerance) | below_claim(-u, -cu, cert.tolerance))[0])[0]
        if len(bad):
            j = int(bad[0])
            raise LeafFailed(f"region {r}: re-derived bounds [{l[0, j]:.12g}, {u[0, j]:.12g}] of ReLU {i} input {j} "
                             f"are looser than the certificate's claim [{cl[0, j]:.12g}, {cu[0, j]:.12g}]")
    K = len(net.ops)
    final = {i: cert.array(f"r{r}.final.alpha{i}")[None] for i in range(len(relus))}
    lam = region.C[None]
    if any(a.shape != (1, len(region.b), sizes[i]) for i, a in final.items()):
        raise CertificateMalformed(f"region {r}: final slopes have the wrong shape")
    pools = read_pools(net, cert, entry)
    lb = np.maximum(lagrangian_bound(net, K, lam, bounds, Relaxation(_shapes(net, bounds), alpha=final, pools=pools)),
                    lagrangian_bound(net, K, lam, bounds, Relaxation(_shapes(net, bounds), pools=pools)))
    lb = np.maximum(lb, spec_interval_bound(region.C, *bounds[-1]))
    if cert.has(f"r{r}.final.lower"):
        claim = cert.array(f"r{r}.final.lower")
        if claim.shape != (len(region.b),):
            raise CertificateMalformed(f"region {r}: claimed root bounds have the wrong shape")
        short = np.nonzero(below_claim(lb[0], claim, cert.tolerance))[0]
        if len(short):
            raise LeafFailed(f"region {r}: re-derived root bound {lb[0, short[0]]:.12g} of row {int(short[0])} is below "
                             f"the certificate's claim {claim[short[0]]:.12g}")
    closed = region.closed(lb)[0]
    records = {item["index"]: item for item in entry.get("disjuncts", [])}
    leaves = 0
    for d in range(len(region.sizes)):
        if closed[d]:
            continue
        item = records.get(d)
        if item is None:
            rows = region.rows_of(d)
            raise LeafFailed(f"region {r}, disjunct {d}: not refuted at the root (best row lower bound "
                             f"{lb[0, rows].max():.9g}) and the certificate has no split for it")
        if item.get("milp"):
            trusted.append(f"region {r}, disjunct {d}: {item['milp']}")
            continue
        leaves += _check_leaves(net, region, cert, r, d, item, bounds, claims, sizes, trusted, pools)
    return leaves


def read_pools(net: Network, cert: Certificate, entry: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The recorded max-pool relaxations of a ``relu-split`` region: chain index →
    ``(sel, dom)`` ``(1, n_out)``; each ``sel`` must name a window entry that is not padding
    and each ``dom`` be 0 or 1 (any such values give a sound bound, :mod:`~verifier.proofcheck.pool`)."""
    r = entry["index"]
    sizes = [len(net.ops[i].value) for i in net.pools]
    if list(entry.get("pools", [])) != sizes:
        raise CertificateMalformed(f"region {r}: the certificate's max-pool sizes {entry.get('pools')} are not the model's {sizes}")
    out = {}
    for p, i in enumerate(net.pools):
        windows = net.ops[i].value
        sel, dom = cert.array(f"r{r}.pool{p}.sel"), cert.array(f"r{r}.pool{p}.dom")
        if sel.shape != (len(windows),) or dom.shape != (len(windows),) or sel.dtype.kind not in "iu":
            raise CertificateMalformed(f"region {r}: max-pool {p}'s parameters have the wrong shape or kind")
        if np.any((sel < 0) | (sel >= windows.shape[1])) or np.any((dom != 0) & (dom != 1)):
            raise LeafFailed(f"region {r}: max-pool {p} selects outside its windows or has a flag other than 0/1")
        if np.any(windows[np.arange(len(windows)), sel] < 0):
            raise LeafFailed(f"region {r}: max-pool {p} selects a padding entry")
        out[i] = (sel.astype(np.int64)[None], (dom == 1)[None])
    return out


def _check_leaves(net, region, cert, r, d, item, bounds, claims, sizes, trusted, pools) -> int:
    T = sum(sizes)
    rows = region.rows_of(d)
    k = rows.stop - rows.start
    parts = []
    if item.get("leaves"):
        signs, alpha, beta, lower = (cert.array(f"r{r}.d{d}.{name}") for name in ("signs", "alpha", "beta", "lower"))
        N = len(signs)
        if signs.shape != (N, T) or alpha.shape != (N, k, T) or beta.shape != (N, k, T) or lower.shape != (N, k):
            raise CertificateMalformed(f"region {r}, disjunct {d}: leaf arrays of the wrong shape")
        parts.append(signs)
    else:
        signs = np.zeros((0, T), np.int8)
    lp_count = int(item.get("lp_leaves") or 0)
    if lp_count:
        parts.append(check_lp_leaves(net, region, cert, r, d, lp_count, bounds, claims, sizes))
    if item.get("trusted_leaves"):
        lp = cert.array(f"r{r}.d{d}.trusted")
        if lp.shape[1:] != (T,):
            raise CertificateMalformed(f"region {r}, disjunct {d}: trusted leaf array of the wrong shape")
        parts.append(lp)
        trusted.append(f"region {r}, disjunct {d}: {len(lp)} subdomains with every ReLU fixed, closed by a HiGHS LP")
    every = np.concatenate(parts) if parts else np.zeros((0, T), np.int8)
    if np.any(np.abs(every.astype(np.int16)) > 1):
        raise LeafFailed(f"region {r}, disjunct {d}: split signs outside {{-1, 0, 1}}")
    if not covers(every.astype(np.int8)):
        raise LeafFailed(f"region {r}, disjunct {d}: the leaves' ReLU splits do not cover every phase")
    K = len(net.ops)
    C, b = region.C[rows], region.b[rows]
    for start in range(0, len(signs), BATCH):
        s = signs[start:start + BATCH].astype(np.float64)
        n = len(s)
        s_r = dict(enumerate(_per_relu(s, sizes)))
        a_r = dict(enumerate(_per_relu(alpha[start:start + n], sizes)))
        b_r = dict(enumerate(_per_relu(beta[start:start + n], sizes)))
        domains, empty = clamped_domains(net, bounds, s_r)
        live = np.nonzero(~empty)[0]
        if len(live) == 0:
            continue
        relax = Relaxation({i: c for i, c in claims.items()}, alpha={i: a[live] for i, a in a_r.items()},
                           signs={i: v[live] for i, v in s_r.items()}, beta={i: v[live] for i, v in b_r.items()},
                           pools=pools)
        lam = np.broadcast_to(C, (len(live), *C.shape))
        lb = lagrangian_bound(net, K, lam, bounds, relax, {node: (l[live], u[live]) for node, (l, u) in domains.items()})
        refuted = np.where(region.strict[rows], lb >= b, lb > b).any(1)
        claim = lower[start:start + n][live]  # +∞ (the search's empty subdomain) must be re-derived too
        short = np.nonzero(below_claim(lb, claim, cert.tolerance).any(1))[0]
        if len(short):
            i = int(short[0])
            row = int(np.nonzero(below_claim(lb[i], claim[i], cert.tolerance))[0][0])
            raise LeafFailed(f"region {r}, disjunct {d}, relu-split leaf {start + int(live[i])}: re-derived bound "
                             f"{lb[i, row]:.12g} of row {row} is below the certificate's claim {claim[i, row]:.12g}")
        if not refuted.all():
            i = int(np.nonzero(~refuted)[0][0])
            leaf = start + int(live[i])
            fixed = int(np.count_nonzero(signs[leaf]))
            raise LeafFailed(f"region {r}, disjunct {d}, relu-split leaf {leaf} ({fixed} ReLUs fixed): not refuted "
                             f"(best row lower bound {lb[i].max():.9g}, needs > {b[lb[i].argmax()]:.9g})")
    return len(signs) + lp_count
