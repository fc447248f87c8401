"""The training loop: schedules, per-epoch evaluation, checkpoints, resume, export.

``train(...)`` writes into ``out``: ``log.jsonl`` (one JSON object per epoch),
``checkpoint.pt`` (after every epoch, written atomically; ``resume=True`` continues from
it, so a killed run loses at most the epoch in progress), ``model.onnx`` (the trained
model with its certificate in ``metadata_props``) and ``result.json``.

Runs are deterministic given ``seed``: the batch order and every random start of an
epoch come from generators seeded by ``(seed, epoch)``, so a resumed run reproduces the
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import onnx
import torch
import torch.nn as nn

import verifier
from verifier.errors import VerifierInputError

from .architectures import build_model
from .certify import certificate_metadata, certify_model, verified_mask, write_metadata
from .data import Data, load_data
from .live import LiveModel, export_onnx, margin_matrix
from .objectives import Context, box_around, make_objective, pgd_attack
from .schedules import default_schedule

CHECKPOINT = "checkpoint.pt"


def load_onnx_module(path: str) -> nn.Module:
    """ONNX → torch with onnx2torch (``Constant`` nodes become initializers first, since
    onnx2torch lacks converters for recent Constant opsets)."""
    import onnx2torch

    proto = onnx.load(path)
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            tensor.name = node.output[0]
            proto.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    try:
        return onnx2torch.convert(proto)
    except NotImplementedError:
        from onnx import version_converter

        return onnx2torch.convert(version_converter.convert_version(proto, 17))


def make_module(model, input_shape, classes, seed=0) -> tuple[nn.Module, str]:
    """A torch module from an architecture name, an ONNX path or a module; and its description."""
    if isinstance(model, nn.Module):
        return model, type(model).__name__
    if isinstance(model, str) and model.endswith(".onnx"):
        if not os.path.exists(model):
            raise VerifierInputError(f"model file '{model}' not found")
        torch.manual_seed(seed)
        return load_onnx_module(model), model
    return build_model(str(model), input_shape, classes, seed=seed), str(model)


def accuracy_report(live: LiveModel, x, y, eps, domains=("box", "crown"), batch=100, pgd_steps=10, seed=0,
                    clip=(0.0, 1.0)) -> dict:
    """Clean, PGD and per-domain verified accuracy of the live model (training-time bounds)."""
    module = live.module
    was = module.training
    module.eval()
    gen = torch.Generator().manual_seed(seed)
    counts = {"clean": 0, "pgd": 0, **{f"verified_{d}": 0 for d in domains}}
    for start in range(0, len(y), batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        with torch.no_grad():
            counts["clean"] += int((module(xb).argmax(1) == yb).sum())
        adv = pgd_attack(module, xb, yb, eps, pgd_steps, clip=clip, generator=gen)
        with torch.no_grad():
            counts["pgd"] += int((module(adv).argmax(1) == yb).sum())
            lo, hi = box_around(xb, eps, clip)
            C = margin_matrix(yb, int(live.forward_ir(xb[:1]).shape[1])).to(xb)
            for d in domains:
                lb, _ = live.bounds(d, lo, hi, C, lower_only=True)
                counts[f"verified_{d}"] += int(verified_mask(lb, yb).sum())
    module.train(was)
    return {k: v / max(1, len(y)) for k, v in counts.items()}


def _atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(model="wong-kolter", method="crown-ibp", eps=0.1, epochs=10, out="runs/train", *, data="mnist",
          eps_test=None, device="cpu", resume=False, batch_size=None, lr=None, train_count=None, test_count=1000,
          eval_count=200, seed=0, warmup=None, ramp=None, ramp_shape="linear", kappa=None, beta=None,
          decay_every=None, decay_factor=None, eps_start_fraction=None, projections=None, certify_domain="crown",
          eval_domains=("box", "crown"), pgd_steps=10, progress=True, method_options=None, max_steps=None,
          export=True) -> dict:
    """Train ``model`` (architecture name, ONNX path or torch module) with ``method``; see
    the module docstring for what is written to ``out``. ``max_steps`` stops after that
    many batches in total (for tests of interruption); returns a summary dict."""
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    dataset: Data = data if isinstance(data, Data) else load_data(data, train_count, test_count)
    eps_test = eps if eps_test is None else eps_test
    module, model_name = make_module(model, dataset.input_shape, dataset.classes, seed)
    module = module.to(device)
    overrides = dict(warmup=warmup, ramp=ramp, shape=ramp_shape if ramp_shape != "linear" else None, kappa=kappa,
                     beta=beta, decay_every=decay_every, decay_factor=decay_factor, lr=lr, batch=batch_size,
                     eps_start_fraction=eps_start_fraction)
    schedule, batch = default_schedule(method, eps, epochs, **overrides)
    args = {"model": model_name, "method": method, "eps": eps, "eps_test": eps_test, "epochs": epochs,
            "data": dataset.name, "train_count": len(dataset.y_train), "test_count": len(dataset.y_test),
            "eval_count": eval_count, "batch_size": batch, "seed": seed, "schedule": schedule.to_dict(),
            "projections": projections, "certify_domain": certify_domain, "eval_domains": list(eval_domains),
            "pgd_steps": pgd_steps, "method_options": method_options or {}, "device": str(device)}
    options = dict(method_options or {})
    if projections:
        options["projections"] = projections
    options.setdefault("pgd_steps", pgd_steps)
    live = LiveModel(module, dataset.input_shape)
    objective = make_objective(method, live, dataset.classes, **options)
    optimizer = torch.optim.Adam(module.parameters(), lr=schedule.lr)
    x_train, y_train = dataset.x_train.to(device), dataset.y_train.to(device)
    x_eval, y_eval = dataset.x_test[:eval_count].to(device), dataset.y_test[:eval_count].to(device)
    steps_per_epoch = max(1, len(y_train) // batch)
    log_path, ckpt_path = os.path.join(out, "log.jsonl"), os.path.join(out, CHECKPOINT)
    start_epoch, step, log = 0, 0, []
    if resume and os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, log = state["epoch"], state["step"], state["log"]
    with open(log_path, "w") as fh:  # the log is rewritten from the checkpoint: no lost or duplicated lines
        for entry in log:
            fh.write(json.dumps(entry) + "\n")
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    interrupted = False
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(epoch)
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        ctx = Context(eps=0.0, epoch=epoch, epochs=epochs, steps_per_epoch=steps_per_epoch, generator=gen,
                      clip=dataset.clip)
        objective.prepare_epoch(ctx)
        perm = torch.randperm(len(y_train), generator=gen).to(device)
        module.train()
        bar = range(steps_per_epoch)
        if tqdm is not None and progress:
            bar = tqdm(bar, desc=f"epoch {epoch + 1}/{epochs} [{method}]", leave=False)
        total_loss = 0.0
        for i in bar:
            if max_steps is not None and step >= max_steps:
                interrupted = True
                break
            idx = perm[i * batch:(i + 1) * batch]
            ctx.eps = schedule.epsilon(step, steps_per_epoch)
            ctx.kappa = schedule.kappa_at(step, steps_per_epoch)
            ctx.beta = schedule.beta_at(step, steps_per_epoch)
            ctx.step, ctx.stats = step, {}
            loss, _ = objective.loss(x_train[idx], y_train[idx], ctx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach())
            step += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(loss):.3f}", eps=f"{ctx.eps:.3f}")
        if interrupted:
            break
        train_seconds = time.time() - t0
        report = accuracy_report(live, x_eval, y_eval, eps_test, eval_domains, pgd_steps=pgd_steps, seed=seed,
                                 clip=dataset.clip) if eval_count else {}
        entry = {"epoch": epoch + 1, "eps": ctx.eps, "kappa": ctx.kappa, "beta": ctx.beta, "lr": schedule.lr_at(epoch),
                 "loss": total_loss / steps_per_epoch, "eps_test": eps_test, **report,
                 "train_seconds": round(train_seconds, 3), "seconds": round(time.time() - t0, 3)}
        log.append(entry)
        with open(log_path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        if progress:
            print(json.dumps(entry), flush=True)
        _atomic_save({"module": module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                      "step": step, "log": log, "args": args}, ckpt_path)
    for p in module.parameters():
        p.requires_grad_(True)
    result = {"args": args, "log": log, "interrupted": interrupted, "module": module, "live": live}
    if interrupted or not export:
        return result
    module.eval()
    onnx_path = os.path.join(out, "model.onnx")
    export_onnx(module.cpu(), dataset.input_shape, onnx_path)
    exported = verifier.load(onnx_path)
    cert = certify_model(exported, dataset.x_test, dataset.y_test, eps_test, certify_domain, clip=dataset.clip,
                         data=dataset.name)
    write_metadata(onnx_path, {"method": method, "eps": eps, "eps_test": eps_test, "training_args": args,
                               **certificate_metadata(cert)})
    summary = {"onnx": onnx_path, "certificate": asdict(cert), "args": args, "epochs_logged": len(log)}
    with open(os.path.join(out, "result.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    if progress:
        print(cert.describe(), flush=True)
    result.update(summary)
    return result
