"""Every hook of command-handlers, in one place: the one source of hook documentation.

Plugins implement these with :data:`command_handlers.hookimpl`. An
implementation may take any subset of a hook's arguments, by name; give none of
them a default value (pluggy before 1.7 does not pass an argument whose
parameter has one).

The hooks fall in four groups:

* **setup**: :func:`check_settings`, :func:`configure`, :func:`unconfigure`:
  a built-in or third-party plugin checks the run's settings and sets itself
  up from them (as pytest's ``pytest_configure``), so that the command never
  imports it;
* **agents**: :func:`register_executors`, :func:`route_notes`, :func:`choose_agent`;
* **running**: :func:`execute_tasks`, :func:`cached_result`,
  :func:`prepare_task`, :func:`is_retryable`;
* **listeners** (``on_*``): they only observe. They may be plain functions
  or coroutine functions; a listener that raises is logged with its plugin's
  name and never fails a task or the run, unless it raises :class:`StopRun`
  (a listener the run cannot go on without, as the journal that can no
  longer record). Work that must happen before a task runs belongs in
  :func:`prepare_task`, whose errors fail the task.

``docs/plugins.md`` renders this module's docstrings (a test keeps the two equal).
"""

# pylint: disable=unused-argument  # hook specifications only declare their arguments

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import pluggy

__all__ = [
    "OutcomeView",
    "RunView",
    "StopRun",
    "TaskView",
    "WrittenAnswer",
    "hookimpl",
    "hookspec",
]

#: Marks a function as the specification of a hook.
hookspec = pluggy.HookspecMarker("command_handlers")
#: Marks a function as an implementation of one of the hooks of this module.
hookimpl = pluggy.HookimplMarker("command_handlers")


class StopRun(Exception):
    """Raised by a listener that the run cannot go on without: no new call starts.

    From ``on_run_start``, ``on_task_start`` or ``on_task_end`` of a run, the
    run starts no new call, the calls running may finish (within the run's
    grace), and the run ends failed, with the exception's text as its one
    line; the answers already received are kept. The ``journal`` raises it
    when it can no longer record (a full disk, a file locked too long).
    Elsewhere it is logged like any other exception of a listener.
    """


class TaskView(Protocol):
    """What plugins read of a task (an ``AsyncTask``).

    Spelled as a protocol so that plugins type their hooks without importing the
    engine's module, which only the plugin layer may import.
    """

    @property
    def task_id(self) -> str:
        """The task's id."""

    @property
    def agent_name(self) -> str:
        """The agent that runs it."""

    @property
    def node_data(self) -> Mapping[str, Any]:
        """Its data; for a canvas note ``prompt``, ``note_id`` and ``input_hash``."""


class OutcomeView(Protocol):
    """What became of one task (a ``TaskOutcome``), as :func:`on_task_end` hands it over."""

    @property
    def status(self) -> str:
        """``"success"``, ``"failed"``, ``"skipped"`` or ``"cancelled"``."""

    @property
    def result(self) -> Any:
        """What the executor returned, on success; else ``None``."""

    @property
    def error(self) -> str | None:
        """The error text, or why it was skipped or cancelled; ``None`` on success."""

    @property
    def error_type(self) -> str | None:
        """The class name of the error of a failed task; else ``None``."""

    @property
    def attempts(self) -> int:
        """How many times its executor was called (0: never, or answered from a cache)."""

    @property
    def started(self) -> float | None:
        """When its first attempt started (Unix time); ``None`` if it never started."""

    @property
    def finished(self) -> float:
        """When it ended (Unix time)."""

    @property
    def cached(self) -> bool:
        """Whether an earlier outcome (:func:`cached_result`) stood for it."""


class RunView(Protocol):
    """What listeners read of a run (a ``RunInfo`` of :mod:`command_handlers.plugins`)."""

    @property
    def run_id(self) -> str:
        """A fresh id for the run."""

    @property
    def task_count(self) -> int:
        """How many tasks the run holds."""

    @property
    def mode(self) -> str:
        """``"parallel"`` or ``"dependency-aware"``."""

    @property
    def max_concurrency(self) -> int:
        """The run's limit."""

    @property
    def tasks(self) -> Sequence[TaskView]:
        """The run's tasks, in input order."""


