"""The message an agent receives for one learner's note.

Layout (documented in ``docs/agents.md``)::

    # Topic
    <what the note is about: the first line of its first material, else of the note>

    ## Material                        (only when nodes are linked to the note)
    ### <label>
    <text of the linked node>

    ## Learner's understanding
    <the note's text>

    ## Prerequisite answers            (only with --follow-edges)
    ### <agent> on: <topic of the earlier note>
    <its answer>

A material's ``<label>`` is what the command passes as :attr:`Material.label`:
the edge's label, or ``Linked from`` / ``Links to`` for an edge without one,
then the linked node's kind in brackets, as in ``### question (text node)`` or
``### Links to (link node)``. Sections are separated by one blank line, as are
the items of a section; the message ends with one newline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Material", "Prerequisite", "build_prompt", "topic_of"]


@dataclass(frozen=True)
class Material:
    """One linked node's content, with what links it to the note.

    Attributes:
        label: The edge's label, or a phrase saying which way the edge goes.
        text: The linked node's text (or its file path, URL or group label).
    """

    label: str
    text: str


@dataclass(frozen=True)
class Prerequisite:
    """The answer to an earlier note this note builds on.

    Attributes:
        agent: The agent that answered.
        topic: The earlier note's topic.
        answer: The answer's text.
    """

    agent: str
    topic: str
    answer: str


def _first_line(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped
    return ""


def topic_of(note_text: str, material: Sequence[Material]) -> str:
    """Say in one line what a note is about.

    Args:
        note_text: The learner's note.
        material: The linked nodes' content, incoming first.

    Returns:
        The first non-empty line of the first material, else of the note.
    """
    for item in material:
        line = _first_line(item.text)
        if line:
            return line
    return _first_line(note_text)


def build_prompt(
    note_text: str,
    material: Sequence[Material] = (),
    prerequisites: Sequence[Prerequisite] = (),
) -> str:
    """Lay out the message for one note.

    Args:
        note_text: The learner's note (their own understanding).
        material: The linked nodes' content, incoming edges first.
        prerequisites: Answers to earlier notes this one builds on.

    Returns:
        The message, in Markdown.
    """
    parts = [f"# Topic\n{topic_of(note_text, material)}"]
    if material:
        parts.append(
            "## Material\n"
            + "\n\n".join(f"### {item.label}\n{item.text.strip()}" for item in material)
        )
    parts.append(f"## Learner's understanding\n{note_text.strip()}")
    if prerequisites:
        parts.append(
            "## Prerequisite answers\n"
            + "\n\n".join(
                f"### {item.agent} on: {item.topic}\n{item.answer.strip()}"
                for item in prerequisites
            )
        )
    return "\n\n".join(parts) + "\n"
