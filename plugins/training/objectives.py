"""Training objectives (``--method``); ARCHITECTURE §4 has the maths.

Every robust objective takes its bound from the verifier's domains through
:meth:`LiveModel.bounds` (Box = IBP, ``crown-ibp``, ``dual-lp``, DeepZ for COLT), never
from a copy of their maths. ``lb`` below is the lower bound of the margins
``m_j = f_y − f_j`` (row ``j = y`` is 0), and ``CE(−lb, y)`` the robust cross-entropy.

An objective is called once per batch with a :class:`Context` (ε, κ, β, step, RNG) and
returns ``(loss, stats)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx
import torch
import torch.nn.functional as F

from verifier.domains.box import BoxDomain
from verifier.domains.crown import CrownIBPDomain
from verifier.domains.dual_lp import DualLPDomain
from verifier.domains.deepz import DeepZDomain, latent
from verifier.engine import propagate
from verifier.ir.graph import predecessors_by_slot, topological_order
from verifier.linalg import crossing

from .live import LiveModel, evaluate_from, ir_prefix, margin_matrix
from .margins import MarginDomain


@dataclass
class Context:
    eps: float
    kappa: float = 1.0
    beta: float = 0.0
    step: int = 0
    epoch: int = 0
    epochs: int = 1
    steps_per_epoch: int = 1
    generator: torch.Generator | None = None
    clip: tuple[float, float] = (0.0, 1.0)
    stats: dict = field(default_factory=dict)


def box_around(x: torch.Tensor, eps: float, clip=(0.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``[x − ε, x + ε]`` clipped to the valid input range."""
    return (x - eps).clamp(*clip), (x + eps).clamp(*clip)


