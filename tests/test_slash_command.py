"""The ``/intelligent-parallel`` command file for Claude Code, and finding a canvas."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from command_handlers.slash_command import (
    COMMAND_FILE_NAME,
    CanvasNotFoundError,
    InstallResult,
    SlashCommandExistsError,
    command_file_text,
    find_canvas,
    install_slash_command,
)


def split_command_file(text: str) -> tuple[dict[str, Any], str]:
    """The front matter (parsed) and the body of a command file."""
    lines = text.splitlines(keepends=True)
    assert lines[0] == "---\n"
    end = lines.index("---\n", 1)
    front = yaml.safe_load("".join(lines[1:end]))
    assert isinstance(front, dict)
    return front, "".join(lines[end + 1 :])


def command_path(folder: Path) -> Path:
    return folder / ".claude" / "commands" / COMMAND_FILE_NAME


# ----------------------------------------------------------------------------- the text


def test_the_front_matter_is_yaml_with_the_keys_claude_code_reads() -> None:
    front, _ = split_command_file(command_file_text())
    assert set(front) == {"description", "argument-hint", "allowed-tools"}
    assert all(isinstance(value, str) for value in front.values())
    assert "\n" not in front["description"].strip()
    assert front["argument-hint"] == "[canvas_file] [-m N] [-a] [-d] [-n id,id] [-v]"
    assert front["allowed-tools"] == "Bash(intelligent-parallel:*)"


def test_the_body_runs_the_tool_with_the_arguments() -> None:
    _, body = split_command_file(command_file_text())
    assert "intelligent-parallel $ARGUMENTS" in body
    assert "--dry-run" in body
    assert "--auto" in body
    assert "--json" in body
    for key in ("total_nodes", "processed_nodes", "generated_docs", "errors", "elapsed_seconds"):
        assert key in body
    assert '--agent-command "claude -p"' in body
    assert body.endswith("\n")


# ----------------------------------------------------------------------------- install


def test_install_writes_the_file_below_the_folder(tmp_path: Path) -> None:
    result = install_slash_command(tmp_path)
    assert result == InstallResult(command_path(tmp_path), written=True)
    assert command_path(tmp_path).read_text(encoding="utf-8") == command_file_text()
    assert str(command_path(tmp_path)) in result.message
    assert [p.name for p in command_path(tmp_path).parent.iterdir()] == [COMMAND_FILE_NAME]


def test_install_defaults_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = install_slash_command()
    assert result.written
    assert result.path.resolve() == command_path(tmp_path).resolve()
    assert command_path(tmp_path).read_text(encoding="utf-8") == command_file_text()


def test_install_for_the_user_goes_to_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    home = tmp_path / "home"
    home.mkdir()
    result = install_slash_command(user=True, home=home)
    assert result == InstallResult(command_path(home), written=True)
    assert command_path(home).read_text(encoding="utf-8") == command_file_text()
    assert not (project / ".claude").exists()


def test_install_for_the_user_defaults_to_path_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    assert install_slash_command(user=True).path == command_path(tmp_path)
    assert command_path(tmp_path).is_file()


def test_a_folder_and_user_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        install_slash_command(tmp_path, user=True, home=tmp_path)
    assert not (tmp_path / ".claude").exists()


def test_a_missing_folder_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no folder"):
        install_slash_command(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_a_different_file_is_kept_without_force(tmp_path: Path) -> None:
    path = command_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("my own command\n", encoding="utf-8")
    with pytest.raises(SlashCommandExistsError) as caught:
        install_slash_command(tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert "--force" in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)
    assert path.read_text(encoding="utf-8") == "my own command\n"
    assert [p.name for p in path.parent.iterdir()] == [COMMAND_FILE_NAME]  # no temp file


def test_force_replaces_a_different_file(tmp_path: Path) -> None:
    path = command_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("my own command\n", encoding="utf-8")
    path.chmod(0o640)
    result = install_slash_command(tmp_path, force=True)
    assert result == InstallResult(path, written=True)
    assert path.read_text(encoding="utf-8") == command_file_text()
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == [COMMAND_FILE_NAME]


@pytest.mark.parametrize("force", [False, True])
def test_a_second_install_changes_nothing(tmp_path: Path, force: bool) -> None:
    path = install_slash_command(tmp_path).path
    past = 1_000_000_000
    os.utime(path, (past, past))
    inode = path.stat().st_ino
    result = install_slash_command(tmp_path, force=force)
    assert result == InstallResult(path, written=False)
    assert "unchanged" in result.message
    assert str(path) in result.message
    assert path.stat().st_mtime == past
    assert path.stat().st_ino == inode
    assert path.read_text(encoding="utf-8") == command_file_text()


def test_a_linked_command_file_is_followed(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "intelligent-parallel.md"
    dotfiles.parent.mkdir()
    dotfiles.write_text("old\n", encoding="utf-8")
    path = command_path(tmp_path / "home")
    path.parent.mkdir(parents=True)
    path.symlink_to(dotfiles)
    install_slash_command(user=True, home=tmp_path / "home", force=True)
    assert path.is_symlink()
    assert dotfiles.read_text(encoding="utf-8") == command_file_text()


# ----------------------------------------------------------------------------- find_canvas


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_text("{}", encoding="utf-8")


def test_the_one_canvas_is_found(tmp_path: Path) -> None:
    touch(tmp_path, "notes.canvas", "notes.canvas.bak", "notes.md", ".hidden.canvas")
    (tmp_path / "folder.canvas").mkdir()
    assert find_canvas(tmp_path) == tmp_path / "notes.canvas"


def test_the_current_folder_gives_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path, "notes.canvas")
    monkeypatch.chdir(tmp_path)
    assert find_canvas(Path()) == Path("notes.canvas")


def test_no_canvas_is_one_line(tmp_path: Path) -> None:
    touch(tmp_path, "notes.md")
    with pytest.raises(CanvasNotFoundError) as caught:
        find_canvas(tmp_path)
    assert str(caught.value) == f"no .canvas file in {tmp_path}; give the canvas file"
    assert isinstance(caught.value, ValueError)


def test_no_canvas_in_the_current_folder_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CanvasNotFoundError, match=r"^no \.canvas file in the current folder;"):
        find_canvas(Path())


def test_two_canvases_are_named(tmp_path: Path) -> None:
    touch(tmp_path, "b.canvas", "a.canvas")
    with pytest.raises(CanvasNotFoundError) as caught:
        find_canvas(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "(a.canvas, b.canvas)" in message
    assert "more" not in message
    assert "name the one" in message


def test_five_canvases_list_three_and_a_count(tmp_path: Path) -> None:
    touch(tmp_path, "e.canvas", "c.canvas", "a.canvas", "d.canvas", "b.canvas")
    with pytest.raises(CanvasNotFoundError) as caught:
        find_canvas(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"5 .canvas files in {tmp_path} ")
    assert "(a.canvas, b.canvas, c.canvas and 2 more)" in message
    assert "d.canvas" not in message
