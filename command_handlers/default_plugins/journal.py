"""Remember every task's outcome in a SQLite file, so that a run that died need not pay twice.

A built-in plugin (``journal``). In ``configure`` it sets itself up for the
command's canvas: a :class:`JournalPlugin` that opens the file
``.<canvas>.journal.sqlite`` beside the written canvas (or ``--journal``) when
it is first needed, so that a dry run creates nothing. :class:`Journal` is the
file itself, and a listener plugin a program may register on its own::

    with Journal(Journal.default_path(canvas_path), canvas=canvas_path) as journal:
        pm.register(journal, name="journal-file")
        summary = await run_tasks(tasks, pm=pm)

Each task's outcome (``on_task_end``) becomes one row of the ``outcomes``
table, committed in its own transaction before the hook returns: if the process
is killed (even with ``kill -9``) at task 150 of 200, the 150 outcomes are in
the file, and the next run finds them through the ``cached_result`` hook (the
newest successful outcome with the same ``node_data["input_hash"]``). Once the
command has written answers into the canvas it says so (``on_canvas_written``)
and they are marked written, all in one transaction;
:meth:`Journal.unwritten_successes` lists the answers paid for but never written.

The file belongs to one canvas: it records the canvas's real path (and an id of
its own), and refuses to serve another canvas while that one exists; a canvas
moved or renamed together with its journal takes the journal over.

The module never imports the engine or the plugin layer: a run, a task and an
outcome are whatever has the attributes it reads.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from command_handlers import hookimpl
from command_handlers.hookspecs import OutcomeView, RunView, StopRun, TaskView, WrittenAnswer
from command_handlers.settings import Settings

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "DEFAULT_WAIT",
    "SCHEMA_VERSION",
    "STATUSES",
    "WAIT_ENV",
    "Answer",
    "Journal",
    "JournalError",
    "JournalPlugin",
    "Outcome",
    "configure",
]

#: The version of the file's schema this module writes (SQLite's ``user_version``).
#: Version 2 added the ``usage`` column; a version 1 file is migrated when opened.
SCHEMA_VERSION = 2
#: The statuses an outcome can have.
STATUSES = ("success", "failed", "skipped", "cancelled")
#: How long a write waits for another program holding the file locked, in seconds.
DEFAULT_WAIT = 5.0
#: The environment variable that sets that wait for the command's journal.
WAIT_ENV = "COMMAND_HANDLERS_JOURNAL_WAIT"
#: How often, at most, the outcomes committed are synced to the disk, in seconds.
SYNC_SECONDS = 1.0

logger = logging.getLogger("command_handlers.journal")

_CANCELLED = "the run was interrupted before the task finished"

_SCHEMA = f"""
BEGIN;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    canvas TEXT,
    task_count INTEGER NOT NULL,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY,
    run_id TEXT,
    task_id TEXT,
    note_id TEXT,
    agent TEXT,
    input_hash TEXT,
    status TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    started_at REAL,
    finished_at REAL NOT NULL,
    answer_node_id TEXT,
    file_node_id TEXT,
    written_at REAL,
    usage TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_by_input_hash ON outcomes (input_hash);
