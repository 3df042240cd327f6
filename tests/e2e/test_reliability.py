"""End to end: what the command line guarantees when agents are slow, fail or the run dies.

A small agent program (``--agent-command``) logs every call, with the time it
started, to a side file, and acts on words in the learner's note:

* ``SLOW``: sleeps 30 s, unless the flag file ``<state>/fast`` exists;
* ``ONCE``: sleeps 5 s on the first call for that note, answers at once after;
* ``FAIL``: exits with status 1.

Every test is bounded: a watchdog kills what a test started if it hangs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from .conftest import processes_running

AGENT = "clarification-path"
JOURNAL_NAME = ".notes.canvas.journal.sqlite"
OK_LINE = re.compile(r"\]\s+ok\s+(\S+)")

Run = Callable[..., "tuple[int, str, str]"]

RELIABLE_AGENT = r"""
import time

started = time.time()

import hashlib
import sys
from pathlib import Path

log, state = Path(sys.argv[1]), Path(sys.argv[2])
data = sys.stdin.buffer.read().decode("utf-8")
prompt = data.partition("\n---\n")[2]
understanding = prompt.split("## Learner's understanding\n", 1)[-1].split("\n\n", 1)[0].strip()
with log.open("a", encoding="utf-8") as handle:
    handle.write(f"{started!r}\t{understanding}\n")
if "FAIL" in understanding:
    print("failing on purpose", file=sys.stderr)
    sys.exit(1)
if "SLOW" in understanding and not (state / "fast").exists():
    time.sleep(30)
if "ONCE" in understanding:
    marker = state / ("once-" + hashlib.sha256(understanding.encode()).hexdigest()[:16])
    if not marker.exists():
        marker.touch()
        time.sleep(5)
