"""The options of the ``/intelligent-parallel`` command, checked.

:class:`Options` turns the handler's ``options`` dict (the origin's keys and
one per command-line option, ``docs/cli.md``) into checked values, and raises
:class:`CommandInputError` for anything wrong.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The limits alone, not the engine: the command line's --help reads these defaults.
from command_handlers._engine.limits import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    MIN_CONCURRENCY,
    check_limit,
)
from command_handlers.canvas import DEFAULT_MAX_BYTES
from command_handlers.pricing import Price, parse_price
from command_handlers.settings import (
    DEFAULT_COLOR_MAP,
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_SCHEDULER_TIMEOUT,
    DEFAULT_TIMEOUT,
    DISPLAY_MODES,
    Settings,
)

if TYPE_CHECKING:
    import asyncio

    from command_handlers.plugins import RunPolicy

__all__ = [
    "MAX_CONCURRENCY",
    "MIN_CONCURRENCY",
    "CommandInputError",
    "Options",
    "check_limit",
    "parse_color_map",
]

_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class CommandInputError(ValueError):
    """Bad input: an unreadable canvas, an unknown agent or node, a bad option."""


def parse_color_map(text: str) -> dict[str, str]:
    """Parse ``6=clarification-path,1=oral-explanation`` into a dict.

    Args:
        text: Comma-separated ``colour=agent`` pairs.

    Returns:
        Colour -> agent name.

    Raises:
        CommandInputError: A pair is malformed or a colour is not "1"-"6"/"#rrggbb".
    """
    mapping: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        color, sep, agent = pair.partition("=")
        color, agent = color.strip().lower(), agent.strip()
        if not sep or not agent:
            raise CommandInputError(f"color map entry {pair!r} is not COLOR=AGENT")
        mapping[_check_color(color)] = agent
    if not mapping:
        raise CommandInputError("the color map is empty")
    return mapping


def _check_color(color: str) -> str:
    if color in {"1", "2", "3", "4", "5", "6"} or _HEX_COLOR.match(color):
        return color.lower()
    raise CommandInputError(f"color {color!r} is not 1-6 or #rrggbb")


def _as_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, Iterable):
        return [str(item).strip() for item in value if str(item).strip()]
    raise CommandInputError(f"{what} must be a list or a comma-separated string")


@dataclass
class Options:
    """The handler's options, checked; the command's defaults are these fields' defaults."""

    max: int = DEFAULT_CONCURRENCY
    auto: bool = False
    dry_run: bool = False
    nodes: list[str] = field(default_factory=list)
    verbose: bool = False
    colors: list[str] = field(default_factory=list)
    agent: str | None = None
    agents: list[str] = field(default_factory=list)
    route: str = "map"
    follow_edges: bool = False
    inline: bool = False
    docs_dir: str | None = None
    vault: str | None = None
    backup: bool = True
    output: str | None = None
    model: str | None = None
    agents_dirs: list[str] = field(default_factory=list)
    agent_command: list[str] | None = None
    timeout: float = DEFAULT_TIMEOUT
    color_map: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLOR_MAP))
    load_plugins: bool = True
    disable_plugins: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    progress: str = "quiet"
    retries: int = 2
    retry_base: float = 1.0
    retry_cap: float = 30.0
    rate: str | None = None
    agent_rates: dict[str, str] = field(default_factory=dict)
    fail_fast: bool = False
    journal: str | None = None
    use_journal: bool = True
    resume: bool = False
    force: bool = False
    replace: bool = False
    grace: float = 30.0
    scheduler: str | None = None
    scheduler_timeout: float = DEFAULT_SCHEDULER_TIMEOUT
    max_canvas_mb: float = DEFAULT_MAX_BYTES / (1024 * 1024)
    max_answer_mb: float = DEFAULT_MAX_ANSWER_BYTES / (1024 * 1024)
    price: Price | None = None
    budget_tokens: int | None = None
    budget_usd: float | None = None
    tpm: float | None = None

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> Options:
        """Check the options dict; raise CommandInputError for anything wrong."""
        opts = dict(options or {})
        parsed = cls()
        known = {f.name for f in fields(cls)} | {"agents_dir", "no_plugins", "no_journal"}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise CommandInputError(f"unknown option(s): {', '.join(unknown)}")
        parsed.max = _check_max(opts.get("max", parsed.max))
        for flag in (
            "auto",
            "dry_run",
            "verbose",
            "follow_edges",
            "inline",
            "backup",
            "fail_fast",
            "resume",
            "force",
            "replace",
        ):
            if flag in opts:
                setattr(parsed, flag, bool(opts[flag]))
        _parse_selection(parsed, opts)
        _parse_running(parsed, opts)
        _parse_spending(parsed, opts)
        return parsed

    def policy(self, stop: asyncio.Event | None) -> RunPolicy:
        """The engine's policy: timeouts, retries, rates, fail-fast, stop."""
        # pylint: disable-next=import-outside-toplevel  # the engine, when a run starts
        from command_handlers.plugins import RetryPolicy, RunPolicy

        return RunPolicy(
            task_timeout=self.timeout,
            retry=RetryPolicy(
                retries=self.retries, base_delay=self.retry_base, max_delay=self.retry_cap
            )
            if self.retries
            else None,
            rate=self.rate,
            agent_rates=dict(self.agent_rates),
            fail_fast=self.fail_fast,
            stop=stop,
            stop_grace=self.grace,
        )

    @property
    def max_canvas_bytes(self) -> int:
        """The largest canvas read, in bytes."""
        return int(self.max_canvas_mb * 1024 * 1024)

    @property
    def max_answer_bytes(self) -> int:
        """The most an agent program may print, in bytes."""
        return int(self.max_answer_mb * 1024 * 1024)

    def settings(self, canvas_path: Path | None = None) -> Settings:
        """The settings plugins read.

        Args:
            canvas_path: The canvas the command reads.

        Returns:
            The settings.
        """
        return Settings(
            model=self.model,
            agents_dirs=tuple(Path(d) for d in self.agents_dirs),
            agent_command=tuple(self.agent_command) if self.agent_command else None,
            command_timeout=self.timeout,
            max_answer_bytes=self.max_answer_bytes,
            color_map=self.color_map,
            max_concurrency=self.max,
            route=self.route,
            canvas_path=canvas_path,
            output_path=Path(self.output) if self.output else canvas_path,
            journal_path=Path(self.journal) if self.journal else None,
            display=self.progress,
            verbose=self.verbose,
            scheduler=self.scheduler,
            scheduler_timeout=self.scheduler_timeout,
        )


