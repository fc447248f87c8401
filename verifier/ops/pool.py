"""Pooling: ``maxpool``, ``avgpool`` and ``global_avgpool``, and max-pooling's relaxation
(:class:`MaxPoolRelaxation`, the one nonlinear op that is not elementwise)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import VerifierInputError
from . import Node, forward_op, linear_part
from .spatial import fold_leading, pad_spatial

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _all_pads(node: Node) -> list[int]:
    """Explicit pads followed by the extra end padding that ceil mode needs."""
    a = node["attrs"]
    n = len(a["kernel"])
    return list(a["pads"][:n]) + [e + x for e, x in zip(a["pads"][n:], a["ceil_extra"])]


@forward_op("maxpool", monotone=True)
def maxpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = max`` over each (dilated) window of ``x`` padded with −∞."""
    a = node["attrs"]
    spatial = len(a["kernel"])
    pool = _MAX[spatial]
    pads = _all_pads(node)

    def run(t: torch.Tensor) -> torch.Tensor:
        t = pad_spatial(t, pads, float("-inf"))
        return pool(t, a["kernel"], a["strides"], 0, a["dilations"])

    return fold_leading(x, spatial, run)


def _window_sum(node: Node, x: torch.Tensor, pads: list[int], pad_value: float = 0.0) -> torch.Tensor:
    a = node["attrs"]
    spatial = len(a["kernel"])
    pool = _AVG[spatial]
    volume = 1
    for k in a["kernel"]:
        volume *= k

    def run(t: torch.Tensor) -> torch.Tensor:
        t = pad_spatial(t, pads, pad_value)
        return pool(t, a["kernel"], a["strides"], 0) * volume

    return fold_leading(x, spatial, run)


def avgpool_divisor(node: Node, like: torch.Tensor) -> torch.Tensor:
    """Per-window element count: the window volume, or (``count_include_pad=0``) only the
    elements inside the input; the ceil-mode overhang is never counted."""
    a = node["attrs"]
    spatial = len(a["kernel"])
    n = spatial
    ones = torch.ones((1, 1, *like.shape[like.dim() - spatial :]), dtype=like.dtype, device=like.device)
    if a["count_include_pad"]:
        ones = pad_spatial(ones, list(a["pads"]), 1.0)
        pads = [0] * n + list(a["ceil_extra"])
    else:
        pads = _all_pads(node)
    return _window_sum(node, ones, pads)[0, 0]


@linear_part("avgpool")
def avgpool_map(node: Node, x: torch.Tensor, absolute_: bool = False) -> torch.Tensor:
    """Window mean; all weights are non-negative, so ``absolute_`` changes nothing."""
    return _window_sum(node, x, _all_pads(node)) / avgpool_divisor(node, x)


@forward_op("avgpool")
def avgpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """ONNX AveragePool (explicit pads, ceil mode, ``count_include_pad``)."""
    return avgpool_map(node, x)


@linear_part("global_avgpool")
def global_avgpool_map(node: Node, x: torch.Tensor, absolute_: bool = False) -> torch.Tensor:
    """Mean over every axis after the channel axis, kept with size 1."""
    dims = tuple(range(3, x.dim()))  # x is (B, N, C, *spatial)
    return x.mean(dim=dims, keepdim=True)


@forward_op("global_avgpool")
def global_avgpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """ONNX GlobalAveragePool."""
    return global_avgpool_map(node, x)