def robust_ce(lb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the worst-case logits ``−lb`` (an upper bound on the worst-case CE)."""
    return F.cross_entropy(-lb, y)


def pgd_attack(forward, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10, step_size: float | None = None,
               clip=(0.0, 1.0), generator: torch.Generator | None = None, restarts: int = 1) -> torch.Tensor:
    """Projected sign-gradient ascent on the CE loss inside the clipped ε-box (Madry et al.),
    from a uniform random start; the highest-loss point of the restarts."""
    if eps <= 0 or steps <= 0:
        return x.detach()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    lo, hi = box_around(x.detach(), eps, clip)
    best, best_loss = x.detach().clone(), torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
    for _ in range(restarts):
        noise = torch.rand(x.shape, generator=generator).to(x)
        adv = (lo + (hi - lo) * noise).detach()
        for _ in range(steps):
            adv.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(forward(adv), y)
                (grad,) = torch.autograd.grad(loss, adv)
            adv = torch.max(torch.min(adv.detach() + step_size * grad.sign(), hi), lo)
        with torch.no_grad():
            per = F.cross_entropy(forward(adv), y, reduction="none")
            better = per > best_loss
            best[better], best_loss[better] = adv[better], per[better].to(x.dtype)
    return best.detach()


class Objective:
    """Base: ``loss(x, y, ctx) -> (loss, stats)``; ``prepare_epoch(epoch)`` (freezing)."""

    name = "abstract"

    def __init__(self, live: LiveModel, classes: int = 10, **options):
        self.live = live
        self.classes = classes
        self.options = options

    @property
    def module(self):
        return self.live.module

    def prepare_epoch(self, ctx: Context) -> None:
        pass

    def clean(self, x, y):
        logits = self.module(x)
        return F.cross_entropy(logits, y), logits

    def bound(self, domain, x, y, eps, clip, lower_only=True):
        lo, hi = box_around(x, eps, clip)
        lb, _ = self.live.bounds(domain, lo, hi, margin_matrix(y, self.classes).to(x), lower_only=lower_only)
        return lb

    def loss(self, x, y, ctx: Context):
        raise NotImplementedError


class Standard(Objective):
    name = "standard"

    def loss(self, x, y, ctx):
        loss, _ = self.clean(x, y)
        return loss, {}


class PGD(Objective):
    """Adversarial training: CE at a PGD point (``κ`` mixes in the clean loss)."""

    name = "pgd"

    def loss(self, x, y, ctx):
        steps = int(self.options.get("pgd_steps", 10))
        adv = pgd_attack(self.module, x, y, ctx.eps, steps, clip=ctx.clip, generator=ctx.generator)
        loss = F.cross_entropy(self.module(adv), y)
        if ctx.kappa > 0:
            loss = ctx.kappa * self.clean(x, y)[0] + (1 - ctx.kappa) * loss
        return loss, {}


class IBP(Objective):
    """Gowal et al.: ``κ·CE(f(x)) + (1−κ)·CE(−m_IBP)`` with the Box domain."""

    name = "ibp"

    def robust_lb(self, x, y, ctx):
        return self.bound(BoxDomain(), x, y, ctx.eps, ctx.clip)

    def loss(self, x, y, ctx):
        clean, _ = self.clean(x, y)
        if ctx.eps <= 0 or ctx.kappa >= 1:
            return clean, {}
        robust = robust_ce(self.robust_lb(x, y, ctx), y)
        return ctx.kappa * clean + (1 - ctx.kappa) * robust, {"robust_loss": float(robust.detach())}


class CrownIBP(IBP):
    """Seed 004: ``CE(−(β·m_CROWN-IBP + (1−β)·m_IBP))``, the CROWN weight β 1 → 0 with the ramp."""

    name = "crown-ibp"

    def robust_lb(self, x, y, ctx):
        lb = self.bound(BoxDomain(), x, y, ctx.eps, ctx.clip)
        if ctx.beta > 0:
            lb_c = self.bound(CrownIBPDomain(), x, y, ctx.eps, ctx.clip)
            lb = ctx.beta * lb_c + (1 - ctx.beta) * lb
        return lb


class DualLP(IBP):
    """Seed 003: ``CE(−J)`` with the Wong–Kolter dual bound; ``projections=K`` uses the
    Cauchy-projection estimate (training only)."""

    name = "dual-lp"

    def robust_lb(self, x, y, ctx):
        k = self.options.get("projections")
        domain = DualLPDomain(projections=k, seed=None) if k else DualLPDomain()
        return self.bound(domain, x, y, ctx.eps, ctx.clip)


class Landscape(IBP):
    """Seed 001: CROWN-IBP whose crossing-ReLU lower slopes come from one signed projected
    gradient step on the loss from a uniform random start (so each is 0 or 1), mixed with
    IBP by β. Diagnostics (every ``diagnose_every`` steps): loss variation along the
    gradient, cosine between consecutive gradients, unstable ReLUs, tightness."""

    name = "landscape"

    def __init__(self, live, classes=10, **options):
        super().__init__(live, classes, **options)
        self._previous_grad = None

    def robust_lb(self, x, y, ctx):
        domain = CrownIBPDomain()
        graph = self.live.refresh()
        lo, hi = box_around(x, ctx.eps, ctx.clip)
        lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
        C = margin_matrix(y, self.classes).to(x)
        bounds = domain.intermediate_bounds(graph, lo, hi)
        relus = [n for n in topological_order(graph) if graph.nodes[n]["kind"] == "relu"]
        alpha = {}
        for n in relus:
            (p,) = predecessors_by_slot(graph, n)
            l = bounds[p][0]
            alpha[n] = torch.rand((l.shape[0], 1, *l.shape[1:]), generator=ctx.generator).to(l).requires_grad_(True)
        start = domain.lower_bound(graph, lo, hi, C, alpha, {k: (a.detach(), b.detach()) for k, (a, b) in bounds.items()})
        grads = torch.autograd.grad(robust_ce(start, y), list(alpha.values()))
        step = float(self.options.get("alpha_step", 1.0))
        chosen = {n: (a.detach() - step * g.sign()).clamp(0, 1) for (n, a), g in zip(alpha.items(), grads)}
        lb_model = domain.lower_bound(graph, lo, hi, C, chosen, bounds)
        unstable = sum(int(crossing(*b).sum()) for b in bounds.values()) / x.shape[0]
        ctx.stats["unstable_relus"] = unstable
        ctx.stats["tightness"] = float((-lb_model.detach()).sum(1).mean())  # seed 001: Σ_m s_m, batch mean
        if ctx.beta >= 1:
            return lb_model
        lb_ibp = self.bound(BoxDomain(), x, y, ctx.eps, ctx.clip)
        return ctx.beta * lb_model + (1 - ctx.beta) * lb_ibp

    def loss(self, x, y, ctx):
        loss, stats = super().loss(x, y, ctx)
        stats.update(ctx.stats)
        every = int(self.options.get("diagnose_every", 0))
        if every and ctx.step % every == 0 and loss.requires_grad:
            stats.update(self.diagnostics(loss))
        return loss, stats

    def diagnostics(self, loss) -> dict:
        """Gradient norm and cosine with the previous diagnosis; the robust loss (an upper
        bound on the worst-case loss). Tightness ``Σ_m s_m`` (``s = −lb``) is logged by
        :meth:`robust_lb`; the loss variation along the gradient is :func:`loss_variation`."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
        out = {"robust_loss": float(loss.detach()), "grad_norm": float(flat.norm())}
        if self._previous_grad is not None and self._previous_grad.shape == flat.shape:
            out["grad_cosine"] = float(F.cosine_similarity(flat, self._previous_grad, dim=0))
        self._previous_grad = flat.detach()
        return out


def loss_variation(objective: Objective, x, y, ctx: Context, steps=(0.25, 0.5, 1.0), lr: float = 1e-3,
                   seed: int = 0) -> float:
    """Seed 001's smoothness measure along the gradient: ``max_t |L(θ − t·lr·ĝ) − L(θ)|`` with
    ``ĝ = g/‖g‖`` the normalised gradient of the loss at ``θ``; parameters are restored.
    The loss is evaluated with autograd on (the landscape method differentiates in its
    slopes) and with the same random draws at every ``θ`` (a copy of ``ctx`` with a generator
    seeded ``seed``; the caller's ``ctx`` is untouched), so ``L`` is a function of ``θ`` alone."""
    params = [p for p in objective.module.parameters() if p.requires_grad]

    def evaluate():
        local = replace(ctx, generator=torch.Generator().manual_seed(seed), stats={})
        with torch.enable_grad():
            return objective.loss(x, y, local)[0]

    loss = evaluate()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)) + 1e-12
    saved = [p.detach().clone() for p in params]
    worst = 0.0
    try:
        for t in steps:
            with torch.no_grad():
                for p, g, s in zip(params, grads, saved):
                    if g is not None:
                        p.copy_(s - t * lr * g / norm)
            worst = max(worst, abs(float(evaluate().detach()) - float(loss.detach())))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return worst


