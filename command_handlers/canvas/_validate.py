"""Validation of a parsed canvas, its nodes and edges, and of new nodes' arguments."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Union

from command_handlers.canvas._types import (
    EDGE_ENDS,
    MAX_DEPTH,
    PRESET_COLORS,
    SIDES,
    CanvasError,
    Edge,
    Node,
)

#: The geometry keys every node has, in the order Obsidian writes them.
GEOMETRY = ("x", "y", "width", "height")
#: Marks an absent key (None is a JSON value).
MISSING: Any = object()

_COORD_LIMIT = 1e15
_PRESET_SET = frozenset(PRESET_COLORS)
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_CONTAINERS = frozenset({dict, list})
_ITEM_KEYS = ("nodes", "edges")
#: Where a node or an edge is: ("node", index, the object), or a plain description.
_Loc = Union[str, tuple[str, int, dict[str, Any]]]

# Typed optional/required string fields per node type and of edges:
# (key, required, allowed values or None for any string).
_Field = tuple[str, bool, Union[frozenset[str], None]]
#: The typed string fields of each known node type.
NODE_FIELDS: dict[str, tuple[_Field, ...]] = {
    "text": (("text", True, None),),
    "file": (("file", True, None), ("subpath", False, None)),
    "link": (("url", True, None),),
    "group": (
        ("label", False, None),
        ("background", False, None),
        ("backgroundStyle", False, frozenset({"cover", "ratio", "repeat"})),
    ),
}
#: The typed string fields of an edge.
EDGE_FIELDS: tuple[_Field, ...] = (
    ("fromSide", False, frozenset(SIDES)),
    ("toSide", False, frozenset(SIDES)),
    ("fromEnd", False, frozenset(EDGE_ENDS)),
    ("toEnd", False, frozenset(EDGE_ENDS)),
    ("label", False, None),
)

_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),  # before int: bool is a subclass of int
    ((int, float), "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
)


def json_kind(value: object) -> str:
    """Name a value's JSON type for messages."""
    if value is MISSING:
        return "missing"
    for types, name in _KINDS:
        if isinstance(value, types):
            return name
    return type(value).__name__


def quote(text: str) -> str:
    """Quote a string for a message the way JSON would."""
    return json.dumps(text, ensure_ascii=False)


def _where(loc: _Loc) -> str:
    """Say where a node or edge is, e.g. ``node 3 ("abc")``."""
    if isinstance(loc, str):
        return loc
    item_kind, index, obj = loc  # only made once the id is known to be a string
    return f"{item_kind} {index} ({quote(obj['id'])})"


def _fail(loc: _Loc, message: str) -> CanvasError:
    """Make the error for something wrong at ``loc`` (described only now, not in advance)."""
    return CanvasError(f"{_where(loc)}: {message}")


def _is_number(value: object) -> bool:
    """Tell whether a value is a usable coordinate (a finite int or float, not a bool)."""
    value_kind = type(value)
    return (value_kind is int or value_kind is float) and -_COORD_LIMIT <= value <= _COORD_LIMIT  # type: ignore[operator]


def check_number(key: str, value: object, loc: _Loc) -> None:
    """Raise unless ``value`` is a usable coordinate."""
    if not _is_number(value):
        if type(value) in (int, float):
            raise _fail(loc, f"{quote(key)} must be between -1e15 and 1e15, not {value!r}")
        raise _fail(loc, f"{quote(key)} must be a number, not {json_kind(value)}")


def check_color(color: object, loc: _Loc) -> None:
    """Raise unless ``color`` is a valid colour."""
    if isinstance(color, str) and (color in _PRESET_SET or _HEX_COLOR.fullmatch(color)):
        return
    shown = quote(color) if isinstance(color, str) else json_kind(color)
    raise _fail(loc, f'"color" must be "1" to "6" or "#rrggbb", not {shown}')


