"""Padding rules of ONNX ConvTranspose."""

from __future__ import annotations


def conv_transpose_pads(attrs: dict, in_size: list[int], kernel: list[int], strides: list[int],
                        dilations: list[int], output_padding: list[int]) -> tuple[list[int], list[int]]:
    """Explicit ``(pads, output_padding)`` for ONNX ConvTranspose.

    Full output size: ``full = s(in−1) + op + (k−1)d + 1``. With ``output_shape`` (or
    ``auto_pad=SAME_*``, target ``in·s``) the total padding is ``full − target``, split
    with the odd unit at the start for SAME_UPPER and at the end otherwise, as
    onnxruntime does. A negative total becomes extra output padding for an explicit
    ``output_shape``; under ``auto_pad`` onnxruntime clamps it to zero, and so do we.
    """
    n = len(kernel)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    target = attrs.get("output_shape")
    if target is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [i * s for i, s in zip(in_size, strides)]
    if target is None:
        pads = [int(p) for p in attrs.get("pads", [0] * (2 * n))]
        if auto_pad == "VALID":
            pads = [0] * (2 * n)
        return pads, output_padding
    target = [int(t) for t in target][-n:]
    begin, end, extra = [], [], list(output_padding)
    for i in range(n):
        full = strides[i] * (in_size[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1
        total = full - target[i]
        if total < 0:
            if attrs.get("output_shape") is not None:
                extra[i] += -total
            total = 0
        if auto_pad == "SAME_UPPER":
            begin.append(total // 2)
            end.append(total - total // 2)
        else:
            begin.append(total - total // 2)
            end.append(total // 2)
    return begin + end, extra
