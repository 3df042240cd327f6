"""What a run is configured with, handed to every plugin that asks for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULT_COLOR_MAP",
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_SCHEDULER_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DISPLAY_MODES",
    "ECHO_MODEL",
    "Settings",
]

#: Which agent answers a note of each canvas colour when nothing else decides.
DEFAULT_COLOR_MAP: Mapping[str, str] = MappingProxyType(
    {"6": "clarification-path", "1": "oral-explanation", "3": "clarification-path"}
)
#: Seconds one agent call may take unless told otherwise.
DEFAULT_TIMEOUT = 600.0
#: The most an agent program may print, in bytes (``--max-answer-mb``): 4 MB, some
#: thousand pages of text, far above any answer, yet small enough for a card's document.
DEFAULT_MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: Seconds to wait for a Dask scheduler (``--scheduler-timeout``).
DEFAULT_SCHEDULER_TIMEOUT = 10.0
#: The offline model of ``llm-echo``, used when the run names no model.
ECHO_MODEL = "echo"
#: How the ``progress`` plugin shows a run: a bar on a terminal (else lines), a
#: bar, one line per task, or nothing.
DISPLAY_MODES = ("auto", "bar", "plain", "quiet")


@dataclass(frozen=True)
class Settings:
    """Settings of one run, read by plugins through the ``settings`` hook argument.

    Attributes:
        model: The ``llm`` model id prompt agents use; ``None`` means the
            offline ``echo`` model.
        agents_dirs: Folders of agent definition files, read after the bundled
            ones (later definitions of the same name win).
        agent_command: A program (argv) that answers instead of ``llm``: it
            gets the system prompt and the prompt on stdin; ``None`` to use ``llm``.
        command_timeout: Seconds one agent call may take.
        max_answer_bytes: The most an agent program may print on stdout; a
            call printing more fails.
        color_map: Canvas colour -> agent name, for the default router.
        max_concurrency: The command's limit of calls at once (``None``: the
            engine's default).
        route: ``"map"`` (the colour map chooses each note's agent) or
            ``"model"`` (the ``model-router`` plugin asks the model).
        canvas_path: The canvas the command reads (``None`` outside the command).
        output_path: The canvas it writes: ``canvas_path`` unless ``--output``.
        journal_path: The journal file asked for; ``None`` for the journal's
            own choice (beside the written canvas).
        display: How the ``progress`` plugin shows the run: one of
            :data:`DISPLAY_MODES`.
        verbose: Show more detail.
        scheduler: Where the ``dask`` plugin runs the agents' calls: a Dask
            scheduler's address (``tcp://host:port``), ``"local"`` for a
            cluster of this machine's cores started for the command, or
            ``None`` to run them in this process (the engine).
        scheduler_timeout: Seconds to wait for the scheduler before giving up.
        options: Anything else, for third-party plugins.
    """

    model: str | None = None
    agents_dirs: tuple[Path, ...] = ()
    agent_command: tuple[str, ...] | None = None
    command_timeout: float = DEFAULT_TIMEOUT
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    color_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COLOR_MAP))
    max_concurrency: int | None = None
    route: str = "map"
    canvas_path: Path | None = None
    output_path: Path | None = None
    journal_path: Path | None = None
    display: str = "quiet"
    verbose: bool = False
    scheduler: str | None = None
    scheduler_timeout: float = DEFAULT_SCHEDULER_TIMEOUT
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def run_model(self) -> str:
        """The id of the run's model: :attr:`model`, or :data:`ECHO_MODEL`."""
        return self.model or ECHO_MODEL