class DoubleMargin(Objective):
    """Seed 002: margins ``s`` (half-width around the clean activations) and ``v``
    (finite-difference curvature), propagated with ``|W|`` through the IR's own linear
    maps (``LINEAR_PART`` with ``absolute``; :class:`~.margins.MarginDomain`): at an activation σ,
    ``s' = ½(σ(z+s) − σ(z−s))``, ``v' = ½(σ(z+v) − σ(z−v)) + ½|σ(z+s+v) + σ(z−s−v) − 2σ(z)|``;
    ``s₀ = ε`` (clipped half-width), ``v₀ = 0``. Loss ``λ·CE(z ± (s+v)) + (1−λ)·CE(z)`` with the
    label logit lowered and the others raised, ``λ = 1 − κ``. Not a sound bound."""

    name = "double-margin"

    def margins(self, x, eps, clip):
        """``(z, s, v)`` of the output, each ``(B, n)``, from :class:`MarginDomain` on the engine."""
        lo, hi = box_around(x, eps, clip)
        out = propagate(self.live.refresh(), MarginDomain(), lo.unsqueeze(1), hi.unsqueeze(1))
        B = x.shape[0]
        return out.z.reshape(B, -1), out.s.reshape(B, -1), out.v.reshape(B, -1)

    def loss(self, x, y, ctx):
        z, s, v = self.margins(x, ctx.eps, ctx.clip)
        sign = 1 - 2 * F.one_hot(y, z.shape[1]).to(z)
        worst = z + sign * (s + v)
        lam = 1 - ctx.kappa
        loss = lam * F.cross_entropy(worst, y) + (1 - lam) * F.cross_entropy(z, y)
        return loss, {}


