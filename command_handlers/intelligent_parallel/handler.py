"""The ``/intelligent-parallel`` command: a learner's canvas in, explanations out.

Every learner's note (a text node of colour "6") goes to an explanation agent at
the same time, through the plugin layer (:func:`command_handlers.plugins.run_tasks`);
each answer is written back beside its note (:mod:`.write_back`).
The command reaches the built-ins (journal, progress display, model router,
agents) only through hooks: it sets them up (``check_settings``,
``configure``), asks them (``recorded_answers``, ``route_notes``,
``choose_agent``), and tells them (``on_canvas_written``, ``unconfigure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pluggy

from command_handlers import hookimpl
from command_handlers.canvas import Canvas, CanvasError
from command_handlers.fileio import (
    CanvasBusyError,
    canvas_lock,
    find_vault,
    merge_canvas,
    read_canvas,
    remove_stale_temporaries,
    save_canvas,
)
from command_handlers.hookspecs import OutcomeView, TaskView, WrittenAnswer
from command_handlers.intelligent_parallel.answered import AnswerIndex, find_answers
from command_handlers.intelligent_parallel.caps import (
    agent_models,
    agent_prices,
    budget_message,
    run_limits,
    spent_usd,
)
from command_handlers.intelligent_parallel.estimate import (
    CallEstimate,
    add_to_plan,
    estimate_calls,
    output_means,
)
from command_handlers.intelligent_parallel.hashes import InputHashes
from command_handlers.intelligent_parallel.notes import (
    NOTE_COLOR,
    Note,
    link_prerequisites,
    select_notes,
    task_id,
)
from command_handlers.intelligent_parallel.options import CommandInputError, Options
from command_handlers.intelligent_parallel.plan import (
    decide_all,
    earlier_answers,
    make_plan,
    replacing,
    skipped_pairs,
)
from command_handlers.intelligent_parallel.preflight import check_places, check_text
from command_handlers.intelligent_parallel.prompt import Prerequisite, build_prompt
from command_handlers.intelligent_parallel.result import (
    NOTHING_SELECTED,
    CommandResult,
    make_stats,
    report,
    task_row,
)
from command_handlers.intelligent_parallel.write_back import (
    Layout,
    docs_folder,
    save_side_file,
    vault_path,
    write_answers,
)
from command_handlers.plugins import (
    DEFAULT_DEPENDENCY_LIMIT,
    ESTIMATE_KEY,
    AsyncTask,
    DependencyCycleError,
    ExecutorRegistry,
    PluginLoadError,
    collect_executors,
    get_plugin_manager,
    notify,
    run_tasks,
)
from command_handlers.pricing import Price
from command_handlers.safe_text import strip_controls
from command_handlers.settings import Settings

__all__ = ["IntelligentParallelCommandHandler"]


class _Outcomes:
    """The command's own listener: what became of each task."""

    def __init__(self) -> None:
        self.outcomes: dict[str, OutcomeView] = {}

    @hookimpl(tryfirst=True)
    def on_task_end(self, task: TaskView, outcome: OutcomeView) -> None:
        """Keep the outcome."""
        self.outcomes[task.task_id] = outcome

    def answer_text(self, key: str) -> str | None:
        """The text of a task's answer, if it succeeded."""
        outcome = self.outcomes.get(key)
        if outcome is None or outcome.status != "success":
            return None
        result = outcome.result
        return str(result.get("text", "")) if isinstance(result, Mapping) else str(result)

    def answers(self, tasks: Sequence[AsyncTask]) -> list[dict[str, Any]]:
        """The successful answers, for a side file."""
        found = []
        for task in tasks:
            outcome = self.outcomes.get(task.task_id)
            if outcome is not None and outcome.status == "success":
                result = outcome.result
                found.append(
                    {
                        "task_id": task.task_id,
                        "node_id": task.node_data["note_id"],
                        "agent": task.agent_name,
                        **(dict(result) if isinstance(result, Mapping) else {"text": str(result)}),
                    }
                )
        return found


