"""End to end: a full disk, a locked, damaged or foreign journal, and what a rerun pays for.

Each fault ends the command with one line on stderr and no traceback; every
answer received is kept (in the journal, on the canvas or in a side file), and
the next run calls the agents only for what was not kept. The paid calls of a
run are read from the journal: its rows with at least one attempt.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlite_lock import locked

from command_handlers import fileio
from command_handlers.default_plugins import journal as journal_module
from command_handlers.default_plugins.journal import WAIT_ENV

from .conftest import AgentProgram

AGENT = "clarification-path"
JOURNAL_NAME = ".notes.canvas.journal.sqlite"
TIMEOUT = 60

Run = Callable[..., "tuple[int, str, str]"]


def notes_canvas(count: int, first: int = 0) -> dict[str, Any]:
    """A canvas of ``count`` learner's notes (colour "6"), one below the other."""
    nodes = [
        {
            "id": f"n{number}",
            "type": "text",
            "text": f"Note {number}: what I understood of idea {number}. " + "words " * 20,
            "x": 0,
            "y": 400 * number,
            "width": 300,
            "height": 150,
            "color": "6",
        }
        for number in range(first, first + count)
    ]
    return {"nodes": nodes, "edges": []}


def make_vault(folder: Path, count: int) -> Path:
    """An Obsidian vault holding ``notes.canvas`` with ``count`` notes; return the canvas."""
    (folder / ".obsidian").mkdir(parents=True)
    canvas = folder / "notes.canvas"
    canvas.write_text(json.dumps(notes_canvas(count), indent="\t"), encoding="utf-8")
    return canvas


def answered_notes(canvas: Path) -> set[str]:
    """The notes an answer card (an edge labelled with the agent) leads from."""
    data = json.loads(canvas.read_text(encoding="utf-8"))
    nodes = {node["id"]: node for node in data["nodes"]}
    return {
        edge["fromNode"]
        for edge in data["edges"]
        if edge.get("label") == AGENT and nodes[edge["toNode"]].get("color") == "5"
    }


def journal_rows(path: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM outcomes ORDER BY id")]


def paid_calls(path: Path) -> dict[str, int]:
    """Run id -> how many calls it paid for (rows with at least one attempt)."""
    paid: dict[str, int] = {}
    for row in journal_rows(path):
        if row["attempts"]:
            paid[row["run_id"]] = paid.get(row["run_id"], 0) + 1
    return paid


def only_line(err: str) -> str:
    """Stderr must be exactly one line, and no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def spare_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system's temporary folder, for side files that find no room beside the canvas."""
    folder = tmp_path / "spare-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs, where the platform lets the test mount one (Linux, as root)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs Linux and root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], timeout=TIMEOUT, check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk but for about ``leave`` bytes; return the filler to remove later."""
    filler = disk / "filler"
    room = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * max(room - leave, 0))
    return filler


def test_a_full_disk_ends_the_run_in_one_line_and_the_rerun_pays_only_the_rest(
    small_disk: Path, spare_temp: Path, run_cli: Run
) -> None:
    canvas = make_vault(small_disk / "vault", 30)
    journal = canvas.parent / JOURNAL_NAME
    original = canvas.read_bytes()
    filler = fill(small_disk, leave=120 * 1024)

    code, out, err = run_cli(canvas, "-a", "-q", "-m", "2")

    assert code == 1
    assert out == ""
    line = only_line(err)
    assert line.startswith("error: cannot write ")
    assert line.endswith("run the same command again once that is fixed")
    # No empty or partial document, whatever was written before the disk filled up.
    for path in small_disk.rglob("*"):
        if path.is_file() and path != filler:
            assert path.stat().st_size > 0, path
        if path.suffix == ".md":
            text = path.read_text(encoding="utf-8")
            assert text.startswith("# "), path
            assert text.endswith("\n"), path
    kept = {row["note_id"] for row in journal_rows(journal) if row["status"] == "success"}
    on_canvas = answered_notes(canvas) if canvas.read_bytes() != original else set()
    sides = list(spare_temp.glob("*.answers-*.json")) + list(canvas.parent.glob("*.answers-*"))
    received = kept | on_canvas
    for side in sides:
        assert str(side) in line
        received |= {item["node_id"] for item in json.loads(side.read_text())["answers"]}
    assert kept  # the journal held what it could
    assert len(received) < 30  # the run stopped starting calls

    filler.unlink()
    code, _, err = run_cli(canvas, "-a", "-q", "-m", "2")

    assert code == 0, err
    assert answered_notes(canvas) == {f"n{number}" for number in range(30)}
    assert list(paid_calls(journal).values())[-1] == 30 - len(kept | on_canvas)


# ----------------------------------------------------------------------------- injected faults