@dataclass(frozen=True)
class WrittenAnswer:
    """An answer the command wrote into a canvas, as :func:`on_canvas_written` reports it.

    Attributes:
        task_id: The task that answered.
        note_id: The note answered.
        agent: The agent that answered.
        input_hash: The fingerprint of the input it answered.
        answer_node_id: The card holding the answer.
        file_node_id: The file node of its document, if any.
    """

    task_id: str
    note_id: str
    agent: str
    input_hash: str
    answer_node_id: str
    file_node_id: str | None


# -- setup ---------------------------------------------------------------------------


@hookspec
def check_settings(settings: Any) -> str | None:
    """Check the run's settings before any agent is listed, called or written to.

    Raise ``ValueError`` to refuse the run: the command exits 2 with the
    error's text as its one line. Return a notice to show the user (the
    command prints it before the plan), or ``None``.

    Example: ``llm-agents`` refuses a ``--model`` that ``llm`` does not know,
    and says when the offline echo model answers::

        @hookimpl
        def check_settings(settings):
            if settings.model == "nope":
                raise ValueError("unknown model 'nope'")
            return None

    Args:
        settings: The run's :class:`~command_handlers.settings.Settings`.

    Returns:
        A notice for the user, or ``None``.
    """


@hookspec
def configure(settings: Any, pm: Any) -> None:
    """Set a plugin up for one command, after :func:`check_settings` passed.

    A built-in sets itself up here from the settings (pytest's
    ``pytest_configure``): the ``journal`` registers the journal of the
    command's canvas (which opens its file when first needed), the
    ``progress`` plugin registers a display, the ``model-router`` registers
    its agent under ``--route model``. Raise ``ValueError`` to refuse the run
    (exit 2). Every configured command is unconfigured.

    Example::

        @hookimpl
        def configure(settings, pm):
            if settings.canvas_path is not None:
                pm.register(AuditLog(settings.canvas_path), name="audit-log")

    Args:
        settings: The run's :class:`~command_handlers.settings.Settings`.
        pm: The plugin manager, to register more plugins on.
    """


@hookspec
def unconfigure(settings: Any) -> None:
    """The command is over, however it ended: close files, stop displays.

    A listener: what it raises is logged. Tasks that started and never ended
    (the command was interrupted) got no :func:`on_task_end`; the journal
    records them as cancelled here.

    Args:
        settings: The same settings as :func:`configure` got.
    """


# -- agents --------------------------------------------------------------------------


@hookspec
def register_executors(register: Callable[..., None], settings: Any) -> None:
    """Register the agents this plugin serves.

    Call ``register(agent_name, executor, max_concurrency=None, *,
    description="", override=False, rate=None, fingerprint=None,
    internal=False, tpm=None, prompt_tokens=0, output_tokens=None)`` once
    per agent. ``executor``
    is ``async def (task) -> dict``. ``max_concurrency`` caps how many calls
    of that one agent run at once, on top of the run's limit; ``rate`` caps
    how many start per second (``"10/min"``, a number per second, or a
    ``RateLimit``); ``tpm`` caps the tokens its calls spend a minute (each
    call's estimate, ``task.node_data["estimated_tokens"]``, is reserved
    when it starts and settled with its result's ``usage`` when it ends);
    ``prompt_tokens`` is what every call sends besides the task's prompt (a
    system prompt) and ``output_tokens`` what a call is expected to answer
    (until the journal holds earlier answers), for the plan's estimate;
    ``fingerprint``
    says what answers (a model id, a command line): it is part of every
    answer's input hash, so changing it answers the notes again;
    ``internal=True`` keeps the agent out of the agents offered to notes (a
    plugin's own helper). Two plugins registering one name is an error naming
    both, unless exactly one of them passes ``override=True``: that one wins.

    Example::

        @hookimpl
        def register_executors(register, settings):
            register("shout", shout, max_concurrency=2, rate="60/min", description="Louder.")

    Args:
        register: The function to call for each agent.
        settings: The run's :class:`~command_handlers.settings.Settings`.
    """


