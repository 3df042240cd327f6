"""Security: no shell for agent programs, bounded canvas reading, and a plugin allowlist.

The command line runs as a subprocess of its own (the installed console script)
wherever the environment or the working folder matters, so that this process is
never affected; canvas checks run in-process.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from command_handlers.cli import main

AGENT = "clarification-path"


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("intelligent-parallel")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "command_handlers.cli"]  # pragma: no cover


def write_canvas(path: Path, texts: dict[str, str], **extra: Any) -> bytes:
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
    raw = json.dumps({"nodes": nodes, "edges": [], **extra}, indent="\t").encode("utf-8")
    path.write_bytes(raw)
    return raw


def environment(tmp_path: Path, **changes: str | None) -> dict[str, str]:
    """This process's environment, isolated from the user's llm set-up and plugins."""
    env = dict(os.environ)
    env["LLM_USER_PATH"] = str(tmp_path / "llm-user")
    env["COMMAND_HANDLERS_LOAD_PLUGINS"] = ""
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_script(
    args: list[str], *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*console_script(), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs load no installed plugin and no user llm configuration."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))
    monkeypatch.setenv("COMMAND_HANDLERS_LOAD_PLUGINS", "")


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- no shell

#: Records its arguments and everything it read on stdin, one JSON file per call.
RECORDING_AGENT = r"""
import json
import os
import sys
from pathlib import Path

record = {"argv": sys.argv[2:], "stdin": sys.stdin.buffer.read().decode("utf-8")}
Path(sys.argv[1], f"{os.getpid()}.json").write_text(json.dumps(record), encoding="utf-8")
print("A harmless answer.")
"""

HOSTILE_NOTES = {
    "dollar": "I think $(touch pwned) runs a command.",
    "backticks": "And `touch pwned2` does too.",
    "chained": "What about ; rm -rf x && rm -rf x | cat > pwned3",
}


def test_the_command_agent_never_uses_a_shell(tmp_path: Path) -> None:
    work = tmp_path / "work"  # the agent program's working folder: where a shell would act
    (work / "x").mkdir(parents=True)
    (work / "x" / "keep.txt").write_text("still here", encoding="utf-8")
    records = tmp_path / "records"
    records.mkdir()
    script = tmp_path / "agent.py"
    script.write_text(RECORDING_AGENT, encoding="utf-8")
    canvas = work / "notes.canvas"
    write_canvas(canvas, HOSTILE_NOTES)
    # The command line itself holds shell syntax too: with no shell, mere arguments.
    hostile_args = "$(touch pwned4) ; touch pwned5 `touch pwned6` && rm -rf x"
    command = shlex.join([sys.executable, str(script), str(records)]) + " " + hostile_args

    done = run_script(
        [str(canvas), "--agent-command", command, "--retries", "0"],
        cwd=work,
        env=environment(tmp_path),
    )

    assert done.returncode == 0, done.stderr
    assert (work / "x" / "keep.txt").read_text(encoding="utf-8") == "still here"
    assert not list(tmp_path.rglob("pwned*"))
    calls = [json.loads(p.read_text(encoding="utf-8")) for p in records.glob("*.json")]
    assert len(calls) == len(HOSTILE_NOTES)
    for call in calls:
        assert call["argv"] == shlex.split(hostile_args)
    for text in HOSTILE_NOTES.values():  # verbatim, on stdin
        (stdin,) = [call["stdin"] for call in calls if text in call["stdin"]]
        assert f"## Learner's understanding\n{text}\n" in stdin


# ----------------------------------------------------------------------------- canvas limits


def test_a_canvas_over_the_size_limit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = tmp_path / "big.canvas"
    raw = write_canvas(canvas, {"n1": "A long note. " * 150})
    assert 2000 < len(raw) < 4000

    code, out, err = run_main(capsys, canvas, "--max-canvas-mb", "0.001", "--auto")

    assert code == 2
    assert out == ""
    (line,) = error_lines(err)
    assert line.startswith(f"error: {canvas}: the file has {len(raw):,} bytes")
    assert "larger than the limit of 1,048 bytes" in line
    assert canvas.read_bytes() == raw
    assert [p.name for p in tmp_path.iterdir() if p.name != "llm-user"] == ["big.canvas"]
    # Under the default limit of 50 MB the same file is read.
    assert run_main(capsys, canvas, "--dry-run")[0] == 0


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "where",
    ["canvas field", "node field", "canvas field, deeper than the parser goes"],
)
def test_json_nested_deeper_than_a_canvas_needs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    canvas = tmp_path / "deep.canvas"
    if where == "canvas field":
        raw = write_canvas(canvas, {"n1": "A note."}, **{"x-deep": nested(200)})
    elif where == "node field":
        data = json.loads(write_canvas(canvas, {"n1": "A note."}))
        data["nodes"][0]["x-deep"] = nested(200)
        raw = json.dumps(data).encode("utf-8")
    else:
        raw = b'{"nodes": [], "edges": [], "x-deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    canvas.write_bytes(raw)

    code, out, err = run_main(capsys, canvas, "--auto")

    assert code == 2
    assert out == ""
    (line,) = error_lines(err)
    assert line.startswith(f"error: {canvas}: JSON is nested too deeply")
    assert canvas.read_bytes() == raw


def test_unknown_fields_nested_as_deep_as_is_reasonable_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = tmp_path / "fine.canvas"
    write_canvas(canvas, {"n1": "A note."}, **{"x-plugin-data": nested(20)})

    assert run_main(capsys, canvas, "--dry-run")[0] == 0


# ----------------------------------------------------------------------------- plugin allowlist

PLUGIN_MODULE = """
import os
from pathlib import Path