CREATE INDEX IF NOT EXISTS outcomes_by_note_agent ON outcomes (note_id, agent);
CREATE TABLE IF NOT EXISTS about (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

_COLUMNS = (
    "id, run_id, task_id, note_id, agent, input_hash, status, result, error, attempts,"
    " started_at, finished_at, answer_node_id, file_node_id, written_at, usage"
)
_ANSWER_COLUMNS = "answer_node_id, file_node_id, input_hash, written_at, note_id, agent, result"
_INSERT = (
    "INSERT INTO outcomes (run_id, task_id, note_id, agent, input_hash, status, result, error,"
    " attempts, started_at, finished_at, usage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_NEWEST_SUCCESS = (
    "SELECT result FROM outcomes WHERE input_hash = ? AND status = 'success'"
    " ORDER BY id DESC LIMIT 1"
)


class JournalError(ValueError):
    """The journal file cannot be used.

    It is not a SQLite file, is damaged, was written by a newer version,
    belongs to another canvas, or stayed locked by another program.
    """


@dataclass(frozen=True)
class Outcome:
    """One row of the journal: how one task ended.

    Attributes:
        id: The row's id; a later outcome has a larger one.
        run_id: The run it belongs to (``None`` when no ``on_run_start`` was heard).
        task_id: The task's id (``None`` for an answer copied by
            :meth:`Journal.mark_written` from another note's outcome).
        note_id: The canvas node the task answered.
        agent: The agent that ran it.
        input_hash: The fingerprint of its input (``node_data["input_hash"]``).
        status: One of :data:`STATUSES`.
        result: The executor's result (decoded JSON) on success, else ``None``.
        error: The error text, ``None`` on success.
        attempts: How many calls it took (0 for a copied answer).
        started_at: When it started (Unix time), ``None`` if it never did.
        finished_at: When it ended (Unix time).
        answer_node_id: The canvas node holding the answer, once written.
        file_node_id: The canvas file node of the answer, once written (if any).
        written_at: When the answer was written into the canvas, else ``None``.
        usage: The tokens its call spent, ``{"input_tokens": N, "output_tokens":
            N}``; ``None`` when the agent did not say, the task failed, or no
            call was made (an answer from the journal).
    """

    id: int
    run_id: str | None
    task_id: str | None
    note_id: str | None
    agent: str | None
    input_hash: str | None
    status: str
    result: Any
    error: str | None
    attempts: int
    started_at: float | None
    finished_at: float
    answer_node_id: str | None
    file_node_id: str | None
    written_at: float | None
    usage: dict[str, int] | None = None


@dataclass(frozen=True)
class Answer:
    """An answer that was written into a canvas.

    Attributes:
        answer_node_id: The canvas node holding the answer.
        file_node_id: The canvas file node of the answer, if any.
        input_hash: The fingerprint of the input it answered.
        written_at: When it was written (Unix time).
        note_id: The note it answers.
        agent: The agent that wrote it.
        text: The answer's text, from the stored result (``None`` when the
            result held none).
        output_tokens: The tokens its call answered, from the stored
            result's ``usage`` (``None`` when it held none): the plan's output
            estimate reads them.
    """

    answer_node_id: str
    file_node_id: str | None
    input_hash: str | None
    written_at: float
    note_id: str | None = None
    agent: str | None = None
    text: str | None = None
    output_tokens: int | None = None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _identity(task: TaskView) -> tuple[str | None, str | None, str | None]:
    """Return the task's ``(note_id, agent, input_hash)``."""
    data = task.node_data
    return _text(data.get("note_id")), task.agent_name, _text(data.get("input_hash"))


def _answer(row: Any) -> Answer:
    """Build an :class:`Answer` from a row of :data:`_ANSWER_COLUMNS`."""
    answer_node_id, file_node_id, input_hash, written_at, note_id, agent, stored = row
    result = json.loads(stored or "null")
    text = result.get("text") if isinstance(result, dict) else result
    usage = result.get("usage") if isinstance(result, dict) else None
    spent = usage.get("output_tokens") if isinstance(usage, dict) else None
    return Answer(
        answer_node_id,
        file_node_id,
        input_hash,
        written_at,
        note_id,
        agent,
        text if isinstance(text, str) else None,
        spent if isinstance(spent, int) and not isinstance(spent, bool) else None,
    )


def _outcome(row: Any) -> Outcome:
    values = list(row)
    if values[7] is not None:
        values[7] = json.loads(values[7])
    if values[15] is not None:
        values[15] = json.loads(values[15])
    return Outcome(*values)


def _usage(outcome: OutcomeView) -> str | None:
    """The tokens a successful call spent, as the ``usage`` column holds them (JSON)."""
    result = outcome.result
    if outcome.status != "success" or outcome.cached or not isinstance(result, Mapping):
        return None
    usage = result.get("usage")
    if not isinstance(usage, Mapping):
        return None
    try:
        tokens = {name: int(usage[name]) for name in ("input_tokens", "output_tokens")}
    except (KeyError, TypeError, ValueError):
        return None
    return json.dumps(tokens)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file of an older schema up to :data:`SCHEMA_VERSION`, in one transaction.

    Version 1 lacks the ``usage`` column: it is added, empty (the answers
    recorded before did not keep their usage).
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outcomes)")}
    if not columns or "usage" in columns:
        return
    with conn:
        conn.execute("ALTER TABLE outcomes ADD COLUMN usage TEXT")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _open(path: Path, wait: float, check: bool) -> sqlite3.Connection:
    """Open (creating if need be) the journal at ``path``; raise sqlite3 errors as they come.

    ``check``: look the whole file over first (``PRAGMA quick_check``, about
    0.1 s of CPU for 100,000 outcomes), so that a damaged file is refused
    before any call rather than failing the run halfway.
    """
    conn = sqlite3.connect(path, timeout=wait)
    try:
        if check:
            verdict = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"the file is damaged ({verdict})")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit is in the write-ahead log at once, so that a killed
        # process loses no committed outcome, but the log is synced to the disk
        # only by Journal.sync: once a second at most while outcomes come, and
        # at the end of a run, before the canvas says they are written. A power
        # cut loses at most a second of outcomes (calls paid again), for a
        # quarter of the cost: FULL synced every commit, 0.25 ms of CPU an
        # outcome measured against 0.07 ms, which was a quarter of what a
        # 2,000-note run of the echo model costs the command per note.
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {path} has schema version {version}, written by a newer"
                f" command-handlers; this one reads up to version {SCHEMA_VERSION}:"
                " upgrade, or use another journal file"
            )
        if version < SCHEMA_VERSION:
            _migrate(conn)
        tables = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
            " AND name IN ('runs', 'outcomes', 'about')"
        ).fetchone()[0]
        if version < SCHEMA_VERSION or tables < 3:  # opening a current file writes nothing
            conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _same_file(recorded: str, canvas: str) -> bool:
    if recorded == canvas:
        return True
    try:
        return os.path.samefile(recorded, canvas)
    except OSError:
        return False


