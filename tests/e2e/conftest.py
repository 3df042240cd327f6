"""Fixtures of the end-to-end tests: a learner's canvas, an agent program and CLI runners.

The canvas follows the origin's conventions: red ("1") questions, each linked
by an edge to the learner's own-understanding note (colour "6"); an empty "6"
note that must not be sent; nodes of other colours; a group, a file and a link
node; and fields JSON Canvas does not define, on the canvas, its nodes and its
edges, which must survive every run.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from command_handlers.cli import main

#: The learner's notes that have text: the ones every default run answers.
NOTE_IDS = ("note-recursion", "note-closure")

_CANVAS: dict[str, Any] = {
    "nodes": [
        {
            "id": "chapter",
            "type": "group",
            "label": "Chapter 1: functions",
            "x": -500,
            "y": -100,
            "width": 1300,
            "height": 1300,
            "x-collapsed": False,
        },
        {
            "id": "q-recursion",
            "type": "text",
            "text": "# What is recursion?\nExplain it with an example.",
            "x": -400,
            "y": 0,
            "width": 300,
            "height": 100,
            "color": "1",
        },
        {
            "id": "note-recursion",
            "type": "text",
            "text": "Recursion is when a function calls itself until it stops.",
            "x": 0,
            "y": 0,
            "width": 300,
            "height": 150,
            "color": "6",
            "x-reviewed": {"by": "learner", "times": 2},
        },
        {
            # Right where the first answer card would go: the card must move down.
            "id": "understood",
            "type": "text",
            "text": "Base cases stop the recursion.",
            "x": 380,
            "y": 0,
            "width": 250,
            "height": 120,
            "color": "2",
        },
        {
            "id": "q-closure",
            "type": "text",
            "text": "# What is a closure?",
            "x": -400,
            "y": 400,
            "width": 300,
            "height": 100,
            "color": "1",
        },
        {
            "id": "note-closure",
            "type": "text",
            "text": "A closure is a function that remembers the variables around it.",
            "x": 0,
            "y": 400,
            "width": 300,
            "height": 150,
            "color": "6",
        },
        {
            "id": "note-empty",
            "type": "text",
            "text": "",
            "x": 0,
            "y": 800,
            "width": 300,
            "height": 100,
            "color": "6",
        },
        {
            "id": "partly",
            "type": "text",
            "text": "Stack frames: partly understood.",
            "x": -400,
            "y": 800,
            "width": 300,
            "height": 80,
            "color": "3",
        },
        {
            "id": "pink",
            "type": "text",
            "text": "A custom-coloured card.",
            "x": -400,
            "y": 1000,
            "width": 300,
            "height": 80,
            "color": "#ff00aa",
        },
        {
            "id": "reading",
            "type": "file",
            "file": "material/recursion.md",
            "x": -400,
            "y": 200,
            "width": 300,
            "height": 120,
        },
        {
            "id": "video",
            "type": "link",
            "url": "https://example.com/closures",
            "x": -400,
            "y": 600,
            "width": 300,
            "height": 120,
        },
    ],
    "edges": [
        {
            "id": "edge-q-recursion",
            "fromNode": "q-recursion",
            "fromSide": "right",
            "toNode": "note-recursion",
            "toSide": "left",
            "label": "my answer",
            "x-weight": 3,
        },
        {
            "id": "edge-reading",
            "fromNode": "reading",
            "toNode": "note-recursion",
        },
        {
            "id": "edge-q-closure",
            "fromNode": "q-closure",
            "toNode": "note-closure",
            "color": "4",
        },
        {
            "id": "edge-video",
            "fromNode": "note-closure",
            "toNode": "video",
            "label": "see also",
        },
    ],
    "x-plugin-data": {"zoom": 1.5, "tags": ["functions"]},
}


def fixture_canvas() -> dict[str, Any]:
    """A fresh copy of the fixture canvas's JSON data."""
    return copy.deepcopy(_CANVAS)


def write_canvas(path: Path, data: Any) -> bytes:
    """Write canvas data the way Obsidian does (tab-indented JSON); return the bytes."""
    raw = json.dumps(data, indent="\t", ensure_ascii=False).encode("utf-8")
    path.write_bytes(raw)
    return raw


