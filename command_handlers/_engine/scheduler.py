"""Which task starts next: ready queues, agent limits, rates, pauses and retry timers.

A run is made of parts that each keep their own state:

* :class:`~command_handlers._engine.ledger.Ledger`: what became of each task;
* a queue: :class:`FixedOrder` for a plain flat run (the fast path), else
  :class:`ReadyQueue` (ready heaps, dependencies, agent limits, rates, pauses);
* :class:`Retries`: the retry decision and the timers of tasks waiting to retry;
* :class:`Wakeups`: the idle workers and the timer that wakes them;
* :class:`Run`: the above, plus why the run stopped starting tasks.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
from collections.abc import Mapping, Sequence

from command_handlers._engine.graph import chain_lengths, dependency_graph, kahn_order
from command_handlers._engine.ledger import PENDING, RETRY_WAIT, RUNNING, Ledger
from command_handlers._engine.policy import RunPolicy
from command_handlers._engine.rates import RateLimit, TokenBucket
from command_handlers._engine.retry import is_retryable, retry_after
from command_handlers._engine.tasks import AsyncTask

__all__ = ["FixedOrder", "ReadyQueue", "Retries", "Run", "Wakeups"]

logger = logging.getLogger("command_handlers.engine")

#: Seconds after which a task a limit holds until "a running task ends" is looked at again.
LIMIT_RECHECK = 1.0


class FixedOrder:
    """The queue of a flat run without agent limits, retries or rates: one fixed order.

    Attributes:
        releases: Whether a success must be reported back with :meth:`release`
            (never here: nothing waits on anything).
        next_wake: When idle workers should look again (never here).
    """

    releases = False
    next_wake: float | None = None
    exhausted: str | None = None

    def __init__(self, ledger: Ledger) -> None:
        tasks = ledger.tasks
        self.state = ledger.state
        first = tasks[0].priority
        self.order: Sequence[int]
        if all(task.priority == first for task in tasks):
            self.order = range(len(tasks))
        else:  # sorted() is stable: equal priorities keep input order
            self.order = sorted(range(len(tasks)), key=lambda i: -tasks[i].priority)
        self.position = 0

    def next_ready(self) -> int | None:
        """Take the next task, if any is left, and mark it running."""
        position = self.position
        if position < len(self.order):
            self.position = position + 1
            i = self.order[position]
            self.state[i] = RUNNING
            return i
        return None

    def release(self, i: int) -> None:
        """Nothing to do: no task waits on another here."""

    def fail(self, i: int) -> list[int]:  # pylint: disable=unused-argument
        """Nothing depends on a failed task here.

        Returns:
            No skipped task.
        """
        return []

    def release_agent(self, i: int) -> None:
        """Nothing to do: no agent limits here."""

    def clear(self) -> None:
        """Start nothing more."""
        self.position = len(self.order)


class ReadyQueue:
    """The ready tasks of a run with dependencies, agent limits, retries or rates.

    Ready tasks wait in heaps keyed by one int (smaller first: higher priority,
    then longer chain of dependents, then input order); each agent that has a
    limit, a rate or may be paused gets its own heap, the others share one.

    Attributes:
        releases: Whether a success must be reported with :meth:`release`
            (to free an agent slot or make dependents ready).
        next_wake: After :meth:`next_ready` found nothing startable, when a
            rate or a pause will let a ready task start.
        exhausted: After :meth:`next_ready` found nothing startable, the
            reason of a limit (a budget) that lets a ready task never start.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        dependency_aware: bool,
        agent_limits: Mapping[str, int],
        policy: RunPolicy,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.tasks = ledger.tasks
        self.state = ledger.state
        self.ledger = ledger
        self.loop = loop
        self.dependency_aware = dependency_aware
        self.agent_limits = dict(agent_limits)
        self.agent_running = dict.fromkeys(self.agent_limits, 0)
        self.limits = list(policy.limits)
        self.releases = dependency_aware or bool(self.agent_limits) or bool(self.limits)
        self.next_wake: float | None = None
        self.exhausted: str | None = None
        self.dependents: Sequence[Sequence[int]] = ()
        self.waiting_on: list[int] = []
        self.keys: list[int] = []
        self.ready: dict[str | None, list[int]] = {}
        now = loop.time()
        self.global_rate = (
            TokenBucket(RateLimit.parse(policy.rate), now) if policy.rate is not None else None
        )
        self.agent_rates = {
            name: TokenBucket(RateLimit.parse(limit), now)
            for name, limit in policy.agent_rates.items()
        }
        self.paused_until: dict[str | None, float] = {}
        # Retries and rates act per agent: then every agent gets its own heap.
        self.bucket_all = policy.needs_scheduler
        self._build_heaps()

    def _build_heaps(self) -> None:
        tasks = self.tasks
        count = len(tasks)
        self.waiting_on = [0] * count
        ranks = [0] * count
        if self.dependency_aware:
            index = {task.task_id: i for i, task in enumerate(tasks)}
            self.dependents, self.waiting_on = dependency_graph(tasks, index)
            ranks = chain_lengths(self.dependents, kahn_order(tasks, self.dependents))
        top_priority = max(task.priority for task in tasks)
        top_rank = max(ranks)
        # Heap key: one int, smaller first; the task's position is key % count.
        self.keys = [
            ((top_priority - task.priority) * (top_rank + 1) + top_rank - ranks[i]) * count + i
            for i, task in enumerate(tasks)
        ]
        self.ready = {None: []}
        for i in range(count):
            bucket = self.bucket(i)
            if bucket not in self.ready:
                self.ready[bucket] = []
            if self.waiting_on[i] == 0:
                self.ready[bucket].append(self.keys[i])
        for heap in self.ready.values():
            heapq.heapify(heap)

    def bucket(self, i: int) -> str | None:
        """The heap task ``i`` waits in: its agent's, or the shared one (``None``)."""
        name = self.tasks[i].agent_name
        return name if self.bucket_all or name in self.agent_limits else None

    def next_ready(self) -> int | None:  # pylint: disable=too-many-branches
        """Take the best ready task whose agent may start now, if any, and mark it running.

        When tasks are ready but must wait for a rate or a server's
        ``Retry-After``, :attr:`next_wake` says when to look again.
        """
        now = self.loop.time()
        # Written out in one method on purpose: a run with retries (the
        # command's default) takes this path for every task.
        limits = self.limits
        if limits:
            self.exhausted = None
        wake: float | None = None
        best: str | None = None
        best_key = -1
        global_at = self.global_rate.ready_at(now) if self.global_rate is not None else now
        for bucket, heap in self.ready.items():
            if not heap:
                continue
            if bucket in self.agent_limits and (
                self.agent_running[bucket] >= self.agent_limits[bucket]
            ):
                continue  # a finishing task of this agent wakes the workers
            at = max(global_at, self.paused_until.get(bucket, now))
            if bucket in self.agent_rates:
                at = max(at, self.agent_rates[bucket].ready_at(now))
            if limits and at <= now:
                limited = self._limited_at(heap[0], now)
                if limited is None:
                    continue  # never (a budget): no time to look again
                at = limited
            if at > now:
                wake = at if wake is None else min(wake, at)
                continue
            if best_key < 0 or heap[0] < best_key:
                best, best_key = bucket, heap[0]
        self.next_wake = wake
        if best_key < 0:
            return None
        heapq.heappop(self.ready[best])
        i = best_key % len(self.tasks)
        self.state[i] = RUNNING
        if best in self.agent_limits:
            self.agent_running[best] += 1
        if self.global_rate is not None:
            self.global_rate.take(now)
        if best in self.agent_rates:
            self.agent_rates[best].take(now)
        for limit in self.limits:
            limit.acquire(self.tasks[i], now)
        return i

    def _limited_at(self, key: int, now: float) -> float | None:
        """When the limits let the task of heap key ``key`` start.

        ``None``: never; :attr:`exhausted` then holds the limit's reason.
        """
        at = now
        task = self.tasks[key % len(self.tasks)]
        for limit in self.limits:
            ready = limit.ready_at(task, now)
            if ready is None:
                self.exhausted = limit.reason
                return None
            if ready == math.inf:
                # A task ending wakes this run's workers; a task of another run
                # sharing the limit does not: look again a little later.
                ready = now + LIMIT_RECHECK
            at = max(at, ready)
        return at

    def _settle(self, i: int, result: object) -> None:
        """Tell the limits that task ``i`` ended, with its result (``None``: none)."""
        now = self.loop.time()
        for limit in self.limits:
            limit.release(self.tasks[i], result, now)

    def release(self, i: int) -> None:
        """After task ``i`` succeeded: free its agent slot, make ready what waited only on it."""
        if self.limits:
            self._settle(i, self.ledger.results.get(self.tasks[i].task_id))
        if self.agent_limits:
            self._free_slot(i)
        if self.dependency_aware:
            self._release_dependents(i)

    def _release_dependents(self, i: int) -> None:
        for child in self.dependents[i]:
            self.waiting_on[child] -= 1
            if self.waiting_on[child] == 0 and self.state[child] == PENDING:
                heapq.heappush(self.ready[self.bucket(child)], self.keys[child])

    def fail(self, i: int) -> list[int]:
        """After task ``i`` failed for good: skip every task that depends on it, directly or not.

        A task with ``allow_failure`` lets its dependents run instead.

        Returns:
            The positions of the tasks skipped now (recorded in the ledger).
        """
        if self.agent_limits or self.limits:
            self.release_agent(i)
        if not self.dependency_aware:
            return []
        if self.tasks[i].allow_failure:
            self._release_dependents(i)
            return []
        blocked_by = self.tasks[i].task_id
        skipped: list[int] = []
        stack = list(self.dependents[i])
        while stack:
            child = stack.pop()
            if self.state[child] != PENDING:
                continue
            self.ledger.skip(child, blocked_by)
            skipped.append(child)
            stack.extend(self.dependents[child])
        return skipped

    def release_agent(self, i: int) -> None:
        """Give back the agent slot task ``i`` held; it ended without a result."""
        if self.limits:
            self._settle(i, None)
        self._free_slot(i)

    def _free_slot(self, i: int) -> None:
        bucket = self.bucket(i)
        if bucket in self.agent_limits:
            self.agent_running[bucket] -= 1

    def pause(self, i: int, until: float) -> None:
        """Start no task of task ``i``'s agent before loop time ``until``."""
        bucket = self.bucket(i)
        self.paused_until[bucket] = max(self.paused_until.get(bucket, 0.0), until)

    def requeue(self, i: int) -> None:
        """Put task ``i`` back among the ready ones."""
        heapq.heappush(self.ready[self.bucket(i)], self.keys[i])

    def clear(self) -> None:
        """Start nothing more."""
        for heap in self.ready.values():
            heap.clear()


