"""The worker coroutines of a run: taking tasks, timeouts, outcomes, cancelling and waiting.

Scheduling uses one worker coroutine per slot, so memory stays flat however
many tasks wait, and no task outlives the call that started it: cancelling a
run cancels and awaits every task the run started.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Sequence
from types import CoroutineType
from typing import Any

from command_handlers._engine._compat import uncancel
from command_handlers._engine.callbacks import call, notify
from command_handlers._engine.scheduler import Run
from command_handlers._engine.tasks import (
    AsyncTask,
    EndCallback,
    ExecutorFunc,
    ProgressCallback,
    StartCallback,
    TaskTimeoutError,
    error_text,
)

__all__ = ["Cancellation", "Workers", "cancel_and_wait", "execute_one", "with_timeout"]

logger = logging.getLogger("command_handlers.engine")


async def execute_one(
    task: AsyncTask,
    executor_func: ExecutorFunc,
    current: asyncio.Task[Any] | None,
    timeout: float | None,
    active: dict[str, asyncio.Task[Any]],
) -> Any:
    """Run one task's executor (the caller holds a slot), listed in ``active`` meanwhile.

    Args:
        task: The task.
        executor_func: The executor.
        current: The asyncio task running this (listed in ``active``, cancelled on timeout).
        timeout: Seconds the executor may take, or ``None``.
        active: The engine's ``active_tasks``.

    Returns:
        What the executor returned.

    Raises:
        TypeError: The executor returned something that is not awaitable.
        TaskTimeoutError: The executor took longer than ``timeout``.
        Exception: Whatever the executor raised.
    """
    task_id = task.task_id
    if current is not None:
        active[task_id] = current
    try:
        pending = executor_func(task)
        # The exact type test first: isawaitable() alone costs several times more per task.
        if type(pending) is not CoroutineType and not inspect.isawaitable(pending):  # pylint: disable=unidiomatic-typecheck
            raise TypeError(
                f"executor_func returned {type(pending).__name__}, not an awaitable,"
                f" for task {task_id!r}"
            )
        if timeout is None or current is None:
            return await pending
        return await with_timeout(pending, current, timeout, task_id)
    finally:
        if active.get(task_id) is current:
            del active[task_id]


async def with_timeout(
    pending: Awaitable[Any], current: asyncio.Task[Any], timeout: float, task_id: str
) -> Any:
    """Await ``pending`` in this task, cancelling it after ``timeout`` seconds.

    Not ``asyncio.wait_for``: on Python < 3.12 it can swallow a cancellation
    that arrives as the awaited call finishes, and it costs a task per call.

    Args:
        pending: What to await.
        current: The asyncio task awaiting it (the one cancelled on time-out).
        timeout: Seconds.
        task_id: For the error's message.

    Returns:
        What ``pending`` gave.

    Raises:
        TaskTimeoutError: Time ran out.
        asyncio.CancelledError: Cancelled from elsewhere.
    """
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        current.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await pending
    except asyncio.CancelledError:
        if not expired or uncancel(current) > 0:
            raise  # cancelled from outside (as well): that wins
        raise TaskTimeoutError(f"task {task_id!r} timed out after {timeout:g} s") from None
    finally:
        handle.cancel()


async def cancel_and_wait(workers: Sequence[asyncio.Future[None]]) -> None:
    """Cancel the workers and wait until each has really finished.

    Args:
        workers: The futures to cancel; cancelled again if this wait is cancelled.
    """
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


class Cancellation:
    """Which worker runs which task, for a run that may cancel its own tasks.

    Only a run with fail-fast or a stop has one: others never pay for the bookkeeping.
    """

    def __init__(self) -> None:
        self.executing: dict[int, asyncio.Task[Any]] = {}  # position -> worker running it
        self.cancelling: set[asyncio.Task[Any]] = set()  # workers the run cancelled itself

    def cancel_running(self) -> None:
        """Cancel the executors running now; their workers report them as cancelled."""
        for worker in list(self.executing.values()):
            self.cancelling.add(worker)
            worker.cancel()

    def claim(self, worker: asyncio.Task[Any] | None) -> bool:
        """Whether a cancellation ``worker`` just received came from the run alone.

        Args:
            worker: The worker that caught the cancellation.

        Returns:
            ``True`` if the run cancelled it (fail-fast, a stop's grace ran
            out) and nobody else did; ``False`` if it must propagate.
        """
        if worker is None or worker not in self.cancelling:
            return False
        self.cancelling.discard(worker)
        return uncancel(worker) == 0


class Workers:
    """What every worker coroutine of one run shares: the run, the slots and the callbacks."""

    def __init__(
        self,
        run: Run,
        semaphore: asyncio.Semaphore,
        active_tasks: dict[str, asyncio.Task[Any]],
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None,
        start_callback: StartCallback | None,
        end_callback: EndCallback | None,
    ) -> None:
        self.run = run
        self.semaphore = semaphore
        self.active_tasks = active_tasks
        self.executor_func = executor_func
        self.progress_callback = progress_callback
        self.start_callback = start_callback
        self.end_callback = end_callback
        self.cancellation = Cancellation() if run.policy.may_cancel else None

    async def run_all(self, count: int) -> None:
        """Run the tasks with ``count`` workers; on any exit, cancel and await every one.

        Args:
            count: How many workers (each holds one slot while it works).

        Raises:
            BaseException: What a worker raised, or the cancellation of this call,
                once every worker has finished.
        """
        run = self.run
        stop = run.policy.stop
        workers = [asyncio.ensure_future(self.work()) for _ in range(count)]
        watchers = [asyncio.ensure_future(self.watch_stop(stop))] if stop is not None else []
        try:
            await asyncio.gather(*workers)
        except BaseException:
            await cancel_and_wait(workers + watchers)
            raise
        finally:
            run.close()
        await cancel_and_wait(watchers)

    async def work(self) -> None:  # pylint: disable=too-many-locals,too-many-branches,too-many-statements
        """Hold one slot and take ready tasks one at a time until the run is resolved.

        The per-task path is written out in one function on purpose: each call
        or coroutine less per task shows in the engine's no-op cost.
        """
        run = self.run
        ledger = run.ledger
        queue = run.queue
        wakeups = run.wakeups
        tasks = ledger.tasks
        attempts = ledger.attempts
        started = ledger.started
        next_ready = queue.next_ready
        succeed = ledger.succeed
        release = queue.release if queue.releases else None
        current = asyncio.current_task()
        semaphore = self.semaphore
        active = self.active_tasks
        executor_func = self.executor_func
        progress_callback = self.progress_callback
        start_callback = self.start_callback
        end_callback = self.end_callback
        run_timeout = run.policy.task_timeout
        stop = run.policy.stop
        cancellation = self.cancellation
        executing = cancellation.executing if cancellation is not None else None
        await semaphore.acquire()
        held = True
        try:
            while ledger.unresolved:
                if stop is not None and run.halted is None and stop.is_set():
                    await self.halt("stopped")
                    continue
                i = next_ready()
                if (
                    i is None
                    and queue.exhausted is not None
                    and queue.next_wake is None
                    and run.halted is None
                ):
                    # A limit (a budget) lets no ready task start, now or later.
                    await self.halt(queue.exhausted)
                    continue
                if i is None:
                    # Nothing may start now: give the slot back while waiting.
                    semaphore.release()
                    held = False
                    await wakeups.wait(queue.next_wake)
                    await semaphore.acquire()
                    held = True
                    continue
                task = tasks[i]
                task_id = task.task_id
                if start_callback is not None and i not in attempts:
                    pending = call(start_callback, task_id, task)
                    if pending is not None:
                        try:  # awaited here, not in a helper: one coroutine less per task
                            await pending
                        except Exception:  # pylint: disable=broad-exception-caught
                            logger.exception("callback for task %r raised", task_id)
                if started is not None and i not in started:
                    started[i] = time.time()
                if executing is not None and current is not None:
                    executing[i] = current
                try:
                    result = await execute_one(
                        task,
                        executor_func,
                        current,
                        run_timeout if task.timeout is None else task.timeout,
                        active,
                    )
                except asyncio.CancelledError:
                    if executing is None:
                        raise
                    executing.pop(i, None)
                    assert cancellation is not None
                    if not cancellation.claim(current):
                        raise
                    # The run cancelled this task itself (fail-fast, or a stop's grace ended).
                    await self._cancelled_while_running(i)
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    if executing is not None:
                        executing.pop(i, None)
                    await self._failed(i, exc)
                else:
                    if executing is not None:
                        executing.pop(i, None)
                    if progress_callback is not None:
                        # The hot path: a sync callback costs one call, no coroutine.
                        pending = call(progress_callback, task_id, task_id, result, None)
                        if pending is not None:
                            try:
                                await pending
                            except Exception:  # pylint: disable=broad-exception-caught
                                logger.exception("callback for task %r raised", task_id)
                    if end_callback is not None:
                        outcome = ledger.outcome(i, "success", result)
                        pending = call(end_callback, task_id, task, outcome)
                        if pending is not None:
                            try:
                                await pending
                            except Exception:  # pylint: disable=broad-exception-caught
                                logger.exception("callback for task %r raised", task_id)
                    succeed(i, result)
                    if release is not None:
                        release(i)
                # New work, a freed agent slot or the end of the run: let idle workers look.
                if wakeups.idle:
                    wakeups.wake()
        finally:
            if held:
                semaphore.release()

    async def _cancelled_while_running(self, i: int) -> None:
        run = self.run
        task = run.ledger.tasks[i]
        reason = run.halted or "cancelled"
        run.cancel_started(i)
        await notify(
            self.progress_callback, task.task_id, task.task_id, None, f"cancelled: {reason}"
        )
        if self.end_callback is not None:
            outcome = run.ledger.outcome(i, "cancelled", error=reason)
            await notify(self.end_callback, task.task_id, task, outcome)

    async def _failed(self, i: int, exc: BaseException) -> None:
        run = self.run
        ledger = run.ledger
        task = ledger.tasks[i]
        retries = run.retries
        delay = retries.delay(i, exc) if retries is not None and run.halted is None else None
        if delay is not None:
            assert retries is not None
            attempt = ledger.attempts[i] - 1
            logger.info(
                "task %r failed (attempt %d), trying again in %.2f s: %s: %s",
                task.task_id,
                attempt,
                delay,
                type(exc).__name__,
                exc,
            )
            await notify(
                run.policy.retry_callback, task.task_id, task, attempt, error_text(exc), delay
            )
            retries.schedule(i, delay)
            return
        logger.info("task %r failed: %s: %s", task.task_id, type(exc).__name__, exc)
        text = error_text(exc)
        await notify(self.progress_callback, task.task_id, task.task_id, None, text)
        end_callback = self.end_callback
        if end_callback is not None:
            outcome = ledger.outcome(i, "failed", error=text, error_type=type(exc).__name__)
            await notify(end_callback, task.task_id, task, outcome)
        ledger.fail(i, exc)
        for child in run.queue.fail(i):
            skipped = ledger.tasks[child]
            reason = f"dependency {task.task_id!r} failed"
            await notify(
                self.progress_callback, skipped.task_id, skipped.task_id, None, f"skipped: {reason}"
            )
            if end_callback is not None:
                await notify(
                    end_callback,
                    skipped.task_id,
                    skipped,
                    ledger.outcome(child, "skipped", error=reason),
                )
        if run.policy.fail_fast and run.halted is None:
            await self.halt(f"fail-fast: task {task.task_id!r} failed")
            assert self.cancellation is not None
            self.cancellation.cancel_running()

    async def halt(self, reason: str) -> None:
        """Start no new task; report every task not started as cancelled.

        Args:
            reason: Why (``stopped``, ``fail-fast: task 'x' failed``).
        """
        run = self.run
        ledger = run.ledger
        end_callback = self.end_callback
        for j in run.halt(reason):
            cancelled = ledger.tasks[j]
            task_id = cancelled.task_id
            await notify(self.progress_callback, task_id, task_id, None, f"cancelled: {reason}")
            if end_callback is not None:
                outcome = ledger.outcome(j, "cancelled", error=reason)
                await notify(end_callback, task_id, cancelled, outcome)
        run.wakeups.wake()

    async def watch_stop(self, stop: asyncio.Event) -> None:
        """When ``stop`` is set, start nothing new; after the grace, cancel what runs.

        Args:
            stop: The run's stop event.
        """
        await stop.wait()
        logger.info("stop requested: no new task starts")
        run = self.run
        if run.halted is None:
            await self.halt("stopped")
        grace = run.policy.stop_grace
        if grace is None:
            return
        await asyncio.sleep(grace)
        assert self.cancellation is not None
        self.cancellation.cancel_running()
