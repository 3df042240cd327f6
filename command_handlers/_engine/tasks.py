"""What the engine runs and what becomes of it: tasks, outcomes, callback types, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union  # noqa: UP035

from command_handlers.safe_text import strip_controls

__all__ = [
    "STATUSES",
    "AsyncTask",
    "DependencyCycleError",
    "EndCallback",
    "ExecutorFunc",
    "ProgressCallback",
    "RetryCallback",
    "StartCallback",
    "TaskOutcome",
    "TaskTimeoutError",
    "error_text",
]


@dataclass
class AsyncTask:
    """One unit of work for the engine.

    Attributes:
        task_id: Unique id of the task within a run.
        agent_name: Name of the agent (executor) that does the work.
        node_data: The data the agent works on (for a canvas: the node).
        priority: Higher runs first among tasks waiting for a slot.
        dependencies: Ids of tasks that must succeed before this one starts
            (used by the dependency-aware mode only).
        timeout: Seconds this task may take, overriding the run's
            ``task_timeout``; ``None`` to use the run's.
        allow_failure: When this task fails, the tasks that depend on it run
            anyway instead of being skipped.
    """

    task_id: str
    agent_name: str
    # Spelled as in the story, so that get_type_hints() works on Python 3.9 too.
    node_data: Dict[str, Any]  # noqa: UP006
    priority: int = 0
    dependencies: Optional[List[str]] = None  # noqa: UP006, UP045
    timeout: Optional[float] = None  # noqa: UP045
    allow_failure: bool = False


#: Every value :attr:`TaskOutcome.status` can take.
STATUSES = ("success", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class TaskOutcome:
    """What became of one task in one run, as data.

    Attributes:
        status: ``"success"``, ``"failed"``, ``"skipped"`` (a dependency
            failed) or ``"cancelled"`` (fail-fast or a stop); see :data:`STATUSES`.
            It says what happened, never what an error's text says.
        result: The executor's result on success, else ``None``.
        error: ``None`` on success; the error's text when failed; the reason
            when skipped (``dependency 'a' failed``) or cancelled (``stopped``,
            ``fail-fast: task 'x' failed``).
        error_type: The class name of the exception when failed, else ``None``.
        attempts: How many times the executor was called (0: never started).
        started: Wall-clock time (``time.time()``) the first attempt started,
            ``None`` if the task never started.
        finished: Wall-clock time the task ended.
        cached: Whether the outcome came from a cache instead of a run; set by
            callers that answer from one, always ``False`` from the engine.
    """

    status: str
    result: Any
    error: Optional[str]  # noqa: UP045
    error_type: Optional[str]  # noqa: UP045
    attempts: int
    started: Optional[float]  # noqa: UP045
    finished: float
    cached: bool = False


ExecutorFunc = Callable[[AsyncTask], Awaitable[Any]]
ProgressCallback = Callable[[str, Optional[Any], Optional[str]], Union[Awaitable[None], None]]
StartCallback = Callable[[AsyncTask], Union[Awaitable[None], None]]
RetryCallback = Callable[[AsyncTask, int, str, float], Union[Awaitable[None], None]]
EndCallback = Callable[[AsyncTask, TaskOutcome], Union[Awaitable[None], None]]


class DependencyCycleError(ValueError):
    """The tasks' dependencies form a cycle.

    Attributes:
        cycle: The task ids on the cycle, the first id repeated at the end.
    """

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle))


class TaskTimeoutError(asyncio.TimeoutError):
    """A task took longer than its timeout; it was cancelled and its slot freed."""


def error_text(exc: BaseException) -> str:
    """The text reported for an error: its message, or its class name when it has none.

    Control characters and terminal escape sequences are removed: the message
    may quote what an agent printed, and it is printed in turn.

    Args:
        exc: The error.

    Returns:
        The text.
    """
    return strip_controls(str(exc)) or type(exc).__name__
