"""The folder of the IR cache (:mod:`verifier.ir.cache`): where it is, whether it and an
entry in it can be trusted, reading an entry's bytes without blocking on a FIFO, and pruning.

The cache trusts the folder's ownership and permissions, not the bytes in it (an entry's
digest catches tearing, not forgery): see :mod:`verifier.ir.cache` and README's "The IR
cache". Only files named as the cache names them (:data:`ENTRY`, :data:`TEMPORARY`) are ever
deleted; FIFOs, devices, folders and symlinks are never read, replaced nor deleted.
"""

from __future__ import annotations

import os
import re
import stat
import time
import warnings
from pathlib import Path

SUFFIX = ".ir"
MAX_ENTRIES = 256
MAX_BYTES = 1 << 30
ENTRY = re.compile(r"[0-9a-f]{64}-[0-9a-f]{16}" + re.escape(SUFFIX))  # the names entry_file gives
# Entry.write's NamedTemporaryFile(prefix=".tmp-", suffix=SUFFIX): tempfile draws 8 of [a-z0-9_]
TEMPORARY = re.compile(r"\.tmp-[a-z0-9_]{8}" + re.escape(SUFFIX))


def cache_dir() -> Path:
    """``$VERIFIER_CACHE_DIR``, else ``$XDG_CACHE_HOME/verifier``, else ``~/.cache/verifier``
    (the folder need not exist yet). A relative ``VERIFIER_CACHE_DIR`` or ``XDG_CACHE_HOME``
    is ignored with a warning (XDG Base Directory specification: relative paths are
    invalid), so the result does not depend on the current directory."""
    explicit = os.environ.get("VERIFIER_CACHE_DIR", "")
    if explicit:
        folder = Path(explicit).expanduser()
        if folder.is_absolute():
            return folder
        warn_once(f"VERIFIER_CACHE_DIR={explicit} is a relative path, which is ignored (give an absolute "
                  f"path, as XDG requires of XDG_CACHE_HOME)")
    base = os.environ.get("XDG_CACHE_HOME", "")
    if base and not os.path.isabs(base):
        warn_once(f"XDG_CACHE_HOME={base} is a relative path, which is ignored (the XDG specification "
                  f"requires an absolute one)")
        base = ""
    return Path(base or os.path.join(os.path.expanduser("~"), ".cache")) / "verifier"


def _owner() -> int | None:
    """The user id that must own the cache folder and entries (``None`` where the system has
    no user ids; no ownership checks there)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def _distrust(info: os.stat_result, what: str) -> str | None:
    """Why a folder or entry with the status ``info`` may hold another user's data (owned by
    someone else, or writable by group or others: for a folder, without the sticky bit), or
    ``None``."""
    owner = _owner()
    if owner is None:
        return None
    if info.st_uid != owner:
        return f"{what} is owned by user id {info.st_uid}, not by you ({owner})"
    if info.st_mode & 0o022 and not (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
        return f"other users can write {what} (mode {oct(info.st_mode & 0o7777)})"
    return None


def trusted_folder(folder: Path) -> bool:
    """Whether the cache may use ``folder``: ``False`` (and one warning) when it exists and
    :func:`_distrust` objects; ``True`` otherwise (an absent or unusable path misses and
    warns elsewhere)."""
    try:
        info = os.stat(folder)
    except OSError:
        return True
    why = _distrust(info, f"the IR cache folder {folder}") if stat.S_ISDIR(info.st_mode) else None
    if why:
        warn_once(f"{why}; it is not used, since another user could plant entries that change verdicts, and "
                  f"models are imported without the cache (chmod 700 it, or set VERIFIER_CACHE_DIR to a "
                  f"private folder)")
    return why is None


def absent_or_regular(file: Path) -> bool:
    """Whether ``file`` is absent or a regular file (not a symlink, FIFO, device or folder,
    which are never ours to replace). Raises ``OSError`` when it cannot be examined."""
    try:
        return stat.S_ISREG(os.lstat(file).st_mode)
    except FileNotFoundError:
        return True


def read_private(file: Path) -> bytes | None:
    """The bytes of ``file`` when it is a regular file (not a symlink) the user owns and group
    and others cannot write; ``None`` otherwise or when it cannot be read. A FIFO or device
    is opened without blocking (``O_NONBLOCK``) and never read."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(file, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or _distrust(info, "the entry"):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def prune(folder: Path, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
    """Delete the least recently used entries beyond ``max_entries`` or ``max_bytes``, and
    temporary files older than an hour (left by killed writers). Only regular files of the
    user named as the cache names them (:data:`ENTRY`, :data:`TEMPORARY`) are counted or
    deleted; anything else in ``folder`` is left alone."""
    entries, owner = [], _owner()
    try:
        for item in os.scandir(folder):
            try:
                if not item.is_file(follow_symlinks=False):
                    continue
                info = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if owner is not None and info.st_uid != owner:
                continue
            if TEMPORARY.fullmatch(item.name):
                if info.st_mtime < time.time() - 3600:
                    unlink(Path(item.path))
            elif ENTRY.fullmatch(item.name):
                entries.append((info.st_mtime, info.st_size, Path(item.path)))
    except OSError:
        return
    entries.sort(reverse=True)  # newest first
    total = 0
    for index, (_, size, file) in enumerate(entries):
        total += size
        if index >= max_entries or total > max_bytes:
            unlink(file)


def touch(file: Path) -> None:
    """Mark ``file`` as just used (its modification time, which :func:`prune` orders by);
    errors are ignored."""
    try:
        os.utime(file)
    except OSError:
        pass


def unlink(file: Path) -> None:
    """Delete ``file``; errors (already gone, not permitted) are ignored."""
    try:
        file.unlink()
    except OSError:
        pass


_WARNED: set[str] = set()  # the messages already given
# starts every cache warning: the command line, which hides library warnings, shows these
# (verifier.cli.CACHE_WARNING is the same text; it cannot import this module before torch)
WARNING_PREFIX = "IR cache: "


def warn_once(message: str) -> None:
    """Warn (``RuntimeWarning``, the text :data:`WARNING_PREFIX` + ``message``) unless this
    process already did."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(WARNING_PREFIX + message, RuntimeWarning, stacklevel=3)
