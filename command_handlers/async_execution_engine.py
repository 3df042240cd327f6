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

    {"total": 3, "success": 2, "failed": 1, "skipped": 0,
     "results": [...],            # results of the tasks that succeeded, input order
     "errors": [{"task_id", "agent_name", "error", "error_type"}],
     "skipped_tasks": [{"task_id", "blocked_by"}]}

Scheduling uses one worker coroutine per slot, so memory stays flat however
many tasks wait, and no task outlives the call that started it: cancelling a
run cancels and awaits every task the run started.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, Callable, Dict, List, Optional, Union  # noqa: UP035

__all__ = [
    "AsyncExecutionEngine",
    "AsyncTask",
    "DependencyCycleError",
    "ExecutorFunc",
    "ProgressCallback",
    "StartCallback",
]

logger = logging.getLogger("command_handlers.engine")

MIN_CONCURRENCY = 1
MAX_CONCURRENCY = 20
DEFAULT_CONCURRENCY = 12
#: The story's task-level limit for the dependency-aware mode.
DEFAULT_DEPENDENCY_LIMIT = 5


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
    """

    task_id: str
    agent_name: str
    # Spelled as in the story, so that get_type_hints() works on Python 3.9 too.
    node_data: Dict[str, Any]  # noqa: UP006
    priority: int = 0
    dependencies: Optional[List[str]] = None  # noqa: UP006, UP045


ExecutorFunc = Callable[[AsyncTask], Awaitable[Any]]
ProgressCallback = Callable[[str, Optional[Any], Optional[str]], Union[Awaitable[None], None]]
StartCallback = Callable[[AsyncTask], Union[Awaitable[None], None]]


class DependencyCycleError(ValueError):
    """The tasks' dependencies form a cycle.

    Attributes:
        cycle: The task ids on the cycle, the first id repeated at the end.
    """

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle))


def _check_limit(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not MIN_CONCURRENCY <= value <= MAX_CONCURRENCY:
        raise ValueError(
            f"{name} must be between {MIN_CONCURRENCY} and {MAX_CONCURRENCY}, got {value}"
        )
    return value


def _error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# Outcome states of a task within one run.
_PENDING, _RUNNING, _SUCCEEDED, _FAILED, _SKIPPED = range(5)


class _Run:
    """The state of one run: what is ready, running and done."""

    def __init__(
        self,
        tasks: list[AsyncTask],
        *,
        dependency_aware: bool,
        agent_limits: Mapping[str, int],
    ) -> None:
        self.tasks = tasks
        count = len(tasks)
        self.state = bytearray(count)  # one _PENDING.._SKIPPED byte per task
        self.outcomes: dict[str, Any] = {}  # task id -> result, of the tasks that succeeded
        self.errors: dict[int, BaseException] = {}
        self.skipped: list[dict[str, str]] = []
        self.unresolved = count
        self.dependency_aware = dependency_aware
        self.agent_limits = dict(agent_limits)
        self.agent_running = dict.fromkeys(self.agent_limits, 0)
        self.idle: list[asyncio.Future[None]] = []
        self.dependents: Sequence[Sequence[int]] = ()
        self.waiting_on: list[int] = []
        # A flat run without agent limits takes its tasks in one fixed order.
        self.order: Sequence[int] | None = None
        self.position = 0
        if not dependency_aware and not self.agent_limits:
            first = tasks[0].priority
            if all(task.priority == first for task in tasks):
                self.order = range(count)
            else:  # sorted() is stable: equal priorities keep input order
                self.order = sorted(range(count), key=lambda i: -tasks[i].priority)
            return
        self._build_heaps(dependency_aware)

    def _build_heaps(self, dependency_aware: bool) -> None:
        tasks = self.tasks
        count = len(tasks)
        self.waiting_on = [0] * count
        # Heap key: one int, smaller first; the task's index is key % count.
        ranks = [0] * count
        if dependency_aware:
            index = {task.task_id: i for i, task in enumerate(tasks)}
            self.dependents, self.waiting_on = _dependency_graph(tasks, index)
            ranks = _chain_lengths(self.dependents, _kahn_order(tasks, self.dependents))
        top_priority = max(task.priority for task in tasks)
        top_rank = max(ranks)
        self.keys = [
            ((top_priority - task.priority) * (top_rank + 1) + top_rank - ranks[i]) * count + i
            for i, task in enumerate(tasks)
        ]
        # One ready heap per agent that has a limit, one (None) for all others.
        self.ready: dict[str | None, list[int]] = {None: []}
        for name in self.agent_limits:
            self.ready[name] = []
        for i in range(count):
            if self.waiting_on[i] == 0:
                self.ready[self._bucket(i)].append(self.keys[i])
        for heap in self.ready.values():
            heapq.heapify(heap)

    def _bucket(self, i: int) -> str | None:
        name = self.tasks[i].agent_name
        return name if name in self.agent_limits else None

    def next_ready(self) -> int | None:
        """Take the best ready task whose agent has a free slot, if any."""
        order = self.order
        if order is not None:
            position = self.position
            if position < len(order):
                self.position = position + 1
                return order[position]
            return None
        best: str | None = None
        best_key = -1
        for bucket, heap in self.ready.items():
            if not heap:
                continue
            if bucket is not None and self.agent_running[bucket] >= self.agent_limits[bucket]:
                continue
            if best_key < 0 or heap[0] < best_key:
                best, best_key = bucket, heap[0]
        if best_key < 0:
            return None
        heapq.heappop(self.ready[best])
        i = best_key % len(self.tasks)
        self.state[i] = _RUNNING
        if best is not None:
            self.agent_running[best] += 1
        return i

    def succeed(self, i: int, result: Any) -> None:
        """Record a success and make ready the dependents it was the last wait of."""
        self.state[i] = _SUCCEEDED
        self.outcomes[self.tasks[i].task_id] = result
        self.unresolved -= 1
        if self.agent_limits:
            self._release_agent(i)
        if self.dependency_aware:
            for child in self.dependents[i]:
                self.waiting_on[child] -= 1
                if self.waiting_on[child] == 0 and self.state[child] == _PENDING:
                    heapq.heappush(self.ready[self._bucket(child)], self.keys[child])

    def fail(self, i: int, exc: BaseException) -> list[int]:
        """Record a failure; skip every task that depends on it, directly or not.

        Returns:
            The indices of the tasks skipped because of this failure.
        """
        self.state[i] = _FAILED
        self.errors[i] = exc
        self.unresolved -= 1
        if self.agent_limits:
            self._release_agent(i)
        if not self.dependency_aware:
            return []
        blocked_by = self.tasks[i].task_id
        newly_skipped: list[int] = []
        stack = list(self.dependents[i])
        while stack:
            child = stack.pop()
            if self.state[child] != _PENDING:
                continue
            self.state[child] = _SKIPPED
            self.unresolved -= 1
            self.skipped.append({"task_id": self.tasks[child].task_id, "blocked_by": blocked_by})
            newly_skipped.append(child)
            stack.extend(self.dependents[child])
        return newly_skipped

    def _release_agent(self, i: int) -> None:
        bucket = self._bucket(i)
        if bucket is not None:
            self.agent_running[bucket] -= 1

    def wake_idle(self) -> None:
        """Wake every worker that waits for work (or for the end of the run)."""
        idle, self.idle = self.idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)

    def summary(self) -> dict[str, Any]:
        """Build the result dict of the run."""
        errors = []
        for i in sorted(self.errors):
            exc = self.errors[i]
            task = self.tasks[i]
            errors.append(
                {
                    "task_id": task.task_id,
                    "agent_name": task.agent_name,
                    "error": _error_text(exc),
                    "error_type": type(exc).__name__,
                }
            )
        outcomes = self.outcomes
        results = [
            outcomes[task.task_id]
            for task, state in zip(self.tasks, self.state)
            if state == _SUCCEEDED
        ]
        return {
            "total": len(self.tasks),
            "success": len(results),
            "failed": len(errors),
            "skipped": len(self.skipped),
            "results": results,
            "errors": errors,
            "skipped_tasks": list(self.skipped),
        }


def _dependency_graph(
    tasks: list[AsyncTask], index: Mapping[str, int]
) -> tuple[list[list[int]], list[int]]:
    """Return, per task index, its dependents and how many dependencies it waits on."""
    dependents: list[list[int]] = [[] for _ in tasks]
    waiting_on = [0] * len(tasks)
    for i, task in enumerate(tasks):
        for dep in task.dependencies or []:
            dependents[index[dep]].append(i)
            waiting_on[i] += 1
    return dependents, waiting_on


def _kahn_order(tasks: list[AsyncTask], dependents: Sequence[Sequence[int]]) -> list[int]:
    """Order task indices so that every task comes after its dependencies.

    Ties are broken by higher priority, then input order.

    Raises:
        DependencyCycleError: The dependencies form a cycle.
    """
    waiting_on = [len(task.dependencies or []) for task in tasks]
    heap = [(-task.priority, i) for i, task in enumerate(tasks) if waiting_on[i] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for child in dependents[i]:
            waiting_on[child] -= 1
            if waiting_on[child] == 0:
                heapq.heappush(heap, (-tasks[child].priority, child))
    if len(order) < len(tasks):
        index = {task.task_id: i for i, task in enumerate(tasks)}
        raise DependencyCycleError(_find_cycle(tasks, index, waiting_on))
    return order


def _find_cycle(
    tasks: list[AsyncTask], index: Mapping[str, int], waiting_on: list[int]
) -> list[str]:
    """Walk dependencies among the tasks Kahn could not order until one repeats."""
    start = next(i for i, left in enumerate(waiting_on) if left > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    current = start
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(
            index[dep] for dep in tasks[current].dependencies or [] if waiting_on[index[dep]] > 0
        )
    cycle = path[seen[current] :]
    # Show the cycle in the order work would flow: dependency first.
    ids = [tasks[i].task_id for i in reversed(cycle)]
    return ids + ids[:1]


def _chain_lengths(dependents: Sequence[Sequence[int]], order: list[int]) -> list[int]:
    """Length of the longest chain of dependents hanging on each task (itself included)."""
    lengths = [1] * len(dependents)
    for i in reversed(order):
        if dependents[i]:
            lengths[i] = 1 + max(lengths[child] for child in dependents[i])
    return lengths


def _call(callback: Callable[..., Any], task_id: str, *args: Any) -> Awaitable[Any] | None:
    """Call a sync or async callback; return what is left to await, log what it raised."""
    try:
        outcome = callback(*args)
    except Exception:  # pylint: disable=broad-exception-caught
        logger.exception("callback %r for task %r raised; the run goes on", callback, task_id)
        return None
    if outcome is None or not inspect.isawaitable(outcome):
        return None
    return outcome  # type: ignore[no-any-return]


async def _settle(pending: Awaitable[Any], task_id: str) -> None:
    """Await what an async callback returned; log and swallow anything it raises."""
    try:
        await pending
    except Exception:  # pylint: disable=broad-exception-caught
        logger.exception("callback for task %r raised; the run goes on", task_id)


async def _notify(callback: Callable[..., Any] | None, task_id: str, *args: Any) -> None:
    """Call a sync or async callback, if any; log and swallow anything it raises."""
    if callback is None:
        return
    pending = _call(callback, task_id, *args)
    if pending is not None:
        await _settle(pending, task_id)


class AsyncExecutionEngine:
    """Runs :class:`AsyncTask` objects concurrently under a limit.

    One engine may run many times, also concurrently from two coroutines; its
    :attr:`semaphore` bounds the tasks running across all of its runs.

    Attributes:
        max_concurrency: At most this many tasks run at once (1-20).
        dependency_limit: At most this many tasks run at once in the
            dependency-aware mode (the story's task-level limit of 5), never
            more than ``max_concurrency``.
        semaphore: ``asyncio.Semaphore(max_concurrency)``, held by each running task.
        active_tasks: task id -> the asyncio task running it, while it runs.
        completed_tasks: task id -> result, of the last finished run.
        failed_tasks: task id -> error text, of the last finished run.
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
        self.max_concurrency = _check_limit("max_concurrency", max_concurrency)
        self.dependency_limit = _check_limit("dependency_limit", dependency_limit)
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.active_tasks: dict[str, asyncio.Task[Any]] = {}
        self.completed_tasks: dict[str, Any] = {}
        self.failed_tasks: dict[str, str] = {}

    async def execute_parallel(
        self,
        tasks: Sequence[AsyncTask],
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None = None,
        *,
        agent_limits: Mapping[str, int] | None = None,
        start_callback: StartCallback | None = None,
    ) -> dict[str, Any]:
        """Run every task, at most ``max_concurrency`` at once; dependencies are ignored.

        A failing task never stops the others. Among tasks waiting for a
        slot, higher ``priority`` starts first, then input order.

        Args:
            tasks: The tasks to run; ids must be unique.
            executor_func: ``async def executor(task) -> dict`` doing one task's work.
            progress_callback: Called once per finished task as
                ``callback(task_id, result, error)``: ``error`` is the error
                text (``None`` on success), ``result`` is ``None`` on failure.
                A plain function or a coroutine function; if it raises, the
                error is logged and the run goes on.
            agent_limits: agent name -> how many of that agent's tasks may
                run at once, on top of ``max_concurrency``.
            start_callback: Called with each task as it starts (sync or async).

        Returns:
            The summary dict: ``total``, ``success``, ``failed``, ``skipped``
            (always 0 here), ``results`` (successful results in input order),
            ``errors`` (``{"task_id", "agent_name", "error", "error_type"}``)
            and ``skipped_tasks``.

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
        )

    async def execute_with_dependency_awareness(
        self,
        tasks: Sequence[AsyncTask],
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None = None,
        *,
        agent_limits: Mapping[str, int] | None = None,
        start_callback: StartCallback | None = None,
    ) -> dict[str, Any]:
        """Run every task once all of its dependencies have succeeded.

        A task starts the moment its last dependency succeeds (no polling).
        Independent tasks run concurrently, at most ``dependency_limit`` (and
        never more than ``max_concurrency``) at once. Among ready tasks, higher
        ``priority`` starts first, then the task with the longest chain of
        dependents waiting on it, then input order. When a task fails, every
        task that depends on it, directly or not, is skipped and reported with
        the failed task's id; the progress callback hears of it too.

        Args:
            tasks: The tasks to run; ids unique, dependencies naming tasks in the list.
            executor_func: ``async def executor(task) -> dict`` doing one task's work.
            progress_callback: As for :meth:`execute_parallel`; a skipped
                task's error text says which dependency failed.
            agent_limits: agent name -> how many of that agent's tasks may run at once.
            start_callback: Called with each task as it starts (sync or async).

        Returns:
            The summary dict, as for :meth:`execute_parallel`, with
            ``total == success + failed + skipped``.

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
        task_list = _validate_tasks(tasks, dependency_aware=True)
        index = {task.task_id: i for i, task in enumerate(task_list)}
        dependents, _ = _dependency_graph(task_list, index)
        return [task_list[i] for i in _kahn_order(task_list, dependents)]

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
        their tasks with the same reporting.)

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
            return await self._execute_one(
                task, executor_func, progress_callback, asyncio.current_task()
            )

    async def _execute_one(
        self,
        task: AsyncTask,
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None,
        current: asyncio.Task[Any] | None,
    ) -> Any:
        """Run one task (the caller holds a slot), report it, keep active_tasks right."""
        task_id = task.task_id
        active = self.active_tasks
        if current is not None:
            active[task_id] = current
        try:
            pending = executor_func(task)
            if type(pending) is not CoroutineType and not inspect.isawaitable(pending):
                raise TypeError(
                    f"executor_func returned {type(pending).__name__}, not an awaitable,"
                    f" for task {task_id!r}"
                )
            result = await pending
        except Exception as exc:
            logger.info("task %r failed: %s: %s", task_id, type(exc).__name__, exc)
            if progress_callback is not None:
                await _notify(progress_callback, task_id, task_id, None, _error_text(exc))
            raise
        finally:
            if active.get(task_id) is current:
                del active[task_id]
        if progress_callback is not None:
            # The hot path: a sync callback costs one call, no coroutine.
            reported = _call(progress_callback, task_id, task_id, result, None)
            if reported is not None:
                try:
                    await reported
                except Exception:  # pylint: disable=broad-exception-caught
                    logger.exception("callback for task %r raised; the run goes on", task_id)
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
    ) -> dict[str, Any]:
        task_list = _validate_tasks(tasks, dependency_aware=dependency_aware)
        if not callable(executor_func):
            raise TypeError("executor_func must be callable")
        limits = _validate_agent_limits(agent_limits)
        run = _Run(task_list, dependency_aware=dependency_aware, agent_limits=limits)
        limit = (
            min(self.max_concurrency, self.dependency_limit)
            if dependency_aware
            else (self.max_concurrency)
        )
        mode = "dependency-aware" if dependency_aware else "parallel"
        logger.info("run of %d tasks started (%s, limit %d)", len(task_list), mode, limit)
        workers = [
            asyncio.ensure_future(
                self._worker(run, executor_func, progress_callback, start_callback)
            )
            for _ in range(min(limit, len(task_list)))
        ]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            await _cancel_and_wait(workers)
            raise
        summary = run.summary()
        self.completed_tasks = run.outcomes
        self.failed_tasks = {error["task_id"]: error["error"] for error in summary["errors"]}
        logger.info(
            "run finished: %d succeeded, %d failed, %d skipped",
            summary["success"],
            summary["failed"],
            summary["skipped"],
        )
        return summary

    async def _worker(
        self,
        run: _Run,
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None,
        start_callback: StartCallback | None,
    ) -> None:
        """Hold one slot and take ready tasks one at a time until the run is resolved."""
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        semaphore = self.semaphore
        await semaphore.acquire()
        held = True
        try:
            while run.unresolved:
                i = run.next_ready()
                if i is None:
                    # Nothing ready for now: give the slot back while waiting.
                    semaphore.release()
                    held = False
                    waiter = loop.create_future()
                    run.idle.append(waiter)
                    await waiter
                    await semaphore.acquire()
                    held = True
                    continue
                task = run.tasks[i]
                if start_callback is not None:
                    started = _call(start_callback, task.task_id, task)
                    if started is not None:
                        await _settle(started, task.task_id)
                try:
                    result = await self._execute_one(
                        task, executor_func, progress_callback, current
                    )
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    for child in run.fail(i, exc):
                        skipped = run.tasks[child]
                        await _notify(
                            progress_callback,
                            skipped.task_id,
                            skipped.task_id,
                            None,
                            f"skipped: dependency {task.task_id!r} failed",
                        )
                else:
                    run.succeed(i, result)
                # New work, a freed agent slot or the end of the run: let idle workers look.
                if run.idle:
                    run.wake_idle()
        finally:
            if held:
                semaphore.release()