def test_a_journal_write_that_fails_keeps_what_was_received_on_the_canvas(
    tmp_path: Path, run_cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    canvas = make_vault(tmp_path / "vault", 6)
    journal = canvas.parent / JOURNAL_NAME
    recorded = journal_module.Journal.on_task_end
    ended: list[str] = []

    def full_from_the_third(self: Any, task: Any, outcome: Any) -> None:
        ended.append(task.task_id)
        if len(ended) >= 3:
            raise sqlite3.OperationalError("database or disk is full")
        recorded(self, task, outcome)

    monkeypatch.setattr(journal_module.Journal, "on_task_end", full_from_the_third)
    report = tmp_path / "report.json"

    code, out, err = run_cli(canvas, "-a", "-q", "-m", "1", "--report", report)

    assert code == 1
    assert out == ""
    failure = (
        f"cannot write the journal {journal}: database or disk is full;"
        " no new call was started (3 not made); the 3 answers received are on the canvas;"
        " run the same command again once that is fixed"
    )
    assert only_line(err) == f"error: {failure}"
    written = json.loads(report.read_text(encoding="utf-8"))
    assert written["failure"] == failure
    assert (
        sorted(task["status"] for task in written["tasks"]) == ["cancelled"] * 3 + ["success"] * 3
    )
    assert answered_notes(canvas) == {"n0", "n1", "n2"}
    assert [(row["note_id"], row["status"]) for row in journal_rows(journal)] == [
        ("n0", "success"),
        ("n1", "success"),
    ]
    assert not list(canvas.parent.glob("*.answers-*"))

    monkeypatch.undo()
    code, _, err = run_cli(canvas, "-a", "-q")

    assert code == 0, err
    assert answered_notes(canvas) == {f"n{number}" for number in range(6)}
    assert list(paid_calls(journal).values())[-1] == 3  # only the calls never made


def test_a_canvas_that_cannot_be_written_keeps_the_answers_in_a_side_file(
    tmp_path: Path, run_cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    canvas = make_vault(tmp_path / "vault", 4)
    original = canvas.read_bytes()
    journal = canvas.parent / JOURNAL_NAME

    def no_room(target: Path, data: bytes, mode: int | None) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(fileio, "_write_temp", no_room)

    code, out, err = run_cli(canvas, "-a", "-q")

    assert code == 1
    assert out == ""
    (side,) = canvas.parent.glob("notes.canvas.answers-*.json")
    assert only_line(err) == (
        f"error: cannot write the answers into {canvas}: No space left on device;"
        f" the 4 answers received are saved to {side}; run the same command again once"
        " that is fixed"
    )
    assert canvas.read_bytes() == original
    saved = json.loads(side.read_text(encoding="utf-8"))
    assert sorted(item["node_id"] for item in saved["answers"]) == ["n0", "n1", "n2", "n3"]
    rows = journal_rows(journal)
    assert [row["written_at"] for row in rows if row["status"] == "success"] == [None] * 4

    monkeypatch.undo()
    code, _, err = run_cli(canvas, "-a", "-q")

    assert code == 0, err
    assert answered_notes(canvas) == {"n0", "n1", "n2", "n3"}
    assert len(paid_calls(journal)) == 1  # the rerun paid for nothing: all from the journal
    assert len(list((canvas.parent / "notes answers").iterdir())) == 4


# ----------------------------------------------------------------------------- a locked journal


def test_a_locked_journal_is_waited_for_then_the_run_stops_before_any_call(
    tmp_path: Path, run_cli: Run, agent_program: AgentProgram, monkeypatch: pytest.MonkeyPatch
) -> None:
    canvas = make_vault(tmp_path / "vault", 3)
    journal = canvas.parent / JOURNAL_NAME
    code, _, err = run_cli(canvas, "-a", "-q", "-n", "n0", "--agent-command", agent_program.command)
    assert code == 0, err
    answered = canvas.read_bytes()
    rows = journal_rows(journal)
    monkeypatch.setenv(WAIT_ENV, "0.2")

    with locked(journal):
        code, out, err = run_cli(canvas, "-a", "-q", "--agent-command", agent_program.command)

    assert code == 1
    assert out == ""
    assert only_line(err) == (
        f"error: cannot write the journal {journal}: another program kept it locked for 0.2 s;"
        " no new call was started (2 not made); run the same command again once that is fixed"
    )
    assert len(agent_program.calls()) == 1  # the first run's only
    assert canvas.read_bytes() == answered
    assert journal_rows(journal) == rows

    code, _, err = run_cli(canvas, "-a", "-q", "--agent-command", agent_program.command)
    assert code == 0, err
    assert len(agent_program.calls()) == 3
    assert answered_notes(canvas) == {"n0", "n1", "n2"}


# ----------------------------------------------------------------------------- a damaged journal


def test_a_damaged_journal_is_refused_before_any_call(
    tmp_path: Path, run_cli: Run, agent_program: AgentProgram
) -> None:
    canvas = make_vault(tmp_path / "vault", 40)
    journal = canvas.parent / JOURNAL_NAME
    code, _, err = run_cli(canvas, "-a", "-q", "--agent-command", agent_program.command)
    assert code == 0, err
    calls = len(agent_program.calls())
    size = journal.stat().st_size
    assert size > 4096 * 4
    with open(journal, "r+b") as handle:  # the header still says SQLite; the tables are broken
        handle.seek(4096)
        handle.write(b"\xde\xad\xbe\xef" * ((size - 4096) // 4))
    damaged, before = journal.read_bytes(), canvas.read_bytes()

    code, out, err = run_cli(
        canvas, "-a", "-q", "--force", "--agent-command", agent_program.command
    )

    assert code == 2
    assert out == ""
    line = only_line(err)
    assert line.startswith(f"error: cannot open the journal {journal}: ")
    assert line.endswith("; move it away or use --no-journal")
    assert len(agent_program.calls()) == calls
    assert journal.read_bytes() == damaged
    assert canvas.read_bytes() == before


# ----------------------------------------------------------------------------- another canvas's


def test_the_journal_of_another_canvas_is_refused_naming_it(
    tmp_path: Path, run_cli: Run, agent_program: AgentProgram
) -> None:
    mine = make_vault(tmp_path / "a", 2)
    other = make_vault(tmp_path / "b", 2)
    code, _, err = run_cli(mine, "-a", "-q", "--agent-command", agent_program.command)
    assert code == 0, err
    journal = mine.parent / JOURNAL_NAME
    before = other.read_bytes()

    code, out, err = run_cli(
        other, "-a", "-q", "--journal", journal, "--agent-command", agent_program.command
    )

    assert code == 2
    assert out == ""
    line = only_line(err)
    assert line.startswith(f"error: the journal {journal} belongs to the canvas {mine.resolve()}")
    assert str(other.resolve()) in line
    assert other.read_bytes() == before
    assert len(agent_program.calls()) == 2


def test_a_canvas_copied_with_its_journal_is_refused_and_replace_removes_nothing(
    tmp_path: Path, run_cli: Run, agent_program: AgentProgram
) -> None:
    original = make_vault(tmp_path / "a", 2)
    code, _, err = run_cli(original, "-a", "-q", "--agent-command", agent_program.command)
    assert code == 0, err
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    copy = tmp_path / "copy" / "notes.canvas"
    before = copy.read_bytes()

    code, _, err = run_cli(
        copy, "-a", "-q", "--force", "--replace", "--agent-command", agent_program.command
    )

    assert code == 2
    assert f"belongs to the canvas {original.resolve()}" in only_line(err)
    assert copy.read_bytes() == before
    assert len(agent_program.calls()) == 2


def test_a_canvas_moved_with_its_journal_takes_it_over_with_a_notice(
    tmp_path: Path, run_cli: Run, agent_program: AgentProgram
) -> None:
    original = make_vault(tmp_path / "a", 2)
    code, _, err = run_cli(original, "-a", "-q", "--agent-command", agent_program.command)
    assert code == 0, err
    (tmp_path / "a").rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "notes.canvas"
    data = json.loads(moved.read_text(encoding="utf-8"))
    data["nodes"] += notes_canvas(1, first=2)["nodes"]  # one new note to answer
    moved.write_text(json.dumps(data), encoding="utf-8")

    code, _, err = run_cli(moved, "-a", "--agent-command", agent_program.command)

    assert code == 0, err
    assert "Traceback" not in err
    assert f"belonged to {original.resolve()}, which is no longer there" in " ".join(err.split())
    assert len(agent_program.calls()) == 3  # only the new note was paid for
    assert answered_notes(moved) == {"n0", "n1", "n2"}
    code, _, err = run_cli(moved, "-a", "--agent-command", agent_program.command)
    assert code == 0, err
    assert "no longer there" not in err


def test_a_disk_with_no_room_at_all_refuses_the_run_before_any_call(
    small_disk: Path, run_cli: Run
) -> None:
    canvas = make_vault(small_disk / "vault", 3)
    original = canvas.read_bytes()
    fill(small_disk, leave=0)
    with contextlib.suppress(OSError), open(small_disk / "rest", "wb") as handle:  # every byte
        while True:
            handle.write(b"\0" * 4096)
            handle.flush()

    code, out, err = run_cli(canvas, "-a", "-q")

    assert code == 2
    assert out == ""
    assert only_line(err) == (
        f"error: cannot write the lock file beside {canvas}: No space left on device"
    )
    assert canvas.read_bytes() == original
    assert sorted(path.name for path in canvas.parent.iterdir()) == [".obsidian", "notes.canvas"]


def test_a_lock_file_that_cannot_be_written_refuses_the_run(
    tmp_path: Path, run_cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from command_handlers.intelligent_parallel import handler

    canvas = make_vault(tmp_path / "vault", 2)
    original = canvas.read_bytes()

    @contextlib.contextmanager
    def no_room(target: Path) -> Iterator[Path]:
        raise OSError(errno.ENOSPC, "No space left on device")
        yield target  # pragma: no cover - a generator, never reached

    monkeypatch.setattr(handler, "canvas_lock", no_room)

    code, _, err = run_cli(canvas, "-a", "-q")

    assert code == 2
    assert only_line(err) == (
        f"error: cannot write the lock file beside {canvas}: No space left on device"
    )
    assert canvas.read_bytes() == original
    assert not (canvas.parent / JOURNAL_NAME).exists()
