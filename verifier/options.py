"""Checking ``--domain-option KEY=VALUE`` / ``compute_bounds(**options)`` before any work.

A domain's options are the keyword parameters of its class's ``__init__`` (built-in and
plugin domains alike); a complete method's are listed in
:data:`verifier.complete.methods.METHODS` (each method's ``options``). :func:`check_domain_options` refuses unknown
keys (listing the valid ones), converts text values from the command line to the
parameter's annotated type (``int``, ``float``, ``bool``, ``str``), and applies the
value rules of :data:`OPTION_RULES`, shared by every domain that takes an option of that
name. Every failure is a :class:`~verifier.errors.VerifierInputError` naming the option
and what would be valid. A domain's string options (``intermediate``) are checked by
constructing the domain once with the options (:func:`check_domain_construction`), so
every value is known valid before a model is read or an attack runs.

:func:`check_device`, :func:`check_seed` and :func:`check_samples` are the shared rules
for ``--device``/``device=``, ``--seed``/``seed=`` and ``--samples``/``samples=``;
:data:`DTYPES` maps ``--dtype`` names to torch dtypes.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Mapping
from typing import Any, Callable

from .errors import VerifierInputError

# name -> (predicate, what is valid): the same rule wherever the name appears
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "iterations": (lambda v: v >= 0, "an integer ≥ 0"),
    "batch": (lambda v: v >= 1, "an integer ≥ 1"),
    "candidates": (lambda v: v >= 1, "an integer ≥ 1"),
    "refine_depth": (lambda v: v >= 0, "an integer ≥ 0"),
    "patience": (lambda v: v >= 1, "an integer ≥ 1"),
    "projections": (lambda v: v is None or v >= 1, "an integer ≥ 1"),
    "time_limit": (lambda v: v > 0 and not math.isnan(v), "a number of seconds > 0"),
    "lr": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    # every input region here is a box (VNN-LIB, compute_bounds' [lower, upper]): a domain
    # told norm=1 or 2 would bound the L1/L2 ball inscribed in it instead, and prove unsat wrongly
    "norm": (lambda v: v == math.inf, "inf (input regions are L∞ boxes; L1/L2 balls are not supported)"),
    "split_rule": (lambda v: v in _split_rules(), "one of fsb, lookahead, coefficient, gradient"),
}


def _split_rules() -> tuple[str, ...]:
    from .complete.input_split import SPLIT_RULES

    return SPLIT_RULES

class _Dtypes(Mapping):
    """``--dtype`` name (``float32``, ``float64``) → torch dtype; torch is imported on the
    first lookup, so the command line starts (and installs its signal handlers) without it."""

    NAMES = ("float32", "float64")

    def __getitem__(self, name: str):
        import torch

        if name not in self.NAMES:
            raise KeyError(name)
        return getattr(torch, name)

    def __iter__(self):
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)


DTYPES: Mapping = _Dtypes()  # the bound arithmetic ``--dtype`` selects

MAX_SEED = 2 ** 63 - 1  # torch.Generator.manual_seed takes at most a signed 64-bit value
MAX_SAMPLES = 100_000  # fidelity-check samples run as one batch: bounded to keep memory in reach


def check_device(device, option: str = "device") -> str:
    """``device`` (a name or ``torch.device``) as a string, if bounds can run there: ``cpu``,
    or ``cuda``/``cuda:N`` when CUDA is available and ``N`` is below the device count.

    Raises :class:`VerifierInputError` for anything else (``meta``, ``mps``, ``xla``, an
    unknown name, CUDA on a machine without it), naming ``option``."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise VerifierInputError(f"{option} must be cpu or cuda[:N], not {device!r}")
    try:
        parsed = torch.device(device.strip())
    except (RuntimeError, ValueError):
        raise VerifierInputError(f"{option}: unknown device {device!r} (use cpu, or cuda / cuda:N)") from None
    if parsed.type == "cpu":
        return str(parsed)
    if parsed.type != "cuda":
        raise VerifierInputError(f"{option}: device {device!r} is not supported (use cpu, or cuda / cuda:N)")
    if not torch.cuda.is_available():
        raise VerifierInputError(f"{option} {device} was asked for but CUDA is not available on this machine "
                                 f"(use cpu)")
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise VerifierInputError(f"{option}: {device} does not exist; this machine has {count} CUDA device(s) "
                                 f"(cuda:0..cuda:{count - 1})")
    return str(parsed)


def check_seed(seed, option: str = "seed") -> int:
    """``seed`` as an int in ``[0, 2**63 − 1]`` (what ``torch.manual_seed`` takes); raises
    :class:`VerifierInputError` for a negative, too large, non-integer or boolean value."""
    if isinstance(seed, bool) or not isinstance(seed, int) and not (hasattr(seed, "__index__")):
        raise VerifierInputError(f"{option} must be an integer in [0, {MAX_SEED}], not {seed!r}")
    seed = int(seed.__index__())
    if not 0 <= seed <= MAX_SEED:
        raise VerifierInputError(f"{option} must be an integer in [0, {MAX_SEED}] (2**63 − 1), got {seed}")
    return seed


