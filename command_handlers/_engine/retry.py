"""Which failures are tried again, and after how long."""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["RetryPolicy", "is_retryable", "retry_after"]


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

    Looks at ``error.retry_after`` (seconds), then at the headers of
    ``error.response``: ``retry-after-ms`` (milliseconds, which OpenAI-compatible
    servers send), then ``Retry-After`` (seconds or an HTTP date), as the errors
    of LLM providers' client libraries carry them.

    Args:
        error: The error.

    Returns:
        Seconds to wait (at least 0), or ``None``.
    """
    value: Any = getattr(error, "retry_after", None)
    if value is None:
        headers = getattr(getattr(error, "response", None), "headers", None)
        if headers is not None and hasattr(headers, "get"):
            # The finer header first, as the openai client reads them.
            millis = _seconds(headers.get("retry-after-ms") or headers.get("Retry-After-Ms"))
            if millis is not None:
                return millis / 1000.0
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


def _seconds(value: Any) -> Optional[float]:  # noqa: UP045
    """A header's number (at least 0), or ``None`` when it holds none."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else max(0.0, number)  # NaN says nothing


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
