"""The journal under faults: whose canvas it is, a damaged file, a lock, a write that fails."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlite_lock import locked

from command_handlers.default_plugins import journal as journal_module
from command_handlers.default_plugins.journal import (
    DEFAULT_WAIT,
    WAIT_ENV,
    Journal,
    JournalError,
    JournalPlugin,
    check_settings,
)
from command_handlers.hookspecs import StopRun, WrittenAnswer
from command_handlers.plugins import TaskOutcome, get_plugin_manager
from command_handlers.settings import Settings


def task(task_id: str, note_id: str, input_hash: str | None = None) -> SimpleNamespace:
    data: dict[str, Any] = {"prompt": f"explain {task_id}", "note_id": note_id}
    if input_hash is not None:
        data["input_hash"] = input_hash
    return SimpleNamespace(task_id=task_id, agent_name="oral", node_data=data)


def run_info(run_id: str = "r1", task_count: int = 3) -> SimpleNamespace:
    return SimpleNamespace(run_id=run_id, task_count=task_count)


def answer(text: str) -> dict[str, str]:
    return {"text": text, "agent": "oral", "model": "echo"}


def ended(status: str, result: Any) -> TaskOutcome:
    return TaskOutcome(status, result, None, None, 1, 1.0, 2.0)


def succeed(journal: Journal, item: SimpleNamespace, text: str = "fine") -> None:
    journal.on_task_start(item)
    journal.on_task_end(item, ended("success", answer(text)))


def written(note_id: str, input_hash: str, card: str) -> WrittenAnswer:
    return WrittenAnswer(f"{note_id}:oral", note_id, "oral", input_hash, card, None)


def canvas_file(folder: Path, name: str = "notes.canvas") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text('{"nodes": [], "edges": []}', encoding="utf-8")
    return path


def damage(path: Path) -> None:
    """Overwrite every page but the first: the header still says SQLite, the tables are broken."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xde\xad\xbe\xef" * ((size - 4096) // 4))


def journal_with_outcomes(path: Path, canvas: Path, count: int = 40) -> None:
    with Journal(path, canvas=canvas) as journal:
        for number in range(count):
            succeed(journal, task(f"t{number}", f"n{number}", input_hash=f"h{number}"), "x" * 500)


# -- whose journal it is ---------------------------------------------------------------


def test_a_new_journal_records_its_canvas_and_an_id(tmp_path: Path) -> None:
    canvas = canvas_file(tmp_path / "vault")
    with Journal(tmp_path / "j.sqlite", canvas=canvas) as journal:
        assert journal.notice is None
        first = journal.journal_id
        assert first
    with Journal(tmp_path / "j.sqlite", canvas=canvas) as journal:
        assert journal.notice is None
        assert journal.journal_id == first  # the id is kept
    with contextlib.closing(sqlite3.connect(tmp_path / "j.sqlite")) as conn:
        about = dict(conn.execute("SELECT key, value FROM about"))
    assert about["canvas"] == str(canvas.resolve())


def test_a_journal_without_a_canvas_records_none(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.journal_id is None


def test_a_symbolic_link_to_the_canvas_is_the_same_canvas(tmp_path: Path) -> None:
    canvas = canvas_file(tmp_path / "vault")
    link = tmp_path / "link.canvas"
    link.symlink_to(canvas)
    Journal(tmp_path / "j.sqlite", canvas=canvas).close()
    with Journal(tmp_path / "j.sqlite", canvas=link) as journal:
        assert journal.notice is None


def test_the_journal_of_another_canvas_is_refused_naming_it(tmp_path: Path) -> None:
    mine = canvas_file(tmp_path / "a")
    other = canvas_file(tmp_path / "b", "other.canvas")
    path = tmp_path / "a" / ".notes.canvas.journal.sqlite"
    with Journal(path, canvas=mine) as journal:
        succeed(journal, task("t1", "n1", input_hash="h1"))
    before = path.read_bytes()

    with pytest.raises(JournalError) as caught:
        Journal(path, canvas=other)

    message = str(caught.value)
    assert str(path) in message
    assert f"belongs to the canvas {mine.resolve()}" in message
    assert str(other.resolve()) in message
    assert "--no-journal" in message
    assert path.read_bytes() == before


def test_a_canvas_copied_with_its_journal_is_refused(tmp_path: Path) -> None:
    original = canvas_file(tmp_path / "a")
    Journal(Journal.default_path(original), canvas=original).close()
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    copy = tmp_path / "copy" / "notes.canvas"

    with pytest.raises(JournalError, match="belongs to the canvas"):
        Journal(Journal.default_path(copy), canvas=copy)


def test_a_canvas_moved_with_its_journal_takes_it_over(tmp_path: Path) -> None:
    original = canvas_file(tmp_path / "a")
    with Journal(Journal.default_path(original), canvas=original) as journal:
        succeed(journal, task("t1", "n1", input_hash="h1"), "kept")
        first = journal.journal_id
    (tmp_path / "a").rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "notes.canvas"

    with Journal(Journal.default_path(moved), canvas=moved) as journal:
        assert journal.notice is not None
        assert f"belonged to {original.resolve()}" in journal.notice
        assert f"now belongs to {moved.resolve()}" in journal.notice
        assert journal.journal_id == first
        assert journal.cached_result(task("x", "n1", input_hash="h1")) == answer("kept")
    with Journal(Journal.default_path(moved), canvas=moved) as journal:
        assert journal.notice is None  # said once


def test_a_journal_of_before_the_record_is_adopted_keeping_its_outcomes(tmp_path: Path) -> None:
    canvas = canvas_file(tmp_path / "vault")
    path = Journal.default_path(canvas)
    with Journal(path, canvas=canvas) as journal:
        succeed(journal, task("t1", "n1", input_hash="h1"), "old")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TABLE about")  # as a journal written before the record

    with Journal(path, canvas=canvas) as journal:
        assert journal.notice is None
        assert journal.journal_id
        assert journal.cached_result(task("x", "n1", input_hash="h1")) == answer("old")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert dict(conn.execute("SELECT key, value FROM about"))["canvas"] == str(canvas.resolve())


# -- a damaged file ----------------------------------------------------------------------


def test_a_damaged_journal_is_refused_when_opened(tmp_path: Path) -> None:
    canvas = canvas_file(tmp_path / "vault")
    path = Journal.default_path(canvas)
    journal_with_outcomes(path, canvas)
    damage(path)
    before = path.read_bytes()

    with pytest.raises(JournalError) as caught:
        Journal(path, canvas=canvas)

    message = str(caught.value)
    assert message.startswith(f"cannot open the journal {path}: ")
    assert message.endswith("; move it away or use --no-journal")
    assert path.read_bytes() == before


def test_the_plugin_refuses_a_file_it_cannot_read(tmp_path: Path) -> None:
    canvas = canvas_file(tmp_path / "vault")
    path = Journal.default_path(canvas)
    journal_with_outcomes(path, canvas)
    damage(path)
    plugin = JournalPlugin(path, canvas)  # check_settings did not look the file over
    try:
        with pytest.raises(JournalError, match="move it away or use --no-journal"):
            plugin.recorded_answers()
    finally:
        plugin.unconfigure()


def test_a_lookup_that_fails_halfway_stops_the_run_at_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canvas = canvas_file(tmp_path / "vault")
    path = Journal.default_path(canvas)
    journal_with_outcomes(path, canvas)
    damage(path)
    plugin = JournalPlugin(path, canvas)
    try:
        assert plugin.cached_result(task("x", "n1", input_hash="h1")) is None
        assert plugin.failure is not None
        assert plugin.failure.startswith("cannot open the journal")
        with pytest.raises(StopRun, match="cannot open the journal"):
            plugin.on_run_start(run_info())
    finally:
        plugin.unconfigure()

    def malformed(self: Journal, task: Any) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Journal, "cached_result", malformed)
    journal_with_outcomes(tmp_path / "other.sqlite", canvas=tmp_path / "other.canvas")
    plugin = JournalPlugin(tmp_path / "other.sqlite", tmp_path / "other.canvas")
    try:
        assert plugin.cached_result(task("x", "n1", input_hash="h1")) is None
        assert plugin.cached_result(task("y", "n2", input_hash="h2")) is None
        with pytest.raises(StopRun, match=r"cannot read the journal .*: database disk image"):
            plugin.on_run_start(run_info())
    finally:
        plugin.unconfigure()


# -- check_settings ----------------------------------------------------------------------


def settings_for(canvas: Path, **more: Any) -> Settings:
    return Settings(canvas_path=canvas, **more)


def test_check_settings_passes_without_a_journal_file_and_creates_none(tmp_path: Path) -> None:
    canvas = canvas_file(tmp_path / "vault")
    assert check_settings(settings_for(canvas)) is None
    assert check_settings(Settings()) is None
    assert not Journal.default_path(canvas).exists()


def test_check_settings_refuses_another_canvas_journal(tmp_path: Path) -> None:
    mine = canvas_file(tmp_path / "a")
    other = canvas_file(tmp_path / "b")
    Journal(Journal.default_path(mine), canvas=mine).close()
    with pytest.raises(JournalError, match="belongs to the canvas"):
        check_settings(settings_for(other, journal_path=Journal.default_path(mine)))


def test_a_moved_canvas_takes_the_journal_over_when_a_run_starts(tmp_path: Path) -> None:
    original = canvas_file(tmp_path / "a")
    Journal(Journal.default_path(original), canvas=original).close()
    (tmp_path / "a").rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "notes.canvas"
    path = Journal.default_path(moved)
    before = path.read_bytes()

    notice = check_settings(settings_for(moved))
    assert notice is not None
    assert "no longer there" in notice
    assert path.read_bytes() == before  # checking writes nothing: a dry run changes nothing
    plugin = JournalPlugin(path, moved)
    assert plugin.recorded_answers() == []
    assert check_settings(settings_for(moved)) == notice  # still to be taken over

    plugin.on_run_start(run_info())  # a run that calls agents records the new owner
    plugin.unconfigure()
    assert check_settings(settings_for(moved)) is None


def test_the_journal_belongs_to_the_canvas_written(tmp_path: Path) -> None:
    canvas = canvas_file(tmp_path / "vault")
    output = tmp_path / "out" / "copy.canvas"
    output.parent.mkdir()
    path = tmp_path / "j.sqlite"
    Journal(path, canvas=output).close()
    assert check_settings(settings_for(canvas, output_path=output, journal_path=path)) is None


@pytest.mark.parametrize(("text", "expected"), [("", DEFAULT_WAIT), (" 0.25 ", 0.25), ("0", 0.0)])
def test_the_wait_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: float
) -> None:
    monkeypatch.setenv(WAIT_ENV, text)
    pm = get_plugin_manager(load_entry_points=False)
    pm.hook.configure(settings=settings_for(tmp_path / "notes.canvas"), pm=pm)
    assert pm.get_plugin("journal-file").wait == expected


