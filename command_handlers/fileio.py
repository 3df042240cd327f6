"""Canvas files: the limited read, the atomic save, the merge on write, the vault, the lock.

The JSON Canvas model (:mod:`command_handlers.canvas`) is pure data; this
module is where canvases meet the disk. :func:`read_canvas` refuses special
and oversized files before parsing, :func:`save_canvas` replaces a file
atomically (fsynced, after copying the old bytes to ``<name>.bak``) and
:func:`changed_on_disk` compares the file with the bytes the canvas was read
from or last saved as. :func:`merge_canvas` adds a run's answers to the canvas
as it is on disk at the moment of writing, so that edits saved meanwhile are
kept; :func:`find_vault` finds the Obsidian vault a canvas lives in, and
:func:`canvas_lock` keeps a second run off a canvas being answered.

Example::

    canvas = read_canvas("notes.canvas")
    ...  # add answers to the canvas
    if not changed_on_disk(canvas):
        save_canvas(canvas)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from command_handlers.canvas import DEFAULT_MAX_BYTES, Canvas, CanvasError

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DEFAULT_MAX_BYTES",
    "CanvasBusyError",
    "CanvasMergeError",
    "canvas_lock",
    "changed_on_disk",
    "find_vault",
    "merge_canvas",
    "read_canvas",
    "remove_stale_temporaries",
    "save_atomic",
    "save_canvas",
]

#: How many times :func:`merge_canvas` merges again when the file keeps changing.
MERGE_ATTEMPTS = 5


class CanvasBusyError(CanvasError):
    """Another run holds the canvas's lock.

    Attributes:
        pid: The other run's process id (``None`` if it could not be read).
        lock: The lock file.
    """

    def __init__(self, message: str, pid: int | None, lock: Path) -> None:
        super().__init__(message)
        self.pid = pid
        self.lock = lock


class CanvasMergeError(CanvasError):
    """The canvas kept changing (or became unreadable) while the answers were merged in.

    The file on disk then holds the user's latest version, without the answers.
    """


def find_vault(path: str | os.PathLike[str]) -> Path | None:
    """Return the Obsidian vault holding a file: the nearest folder above it with ``.obsidian/``.

    Symbolic links are resolved first, so a canvas reached through a link
    belongs to the vault of the file it points at.

    Args:
        path: A file in the vault (a canvas).

    Returns:
        The vault's root folder, or None if no folder above holds ``.obsidian/``.
    """
    for folder in Path(os.path.realpath(path)).parents:
        if (folder / ".obsidian").is_dir():
            return folder
    return None


@contextlib.contextmanager
def canvas_lock(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the advisory lock of a canvas (or output file) for one run.

    The lock is ``.<name>.lock`` beside the real file (symbolic links are
    resolved), locked with ``lockf`` (a POSIX record lock, which belongs to
    the process: an agent process forked meanwhile never holds it) and
    holding the run's pid; it is removed when the run ends. The kernel drops
    the lock of a run that dies, so a lock file left by a killed run is
    stale and simply taken over. Where ``lockf`` is missing, the file is
    created exclusively and a file naming a process that no longer runs
    counts as stale.

    Args:
        path: The canvas (or the ``--output`` file) the run will write.

    Yields:
        The lock file.

    Raises:
        CanvasBusyError: Another live run holds the lock.
    """
    target = Path(os.path.realpath(path))
    lock = target.with_name(f".{target.name}.lock")
    fd = _take_lock(lock)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _lock_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _busy(lock: Path, pid: int | None) -> CanvasBusyError:
    who = f"process {pid}" if pid is not None else "another process"
    return CanvasBusyError(
        f"another run ({who}) is writing this canvas; wait for it to finish (lock file {lock})",
        pid,
        lock,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours
        return True
    return True


def _take_lock(lock: Path) -> int:
    """Open and lock ``lock``; return its descriptor."""
    while True:
        if sys.platform == "win32":  # pragma: no cover - no flock there
            try:
                return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                pid = _lock_pid(lock)
                if pid is not None and _alive(pid):
                    raise _busy(lock, pid) from None
                with contextlib.suppress(OSError):
                    os.unlink(lock)  # stale: its run is gone
                continue
        # Never through a link: the lock file is truncated, and one planted in a
        # shared folder could point at any file of the user's.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            fcntl.lockf(  # pylint: disable=possibly-used-before-assignment  # not on Windows
                fd, fcntl.LOCK_EX | fcntl.LOCK_NB
            )  # a process's own: no fork inherits it
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise _busy(lock, _lock_pid(lock)) from None
            raise
        try:  # still the lock file? (a finishing run removes it)
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def merge_canvas(
    path: str | os.PathLike[str],
    apply: Callable[[Canvas], object],
    *,
    backup: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    before_replace: Callable[[Path], object] | None = None,
) -> tuple[Canvas, Path | None]:
    """Add changes to a canvas as it is on disk now, and replace it atomically, losing no edit.

    The file is read again, ``apply`` adds the changes (the answers) to that
    fresh canvas, and the result replaces the file. Then the file that was
    replaced is compared with the one read: if someone saved the canvas in
    between (at any moment, even just before the replace), their version is
    what got replaced, so it is read and the changes are applied to it
    again, up to :data:`MERGE_ATTEMPTS` times. On Linux the replace swaps
    the two files in one step (``renameat2`` with ``RENAME_EXCHANGE``), so
    the replaced file is known exactly; elsewhere it is the file kept open
    since the read (which catches editors that write in place, as Obsidian does).

    A symbolic link is followed; the file's permission bits are kept. The
    backup (``<name>.bak``) holds the canvas as read first.

    Args:
        path: The canvas file.
        apply: Adds the changes to a canvas; called again for each merge.
        backup: Whether to copy the canvas as read to ``<name>.bak``.
        max_bytes: Refuse canvases larger than this.
        before_replace: Called with the file's path just before each
            replace (tests use it to save an edit at that very moment).

    Returns:
        The canvas as written, and the backup's path (None without one).

    Raises:
        CanvasError: The canvas on disk cannot be read or parsed (nothing was written).
        CanvasMergeError: The canvas was removed, kept changing or became
            unreadable; the file (if any) holds the user's latest version,
            without the changes.
        OSError: The file could not be written (it is then untouched).
    """
    target = Path(os.path.realpath(path))
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(open(target, "rb"))
            merge = _Merge(target, apply, os.fstat(held.fileno()).st_mode)
        except FileNotFoundError:
            raise CanvasMergeError(f"{target}: was removed while the agents worked") from None
        base = _read_held(held, target, max_bytes)
        canvas = _parse(base, target)
        backup_path = None
        if backup:
            backup_path = target.with_name(target.name + ".bak")
            _write_atomic(backup_path, base, merge.mode)
        expected = base
        for _ in range(MERGE_ATTEMPTS):
            data = merge.changed(canvas, base)
            if before_replace is not None:
                before_replace(target)
            displaced = _swap_in(target, data, merge.mode)
            if displaced is None:  # replaced, not swapped: look at the file kept open
                displaced = _read_held(held, target, max_bytes)
                held.close()
                held = stack.enter_context(open(target, "rb"))
            if displaced == expected:
                canvas.record_source(data, target)
                return canvas, backup_path
            base, expected = displaced, data  # someone saved meanwhile: merge into theirs
            canvas = merge.parse_or_restore(base)
        _write_atomic(target, base, merge.mode)
        raise CanvasMergeError(f"{target}: kept changing while the answers were written")