def _claim(conn: sqlite3.Connection, path: Path, canvas: Path, adopt: bool) -> str | None:
    """Make sure the journal is ``canvas``'s; ``adopt``: record it as the owner if need be.

    Returns:
        A notice when the journal was taken over from a canvas no longer there
        (moved or renamed together with it), else ``None``.

    Raises:
        JournalError: The journal belongs to another canvas, which still exists.
    """
    real = os.path.realpath(canvas)
    with conn:
        about = dict(conn.execute("SELECT key, value FROM about").fetchall())
        recorded = about.get("canvas")
        if recorded is not None and _same_file(recorded, real):
            return None
        if recorded is not None and os.path.exists(recorded):
            raise JournalError(
                f"the journal {path} belongs to the canvas {recorded}, not to {real}:"
                " move it away, give this canvas its own (--journal PATH) or use --no-journal"
            )
        if adopt:
            # A journal of before this record (adopted as it is), or one whose
            # canvas moved with it: it is this canvas's from now on.
            conn.execute("INSERT OR REPLACE INTO about VALUES ('canvas', ?)", (real,))
            conn.execute("INSERT OR IGNORE INTO about VALUES ('id', ?)", (uuid.uuid4().hex,))
    if recorded is None:
        return None
    return (
        f"the journal {path} belonged to {recorded}, which is no longer there;"
        f" it now belongs to {real}"
    )


def _cannot_open(path: Path, exc: sqlite3.Error, wait: float) -> JournalError:
    if "locked" in str(exc):
        return JournalError(
            f"cannot open the journal {path}: another program kept it locked for"
            f" {wait:g} s; try again once it is done, or use --no-journal"
        )
    return JournalError(f"cannot open the journal {path}: {exc}; move it away or use --no-journal")


