"""Decide, per note and agent, what to answer, and lay out the plan the user confirms."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from command_handlers.intelligent_parallel.answered import (
    ANSWERED,
    CHANGED,
    FORCED,
    NEW,
    AnswerIndex,
    KnownAnswer,
    decide,
)
from command_handlers.intelligent_parallel.hashes import InputHashes
from command_handlers.intelligent_parallel.notes import Note, task_id
from command_handlers.intelligent_parallel.options import Options

__all__ = [
    "SECONDS_PER_CALL",
    "decide_all",
    "earlier_answers",
    "make_plan",
    "replacing",
    "skipped_pairs",
]

#: The origin's figure for one agent call, used for the plan's estimate.
SECONDS_PER_CALL = 10
_GROUPS = (NEW, CHANGED, FORCED, ANSWERED)


def decide_all(
    notes: Mapping[str, Note], known: AnswerIndex, hashes: InputHashes, *, force: bool
) -> None:
    """Decide, per note and agent, whether to answer: new, changed, forced or answered."""
    for note in notes.values():
        for agent in note.agents:
            note.hashes[agent] = hashes.of(note, agent, notes)
            note.decisions[agent] = decide(
                known.of(note.node_id, agent), note.hashes[agent], force=force
            )


def earlier_answers(notes: Mapping[str, Note], known: AnswerIndex) -> dict[str, str]:
    """Task id -> the latest answer on the canvas, for every pair skipped as answered."""
    earlier: dict[str, str] = {}
    for note in notes.values():
        for agent in note.agents:
            latest = known.latest(note.node_id, agent)
            if note.decisions[agent] == ANSWERED and latest is not None:
                earlier[task_id(note.node_id, agent)] = latest.text
    return earlier


def replacing(notes: Mapping[str, Note], known: AnswerIndex) -> dict[str, KnownAnswer]:
    """Task id -> the latest answer by the same agent, for every pair answered again."""
    found: dict[str, KnownAnswer] = {}
    for note in notes.values():
        for agent in note.todo:
            latest = known.latest(note.node_id, agent)
            if latest is not None:
                found[task_id(note.node_id, agent)] = latest
    return found


def skipped_pairs(notes: Mapping[str, Note], known: AnswerIndex) -> list[dict[str, Any]]:
    """The pairs skipped as already answered, for the report."""
    skipped = []
    for note in notes.values():
        for agent in note.agents:
            latest = known.latest(note.node_id, agent)
            if note.decisions[agent] == ANSWERED and latest is not None:
                skipped.append(
                    {
                        "node_id": note.node_id,
                        "agent": agent,
                        "reason": "already answered",
                        "answer_node_id": latest.card_id,
                    }
                )
    return skipped


def make_plan(notes: Mapping[str, Note], opts: Options, dependency_limit: int) -> dict[str, Any]:
    """The plan: per agent the notes to answer, and the groups (new, changed...) with counts.

    Args:
        notes: The selected notes, decided.
        opts: The options (``max``, ``follow_edges``).
        dependency_limit: How many run at once when following edges.

    Returns:
        The plan dict the confirmation, the dry run and the report show.
    """
    by_agent: dict[str, dict[str, Any]] = {}
    groups = dict.fromkeys(_GROUPS, 0)
    for note in notes.values():
        for agent in note.agents:
            decision = note.decisions[agent]
            groups[decision] += 1
            entry = by_agent.setdefault(
                agent,
                {"nodes": [], "calls": 0, "with_prerequisites": 0, **groups.fromkeys(groups, 0)},
            )
            entry[decision] += 1
            if decision != ANSWERED:
                entry["nodes"].append(note.node_id)
                entry["calls"] += 1
                entry["with_prerequisites"] += bool(note.after)
    calls = sum(entry["calls"] for entry in by_agent.values())
    limit = min(opts.max, dependency_limit) if opts.follow_edges else opts.max
    return {
        "notes": sum(1 for note in notes.values() if note.todo),
        "selected": len(notes),
        "calls": calls,
        **groups,
        "skipped_answered": sum(1 for note in notes.values() if note.skipped),
        "max_concurrency": opts.max,
        "follow_edges": opts.follow_edges,
        "agents": by_agent,
        "estimate_seconds": math.ceil(calls / limit) * SECONDS_PER_CALL,
    }