async def _cancel_and_wait(workers: Sequence[asyncio.Future[None]]) -> None:
    """Cancel the workers and wait until each has really finished."""
    for worker in workers:
        worker.cancel()
    pending = {worker for worker in workers if not worker.done()}
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            for worker in pending:
                worker.cancel()
    for worker in workers:
        if not worker.cancelled():
            worker.exception()  # mark retrieved: the caller's exception is the one that counts


def _validate_tasks(tasks: Sequence[AsyncTask], *, dependency_aware: bool) -> list[AsyncTask]:
    """Check the tasks before anything runs; return them as a list."""
    task_list = tasks if type(tasks) is list else list(tasks)
    if not task_list:
        raise ValueError("tasks list cannot be empty")
    seen: dict[str, int] = {}
    for position, task in enumerate(task_list):
        if not isinstance(task, AsyncTask):
            raise TypeError(f"tasks[{position}] is not an AsyncTask (got {type(task).__name__})")
        if task.task_id in seen:
            raise ValueError(
                f"duplicate task_id {task.task_id!r} (tasks[{seen[task.task_id]}] and"
                f" tasks[{position}])"
            )
        seen[task.task_id] = position
    if dependency_aware:
        for task in task_list:
            for dep in task.dependencies or []:
                if dep == task.task_id:
                    raise ValueError(f"task {task.task_id!r} depends on itself")
                if dep not in seen:
                    raise ValueError(f"task {task.task_id!r} depends on unknown task {dep!r}")
    return task_list


def _validate_agent_limits(agent_limits: Mapping[str, int] | None) -> dict[str, int]:
    limits = dict(agent_limits or {})
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"limit of agent {name!r} must be a positive int, got {value!r}")
    return limits
