"""Which notes a run sends, what each is about, and which notes it builds on."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from command_handlers.canvas import Canvas, Node, color_of, label_of, node_text
from command_handlers.intelligent_parallel.answered import ANSWERED, NEW
from command_handlers.intelligent_parallel.options import CommandInputError, Options
from command_handlers.intelligent_parallel.prompt import Material, topic_of

__all__ = ["NOTE_COLOR", "Note", "link_prerequisites", "select_notes", "task_id"]

#: The colour of the learner's own-understanding note.
NOTE_COLOR = "6"


def task_id(note_id: str, agent: str) -> str:
    """The id of the task in which ``agent`` answers the note ``note_id``."""
    return f"{note_id}:{agent}"


@dataclass
class Note:
    """One selected note, what its agents need, and what the run does for each agent.

    Attributes:
        node: The canvas node.
        material: What the nodes linked to it hold.
        agents: The agents that answer it.
        after: Ids of the notes it builds on (``--follow-edges``).
        decisions: Agent -> ``new``, ``changed``, ``forced`` or ``answered``.
        hashes: Agent -> the input hash of its answer.
    """

    node: Node
    material: list[Material] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    decisions: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        """The note's node id."""
        return str(self.node["id"])

    @property
    def text(self) -> str:
        """The note's text."""
        return node_text(self.node) or ""

    @property
    def topic(self) -> str:
        """What the note is about, in one line."""
        return topic_of(self.text, self.material)

    @property
    def todo(self) -> list[str]:
        """The agents this run calls for the note (not those skipped as answered)."""
        return [agent for agent in self.agents if self.decisions.get(agent, NEW) != ANSWERED]

    @property
    def skipped(self) -> bool:
        """Whether every agent of the note is skipped: the note is already answered."""
        return bool(self.agents) and not self.todo


def select_notes(canvas: Canvas, opts: Options, answer_ids: AbstractSet[str]) -> dict[str, Note]:
    """The notes the run sends, by id, with their material.

    Args:
        canvas: The canvas.
        opts: The options (``nodes``, ``colors``).
        answer_ids: The nodes holding this tool's answers: never sent, never material.

    Returns:
        Note id -> note, in canvas (or ``nodes``) order.

    Raises:
        CommandInputError: A node named in ``nodes`` is unknown, not text, or an answer.
    """
    selected: list[Node] = []
    if opts.nodes:
        for node_id in dict.fromkeys(opts.nodes):
            node = canvas.get_node(node_id)
            if node is None:
                raise CommandInputError(f"unknown node id {node_id!r}")
            if node_text(node) is None:
                raise CommandInputError(
                    f"node {node_id!r} is a {node.get('type')} node; only text nodes can be sent"
                )
            if node_id in answer_ids:
                raise CommandInputError(
                    f"node {node_id!r} is an answer this tool wrote; it is never sent"
                )
            selected.append(node)
    else:
        colors = set(opts.colors or [NOTE_COLOR])
        selected = [
            node
            for node in canvas.text_nodes()
            if (color_of(node) or "").lower() in colors
            and (node_text(node) or "").strip()
            and node["id"] not in answer_ids
        ]
    return {str(node["id"]): Note(node, _material(canvas, node, answer_ids)) for node in selected}


def _material(canvas: Canvas, node: Node, answer_ids: AbstractSet[str]) -> list[Material]:
    material: list[Material] = []
    for direction, edges in (
        ("Linked from", canvas.incoming(node)),
        ("Links to", canvas.outgoing(node)),
    ):
        for edge in edges:
            other_id = edge["fromNode"] if direction == "Linked from" else edge["toNode"]
            other = canvas.get_node(other_id)
            if other is None or other_id in answer_ids or other is node:
                continue
            content = _content(other)
            if content:
                label = label_of(edge) or direction
                material.append(Material(f"{label} ({other.get('type')} node)", content))
    return material


def _content(node: Node) -> str:
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text") or "").strip()
    if kind == "file":
        return f"File: {node.get('file')}"
    if kind == "link":
        return f"Link: {node.get('url')}"
    if kind == "group":
        return f"Group: {node.get('label') or ''}".strip()
    return ""


def link_prerequisites(canvas: Canvas, notes: Mapping[str, Note]) -> None:
    """With ``--follow-edges``: an edge A -> B between two selected notes makes B build on A."""
    for edge in canvas.edges:
        source, target = str(edge["fromNode"]), str(edge["toNode"])
        if source != target and source in notes and target in notes:
            after = notes[target].after
            if source not in after:
                after.append(source)
