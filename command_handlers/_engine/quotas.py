"""Limits on what calls spend: a budget, and a rate of tokens per minute.

Each limit is a small object behind one protocol, :class:`StartLimit`, that the
scheduler asks before a task starts and tells when it ends, as anyio's
capacity limiters and aiometer's rate limits are: the scheduler knows nothing
of tokens or money, a limit nothing of queues or workers.

A limit weighs a task with the ``estimate`` it is given (reserved when the
task starts) and settles with ``actual`` (what the task's result says it
spent) when it ends; a task that ends without a result (failed, cancelled)
counts as its estimate, as the provider may have charged it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Protocol

from command_handlers._engine.tasks import AsyncTask

__all__ = ["Actual", "Budget", "Estimate", "StartLimit", "TokenRate"]

#: ``task -> what it is expected to spend`` (tokens, dollars: the limit's unit).
Estimate = Callable[[AsyncTask], float]
#: ``(task, result) -> what it spent``, or ``None`` when the result does not say.
Actual = Callable[[AsyncTask, Any], Optional[float]]


class StartLimit(Protocol):
    """What the scheduler asks a limit (the times are the loop's clock)."""

    @property
    def reason(self) -> str:
        """Why no task may start any more, once :meth:`ready_at` said never."""

    def ready_at(self, task: AsyncTask, now: float) -> float | None:
        """When ``task`` may start.

        Args:
            task: The task about to start.
            now: The loop's time.

        Returns:
            ``now`` (start it), a later time (wait; ``math.inf``: until a
            running task ends), or ``None``: it never may (the run stops
            starting tasks).
        """

    def acquire(self, task: AsyncTask, now: float) -> None:
        """``task`` starts now: reserve its estimate."""

    def release(self, task: AsyncTask, result: Any, now: float) -> None:
        """``task`` ended (``result`` is ``None`` unless it succeeded): settle its reservation."""


def _settle(estimate: float, actual: Actual, task: AsyncTask, result: Any) -> float:
    """What a finished task spent: its result's figure, else its estimate."""
    if result is None:
        return estimate
    spent = actual(task, result)
    return estimate if spent is None else float(spent)


class Budget:
    """At most ``capacity`` spent over a run: spent plus reserved stays within it.

    A task that does not fit waits while other tasks run (their real spending
    may be less than reserved); once none runs and it still does not fit, no
    task starts any more.

    Args:
        capacity: The budget, in the estimates' unit.
        estimate: What a task is expected to spend.
        actual: What a finished task spent, from its result.
        label: The budget as people read it (``"15000 tokens"``), for :attr:`reason`.
        spent: What was spent before this run.
    """

    def __init__(
        self,
        capacity: float,
        estimate: Estimate,
        actual: Actual,
        *,
        label: str = "",
        spent: float = 0.0,
    ) -> None:
        # Written as "not >=" so that NaN is refused too.
        if not capacity >= 0:  # pylint: disable=unnecessary-negation
            raise ValueError(f"a budget must be >= 0, got {capacity!r}")
        self.capacity = float(capacity)
        self.estimate = estimate
        self.actual = actual
        self.label = label or f"{capacity:g}"
        self.spent = float(spent)
        self.reserved: dict[str, float] = {}
        #: The sum of :attr:`reserved`, kept as calls start and end.
        self.held = 0.0

    @property
    def reason(self) -> str:
        """``budget of <label> reached``."""
        return f"budget of {self.label} reached"

    def ready_at(self, task: AsyncTask, now: float) -> float | None:  # pylint: disable=unused-argument
        """``now`` if the task's estimate fits; ``math.inf`` while others run; else ``None``."""
        if self.spent + self.held + self.estimate(task) <= self.capacity:
            return now
        # Whether calls run, not whether ``held`` is 0: a sum of floats may not return to 0.
        return math.inf if self.reserved else None

    def acquire(self, task: AsyncTask, now: float) -> None:  # pylint: disable=unused-argument
        """Reserve the task's estimate."""
        need = self.estimate(task)
        self.reserved[task.task_id] = need
        self.held += need

    def release(self, task: AsyncTask, result: Any, now: float) -> None:  # pylint: disable=unused-argument
        """Count what the task spent instead of its reservation."""
        held = self.reserved.pop(task.task_id, None)
        if held is not None:
            self.held = self.held - held if self.reserved else 0.0
            self.spent += _settle(held, self.actual, task, result)


class _Bucket:
    """The tokens one group may still spend, refilled continuously."""

    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class TokenRate:
    """At most ``per_minute`` tokens a minute per group (a model, an agent): a token bucket.

    The bucket holds a minute's tokens and refills continuously; a starting
    task takes its estimate out, and gives back what it did not spend when it
    ends (or takes the rest, when it spent more). A task whose estimate is more
    than a minute's tokens starts when the bucket is full.

    Args:
        per_minute: Tokens a minute.
        estimate: A task's expected tokens.
        actual: A finished task's tokens, from its result.
        group: ``task -> its group``; tasks whose group is ``None`` are not
            limited. ``None``: one group for every task.
    """

    def __init__(
        self,
        per_minute: float,
        estimate: Estimate,
        actual: Actual,
        *,
        group: Callable[[AsyncTask], str | None] | None = None,
    ) -> None:
        if not per_minute > 0:  # pylint: disable=unnecessary-negation
            raise ValueError(f"tokens per minute must be positive, got {per_minute!r}")
        self.capacity = float(per_minute)
        self.per_second = self.capacity / 60.0
        self.estimate = estimate
        self.actual = actual
        self.group = group
        self.buckets: dict[str | None, _Bucket] = {}
        self.reserved: dict[str, tuple[str | None, float]] = {}

    @property
    def reason(self) -> str:
        """Never needed: a rate only delays."""
        return f"{self.capacity:g} tokens per minute"

    def _bucket(self, key: str | None, now: float) -> _Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket(self.capacity, now)
        elif now > bucket.stamp:
            bucket.level = min(self.capacity, bucket.level + (now - bucket.stamp) * self.per_second)
            bucket.stamp = now
        return bucket

    def _key(self, task: AsyncTask) -> tuple[bool, str | None]:
        if self.group is None:
            return True, None
        key = self.group(task)
        return key is not None, key

    def ready_at(self, task: AsyncTask, now: float) -> float | None:
        """``now`` when the bucket holds the task's estimate, else when it will."""
        limited, key = self._key(task)
        if not limited:
            return now
        bucket = self._bucket(key, now)
        need = min(self.estimate(task), self.capacity)
        if bucket.level >= need:
            return now
        return now + (need - bucket.level) / self.per_second

    def acquire(self, task: AsyncTask, now: float) -> None:
        """Take the task's estimate out of its group's bucket."""
        limited, key = self._key(task)
        if limited:
            need = self.estimate(task)
            self._bucket(key, now).level -= need
            self.reserved[task.task_id] = (key, need)

    def release(self, task: AsyncTask, result: Any, now: float) -> None:
        """Give back what the task did not spend (or take what it spent over)."""
        held = self.reserved.pop(task.task_id, None)
        if held is None:
            return
        key, need = held
        bucket = self._bucket(key, now)
        bucket.level = min(
            self.capacity, bucket.level + need - _settle(need, self.actual, task, result)
        )
