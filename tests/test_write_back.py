"""Writing answers back: documents, cards and edges; taking an old answer's place; side files."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from command_handlers.canvas import Canvas
from command_handlers.intelligent_parallel.answered import KnownAnswer
from command_handlers.intelligent_parallel.write_back import (
    CARD_SIZE,
    FILE_SIZE,
    PREVIEW_CHARS,
    Layout,
    docs_folder,
    save_side_file,
    write_answers,
)


def note(node_id: str, y: int = 0) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "text",
        "text": "A note",
        "x": 0,
        "y": y,
        "width": 300,
        "height": 100,
        "color": "6",
    }


def result(
    note_id: str, agent: str = "clarify", status: str = "success", **extra: Any
) -> dict[str, Any]:
    return {
        "task_id": f"{note_id}:{agent}",
        "node_id": note_id,
        "agent": agent,
        "status": status,
        "answer": "\n".join(f"Line {n}" for n in range(1, 7)),
        **extra,
    }


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path, tmp_path / "docs")


def old_answer(card_id: str, file_id: str | None) -> KnownAnswer:
    return KnownAnswer("n1", "clarify", card_id, file_id, "h", 1.0, 1, "Old.", "old card")


def test_docs_folder(tmp_path: Path) -> None:
    canvas_path = tmp_path / "notes.canvas"
    assert docs_folder(canvas_path, None, tmp_path) == tmp_path / "notes answers"
    assert docs_folder(canvas_path, "out", tmp_path / "b") == tmp_path / "b" / "out"
    assert docs_folder(canvas_path, str(tmp_path / "abs"), Path("x")) == tmp_path / "abs"


def test_three_layers_along_the_row(layout: Layout) -> None:
    canvas = Canvas({"nodes": [note("n1")], "edges": []})
    results = [result("n1"), result("n1", "anchor"), result("n1", "oral", status="failed")]

    write_answers(canvas, results, {"n1": "Derivatives?"}, layout)

    first, second, failed = results
    cards = [canvas.node(r["blue_node_id"]) for r in (first, second)]
    assert [(c["width"], c["height"]) for c in cards] == [CARD_SIZE, CARD_SIZE]
    assert cards[0]["text"].startswith("**clarify** · ")
    assert "Line 4" in cards[0]["text"]
    assert "Line 5" not in cards[0]["text"]
    # The second answer goes together with the first: beside it or below it.
    assert cards[1]["x"] > cards[0]["x"] + 250 or cards[1]["y"] >= cards[0]["y"] + 150
    assert abs(cards[1]["y"] - cards[0]["y"]) + abs(cards[1]["x"] - cards[0]["x"]) < 700
    assert first["document"] == "docs/derivatives-clarify.md"
    document = (layout.base / first["document"]).read_text(encoding="utf-8")
    assert document.startswith("# Derivatives?\n\n*clarify*\n\n")
    assert "Line 6" in document
    assert "blue_node_id" not in failed
    assert len(canvas.nodes) == 5
    assert len(canvas.edges) == 4


def test_taking_the_place_of_an_old_answer(layout: Layout) -> None:
    canvas = Canvas(
        {
            "nodes": [
                note("n1"),
                {**note("card"), "x": 500, "y": 40, "width": 333, "height": 222, "color": "5"},
                {
                    "id": "doc",
                    "type": "file",
                    "file": "old.md",
                    "x": 900,
                    "y": 60,
                    "width": 10,
                    "height": 20,
                },
                note("keep", 900),
            ],
            "edges": [
                {"id": "e1", "fromNode": "n1", "toNode": "card", "label": "clarify"},
                {"id": "e2", "fromNode": "card", "toNode": "doc"},
                {"id": "e3", "fromNode": "keep", "toNode": "card"},
                {"id": "e4", "fromNode": "n1", "toNode": "keep"},
            ],
        }
    )
    results = [result("n1")]

    write_answers(canvas, results, {"n1": "T"}, layout, {"n1:clarify": old_answer("card", "doc")})

    (done,) = results
    assert done["replaced_node_id"] == "card"
    card = canvas.node(done["blue_node_id"])
    assert [card[k] for k in ("x", "y", "width", "height")] == [500, 40, 333, 222]
    file_node = canvas.node(done["file_node_id"])
    assert [file_node[k] for k in ("x", "y", "width", "height")] == [900, 60, 10, 20]
    assert canvas.get_node("card") is None
    assert canvas.get_node("doc") is None
    assert [e["id"] for e in canvas.edges][:1] == ["e4"]  # the old answer's edges went
    assert canvas.get_node("keep") is not None
    assert canvas.new_id() not in {"card", "doc"}


def test_an_inline_answer_in_the_place_of_a_card_without_document(layout: Layout) -> None:
    inline = Layout(layout.base, layout.folder, inline=True)
    canvas = Canvas(
        {
            "nodes": [note("n1"), {**note("card"), "x": 400, "color": "5"}, note("n2", 400)],
            "edges": [{"id": "e1", "fromNode": "n1", "toNode": "card", "label": "clarify"}],
        }
    )
    results = [result("n1"), result("n2")]

    write_answers(
        canvas, results, {"n1": "T", "n2": "U"}, inline, {"n1:clarify": old_answer("card", None)}
    )

    replaced, fresh = (canvas.node(r["blue_node_id"]) for r in results)
    assert (replaced["x"], replaced["width"]) == (400, 300)
    assert "Line 6" in replaced["text"]
    assert fresh["width"] == 420
    assert fresh["height"] > CARD_SIZE[1]
    assert "document" not in results[0]
    assert not layout.folder.exists()


def test_a_document_for_a_replaced_inline_answer_goes_beside_the_card(layout: Layout) -> None:
    canvas = Canvas(
        {
            "nodes": [note("n1"), {**note("card"), "x": 400, "color": "5"}],
            "edges": [{"id": "e1", "fromNode": "n1", "toNode": "card", "label": "clarify"}],
        }
    )
    results = [result("n1")]

    write_answers(canvas, results, {"n1": "T"}, layout, {"n1:clarify": old_answer("card", None)})

    file_node = canvas.node(results[0]["file_node_id"])
    assert file_node["x"] > 700
    assert (file_node["width"], file_node["height"]) == FILE_SIZE


def test_a_failed_call_leaves_the_old_answer(layout: Layout) -> None:
    canvas = Canvas({"nodes": [note("n1"), {**note("card"), "color": "5", "y": 300}], "edges": []})
    results = [result("n1", status="failed")]

    write_answers(canvas, results, {"n1": "T"}, layout, {"n1:clarify": old_answer("card", "gone")})

    assert canvas.get_node("card") is not None
    assert len(canvas.nodes) == 2


def test_save_side_file(tmp_path: Path) -> None:
    answers = [{"task_id": "n1:clarify", "node_id": "n1", "agent": "clarify", "text": "Hi"}]

    first = save_side_file(tmp_path / "notes.canvas", tmp_path, answers, "interrupted")
    second = save_side_file(tmp_path / "notes.canvas", tmp_path, answers, "interrupted")

    assert first != second
    assert first.name.startswith("notes.canvas.answers-")
    saved = json.loads(first.read_text(encoding="utf-8"))
    assert saved == {
        "canvas": str(tmp_path / "notes.canvas"),
        "reason": "interrupted",
        "answers": answers,
    }


def test_the_same_answer_again_reuses_its_document_a_new_one_gets_a_new_file(
    tmp_path: Path,
) -> None:
    from command_handlers.intelligent_parallel.write_back import _document

    first = _document(tmp_path, "topic-agent", "# T\n\nanswer one\n")
    again = _document(tmp_path, "topic-agent", "# T\n\nanswer one\n")
    other = _document(tmp_path, "topic-agent", "# T\n\nanswer two\n")
    assert first == again == tmp_path / "topic-agent.md"
    assert other == tmp_path / "topic-agent-2.md"
    assert first.read_text(encoding="utf-8") == "# T\n\nanswer one\n"


def test_a_card_holds_a_bounded_preview_of_a_huge_answer(layout: Layout) -> None:
    canvas = Canvas({"nodes": [note("n1")], "edges": []})
    huge = "word " * 1_000_000  # 5 MB on one line
    results = [result("n1", answer=huge)]

    write_answers(canvas, results, {"n1": "Huge"}, layout)

    card = canvas.node(results[0]["blue_node_id"])
    preview = card["text"].split("\n\n", 1)[1]
    assert len(preview) <= PREVIEW_CHARS
    assert preview.endswith("…")
    assert (layout.base / results[0]["document"]).stat().st_size > 5_000_000  # whole answer


def test_a_name_taken_by_a_link_a_folder_or_a_fifo_is_skipped_never_written_through(
    tmp_path: Path,
) -> None:
    from command_handlers.intelligent_parallel.write_back import _document

    outside = tmp_path / "outside"
    outside.mkdir()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "topic-agent.md").symlink_to(outside / "planted.md")  # dangling
    same = outside / "same.md"
    same.write_text("# T\n\nanswer\n", encoding="utf-8")
    (docs / "topic-agent-2.md").symlink_to(same)  # holds the very answer: still not reused
    (docs / "topic-agent-3.md").mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(docs / "topic-agent-4.md")  # never opened for reading: it would block
    else:  # pragma: no cover
        (docs / "topic-agent-4.md").mkdir()

    written = _document(docs, "topic-agent", "# T\n\nanswer\n")

    assert written == docs / "topic-agent-5.md"
    assert written.read_text(encoding="utf-8") == "# T\n\nanswer\n"
    assert sorted(p.name for p in outside.iterdir()) == ["same.md"]
    assert same.read_text(encoding="utf-8") == "# T\n\nanswer\n"


def test_a_document_that_cannot_be_written_whole_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from command_handlers.intelligent_parallel import write_back

    class Full:
        def __init__(self, fd: int, mode: str) -> None:
            self.fd = fd

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            os.close(self.fd)

        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(write_back, "open", Full, raising=False)
    with pytest.raises(OSError, match="No space left"):
        write_back._document(tmp_path, "topic-agent", "# T\n\nanswer\n")
    assert list(tmp_path.iterdir()) == []


def test_control_characters_of_an_answer_reach_neither_card_nor_document(layout: Layout) -> None:
    canvas = Canvas({"nodes": [note("n1")], "edges": []})
    answer = "\x1b[1mBold\x1b[0m answer\x1b]0;title\x07\r\nsecond\tline\x00"
    results = [result("n1", answer=answer)]

    write_answers(canvas, results, {"n1": "Topic"}, layout)

    card = canvas.node(results[0]["blue_node_id"])
    assert card["text"].endswith("Bold answer\nsecond\tline")
    document = layout.base / results[0]["document"]
    assert document.read_text(encoding="utf-8").endswith("Bold answer\nsecond\tline\n")


def test_a_side_file_name_taken_by_a_dangling_link_is_skipped(tmp_path: Path) -> None:
    from command_handlers.intelligent_parallel.write_back import _fresh_path

    outside = tmp_path / "outside.json"
    (tmp_path / "notes.canvas.answers-1.json").symlink_to(outside)
    assert _fresh_path(tmp_path, "notes.canvas.answers-1", ".json") == (
        tmp_path / "notes.canvas.answers-1-2.json"
    )


class _FullDisk:
    """``open`` as on a disk with room for ``room`` bytes: the file is created, writing fails."""

    def __init__(self, room: int = 10) -> None:
        self.room = room
        self.opened: list[Path] = []

    def __call__(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by the stand-in
        if "x" not in mode:
            return handle
        self.opened.append(Path(path))
        room = self.room

        class Handle:
            def __enter__(self) -> Handle:
                return self

            def __exit__(self, *exc: object) -> None:
                handle.close()

            def write(self, data: bytes) -> int:
                handle.write(data[:room])
                handle.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

        return Handle()


def test_a_side_file_goes_to_the_temporary_folder_when_its_own_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from command_handlers.intelligent_parallel import write_back

    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(write_back.tempfile, "gettempdir", lambda: str(spare))
    answers = [{"task_id": "n1:clarify", "node_id": "n1", "agent": "clarify", "text": "Hi"}]
    full = _FullDisk()
    real_open = open

    def full_here(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if Path(path).parent == tmp_path:
            return full(path, mode, *args, **kwargs)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(write_back, "open", full_here, raising=False)

    side = save_side_file(tmp_path / "notes.canvas", tmp_path, answers, "disk full")

    assert side.parent == spare
    assert json.loads(side.read_text(encoding="utf-8"))["answers"] == answers
    assert not list(tmp_path.glob("*.json"))  # the partial one was removed

    monkeypatch.setattr(write_back.tempfile, "gettempdir", lambda: str(tmp_path / "gone"))
    with pytest.raises(OSError, match="No space left"):  # the error of the canvas's folder
        save_side_file(tmp_path / "notes.canvas", tmp_path, answers, "disk full")
    assert not list(tmp_path.glob("*.json"))