def check_fields(obj: dict[str, Any], fields: Iterable[_Field], loc: _Loc) -> None:
    """Check the typed string fields of a node or edge."""
    for key, required, allowed in fields:
        value = obj.get(key, MISSING)
        if value.__class__ is str and (allowed is None or value in allowed):
            continue
        if value is MISSING:
            if required:
                raise _fail(loc, f"{quote(key)} is missing")
            continue
        if not isinstance(value, str):
            raise _fail(loc, f"{quote(key)} must be a string, not {json_kind(value)}")
        choices = ", ".join(quote(choice) for choice in sorted(allowed or ()))
        raise _fail(loc, f"{quote(key)} must be one of {choices}, not {quote(value)}")


def _check_common(item_kind: str, index: int, obj: object) -> _Loc:
    """Check that a node or edge is an object with a non-empty string id; return its location."""
    if not isinstance(obj, dict):
        raise CanvasError(f"{item_kind} {index}: must be an object, not {json_kind(obj)}")
    item_id = obj.get("id", MISSING)
    if item_id.__class__ is not str or not item_id:
        shown = "empty" if item_id == "" else json_kind(item_id)
        raise CanvasError(f'{item_kind} {index}: "id" must be a non-empty string, not {shown}')
    if "color" in obj:
        check_color(obj["color"], (item_kind, index, obj))
    if not _CONTAINERS.isdisjoint(map(type, obj.values())):  # rare: nested unknown fields
        check_depth(obj, 3)  # canvas object 1, array of nodes/edges 2, the node/edge 3
    return (item_kind, index, obj)


def check_node(node: Any, index: int) -> Node:
    """Validate one node and return it."""
    loc = _check_common("node", index, node)
    node_kind = node.get("type", MISSING)
    if node_kind.__class__ is not str:
        raise _fail(loc, f'"type" must be a string, not {json_kind(node_kind)}')
    for key in GEOMETRY:
        value = node.get(key, MISSING)
        value_kind = value.__class__
        # The common case inline: a call per coordinate costs on a 10,000-node canvas.
        if (value_kind is not int and value_kind is not float) or not (
            -_COORD_LIMIT <= value <= _COORD_LIMIT
        ):
            check_number(key, value, loc)
    fields = NODE_FIELDS.get(node_kind)
    if fields is not None:
        check_fields(node, fields, loc)
    return node  # type: ignore[no-any-return]


def check_edge(edge: Any, index: int, node_ids: dict[str, Node]) -> Edge:
    """Validate one edge (its ends must name nodes) and return it."""
    loc = _check_common("edge", index, edge)
    for key in ("fromNode", "toNode"):
        end = edge.get(key, MISSING)
        if end.__class__ is not str:
            raise _fail(loc, f"{quote(key)} must be a string, not {json_kind(end)}")
        if end not in node_ids:
            raise _fail(loc, f"{quote(key)} {quote(end)} is not a node")
    check_fields(edge, EDGE_FIELDS, loc)
    return edge  # type: ignore[no-any-return]


def check_depth(data: object, depth: int = 1) -> None:
    """Raise if arrays/objects nest deeper than :data:`MAX_DEPTH` (iteratively, no recursion).

    Args:
        data: An array or object.
        depth: The nesting depth of ``data`` itself (the top-level object is 1).
    """
    stack: list[tuple[Any, int]] = [(data, depth)]
    while stack:
        obj, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CanvasError(f"JSON is nested too deeply (more than {MAX_DEPTH} levels)")
        for child in obj.values() if isinstance(obj, dict) else obj:
            if type(child) in _CONTAINERS:
                stack.append((child, depth + 1))


def check_top(data: object) -> dict[str, Any]:
    """Check the top-level shape and nesting depth of a canvas, and return it."""
    if not isinstance(data, dict):
        raise CanvasError(f"a canvas must be a JSON object, not {json_kind(data)}")
    for key in _ITEM_KEYS:
        if key in data and not isinstance(data[key], list):
            raise CanvasError(f"{quote(key)} must be an array, not {json_kind(data[key])}")
    # Nodes and edges are checked one by one when validated (see _check_common).
    check_depth({key: value for key, value in data.items() if key not in _ITEM_KEYS})
    return data