def _parse_selection(parsed: Options, opts: Mapping[str, Any]) -> None:
    """Which notes, which agents: check and set the options that choose them."""
    parsed.load_plugins = not opts.get("no_plugins", False) and opts.get("load_plugins", True)
    parsed.disable_plugins = _as_list(opts.get("disable_plugins"), "disable_plugins")
    parsed.plugins = _as_list(opts.get("plugins"), "plugins")
    parsed.progress = str(opts.get("progress", parsed.progress))
    if parsed.progress not in DISPLAY_MODES:
        raise CommandInputError(
            f"progress must be one of {', '.join(DISPLAY_MODES)}, got {parsed.progress!r}"
        )
    parsed.nodes = _as_list(opts.get("nodes"), "nodes")
    parsed.colors = [_check_color(c.lower()) for c in _as_list(opts.get("colors"), "colors")]
    parsed.agents = _as_list(opts.get("agents"), "agents")
    parsed.agent = opts.get("agent") or None
    if parsed.agent and parsed.agents:
        raise CommandInputError("give either an agent or a list of agents, not both")
    parsed.route = str(opts.get("route", "map"))
    if parsed.route not in {"map", "model"}:
        raise CommandInputError(f"route must be 'map' or 'model', got {parsed.route!r}")
    for key in ("docs_dir", "vault", "output", "model"):
        if opts.get(key) is not None:
            setattr(parsed, key, str(opts[key]))
    dirs = opts.get("agents_dirs", opts.get("agents_dir"))
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    parsed.agents_dirs = [os.fspath(d) for d in dirs or []]
    parsed.agent_command = _agent_command(opts.get("agent_command"))
    color_map = opts.get("color_map")
    if isinstance(color_map, str):
        parsed.color_map = parse_color_map(color_map)
    elif isinstance(color_map, Mapping):
        parsed.color_map = {_check_color(str(k).lower()): str(v) for k, v in color_map.items()}


def _agent_command(command: Any) -> list[str] | None:
    """Split the agent command like a shell would; refuse one that cannot be split or is blank."""
    if command is None or (isinstance(command, (str, list, tuple)) and not command):
        return None
    if not isinstance(command, str):
        if not isinstance(command, Iterable):
            raise CommandInputError(
                f"agent_command must be a string or a list of arguments, got {command!r}"
            )
        argv = [str(arg) for arg in command]
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise CommandInputError(
                f"agent command {command!r} cannot be split into arguments:"
                f" {str(exc).lower()} (--agent-command)"
            ) from None
    if not argv:
        raise CommandInputError(f"agent command {command!r} names no program (--agent-command)")
    return argv


