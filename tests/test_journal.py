"""The journal: every outcome committed as it happens, found again by input hash, kill -9 safe."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from command_handlers import hookimpl
from command_handlers.default_plugins import journal as journal_module
from command_handlers.default_plugins.journal import (
    SCHEMA_VERSION,
    STATUSES,
    Answer,
    Journal,
    JournalError,
    JournalPlugin,
    Outcome,
)
from command_handlers.hookspecs import WrittenAnswer
from command_handlers.plugins import (
    AsyncTask,
    RetryPolicy,
    RunPolicy,
    TaskOutcome,
    get_plugin_manager,
    run_tasks,
)
from command_handlers.settings import Settings

ZERO_COUNTS = dict.fromkeys(STATUSES, 0)
#: A subprocess of this module is killed after this many seconds.
SUBPROCESS_TIMEOUT = 60


class Clock:
    """A hand-driven ``time`` stand-in for the journal's ``time.time`` and ``time.monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.steady = 0.0  # ``time.monotonic``: moved by the test alone

    def time(self) -> float:
        self.now += 1.0
        return self.now

    def monotonic(self) -> float:
        return self.steady


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(journal_module, "time", fake)
    return fake


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "j.sqlite", canvas=tmp_path / "notes.canvas") as opened:
        yield opened


def task(
    task_id: str, note_id: str | None = None, agent: str = "oral", input_hash: str | None = None
) -> SimpleNamespace:
    data: dict[str, Any] = {"prompt": f"explain {task_id}"}
    if note_id is not None:
        data["note_id"] = note_id
    if input_hash is not None:
        data["input_hash"] = input_hash
    return SimpleNamespace(task_id=task_id, agent_name=agent, node_data=data)


def run_info(run_id: str = "r1", task_count: int = 3) -> SimpleNamespace:
    return SimpleNamespace(run_id=run_id, task_count=task_count)


def answer(text: str) -> dict[str, str]:
    return {"text": text, "agent": "oral", "model": "echo"}


def ended(
    status: str = "success",
    result: Any = None,
    error: str | None = None,
    *,
    attempts: int | None = None,
    started: float | None = 1.0,
    finished: float = 2.0,
    cached: bool = False,
) -> TaskOutcome:
    """An outcome as the engine hands it to ``on_task_end``."""
    ran = status in ("success", "failed")
    return TaskOutcome(
        status=status,
        result=result,
        error=error,
        error_type="RuntimeError" if status == "failed" else None,
        attempts=(1 if ran else 0) if attempts is None else attempts,
        started=started if ran else None,
        finished=finished,
        cached=cached,
    )


def succeed(
    journal: Journal, item: SimpleNamespace, text: str = "fine", *, attempts: int = 1
) -> None:
    journal.on_task_start(item)
    journal.on_task_end(item, ended("success", answer(text), attempts=attempts))


def fail(journal: Journal, item: SimpleNamespace, error: str = "refused") -> None:
    journal.on_task_start(item)
    journal.on_task_end(item, ended("failed", error=error))


def skip(journal: Journal, item: SimpleNamespace, blocker: str = "t0") -> None:
    """A task skipped because a dependency failed: it never started."""
    journal.on_task_end(item, ended("skipped", error=f"dependency {blocker!r} failed"))


# -- the file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canvas", "expected"),
    [
        ("notes.canvas", Path(".notes.canvas.journal.sqlite")),
        (Path("study/notes.canvas"), Path("study/.notes.canvas.journal.sqlite")),
        ("/abs/my notes.canvas", Path("/abs/.my notes.canvas.journal.sqlite")),
    ],
)
def test_default_path_is_a_hidden_file_beside_the_canvas(
    canvas: str | Path, expected: Path
) -> None:
    assert Journal.default_path(canvas) == expected


def test_a_new_file_gets_the_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(str(path)) as journal:
        assert journal.path == path
        assert journal.canvas is None
        assert journal.run_id is None
        assert journal.outcomes() == []
        assert journal.outcome_counts() == ZERO_COUNTS
        conn = journal._conn
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: Journal.sync
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"runs", "outcomes", "outcomes_by_input_hash", "outcomes_by_note_agent"} <= tables


def test_an_existing_file_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as first:
        succeed(first, task("t1", "n1", input_hash="h1"))
    with Journal(path) as second:
        assert [o.task_id for o in second.outcomes()] == ["t1"]
        succeed(second, task("t2", "n2", input_hash="h2"))
    with Journal(path) as third:
        assert [o.task_id for o in third.outcomes()] == ["t1", "t2"]


def test_an_empty_file_and_a_foreign_sqlite_file_are_adopted(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with Journal(empty) as journal:
        assert journal.outcomes() == []
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    with conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    with Journal(foreign) as journal:
        succeed(journal, task("t1"))
        assert len(journal.outcomes()) == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalError, match="newer") as caught:
        Journal(path)
    assert str(path) in str(caught.value)
    assert f"version {SCHEMA_VERSION + 1}" in str(caught.value)


