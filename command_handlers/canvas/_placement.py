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
#: A spot to the right (or beside the earlier answers) this near is taken at once.
_NEAR = 700.0
#: How many obstacles a candidate spot slides past before it is given up.
_STEPS = 200
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

    def _blocker(self, rect: Rect, gap: float, own: Sequence[Node], way: str = "") -> Rect | None:
        """An obstacle ``rect`` comes within ``gap`` of, or None.

        Growing the groups that hold the anchor to hold ``rect`` must not
        take in a node or reach into another group either: such a node or
        group is an obstacle too. Of the nodes ``rect`` meets, the one that
        reaches furthest the ``way`` it slides (down, right, up) is returned,
        so that one step slides past them all: any nearer spot would still
        meet that one.
        """
        x, y, right, bottom = rect.x - gap, rect.y - gap, rect.right + gap, rect.bottom + gap
        found: Rect | None = None
        for cx in range(math.floor(x / _CELL), math.floor(right / _CELL) + 1):
            for cy in range(math.floor(y / _CELL), math.floor(bottom / _CELL) + 1):
                for other in self._grid.get((cx, cy), ()):
                    if not (
                        x < other.x + other.width
                        and other.x < right
                        and y < other.y + other.height
                        and other.y < bottom
                    ):
                        continue
                    if not way:
                        return other
                    if found is None or _further(other, found, way):
                        found = other
        if found is not None:
            return found
        probe = Rect(x, y, right - x, bottom - y)
        for group in self._groups:
            if any(group is g for g in own):
                continue
            box = node_rect(group)
            if rect.overlaps(box, gap):
                return box
        for group in own:
            blocker = self._growth_blocker(node_rect(group), _union(node_rect(group), probe), own)
            if blocker is not None:
                return blocker
        return None

    def _growth_blocker(self, old: Rect, new: Rect, own: Sequence[Node]) -> Rect | None:
        """What a group growing from ``old`` to ``new`` would take in or reach into."""
        if new == old:
            return None
        for strip in _strips(old, new):
            for cell in _cells(strip):
                for other in self._grid.get(cell, ()):
                    if strip.overlaps(other):
                        return other
        for group in self._groups:
            box = node_rect(group)
            if not any(group is g for g in own) and new.overlaps(box) and not old.overlaps(box):
                return box
        return None

    def _slide(self, rect: Rect, gap: float, own: Sequence[Node], way: str) -> Rect | None:
        """Move ``rect`` past obstacles (``way``: down, right, up) until free, or None."""
        for _ in range(_STEPS):
            blocker = self._blocker(rect, gap, own, way)
            if blocker is None:
                return rect
            if way == "down":
                rect = rect._replace(y=math.ceil(max(rect.y + 1, blocker.bottom + gap)))
            elif way == "right":
                rect = rect._replace(x=math.ceil(max(rect.x + 1, blocker.right + gap)))
            else:
                rect = rect._replace(y=math.floor(min(rect.y - 1, blocker.y - gap - rect.height)))
        return None

    def _best(
        self,
        anchor: Rect,
        starts: Sequence[tuple[Rect, str, float]],
        first_only: int,
        gap: float,
        own: Sequence[Node],
    ) -> Rect | None:
        """The best free spot the candidates slide to (see :meth:`place`)."""
        best, score = None, math.inf
        for number, (start, way, penalty) in enumerate(starts):
            if number == first_only and best is not None and score <= _NEAR:
                break  # the right side, or beside the earlier answers, is near enough
            spot = self._slide(start, gap, own, way)
            if spot is not None and _distance(anchor, spot) + penalty < score:
                best, score = spot, _distance(anchor, spot) + penalty
        return best

    def place(
        self,
        anchor: Rect,
        width: float,
        height: float,
        *,
        gap: float = 50,
        near: Rect | None = None,
    ) -> Rect:
        """Find the free spot nearest ``anchor`` for a ``width`` x ``height`` node.

        Candidates, each sliding past obstacles: to the right of ``anchor``
        (down its right side), to the right of and below ``near`` (the
        anchor's earlier answers, so that they stay together); the nearest
        centre to centre wins if it is within 700 px. Otherwise the spots
        below the anchor (sliding right) and above it (sliding up) compete
        too, counting 300 and 600 px further than they are. The groups holding the anchor grow to
        hold the spot; every other group is an obstacle, so the new node is
        never across a group's border. The spot is then taken (:meth:`add`).

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
        starts, first_only = _starts(anchor, width, height, gap, near)
        best = self._best(anchor, starts, first_only, gap, own)
        if best is None:
            # Every way is blocked for _STEPS obstacles (a crowded group that
            # cannot grow without taking nodes in): below whatever the spot
            # meets, the anchor's groups included, which then stay as they are.
            # Each step passes one obstacle for good, so this ends.
            best, own = starts[0][0], []
            blocker = self._blocker(best, gap, own, "down")
            while blocker is not None:
                best = best._replace(y=math.ceil(max(best.y + 1, blocker.bottom + gap)))
                blocker = self._blocker(best, gap, own, "down")
        for group in own:
            _grow(group, best, gap)
        self.add(best)
        return best


def _starts(
    anchor: Rect, width: float, height: float, gap: float, near: Rect | None
) -> tuple[list[tuple[Rect, str, float]], int]:
    """Candidate spots (start, way to slide, penalty), and how many come first."""

    def at(x: float, y: float) -> Rect:
        return Rect(math.ceil(x), math.ceil(y), width, height)

    starts = [(at(anchor.right + gap, anchor.y), "down", 0.0)]
    if near is not None:
        starts.append((at(near.right + gap, near.y), "down", 0.0))
        starts.append((at(near.x, near.bottom + gap), "right", 0.0))
    first_only = len(starts)
    starts.append((at(anchor.x, anchor.bottom + gap), "right", 300.0))
    starts.append((at(anchor.x, anchor.y - gap - height), "up", 600.0))
    return starts, first_only


def _further(a: Rect, b: Rect, way: str) -> bool:
    """Whether ``a`` reaches further than ``b`` the ``way`` a spot slides."""
    if way == "down":
        return a.y + a.height > b.y + b.height
    if way == "right":
        return a.x + a.width > b.x + b.width
    return a.y < b.y


def _distance(anchor: Rect, spot: Rect) -> float:
    return math.dist(
        (anchor.x + anchor.width / 2, anchor.y + anchor.height / 2),
        (spot.x + spot.width / 2, spot.y + spot.height / 2),
    )


def _union(a: Rect, b: Rect) -> Rect:
    left, top = min(a.x, b.x), min(a.y, b.y)
    return Rect(left, top, max(a.right, b.right) - left, max(a.bottom, b.bottom) - top)


def _strips(old: Rect, new: Rect) -> list[Rect]:
    """``new`` minus ``old`` (which it holds), as up to four rectangles."""
    strips = [
        Rect(new.x, new.y, old.x - new.x, new.height),
        Rect(old.right, new.y, new.right - old.right, new.height),
        Rect(old.x, new.y, old.width, old.y - new.y),
        Rect(old.x, old.bottom, old.width, new.bottom - old.bottom),
    ]
    return [strip for strip in strips if strip.width > 0 and strip.height > 0]


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