def _parse_running(parsed: Options, opts: Mapping[str, Any]) -> None:
    """How the agents run: check and set timeouts, retries, rates and the journal."""
    timeout = opts.get("timeout", parsed.timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise CommandInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
    parsed.timeout = float(timeout)
    parsed.retries = _whole(opts.get("retries", parsed.retries), "retries")
    parsed.retry_base = _seconds(opts.get("retry_base", parsed.retry_base), "retry_base")
    parsed.retry_cap = _seconds(opts.get("retry_cap", parsed.retry_cap), "retry_cap")
    parsed.grace = _seconds(opts.get("grace", parsed.grace), "grace")
    parsed.max_canvas_mb = _megabytes(
        opts.get("max_canvas_mb", parsed.max_canvas_mb), "max_canvas_mb"
    )
    parsed.max_answer_mb = _megabytes(
        opts.get("max_answer_mb", parsed.max_answer_mb), "max_answer_mb"
    )
    if parsed.max_answer_bytes < 1:
        raise CommandInputError(
            f"max_answer_mb must be more than 0, got {opts.get('max_answer_mb')!r}"
        )
    if opts.get("rate") is not None:
        parsed.rate = _check_rate(str(opts["rate"]))
    agent_rates = opts.get("agent_rates") or {}
    if isinstance(agent_rates, str):
        agent_rates = dict(pair.partition("=")[::2] for pair in _as_list(agent_rates, "x"))
    parsed.agent_rates = {
        str(name).strip(): _check_rate(str(rate)) for name, rate in dict(agent_rates).items()
    }
    scheduler = opts.get("scheduler")
    parsed.scheduler = (str(scheduler).strip() or None) if scheduler is not None else None
    timeout = opts.get("scheduler_timeout", parsed.scheduler_timeout)
    parsed.scheduler_timeout = _seconds(timeout, "scheduler_timeout")
    if not parsed.scheduler_timeout > 0:
        raise CommandInputError(f"scheduler_timeout must be a number > 0, got {timeout!r}")
    if opts.get("journal") is not None:
        parsed.journal = os.fspath(opts["journal"])
    parsed.use_journal = not opts.get("no_journal", False) and opts.get("use_journal", True)
    if not parsed.use_journal and "journal" not in parsed.disable_plugins:
        parsed.disable_plugins.append("journal")


def _parse_spending(parsed: Options, opts: Mapping[str, Any]) -> None:
    """What the run may spend: ``price``, ``budget_tokens``, ``budget_usd``, ``tpm``."""
    if opts.get("price") is not None:
        price = opts["price"]
        try:
            parsed.price = price if isinstance(price, Price) else parse_price(str(price))
        except ValueError as exc:
            raise CommandInputError(str(exc)) from None
    if opts.get("budget_tokens") is not None:
        parsed.budget_tokens = _whole(opts["budget_tokens"], "budget_tokens")
    if opts.get("budget_usd") is not None:
        parsed.budget_usd = _seconds(opts["budget_usd"], "budget_usd")
    if opts.get("tpm") is not None:
        try:
            parsed.tpm = _seconds(opts["tpm"], "tpm")
        except CommandInputError:
            parsed.tpm = 0.0  # refused just below, in the same words
        if not parsed.tpm > 0:
            raise CommandInputError(f"tpm must be a number > 0, got {opts['tpm']!r}")


def _whole(value: Any, what: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CommandInputError(f"{what} must be a whole number >= 0, got {value!r}")
    return int(value)


def _seconds(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not number >= 0:
        raise CommandInputError(f"{what} must be a number >= 0, got {value!r}")
    return number


def _megabytes(value: Any, what: str) -> float:
    number = _seconds(value, what)
    if number == math.inf:  # a limit of no bytes is refused below; of infinitely many, here
        raise CommandInputError(f"{what} must be a finite number of megabytes, got {value!r}")
    return number


def _check_rate(text: str) -> str:
    from command_handlers.plugins import RateLimit  # pylint: disable=import-outside-toplevel

    try:
        RateLimit.parse(text)
    except ValueError as exc:
        raise CommandInputError(str(exc)) from None
    return text


def _check_max(value: Any) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandInputError(
            f"max concurrency must be a whole number from {MIN_CONCURRENCY} to"
            f" {MAX_CONCURRENCY}, got {value!r}"
        )
    try:
        return check_limit("max concurrency", value)
    except ValueError as exc:
        raise CommandInputError(str(exc)) from None
