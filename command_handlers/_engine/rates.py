"""Rate limits on task starts: ``"5/s"``-style parsing and a token bucket."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RateLimit", "TokenBucket"]

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
        # Written as "not >" so that NaN is refused too.
        if not self.per_second > 0:  # pylint: disable=unnecessary-negation
            raise ValueError(f"a rate must be positive, got {self.per_second!r}")
        if not self.burst >= 1:  # pylint: disable=unnecessary-negation
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


class TokenBucket:
    """A token bucket on the loop's clock (``loop.time()``)."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.per_second
        self.capacity = limit.burst
        self.tokens = limit.burst
        self.stamp = now

    def ready_at(self, now: float) -> float:
        """Refill up to ``now`` and say when the next start may happen.

        Args:
            now: The loop's time.

        Returns:
            ``now`` if a token is there, else when one will be.
        """
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return now if self.tokens >= 1 else now + (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        """Spend one token for a start at ``now``.

        Args:
            now: The loop's time.
        """
        self.ready_at(now)
        self.tokens -= 1
