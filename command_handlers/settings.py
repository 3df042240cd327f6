"""What a run is configured with, handed to every plugin that asks for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_COLOR_MAP", "Settings"]

#: Which agent answers a note of each canvas colour when nothing else decides.
DEFAULT_COLOR_MAP: Mapping[str, str] = MappingProxyType(
    {"6": "clarification-path", "1": "oral-explanation", "3": "clarification-path"}
)


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
        command_timeout: Seconds an ``agent_command`` call may take.
        color_map: Canvas colour -> agent name, for the default router.
        options: Anything else, for third-party plugins.
    """

    model: str | None = None
    agents_dirs: tuple[Path, ...] = ()
    agent_command: tuple[str, ...] | None = None
    command_timeout: float = 600.0
    color_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COLOR_MAP))
    options: Mapping[str, Any] = field(default_factory=dict)
