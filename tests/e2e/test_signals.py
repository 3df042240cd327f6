"""End to end: signals at any moment, and agent programs that leave children behind.

The real console script runs in a session of its own, as a terminal's
foreground job, on a folder laid out like an Obsidian vault; signals go to its
process group as a terminal sends them. A small agent program acts on words
in the learner's note:

* ``GATE``: waits until the file ``<state>/release`` exists (at most 30 s);
* ``BACKGROUND``: starts a child that holds its stdout, prints its answer, exits 0;
* ``HOLD``: starts that child, then never answers.

Every agent process carries the test's marker in its command line, so that
``/proc`` tells whether one was left behind. Every test is bounded: a
watchdog kills what it started if it hangs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
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
from .test_reliability import notes_canvas

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not Path("/proc").is_dir(), reason="POSIX signals and /proc"
)

AGENT = "clarification-path"

SIGNAL_AGENT = r"""
import hashlib
import subprocess
import sys
import time
from pathlib import Path

state, marker = Path(sys.argv[1]), sys.argv[2]
data = sys.stdin.buffer.read().decode("utf-8")
prompt = data.partition("\n---\n")[2]
understanding = prompt.split("## Learner's understanding\n", 1)[-1].split("\n\n", 1)[0].strip()
name = hashlib.sha256(understanding.encode()).hexdigest()[:12]
(state / f"started-{name}.tmp").write_text(understanding, encoding="utf-8")
(state / f"started-{name}.tmp").rename(state / f"started-{name}")
if "BACKGROUND" in understanding or "HOLD" in understanding:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
if "HOLD" in understanding:
    time.sleep(300)
