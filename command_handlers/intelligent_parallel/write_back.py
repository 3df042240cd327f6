"""Write answers back: the documents first, then the cards and edges on the canvas.

The origin's three-layer layout: the note -> an edge labelled with the agent ->
a blue card (agent, time, the first lines of the answer) -> an edge -> a file
node for a Markdown document holding the whole answer. ``inline`` puts the
whole answer in the card and writes no document. ``replacing`` puts a new
answer in the place of an old one (same position and size), removing the old
card, its file node and their edges; the old document stays on disk.

When the canvas cannot be written, :func:`save_side_file` keeps the answers in
a JSON file beside it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from command_handlers.canvas import Canvas, Node, Rect, node_rect
from command_handlers.intelligent_parallel.answered import ANSWER_COLOR, KnownAnswer
from command_handlers.intelligent_parallel.names import fit_name
from command_handlers.safe_text import strip_controls

__all__ = [
    "CARD_SIZE",
    "FILE_SIZE",
    "INLINE_WIDTH",
    "PREVIEW_CHARS",
    "PREVIEW_LINES",
    "Layout",
    "docs_folder",
    "document_path",
    "save_side_file",
    "vault_path",
    "write_answers",
]

CARD_SIZE = (250, 150)
FILE_SIZE = (250, 150)
INLINE_WIDTH = 420
PREVIEW_LINES = 4
#: The most characters a card's preview holds: one line of a huge answer can be megabytes.
PREVIEW_CHARS = 400

_Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Layout:
    """How answers are written.

    Attributes:
        base: The vault root (the folder holding ``.obsidian/``), or the
            folder of the canvas being written when it is in no vault;
            document paths in the canvas are relative to it, as Obsidian
            resolves them.
        folder: Where the documents go.
        inline: The whole answer goes in the card; no document.
    """

    base: Path
    folder: Path
    inline: bool = False


def docs_folder(canvas_path: Path, docs_dir: str | None, base: Path) -> Path:
    """Return the documents' folder: ``docs_dir`` (relative to ``base``) or ``<canvas> answers``.

    Args:
        canvas_path: The canvas read.
        docs_dir: The ``--docs-dir`` option, if given.
        base: The folder of the canvas being written.

    Returns:
        The folder.
    """
    if docs_dir:
        folder = Path(docs_dir)
        return folder if folder.is_absolute() else base / folder
    return base / fit_name(canvas_path.stem, " answers")


def _slug(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^\w]+", "-", text.lower(), flags=re.UNICODE).strip("-")
    return slug[:limit].strip("-") or "note"


def _names(folder: Path, stem: str, suffix: str) -> Iterator[Path]:
    """``stem.suffix``, then ``stem-2.suffix``, ``stem-3.suffix``, ... (each fitted, see names)."""
    yield folder / fit_name(stem, suffix)
    for number in itertools.count(2):
        yield folder / fit_name(stem, f"-{number}{suffix}")


def document_path(folder: Path, topic: str, agent: str) -> Path:
    """The first name a note's document by an agent gets (later ones are numbered).

    Args:
        folder: The documents' folder.
        topic: The note's topic.
        agent: The agent's name.

    Returns:
        ``folder/<topic slug>-<agent>.md``, shortened to fit the file system.
    """
    return next(_names(folder, _stem(topic, agent), ".md"))


def _stem(topic: str, agent: str) -> str:
    return f"{_slug(topic)}-{agent}"


def _fresh_path(folder: Path, stem: str, suffix: str) -> Path:
    # lexists: a link to nothing is taken too, or the file would be written through it.
    return next(path for path in _names(folder, stem, suffix) if not os.path.lexists(path))


#: Create a document: never over an existing file, never through a symbolic link.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
#: Read a document back to compare it: never through a symbolic link, never blocking on a FIFO.
_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _document(folder: Path, stem: str, content: str) -> Path:
    """Write ``content`` to a fresh ``stem*.md``, or reuse the file that already holds it.

    A run that writes the same answer again (reused from the journal) then
    adds no copy; a different answer never overwrites a file. A name taken by
    anything but a regular file (a symbolic link, even a dangling one, a
    folder) is skipped: nothing is ever written through a link. A write that
    fails (a full disk) removes the file it created: no empty or partial
    document is left behind, and the error propagates.
    """
    data = content.encode("utf-8")
    for candidate in _names(folder, stem, ".md"):
        try:
            fd = os.open(candidate, _CREATE, 0o666)  # exclusive: two runs never share a name
        except FileExistsError:
            if _holds(candidate, data):
                return candidate
            continue
        try:
            with open(fd, "wb") as handle:  # closing flushes: a full disk may fail only here
                handle.write(data)
        except BaseException:
            _discard(candidate)
            raise
        return candidate
    raise AssertionError("unreachable: the names never run out")  # pragma: no cover


def _holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a regular file (not a link) holding exactly ``data``."""
    try:
        fd = os.open(path, _READ)
    except OSError:  # a symbolic link (ELOOP), or gone meanwhile
        return False
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a FIFO (opened without waiting)
        os.close(fd)
        return False
    with open(fd, "rb") as handle:
        return handle.read(len(data) + 1) == data


