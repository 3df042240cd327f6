"""Pre-flight: what a run will write is checked before any agent is called.

A run pays for its calls first and writes last, so a place it cannot write,
found only when writing, costs every call. Before the first call the run
checks: the canvas's text can be written back (no lone surrogate); the canvas
(or ``--output``) has a name short enough for the files kept beside it; the
folders it writes in (the canvas's, the documents', the journal's) are folders
and can be written in; the journal is a file; and no folder or other
non-file stands where a document goes. Each problem is bad input
(:class:`CommandInputError`): one line, exit 2, nothing called, nothing written.

Whether a folder can be written in is asked with :func:`os.access` (which
sees a read-only file system and, even for root, an immutable folder) and, on
a real run, proven by creating and removing an empty hidden file in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from command_handlers.canvas import Canvas
from command_handlers.intelligent_parallel.names import NAME_MAX, name_bytes
from command_handlers.intelligent_parallel.notes import Note
from command_handlers.intelligent_parallel.options import CommandInputError, Options
from command_handlers.intelligent_parallel.write_back import Layout, document_path
from command_handlers.safe_text import strip_controls

__all__ = ["LONGEST_CANVAS_NAME", "check_places", "check_text"]

#: The longest canvas file name, in bytes, leaving room for the names derived from
#: it beside it: ``<name>.answers-<date>-<time>-<n>.json``, ``.<name>.bak.<pid>-<hex>.tmp``,
#: ``.<name>.journal.sqlite``, ``.<name>.lock``.
LONGEST_CANVAS_NAME = NAME_MAX - 32


def check_text(canvas: Canvas) -> None:
    r"""Refuse a canvas holding text that cannot be written back as UTF-8.

    JSON may hold a lone UTF-16 surrogate (``"\ud800"``): it parses, but no
    file can hold it, so the run would fail when writing its answers.

    Args:
        canvas: The canvas read.

    A node id holding control characters (terminal escapes) is refused too:
    ids are printed as they are, in every progress line.

    Raises:
        CommandInputError: A node, an edge or a canvas field holds such text,
            or a node id such characters; the message names it.
    """
    for node in canvas.nodes:
        node_id = str(node["id"])
        if strip_controls(node_id) != node_id:  # it would reach the terminal in every line
            raise CommandInputError(
                f"node id {node_id!r} holds control characters: give the node another id"
            )
    try:  # all at once, in C: twice as fast as looking string by string
        json.dumps(canvas.data, ensure_ascii=False, check_circular=False).encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return
    for kind, items in (("node", canvas.nodes), ("edge", canvas.edges)):
        for item in items:
            bad = _unwritable(item)
            if bad is not None:
                _refuse(f"{kind} {item.get('id')!r}", *bad)
    extra = {k: v for k, v in canvas.data.items() if k not in ("nodes", "edges")}
    bad = _unwritable(extra)
    if bad is not None:
        _refuse("the canvas", *bad)


def _refuse(where: str, field: str, text: str) -> None:
    surrogate = next(char for char in text if 0xD800 <= ord(char) <= 0xDFFF)
    raise CommandInputError(
        f"{where} holds a character no file can hold (a lone surrogate, \\u{ord(surrogate):04x},"
        f" in {field!r}): remove it from the canvas file"
    )


def _unwritable(value: Any, field: str = "") -> tuple[str, str] | None:
    """The first ``(field, text)`` of a JSON value that UTF-8 cannot encode, if any."""
    for name, text in _strings(value, field):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return name, text
    return None


def _strings(value: Any, field: str) -> Iterator[tuple[str, str]]:
    """Every string of a JSON value (keys too), with the top-level field it is under."""
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = field or str(key)
            yield name, str(key)
            yield from _strings(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, field)


def check_places(canvas: Canvas, opts: Options, layout: Layout, notes: Mapping[str, Note]) -> None:
    """Refuse a run that could not write what it is about to pay for.

    Only a run that calls agents is checked (one with everything answered
    writes nothing); a dry run is checked too, without the probe file.

    Args:
        canvas: The canvas read.
        opts: The options (``output``, ``dry_run``, ``journal``...).
        layout: Where the documents go.
        notes: The selected notes, with the agents each calls (``todo``).

    Raises:
        CommandInputError: A name is too long, a folder is missing, not a
            folder or read-only, the journal is not a file, or a folder (or
            other non-file) stands where a document goes.
    """
    calls = [(note, agent) for note in notes.values() for agent in note.todo]
    if not calls:
        return
    probe = not opts.dry_run
    assert canvas.path is not None
    target = Path(os.path.realpath(opts.output or canvas.path))
    for path in dict.fromkeys((Path(os.path.realpath(canvas.path)), target)):
        if name_bytes(path.name) > LONGEST_CANVAS_NAME:
            raise CommandInputError(
                f"the file name {path.name!r} takes {name_bytes(path.name)} bytes; the files"
                f" kept beside it (lock, backup, journal) need it to take at most"
                f" {LONGEST_CANVAS_NAME}: rename it"
            )
    _writable_folder(target.parent, "the canvas's folder", probe=probe)
    if not layout.inline:
        _documents(layout, calls, probe=probe)
    if opts.use_journal and "journal" not in opts.disable_plugins:
        written = Path(os.path.abspath(opts.output or canvas.path))
        journal = Path(os.path.abspath(opts.journal)) if opts.journal else _beside(written)
        _journal(journal, named=opts.journal is not None, probe=probe)


def _beside(target: Path) -> Path:
    # Where the journal plugin keeps it when --journal names no file.
    return target.with_name(f".{target.name}.journal.sqlite")


def _documents(layout: Layout, calls: list[tuple[Note, str]], *, probe: bool) -> None:
    folder = layout.folder
    existing = _nearest_existing(folder)  # the folder, or where it will be made
    if not existing.is_dir():  # a file, or a link to nothing
        problem = "it is" if existing == folder else f"{existing} is"
        raise CommandInputError(
            f"cannot write the documents in {folder}: {problem} not a folder (--docs-dir)"
        )
    _writable_folder(existing, "the documents' folder", probe=probe)
    for note, agent in calls:
        path = document_path(folder, note.topic, agent)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue  # free (or its folder is still to be made)
        # A symbolic link is never followed: the document takes the next free name.
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise CommandInputError(
                f"cannot write the document {path}: {_kind(mode)} is there; move it away"
            )


def _journal(journal: Path, *, named: bool, probe: bool) -> None:
    if stat.S_ISLNK(_mode(journal, follow=False, default=0)) and not named:
        # Found beside the canvas, it may have come with the folder: SQLite would
        # write wherever it points.
        raise CommandInputError(
            f"the journal {journal} is a symbolic link; a journal beside the canvas is never"
            " followed: remove it, or name it with --journal to use it"
        )
    mode = _mode(journal, follow=True, default=stat.S_IFREG)
    if not stat.S_ISREG(mode):
        raise CommandInputError(
            f"cannot use the journal {journal}: {_kind(mode)} is there, not a file (--journal)"
        )
    if not journal.parent.is_dir():
        raise CommandInputError(
            f"cannot write the journal {journal}: {journal.parent} is not a folder (--journal)"
        )
    _writable_folder(journal.parent, "the journal's folder", probe=probe)


def _mode(path: Path, *, follow: bool, default: int) -> int:
    """The file type and mode bits of ``path``, or ``default`` where nothing is."""
    try:
        return os.stat(path, follow_symlinks=follow).st_mode
    except OSError:
        return default


def _writable_folder(folder: Path, what: str, *, probe: bool) -> None:
    """Refuse a folder that cannot be written in: asked first, then (``probe``) tried."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandInputError(f"cannot write in {what} {folder}: permission denied")
    if not probe:
        return
    trial = folder / f".intelligent-parallel-probe.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(trial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise CommandInputError(f"cannot write in {what} {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(trial)


def _nearest_existing(folder: Path) -> Path:
    """``folder`` if anything is there (a dangling link counts), else its nearest such parent."""
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            return path
    return Path(folder.anchor or ".")  # pragma: no cover - the root always exists


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    return "something that is not a file (a FIFO, a socket or a device)"