class COLT(Objective):
    """Seed 000: staged latent adversarial training.

    Stage 0 is PGD training. Stage ``l ≥ 1`` (``l``-th ReLU output) propagates the DeepZ
    zonotope ``a + G e`` of the ε-box to that layer (with the verifier's DeepZ domain),
    runs ``latent_steps`` projected sign-gradient steps in e-space (``e ∈ [−1, 1]^m``,
    from a uniform start) for a latent adversarial point, and trains only the layers
    above ``l`` on it; the layers up to ``l`` are frozen. During the first
    ``mix`` fraction of a stage, ``κ`` (1 → 0) mixes in the previous stage's loss.
    Regularisers: ``l1·Σ|W|`` (trainable weights) and ``stability·Σ max(0,−l)·max(0,u)``
    over the IBP pre-activation bounds of the ReLU layer just above the latent one (the
    paper's region ``C_{l+1}``; batch mean). Summed over every trainable ReLU instead,
    the deep layers' loose IBP bounds dominate the loss at initialisation and training
    collapses to a constant classifier."""

    name = "colt"

    def __init__(self, live, classes=10, **options):
        super().__init__(live, classes, **options)
        graph = live.graph
        self.latents = [n for n in topological_order(graph) if graph.nodes[n]["kind"] == "relu"]
        stages = options.get("stages")
        self.stages = len(self.latents) + 1 if stages is None else min(int(stages), len(self.latents) + 1)
        self.stage = 0

    def stage_of(self, epoch: int, epochs: int) -> int:
        return min(self.stages - 1, epoch * self.stages // max(1, epochs))

    def frozen_nodes(self, stage: int) -> set:
        if stage == 0:
            return set()
        node = self.latents[stage - 1]
        return nx.ancestors(self.live.graph, node) | {node}

    def prepare_epoch(self, ctx):
        self.stage = self.stage_of(ctx.epoch, ctx.epochs)
        frozen = self.frozen_nodes(self.stage)
        for b in self.live.bindings:
            b.param.requires_grad_(b.node not in frozen)

    def trainable_parameters(self) -> list[str]:
        frozen = self.frozen_nodes(self.stage)
        return sorted({b.param_name for b in self.live.bindings if b.node not in frozen})

    def latent_point(self, stage, x, y, ctx):
        graph = self.live.refresh()
        if stage == 0:
            steps = int(self.options.get("pgd_steps", 10))
            return None, pgd_attack(self.module, x, y, ctx.eps, steps, clip=ctx.clip, generator=ctx.generator)
        node = self.latents[stage - 1]
        lo, hi = box_around(x, ctx.eps, ctx.clip)
        with torch.no_grad():
            z = propagate(ir_prefix(graph, node), DeepZDomain(), lo.unsqueeze(1), hi.unsqueeze(1))
        e = (2 * torch.rand((z.centre.shape[0], z.num_symbols), generator=ctx.generator) - 1).to(x)
        steps, size = int(self.options.get("latent_steps", 10)), float(self.options.get("latent_step_size", 0.25))
        for _ in range(steps):
            e.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(evaluate_from(graph, node, latent(z, e)), y)
                (g,) = torch.autograd.grad(loss, e)
            e = (e.detach() + size * g.sign()).clamp(-1, 1)
        return node, latent(z, e).detach()

    def stage_loss(self, stage, x, y, ctx):
        node, point = self.latent_point(stage, x, y, ctx)
        if node is None:
            return F.cross_entropy(self.module(point), y)
        return F.cross_entropy(evaluate_from(self.live.refresh(), node, point), y)

    def loss(self, x, y, ctx):
        stage = self.stage
        if ctx.eps <= 0:
            loss = self.clean(x, y)[0]
        else:
            loss = self.stage_loss(stage, x, y, ctx)
            mix = float(self.options.get("mix", 0.5))
            if stage > 0 and mix > 0:
                per_stage = ctx.epochs * ctx.steps_per_epoch / self.stages
                into = ctx.step - int(stage * ctx.epochs / self.stages) * ctx.steps_per_epoch
                kappa = max(0.0, 1.0 - into / max(1.0, mix * per_stage))
                if kappa > 0:
                    loss = kappa * self.stage_loss(stage - 1, x, y, ctx) + (1 - kappa) * loss
        l1, stab = float(self.options.get("l1", 1e-5)), float(self.options.get("stability", 1e-4))
        frozen = self.frozen_nodes(stage)
        if l1 > 0:
            loss = loss + l1 * sum(b.param.abs().sum() for b in self.live.bindings
                                   if b.node not in frozen and b.name == "weight")
        if stab > 0 and ctx.eps > 0 and stage < len(self.latents):
            # the region C_{l+1} just above the latent layer (seed 000, App. D), IBP bounds
            graph = self.live.refresh()
            (p,) = predecessors_by_slot(graph, self.latents[stage])
            lo, hi = box_around(x, ctx.eps, ctx.clip)
            l, u = propagate(ir_prefix(graph, p), BoxDomain(), lo.unsqueeze(1), hi.unsqueeze(1))
            reg = ((-l).clamp(min=0) * u.clamp(min=0)).reshape(x.shape[0], -1).sum(1).mean()
            loss = loss + stab * reg
        return loss, {"stage": stage}


OBJECTIVES = {cls.name: cls for cls in (Standard, PGD, IBP, CrownIBP, DualLP, COLT, DoubleMargin, Landscape)}


def make_objective(method: str, live: LiveModel, classes: int = 10, **options) -> Objective:
    if method not in OBJECTIVES:
        raise ValueError(f"unknown method '{method}'; choose from {', '.join(OBJECTIVES)}")
    return OBJECTIVES[method](live, classes, **options)
