"""Running the verifier past one machine (``pip install -e ".[cluster]"``).

* :mod:`.ray_vnncomp` — ``verifier vnncomp BENCH --ray [ADDRESS]``: the instances of a
  benchmark run as Ray actor tasks (each actor imports a model once and reuses it).
* ``verifier certify ... --ray`` (test points in batches on Ray actors) is the training plugin's
  :mod:`verifier_plugins.training.ray_certify`, built on :mod:`.ray_session`.
* :mod:`.ray_bab` — ``verifier verify ... --ray``: branch-and-bound of one property with its
  frontier sharded over Ray workers (the workers, the board, the driver loop), for input
  splitting (:mod:`.ray_input_split`) and ReLU splitting (:mod:`.ray_relu_split`).

Nothing here imports ``ray`` at import time: :func:`.ray_session.require_ray` does, only
when ``--ray`` is given, and refuses with one ``error:`` line where the extra is missing.
Training across processes uses ``torch.distributed`` instead
(:mod:`verifier_plugins.training.distributed`). How to start a cluster: ``docs/scale.md``.
"""
