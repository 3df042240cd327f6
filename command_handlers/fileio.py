"""Canvas files: the limited read, the atomic save with a ``.bak`` backup, the on-disk check.

The JSON Canvas model (:mod:`command_handlers.canvas`) is pure data; this
module is where canvases meet the disk. :func:`read_canvas` refuses special
and oversized files before parsing, :func:`save_canvas` replaces a file
atomically (fsynced, after copying the old bytes to ``<name>.bak``) and
:func:`changed_on_disk` compares the file with the bytes the canvas was read
from or last saved as.

Example::

    canvas = read_canvas("notes.canvas")
    ...  # add answers to the canvas
    if not changed_on_disk(canvas):
        save_canvas(canvas)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
import time
from pathlib import Path

from command_handlers.canvas import DEFAULT_MAX_BYTES, Canvas, CanvasError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "changed_on_disk",
    "read_canvas",
    "remove_stale_temporaries",
    "save_atomic",
    "save_canvas",
]


def read_canvas(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Canvas:
    """Read, parse and validate a ``.canvas`` file.

    Args:
        path: The file to read.
        max_bytes: Refuse files larger than this many bytes.

    Returns:
        The canvas, remembering ``path`` and a stamp of the bytes read.

    Raises:
        CanvasError: The file is missing, not a regular file, too large or
            unreadable, or holds no valid canvas; the message starts with
            the path.
    """
    file_path = Path(path)
    raw = _read_limited(file_path, max_bytes)
    try:
        return Canvas.from_json(raw, path=file_path)
    except CanvasError as exc:
        raise CanvasError(f"{file_path}: {exc}") from None


def save_canvas(
    canvas: Canvas, target: str | os.PathLike[str] | None = None, *, backup: bool = True
) -> Path | None:
    """Write a canvas atomically with :func:`save_atomic`.

    Afterwards the canvas's :attr:`~Canvas.path` and
    :attr:`~Canvas.source_digest` describe the written file.

    Args:
        canvas: The canvas to write.
        target: Where to write; None for the canvas's :attr:`~Canvas.path`.
        backup: Whether to copy the previous file to ``<name>.bak`` first.

    Returns:
        The backup's path, or None if no backup was made.

    Raises:
        CanvasError: No target was given and the canvas has no path.
        OSError: The file could not be written (it is then untouched).
    """
    path = canvas.path if target is None else Path(target)
    if path is None:
        raise CanvasError("no path to save the canvas to")
    raw = canvas.to_json().encode("utf-8")
    backup_path = save_atomic(path, raw, backup=backup)
    canvas.record_source(raw, path)
    return backup_path


def changed_on_disk(canvas: Canvas) -> bool:
    """Tell whether a canvas's file changed since it was read or last saved.

    Args:
        canvas: A canvas read with :func:`read_canvas` or saved with :func:`save_canvas`.

    Returns:
        True if the file at the canvas's :attr:`~Canvas.path` now holds other
        bytes, or is gone or unreadable; False if it holds exactly the bytes
        read or saved.

    Raises:
        CanvasError: The canvas has no path (it was not read or saved).
    """
    path, size = canvas.path, canvas.source_size
    if path is None or size is None:
        raise CanvasError("the canvas was not loaded from or saved to a file")
    try:
        if os.stat(path).st_size != size:  # cheap, and settles most changes
            return True
        current = path.read_bytes()
    except OSError:
        return True
    return hashlib.sha256(current).hexdigest() != canvas.source_digest


def save_atomic(
    path: str | os.PathLike[str], text: str | bytes, *, backup: bool = True
) -> Path | None:
    """Replace a file's content atomically, keeping a backup of the previous content.

    If ``backup`` is true and the file exists, its bytes are first copied
    (atomically as well) to ``<name>.bak`` beside it, e.g. ``notes.canvas.bak``.
    The new content goes to a temporary file in the same folder, is flushed and
    fsynced, and is moved onto the target with :func:`os.replace`; the folder is
    then fsynced where the platform allows it. A symbolic link is followed: the
    file it points at is replaced. An existing file's permission bits are kept.

    Args:
        path: The file to write.
        text: The new content; a ``str`` is written as UTF-8.
        backup: Whether to copy the previous content to ``<name>.bak`` first.

    Returns:
        The path of the backup, or None if none was made (``backup`` false or
        no previous file).

    Raises:
        OSError: The backup or the file could not be written. The original
            file is then untouched and no temporary file is left behind.
        UnicodeEncodeError: ``text`` holds characters UTF-8 cannot encode
            (lone surrogates).
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    backup_path = None
    if backup and mode is not None:
        backup_path = target.with_name(target.name + ".bak")
        _write_atomic(backup_path, target.read_bytes(), mode)
    _write_atomic(target, data, mode)
    return backup_path


#: Seconds after which a temporary file of ours, untouched, is stale whoever wrote it.
STALE_TEMPORARY_SECONDS = 3600.0


def _temporary_name(target: Path) -> Path:
    """A fresh temporary name beside ``target``: ``.<name>.<pid>-<8 hex>.tmp``.

    The writer's pid in the name tells a later run whether the file's writer
    still runs (see :func:`remove_stale_temporaries`).
    """
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files a killed run left beside ``target`` and its backup.

    Only files named as :func:`save_atomic` names them are looked at
    (``.<name>.<pid>-<8 hex>.tmp``, and ``.<name>.<8 hex>.tmp`` of earlier
    versions): those whose writing process no longer runs, and those untouched
    for :data:`STALE_TEMPORARY_SECONDS`. A file being written by a live
    process is left alone. Nothing is raised: a file that cannot be removed stays.

    Args:
        target: The file whose temporaries to remove (a canvas).

    Returns:
        The files removed.
    """
    path = Path(target)
    names = {path.name, path.name + ".bak"}
    pattern = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[0-9a-f]{8}\.tmp$")
    removed = []
    try:
        entries = list(os.scandir(path.parent if str(path.parent) else "."))
    except OSError:
        return []
    now = time.time()
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or match["name"] not in names:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            pid = int(match["pid"]) if match["pid"] else None
            if (pid is None or _running(pid)) and now - info.st_mtime < STALE_TEMPORARY_SECONDS:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _running(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (ours counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or no way to tell: assume it runs
        return True
    return True


def _read_limited(path: Path, max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes, or raise :class:`CanvasError`."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CanvasError(f"{path}: no such file") from None
    except OSError as exc:
        raise CanvasError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CanvasError(f"{path}: is a directory, not a canvas file")
    if not stat.S_ISREG(info.st_mode):
        raise CanvasError(f"{path}: not a regular file")
    limit = f"larger than the limit of {max_bytes:,} bytes"
    if info.st_size > max_bytes:
        raise CanvasError(f"{path}: the file has {info.st_size:,} bytes, {limit}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise CanvasError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:  # it grew after the stat
        raise CanvasError(f"{path}: the file is {limit}")
    return raw


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(target: Path, data: bytes, mode: int | None) -> None:
    """Write ``data`` to a temp file beside ``target``, fsync it and move it onto ``target``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = _temporary_name(target)
        try:
            fd = os.open(temp, flags, 0o666)  # the umask applies, as for any new file
            break
        except FileExistsError:
            continue
    try:
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(target.parent)
