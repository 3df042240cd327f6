"""What a task is expected to spend and what it spent, as the spending limits read them.

A caller puts a task's expected tokens in ``node_data["estimated_tokens"]``;
an executor's result says what the call spent in ``result["usage"]``
(``{"input_tokens": N, "output_tokens": N}``), as the ``llm`` agents' results do.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any, Callable

from command_handlers.async_execution_engine import AsyncTask, StartLimit, TokenRate

__all__ = [
    "BYTES_PER_TOKEN",
    "ESTIMATE_KEY",
    "Exempt",
    "agent_token_rates",
    "estimated_tokens",
    "spent_tokens",
    "text_tokens",
]

#: The ``node_data`` key holding a task's expected tokens (input plus output).
ESTIMATE_KEY = "estimated_tokens"
#: Bytes of UTF-8 per token, for estimates made without a tokenizer.
BYTES_PER_TOKEN = 4


def text_tokens(text: str) -> int:
    """The estimated tokens of ``text``: ceil(UTF-8 bytes / 4).

    No tokenizer's data is at hand offline; four bytes a token is close for
    English prose and over-counts code.

    Args:
        text: The text.

    Returns:
        The tokens.
    """
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN)


def estimated_tokens(task: AsyncTask) -> float:
    """A task's expected tokens, from ``node_data["estimated_tokens"]`` (0 when not said).

    Args:
        task: The task.

    Returns:
        The tokens.
    """
    value = task.node_data.get(ESTIMATE_KEY)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def spent_tokens(task: AsyncTask, result: Any) -> float | None:  # pylint: disable=unused-argument
    """The tokens a call spent (input plus output), from its result's ``usage``.

    Args:
        task: The task.
        result: Its result.

    Returns:
        The tokens, or ``None`` when the result does not say.
    """
    usage = result.get("usage") if isinstance(result, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    try:
        return float(int(usage["input_tokens"]) + int(usage["output_tokens"]))
    except (KeyError, TypeError, ValueError):
        return None


def agent_token_rates(tpms: Mapping[str, float]) -> list[TokenRate]:
    """One tokens-per-minute limit per agent that registered one (``register(..., tpm=)``).

    Args:
        tpms: Agent name -> its tokens per minute.

    Returns:
        The limits.
    """
    return [
        TokenRate(tpm, estimated_tokens, spent_tokens, group=_only(name))
        for name, tpm in tpms.items()
    ]


def _only(name: str) -> Callable[[AsyncTask], str | None]:
    """A group that holds the tasks of agent ``name`` alone."""

    def group(task: AsyncTask) -> str | None:
        return name if task.agent_name == name else None

    return group


class Exempt:
    """A limit that lets some tasks through untouched (answers replayed from a cache).

    Args:
        limit: The limit.
        task_ids: The tasks it does not weigh.
    """

    def __init__(self, limit: StartLimit, task_ids: Collection[str]) -> None:
        self.limit = limit
        self.task_ids = task_ids

    @property
    def reason(self) -> str:
        """The limit's reason."""
        return self.limit.reason

    def ready_at(self, task: AsyncTask, now: float) -> float | None:
        """``now`` for an exempt task, else as the limit says."""
        return now if task.task_id in self.task_ids else self.limit.ready_at(task, now)

    def acquire(self, task: AsyncTask, now: float) -> None:
        """Reserve, unless the task is exempt."""
        if task.task_id not in self.task_ids:
            self.limit.acquire(task, now)

    def release(self, task: AsyncTask, result: Any, now: float) -> None:
        """Settle, unless the task is exempt."""
        if task.task_id not in self.task_ids:
            self.limit.release(task, result, now)