class _Merge:
    """What :func:`merge_canvas` keeps between attempts."""

    def __init__(self, target: Path, apply: Callable[[Canvas], object], mode: int) -> None:
        self.target = target
        self.apply = apply
        self.mode = stat.S_IMODE(mode)
        self.ours: frozenset[str] = frozenset()

    def changed(self, canvas: Canvas, base: bytes) -> bytes:
        """The bytes to write: ``canvas`` with the changes (``base`` if it holds them already)."""
        if self.ours and self.ours <= {node["id"] for node in canvas.nodes}:
            return base  # a version made from ours: it holds the changes already
        before = {node["id"] for node in canvas.nodes}
        self.apply(canvas)
        self.ours = frozenset(node["id"] for node in canvas.nodes) - before
        return canvas.to_json().encode("utf-8")

    def parse_or_restore(self, raw: bytes) -> Canvas:
        """Parse the user's version; if it is no canvas, put it back and raise."""
        try:
            return _parse(raw, self.target)
        except CanvasError as exc:
            _write_atomic(self.target, raw, self.mode)
            raise CanvasMergeError(f"{self.target}: became unreadable while writing") from exc


def _parse(raw: bytes, path: Path) -> Canvas:
    try:
        return Canvas.from_json(raw, path=path)
    except CanvasError as exc:
        raise CanvasError(f"{path}: {exc}") from None


def _read_held(held: IO[bytes], path: Path, max_bytes: int) -> bytes:
    """Read the whole of a file kept open, from its start."""
    held.seek(0)
    raw = held.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise CanvasError(f"{path}: the file is larger than the limit of {max_bytes:,} bytes")
    return raw


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    return function


_EXCHANGE = _renameat2()


def _swap_in(target: Path, data: bytes, mode: int | None) -> bytes | None:
    """Put ``data`` in place of ``target``; return the bytes of the file it displaced.

    Returns None when the platform or file system cannot swap two files in
    one step; the file was then replaced with :func:`os.replace`.
    """
    if _EXCHANGE is None:
        _write_atomic(target, data, mode)
        return None
    temp = _write_temp(target, data, mode)
    try:
        if _EXCHANGE(
            _AT_FDCWD, os.fsencode(temp), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE
        ):
            code = ctypes.get_errno()
            if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # not on this file system
                os.replace(temp, target)
                _fsync_directory(target.parent)
                return None
            raise OSError(code, os.strerror(code), str(target))
        _fsync_directory(target.parent)
        return temp.read_bytes()  # the file that was at ``target`` when swapped
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


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
    temp = _write_temp(target, data, mode)
    try:
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(target.parent)


def _write_temp(target: Path, data: bytes, mode: int | None) -> Path:
    """Write ``data`` to a fresh, fsynced temp file beside ``target``."""
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
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp
