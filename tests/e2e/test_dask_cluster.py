"""End to end: ``intelligent-parallel --scheduler`` on a real Dask cluster.

A scheduler and two worker processes on 127.0.0.1 serve the module. The agent
program (``--agent-command``) logs, per call, its parent's pid (the process
that ran it: a worker, never the CLI), when it started and when it ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from dask_cluster import distributed, worker_pids

from .conftest import CliResult
from .test_reliability import (
    JOURNAL_NAME,
    OK_LINE,
    answer_cards,
    journal_rows,
    notes_canvas,
    subprocess_env,
    task_id,
    watchdog,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and process groups"),
]

CLUSTER_AGENT = r"""
import os
import sys
import time
from pathlib import Path

started = time.time()
log, state = Path(sys.argv[1]), Path(sys.argv[2])
data = sys.stdin.buffer.read().decode("utf-8")
prompt = data.partition("\n---\n")[2]
understanding = prompt.split("## Learner's understanding\n", 1)[-1].split("\n\n", 1)[0].strip()
with (state / "starts.log").open("a", encoding="utf-8") as handle:
    handle.write(f"{started!r}\t{understanding}\n")
if "SLOW" in understanding:
    while not (state / "fast").exists() and time.time() - started < 30:
        time.sleep(0.05)
else:
    time.sleep(0.3)
with log.open("a", encoding="utf-8") as handle:
    handle.write(f"{os.getppid()}\t{started!r}\t{time.time()!r}\t{understanding}\n")
print(f"ANSWER: {understanding}")
"""


def busy_workers(client: Any) -> list[str]:
    """The workers still running a call, cancelled or not."""
    running = client.run(
        lambda dask_worker: sum(
            ts.state in {"executing", "cancelled", "long-running"}
            for ts in dask_worker.state.tasks.values()
        )
    )
    return [worker for worker, count in running.items() if count]


class Agent:
    """The agent program on disk and its call log."""

    def __init__(self, folder: Path) -> None:
        self.script = folder / "agent.py"
        self.log = folder / "calls.log"
        self.state = folder / "state"
        self.state.mkdir(parents=True)
        self.script.write_text(CLUSTER_AGENT, encoding="utf-8")

    @property
    def command(self) -> str:
        return shlex.join([sys.executable, str(self.script), str(self.log), str(self.state)])

    def starts(self) -> list[tuple[float, str]]:
        """``(start time, learner's understanding)`` per call that started."""
        path = self.state / "starts.log"
        if not path.exists():
            return []
        rows = (line.split("\t", 1) for line in path.read_text("utf-8").splitlines())
        return [(float(start), text) for start, text in rows]

    def calls(self) -> list[tuple[int, float, float, str]]:
        if not self.log.exists():
            return []
        rows = (line.split("\t", 3) for line in self.log.read_text("utf-8").splitlines())
        return [(int(pid), float(start), float(end), text) for pid, start, end, text in rows]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    made = Agent(tmp_path / "agent")
    yield made
    (made.state / "fast").touch()  # a SLOW call still running anywhere ends now


def texts(count: int, slow: set[int] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
    return {
        f"n{i}": f"Note {i}: what I understood of idea {i}." + (" SLOW" if i in slow else "")
        for i in range(1, count + 1)
    }


def peak(calls: list[tuple[int, float, float, str]]) -> int:
    events = sorted([(start, 1) for _, start, _, _ in calls] + [(end, -1) for *_, end, _ in calls])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_agent_programs_run_in_the_workers_within_the_limit(
    tmp_path: Path,
    address: str,
    agent: Agent,
    make_canvas: Callable[[Path, Any], bytes],
    run_cli: Callable[..., CliResult],
) -> None:
    notes = texts(10)
    canvas = tmp_path / "notes.canvas"
    make_canvas(canvas, notes_canvas(notes))
    code, _, err = run_cli(
        canvas, "--agent-command", agent.command, "-m", "3", "-q", "--scheduler", address
    )
    assert code == 0, err
    calls = agent.calls()
    assert sorted(text for *_, text in calls) == sorted(notes.values())  # each note once
    parents = {pid for pid, *_ in calls}
    assert parents <= worker_pids(address)
    assert os.getpid() not in parents
    assert peak(calls) <= 3
    cards = answer_cards(canvas)
    assert {note: len(found) for note, found in cards.items()} == dict.fromkeys(notes, 1)


def test_the_model_router_asks_in_this_process_and_the_agents_answer_on_workers(
    tmp_path: Path,
    address: str,
    agent: Agent,
    make_canvas: Callable[[Path, Any], bytes],
    run_cli: Callable[..., CliResult],
) -> None:
    canvas = tmp_path / "notes.canvas"
    make_canvas(canvas, notes_canvas(texts(2)))
    code, _, err = run_cli(
        canvas, "--route", "model", "--agent-command", agent.command, "-q", "--scheduler", address
    )
    assert code == 0, err
    assert len(agent.calls()) == 2
    assert {pid for pid, *_ in agent.calls()} <= worker_pids(address)


def test_the_config_file_names_the_scheduler(
    tmp_path: Path,
    agent: Agent,
    make_canvas: Callable[[Path, Any], bytes],
    run_cli: Callable[..., CliResult],
) -> None:
    canvas = tmp_path / "notes.canvas"
    make_canvas(canvas, notes_canvas(texts(1)))
    config = tmp_path / "cluster.yaml"
    config.write_text("scheduler: tcp://127.0.0.1:9\nscheduler-timeout: 1\n", encoding="utf-8")
    code, _, err = run_cli(canvas, "--config", config, "--agent-command", agent.command)
    assert code == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 1 s" in err
    assert agent.calls() == []


def test_the_environment_variable_names_the_scheduler(
    tmp_path: Path,
    address: str,
    agent: Agent,
    make_canvas: Callable[[Path, Any], bytes],
    run_cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMMAND_HANDLERS_SCHEDULER", address)
    canvas = tmp_path / "notes.canvas"
    make_canvas(canvas, notes_canvas(texts(2)))
    code, _, err = run_cli(canvas, "--agent-command", agent.command, "-q")
    assert code == 0, err
    assert {pid for pid, *_ in agent.calls()} <= worker_pids(address)


def test_an_unreachable_scheduler_exits_2_naming_it_with_nothing_called(
    tmp_path: Path,
    agent: Agent,
    make_canvas: Callable[[Path, Any], bytes],
    run_cli: Callable[..., CliResult],
) -> None:
    canvas = tmp_path / "notes.canvas"
    original = make_canvas(canvas, notes_canvas(texts(2)))
    started = time.monotonic()
    code, _, err = run_cli(
        canvas,
        "--agent-command",
        agent.command,
        "--scheduler",
        "tcp://127.0.0.1:9",
        "--scheduler-timeout",
        "2",
    )
    assert code == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert time.monotonic() - started < 10
    assert agent.calls() == []
    assert canvas.read_bytes() == original
    assert not (tmp_path / JOURNAL_NAME).exists()


def test_kill_9_of_the_cli_then_a_rerun_calls_only_the_unfinished(
    tmp_path: Path,
    address: str,
    agent: Agent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
    run_cli: Callable[..., CliResult],
) -> None:
    notes = texts(6, slow={2, 5})
    canvas = tmp_path / "notes.canvas"
    original = make_canvas(canvas, notes_canvas(notes))
    argv = [str(canvas), "--agent-command", agent.command, "-m", "6", "--scheduler", address]
    process = subprocess.Popen(
        [*console_argv, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        start_new_session=True,
    )
    finished: list[str] = []
    try:
        assert process.stderr is not None
        with watchdog(process, 40):
            for line in process.stderr:
                match = OK_LINE.search(line)
                if match:
                    finished.append(match.group(1))
                    if len(finished) == 4:
                        break
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:  # pragma: no cover - only when the test already failed
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert len(finished) == 4
    assert canvas.read_bytes() == original
    paid = {row["note_id"] for row in journal_rows(tmp_path / JOURNAL_NAME)}
    assert paid == {"n1", "n3", "n4", "n6"}
    assert {task_id(note) for note in paid} == set(finished)

    # The slow calls the dead CLI left on the workers give themselves up (their
    # agent programs are killed: they never log).
    deadline = time.monotonic() + 10
    with distributed.Client(address, timeout=20) as client:
        while busy_workers(client) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not busy_workers(client)
    assert len(agent.calls()) == 4

    (agent.state / "fast").touch()
    before = len(agent.calls())
    report = tmp_path / "report.json"
    code, _, err = run_cli(*argv, "--report", report)
    assert code == 0, err
    again = sorted(text for *_, text in agent.calls()[before:])
    assert again == sorted(notes[note] for note in ("n2", "n5"))
    tasks = {task["node_id"]: task for task in json.loads(report.read_text("utf-8"))["tasks"]}
    assert {note for note, task in tasks.items() if task["cached"]} == paid
    assert {note: len(found) for note, found in answer_cards(canvas).items()} == dict.fromkeys(
        notes, 1
    )


def start_cli(console_argv: list[str], argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*console_argv, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        start_new_session=True,
    )


def wait_for_workers_idle(address: str) -> None:
    deadline = time.monotonic() + 10
    with distributed.Client(address, timeout=20) as client:
        while busy_workers(client) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not busy_workers(client)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_starts_no_new_call_and_the_second_cancels_every_call(
    presses: int,
    tmp_path: Path,
    address: str,
    agent: Agent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
) -> None:
    notes = texts(6, slow={2, 3})
    canvas = tmp_path / "notes.canvas"
    original = make_canvas(canvas, notes_canvas(notes))
    grace = "0.5" if presses == 1 else "30"
    argv = [str(canvas), "--agent-command", agent.command, "-m", "2", "--grace", grace]
    process = start_cli(console_argv, [*argv, "--scheduler", address])
    seen: list[str] = []
    try:
        assert process.stderr is not None
        with watchdog(process, 40):
            for line in process.stderr:
                seen.append(line)
                if OK_LINE.search(line):
                    break
            while len(agent.starts()) < 3:  # n1 answered; n2 and n3 running
                time.sleep(0.02)
            pressed = time.time()
            process.send_signal(signal.SIGINT)
            if presses == 2:
                for line in process.stderr:
                    seen.append(line)
                    if "Stopping" in line:
                        break
                process.send_signal(signal.SIGINT)
            seen.append(process.stderr.read())
            process.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:  # pragma: no cover - only when the test already failed
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert process.returncode == 130, "".join(seen)
    wait_for_workers_idle(address)  # the running calls were cancelled on the workers
    starts = agent.starts()
    assert sorted(text for _, text in starts) == sorted(notes[n] for n in ("n1", "n2", "n3"))
    assert all(start < pressed for start, _ in starts)
    assert [text for *_, text in agent.calls()] == [notes["n1"]]  # the SLOW ones were killed
    if presses == 1:
        assert set(answer_cards(canvas)) == {"n1"}
    else:
        assert canvas.read_bytes() == original


def test_kill_9_of_a_worker_mid_run_answers_each_note_once(
    tmp_path: Path,
    address: str,
    agent: Agent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
) -> None:
    notes = texts(4, slow={1, 2, 3, 4})
    canvas = tmp_path / "notes.canvas"
    make_canvas(canvas, notes_canvas(notes))
    process = start_cli(
        console_argv,
        [str(canvas), "--agent-command", agent.command, "-m", "4", "--scheduler", address],
    )
    try:
        with watchdog(process, 40):
            while len(agent.starts()) < 4:  # every call runs, held until "fast"
                time.sleep(0.02)
            with distributed.Client(address, timeout=20) as client:
                pids = client.run(os.getpid)
                busy = [pids[worker] for worker in busy_workers(client)]
            os.kill(busy[0], signal.SIGKILL)
            time.sleep(0.5)  # the scheduler hears of it and runs its calls again elsewhere
            (agent.state / "fast").touch()
            _, err = process.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:  # pragma: no cover - only when the test already failed
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    # The dead worker's agent programs may have answered too: nobody heard them.
    assert {note: len(found) for note, found in answer_cards(canvas).items()} == dict.fromkeys(
        notes, 1
    )
    assert {text for *_, text in agent.calls()} == set(notes.values())
