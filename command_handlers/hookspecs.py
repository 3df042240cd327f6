"""Every hook of command-handlers, in one place.

Plugins implement these with :data:`command_handlers.hookimpl`. An
implementation may take any subset of a hook's arguments, by name. Listener
hooks (``on_*``) may be plain functions or coroutine functions; a listener that
raises is logged with its plugin's name and never fails a task or the run.
"""

# pylint: disable=unused-argument  # hook specifications only declare their arguments

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Callable, Protocol

import pluggy

__all__ = ["RunView", "TaskView", "hookspec"]

hookspec = pluggy.HookspecMarker("command_handlers")


class TaskView(Protocol):
    """What plugins read of a task (an ``AsyncTask`` of :mod:`command_handlers.plugins`).

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


@hookspec
def register_executors(register: Callable[..., None], settings: Any) -> None:
    """Register the agents this plugin serves.

    Call ``register(agent_name, executor, max_concurrency=None, *, description="",
    override=False)`` once per agent. ``executor`` is ``async def (task) -> dict``.
    ``max_concurrency`` caps how many calls of that one agent run at once, on top
    of the run's limit. Two plugins registering one name is an error naming
    both, unless exactly one of them passes ``override=True``: that one wins.

    Args:
        register: The function to call for each agent.
        settings: The run's :class:`command_handlers.settings.Settings`.
    """


@hookspec(firstresult=True)
def choose_agent(
    node: Mapping[str, Any], context: Mapping[str, Any], agents: Sequence[str]
) -> str | None:
    """Choose the agent that answers one canvas node; the first non-``None`` answer wins.

    Args:
        node: The canvas node (a JSON Canvas 1.0 node dict).
        context: ``{"settings": Settings, "material": [texts of linked nodes]}``.
        agents: The names of the registered agents.

    Returns:
        An agent name from ``agents``, or ``None`` to let the next plugin decide.
    """


@hookspec
def on_run_start(run: Any) -> None:
    """A run is about to start.

    Args:
        run: A read-only :class:`command_handlers.plugins.RunInfo` (``run_id``,
            ``task_count``, ``mode``, ``max_concurrency``).
    """


@hookspec
def on_task_start(task: Any) -> None:
    """A task got a slot and its executor is about to be called.

    Args:
        task: The :class:`~command_handlers.plugins.AsyncTask`.
    """


@hookspec
def on_task_progress(task_id: str, result: Any, error: str | None) -> None:
    """A task finished: succeeded, failed, or was skipped (the story's progress callback).

    Args:
        task_id: The task's id.
        result: What the executor returned; ``None`` unless it succeeded.
        error: ``None`` on success, else the error text (for a skipped task it
            names the failed dependency).
    """


@hookspec
def on_run_end(run: Any, summary: Mapping[str, Any]) -> None:
    """A run finished (not called when it was cancelled).

    Args:
        run: The same :class:`~command_handlers.plugins.RunInfo` as ``on_run_start``.
        summary: The run's summary dict.
    """


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
    policy: Any,
) -> Awaitable[Mapping[str, Any]] | None:
    """Run the tasks; the first implementation that returns an awaitable wins.

    The callbacks may be plain functions or coroutine functions: call them and
    await what they return when it is awaitable. They are ``None`` when nobody
    listens.

    The built-in implementation is the engine. A plugin can put another backend
    behind this hook (for example a distributed one) without any caller changing.

    Args:
        tasks: The :class:`~command_handlers.plugins.AsyncTask` objects.
        executor: Routes a task to its agent's executor: ``await executor(task)``.
        dependency_aware: Respect ``task.dependencies`` (else run flat).
        max_concurrency: At most this many tasks at once.
        dependency_limit: At most this many at once in the dependency-aware mode.
        agent_limits: agent name -> its own limit.
        progress_callback: Call once per finished task as ``(task_id, result, error)``
            (``None`` when nobody listens).
        start_callback: Call with each task as it starts (``None`` when nobody listens).
        policy: The run's :class:`~command_handlers.plugins.RunPolicy`
            (timeouts, retries, rates, fail-fast, stop); a backend that cannot
            honour a field should say so rather than ignore it.

    Returns:
        An awaitable of the summary dict (the engine's keys), or ``None``.
    """


@hookspec(firstresult=True)
def cached_result(task: Any) -> Mapping[str, Any] | None:
    """An earlier outcome that can stand for this task's, so it need not run.

    A cache or journal plugin answers with the result an earlier run got for the
    same input (same agent, text, model and agent definition, as the task's
    ``node_data["input_hash"]`` says); the first non-``None`` answer wins.

    Args:
        task: The :class:`~command_handlers.plugins.AsyncTask` about to be run.

    Returns:
        The result dict to reuse, or ``None``.
    """


@hookspec
def on_task_retry(task: Any, attempt: int, error: str, delay: float) -> None:
    """A task failed with an error worth another try and will run again.

    Args:
        task: The :class:`~command_handlers.plugins.AsyncTask`.
        attempt: The attempt that failed (1 for the first).
        error: Its error text.
        delay: Seconds until the next attempt.
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
