"""Recognise the answers this tool already wrote on a canvas, and decide what to answer again.

Pure functions over a :class:`~command_handlers.canvas.Canvas` and the journal's
records of written answers: no file is read or written here.

An answer of agent ``A`` to a note ``N`` is

- a text node of the answer colour (``"5"``) that an edge labelled exactly ``A``
  leads to from ``N``, or
- a node of the canvas that the journal records as ``A``'s answer to ``N``,
  whatever its colour now.

Its document's file node (recorded by the journal, else the first file node an
edge from the card leads to) belongs to the answer, but is not needed to
recognise it. Only ids, types, colours, labels and the edges' ends are read,
so an answer is still recognised after Obsidian re-saved the file (nodes and
edges reordered, re-indented, unknown fields dropped).

Per selected note and agent a run then decides (:func:`decide`): ``"new"`` (no
answer yet), ``"answered"`` (skip: an answer is there and the input it
answered is the current one, or the journal does not know), ``"changed"``
(every answer there answered another input) or ``"forced"`` (``--force``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from command_handlers.canvas import Canvas, color_of, label_of, node_text

__all__ = [
    "ANSWERED",
    "ANSWER_COLOR",
    "CHANGED",
    "FORCED",
    "NEW",
    "AnswerIndex",
    "KnownAnswer",
    "WrittenRecord",
    "card_body",
    "decide",
    "find_answers",
]

#: The colour of the cards this tool writes (blue, "AI explanation").
ANSWER_COLOR = "5"

#: The decisions :func:`decide` makes for one note and agent.
NEW, CHANGED, FORCED, ANSWERED = "new", "changed", "forced", "answered"


class WrittenRecord(Protocol):
    """What is read of the journal's record of a written answer (a journal ``Answer``)."""

    @property
    def answer_node_id(self) -> str:
        """The node holding the answer."""

    @property
    def file_node_id(self) -> str | None:
        """The answer's file node, if any."""

    @property
    def input_hash(self) -> str | None:
        """The fingerprint of the input it answered."""

    @property
    def written_at(self) -> float:
        """When it was written (Unix time)."""

    @property
    def note_id(self) -> str | None:
        """The note it answers."""

    @property
    def agent(self) -> str | None:
        """The agent that wrote it."""

    @property
    def text(self) -> str | None:
        """The whole answer, as the agent returned it."""


@dataclass(frozen=True)
class KnownAnswer:
    """An answer found on the canvas.

    Attributes:
        note_id: The note it answers.
        agent: The agent that wrote it.
        card_id: The node holding it (the blue card).
        file_id: Its document's file node, if it has one on the canvas.
        input_hash: The fingerprint of the input it answered, when the journal
            recorded it; ``None`` for an answer the journal does not know.
        written_at: When the journal says it was written, else ``None``.
        position: The card's index in the canvas's nodes (a tie-breaker for
            answers the journal does not know).
        stored_text: The whole answer from the journal, if recorded.
        card_text: The card's text as it is now.
    """

    note_id: str
    agent: str
    card_id: str
    file_id: str | None
    input_hash: str | None
    written_at: float | None
    position: int
    stored_text: str | None
    card_text: str

    @property
    def recorded(self) -> bool:
        """Whether the journal recorded this answer."""
        return self.written_at is not None

    @property
    def text(self) -> str:
        """The answer's text: the journal's copy if any, else the card's (without its header)."""
        if self.stored_text is not None:
            return self.stored_text
        return card_body(self.card_text, self.agent)

    def age_key(self) -> tuple[bool, float, int]:
        """Sort key, oldest first: recorded answers by time, after the unrecorded ones."""
        return (self.recorded, self.written_at or 0.0, self.position)


@dataclass
class AnswerIndex:
    """The answers on one canvas, by note and agent.

    Attributes:
        answers: ``(note id, agent)`` -> its answers, oldest first.
        node_ids: Every node that is part of an answer (cards and their file
            nodes): never selected, never material.
    """

    answers: dict[tuple[str, str], list[KnownAnswer]] = field(default_factory=dict)
    node_ids: frozenset[str] = frozenset()

    def of(self, note_id: str, agent: str) -> list[KnownAnswer]:
        """The answers of ``agent`` to ``note_id``, oldest first."""
        return list(self.answers.get((note_id, agent), ()))

    def latest(self, note_id: str, agent: str) -> KnownAnswer | None:
        """The newest answer of ``agent`` to ``note_id``, if any."""
        found = self.answers.get((note_id, agent))
        return found[-1] if found else None

    def agents_of(self, note_id: str) -> list[str]:
        """The agents that answered ``note_id``, in the order they first did."""
        return list(self._by_note.get(note_id, ()))

    @functools.cached_property
    def _by_note(self) -> dict[str, list[str]]:
        by_note: dict[str, list[str]] = {}
        for (note_id, agent), _ in sorted(
            self.answers.items(), key=lambda item: item[1][0].age_key()
        ):
            by_note.setdefault(note_id, []).append(agent)
        return by_note