class _Prerequisites:
    """With ``--follow-edges``: a note's prompt gets the answers of the notes it builds on.

    Done in ``prepare_task``, so that a failure fails the task instead of
    answering the note without its prerequisites.
    """

    def __init__(
        self, notes: Mapping[str, Note], outcomes: _Outcomes, earlier: Mapping[str, str]
    ) -> None:
        self.notes = notes
        self.outcomes = outcomes
        self.earlier = earlier

    @hookimpl
    def prepare_task(self, task: TaskView) -> None:
        """Complete the prompt of a note that builds on others."""
        note = self.notes[task.node_data["note_id"]]
        if not note.after:
            return
        prerequisites = []
        for earlier in note.after:
            for agent in self.notes[earlier].agents:
                key = task_id(earlier, agent)
                text = self.outcomes.answer_text(key)
                if text is None:
                    text = self.earlier.get(key)
                if text is not None:
                    prerequisites.append(Prerequisite(agent, self.notes[earlier].topic, text))
        data = task.node_data
        assert isinstance(data, dict)
        data["prompt"] = build_prompt(note.text, note.material, prerequisites)


class _StopEvent(asyncio.Event):
    """The run's stop event, which a signal handler can also raise at once.

    The engine checks :meth:`is_set` before it starts each call. A Python
    signal handler runs between any two bytecodes, the event loop's included,
    where waking the event's waiters is unsafe; so it only raises
    :attr:`requested`, which :meth:`is_set` reads from then on, and the loop
    wakes the waiters with :meth:`set` soon after.
    """

    def __init__(self) -> None:
        super().__init__()
        #: Raised by a signal handler: no call starts from now on.
        self.requested = False

    def is_set(self) -> bool:
        """Whether the run must start no new call.

        Returns:
            ``True`` once :attr:`requested` is raised or :meth:`set` was called.
        """
        return self.requested or super().is_set()

    def request(self) -> bool:
        """From the event loop: raise the flag and wake the waiters.

        Returns:
            Whether this is the first request from the loop.
        """
        first = not super().is_set()
        self.requested = True
        self.set()
        return first


@dataclass(frozen=True)
class _Command:
    """What every step of one command run reads."""

    canvas: Canvas
    opts: Options
    settings: Settings
    pm: pluggy.PluginManager
    registry: ExecutorRegistry
    known: AnswerIndex
    notes: Mapping[str, Note]
    notices: Sequence[str]
    layout: Layout
    prices: Mapping[str, Price | None] = field(default_factory=dict)
    models: Mapping[str, str | None] = field(default_factory=dict)
    #: Task id -> the estimate of its call.
    calls: dict[str, CallEstimate] = field(default_factory=dict)


