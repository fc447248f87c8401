"""Writing results safely: output paths checked before any work, files written atomically.

Every result file, CSV row, JSON record and checkpoint the project writes goes through
this module, so that a reader never sees a torn file:

- :func:`check_output_file` / :func:`check_output_dir` / :func:`check_creatable_dir` validate
  a path the user named *before* the expensive work starts (a verdict is never lost to a bad
  ``--result-file``); the file or folder an option names may be created, the folder it goes
  in must exist,
  and :func:`check_not_an_input` refuses an output path that names one of the inputs;
- :func:`write_atomic` writes a temporary file in the same folder, flushes and fsyncs it,
  then renames it over the target (``os.replace`` is atomic on POSIX and Windows): the
  target holds either the old or the new content, never a mix of two writers;
- :func:`append_line` appends one complete line with a single ``write`` on an
  ``O_APPEND`` descriptor, so a row is complete or absent (a reader resuming after a kill
  also drops a last line without its newline, see :func:`read_complete_lines`).
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Callable

from .errors import VerifierInputError


def _not_regular(path: str) -> str | None:
    """What ``path`` is when it exists (following symlinks) but is not a regular file
    (``'a folder'``, ``'a device'``, ``'a FIFO'``, ``'a socket'``), else ``None``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None  # absent (or a dangling symlink): a new file is created
    except OSError as exc:
        return f"not accessible ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_file(path: str | os.PathLike, option: str) -> str:
    """Refuse ``path`` unless a regular file can be created or replaced there.

    Raises :class:`VerifierInputError` (naming ``option``) when the path is empty, when
    it exists (a symlink is followed) and is not a regular file (a folder, a device such
    as ``/dev/null``, a FIFO, a socket: :func:`write_atomic` would replace the node by a
    file), when its folder does not exist, or when a file cannot be created in that folder
    (checked by creating and removing a temporary file, so read-only or virtual file
    systems such as ``/proc`` are refused too). Returns ``path`` as ``str``.
    """
    path = os.fspath(path)
    if not path:
        raise VerifierInputError(f"{option}: empty path (give a file name)")
    what = _not_regular(path)
    if what == "a folder":
        raise VerifierInputError(f"{option} {path}: is a folder; give a file path")
    if what is not None:
        raise VerifierInputError(f"{option} {path}: is {what}; give a regular file path "
                                 f"(it would be replaced by the result file)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise VerifierInputError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VerifierInputError(f"{option} {path}: folder {folder} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise VerifierInputError(f"{option} {path}: file is not writable")
    _probe(folder, f"{option} {path}")  # what write_atomic will do: a temporary file in that folder
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths ``a`` and ``b`` name one file: ``os.path.samefile`` (same device and
    inode: symlinks and hard links included) when both exist, else equal resolved paths
    (``os.path.realpath``, symlinks followed as far as they exist)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:  # unreadable metadata: fall back to the names
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_not_an_input(path: str | os.PathLike, option: str,
                       inputs: "list[tuple[str, str | os.PathLike]]") -> None:
    """Refuse an output ``path`` that is one of the command's ``inputs`` (``(what, path)``
    pairs, e.g. ``("the input model", "net.onnx")``): writing it would destroy that input.

    Compares with :func:`same_file`. Raises :class:`VerifierInputError`
    (``"--result-file X is the input model; give another path"``) naming ``option`` and the
    first input it names."""
    for what, source in inputs:
        if same_file(path, source):
            raise VerifierInputError(f"{option} {os.fspath(path)} is {what}; give another path")


def check_output_dir(path: str | os.PathLike, option: str, create: bool = True) -> str:
    """Refuse ``path`` unless it is (or, with ``create``, can become) a writable folder.

    The rule of every output path of the command line: what the option names may be
    created, the folder it goes in must already exist (as for :func:`check_output_file`;
    a mistyped parent is refused, not built). A missing ``path`` whose parent folder exists
    is created (one level, ``os.mkdir``) when ``create``; a missing parent, a path that is a
    file, or a folder in which no file can be created (probed with a temporary file:
    read-only or virtual file systems such as ``/proc``) raises :class:`VerifierInputError`
    naming ``option``. Returns ``path`` as ``str``.
    """
    path = check_creatable_dir(path, option)
    if not os.path.exists(path):
        if not create:
            raise VerifierInputError(f"{option} {path}: folder does not exist")
        try:
            os.mkdir(path)
        except FileExistsError:  # created meanwhile by a concurrent run: checked again below
            check_creatable_dir(path, option)
        except OSError as exc:
            raise VerifierInputError(f"{option} {path}: cannot create the folder ({exc.strerror})") from None
    _probe(path, f"{option} {path}")
    return path


def check_creatable_dir(path: str | os.PathLike, option: str) -> str:
    """Refuse ``path`` unless it is a writable folder or can be created as one in an existing
    writable folder (its parent); creates nothing (a run checks its output folder before any
    work and creates it afterwards with :func:`check_output_dir`).

    Raises :class:`VerifierInputError` naming ``option`` for an empty path, a path that is a
    file (or lies below one), a folder that is not writable, and a missing parent folder
    (``--out runs/a``: ``runs`` must exist). Returns ``path`` as ``str``."""
    path = os.fspath(path)
    if not path:
        raise VerifierInputError(f"{option}: empty path (give a folder)")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise VerifierInputError(f"{option} {path}: is a file; give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise VerifierInputError(f"{option} {path}: folder is not writable")
        return path
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(parent):
        above = parent
        while not os.path.exists(above):
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise VerifierInputError(f"{option} {path}: {above} is a file, so the folder cannot be created")
        raise VerifierInputError(f"{option} {path}: folder {parent} does not exist (create it first, or name a "
                                 f"folder in an existing one)")
    if not os.path.isdir(parent):
        raise VerifierInputError(f"{option} {path}: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VerifierInputError(f"{option} {path}: cannot create the folder ({parent} is not writable)")
    return path


def _probe(folder: str, where: str) -> None:
    """Create and remove a temporary file in ``folder`` (what :func:`write_atomic` does),
    so that read-only and virtual file systems (``/proc``) are refused up front."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".verifier.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise VerifierInputError(f"{where}: cannot create a file in {folder} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def write_atomic(path: str | os.PathLike, data: str | bytes | Callable[[str], None]) -> None:
    """Replace ``path`` atomically with ``data``.

    ``data`` is text (written as UTF-8), bytes, or a function that writes the content to
    the temporary path it is given (e.g. ``lambda tmp: torch.save(obj, tmp)``). The
    temporary file lives in the target's folder (same file system), is fsynced, then
    renamed over the target; on any failure it is removed and the target is untouched.
    Raises ``OSError`` from the file system, and ``IsADirectoryError``/``OSError`` when
    ``path`` exists and is not a regular file (a device, FIFO or socket is never replaced;
    callers refuse such paths up front with :func:`check_output_file`).
    """
    path = os.fspath(path)
    what = _not_regular(path)
    if what is not None:
        raise OSError(f"{path} is {what}; refusing to replace it with a file")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        if callable(data):
            os.close(fd)
            fd = -1
            data(tmp)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            payload = data.encode("utf-8") if isinstance(data, str) else data
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; keep the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mode_for(path: str) -> int:
    """The replaced file's permission bits, or ``0o666`` less the umask for a new file."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` (a newline is added if missing) with one ``write`` on an
    ``O_APPEND`` descriptor and fsync it: concurrent appenders never interleave inside a
    line, and a kill leaves the row complete or absent (barring a torn disk write, which
    :func:`read_complete_lines` drops)."""
    if not line.endswith("\n"):
        line += "\n"
    payload = line.encode("utf-8")
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, payload)
        if written != len(payload):  # pragma: no cover - only on a full disk
            raise OSError(f"short write to {path}: {written} of {len(payload)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_complete_lines(path: str | os.PathLike, encoding: str = "utf-8") -> tuple[list[str], bool]:
    """The newline-terminated lines of ``path`` (without their newline) and whether a
    cut last line (no newline: a write interrupted by a kill) was dropped.

    Raises ``UnicodeDecodeError`` for text that is not ``encoding``, ``OSError`` from
    the file system."""
    with open(os.fspath(path), "rb") as fh:
        raw = fh.read()
    text = raw.decode(encoding)
    lines = text.split("\n")
    cut = lines[-1] != ""
    return lines[:-1], cut