@hookspec(firstresult=True)
def route_notes(
    prompts: Mapping[str, str], agents: Mapping[str, str], settings: Any
) -> Awaitable[Mapping[str, str]] | None:
    """Look at every selected note at once before :func:`choose_agent` decides each.

    The first implementation that returns an awaitable wins. What it resolves
    to, per note, reaches :func:`choose_agent` as ``context["routed"]``.
    ``model-router`` implements it under ``--route model``: it asks the run's
    model, concurrently, which agent should answer each note.

    Args:
        prompts: Note id -> the note's prompt.
        agents: Agent name -> description, for the agents a note may get.
        settings: The run's :class:`~command_handlers.settings.Settings`.

    Returns:
        An awaitable of note id -> an answer for :func:`choose_agent`, or ``None``.
    """


@hookspec(firstresult=True)
def choose_agent(
    node: Mapping[str, Any], context: Mapping[str, Any], agents: Sequence[str]
) -> str | None:
    """Choose the agent that answers one canvas node; the first non-``None`` answer wins.

    Example::

        @hookimpl(tryfirst=True)
        def choose_agent(node, agents):
            return "memory-anchor" if "remember" in node.get("text", "") else None

    Args:
        node: The canvas node (a JSON Canvas 1.0 node dict).
        context: ``{"settings": Settings, "material": [texts of linked nodes],
            "routed": what route_notes gave for this note or None}``.
        agents: The names of the agents a note may get.

    Returns:
        An agent name from ``agents``, or ``None`` to let the next plugin decide.
    """


# -- running -------------------------------------------------------------------------


@hookspec(firstresult=True)
def execute_tasks(
    tasks: Sequence[Any],
    executor: Callable[[Any], Awaitable[Any]],
    dependency_aware: bool,
    max_concurrency: int,
    dependency_limit: int,
    agent_limits: Mapping[str, int],
    progress_callback: Callable[[str, Any, str | None], Any] | None,
    start_callback: Callable[[Any], Any] | None,
    end_callback: Callable[[Any, Any], Any] | None,
    policy: Any,
) -> Awaitable[Mapping[str, Any]] | None:
    """Run the tasks; the first implementation that returns an awaitable wins.

    The callbacks may be plain functions or coroutine functions: call them and
    await what they return when it is awaitable. They are ``None`` when nobody
    listens.

    The built-in implementation (``engine``) is the engine. A plugin can put
    another backend behind this hook (for example a distributed one) without
    any caller changing.

    Args:
        tasks: The ``AsyncTask`` objects.
        executor: Routes a task to its agent's executor (after
            :func:`prepare_task`): ``await executor(task)``.
        dependency_aware: Respect ``task.dependencies`` (else run flat).
        max_concurrency: At most this many tasks at once.
        dependency_limit: At most this many at once in the dependency-aware mode.
        agent_limits: agent name -> its own limit.
        progress_callback: Call once per finished task as ``(task_id, result, error)``.
        start_callback: Call with each task as it starts.
        end_callback: Call once per task, whatever became of it, as
            ``(task, outcome)`` with a ``TaskOutcome``.
        policy: The run's ``RunPolicy`` (timeouts, retries, rates, fail-fast,
            stop); a backend that cannot honour a field should say so rather
            than ignore it.

    Returns:
        An awaitable of the summary dict (the engine's keys), or ``None``.
    """


@hookspec(firstresult=True)
def cached_result(task: Any) -> Mapping[str, Any] | None:
    """An earlier outcome that can stand for this task's, so it need not run.

    A cache or journal plugin answers with the result an earlier run got for the
    same input (same agent, text, model and agent definition, as the task's
    ``node_data["input_hash"]`` says); the first non-``None`` answer wins. A
    task answered so makes no call and succeeds with ``outcome.cached`` true;
    it reaches the backend (a slot, a rate token) only when a task still to
    run depends on it.

    Args:
        task: The ``AsyncTask`` about to be run.

    Returns:
        The result dict to reuse, or ``None``.
    """


