"""Hostile conditions, through the real console script: refused before any call, or made harmless.

Every refusal is one line on stderr, exit 2, no agent called (the agent
program's call log is never created) and the canvas unchanged.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from read_only import read_only

Run = Callable[..., "subprocess.CompletedProcess[str]"]

NOTE = "note-recursion"
#: The first document name of the fixture's recursion note by the default agent.
DOCUMENT = "what-is-recursion-clarification-path.md"


def refused(run_script: Run, canvas: Path, agent: Any, *args: object) -> str:
    """Run the console script; assert a one-line refusal before any call; return the line."""
    before = canvas.read_bytes()
    done = run_script(canvas, "--auto", *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not agent.log.exists()
    assert canvas.read_bytes() == before
    return lines[0]


def test_a_read_only_documents_folder(
    run_script: Run, canvas_file: Path, agent_program: Any
) -> None:
    docs = canvas_file.parent / "notes answers"
    docs.mkdir()
    with read_only(docs):
        line = refused(
            run_script, canvas_file, agent_program, "--agent-command", agent_program.command
        )
    assert line.startswith(f"error: cannot write in the documents' folder {docs}")
    assert list(docs.iterdir()) == []


def test_a_file_where_the_documents_folder_goes(
    run_script: Run, canvas_file: Path, agent_program: Any
) -> None:
    (canvas_file.parent / "notes answers").write_text("not a folder", encoding="utf-8")
    line = refused(run_script, canvas_file, agent_program, "--agent-command", agent_program.command)
    assert "it is not a folder (--docs-dir)" in line


def test_a_folder_where_a_document_goes(
    run_script: Run, canvas_file: Path, agent_program: Any
) -> None:
    (canvas_file.parent / "notes answers" / DOCUMENT).mkdir(parents=True)
    line = refused(run_script, canvas_file, agent_program, "--agent-command", agent_program.command)
    assert f"{DOCUMENT}: a folder is there; move it away" in line


def test_an_output_name_too_long_for_the_files_beside_it(
    run_script: Run, canvas_file: Path, agent_program: Any
) -> None:
    output = canvas_file.parent / ("a" * 260 + ".canvas")  # its journal's name cannot exist
    line = refused(
        run_script,
        canvas_file,
        agent_program,
        "--agent-command",
        agent_program.command,
        "--output",
        output,
    )
    assert line.startswith("error: cannot write the lock file beside ")
    assert line.endswith(f"{output.name}: File name too long")


def test_an_agent_command_with_an_unterminated_quote(
    run_script: Run, canvas_file: Path, agent_program: Any
) -> None:
    line = refused(run_script, canvas_file, agent_program, "--agent-command", "'unterminated")
    assert "cannot be split into arguments: no closing quotation (--agent-command)" in line


def test_an_agent_program_not_on_path(
    run_script: Run, canvas_file: Path, agent_program: Any
) -> None:
    line = refused(
        run_script, canvas_file, agent_program, "--agent-command", "no-such-agent-program -p"
    )
    assert "'no-such-agent-program' not found: no such program on PATH" in line


def test_a_lone_surrogate_is_refused_naming_its_node(
    run_script: Run, canvas_file: Path, canvas_data: dict[str, Any], agent_program: Any
) -> None:
    for node in canvas_data["nodes"]:
        if node["id"] == NOTE:
            node["text"] = "Recursion \ud800 calls itself."
    # ensure_ascii: the file holds the JSON escape, as an editor that wrote one would.
    canvas_file.write_text(json.dumps(canvas_data), encoding="utf-8")
    line = refused(run_script, canvas_file, agent_program, "--agent-command", agent_program.command)
    assert f"node '{NOTE}' holds a character no file can hold (a lone surrogate, \\ud800" in line


def test_a_null_canvas(run_script: Run, canvas_file: Path, agent_program: Any) -> None:
    canvas_file.write_text("null", encoding="utf-8")
    line = refused(run_script, canvas_file, agent_program, "--agent-command", agent_program.command)
    assert line.endswith("a canvas must be a JSON object, not null")


def test_the_megabyte_options_say_megabytes(run_script: Run, canvas_file: Path) -> None:
    for option in ("--max-answer-mb", "--max-canvas-mb"):
        done = run_script(canvas_file, option, "lots")
        assert done.returncode == 2
        assert f"argument {option}: must be a number of megabytes, got 'lots'" in done.stderr
        assert "seconds" not in done.stderr


def documents(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def test_long_names_fit_and_stay_the_same_from_run_to_run(
    run_script: Run, canvas_file: Path, agent_program: Any, tmp_path: Path
) -> None:
    agent = "explains-" + "very-" * 48 + "slowly"  # 255 characters
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "long.md").write_text(
        f"---\nname: {agent}\ndescription: A long name.\n---\nExplain.\n", encoding="utf-8"
    )
    args = ["--agent-command", agent_program.command, "--agents-dir", agents, "--agent", agent]
    docs = canvas_file.parent / "notes answers"
    first = run_script(canvas_file, "--auto", *args)
    assert first.returncode == 0, first.stderr
    names = documents(docs)
    assert len(names) == 2  # both notes
    assert all(len(name.encode()) <= 255 for name in names)
    again = run_script(canvas_file, "--auto", "--force", *args)  # the same answers again
    assert again.returncode == 0, again.stderr
    assert documents(docs) == names
    files = {
        node["file"]
        for node in json.loads(canvas_file.read_text(encoding="utf-8"))["nodes"]
        if node["type"] == "file" and node["file"].startswith("notes answers/")
    }
    assert files == {f"notes answers/{name}" for name in names}
    assert len(agent_program.calls()) == 4


def test_a_dangling_link_named_like_a_document_is_never_written_through(
    run_script: Run, canvas_file: Path, agent_program: Any, tmp_path: Path
) -> None:
    docs = canvas_file.parent / "notes answers"
    docs.mkdir()
    outside = tmp_path / "outside" / "planted.md"
    outside.parent.mkdir()
    (docs / DOCUMENT).symlink_to(outside)
    done = run_script(canvas_file, "--auto", "--agent-command", agent_program.command)
    assert done.returncode == 0, done.stderr
    assert not outside.exists()
    assert list(outside.parent.iterdir()) == []
    assert (docs / DOCUMENT).is_symlink()
    written = docs / DOCUMENT.replace(".md", "-2.md")
    assert "ANSWER for clarification-path" in written.read_text(encoding="utf-8")


#: An agent that colours its stderr, sets the terminal's title, clears the screen, and
#: fails for one note; for the other it answers with escape sequences in the answer.
HOSTILE_AGENT = r"""
import sys
data = sys.stdin.read()
if "closure" in data:
    sys.stderr.write("\x1b[31mred\x1b[0m \x1b]0;pwned title\x07\x1b[2J\x1b[Hgone \x9b2Jwrong\n")
    sys.exit(3)