class Journal:
    """A listener plugin that keeps every task's outcome in a SQLite file.

    The file is in WAL mode and each outcome is committed in its own transaction
    as its task finishes, so a process killed between two outcomes leaves a file
    that opens cleanly and holds every outcome committed before. An existing
    file is reused (its schema created if missing).

    All calls must come from one thread (the event loop's).

    Args:
        path: The SQLite file; created if missing.
        canvas: The canvas the runs answer, recorded with each run. The file
            records the first canvas it is opened for (its real path) and
            refuses any other while that one exists; when it no longer does
            (moved or renamed with its journal), ``canvas`` takes it over and
            :attr:`notice` says so.
        wait: How long a write waits for another program holding the file
            locked before it fails, in seconds.
        check: Look the whole file over when opening it, refusing a damaged one.
        adopt: Record ``canvas`` as the owner at once; otherwise only check it
            (reading only), and leave the record to :meth:`claim`.

    Raises:
        JournalError: ``path`` cannot be opened, is not a SQLite file or is
            damaged, was written by a newer version of the schema, belongs
            to another canvas, or stayed locked longer than ``wait``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        canvas: str | Path | None = None,
        wait: float = DEFAULT_WAIT,
        check: bool = True,
        adopt: bool = True,
    ) -> None:
        self._path = Path(path)
        self._canvas = None if canvas is None else Path(canvas)
        #: Set when the journal was taken over from a canvas no longer there.
        self.notice: str | None = None
        try:
            self._conn = _open(self._path, wait, check and self._path.exists())
        except sqlite3.Error as exc:
            raise _cannot_open(self._path, exc, wait) from exc
        try:
            if self._canvas is not None:
                self.notice = _claim(self._conn, self._path, self._canvas, adopt)
        except sqlite3.Error as exc:
            self._conn.close()
            raise _cannot_open(self._path, exc, wait) from exc
        except BaseException:
            self._conn.close()
            raise
        self._run_id: str | None = None
        self._synced = time.monotonic()
        # Tasks started and not ended: recorded as cancelled if the command is interrupted.
        self._running: dict[str, tuple[tuple[str | None, str | None, str | None], float]] = {}
        self._attempts: dict[str, int] = {}  # calls so far, of the running tasks retried

    def claim(self) -> str | None:
        """Record the canvas given as the journal's owner (see ``adopt``).

        Returns:
            A notice when the journal was taken over from a canvas no longer
            there, else ``None``.

        Raises:
            JournalError: The journal belongs to another canvas, which still exists.
            sqlite3.Error: The record could not be written.
        """
        if self._canvas is not None:
            self.notice = _claim(self._conn, self._path, self._canvas, adopt=True)
        return self.notice

    @staticmethod
    def default_path(canvas_path: str | Path) -> Path:
        """Return the journal's usual place: a hidden file beside the canvas.

        Args:
            canvas_path: The canvas, for example ``notes/notes.canvas``.

        Returns:
            ``<folder>/.<canvas file name>.journal.sqlite``, for example
            ``notes/.notes.canvas.journal.sqlite``.
        """
        canvas = Path(canvas_path)
        return canvas.with_name(f".{canvas.name}.journal.sqlite")

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    @property
    def canvas(self) -> Path | None:
        """The canvas given when the journal was opened, if any."""
        return self._canvas

    @property
    def journal_id(self) -> str | None:
        """The id the file holds of itself (``None`` until it was first opened for a canvas)."""
        row = self._conn.execute("SELECT value FROM about WHERE key = 'id'").fetchone()
        return None if row is None else str(row[0])

    @property
    def run_id(self) -> str | None:
        """The id of the run heard last (``None`` before any)."""
        return self._run_id

    # -- the hooks -----------------------------------------------------------------

    @hookimpl
    def on_run_start(self, run: RunView) -> None:
        """Remember the run's id and record the run.

        Args:
            run: The run (a ``RunInfo``).
        """
        self._run_id = run.run_id
        canvas = None if self._canvas is None else str(self._canvas)
        with self._conn as conn:
            conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, canvas, task_count, started_at)"
                " VALUES (?, ?, ?, ?)",
                (run.run_id, canvas, run.task_count, time.time()),
            )

    @hookimpl
    def on_task_start(self, task: TaskView) -> None:
        """Remember that the task runs, with its note, agent and input hash.

        Args:
            task: The task (an ``AsyncTask``).
        """
        self._running[task.task_id] = (_identity(task), time.time())

    @hookimpl
    def on_task_retry(self, task: TaskView, attempt: int) -> None:
        """Count the calls of a running task, for :meth:`record_cancelled`.

        Args:
            task: The task.
            attempt: The attempt that failed (1 for the first).
        """
        self._attempts[task.task_id] = attempt + 1

    @hookimpl
    def on_task_end(self, task: TaskView, outcome: OutcomeView) -> None:
        """Commit the task's outcome: one row, in its own transaction.

        The row's status is ``outcome.status``; the result is kept (as JSON;
        what JSON cannot hold as its text) on success only, and so is the
        result's ``usage`` (the tokens the call spent), unless no call was made.

        Args:
            task: The task.
            outcome: What became of it.
        """
        self._running.pop(task.task_id, None)
        self._attempts.pop(task.task_id, None)
        note_id, agent, input_hash = _identity(task)
        success = outcome.status == "success"
        row = (
            self._run_id,
            task.task_id,
            note_id,
            agent,
            input_hash,
            outcome.status,
            json.dumps(outcome.result, default=str) if success else None,
            None if success else outcome.error,
            outcome.attempts,
            outcome.started,
            outcome.finished,
            _usage(outcome),
        )
        with self._conn as conn:
            conn.execute(_INSERT, row)
        if time.monotonic() - self._synced >= SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        """Put every outcome committed so far on the disk (it survives a power cut).

        A checkpoint syncs the write-ahead log, then moves it into the file.
        """
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._synced = time.monotonic()

    @hookimpl
    def on_canvas_written(self, answers: Sequence[WrittenAnswer]) -> None:
        """Mark the answers now on the canvas written, in one transaction.

        Args:
            answers: The answers written.
        """
        self.mark_all_written(answers)

    @hookimpl
    def cached_result(self, task: TaskView) -> dict[str, Any] | None:
        """Return the result of the newest successful outcome with the task's input hash.

        Args:
            task: The task about to be run; ``task.node_data["input_hash"]`` is read.

        Returns:
            The result dict, or ``None`` when the task has no input hash, no
            outcome with its hash succeeded, or the newest one's result is not a dict.
        """
        input_hash = task.node_data.get("input_hash")
        if input_hash is None:
            return None
        row = self._conn.execute(_NEWEST_SUCCESS, (str(input_hash),)).fetchone()
        if row is None:
            return None
        result = json.loads(row[0])
        return result if isinstance(result, dict) else None

    # -- what the command calls ----------------------------------------------------

    def record_cancelled(self) -> int:
        """Record every task that started and has not finished as ``"cancelled"``.

        Call it when the run was interrupted (``asyncio.CancelledError``).

        Returns:
            How many outcomes were recorded.
        """
        now = time.time()
        rows = []
        for task_id, ((note_id, agent, input_hash), started_at) in self._running.items():
            rows.append(
                (
                    self._run_id,
                    task_id,
                    note_id,
                    agent,
                    input_hash,
                    "cancelled",
                    None,
                    _CANCELLED,
                    self._attempts.pop(task_id, 1),
                    started_at,
                    now,
                    None,
                )
            )
        self._running.clear()
        with self._conn as conn:
            conn.executemany(_INSERT, rows)
        return len(rows)

    def mark_written(
        self,
        input_hash: str,
        note_id: str,
        agent: str,
        answer_node_id: str,
        file_node_id: str | None,
    ) -> None:
        """Record that an answer was written into the canvas.

        The newest successful outcome of ``note_id`` and ``agent`` with
        ``input_hash`` is marked written (now). When there is none, because the
        answer came from another note with the same input (see
        :meth:`cached_result`), a copy of the newest successful outcome with
        ``input_hash`` is recorded for this note (no task id, 0 attempts) and
        marked written.

        Args:
            input_hash: The fingerprint of the input the answer answers.
            note_id: The note answered.
            agent: The agent that answered.
            answer_node_id: The canvas node holding the answer.
            file_node_id: The canvas file node of the answer, if any.

        Raises:
            LookupError: No outcome with ``input_hash`` succeeded.
        """
        with self._conn as conn:
            self._mark(conn, input_hash, note_id, agent, answer_node_id, file_node_id)

    def mark_all_written(self, answers: Iterable[WrittenAnswer]) -> None:
        """Record, in one transaction, that these answers were written into the canvas.

        Each as :meth:`mark_written`; an answer whose input no outcome
        answered is logged and left out, the others are marked.

        Args:
            answers: The answers written.
        """
        with self._conn as conn:
            for answer in answers:
                try:
                    self._mark(
                        conn,
                        answer.input_hash,
                        answer.note_id,
                        answer.agent,
                        answer.answer_node_id,
                        answer.file_node_id,
                    )
                except LookupError as exc:
                    logger.warning("%s", exc)

    def _mark(
        self,
        conn: sqlite3.Connection,
        input_hash: str,
        note_id: str,
        agent: str,
        answer_node_id: str,
        file_node_id: str | None,
    ) -> None:
        now = time.time()
        written = (answer_node_id, file_node_id, now)
        row = conn.execute(
            "SELECT id FROM outcomes WHERE input_hash = ? AND note_id = ? AND agent = ?"
            " AND status = 'success' ORDER BY id DESC LIMIT 1",
            (input_hash, note_id, agent),
        ).fetchone()
        if row is not None:
            conn.execute(
                "UPDATE outcomes SET answer_node_id = ?, file_node_id = ?, written_at = ?"
                " WHERE id = ?",
                (*written, row[0]),
            )
            return
        source = conn.execute(_NEWEST_SUCCESS, (input_hash,)).fetchone()
        if source is None:
            raise LookupError(
                f"no successful outcome with input hash {input_hash!r} in the journal {self._path}"
            )
        conn.execute(
            "INSERT INTO outcomes (run_id, task_id, note_id, agent, input_hash, status,"
            " result, attempts, finished_at, answer_node_id, file_node_id, written_at)"
            " VALUES (?, NULL, ?, ?, ?, 'success', ?, 0, ?, ?, ?, ?)",
            (self._run_id, note_id, agent, input_hash, source[0], now, *written),
        )

    def answers_for(self, note_id: str, agent: str) -> list[Answer]:
        """Return the answers of one agent to one note written into a canvas, newest first.

        Args:
            note_id: The note.
            agent: The agent.

        Returns:
            The answers.
        """
        rows = self._conn.execute(
            f"SELECT {_ANSWER_COLUMNS} FROM outcomes"
            " WHERE note_id = ? AND agent = ? AND written_at IS NOT NULL"
            " ORDER BY written_at DESC, id DESC",
            (note_id, agent),
        ).fetchall()
        return [_answer(row) for row in rows]

    def written_answers(self) -> list[Answer]:
        """Return every answer written into a canvas, oldest first.

        One query for all notes and agents: what a run reads to recognise the
        answers already on its canvas.

        Returns:
            The answers, with their note, agent and text.
        """
        rows = self._conn.execute(
            f"SELECT {_ANSWER_COLUMNS} FROM outcomes"
            " WHERE written_at IS NOT NULL AND answer_node_id IS NOT NULL"
            " ORDER BY written_at, id"
        ).fetchall()
        return [_answer(row) for row in rows]

    def unwritten_successes(self) -> list[Outcome]:
        """Return the answers paid for but never written into a canvas.

        For each input hash, note and agent whose successful outcomes were never
        marked written, the newest of them; in the order they finished. Outcomes
        without an input hash are left out.

        Returns:
            The outcomes.
        """
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM outcomes WHERE id IN ("
            " SELECT MAX(id) FROM outcomes"
            " WHERE status = 'success' AND input_hash IS NOT NULL"
            " GROUP BY input_hash, note_id, agent HAVING COUNT(written_at) = 0"
            ") ORDER BY id"
        ).fetchall()
        return [_outcome(row) for row in rows]

    def outcomes(self, run_id: str | None = None) -> list[Outcome]:
        """Return the recorded outcomes, oldest first.

        Args:
            run_id: Only this run's; every run's when ``None``.

        Returns:
            The outcomes.
        """
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM outcomes WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id",
            (run_id,),
        ).fetchall()
        return [_outcome(row) for row in rows]

    def outcome_counts(self, run_id: str | None = None) -> dict[str, int]:
        """Count the outcomes by status.

        Args:
            run_id: Only this run's; every run's when ``None``.

        Returns:
            Status -> count, with every status of :data:`STATUSES` (0 when none).
        """
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(
            self._conn.execute(
                "SELECT status, COUNT(*) FROM outcomes WHERE ?1 IS NULL OR run_id = ?1"
                " GROUP BY status",
                (run_id,),
            ).fetchall()
        )
        return counts

    def usage_totals(self, run_id: str | None = None) -> dict[str, int]:
        """Sum the tokens the recorded calls spent.

        Args:
            run_id: Only this run's; every run's when ``None``.

        Returns:
            ``{"input_tokens": N, "output_tokens": N}`` over the outcomes that
            recorded a usage.
        """
        totals = {"input_tokens": 0, "output_tokens": 0}
        rows = self._conn.execute(
            "SELECT usage FROM outcomes WHERE usage IS NOT NULL AND (?1 IS NULL OR run_id = ?1)",
            (run_id,),
        )
        for (stored,) in rows:
            usage = json.loads(stored)
            for name in totals:
                totals[name] += int(usage.get(name) or 0)
        return totals

    def close(self) -> None:
        """Close the file; safe to call any number of times.

        Every outcome is already committed. After this, the journal must not be used.
        """
        self._conn.close()

    def __enter__(self) -> Journal:
        """Return the journal; leaving the ``with`` block calls :meth:`close`."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Call :meth:`close`, however the block ended."""
        self.close()