class IntelligentParallelCommandHandler:
    """The ``/intelligent-parallel`` command, with the origin's interface.

    Args:
        session_id: An id for this session (a fresh one when ``None``).
        plugins: Extra plugin objects registered for every run, before the
            agents are listed: listeners, and plugins that register executors
            or choose agents.
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
        self._stop: _StopEvent | None = None
        self._writing = False

    @property
    def writing(self) -> bool:
        """Whether the run is past its calls, writing the answers.

        Cancelled now, it might have written the canvas already: let it end.
        """
        return self._writing

    def request_stop(self) -> bool:
        """Start no new agent call; let running ones finish (up to the grace), then write.

        A stop requested while the run is still planning means that no call
        starts at all. Call it from the event loop running :meth:`run` (a
        handler installed with ``loop.add_signal_handler``, say); from a
        Python signal handler, call :meth:`hold_calls` instead.

        Returns:
            Whether a run was under way, and not stopping already.
        """
        return self._stop is not None and self._stop.request()

    def hold_calls(self) -> None:
        """Start no new agent call from this moment: the signal-safe half of :meth:`request_stop`.

        Safe in a Python signal handler (it raises a flag, nothing more), so
        that a signal received while the run plans or starts calls stops them
        at once, before the event loop could run anything. Call
        :meth:`request_stop` from the loop afterwards, for the rest.
        """
        stop = self._stop
        if stop is not None:
            stop.requested = True

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
            return (await self.run(canvas_path, options)).as_dict()
        except CommandInputError as exc:
            return {
                "success": False,
                "session_id": self.session_id,
                "message": str(exc),
                "error": str(exc),
            }

    async def run(
        self, canvas_path: str | os.PathLike[str], options: Mapping[str, Any] | None = None
    ) -> CommandResult:
        """Like :meth:`execute_async`, but typed, and bad input raises.

        Args:
            canvas_path: The canvas file.
            options: See :meth:`execute`.

        Returns:
            The result.

        Raises:
            CommandInputError: Bad input; nothing was called or written.
            asyncio.CancelledError: The run was interrupted; the canvas is
                untouched and finished answers are in :attr:`side_file`.
        """
        self.side_file = None
        # From the very start: a stop requested while planning means no call starts.
        self._stop, self._writing = _StopEvent(), False
        try:
            opts = Options.parse(options)
            canvas = _load(canvas_path, opts.max_canvas_bytes)
            settings = opts.settings(canvas.path)
            pm = self._plugin_manager(opts)
            layout = _layout(canvas, opts)
            notices = _refused_as_input(lambda: _notices(pm, settings))
            with contextlib.ExitStack() as stack:
                if not opts.dry_run:  # one run per canvas, taken before any call
                    stack.enter_context(_locked(Path(opts.output) if opts.output else canvas.path))
                try:
                    _refused_as_input(lambda: pm.hook.configure(settings=settings, pm=pm))
                    return await self._run(canvas, opts, settings, pm, notices, layout)
                finally:
                    await notify(pm, "unconfigure", settings=settings)
        finally:
            self._stop, self._writing = None, False

    def _plugin_manager(self, opts: Options) -> pluggy.PluginManager:
        try:
            pm = get_plugin_manager(
                load_entry_points=opts.load_plugins,
                disabled=opts.disable_plugins,
                plugins=opts.plugins,
            )
        except PluginLoadError as exc:
            raise CommandInputError(str(exc)) from exc
        for plugin in self.plugins:
            pm.register(plugin)
        return pm

    async def _run(
        self,
        canvas: Canvas,
        opts: Options,
        settings: Settings,
        pm: pluggy.PluginManager,
        notices: Sequence[str],
        layout: Layout,
    ) -> CommandResult:
        if not pm.hook.execute_tasks.get_hookimpls():
            raise CommandInputError(
                "no plugin runs the tasks: the built-in 'engine' is disabled and no other"
                " plugin implements execute_tasks"
            )
        registry = _refused_as_input(lambda: collect_executors(pm, settings))
        records = _refused_as_input(
            lambda: list(itertools.chain.from_iterable(pm.hook.recorded_answers(settings=settings)))
        )
        known = find_answers(canvas, registry.names, records)
        notes = select_notes(canvas, opts, known.node_ids)
        if not notes:
            return CommandResult("nothing-selected", self.session_id, False, NOTHING_SELECTED)
        command = _Command(
            canvas,
            opts,
            settings,
            pm,
            registry,
            known,
            notes,
            list(notices),
            layout,
            *_spending(registry, settings, opts),
        )
        await _choose_agents(command)
        _check_writable(canvas, opts)
        fingerprints = {name: registry.fingerprint(name) for name in registry.names}
        decide_all(notes, known, InputHashes(settings, fingerprints), force=opts.force)
        check_places(canvas, opts, command.layout, notes)
        plan = make_plan(notes, opts, DEFAULT_DEPENDENCY_LIMIT)
        _estimate(command, plan, records)
        result = CommandResult("dry-run", self.session_id, True, notices=list(notices), plan=plan)
        if opts.dry_run:
            result.skipped = skipped_pairs(notes, known)
            result.report = self._report(command, result)
            return result
        if not plan["calls"]:
            return self._up_to_date(command, result)
        # Asked to stop while planning: no question; the engine starts nothing.
        asking = not opts.auto and self.confirm is not None and not self._stopping()
        if asking and self.confirm is not None and not self.confirm(plan):
            result.kind, result.success = "declined", False
            result.message = "Cancelled: no agent was called"
            return result
        return await self._answer(command, result)

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _up_to_date(self, command: _Command, result: CommandResult) -> CommandResult:
        """Every selected note is already answered: nothing changes."""
        count = len(command.notes)
        result.kind = "up-to-date"
        result.stats = make_stats(total_nodes=count, skipped_answered=count)
        result.stats["usd"] = spent_usd([], command.prices)
        result.skipped = skipped_pairs(command.notes, command.known)
        result.message = (
            f"Nothing to do: every selected note is already answered ({count}"
            f" {'note' if count == 1 else 'notes'}; --force answers again)."
        )
        result.report = self._report(command, result)
        return result

    def _report(self, command: _Command, result: CommandResult) -> dict[str, Any]:
        """The JSON report of the result as it stands, with the plan."""
        found = report(
            self.session_id,
            str(command.canvas.path),
            result.canvas,
            result.elapsed_seconds,
            result.stats,
            result.results,
            result.skipped,
            result.failure,
        )
        found["plan"] = result.plan
        return found

    async def _answer(self, command: _Command, result: CommandResult) -> CommandResult:
        notes, opts = command.notes, command.opts
        tasks = [
            AsyncTask(
                task_id(note.node_id, agent),
                agent,
                {
                    "note_id": note.node_id,
                    "prompt": build_prompt(note.text, note.material),
                    "input_hash": note.hashes[agent],
                    ESTIMATE_KEY: command.calls[task_id(note.node_id, agent)].total,
                },
                dependencies=[task_id(e, a) for e in note.after for a in notes[e].todo] or None,
            )
            for note in notes.values()
            for agent in note.todo
        ]
        outcomes = _Outcomes()
        command.pm.register(outcomes, name="answers")
        if opts.follow_edges:
            earlier = earlier_answers(notes, command.known)
            command.pm.register(_Prerequisites(notes, outcomes, earlier), name="prerequisites")
        assert self._stop is not None
        target = Path(opts.output) if opts.output else command.canvas.path
        assert target is not None
        remove_stale_temporaries(target)
        started = time.monotonic()
        try:
            summary = await run_tasks(
                tasks,
                pm=command.pm,
                dependency_aware=opts.follow_edges,
                max_concurrency=opts.max,
                settings=command.settings,
                policy=replace(
                    opts.policy(self._stop),
                    limits=run_limits(opts, command.calls, command.prices, command.models),
                ),
                use_cache=not opts.force,
            )
        except DependencyCycleError as exc:
            raise CommandInputError(
                f"notes linked in a cycle ({exc}); drop --follow-edges"
            ) from exc
        except asyncio.CancelledError:
            self.side_file = _side_file(command, outcomes.answers(tasks), "interrupted")
            raise
        # From here on the run writes; cancelling it could leave the canvas written unsaid.
        self._writing = True
        elapsed = time.monotonic() - started
        rows = [task_row(task, outcomes.outcomes.get(task.task_id), notes) for task in tasks]
        for row in rows:
            row["note"] = _named(notes[row["node_id"]])
        failures = [summary["halted"]] if summary.get("halted") else []
        failures += await self._write(command, tasks, outcomes, rows, result)
        cancelled = summary.get("cancelled_tasks", ())
        # A stop asked for (a signal), not one a listener forced (StopRun).
        result.interrupted = self._stop.requested and any(
            item["reason"] == "stopped" for item in cancelled
        )
        result.side_file = str(self.side_file) if self.side_file else None
        if failures:
            result.failure = result.message = _failure_line(failures, rows, result)
        elif result.interrupted and not result.message:
            result.message = (
                f"stopped: {summary['cancelled']} notes were not answered;"
                " run the same command again to answer them (finished answers are kept)"
            )
        if not result.message:
            result.message = budget_message(cancelled, rows) or ""
        result.kind = "ran"
        result.stats = make_stats(
            total_nodes=len(notes),
            processed_nodes=len({r["node_id"] for r in rows if r["status"] == "success"}),
            generated_docs=sum(1 for r in rows if r.get("document")),
            created_blue_nodes=sum(1 for r in rows if r.get("blue_node_id")),
            errors=sum(1 for r in rows if r["status"] in ("failed", "skipped")),
            reused_answers=sum(1 for r in rows if r["cached"]),
            cancelled=sum(1 for r in rows if r["status"] == "cancelled"),
            skipped_answered=sum(1 for note in notes.values() if note.skipped),
            input_tokens=sum(r["usage"]["input_tokens"] for r in rows if r["usage"]),
            output_tokens=sum(r["usage"]["output_tokens"] for r in rows if r["usage"]),
        )
        result.stats["usd"] = spent_usd(rows, command.prices)
        result.success = (
            all(r["status"] == "success" for r in rows) and self.side_file is None and not failures
        )
        result.results = rows
        result.skipped = skipped_pairs(notes, command.known)
        result.summary = {k: v for k, v in summary.items() if k != "results"}
        result.elapsed_seconds = elapsed
        result.report = self._report(command, result)
        return result

    async def _write(
        self,
        command: _Command,
        tasks: Sequence[AsyncTask],
        outcomes: _Outcomes,
        rows: Sequence[dict[str, Any]],
        result: CommandResult,
    ) -> list[str]:
        """Write the answers into the canvas as it is on disk now, keeping edits made meanwhile.

        Only when the canvas on disk can no longer be read, or cannot be
        written (a full disk), do the answers go to a side file.

        Returns:
            What failed, one line each: the canvas or a document could not be
            written, or a listener could not record the answers written.
        """
        canvas, opts = command.canvas, command.opts
        target = Path(opts.output) if opts.output else canvas.path
        assert target is not None
        assert canvas.path is not None
        if not any(row["status"] == "success" for row in rows):
            return []
        gone: list[str] = []

        def add_answers(fresh: Canvas) -> None:
            old = replacing(command.notes, command.known) if opts.replace else {}
            topics = {note_id: note.topic for note_id, note in command.notes.items()}
            gone[:] = write_answers(fresh, list(rows), topics, command.layout, old)

        try:
            if opts.output:
                add_answers(canvas)
                backup = save_canvas(canvas, target, backup=opts.backup)
            else:
                _, backup = merge_canvas(
                    canvas.path, add_answers, backup=opts.backup, max_bytes=opts.max_canvas_bytes
                )
        except CanvasError as exc:  # the canvas on disk became unreadable
            self.side_file = _unmerged(command, rows, outcomes.answers(tasks), exc, result)
            return []
        except OSError as exc:  # a full disk, say: nothing was written into the canvas
            self.side_file = _unmerged(command, rows, outcomes.answers(tasks), exc, result)
            return [f"cannot write the answers into {target}: {exc.strerror or exc}"]
        _drop_gone(command.notes, rows, gone, result)
        result.canvas, result.backup = str(target), str(backup) if backup else None
        hashes = {task.task_id: str(task.node_data["input_hash"]) for task in tasks}
        written = [
            WrittenAnswer(
                row["task_id"],
                row["node_id"],
                row["agent"],
                hashes[row["task_id"]],
                row["blue_node_id"],
                row.get("file_node_id"),
            )
            for row in rows
            if row.get("blue_node_id")
        ]
        stopped = await notify(command.pm, "on_canvas_written", canvas_path=target, answers=written)
        return [str(stopped)] if stopped is not None else []


def _spending(
    registry: ExecutorRegistry, settings: Settings, opts: Options
) -> tuple[dict[str, Price | None], dict[str, str | None]]:
    """Each agent's price and model (``--budget-usd`` without a price is bad input)."""
    models = agent_models(registry, settings)
    return agent_prices(models, opts.price, opts.budget_usd), models


