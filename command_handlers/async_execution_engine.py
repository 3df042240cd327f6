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

A :class:`RunPolicy` adds per-task timeouts, retries with backoff, rate limits,
fail-fast and a graceful stop.

Scheduling uses one worker coroutine per slot, so memory stays flat however
many tasks wait, and no task outlives the call that started it: cancelling a
run cancels and awaits every task the run started.
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import inspect
import logging
import random
import re
import sys
import time
import warnings
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any, Callable, Dict, List, Optional, Union  # noqa: UP035

__all__ = [
    "AsyncExecutionEngine",
    "AsyncTask",
    "DependencyCycleError",
    "ExecutorFunc",
    "ProgressCallback",
    "RateLimit",
    "RetryPolicy",
    "RunPolicy",
    "StartCallback",
    "TaskTimeoutError",
    "is_retryable",
    "retry_after",
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


ExecutorFunc = Callable[[AsyncTask], Awaitable[Any]]
ProgressCallback = Callable[[str, Optional[Any], Optional[str]], Union[Awaitable[None], None]]
StartCallback = Callable[[AsyncTask], Union[Awaitable[None], None]]
RetryCallback = Callable[[AsyncTask, int, str, float], Union[Awaitable[None], None]]


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


@dataclass(frozen=True)
class RetryPolicy:
    """How failed tasks are tried again.

    A task is tried again only for an error :func:`is_retryable` accepts (or
    the run's ``retry_if`` says), at most ``retries`` times, after a delay drawn
    uniformly from ``[0, min(max_delay, base_delay * 2 ** (attempt - 1))]``
    ("full jitter"), or after the error's own ``Retry-After`` when it has one.
    A task waiting to be tried again holds no slot.

    Attributes:
        retries: How many times a task may be tried again (0: never).
        base_delay: The first backoff's upper bound, in seconds.
        max_delay: The largest backoff, in seconds.
        max_retry_after: The longest ``Retry-After`` honoured, in seconds.
    """

    retries: int = 0
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 600.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {self.retries!r}")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The delay before trying again after failed attempt number ``attempt``.

        Args:
            attempt: The attempt that failed (1 for the first).
            rng: The random source of the jitter.

        Returns:
            Seconds to wait, in ``[0, min(max_delay, base_delay * 2 ** (attempt - 1))]``.
        """
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(attempt - 1, 62))
        return rng.uniform(0.0, ceiling)


_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_second`` task starts a second, with bursts of ``burst`` (a token bucket).

    Attributes:
        per_second: The sustained rate.
        burst: How many starts may happen at once after a quiet spell.
    """

    per_second: float
    burst: float = 1.0

    def __post_init__(self) -> None:
        if not self.per_second > 0:
            raise ValueError(f"a rate must be positive, got {self.per_second!r}")
        if not self.burst >= 1:
            raise ValueError(f"a rate's burst must be at least 1, got {self.burst!r}")

    @classmethod
    def parse(cls, text: str | float | RateLimit) -> RateLimit:
        """Read ``"5/s"``, ``"120/min"``, ``"3000/h"`` or a plain number (per second).

        Args:
            text: The rate.

        Returns:
            The rate limit.

        Raises:
            ValueError: The text is not a rate.
        """
        if isinstance(text, RateLimit):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls(float(text))
        match = _RATE.match(str(text))
        if not match:
            raise ValueError(f"rate {text!r} is not N/s, N/min or N/h")
        count, unit = float(match.group(1)), (match.group(2) or "s")
        seconds = 3600.0 if unit.startswith("h") else _PER[unit]
        return cls(count / seconds)


class _TokenBucket:
    """A token bucket on the loop's clock."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.per_second
        self.capacity = limit.burst
        self.tokens = limit.burst
        self.stamp = now

    def ready_at(self, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return now if self.tokens >= 1 else now + (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self.ready_at(now)
        self.tokens -= 1


@dataclass(frozen=True)
class RunPolicy:
    """What a run does about slow, failing and rate-limited tasks.

    Attributes:
        task_timeout: Seconds a task may take (``AsyncTask.timeout`` overrides
            it); a task over time is cancelled, fails with
            :class:`TaskTimeoutError`, and frees its slot at once.
        retry: How failed tasks are tried again (``None``: never).
        retry_if: ``error -> True/False/None`` deciding which errors are
            retried; ``None`` (or a ``None`` answer) falls back to :func:`is_retryable`.
        retry_callback: Told ``(task, attempt, error_text, delay)`` before each retry.
        rate: A limit on task starts across the run (``"5/s"``, a number or a
            :class:`RateLimit`).
        agent_rates: agent name -> a limit on that agent's task starts.
        fail_fast: The first task that fails for good cancels the rest; they
            are reported as cancelled, not failed.
        stop: When this event is set, no new task starts; the tasks not
            started are reported as cancelled.
        stop_grace: Seconds running tasks may still take after ``stop`` is
            set before they are cancelled (``None``: as long as they need).
        rng: The random source of the retry jitter (for reproducible tests).
    """

    task_timeout: Optional[float] = None  # noqa: UP045
    retry: Optional[RetryPolicy] = None  # noqa: UP045
    retry_if: Optional[Callable[[BaseException], Optional[bool]]] = None  # noqa: UP045
    retry_callback: Optional[RetryCallback] = None  # noqa: UP045
    rate: Union[RateLimit, float, str, None] = None  # noqa: UP007
    agent_rates: Mapping[str, Union[RateLimit, float, str]] = field(  # noqa: UP007
        default_factory=dict
    )
    fail_fast: bool = False
    stop: Optional[asyncio.Event] = None  # noqa: UP045
    stop_grace: Optional[float] = None  # noqa: UP045
    rng: Optional[random.Random] = None  # noqa: UP045

    def __post_init__(self) -> None:
        for name in ("task_timeout", "stop_grace"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.rate is not None:
            RateLimit.parse(self.rate)
        for limit in self.agent_rates.values():
            RateLimit.parse(limit)

    @property
    def needs_scheduler(self) -> bool:
        """Whether the run must pick tasks one agent at a time (retries, rates)."""
        return self.retry is not None or self.rate is not None or bool(self.agent_rates)


_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_RETRYABLE_NAMES = frozenset(
    {
        "RateLimitError",
        "APIConnectionError",
        "APITimeoutError",
        "InternalServerError",
        "ServiceUnavailableError",
        "OverloadedError",
    }
)


def retry_after(error: BaseException) -> Optional[float]:  # noqa: UP045
    """Read how long a server asked to wait before the next call, if it said.

    Looks at ``error.retry_after`` (seconds), then at a ``Retry-After`` header
    of ``error.response`` (seconds or an HTTP date), as the errors of LLM
    providers' client libraries carry them.

    Args:
        error: The error.

    Returns:
        Seconds to wait (at least 0), or ``None``.
    """
    value: Any = getattr(error, "retry_after", None)
    if value is None:
        headers = getattr(getattr(error, "response", None), "headers", None)
        if headers is not None and hasattr(headers, "get"):
            value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        moment = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def is_retryable(error: BaseException) -> bool:
    """The default rule for which errors are worth another try.

    Timeouts and connection errors are; an error with a ``retryable``
    attribute says itself; an error with a ``Retry-After`` is; so are HTTP
    statuses 408, 409, 425, 429 and 5xx (``status_code`` or ``status``), and the
    rate-limit, connection, timeout and overload errors of LLM client
    libraries, by class name. Nothing else is.

    Args:
        error: The error.

    Returns:
        Whether to try again.
    """
    if isinstance(error, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    declared = getattr(error, "retryable", None)
    if isinstance(declared, bool):
        return declared
    if retry_after(error) is not None:
        return True
    status = getattr(error, "status_code", None) or getattr(error, "status", None)
    if isinstance(status, int) and status in _RETRYABLE_STATUS:
        return True
    return any(cls.__name__ in _RETRYABLE_NAMES for cls in type(error).__mro__)


def _new_semaphore(value: int) -> asyncio.Semaphore:
    """``asyncio.Semaphore(value)``, also outside an event loop on Python 3.9."""
    try:
        return asyncio.Semaphore(value)
    except RuntimeError:  # pragma: no cover - Python 3.9 with no event loop in this thread
        placeholder = asyncio.new_event_loop()  # rebound at the first run
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return asyncio.Semaphore(value, loop=placeholder)  # type: ignore[call-arg,unused-ignore]
        finally:
            placeholder.close()


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
_PENDING, _RUNNING, _SUCCEEDED, _FAILED, _SKIPPED, _CANCELLED, _RETRY_WAIT = range(7)


class _Run:
    """The state of one run: what is ready, running and done."""

    def __init__(
        self,
        tasks: list[AsyncTask],
        *,
        dependency_aware: bool,
        agent_limits: Mapping[str, int],
        policy: RunPolicy,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.tasks = tasks
        count = len(tasks)
        self.state = bytearray(count)  # one _PENDING.._RETRY_WAIT byte per task
        self.outcomes: dict[str, Any] = {}  # task id -> result, of the tasks that succeeded
        self.errors: dict[int, BaseException] = {}
        self.skipped: list[dict[str, str]] = []
        self.cancelled: list[dict[str, str]] = []
        self.unresolved = count
        self.dependency_aware = dependency_aware
        self.policy = policy
        self.loop = loop
        self.agent_limits = dict(agent_limits)
        self.agent_running = dict.fromkeys(self.agent_limits, 0)
        self.idle: list[asyncio.Future[None]] = []
        self.dependents: Sequence[Sequence[int]] = ()
        self.waiting_on: list[int] = []
        self.attempts: dict[int, int] = {}  # index -> attempts so far, once a task is retried
        self.executing: dict[
            int, asyncio.Task[Any]
        ] = {}  # index -> worker, while its executor runs
        self.cancelling: set[asyncio.Task[Any]] = set()  # workers this run cancelled itself
        self.halted: str | None = None  # why no new task starts
        self.timers: dict[int, asyncio.TimerHandle] = {}  # retries waiting for their time
        self.wake_handle: asyncio.TimerHandle | None = None
        self.next_wake: float | None = None
        self.rng = policy.rng or random.Random()
        # A flat run without agent limits or retries takes its tasks in one fixed order.
        self.order: Sequence[int] | None = None
        self.position = 0
        if not (dependency_aware or self.agent_limits or policy.needs_scheduler):
            first = tasks[0].priority
            if all(task.priority == first for task in tasks):
                self.order = range(count)
            else:  # sorted() is stable: equal priorities keep input order
                self.order = sorted(range(count), key=lambda i: -tasks[i].priority)
            return
        now = loop.time()
        self.global_rate = (
            _TokenBucket(RateLimit.parse(policy.rate), now) if policy.rate is not None else None
        )
        self.agent_rates = {
            name: _TokenBucket(RateLimit.parse(limit), now)
            for name, limit in policy.agent_rates.items()
        }
        self.paused_until: dict[str | None, float] = {}
        # Retries and rates act per agent: then every agent gets its own heap.
        self.bucket_all = policy.needs_scheduler
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
        # One ready heap per agent that needs one, one (None) for all others.
        self.ready: dict[str | None, list[int]] = {None: []}
        for i in range(count):
            bucket = self._bucket(i)
            if bucket not in self.ready:
                self.ready[bucket] = []
            if self.waiting_on[i] == 0:
                self.ready[bucket].append(self.keys[i])
        for heap in self.ready.values():
            heapq.heapify(heap)

    def _bucket(self, i: int) -> str | None:
        name = self.tasks[i].agent_name
        return name if self.bucket_all or name in self.agent_limits else None

    def next_ready(self) -> int | None:
        """Take the best ready task whose agent may start now, if any.

        When tasks are ready but must wait for a rate or a server's
        ``Retry-After``, :attr:`next_wake` says when to look again.
        """
        order = self.order
        if order is not None:
            position = self.position
            if position < len(order):
                self.position = position + 1
                i = order[position]
                self.state[i] = _RUNNING
                return i
            return None
        now = self.loop.time()
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
        self.state[i] = _RUNNING
        if best in self.agent_limits:
            self.agent_running[best] += 1
        if self.global_rate is not None:
            self.global_rate.take(now)
        if best in self.agent_rates:
            self.agent_rates[best].take(now)
        return i

    def succeed(self, i: int, result: Any) -> None:
        """Record a success and make ready the dependents it was the last wait of."""
        self.state[i] = _SUCCEEDED
        self.outcomes[self.tasks[i].task_id] = result
        self.unresolved -= 1
        if self.agent_limits:
            self._release_agent(i)
        if self.dependency_aware:
            self._release_dependents(i)

    def _release_dependents(self, i: int) -> None:
        for child in self.dependents[i]:
            self.waiting_on[child] -= 1
            if self.waiting_on[child] == 0 and self.state[child] == _PENDING:
                heapq.heappush(self.ready[self._bucket(child)], self.keys[child])

    def fail(self, i: int, exc: BaseException) -> list[int]:
        """Record a failure; skip every task that depends on it, directly or not.

        A task with ``allow_failure`` lets its dependents run instead.

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
        if self.tasks[i].allow_failure:
            self._release_dependents(i)
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

    def retry_delay(self, i: int, exc: BaseException) -> float | None:
        """Decide whether a failed attempt is tried again, and after how long.

        Returns:
            The delay before the next attempt, or ``None`` if the failure is final.
        """
        retry = self.policy.retry
        if retry is None or self.halted is not None:
            return None
        attempt = self.attempts.get(i, 1)
        if attempt > retry.retries or not self._retryable(exc):
            return None
        self.attempts[i] = attempt + 1
        hint = retry_after(exc)
        if hint is None:
            return retry.backoff(attempt, self.rng)
        delay = min(hint, retry.max_retry_after)
        # The server asked the whole agent to slow down, not just this task.
        bucket = self._bucket(i)
        self.paused_until[bucket] = max(
            self.paused_until.get(bucket, 0.0), self.loop.time() + delay
        )
        return delay

    def _retryable(self, exc: BaseException) -> bool:
        decide = self.policy.retry_if
        if decide is not None:
            try:
                verdict = decide(exc)
            except Exception:  # pylint: disable=broad-exception-caught
                logger.exception("retry_if raised; using the default rule")
                verdict = None
            if verdict is not None:
                return bool(verdict)
        return is_retryable(exc)

    def schedule_retry(self, i: int, delay: float) -> None:
        """Put a task back among the ready ones after ``delay``, holding no slot meanwhile."""
        self.state[i] = _RETRY_WAIT
        if self.agent_limits:
            self._release_agent(i)
        self.timers[i] = self.loop.call_later(delay, self._requeue, i)

    def _requeue(self, i: int) -> None:
        self.timers.pop(i, None)
        if self.state[i] != _RETRY_WAIT:
            return
        self.state[i] = _PENDING
        heapq.heappush(self.ready[self._bucket(i)], self.keys[i])
        self.wake_idle()

    def halt(self, reason: str) -> list[int]:
        """Start no new task: every task not started (or waiting to retry) is cancelled.

        Returns:
            The indices of the tasks cancelled now.
        """
        if self.halted is None:
            self.halted = reason
        newly: list[int] = []
        for i, state in enumerate(self.state):
            if state in (_PENDING, _RETRY_WAIT):
                self._cancel(i, reason)
                newly.append(i)
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        if self.order is not None:
            self.position = len(self.order)
        else:
            for heap in self.ready.values():
                heap.clear()
        return newly

    def cancel_running(self) -> None:
        """Cancel the executors running now; their workers report them as cancelled."""
        for worker in list(self.executing.values()):
            self.cancelling.add(worker)
            worker.cancel()

    def _cancel(self, i: int, reason: str) -> None:
        self.state[i] = _CANCELLED
        self.unresolved -= 1
        self.cancelled.append({"task_id": self.tasks[i].task_id, "reason": reason})

    def cancel_started(self, i: int) -> None:
        """Record that a running task was cancelled by the run itself."""
        if self.agent_limits:
            self._release_agent(i)
        self._cancel(i, self.halted or "cancelled")

    def _release_agent(self, i: int) -> None:
        bucket = self._bucket(i)
        if bucket in self.agent_limits:
            self.agent_running[bucket] -= 1

    def wake_idle(self) -> None:
        """Wake every worker that waits for work (or for the end of the run)."""
        idle, self.idle = self.idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)

    def arm_wake(self) -> None:
        """Make sure idle workers look again when a rate or a pause allows."""
        when = self.next_wake
        if when is None:
            return
        if self.wake_handle is not None:
            if self.wake_handle.when() <= when:
                return
            self.wake_handle.cancel()
        self.wake_handle = self.loop.call_at(when, self._timer_wake)

    def _timer_wake(self) -> None:
        self.wake_handle = None
        self.wake_idle()

    def close(self) -> None:
        """Cancel every timer of the run."""
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        if self.wake_handle is not None:
            self.wake_handle.cancel()
            self.wake_handle = None

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
                    "attempts": self.attempts.get(i, 1),
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
            "cancelled": len(self.cancelled),
            "results": results,
            "errors": errors,
            "skipped_tasks": list(self.skipped),
            "cancelled_tasks": list(self.cancelled),
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
    if outcome is None:
        return None
    if type(outcome) is CoroutineType or inspect.isawaitable(outcome):
        return outcome
    return None


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
        semaphore: ``asyncio.Semaphore(max_concurrency)``; each of a run's
            workers holds one slot while it runs tasks.
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
        self.semaphore = _new_semaphore(max_concurrency)
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
        policy: RunPolicy | None = None,
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

    def _bind_semaphore(self, loop: asyncio.AbstractEventLoop) -> None:  # pragma: no cover
        """On Python 3.9 a semaphore belongs to the loop it was made in: make an idle one anew."""
        semaphore = self.semaphore
        idle = semaphore._value == self.max_concurrency and not getattr(semaphore, "_waiters", None)
        if getattr(semaphore, "_loop", loop) is not loop and idle:
            self.semaphore = asyncio.Semaphore(self.max_concurrency)

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
                result = await self._execute_one(
                    task, executor_func, asyncio.current_task(), task.timeout
                )
            except Exception as exc:
                await _notify(progress_callback, task.task_id, task.task_id, None, _error_text(exc))
                raise
            await _notify(progress_callback, task.task_id, task.task_id, result, None)
            return result

    async def _execute_one(
        self,
        task: AsyncTask,
        executor_func: ExecutorFunc,
        current: asyncio.Task[Any] | None,
        timeout: float | None,
    ) -> Any:
        """Run one task's executor (the caller holds a slot); keep active_tasks right."""
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
            if timeout is None or current is None:
                return await pending
            return await _with_timeout(pending, current, timeout, task_id)
        finally:
            if active.get(task_id) is current:
                del active[task_id]

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
    ) -> dict[str, Any]:
        task_list = _validate_tasks(tasks, dependency_aware=dependency_aware)
        if not callable(executor_func):
            raise TypeError("executor_func must be callable")
        limits = _validate_agent_limits(agent_limits)
        policy = policy or RunPolicy()
        loop = asyncio.get_running_loop()
        if sys.version_info < (3, 10):  # pragma: no cover - Python 3.9 only
            self._bind_semaphore(loop)
        run = _Run(
            task_list,
            dependency_aware=dependency_aware,
            agent_limits=limits,
            policy=policy,
            loop=loop,
        )
        limit = (
            min(self.max_concurrency, self.dependency_limit)
            if dependency_aware
            else self.max_concurrency
        )
        mode = "dependency-aware" if dependency_aware else "parallel"
        logger.info("run of %d tasks started (%s, limit %d)", len(task_list), mode, limit)
        worker = _Worker(self, run, executor_func, progress_callback, start_callback)
        workers = [asyncio.ensure_future(worker.work()) for _ in range(min(limit, len(task_list)))]
        watchers = (
            [asyncio.ensure_future(worker.watch_stop(policy.stop))]
            if policy.stop is not None
            else []
        )
        try:
            await asyncio.gather(*workers)
        except BaseException:
            await _cancel_and_wait(workers + watchers)
            raise
        finally:
            run.close()
        await _cancel_and_wait(watchers)
        summary = run.summary()
        self.completed_tasks = run.outcomes
        self.failed_tasks = {error["task_id"]: error["error"] for error in summary["errors"]}
        logger.info(
            "run finished: %d succeeded, %d failed, %d skipped, %d cancelled",
            summary["success"],
            summary["failed"],
            summary["skipped"],
            summary["cancelled"],
        )
        return summary


