"""Calling user callbacks, sync or async, so that their errors never stop a run."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from types import CoroutineType
from typing import Any, Callable

__all__ = ["call", "notify", "settle"]

logger = logging.getLogger("command_handlers.engine")


def call(callback: Callable[..., Any], task_id: str, *args: Any) -> Awaitable[Any] | None:
    """Call a sync or async callback; return what is left to await, log what it raised.

    Args:
        callback: The callback.
        task_id: The task it is about, for the log.
        *args: Its arguments.

    Returns:
        The awaitable it returned, or ``None``.
    """
    try:
        outcome = callback(*args)
    except Exception:  # pylint: disable=broad-exception-caught
        logger.exception("callback %r for task %r raised; the run goes on", callback, task_id)
        return None
    if outcome is None:
        return None
    # The exact type test first: isawaitable() alone costs several times more per task.
    if type(outcome) is CoroutineType or inspect.isawaitable(outcome):  # pylint: disable=unidiomatic-typecheck
        return outcome
    return None


async def settle(pending: Awaitable[Any], task_id: str) -> None:
    """Await what an async callback returned; log and swallow anything it raises.

    Args:
        pending: The awaitable.
        task_id: The task it is about, for the log.
    """
    try:
        await pending
    except Exception:  # pylint: disable=broad-exception-caught
        logger.exception("callback for task %r raised; the run goes on", task_id)


async def notify(callback: Callable[..., Any] | None, task_id: str, *args: Any) -> None:
    """Call a sync or async callback, if any; log and swallow anything it raises.

    Args:
        callback: The callback, or ``None``.
        task_id: The task it is about, for the log.
        *args: Its arguments.
    """
    if callback is None:
        return
    pending = call(callback, task_id, *args)
    if pending is not None:
        await settle(pending, task_id)
