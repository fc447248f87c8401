"""The training loop: schedules, per-epoch evaluation, checkpoints, resume, export.

``train(...)`` writes into ``out``: ``log.jsonl`` (one JSON object per epoch),
``checkpoint.pt`` (after every epoch, written atomically; ``resume=True`` continues from
it, so a killed run loses at most the epoch in progress), ``model.onnx`` (the trained
model with its certificate in ``metadata_props``) and ``result.json``.

Runs are deterministic given ``seed``: the batch order and every random start of an
epoch come from generators seeded by ``(seed, epoch)``, so a resumed run reproduces the
uninterrupted one.

Called inside a ``torch.distributed`` process group (``verifier train --nproc N`` or
``torchrun``; :mod:`.distributed`), ``train`` runs data-parallel: each global batch is
split over the ranks, DistributedDataParallel averages the gradients, and rank 0 alone
evaluates, writes the files and exports (same files, same form).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict

import onnx
import torch
import torch.nn as nn

import verifier
from verifier.errors import ModelError, VerifierInputError
from verifier.outputs import append_line, check_output_dir, write_atomic

from .architectures import build_model
from .certify import certificate_metadata, certify_model, verified_mask, write_metadata
from .data import Data, check_data, load_data
from .distributed import current as current_group
from .live import LiveModel, export_onnx, margin_matrix
from .objectives import Context, box_around, make_objective, pgd_attack
from .schedules import default_schedule
from .validation import (DataError, TrainingDiverged, check_device, check_model_fits, check_out_folder,
                         check_train_options, load_checkpoint)

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
    if isinstance(model, (str, os.PathLike)) and (os.fspath(model).endswith(".onnx") or os.path.isfile(model)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelError(f"--model {path}: file not found (give an architecture name or an .onnx file)")
        verifier.load(path)  # the verifier's own model checks come first
        torch.manual_seed(seed)
        return _convert_onnx(path), path
    if not isinstance(model, str):
        raise VerifierInputError(f"--model: an architecture name, an .onnx path or a torch module, not "
                                 f"{type(model).__name__}")
    try:
        return build_model(model, input_shape, classes, seed=seed), model
    except VerifierInputError:
        raise
    except (RuntimeError, ValueError) as exc:  # e.g. a convolution larger than the input
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DataError(f"architecture '{model}' cannot take data samples of shape {list(input_shape)} "
                        f"({first})") from None


def _convert_onnx(path: str) -> nn.Module:
    try:
        return load_onnx_module(path)
    except VerifierInputError:
        raise
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise ModelError(f"--model {path}: loads in the verifier but cannot be converted to a torch module for "
                         f"training (onnx2torch: {type(exc).__name__}: {first})") from None


def prepare_module(model, dataset: Data, seed: int = 0) -> tuple[nn.Module, str, int]:
    """``(module, description, number of outputs)`` for ``model`` on ``dataset``; refuses a
    model whose input does not take the data's samples or that lacks an output per label."""
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".onnx") and os.path.exists(model):
        path = os.fspath(model)
        checked = verifier.load(path)  # ModelError for anything the verifier cannot import
        check_model_fits(path, checked.input_shape, checked.output_size, dataset)
        torch.manual_seed(seed)
        module, name = _convert_onnx(path), path
    else:
        module, name = make_module(model, dataset.input_shape, dataset.classes, seed)
    probe = dataset.x_train[:1] if len(dataset.x_train) else dataset.x_test[:1]
    param = next(module.parameters(), None)
    if param is None:
        raise ModelError(f"model {name} has no trainable parameters")
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(probe.to(param.device))
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DataError(f"model {name} does not accept data samples of shape {list(probe.shape[1:])} "
                        f"({type(exc).__name__}: {first})") from None
    finally:
        module.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != 1:
        raise ModelError(f"model {name} must return one tensor of logits per sample (batch first)")
    classes = int(out[0].numel())
    check_model_fits(name, tuple(probe.shape[1:]), classes, dataset)
    if classes < 2:
        raise ModelError(f"model {name} has {classes} output; a classifier needs at least 2")
    return module, name, classes


def _check_device(device):
    return check_device("--device", device)


def _diverged(epoch: int, step: int, what: str, lr: float, out: str, saved_epoch: int) -> TrainingDiverged:
    kept = (f"{os.path.join(out, CHECKPOINT)} still holds the last finite state (epoch {saved_epoch})"
            if saved_epoch else "nothing was saved")
    return TrainingDiverged(f"training diverged in epoch {epoch + 1} (step {step + 1}): {what}; most likely the "
                            f"learning rate ({lr:g}) is too large for this model and data: try --lr {lr / 10:g} or "
                            f"lower, in a fresh --out; {kept}")


def _non_finite_parameter(module: nn.Module) -> str | None:
    for name, param in module.named_parameters():
        if not bool(torch.isfinite(param.detach()).all()):
            return name
    return None