class _Worker:
    """What every worker coroutine of one run shares: the run and its callbacks."""

    def __init__(
        self,
        engine: AsyncExecutionEngine,
        run: _Run,
        executor_func: ExecutorFunc,
        progress_callback: ProgressCallback | None,
        start_callback: StartCallback | None,
    ) -> None:
        self.engine = engine
        self.run = run
        self.executor_func = executor_func
        self.progress_callback = progress_callback
        self.start_callback = start_callback
        self.task_timeout = run.policy.task_timeout

    async def work(self) -> None:
        """Hold one slot and take ready tasks one at a time until the run is resolved."""
        run = self.run
        loop = run.loop
        current = asyncio.current_task()
        semaphore = self.engine.semaphore
        execute_one = self.engine._execute_one  # pylint: disable=protected-access
        executor_func = self.executor_func
        progress_callback = self.progress_callback
        start_callback = self.start_callback
        run_timeout = self.task_timeout
        stop = run.policy.stop
        # Only a run that may cancel its own tasks needs to know who runs what.
        track = run.policy.fail_fast or stop is not None
        await semaphore.acquire()
        held = True
        try:
            while run.unresolved:
                if stop is not None and run.halted is None and stop.is_set():
                    await self._halt("stopped")
                    continue
                i = run.next_ready()
                if i is None:
                    # Nothing may start now: give the slot back while waiting.
                    semaphore.release()
                    held = False
                    waiter = loop.create_future()
                    run.idle.append(waiter)
                    run.arm_wake()
                    await waiter
                    await semaphore.acquire()
                    held = True
                    continue
                task = run.tasks[i]
                task_id = task.task_id
                if start_callback is not None and i not in run.attempts:
                    started = _call(start_callback, task_id, task)
                    if started is not None:
                        try:  # awaited here, not in a helper: one coroutine less per task
                            await started
                        except Exception:  # pylint: disable=broad-exception-caught
                            logger.exception("callback for task %r raised", task_id)
                if track and current is not None:
                    run.executing[i] = current
                try:
                    result = await execute_one(
                        task,
                        executor_func,
                        current,
                        run_timeout if task.timeout is None else task.timeout,
                    )
                except asyncio.CancelledError:
                    run.executing.pop(i, None)
                    if current not in run.cancelling:
                        raise
                    # The run cancelled this task itself (fail-fast, or a stop's grace ended).
                    run.cancelling.discard(current)
                    uncancel = getattr(current, "uncancel", None)
                    if uncancel is not None and uncancel() > 0:
                        raise  # cancelled from outside as well: that wins
                    run.cancel_started(i)
                    await _notify(
                        progress_callback, task_id, task_id, None, f"cancelled: {run.halted}"
                    )
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    run.executing.pop(i, None)
                    await self._failed(i, exc)
                else:
                    if track:
                        run.executing.pop(i, None)
                    if progress_callback is not None:
                        # The hot path: a sync callback costs one call, no coroutine.
                        reported = _call(progress_callback, task_id, task_id, result, None)
                        if reported is not None:
                            try:
                                await reported
                            except Exception:  # pylint: disable=broad-exception-caught
                                logger.exception("callback for task %r raised", task_id)
                    run.succeed(i, result)
                # New work, a freed agent slot or the end of the run: let idle workers look.
                if run.idle:
                    run.wake_idle()
        finally:
            if held:
                semaphore.release()

    async def _failed(self, i: int, exc: BaseException) -> None:
        run = self.run
        task = run.tasks[i]
        delay = run.retry_delay(i, exc)
        if delay is not None:
            attempt = run.attempts[i] - 1
            logger.info(
                "task %r failed (attempt %d), trying again in %.2f s: %s: %s",
                task.task_id,
                attempt,
                delay,
                type(exc).__name__,
                exc,
            )
            await _notify(
                run.policy.retry_callback, task.task_id, task, attempt, _error_text(exc), delay
            )
            run.schedule_retry(i, delay)
            return
        logger.info("task %r failed: %s: %s", task.task_id, type(exc).__name__, exc)
        await _notify(self.progress_callback, task.task_id, task.task_id, None, _error_text(exc))
        for child in run.fail(i, exc):
            skipped = run.tasks[child]
            await _notify(
                self.progress_callback,
                skipped.task_id,
                skipped.task_id,
                None,
                f"skipped: dependency {task.task_id!r} failed",
            )
        if run.policy.fail_fast and run.halted is None:
            await self._halt(f"fail-fast: task {task.task_id!r} failed")
            run.cancel_running()

    async def _halt(self, reason: str) -> None:
        run = self.run
        for j in run.halt(reason):
            cancelled = run.tasks[j].task_id
            await _notify(
                self.progress_callback, cancelled, cancelled, None, f"cancelled: {reason}"
            )
        run.wake_idle()

    async def watch_stop(self, stop: asyncio.Event) -> None:
        """When ``stop`` is set, start nothing new; after the grace, cancel what runs."""
        await stop.wait()
        logger.info("stop requested: no new task starts")
        if self.run.halted is None:
            await self._halt("stopped")
        grace = self.run.policy.stop_grace
        if grace is None:
            return
        await asyncio.sleep(grace)
        self.run.cancel_running()


