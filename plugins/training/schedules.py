"""Schedules of ε, κ (clean-loss weight), β (CROWN weight) and the learning rate.

All are functions of the global batch counter ``step`` (per-batch ramps) and of
``steps_per_epoch``. With ``W = warmup·S`` and ``R = ramp·S`` steps (``S`` per epoch):

* ``progress(step) = clamp((step − W) / R, 0, 1)`` (0 during warm-up; 1 after the ramp);
  ``shape="smooth"`` passes it through ``3t² − 2t³`` (zero slope at both ends);
* ``ε(step) = 0`` during warm-up, else ``ε_train·(f₀ + (1 − f₀)·progress)`` with
  ``f₀ = eps_start_fraction`` (seed 003 starts at half the target);
* ``κ(step) = κ₀ + (κ₁ − κ₀)·progress``, ``β(step) = β₀ + (β₁ − β₀)·progress``;
* learning rate ``lr·γ^n``, ``n`` the number of whole ``decay_every`` epochs completed
  since ``decay_start`` (epochs; default: the end of the ramp).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Schedule:
    eps: float
    warmup: float = 0.0  # epochs at ε = 0
    ramp: float = 0.0  # epochs of the ε ramp (0: full ε right after warm-up)
    shape: str = "linear"  # or "smooth"
    eps_start_fraction: float = 0.0
    kappa: tuple[float, float] = (1.0, 0.5)
    beta: tuple[float, float] = (1.0, 0.0)
    lr: float = 1e-3
    decay_every: float | None = None  # epochs
    decay_factor: float = 0.5
    decay_start: float | None = None  # epochs; default warmup + ramp

    def progress(self, step: int, steps_per_epoch: int) -> float:
        w, r = self.warmup * steps_per_epoch, self.ramp * steps_per_epoch
        if step < w:
            return 0.0
        t = 1.0 if r <= 0 else min(1.0, (step - w) / r)
        return t * t * (3 - 2 * t) if self.shape == "smooth" else t

    def epsilon(self, step: int, steps_per_epoch: int) -> float:
        if step < self.warmup * steps_per_epoch:
            return 0.0
        f0 = self.eps_start_fraction
        return self.eps * (f0 + (1 - f0) * self.progress(step, steps_per_epoch))

    def kappa_at(self, step: int, steps_per_epoch: int) -> float:
        k0, k1 = self.kappa
        return k0 + (k1 - k0) * self.progress(step, steps_per_epoch)

    def beta_at(self, step: int, steps_per_epoch: int) -> float:
        b0, b1 = self.beta
        return b0 + (b1 - b0) * self.progress(step, steps_per_epoch)

    def lr_at(self, epoch: int) -> float:
        if not self.decay_every:
            return self.lr
        start = self.warmup + self.ramp if self.decay_start is None else self.decay_start
        if epoch < start:
            return self.lr
        return self.lr * self.decay_factor ** int((epoch - start) // self.decay_every)

    def to_dict(self) -> dict:
        return asdict(self)


# Per-method defaults from the seed papers, as fractions of the paper's epoch count so
# that short runs keep the same shape (e.g. CROWN-IBP MNIST: 100 epochs, 1 warm-up,
# 60-epoch ramp, lr ×0.5 every 10 epochs after the ramp, Adam 5e-4, batch 256).
METHOD_DEFAULTS: dict[str, dict] = {
    "standard": dict(lr=1e-3, batch=50, warmup=0.0, ramp=0.0, kappa=(1.0, 1.0)),
    "pgd": dict(lr=1e-3, batch=50, warmup=0.0, ramp=0.0, kappa=(0.0, 0.0)),
    "ibp": dict(lr=5e-4, batch=256, warmup=0.01, ramp=0.6, kappa=(1.0, 0.5), decay_every=0.1),  # Gowal et al.
    "crown-ibp": dict(lr=5e-4, batch=256, warmup=0.01, ramp=0.6, kappa=(1.0, 0.0), beta=(1.0, 0.0),
                      decay_every=0.1),  # seed 004, App. A
    "dual-lp": dict(lr=1e-3, batch=50, warmup=0.0, ramp=0.5, eps_start_fraction=0.5, kappa=(0.0, 0.0)),  # seed 003
    "colt": dict(lr=1e-3, batch=50, warmup=0.0, ramp=0.0, kappa=(1.0, 0.0)),  # κ: mixing of the previous stage
    "double-margin": dict(lr=1e-3, batch=50, warmup=0.1, ramp=0.5, kappa=(1.0, 0.5)),  # λ = 1 − κ: 0 → 0.5
    "landscape": dict(lr=5e-4, batch=256, warmup=0.01, ramp=0.6, kappa=(1.0, 0.0), beta=(1.0, 1.0),
                      decay_every=0.1),  # seed 001: CROWN-IBP schedule, the model bound kept
}


def default_schedule(method: str, eps: float, epochs: int, **overrides) -> tuple[Schedule, int]:
    """The method's schedule scaled to ``epochs`` and its batch size; ``overrides`` (not
    ``None``) replace fields (``warmup``/``ramp``/``decay_every`` in epochs)."""
    if method not in METHOD_DEFAULTS:
        raise ValueError(f"unknown method '{method}'")
    d = dict(METHOD_DEFAULTS[method])
    batch = d.pop("batch")
    for key in ("warmup", "ramp", "decay_every"):
        if key in d and d[key] is not None:
            d[key] = d[key] * epochs
    if method in ("ibp", "crown-ibp", "landscape") and epochs >= 2:
        d["warmup"] = max(d["warmup"], 1.0) if epochs >= 10 else d["warmup"]
    for key, value in overrides.items():
        if value is not None:
            if key == "batch":
                batch = value
            else:
                d[key] = value
    return Schedule(eps=eps, **d), batch
