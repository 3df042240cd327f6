"""What a command costs around its calls: the modules it imports, the commits it makes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import command_handlers
from command_handlers import cli, fileio, intelligent_parallel
from command_handlers.default_plugins import journal as journal_module
from command_handlers.default_plugins import llm_agents, progress
from command_handlers.settings import Settings

#: Imported by a real call only: a command that calls no model must not pay for them.
HEAVY = ("llm", "openai", "sqlite_utils", "pydantic")

_PROBE = """
import contextlib, io, json, sys
from command_handlers import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = cli.main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
names = ("llm", "openai", "sqlite_utils", "pydantic", "rich")
print(json.dumps({"code": code, "loaded": [name for name in names if name in sys.modules]}))
"""


def vault_canvas(folder: Path, notes: int) -> Path:
    """A canvas of ``notes`` learner's notes (colour "6") in a vault (``.obsidian/``)."""
    (folder / ".obsidian").mkdir(parents=True)
    nodes = [
        {
            "id": f"note{i:04d}",
            "type": "text",
            "text": f"Why does step {i} stop?",
            "x": 0,
            "y": i * 300,
            "width": 300,
            "height": 120,
            "color": "6",
        }
        for i in range(notes)
    ]
    path = folder / "notes.canvas"
    path.write_text(json.dumps({"nodes": nodes, "edges": []}), encoding="utf-8")
    return path


def loaded_by(*args: str, cwd: Path) -> dict[str, Any]:
    """Run the command line in a fresh interpreter; which of the heavy modules it imported."""
    env = dict(os.environ)
    env["COMMAND_HANDLERS_LOAD_PLUGINS"] = ""  # installed plugins import what they like
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["--list-plugins"]])
def test_help_version_and_the_plugin_list_import_nothing_heavy(
    args: list[str], tmp_path: Path
) -> None:
    result = loaded_by(*args, cwd=tmp_path)
    assert result == {"code": 0, "loaded": []}


def test_a_dry_run_with_the_echo_model_imports_only_what_draws_the_plan(tmp_path: Path) -> None:
    canvas = vault_canvas(tmp_path / "vault", 1)
    result = loaded_by(str(canvas), "--dry-run", cwd=tmp_path)
    assert result == {"code": 0, "loaded": ["rich"]}  # rich draws the plan; no model is called
    assert not list((tmp_path / "vault").glob(".*journal*"))


class _Recorder:
    """The journal's SQL statements and the canvas's replacement, in the order they happen."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._connect = sqlite3.connect

    def connect(self, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = self._connect(*args, **kwargs)
        conn.set_trace_callback(lambda statement: self.events.append(statement.strip().upper()))
        return conn


def run_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, notes: int) -> list[str]:
    canvas = vault_canvas(tmp_path / f"vault{notes}", notes)
    recorder = _Recorder()
    monkeypatch.setattr(journal_module.sqlite3, "connect", recorder.connect)
    swap_in = fileio._swap_in

    def recorded_swap_in(*args: Any, **kwargs: Any) -> Any:
        recorder.events.append("CANVAS REPLACED")
        return swap_in(*args, **kwargs)

    monkeypatch.setattr(fileio, "_swap_in", recorded_swap_in)
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main([str(canvas), "-a", "-q", "--no-plugins"])
    assert code == 0
    return recorder.events


def _commits(events: list[str]) -> int:
    """The commits that wrote something (an empty BEGIN; COMMIT syncs nothing)."""
    return sum(
        1
        for before, event in zip(["", *events], events)
        if event.startswith("COMMIT") and before != "BEGIN"
    )


def test_one_commit_per_outcome_and_one_for_the_written_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = run_recorded(tmp_path, monkeypatch, 3)
    large = run_recorded(tmp_path, monkeypatch, 9)

    # Six notes more cost six commits more: one per outcome, none per mark.
    assert _commits(large) - _commits(small) == 6
    for events, notes in ((small, 3), (large, 9)):
        replaced = events.index("CANVAS REPLACED")
        inserts = [i for i, e in enumerate(events) if e.startswith("INSERT INTO OUTCOMES")]
        assert len(inserts) == notes
        # Each outcome is committed before the next is recorded, and all before the
        # canvas says they are written (docs/reliability.md's promise).
        for insert, following in zip(inserts, [*inserts[1:], replaced]):
            assert _commits(events[insert:following]) == 1
        # ... and synced to the disk between the last one and the canvas.
        assert any(e.startswith("PRAGMA WAL_CHECKPOINT") for e in events[inserts[-1] : replaced])
        # The written marks: one transaction after the canvas, however many notes.
        after = events[replaced:]
        assert sum(1 for e in after if e.startswith("UPDATE OUTCOMES")) == notes
        assert _commits(after) == 1


def test_the_echo_model_is_not_looked_up_before_its_first_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    monkeypatch.setattr(llm_agents, "_get_model", looked_up.append)
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "tutor.md").write_text(
        "---\nname: tutor\ndescription: Teaches.\nmodel: echo\n---\nTeach.\n", "utf-8"
    )

    assert llm_agents.check_settings(Settings(agents_dirs=(folder,))) == llm_agents.ECHO_NOTICE
    assert looked_up == []
    # An agent asking for echo under another run model: only the run model is looked up;
    # two agents asking for one model: looked up once.
    for name in ("coach", "critic"):
        (folder / f"{name}.md").write_text(
            f"---\nname: {name}\ndescription: Helps.\nmodel: shared\n---\nHelp.\n", "utf-8"
        )
    llm_agents.check_settings(Settings(model="other", agents_dirs=(folder,)))
    assert looked_up == ["other", "shared"]


@pytest.mark.parametrize("module", [command_handlers, intelligent_parallel, progress])
def test_lazy_modules_still_refuse_unknown_names(module: Any) -> None:
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        getattr(module, "no_such_name")  # noqa: B009  # the name is the point


def test_lazy_names_are_the_real_ones() -> None:
    from command_handlers.default_plugins.progress_display import ProgressDisplay
    from command_handlers.intelligent_parallel.handler import IntelligentParallelCommandHandler
    from command_handlers.plugins import run_tasks

    assert progress.ProgressDisplay is ProgressDisplay
    assert intelligent_parallel.IntelligentParallelCommandHandler is (
        IntelligentParallelCommandHandler
    )
    assert command_handlers.run_tasks is run_tasks


def test_a_results_repr_does_not_grow_with_its_tasks() -> None:
    # asyncio.run formats the main task, result included, when it restores its
    # Ctrl-C handler at the end of every command.
    from command_handlers.intelligent_parallel.result import CommandResult

    def result(tasks: int) -> CommandResult:
        rows = [{"task_id": f"t{i}", "answer": "x" * 200} for i in range(tasks)]
        return CommandResult(
            kind="ran", session_id="s", success=True, results=rows, skipped=rows, report={"r": rows}
        )

    assert len(repr(result(1_000))) == len(repr(result(1)))
    assert "task_id" not in repr(result(1))
