"""The windows of patch-form backward passes (:mod:`verifier.domains.patches`): their
:class:`Geometry` in the current node's grid, the rows as :class:`Rows` (values per
window, gathered from and scattered to dense grids), a convolution's effect on the
geometry (:func:`after_conv`) and the input box's bound on them
(:func:`concretize_windows`). Shapes are documented per function; ``B`` samples, ``G``
groups of rows sharing a location, ``M`` rows per group, window ``(C, K₀, K₁)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..linalg import centre_radius


class Geometry(NamedTuple):
    """The rows' windows in the current node's grid: size ``kernel``, origin of target
    location ``(i, j)`` at ``(i·stride₀ − padding₀, j·stride₁ − padding₁)``; ``grid`` is
    the current node's ``(H, W)``, ``target`` the target's."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    grid: tuple[int, int]
    target: tuple[int, int]

    def pads(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` zero padding of the grid that holds every window."""
        (k0, k1), (s0, s1), (p0, p1), (h, w), (th, tw) = self
        return p0, max(0, (th - 1) * s0 - p0 + k0 - h), p1, max(0, (tw - 1) * s1 - p1 + k1 - w)


def grown(size: tuple, stride: tuple, dilation: tuple, kernel: tuple) -> tuple[int, int]:
    """A window of ``size`` ``(K₀, K₁)`` on an op's output grid, seen on its input grid: a
    convolution's or pooling's (``stride``, ``dilation``, ``kernel`` per axis) receptive
    field ``K' = (K − 1)s + d(k − 1) + 1``."""
    return tuple((K - 1) * s + d * (k - 1) + 1 for K, s, d, k in zip(size, stride, dilation, kernel))


def grid_shape(shape: tuple) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of a node shape ``(1, …, 1, C, H, W)``, else ``None``."""
    shape = tuple(shape)
    if len(shape) < 3 or any(d != 1 for d in shape[:-3]):
        return None
    return shape[-3], shape[-2], shape[-1]


def conv_attrs(node: dict) -> tuple | None:
    """``(weight, bias, stride, padding, dilation, groups)`` of a 2-D convolution with
    symmetric pads, else ``None``."""
    if node["kind"] != "conv":
        return None
    weight, a = node["params"]["weight"], node["attrs"]
    pads = list(a["pads"])
    if weight.dim() != 4 or pads[:2] != pads[2:]:
        return None
    return weight, node["params"].get("bias"), tuple(a["strides"]), tuple(pads[:2]), tuple(a["dilations"]), a["group"]


class Rows:
    """The rows' windows at the current node, in groups that share a location:
    ``values`` ``(B, G, M, C, K₀, K₁)`` (``M`` rows per group), ``loc`` ``(B, G)`` the
    groups' locations in the target's grid. One row per group when the rows are chosen
    neurons; every channel and sign of a location when they are all neurons."""

    def __init__(self, values: torch.Tensor, loc: torch.Tensor, geometry: Geometry, clean: bool = True,
                 origins: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.values, self.loc, self.geometry, self.is_clean = values, loc, geometry, clean
        # explicit window origins (rows, columns) ``(B, G)`` in the current grid, where they are
        # no affine function of the location (after a transposed convolution whose stride does
        # not divide the windows' stride); ``None``: ``loc·stride − padding`` (the geometry)
        self.origins = origins
        self._index = None
        self._pads = None

    def like(self, values: torch.Tensor, clean: bool = True) -> "Rows":
        """Rows with new ``values`` on the same windows (location, geometry, origins)."""
        out = Rows(values, self.loc, self.geometry, clean, self.origins)
        out.every_location = self.every_location
        return out

    def window_origins(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows' origins (row, column) ``(B, G)`` in the current grid (may be negative)."""
        if self.origins is not None:
            return self.origins
        (s0, s1), (p0, p1), tw = self.geometry.stride, self.geometry.padding, self.geometry.target[1]
        return (self.loc // tw) * s0 - p0, (self.loc % tw) * s1 - p1

    def pads(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` zero padding of the grid that holds every window."""
        if self.origins is None:
            return self.geometry.pads()
        if self._pads is None:
            (k0, k1), (h, w) = self.geometry.kernel, self.geometry.grid
            oy, ox = self.origins
            if oy.numel() == 0:
                self._pads = (0, 0, 0, 0)
            else:
                self._pads = (max(0, -int(oy.min())), max(0, int(oy.max()) + k0 - h),
                              max(0, -int(ox.min())), max(0, int(ox.max()) + k1 - w))
        return self._pads

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, G, M)``."""
        return tuple(self.values.shape[:3])

    def clean(self) -> torch.Tensor:
        """The values with the entries outside the grid (on a convolution's zero padding,
        which multiply no variable) set to zero."""
        if not self.is_clean:
            (k0, k1), (s0, s1), (p0, p1), (h, w), (_, tw) = self.geometry
            if self.origins is not None or p0 > 0 or p1 > 0 or (self.geometry.target[0] - 1) * s0 + k0 > h \
                    or (tw - 1) * s1 + k1 > w:
                device = self.loc.device
                oy, ox = self.window_origins()
                ys = oy.unsqueeze(-1) + torch.arange(k0, device=device)
                xs = ox.unsqueeze(-1) + torch.arange(k1, device=device)
                inside = ((ys >= 0) & (ys < h)).unsqueeze(-1) & ((xs >= 0) & (xs < w)).unsqueeze(-2)
                self.values = self.values * inside[:, :, None, None]
            self.is_clean = True
        return self.values

    def index(self, channels: int) -> torch.Tensor:
        """Flat positions ``(B, G, C·K₀·K₁)`` of each group's window in the padded
        ``(C, H_p, W_p)`` grid."""
        if self._index is None:
            (k0, k1), (h, w) = self.geometry.kernel, self.geometry.grid
            top, bottom, left, right = self.pads()
            hp, wp = h + top + bottom, w + left + right
            device = self.loc.device
            oy, ox = self.window_origins()
            origin = (oy + top) * wp + (ox + left)
            offsets = (torch.arange(channels, device=device)[:, None, None] * (hp * wp)
                       + torch.arange(k0, device=device)[None, :, None] * wp
                       + torch.arange(k1, device=device)[None, None, :]).reshape(-1)
            self._index = origin.unsqueeze(-1) + offsets
        return self._index

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``(B, *E, C, H, W)`` (shared by the rows; ``E`` extra leading axes, e.g. a
        stack of lines) at each group's window: ``(B, G, 1, *E, C, K₀, K₁)``, zero outside
        the grid."""
        (k0, k1), (s0, s1), _, _, (th, tw) = self.geometry
        top, bottom, left, right = self.pads()
        padded = F.pad(t, (left, right, top, bottom)).contiguous()
        B, G = self.loc.shape
        lead, wp = padded.shape[1:-2], padded.shape[-1]
        if self.origins is not None or 2 * G < th * tw:
            # each chosen window's entries gathered (not every window of the grid copied first)
            C = t.shape[-3]
            extra = math.prod(lead[:-1])
            index = self.index(C).reshape(B, 1, -1).expand(B, extra, -1)
            out = padded.reshape(B, extra, -1).gather(2, index).reshape(B, extra, G, -1).transpose(1, 2)
            return out.reshape(B, G, 1, *lead, k0, k1)
        strides = padded.stride()
        # every window of the target's grid as a strided view, copied once; then each group takes its own
        windows = padded.as_strided((B, th, tw, *lead, k0, k1), (strides[0], s0 * wp, s1, *strides[1:-2], wp, 1))
        windows = windows.reshape(B * th * tw, -1)
        if G != th * tw or not self.every_location:
            rows = (torch.arange(B, device=t.device)[:, None] * (th * tw) + self.loc).reshape(-1)
            windows = windows.index_select(0, rows)
        return windows.reshape(B, G, 1, *lead, k0, k1)

    every_location = False  # the groups are the target's locations in order (no selection needed)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``(B, G, C, H, W)`` (one per row, ``M = 1``) at each row's window
        ``(B, G, 1, C, K₀, K₁)``."""
        top, bottom, left, right = self.pads()
        B, G, C = t.shape[:3]
        out = F.pad(t, (left, right, top, bottom)).reshape(B, G, -1).gather(2, self.index(C))
        return out.reshape(B, G, 1, C, *self.geometry.kernel)

    def dense(self, shape: tuple) -> torch.Tensor:
        """The windows scattered into dense coefficients ``(B, G·M, *shape)``."""
        C, H, W = grid_shape(shape)
        top, bottom, left, right = self.pads()
        B, G, M = self.shape
        flat = self.values.new_zeros((B, G, M, C * (H + top + bottom) * (W + left + right)))
        index = self.index(C).unsqueeze(2).expand(B, G, M, -1)
        flat = flat.scatter(3, index, self.values.reshape(B, G, M, -1))
        grid = flat.reshape(B, G * M, C, H + top + bottom, W + left + right)[..., top:top + H, left:left + W]
        return grid.reshape(B, G * M, *shape)


def after_conv(rows: Rows, values: torch.Tensor, stride: tuple, padding: tuple, in_shape: tuple) -> Rows:
    """The rows with ``values`` ``(B, G, M, C_i, k₀, k₁)`` on the input grid of a convolution
    (``stride``, ``padding``) whose output grid they were on."""
    g = rows.geometry
    _, H, W = grid_shape(in_shape)
    geometry = Geometry(tuple(values.shape[-2:]), (g.stride[0] * stride[0], g.stride[1] * stride[1]),
                        (g.padding[0] * stride[0] + padding[0], g.padding[1] * stride[1] + padding[1]), (H, W),
                        g.target)
    origins = None
    if rows.origins is not None:
        origins = (rows.origins[0] * stride[0] - padding[0], rows.origins[1] * stride[1] - padding[1])
    out = Rows(values, rows.loc, geometry, clean=False, origins=origins)
    out.every_location = rows.every_location
    return out


def _dot(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ v·w`` over the window ``(B, G, M)`` for ``v`` ``(B, G, M, …)`` and ``w``
    ``(B, G, 1, …)`` (one batched matrix-vector product)."""
    B, G, M = v.shape[:3]
    v = v.expand(B, G, M, *v.shape[3:])
    return torch.matmul(v.reshape(B * G, M, -1), w.reshape(B * G, -1, 1)).reshape(B, G, M)


def concretize_windows(rows: Rows, lower: torch.Tensor, upper: torch.Tensor, norm: float):
    """``(Λ·c, |Λ|·r)`` ``(B, G, M)`` over the input box, whose difference is ``min Λ·x``
    (with ``norm=2``: ``ε‖Λ‖₂`` for the ℓ2 ball of radius ``max r``)."""
    B, G, M = rows.shape
    C, H, W = grid_shape(lower.shape[1:])
    centre, radius = centre_radius(lower.reshape(B, C, H, W), upper.reshape(B, C, H, W))
    v = rows.values
    value = _dot(v, rows.gather(centre))
    if norm == float("inf"):
        return value, _dot(v.abs(), rows.gather(radius))
    eps = radius.reshape(B, -1).max(dim=1).values
    return value, eps[:, None, None] * v.reshape(B, G, M, -1).norm(p=2, dim=-1)
