"""A config file gives the command line its defaults; options typed on it win."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

CliResult = tuple[int, str, str]
Run = Callable[..., CliResult]


def answer_labels(canvas_file: Path) -> set[str]:
    data = json.loads(canvas_file.read_text(encoding="utf-8"))
    notes = {"note-recursion", "note-closure"}
    return {e.get("label") for e in data["edges"] if e["fromNode"] in notes} - {None}


def test_a_config_beside_the_canvas_sets_the_colour_map(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    (canvas_file.parent / ".intelligent-parallel.yaml").write_text(
        'color-map:\n  "6": memory-anchor\nmax: 3\n', encoding="utf-8"
    )
    code, _, err = run_cli(canvas_file, "--auto", "--agent-command", agent_program.command)
    assert code == 0, err
    assert "memory-anchor" in answer_labels(canvas_file)
    assert "clarification-path" not in answer_labels(canvas_file)
    assert {agent for agent, _ in agent_program.calls()} == {"memory-anchor"}


def test_options_on_the_command_line_win_over_the_config(
    run_cli: Run, canvas_file: Path, agent_program: Any, tmp_path: Path
) -> None:
    config = tmp_path / "elsewhere.yaml"
    config.write_text('color-map: {"6": memory-anchor}\n', encoding="utf-8")
    code, _, err = run_cli(
        canvas_file,
        "--config",
        config,
        "--color-map",
        "6=comparison-table",
        "--agent-command",
        agent_program.command,
    )
    assert code == 0, err
    assert {agent for agent, _ in agent_program.calls()} == {"comparison-table"}


def test_the_environment_names_a_config(
    run_cli: Run,
    canvas_file: Path,
    agent_program: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "env.yaml"
    config.write_text(
        "agents: [oral-explanation, example-teaching]\n"
        f"agent-command: {json.dumps(agent_program.command)}\n"
        "agent-rate: {oral-explanation: 100/s}\nagents-dir: []\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("INTELLIGENT_PARALLEL_CONFIG", str(config))
    code, _, err = run_cli(canvas_file)
    assert code == 0, err
    assert sorted({agent for agent, _ in agent_program.calls()}) == [
        "example-teaching",
        "oral-explanation",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour-map: {}\n", "unknown option 'colour-map'"),
        ("model: [a, b]\n", "model takes a single value"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("max: [unclosed\n", "not valid YAML"),
        ("plugins: [evil_module]\n", "unknown option 'plugins'"),
        ("list-plugins: true\n", "unknown option 'list-plugins'"),
    ],
)
def test_a_bad_config_is_bad_input(
    run_cli: Run, canvas_file: Path, tmp_path: Path, text: str, message: str
) -> None:
    original = canvas_file.read_bytes()
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    code, _, err = run_cli(canvas_file, "--config", config)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert canvas_file.read_bytes() == original


def test_a_missing_config_is_bad_input(run_cli: Run, canvas_file: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(canvas_file, "--config", tmp_path / "nope.yaml")
    assert code == 2
    assert "cannot read the config file" in err


def test_an_empty_config_changes_nothing(
    run_cli: Run, canvas_file: Path, agent_program: Any, tmp_path: Path
) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text("# nothing yet\n", encoding="utf-8")
    code, _, err = run_cli(
        canvas_file, "--config", config, "--agent-command", agent_program.command
    )
    assert code == 0, err
    assert {agent for agent, _ in agent_program.calls()} == {"clarification-path"}


#: The options a config file found beside the canvas may not set, with a value for each.
EXPLICIT_ONLY = {
    "agent-command": "{agent}",
    "scheduler": "tcp://127.0.0.1:9",
    "docs-dir": "elsewhere",
    "output": "{tmp}/out.canvas",
    "journal": "{tmp}/journal.sqlite",
    "report": "{tmp}/report.json",
    "auto": "true",
}


def _config_line(option: str, agent_program: Any, tmp_path: Path) -> str:
    value = EXPLICIT_ONLY[option].format(agent=agent_program.command, tmp=tmp_path)
    return f"{option}: {json.dumps(value) if value != 'true' else value}\n"


@pytest.mark.parametrize("option", sorted(EXPLICIT_ONLY))
def test_a_config_found_beside_the_canvas_may_not_run_programs_or_write_elsewhere(
    run_script: Callable[..., Any],
    canvas_file: Path,
    agent_program: Any,
    tmp_path: Path,
    option: str,
) -> None:
    original = canvas_file.read_bytes()
    config = canvas_file.parent / ".intelligent-parallel.yaml"
    config.write_text(_config_line(option, agent_program, tmp_path), encoding="utf-8")
    done = run_script(canvas_file, "--auto", "--agent-command", agent_program.command)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"found beside the canvas, may not set {option} (" in line
    assert line.endswith(f"to use this file on purpose, name it: --config {config}")
    assert not agent_program.log.exists()
    assert canvas_file.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent", "vault"]


@pytest.mark.parametrize("option", sorted(set(EXPLICIT_ONLY) - {"scheduler"}))
def test_the_same_option_is_taken_from_a_config_named_on_purpose(
    run_script: Callable[..., Any],
    canvas_file: Path,
    agent_program: Any,
    tmp_path: Path,
    option: str,
) -> None:
    config = canvas_file.parent / ".intelligent-parallel.yaml"
    config.write_text(_config_line(option, agent_program, tmp_path), encoding="utf-8")
    args = [] if option == "agent-command" else ["--agent-command", agent_program.command]
    done = run_script(canvas_file, "--config", config, *args)
    assert done.returncode == 0, done.stderr
    assert len(agent_program.calls()) == 2
    made = {
        "docs-dir": canvas_file.parent / "elsewhere",
        "output": tmp_path / "out.canvas",
        "journal": tmp_path / "journal.sqlite",
        "report": tmp_path / "report.json",
    }.get(option)
    assert made is None or made.exists()


def test_a_config_beside_the_canvas_setting_the_agent_command_in_process(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    config = canvas_file.parent / ".intelligent-parallel.yaml"
    config.write_text(f"agent-command: {json.dumps(agent_program.command)}\n", encoding="utf-8")
    code, _, err = run_cli(canvas_file, "--auto")
    assert code == 2
    assert "may not set agent-command (it runs a program)" in " ".join(err.split())
    assert agent_program.calls() == []
