"""Before any call, what the run will write is checked; a problem refuses it, calling nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from read_only import read_only

from command_handlers import hookimpl
from command_handlers.fileio import read_canvas
from command_handlers.intelligent_parallel import (
    CommandInputError,
    IntelligentParallelCommandHandler,
    preflight,
)
from command_handlers.intelligent_parallel.options import Options
from command_handlers.intelligent_parallel.write_back import document_path
from command_handlers.plugins import LOAD_PLUGINS_ENV

AGENT = "clarification-path"


class Recorder:
    """An agent answering every note, recording each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        async def answer(task: Any) -> dict[str, str]:
            self.calls.append(task.node_data["note_id"])
            return {"text": f"Answer for {task.node_data['note_id']}"}

        register(AGENT, answer, override=True)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path_factory.mktemp("llm")))
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")


def _note(node_id: str, text: str, y: int = 0) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "text",
        "text": text,
        "x": 0,
        "y": y,
        "width": 300,
        "height": 120,
        "color": "6",
    }


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    folder = tmp_path / "vault"
    (folder / ".obsidian").mkdir(parents=True)
    return folder


@pytest.fixture
def canvas(vault: Path) -> Path:
    path = vault / "notes.canvas"
    path.write_text(json.dumps({"nodes": [_note("n1", "Recursion repeats.")]}), "utf-8")
    return path


def run(canvas: Path, **options: Any) -> tuple[Recorder, Any]:
    """Run the handler; ``(recorder, result or the CommandInputError raised)``."""
    recorder = Recorder()
    handler = IntelligentParallelCommandHandler(plugins=[recorder])
    try:
        result: Any = handler.execute(canvas, {"auto": True, **options})
    except CommandInputError as exc:  # pragma: no cover - execute returns it
        result = exc
    return recorder, result


def refused(canvas: Path, message: str, **options: Any) -> str:
    """Run; assert the run was refused, with ``message``, before any call and any write."""
    before = canvas.read_bytes()
    recorder, result = run(canvas, **options)
    assert result["success"] is False, result
    assert message in result["message"]
    assert "\n" not in result["message"]
    assert recorder.calls == []
    assert canvas.read_bytes() == before
    return str(result["message"])


def answered(canvas: Path, **options: Any) -> Any:
    recorder, result = run(canvas, **options)
    assert result["success"] is True, result.get("message")
    assert recorder.calls
    return result


def test_a_read_only_documents_folder_is_found_before_any_call(canvas: Path) -> None:
    docs = canvas.parent / "notes answers"
    docs.mkdir()
    with read_only(docs):
        message = refused(canvas, "cannot write in the documents' folder")
    assert str(docs) in message
    assert list(docs.iterdir()) == []


def test_a_folder_to_make_inside_a_read_only_one_is_found_too(canvas: Path) -> None:
    parent = canvas.parent / "read-only"
    parent.mkdir()
    with read_only(parent):
        refused(canvas, f"cannot write in the documents' folder {parent}", docs_dir="read-only/a/b")


