"""What became of each task of one run: states, results, errors, and the summary."""

from __future__ import annotations

import time
from typing import Any

from command_handlers._engine.tasks import AsyncTask, TaskOutcome, error_text

__all__ = [
    "CANCELLED",
    "FAILED",
    "PENDING",
    "RETRY_WAIT",
    "RUNNING",
    "SKIPPED",
    "SUCCEEDED",
    "Ledger",
]

# The state of a task within one run, one byte per task.
PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED, CANCELLED, RETRY_WAIT = range(7)


class Ledger:
    """The record of one run; the scheduler reads the states, the summary the rest.

    Attributes:
        tasks: The run's tasks; a task is known by its position in this list.
        state: One of ``PENDING`` .. ``RETRY_WAIT`` per task.
        results: task id -> result, of the tasks that succeeded.
        errors: position -> the error of each task that failed for good.
        skipped: ``{"task_id", "blocked_by"}`` of each skipped task.
        cancelled: ``{"task_id", "reason"}`` of each cancelled task.
        unresolved: How many tasks have no final state yet.
        attempts: position -> number of its latest (running or upcoming)
            attempt; only tasks tried again are listed, so a plain run pays nothing.
        started: position -> wall-clock start of its first attempt, kept only
            when outcomes are wanted (``None`` otherwise, to keep the hot path cheap).
    """

    def __init__(self, tasks: list[AsyncTask], *, stamped: bool) -> None:
        self.tasks = tasks
        self.state = bytearray(len(tasks))
        self.results: dict[str, Any] = {}
        self.errors: dict[int, BaseException] = {}
        self.skipped: list[dict[str, str]] = []
        self.cancelled: list[dict[str, str]] = []
        self.unresolved = len(tasks)
        self.attempts: dict[int, int] = {}
        self.started: dict[int, float] | None = {} if stamped else None

    def succeed(self, i: int, result: Any) -> None:
        """Record that task ``i`` succeeded with ``result``."""
        self.state[i] = SUCCEEDED
        self.results[self.tasks[i].task_id] = result
        self.unresolved -= 1

    def fail(self, i: int, exc: BaseException) -> None:
        """Record that task ``i`` failed for good with ``exc``."""
        self.state[i] = FAILED
        self.errors[i] = exc
        self.unresolved -= 1

    def skip(self, i: int, blocked_by: str) -> None:
        """Record that task ``i`` will not run because task ``blocked_by`` failed."""
        self.state[i] = SKIPPED
        self.unresolved -= 1
        self.skipped.append({"task_id": self.tasks[i].task_id, "blocked_by": blocked_by})

    def cancel(self, i: int, reason: str) -> None:
        """Record that task ``i`` was cancelled by the run (running, waiting or not started)."""
        if self.state[i] != RUNNING and i in self.attempts:
            # It waited for another attempt that will never be made.
            self.attempts[i] -= 1
        self.state[i] = CANCELLED
        self.unresolved -= 1
        self.cancelled.append({"task_id": self.tasks[i].task_id, "reason": reason})

    def outcome(
        self,
        i: int,
        status: str,
        result: Any = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> TaskOutcome:
        """Build the outcome of task ``i``, ended now (only when ``stamped``).

        Args:
            i: The task's position.
            status: One of :data:`~command_handlers._engine.tasks.STATUSES`.
            result: The result, on success.
            error: The error's text, or the reason it was skipped or cancelled.
            error_type: The error's class name, when it failed.

        Returns:
            The outcome.
        """
        started = self.started.get(i) if self.started is not None else None
        return TaskOutcome(
            status=status,
            result=result,
            error=error,
            error_type=error_type,
            attempts=0 if started is None else self.attempts.get(i, 1),
            started=started,
            finished=time.time(),
        )

    def summary(self) -> dict[str, Any]:
        """Build the result dict of the run.

        Returns:
            ``total``, ``success``, ``failed``, ``skipped``, ``cancelled``,
            ``results`` (input order), ``errors``, ``skipped_tasks`` and ``cancelled_tasks``.
        """
        errors = []
        for i in sorted(self.errors):
            exc = self.errors[i]
            task = self.tasks[i]
            errors.append(
                {
                    "task_id": task.task_id,
                    "agent_name": task.agent_name,
                    "error": error_text(exc),
                    "error_type": type(exc).__name__,
                    "attempts": self.attempts.get(i, 1),
                }
            )
        results = self.results
        done = SUCCEEDED
        succeeded = [
            results[task.task_id] for task, state in zip(self.tasks, self.state) if state == done
        ]
        return {
            "total": len(self.tasks),
            "success": len(succeeded),
            "failed": len(errors),
            "skipped": len(self.skipped),
            "cancelled": len(self.cancelled),
            "results": succeeded,
            "errors": errors,
            "skipped_tasks": list(self.skipped),
            "cancelled_tasks": list(self.cancelled),
        }
