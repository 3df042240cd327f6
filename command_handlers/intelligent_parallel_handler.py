"""The ``/intelligent-parallel`` command: a learner's canvas in, explanations out.

Every learner's note (a text node of colour "6") goes to an explanation agent at
the same time, through the plugin layer (:func:`command_handlers.plugins.run_tasks`);
each answer is written back beside its note: an edge labelled with the agent,
a blue ("5") card with the first lines of the answer, and an edge to a file node
for a Markdown document holding the whole answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import shlex
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pluggy

from command_handlers import hookimpl
from command_handlers.agent_definitions import load_agents
from command_handlers.canvas import Canvas, CanvasError, Node, color_of, label_of, node_text
from command_handlers.default_plugins import llm_agents
from command_handlers.default_plugins.journal import Journal, JournalError
from command_handlers.default_plugins.model_router import ModelRouter
from command_handlers.plugins import (
    AsyncTask,
    DependencyCycleError,
    DuplicateAgentError,
    RateLimit,
    RetryPolicy,
    RunPolicy,
    collect_executors,
    get_plugin_manager,
    run_tasks,
)
from command_handlers.prompt import Material, Prerequisite, build_prompt, topic_of
from command_handlers.settings import DEFAULT_COLOR_MAP, Settings

__all__ = ["CommandInputError", "IntelligentParallelCommandHandler", "parse_color_map"]

NOTE_COLOR = "6"
ANSWER_COLOR = "5"
CARD_SIZE = (250, 150)
FILE_SIZE = (250, 150)
INLINE_WIDTH = 420
PREVIEW_LINES = 4
#: The origin's figure for one agent call, used for the plan's estimate.
SECONDS_PER_CALL = 10
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
class _Options:
    """The handler's options, checked."""

    max: int = 12
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
    backup: bool = True
    output: str | None = None
    model: str | None = None
    agents_dirs: list[str] = field(default_factory=list)
    agent_command: list[str] | None = None
    timeout: float = 600.0
    color_map: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLOR_MAP))
    load_plugins: bool = True
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
    grace: float = 30.0
    max_canvas_mb: float = 50.0

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> _Options:
        """Check the options dict; raise CommandInputError for anything wrong."""
        opts = dict(options or {})
        parsed = cls()
        known = {f.name for f in fields(cls)} | {"agents_dir", "no_plugins", "no_journal"}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise CommandInputError(f"unknown option(s): {', '.join(unknown)}")
        parsed.max = _check_max(opts.get("max", 12))
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
        ):
            if flag in opts:
                setattr(parsed, flag, bool(opts[flag]))
        parsed.load_plugins = not opts.get("no_plugins", False) and opts.get("load_plugins", True)
        parsed.nodes = _as_list(opts.get("nodes"), "nodes")
        parsed.colors = [_check_color(c.lower()) for c in _as_list(opts.get("colors"), "colors")]
        parsed.agents = _as_list(opts.get("agents"), "agents")
        parsed.agent = opts.get("agent") or None
        if parsed.agent and parsed.agents:
            raise CommandInputError("give either an agent or a list of agents, not both")
        parsed.route = str(opts.get("route", "map"))
        if parsed.route not in {"map", "model"}:
            raise CommandInputError(f"route must be 'map' or 'model', got {parsed.route!r}")
        for key in ("docs_dir", "output", "model"):
            if opts.get(key) is not None:
                setattr(parsed, key, str(opts[key]))
        dirs = opts.get("agents_dirs", opts.get("agents_dir"))
        if isinstance(dirs, (str, os.PathLike)):
            dirs = [dirs]
        parsed.agents_dirs = [os.fspath(d) for d in dirs or []]
        command = opts.get("agent_command")
        if command:
            parsed.agent_command = (
                shlex.split(command) if isinstance(command, str) else list(command)
            )
        timeout = opts.get("timeout", 600.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise CommandInputError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        parsed.timeout = float(timeout)
        parsed.retries = _whole(opts.get("retries", 2), "retries")
        parsed.retry_base = _seconds(opts.get("retry_base", 1.0), "retry_base")
        parsed.retry_cap = _seconds(opts.get("retry_cap", 30.0), "retry_cap")
        parsed.grace = _seconds(opts.get("grace", 30.0), "grace")
        parsed.max_canvas_mb = _seconds(opts.get("max_canvas_mb", 50.0), "max_canvas_mb")
        if opts.get("rate") is not None:
            parsed.rate = _check_rate(str(opts["rate"]))
        agent_rates = opts.get("agent_rates") or {}
        if isinstance(agent_rates, str):
            agent_rates = dict(pair.partition("=")[::2] for pair in _as_list(agent_rates, "x"))
        parsed.agent_rates = {
            str(name).strip(): _check_rate(str(rate)) for name, rate in dict(agent_rates).items()
        }
        if opts.get("journal") is not None:
            parsed.journal = os.fspath(opts["journal"])
        parsed.use_journal = not opts.get("no_journal", False) and opts.get("use_journal", True)
        color_map = opts.get("color_map")
        if isinstance(color_map, str):
            parsed.color_map = parse_color_map(color_map)
        elif isinstance(color_map, Mapping):
            parsed.color_map = {_check_color(str(k).lower()): str(v) for k, v in color_map.items()}
        return parsed

    def policy(self, stop: asyncio.Event | None) -> RunPolicy:
        """The engine's policy: timeouts, retries, rates, fail-fast, stop."""
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

    def settings(self) -> Settings:
        """The settings plugins read."""
        return Settings(
            model=self.model,
            agents_dirs=tuple(Path(d) for d in self.agents_dirs),
            agent_command=tuple(self.agent_command) if self.agent_command else None,
            command_timeout=self.timeout,
            color_map=self.color_map,
        )


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


def _check_rate(text: str) -> str:
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
            f"max concurrency must be a whole number from 1 to 20, got {value!r}"
        )
    if not 1 <= value <= 20:
        raise CommandInputError(f"max concurrency must be between 1 and 20, got {value}")
    return int(value)


