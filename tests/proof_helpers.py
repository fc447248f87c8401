"""Small ReLU nets, specs and certificates for the proof-certificate tests."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from onnx_builders import GraphBuilder, save_model


def relu_net(directory: Path, seed: int, n_in: int, widths: list[int], n_out: int = 3,
             activation: str = "Relu") -> str:
    """A Gemm/``activation`` chain with random weights; returns the ONNX path."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder(rng, (1, n_in))
    h, prev = g.x, n_in
    for w in widths:
        h = g.op(activation, g.op("Gemm", h, g.weight(w, prev), g.rand(w, scale=0.1), transB=1))
        prev = w
    h = g.op("Gemm", h, g.weight(n_out, prev), g.rand(n_out, scale=0.1), transB=1)
    return str(save_model(g.model(h), directory))


def robustness_spec(path: Path, model_path: str, seed: int, n_in: int, eps: float, n_out: int = 3) -> str:
    """An L∞ robustness spec around a random point (label: the model's answer there),
    one disjunct per other class; returns the spec path."""
    import verifier

    x0 = np.random.default_rng(seed + 100).uniform(-1, 1, n_in)
    label = int(verifier.load(model_path, check=False)(torch.tensor(x0)[None]).detach().numpy()[0].argmax())
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (a, b) in enumerate(zip(x0 - eps, x0 + eps)):
        lines += [f"(assert (>= X_{i} {float(a)!r}))", f"(assert (<= X_{i} {float(b)!r}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label) + "))")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def certify(model_path: str, spec_path: str, proof_path: str, domain: str, dtype=torch.float64) -> tuple[str, dict]:
    """``verify`` with a recorder, then the certificate written; returns the verdict and the index."""
    import verifier
    from verifier.proof.record import ProofRecorder, recording
    from verifier.proof.writer import build_certificate, write_certificate
    from verifier.spec import read_vnnlib
    from verifier.verify import verify

    model, spec = verifier.load(model_path, check=False), read_vnnlib(spec_path)  # (fidelity: tested elsewhere)
    recorder = ProofRecorder()
    with recording(recorder):
        result = verify(model, spec, domain=domain, timeout=120, dtype=dtype)
    index, arrays = build_certificate(recorder, model_path, spec_path, len(spec.regions), result.status)
    write_certificate(proof_path, index, arrays)
    return result.status, index


def read_archive(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A certificate's index and arrays."""
    with zipfile.ZipFile(path) as zf:
        index = json.loads(zf.read("index.json"))
        arrays = {name[:-4]: np.load(io.BytesIO(zf.read(name))) for name in zf.namelist() if name.endswith(".npy")}
    return index, arrays


def write_archive(path: str, index: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write a (perturbed) certificate; returns the path."""
    from verifier.proof.writer import write_certificate

    write_certificate(path, index, arrays)
    return path


def conv_net(directory: Path, seed: int, channels: int = 2, side: int = 6, n_out: int = 3) -> str:
    """Conv (3×3, stride 2, padded) → ReLU → Flatten → Gemm → ReLU → Gemm on one
    ``side × side`` image; returns the ONNX path."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder(rng, (1, 1, side, side))
    h = g.op("Relu", g.op("Conv", g.x, g.weight(channels, 1, 3, 3), g.rand(channels, scale=0.1), strides=[2, 2],
                          pads=[1, 1, 1, 1]))
    h = g.op("Flatten", h)
    width = channels * ((side + 1) // 2) ** 2
    h = g.op("Relu", g.op("Gemm", h, g.weight(8, width), g.rand(8, scale=0.1), transB=1))
    h = g.op("Gemm", h, g.weight(n_out, 8), g.rand(n_out, scale=0.1), transB=1)
    return str(save_model(g.model(h), directory))


def pool_net(directory: Path, seed: int, channels: int = 3, side: int = 8, n_out: int = 3, kernel: int = 2,
             stride: int = 2, pad: int = 0) -> str:
    """Conv (3×3, padded) → ReLU → MaxPool (``kernel``, ``stride``, ``pad``) → Flatten →
    Gemm → ReLU → Gemm on one ``side × side`` image; returns the ONNX path."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder(rng, (1, 1, side, side))
    h = g.op("Relu", g.op("Conv", g.x, g.weight(channels, 1, 3, 3), g.rand(channels, scale=0.1), pads=[1, 1, 1, 1]))
    h = g.op("MaxPool", h, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)
    pooled = (side + 2 * pad - kernel) // stride + 1
    h = g.op("Flatten", h)
    h = g.op("Relu", g.op("Gemm", h, g.weight(10, channels * pooled ** 2), g.rand(10, scale=0.1), transB=1))
    h = g.op("Gemm", h, g.weight(n_out, 10), g.rand(n_out, scale=0.1), transB=1)
    return str(save_model(g.model(h), directory))