@pytest.mark.parametrize("text", ["soon", "-1", "nan"])
def test_a_wait_that_is_no_number_of_seconds_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(WAIT_ENV, text)
    with pytest.raises(ValueError, match=WAIT_ENV):
        check_settings(settings_for(canvas_file(tmp_path)))


# -- writes that fail --------------------------------------------------------------------


def test_a_locked_journal_is_waited_for_then_stops_the_run(tmp_path: Path) -> None:
    canvas = canvas_file(tmp_path / "vault")
    path = Journal.default_path(canvas)
    with Journal(path, canvas=canvas) as journal:
        succeed(journal, task("t0", "n0", input_hash="h0"))
    plugin = JournalPlugin(path, canvas, wait=0.1)
    try:
        assert check_settings(settings_for(canvas)) is None  # reading needs no lock
        with locked(path):
            assert plugin.cached_result(task("x", "n0", input_hash="h0")) is not None
            with pytest.raises(StopRun) as caught:
                plugin.on_run_start(run_info())
        assert str(caught.value) == (
            f"cannot write the journal {path}: another program kept it locked for 0.1 s"
        )
        # Stopped: nothing more is written, and nothing raises again.
        item = task("t1", "n1", input_hash="h1")
        plugin.on_task_start(item)
        plugin.on_task_end(item, ended("success", answer("late")))
        plugin.on_canvas_written([written("n1", "h1", "card")])
        with pytest.raises(StopRun):
            plugin.on_run_start(run_info("r2"))
    finally:
        plugin.unconfigure()
    with Journal(path) as journal:
        assert [o.task_id for o in journal.outcomes()] == ["t0"]


