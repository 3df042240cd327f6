"""The built-ins are plugins like any other: replaced, disabled and listed from the command line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from command_handlers import hookimpl
from command_handlers.default_plugins.progress import ProgressDisplay
from command_handlers.intelligent_parallel_handler import IntelligentParallelCommandHandler

from .conftest import NOTE_IDS, CliResult

Run = Callable[..., CliResult]

#: A third-party plugin that serves every agent the bundled definitions name, and
#: records the settings it was given.
VENDOR_PLUGIN = """
import json
import os

from command_handlers import hookimpl
from command_handlers.agent_definitions import load_agents

SEEN = os.environ["VENDOR_SEEN"]


@hookimpl
def register_executors(register, settings):
    with open(SEEN, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"model": settings.model}) + "\\n")

    async def answer(task):
        return {"text": f"vendor answer to {task.node_data['note_id']}", "model": settings.model}

    for name in load_agents(settings.agents_dirs):
        register(name, answer, fingerprint=settings.model)
"""


@pytest.fixture
def vendor_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The vendor plugin as module ``vendor_agents`` on ``sys.path``; returns its record file."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "vendor_agents.py").write_text(VENDOR_PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    seen = tmp_path / "seen.jsonl"
    monkeypatch.setenv("VENDOR_SEEN", str(seen))
    yield seen
    sys.modules.pop("vendor_agents", None)


def _report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_a_plugin_module_replaces_llm_agents(
    run_cli: Run, canvas_file: Path, vendor_plugin: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"

    code, _, err = run_cli(
        canvas_file,
        "--disable-plugin",
        "llm-agents",
        "-p",
        "vendor_agents",
        "--model",
        "vendor-x",
        "--auto",
        "--report",
        report,
    )

    assert code == 0, err
    assert "echo" not in err.lower()
    assert {json.loads(line)["model"] for line in vendor_plugin.read_text().splitlines()} == {
        "vendor-x"
    }
    tasks = _report(report)["tasks"]
    assert {task["node_id"] for task in tasks} == set(NOTE_IDS)
    for task in tasks:
        assert task["status"] == "success"
        document = (canvas_file.parent / task["document"]).read_text(encoding="utf-8")
        assert f"vendor answer to {task['node_id']}" in document


def test_an_unknown_model_is_refused_by_llm_agents_before_any_call(
    run_cli: Run, canvas_file: Path
) -> None:
    original = canvas_file.read_bytes()

    code, _, err = run_cli(canvas_file, "--model", "no-such-model-x", "--auto")

    assert code == 2
    assert "unknown model 'no-such-model-x'" in err
    assert len(err.strip().splitlines()) == 1
    assert canvas_file.read_bytes() == original


def test_disabled_built_ins_are_never_imported(
    canvas_file: Path, console_argv: list[str], tmp_path: Path
) -> None:
    """A whole run in a fresh process: the disabled modules never reach ``sys.modules``."""
    check = tmp_path / "check.py"
    check.write_text(
        textwrap.dedent(
            """
            import json, sys
            from command_handlers.cli import main
            code = main(sys.argv[2:])
            loaded = [name for name in sys.modules if name.startswith("command_handlers.default")]
            with open(sys.argv[1], "w") as handle:
                json.dump({"code": code, "loaded": loaded}, handle)
            """
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out.json"
    argv = [str(canvas_file), "--disable-plugin", "journal,progress", "--disable-plugin"]
    argv += ["model-router", "--auto"]

    subprocess.run(
        [sys.executable, str(check), str(out), *argv], check=True, timeout=120, capture_output=True
    )

    found = json.loads(out.read_text(encoding="utf-8"))
    assert found["code"] == 0
    for name in ("journal", "progress", "model_router"):
        assert f"command_handlers.default_plugins.{name}" not in found["loaded"]
    assert "command_handlers.default_plugins.llm_agents" in found["loaded"]
    assert not list(canvas_file.parent.glob(".*journal*"))
    assert len(list((canvas_file.parent / "notes answers").iterdir())) == len(NOTE_IDS)


def test_an_agent_failing_with_cancelled_in_its_text_is_failed_everywhere(
    run_cli: Run,
    canvas_file: Path,
    canvas_data: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The status is data: an error text that starts with "cancelled:" changes nothing."""
    program = tmp_path / "quota.py"
    program.write_text(
        "import sys\nsys.stdin.read()\nprint('cancelled: quota exceeded', file=sys.stderr)\n"
        "sys.exit(3)\n",
        encoding="utf-8",
    )
    ended: list[tuple[str, str]] = []
    counts: list[int] = []

    class Watching(ProgressDisplay):
        @hookimpl
        def on_task_end(self, task: Any, outcome: Any) -> None:
            super().on_task_end(task, outcome)
            ended.append((task.task_id, outcome.status))
            counts.append(self._counts.failed)  # what the display shows as failed

    monkeypatch.setattr("command_handlers.default_plugins.progress.ProgressDisplay", Watching)
    report = tmp_path / "report.json"

    code, _, err = run_cli(
        canvas_file,
        "--agent-command",
        f"{sys.executable} {program}",
        "--retries",
        "0",
        "--auto",
        "--report",
        report,
    )

    assert code == 1, err
    assert sorted(status for _, status in ended) == ["failed", "failed"]
    assert counts[-1] == len(NOTE_IDS)
    assert {task["status"] for task in _report(report)["tasks"]} == {"failed"}
    journal = canvas_file.parent / ".notes.canvas.journal.sqlite"
    with sqlite3.connect(journal) as conn:
        statuses = {row[0] for row in conn.execute("SELECT status FROM outcomes")}
    assert statuses == {"failed"}
    assert "cancelled: quota exceeded" in err


