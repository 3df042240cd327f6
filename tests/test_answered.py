"""Recognising the answers already on a canvas, and what a run decides for each note and agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from command_handlers.canvas import Canvas
from command_handlers.intelligent_parallel.answered import (
    ANSWERED,
    CHANGED,
    FORCED,
    NEW,
    KnownAnswer,
    card_body,
    decide,
    find_answers,
)

AGENTS = ("clarify", "anchor")


@dataclass(frozen=True)
class Record:
    """A journal record of a written answer."""

    answer_node_id: str
    note_id: str | None = "note"
    agent: str | None = "clarify"
    file_node_id: str | None = None
    input_hash: str | None = "h1"
    written_at: float = 100.0
    text: str | None = "The whole answer."


def text(node_id: str, color: str | None = None, body: str = "") -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": node_id,
        "type": "text",
        "text": body or f"text of {node_id}",
        "x": 0,
        "y": 0,
        "width": 100,
        "height": 100,
    }
    if color is not None:
        node["color"] = color
    return node


def file(node_id: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "file",
        "file": f"{node_id}.md",
        "x": 0,
        "y": 0,
        "width": 1,
        "height": 1,
    }


def edge(source: str, target: str, label: str | None = None) -> dict[str, Any]:
    item = {"id": f"{source}->{target}", "fromNode": source, "toNode": target}
    if label is not None:
        item["label"] = label
    return item


def canvas(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> Canvas:
    return Canvas({"nodes": nodes, "edges": edges})


def answer(**fields: Any) -> KnownAnswer:
    values: dict[str, Any] = {
        "note_id": "note",
        "agent": "clarify",
        "card_id": "card",
        "file_id": None,
        "input_hash": None,
        "written_at": None,
        "position": 0,
        "stored_text": None,
        "card_text": "**clarify** · 2026-01-01 10:00\n\nThe preview.",
    }
    values.update(fields)
    return KnownAnswer(**values)


# ----------------------------------------------------------------------------- by the edges


def test_a_blue_card_behind_an_agent_label_is_an_answer() -> None:
    board = canvas(
        [text("note", "6"), text("card", "5"), file("doc"), file("other")],
        [
            edge("note", "card", "clarify"),
            edge("card", "note"),
            edge("card", "doc"),
            edge("card", "other"),
        ],
    )

    index = find_answers(board, AGENTS)

    (found,) = index.of("note", "clarify")
    assert (found.card_id, found.file_id, found.input_hash, found.recorded) == (
        "card",
        "doc",
        None,
        False,
    )
    assert index.node_ids == {"card", "doc"}  # the first linked file is its document
    assert index.latest("note", "clarify") == found
    assert index.agents_of("note") == ["clarify"]
    assert index.of("note", "anchor") == []
    assert index.latest("note", "anchor") is None


@pytest.mark.parametrize(
    ("label", "color", "kind"),
    [
        (None, "5", "text"),  # the learner's own blue card, no label
        ("my notes", "5", "text"),  # a label that is no agent
        ("Clarify", "5", "text"),  # labels match exactly
        (" clarify", "5", "text"),
        ("clarify", "2", "text"),  # not the answer colour
        ("clarify", None, "text"),
        ("clarify", "5", "file"),  # not a text node
    ],
)
def test_other_linked_nodes_are_not_answers(
    label: str | None, color: str | None, kind: str
) -> None:
    target = text("card", color) if kind == "text" else {**file("card"), "color": color}
    board = canvas([text("note", "6"), target], [edge("note", "card", label)])

    index = find_answers(board, AGENTS)

    assert index.answers == {}
    assert index.node_ids == frozenset()


def test_recognition_does_not_depend_on_order_or_unknown_fields() -> None:
    nodes = [text("note", "6"), text("card", "5"), file("doc")]
    edges = [edge("note", "card", "clarify"), edge("card", "doc")]
    nodes[1]["x-extra"] = True

    first = find_answers(canvas(nodes, edges), AGENTS)
    shuffled = find_answers(
        canvas(
            [{k: v for k, v in n.items() if k != "x-extra"} for n in reversed(nodes)], edges[::-1]
        ),
        AGENTS,
    )

    assert shuffled.node_ids == first.node_ids
    assert [a.card_id for a in shuffled.of("note", "clarify")] == ["card"]


# ----------------------------------------------------------------------------- by the journal


def test_a_recorded_card_counts_whatever_its_colour() -> None:
    board = canvas(
        [text("note", "6"), text("card", "2"), file("doc"), file("mine")],
        [edge("card", "mine")],
    )

    index = find_answers(board, (), [Record("card", file_node_id="doc")])

    (found,) = index.of("note", "clarify")
    assert (found.file_id, found.input_hash, found.written_at) == ("doc", "h1", 100.0)
    assert found.text == "The whole answer."
    assert index.node_ids == {"card", "doc"}  # the recorded file, not the one linked


def test_records_of_nodes_not_on_this_canvas_are_ignored() -> None:
    board = canvas([text("note", "6"), text("card", "5")], [])

    index = find_answers(
        board,
        AGENTS,
        [
            Record("elsewhere"),
            Record("card", note_id=None),
            Record("card", agent=None),
            Record("card", file_node_id="gone"),
        ],
    )

    (found,) = index.of("note", "clarify")
    assert found.file_id is None
    assert index.node_ids == {"card"}


def test_the_journal_names_agents_the_run_does_not_know() -> None:
    board = canvas(
        [text("note", "6"), text("card", "5"), text("other", "5")],
        [edge("note", "card", "retired"), edge("note", "other", "retired")],
    )

    index = find_answers(board, AGENTS, [Record("card", agent="retired")])

    assert [a.card_id for a in index.of("note", "retired")] == ["other", "card"]
    assert index.latest("note", "retired").card_id == "card"  # recorded: newer


def test_the_newest_record_of_a_card_wins_and_edges_do_not_override_it() -> None:
    board = canvas([text("note", "6"), text("card", "5")], [edge("note", "card", "anchor")])

    index = find_answers(
        board,
        AGENTS,
        [
            Record("card", input_hash="new", written_at=200.0),
            Record("card", input_hash="old", written_at=100.0),
        ],
    )

    assert [a.input_hash for a in index.of("note", "clarify")] == ["new"]
    assert index.of("note", "anchor") == []


def test_answers_are_ordered_oldest_first() -> None:
    board = canvas(
        [text("note", "6"), text("c1", "5"), text("c2", "5"), text("c3", "5"), text("c4", "5")],
        [edge("note", c, "clarify") for c in ("c1", "c2", "c3", "c4")]
        + [{**edge("note", "c4", "anchor"), "id": "second"}],
    )

    index = find_answers(
        board,
        AGENTS,
        [
            Record("c3", written_at=300.0),
            Record("c1", written_at=500.0),
            Record("c4", agent="anchor"),
        ],
    )

    assert [a.card_id for a in index.of("note", "clarify")] == ["c2", "c3", "c1"]
    assert index.agents_of("note") == ["clarify", "anchor"]  # by their first answers
    assert index.agents_of("nobody") == []


# ----------------------------------------------------------------------------- decisions


def test_decide() -> None:
    unknown = answer()
    same = answer(input_hash="h", written_at=1.0)
    other = answer(input_hash="old", written_at=1.0)

    assert decide([], "h") == NEW
    assert decide([], "h", force=True) == NEW
    assert decide([same], "h") == ANSWERED
    assert decide([unknown], "h") == ANSWERED  # the journal does not know: unchanged
    assert decide([other, unknown], "h") == ANSWERED
    assert decide([other], "h") == CHANGED
    assert decide([other, same], "h") == ANSWERED
    assert decide([same], "h", force=True) == FORCED


def test_an_answers_text() -> None:
    assert answer(stored_text="Stored.").text == "Stored."
    assert answer().text == "The preview."
    assert card_body("**anchor** · now\n\nBody", "clarify") == "**anchor** · now\n\nBody"
    assert card_body("  A card of my own.  ", "clarify") == "A card of my own."
