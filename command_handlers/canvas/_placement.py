"""Placing new nodes: a free spot right of an anchor; :class:`Placer` for many at once."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from command_handlers.canvas._types import CanvasError, Node, Rect, node_rect
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


_CELL = 512.0
#: Beyond this distance (centre to centre) the spot below the anchor is tried too.
_FAR = 700.0
#: Label boxes: about this many pixels per character, this tall.
_LABEL_CHAR, _LABEL_HEIGHT = 9.0, 32.0


def _cells(rect: Rect) -> Iterator[tuple[int, int]]:
    for cx in range(math.floor(rect.x / _CELL), math.floor(rect.right / _CELL) + 1):
        for cy in range(math.floor(rect.y / _CELL), math.floor(rect.bottom / _CELL) + 1):
            yield cx, cy


class Placer:
    """Places many new nodes beside their anchors, each in about constant time.

    Every node but the groups goes into a grid of 512 px cells (a spatial
    index), as do the labels of the edges; a candidate spot is checked
    against the few obstacles of the cells it covers, not against every node.
    A group that does not hold the anchor is an obstacle too, so that a new
    node lies wholly outside it; the groups that hold the anchor grow to
    hold the new node (see :meth:`place`).

    Build it once for a batch of placements; :meth:`add` the nodes placed.
    The placer changes only the groups it grows; the caller adds the nodes.
    """

    def __init__(self, nodes: Iterable[Node], edges: Iterable[Mapping[str, Any]] = ()) -> None:
        self._grid: dict[tuple[int, int], list[Rect]] = {}
        self._groups: list[Node] = []
        rects: dict[str, Rect] = {}
        for node in nodes:
            rect = node_rect(node)
            rects[node["id"]] = rect
            if node["type"] == "group":
                self._groups.append(node)
            else:
                self._insert(rect)
        for edge in edges:
            label = edge.get("label")
            a, b = rects.get(edge.get("fromNode", "")), rects.get(edge.get("toNode", ""))
            if isinstance(label, str) and label and a is not None and b is not None:
                width = _LABEL_CHAR * min(len(label), 40) + 16
                mid_x = (a.x + a.width / 2 + b.x + b.width / 2) / 2
                mid_y = (a.y + a.height / 2 + b.y + b.height / 2) / 2
                self._insert(
                    Rect(mid_x - width / 2, mid_y - _LABEL_HEIGHT / 2, width, _LABEL_HEIGHT)
                )

    def _insert(self, rect: Rect) -> None:
        for cell in _cells(rect):
            self._grid.setdefault(cell, []).append(rect)

    def add(self, rect: Rect) -> None:
        """Mark a placed node's rectangle as taken."""
        self._insert(rect)

    def groups_holding(self, rect: Rect) -> list[Node]:
        """The groups whose rectangle holds ``rect``'s centre, innermost first."""
        cx, cy = rect.x + rect.width / 2, rect.y + rect.height / 2
        holding = [
            g
            for g in self._groups
            if g["x"] <= cx <= g["x"] + g["width"] and g["y"] <= cy <= g["y"] + g["height"]
        ]
        holding.sort(key=lambda g: g["width"] * g["height"])
        return holding

    def _blocker(self, rect: Rect, gap: float, own: Sequence[Node]) -> Rect | None:
        """An obstacle ``rect`` comes within ``gap`` of, or None."""
        probe = Rect(rect.x - gap, rect.y - gap, rect.width + 2 * gap, rect.height + 2 * gap)
        for cell in _cells(probe):
            for other in self._grid.get(cell, ()):
                if rect.overlaps(other, gap):
                    return other
        for group in self._groups:
            if any(group is g for g in own):
                continue
            box = node_rect(group)
            if rect.overlaps(box, gap):
                return box
        return None

    def _nearest(
        self, anchor: Rect, starts: Sequence[tuple[Rect, bool]], gap: float, own: Sequence[Node]
    ) -> Rect | None:
        """The free spot nearest ``anchor`` reached from ``starts`` (sliding down or right)."""
        best: Rect | None = None
        for start, down in starts:
            spot = self._slide(start, gap, own, down, 200)
            if spot is not None and (
                best is None or _distance(anchor, spot) < _distance(anchor, best)
            ):
                best = spot
        return best

    def _slide(
        self, rect: Rect, gap: float, own: Sequence[Node], down: bool, limit: int
    ) -> Rect | None:
        """Move ``rect`` down (or right) past obstacles until free; None after ``limit`` moves."""
        for _ in range(limit):
            blocker = self._blocker(rect, gap, own)
            if blocker is None:
                return rect
            if down:
                rect = rect._replace(y=math.ceil(max(rect.y + 1, blocker.bottom + gap)))
            else:
                rect = rect._replace(x=math.ceil(max(rect.x + 1, blocker.right + gap)))
        return None

    def place(
        self,
        anchor: Rect,
        width: float,
        height: float,
        *,
        gap: float = 50,
        near: Rect | None = None,
    ) -> Rect:
        """Find a free spot near ``anchor`` for a ``width`` x ``height`` node.

        Candidates: to the right of ``anchor`` (sliding down past obstacles),
        and to the right of and below ``near`` (the anchor's earlier answers,
        so that they stay together); the one whose centre is nearest the
        anchor's wins, the right first on a tie. Only when all of them are
        more than 700 px away is the spot below the anchor (sliding right)
        a candidate too. The groups holding the anchor grow to hold the spot; every other
        group is an obstacle. The spot is then taken (:meth:`add`).

        Args:
            anchor: The rectangle of the node the new one belongs beside.
            width: Width of the new node.
            height: Height of the new node.
            gap: Distance to keep from the anchor and every obstacle.
            near: The last node placed for the same anchor, if any.

        Returns:
            The new node's rectangle (whole pixels).
        """
        own = self.groups_holding(anchor)
        right = [(Rect(math.ceil(anchor.right + gap), math.ceil(anchor.y), width, height), True)]
        if near is not None:
            right.append(
                (Rect(math.ceil(near.right + gap), math.ceil(near.y), width, height), True)
            )
            right.append(
                (Rect(math.ceil(near.x), math.ceil(near.bottom + gap), width, height), False)
            )
        below = [(Rect(math.ceil(anchor.x), math.ceil(anchor.bottom + gap), width, height), False)]
        best = self._nearest(anchor, right, gap, own)
        if best is None or _distance(anchor, best) > _FAR:
            best = self._nearest(anchor, right + below, gap, own)
        if best is None:  # everything near is full: down the right column, however far
            best = self._slide(right[0][0], gap, own, True, 10**9)
            assert best is not None
        for group in own:
            _grow(group, best, gap)
        self.add(best)
        return best


def _distance(anchor: Rect, spot: Rect) -> float:
    return math.dist(
        (anchor.x + anchor.width / 2, anchor.y + anchor.height / 2),
        (spot.x + spot.width / 2, spot.y + spot.height / 2),
    )


def _grow(group: Node, rect: Rect, gap: float) -> None:
    """Grow a group so that it holds ``rect`` with ``gap`` to spare."""
    left = min(group["x"], rect.x - gap)
    top = min(group["y"], rect.y - gap)
    right = max(group["x"] + group["width"], rect.right + gap)
    bottom = max(group["y"] + group["height"], rect.bottom + gap)
    if (left, top, right, bottom) != (
        group["x"],
        group["y"],
        group["x"] + group["width"],
        group["y"] + group["height"],
    ):
        group.update(x=left, y=top, width=right - left, height=bottom - top)
