"""The canvas's vocabulary: node and edge types, constants, the error, typed field readers."""

from __future__ import annotations

from typing import Any, NamedTuple, Union

#: A node or an edge: the parsed JSON object itself, unknown fields included.
Node = dict[str, Any]
#: An edge: the parsed JSON object itself, unknown fields included.
Edge = dict[str, Any]
#: A node given by its id or by the node itself.
NodeRef = Union[str, Node]

#: Largest canvas file read unless told otherwise (50 MiB); the reading is in fileio.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: Deepest nesting of JSON arrays and objects accepted (a canvas needs 4).
MAX_DEPTH = 64
#: The preset colours of JSON Canvas 1.0 ("1" red ... "6" purple).
PRESET_COLORS = ("1", "2", "3", "4", "5", "6")
#: The sides of a node an edge can attach to.
SIDES = ("top", "right", "bottom", "left")
#: The shapes of an edge's ends.
EDGE_ENDS = ("none", "arrow")


class CanvasError(ValueError):
    """The canvas, or an argument given to the model, is invalid.

    The message says what is wrong and where, e.g.
    ``node 3 ("abc"): "x" must be a number, not string``.
    """


class Rect(NamedTuple):
    """An axis-aligned rectangle in canvas coordinates (y grows downwards).

    Attributes:
        x: Left edge.
        y: Top edge.
        width: Width.
        height: Height.
    """

    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        """The right edge, ``x + width``."""
        return self.x + self.width

    @property
    def bottom(self) -> float:
        """The bottom edge, ``y + height``."""
        return self.y + self.height

    def overlaps(self, other: Rect, gap: float = 0) -> bool:
        """Tell whether two rectangles overlap or come closer than ``gap``.

        Rectangles that merely touch (with ``gap=0``) do not overlap.

        Args:
            other: The other rectangle.
            gap: The distance that must separate the two rectangles.

        Returns:
            True if the rectangles overlap or are less than ``gap`` apart on
            both axes.
        """
        return (
            self.x < other.right + gap
            and other.x < self.right + gap
            and self.y < other.bottom + gap
            and other.y < self.bottom + gap
        )


def node_type(node: Node) -> str:
    """Read a node's type.

    Args:
        node: A node of a validated canvas.

    Returns:
        The node's ``type`` ("text", "file", "link", "group" or an unknown type).
    """
    return str(node["type"])


def node_rect(node: Node) -> Rect:
    """Read a node's position and size.

    Args:
        node: A node of a validated canvas.

    Returns:
        The node's rectangle.
    """
    return Rect(node["x"], node["y"], node["width"], node["height"])


def node_text(node: Node) -> str | None:
    """Read a text node's Markdown text.

    Args:
        node: A node of a validated canvas.

    Returns:
        The text of a text node, or None for any other node.
    """
    return node["text"] if node.get("type") == "text" else None


def node_file(node: Node) -> str | None:
    """Read the path a file node points at.

    Args:
        node: A node of a validated canvas.

    Returns:
        The ``file`` of a file node, or None for any other node.
    """
    return node["file"] if node.get("type") == "file" else None


def color_of(item: Node) -> str | None:
    """Read the colour of a node or an edge.

    Args:
        item: A node or an edge of a validated canvas.

    Returns:
        The colour ("1" to "6" or "#rrggbb"), or None when it has none.
    """
    color = item.get("color")
    return color if isinstance(color, str) else None


def label_of(item: Node) -> str | None:
    """Read the label of an edge or a group node.

    Args:
        item: An edge or a node of a validated canvas.

    Returns:
        The label, or None when it has none.
    """
    label = item.get("label")
    return label if isinstance(label, str) else None
