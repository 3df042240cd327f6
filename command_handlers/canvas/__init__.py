"""A pure-data model of a JSON Canvas 1.0 file (the ``.canvas`` files Obsidian writes).

The model parses and validates a canvas, keeps every field it does not know
(on the canvas, its nodes and its edges) exactly as read, looks nodes and edges
up, finds free space for new nodes, adds nodes and edges, and serialises the
canvas the way Obsidian writes it. It uses the standard library only, prints
nothing, holds no command-line policy and does no file I/O: reading, the
atomic save with its ``.bak`` backup and the on-disk check live in
:mod:`command_handlers.fileio`.

Nodes and edges are the parsed ``dict`` objects themselves (so unknown fields
and key order survive a round trip); :func:`node_rect`, :func:`node_text` and
the other ``node_*`` / ``*_of`` helpers read their fields with types.

Example::

    from command_handlers.fileio import changed_on_disk, read_canvas, save_canvas

    canvas = read_canvas("notes.canvas")
    for note in canvas.text_nodes(color="6"):
        x, y = canvas.find_free_spot(note, 250, 150)
        answer = canvas.add_text_node("**agent**", x, y, 250, 150, color="5")
        canvas.add_edge(note, answer, label="agent")
    if not changed_on_disk(canvas):
        save_canvas(canvas)
"""

from __future__ import annotations

from command_handlers.canvas._model import Canvas
from command_handlers.canvas._placement import Placer
from command_handlers.canvas._types import (
    DEFAULT_MAX_BYTES,
    EDGE_ENDS,
    MAX_DEPTH,
    PRESET_COLORS,
    SIDES,
    CanvasError,
    Edge,
    Node,
    NodeRef,
    Rect,
    color_of,
    label_of,
    node_file,
    node_rect,
    node_text,
    node_type,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EDGE_ENDS",
    "MAX_DEPTH",
    "PRESET_COLORS",
    "SIDES",
    "Canvas",
    "CanvasError",
    "Edge",
    "Node",
    "NodeRef",
    "Placer",
    "Rect",
    "color_of",
    "label_of",
    "node_file",
    "node_rect",
    "node_text",
    "node_type",
]