def _estimate(command: _Command, plan: dict[str, Any], records: Sequence[Any]) -> None:
    """Estimate each call's tokens (and cost): into the plan, and for the run's limits."""
    registry = command.registry
    calls = estimate_calls(
        command.notes,
        {name: registry.prompt_tokens(name) for name in registry.names},
        output_means(records),
        registry.output_tokens(),
    )
    add_to_plan(plan, calls, command.prices)
    command.calls.update({task_id(note, agent): call for (note, agent), call in calls.items()})


async def _choose_agents(command: _Command) -> None:
    """Give every note its agents: the options', the kept ones, or the routers' choice."""
    notes, opts, pm, settings = command.notes, command.opts, command.pm, command.settings
    agents = command.registry.names
    kept: dict[str, list[str]] = {}
    routed: Mapping[str, str] = {}
    if opts.route == "model" and not (opts.agent or opts.agents):
        if not opts.force:  # a note already answered keeps its agents
            kept = _kept_agents(notes, command.known, agents)
        prompts = {
            note_id: build_prompt(note.text, note.material)
            for note_id, note in notes.items()
            if note_id not in kept
        }
        pending = (
            pm.hook.route_notes(
                prompts=prompts, agents=command.registry.describe(), settings=settings
            )
            if prompts
            else None
        )
        if pending is not None:
            routed = await pending
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
        link_prerequisites(command.canvas, notes)


