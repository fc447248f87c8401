"""Writing a proof certificate from what a :class:`~verifier.proof.record.ProofRecorder`
collected (the layout: docs/proofs.md; the reader: :mod:`verifier.proofcheck.certificate`).

The archive is one zip file (``index.json`` + ``<key>.npy`` arrays, deflated), written
atomically (:func:`verifier.outputs.write_atomic`). A verdict that the checker could not
re-derive is still written, with ``"certified": false`` and the reasons, never as a
certificate that claims more than it holds.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import torch

from ..outputs import write_atomic
from ..proofcheck.certificate import FORMAT
from ..proofcheck.network import UnsupportedModel, file_sha256, load_network
from .record import ProofRecorder


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def build_certificate(recorder: ProofRecorder, model_path: str, spec_path: str, regions: int,
                      result: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The index and arrays of the certificate of one verification (``regions``: the
    spec's region count; ``result``: its verdict). Regions the recorder has nothing for
    were refuted on their whole box (Box/CROWN, the batched screen): a one-node tree."""
    from .. import __version__

    index = {"format": FORMAT, "tool": f"verifier {__version__}", "result": result,
             "model": {"file": os.path.basename(model_path), "sha256": file_sha256(model_path)},
             "spec": {"file": os.path.basename(spec_path), "sha256": file_sha256(spec_path)},
             "certified": result == "unsat", "uncertified": list(recorder.uncertified),
             "claims_dtype": "float32" if "float32" in recorder.dtypes else "float64", "regions": []}
    if result != "unsat":
        index["uncertified"].append(f"the verdict is {result}: only unsat verdicts have certificates")
    net = None
    try:
        net = load_network(model_path)
    except UnsupportedModel as exc:
        index["uncertified"].append(str(exc))
    index["certified"] = not index["uncertified"]
    arrays: dict[str, np.ndarray] = {}
    if not index["certified"]:
        return index, arrays
    for r in range(regions):
        if r in recorder.relu:
            index["regions"].append(_relu_region(r, recorder.relu[r], arrays, net, spec_path, recorder.lp_nodes))
            continue
        tree = recorder.trees.get(r)
        parts = tree.arrays() if tree is not None else {"dim": torch.tensor([-1]), "mid": torch.tensor([np.nan]),
                                                       "left": torch.tensor([-1]), "right": torch.tensor([-1]),
                                                       "claims": torch.tensor([[np.nan]])}
        for name, value in parts.items():
            arrays[f"r{r}.tree.{name}"] = _np(value).astype(np.float64 if name in ("mid", "claims") else np.int64)
        index["regions"].append({"index": r, "kind": "box-tree", "nodes": int(len(parts["dim"]))})
    return index, arrays


def _relu_region(r: int, rec, arrays: dict, net, spec_path: str, lp_nodes: int | None) -> dict:
    entry = {"index": r, "kind": "relu-split", "relus": [int(l.numel()) for l, _ in rec.claims],
             "intermediate": sorted(int(t) for t in rec.inter_rows), "disjuncts": []}
    for i, (l, u) in enumerate(rec.claims):
        arrays[f"r{r}.claims.l{i}"], arrays[f"r{r}.claims.u{i}"] = _np(l), _np(u)
        arrays[f"r{r}.final.alpha{i}"] = _np(rec.final_alpha[i])
    if rec.final_lower is not None:
        arrays[f"r{r}.final.lower"] = _np(rec.final_lower)
    entry["pools"] = [int(len(sel)) for sel, _ in rec.pools]
    for p, (sel, dom) in enumerate(rec.pools):
        arrays[f"r{r}.pool{p}.sel"], arrays[f"r{r}.pool{p}.dom"] = _np(sel).astype(np.int64), _np(dom).astype(np.int8)
    for t, rows in rec.inter_rows.items():
        arrays[f"r{r}.inter{t}.rows"] = _np(rows).astype(np.int64)
        for i, a in enumerate(rec.inter_alpha[t]):
            arrays[f"r{r}.inter{t}.alpha{i}"] = _np(a)
    tree = _MilpTrees(net, spec_path, r, rec, lp_nodes)
    for d in sorted(set(rec.leaves) | set(rec.trusted) | set(rec.trusted_disjuncts)):
        item = {"index": d, "leaves": 0, "lp_leaves": 0, "trusted_leaves": 0, "milp": rec.trusted_disjuncts.get(d)}
        keep, extra = tree.replace(d, item) if item["milp"] else (True, {})
        if keep and d in rec.leaves:
            signs, alpha, beta, lower = (torch.cat(parts) for parts in zip(*rec.leaves[d]))
            arrays[f"r{r}.d{d}.lower"] = _np(lower).astype(np.float64)
            arrays[f"r{r}.d{d}.signs"] = _np(signs).astype(np.int8)
            arrays[f"r{r}.d{d}.alpha"] = _np(alpha).astype(np.float64)
            arrays[f"r{r}.d{d}.beta"] = _np(beta).astype(np.float64)
            item["leaves"] = int(signs.shape[0])
        if keep and d in rec.trusted:
            trusted = _np(torch.cat(rec.trusted[d])).astype(np.int8)
            trusted = _lp_leaves(r, d, rec, trusted, arrays, item, net, spec_path)
            if len(trusted):
                arrays[f"r{r}.d{d}.trusted"] = trusted
                item["trusted_leaves"] = int(len(trusted))
        if len(extra.get("signs", ())):  # the LP tree's leaves after any of the search's own LP leaves
            for name, value in extra.items():
                key = f"r{r}.d{d}.lp.{name}"
                arrays[key] = np.concatenate([arrays[key], value]) if key in arrays else value
            item["lp_leaves"] += int(len(extra["signs"]))
        entry["disjuncts"].append(item)
    return entry