print(f"ANSWER: {understanding}")
"""


@dataclass
class ReliableAgent:
    """The agent program on disk, its call log and its state folder."""

    script: Path
    log: Path
    state: Path

    @property
    def command(self) -> str:
        """The value of ``--agent-command``."""
        return shlex.join([sys.executable, str(self.script), str(self.log), str(self.state)])

    def calls(self) -> list[tuple[float, str]]:
        """``(start time, learner's understanding)`` per call, in the order they were logged."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [(float(when), text) for when, _, text in (line.partition("\t") for line in lines)]

    def make_fast(self) -> None:
        """From now on, SLOW notes answer at once."""
        (self.state / "fast").touch()


@pytest.fixture
def agent(tmp_path: Path) -> ReliableAgent:
    folder = tmp_path / "agent"
    state = folder / "state"
    state.mkdir(parents=True)
    script = folder / "agent.py"
    script.write_text(RELIABLE_AGENT, encoding="utf-8")
    return ReliableAgent(script, folder / "calls.log", state)


def note_text(number: int, *words: str) -> str:
    return " ".join([f"Note {number}: what I understood of idea {number}.", *words])


def notes_canvas(texts: dict[str, str]) -> dict[str, Any]:
    """A canvas of learner's notes (colour "6"), one below the other."""
    nodes = [
        {
            "id": node_id,
            "type": "text",
            "text": text,
            "x": 0,
            "y": 400 * row,
            "width": 300,
            "height": 150,
            "color": "6",
        }
        for row, (node_id, text) in enumerate(texts.items())
    ]
    return {"nodes": nodes, "edges": []}


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    folder = tmp_path / "vault"
    folder.mkdir()
    return folder


def task_id(note_id: str) -> str:
    return f"{note_id}:{AGENT}"


def report_tasks(path: Path) -> dict[str, dict[str, Any]]:
    report = json.loads(path.read_text(encoding="utf-8"))
    return {task["node_id"]: task for task in report["tasks"]}


def answer_cards(canvas: Path) -> dict[str, list[dict[str, Any]]]:
    """Note id -> the answer cards (blue text nodes) an edge labelled with the agent leads to."""
    data = json.loads(canvas.read_text(encoding="utf-8"))
    nodes = {node["id"]: node for node in data["nodes"]}
    cards: dict[str, list[dict[str, Any]]] = {}
    for edge in data["edges"]:
        target = nodes[edge["toNode"]]
        if edge.get("label") == AGENT and target.get("color") == "5":
            cards.setdefault(edge["fromNode"], []).append(target)
    return cards


def journal_rows(path: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM outcomes ORDER BY id")]


def subprocess_env() -> dict[str, str]:
    """The test's environment, without what would make rich draw a bar instead of lines."""
    env = dict(os.environ)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def watchdog(process: subprocess.Popen[str], seconds: float) -> Iterator[None]:
    """Kill the process's whole group if the block is still running after ``seconds``."""

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(seconds, kill_group)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# ----------------------------------------------------------------------------- kill -9


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and process groups")
def test_kill_9_mid_run_keeps_the_journal_and_resume_runs_only_the_rest(
    vault: Path,
    agent: ReliableAgent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
    run_cli: Run,
) -> None:
    slow = {"n2", "n5", "n7"}
    texts = {f"n{i}": note_text(i, *(["SLOW"] if f"n{i}" in slow else [])) for i in range(1, 9)}
    note_of = {text: note_id for note_id, text in texts.items()}
    canvas = vault / "notes.canvas"
    original = make_canvas(canvas, notes_canvas(texts))
    journal = vault / JOURNAL_NAME
    argv = [str(canvas), "--agent-command", agent.command, "-m", "4"]

    process = subprocess.Popen(
        [*console_argv, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        start_new_session=True,  # its agent programs share its process group
    )
    seen: list[str] = []
    finished: list[str] = []
    try:
        assert process.stderr is not None
        with watchdog(process, 20):
            for line in process.stderr:  # the plain progress lines
                seen.append(line)
                match = OK_LINE.search(line)
                if match:
                    finished.append(match.group(1))
                    if len(finished) == 3:
                        break
            process.send_signal(signal.SIGKILL)  # the CLI alone, mid-run
            process.wait(timeout=10)
    finally:
        # Its agent programs outlive it (the SLOW ones sleep), each in a session of its
        # own: end them too, found by their script's path.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in processes_running(str(agent.script)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:  # pragma: no cover - only when the test already failed
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    assert len(finished) == 3, "".join(seen)
    assert process.returncode == -signal.SIGKILL
    assert canvas.read_bytes() == original  # nothing written before the end of a run
    assert not list(vault.glob("notes.canvas.answers-*.json"))

    # The journal opens cleanly and holds every outcome that was reported finished.
    with contextlib.closing(sqlite3.connect(journal)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    rows = journal_rows(journal)
    paid = {row["note_id"] for row in rows if row["status"] == "success"}
    assert {task_id(n) for n in paid} >= set(finished)
    assert not paid & slow  # the SLOW ones never finished
    for row in rows:
        assert row["status"] == "success"  # a killed process records nothing else
        assert json.loads(row["result"])["text"] == f"ANSWER: {texts[row['note_id']]}"
        assert row["input_hash"]
        assert row["written_at"] is None

    # Resume: the SLOW notes now answer at once (their text, hence their hash, unchanged).
    agent.make_fast()
    calls_before = len(agent.calls())
    report = vault / "report.json"
    code, _, err = run_cli(*argv, "--resume", "--report", report)

    assert code == 0, err
    again = [note_of[text] for _, text in agent.calls()[calls_before:]]
    assert sorted(again) == sorted(set(texts) - paid)  # only the unfinished, each once
    tasks = report_tasks(report)
    assert {n for n, t in tasks.items() if t["cached"]} == paid
    assert all(t["status"] == "success" for t in tasks.values())
    cards = answer_cards(canvas)
    assert set(cards) == set(texts)
    for note_id, text in texts.items():
        (card,) = cards[note_id]  # every answer exactly once
        assert f"ANSWER: {text}" in card["text"]
    written = {row["note_id"] for row in journal_rows(journal) if row["written_at"] is not None}
    assert written == set(texts)


# ----------------------------------------------------------------------------- timeouts


def test_a_timed_out_call_is_retried_and_its_attempts_reported(
    vault: Path, agent: ReliableAgent, make_canvas: Callable[[Path, Any], bytes], run_cli: Run
) -> None:
    texts = {"n1": note_text(1, "ONCE"), "n2": note_text(2)}
    canvas = vault / "notes.canvas"
    make_canvas(canvas, notes_canvas(texts))
    report = vault / "report.json"

    code, _, err = run_cli(
        canvas,
        "--agent-command",
        agent.command,
        "--timeout",
        "1",
        "--retries",
        "1",
        "--retry-base",
        "0.01",
        "--report",
        report,
    )

    assert code == 0, err
    tasks = report_tasks(report)
    assert (tasks["n1"]["status"], tasks["n1"]["attempts"]) == ("success", 2)
    assert (tasks["n2"]["status"], tasks["n2"]["attempts"]) == ("success", 1)
    assert sorted(text for _, text in agent.calls()) == sorted([texts["n1"], *texts.values()])
    assert set(answer_cards(canvas)) == {"n1", "n2"}
    attempts = {row["note_id"]: row["attempts"] for row in journal_rows(vault / JOURNAL_NAME)}
    assert attempts == {"n1": 2, "n2": 1}


def test_without_retries_a_timeout_fails_its_task_and_frees_the_slot(
    vault: Path, agent: ReliableAgent, make_canvas: Callable[[Path, Any], bytes], run_cli: Run
) -> None:
    texts = {"n1": note_text(1, "ONCE"), "n2": note_text(2)}
    canvas = vault / "notes.canvas"
    make_canvas(canvas, notes_canvas(texts))
    report = vault / "report.json"
    started = time.monotonic()

    # One slot: the second note can only start once the first one's timeout freed it.
    code, _, err = run_cli(
        canvas,
        "--agent-command",
        agent.command,
        "-m",
        "1",
        "--timeout",
        "1",
        "--retries",
        "0",
        "--report",
        report,
    )

    assert time.monotonic() - started < 4.5  # the first call sleeps 5 s: it was cut short
    assert code == 1, err
    tasks = report_tasks(report)
    assert tasks["n1"]["status"] == "failed"
    assert tasks["n1"]["attempts"] == 1
    assert "timed out after 1 s" in tasks["n1"]["error"]
    assert tasks["n2"]["status"] == "success"
    assert len(agent.calls()) == 2
    assert set(answer_cards(canvas)) == {"n2"}


# ----------------------------------------------------------------------------- fail-fast


def test_fail_fast_reports_the_rest_as_cancelled_not_failed(
    vault: Path, agent: ReliableAgent, make_canvas: Callable[[Path, Any], bytes], run_cli: Run
) -> None:
    texts = {"n1": note_text(1, "FAIL"), **{f"n{i}": note_text(i, "SLOW") for i in range(2, 6)}}
    canvas = vault / "notes.canvas"
    original = make_canvas(canvas, notes_canvas(texts))
    report = vault / "report.json"
    started = time.monotonic()

    code, _, err = run_cli(
        canvas, "--agent-command", agent.command, "-m", "2", "--fail-fast", "--report", report
    )

    assert time.monotonic() - started < 15  # the running SLOW call was cancelled, not awaited
    assert code == 1, err
    tasks = report_tasks(report)
    assert tasks["n1"]["status"] == "failed"
    assert "exited with code 1" in tasks["n1"]["error"]
    for note_id in ("n2", "n3", "n4", "n5"):
        assert tasks[note_id]["status"] == "cancelled", tasks[note_id]
        assert tasks[note_id]["error"].startswith("fail-fast: task 'n1:")
    stats = json.loads(report.read_text(encoding="utf-8"))["stats"]
    assert (stats["errors"], stats["cancelled"]) == (1, 4)
    assert len(agent.calls()) <= 2  # nothing started after the failure
    assert canvas.read_bytes() == original  # no answer to write
    statuses = {row["note_id"]: row["status"] for row in journal_rows(vault / JOURNAL_NAME)}
    assert statuses == {"n1": "failed", **dict.fromkeys(("n2", "n3", "n4", "n5"), "cancelled")}


# ----------------------------------------------------------------------------- rate limits


def test_rate_spaces_the_calls_out(
    vault: Path, agent: ReliableAgent, make_canvas: Callable[[Path, Any], bytes], run_cli: Run
) -> None:
    texts = {f"n{i}": note_text(i) for i in range(1, 6)}
    canvas = vault / "notes.canvas"
    make_canvas(canvas, notes_canvas(texts))

    code, _, err = run_cli(canvas, "--agent-command", agent.command, "--rate", "20/s")

    assert code == 0, err
    # When the run started each task (the journal's clock, in the process): 1/20 s apart.
    starts = sorted(row["started_at"] for row in journal_rows(vault / JOURNAL_NAME))
    assert len(starts) == 5
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.04
    # When the programs started (after the interpreter's own start-up, which varies).
    called = sorted(when for when, _ in agent.calls())
    assert len(called) == 5
    assert called[-1] - called[0] >= 0.1


# ----------------------------------------------------------------------------- journal flags


def test_no_journal_records_and_reuses_nothing(
    vault: Path, agent: ReliableAgent, make_canvas: Callable[[Path, Any], bytes], run_cli: Run
) -> None:
    canvas = vault / "notes.canvas"
    make_canvas(canvas, notes_canvas({"n1": note_text(1)}))

    code, _, err = run_cli(canvas, "--agent-command", agent.command, "--no-journal")

    assert code == 0, err
    assert len(agent.calls()) == 1
    assert not list(vault.glob("*.sqlite*"))
    assert not list(vault.glob(".*"))


def test_journal_path_puts_the_journal_there(
    vault: Path,
    tmp_path: Path,
    agent: ReliableAgent,
    make_canvas: Callable[[Path, Any], bytes],
    run_cli: Run,
) -> None:
    canvas = vault / "notes.canvas"
    make_canvas(canvas, notes_canvas({"n1": note_text(1), "n2": note_text(2)}))
    elsewhere = tmp_path / "journals" / "run.sqlite"
    elsewhere.parent.mkdir()

    code, _, err = run_cli(canvas, "--agent-command", agent.command, "--journal", elsewhere)

    assert code == 0, err
    assert not (vault / JOURNAL_NAME).exists()
    rows = journal_rows(elsewhere)
    assert sorted((row["note_id"], row["status"]) for row in rows) == [
        ("n1", "success"),
        ("n2", "success"),
    ]
    calls = len(agent.calls())
    code, _, err = run_cli(canvas, "--agent-command", agent.command, "--journal", elsewhere)
    assert code == 0, err
    assert len(agent.calls()) == calls  # the same journal: nothing paid twice


def test_a_corrupt_journal_is_refused_before_any_call(
    vault: Path, agent: ReliableAgent, make_canvas: Callable[[Path, Any], bytes], run_cli: Run
) -> None:
    canvas = vault / "notes.canvas"
    original = make_canvas(canvas, notes_canvas({"n1": note_text(1)}))
    journal = vault / JOURNAL_NAME
    garbage = b"this is not a SQLite file\x00\xff" * 200
    journal.write_bytes(garbage)

    code, out, err = run_cli(canvas, "--agent-command", agent.command)

    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error:")
    assert str(journal) in line
    assert journal.read_bytes() == garbage
    assert canvas.read_bytes() == original
    assert agent.calls() == []
