"""A third-party domain package (tests/plugin_example) installed during the tests is found
through the ``verifier.domains`` entry point, selectable by name, and sound."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import verifier
import verifier.domains as domains
from test_domain_ordering import relu_mlp

EXAMPLE = Path(__file__).parent / "plugin_example"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    target = tmp_path_factory.mktemp("plugin_site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(EXAMPLE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    domains._ENTRY_POINTS_LOADED = False
    yield target
    sys.path.remove(str(target))
    domains.DOMAINS.pop("symint", None)
    domains._ENTRY_POINTS_LOADED = False


def test_entry_point_registers_the_domain(plugin_path):
    found = domains.available_domains()
    assert "symint" in found and found["symint"].__module__ == "verifier_symint_example"


def test_plugin_bounds_are_sound_and_between_box_and_exact(plugin_path, tmp_path):
    rng = np.random.default_rng(3)
    relu_mlp(tmp_path / "m.onnx", rng, (4, 16, 16, 3))
    model = verifier.load(tmp_path / "m.onnx")
    centre = torch.as_tensor(rng.uniform(-1, 1, size=(2, 4)))
    lo, hi = centre - 0.3, centre + 0.3
    lb, ub = verifier.compute_bounds(model, lo, hi, domain="symint")
    box_lb, box_ub = verifier.compute_bounds(model, lo, hi, domain="box")
    x = lo + (hi - lo) * torch.rand(5000, 2, 4, dtype=torch.float64)
    y = model(x.reshape(-1, 4)).reshape(5000, 2, 3)
    assert bool((y >= lb - 1e-9).all() and (y <= ub + 1e-9).all())
    assert bool(((ub - lb) <= (box_ub - box_lb) + 1e-9).all())  # symbolic intervals refine IBP on MLPs


def test_cli_selects_the_plugin(plugin_path, tmp_path):
    rng = np.random.default_rng(4)
    relu_mlp(tmp_path / "m.onnx", rng, (3, 8, 2))
    spec = tmp_path / "p.vnnlib"
    lines = [f"(declare-const X_{i} Real)" for i in range(3)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (<= X_{i} 0.5))\n(assert (>= X_{i} -0.5))" for i in range(3)] + ["(assert (>= Y_0 Y_1))"]
    spec.write_text("\n".join(lines))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]))
    listed = subprocess.run([sys.executable, "-m", "verifier.cli", "domains"], capture_output=True, text=True, env=env)
    assert "symint" in listed.stdout
    out = subprocess.run([sys.executable, "-m", "verifier.cli", "bounds", str(tmp_path / "m.onnx"), str(spec),
                          "--domain", "symint", "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["lower"][0]) == 2 and all(a <= b for a, b in zip(data["lower"][0], data["upper"][0]))