class _MilpTrees:
    """Per region: replaces a disjunct the MILP closed by checkable leaves
    (:meth:`replace`), computing the checker's root bounds once."""

    def __init__(self, net, spec_path: str, r: int, rec, lp_nodes: int | None):
        self.net, self.spec_path, self.r, self.rec, self.lp_nodes = net, spec_path, r, rec, lp_nodes
        self.region = self.bounds = None

    def replace(self, d: int, item: dict) -> tuple[bool, dict]:
        """For disjunct ``d``, marked ``milp`` in ``item``: ``(keep, extra)``, whether the
        search's own leaves of ``d`` are written as usual and the ``lp`` leaf arrays to add.
        The mark is dropped when the search's leaves already cover every phase (nothing to
        add), or when the LP branch-and-bound of :mod:`~verifier.proof.milp_tree` closes
        what they leave open (its leaves added; the search's kept only where the tree
        used them). Otherwise ``item["milp"]`` says why the disjunct stays trusted."""
        from ..proofcheck.check import covers

        rec, T = self.rec, sum(int(l.numel()) for l, _ in self.rec.claims)
        parts = [torch.cat([p[0] for p in rec.leaves.get(d, [])]) if d in rec.leaves else torch.zeros(0, T)]
        parts += list(rec.trusted.get(d, []))
        signs = _np(torch.cat([p.to(torch.int8) for p in parts])) if T else np.zeros((0, 0), np.int8)
        if len(signs) and covers(signs):
            item["milp"] = None
            return True, {}
        if self.net is None or not rec.claims or self.lp_nodes == 0:
            return True, {}
        from ..proofcheck.blas import single_thread
        from .milp_tree import MAX_NODES, lp_tree

        region, bounds = self._root()
        rows = region.rows_of(d)
        with single_thread():  # the checker's BLAS setting (same roundings; no spinning threads)
            found = lp_tree(self.net, bounds, region.C[rows], region.b[rows],
                            MAX_NODES if self.lp_nodes is None else self.lp_nodes, known=signs)
        if found.arrays is None:
            item["milp"] = f"{item['milp']}; {found.reason}"
            return True, {}
        item.update({"milp": None, "lp_tree": {"nodes": found.nodes, "covered": found.covered,
                                               "seconds": round(found.seconds, 3)}})
        return found.covered > 0, found.arrays

    def _root(self):
        """The spec region (as the checker reads it) and the checker's root bounds."""
        if self.bounds is None:
            from ..proofcheck.blas import single_thread
            from ..proofcheck.bounds import crown_bounds
            from ..proofcheck.check import read_regions

            self.region = read_regions(self.spec_path)[self.r]
            extra = {int(t): (_np(rows).astype(np.int64), {i: _np(a)[None] for i, a in enumerate(self.rec.inter_alpha[t])})
                     for t, rows in self.rec.inter_rows.items()}
            with single_thread():
                self.bounds = crown_bounds(self.net, self.region.lower, self.region.upper, extra=extra)
        return self.region, self.bounds


def _lp_leaves(r: int, d: int, rec, signs: np.ndarray, arrays: dict, item: dict, net, spec_path: str) -> np.ndarray:
    """Record the LP-closed subdomains ``signs`` ``(N, T)`` of disjunct ``d`` whose LP dual
    checks (:func:`~verifier.proof.lp_dual.lp_leaf_duals`) as ``lp`` leaves; return the
    signs of the others (still trusted to HiGHS)."""
    from ..spec import read_vnnlib
    from .lp_dual import lp_leaf_duals

    region = read_vnnlib(spec_path).regions[r]
    conj = region.disjuncts[d]
    A, b = conj.A.double().cpu().numpy(), conj.b.double().cpu().numpy().reshape(-1)
    box = (region.lower.double().cpu().numpy().reshape(-1), region.upper.double().cpu().numpy().reshape(-1))
    claims = [(_np(l).astype(np.float64), _np(u).astype(np.float64)) for l, u in rec.claims]
    found, done = lp_leaf_duals(net, claims, signs, box, A, b)
    if done.any():
        arrays.update({f"r{r}.d{d}.lp.{name}": value for name, value in found.items()})
        item["lp_leaves"] = int(done.sum())
    return signs[~done]


def write_certificate(path: str, index: dict, arrays: dict[str, np.ndarray]) -> int:
    """Write the archive atomically; return its size in bytes."""

    def fill(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("index.json", json.dumps(index, indent=1, allow_nan=False))
            for key, value in arrays.items():
                buffer = io.BytesIO()
                np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
                zf.writestr(f"{key}.npy", buffer.getvalue())

    write_atomic(path, fill)
    return os.path.getsize(path)