def test_a_folder_os_access_calls_writable_is_tried_with_a_probe_file(
    canvas: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = canvas.parent / "notes answers"
    docs.mkdir()
    with read_only(docs):
        # As on a network file system that maps root to nobody: access() says yes.
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
        refused(canvas, "cannot write in the documents' folder")
        # A dry run only asks: it creates no probe file.
        _, result = run(canvas, dry_run=True)
        assert result["success"] is True


def test_a_run_with_nothing_to_call_writes_nothing_and_is_not_checked(canvas: Path) -> None:
    answered(canvas)
    docs = canvas.parent / "notes answers"
    with read_only(docs):
        recorder, result = run(canvas)
    assert recorder.calls == []
    assert result["success"] is True


@pytest.mark.parametrize("where", ["file", "under-a-file", "dangling-link"])
def test_a_documents_folder_that_is_not_a_folder(canvas: Path, tmp_path: Path, where: str) -> None:
    docs = canvas.parent / "notes answers"
    if where == "file":
        docs.write_text("a file", "utf-8")
        message = refused(canvas, "it is not a folder (--docs-dir)")
    elif where == "under-a-file":
        (canvas.parent / "plain").write_text("a file", "utf-8")
        message = refused(canvas, "plain is not a folder", docs_dir="plain/answers")
    else:
        docs.symlink_to(canvas.parent / "nowhere")
        message = refused(canvas, "it is not a folder")
        assert not (canvas.parent / "nowhere").exists()
    assert message.startswith("cannot write the documents in ")


def test_a_folder_where_a_document_goes(canvas: Path) -> None:
    path = document_path(canvas.parent / "notes answers", "Recursion repeats.", AGENT)
    path.mkdir(parents=True)
    refused(canvas, f"cannot write the document {path}: a folder is there; move it away")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_where_a_document_goes(canvas: Path) -> None:
    path = document_path(canvas.parent / "notes answers", "Recursion repeats.", AGENT)
    path.parent.mkdir()
    os.mkfifo(path)
    refused(canvas, "a FIFO, a socket or a device")


def test_a_link_where_a_document_goes_is_skipped_not_followed(canvas: Path, tmp_path: Path) -> None:
    path = document_path(canvas.parent / "notes answers", "Recursion repeats.", AGENT)
    path.parent.mkdir()
    outside = tmp_path / "outside.md"
    path.symlink_to(outside)
    result = answered(canvas)
    assert not outside.exists()
    assert path.is_symlink()
    (row,) = result["results"]
    assert row["document"] == "notes answers/recursion-repeats-clarification-path-2.md"


def test_an_unwritable_canvas_folder_is_found_before_the_lock(canvas: Path) -> None:
    with read_only(canvas.parent):
        message = refused(canvas, "cannot write")
    assert "notes.canvas" in message


def test_a_lock_file_that_is_a_link_is_never_followed(canvas: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("the user's own file\n", "utf-8")
    (canvas.parent / ".notes.canvas.lock").symlink_to(precious)
    refused(canvas, "cannot write the lock file beside")
    assert precious.read_text("utf-8") == "the user's own file\n"


def test_a_canvas_name_too_long_for_the_files_beside_it(vault: Path) -> None:
    canvas = vault / ("n" * 230 + ".canvas")
    canvas.write_text(json.dumps({"nodes": [_note("n1", "A note.")]}), "utf-8")
    message = refused(canvas, "takes 237 bytes")
    assert "at most 223: rename it" in message


def test_the_journal_folder_must_exist_and_take_files(canvas: Path, tmp_path: Path) -> None:
    refused(canvas, "is not a folder (--journal)", journal=str(tmp_path / "none" / "j.sqlite"))
    folder = tmp_path / "journals"
    folder.mkdir()
    with read_only(folder):
        refused(canvas, "cannot write in the journal's folder", journal=str(folder / "j.sqlite"))
    answered(canvas, journal=str(folder / "j.sqlite"))
    assert (folder / "j.sqlite").is_file()


def test_a_journal_found_as_a_link_beside_the_canvas_is_refused(
    canvas: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere.sqlite"
    (canvas.parent / ".notes.canvas.journal.sqlite").symlink_to(target)
    refused(canvas, "a journal beside the canvas is never followed")
    assert not target.exists()
    # Named on purpose, the same link is used.
    answered(canvas, journal=str(canvas.parent / ".notes.canvas.journal.sqlite"))
    assert target.is_file()


def test_a_journal_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CommandInputError, match="a folder is there, not a file"):
        preflight._journal(tmp_path, named=True, probe=False)


def test_no_journal_no_journal_check(canvas: Path, tmp_path: Path) -> None:
    answered(canvas, journal=str(tmp_path / "none" / "j.sqlite"), use_journal=False)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"nodes": [_note("n1", "bad \ud800 here")]}, "node 'n1'"),
        (
            {
                "nodes": [_note("n1", "fine"), _note("n2", "fine too", 300)],
                "edges": [{"id": "e1", "fromNode": "n1", "toNode": "n2", "label": "\udfff"}],
            },
            "edge 'e1'",
        ),
        ({"nodes": [_note("n1", "fine")], "x-data": {"k": ["\udc80"]}}, "the canvas"),
        ({"nodes": [{**_note("n1", "fine"), "x-\ud800": 1}]}, "node 'n1'"),
    ],
)
def test_text_no_file_can_hold_is_refused_naming_where(
    vault: Path, data: dict[str, Any], where: str
) -> None:
    canvas = vault / "notes.canvas"
    canvas.write_text(json.dumps(data), "utf-8")  # ASCII: the surrogates are JSON escapes
    message = refused(canvas, f"{where} holds a character no file can hold (a lone surrogate")
    assert message.endswith("remove it from the canvas file")
    _, result = run(canvas, dry_run=True)
    assert result["success"] is False


def test_a_null_canvas_is_not_a_canvas(vault: Path) -> None:
    canvas = vault / "notes.canvas"
    canvas.write_text("null", "utf-8")
    refused(canvas, "a canvas must be a JSON object, not null")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("'unterminated", "cannot be split into arguments: no closing quotation"),
        ("trailing\\", "cannot be split into arguments: no escaped character"),
        ("   ", "names no program"),
        (42, "agent_command must be a string or a list of arguments"),
    ],
)
def test_an_agent_command_that_cannot_be_run_is_bad_input(command: Any, message: str) -> None:
    with pytest.raises(CommandInputError, match=message):
        Options.parse({"agent_command": command})


def test_an_agent_command_given_as_a_list_is_kept() -> None:
    assert Options.parse({"agent_command": ("prog", 1)}).agent_command == ["prog", "1"]
    assert Options.parse({"agent_command": []}).agent_command is None


def test_a_missing_program_is_refused_before_any_call(canvas: Path) -> None:
    refused(canvas, "not found: no such program on PATH", agent_command="no-such-program-x")


def test_megabyte_limits_must_be_finite() -> None:
    with pytest.raises(CommandInputError, match="finite number of megabytes"):
        Options.parse({"max_canvas_mb": float("inf")})


def test_the_canvas_read_is_the_canvas_checked(canvas: Path) -> None:
    preflight.check_text(read_canvas(canvas))


class Failing:
    """An agent failing with an error that tries to clear the screen."""

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        async def answer(task: Any) -> dict[str, str]:
            raise RuntimeError("\x1b[2J\x1b[Hcleared \x1b]0;title\x07screen")

        register(AGENT, answer, override=True)


def test_a_failed_note_is_named_and_its_error_given_without_escapes(vault: Path) -> None:
    canvas = vault / "notes.canvas"
    text = "\x1b[31mRed\x1b[0m note \x07here"
    canvas.write_text(json.dumps({"nodes": [_note("n1", text)]}), "utf-8")
    handler = IntelligentParallelCommandHandler(plugins=[Failing()])
    result = handler.execute(canvas, {"auto": True, "retries": 0})
    (row,) = result["results"]
    assert row["note"] == '"Red note here" (n1)'
    assert row["error"] == "cleared screen"


def test_a_node_id_holding_escapes_is_refused(vault: Path) -> None:
    canvas = vault / "notes.canvas"
    canvas.write_text(json.dumps({"nodes": [_note("n\x1b[2J1", "A note.")]}), "utf-8")
    message = refused(canvas, "node id 'n\\x1b[2J1' holds control characters")
    assert "\x1b" not in message