def _kept_agents(
    notes: Mapping[str, Note], known: AnswerIndex, agents: Sequence[str]
) -> dict[str, list[str]]:
    """Note id -> the agents that answered it, for the notes already answered."""
    kept: dict[str, list[str]] = {}
    for note_id in notes:
        previous = [name for name in known.agents_of(note_id) if name in agents]
        if previous:
            kept[note_id] = previous
    return kept


def _notices(pm: pluggy.PluginManager, settings: Settings) -> list[str]:
    return [str(notice) for notice in pm.hook.check_settings(settings=settings) if notice]


def _refused_as_input(step: Callable[[], Any]) -> Any:
    """Run a setup step; a ``ValueError`` (a plugin refusing the run) is bad input."""
    try:
        return step()
    except ValueError as exc:
        raise CommandInputError(" ".join(str(exc).split())) from exc


def _load(canvas_path: str | os.PathLike[str], max_bytes: int) -> Canvas:
    try:
        canvas = read_canvas(canvas_path, max_bytes=max_bytes)
    except CanvasError as exc:
        raise CommandInputError(str(exc)) from exc
    check_text(canvas)
    return canvas


def _unmerged(
    command: _Command,
    rows: Sequence[dict[str, Any]],
    answers: Sequence[Mapping[str, Any]],
    error: CanvasError | OSError,
    result: CommandResult,
) -> Path | None:
    """The canvas could not be merged into: keep the answers in a side file."""
    for row in rows:
        for key in ("blue_node_id", "file_node_id", "replaced_node_id"):
            row.pop(key, None)
    side = _side_file(command, answers, str(error))
    where = f"answers saved to {side}" if side else "answers could not be saved to a side file"
    result.message = f"the canvas could not be merged into ({error}); {where}"
    return side