@hookspec
def prepare_task(task: Any) -> None:
    """Finish a task just before its executor is called (before each attempt).

    Not a listener: an exception here fails the task with that error (and
    skips the tasks that depend on it), exactly as if its executor had
    raised. The command completes the prompt of a note that builds on other
    notes here (``--follow-edges``), once their answers are known.

    Example::

        @hookimpl
        def prepare_task(task):
            task.node_data["prompt"] += " Answer in French."

    Args:
        task: The ``AsyncTask`` about to run; plugins may change its ``node_data``.
    """


@hookspec(firstresult=True)
def is_retryable(error: BaseException) -> bool | None:
    """Decide whether an error is worth another try; the first non-``None`` answer wins.

    Without an answer the engine's default rule decides (timeouts, connection
    errors, rate limits, 5xx; see ``docs/reliability.md``).

    Args:
        error: The exception a task raised.

    Returns:
        ``True`` to retry, ``False`` not to, ``None`` to let others decide.
    """


# -- listeners -----------------------------------------------------------------------


@hookspec
def on_run_start(run: RunView) -> None:
    """A run is about to start.

    Args:
        run: A read-only ``RunInfo`` (``run_id``, ``task_count``, ``mode``,
            ``max_concurrency``, ``tasks``).
    """


@hookspec
def on_task_start(task: TaskView) -> None:
    """A task got a slot and is about to run (once, before its first attempt).

    Args:
        task: The ``AsyncTask``.
    """


@hookspec
def on_task_retry(task: TaskView, attempt: int, error: str, delay: float) -> None:
    """A task failed with an error worth another try and will run again.

    Args:
        task: The ``AsyncTask``.
        attempt: The attempt that failed (1 for the first).
        error: Its error text.
        delay: Seconds until the next attempt.
    """


@hookspec
def on_task_progress(task_id: str, result: Any, error: str | None) -> None:
    """A task finished (the story's progress callback, kept for its shape).

    Read :func:`on_task_end` to learn what became of a task: this hook's
    ``error`` is text for people, never to be parsed.

    Args:
        task_id: The task's id.
        result: What the executor returned; ``None`` unless it succeeded.
        error: ``None`` on success, else the error text.
    """


@hookspec
def on_task_end(task: TaskView, outcome: OutcomeView) -> None:
    """What became of a task: called once per task, whatever its status.

    ``outcome.status`` is ``"success"``, ``"failed"``, ``"skipped"`` (a
    dependency failed) or ``"cancelled"`` (fail-fast, or the run was
    stopped); the journal, the progress display and the report read it.

    Example::

        @hookimpl
        def on_task_end(task, outcome):
            if outcome.status == "failed":
                print(task.task_id, outcome.error_type, outcome.error)

    Args:
        task: The ``AsyncTask``.
        outcome: Its ``TaskOutcome`` (status, result, error, error_type,
            attempts, started, finished, cached).
    """


@hookspec
def on_run_end(run: RunView, summary: Mapping[str, Any]) -> None:
    """A run finished (not called when it was cancelled).

    Args:
        run: The same ``RunInfo`` as :func:`on_run_start`.
        summary: The run's summary dict.
    """


@hookspec
def recorded_answers(settings: Any) -> Sequence[Any] | None:
    """Answers this canvas holds that an earlier command recorded writing.

    The command reads them to recognise its own answers on the canvas
    whatever their colour now; each holds ``answer_node_id``,
    ``file_node_id``, ``input_hash``, ``written_at``, ``note_id``, ``agent``
    and ``text``. The ``journal`` answers from its file.

    Args:
        settings: The run's :class:`~command_handlers.settings.Settings`.

    Returns:
        The records, or ``None``.
    """


@hookspec
def on_canvas_written(canvas_path: Any, answers: Sequence[WrittenAnswer]) -> None:
    """The canvas holding the run's answers was written (atomically, after its backup).

    A listener; the ``journal`` marks these answers written, so that later
    runs recognise them.

    Args:
        canvas_path: The canvas file written.
        answers: The answers now on it, one :class:`WrittenAnswer` each.
    """
