"""Input checks of the training plugin, run before any data is loaded or any epoch starts.

Every failure is a :class:`~verifier.errors.VerifierInputError` (the command line prints
one ``error:`` line and exits 2) whose message names the option, file or array key and
what would be valid:

* :func:`check_train_options` — numbers (finite, in range), method, ``--option`` keys and
  values per method, domain names, ramp shape, counts;
* :func:`check_out_folder` — ``--out`` is (or can become) a writable folder; nothing is
  created until every other check has passed;
* :func:`check_arrays` (through :func:`~verifier_plugins.training.data.load_data`) — the
  data's keys, lengths, shapes, finiteness, pixel range and labels;
* :func:`check_model_fits` — the model's input takes the data's samples and it has an
  output for every label;
* :func:`load_checkpoint` — ``--resume`` reads a checkpoint of the same run configuration.
"""

from __future__ import annotations

import json
import math
import numbers
import os

import numpy as np
import torch

from verifier.errors import VerifierInputError
from verifier.outputs import check_creatable_dir

METHODS = ("standard", "pgd", "ibp", "crown-ibp", "dual-lp", "colt", "double-margin", "landscape")
RAMP_SHAPES = ("linear", "smooth")
MAX_CLASSES = 100_000
#: Largest learning rate accepted: Adam moves each weight by about ``lr`` per step, so a rate
#: far above 1 throws weights to ±inf in a few steps (the published schedules use 1e-4…1e-2).
MAX_LR = 10.0
#: Largest seed: numpy's range (``2**32 − 1``); the per-epoch generators are seeded with
#: ``seed·100003 + epoch``, which then stays inside torch's 64-bit range.
MAX_SEED = 2**32 - 1


class DataError(VerifierInputError):
    """The training/test data (a file, arrays or Datasets) is malformed or does not fit the model."""


class CheckpointError(VerifierInputError):
    """``--resume`` found no usable checkpoint of this run in the output folder."""


class TrainingDiverged(VerifierInputError):
    """The loss or the weights became NaN or infinite during training (almost always a
    learning rate too large for the model and data); no non-finite state is saved."""


# --- numbers -------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(option: str, value, minimum: int | None = None) -> int:
    """``value`` as an int (integral floats accepted), at least ``minimum``."""
    if _is_real(value) and not _is_int(value) and math.isfinite(value) and float(value).is_integer():
        value = int(value)
    if not _is_int(value):
        raise VerifierInputError(f"{option} {value!r}: must be an integer"
                                 + (f" >= {minimum}" if minimum is not None else ""))
    if minimum is not None and value < minimum:
        raise VerifierInputError(f"{option} {value}: must be an integer >= {minimum}")
    return int(value)