def card_body(text: str, agent: str) -> str:
    """Strip the ``**agent** · time`` header this tool puts on a card.

    Args:
        text: The card's text.
        agent: The agent that wrote it.

    Returns:
        The rest of the text (the whole text when it has no such header).
    """
    first, _, rest = text.partition("\n")
    if first.startswith(f"**{agent}**"):
        return rest.strip()
    return text.strip()


def find_answers(
    canvas: Canvas, agents: Iterable[str], records: Iterable[WrittenRecord] = ()
) -> AnswerIndex:
    """Find the answers this tool wrote on a canvas.

    Args:
        canvas: The canvas.
        agents: The names an edge's label must match (the registered agents;
            the agents the journal names are added).
        records: The journal's written answers (any canvas's: only those whose
            card is a node of this canvas count).

    Returns:
        The answers, by note and agent.
    """
    position = {str(node["id"]): index for index, node in enumerate(canvas.nodes)}
    cards: dict[str, KnownAnswer] = {}
    recorded_file: dict[str, str | None] = {}
    names = set(agents)
    for record in records:
        card = canvas.get_node(record.answer_node_id)
        if card is None or not record.note_id or not record.agent:
            continue
        names.add(record.agent)
        earlier = cards.get(record.answer_node_id)
        if earlier is not None and (earlier.written_at or 0.0) > record.written_at:
            continue
        cards[record.answer_node_id] = KnownAnswer(
            record.note_id,
            record.agent,
            record.answer_node_id,
            None,
            record.input_hash,
            record.written_at,
            position[record.answer_node_id],
            record.text,
            node_text(card) or "",
        )
        file_id = record.file_node_id
        recorded_file[record.answer_node_id] = (
            file_id if file_id and canvas.get_node(file_id) is not None else None
        )
    for edge in canvas.edges:
        label, card_id = label_of(edge), str(edge["toNode"])
        card = canvas.get_node(card_id)
        if label is None or label not in names or card_id in cards or card is None:
            continue
        if node_text(card) is not None and color_of(card) == ANSWER_COLOR:
            cards[card_id] = KnownAnswer(
                str(edge["fromNode"]),
                label,
                card_id,
                None,
                None,
                None,
                position[card_id],
                None,
                node_text(card) or "",
            )
    return _index(canvas, cards, recorded_file)


def _index(
    canvas: Canvas, cards: Mapping[str, KnownAnswer], recorded_file: Mapping[str, str | None]
) -> AnswerIndex:
    """Attach each card's file node, and group the answers by note and agent."""
    index = AnswerIndex()
    node_ids = set(cards)
    for card_id, answer in cards.items():
        file_id = recorded_file.get(card_id) or _linked_file(canvas, card_id)
        if file_id is not None:
            node_ids.add(file_id)
            answer = dataclasses.replace(answer, file_id=file_id)
        index.answers.setdefault((answer.note_id, answer.agent), []).append(answer)
    for answers in index.answers.values():
        answers.sort(key=KnownAnswer.age_key)
    index.node_ids = frozenset(node_ids)
    return index


def _linked_file(canvas: Canvas, card_id: str) -> str | None:
    """The first file node an edge from the card leads to."""
    for edge in canvas.outgoing(card_id):
        target = canvas.get_node(str(edge["toNode"]))
        if target is not None and target.get("type") == "file":
            return str(target["id"])
    return None


def decide(answers: Sequence[KnownAnswer], input_hash: str, *, force: bool = False) -> str:
    """Decide what a run does for one note and agent.

    Args:
        answers: The agent's answers to the note on the canvas.
        input_hash: The fingerprint of the note's input now.
        force: ``--force``: answer again whatever is there.

    Returns:
        :data:`NEW` when there is no answer; else :data:`FORCED` with
        ``force``; else :data:`ANSWERED` when one of the answers answered this
        very input or is unknown to the journal (it counts as unchanged), and
        :data:`CHANGED` when every one answered another input.
    """
    if not answers:
        return NEW
    if force:
        return FORCED
    if any(answer.input_hash is None or answer.input_hash == input_hash for answer in answers):
        return ANSWERED
    return CHANGED
