"""Defaults for the command line from a YAML (or JSON) file.

A config file holds the options a learner always wants, spelled as the long
options are (``color-map``, ``agents-dir``, ``model``, ``max``, ...), so they
need not be typed every time::

    # .intelligent-parallel.yaml
    model: gpt-4o-mini
    max: 8
    color-map:
      "6": clarification-path
      "1": oral-explanation
      "3": memory-anchor
    agents-dir: [.claude/agents]

The file is ``--config FILE``, else the one named by the environment variable
``INTELLIGENT_PARALLEL_CONFIG``, else ``.intelligent-parallel.yaml`` in the
canvas's folder when there is one. Options given on the command line win.

A file found beside the canvas may have come with the canvas (a shared or
synced folder, a downloaded vault), so it may not set what runs programs, sends
the notes elsewhere or writes outside the vault: ``agent-command``,
``scheduler``, ``docs-dir``, ``output``, ``journal``, ``report`` and ``auto``
(which calls the agents without asking). A file named with ``--config`` or
``INTELLIGENT_PARALLEL_CONFIG`` was chosen by the user and may set them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CONFIG_ENV",
    "CONFIG_NAME",
    "EXPLICIT_ONLY",
    "ConfigError",
    "FoundConfig",
    "find_config",
    "read_config",
]

CONFIG_NAME = ".intelligent-parallel.yaml"
CONFIG_ENV = "INTELLIGENT_PARALLEL_CONFIG"
# Keys spelled as options that differ from the parser's names for them.
_ALIASES = {
    "agents_dir": "agents_dirs",
    "agent_rate": "agent_rates",
    "color": "colors",
    "max_concurrency": "max",
}


class ConfigError(ValueError):
    """The config file cannot be read or holds something that is not an option."""


#: What a config file may not set: the command's own arguments, actions that are
#: not a run, and modules to import as plugins (a config file found beside a
#: canvas may come with a shared folder).
_NOT_CONFIGURABLE = frozenset(
    {"canvas_file", "config", "list_plugins", "install_slash_command", "user", "plugins"}
)

#: What only a config file the user named may set, and why: a file found beside
#: the canvas came with the canvas's folder, perhaps from someone else.
EXPLICIT_ONLY = {
    "agent_command": "it runs a program",
    "scheduler": "it sends the notes to another machine and runs what comes back",
    "docs_dir": "it writes files where it says",
    "output": "it writes files where it says",
    "journal": "it writes files where it says",
    "report": "it writes files where it says",
    "auto": "it calls the agents without asking",
}


@dataclass(frozen=True)
class FoundConfig:
    """The config file that applies, and how it was found.

    Attributes:
        path: The file.
        automatic: Found beside the canvas, named by nobody (neither
            ``--config`` nor ``INTELLIGENT_PARALLEL_CONFIG``).
    """

    path: Path
    automatic: bool = False


def find_config(explicit: str | None, canvas_file: str) -> FoundConfig | None:
    """Say which config file applies, if any.

    Args:
        explicit: The ``--config`` value.
        canvas_file: The canvas given on the command line.

    Returns:
        The file to read, or ``None``.
    """
    if explicit:
        return FoundConfig(Path(explicit))
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return FoundConfig(Path(from_env))
    beside = Path(canvas_file).parent / CONFIG_NAME
    return FoundConfig(beside, automatic=True) if beside.is_file() else None


def read_config(path: Path, known: Mapping[str, Any], *, automatic: bool = False) -> dict[str, Any]:
    """Read a config file into parser defaults.

    Args:
        path: The file.
        known: The parser's option names (``dest``) and their defaults.
        automatic: The file was found beside the canvas, not named by the
            user: it may not set the options of :data:`EXPLICIT_ONLY`.

    Returns:
        Option name -> value, ready for ``parser.set_defaults``.

    Raises:
        ConfigError: The file is unreadable, not YAML/JSON, not a mapping,
            names an unknown option or one a config file may not set.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of options")
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).strip().lstrip("-").replace("-", "_")
        name = _ALIASES.get(name, name)
        if name not in known or name in _NOT_CONFIGURABLE:
            raise ConfigError(f"config file {path}: unknown option {key!r}")
        if automatic and name in EXPLICIT_ONLY:
            raise ConfigError(
                f"config file {path}, found beside the canvas, may not set"
                f" {name.replace('_', '-')} ({EXPLICIT_ONLY[name]}); to use this file on"
                f" purpose, name it: --config {path}"
            )
        defaults[name] = _value(name, value, path)
    return defaults


def _value(name: str, value: Any, path: Path) -> Any:
    if name == "color_map" and isinstance(value, Mapping):
        return ",".join(f"{color}={agent}" for color, agent in value.items())
    if name == "agent_rates" and isinstance(value, Mapping):
        return [f"{agent}={rate}" for agent, rate in value.items()]
    if name in {"agents_dirs", "colors", "agent_rates"}:
        items = value if isinstance(value, list) else [value]
        return [str(item) for item in items]
    if name in {"nodes", "agents"} and isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, (Mapping, list)):
        raise ConfigError(f"config file {path}: {name.replace('_', '-')} takes a single value")
    return value


def _one_line(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or "cannot parse it"
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"
