"""What a run does about slow, failing and rate-limited tasks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from command_handlers._engine.quotas import StartLimit
from command_handlers._engine.rates import RateLimit
from command_handlers._engine.retry import RetryPolicy
from command_handlers._engine.tasks import RetryCallback

__all__ = ["RunPolicy"]


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
        limits: Limits on what calls spend
            (:class:`~command_handlers._engine.quotas.StartLimit`: a budget,
            tokens per minute), asked before each task starts and told when it
            ends; a limit that says never stops the run starting tasks, and
            the tasks not started are cancelled with its reason.
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
    limits: Sequence[StartLimit] = ()

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
        return (
            self.retry is not None
            or self.rate is not None
            or bool(self.agent_rates)
            or bool(self.limits)
        )

    @property
    def may_cancel(self) -> bool:
        """Whether the run may cancel its own running tasks (fail-fast, a stop)."""
        return self.fail_fast or self.stop is not None
