"""Python 3.9 compatibility: semaphores bound to a loop, and ``Task.uncancel``."""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Any

__all__ = ["BINDS_TO_LOOP", "new_semaphore", "rebind_semaphore", "uncancel"]

#: Before 3.10 asyncio primitives belong to the loop they were made in.
BINDS_TO_LOOP = sys.version_info < (3, 10)


def new_semaphore(value: int) -> asyncio.Semaphore:
    """``asyncio.Semaphore(value)``, also outside an event loop on Python 3.9.

    Args:
        value: The number of slots.

    Returns:
        The semaphore (on 3.9 with no loop, bound to a closed placeholder loop
        until :func:`rebind_semaphore` replaces it at the first run).
    """
    try:
        return asyncio.Semaphore(value)
    except RuntimeError:  # pragma: no cover - Python 3.9 with no event loop in this thread
        placeholder = asyncio.new_event_loop()  # rebound at the first run
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return asyncio.Semaphore(  # pylint: disable=unexpected-keyword-arg
                    value,
                    loop=placeholder,  # type: ignore[call-arg,unused-ignore]
                )
        finally:
            placeholder.close()


def rebind_semaphore(
    semaphore: asyncio.Semaphore, value: int, loop: asyncio.AbstractEventLoop
) -> asyncio.Semaphore:  # pragma: no cover - Python 3.9 only
    """On Python 3.9 a semaphore belongs to the loop it was made in: make an idle one anew.

    Args:
        semaphore: The engine's semaphore.
        value: Its number of slots.
        loop: The running loop.

    Returns:
        ``semaphore`` if it is usable in ``loop`` (or busy), else a fresh one.
    """
    idle = (
        semaphore._value == value  # pylint: disable=protected-access
        and not getattr(semaphore, "_waiters", None)
    )
    if getattr(semaphore, "_loop", loop) is not loop and idle:
        return asyncio.Semaphore(value)
    return semaphore


def uncancel(task: asyncio.Task[Any]) -> int:
    """Withdraw one cancellation request of ``task``; return how many are left.

    Python < 3.11 keeps no count: it returns 0 there, as if the request
    withdrawn had been the only one.

    Args:
        task: The task.

    Returns:
        The cancellation requests still pending.
    """
    method = getattr(task, "uncancel", None)
    return 0 if method is None else int(method())