@dataclass
class _Note:
    """One selected note and what its agents need."""

    node: Node
    material: list[Material]
    agents: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)  # ids of notes this one builds on

    @property
    def node_id(self) -> str:
        """The note's node id."""
        return str(self.node["id"])

    @property
    def text(self) -> str:
        """The note's text."""
        return node_text(self.node) or ""

    @property
    def topic(self) -> str:
        """What the note is about, in one line."""
        return topic_of(self.text, self.material)


def _task_id(note_id: str, agent: str) -> str:
    return f"{note_id}:{agent}"


class _Answers:
    """A plugin that collects each task's outcome and completes prompts that need answers."""

    def __init__(self, notes: Mapping[str, _Note], journal: Journal | None = None) -> None:
        self.notes = notes
        self.journal = journal
        self.attempts: dict[str, int] = {}
        self.answers: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.durations: dict[str, float] = {}

    @hookimpl(tryfirst=True)
    def on_task_start(self, task: AsyncTask) -> None:
        """Note the start time; give a note that builds on others their answers."""
        self.started[task.task_id] = time.monotonic()
        note = self.notes[task.node_data["note_id"]]
        if note.after:
            prerequisites = [
                Prerequisite(agent, self.notes[earlier].topic, str(answer["text"]))
                for earlier in note.after
                for agent in self.notes[earlier].agents
                if (answer := self.answers.get(_task_id(earlier, agent)))
            ]
            task.node_data["prompt"] = build_prompt(note.text, note.material, prerequisites)

    @hookimpl
    def on_task_retry(self, task: AsyncTask, attempt: int) -> None:
        """Count the attempts, for the report and the journal."""
        self.attempts[task.task_id] = attempt + 1
        if self.journal is not None:
            self.journal.record_attempts(task.task_id, attempt + 1)

    @hookimpl(tryfirst=True)
    def on_task_progress(self, task_id: str, result: Any, error: str | None) -> None:
        """Keep the answer or the error."""
        if task_id in self.started:
            self.durations[task_id] = time.monotonic() - self.started[task_id]
        if error is None:
            self.answers[task_id] = result if isinstance(result, dict) else {"text": str(result)}
        else:
            self.errors[task_id] = error


def _slug(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^\w]+", "-", text.lower(), flags=re.UNICODE).strip("-")
    return slug[:limit].strip("-") or "note"