if "GATE" in understanding:
    deadline = time.monotonic() + 30
    while not (state / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
print(f"ANSWER: {understanding}", flush=True)
"""

#: A plugin that blocks the run while it plans: it says so in a file, then waits for another.
PLANNING_PLUGIN = r"""
import os
import time
from pathlib import Path

from command_handlers import hookimpl

@hookimpl
def configure(settings, pm):
    folder = Path(os.environ["TEST_PLANNING_DIR"])
    (folder / "planning").touch()
    deadline = time.monotonic() + 30
    while not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
"""


@dataclass
class SignalAgent:
    """The agent program on disk and its state folder."""

    script: Path
    state: Path
    marker: str

    @property
    def command(self) -> str:
        """The value of ``--agent-command``."""
        return shlex.join([sys.executable, str(self.script), str(self.state), self.marker])

    def started(self) -> list[str]:
        """The notes whose call started."""
        return sorted(
            p.read_text(encoding="utf-8")
            for p in self.state.glob("started-*")
            if not p.name.endswith(".tmp")
        )

    def release(self) -> None:
        """Let the GATE notes answer."""
        (self.state / "release").touch()

    def left_behind(self) -> list[int]:
        """Processes of this test's agents still running."""
        return processes_running(self.marker)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[SignalAgent]:
    folder = tmp_path / "agent"
    state = folder / "state"
    state.mkdir(parents=True)
    script = folder / "agent.py"
    script.write_text(SIGNAL_AGENT, encoding="utf-8")
    found = SignalAgent(script, state, f"signal-test-marker-{os.getpid()}-{tmp_path.name}")
    yield found
    for pid in found.left_behind():  # only when a test already failed
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    """A folder laid out like an Obsidian vault."""
    folder = tmp_path / "vault"
    (folder / ".obsidian").mkdir(parents=True)
    (folder / ".obsidian" / "app.json").write_text("{}", encoding="utf-8")
    return folder


def make_notes(vault: Path, make_canvas: Callable[[Path, Any], bytes], *texts: str) -> Path:
    """A canvas of learner's notes ``n1``, ``n2``... with these texts; its path."""
    canvas = vault / "notes.canvas"
    make_canvas(canvas, notes_canvas({f"n{row}": text for row, text in enumerate(texts, 1)}))
    return canvas


def answered(canvas: Path) -> dict[str, str]:
    """Note id -> the text of its answer card."""
    data = json.loads(canvas.read_text(encoding="utf-8"))
    nodes = {node["id"]: node for node in data["nodes"]}
    return {
        edge["fromNode"]: nodes[edge["toNode"]]["text"]
        for edge in data["edges"]
        if edge.get("label") == AGENT
    }


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    env.update(extra)
    return env


class Cli:
    """The console script running in a session of its own, its stderr read by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env or environment(),
            start_new_session=True,  # a terminal's foreground job: signals go to its group
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def signal(self, signum: int) -> None:
        """Send a signal to its process group, as a terminal does on Ctrl-C or hang-up."""
        os.killpg(self.process.pid, signum)

    def wait_for_line(self, text: str, timeout: float = 20) -> None:
        """Wait until a line of stderr holds ``text``."""
        with self._changed:
            if not self._changed.wait_for(lambda: text in self.stderr, timeout):
                raise AssertionError(f"no {text!r} on stderr:\n{self.stderr}")

    def wait(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:  # only when the test already failed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str] | None = None) -> Iterator[Cli]:
    """Run the console script; kill its group if the block is still running after 60 s."""
    cli = Cli(argv, env)
    timer = threading.Timer(60, cli.close)
    timer.start()
    try:
        yield cli
    finally:
        timer.cancel()
        cli.close()


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Poll a condition on files (no event tells of them)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def journal_statuses(vault: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(vault / ".notes.canvas.journal.sqlite")) as conn:
        return dict(conn.execute("SELECT note_id, status FROM outcomes ORDER BY id"))


# ----------------------------------------------------------------------------- agent processes


def test_an_answer_printed_before_a_background_child_is_written(
    vault: Path,
    agent: SignalAgent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
) -> None:
    canvas = make_notes(vault, make_canvas, "Recursion, BACKGROUND child.")
    started = time.monotonic()
    with running([*console_argv, str(canvas), "--agent-command", agent.command]) as cli:
        code = cli.wait()

    assert code == 0, cli.stderr
    assert time.monotonic() - started < 20  # not the child's 300 s
    assert "ANSWER: Recursion, BACKGROUND child." in answered(canvas)["n1"]
    assert agent.left_behind() == []


def test_a_child_holding_stdout_ends_with_the_timeout(
    vault: Path,
    agent: SignalAgent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
) -> None:
    canvas = make_notes(vault, make_canvas, "Closures, HOLD the pipe.")
    argv = [str(canvas), "--agent-command", agent.command, "--timeout", "2", "--retries", "0"]
    started = time.monotonic()
    with running([*console_argv, *argv]) as cli:
        code = cli.wait()
    elapsed = time.monotonic() - started

    assert code == 1, cli.stderr
    assert "timed out after 2 s" in cli.stderr
    assert elapsed < 2 + 1 + 5  # --timeout, the kill grace, the start of Python
    assert agent.left_behind() == []


# ----------------------------------------------------------------------------- signals


def test_ctrl_c_lets_running_agents_finish_and_writes_their_answers(
    vault: Path,
    agent: SignalAgent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
) -> None:
    texts = ("First GATE note.", "Second GATE note.", "Third GATE note.")
    canvas = make_notes(vault, make_canvas, *texts)
    argv = [str(canvas), "--agent-command", agent.command, "-m", "2", "--grace", "30"]
    with running([*console_argv, *argv]) as cli:
        wait_until(lambda: len(agent.started()) == 2)
        cli.signal(signal.SIGINT)  # Ctrl-C: the terminal signals its foreground group
        cli.wait_for_line("Stopping: no new calls")
        agent.release()  # the running calls were not killed by the Ctrl-C: they answer now
        code = cli.wait()

    assert code == 130, cli.stderr
    assert "run the same command again" in cli.stderr
    cards = answered(canvas)
    assert len(agent.started()) == 2  # the third never started
    assert set(cards) == {
        note for note, text in zip(("n1", "n2", "n3"), texts) if text in agent.started()
    }
    for note in cards:
        assert "ANSWER: " in cards[note]
    statuses = journal_statuses(vault)
    assert sorted(statuses.values()) == ["cancelled", "success", "success"]
    assert agent.left_behind() == []


def test_ctrl_c_while_planning_starts_no_agent(
    vault: Path,
    agent: SignalAgent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
    tmp_path: Path,
) -> None:
    canvas = make_notes(vault, make_canvas, "One note.", "Another note.")
    original = canvas.read_bytes()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow_planning.py").write_text(PLANNING_PLUGIN, encoding="utf-8")
    env = environment(
        PYTHONPATH=os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
        TEST_PLANNING_DIR=str(plugins),
    )
    argv = [str(canvas), "--agent-command", agent.command, "-p", "slow_planning"]
    with running([*console_argv, *argv], env) as cli:
        wait_until((plugins / "planning").exists)
        cli.signal(signal.SIGINT)  # while the run plans, in one stretch of code
        (plugins / "go").touch()
        code = cli.wait()

    assert code == 130, cli.stderr
    assert "Stopping: no new calls" in cli.stderr
    assert "stopped: 2 notes were not answered" in cli.stderr
    assert agent.started() == []  # no agent started after the Ctrl-C
    assert canvas.read_bytes() == original


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_gently_and_clean_up(
    vault: Path,
    agent: SignalAgent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
    signum: int,
    code: int,
) -> None:
    canvas = make_notes(vault, make_canvas, "Answered at once.", "A GATE never opened.")
    # What a run killed while writing leaves: a temporary canvas of a process long gone.
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    stale = vault / f".notes.canvas.{dead.pid}-0badcafe.tmp"
    stale.write_text("{}", encoding="utf-8")
    argv = [str(canvas), "--agent-command", agent.command, "--grace", "0.5", "--quiet"]
    with running([*console_argv, *argv]) as cli:
        wait_until(lambda: len(agent.started()) == 2)
        cli.signal(signum)
        if signum == signal.SIGHUP:
            cli.signal(signum)  # a closing terminal hangs up twice: kernel and shell
        exit_code = cli.wait()

    assert exit_code == code, cli.stderr
    # Under --quiet, the one line saying how to go on, and nothing else.
    assert cli.lines == [
        "stopped: 1 notes were not answered; run the same command again to answer them"
        " (finished answers are kept)\n"
    ]
    assert set(answered(canvas)) == {"n1"}  # what finished is written
    assert agent.left_behind() == []  # the call still running after the grace was ended
    assert not list(vault.glob(".notes.canvas.*.tmp"))  # the stale one too


def test_a_second_signal_cancels_at_once_and_leaves_the_canvas_alone(
    vault: Path,
    agent: SignalAgent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
) -> None:
    canvas = make_notes(vault, make_canvas, "Answered at once.", "A GATE never opened.")
    original = canvas.read_bytes()
    argv = [str(canvas), "--agent-command", agent.command, "--grace", "30"]
    with running([*console_argv, *argv]) as cli:
        wait_until(lambda: len(agent.started()) == 2)
        cli.wait_for_line(" ok ")  # the first answer is in
        cli.signal(signal.SIGTERM)
        cli.wait_for_line("Stopping (SIGTERM)")
        cli.signal(signal.SIGINT)
        code = cli.wait()

    assert code == 143, cli.stderr  # the first signal's code
    assert "Interrupted: the canvas was not changed" in cli.stderr
    assert canvas.read_bytes() == original
    (side,) = vault.glob("notes.canvas.answers-*.json")
    (answer,) = json.loads(side.read_text(encoding="utf-8"))["answers"]
    assert answer["node_id"] == "n1"
    assert journal_statuses(vault) == {"n1": "success", "n2": "cancelled"}
    assert agent.left_behind() == []
    assert not list(vault.glob(".notes.canvas.*.tmp"))


@pytest.mark.skipif(shutil.which("nohup") is None, reason="no nohup")
def test_a_run_started_under_nohup_ignores_the_hang_up(
    vault: Path,
    agent: SignalAgent,
    make_canvas: Callable[[Path, Any], bytes],
    console_argv: list[str],
) -> None:
    canvas = make_notes(vault, make_canvas, "A GATE note.")
    argv = [str(canvas), "--agent-command", agent.command]
    with running(["nohup", *console_argv, *argv]) as cli:  # SIGHUP ignored, inherited
        wait_until(lambda: len(agent.started()) == 1)
        cli.signal(signal.SIGHUP)
        agent.release()
        code = cli.wait()

    assert code == 0, cli.stderr
    assert "Stopping" not in cli.stderr
    assert set(answered(canvas)) == {"n1"}