def check_real(option: str, value, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the interval ``low … high`` (open ends as asked)."""
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    if low is not None and high is not None:
        want = f"a finite number in {lo}, {hi}"
    elif low is not None:
        want = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        want = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        want = "a finite number"
    if not _is_real(value):
        raise VerifierInputError(f"{option} {value!r}: must be {want}")
    value = float(value)
    bad = not math.isfinite(value)
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        raise VerifierInputError(f"{option} {value:g}: must be {want}")
    return value


def check_pair(option: str, value, low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
    """A ``(start, end)`` schedule of two numbers in ``[low, high]``."""
    try:
        items = list(value)
    except TypeError:
        raise VerifierInputError(f"{option} {value!r}: must be two numbers START END in [{low:g}, {high:g}]") from None
    if len(items) != 2:
        raise VerifierInputError(f"{option} {value!r}: must be two numbers START END in [{low:g}, {high:g}]")
    return tuple(check_real(option, v, low, high) for v in items)  # type: ignore[return-value]


def check_seed(option: str, value) -> int:
    """An integer seed in ``[0, MAX_SEED]`` (numpy's range; torch's is wider)."""
    seed = check_int(option, value, 0)
    if seed > MAX_SEED:
        raise VerifierInputError(f"{option} {seed}: must be an integer in [0, {MAX_SEED}] (2**32 - 1)")
    return seed


def check_device(option: str, device) -> str:
    """``device`` as a string if training and bounds can run there (cpu, or an available
    cuda / cuda:N): :func:`verifier.options.check_device`, naming ``option``."""
    from verifier.options import check_device as check_verifier_device

    return check_verifier_device(device, option)


# --- method options (--option key=value) -----------------------------------------------------
def _int_at_least(minimum):
    return lambda key, v: check_int(f"--option {key}", v, minimum)


def _real(low=None, high=None, low_open=False):
    return lambda key, v: check_real(f"--option {key}", v, low, high, low_open=low_open)


#: method → {key: (checker, description)}; only these keys are accepted for the method.
METHOD_OPTIONS: dict[str, dict] = {
    "standard": {},
    "pgd": {"pgd_steps": (_int_at_least(0), "integer >= 0")},
    "ibp": {},
    "crown-ibp": {},
    "dual-lp": {"projections": (_int_at_least(1), "integer >= 1")},
    "colt": {"pgd_steps": (_int_at_least(0), "integer >= 0"), "latent_steps": (_int_at_least(0), "integer >= 0"),
             "latent_step_size": (_real(0.0, low_open=True), "number > 0"), "stages": (_int_at_least(1), "integer >= 1"),
             "mix": (_real(0.0, 1.0), "number in [0, 1]"), "l1": (_real(0.0), "number >= 0"),
             "stability": (_real(0.0), "number >= 0")},
    "double-margin": {},
    "landscape": {"alpha_step": (_real(0.0, low_open=True), "number > 0"),
                  "diagnose_every": (_int_at_least(0), "integer >= 0")},
}


def check_method_options(method: str, options: dict | None) -> dict:
    """The ``--option`` values of ``method``, checked and converted; unknown keys are errors."""
    allowed = METHOD_OPTIONS[method]
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise VerifierInputError(f"method options must be a dict of key=value, not {type(options).__name__}")
    out = {}
    for key, value in options.items():
        if key not in allowed:
            valid = ", ".join(f"{k} ({d})" for k, (_, d) in sorted(allowed.items())) or "none"
            raise VerifierInputError(f"--option {key}: not an option of method '{method}'; its options: {valid}")
        out[key] = allowed[key][0](key, value)
    return out


# --- domains -------------------------------------------------------------------------------
def check_domain(option: str, name, options: dict | None = None) -> str:
    """``name`` must be an installed domain; ``options`` must be accepted by its constructor."""
    from verifier.domains import available_domains

    domains = available_domains()
    if not isinstance(name, str) or name not in domains:
        raise VerifierInputError(f"{option} {name!r}: unknown domain; installed domains: {', '.join(sorted(domains))}")
    if options:  # the same key, type and value rules as verify/bounds --domain-option
        from verifier.options import check_options, option_types

        check_options(options, option_types(domains[name]), f"--domain-option for domain '{name}'")
    return name


def check_domains(option: str, names) -> tuple[str, ...]:
    if isinstance(names, str):
        names = tuple(n.strip() for n in names.split(","))
    names = tuple(names)
    for name in names:
        check_domain(option, name)
    return names


# --- train() options -----------------------------------------------------------------------
def check_train_options(*, method, eps, epochs, eps_test=None, batch_size=None, lr=None, train_count=None,
                        test_count=None, eval_count=0, seed=0, warmup=None, ramp=None, ramp_shape="linear",
                        kappa=None, beta=None, decay_every=None, decay_factor=None, eps_start_fraction=None,
                        projections=None, certify_domain="crown", eval_domains=("box", "crown"), pgd_steps=10,
                        method_options=None, max_steps=None) -> dict:
    """Every number and name of :func:`~verifier_plugins.training.trainer.train`, checked;
    returns the converted values (ints as ints, pairs as tuples, domains as a tuple)."""
    if method not in METHODS:
        raise VerifierInputError(f"--method {method!r}: unknown method; choose from {', '.join(METHODS)}")
    v: dict = {"method": method}
    v["eps"] = check_real("--eps", eps, 0.0)
    v["eps_test"] = v["eps"] if eps_test is None else check_real("--eps-test", eps_test, 0.0)
    v["epochs"] = check_int("--epochs", epochs, 1)
    v["batch_size"] = None if batch_size is None else check_int("--batch-size", batch_size, 1)
    v["lr"] = None if lr is None else check_real("--lr", lr, 0.0, MAX_LR, low_open=True)
    v["train_count"] = None if train_count is None else check_int("--train-count", train_count, 1)
    v["test_count"] = None if test_count is None else check_int("--test-count", test_count, 1)
    v["eval_count"] = check_int("--eval-count", eval_count, 0)
    v["seed"] = check_seed("--seed", seed)
    v["warmup"] = None if warmup is None else check_real("--warmup", warmup, 0.0)
    v["ramp"] = None if ramp is None else check_real("--ramp", ramp, 0.0)
    if ramp_shape not in RAMP_SHAPES:
        raise VerifierInputError(f"--ramp-shape {ramp_shape!r}: choose from {', '.join(RAMP_SHAPES)}")
    v["ramp_shape"] = ramp_shape
    v["kappa"] = None if kappa is None else check_pair("--kappa", kappa)
    if beta is not None and method not in ("crown-ibp", "landscape"):
        raise VerifierInputError(f"--beta applies to methods crown-ibp and landscape only, not '{method}'")
    v["beta"] = None if beta is None else check_pair("--beta", beta)
    v["decay_every"] = None if decay_every is None else check_real("--decay-every", decay_every, 0.0, low_open=True)
    v["decay_factor"] = None if decay_factor is None else check_real("--decay-factor", decay_factor, 0.0, 1.0,
                                                                     low_open=True)
    v["eps_start_fraction"] = None if eps_start_fraction is None else check_real("eps_start_fraction",
                                                                                 eps_start_fraction, 0.0, 1.0)
    if projections is not None and method != "dual-lp":
        raise VerifierInputError(f"--projections applies to method dual-lp only, not '{method}'")
    v["projections"] = None if projections is None else check_int("--projections", projections, 1)
    v["pgd_steps"] = check_int("pgd_steps", pgd_steps, 0)
    v["max_steps"] = None if max_steps is None else check_int("max_steps", max_steps, 0)
    v["method_options"] = check_method_options(method, method_options)
    v["certify_domain"] = check_domain("--certify-domain", certify_domain)
    v["eval_domains"] = check_domains("--eval-domains", eval_domains)
    return v


# --- output folder --------------------------------------------------------------------------
def check_out_folder(out, option: str = "--out") -> str:
    """``out`` is a writable folder or can be created as one in an existing folder
    (:func:`verifier.outputs.check_creatable_dir`, the rule of every output path); creates nothing."""
    try:
        path = os.fspath(out)
    except TypeError:
        raise VerifierInputError(f"{option}: must be a folder path, not {type(out).__name__}") from None
    return check_creatable_dir(path, option)


# --- data ----------------------------------------------------------------------------------
def check_arrays(source: str, key_x: str, x, key_y: str, y, clip=(0.0, 1.0), allow_empty: bool = False):
    """One split ``(x, y)`` of the data named ``source``: numeric, finite, in ``clip``, one
    integer label ``>= 0`` per sample. Returns ``(x float32 tensor, y int64 tensor)``."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if x.dtype.kind not in "fiu":
        raise DataError(f"{source}: {key_x} has element type {x.dtype}; pixels must be integer or floating-point "
                        f"numbers" + (" (not booleans: store 0/1 as numbers)" if x.dtype.kind == "b" else ""))
    if x.ndim < 2:
        raise DataError(f"{source}: {key_x} has shape {list(x.shape)}; it needs a sample axis and at least one "
                        f"feature axis (N, ...)")
    if y.ndim != 1:
        raise DataError(f"{source}: {key_y} has shape {list(y.shape)}; labels must be a 1-D array (N,)")
    if len(x) != len(y):
        raise DataError(f"{source}: {key_x} has {len(x)} samples but {key_y} has {len(y)} labels")
    if len(x) == 0 and not allow_empty:
        raise DataError(f"{source}: {key_x} and {key_y} are empty (give at least one sample)")
    if x.shape[1:] and min(x.shape[1:]) == 0:
        raise DataError(f"{source}: {key_x} has shape {list(x.shape)}; samples have no values")
    xf = x if x.dtype.kind == "f" else x.astype(np.float32)
    if len(x):
        finite = np.isfinite(xf)
        if not finite.all():
            index = int(np.argwhere(~finite.reshape(len(x), -1))[0][0])
            raise DataError(f"{source}: {key_x} holds NaN or infinite values (first in sample {index})")
        lo, hi = float(xf.min()), float(xf.max())
        if lo < clip[0] or hi > clip[1]:
            raise DataError(f"{source}: {key_x} values lie in [{lo:g}, {hi:g}], outside the input range "
                            f"[{clip[0]:g}, {clip[1]:g}] (scale the pixels to that range)")
    if y.dtype.kind not in "fiu":
        raise DataError(f"{source}: {key_y} has element type {y.dtype}; labels must be integers >= 0"
                        + (" (not booleans: store class indices 0/1 as integers)" if y.dtype.kind == "b" else ""))
    if len(y):
        yf = y.astype(np.float64, copy=False)
        if not np.isfinite(yf).all() or not (yf == np.round(yf)).all():
            raise DataError(f"{source}: {key_y} holds non-integer labels; labels must be integers >= 0")
        if yf.min() < 0:
            raise DataError(f"{source}: {key_y} holds negative labels (min {int(yf.min())}); labels must be "
                            f"integers >= 0 (class indices)")
        if yf.max() >= MAX_CLASSES:
            raise DataError(f"{source}: {key_y} holds label {int(yf.max())}; labels must be class indices "
                            f"< {MAX_CLASSES}")
    return (torch.as_tensor(np.ascontiguousarray(xf), dtype=torch.float32),
            torch.as_tensor(y.astype(np.int64), dtype=torch.int64))


def check_same_sample_shape(source: str, x_train: torch.Tensor, x_test: torch.Tensor) -> None:
    if tuple(x_train.shape[1:]) != tuple(x_test.shape[1:]):
        raise DataError(f"{source}: x_train samples have shape {list(x_train.shape[1:])} but x_test samples "
                        f"{list(x_test.shape[1:])}; both must be the same")


def check_model_fits(model_name: str, input_shape, classes: int, data, use_train: bool = True) -> None:
    """A model with per-sample ``input_shape`` (ONNX ``input_shape`` with a leading batch 1
    accepted) and ``classes`` outputs fits ``data``: the sample shape matches and every
    label is an output index."""
    sample = tuple(data.x_train.shape[1:]) if use_train and len(data.x_train) else tuple(data.x_test.shape[1:])
    shape = tuple(int(s) for s in input_shape)
    if shape != sample and not (len(shape) == len(sample) + 1 and shape[0] == 1 and shape[1:] == sample):
        raise DataError(f"the data ({data.name}) has samples of shape {list(sample)} but the model {model_name} "
                        f"takes inputs of shape {list(shape)}; reshape the data to {list(shape[1:] if shape[:1] == (1,) and len(shape) > 1 else shape)}")
    labels = [t for t in (data.y_train if use_train else None, data.y_test) if t is not None and len(t)]
    top = max((int(t.max()) for t in labels), default=-1)
    if top >= classes:
        raise DataError(f"the data ({data.name}) has label {top} but the model {model_name} has {classes} outputs; "
                        f"labels must be in 0..{classes - 1}")


# --- checkpoints -----------------------------------------------------------------------------
CHECKPOINT_KEYS = ("module", "optimizer", "epoch", "step", "log", "args")
#: run arguments that may differ between a checkpoint and the run resuming it (they do not
#: change the training trajectory)
RESUME_FREE_ARGS = ("device", "eval_count", "test_count", "certify_domain", "eval_domains")


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _differences(saved: dict, now: dict, prefix: str = "") -> list[tuple[str, str, str]]:
    out = []
    for key in sorted(set(saved) | set(now)):
        if not prefix and key in RESUME_FREE_ARGS:
            continue
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif _canonical(a) != _canonical(b):
            out.append((prefix + key, _canonical(a)[:60], _canonical(b)[:60]))
    return out


def load_checkpoint(path: str, args: dict, module, optimizer, epochs: int, device="cpu") -> dict:
    """Read ``path`` and load it into ``module`` and ``optimizer``; the checkpoint must come
    from a run with the same configuration (``args``, except :data:`RESUME_FREE_ARGS`)."""
    hint = "delete it or use a fresh --out to start afresh"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # pickle, zip, EOF, unsupported globals: all mean "not our checkpoint"
        raise CheckpointError(f"--resume: {path} is not a readable checkpoint of `verifier train` "
                              f"({type(exc).__name__}); {hint}") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"--resume: {path} is not a checkpoint of `verifier train` (expected keys "
                              f"{list(CHECKPOINT_KEYS)}, found {have}); {hint}")
    saved = state["args"]
    if not isinstance(saved, dict):
        raise CheckpointError(f"--resume: {path} has no run arguments; {hint}")
    differ = _differences(saved, args)
    if differ:
        parts = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, a, b in differ[:4])
        raise CheckpointError(f"--resume: {path} was written by a run with other settings ({parts}); resume with "
                              f"the same options, or {hint}")
    epoch, step, log = state["epoch"], state["step"], state["log"]
    if not (_is_int(epoch) and 0 <= epoch <= epochs and _is_int(step) and step >= 0 and isinstance(log, list)
            and len(log) == epoch):
        raise CheckpointError(f"--resume: {path} has an inconsistent epoch/step/log (epoch {epoch!r}, step "
                              f"{step!r}); {hint}")
    try:
        module.load_state_dict(state["module"])
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise CheckpointError(f"--resume: {path} does not hold this model's weights ({first}); {hint}") from None
    try:
        optimizer.load_state_dict(state["optimizer"])
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise CheckpointError(f"--resume: {path} holds an optimiser state that does not fit ({first}); "
                              f"{hint}") from None
    return state