class Wakeups:
    """The workers waiting for work, and the timer that wakes them for a rate or a pause."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: list[asyncio.Future[None]] = []
        self.handle: asyncio.TimerHandle | None = None

    def wait(self, when: float | None) -> asyncio.Future[None]:
        """A future set when there may be work; also at loop time ``when``, if given."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.idle.append(waiter)
        if when is not None:
            handle = self.handle
            if handle is None or handle.when() > when:
                if handle is not None:
                    handle.cancel()
                self.handle = self.loop.call_at(when, self._timer)
        return waiter

    def wake(self) -> None:
        """Wake every worker that waits for work (or for the end of the run)."""
        idle, self.idle = self.idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)

    def _timer(self) -> None:
        self.handle = None
        self.wake()

    def close(self) -> None:
        """Cancel the timer."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class Retries:
    """Whether a failed attempt is tried again, and the timers of the tasks waiting to be."""

    def __init__(
        self,
        policy: RunPolicy,
        ledger: Ledger,
        queue: ReadyQueue,
        wakeups: Wakeups,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        assert policy.retry is not None
        self.retry = policy.retry
        self.retry_if = policy.retry_if
        self.rng = policy.rng or random.Random()
        self.ledger = ledger
        self.queue = queue
        self.wakeups = wakeups
        self.loop = loop
        self.timers: dict[int, asyncio.TimerHandle] = {}

    def delay(self, i: int, exc: BaseException) -> float | None:
        """Decide whether task ``i``'s failed attempt is tried again, and after how long.

        Counts the attempt to come in the ledger; a server's ``Retry-After``
        pauses the task's whole agent, even when this task is not tried again.

        Returns:
            The delay before the next attempt, or ``None`` if the failure is final.
        """
        hint = retry_after(exc)
        delay = None if hint is None else min(hint, self.retry.max_retry_after)
        if delay is not None:
            # The server asked the whole agent to slow down, not just this task:
            # the agent's other tasks must not start inside the window either.
            self.queue.pause(i, self.loop.time() + delay)
        attempts = self.ledger.attempts
        attempt = attempts.get(i, 1)
        if attempt > self.retry.retries or not self._retryable(exc):
            return None
        attempts[i] = attempt + 1
        return self.retry.backoff(attempt, self.rng) if delay is None else delay

    def _retryable(self, exc: BaseException) -> bool:
        decide = self.retry_if
        if decide is not None:
            try:
                verdict = decide(exc)
            except Exception:  # pylint: disable=broad-exception-caught
                logger.exception("retry_if raised; using the default rule")
                verdict = None
            if verdict is not None:
                return bool(verdict)
        return is_retryable(exc)

    def schedule(self, i: int, delay: float) -> None:
        """Put task ``i`` back among the ready ones after ``delay``, holding no slot meanwhile."""
        self.ledger.state[i] = RETRY_WAIT
        self.queue.release_agent(i)
        self.timers[i] = self.loop.call_later(delay, self._requeue, i)

    def _requeue(self, i: int) -> None:
        self.timers.pop(i, None)
        state = self.ledger.state
        if state[i] != RETRY_WAIT:
            return
        state[i] = PENDING
        self.queue.requeue(i)
        self.wakeups.wake()

    def cancel_all(self) -> None:
        """Cancel every timer: no task waiting to retry comes back."""
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()


class Run:
    """The state of one run, in parts that each keep their own.

    Attributes:
        ledger: What became of each task.
        queue: Which task starts next.
        wakeups: The idle workers.
        retries: The retry decision and timers (``None`` without a retry policy).
        policy: The run's policy.
        loop: The running loop.
        halted: Why no new task starts (``None`` while tasks still start).
    """

    def __init__(
        self,
        tasks: list[AsyncTask],
        *,
        dependency_aware: bool,
        agent_limits: Mapping[str, int],
        policy: RunPolicy,
        loop: asyncio.AbstractEventLoop,
        stamped: bool,
    ) -> None:
        self.ledger = Ledger(tasks, stamped=stamped)
        self.policy = policy
        self.loop = loop
        self.wakeups = Wakeups(loop)
        self.queue: FixedOrder | ReadyQueue
        self.retries: Retries | None = None
        if dependency_aware or agent_limits or policy.needs_scheduler:
            queue = ReadyQueue(
                self.ledger,
                dependency_aware=dependency_aware,
                agent_limits=agent_limits,
                policy=policy,
                loop=loop,
            )
            if policy.retry is not None:
                self.retries = Retries(policy, self.ledger, queue, self.wakeups, loop)
            self.queue = queue
        else:
            self.queue = FixedOrder(self.ledger)
        self.halted: str | None = None

    def halt(self, reason: str) -> list[int]:
        """Start no new task: every task not started (or waiting to retry) is cancelled.

        Returns:
            The positions of the tasks cancelled now.
        """
        if self.halted is None:
            self.halted = reason
        ledger = self.ledger
        newly = [i for i, state in enumerate(ledger.state) if state in (PENDING, RETRY_WAIT)]
        for i in newly:
            ledger.cancel(i, reason)
        if self.retries is not None:
            self.retries.cancel_all()
        self.queue.clear()
        return newly

    def cancel_started(self, i: int) -> None:
        """Record that running task ``i`` was cancelled by the run itself."""
        self.queue.release_agent(i)
        self.ledger.cancel(i, self.halted or "cancelled")

    def close(self) -> None:
        """Cancel every timer of the run."""
        if self.retries is not None:
            self.retries.cancel_all()
        self.wakeups.close()