class JournalPlugin:
    """The journal of one command: opens its file only when first needed.

    A dry run, or a run with nothing to call, leaves no file behind; an
    existing file that cannot be used refuses the command before any call.
    A write that fails (a full disk, the file locked by another program for
    longer than ``wait``) raises :class:`~command_handlers.hookspecs.StopRun`:
    the run starts no new call and ends failed; the journal writes nothing
    more, and the answers received after are kept by the command.

    Args:
        path: The journal file.
        canvas: The canvas the command writes (the journal's owner).
        wait: How long a write waits for a lock, in seconds.
    """

    def __init__(self, path: Path, canvas: Path | None, wait: float = DEFAULT_WAIT) -> None:
        self.path = path
        self.canvas = canvas
        self.wait = wait
        #: Why the journal stopped recording (``None`` while it records).
        self.failure: str | None = None
        self._journal: Journal | None = None

    def _open(self, create: bool) -> Journal | None:
        if self._journal is None and (create or self.path.exists()):
            # check_settings looked the file over already; a run records its owner.
            self._journal = Journal(
                self.path, canvas=self.canvas, wait=self.wait, check=False, adopt=False
            )
        return self._journal

    def _failed(self, exc: sqlite3.Error, verb: str = "write") -> StopRun:
        """Stop recording: the run cannot go on without its journal."""
        reason = str(exc)
        if "locked" in reason:
            reason = f"another program kept it locked for {self.wait:g} s"
        self.failure = f"cannot {verb} the journal {self.path}: {reason}"
        return StopRun(self.failure)

    @hookimpl
    def recorded_answers(self) -> list[Answer]:
        """The answers the journal records writing (none when there is no file yet).

        Raises:
            JournalError: The file cannot be read.
        """
        journal = self._open(create=False)
        if journal is None:
            return []
        try:
            return journal.written_answers()
        except sqlite3.Error as exc:
            raise _cannot_open(self.path, exc, self.wait) from exc

    @hookimpl
    def cached_result(self, task: TaskView) -> dict[str, Any] | None:
        """As :meth:`Journal.cached_result`; ``None`` when there is no file yet.

        A file that cannot be read answers nothing, and the run stops at its start.
        """
        if self.failure is not None:
            return None
        try:
            journal = self._open(create=False)
            return journal.cached_result(task) if journal is not None else None
        except JournalError as exc:
            self.failure = str(exc)
        except sqlite3.Error as exc:
            self._failed(exc, "read")
        return None

    @hookimpl(tryfirst=True)
    def on_run_start(self, run: RunView) -> None:
        """Open (creating if need be) the file and record the run.

        Raises:
            StopRun: The file cannot be opened or written.
        """
        if self.failure is not None:
            raise StopRun(self.failure)
        try:
            journal = self._open(create=True)
            assert journal is not None
            journal.claim()
            journal.on_run_start(run)
        except JournalError as exc:
            self.failure = str(exc)
            raise StopRun(self.failure) from exc
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    @hookimpl
    def on_task_start(self, task: TaskView) -> None:
        """As :meth:`Journal.on_task_start`."""
        if self._journal is not None:
            self._journal.on_task_start(task)

    @hookimpl
    def on_task_retry(self, task: TaskView, attempt: int) -> None:
        """As :meth:`Journal.on_task_retry`."""
        if self._journal is not None:
            self._journal.on_task_retry(task, attempt)

    @hookimpl
    def on_task_end(self, task: TaskView, outcome: OutcomeView) -> None:
        """As :meth:`Journal.on_task_end`.

        Raises:
            StopRun: The outcome could not be written.
        """
        if self._journal is None or self.failure is not None:
            return
        try:
            self._journal.on_task_end(task, outcome)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    @hookimpl
    def on_run_end(self) -> None:
        """Sync the run's outcomes to the disk: the canvas is written next."""
        if self._journal is None or self.failure is not None:
            return
        try:
            self._journal.sync()
        except sqlite3.Error as exc:
            # Every outcome is committed (a killed process keeps them); only a
            # power cut before the next sync could still lose some.
            logger.warning("cannot sync the journal %s: %s", self.path, exc)

    @hookimpl
    def on_canvas_written(self, answers: Sequence[WrittenAnswer]) -> None:
        """As :meth:`Journal.on_canvas_written` (nothing once the journal failed).

        Raises:
            StopRun: The answers could not be marked written.
        """
        if self._journal is None or self.failure is not None:
            return
        try:
            self._journal.on_canvas_written(answers)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    @hookimpl
    def unconfigure(self) -> None:
        """Record the tasks the command left unfinished as cancelled; close the file."""
        journal, self._journal = self._journal, None
        if journal is None:
            return
        try:
            if self.failure is None:
                journal.record_cancelled()
        except sqlite3.Error as exc:
            # The run's outcome is settled; what is lost is only the record of
            # the calls in flight, which were never paid for to the end.
            logger.warning("%s", self._failed(exc))
        finally:
            journal.close()


