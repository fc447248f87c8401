"""Reading a proof certificate: one zip archive holding ``index.json`` and numpy arrays
(``<key>.npy``, read with ``allow_pickle=False``). The layout is documented in
docs/proofs.md; :data:`FORMAT` names its version."""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import zipfile
import zlib
from typing import Callable

import numpy as np

FORMAT = "verifier-proof/1"
# what reading a damaged member raises: truncated, bad CRC or deflate stream, an encrypted or
# unsupported compression (RuntimeError, NotImplementedError)
UNREADABLE = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)
MAX_MEMBER_BYTES = 4 << 30  # one array of a certificate (the largest real ones are a few MB)
CLAIM_TOLERANCE = 1e-6  # re-derived bounds may fall this far (relative) below the claims: the refutation margin
CLAIM_TOLERANCE_FLOAT32 = 1e-4  # claims computed in float32 (verify --dtype float32) are that much less precise



def _npy_header(stream, size: int) -> tuple[int, ...]:
    """The shape an ``.npy`` member of ``size`` bytes declares, its header read from
    ``stream`` (left after the header); ``ValueError`` for a format other than 1.0/2.0, an
    object dtype, or a header whose shape and dtype do not account for the bytes stored."""
    version = np.lib.format.read_magic(stream)
    header = {(1, 0): np.lib.format.read_array_header_1_0,
              (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if header is None:
        raise ValueError(f"npy format version {version} (1.0 or 2.0 expected)")
    shape, _, dtype = header(stream)
    if dtype.hasobject or math.prod(shape) * dtype.itemsize != size - stream.tell():
        raise ValueError(f"its header declares {shape} {dtype}, which is not the {size} bytes stored")
    return tuple(shape)

class CertificateError(ValueError):
    """The file is not a readable certificate of this format (the message says why)."""


class CertificateUnreadable(CertificateError):
    """A member of the archive is not a readable numpy array (corrupt bytes, a header that
    disagrees with the stored size, an object array): the file is not a certificate, as
    an unreadable index is (``check-proof`` refuses it, exit 2)."""


class CertificateMalformed(CertificateError):
    """The certificate's index or arrays do not have the structure of the format (a
    missing key or array, a value of the wrong type, an array of the wrong shape or
    dtype): not a certificate either (``check-proof`` refuses it, exit 2). A well-formed
    certificate whose bound or cover fails is :class:`LeafFailed` instead (exit 1)."""


INTEGER_ARRAYS = (".dim", ".left", ".right", ".rows", ".signs", ".trusted", ".sel", ".dom")  # every other key: float


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _need(ok: bool, where: str, value, what: str) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise CertificateMalformed(f"index.json: {where} is {shown}, not {what}")


def validate_index(index: dict) -> None:
    """Check the index's structure (docs/proofs.md, "The file"): every key the checker
    reads is present with its type. Raises :class:`CertificateMalformed` naming the first
    key that is missing or of the wrong type and what it should be."""
    def text(where: str, value) -> None:
        _need(isinstance(value, str), where, value, "a string")

    for key in ("tool", "result"):
        text(key, index.get(key))
    for key in ("model", "spec"):
        entry = index.get(key)
        _need(isinstance(entry, dict), key, entry, 'an object {"file": …, "sha256": …}')
        for field in ("file", "sha256"):
            text(f"{key}.{field}", entry.get(field))
    _need(isinstance(index.get("certified"), bool), "certified", index.get("certified"), "true or false")
    reasons = index.get("uncertified")
    _need(isinstance(reasons, list) and all(isinstance(x, str) for x in reasons), "uncertified", reasons,
          "a list of strings")
    _need(index.get("claims_dtype") in ("float32", "float64"), "claims_dtype", index.get("claims_dtype"),
          '"float32" or "float64"')
    regions = index.get("regions")
    _need(isinstance(regions, list), "regions", regions, "a list")
    for n, entry in enumerate(regions):
        at = f"regions[{n}]"
        _need(isinstance(entry, dict), at, entry, "an object")
        _need(_is_count(entry.get("index")), f"{at}.index", entry.get("index"), "an integer ≥ 0")
        kind = entry.get("kind")
        _need(kind in ("box-tree", "relu-split"), f"{at}.kind", kind, '"box-tree" or "relu-split"')
        if kind == "box-tree":
            _need(_is_count(entry.get("nodes")), f"{at}.nodes", entry.get("nodes"), "an integer ≥ 0")
            continue
        for key in ("relus", "intermediate", "pools"):
            value = entry.get(key)
            _need(isinstance(value, list) and all(_is_count(x) for x in value), f"{at}.{key}", value,
                  "a list of integers ≥ 0")
        disjuncts = entry.get("disjuncts")
        _need(isinstance(disjuncts, list), f"{at}.disjuncts", disjuncts, "a list")
        for m, item in enumerate(disjuncts):
            where = f"{at}.disjuncts[{m}]"
            _need(isinstance(item, dict), where, item, "an object")
            for key in ("index", "leaves", "lp_leaves", "trusted_leaves"):
                _need(_is_count(item.get(key)), f"{where}.{key}", item.get(key), "an integer ≥ 0")
            _need(item.get("milp") is None or isinstance(item.get("milp"), str), f"{where}.milp", item.get("milp"),
                  "null or a string")
            if "lp_tree" in item:
                _lp_tree(item, f"{where}.lp_tree")
        indices = [item["index"] for item in disjuncts]
        _need(len(set(indices)) == len(indices), f"{at}.disjuncts", indices, "disjuncts of distinct indices")
    seen = [entry["index"] for entry in regions]
    _need(len(set(seen)) == len(seen), "regions", seen, "regions of distinct indices")


def _lp_tree(item: dict, where: str) -> None:
    """Check a disjunct's ``lp_tree`` record (the LP branch-and-bound that replaced the MILP,
    :mod:`verifier.proof.milp_tree`) against the disjunct's own counts: ``nodes`` LPs solved
    (``≥ 1``: the root is never covered by the search's leaves, or no tree is built),
    ``covered`` nodes closed by the search's leaves (``0``: none of them is kept, so
    ``leaves`` and ``trusted_leaves`` are 0 and every one of the ``1..nodes`` LP leaves is
    the tree's)."""
    tree = item["lp_tree"]
    _need(isinstance(tree, dict), where, tree, 'an object {"nodes": …, "covered": …, "seconds": …}')
    for key in ("nodes", "covered"):
        _need(_is_count(tree.get(key)), f"{where}.{key}", tree.get(key), "an integer ≥ 0")
    seconds = tree.get("seconds")
    _need(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
          and seconds >= 0, f"{where}.seconds", seconds, "a number ≥ 0")
    _need(tree["nodes"] >= 1, f"{where}.nodes", tree["nodes"], "≥ 1 (the tree solves its root's LP)")
    if tree["covered"] == 0:
        parent = where.rsplit(".", 1)[0]
        for key in ("leaves", "trusted_leaves"):
            _need(item[key] == 0, f"{parent}.{key}", item[key], f"0 (its lp_tree covered nothing with the search's "
                                                                 f"leaves, so none are kept)")
        _need(1 <= item["lp_leaves"] <= tree["nodes"], f"{parent}.lp_leaves", item["lp_leaves"],
              f"from 1 to its lp_tree.nodes {tree['nodes']} (one LP leaf per LP at most)")


# A region's arrays, by name after "r<index>.": (pattern, its region kind, the index key that counts them)
STORED = ((r"tree\.(?:dim|mid|left|right|claims)", "box-tree", None), (r"final\.lower", "relu-split", None),
          (r"(?:claims\.[lu]|final\.alpha)(\d+)", "relu-split", "relus"),
          (r"pool(\d+)\.(?:sel|dom)", "relu-split", "pools"),
          (r"inter(\d+)\.(?:rows|alpha(\d+))", "relu-split", "intermediate"),
          (r"d(\d+)\.lp\.(?:signs|theta|dual|lower)", "relu-split", "lp_leaves"),
          (r"d(\d+)\.trusted", "relu-split", "trusted_leaves"),
          (r"d(\d+)\.(?:signs|alpha|beta|lower)", "relu-split", "leaves"))


def _not_called_for(n: int, entry: dict, name: str) -> str | None:
    """``None`` when region ``entry`` (``regions[n]``) calls for an array ``r<index>.<name>``,
    else the index key (and its value) that does not: :data:`STORED`."""
    for pattern, kind, key in STORED:
        part = re.fullmatch(pattern, name)
        if part is None:
            continue
        if entry["kind"] != kind:
            return f"regions[{n}].kind is {entry['kind']!r}"
        if key is None:
            return None
        number = int(part[1])
        if key in ("relus", "pools", "intermediate"):
            ok = number < len(entry[key]) if key != "intermediate" else \
                number in entry[key] and (part[2] is None or int(part[2]) < number)
            return None if ok else f"regions[{n}].{key} is {entry[key]!r}"
        if not any(item["index"] == number for item in entry["disjuncts"]):
            return f"regions[{n}].disjuncts has no disjunct {number}"
        return None  # its length must equal the disjunct's count: check_counts
    return f"regions[{n}] calls for no array of that name"


def check_stored(index: dict, names: list[str]) -> None:
    """Every array among the archive's members ``names`` (``<key>.npy``) must be one that a
    list of the (validated) index calls for: not the arrays of a ReLU, max-pool or
    intermediate pass the index does not list, nor those of a region or disjunct it does
    not have. Raises :class:`CertificateMalformed` naming the index key and the array."""
    regions = {entry["index"]: (n, entry) for n, entry in enumerate(index["regions"])}
    for member in names:
        if not member.endswith(".npy"):
            continue
        key = member[:-4]
        found = re.fullmatch(r"r(\d+)\.(.+)", key)
        if found is None:
            why = "no region's arrays are named so"
        elif int(found[1]) not in regions:
            why = f"regions has no region {int(found[1])}"
        else:
            why = _not_called_for(*regions[int(found[1])], found[2])
        if why is not None:
            raise CertificateMalformed(f"index.json: {why}, but array '{key}' is stored")


TREE_ARRAYS = ("dim", "mid", "left", "right", "claims")  # r<i>.tree.<name>: one row per node
LEAF_ARRAYS = {"leaves": ("signs", "alpha", "beta", "lower"),  # r<i>.d<j>.<name>: one row per leaf of the kind
               "lp_leaves": ("lp.signs", "lp.theta", "lp.dual", "lp.lower"), "trusted_leaves": ("trusted",)}


def check_counts(index: dict, shape: Callable[[str], tuple[int, ...] | None]) -> None:
    """Every count of the (validated) index equals the length (first axis) of each array it
    counts: a ``box-tree`` region's ``nodes`` those of its tree arrays, a disjunct's
    ``leaves``, ``lp_leaves`` and ``trusted_leaves`` those of its leaf arrays of that kind
    (:data:`LEAF_ARRAYS`; a count of 0 with no such array stored is fine), whether or not
    the checker reads them later (a disjunct closed at the root, or left to HiGHS).
    ``shape(key)``: a stored array's shape, ``None`` when it is not stored. Raises
    :class:`CertificateMalformed` naming the index key and the array."""
    for n, entry in enumerate(index["regions"]):
        r, at = entry["index"], f"regions[{n}]"
        if entry["kind"] == "box-tree":
            groups = [(f"{at}.nodes", entry["nodes"], [f"r{r}.tree.{name}" for name in TREE_ARRAYS])]
        else:
            groups = [(f"{at}.disjuncts[{m}].{key}", item[key], [f"r{r}.d{item['index']}.{name}" for name in names])
                      for m, item in enumerate(entry["disjuncts"]) for key, names in LEAF_ARRAYS.items()]
        for where, count, keys in groups:
            for key in keys:
                found = shape(key)
                if found is None and count == 0:
                    continue
                held = "is missing" if found is None else f"has shape {found}" if not found else f"has {found[0]} rows"
                if found is None or not found or found[0] != count:
                    raise CertificateMalformed(f"index.json: {where} is {count}, but array '{key}' {held}")


class LeafFailed(Exception):
    """A leaf (or the cover) does not check; the message names it and why."""


def below_claim(found: np.ndarray, claim: np.ndarray, tolerance: float = CLAIM_TOLERANCE) -> np.ndarray:
    """Where a re-derived lower bound falls short of the certificate's claim (NaN claims:
    none made) by more than ``tolerance · (1 + |claim|)`` (:data:`CLAIM_TOLERANCE`, or
    :data:`CLAIM_TOLERANCE_FLOAT32` for float32 claims). Not a soundness matter (a leaf is
    closed only by the checker's own bound); it rejects certificates whose parameters do
    not give what they claim; a claim of ``+∞`` needs a bound of ``+∞``."""
    with np.errstate(invalid="ignore"):
        short = found < claim - tolerance * (1 + np.abs(claim))  # NaN (False) for a claim of +∞
        return ~np.isnan(claim) & (short | (np.isposinf(claim) & ~(found >= claim)))


class Certificate:
    """The index (a dict) and lazy access to the arrays by key."""

    def __init__(self, path: str):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise CertificateError(f"cannot read the certificate {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):  # a folder, FIFO or device: never opened (a FIFO would block)
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise CertificateError(f"the certificate {path} is {kind}; give the .proof file verify --proof wrote")
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
            index = json.loads(self._read("index.json").decode("utf-8"))
        except (*UNREADABLE, KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            # RecursionError (a RuntimeError): JSON nested beyond Python's recursion limit
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise CertificateError(f"{path} is not a proof certificate ({reason})") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise CertificateError(f"{path}: format {index.get('format') if isinstance(index, dict) else None!r} "
                                   f"is not {FORMAT!r}")
        try:
            validate_index(index)
            check_stored(index, self._zip.namelist())
            check_counts(index, self.shape)
        except CertificateMalformed as exc:
            raise CertificateMalformed(f"{path} is a malformed certificate: {exc}; give the certificate "
                                       f"verify --proof wrote") from None
        self.index = index
        self.tolerance = 1e-6  # how far re-derived bounds may fall below the claims (set by the checker)

    def array(self, key: str) -> np.ndarray:
        """The array stored under ``key``: :class:`CertificateMalformed` if it is missing or of
        the wrong kind (integers for split indices, signs, rows and max-pool parameters,
        floats for everything else), :class:`CertificateUnreadable` if it cannot be read."""
        try:
            data = self._read(f"{key}.npy")
        except KeyError:
            raise CertificateMalformed(f"array '{key}' is missing") from None
        except UNREADABLE as exc:
            raise CertificateUnreadable(f"{self.path}: member {key}.npy cannot be read ({exc}); give the certificate "
                                        f"verify --proof wrote") from None
        try:
            stream = io.BytesIO(data)
            _npy_header(stream, len(data))
            stream.seek(0)
            value = np.load(stream, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise CertificateUnreadable(f"{self.path}: array '{key}' is not a readable .npy array ({exc}); give the "
                                        f"certificate verify --proof wrote") from None
        integer = key.endswith(INTEGER_ARRAYS)
        if value.dtype.kind not in ("iu" if integer else "f"):
            raise CertificateMalformed(f"array '{key}' holds {value.dtype} values, not "
                                       f"{'integers' if integer else 'floats'}")
        return value

    def _read(self, member: str) -> bytes:
        """One member's bytes; :class:`CertificateError` for a member larger than
        :data:`MAX_MEMBER_BYTES` (its declared size, checked before anything is read)."""
        size = self._zip.getinfo(member).file_size
        if size > MAX_MEMBER_BYTES:
            raise CertificateUnreadable(f"{self.path}: member {member} declares {size} bytes (at most "
                                        f"{MAX_MEMBER_BYTES} in a certificate)")
        return self._zip.read(member)

    def shape(self, key: str) -> tuple[int, ...] | None:
        """The shape an array ``key`` declares in its ``.npy`` header (nothing else is read),
        ``None`` when it is not stored; :class:`CertificateUnreadable` for a header that
        cannot be read or disagrees with the member's size (as :meth:`array`)."""
        if not self.has(key):
            return None
        try:
            with self._zip.open(f"{key}.npy") as stream:
                return _npy_header(stream, self._zip.getinfo(f"{key}.npy").file_size)
        except UNREADABLE as exc:
            raise CertificateUnreadable(f"{self.path}: member {key}.npy cannot be read ({exc}); give the certificate "
                                        f"verify --proof wrote") from None
        except ValueError as exc:
            raise CertificateUnreadable(f"{self.path}: array '{key}' is not a readable .npy array ({exc}); give the "
                                        f"certificate verify --proof wrote") from None

    def has(self, key: str) -> bool:
        """Whether an array ``key`` is stored."""
        return f"{key}.npy" in self._zip.namelist()
