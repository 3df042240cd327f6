"""The ``/intelligent-parallel`` slash command for Claude Code, and finding a canvas.

Claude Code reads custom slash commands from Markdown files in
``.claude/commands/`` (a project's) or ``~/.claude/commands/`` (the user's): YAML
front matter (``description``, ``argument-hint``, ``allowed-tools``) and a body
that becomes the prompt, with ``$ARGUMENTS`` replaced by what the user typed
after the command. :func:`install_slash_command` writes such a file, so that

    /intelligent-parallel "notes.canvas" --auto

inside Claude Code runs this package's command line and summarises its report.
The canvas may be left out there: :func:`find_canvas` picks the one ``.canvas``
file of the current folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from command_handlers.fileio import save_atomic

__all__ = [
    "COMMAND_FILE_NAME",
    "CanvasNotFoundError",
    "InstallResult",
    "SlashCommandExistsError",
    "command_file_text",
    "find_canvas",
    "install_slash_command",
]

#: The command file's name: Claude Code names the command after it.
COMMAND_FILE_NAME = "intelligent-parallel.md"

#: Where command files live, below a project folder or the home folder.
COMMANDS_FOLDER = Path(".claude", "commands")

#: How many canvas names a "several canvases" message lists.
_LISTED = 3

_COMMAND_FILE_TEXT = """\
---
description: Answer the learner's notes of an Obsidian canvas with parallel agent calls
argument-hint: "[canvas_file] [-m N] [-a] [-d] [-n id,id] [-v]"
allowed-tools: Bash(intelligent-parallel:*)
---
Answer the learner's notes of an Obsidian canvas with the `intelligent-parallel` command
line tool. Pass the user's arguments exactly as typed, quotes included: `$ARGUMENTS`.
Without a canvas file, the tool uses the one `.canvas` file of the current folder.

1. The tool cannot ask for confirmation here. Unless the arguments include `--auto` or
   `-a`, first run `intelligent-parallel $ARGUMENTS --dry-run`, show the user the plan it
   prints (calls per agent, time estimate) and ask whether to go on; stop if they say no.
   If the arguments include `--dry-run` or `-d`, show the plan and stop there.
2. Run `intelligent-parallel $ARGUMENTS --auto --json`. It prints a JSON report on stdout.
3. Summarise the report in a few lines: notes answered (`stats.processed_nodes` of
   `stats.total_nodes`), documents written (`stats.generated_docs`), blue cards added
   (`stats.created_blue_nodes`), errors (`stats.errors`), the time (`elapsed_seconds`)
   and the canvas written (`written_to`). List every entry of `tasks` whose `status` is
   not `success` with its `node_id`, `agent` and `error`. Do not paste the answers: they
   are on the canvas and in the documents.
4. Exit code 2 means bad input, told in one line on stderr: show it and stop. Exit code 1
   means some tasks failed; the others were written. If no report is printed, pass on
   the tool's message instead (for example, that there was nothing to answer).

Answers come from the offline `echo` model unless the arguments give `--model` or
`--agent-command`; `--agent-command "claude -p"` answers with Claude Code itself.
"""


class SlashCommandExistsError(ValueError):
    """A different command file is already where the command would be installed."""


class CanvasNotFoundError(ValueError):
    """A folder holds no ``.canvas`` file, or more than one, so none can be picked."""


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install_slash_command` did.

    Attributes:
        path: The command file.
        written: Whether the file was written (False: it already held this content).
    """

    path: Path
    written: bool

    @property
    def message(self) -> str:
        """One line for the user: where the command is, and whether it was written."""
        if self.written:
            return f"Installed /intelligent-parallel for Claude Code: {self.path}"
        return f"/intelligent-parallel is already installed, unchanged: {self.path}"


def command_file_text() -> str:
    """Return the content of the command file.

    Returns:
        Markdown with YAML front matter (``description``, ``argument-hint``,
        ``allowed-tools`` limited to running ``intelligent-parallel``) and a body
        that tells Claude to run the tool with ``$ARGUMENTS``, to show a dry run's
        plan and ask before calling agents unless ``--auto`` was given, and to
        summarise the JSON report.
    """
    return _COMMAND_FILE_TEXT


def install_slash_command(
    folder: Path | None = None,
    *,
    user: bool = False,
    force: bool = False,
    home: Path | None = None,
) -> InstallResult:
    """Write the command file, ``<folder>/.claude/commands/intelligent-parallel.md``.

    The missing folders below ``folder`` (or the home folder) are created. The
    file is replaced atomically (temporary file, fsync, rename); a symbolic link
    is followed and an existing file's permission bits are kept.

    Args:
        folder: The project folder (default: the current folder).
        user: Install for the user instead: in ``<home>/.claude/commands/``,
            where Claude Code finds it in every project.
        force: Replace a command file of different content.
        home: The home folder for ``user`` (default: :meth:`pathlib.Path.home`).

    Returns:
        The file's path, and whether it was written: a file already holding
        this content is left alone (``written`` False).

    Raises:
        SlashCommandExistsError: The file exists with other content and
            ``force`` is false; nothing was changed.
        ValueError: Both ``folder`` and ``user`` were given.
        FileNotFoundError: ``folder`` does not exist.
        OSError: The file could not be read or written.
    """
    if user:
        if folder is not None:
            raise ValueError("give a project folder or user=True, not both")
        base = Path.home() if home is None else home
    else:
        base = Path() if folder is None else folder
        if not base.is_dir():
            raise FileNotFoundError(f"no folder {base}")
    path = base / COMMANDS_FOLDER / COMMAND_FILE_NAME
    content = command_file_text().encode("utf-8")
    if path.exists():
        if path.read_bytes() == content:
            return InstallResult(path, written=False)
        if not force:
            raise SlashCommandExistsError(
                f"{path} already exists with other content; --force replaces it"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(path, content, backup=False)
    return InstallResult(path, written=True)


def find_canvas(folder: Path) -> Path:
    """Return the one ``.canvas`` file of a folder, for a command line given no canvas.

    Hidden files (names starting with ``.``) are not counted.

    Args:
        folder: The folder to look in, usually the current one (``Path()``).

    Returns:
        ``folder / name`` of its only ``*.canvas`` file.

    Raises:
        CanvasNotFoundError: The folder holds no canvas file, or several; the
            one-line message says so (listing at most three names) and asks for
            the canvas file.
    """
    canvases = sorted(
        (path for path in folder.glob("*.canvas") if path.is_file() and path.name[0] != "."),
        key=lambda path: path.name,
    )
    where = "the current folder" if folder == Path() else str(folder)
    if not canvases:
        raise CanvasNotFoundError(f"no .canvas file in {where}; give the canvas file")
    if len(canvases) > 1:
        names = ", ".join(path.name for path in canvases[:_LISTED])
        more = len(canvases) - _LISTED
        listed = f"{names} and {more} more" if more > 0 else names
        raise CanvasNotFoundError(
            f"{len(canvases)} .canvas files in {where} ({listed}); name the one to answer"
        )
    return canvases[0]
