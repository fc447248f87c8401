"""Index, reduction and contraction ops: ``select``, ``reduce_sum`` and ``einsum``.

* ``select`` — every output entry is a copy of one input entry or a constant:
  ``y[j] = v[index[j]]`` where ``v`` is the concatenation of the inputs' flattened
  values followed by the constants ``params['fill']``. Gather, GatherElements, GatherND,
  Expand, Tile, Where with a constant condition, ScatterND, nearest Resize, edge/reflect
  Pad, DepthToSpace and SpaceToDepth all become one. Affine and monotone (a copy is
  non-decreasing); its transpose is a scatter-add (``verifier.ops.adjoint``).
* ``reduce_sum`` — the sum over per-sample ``axes`` (``keepdims``): affine, monotone.
* ``einsum`` — ``y = einsum(equation, x, W₁, …)`` with constant ``Wᵢ``, in the normal form
  the importer builds: no letter of a constant is summed without appearing in ``x``'s
  term or the output, and no constant repeats a letter. Every coefficient of ``x`` in
  ``y`` is then one product ``Π W_i[…]``, so ``|L|`` is the same einsum on ``|Wᵢ|``
  (its linear part, which the interval domain uses).
"""

from __future__ import annotations

import numpy as np
import torch

from . import Node, cached_while_constant, derived, forward_op, linear_part


def index_tensor(node: Node, device: torch.device) -> torch.Tensor:
    """``attrs['index']`` (a numpy int64 array, output-sized) as a flat long tensor on ``device``."""
    return cached_while_constant(node, ("index", str(device)), (),
                                 lambda: torch.tensor(np.asarray(node["attrs"]["index"]).reshape(-1), device=device))


@forward_op("select", affine=True, monotone=True)
def select(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    """``y = cat(x₁.flat, …, x_k.flat, fill)[index]`` reshaped to ``node['shape']``.

    ``xs``: ``(B, *Sᵢ)``; ``attrs['index']``: int64 array of the output's shape, entries in
    ``[0, Σ|Sᵢ| + |fill|)``; ``params['fill']`` (optional): the constant entries, 1-D.
    Returns ``(B, *node['shape'])``."""
    batch = max(x.shape[0] for x in xs)
    flats = [x.reshape(x.shape[0], -1).expand(batch, -1) for x in xs]
    fill = node["params"].get("fill")
    if fill is not None:
        flats.append(fill.to(flats[0].dtype).reshape(1, -1).expand(batch, -1))
    flat = flats[0] if len(flats) == 1 else torch.cat(flats, dim=1)
    return flat.index_select(1, index_tensor(node, flat.device)).reshape(batch, *node["shape"])


@forward_op("reduce_sum", affine=True, monotone=True)
def reduce_sum(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` ``(B, *S)`` over the per-sample ``attrs['axes']`` (non-negative), keeping
    them as size 1 when ``attrs['keepdims']``."""
    axes = [a + 1 for a in node["attrs"]["axes"]]
    return x.sum(dim=axes, keepdim=bool(node["attrs"]["keepdims"])) if axes else x


def _weights(node: Node, absolute_: bool) -> list[torch.Tensor]:
    names = sorted((k for k in node["params"] if k.startswith("w")), key=lambda k: int(k[1:]))
    if absolute_:
        return [derived(node, k, "abs", torch.abs) for k in names]
    return [node["params"][k] for k in names]


@linear_part("einsum")
def einsum_map(node: Node, x: torch.Tensor, absolute_: bool = False) -> torch.Tensor:
    """``einsum(attrs['equation'], x, W₁, …)`` per sample (``|Wᵢ|`` when ``absolute_``).

    The equation ``"xsub,w1sub,…->out"`` names the per-sample axes; ``attrs['batch']`` is a
    letter it does not use, given to the batch axis."""
    a = node["attrs"]
    lhs, out = a["equation"].split("->")
    terms = lhs.split(",")
    b = a["batch"]
    equation = ",".join([b + terms[0], *terms[1:]]) + "->" + b + out
    return torch.einsum(equation, x, *[w.to(x.dtype) for w in _weights(node, absolute_)])


@forward_op("einsum")
def einsum(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = einsum(equation, x, W₁, …)`` (see :func:`einsum_map`); linear, no offset."""
    return einsum_map(node, x)


__all__ = ["einsum", "einsum_map", "index_tensor", "reduce_sum", "select"]