def _fresh_path(folder: Path, stem: str, suffix: str) -> Path:
    candidate = folder / f"{stem}{suffix}"
    number = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{number}{suffix}"
        number += 1
    return candidate


def _preview(text: str, lines: int = PREVIEW_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][:lines]
    return "\n".join(kept)


class IntelligentParallelCommandHandler:
    """The ``/intelligent-parallel`` command, with the origin's interface.

    Args:
        session_id: An id for this session (a fresh one when ``None``).
        plugins: Extra plugin objects registered for every run, before the
            agents are listed: listeners (such as a progress display), and
            plugins that register executors or choose agents.
        confirm: Asked with the plan before any agent is called, unless the
            ``auto`` option is set; returning ``False`` cancels the run.
    """

    def __init__(
        self,
        session_id: str | None = None,
        *,
        plugins: Sequence[object] = (),
        confirm: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.plugins = list(plugins)
        self.confirm = confirm
        #: Where the answers of the last run went when the canvas could not be written.
        self.side_file: Path | None = None
        self._stop: asyncio.Event | None = None

    def request_stop(self) -> bool:
        """Start no new agent call; let running ones finish (up to the grace), then write.

        Call it from the event loop running :meth:`run` (a signal handler, say).

        Returns:
            Whether a run was under way to be stopped.
        """
        if self._stop is None or self._stop.is_set():
            return False
        self._stop.set()
        return True

    def execute(
        self, canvas_path: str | os.PathLike[str], options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run the command in a fresh event loop (see :meth:`execute_async`).

        Args:
            canvas_path: The canvas file.
            options: The origin's options (``max``, ``auto``, ``dry_run``,
                ``nodes``, ``verbose``) and more (``docs/cli.md``).

        Returns:
            The result dict of :meth:`execute_async`.
        """
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(self.execute_async(canvas_path, options))
        finally:
            loop.close()

    async def execute_async(
        self, canvas_path: str | os.PathLike[str], options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Answer every selected note of a canvas and write the answers back.

        Args:
            canvas_path: The canvas file.
            options: See :meth:`execute`.

        Returns:
            ``{"success", "session_id", "stats": {"total_nodes",
            "processed_nodes", "generated_docs", "created_blue_nodes",
            "errors"}, "results": [...]}`` and more; with nothing to process
            ``{"success": False, "message": "No yellow nodes found"}``; bad
            input gives ``success`` ``False`` and ``message`` saying why.
        """
        try:
            return await self.run(canvas_path, options)
        except CommandInputError as exc:
            return {
                "success": False,
                "session_id": self.session_id,
                "message": str(exc),
                "error": str(exc),
            }

    async def run(
        self, canvas_path: str | os.PathLike[str], options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Like :meth:`execute_async`, but bad input raises.

        Args:
            canvas_path: The canvas file.
            options: See :meth:`execute`.

        Returns:
            The result dict.

        Raises:
            CommandInputError: Bad input; nothing was called or written.
            asyncio.CancelledError: The run was interrupted; the canvas is
                untouched and finished answers are in :attr:`side_file`.
        """
        self.side_file = None
        opts = _Options.parse(options)
        canvas = _load(canvas_path, int(opts.max_canvas_mb * 1024 * 1024))
        settings = opts.settings()
        pm = get_plugin_manager(load_entry_points=opts.load_plugins)
        for plugin in self.plugins:  # before the agents are listed: plugins may add some
            pm.register(plugin)
        if opts.route == "model":
            pm.register(ModelRouter(), name="model-router")
        try:
            registry = collect_executors(pm, settings)
        except (DuplicateAgentError, ValueError) as exc:
            raise CommandInputError(str(exc)) from exc
        if opts.model and not opts.agent_command:
            try:
                llm_agents.check_model(opts.model)
            except ValueError as exc:
                raise CommandInputError(str(exc)) from exc
        agents = [name for name in registry.names if name != ModelRouter.AGENT]
        answer_ids = _answer_nodes(canvas, agents)
        notes = _select(canvas, opts, answer_ids)
        if not notes:
            return {
                "success": False,
                "session_id": self.session_id,
                "message": "No yellow nodes found",
            }
        for note in notes.values():
            note.material = _material(canvas, note.node, answer_ids)
        await self._choose_agents(canvas, notes, opts, pm, settings, agents)
        _check_writable(canvas, opts)
        plan = _plan(notes, opts)
        base = {
            "session_id": self.session_id,
            "plan": plan,
            "echo": not opts.agent_command and llm_agents.uses_echo(settings),
        }
        if opts.dry_run:
            return {**base, "success": True, "dry_run": True, "stats": _stats(), "results": []}
        if not opts.auto and self.confirm is not None and not self.confirm(plan):
            return {
                **base,
                "success": False,
                "message": "Cancelled: no agent was called",
                "stats": _stats(),
                "results": [],
            }
        return await self._answer(canvas, notes, opts, pm, settings, base)

    async def _choose_agents(
        self,
        canvas: Canvas,
        notes: Mapping[str, _Note],
        opts: _Options,
        pm: pluggy.PluginManager,
        settings: Settings,
        agents: list[str],
    ) -> None:
        routed: dict[str, str] = {}
        if opts.route == "model" and not (opts.agent or opts.agents):
            routed = await ModelRouter.route(
                {note_id: build_prompt(n.text, n.material) for note_id, n in notes.items()},
                pm=pm,
                settings=settings,
                max_concurrency=opts.max,
            )
        for note in notes.values():
            if opts.agents:
                note.agents = list(dict.fromkeys(opts.agents))
            elif opts.agent:
                note.agents = [opts.agent]
            else:
                context = {
                    "settings": settings,
                    "material": [m.text for m in note.material],
                    "routed": routed.get(note.node_id),
                }
                chosen = pm.hook.choose_agent(node=note.node, context=context, agents=agents)
                note.agents = [chosen or settings.color_map.get(NOTE_COLOR, "clarification-path")]
            for name in note.agents:
                if name not in agents:
                    raise CommandInputError(
                        f"unknown agent {name!r}; available agents: {', '.join(agents) or 'none'}"
                    )
        if opts.follow_edges:
            _link_prerequisites(canvas, notes)

    async def _answer(
        self,
        canvas: Canvas,
        notes: Mapping[str, _Note],
        opts: _Options,
        pm: pluggy.PluginManager,
        settings: Settings,
        base: dict[str, Any],
    ) -> dict[str, Any]:
        hashes = _InputHashes(settings)
        tasks = [
            AsyncTask(
                _task_id(note.node_id, agent),
                agent,
                {
                    "note_id": note.node_id,
                    "prompt": build_prompt(note.text, note.material),
                    "input_hash": hashes.of(note, agent),
                },
                dependencies=[_task_id(e, a) for e in note.after for a in notes[e].agents] or None,
            )
            for note in notes.values()
            for agent in note.agents
        ]
        journal = _open_journal(canvas, opts)
        collector = _Answers(notes, journal)
        pm.register(collector, name="answers")
        if journal is not None:
            pm.register(journal, name="journal")
            journal.expect(tasks)
        self._stop = asyncio.Event()
        started = time.monotonic()
        try:
            summary = await run_tasks(
                tasks,
                pm=pm,
                dependency_aware=opts.follow_edges,
                max_concurrency=opts.max,
                settings=settings,
                policy=opts.policy(self._stop),
                use_cache=journal is not None and not opts.force,
            )
        except DependencyCycleError as exc:
            raise CommandInputError(
                f"notes linked in a cycle ({exc}); drop --follow-edges"
            ) from exc
        except asyncio.CancelledError:
            self.side_file = _save_side_file(canvas, opts, tasks, collector, "interrupted")
            if journal is not None:
                journal.record_cancelled()
                journal.close()
            raise
        except BaseException:
            if journal is not None:
                journal.record_cancelled()
                journal.close()
            raise
        finally:
            self._stop = None
        try:
            return self._write(
                canvas, notes, opts, tasks, summary, collector, journal, base, started
            )
        finally:
            if journal is not None:
                journal.close()

    def _write(
        self,
        canvas: Canvas,
        notes: Mapping[str, _Note],
        opts: _Options,
        tasks: Sequence[AsyncTask],
        summary: Mapping[str, Any],
        collector: _Answers,
        journal: Journal | None,
        base: Mapping[str, Any],
        started: float,
    ) -> dict[str, Any]:
        elapsed = time.monotonic() - started
        cached = set(summary.get("cached", ()))
        results = [_task_result(task, collector, task.task_id in cached) for task in tasks]
        target = Path(opts.output) if opts.output else canvas.path
        written: Path | None = None
        backup: Path | None = None
        message = ""
        if not opts.output and canvas.changed_on_disk():
            self.side_file = _save_side_file(
                canvas, opts, tasks, collector, "canvas changed on disk"
            )
            message = (
                "the canvas changed on disk while the agents worked;"
                f" answers saved to {self.side_file}"
            )
        elif collector.answers:
            assert target is not None
            _write_answers(canvas, notes, results, opts, target.parent)
            backup = canvas.save(target, backup=opts.backup)
            written = target
            if journal is not None:
                _mark_written(journal, results, tasks)
        interrupted = any(c["reason"] == "stopped" for c in summary.get("cancelled_tasks", ()))
        if interrupted and not message:
            message = (
                f"stopped: {summary['cancelled']} notes were not answered;"
                " run the same command again to answer them (finished answers are kept)"
            )
        stats = _stats(
            total_nodes=len(notes),
            processed_nodes=len({r["node_id"] for r in results if r["status"] == "success"}),
            generated_docs=sum(1 for r in results if r.get("document")),
            created_blue_nodes=sum(1 for r in results if r.get("blue_node_id")),
            errors=summary["failed"] + summary["skipped"],
        )
        stats["reused_answers"] = len(cached)
        stats["cancelled"] = summary.get("cancelled", 0)
        report = {
            "session_id": self.session_id,
            "canvas": str(canvas.path),
            "written_to": str(written) if written else None,
            "elapsed_seconds": round(elapsed, 3),
            "stats": stats,
            "tasks": results,
        }
        failures = summary["failed"] + summary["skipped"] + summary.get("cancelled", 0)
        return {
            **base,
            "success": failures == 0 and self.side_file is None,
            "interrupted": interrupted,
            "stats": stats,
            "results": results,
            "summary": {k: v for k, v in summary.items() if k != "results"},
            "canvas": str(written) if written else None,
            "backup": str(backup) if backup else None,
            "side_file": str(self.side_file) if self.side_file else None,
            "message": message,
            "elapsed_seconds": elapsed,
            "report": report,
        }


class _InputHashes:
    """What an answer depends on, hashed: agent, note, material, model, agent definition."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.definitions = load_agents(settings.agents_dirs)
        except ValueError:  # reported when the agents were registered
            self.definitions = {}

    def of(self, note: _Note, agent: str) -> str:
        definition = self.definitions.get(agent)
        if self.settings.agent_command:
            model = shlex.join(self.settings.agent_command)
        else:
            model = (definition.model if definition else None) or llm_agents.run_model_id(
                self.settings
            )
        payload = [
            agent,
            note.text,
            [item.text for item in note.material],
            model,
            definition.fingerprint if definition else "",
        ]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def _open_journal(canvas: Canvas, opts: _Options) -> Journal | None:
    if not opts.use_journal:
        return None
    assert canvas.path is not None
    path = Path(opts.journal) if opts.journal else Journal.default_path(canvas.path)
    try:
        return Journal(path, canvas=canvas.path)
    except JournalError as exc:
        raise CommandInputError(str(exc)) from exc


def _mark_written(
    journal: Journal, results: Sequence[Mapping[str, Any]], tasks: Sequence[AsyncTask]
) -> None:
    """Tell the journal which canvas nodes hold which answers."""
    hashes = {task.task_id: task.node_data["input_hash"] for task in tasks}
    for result in results:
        if result.get("blue_node_id"):
            journal.mark_written(
                hashes[result["task_id"]],
                result["node_id"],
                result["agent"],
                result["blue_node_id"],
                result.get("file_node_id"),
            )


def _load(canvas_path: str | os.PathLike[str], max_bytes: int) -> Canvas:
    try:
        return Canvas.load(canvas_path, max_bytes=max_bytes)
    except CanvasError as exc:
        raise CommandInputError(str(exc)) from exc


def _answer_nodes(canvas: Canvas, agents: Sequence[str]) -> set[str]:
    """The ids of nodes this tool wrote as answers: blue cards and their documents."""
    names = set(agents)
    cards: set[str] = set()
    for edge in canvas.edges:
        target = canvas.get_node(edge["toNode"])
        if (
            label_of(edge) in names
            and target is not None
            and node_text(target) is not None
            and color_of(target) == ANSWER_COLOR
        ):
            cards.add(str(target["id"]))
    documents = {
        str(edge["toNode"])
        for edge in canvas.edges
        if edge["fromNode"] in cards
        and (canvas.get_node(edge["toNode"]) or {}).get("type") == "file"
    }
    return cards | documents


def _select(canvas: Canvas, opts: _Options, answer_ids: set[str]) -> dict[str, _Note]:
    selected: list[Node] = []
    if opts.nodes:
        for node_id in dict.fromkeys(opts.nodes):
            node = canvas.get_node(node_id)
            if node is None:
                raise CommandInputError(f"unknown node id {node_id!r}")
            if node_text(node) is None:
                raise CommandInputError(
                    f"node {node_id!r} is a {node.get('type')} node; only text nodes can be sent"
                )
            if node_id in answer_ids:
                raise CommandInputError(
                    f"node {node_id!r} is an answer this tool wrote; it is never sent"
                )
            selected.append(node)
    else:
        colors = set(opts.colors or [NOTE_COLOR])
        selected = [
            node
            for node in canvas.text_nodes()
            if (color_of(node) or "").lower() in colors
            and (node_text(node) or "").strip()
            and node["id"] not in answer_ids
        ]
    return {str(node["id"]): _Note(node, []) for node in selected}


def _material(canvas: Canvas, node: Node, answer_ids: set[str]) -> list[Material]:
    material: list[Material] = []
    for direction, edges in (
        ("Linked from", canvas.incoming(node)),
        ("Links to", canvas.outgoing(node)),
    ):
        for edge in edges:
            other_id = edge["fromNode"] if direction == "Linked from" else edge["toNode"]
            other = canvas.get_node(other_id)
            if other is None or other_id in answer_ids or other is node:
                continue
            content = _content(other)
            if content:
                label = label_of(edge) or direction
                material.append(Material(f"{label} ({other.get('type')} node)", content))
    return material


def _content(node: Node) -> str:
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text") or "").strip()
    if kind == "file":
        return f"File: {node.get('file')}"
    if kind == "link":
        return f"Link: {node.get('url')}"
    if kind == "group":
        return f"Group: {node.get('label') or ''}".strip()
    return ""


def _link_prerequisites(canvas: Canvas, notes: Mapping[str, _Note]) -> None:
    """With --follow-edges: an edge A -> B between two selected notes makes B build on A."""
    for edge in canvas.edges:
        source, target = str(edge["fromNode"]), str(edge["toNode"])
        if source != target and source in notes and target in notes:
            after = notes[target].after
            if source not in after:
                after.append(source)


def _check_writable(canvas: Canvas, opts: _Options) -> None:
    target = Path(opts.output) if opts.output else canvas.path
    assert target is not None
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CommandInputError(f"cannot write {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise CommandInputError(f"cannot write {target}: permission denied")
    if target.is_dir():
        raise CommandInputError(f"cannot write {target}: it is a directory")


def _plan(notes: Mapping[str, _Note], opts: _Options) -> dict[str, Any]:
    by_agent: dict[str, dict[str, Any]] = {}
    for note in notes.values():
        for agent in note.agents:
            entry = by_agent.setdefault(agent, {"nodes": [], "calls": 0, "with_prerequisites": 0})
            entry["nodes"].append(note.node_id)
            entry["calls"] += 1
            entry["with_prerequisites"] += bool(note.after)
    calls = sum(entry["calls"] for entry in by_agent.values())
    limit = min(opts.max, 5) if opts.follow_edges else opts.max
    return {
        "notes": len(notes),
        "calls": calls,
        "max_concurrency": opts.max,
        "follow_edges": opts.follow_edges,
        "agents": by_agent,
        "estimate_seconds": math.ceil(calls / limit) * SECONDS_PER_CALL,
    }


def _stats(**values: int) -> dict[str, int]:
    stats = dict.fromkeys(
        ("total_nodes", "processed_nodes", "generated_docs", "created_blue_nodes", "errors"), 0
    )
    stats.update(values)
    return stats


def _task_result(task: AsyncTask, collector: _Answers, cached: bool) -> dict[str, Any]:
    answer = collector.answers.get(task.task_id)
    error = collector.errors.get(task.task_id)
    if answer is not None:
        status = "success"
    elif error is not None and error.startswith("skipped:"):
        status = "skipped"
    elif error is not None and error.startswith("cancelled:"):
        status = "cancelled"
    else:
        status = "failed"
    return {
        "task_id": task.task_id,
        "node_id": task.node_data["note_id"],
        "agent": task.agent_name,
        "status": status,
        "duration_seconds": round(collector.durations.get(task.task_id, 0.0), 3),
        "attempts": collector.attempts.get(
            task.task_id, 1 if task.task_id in collector.started and not cached else 0
        ),
        "cached": cached,
        "error": error,
        "answer": answer.get("text") if answer else None,
        "model": answer.get("model") if answer else None,
        "document": None,
        "blue_node_id": None,
    }


def _docs_folder(canvas: Canvas, opts: _Options, base: Path) -> Path:
    assert canvas.path is not None
    if opts.docs_dir:
        folder = Path(opts.docs_dir)
        return folder if folder.is_absolute() else base / folder
    return base / f"{canvas.path.stem} answers"


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _write_answers(
    canvas: Canvas,
    notes: Mapping[str, _Note],
    results: list[dict[str, Any]],
    opts: _Options,
    base: Path,
) -> None:
    """Write documents first, then add the answer cards and edges to the canvas."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    folder = _docs_folder(canvas, opts, base)
    row_end: dict[str, Node] = {}
    for result in results:
        if result["status"] != "success":
            continue
        note = notes[result["node_id"]]
        agent, answer = result["agent"], str(result["answer"])
        document: Path | None = None
        if not opts.inline:
            folder.mkdir(parents=True, exist_ok=True)
            document = _fresh_path(folder, f"{_slug(note.topic)}-{agent}", ".md")
            document.write_text(
                f"# {note.topic}\n\n*{agent} · {stamp}*\n\n{answer.strip()}\n", encoding="utf-8"
            )
            result["document"] = _relative(document, base)
        if opts.inline:
            text = f"**{agent}** · {stamp}\n\n{answer.strip()}"
            lines = sum(1 + len(line) // 48 for line in text.splitlines())
            size = (INLINE_WIDTH, min(max(CARD_SIZE[1], 26 * lines + 40), 2400))
        else:
            text = f"**{agent}** · {stamp}\n\n{_preview(answer)}"
            size = CARD_SIZE
        # A note's further answers go on along its row, right of the previous one.
        x, y = canvas.find_free_spot(row_end.get(note.node_id, note.node), *size)
        card = canvas.add_text_node(text, x, y, size[0], size[1], color=ANSWER_COLOR)
        canvas.add_edge(note.node_id, card["id"], label=agent)
        result["blue_node_id"] = card["id"]
        row_end[note.node_id] = card
        if document is not None:
            fx, fy = canvas.find_free_spot(card, *FILE_SIZE)
            file_node = canvas.add_file_node(str(result["document"]), fx, fy, *FILE_SIZE)
            canvas.add_edge(card["id"], file_node["id"])
            result["file_node_id"] = file_node["id"]
            row_end[note.node_id] = file_node


def _save_side_file(
    canvas: Canvas, opts: _Options, tasks: Sequence[AsyncTask], collector: _Answers, reason: str
) -> Path:
    assert canvas.path is not None
    folder = Path(opts.output).parent if opts.output else canvas.path.parent
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    side = _fresh_path(folder, f"{canvas.path.name}.answers-{stamp}", ".json")
    payload = {
        "canvas": str(canvas.path),
        "reason": reason,
        "answers": [
            {
                "task_id": t.task_id,
                "node_id": t.node_data["note_id"],
                "agent": t.agent_name,
                **collector.answers[t.task_id],
            }
            for t in tasks
            if t.task_id in collector.answers
        ],
    }
    side.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    return side