def _method_option_keys(method: str) -> set:
    from .validation import METHOD_OPTIONS

    return set(METHOD_OPTIONS[method])


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
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def _forget_run(out: str, created: bool, log_path: str, log: list) -> None:
    """After a divergence before any epoch was saved, remove what this run wrote (the empty
    ``log.jsonl``, and ``out`` itself if this run created it and it is now empty); a run
    with saved epochs keeps its last finite checkpoint and their log lines."""
    if log:
        return
    try:
        if os.path.isfile(log_path) and os.path.getsize(log_path) == 0:
            os.unlink(log_path)
        if created and not os.listdir(out):
            os.rmdir(out)
    except OSError:  # best effort: the error message is what matters
        pass


def train(model="wong-kolter", method="crown-ibp", eps=0.1, epochs=10, out="runs/train", *, data="mnist",
          eps_test=None, device="cpu", resume=False, batch_size=None, lr=None, train_count=None, test_count=1000,
          eval_count=200, seed=0, warmup=None, ramp=None, ramp_shape="linear", kappa=None, beta=None,
          decay_every=None, decay_factor=None, eps_start_fraction=None, projections=None, certify_domain="crown",
          eval_domains=("box", "crown"), pgd_steps=10, progress=True, method_options=None, max_steps=None,
          export=True) -> dict:
    """Train ``model`` (architecture name, ONNX path or torch module) with ``method``; see
    the module docstring for what is written to ``out``. ``max_steps`` stops after that
    many batches in total (for tests of interruption); returns a summary dict.

    Every argument, the data, the model's fit to the data, ``out`` and (with ``resume``)
    the checkpoint are checked before the first epoch: bad input raises a
    :class:`~verifier.errors.VerifierInputError` and nothing is written. ``resume=True``
    continues from ``out/checkpoint.pt`` when it exists (a checkpoint of another run
    configuration is an error), else starts afresh."""
    v = check_train_options(method=method, eps=eps, epochs=epochs, eps_test=eps_test, batch_size=batch_size, lr=lr,
                            train_count=train_count, test_count=test_count, eval_count=eval_count, seed=seed,
                            warmup=warmup, ramp=ramp, ramp_shape=ramp_shape, kappa=kappa, beta=beta,
                            decay_every=decay_every, decay_factor=decay_factor, eps_start_fraction=eps_start_fraction,
                            projections=projections, certify_domain=certify_domain, eval_domains=eval_domains,
                            pgd_steps=pgd_steps, method_options=method_options, max_steps=max_steps)
    eps, eps_test, epochs, eval_count, seed, pgd_steps = (v[k] for k in ("eps", "eps_test", "epochs", "eval_count",
                                                                           "seed", "pgd_steps"))
    eval_domains, method_options = v["eval_domains"], v["method_options"]
    out = check_out_folder(out)
    device = _check_device(device)
    ddp = current_group()  # None in one process; else this rank in DistributedDataParallel training
    main = ddp is None or ddp.main  # the process that evaluates, writes files and exports
    torch.manual_seed(seed)
    need_test = bool(export or eval_count)
    if isinstance(data, Data):
        dataset = check_data(data)
    else:
        dataset = load_data(data, v["train_count"], v["test_count"], need_test=need_test)
    if need_test and not len(dataset.y_test):
        raise DataError(f"the data ({dataset.name}) has no test points, needed for the per-epoch evaluation "
                        f"(--eval-count) and the exported certificate")
    module, model_name, classes = prepare_module(model, dataset, seed)
    module = module.to(device)
    overrides = dict(warmup=v["warmup"], ramp=v["ramp"], shape=ramp_shape if ramp_shape != "linear" else None,
                     kappa=v["kappa"], beta=v["beta"], decay_every=v["decay_every"], decay_factor=v["decay_factor"],
                     lr=v["lr"], batch=v["batch_size"], eps_start_fraction=v["eps_start_fraction"])
    schedule, batch = default_schedule(method, eps, epochs, **overrides)
    args = {"model": model_name, "method": method, "eps": eps, "eps_test": eps_test, "epochs": epochs,
            "data": dataset.name, "train_count": len(dataset.y_train), "test_count": len(dataset.y_test),
            "eval_count": eval_count, "batch_size": batch, "seed": seed, "schedule": schedule.to_dict(),
            "projections": v["projections"], "certify_domain": certify_domain, "eval_domains": list(eval_domains),
            "pgd_steps": pgd_steps, "method_options": method_options, "device": str(device)}
    options = dict(method_options)
    if v["projections"]:
        options["projections"] = v["projections"]
    if "pgd_steps" in _method_option_keys(method):
        options.setdefault("pgd_steps", pgd_steps)
    live = LiveModel(module, dataset.input_shape)
    objective = make_objective(method, live, classes, **options)
    optimizer = torch.optim.Adam(module.parameters(), lr=schedule.lr)
    log_path, ckpt_path = os.path.join(out, "log.jsonl"), os.path.join(out, CHECKPOINT)
    start_epoch, step, log = 0, 0, []
    if resume and os.path.exists(ckpt_path):
        state = load_checkpoint(ckpt_path, args, module, optimizer, epochs, device)
        start_epoch, step, log = state["epoch"], state["step"], state["log"]
    created = not os.path.isdir(out)
    if main:
        check_output_dir(out, "--out")  # every check passed: create the folder
    x_train, y_train = dataset.x_train.to(device), dataset.y_train.to(device)
    x_eval, y_eval = dataset.x_test[:eval_count].to(device), dataset.y_test[:eval_count].to(device)
    steps_per_epoch = max(1, len(y_train) // batch)
    # the log is rewritten from the checkpoint: no lost or duplicated lines
    if main:
        write_atomic(log_path, "".join(json.dumps(entry) + "\n" for entry in log))
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
        step_loss = objective.loss if ddp is None else ddp.wrap(module, objective)  # after any freezing
        perm = torch.randperm(len(y_train), generator=gen).to(device)
        module.train()
        bar = range(steps_per_epoch)
        if tqdm is not None and progress and main:
            bar = tqdm(bar, desc=f"epoch {epoch + 1}/{epochs} [{method}]", leave=False, disable=None)  # a bar only on a terminal
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
            xb, yb = x_train[idx], y_train[idx]
            if ddp is None:
                loss, _ = step_loss(xb, yb, ctx)
                value = float(loss.detach())
            else:  # this rank's shard, weighted so that the averaged gradient is the whole batch's
                xb, yb, weight = ddp.shard(xb, yb)
                loss, _ = step_loss(xb, yb, ctx)
                loss = loss * weight
                value = ddp.total(loss) / ddp.world  # the whole batch's loss, on every rank
            if not math.isfinite(value):  # stop before a non-finite step (every rank sees the same value)
                if main:
                    _forget_run(out, created, log_path, log)
                raise _diverged(epoch, step, f"the loss is {value}", schedule.lr_at(epoch), out, len(log))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += value
            step += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.3f}", eps=f"{ctx.eps:.3f}")
        bad = _non_finite_parameter(module)
        if bad is not None:  # the last step threw a weight to inf/NaN: never evaluate, save or export it
            if main:
                _forget_run(out, created, log_path, log)
            raise _diverged(epoch, step - 1, f"weight '{bad}' became NaN or infinite", schedule.lr_at(epoch), out,
                            len(log))
        if interrupted:
            break
        train_seconds = time.time() - t0
        if not main:  # rank 0 evaluates, logs and saves; the others go on to the next epoch
            continue
        report = accuracy_report(live, x_eval, y_eval, eps_test, eval_domains, pgd_steps=pgd_steps, seed=seed,
                                 clip=dataset.clip) if eval_count else {}
        entry = {"epoch": epoch + 1, "eps": ctx.eps, "kappa": ctx.kappa, "beta": ctx.beta, "lr": schedule.lr_at(epoch),
                 "loss": total_loss / steps_per_epoch, "eps_test": eps_test, **report,
                 "train_seconds": round(train_seconds, 3), "seconds": round(time.time() - t0, 3)}
        log.append(entry)
        append_line(log_path, json.dumps(entry))
        if progress:
            print(json.dumps(entry), flush=True)
        _atomic_save({"module": module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                      "step": step, "log": log, "args": args}, ckpt_path)
    for p in module.parameters():
        p.requires_grad_(True)
    result = {"args": args, "log": log, "interrupted": interrupted, "module": module, "live": live}
    if interrupted or not export or not main:
        return result
    module.eval()
    onnx_path = os.path.join(out, "model.onnx")
    staging = os.path.join(out, ".model.export.onnx")  # model.onnx appears complete, metadata included
    try:
        export_onnx(module.cpu(), dataset.input_shape, staging)
        try:
            exported = verifier.load(staging)
        except VerifierInputError as exc:  # name the file the user asked for, not the staging file
            message = str(exc).replace(staging, onnx_path)
            raise ModelError(f"the trained model cannot be exported as {onnx_path}: {message}") from None
        cert = certify_model(exported, dataset.x_test, dataset.y_test, eps_test, certify_domain, clip=dataset.clip,
                             data=dataset.name)
        write_metadata(staging, {"method": method, "eps": eps, "eps_test": eps_test, "training_args": args,
                                 **certificate_metadata(cert)}, target=onnx_path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    summary = {"onnx": onnx_path, "certificate": asdict(cert), "args": args, "epochs_logged": len(log)}
    write_atomic(os.path.join(out, "result.json"), json.dumps(summary, indent=2))
    if progress:
        print(cert.describe(), flush=True)
    result.update(summary)
    return result
