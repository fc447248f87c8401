"""``--ray`` alone starts a local Ray instance even where ``RAY_ADDRESS`` names a cluster.

``ray.init()`` without an address reads ``RAY_ADDRESS`` (and would then refuse ``num_cpus``:
"When connecting to an existing cluster, num_cpus and num_gpus must not be provided"), so a
shell that once exported it made ``verify --ray`` fail with an error telling the user to
give ``--ray`` alone, which they had done. The local start runs in a child process so that
no Ray session of another test module is reused or shut down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")

CHILD = textwrap.dedent("""
    from verifier.cluster.ray_session import connect
    ray = connect("local", num_cpus=1)
    print("connected", ray.is_initialized(), int(ray.cluster_resources().get("CPU", 0)))
    ray.shutdown()
""")


def test_local_start_ignores_ray_address_of_the_environment():
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}  # nothing listens on port 1
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "connected True 1" in done.stdout, (done.stdout, done.stderr[-2000:])