def _discard(path: Path) -> None:
    """Remove a file this run created and could not finish; one already gone is fine."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def _preview(text: str, lines: int = PREVIEW_LINES, chars: int = PREVIEW_CHARS) -> str:
    # Only the start is looked at, so that a huge answer costs no more than a short one.
    kept = [line for line in text.strip()[: chars + 1].splitlines() if line.strip()][:lines]
    preview = "\n".join(kept)
    return preview if len(preview) <= chars else preview[: chars - 1].rstrip() + "…"


def vault_path(path: Path, base: Path, *, strict: bool = True) -> str:
    """A file node's path: ``path`` from ``base`` (the vault root), forward slashes.

    Args:
        path: The file.
        base: The vault root (or the canvas's folder outside any vault).
        strict: Refuse a path outside ``base``; otherwise it starts with ``..``.

    Raises:
        ValueError: ``path`` is not inside ``base`` and ``strict`` is true.
    """
    real, start = os.path.realpath(path), os.path.realpath(base)
    if strict:
        return Path(real).relative_to(start).as_posix()
    return Path(os.path.relpath(real, start)).as_posix()


def _box(node: Node | Rect) -> _Box:
    if isinstance(node, Rect):
        return (node.x, node.y, node.width, node.height)
    return (node["x"], node["y"], node["width"], node["height"])


def _earlier_answer(canvas: Canvas, note_id: str) -> Rect | None:
    """The lowest answer card already linked from a note, if any."""
    cards = [
        node_rect(node)
        for edge in canvas.outgoing(note_id)
        if (node := canvas.get_node(edge["toNode"])) is not None
        and node.get("color") == ANSWER_COLOR
    ]
    return max(cards, key=lambda rect: rect.y, default=None)


def _clear_places(
    canvas: Canvas,
    results: Sequence[Mapping[str, Any]],
    replacing: Mapping[str, KnownAnswer],
) -> dict[str, tuple[_Box, _Box | None, str]]:
    """Remove the answers being replaced; return task id -> (card box, file box, old card id).

    Only answers whose task succeeded are removed: a failed call keeps the old answer.
    """
    places: dict[str, tuple[_Box, _Box | None, str]] = {}
    doomed: list[str] = []
    for result in results:
        old = replacing.get(result["task_id"])
        if result["status"] != "success" or old is None:
            continue
        card = canvas.get_node(old.card_id)
        if card is None:  # removed by hand while the agents worked
            continue
        file_node = canvas.get_node(old.file_id) if old.file_id else None
        places[result["task_id"]] = (
            _box(card),
            _box(file_node) if file_node is not None else None,
            old.card_id,
        )
        doomed.append(old.card_id)
        if file_node is not None:
            doomed.append(old.file_id or "")
    canvas.remove_nodes(doomed)
    return places


def write_answers(
    canvas: Canvas,
    results: Sequence[dict[str, Any]],
    topics: Mapping[str, str],
    layout: Layout,
    replacing: Mapping[str, KnownAnswer] | None = None,
) -> list[str]:
    """Write the documents, then add the answer cards and edges to the canvas.

    Each successful result (``task_id``, ``node_id``, ``agent``, ``answer``)
    gains ``document`` (its path from ``layout.base``, see :func:`vault_path`), ``blue_node_id``,
    ``file_node_id`` and, when it took an old answer's place, ``replaced_node_id``.

    Args:
        canvas: The canvas, changed in memory (the caller saves it).
        results: The tasks' results; those whose ``status`` is not
            ``"success"`` are left alone.
        topics: Note id -> its topic, for the documents' titles and names.
        layout: Where and how to write.
        replacing: Task id -> the old answer whose place the new one takes.

    Returns:
        The task ids of the answers not written because their note is no
        longer on the canvas (deleted while the agents worked).
    """
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    gone = [
        r["task_id"]
        for r in results
        if r["status"] == "success" and canvas.get_node(r["node_id"]) is None
    ]
    places = _clear_places(
        canvas, [r for r in results if r["task_id"] not in gone], replacing or {}
    )
    placer = canvas.placer()
    last: dict[str, Rect] = {}
    folder: str | None = None  # the documents' folder from the vault root
    for result in results:
        if result["status"] != "success" or result["task_id"] in gone:
            continue
        note_id, agent = result["node_id"], result["agent"]
        answer = strip_controls(str(result["answer"]))
        document: Path | None = None
        if layout.inline:
            text = f"**{agent}** · {stamp}\n\n{answer.strip()}"
            lines = sum(1 + len(line) // 48 for line in text.splitlines())
            size = (INLINE_WIDTH, min(max(CARD_SIZE[1], 26 * lines + 40), 2400))
        else:
            if folder is None:
                layout.folder.mkdir(parents=True, exist_ok=True)
                # Resolved once: a document is created without following links,
                # so its real path is the folder's plus its name.
                folder = vault_path(layout.folder, layout.base, strict=False)
            topic = topics[note_id]
            document = _document(
                layout.folder,
                _stem(topic, agent),
                f"# {topic}\n\n*{agent}*\n\n{answer.strip()}\n",
            )
            result["document"] = document.name if folder == "." else f"{folder}/{document.name}"
            text = f"**{agent}** · {stamp}\n\n{_preview(answer)}"
            size = CARD_SIZE
        place = places.get(result["task_id"])
        note = node_rect(canvas.node(note_id))
        if place is not None:
            (x, y, width, height), file_box, result["replaced_node_id"] = place
            card = canvas.add_text_node(text, x, y, width, height, color=ANSWER_COLOR)
        else:
            # A note's further answers go beside or below its previous one.
            near = last.get(note_id) or _earlier_answer(canvas, note_id)
            spot = placer.place(note, *size, near=near)
            card = canvas.add_text_node(text, *spot, color=ANSWER_COLOR)
            last[note_id] = spot
            file_box = None
        canvas.add_edge(note_id, card["id"], label=agent)
        result["blue_node_id"] = card["id"]
        if document is not None:
            if file_box is None:
                file_box = _box(placer.place(node_rect(card), *FILE_SIZE))
            file_node = canvas.add_file_node(str(result["document"]), *file_box)
            canvas.add_edge(card["id"], file_node["id"])
            result["file_node_id"] = file_node["id"]
    return gone


def save_side_file(
    canvas_path: Path, folder: Path, answers: Sequence[Mapping[str, Any]], reason: str
) -> Path:
    """Keep answers that could not be written into the canvas in a JSON file.

    When ``folder`` cannot hold it (a full disk), the file goes to the
    system's temporary folder instead; a file that could not be written
    whole is removed.

    Args:
        canvas_path: The canvas they belong to.
        folder: Where the file goes (the folder of the canvas being written).
        answers: One dict per answer: ``task_id``, ``node_id``, ``agent`` and
            the agent's result (``text``...).
        reason: Why the canvas was not written.

    Returns:
        The file: ``<canvas name>.answers-<time>.json``, a fresh name.

    Raises:
        OSError: Neither folder could hold the file (the error of ``folder``).
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    payload = {"canvas": str(canvas_path), "reason": reason, "answers": list(answers)}
    data = json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8")
    stem = f"{canvas_path.name}.answers-{stamp}"
    try:
        return _side_write(folder, stem, data)
    except OSError as exc:
        try:
            return _side_write(Path(tempfile.gettempdir()), stem, data)
        except OSError:
            raise exc from None


def _side_write(folder: Path, stem: str, data: bytes) -> Path:
    side = _fresh_path(folder, stem, ".json")
    handle = open(side, "xb")  # noqa: SIM115 - closed below, the file removed if that fails
    try:
        with handle:
            handle.write(data)
    except BaseException:
        _discard(side)
        raise
    return side
