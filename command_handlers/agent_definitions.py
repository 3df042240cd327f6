"""Agent definitions: Claude Code subagent files that drive the explanations.

An agent file is Markdown with YAML front matter, the format Claude Code uses for
``.claude/agents/NAME.md``::

    ---
    name: clarification-path
    description: In-depth clarification of a misunderstanding, step by step.
    model: inherit
    tools: Read, Grep
    ---
    You are a patient tutor...

``name`` is required; ``description`` and ``model`` are optional strings; any
other key (``tools``, ``color``...) is kept in :attr:`AgentDefinition.extra` and
otherwise ignored. The Markdown body is the system prompt and must not be empty.
A ``model`` of ``inherit`` (or no ``model``) means "use the run's model".

The package ships six learning agents (see :func:`bundled_agents_dir`);
:func:`load_agents` reads them first and then any user folders, so a user's
``.claude/agents`` can override a bundled agent by reusing its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from command_handlers.hookspecs import TaskView

__all__ = [
    "INHERIT",
    "AgentDefinition",
    "AgentDefinitionError",
    "AgentTask",
    "bundled_agents_dir",
    "load_agent_file",
    "load_agents",
    "parse_agent_text",
    "task_prompt",
]

#: What an executor reads of a task.
AgentTask = TaskView

#: The ``model`` value meaning "use the run's model"; normalised to ``None``.
INHERIT = "inherit"

_FRONT_MATTER_DELIMITER = "---"
_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*", re.IGNORECASE)
_KNOWN_KEYS = frozenset({"name", "description", "model"})


class AgentDefinitionError(ValueError):
    """An agent file, or a folder of agent files, cannot be used.

    The message names the file (when known) and the problem, for example
    ``.claude/agents/tutor.md: front matter has no 'name'``.

    Attributes:
        problem: What is wrong, without the file name.
        path: The file or folder concerned, if known.
    """

    def __init__(self, problem: str, path: Path | None = None) -> None:
        """Build the error.

        Args:
            problem: What is wrong, without the file name.
            path: The file or folder concerned, if known.
        """
        self.problem = problem
        self.path = path
        super().__init__(f"{path}: {problem}" if path is not None else problem)


def _normalise_model(model: str | None) -> str | None:
    """Map ``inherit``, an empty string and ``None`` to ``None``; keep other names as written."""
    if model is None:
        return None
    stripped = model.strip()
    if not stripped or stripped.lower() == INHERIT:
        return None
    return stripped


@dataclass(frozen=True)
class AgentDefinition:
    """One agent: a name, a description for routing, a system prompt and a model.

    ``model`` is normalised: ``"inherit"`` (any case) and ``""`` become ``None``,
    which means "use the run's model". The value as written in the file stays
    available as :attr:`declared_model`.

    Attributes:
        name: The agent's name, as written in the front matter.
        description: When to use the agent (shown to a routing model); may be empty.
        system_prompt: The Markdown body of the file, stripped.
        model: The model the agent asks for, or ``None`` for the run's model.
        path: The file the definition was read from, if any.
        extra: Every other front-matter key (``tools``, ``color``...), read-only.
        declared_model: The ``model`` value as written (``"inherit"`` stays
            ``"inherit"``); ``None`` when the file has no ``model``. Not part of
            equality: ``inherit`` and a missing ``model`` mean the same thing.
    """

    name: str
    description: str
    system_prompt: str
    model: str | None = None
    path: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    declared_model: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        """Normalise ``model``, remember the declared value and freeze ``extra``."""
        model = _normalise_model(self.model)
        declared = self.declared_model
        if declared is None or _normalise_model(declared) != model:
            # Not given, or stale (e.g. after ``dataclasses.replace(d, model=...)``).
            declared = self.model
        object.__setattr__(self, "declared_model", declared)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def inherits_model(self) -> bool:
        """Whether the agent uses the run's model (``model`` missing or ``inherit``).

        Returns:
            ``True`` when :attr:`model` is ``None``.
        """
        return self.model is None

    @property
    def fingerprint(self) -> str:
        """A digest of what shapes the agent's answers: name, model and system prompt.

        Two definitions with the same fingerprint produce the same requests, so a
        changed fingerprint tells a resumed run that earlier answers are stale.
        ``inherit`` and a missing ``model`` give the same fingerprint.

        Returns:
            The SHA-256 hex digest of the name, normalised model and system prompt.
        """
        payload = json.dumps([self.name, self.model, self.system_prompt], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _split_front_matter(text: str, path: Path | None) -> tuple[str, str]:
    """Split an agent file into its front matter and its body."""
    lines = text.split("\n")
    if lines[0].rstrip() != _FRONT_MATTER_DELIMITER:
        raise AgentDefinitionError("no front matter: the file must start with a '---' line", path)
    for index in range(1, len(lines)):
        if lines[index].rstrip() == _FRONT_MATTER_DELIMITER:
            return "\n".join(lines[1:index]), "\n".join(lines[index + 1 :])
    raise AgentDefinitionError("front matter is not closed by a '---' line", path)


#: libyaml's safe loader when PyYAML was built with it: the same documents, a
#: tenth of the time (every run reads every agent file, some of them more than once).
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_front_matter(source: str, path: Path | None) -> dict[str, Any]:
    """Parse the front matter with a YAML safe loader into a mapping with string keys."""
    try:
        data = yaml.load(source, Loader=_SafeLoader)  # a safe loader: no Python objects
    except yaml.YAMLError as error:
        raise AgentDefinitionError(f"front matter is not valid YAML: {error}", path) from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AgentDefinitionError(
            f"front matter must be a mapping of keys to values, got {type(data).__name__}",
            path,
        )
    return {str(key): value for key, value in data.items()}


def _optional_string(data: Mapping[str, Any], key: str, path: Path | None) -> str | None:
    """Return ``data[key]`` stripped, ``None`` if absent or null; reject non-strings."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AgentDefinitionError(
            f"front-matter field {key!r} must be a string, got {type(value).__name__}", path
        )
    return value.strip()