def check_samples(samples, option: str = "samples") -> int:
    """``samples`` as an int in ``[1, MAX_SAMPLES]``: the fidelity check runs every sample in
    one batch, so the count is bounded to keep its memory in reach. Raises
    :class:`VerifierInputError` otherwise."""
    if isinstance(samples, bool) or not isinstance(samples, int) and not hasattr(samples, "__index__"):
        raise VerifierInputError(f"{option} must be an integer in [1, {MAX_SAMPLES}], not {samples!r}")
    samples = int(samples.__index__())
    if not 1 <= samples <= MAX_SAMPLES:
        raise VerifierInputError(f"{option} must be an integer in [1, {MAX_SAMPLES}] (the samples run as one "
                                 f"batch; more would not fit in memory for typical models), got {samples}")
    return samples


def key_value_options(pairs: list[str] | None, flag: str = "--domain-option") -> dict:
    """``key=value`` strings of a repeatable ``flag`` → keyword arguments (numbers parsed,
    the rest kept as text; :func:`verifier.options.check_domain_options` converts and
    checks them). Raises :class:`VerifierInputError` for a pair without ``=`` or key."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise VerifierInputError(f"{flag} expects key=value, got '{pair}'")
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return options


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _convert(key: str, value: Any, kind: type | None, where: str) -> Any:
    """``value`` as ``kind`` (text from the command line is parsed; numbers are checked)."""
    if kind is None or value is None:
        return value
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(value) if isinstance(value, int) else int(str(value).strip())
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "text"}[kind]
    raise VerifierInputError(f"{where}: option {key}={value!r} must be {expected}")


def _annotation_type(annotation: Any) -> type | None:
    """The plain type of a parameter annotation (``int | None`` → ``int``), else ``None``."""
    if annotation in (int, float, bool, str):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and args[0] in (int, float, bool, str):
        return args[0]
    return None


def option_types(target: Callable) -> dict[str, type | None]:
    """The keyword options ``target`` (a class or function) accepts, with their types
    (from annotations, else from the default's type; ``None`` = any)."""
    init = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # unresolvable annotations in a plugin: fall back to defaults
        hints = {}
    types: dict[str, type | None] = {}
    for name, param in inspect.signature(init).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kind = _annotation_type(hints.get(name))
        if kind is None and param.default is not inspect.Parameter.empty and param.default is not None:
            kind = _annotation_type(type(param.default))
        types[name] = kind
    return types


def check_options(options: dict[str, Any], types: dict[str, type | None], where: str) -> dict[str, Any]:
    """``options`` converted and checked against ``types`` and :data:`OPTION_RULES`.

    Raises :class:`VerifierInputError` for an unknown key (listing the valid keys), a
    value of the wrong type, or one outside its rule (e.g. ``batch=0``)."""
    unknown = sorted(set(options) - set(types))
    if unknown:
        valid = ", ".join(sorted(types)) or "none"
        raise VerifierInputError(f"{where} has no option {', '.join(unknown)}; its options: {valid}")
    checked = {}
    for key, value in options.items():
        value = _convert(key, value, types[key], where)
        if isinstance(value, float) and math.isnan(value):
            raise VerifierInputError(f"{where}: option {key} is NaN")
        rule = OPTION_RULES.get(key)
        try:
            valid = rule is None or value is None or rule[0](value)
        except TypeError:
            valid = False
        if not valid:
            raise VerifierInputError(f"{where}: option {key}={value!r} must be {rule[1]}")
        checked[key] = value
    return checked


def check_domain_options(domain: str, options: dict[str, Any] | None, flag: str = "--domain") -> dict[str, Any]:
    """Validate the options for ``verify``/``bounds --domain domain`` (a domain name, a
    complete method, or ``auto``, which takes none; ``flag``: the option that named it, for
    the messages). Raises :class:`VerifierInputError` for an unknown domain or a bad option;
    returns the converted options."""
    from .complete.methods import METHODS
    from .domains import available_domains

    options = dict(options or {})
    with_options = [name for name, method in METHODS.items() if method.options]
    if domain in METHODS and not METHODS[domain].options:
        if options:
            raise VerifierInputError(f"{flag} {domain} takes no options (got {', '.join(sorted(options))}); "
                                     f"name a domain or a complete method ({', '.join(with_options)}) to pass options")
        return options
    if domain in METHODS:
        from .complete.input_split import input_split_bab
        from .complete.milp import milp_disjunct
        from .complete.relu_split import relu_split_bab

        found = {**option_types(milp_disjunct), **option_types(relu_split_bab), **option_types(input_split_bab)}
        types = {k: found.get(k) for k in METHODS[domain].options}
        return check_options(options, types, f"{flag} {domain}")
    domains = available_domains()
    if domain not in domains:
        raise VerifierInputError(f"unknown domain '{domain}'; installed domains: {', '.join(sorted(domains))}, "
                                 f"complete methods: {', '.join(METHODS)}")
    checked = check_options(options, option_types(domains[domain]), f"domain '{domain}'")
    check_domain_construction(domain, domains[domain], checked)
    return checked


def check_domain_construction(name: str, cls: type, options: dict[str, Any]):
    """Construct domain ``cls`` once with the (already converted) ``options`` and return it,
    so that values only its constructor knows (``intermediate=bogus``) are refused up front,
    before a model is read. Constructors do no work beyond storing their options.

    Raises :class:`VerifierInputError` (prefixed with the domain's name) when the
    constructor refuses the options (``VerifierInputError``, ``ValueError``, ``TypeError``)."""
    try:
        return cls(**options)
    except VerifierInputError as exc:
        raise VerifierInputError(f"domain '{name}': {exc}") from None
    except (ValueError, TypeError) as exc:
        raise VerifierInputError(f"domain '{name}' refuses the options "
                                 f"{', '.join(f'{k}={v!r}' for k, v in options.items()) or '(none)'}: {exc}") from None
