"""Index and reduction ops with constant indices (Gather, GatherElements, GatherND, Split, Expand, Tile, Where, ScatterND, Resize/Upsample, DepthToSpace/SpaceToDepth, ReduceSum/ReduceMean): each lowered to affine IR nodes."""

from __future__ import annotations

from .onnx_converters import converter  # noqa: F401