async def _with_timeout(
    pending: Awaitable[Any], current: asyncio.Task[Any], timeout: float, task_id: str
) -> Any:
    """Await ``pending`` in this task, cancelling it after ``timeout`` seconds.

    Not ``asyncio.wait_for``: on Python < 3.12 it can swallow a cancellation
    that arrives as the awaited call finishes, and it costs a task per call.
    """
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        current.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await pending
    except asyncio.CancelledError:
        if not expired:
            raise
        uncancel = getattr(current, "uncancel", None)
        if uncancel is not None and uncancel() > 0:
            raise  # cancelled from outside as well: that wins
        raise TaskTimeoutError(f"task {task_id!r} timed out after {timeout:g} s") from None
    finally:
        handle.cancel()


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
    # Values None, not positions: int objects would cost 28 bytes a task at the run's peak.
    seen: dict[str, None] = {}
    for position, task in enumerate(task_list):
        if not isinstance(task, AsyncTask):
            raise TypeError(f"tasks[{position}] is not an AsyncTask (got {type(task).__name__})")
        if task.task_id in seen:
            first = next(i for i, t in enumerate(task_list) if t.task_id == task.task_id)
            raise ValueError(
                f"duplicate task_id {task.task_id!r} (tasks[{first}] and tasks[{position}])"
            )
        seen[task.task_id] = None
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
