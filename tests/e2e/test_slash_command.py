"""End to end: installing ``/intelligent-parallel`` for Claude Code, and running without a canvas.

``intelligent-parallel --install-slash-command [DIR]`` writes
``DIR/.claude/commands/intelligent-parallel.md`` (``--user``: in the home folder,
``--force``: over a different file); with no canvas file given, the command answers
the one ``.canvas`` file of the current folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from command_handlers.slash_command import COMMAND_FILE_NAME, command_file_text

CliResult = tuple[int, str, str]
Run = Callable[..., CliResult]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "study.canvas"


def command_path(folder: Path) -> Path:
    return folder / ".claude" / "commands" / COMMAND_FILE_NAME


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def blue_cards(canvas: Path) -> list[dict[str, Any]]:
    data = json.loads(canvas.read_text(encoding="utf-8"))
    return [node for node in data["nodes"] if node.get("color") == "5"]


# ----------------------------------------------------------------------------- installing


def test_install_into_a_folder(run_cli: Run, tmp_path: Path) -> None:
    code, out, err = run_cli("--install-slash-command", tmp_path)
    assert code == 0, err
    path = command_path(tmp_path)
    assert path.read_text(encoding="utf-8") == command_file_text()
    assert str(path) in out + err


def test_install_into_the_current_folder(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE, tmp_path / "study.canvas")
    before = (tmp_path / "study.canvas").read_bytes()
    code, out, err = run_cli("--install-slash-command")
    assert code == 0, err
    assert command_path(tmp_path).read_text(encoding="utf-8") == command_file_text()
    assert str(Path(".claude", "commands", COMMAND_FILE_NAME)) in out + err
    # Installing answers nothing: the canvas beside it is left alone.
    assert (tmp_path / "study.canvas").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".claude", "study.canvas"]


def test_install_for_the_user(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.chdir(project)
    code, out, err = run_cli("--install-slash-command", "--user")
    assert code == 0, err
    assert command_path(home).read_text(encoding="utf-8") == command_file_text()
    assert str(command_path(home)) in out + err
    assert not (project / ".claude").exists()


def test_a_folder_and_user_together_are_bad_input(run_cli: Run, tmp_path: Path) -> None:
    code, _, err = run_cli("--install-slash-command", tmp_path, "--user")
    assert code == 2
    assert "Traceback" not in err
    assert "unrecognized arguments" not in err
    assert not (tmp_path / ".claude").exists()


def test_a_different_command_file_is_kept_without_force(run_cli: Run, tmp_path: Path) -> None:
    path = command_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("my own command\n", encoding="utf-8")
    code, _, err = run_cli("--install-slash-command", tmp_path)
    assert code == 2
    line = one_line(err)
    assert str(path) in line
    assert "--force" in line
    assert path.read_text(encoding="utf-8") == "my own command\n"


def test_force_replaces_a_different_command_file(run_cli: Run, tmp_path: Path) -> None:
    path = command_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("my own command\n", encoding="utf-8")
    code, out, err = run_cli("--install-slash-command", tmp_path, "--force")
    assert code == 0, err
    assert path.read_text(encoding="utf-8") == command_file_text()
    assert str(path) in out + err


def test_installing_twice_changes_nothing(run_cli: Run, tmp_path: Path) -> None:
    assert run_cli("--install-slash-command", tmp_path)[0] == 0
    path = command_path(tmp_path)
    before = path.stat()
    code, out, err = run_cli("--install-slash-command", tmp_path)
    assert code == 0, err
    assert str(path) in out + err
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert path.stat().st_ino == before.st_ino


# ----------------------------------------------------------------------------- no canvas given


def test_the_one_canvas_of_the_current_folder_is_answered(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canvas = tmp_path / "study.canvas"
    shutil.copy(EXAMPLE, canvas)
    monkeypatch.chdir(tmp_path)
    assert blue_cards(canvas) == []
    code, out, err = run_cli("--auto", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["stats"]["processed_nodes"] == report["stats"]["total_nodes"] > 0
    assert report["stats"]["errors"] == 0
    assert len(blue_cards(canvas)) == report["stats"]["created_blue_nodes"]
    assert (tmp_path / "study.canvas.bak").exists()


def test_without_arguments_the_one_canvas_is_answered(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canvas = tmp_path / "study.canvas"
    shutil.copy(EXAMPLE, canvas)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli()  # no terminal: it does not ask
    assert code == 0, err
    assert blue_cards(canvas)


def test_no_canvas_in_the_current_folder_is_bad_input(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.md").write_text("not a canvas\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("--auto")
    assert code == 2
    assert out == ""
    line = one_line(err)
    assert "no .canvas file" in line
    assert "give the canvas file" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]


def test_two_canvases_in_the_current_folder_are_bad_input(
    run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("physics.canvas", "maths.canvas"):
        shutil.copy(EXAMPLE, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("--auto")
    assert code == 2
    assert out == ""
    line = one_line(err)
    assert "maths.canvas, physics.canvas" in line
    for name in ("physics.canvas", "maths.canvas"):
        assert (tmp_path / name).read_bytes() == EXAMPLE.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maths.canvas", "physics.canvas"]
