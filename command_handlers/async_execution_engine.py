"""Run many slow async calls at once, with a concurrency limit and dependencies.

The engine of story 10.2.1, standard library only. It knows nothing of canvases,
agents or plugins: it takes :class:`AsyncTask` objects and an ``executor_func``
(``async def executor(task) -> dict``) and runs them.

* :meth:`AsyncExecutionEngine.execute_parallel` runs every task, at most
  ``max_concurrency`` at once, higher ``priority`` first.
* :meth:`AsyncExecutionEngine.execute_with_dependency_awareness` also starts a
  task only once every task it depends on has succeeded, the moment the last
  one does; a task whose dependency failed is skipped, never awaited forever.

Both return a summary dict::

    {"total": 3, "success": 2, "failed": 1, "skipped": 0, "cancelled": 0,
     "results": [...],            # results of the tasks that succeeded, input order
     "errors": [{"task_id", "agent_name", "error", "error_type", "attempts"}],
     "skipped_tasks": [{"task_id", "blocked_by"}],
     "cancelled_tasks": [{"task_id", "reason"}]}

and, with ``end_callback``, tell of each task's :class:`TaskOutcome` as it ends.
A :class:`RunPolicy` adds per-task timeouts, retries with backoff, rate limits,
fail-fast and a graceful stop.

This module is the story's public face; its parts live in the private package
``command_handlers._engine`` (one module per concern) and are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from command_handlers._engine._compat import BINDS_TO_LOOP, new_semaphore, rebind_semaphore
from command_handlers._engine.callbacks import notify
from command_handlers._engine.graph import topological_order, validate_tasks
from command_handlers._engine.limits import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DEPENDENCY_LIMIT,
    MAX_CONCURRENCY,
    MIN_CONCURRENCY,
    check_agent_limits,
    check_limit,
)
from command_handlers._engine.policy import RunPolicy
from command_handlers._engine.quotas import Budget, StartLimit, TokenRate
from command_handlers._engine.rates import RateLimit
from command_handlers._engine.retry import RetryPolicy, is_retryable, retry_after
from command_handlers._engine.scheduler import Run
from command_handlers._engine.tasks import (
    STATUSES,
    AsyncTask,
    DependencyCycleError,
    EndCallback,
    ExecutorFunc,
    ProgressCallback,
    RetryCallback,
    StartCallback,
    TaskOutcome,
    TaskTimeoutError,
    error_text,
)
from command_handlers._engine.workers import Workers, execute_one

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEPENDENCY_LIMIT",
    "MAX_CONCURRENCY",
    "MIN_CONCURRENCY",
    "STATUSES",
    "AsyncExecutionEngine",
    "AsyncTask",
    "Budget",
    "DependencyCycleError",
    "EndCallback",
    "ExecutorFunc",
    "ProgressCallback",
    "RateLimit",
    "RetryCallback",
    "RetryPolicy",
    "RunPolicy",
    "StartCallback",
    "StartLimit",
    "TaskOutcome",
    "TaskTimeoutError",
    "TokenRate",
    "check_limit",
    "is_retryable",
    "retry_after",
]

logger = logging.getLogger("command_handlers.engine")

#: The keys of each entry of :attr:`AsyncExecutionEngine.failed_tasks`.
_FAILED_KEYS = ("task_id", "agent_name", "error", "error_type")


class AsyncExecutionEngine:
    """Runs :class:`AsyncTask` objects concurrently under a limit.

    One engine may run many times, also concurrently from two coroutines; its
    :attr:`semaphore` bounds the tasks running across all of its runs.

    Attributes:
        max_concurrency: At most this many tasks run at once (1-20).
        dependency_limit: At most this many tasks run at once in the
            dependency-aware mode (the story's task-level limit of 5), never
            more than ``max_concurrency``.
        semaphore: ``asyncio.Semaphore(max_concurrency)``; each of a run's
            workers holds one slot while it runs tasks.
        active_tasks: task id -> the asyncio task running it, while it runs.
        completed_tasks: The results of the tasks that succeeded in the last
            finished run, in input order (the summary's ``results``).
        failed_tasks: One ``{"task_id", "agent_name", "error", "error_type"}``
            per task that failed in the last finished run, in input order.
    """

    def __init__(
        self,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        *,
        dependency_limit: int = DEFAULT_DEPENDENCY_LIMIT,
    ) -> None:
        """Create an engine.

        Args:
            max_concurrency: How many tasks may run at once, an int from 1 to 20.
            dependency_limit: How many tasks the dependency-aware mode runs at
                once, an int from 1 to 20 (capped by ``max_concurrency``).

        Raises:
            TypeError: A limit is not an int (``bool`` is refused too).
            ValueError: A limit is outside 1-20.
        """
        self.max_concurrency = check_limit("max_concurrency", max_concurrency)
        self.dependency_limit = check_limit("dependency_limit", dependency_limit)
        self.semaphore = new_semaphore(max_concurrency)
        self.active_tasks: dict[str, asyncio.Task[Any]] = {}
        # Replaced, never extended, when a run finishes: one engine may run many times.
        self.completed_tasks: list[Any] = []
        self.failed_tasks: list[dict[str, str]] = []

    async def execute_parallel(
        self,
        tasks: Sequence[AsyncTask],
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None = None,
        *,
        agent_limits: Mapping[str, int] | None = None,
        start_callback: StartCallback | None = None,
        policy: RunPolicy | None = None,
        end_callback: EndCallback | None = None,
    ) -> dict[str, Any]:
        """Run every task, at most ``max_concurrency`` at once; dependencies are ignored.

        A failing task never stops the others (unless ``policy.fail_fast``).
        Among tasks waiting for a slot, higher ``priority`` starts first, then
        input order.

        Args:
            tasks: The tasks to run; ids must be unique.
            executor_func: ``async def executor(task) -> dict`` doing one task's work.
            progress_callback: Called once per task as it ends, as
                ``callback(task_id, result, error)``: ``error`` is the error
                text (``None`` on success), ``result`` is ``None`` otherwise.
                A plain function or a coroutine function; if it raises, the
                error is logged and the run goes on.
            agent_limits: agent name -> how many of that agent's tasks may
                run at once, on top of ``max_concurrency``.
            start_callback: Called with each task as it starts (sync or async).
            policy: Timeouts, retries, rate limits, fail-fast and stop.
            end_callback: Called exactly once per task as it ends, whatever
                became of it, right after ``progress_callback``, as
                ``callback(task, outcome)`` with a :class:`TaskOutcome`. Sync
                or async; if it raises, the error is logged and the run goes on.
                Tasks left unfinished when the run itself is cancelled are
                not reported.

        Returns:
            The summary dict: ``total``, ``success``, ``failed``, ``skipped``
            (always 0 here), ``cancelled``, ``results`` (successful results in
            input order), ``errors`` (``{"task_id", "agent_name", "error",
            "error_type", "attempts"}``), ``skipped_tasks`` and ``cancelled_tasks``.

        Raises:
            ValueError: ``tasks`` is empty, has duplicate ids, or an agent limit is not positive.
            TypeError: A task is not an :class:`AsyncTask`, or ``executor_func``
                is not callable.
            asyncio.CancelledError: The run was cancelled; every task it
                started has been cancelled and awaited.
        """
        return await self._run(
            tasks,
            executor_func,
            progress_callback,
            dependency_aware=False,
            agent_limits=agent_limits,
            start_callback=start_callback,
            policy=policy,
            end_callback=end_callback,
        )

    async def execute_with_dependency_awareness(
        self,
        tasks: Sequence[AsyncTask],
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None = None,
        *,
        agent_limits: Mapping[str, int] | None = None,
        start_callback: StartCallback | None = None,
        policy: RunPolicy | None = None,
        end_callback: EndCallback | None = None,
    ) -> dict[str, Any]:
        """Run every task once all of its dependencies have succeeded.

        A task starts the moment its last dependency succeeds (no polling).
        Independent tasks run concurrently, at most ``dependency_limit`` (and
        never more than ``max_concurrency``) at once. Among ready tasks, higher
        ``priority`` starts first, then the task with the longest chain of
        dependents waiting on it, then input order. When a task fails, every
        task that depends on it, directly or not, is skipped and reported with
        the failed task's id (unless the failed task has ``allow_failure``);
        the progress callback hears of it too.

        Args:
            tasks: The tasks to run; ids unique, dependencies naming tasks in the list.
            executor_func: ``async def executor(task) -> dict`` doing one task's work.
            progress_callback: As for :meth:`execute_parallel`; a skipped
                task's error text says which dependency failed.
            agent_limits: agent name -> how many of that agent's tasks may run at once.
            start_callback: Called with each task as it starts (sync or async).
            policy: Timeouts, retries, rate limits, fail-fast and stop.
            end_callback: As for :meth:`execute_parallel`; a skipped task's
                outcome has status ``"skipped"`` and says which dependency failed.

        Returns:
            The summary dict, as for :meth:`execute_parallel`, with
            ``total == success + failed + skipped + cancelled``.

        Raises:
            ValueError: ``tasks`` is empty, has duplicate ids, a task depends
                on itself or on an unknown id, or an agent limit is not positive.
            DependencyCycleError: The dependencies form a cycle (a ``ValueError``).
            TypeError: A task is not an :class:`AsyncTask`, or ``executor_func``
                is not callable.
            asyncio.CancelledError: The run was cancelled; every task it
                started has been cancelled and awaited.
        """
        return await self._run(
            tasks,
            executor_func,
            progress_callback,
            dependency_aware=True,
            agent_limits=agent_limits,
            start_callback=start_callback,
            policy=policy,
            end_callback=end_callback,
        )

    def _topological_sort(self, tasks: Sequence[AsyncTask]) -> list[AsyncTask]:
        """Order tasks so that each comes after every task it depends on.

        Kahn's algorithm; among tasks whose dependencies are all placed,
        higher ``priority`` first, then input order.

        Args:
            tasks: The tasks to order.

        Returns:
            The same tasks, in a valid execution order.

        Raises:
            ValueError: Duplicate ids, a self-dependency or an unknown dependency.
            DependencyCycleError: The dependencies form a cycle.
            TypeError: A task is not an :class:`AsyncTask`.
        """
        return topological_order(tasks)

    async def _execute_with_semaphore(
        self,
        task: AsyncTask,
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None,
    ) -> Any:
        """Run one task while holding a slot of :attr:`semaphore`.

        Reports the result, or the exception's text, to ``progress_callback``
        and always removes the task from :attr:`active_tasks` when it ends.
        (A run's workers hold one slot each for as long as they work, and run
        their tasks with the same bookkeeping.)

        Args:
            task: The task to run.
            executor_func: The executor to call with it.
            progress_callback: Told of the outcome (sync or async; errors logged).

        Returns:
            Whatever ``executor_func`` returned.

        Raises:
            TypeError: ``executor_func`` returned something that is not awaitable.
            Exception: Whatever ``executor_func`` raised, re-raised after reporting.
        """
        async with self.semaphore:
            try:
                result = await execute_one(
                    task, executor_func, asyncio.current_task(), task.timeout, self.active_tasks
                )
            except Exception as exc:
                await notify(progress_callback, task.task_id, task.task_id, None, error_text(exc))
                raise
            await notify(progress_callback, task.task_id, task.task_id, result, None)
            return result

    async def _run(
        self,
        tasks: Sequence[AsyncTask],
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None,
        *,
        dependency_aware: bool,
        agent_limits: Mapping[str, int] | None,
        start_callback: StartCallback | None,
        policy: RunPolicy | None,
        end_callback: EndCallback | None,
    ) -> dict[str, Any]:
        task_list = validate_tasks(tasks, dependency_aware=dependency_aware)
        if not callable(executor_func):
            raise TypeError("executor_func must be callable")
        loop = asyncio.get_running_loop()
        if BINDS_TO_LOOP:  # pragma: no cover - Python 3.9 only
            self.semaphore = rebind_semaphore(self.semaphore, self.max_concurrency, loop)
        run = Run(
            task_list,
            dependency_aware=dependency_aware,
            agent_limits=check_agent_limits(agent_limits),
            policy=policy or RunPolicy(),
            loop=loop,
            stamped=end_callback is not None,
        )
        limit = (
            min(self.max_concurrency, self.dependency_limit)
            if dependency_aware
            else self.max_concurrency
        )
        logger.info(
            "run of %d tasks started (%s, limit %d)",
            len(task_list),
            "dependency-aware" if dependency_aware else "parallel",
            limit,
        )
        workers = Workers(
            run,
            self.semaphore,
            self.active_tasks,
            executor_func,
            progress_callback,
            start_callback,
            end_callback,
        )
        await workers.run_all(min(limit, len(task_list)))
        summary = run.ledger.summary()
        self.completed_tasks = summary["results"]
        self.failed_tasks = [
            {key: error[key] for key in _FAILED_KEYS} for error in summary["errors"]
        ]
        logger.info(
            "run finished: %d succeeded, %d failed, %d skipped, %d cancelled",
            summary["success"],
            summary["failed"],
            summary["skipped"],
            summary["cancelled"],
        )
        return summary