from command_handlers import hookimpl

MARKERS = Path(os.environ["TEST_PLUGIN_MARKERS"])
(MARKERS / "imported").touch()


async def answer(task):
    (MARKERS / "executed").touch()
    return {"text": "The plugin's answer to " + task.task_id}


@hookimpl
def register_executors(register):
    register("plugin-agent", answer, description="A test plugin's agent.")
"""


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Path:
    """A folder holding a distribution ``plugin-x`` with a ``command_handlers`` entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "plugin_x.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    dist_info = site / "plugin_x-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: plugin-x\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(
        "[command_handlers]\nplugin_x = plugin_x\n", encoding="utf-8"
    )
    return site


@pytest.mark.parametrize(
    ("allowlist", "flags"),
    [("", []), ("plugin_x", ["--no-plugins"]), ("another", [])],
    ids=["empty allowlist", "--no-plugins", "another plugin allowed"],
)
def test_a_plugin_not_allowed_is_not_even_imported(
    tmp_path: Path, installed_plugin: Path, allowlist: str, flags: list[str]
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    canvas = tmp_path / "notes.canvas"
    raw = write_canvas(canvas, {"n1": "A note."})
    env = environment(
        tmp_path,
        PYTHONPATH=str(installed_plugin),
        TEST_PLUGIN_MARKERS=str(markers),
        COMMAND_HANDLERS_LOAD_PLUGINS=allowlist,
    )

    done = run_script([str(canvas), "--agent", "plugin-agent", *flags], cwd=tmp_path, env=env)

    assert done.returncode == 2, done.stderr
    (line,) = error_lines(done.stderr)
    assert "unknown agent 'plugin-agent'" in line
    assert list(markers.iterdir()) == []
    assert canvas.read_bytes() == raw


def test_a_plugin_named_in_the_allowlist_is_loaded(tmp_path: Path, installed_plugin: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    canvas = tmp_path / "notes.canvas"
    write_canvas(canvas, {"n1": "A note."})
    env = environment(
        tmp_path,
        PYTHONPATH=str(installed_plugin),
        TEST_PLUGIN_MARKERS=str(markers),
        COMMAND_HANDLERS_LOAD_PLUGINS=" other , plugin_x ",
    )

    done = run_script([str(canvas), "--agent", "plugin-agent"], cwd=tmp_path, env=env)

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in markers.iterdir()) == ["executed", "imported"]
    data = json.loads(canvas.read_text(encoding="utf-8"))
    assert [e["label"] for e in data["edges"] if e.get("label")] == ["plugin-agent"]