def test_a_journal_that_cannot_be_created_stops_the_run(tmp_path: Path) -> None:
    plugin = JournalPlugin(tmp_path / "missing" / "j.sqlite", None)
    with pytest.raises(StopRun, match="cannot open the journal"):
        plugin.on_run_start(run_info())
    assert plugin.failure is not None
    plugin.unconfigure()


class FailingJournal(Journal):
    """A journal whose writes fail as on a full disk, from the ``after``-th outcome on."""

    after = 2

    def on_task_end(self, task: Any, outcome: Any) -> None:
        if len(self.outcomes()) >= self.after:
            raise sqlite3.OperationalError("database or disk is full")
        super().on_task_end(task, outcome)

    def mark_all_written(self, answers: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    def record_cancelled(self) -> int:
        raise sqlite3.OperationalError("database or disk is full")


def test_a_write_that_fails_stops_the_run_and_the_journal_writes_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "Journal", FailingJournal)
    path = tmp_path / "j.sqlite"
    plugin = JournalPlugin(path, None)
    plugin.on_run_start(run_info())
    for number in range(2):
        item = task(f"t{number}", f"n{number}", input_hash=f"h{number}")
        plugin.on_task_start(item)
        plugin.on_task_end(item, ended("success", answer("ok")))
    item = task("t2", "n2", input_hash="h2")
    plugin.on_task_start(item)
    with pytest.raises(StopRun, match=r"^cannot write the journal .*: database or disk is full$"):
        plugin.on_task_end(item, ended("success", answer("lost")))
    plugin.on_task_end(task("t3", "n3"), ended("success", answer("later")))  # quiet now
    plugin.unconfigure()  # records no cancelled task, raises nothing
    with Journal(path) as journal:
        assert [o.task_id for o in journal.outcomes()] == ["t0", "t1"]