class MaxPoolRelaxation:
    """DeepPoly max-pool relaxation of a 1-D or 2-D ``maxpool`` node, per window (via
    unfold; 1-D pooling runs as 2-D with a unit height): the entry with the largest lower
    bound is selected; it bounds the output from below, and from above too when it
    dominates the window, otherwise ``max u`` does."""

    def __init__(self, node: dict, l: torch.Tensor, u: torch.Tensor):
        a = node["attrs"]
        spatial = len(a["kernel"])
        if spatial not in (1, 2):
            raise VerifierInputError(f"max-pooling over {spatial} axes is not supported by this domain "
                                     f"(node '{node['source']}'); use box")
        pads = _all_pads(node)
        self.one_d = spatial == 1
        if self.one_d:
            a = {"kernel": [1, a["kernel"][0]], "strides": [1, a["strides"][0]], "dilations": [1, a["dilations"][0]]}
            pads = [0, pads[0], 0, pads[1]]
            l, u = l.unsqueeze(-2), u.unsqueeze(-2)
        self.attrs, self.pads = a, pads
        self.in_shape = tuple(l.shape[1:])  # per-sample
        lp, up = self._patches(l, float("-inf")), self._patches(u, float("-inf"))  # (N, C, K, L)
        lower_sel, self.sel = lp.max(dim=2)
        others = up.scatter(2, self.sel.unsqueeze(2), float("-inf")).max(dim=2).values
        out_shape = (*l.shape[:-2], *self._out_hw(l))
        self._dominates = (lower_sel >= others).reshape(out_shape)
        self._max_u = up.max(dim=2).values.reshape(out_shape)

    def _external(self, t: torch.Tensor) -> torch.Tensor:
        return t.squeeze(-2) if self.one_d else t

    @property
    def dominates(self) -> torch.Tensor:
        """Per output entry: the selected entry dominates its window."""
        return self._external(self._dominates)

    @property
    def max_u(self) -> torch.Tensor:
        return self._external(self._max_u)

    def _out_hw(self, x: torch.Tensor) -> tuple[int, int]:
        a = self.attrs
        hp = x.shape[-2] + self.pads[0] + self.pads[2]
        wp = x.shape[-1] + self.pads[1] + self.pads[3]
        kh = (a["kernel"][0] - 1) * a["dilations"][0] + 1
        kw = (a["kernel"][1] - 1) * a["dilations"][1] + 1
        return (hp - kh) // a["strides"][0] + 1, (wp - kw) // a["strides"][1] + 1

    def _patches(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        a = self.attrs
        flat = pad_spatial(x.reshape(-1, *x.shape[-3:]), self.pads, fill)
        cols = torch.nn.functional.unfold(flat, a["kernel"], a["dilations"], 0, a["strides"])
        return cols.reshape(flat.shape[0], flat.shape[1], -1, cols.shape[-1])

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The selected entry of each window of ``x`` ``(B, k, *in)`` → ``(B, k, *out)``."""
        if self.one_d:
            x = x.unsqueeze(-2)
        B, k = x.shape[:2]
        cols = self._patches(x.reshape(B * k, *x.shape[2:]), 0.0)  # (B·k·s, C, K, L)
        per_sample = self.sel.shape[0] // B
        cols = cols.reshape(B, k, per_sample, *cols.shape[1:])
        idx = self.sel.reshape(B, 1, per_sample, self.sel.shape[1], 1, self.sel.shape[2])
        picked = cols.gather(4, idx.expand(B, k, per_sample, cols.shape[3], 1, cols.shape[5]))
        return self._external(picked.reshape(B, k, *self._dominates.shape[1:]))

    def adjoint(self, lam: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`gather` for ``Λ`` of shape ``(B, k, *out)``."""
        if self.one_d:
            lam = lam.unsqueeze(-2)
        a = self.attrs
        B, k = lam.shape[:2]
        channels, L = self.sel.shape[1], self.sel.shape[2]
        K = a["kernel"][0] * a["kernel"][1]
        per_sample = self.sel.shape[0] // B
        vals = lam.reshape(B, k, per_sample, channels, 1, L)
        idx = self.sel.reshape(B, 1, per_sample, channels, 1, L).expand(B, k, per_sample, channels, 1, L)
        cols = torch.zeros((B, k, per_sample, channels, K, L), dtype=lam.dtype, device=lam.device)
        cols = cols.scatter(4, idx, vals).reshape(B * k * per_sample, channels * K, L)
        h, w = self.in_shape[-2:]
        hp, wp = h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3]
        full = torch.nn.functional.fold(cols, (hp, wp), a["kernel"], a["dilations"], 0, a["strides"])
        full = full[..., self.pads[0]: self.pads[0] + h, self.pads[1]: self.pads[1] + w]
        return self._external(full.reshape(B, k, *self.in_shape))
