"""The default ``execute_tasks``: the async execution engine."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Callable

from command_handlers import hookimpl
from command_handlers.async_execution_engine import AsyncExecutionEngine, AsyncTask, RunPolicy


@hookimpl(trylast=True)
def execute_tasks(
    tasks: Sequence[AsyncTask],
    executor: Callable[[AsyncTask], Awaitable[Any]],
    dependency_aware: bool,
    max_concurrency: int,
    dependency_limit: int,
    agent_limits: Mapping[str, int],
    progress_callback: Callable[[str, Any, str | None], Any] | None,
    start_callback: Callable[[AsyncTask], Any] | None,
    end_callback: Callable[[AsyncTask, Any], Any] | None,
    policy: RunPolicy | None,
) -> Awaitable[dict[str, Any]]:
    """Run the tasks on a fresh :class:`AsyncExecutionEngine`.

    Args:
        tasks: The tasks.
        executor: Routes a task to its agent.
        dependency_aware: Use the dependency-aware mode.
        max_concurrency: The run's limit.
        dependency_limit: The dependency-aware mode's limit.
        agent_limits: Per-agent limits.
        progress_callback: Told of each finished task.
        start_callback: Told of each started task.
        end_callback: Told of each task's outcome.
        policy: Timeouts, retries, rates, fail-fast and stop.

    Returns:
        The engine's run, to be awaited for the summary.
    """
    engine = AsyncExecutionEngine(max_concurrency, dependency_limit=dependency_limit)
    run = engine.execute_with_dependency_awareness if dependency_aware else engine.execute_parallel
    return run(
        tasks,
        executor,
        progress_callback,
        agent_limits=agent_limits,
        start_callback=start_callback,
        end_callback=end_callback,
        policy=policy,
    )