def test_marking_answers_written_that_fails_is_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "Journal", FailingJournal)
    plugin = JournalPlugin(tmp_path / "j.sqlite", None)
    plugin.on_run_start(run_info())
    with pytest.raises(StopRun, match="database or disk is full"):
        plugin.on_canvas_written([written("n1", "h1", "card")])
    plugin.unconfigure()


def test_recording_the_tasks_in_flight_that_fails_is_logged_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(journal_module, "Journal", FailingJournal)
    plugin = JournalPlugin(tmp_path / "j.sqlite", None)
    plugin.on_run_start(run_info())
    plugin.unconfigure()
    (record,) = caplog.records
    assert record.exc_info is None
    assert "database or disk is full" in record.getMessage()


def test_a_journal_locked_before_it_is_opened_is_refused_after_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"  # the holder creates it, not in WAL mode: reading waits too
    with locked(path), pytest.raises(JournalError) as caught:
        Journal(path, wait=0.1)
    assert str(caught.value) == (
        f"cannot open the journal {path}: another program kept it locked for 0.1 s;"
        " try again once it is done, or use --no-journal"
    )


def test_answers_that_cannot_be_read_refuse_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def malformed(self: Journal) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    Journal(tmp_path / "j.sqlite").close()
    monkeypatch.setattr(Journal, "written_answers", malformed)
    plugin = JournalPlugin(tmp_path / "j.sqlite", None)
    try:
        with pytest.raises(JournalError, match="malformed; move it away or use --no-journal"):
            plugin.recorded_answers()
    finally:
        plugin.unconfigure()