def parse_agent_text(text: str, *, path: Path | None = None) -> AgentDefinition:
    """Parse the text of an agent file.

    A leading byte-order mark is ignored and CRLF or CR line endings are accepted.

    Args:
        text: The whole file: ``---``, YAML front matter, ``---``, Markdown body.
        path: The file the text came from, used in error messages and stored in
            the result.

    Returns:
        The definition; ``description`` is ``""`` when the file has none.

    Raises:
        AgentDefinitionError: The front matter is missing, unclosed, not valid
            YAML or not a mapping; ``name`` is missing, empty or not a valid
            name (letters, digits, ``.``, ``_``, ``-``, starting with a letter or
            digit); ``name``, ``description`` or ``model`` is not a string; or
            the body (the system prompt) is empty.
    """
    text = text.removeprefix("\ufeff")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    front_matter, body = _split_front_matter(text, path)
    data = _load_front_matter(front_matter, path)

    name = _optional_string(data, "name", path)
    if not name:
        raise AgentDefinitionError("front matter has no 'name' (or it is empty)", path)
    if not _NAME_PATTERN.fullmatch(name):
        raise AgentDefinitionError(
            f"invalid agent name {name!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit",
            path,
        )
    description = _optional_string(data, "description", path) or ""
    model = _optional_string(data, "model", path)

    system_prompt = body.strip()
    if not system_prompt:
        raise AgentDefinitionError(
            "the system prompt (the Markdown body after the front matter) is empty", path
        )
    return AgentDefinition(
        name=name,
        description=description,
        system_prompt=system_prompt,
        model=model,
        path=path,
        extra={key: value for key, value in data.items() if key not in _KNOWN_KEYS},
    )


def load_agent_file(path: str | os.PathLike[str]) -> AgentDefinition:
    """Read and parse one agent file (UTF-8).

    Args:
        path: The ``.md`` file (a :class:`~pathlib.Path` or a string).

    Returns:
        The definition, with :attr:`AgentDefinition.path` set to ``Path(path)``.

    Raises:
        AgentDefinitionError: The file cannot be read or decoded, or its content
            is not a valid agent definition (see :func:`parse_agent_text`).
    """
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as error:
        raise AgentDefinitionError(f"cannot read agent file: {error}", file) from error
    except UnicodeDecodeError as error:
        raise AgentDefinitionError(f"agent file is not UTF-8 text: {error}", file) from error
    return parse_agent_text(text, path=file)


def bundled_agents_dir() -> Path:
    """Return the folder of the agents shipped with the package.

    Returns:
        The ``command_handlers/agents`` folder of the installed package.
    """
    return Path(__file__).resolve().parent / "agents"


def _load_folder(folder: Path) -> dict[str, AgentDefinition]:
    """Load every ``*.md`` file of one folder (not recursive), in file-name order."""
    if not folder.exists():
        raise AgentDefinitionError("agents folder does not exist", folder)
    if not folder.is_dir():
        raise AgentDefinitionError("agents folder is not a directory", folder)
    files = sorted(
        (
            entry
            for entry in folder.glob("*.md")
            if entry.is_file() and not entry.name.startswith(".")
        ),
        key=lambda entry: entry.name,
    )
    found: dict[str, AgentDefinition] = {}
    for file in files:
        definition = load_agent_file(file)
        previous = found.get(definition.name)
        if previous is not None:
            raise AgentDefinitionError(
                f"agent {definition.name!r} is also defined in {previous.path}", file
            )
        found[definition.name] = definition
    return found


def load_agents(
    dirs: Iterable[str | os.PathLike[str]] = (), *, include_bundled: bool = True
) -> dict[str, AgentDefinition]:
    """Load the bundled agents and the agents of the given folders.

    Folders are read in order, bundled agents first; an agent of a later folder
    replaces an earlier agent of the same name. In each folder, the ``*.md``
    files (not in sub-folders, hidden files skipped) are read in file-name order.

    Args:
        dirs: Folders of agent files (paths or strings), such as a project's
            ``.claude/agents``.
        include_bundled: Whether to start from the agents shipped with the package.

    Returns:
        The agents by name, ordered by name.

    Raises:
        AgentDefinitionError: A folder does not exist or is not a directory, a
            file is not a valid agent definition, or two files of the same
            folder define the same name.
    """
    folders = [bundled_agents_dir()] if include_bundled else []
    folders.extend(Path(folder) for folder in dirs)
    agents: dict[str, AgentDefinition] = {}
    for folder in folders:
        agents.update(_load_folder(folder))
    return dict(sorted(agents.items()))


def task_prompt(task: AgentTask) -> str:
    """Return the prompt the handler laid out for a task: ``node_data["prompt"]``.

    Args:
        task: The task.

    Returns:
        The prompt.

    Raises:
        ValueError: ``node_data`` has no ``"prompt"`` string.
    """
    node_data = task.node_data
    prompt = node_data.get("prompt") if isinstance(node_data, Mapping) else None
    if not isinstance(prompt, str):
        raise ValueError(
            f"task {task.task_id!r} for agent {task.agent_name!r} has no 'prompt' string"
            " in its node_data"
        )
    return prompt
