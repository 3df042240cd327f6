"""The Canvas class: a validated, lossless, editable JSON Canvas 1.0 document."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from command_handlers.canvas._parse import decode, parse_text
from command_handlers.canvas._placement import Placer, check_spot_size, free_spot
from command_handlers.canvas._serialise import to_text
from command_handlers.canvas._types import CanvasError, Edge, Node, NodeRef, node_rect
from command_handlers.canvas._validate import (
    EDGE_FIELDS,
    GEOMETRY,
    NODE_FIELDS,
    check_color,
    check_edge,
    check_fields,
    check_node,
    check_number,
    check_top,
    quote,
)

if TYPE_CHECKING:
    from pathlib import Path


class Canvas:  # pylint: disable=too-many-public-methods
    """A JSON Canvas 1.0 document: validated, lossless, and editable by adding.

    The canvas keeps the parsed JSON objects themselves: :attr:`data` is the
    top-level object and :attr:`nodes` / :attr:`edges` list the node and edge
    objects in file order, unknown fields included. Change fields of those
    objects freely (text, colour, position), but not their ids; add nodes and
    edges only through :meth:`add_text_node`, :meth:`add_file_node` and
    :meth:`add_edge`, and remove nodes only through :meth:`remove_nodes`, so
    the lookups stay right.

    The model never touches a file: :mod:`command_handlers.fileio` reads and
    writes canvases. A canvas keeps, as plain data, the file it came from
    (:attr:`path`) and a stamp of the bytes it was parsed from or last written
    as (:attr:`source_digest`, :attr:`source_size`), so that
    :func:`~command_handlers.fileio.changed_on_disk` can tell whether someone
    else wrote the file since.
    """

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        """Make a canvas from parsed JSON, or an empty one.

        Args:
            data: The top-level JSON object of a canvas; it is validated and
                kept (not copied). None makes an empty canvas (``{}``).

        Raises:
            CanvasError: ``data`` is not a valid canvas.
        """
        self._data: dict[str, Any] = {} if data is None else check_top(data)
        self._nodes: list[Node] = self._data.get("nodes", [])
        self._edges: list[Edge] = self._data.get("edges", [])
        self._by_id: dict[str, Node] = {}
        for index, node in enumerate(self._nodes):
            node_id = check_node(node, index)["id"]
            if node_id in self._by_id:
                first = self._nodes.index(self._by_id[node_id])
                raise CanvasError(f"duplicate node id {quote(node_id)} (nodes {first} and {index})")
            self._by_id[node_id] = node
        edge_index: dict[str, int] = {}
        for index, edge in enumerate(self._edges):
            edge_id = check_edge(edge, index, self._by_id)["id"]
            first_index = edge_index.setdefault(edge_id, index)
            if first_index != index:
                raise CanvasError(
                    f"duplicate edge id {quote(edge_id)} (edges {first_index} and {index})"
                )
        self._edge_ids = set(edge_index)
        self._issued: set[str] = set()
        self._outgoing: dict[str, list[Edge]] | None = None
        self._incoming: dict[str, list[Edge]] = {}
        self._path: Path | None = None
        self._source_size: int | None = None
        self._digest: str | None = None

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_json(cls, text: str | bytes, *, path: Path | None = None) -> Canvas:
        """Parse and validate a canvas from JSON text.

        Args:
            text: The JSON text, or its UTF-8 bytes.
            path: The file the text was read from, kept as :attr:`path`
                (plain data: the model never opens it).

        Returns:
            The canvas, stamped with the bytes parsed (:attr:`source_digest`).

        Raises:
            CanvasError: The text is not valid UTF-8 or JSON, or not a valid canvas.
        """
        if isinstance(text, str):
            raw = text.encode("utf-8", "surrogatepass")
        else:
            raw, text = text, decode(text)
        data = parse_text(text)
        if data is None:  # ``cls(None)`` would be an empty canvas: ``null`` is no canvas at all
            raise CanvasError("a canvas must be a JSON object, not null")
        canvas = cls(data)
        canvas.record_source(raw, path)
        return canvas

    def record_source(self, raw: bytes, path: Path | None) -> None:
        """Record the file the canvas is now stored in and the bytes it holds there.

        :mod:`command_handlers.fileio` calls this after reading or writing.

        Args:
            raw: The bytes read or written.
            path: The file, or None when the bytes came from no file.
        """
        self._path = path
        self._source_size = len(raw)
        self._digest = hashlib.sha256(raw).hexdigest()

    @property
    def data(self) -> dict[str, Any]:
        """The top-level JSON object itself (unknown fields included)."""
        return self._data

    @property
    def path(self) -> Path | None:
        """The file the canvas was read from or last saved to, if any."""
        return self._path

    @property
    def source_digest(self) -> str | None:
        """The SHA-256 (hex) of the bytes the canvas was parsed from or last saved as, if any."""
        return self._digest

    @property
    def source_size(self) -> int | None:
        """The length of the bytes the canvas was parsed from or last saved as, if any."""
        return self._source_size

    # ------------------------------------------------------------------ lookups

    @property
    def nodes(self) -> list[Node]:
        """The nodes in file order (a new list of the node objects themselves)."""
        return list(self._nodes)

    @property
    def edges(self) -> list[Edge]:
        """The edges in file order (a new list of the edge objects themselves)."""
        return list(self._edges)

    def get_node(self, node_id: str) -> Node | None:
        """Find a node by id.

        Args:
            node_id: The node's id.

        Returns:
            The node, or None if the canvas has no such node.
        """
        return self._by_id.get(node_id)

    def node(self, node_id: str) -> Node:
        """Find a node by id, insisting that it exists.

        Args:
            node_id: The node's id.

        Returns:
            The node.

        Raises:
            CanvasError: The canvas has no such node.
        """
        node = self._by_id.get(node_id)
        if node is None:
            raise CanvasError(f"no node with id {quote(node_id)}")
        return node

    def _resolve(self, ref: NodeRef) -> Node:
        """Return the canvas's node for an id or a node object."""
        return self.node(ref if isinstance(ref, str) else ref.get("id", ""))

    def text_nodes(self, color: str | None = None) -> list[Node]:
        """List the text nodes, in file order.

        Args:
            color: Only nodes of this colour (e.g. "6"); None for all.

        Returns:
            The text nodes (unknown node types are never text nodes).
        """
        return [
            node
            for node in self._nodes
            if node["type"] == "text" and (color is None or node.get("color") == color)
        ]

    def _adjacency(self) -> dict[str, list[Edge]]:
        """Build (once) the outgoing and incoming edge lists of every node."""
        if self._outgoing is None:
            self._outgoing = {}
            for edge in self._edges:
                self._outgoing.setdefault(edge["fromNode"], []).append(edge)
                self._incoming.setdefault(edge["toNode"], []).append(edge)
        return self._outgoing

    def outgoing(self, node: NodeRef) -> list[Edge]:
        """List the edges leaving a node, in file order.

        Args:
            node: The node or its id.

        Returns:
            The edges whose ``fromNode`` is the node.

        Raises:
            CanvasError: The canvas has no such node.
        """
        node_id = self._resolve(node)["id"]
        return list(self._adjacency().get(node_id, ()))

    def incoming(self, node: NodeRef) -> list[Edge]:
        """List the edges arriving at a node, in file order.

        Args:
            node: The node or its id.

        Returns:
            The edges whose ``toNode`` is the node.

        Raises:
            CanvasError: The canvas has no such node.
        """
        node_id = self._resolve(node)["id"]
        self._adjacency()
        return list(self._incoming.get(node_id, ()))

    # ------------------------------------------------------------------ adding

    def new_id(self) -> str:
        """Make a fresh id like Obsidian's: 16 lowercase hex digits.

        Returns:
            An id used by no node or edge of the canvas and not returned
            before by this canvas.
        """
        while True:
            candidate = secrets.token_hex(8)
            if (
                candidate not in self._by_id
                and candidate not in self._edge_ids
                and candidate not in self._issued
            ):
                self._issued.add(candidate)
                return candidate

    def find_free_spot(
        self, anchor: NodeRef, width: float, height: float, *, gap: float = 50
    ) -> tuple[int, int]:
        """Find where a new node fits to the right of an anchor node.

        The first candidate is ``x = anchor.x + anchor.width + gap`` at the
        anchor's ``y``; while the rectangle would overlap a node, or come
        closer to it than ``gap``, it moves down to ``gap`` below that node's
        bottom. Group nodes are not obstacles (a new node may lie inside or
        across a group); every other node is. Coordinates are rounded up to
        whole pixels. Each call scans the nodes once and sorts those in the
        column, so it stays fast on large canvases.

        Args:
            anchor: The node (or its id) the new node belongs beside.
            width: Width of the new node.
            height: Height of the new node.
            gap: Distance to keep from the anchor and from every obstacle.

        Returns:
            The ``(x, y)`` of the new node's top-left corner.

        Raises:
            CanvasError: The anchor is not a node of the canvas, or a size or
                the gap is negative or not a number.
        """
        check_spot_size(width, height, gap)
        return free_spot(self._nodes, node_rect(self._resolve(anchor)), width, height, gap)

    def placer(self) -> Placer:
        """A :class:`~command_handlers.canvas.Placer` over this canvas's nodes and edge labels.

        Use it to place many new nodes: each placement looks only at the
        obstacles near the spot. Add the placed nodes to the canvas yourself.
        """
        return Placer(self._nodes, self._edges)

    def _add(self, key: str, items: list[Any], item: dict[str, Any]) -> None:
        """Append a node or edge, creating the top-level key if it was absent."""
        if key not in self._data:
            self._data[key] = items
        items.append(item)

    def _new_node(
        self, kind: str, key: str, value: str, box: tuple[float, ...], color: str | None
    ) -> Node:
        """Build, check and append a node of the given type."""
        node: Node = {"id": "", "type": kind, key: value}
        check_fields(node, NODE_FIELDS[kind], f"{kind} node")
        for name, number in zip(GEOMETRY, box):
            check_number(name, number, f"{kind} node")
            node[name] = number
        if color is not None:
            check_color(color, f"{kind} node")
            node["color"] = color
        node["id"] = self.new_id()
        self._add("nodes", self._nodes, node)
        self._by_id[node["id"]] = node
        return node

    def add_text_node(
        self,
        text: str,
        x: float,
        y: float,
        width: float,
        height: float,
        color: str | None = None,
    ) -> Node:
        """Append a text node.

        Args:
            text: Its Markdown text.
            x: Left edge.
            y: Top edge.
            width: Width.
            height: Height.
            color: "1" to "6", "#rrggbb", or None for none.

        Returns:
            The new node (with a fresh id), already part of the canvas.

        Raises:
            CanvasError: An argument is invalid.
        """
        return self._new_node("text", "text", text, (x, y, width, height), color)

    def add_file_node(
        self,
        file: str,
        x: float,
        y: float,
        width: float,
        height: float,
        color: str | None = None,
    ) -> Node:
        """Append a file node.

        Args:
            file: The path of the file within the vault (forward slashes).
            x: Left edge.
            y: Top edge.
            width: Width.
            height: Height.
            color: "1" to "6", "#rrggbb", or None for none.

        Returns:
            The new node (with a fresh id), already part of the canvas.

        Raises:
            CanvasError: An argument is invalid.
        """
        return self._new_node("file", "file", file, (x, y, width, height), color)

    def add_edge(
        self,
        from_node: NodeRef,
        to_node: NodeRef,
        *,
        label: str | None = None,
        from_side: str | None = "right",
        to_side: str | None = "left",
        color: str | None = None,
    ) -> Edge:
        """Append an edge between two nodes of the canvas.

        Args:
            from_node: The node (or its id) the edge starts at.
            to_node: The node (or its id) the edge ends at.
            label: The edge's label, or None for none.
            from_side: The side it leaves from ("top", "right", "bottom",
                "left"), or None to leave it unset.
            to_side: The side it arrives at, or None to leave it unset.
            color: "1" to "6", "#rrggbb", or None for none.

        Returns:
            The new edge (with a fresh id), already part of the canvas.

        Raises:
            CanvasError: A node is not part of the canvas, or an argument is invalid.
        """
        edge: Edge = {"id": "", "fromNode": self._resolve(from_node)["id"]}
        if from_side is not None:
            edge["fromSide"] = from_side
        edge["toNode"] = self._resolve(to_node)["id"]
        if to_side is not None:
            edge["toSide"] = to_side
        if label is not None:
            edge["label"] = label
        check_fields(edge, EDGE_FIELDS, "edge")
        if color is not None:
            check_color(color, "edge")
            edge["color"] = color
        edge["id"] = self.new_id()
        self._add("edges", self._edges, edge)
        self._edge_ids.add(edge["id"])
        if self._outgoing is not None:
            self._outgoing.setdefault(edge["fromNode"], []).append(edge)
            self._incoming.setdefault(edge["toNode"], []).append(edge)
        return edge

    # ------------------------------------------------------------------ removing

    def remove_nodes(self, nodes: Iterable[NodeRef]) -> list[Edge]:
        """Remove nodes and every edge that starts or ends at one of them.

        The other nodes and edges keep their order and their fields. The ids
        removed are never issued again by :meth:`new_id`.

        Args:
            nodes: The nodes (or their ids) to remove.

        Returns:
            The edges removed with them, in file order.

        Raises:
            CanvasError: One of them is not a node of the canvas (nothing is
                removed then).
        """
        doomed = {self._resolve(node)["id"] for node in nodes}
        if not doomed:
            return []
        removed = [e for e in self._edges if e["fromNode"] in doomed or e["toNode"] in doomed]
        self._nodes[:] = [node for node in self._nodes if node["id"] not in doomed]
        gone = {id(edge) for edge in removed}
        self._edges[:] = [edge for edge in self._edges if id(edge) not in gone]
        for node_id in doomed:
            del self._by_id[node_id]
        for edge in removed:
            self._edge_ids.discard(edge["id"])
            self._issued.add(edge["id"])
        self._issued.update(doomed)
        self._outgoing, self._incoming = None, {}  # rebuilt when next needed
        return removed

    # ------------------------------------------------------------------ writing

    def to_json(self) -> str:
        r"""Serialise the canvas as Obsidian writes it.

        The text equals ``json.dumps(data, indent="\t", ensure_ascii=False)``
        (produced faster), except that unpaired surrogates, which UTF-8 cannot
        hold, are written as ``\uXXXX`` escapes. A ``nodes`` or ``edges`` key
        the canvas did not have stays absent unless something was added.

        Returns:
            The JSON text (no trailing newline).
        """
        return to_text(self._data)

    def __repr__(self) -> str:
        """Describe the canvas briefly: its path and counts."""
        return f"Canvas(path={self._path!r}, nodes={len(self._nodes)}, edges={len(self._edges)})"
