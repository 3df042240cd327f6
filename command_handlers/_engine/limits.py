"""The concurrency limits and the one check every layer applies to them."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEPENDENCY_LIMIT",
    "MAX_CONCURRENCY",
    "MIN_CONCURRENCY",
    "check_agent_limits",
    "check_limit",
]

MIN_CONCURRENCY = 1
MAX_CONCURRENCY = 20
DEFAULT_CONCURRENCY = 12
#: The story's task-level limit for the dependency-aware mode.
DEFAULT_DEPENDENCY_LIMIT = 5


def check_limit(name: str, value: object) -> int:
    """Check that a concurrency limit is an int from 1 to 20.

    Args:
        name: What the value is, for the message (``max_concurrency``).
        value: The value.

    Returns:
        The value.

    Raises:
        TypeError: It is not an int (``bool`` is refused too).
        ValueError: It is outside 1-20 (``max_concurrency must be between 1 and 20, got 0``).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not MIN_CONCURRENCY <= value <= MAX_CONCURRENCY:
        raise ValueError(
            f"{name} must be between {MIN_CONCURRENCY} and {MAX_CONCURRENCY}, got {value}"
        )
    return value


def check_agent_limits(agent_limits: Mapping[str, int] | None) -> dict[str, int]:
    """Check per-agent limits: each a positive int (no upper bound, the run's limit caps it).

    Args:
        agent_limits: agent name -> how many of its tasks may run at once, or ``None``.

    Returns:
        A copy, ``{}`` for ``None``.

    Raises:
        ValueError: A limit is not a positive int.
    """
    limits = dict(agent_limits or {})
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"limit of agent {name!r} must be a positive int, got {value!r}")
    return limits