def _failure_line(
    failures: Sequence[str], rows: Sequence[Mapping[str, Any]], result: CommandResult
) -> str:
    """Say in one line what failed, where the answers received are, and how to go on."""
    parts = list(dict.fromkeys(failures))
    answered = sum(1 for row in rows if row["status"] == "success")
    not_made = sum(1 for row in rows if row["status"] == "cancelled")
    if not_made:
        parts.append(f"no new call was started ({not_made} not made)")
    answers = f"{answered} {'answer' if answered == 1 else 'answers'} received"
    if result.canvas:
        parts.append(f"the {answers} are on the canvas")
    elif result.side_file:
        parts.append(f"the {answers} are saved to {result.side_file}")
    elif answered:
        parts.append(f"the {answers} could not be saved outside the journal")
    parts.append("run the same command again once that is fixed")
    return "; ".join(parts)


def _drop_gone(
    notes: Mapping[str, Note],
    rows: Sequence[dict[str, Any]],
    gone: Sequence[str],
    result: CommandResult,
) -> None:
    """Say which answers were not written because their note was deleted meanwhile."""
    for row in rows:
        if row["task_id"] in gone:
            for key in ("blue_node_id", "file_node_id", "document"):
                row.pop(key, None)
            row["note_deleted"] = True
            result.notices.append(
                f"not written: note {_named(notes[row['node_id']])} was deleted"
                f" from the canvas while {row['agent']} answered it (the answer stays"
                " in the journal)"
            )


def _named(note: Note) -> str:
    """A note as a person finds it on the canvas: its first words, then its id."""
    words = " ".join(strip_controls(note.text).split()[:6])
    if len(words) > 40:
        words = words[:39] + "…"
    # Printed on the terminal, from a canvas that may have come from anyone.
    return f'"{words}" ({strip_controls(note.node_id)})'


@contextlib.contextmanager
def _locked(target: Path | None) -> Iterator[None]:
    assert target is not None
    if not Path(os.path.realpath(target)).parent.is_dir():
        yield  # no folder to write into: the write check says so
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(canvas_lock(target))
        except CanvasBusyError as exc:
            raise CommandInputError(str(exc)) from exc
        except OSError as exc:  # a folder that cannot hold the lock file (or a link there)
            raise CommandInputError(
                f"cannot write the lock file beside {target}: {exc.strerror or exc}"
            ) from exc
        yield


def _layout(canvas: Canvas, opts: Options) -> Layout:
    """Where documents go and where file nodes' paths start: the vault root.

    Raises:
        CommandInputError: The vault is not a folder, or the documents'
            folder is outside it (Obsidian could not open them).
    """
    assert canvas.path is not None
    target = Path(opts.output) if opts.output else canvas.path
    real = Path(os.path.realpath(target))
    if opts.vault:
        base = Path(opts.vault)
        if not base.is_dir():
            raise CommandInputError(f"--vault {opts.vault}: not a folder")
    else:
        base = find_vault(real) or real.parent
    folder = docs_folder(Path(os.path.realpath(canvas.path)), opts.docs_dir, real.parent)
    layout = Layout(base, folder, opts.inline)
    if not opts.inline and (opts.vault or find_vault(real)):
        try:
            vault_path(folder, base)
        except ValueError:
            raise CommandInputError(
                f"the documents' folder {folder} is outside the vault {base};"
                " Obsidian could not open them: choose a --docs-dir inside it"
            ) from None
    return layout


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


def _side_file(command: _Command, answers: Sequence[Mapping[str, Any]], reason: str) -> Path | None:
    """Keep answers in a side file; ``None`` when no folder could hold one (a full disk)."""
    canvas, opts = command.canvas, command.opts
    assert canvas.path is not None
    folder = Path(opts.output).parent if opts.output else canvas.path.parent
    try:
        return save_side_file(canvas.path, folder, answers, reason)
    except OSError:
        return None