#: The schema of version 1, as the first release wrote it (no ``usage`` column).
SCHEMA_1 = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, canvas TEXT, task_count INTEGER NOT NULL,
    started_at REAL NOT NULL);
CREATE TABLE outcomes (id INTEGER PRIMARY KEY, run_id TEXT, task_id TEXT, note_id TEXT,
    agent TEXT, input_hash TEXT, status TEXT NOT NULL, result TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 1, started_at REAL, finished_at REAL NOT NULL,
    answer_node_id TEXT, file_node_id TEXT, written_at REAL);
INSERT INTO outcomes (run_id, task_id, note_id, agent, input_hash, status, result, attempts,
    started_at, finished_at) VALUES ('r0', 't0', 'n0', 'oral', 'h0', 'success',
    '{"text": "old", "agent": "oral", "model": "echo"}', 1, 1.0, 2.0);
PRAGMA user_version = 1;
"""


def test_a_version_1_file_gains_the_usage_column(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1)
    conn.close()

    with Journal(path) as journal:
        (old,) = journal.outcomes()
        assert (old.task_id, old.usage, old.result["text"]) == ("t0", None, "old")
        assert journal.cached_result(task("t9", input_hash="h0")) == old.result
        spent = {"input_tokens": 12, "output_tokens": 34}
        item = task("t1", "n1", input_hash="h1")
        journal.on_task_start(item)
        journal.on_task_end(item, ended("success", {**answer("new"), "usage": spent}))
        assert journal.outcomes()[-1].usage == spent
        assert journal.usage_totals() == spent

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        columns = [row[1] for row in conn.execute("PRAGMA table_info(outcomes)")]
    finally:
        conn.close()
    assert columns[-1] == "usage"
    with Journal(path) as again:  # opening a migrated file changes nothing
        assert len(again.outcomes()) == 2


def test_usage_is_kept_only_for_calls_made(tmp_path: Path) -> None:
    spent = {"input_tokens": 5, "output_tokens": 7}
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.on_run_start(run_info("r1"))
        made, reused, failed_task = task("t1"), task("t2"), task("t3")
        journal.on_task_end(made, ended("success", {**answer("a"), "usage": spent}))
        journal.on_task_end(reused, ended("success", {**answer("b"), "usage": spent}, cached=True))
        journal.on_task_end(failed_task, ended("failed", error="boom"))
        journal.on_task_end(task("t4"), ended("success", {**answer("c"), "usage": "lots"}))
        assert [o.usage for o in journal.outcomes()] == [spent, None, None, None]
        assert journal.usage_totals("r1") == spent
        assert journal.usage_totals("other") == {"input_tokens": 0, "output_tokens": 0}


def test_a_corrupt_file_raises_journal_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.canvas"
    path.write_text('{"nodes": [], "edges": []}\n' * 200, encoding="utf-8")
    with pytest.raises(JournalError) as caught:
        Journal(path)
    assert isinstance(caught.value, ValueError)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_an_unreachable_path_raises_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(tmp_path / "missing" / "j.sqlite")
    with pytest.raises(JournalError):
        Journal(tmp_path)  # a directory


def test_close_is_idempotent_and_the_context_manager_closes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.close()
    journal.close()
    with pytest.raises(sqlite3.ProgrammingError):
        journal.outcomes()
    with Journal(tmp_path / "j.sqlite") as opened:
        assert opened.outcomes() == []
    with pytest.raises(sqlite3.ProgrammingError):
        opened.outcomes()


# -- the hooks -----------------------------------------------------------------------


def test_a_run_is_recorded_with_its_canvas(journal: Journal, tmp_path: Path) -> None:
    journal.on_run_start(run_info("r1", 7))
    journal.on_run_start(run_info("r1", 7))  # heard twice: kept once
    assert journal.run_id == "r1"
    assert journal.canvas == tmp_path / "notes.canvas"
    rows = journal._conn.execute("SELECT run_id, canvas, task_count FROM runs").fetchall()
    assert rows == [("r1", str(tmp_path / "notes.canvas"), 7)]


def test_a_run_without_a_canvas(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.on_run_start(run_info("r2"))
        assert journal._conn.execute("SELECT canvas FROM runs").fetchall() == [(None,)]


def test_outcomes_are_synced_once_a_second_at_most(tmp_path: Path, clock: Clock) -> None:
    statements: list[str] = []
    with Journal(tmp_path / "j.sqlite") as journal:
        journal._conn.set_trace_callback(statements.append)
        journal.on_run_start(run_info(task_count=4))
        for number in range(3):  # within the second: committed, not synced
            succeed(journal, task(f"t{number}", f"n{number}", input_hash=f"h{number}"))
        assert sum(s.startswith("PRAGMA wal_checkpoint") for s in statements) == 0
        clock.steady += 1.0
        succeed(journal, task("t3", "n3", input_hash="h3"))
        assert statements[-1] == "PRAGMA wal_checkpoint(PASSIVE)"  # after the commit
    # A checkpoint syncs the log and moves it into the file: all four are there.
    conn = sqlite3.connect(f"file:{tmp_path / 'j.sqlite'}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == 4
    finally:
        conn.close()


def test_the_plugin_syncs_the_outcomes_when_the_calls_are_done(tmp_path: Path) -> None:
    plugin = JournalPlugin(tmp_path / "j.sqlite", tmp_path / "notes.canvas")
    plugin.on_run_start(run_info(task_count=1))
    journal = plugin._journal
    assert journal is not None
    statements: list[str] = []
    journal._conn.set_trace_callback(statements.append)
    item = task("t1", "n1", input_hash="h1")
    plugin.on_task_start(item)
    plugin.on_task_end(item, ended("success", answer("fine")))
    plugin.on_run_end()
    plugin.unconfigure()

    assert statements.index("PRAGMA wal_checkpoint(PASSIVE)") > statements.index("COMMIT")


def test_a_success_is_committed_with_everything(journal: Journal, clock: Clock) -> None:
    journal.on_run_start(run_info())
    item = task("t1", "n1", input_hash="h1")
    journal.on_task_start(item)
    # the times and the attempts are the outcome's, not the journal's clock
    journal.on_task_end(item, ended("success", answer("Hello"), started=1500.0, finished=1502.5))
    # committed: another connection sees it at once
    other = sqlite3.connect(journal.path)
    try:
        assert other.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == 1
    finally:
        other.close()
    (outcome,) = journal.outcomes()
    assert outcome == Outcome(
        id=outcome.id,
        run_id="r1",
        task_id="t1",
        note_id="n1",
        agent="oral",
        input_hash="h1",
        status="success",
        result=answer("Hello"),
        error=None,
        attempts=1,
        started_at=1500.0,
        finished_at=1502.5,
        answer_node_id=None,
        file_node_id=None,
        written_at=None,
    )


def test_a_failure_keeps_the_error_and_no_result(journal: Journal) -> None:
    journal.on_run_start(run_info())
    fail(journal, task("t1", "n1", input_hash="h1"), "no answer in 60s")
    (outcome,) = journal.outcomes()
    assert outcome.status == "failed"
    assert outcome.error == "no answer in 60s"
    assert outcome.result is None
    assert outcome.started_at is not None


def test_a_skipped_task_is_recorded_with_its_note_agent_and_input_hash(journal: Journal) -> None:
    journal.on_run_start(run_info())
    first, second = task("t1", "n1", input_hash="h1"), task("t2", "n2", "clarify", "h2")
    fail(journal, first)
    skip(journal, second, blocker="t1")  # never started: known from on_task_end alone
    skipped = journal.outcomes()[1]
    assert (skipped.status, skipped.note_id, skipped.agent, skipped.input_hash) == (
        "skipped",
        "n2",
        "clarify",
        "h2",
    )
    assert skipped.started_at is None
    assert skipped.attempts == 0
    assert skipped.error == "dependency 't1' failed"
    assert skipped.result is None
    assert journal.outcome_counts() == {**ZERO_COUNTS, "failed": 1, "skipped": 1}


MISLEADING_ERRORS = {
    "success": None,
    "failed": "skipped: cancelled: looks like a skip",
    "skipped": "cancelled: dependency 'x' failed",
    "cancelled": "skipped: fail-fast: task 'x' failed",
}


@pytest.mark.parametrize("status", STATUSES)
def test_the_status_is_the_outcomes_never_read_from_the_error(
    journal: Journal, status: str
) -> None:
    # An error text that looks like another status changes nothing.
    error = MISLEADING_ERRORS[status]
    result = answer("ok") if status == "success" else None
    journal.on_task_end(task("t1", "n1", input_hash="h1"), ended(status, result, error))
    (outcome,) = journal.outcomes()
    assert outcome.status == status
    assert outcome.error == error


def test_a_cancelled_outcome_keeps_its_reason(journal: Journal) -> None:
    item = task("t1", "n1", input_hash="h1")
    journal.on_task_start(item)
    journal.on_task_end(item, ended("cancelled", error="fail-fast: task 'x' failed"))
    (outcome,) = journal.outcomes()
    assert (outcome.status, outcome.error, outcome.result) == (
        "cancelled",
        "fail-fast: task 'x' failed",
        None,
    )
    assert journal.record_cancelled() == 0  # it ended: not in flight any more


def test_a_task_never_started_is_still_recorded_with_its_identity(journal: Journal) -> None:
    ghost = task("ghost", "n9", input_hash="h9")
    journal.on_task_end(ghost, ended("success", {"text": "?"}, started=None))
    (outcome,) = journal.outcomes()
    assert (outcome.run_id, outcome.task_id, outcome.note_id, outcome.agent) == (
        None,
        "ghost",
        "n9",
        "oral",
    )
    assert outcome.input_hash == "h9"
    assert outcome.started_at is None


def test_a_task_without_note_or_hash_is_recorded_with_nulls(journal: Journal) -> None:
    journal.on_task_end(task("bare"), ended("success", {"text": "?"}))
    (outcome,) = journal.outcomes()
    assert (outcome.task_id, outcome.note_id, outcome.agent, outcome.input_hash) == (
        "bare",
        None,
        "oral",
        None,
    )


def test_a_result_json_cannot_hold_is_kept_as_text(journal: Journal) -> None:
    journal.on_task_end(task("t1"), ended("success", {"text": "hi", "path": Path("a/b.md")}))
    journal.on_task_end(task("t2"), ended("success", "just text"))
    assert [o.result for o in journal.outcomes()] == [
        {"text": "hi", "path": str(Path("a/b.md"))},
        "just text",
    ]


def test_non_string_identity_values_are_stored_as_text(journal: Journal) -> None:
    item = SimpleNamespace(task_id="t1", agent_name="oral", node_data={"note_id": 42})
    succeed(journal, item)
    assert journal.outcomes()[0].note_id == "42"


def test_attempts_come_from_each_outcome(journal: Journal) -> None:
    succeed(journal, task("t1"), attempts=3)
    succeed(journal, task("t1"))
    journal.on_task_end(task("t2"), ended("failed", error="down", attempts=4))
    journal.on_task_end(task("t3"), ended("success", answer("cached"), attempts=0, cached=True))
    assert [o.attempts for o in journal.outcomes()] == [3, 1, 4, 0]


def test_record_cancelled_records_the_tasks_in_flight(journal: Journal, clock: Clock) -> None:
    journal.on_run_start(run_info())
    journal.on_task_start(task("t1", "n1", input_hash="h1"))
    journal.on_task_start(task("t2", "n2", input_hash="h2"))
    journal.on_task_end(task("t1", "n1", input_hash="h1"), ended("success", answer("done")))
    assert journal.record_cancelled() == 1
    assert journal.record_cancelled() == 0
    cancelled = journal.outcomes()[1]
    assert (cancelled.task_id, cancelled.note_id, cancelled.agent, cancelled.input_hash) == (
        "t2",
        "n2",
        "oral",
        "h2",
    )
    assert cancelled.status == "cancelled"
    assert cancelled.attempts == 1
    assert cancelled.started_at == 1003.0  # when on_task_start heard it
    assert cancelled.finished_at > cancelled.started_at
    assert cancelled.result is None
    assert cancelled.error is not None
    assert "interrupted" in cancelled.error
    assert journal.outcome_counts("r1") == {**ZERO_COUNTS, "success": 1, "cancelled": 1}


# -- cached_result -------------------------------------------------------------------


def test_cached_result_hits_the_same_input_hash(journal: Journal) -> None:
    succeed(journal, task("t1", "n1", input_hash="h1"), "first")
    assert journal.cached_result(task("x", "other-note", input_hash="h1")) == answer("first")


def test_cached_result_misses_another_hash_or_none(journal: Journal) -> None:
    succeed(journal, task("t1", "n1", input_hash="h1"))
    assert journal.cached_result(task("t1", "n1", input_hash="h2")) is None
    assert journal.cached_result(task("t1", "n1")) is None


def test_cached_result_ignores_failures_and_skips(journal: Journal) -> None:
    item = task("t1", "n1", input_hash="h1")
    fail(journal, item)
    skip(journal, item)
    journal.on_task_end(item, ended("cancelled", error="stopped"))
    assert journal.cached_result(item) is None
    succeed(journal, item, "at last")
    fail(journal, item)  # a later failure does not hide the success
    assert journal.cached_result(item) == answer("at last")


def test_cached_result_the_newest_success_wins(journal: Journal) -> None:
    for text in ("old", "new"):
        succeed(journal, task("t1", "n1", input_hash="h1"), text)
    assert journal.cached_result(task("t1", "n1", input_hash="h1")) == answer("new")


def test_cached_result_of_a_result_that_is_not_a_dict_is_none(journal: Journal) -> None:
    journal.on_task_end(task("t1", "n1", input_hash="h1"), ended("success", "plain text"))
    assert journal.cached_result(task("t1", "n1", input_hash="h1")) is None


def test_cached_result_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        succeed(journal, task("t1", "n1", input_hash="h1"), "kept")
    with Journal(path) as journal:
        assert journal.cached_result(task("t1", "n1", input_hash="h1")) == answer("kept")


# -- written answers -----------------------------------------------------------------


def test_mark_written_and_answers_for(journal: Journal, clock: Clock) -> None:
    succeed(journal, task("t1", "n1", input_hash="h1"), "v1")
    assert journal.answers_for("n1", "oral") == []
    journal.mark_written("h1", "n1", "oral", "card-1", "file-1")
    succeed(journal, task("t1", "n1", input_hash="h2"), "v2")  # the note was edited
    journal.mark_written("h2", "n1", "oral", "card-2", None)
    answers = journal.answers_for("n1", "oral")
    assert [(a.answer_node_id, a.file_node_id, a.input_hash) for a in answers] == [
        ("card-2", None, "h2"),
        ("card-1", "file-1", "h1"),
    ]
    assert answers[0].written_at > answers[1].written_at
    assert isinstance(answers[0], Answer)
    assert journal.answers_for("n1", "clarify") == []
    assert journal.answers_for("n2", "oral") == []


def test_written_answers_lists_every_written_answer_with_its_text(
    journal: Journal, clock: Clock
) -> None:
    succeed(journal, task("t1", "n1", input_hash="h1"), "v1")
    succeed(journal, task("t2", "n2", agent="clarify", input_hash="h2"), "v2")
    item = task("t3", "n3", input_hash="h3")
    journal.on_task_start(item)
    journal.on_task_end(item, ended("success", "a bare string"))
    succeed(journal, task("t4", "n4", input_hash="h4"), "never written")
    journal.mark_written("h2", "n2", "clarify", "card-2", "file-2")
    journal.mark_written("h1", "n1", "oral", "card-1", None)
    journal.mark_written("h3", "n3", "oral", "card-3", None)

    answers = journal.written_answers()

    assert [(a.note_id, a.agent, a.answer_node_id, a.file_node_id, a.text) for a in answers] == [
        ("n2", "clarify", "card-2", "file-2", "v2"),
        ("n1", "oral", "card-1", None, "v1"),
        ("n3", "oral", "card-3", None, "a bare string"),
    ]
    assert [a.input_hash for a in answers] == ["h2", "h1", "h3"]
    assert journal.answers_for("n1", "oral") == [answers[1]]


def test_a_written_answer_without_text(journal: Journal) -> None:
    item = task("t1", "n1", input_hash="h1")
    journal.on_task_start(item)
    journal.on_task_end(item, ended("success", {"model": "m"}))
    journal.mark_written("h1", "n1", "oral", "card", None)

    (written,) = journal.written_answers()

    assert written.text is None


def test_mark_written_marks_the_newest_success_of_the_note(journal: Journal) -> None:
    item = task("t1", "n1", input_hash="h1")
    succeed(journal, item, "old")
    succeed(journal, item, "new")
    fail(journal, item)
    journal.mark_written("h1", "n1", "oral", "card", "file")
    marked = [(o.result, o.answer_node_id) for o in journal.outcomes()]
    assert marked == [(answer("old"), None), (answer("new"), "card"), (None, None)]


def test_mark_written_copies_an_answer_reused_from_another_note(journal: Journal) -> None:
    journal.on_run_start(run_info("r1"))
    succeed(journal, task("t1", "n1", input_hash="same"), "shared")
    journal.on_run_start(run_info("r2"))
    journal.mark_written("same", "n2", "oral", "card-n2", "file-n2")
    copy = journal.outcomes()[-1]
    assert (copy.run_id, copy.task_id, copy.note_id, copy.agent) == ("r2", None, "n2", "oral")
    assert (copy.status, copy.result, copy.attempts) == ("success", answer("shared"), 0)
    assert copy.answer_node_id == "card-n2"
    assert copy.written_at is not None
    assert [a.answer_node_id for a in journal.answers_for("n2", "oral")] == ["card-n2"]
    assert journal.answers_for("n1", "oral") == []


def test_mark_written_without_any_success_raises_lookup_error(journal: Journal) -> None:
    fail(journal, task("t1", "n1", input_hash="h1"))
    with pytest.raises(LookupError, match="h1"):
        journal.mark_written("h1", "n1", "oral", "card", None)
    assert journal.outcome_counts() == {**ZERO_COUNTS, "failed": 1}  # nothing written


def test_unwritten_successes(journal: Journal) -> None:
    succeed(journal, task("a", "n1", input_hash="h1"), "a-old")
    succeed(journal, task("a", "n1", input_hash="h1"), "a-new")
    succeed(journal, task("b", "n2", input_hash="h2"), "b")
    succeed(journal, task("c", "n3", input_hash="h3"), "c-old")
    fail(journal, task("d", "n4", input_hash="h4"))
    journal.on_task_end(task("no-hash"), ended("success", answer("x")))
    journal.mark_written("h2", "n2", "oral", "card-b", None)
    succeed(journal, task("c", "n3", input_hash="h3"), "c-new")
    journal.mark_written("h3", "n3", "oral", "card-c", None)  # marks c-new: c-old is older
    unwritten = journal.unwritten_successes()
    assert [(o.task_id, o.result["text"]) for o in unwritten] == [("a", "a-new")]
    journal.mark_written("h1", "n1", "oral", "card-a", None)
    assert journal.unwritten_successes() == []


def test_outcome_counts_per_run(journal: Journal) -> None:
    journal.on_run_start(run_info("r1"))
    succeed(journal, task("t1"))
    fail(journal, task("t2"))
    journal.on_run_start(run_info("r2"))
    succeed(journal, task("t1"))
    assert journal.outcome_counts() == {**ZERO_COUNTS, "success": 2, "failed": 1}
    assert journal.outcome_counts("r1") == {**ZERO_COUNTS, "success": 1, "failed": 1}
    assert journal.outcome_counts("r2") == {**ZERO_COUNTS, "success": 1}
    assert journal.outcome_counts("r3") == ZERO_COUNTS
    assert [o.task_id for o in journal.outcomes("r2")] == ["t1"]


# -- a process killed between outcomes -----------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from types import SimpleNamespace
    from command_handlers.default_plugins.journal import Journal
    from command_handlers.plugins import TaskOutcome

    journal = Journal(sys.argv[1])
    journal.on_run_start(SimpleNamespace(run_id="doomed", task_count=10**9))
    i = 0
    while True:
        item = SimpleNamespace(
            task_id=f"t{i}", agent_name="oral",
            node_data={"note_id": f"n{i}", "input_hash": f"h{i}"},
        )
        journal.on_task_start(item)
        outcome = TaskOutcome(
            status="success", result={"text": "x" * 2000, "i": i}, error=None,
            error_type=None, attempts=1, started=i, finished=i,
        )
        journal.on_task_end(item, outcome)
        print(i + 1, flush=True)
        i += 1
    """
)


