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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CONFIG_ENV", "CONFIG_NAME", "ConfigError", "find_config", "read_config"]

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


def find_config(explicit: str | None, canvas_file: str) -> Path | None:
    """Say which config file applies, if any.

    Args:
        explicit: The ``--config`` value.
        canvas_file: The canvas given on the command line.

    Returns:
        The file to read, or ``None``.
    """
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    beside = Path(canvas_file).parent / CONFIG_NAME
    return beside if beside.is_file() else None


def read_config(path: Path, known: Mapping[str, Any]) -> dict[str, Any]:
    """Read a config file into parser defaults.

    Args:
        path: The file.
        known: The parser's option names (``dest``) and their defaults.

    Returns:
        Option name -> value, ready for ``parser.set_defaults``.

    Raises:
        ConfigError: The file is unreadable, not YAML/JSON, not a mapping, or
            names an unknown option.
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