@pytest.fixture(autouse=True)
def _isolated_environment(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No user llm configuration and no installed plugins, in-process and in subprocesses."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path_factory.mktemp("llm-user")))
    monkeypatch.setenv("COMMAND_HANDLERS_LOAD_PLUGINS", "")
    monkeypatch.delenv("TEST_AGENT_TOUCH", raising=False)
    monkeypatch.delenv("TEST_AGENT_SPOIL", raising=False)
    monkeypatch.delenv("INTELLIGENT_PARALLEL_CONFIG", raising=False)


@pytest.fixture
def canvas_data() -> dict[str, Any]:
    """The fixture canvas's data (a copy a test may change before writing it)."""
    return fixture_canvas()


@pytest.fixture
def make_canvas() -> Callable[[Path, Any], bytes]:
    """:func:`write_canvas`, for tests that build canvases of their own."""
    return write_canvas


@pytest.fixture
def canvas_file(tmp_path: Path, canvas_data: dict[str, Any]) -> Path:
    """The fixture canvas written to ``<tmp>/vault/notes.canvas``."""
    vault = tmp_path / "vault"
    vault.mkdir()
    path = vault / "notes.canvas"
    write_canvas(path, canvas_data)
    return path


CliResult = tuple[int, str, str]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``command_handlers.cli.main`` in-process: ``(exit code, stdout, stderr)``."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exc:  # argparse errors, --help, --version
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def console_script() -> list[str]:
    """The installed console script, or ``python -m command_handlers.cli`` without one."""
    script = Path(sys.executable).with_name("intelligent-parallel")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "command_handlers.cli"]  # pragma: no cover


@pytest.fixture
def console_argv() -> list[str]:
    """The argv that starts the console script."""
    return console_script()


@pytest.fixture
def run_script() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real console script in a subprocess (the environment as the test set it)."""

    def run(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*console_script(), *(str(arg) for arg in args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(os.environ),
        )

    return run


#: An agent program for --agent-command. Arguments: the call log and the folder for stdin
#: dumps. It logs "<agent>\t<learner's understanding>" per call, keeps its whole stdin in a
#: file named after a hash of it, fails for a note saying PLEASE FAIL, waits for a note
#: saying PLEASE WAIT (until killed), and touches the file TEST_AGENT_TOUCH names, if set
#: (TEST_AGENT_SPOIL: overwrites it with text that is no canvas).
AGENT_PROGRAM = r"""
import hashlib
import os
import sys
import time
from pathlib import Path

log, dumps = Path(sys.argv[1]), Path(sys.argv[2])
data = sys.stdin.buffer.read().decode("utf-8")
agent = os.environ.get("COMMAND_HANDLERS_AGENT", "?")
system, separator, prompt = data.partition("\n---\n")
understanding = prompt.split("## Learner's understanding\n", 1)[-1].split("\n\n", 1)[0].strip()
with log.open("a", encoding="utf-8") as handle:
    handle.write(f"{agent}\t{understanding}\n")
dumps.mkdir(exist_ok=True)
name = hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]
(dumps / f"{name}.txt").write_text(data, encoding="utf-8")
touch = os.environ.get("TEST_AGENT_TOUCH")
if touch:
    with open(touch, "ab") as handle:
        handle.write(b"\n")
spoil = os.environ.get("TEST_AGENT_SPOIL")
if spoil:
    Path(spoil).write_text("not a canvas", encoding="utf-8")
if "PLEASE FAIL" in understanding:
    print("failing on purpose [/oops] [bold]", file=sys.stderr)  # not rich markup
    sys.exit(1)
if "PLEASE WAIT" in understanding:
    time.sleep(120)
print(f"ANSWER for {agent}: {prompt[:40]}")
print(f"Your note said: {understanding}")
"""


@dataclass
class AgentProgram:
    """The agent program written to disk, and what it recorded."""

    script: Path
    log: Path
    dumps: Path

    @property
    def command(self) -> str:
        """The value of ``--agent-command`` (one string, shell-quoted)."""
        return shlex.join([sys.executable, str(self.script), str(self.log), str(self.dumps)])

    def calls(self) -> list[tuple[str, str]]:
        """``(agent, learner's understanding)`` per invocation, in the order they ran."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [(agent, text) for agent, _, text in (line.partition("\t") for line in lines)]

    def stdins(self) -> list[str]:
        """Everything the program read on stdin, one entry per distinct input."""
        if not self.dumps.exists():
            return []
        return [path.read_text(encoding="utf-8") for path in sorted(self.dumps.iterdir())]


@pytest.fixture
def agent_program(tmp_path: Path) -> AgentProgram:
    """The agent program, in ``<tmp>/agent``, with its log and dumps beside it."""
    folder = tmp_path / "agent"
    folder.mkdir()
    script = folder / "agent.py"
    script.write_text(AGENT_PROGRAM, encoding="utf-8")
    return AgentProgram(script, folder / "calls.log", folder / "stdin")


def processes_running(marker: str) -> list[int]:
    """The pids of the live processes (zombies left out) whose command line holds ``marker``.

    Read from ``/proc``; an empty list where there is none.
    """
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue  # gone meanwhile
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