print("\x1b[1mBold\x1b[0m answer\x1b]8;;http://evil.example\x1b\\ link\x1b]8;;\x1b\\ \x07done")
"""


def test_escape_sequences_from_an_agent_reach_neither_the_terminal_nor_the_canvas(
    run_script: Run, canvas_file: Path, tmp_path: Path
) -> None:
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE_AGENT, encoding="utf-8")
    command = shlex.join([sys.executable, str(script)])
    done = run_script(canvas_file, "--auto", "--retries", "0", "--agent-command", command)
    assert done.returncode == 1, done.stderr
    printed = done.stdout + done.stderr
    assert "exited with code 3" in printed
    assert "red" in printed
    assert "gone" in printed
    for control in ("\x1b", "\x07", "\x9b", "\x9c", "\x9d"):
        assert control not in printed
    canvas = canvas_file.read_text(encoding="utf-8")
    assert "Bold answer link done" in canvas
    data = json.loads(canvas)
    texts = [node.get("text", "") for node in data["nodes"]]
    assert not any(ord(char) < 0x20 and char not in "\n\t" for text in texts for char in text)
    (document,) = (canvas_file.parent / "notes answers").iterdir()
    assert "\x1b" not in document.read_text(encoding="utf-8")
    assert "Bold answer link done" in document.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "must be a number of megabytes, got 'lots'"),
        ("0", "must be a number of megabytes more than 0, got 0"),
        ("inf", "must be a number of megabytes more than 0, got inf"),
        ("nan", "must be a number of megabytes more than 0, got nan"),
    ],
)
def test_a_bad_megabyte_limit_in_process(
    run_cli: Callable[..., tuple[int, str, str]], canvas_file: Path, value: str, message: str
) -> None:
    code, _, err = run_cli(canvas_file, "--max-canvas-mb", value)
    assert code == 2
    assert f"argument --max-canvas-mb: {message}" in err


def test_a_report_that_could_not_be_written_is_refused_before_any_call(
    run_script: Run, canvas_file: Path, agent_program: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    with read_only(folder):
        line = refused(
            run_script,
            canvas_file,
            agent_program,
            "--agent-command",
            agent_program.command,
            "--report",
            folder / "report.json",
        )
    assert line == f"error: cannot write the report {folder / 'report.json'}: permission denied"


def test_a_read_only_report_in_process(
    run_cli: Callable[..., tuple[int, str, str]], canvas_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    with read_only(folder):
        code, _, err = run_cli(canvas_file, "--report", folder / "report.json")
    assert code == 2
    assert "permission denied" in err
