"""Placing a new node: the first free spot to the right of an anchor node."""

from __future__ import annotations

import math
from collections.abc import Iterable

from command_handlers.canvas._types import CanvasError, Node, Rect
from command_handlers.canvas._validate import check_number, quote


def check_spot_size(width: float, height: float, gap: float) -> None:
    """Raise :class:`CanvasError` unless the size and gap are non-negative numbers."""
    for key, value in (("width", width), ("height", height), ("gap", gap)):
        check_number(key, value, "find_free_spot")
        if value < 0:
            raise CanvasError(f"find_free_spot: {quote(key)} must not be negative")


def free_spot(
    nodes: Iterable[Node], anchor: Rect, width: float, height: float, gap: float
) -> tuple[int, int]:
    """Find where a ``width`` x ``height`` node fits to the right of ``anchor``.

    See :meth:`Canvas.find_free_spot <command_handlers.canvas.Canvas.find_free_spot>`;
    the arguments are checked already (:func:`check_spot_size`).
    """
    x = math.ceil(anchor.right + gap)
    y = math.ceil(anchor.y)
    for top, bottom in _column(nodes, x - gap, x + width + gap):
        if top >= y + height + gap:
            break  # this and every later node start below the rectangle
        if bottom + gap > y:
            y = math.ceil(bottom + gap)
    return x, y


def _column(nodes: Iterable[Node], left: float, right: float) -> list[tuple[float, float]]:
    """Return (top, bottom) of every obstacle whose x-range meets (left, right), by top."""
    column = []
    for node in nodes:
        if node["type"] != "group":  # a new node may lie inside or across a group
            node_x = node["x"]
            if node_x < right and node_x + node["width"] > left:
                column.append((node["y"], node["y"] + node["height"]))
    column.sort()
    return column
