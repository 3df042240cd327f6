"""The ``/intelligent-parallel`` command: a learner's canvas in, explanations out.

Every learner's note (a text node of colour "6") goes to an explanation agent at
the same time, through the plugin layer (:func:`command_handlers.plugins.run_tasks`);
each answer is written back beside its note (:mod:`command_handlers.write_back`):
an edge labelled with the agent, a blue ("5") card with the first lines of the
answer, and an edge to a file node for a Markdown document holding the whole answer.

A run answers only what needs it (:mod:`command_handlers.answered`): per note
and agent, a pair already answered for the same input is skipped, a pair whose
input changed since is answered again, and the tool's own answers are never
selected nor sent as material.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shlex
import time
import uuid
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pluggy

from command_handlers import hookimpl
from command_handlers.agent_definitions import load_agents
from command_handlers.answered import (
    ANSWERED,
    CHANGED,
    FORCED,
    NEW,
    AnswerIndex,
    KnownAnswer,
    decide,
    find_answers,
)
from command_handlers.canvas import Canvas, CanvasError, Node, color_of, label_of, node_text
from command_handlers.default_plugins import llm_agents
from command_handlers.default_plugins.journal import Answer as WrittenAnswer
from command_handlers.default_plugins.journal import Journal, JournalError
from command_handlers.default_plugins.model_router import ModelRouter
from command_handlers.fileio import changed_on_disk, read_canvas, save_canvas
from command_handlers.options import CommandInputError, Options, parse_color_map
from command_handlers.plugins import (
    AsyncTask,
    DependencyCycleError,
    DuplicateAgentError,
    collect_executors,
    get_plugin_manager,
    run_tasks,
)
from command_handlers.prompt import Material, Prerequisite, build_prompt, topic_of
from command_handlers.settings import Settings
from command_handlers.write_back import Layout, docs_folder, save_side_file, write_answers

__all__ = ["CommandInputError", "IntelligentParallelCommandHandler", "parse_color_map"]

NOTE_COLOR = "6"
#: The origin's figure for one agent call, used for the plan's estimate.
SECONDS_PER_CALL = 10


@dataclass
class _Note:
    """One selected note, what its agents need, and what the run does for each agent."""

    node: Node
    material: list[Material]
    agents: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)  # ids of notes this one builds on
    decisions: dict[str, str] = field(default_factory=dict)  # agent -> NEW, CHANGED...
    hashes: dict[str, str] = field(default_factory=dict)  # agent -> input hash

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

    @property
    def todo(self) -> list[str]:
        """The agents this run calls for the note (not those skipped as answered)."""
        return [agent for agent in self.agents if self.decisions.get(agent, NEW) != ANSWERED]

    @property
    def skipped(self) -> bool:
        """Whether every agent of the note is skipped: the note is already answered."""
        return bool(self.agents) and not self.todo


def _task_id(note_id: str, agent: str) -> str:
    return f"{note_id}:{agent}"


class _Answers:
    """A plugin that collects each task's outcome and completes prompts that need answers.

    Args:
        notes: The selected notes.
        journal: The journal, told of each retry.
        earlier: Task id -> the latest answer already on the canvas, for the
            pairs skipped as answered: what a note building on them reads.
    """

    def __init__(
        self,
        notes: Mapping[str, _Note],
        journal: Journal | None = None,
        earlier: Mapping[str, str] | None = None,
    ) -> None:
        self.notes = notes
        self.journal = journal
        self.earlier = dict(earlier or {})
        self.attempts: dict[str, int] = {}
        self.answers: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.durations: dict[str, float] = {}

    def _text_of(self, task_id: str) -> str | None:
        answer = self.answers.get(task_id)
        return str(answer["text"]) if answer else self.earlier.get(task_id)

    @hookimpl(tryfirst=True)
    def on_task_start(self, task: AsyncTask) -> None:
        """Note the start time; give a note that builds on others their answers."""
        self.started[task.task_id] = time.monotonic()
        note = self.notes[task.node_data["note_id"]]
        if note.after:
            prerequisites = [
                Prerequisite(agent, self.notes[earlier].topic, text)
                for earlier in note.after
                for agent in self.notes[earlier].agents
                if (text := self._text_of(_task_id(earlier, agent))) is not None
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

        Notes already answered (``docs/cli.md``, "How a run decides what to
        answer") are skipped unless the ``force`` option is set.

        Args:
            canvas_path: The canvas file.
            options: See :meth:`execute`.

        Returns:
            ``{"success", "session_id", "stats": {"total_nodes",
            "processed_nodes", "generated_docs", "created_blue_nodes",
            "errors", "skipped_answered", ...}, "results": [...]}`` and more;
            with nothing to process ``{"success": False, "message": "No
            yellow nodes found"}``; bad input gives ``success`` ``False`` and
            ``message`` saying why.
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
        opts = Options.parse(options)
        canvas = _load(canvas_path, int(opts.max_canvas_mb * 1024 * 1024))
        settings = opts.settings()
        pm, agents = self._plugins(opts, settings)
        known = find_answers(canvas, agents, _written_answers(canvas, opts))
        notes = _select(canvas, opts, known.node_ids)
        if not notes:
            return {
                "success": False,
                "session_id": self.session_id,
                "message": "No yellow nodes found",
            }
        for note in notes.values():
            note.material = _material(canvas, note.node, known.node_ids)
        await self._choose_agents(canvas, notes, opts, pm, settings, agents, known)
        _check_writable(canvas, opts)
        _decide(notes, known, _InputHashes(settings), force=opts.force)
        plan = _plan(notes, opts)
        base = {
            "session_id": self.session_id,
            "plan": plan,
            "echo": not opts.agent_command and llm_agents.uses_echo(settings),
        }
        if opts.dry_run:
            return {**base, "success": True, "dry_run": True, "stats": _stats(), "results": []}
        if not plan["calls"]:
            return self._up_to_date(canvas, notes, known, base)
        if not opts.auto and self.confirm is not None and not self.confirm(plan):
            return {
                **base,
                "success": False,
                "message": "Cancelled: no agent was called",
                "stats": _stats(),
                "results": [],
            }
        return await self._answer(canvas, notes, known, opts, pm, settings, base)

    def _plugins(self, opts: Options, settings: Settings) -> tuple[pluggy.PluginManager, list[str]]:
        """The run's plugin manager, and the agents it can call."""
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
        return pm, [name for name in registry.names if name != ModelRouter.AGENT]

    async def _choose_agents(
        self,
        canvas: Canvas,
        notes: Mapping[str, _Note],
        opts: Options,
        pm: pluggy.PluginManager,
        settings: Settings,
        agents: list[str],
        known: AnswerIndex,
    ) -> None:
        routed: dict[str, str] = {}
        kept: dict[str, list[str]] = {}
        if opts.route == "model" and not (opts.agent or opts.agents):
            if not opts.force:  # a note already answered keeps its agents
                kept = _kept_agents(notes, known, agents)
            prompts = {
                note_id: build_prompt(n.text, n.material)
                for note_id, n in notes.items()
                if note_id not in kept
            }
            if prompts:
                routed = await ModelRouter.route(
                    prompts, pm=pm, settings=settings, max_concurrency=opts.max
                )
        for note in notes.values():
            if opts.agents:
                note.agents = list(dict.fromkeys(opts.agents))
            elif opts.agent:
                note.agents = [opts.agent]
            elif note.node_id in kept:
                note.agents = kept[note.node_id]
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

    def _up_to_date(
        self,
        canvas: Canvas,
        notes: Mapping[str, _Note],
        known: AnswerIndex,
        base: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The result of a run where every selected note is already answered: nothing changes."""
        stats = _stats(total_nodes=len(notes), skipped_answered=len(notes))
        skipped = _skipped(notes, known)
        return {
            **base,
            "success": True,
            "up_to_date": True,
            "interrupted": False,
            "stats": stats,
            "results": [],
            "skipped": skipped,
            "canvas": None,
            "backup": None,
            "side_file": None,
            "message": (
                f"Nothing to do: every selected note is already answered ({len(notes)}"
                f" {'note' if len(notes) == 1 else 'notes'}; --force answers again)."
            ),
            "elapsed_seconds": 0.0,
            "report": _report(self.session_id, canvas, None, 0.0, stats, [], skipped),
        }

    async def _answer(
        self,
        canvas: Canvas,
        notes: Mapping[str, _Note],
        known: AnswerIndex,
        opts: Options,
        pm: pluggy.PluginManager,
        settings: Settings,
        base: dict[str, Any],
    ) -> dict[str, Any]:
        tasks = [
            AsyncTask(
                _task_id(note.node_id, agent),
                agent,
                {
                    "note_id": note.node_id,
                    "prompt": build_prompt(note.text, note.material),
                    "input_hash": note.hashes[agent],
                },
                dependencies=[_task_id(e, a) for e in note.after for a in notes[e].todo] or None,
            )
            for note in notes.values()
            for agent in note.todo
        ]
        journal = _open_journal(canvas, opts)
        collector = _Answers(notes, journal, _earlier_answers(notes, known))
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
            self.side_file = _side_file(canvas, opts, tasks, collector, "interrupted")
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
            run = _Run(tasks, summary, collector, started)
            return self._write(canvas, notes, known, opts, run, journal, base)
        finally:
            if journal is not None:
                journal.close()

    def _write(
        self,
        canvas: Canvas,
        notes: Mapping[str, _Note],
        known: AnswerIndex,
        opts: Options,
        run: _Run,
        journal: Journal | None,
        base: Mapping[str, Any],
    ) -> dict[str, Any]:
        elapsed = time.monotonic() - run.started
        summary = run.summary
        cached = set(summary.get("cached", ()))
        results = [
            _task_result(task, run.collector, task.task_id in cached, notes) for task in run.tasks
        ]
        written, backup, message = self._write_back(canvas, notes, known, opts, run, results)
        if written is not None and journal is not None:
            _mark_written(journal, results, run.tasks)
        interrupted = any(c["reason"] == "stopped" for c in summary.get("cancelled_tasks", ()))
        if interrupted and not message:
            message = (
                f"stopped: {summary['cancelled']} notes were not answered;"
                " run the same command again to answer them (finished answers are kept)"
            )
        stats = _run_stats(notes, results, summary)
        skipped = _skipped(notes, known)
        failures = summary["failed"] + summary["skipped"] + summary.get("cancelled", 0)
        return {
            **base,
            "success": failures == 0 and self.side_file is None,
            "interrupted": interrupted,
            "stats": stats,
            "results": results,
            "skipped": skipped,
            "summary": {k: v for k, v in summary.items() if k != "results"},
            "canvas": str(written) if written else None,
            "backup": str(backup) if backup else None,
            "side_file": str(self.side_file) if self.side_file else None,
            "message": message,
            "elapsed_seconds": elapsed,
            "report": _report(self.session_id, canvas, written, elapsed, stats, results, skipped),
        }

    def _write_back(
        self,
        canvas: Canvas,
        notes: Mapping[str, _Note],
        known: AnswerIndex,
        opts: Options,
        run: _Run,
        results: Sequence[dict[str, Any]],
    ) -> tuple[Path | None, Path | None, str]:
        """Write the answers into the canvas, or to a side file if it changed on disk.

        Returns:
            The canvas written (``None`` if none), its backup, and a message.
        """
        target = Path(opts.output) if opts.output else canvas.path
        assert target is not None
        assert canvas.path is not None
        if not opts.output and changed_on_disk(canvas):
            self.side_file = _side_file(
                canvas, opts, run.tasks, run.collector, "canvas changed on disk"
            )
            message = (
                "the canvas changed on disk while the agents worked;"
                f" answers saved to {self.side_file}"
            )
            return None, None, message
        if not run.collector.answers:
            return None, None, ""
        layout = Layout(
            target.parent, docs_folder(canvas.path, opts.docs_dir, target.parent), opts.inline
        )
        replacing = _replacing(notes, known) if opts.replace else {}
        topics = {note_id: note.topic for note_id, note in notes.items()}
        write_answers(canvas, results, topics, layout, replacing)
        return target, save_canvas(canvas, target, backup=opts.backup), ""


@dataclass(frozen=True)
class _Run:
    """What one run of the agents left: its tasks, the engine's summary, the answers."""

    tasks: Sequence[AsyncTask]
    summary: Mapping[str, Any]
    collector: _Answers
    started: float


class _InputHashes:
    """What an answer depends on, hashed: agent, note, material, model, agent definition."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.memo: dict[tuple[str, str], str] = {}
        try:
            self.definitions = load_agents(settings.agents_dirs)
        except ValueError:  # reported when the agents were registered
            self.definitions = {}

    def of(self, note: _Note, agent: str, notes: Mapping[str, _Note] | None = None) -> str:
        """The hash of what the agent's answer to the note depends on.

        With ``--follow-edges`` that includes what the notes it builds on depend
        on (their answers are in its prompt), so a changed prerequisite makes
        its dependents change too.
        """
        key = (note.node_id, agent)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = ""  # a cycle is refused later; do not recurse forever meanwhile
        chain = notes or {}
        prerequisites = sorted(
            self.of(chain[earlier], earlier_agent, chain)
            for earlier in note.after
            if earlier in chain
            for earlier_agent in chain[earlier].agents
        )
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
            # The edge labels are in the prompt too; the file's order is not.
            sorted([item.label, item.text] for item in note.material),
            model,
            definition.fingerprint if definition else "",
            prerequisites,
        ]
        digest = hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()
        self.memo[key] = digest
        return digest


def _kept_agents(
    notes: Mapping[str, _Note], known: AnswerIndex, agents: Sequence[str]
) -> dict[str, list[str]]:
    """Note id -> the agents that answered it, for the notes already answered."""
    kept: dict[str, list[str]] = {}
    for note_id in notes:
        previous = [name for name in known.agents_of(note_id) if name in agents]
        if previous:
            kept[note_id] = previous
    return kept


def _decide(
    notes: Mapping[str, _Note], known: AnswerIndex, hashes: _InputHashes, *, force: bool
) -> None:
    """Decide, per note and agent, whether to answer: new, changed, forced or answered."""
    for note in notes.values():
        for agent in note.agents:
            note.hashes[agent] = hashes.of(note, agent, notes)
            note.decisions[agent] = decide(
                known.of(note.node_id, agent), note.hashes[agent], force=force
            )


def _earlier_answers(notes: Mapping[str, _Note], known: AnswerIndex) -> dict[str, str]:
    """Task id -> the latest answer on the canvas, for every pair skipped as answered."""
    earlier: dict[str, str] = {}
    for note in notes.values():
        for agent in note.agents:
            latest = known.latest(note.node_id, agent)
            if note.decisions[agent] == ANSWERED and latest is not None:
                earlier[_task_id(note.node_id, agent)] = latest.text
    return earlier


def _replacing(notes: Mapping[str, _Note], known: AnswerIndex) -> dict[str, KnownAnswer]:
    """Task id -> the latest answer by the same agent, for every pair answered again."""
    replacing: dict[str, KnownAnswer] = {}
    for note in notes.values():
        for agent in note.todo:
            latest = known.latest(note.node_id, agent)
            if latest is not None:
                replacing[_task_id(note.node_id, agent)] = latest
    return replacing


def _skipped(notes: Mapping[str, _Note], known: AnswerIndex) -> list[dict[str, Any]]:
    """The pairs skipped as already answered, for the report."""
    skipped = []
    for note in notes.values():
        for agent in note.agents:
            latest = known.latest(note.node_id, agent)
            if note.decisions[agent] == ANSWERED and latest is not None:
                skipped.append(
                    {
                        "node_id": note.node_id,
                        "agent": agent,
                        "reason": "already answered",
                        "answer_node_id": latest.card_id,
                    }
                )
    return skipped


def _report(
    session_id: str,
    canvas: Canvas,
    written: Path | None,
    elapsed: float,
    stats: Mapping[str, int],
    results: Sequence[Mapping[str, Any]],
    skipped: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "canvas": str(canvas.path),
        "written_to": str(written) if written else None,
        "elapsed_seconds": round(elapsed, 3),
        "stats": dict(stats),
        "tasks": list(results),
        "skipped": list(skipped),
    }


def _journal_path(canvas: Canvas, opts: Options) -> Path | None:
    if not opts.use_journal:
        return None
    assert canvas.path is not None
    if opts.journal:
        return Path(opts.journal)
    # Beside the canvas that holds the answers: with --output, the written one.
    return Journal.default_path(Path(opts.output) if opts.output else canvas.path)


def _open_journal(canvas: Canvas, opts: Options) -> Journal | None:
    path = _journal_path(canvas, opts)
    if path is None:
        return None
    try:
        return Journal(path, canvas=canvas.path)
    except JournalError as exc:
        raise CommandInputError(str(exc)) from exc


def _written_answers(canvas: Canvas, opts: Options) -> list[WrittenAnswer]:
    """The journal's written answers, read without creating a journal that is not there."""
    path = _journal_path(canvas, opts)
    if path is None or not path.exists():
        return []
    journal = _open_journal(canvas, opts)
    assert journal is not None
    with journal:
        return journal.written_answers()


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
        return read_canvas(canvas_path, max_bytes=max_bytes)
    except CanvasError as exc:
        raise CommandInputError(str(exc)) from exc


def _select(canvas: Canvas, opts: Options, answer_ids: AbstractSet[str]) -> dict[str, _Note]:
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


def _material(canvas: Canvas, node: Node, answer_ids: AbstractSet[str]) -> list[Material]:
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


def _check_writable(canvas: Canvas, opts: Options) -> None:
    target = Path(opts.output) if opts.output else canvas.path
    assert target is not None
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CommandInputError(f"cannot write {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise CommandInputError(f"cannot write {target}: permission denied")
    if target.is_dir():
        raise CommandInputError(f"cannot write {target}: it is a directory")


def _plan(notes: Mapping[str, _Note], opts: Options) -> dict[str, Any]:
    """The plan: per agent the notes to answer, and the groups (new, changed...) with counts."""
    by_agent: dict[str, dict[str, Any]] = {}
    groups = dict.fromkeys(_GROUPS, 0)
    for note in notes.values():
        for agent in note.agents:
            decision = note.decisions[agent]
            groups[decision] += 1
            entry = by_agent.setdefault(
                agent,
                {"nodes": [], "calls": 0, "with_prerequisites": 0, **groups.fromkeys(groups, 0)},
            )
            entry[decision] += 1
            if decision != ANSWERED:
                entry["nodes"].append(note.node_id)
                entry["calls"] += 1
                entry["with_prerequisites"] += bool(note.after)
    calls = sum(entry["calls"] for entry in by_agent.values())
    limit = min(opts.max, 5) if opts.follow_edges else opts.max
    return {
        "notes": sum(1 for note in notes.values() if note.todo),
        "selected": len(notes),
        "calls": calls,
        **groups,
        "skipped_answered": sum(1 for note in notes.values() if note.skipped),
        "max_concurrency": opts.max,
        "follow_edges": opts.follow_edges,
        "agents": by_agent,
        "estimate_seconds": math.ceil(calls / limit) * SECONDS_PER_CALL,
    }


_GROUPS = (NEW, CHANGED, FORCED, ANSWERED)
_STATS = (
    "total_nodes",
    "processed_nodes",
    "generated_docs",
    "created_blue_nodes",
    "errors",
    "reused_answers",
    "cancelled",
    "skipped_answered",
)


def _stats(**values: int) -> dict[str, int]:
    stats = dict.fromkeys(_STATS, 0)
    stats.update(values)
    return stats


def _run_stats(
    notes: Mapping[str, _Note], results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]
) -> dict[str, int]:
    return _stats(
        total_nodes=len(notes),
        processed_nodes=len({r["node_id"] for r in results if r["status"] == "success"}),
        generated_docs=sum(1 for r in results if r.get("document")),
        created_blue_nodes=sum(1 for r in results if r.get("blue_node_id")),
        errors=summary["failed"] + summary["skipped"],
        reused_answers=len(summary.get("cached", ())),
        cancelled=summary.get("cancelled", 0),
        skipped_answered=sum(1 for note in notes.values() if note.skipped),
    )


def _task_result(
    task: AsyncTask, collector: _Answers, cached: bool, notes: Mapping[str, _Note]
) -> dict[str, Any]:
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
    note_id = task.node_data["note_id"]
    return {
        "task_id": task.task_id,
        "node_id": note_id,
        "agent": task.agent_name,
        "decision": notes[note_id].decisions[task.agent_name],
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
        "replaced_node_id": None,
    }


def _side_file(
    canvas: Canvas, opts: Options, tasks: Sequence[AsyncTask], collector: _Answers, reason: str
) -> Path:
    assert canvas.path is not None
    folder = Path(opts.output).parent if opts.output else canvas.path.parent
    answers = [
        {
            "task_id": t.task_id,
            "node_id": t.node_data["note_id"],
            "agent": t.agent_name,
            **collector.answers[t.task_id],
        }
        for t in tasks
        if t.task_id in collector.answers
    ]
    return save_side_file(canvas.path, folder, answers, reason)
