"""Reading a proof certificate: one zip archive holding ``index.json`` and numpy arrays
(``<key>.npy``, read with ``allow_pickle=False``). The layout is documented in
docs/proofs.md; :data:`FORMAT` names its version."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

FORMAT = "verifier-proof/1"


class CertificateError(ValueError):
    """The file is not a readable certificate of this format (the message says why)."""


class Certificate:
    """The index (a dict) and lazy access to the arrays by key."""

    def __init__(self, path: str):
        try:
            self._zip = zipfile.ZipFile(path)
            index = json.loads(self._zip.read("index.json").decode("utf-8"))
        except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CertificateError(f"{path} is not a proof certificate ({exc})") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise CertificateError(f"{path}: format {index.get('format') if isinstance(index, dict) else None!r} "
                                   f"is not {FORMAT!r}")
        self.index, self.path = index, path
        self.tolerance = 1e-6  # how far re-derived bounds may fall below the claims (set by the checker)

    def array(self, key: str) -> np.ndarray:
        """The array stored under ``key``; :class:`CertificateError` if it is missing or unreadable."""
        try:
            return np.load(io.BytesIO(self._zip.read(f"{key}.npy")), allow_pickle=False)
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise CertificateError(f"{self.path}: array '{key}' is missing or unreadable ({exc})") from None

    def has(self, key: str) -> bool:
        """Whether an array ``key`` is stored."""
        return f"{key}.npy" in self._zip.namelist()
