"""What a run is expected to spend: tokens per call, and dollars where a price is known.

No tokenizer's data can be had offline, so tokens are estimated from text: a
token is about four bytes of UTF-8 (``text_tokens``), close for English prose
and an over-count for code. A call's input is its prompt (the note, its
material, and with ``--follow-edges`` the answers of the notes it builds on,
each counted as its agent's output estimate) and what its agent sends with
every call (``register(..., prompt_tokens=)``: the system prompt); its output
is the mean of this agent's earlier answers that the journal recorded (their
real usage, else their text), else what the agent declares
(``register(..., output_tokens=)``; an agent file's ``output_tokens``), else
:data:`DEFAULT_OUTPUT_TOKENS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from command_handlers.intelligent_parallel.notes import Note
from command_handlers.intelligent_parallel.prompt import build_prompt
from command_handlers.plugins import text_tokens
from command_handlers.pricing import Price

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "CallEstimate",
    "add_to_plan",
    "estimate_calls",
    "output_means",
]

#: The output estimate of an agent with no earlier answer: about 600 words.
DEFAULT_OUTPUT_TOKENS = 800


@dataclass(frozen=True)
class CallEstimate:
    """What one call is expected to spend.

    Attributes:
        input_tokens: Tokens sent.
        output_tokens: Tokens answered.
    """

    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


def output_means(records: Iterable[Any]) -> dict[str, int]:
    """Agent -> the mean output tokens of its recorded answers (rounded up).

    Args:
        records: The ``recorded_answers`` records (``agent``, ``text``, and
            ``output_tokens`` when the journal kept the call's usage).

    Returns:
        The means, for the agents with at least one answer.
    """
    sums: dict[str, list[int]] = {}
    for record in records:
        agent = getattr(record, "agent", None)
        spent = getattr(record, "output_tokens", None)
        if spent is None:
            text = getattr(record, "text", None)
            spent = text_tokens(text) if isinstance(text, str) else None
        if agent is None or spent is None:
            continue
        pair = sums.setdefault(str(agent), [0, 0])
        pair[0] += int(spent)
        pair[1] += 1
    return {agent: math.ceil(total / count) for agent, (total, count) in sums.items()}


def estimate_calls(
    notes: Mapping[str, Note],
    prompt_tokens: Mapping[str, int],
    means: Mapping[str, int],
    defaults: Mapping[str, int] | None = None,
) -> dict[tuple[str, str], CallEstimate]:
    """(note id, agent) -> the estimate of each call the run would make.

    Args:
        notes: The selected notes, decided (their ``todo`` agents are called).
        prompt_tokens: Agent -> the tokens it sends with every call.
        means: Agent -> its mean output tokens (:func:`output_means`).
        defaults: Agent -> its output tokens when it has no earlier answer
            (``register(..., output_tokens=)``); else :data:`DEFAULT_OUTPUT_TOKENS`.

    Returns:
        The estimates.
    """
    answers = {**dict(defaults or {}), **means}
    found: dict[tuple[str, str], CallEstimate] = {}
    for note in notes.values():
        if not note.todo:
            continue
        sent = text_tokens(build_prompt(note.text, note.material))
        # With --follow-edges the prompt also carries the answers of the notes it
        # builds on: each counts as its agent's output estimate.
        sent += sum(
            answers.get(agent, DEFAULT_OUTPUT_TOKENS)
            for earlier in note.after
            if earlier in notes
            for agent in notes[earlier].agents
        )
        for agent in note.todo:
            found[note.node_id, agent] = CallEstimate(
                sent + prompt_tokens.get(agent, 0), answers.get(agent, DEFAULT_OUTPUT_TOKENS)
            )
    return found


def _usd(price: Price | None, input_tokens: int, output_tokens: int) -> float | None:
    return None if price is None else round(price.usd(input_tokens, output_tokens), 6)


def add_to_plan(
    plan: dict[str, Any],
    calls: Mapping[tuple[str, str], CallEstimate],
    prices: Mapping[str, Price | None],
) -> None:
    """Add ``estimate`` (``input_tokens``, ``output_tokens``, ``usd``) per agent and in all.

    ``usd`` is ``None`` where an agent's price is unknown (and in all when any is).

    Args:
        plan: The plan (:func:`~command_handlers.intelligent_parallel.plan.make_plan`).
        calls: The calls' estimates.
        prices: Agent -> its price, ``None`` when unknown.
    """
    sent_all = answered_all = 0
    usd_all: float | None = 0.0
    for agent, entry in plan["agents"].items():
        mine = [estimate for (_, name), estimate in calls.items() if name == agent]
        sent = sum(estimate.input_tokens for estimate in mine)
        answered = sum(estimate.output_tokens for estimate in mine)
        usd = _usd(prices.get(agent), sent, answered)
        entry["estimate"] = {"input_tokens": sent, "output_tokens": answered, "usd": usd}
        sent_all += sent
        answered_all += answered
        usd_all = None if usd is None or usd_all is None else usd_all + usd
    plan["estimate"] = {
        "input_tokens": sent_all,
        "output_tokens": answered_all,
        "usd": None if usd_all is None else round(usd_all, 6),
    }