def _journal_path(settings: Settings) -> tuple[Path, Path] | None:
    """The command's journal file and the canvas it belongs to (``None`` outside the command)."""
    canvas = settings.canvas_path
    if canvas is None:
        return None
    owner = settings.output_path or canvas
    return settings.journal_path or Journal.default_path(owner), owner


def _wait() -> float:
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return DEFAULT_WAIT
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not wait >= 0:  # also refuses nan
        raise ValueError(f"${WAIT_ENV} must be a number of seconds >= 0, got {text!r}")
    return wait


@hookimpl
def check_settings(settings: Settings) -> str | None:
    """Refuse a journal that cannot be used, before any call; say when it was taken over.

    Args:
        settings: The run's settings.

    Reads only: the run that calls an agent records the new owner.

    Returns:
        A notice when the journal is being taken over from a canvas no longer there.

    Raises:
        JournalError: The file is damaged, of a newer version, locked, or
            belongs to another canvas (a ``ValueError``: the run is refused).
        ValueError: :data:`WAIT_ENV` is not a number of seconds.
    """
    found = _journal_path(settings)
    wait = _wait()
    try:
        if found is None or not found[0].exists():
            return None
    except OSError:  # a name too long, say: the command refuses it before any call
        return None
    path, owner = found
    with Journal(path, canvas=owner, wait=wait, adopt=False) as journal:
        return journal.notice


@hookimpl
def configure(settings: Settings, pm: pluggy.PluginManager) -> None:
    """Keep a journal for the command's canvas, beside the canvas it writes.

    Args:
        settings: The run's settings (``canvas_path``, ``output_path``, ``journal_path``).
        pm: The plugin manager.
    """
    found = _journal_path(settings)
    if found is not None:
        pm.register(JournalPlugin(*found, wait=_wait()), name="journal-file")
