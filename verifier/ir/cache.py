"""A disk cache of imported IRs, one entry per model file, and of the onnxruntime checks they passed.

Importing an ONNX model (parsing, constant folding with onnxruntime, converting every node)
and comparing the IR with onnxruntime are deterministic functions of the file's bytes, the
verifier's code and the versions of torch, onnx, onnxruntime and numpy. An entry is keyed
by all of them: the file's SHA-256 and a :func:`fingerprint` that includes a digest of the
verifier's own source files (so a code change, even without a version bump, misses). An
entry holds the IR and the boxes on which the onnxruntime comparison passed, with its
report; a check on another box runs again.

Where: ``$VERIFIER_CACHE_DIR`` (``~`` expanded), else ``$XDG_CACHE_HOME/verifier``, else
``~/.cache/verifier``. As the XDG Base Directory specification requires of its variables,
both must be absolute paths: a relative one is ignored, with a warning, and the next rule
applies (so the folder never depends on the current directory). ``VERIFIER_NO_CACHE=1``
turns the cache off everywhere (the CLI also has ``--no-cache``). Models with external
data files are not cached (their weights live outside the hashed file).

What is trusted: the folder's ownership and permissions, nothing in it. A file starts with
a magic line and the SHA-256 of the rest, which catches a torn or flipped file but not a
forgery (anyone who can write the folder can write a well-formed entry, and so change an
IR and the verdicts drawn from it). The folder is therefore created with mode ``0o700``,
and one owned by another user, or writable by group or others without the sticky bit, is
not used (one warning; models are imported afresh, as ``pip`` and ``ssh`` refuse such
folders). An entry is read only when it is a regular file (never a FIFO, device, folder or
symlink, which are neither read, replaced nor pruned) owned by the user and not writable
by group or others (in a sticky shared folder others may add files but not change ours).
Within that, an entry is still checked: its JSON header must name the expected key; the IR
is read with ``torch.load(weights_only=True)`` (tensors and plain Python values only, no
code) and must decode to a well-formed IR (known op kinds, edges between its nodes, an
acyclic graph). Anything else is a miss: the model is imported again and the entry
replaced. Entries are written to a temporary file and renamed into place, so concurrent
processes read a whole old or a whole new entry; two that record checks at once may keep
only one of them (the other box is checked again later). At most :data:`MAX_ENTRIES`
entries and :data:`MAX_BYTES` bytes are kept (the least recently used go first); only
files named as the cache names them (:data:`ENTRY`, :data:`TEMPORARY`) are ever deleted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch

from .cache_folder import (ENTRY, MAX_BYTES, MAX_ENTRIES, SUFFIX, TEMPORARY, absent_or_regular,  # noqa: F401
                           cache_dir, prune, read_private, touch, trusted_folder, unlink, warn_once)

FORMAT = 1
MAGIC = b"verifier-ir-cache %d\n" % FORMAT
MAX_CHECKS = 32  # recorded check boxes per entry (the oldest are dropped)
_TAG = "__verifier_cache_value__"  # marks an encoded numpy value inside the pickled IR
_NODE_KEYS = ("kind", "params", "attrs", "shape", "source")
_NUMPY_KINDS = "biufc"  # bool, int, uint, float, complex: never object arrays


class Uncacheable(Exception):
    """The IR holds a value the cache format does not store (it is then not cached)."""


def disabled_by_env() -> bool:
    """``True`` when ``VERIFIER_NO_CACHE`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get("VERIFIER_NO_CACHE", "") not in ("", "0")


_SOURCE_DIGEST: str | None = None


def source_digest() -> str:
    """SHA-256 of the verifier package's ``.py`` files (relative names and contents): an entry
    made by other code misses even when the version string is the same."""
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        root = Path(__file__).resolve().parent.parent
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        _SOURCE_DIGEST = digest.hexdigest()
    return _SOURCE_DIGEST


def fingerprint(dtype: torch.dtype | None = None) -> dict[str, str]:
    """What besides the file decides the imported IR and the checks: the verifier's version
    and source digest, the torch/onnx/onnxruntime/numpy/Python versions and the import's
    ``dtype``."""
    import onnxruntime  # cheap, and imported for the search anyway (unlike onnx and its protobuf)

    from .. import __version__

    return {"verifier": __version__, "source": source_digest(), "torch": torch.__version__,
            "onnx": _onnx_version(), "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "python": "%d.%d" % sys.version_info[:2], "dtype": str(dtype)}


def _onnx_version() -> str:
    """onnx's version from its metadata (importing onnx costs ~0.2 s, which a hit avoids)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnx")
    except PackageNotFoundError:  # installed under another distribution name
        import onnx

        return onnx.__version__


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes. Raises :class:`OSError` when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def box_key(lower: torch.Tensor | None, upper: torch.Tensor | None, samples: int, seed: int = 0) -> str:
    """The key of one onnxruntime check: its box (``None``: the default box, which is checked
    differently from an explicit ``[−1, 1]``), sample count and seed."""
    digest = hashlib.sha256(b"%d %d\0" % (samples, seed))
    for bound in (lower, upper):
        if bound is None:
            digest.update(b"default\0")
        else:
            values = torch.as_tensor(bound).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
            digest.update(b"%d\0" % values.numel() + values.numpy().tobytes())
    return digest.hexdigest()


# --- the IR as plain data -----------------------------------------------------------------
def _encode(value: Any) -> Any:
    """``value`` as what ``torch.load(weights_only=True)`` reads back identically: numbers,
    strings, ``None``, tensors, dtypes, lists, tuples and dicts as they are; numpy arrays
    and scalars tagged. Types are matched exactly (a subclass such as ``torch.Size``, a
    named tuple or ``np.float64``, a ``float`` subclass, would come back as its base), and
    anything else raises :class:`Uncacheable`."""
    kind = type(value)
    if value is None or kind in (bool, int, float, str) or isinstance(value, torch.dtype):
        return value
    if kind is torch.Tensor:
        if value.requires_grad or value.device.type != "cpu" or value.layout != torch.strided:
            raise Uncacheable(f"tensor on {value.device} / {value.layout} / requires_grad")
        return value
    if kind is np.ndarray or isinstance(value, np.generic):
        array = np.asarray(value)
        if array.dtype.kind not in _NUMPY_KINDS:
            raise Uncacheable(f"numpy dtype {array.dtype}")
        tag = "ndarray" if kind is np.ndarray else "scalar"
        return (_TAG, tag, array.dtype.str, array.shape, np.ascontiguousarray(array).tobytes())
    if kind is list:
        return [_encode(v) for v in value]
    if kind is tuple:
        if value and type(value[0]) is str and value[0] == _TAG:
            raise Uncacheable("a tuple that looks like an encoded value")
        return tuple(_encode(v) for v in value)
    if kind is dict:
        return {_encode(k): _encode(v) for k, v in value.items()}
    raise Uncacheable(f"a value of type {kind.__name__}")


def _decode(value: Any) -> Any:
    """Inverse of :func:`_encode`; :class:`ValueError` for a malformed tagged value."""
    if isinstance(value, tuple) and value and isinstance(value[0], str) and value[0] == _TAG:
        _, kind, dtype, shape, data = value
        dtype = np.dtype(dtype)
        if kind not in ("ndarray", "scalar") or dtype.kind not in _NUMPY_KINDS or not isinstance(data, bytes) \
                or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError("malformed numpy value")
        array = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
        return array if kind == "ndarray" else array[()]
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        return {_decode(k): _decode(v) for k, v in value.items()}
    return value


def encode_graph(graph: nx.DiGraph) -> bytes:
    """The IR (nodes and edges in their order, their data, ``graph.graph`` without ``path``
    and the private keys derived later) serialised with ``torch.save``. Raises
    :class:`Uncacheable` when it holds a value the format does not store."""
    from ..ops import CACHE

    nodes = []
    for node_id, data in graph.nodes(data=True):
        if set(data) - {CACHE} != set(_NODE_KEYS):
            raise Uncacheable(f"node '{node_id}' has the fields {sorted(data)}")
        nodes.append((_encode(node_id), *(_encode(data[k]) for k in _NODE_KEYS)))
    edges = [(_encode(u), _encode(v), _encode(d)) for u, v, d in graph.edges(data=True)]
    meta = {k: _encode(v) for k, v in graph.graph.items() if k != "path" and k != "order" and not k.startswith("_")}
    buffer = io.BytesIO()
    torch.save({"nodes": nodes, "edges": edges, "graph": meta}, buffer)
    return buffer.getvalue()


def decode_graph(blob: bytes, path: str) -> nx.DiGraph:
    """The IR :func:`encode_graph` wrote, with ``graph.graph["path"] = path``. Raises
    :class:`ValueError` (or what ``torch.load`` raises) unless it is a well-formed IR."""
    from ..ops import FORWARD

    data = torch.load(io.BytesIO(blob), weights_only=True)
    if not isinstance(data, dict) or set(data) != {"nodes", "edges", "graph"}:
        raise ValueError("not an encoded IR")
    graph = nx.DiGraph()
    for entry in data["nodes"]:
        node_id, kind, params, attrs, shape, source = _decode(entry)
        if not (isinstance(node_id, str) and isinstance(kind, str) and (kind == "input" or kind in FORWARD)
                and isinstance(params, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in params.items())
                and isinstance(attrs, dict) and isinstance(source, str) and isinstance(shape, tuple)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                and node_id not in graph):
            raise ValueError(f"malformed node {node_id!r}")
        graph.add_node(node_id, kind=kind, params=params, attrs=attrs, shape=shape, source=source)
    for u, v, edge in _decode(data["edges"]):
        slots = edge.get("slots") if isinstance(edge, dict) else None
        if u not in graph or v not in graph or set(edge) != {"slots"} or not isinstance(slots, list) \
                or not all(isinstance(s, int) and s >= 0 for s in slots):
            raise ValueError(f"malformed edge {u!r} -> {v!r}")
        graph.add_edge(u, v, slots=slots)
    meta = _decode(data["graph"])
    if not isinstance(meta, dict) or meta.get("input") not in graph or meta.get("output") not in graph \
            or not isinstance(meta.get("ir_dtype"), torch.dtype) or not isinstance(meta.get("model_dtype"), torch.dtype):
        raise ValueError("malformed graph attributes")
    if not nx.is_directed_acyclic_graph(graph):
        raise ValueError("the graph has a cycle")
    graph.graph.update(meta, path=path)
    return graph


# --- entries --------------------------------------------------------------------------------
@dataclass
class Entry:
    """One cache entry: where it lives, its key, the encoded IR and the passed checks
    (``box_key`` → the check's report as plain fields, oldest first)."""

    file: Path
    model_sha256: str
    fingerprint: dict[str, str]
    blob: bytes
    checks: dict[str, dict] = field(default_factory=dict)

    def report(self, key: str) -> dict | None:
        """The recorded report of the check ``key`` (see :func:`box_key`), or ``None``."""
        return self.checks.get(key)

    def record(self, key: str, report: dict) -> None:
        """Remember that the check ``key`` passed with ``report`` (plain JSON values) and
        rewrite the entry (atomically; a write that fails leaves the old entry)."""
        self.checks.pop(key, None)
        self.checks[key] = dict(report)
        while len(self.checks) > MAX_CHECKS:
            self.checks.pop(next(iter(self.checks)))
        self.write()

    def write(self) -> bool:
        """Write the entry atomically; ``False`` (and a warning) when the folder is unusable."""
        header = json.dumps({"model_sha256": self.model_sha256, "fingerprint": self.fingerprint,
                             "checks": self.checks}, sort_keys=True).encode()
        body = header + b"\n" + self.blob
        data = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
        try:
            self.file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not trusted_folder(self.file.parent) or not absent_or_regular(self.file):
                return False
            handle = tempfile.NamedTemporaryFile(dir=self.file.parent, prefix=".tmp-", suffix=SUFFIX, delete=False)
            try:
                with handle:
                    handle.write(data)
                os.replace(handle.name, self.file)
            except BaseException:
                unlink(Path(handle.name))
                raise
        except OSError as exc:
            warn_once(f"the IR cache folder {self.file.parent} is not usable ({exc.strerror or exc}); "
                      f"models are imported without the cache (set VERIFIER_CACHE_DIR or VERIFIER_NO_CACHE=1)")
            return False
        return True


def entry_file(model_sha256: str, fp: dict[str, str]) -> Path:
    """Where the entry of a model file and fingerprint lives."""
    fp_digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{model_sha256}-{fp_digest}{SUFFIX}"


def read_entry(file: Path, model_sha256: str, fp: dict[str, str]) -> Entry | None:
    """The entry in ``file`` when it is intact and has this key; ``None`` otherwise (absent,
    not a regular file, another user's or writable by others, torn, corrupt, another key).
    A FIFO or device is opened without blocking and never read."""
    data = read_private(file)
    if data is None:
        return None
    if not data.startswith(MAGIC):
        return None
    digest, _, body = data[len(MAGIC):].partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        return None
    header, _, blob = body.partition(b"\n")
    try:
        meta = json.loads(header)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("model_sha256") != model_sha256 or meta.get("fingerprint") != fp \
            or not isinstance(meta.get("checks"), dict):
        return None
    checks = {k: v for k, v in meta["checks"].items() if isinstance(k, str) and isinstance(v, dict)}
    return Entry(file, model_sha256, fp, blob, checks)


def import_cached(path: str | os.PathLike, dtype: torch.dtype | None = None,
                  use_cache: bool = True) -> tuple[nx.DiGraph, Entry | None]:
    """The IR of the ONNX file ``path`` (:func:`verifier.ir.onnx_import.import_onnx`) and its
    cache entry: read from the cache when a valid entry exists, else imported and stored.

    The entry is ``None`` when the cache is off (``use_cache=False`` or
    ``VERIFIER_NO_CACHE``), the file cannot be hashed, the model has external data, or its
    IR holds a value the format does not store. Raises what ``import_onnx`` raises
    (:class:`~verifier.errors.ModelError` and subclasses); cache problems never raise."""
    path = os.fspath(path)
    if not use_cache or disabled_by_env():
        return _import_onnx(path, dtype), None
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):  # a folder, a pipe: import_onnx says what is wrong
            return _import_onnx(path, dtype), None
        model_sha256 = file_sha256(path)
    except OSError:  # missing, unreadable: import_onnx says which
        return _import_onnx(path, dtype), None
    fp = fingerprint(dtype)
    file = entry_file(model_sha256, fp)
    if not trusted_folder(file.parent):
        return _import_onnx(path, dtype), None
    entry = read_entry(file, model_sha256, fp)
    if entry is not None:
        try:
            graph = decode_graph(entry.blob, path)
        except Exception:  # noqa: BLE001  (whatever a corrupt blob raises: a miss)
            graph = None
        if graph is not None:
            touch(file)
            return graph, entry
    graph = _import_onnx(path, dtype)
    try:
        after = os.stat(path)
        if (before.st_mtime_ns, before.st_size, before.st_ino) != (after.st_mtime_ns, after.st_size, after.st_ino) \
                or _has_external_data(path):
            return graph, None
        entry = Entry(file, model_sha256, fp, encode_graph(graph))
        decode_graph(entry.blob, path)  # what is written must read back (else every run would rewrite it)
    except Exception:  # noqa: BLE001  (Uncacheable, OSError, a value the loader refuses: not cached)
        return graph, None
    if not entry.write():
        return graph, None
    prune(file.parent)
    return graph, entry


def _import_onnx(path: str, dtype: torch.dtype | None) -> nx.DiGraph:
    """:func:`~verifier.ir.onnx_import.import_onnx`, imported here (onnx, every converter) only
    when a model is imported, never on a hit."""
    from .onnx_import import import_onnx

    return import_onnx(path, dtype)


def _has_external_data(path: str) -> bool:
    """Whether some tensor of the model (an initializer or a node attribute, in any subgraph)
    keeps its values in another file, whose changes the file's hash would not see."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    def graph_uses(graph: onnx.GraphProto) -> bool:
        tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
        for node in graph.node:
            for attr in node.attribute:
                tensors += [attr.t] if attr.HasField("t") else []
                tensors += list(attr.tensors)
                if (attr.HasField("g") and graph_uses(attr.g)) or any(graph_uses(g) for g in attr.graphs):
                    return True
        return any(uses_external_data(t) for t in tensors)

    return graph_uses(onnx.load(path, load_external_data=False).graph)