def test_kill_9_between_outcomes_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed = 0
    # A child that hangs without printing is killed: readline() then returns "".
    watchdog = threading.Timer(SUBPROCESS_TIMEOUT, child.kill)
    watchdog.start()
    try:
        assert child.stdout is not None
        while printed < 50:
            line = child.stdout.readline()
            if not line:
                break
            printed = int(line)
    finally:
        watchdog.cancel()
        os.kill(child.pid, signal.SIGKILL)
        _, stderr = child.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert child.returncode == -signal.SIGKILL, stderr
    assert printed >= 50, stderr
    with Journal(path) as journal:
        assert journal._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        outcomes = journal.outcomes("doomed")
        assert len(outcomes) >= printed
        assert [o.task_id for o in outcomes] == [f"t{i}" for i in range(len(outcomes))]
        assert all(o.status == "success" for o in outcomes)
        assert journal.cached_result(task("t0", "n0", input_hash="h0")) == {
            "text": "x" * 2000,
            "i": 0,
        }
        succeed(journal, task("after", "n", input_hash="h"))  # still writable
        assert journal.outcome_counts()["success"] == len(outcomes) + 1


# -- through the plugin layer --------------------------------------------------------


class EchoPlugin:
    """Registers ``echo-agent``: answers the prompt, fails on ``"boom"``, flakes on ``"flaky"``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def register_executors(self, register: Any) -> None:
        async def executor(task: AsyncTask) -> dict[str, Any]:
            self.calls.append(task.task_id)
            prompt = task.node_data["prompt"]
            if prompt == "boom":
                raise RuntimeError("model refused")
            if prompt == "flaky" and self.calls.count(task.task_id) < 3:
                raise ConnectionError("connection reset")
            return {"text": prompt.upper(), "agent": task.agent_name, "model": "echo"}

        register("echo-agent", executor)


def note_task(task_id: str, prompt: str, dependencies: list[str] | None = None) -> AsyncTask:
    data = {"note_id": f"note-{task_id}", "input_hash": f"hash-{prompt}", "prompt": prompt}
    return AsyncTask(task_id, "echo-agent", data, dependencies=dependencies)


def journal_manager() -> Any:
    """A manager with the engine and the echo agent, but none of the built-in agents."""
    pm = get_plugin_manager(load_entry_points=False, disabled=["llm-agents", "command-agent"])
    return pm


async def test_through_the_plugin_layer(tmp_path: Path) -> None:
    pm = journal_manager()
    echo = EchoPlugin()
    pm.register(echo, name="echo")
    journal = Journal(tmp_path / "j.sqlite", canvas=tmp_path / "notes.canvas")
    pm.register(journal, name="journal-file")
    try:
        tasks = [
            note_task("a", "hello"),
            note_task("b", "boom"),
            note_task("c", "after boom", dependencies=["b"]),
        ]
        summary = await run_tasks(tasks, pm=pm, dependency_aware=True)
        assert (summary["success"], summary["failed"], summary["skipped"]) == (1, 1, 1)
        run_id = journal.run_id
        assert run_id is not None
        rows = {o.task_id: o for o in journal.outcomes(run_id)}
        # the skipped task never started, yet its note, agent and input hash are recorded
        assert {t: (o.status, o.note_id, o.agent, o.input_hash) for t, o in rows.items()} == {
            "a": ("success", "note-a", "echo-agent", "hash-hello"),
            "b": ("failed", "note-b", "echo-agent", "hash-boom"),
            "c": ("skipped", "note-c", "echo-agent", "hash-after boom"),
        }
        assert rows["a"].result == {"text": "HELLO", "agent": "echo-agent", "model": "echo"}
        assert rows["b"].error == "model refused"
        assert rows["c"].error == "dependency 'b' failed"
        assert [rows[t].attempts for t in "abc"] == [1, 1, 0]
        assert rows["c"].started_at is None
        assert rows["a"].started_at is not None
        assert rows["a"].started_at <= rows["a"].finished_at
        # the next run asks the hook before paying again
        again = note_task("a2", "hello")
        assert pm.hook.cached_result(task=again) == rows["a"].result
        assert pm.hook.cached_result(task=note_task("b", "boom")) is None
        assert echo.calls.count("a") == 1
    finally:
        pm.unregister(journal)
        journal.close()


async def test_the_attempts_of_a_retried_task_come_from_its_outcome(tmp_path: Path) -> None:
    pm = journal_manager()
    echo = EchoPlugin()
    pm.register(echo, name="echo")
    with Journal(tmp_path / "j.sqlite") as journal:
        pm.register(journal, name="journal-file")
        policy = RunPolicy(retry=RetryPolicy(retries=3, base_delay=0.0))
        summary = await run_tasks(
            [note_task("f", "flaky"), note_task("g", "fine")], pm=pm, policy=policy
        )
        assert summary["success"] == 2
        rows = {o.task_id: o for o in journal.outcomes()}
    assert echo.calls.count("f") == 3
    assert (rows["f"].status, rows["f"].attempts) == ("success", 3)
    assert (rows["g"].status, rows["g"].attempts) == ("success", 1)


async def test_cancelled_tasks_are_recorded_with_their_reason(tmp_path: Path) -> None:
    pm = journal_manager()
    pm.register(EchoPlugin(), name="echo")
    with Journal(tmp_path / "j.sqlite") as journal:
        pm.register(journal, name="journal-file")
        tasks = [note_task("b", "boom"), note_task("x", "later"), note_task("y", "later too")]
        await run_tasks(tasks, pm=pm, max_concurrency=1, policy=RunPolicy(fail_fast=True))
        rows = {o.task_id: o for o in journal.outcomes()}
    assert rows["b"].status == "failed"
    assert {t: (rows[t].status, rows[t].error) for t in ("x", "y")} == {
        "x": ("cancelled", "fail-fast: task 'b' failed"),
        "y": ("cancelled", "fail-fast: task 'b' failed"),
    }
    assert rows["x"].note_id == "note-x"


async def test_an_answer_served_from_the_journal_is_recorded_as_costing_no_call(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    class Agent:
        @hookimpl
        def register_executors(self, register: Any) -> None:
            async def answer(task: Any) -> dict[str, str]:
                calls.append(task.task_id)
                return {"text": "fresh"}

            register("echo-agent", answer)

    def tasks() -> list[AsyncTask]:
        return [
            AsyncTask("t", "echo-agent", {"note_id": "n", "input_hash": "h", "prompt": "p"}),
            AsyncTask(
                "u",
                "echo-agent",
                {"note_id": "m", "input_hash": "h2", "prompt": "p"},
                dependencies=["t"],
            ),
        ]

    for _ in range(2):
        pm = get_plugin_manager(load_entry_points=False)
        for name in ("llm-agents", "command-agent"):
            pm.unregister(name=name)
        pm.register(Agent())
        journal = Journal(tmp_path / "j.sqlite")
        pm.register(journal, name="journal-file")
        await run_tasks(tasks(), pm=pm, use_cache=True, dependency_aware=True)
        rows = journal.outcomes()
        journal.close()
    assert calls == ["t", "u"]  # the second run paid for nothing
    assert [(r.task_id, r.attempts) for r in rows] == [("t", 1), ("u", 1), ("t", 0), ("u", 0)]
    assert [r.status for r in rows] == ["success"] * 4


# -- on_canvas_written ---------------------------------------------------------------


def written(
    note_id: str, input_hash: str, card: str, agent: str = "oral", file_node: str | None = None
) -> WrittenAnswer:
    return WrittenAnswer(
        task_id=f"{note_id}:{agent}",
        note_id=note_id,
        agent=agent,
        input_hash=input_hash,
        answer_node_id=card,
        file_node_id=file_node,
    )


def test_on_canvas_written_marks_every_answer(journal: Journal, tmp_path: Path) -> None:
    succeed(journal, task("t1", "n1", input_hash="h1"), "v1")
    succeed(journal, task("t2", "n2", agent="clarify", input_hash="h2"), "v2")
    journal.on_canvas_written(
        [
            written("n1", "h1", "card-1", file_node="file-1"),
            written("n2", "h2", "card-2", "clarify"),
        ]
    )
    assert [(a.note_id, a.answer_node_id, a.file_node_id) for a in journal.written_answers()] == [
        ("n1", "card-1", "file-1"),
        ("n2", "card-2", None),
    ]
    assert journal.unwritten_successes() == []


def test_an_answer_no_outcome_answered_is_logged_not_raised(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    succeed(journal, task("t1", "n1", input_hash="h1"), "v1")
    with caplog.at_level(logging.WARNING, logger="command_handlers.journal"):
        journal.on_canvas_written([written("n9", "nowhere", "card-9"), written("n1", "h1", "c1")])
    assert [a.answer_node_id for a in journal.written_answers()] == ["c1"]
    messages = [r.getMessage() for r in caplog.records if r.name == "command_handlers.journal"]
    assert len(messages) == 1
    assert "'nowhere'" in messages[0]


def test_mark_all_written_is_one_transaction(journal: Journal) -> None:
    succeed(journal, task("t1", "n1", input_hash="h1"))
    succeed(journal, task("t2", "n2", input_hash="h2"))
    statements: list[str] = []
    journal._conn.set_trace_callback(statements.append)
    journal.mark_all_written([written("n1", "h1", "c1"), written("n2", "h2", "c2")])
    journal._conn.set_trace_callback(None)
    assert sum(1 for s in statements if s.strip().upper().startswith("COMMIT")) == 1
    assert len(journal.written_answers()) == 2


# -- JournalPlugin and configure -----------------------------------------------------


def test_the_plugin_creates_no_file_until_a_run_starts(tmp_path: Path) -> None:
    path = tmp_path / ".notes.canvas.journal.sqlite"
    plugin = JournalPlugin(path, tmp_path / "notes.canvas")
    item = task("t1", "n1", input_hash="h1")
    assert plugin.recorded_answers() == []
    assert plugin.cached_result(item) is None
    plugin.on_task_start(item)
    plugin.on_task_end(item, ended("success", answer("lost")))  # no file: nothing to record
    plugin.on_canvas_written([written("n1", "h1", "card")])
    plugin.unconfigure()
    assert not path.exists()

    plugin.on_run_start(run_info("r1", 1))
    assert path.exists()
    plugin.on_task_start(item)
    plugin.on_task_end(item, ended("success", answer("kept")))
    plugin.on_canvas_written([written("n1", "h1", "card-1")])
    assert plugin.cached_result(item) == answer("kept")
    assert [(a.note_id, a.answer_node_id, a.text) for a in plugin.recorded_answers()] == [
        ("n1", "card-1", "kept")
    ]
    plugin.unconfigure()
    with Journal(path) as journal:
        assert [o.task_id for o in journal.outcomes()] == ["t1"]


def test_the_plugin_reads_an_existing_file_without_a_run(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        succeed(journal, task("t1", "n1", input_hash="h1"), "before")
        journal.mark_written("h1", "n1", "oral", "card", None)
    plugin = JournalPlugin(path, None)
    try:
        assert plugin.cached_result(task("x", "n1", input_hash="h1")) == answer("before")
        assert [a.answer_node_id for a in plugin.recorded_answers()] == ["card"]
    finally:
        plugin.unconfigure()


def test_unconfigure_records_the_unfinished_tasks_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    plugin = JournalPlugin(path, None)
    plugin.on_run_start(run_info("r1", 2))
    plugin.on_task_start(task("done", "n1", input_hash="h1"))
    plugin.on_task_end(task("done", "n1", input_hash="h1"), ended("success", answer("ok")))
    plugin.on_task_start(task("hanging", "n2", input_hash="h2"))
    plugin.unconfigure()
    plugin.unconfigure()  # twice: nothing more
    with Journal(path) as journal:
        assert [(o.task_id, o.status) for o in journal.outcomes()] == [
            ("done", "success"),
            ("hanging", "cancelled"),
        ]


def test_configure_registers_the_journal_beside_the_written_canvas(tmp_path: Path) -> None:
    canvas = tmp_path / "notes.canvas"
    output = tmp_path / "out" / "copy.canvas"

    def configured(**settings: Any) -> Any:
        pm = get_plugin_manager(load_entry_points=False)
        pm.hook.configure(settings=Settings(**settings), pm=pm)
        return pm.get_plugin("journal-file")

    assert configured() is None  # no canvas: no journal
    beside = configured(canvas_path=canvas)
    assert isinstance(beside, JournalPlugin)
    assert (beside.path, beside.canvas) == (Journal.default_path(canvas), canvas)
    assert configured(canvas_path=canvas, output_path=output).path == (
        tmp_path / "out" / ".copy.canvas.journal.sqlite"
    )
    chosen = tmp_path / "mine.sqlite"
    assert configured(canvas_path=canvas, output_path=output, journal_path=chosen).path == chosen
    assert not any(tmp_path.rglob("*.sqlite"))  # configuring opens nothing


def test_a_disabled_journal_configures_nothing(tmp_path: Path) -> None:
    pm = get_plugin_manager(load_entry_points=False, disabled=["journal"])
    pm.hook.configure(settings=Settings(canvas_path=tmp_path / "notes.canvas"), pm=pm)
    assert pm.get_plugin("journal-file") is None