def test_list_plugins_names_each_plugin_and_where_it_comes_from(
    run_cli: Run, vendor_plugin: Path
) -> None:
    code, out, _ = run_cli("--list-plugins", "-p", "vendor_agents", "--disable-plugin", "journal")

    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "built-in" in lines["engine"]
    assert "command_handlers.default_plugins.engine_backend" in lines["engine"]
    assert "(disabled)" in lines["journal"]
    assert "-p" in lines["vendor_agents"].split()
    assert set(lines) >= {
        "engine",
        "color-router",
        "llm-agents",
        "command-agent",
        "journal",
        "progress",
        "model-router",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--disable-plugin", "no-such-plugin"], "cannot disable unknown plugin 'no-such-plugin'"),
        (["-p", "no_such_module_x"], "cannot load plugin module 'no_such_module_x'"),
    ],
)
def test_bad_plugin_names_exit_2_with_one_line(
    run_cli: Run, canvas_file: Path, argv: list[str], message: str
) -> None:
    original = canvas_file.read_bytes()

    code, _, err = run_cli(canvas_file, *argv, "--auto")

    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "known plugins: engine, color-router" in err or "ModuleNotFoundError" in err
    assert canvas_file.read_bytes() == original
    assert not list(canvas_file.parent.glob(".*journal*"))


def test_disabling_through_the_environment(
    run_cli: Run, canvas_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMAND_HANDLERS_DISABLE_PLUGINS", "journal")

    code, _, err = run_cli(canvas_file, "--auto")

    assert code == 0, err
    assert not list(canvas_file.parent.glob(".*journal*"))


def test_a_failing_prepare_task_fails_its_note_and_skips_the_notes_built_on_it(
    tmp_path: Path, make_canvas: Callable[[Path, Any], bytes]
) -> None:
    def note(node_id: str, x: int) -> dict[str, Any]:
        return {"id": node_id, "type": "text", "text": f"Note {node_id}.", "x": x, "y": 0}

    path = tmp_path / "chain.canvas"
    nodes = [
        {**note(n, 400 * i), "width": 250, "height": 60, "color": "6"} for i, n in enumerate("abc")
    ]
    edges = [
        {"id": "e1", "fromNode": "a", "toNode": "b"},
        {"id": "e2", "fromNode": "b", "toNode": "c"},
    ]
    make_canvas(path, {"nodes": nodes, "edges": edges})
    called: list[str] = []

    class Guard:
        @hookimpl
        def prepare_task(self, task: Any) -> None:
            if task.node_data["note_id"] == "a":
                raise RuntimeError("no prerequisites today")

        @hookimpl
        def register_executors(self, register: Callable[..., None]) -> None:
            async def answer(task: Any) -> dict[str, str]:
                called.append(task.node_data["note_id"])
                return {"text": "fine"}

            register("clarification-path", answer, override=True)

    result = IntelligentParallelCommandHandler(plugins=[Guard()]).execute(
        path, {"auto": True, "follow_edges": True}
    )

    rows = {row["node_id"]: row for row in result["results"]}
    assert called == []
    assert (rows["a"]["status"], rows["a"]["error"]) == ("failed", "no prerequisites today")
    assert rows["a"]["error_type"] == "RuntimeError"
    assert [rows[n]["status"] for n in "bc"] == ["skipped", "skipped"]
    assert result["success"] is False


def test_without_any_backend_the_command_exits_2(run_cli: Run, canvas_file: Path) -> None:
    original = canvas_file.read_bytes()

    code, _, err = run_cli(canvas_file, "--disable-plugin", "engine", "--auto")

    assert code == 2
    assert "no plugin runs the tasks" in err
    assert canvas_file.read_bytes() == original
