"""A pure-data model of a JSON Canvas 1.0 file (the ``.canvas`` files Obsidian writes).

The model parses and validates a canvas, keeps every field it does not know
(on the canvas, its nodes and its edges) exactly as read, looks nodes and edges
up, finds free space for new nodes, adds nodes and edges, and serialises the
canvas the way Obsidian writes it. It uses the standard library only, prints
nothing and holds no command-line policy; its only I/O besides reading is
:func:`save_atomic`, an atomic write with an optional ``.bak`` backup.

Nodes and edges are the parsed ``dict`` objects themselves (so unknown fields
and key order survive a round trip); :func:`node_rect`, :func:`node_text` and
the other ``node_*`` / ``*_of`` helpers read their fields with types.

Example::

    canvas = Canvas.load("notes.canvas")
    for note in canvas.text_nodes(color="6"):
        x, y = canvas.find_free_spot(note, 250, 150)
        answer = canvas.add_text_node("**agent**", x, y, 250, 150, color="5")
        canvas.add_edge(note, answer, label="agent")
    if not canvas.changed_on_disk():
        canvas.save()
"""

# pylint: disable=too-many-lines  # one cohesive module: the design names canvas.py as the model
from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, Union

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
    "Rect",
    "color_of",
    "label_of",
    "node_file",
    "node_rect",
    "node_text",
    "node_type",
    "save_atomic",
]

#: A node or an edge: the parsed JSON object itself, unknown fields included.
Node = dict[str, Any]
#: An edge: the parsed JSON object itself, unknown fields included.
Edge = dict[str, Any]
#: A node given by its id or by the node itself.
NodeRef = Union[str, Node]

#: Largest file :meth:`Canvas.load` reads unless told otherwise (50 MiB).
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: Deepest nesting of JSON arrays and objects accepted (a canvas needs 4).
MAX_DEPTH = 64
#: The preset colours of JSON Canvas 1.0 ("1" red ... "6" purple).
PRESET_COLORS = ("1", "2", "3", "4", "5", "6")
#: The sides of a node an edge can attach to.
SIDES = ("top", "right", "bottom", "left")
#: The shapes of an edge's ends.
EDGE_ENDS = ("none", "arrow")

_COORD_LIMIT = 1e15
_GEOMETRY = ("x", "y", "width", "height")
_PRESET_SET = frozenset(PRESET_COLORS)
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_MISSING: Any = object()
_CONTAINERS = frozenset({dict, list})
_ITEM_KEYS = ("nodes", "edges")
#: Where a node or an edge is: ("node", index, the object), or a plain description.
_Loc = Union[str, tuple[str, int, dict[str, Any]]]

# Typed optional/required string fields per node type and of edges:
# (key, required, allowed values or None for any string).
_Field = tuple[str, bool, Union[frozenset[str], None]]
_NODE_FIELDS: dict[str, tuple[_Field, ...]] = {
    "text": (("text", True, None),),
    "file": (("file", True, None), ("subpath", False, None)),
    "link": (("url", True, None),),
    "group": (
        ("label", False, None),
        ("background", False, None),
        ("backgroundStyle", False, frozenset({"cover", "ratio", "repeat"})),
    ),
}
_EDGE_FIELDS: tuple[_Field, ...] = (
    ("fromSide", False, frozenset(SIDES)),
    ("toSide", False, frozenset(SIDES)),
    ("fromEnd", False, frozenset(EDGE_ENDS)),
    ("toEnd", False, frozenset(EDGE_ENDS)),
    ("label", False, None),
)


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


# --------------------------------------------------------------------------- typed read helpers


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


# --------------------------------------------------------------------------- validation


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),  # before int: bool is a subclass of int
    ((int, float), "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
)


def _kind(value: object) -> str:
    """Name a value's JSON type for messages."""
    if value is _MISSING:
        return "missing"
    for types, name in _KINDS:
        if isinstance(value, types):
            return name
    return type(value).__name__


def _quote(text: str) -> str:
    """Quote a string for a message the way JSON would."""
    return json.dumps(text, ensure_ascii=False)


def _where(loc: _Loc) -> str:
    """Say where a node or edge is, e.g. ``node 3 ("abc")``."""
    if isinstance(loc, str):
        return loc
    kind, index, obj = loc  # only made once the id is known to be a string
    return f"{kind} {index} ({_quote(obj['id'])})"


def _fail(loc: _Loc, message: str) -> CanvasError:
    """Make the error for something wrong at ``loc`` (described only now, not in advance)."""
    return CanvasError(f"{_where(loc)}: {message}")


def _is_number(value: object) -> bool:
    """Tell whether a value is a usable coordinate (a finite int or float, not a bool)."""
    kind = type(value)
    return (kind is int or kind is float) and -_COORD_LIMIT <= value <= _COORD_LIMIT  # type: ignore[operator]


def _check_number(key: str, value: object, loc: _Loc) -> None:
    """Raise unless ``value`` is a usable coordinate."""
    if not _is_number(value):
        if type(value) in (int, float):
            raise _fail(loc, f"{_quote(key)} must be between -1e15 and 1e15, not {value!r}")
        raise _fail(loc, f"{_quote(key)} must be a number, not {_kind(value)}")


def _check_color(color: object, loc: _Loc) -> None:
    """Raise unless ``color`` is a valid colour."""
    if isinstance(color, str) and (color in _PRESET_SET or _HEX_COLOR.fullmatch(color)):
        return
    shown = _quote(color) if isinstance(color, str) else _kind(color)
    raise _fail(loc, f'"color" must be "1" to "6" or "#rrggbb", not {shown}')


def _check_fields(obj: dict[str, Any], fields: Iterable[_Field], loc: _Loc) -> None:
    """Check the typed string fields of a node or edge."""
    for key, required, allowed in fields:
        value = obj.get(key, _MISSING)
        if value.__class__ is str and (allowed is None or value in allowed):
            continue
        if value is _MISSING:
            if required:
                raise _fail(loc, f"{_quote(key)} is missing")
            continue
        if not isinstance(value, str):
            raise _fail(loc, f"{_quote(key)} must be a string, not {_kind(value)}")
        choices = ", ".join(_quote(choice) for choice in sorted(allowed or ()))
        raise _fail(loc, f"{_quote(key)} must be one of {choices}, not {_quote(value)}")


def _check_common(kind: str, index: int, obj: object) -> _Loc:
    """Check that a node or edge is an object with a non-empty string id; return its location."""
    if not isinstance(obj, dict):
        raise CanvasError(f"{kind} {index}: must be an object, not {_kind(obj)}")
    item_id = obj.get("id", _MISSING)
    if item_id.__class__ is not str or not item_id:
        shown = "empty" if item_id == "" else _kind(item_id)
        raise CanvasError(f'{kind} {index}: "id" must be a non-empty string, not {shown}')
    if "color" in obj:
        _check_color(obj["color"], (kind, index, obj))
    if not _CONTAINERS.isdisjoint(map(type, obj.values())):  # rare: nested unknown fields
        _check_depth(obj, 3)  # canvas object 1, array of nodes/edges 2, the node/edge 3
    return (kind, index, obj)


def _check_node(node: Any, index: int) -> Node:
    """Validate one node and return it."""
    loc = _check_common("node", index, node)
    kind = node.get("type", _MISSING)
    if kind.__class__ is not str:
        raise _fail(loc, f'"type" must be a string, not {_kind(kind)}')
    for key in _GEOMETRY:
        value = node.get(key, _MISSING)
        value_kind = value.__class__
        if (value_kind is not int and value_kind is not float) or not (
            -_COORD_LIMIT <= value <= _COORD_LIMIT
        ):
            _check_number(key, value, loc)
    fields = _NODE_FIELDS.get(kind)
    if fields is not None:
        _check_fields(node, fields, loc)
    return node  # type: ignore[no-any-return]


def _check_edge(edge: Any, index: int, node_ids: dict[str, Node]) -> Edge:
    """Validate one edge (its ends must name nodes) and return it."""
    loc = _check_common("edge", index, edge)
    for key in ("fromNode", "toNode"):
        end = edge.get(key, _MISSING)
        if end.__class__ is not str:
            raise _fail(loc, f"{_quote(key)} must be a string, not {_kind(end)}")
        if end not in node_ids:
            raise _fail(loc, f"{_quote(key)} {_quote(end)} is not a node")
    _check_fields(edge, _EDGE_FIELDS, loc)
    return edge  # type: ignore[no-any-return]


def _check_depth(data: object, depth: int = 1) -> None:
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


def _parse_float(text: str) -> float:
    """Parse a JSON number with a fraction or exponent, refusing overflow to infinity."""
    value = float(text)
    if value - value != 0:  # inf - inf is nan
        raise CanvasError(f"invalid JSON: number {text} is out of range")
    return value


def _parse_constant(name: str) -> float:
    """Refuse the non-standard ``NaN`` / ``Infinity`` literals."""
    raise CanvasError(f"invalid JSON: {name} is not a valid number")


def _parse_text(text: str) -> Any:
    """Parse JSON text, turning every failure into a :class:`CanvasError`."""
    try:
        return json.loads(text, parse_float=_parse_float, parse_constant=_parse_constant)
    except CanvasError:
        raise
    except json.JSONDecodeError as exc:
        raise CanvasError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise CanvasError(f"JSON is nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise CanvasError(f"invalid JSON: {exc}") from None


def _decode(raw: bytes) -> str:
    """Decode UTF-8 (an initial byte order mark is allowed)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CanvasError(f"not valid UTF-8 (byte {exc.start}: {exc.reason})") from None


# --------------------------------------------------------------------------- serialising


class _Unsupported(Exception):
    """The fast serialiser met something only :func:`json.dumps` knows how to write."""


_SCALARS = frozenset({str, int, float, bool, type(None)})
_JSON_TYPES = _SCALARS | {dict, list}
_STR_ONLY = frozenset({str})
_DICT_ONLY = frozenset({dict})


@functools.cache
def _encoder(level: int) -> Callable[[Any], str]:
    """Return a C-accelerated compact encoder whose item separator breaks to ``level`` tabs."""
    return json.JSONEncoder(ensure_ascii=False, separators=(",\n" + "\t" * level, ": ")).encode


def _is_flat_dict(obj: dict[Any, Any]) -> bool:
    """Tell whether a non-empty dict holds only scalars (checked in C).

    Raises:
        _Unsupported: A key is not a str, or a value is not a JSON type.
    """
    if not _STR_ONLY.issuperset(map(type, obj)):
        raise _Unsupported
    value_types = set(map(type, obj.values()))
    if value_types <= _SCALARS:
        return True
    if value_types <= _JSON_TYPES:
        return False
    raise _Unsupported


def _encode(obj: object, level: int, out: list[str]) -> None:
    r"""Append ``obj`` as ``json.dumps(obj, indent="\t", ensure_ascii=False)`` would write it.

    Containers holding only scalars are written by one call of the C encoder
    (its item separator carries the line break and indentation), and so is an
    array of such objects (the separators between the objects are fixed up).
    """
    kind = type(obj)
    if kind is dict:
        _encode_dict(obj, level, out)  # type: ignore[arg-type]
    elif kind is list:
        _encode_list(obj, level, out)  # type: ignore[arg-type]
    elif kind in _SCALARS:
        out.append(_encoder(0)(obj))
    else:
        raise _Unsupported


def _encode_dict(obj: dict[Any, Any], level: int, out: list[str]) -> None:
    """Append an object (see :func:`_encode`)."""
    if not obj:
        out.append("{}")
        return
    inner = "\t" * (level + 1)
    if _is_flat_dict(obj):
        body = _encoder(level + 1)(obj)
        out.append("{\n" + inner + body[1:-1] + "\n" + "\t" * level + "}")
        return
    separator = "\n" + inner
    out.append("{")
    for key, value in obj.items():  # _is_flat_dict made sure the keys are str
        out.append(separator + _encoder(0)(key) + ": ")
        _encode(value, level + 1, out)
        separator = ",\n" + inner
    out.append("\n" + "\t" * level + "}")


def _are_flat_dicts(items: list[dict[Any, Any]]) -> bool:
    """Tell whether dicts are all non-empty, with str keys and scalar values (checked in C)."""
    return (
        all(items)
        and _STR_ONLY.issuperset(map(type, itertools.chain.from_iterable(items)))
        and _SCALARS.issuperset(map(type, itertools.chain.from_iterable(map(dict.values, items))))
    )


def _encode_list(obj: list[Any], level: int, out: list[str]) -> None:
    """Append an array (see :func:`_encode`)."""
    if not obj:
        out.append("[]")
        return
    item_types = set(map(type, obj))
    if not item_types <= _JSON_TYPES:
        raise _Unsupported
    outer = "\t" * level
    inner = "\t" * (level + 1)
    if item_types <= _SCALARS:
        body = _encoder(level + 1)(obj)
        out.append("[\n" + inner + body[1:-1] + "\n" + outer + "]")
    elif item_types == _DICT_ONLY and _are_flat_dicts(obj):
        # Every "}" + separator + "{" lies between two objects: strings never hold a raw
        # line break, keys start with a quote and a scalar never ends with "}".
        fields = "\t" * (level + 2)
        body = _encoder(level + 2)(obj)[2:-2]
        body = body.replace("},\n" + fields + "{", "\n" + inner + "},\n" + inner + "{\n" + fields)
        out.append("[\n" + inner + "{\n" + fields + body + "\n" + inner + "}\n" + outer + "]")
    else:
        separator = "\n" + inner
        out.append("[")
        for item in obj:
            out.append(separator)
            _encode(item, level + 1, out)
            separator = ",\n" + inner
        out.append("\n" + outer + "]")


def _dumps(data: object) -> str:
    r"""Serialise exactly as ``json.dumps(data, indent="\t", ensure_ascii=False)``, only faster."""
    out: list[str] = []
    try:
        _encode(data, 0, out)
    except _Unsupported:
        return json.dumps(data, indent="\t", ensure_ascii=False)
    return "".join(out)


# --------------------------------------------------------------------------- atomic save


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(target: Path, data: bytes, mode: int | None) -> None:
    """Write ``data`` to a temp file beside ``target``, fsync it and move it onto ``target``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, flags, 0o666)  # the umask applies, as for any new file
            break
        except FileExistsError:
            continue
    try:
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(target.parent)


def save_atomic(
    path: str | os.PathLike[str], text: str | bytes, *, backup: bool = True
) -> Path | None:
    """Replace a file's content atomically, keeping a backup of the previous content.

    If ``backup`` is true and the file exists, its bytes are first copied
    (atomically as well) to ``<name>.bak`` beside it, e.g. ``notes.canvas.bak``.
    The new content goes to a temporary file in the same folder, is flushed and
    fsynced, and is moved onto the target with :func:`os.replace`; the folder is
    then fsynced where the platform allows it. A symbolic link is followed: the
    file it points at is replaced. An existing file's permission bits are kept.

    Args:
        path: The file to write.
        text: The new content; a ``str`` is written as UTF-8.
        backup: Whether to copy the previous content to ``<name>.bak`` first.

    Returns:
        The path of the backup, or None if none was made (``backup`` false or
        no previous file).

    Raises:
        OSError: The backup or the file could not be written. The original
            file is then untouched and no temporary file is left behind.
        UnicodeEncodeError: ``text`` holds characters UTF-8 cannot encode
            (lone surrogates).
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    backup_path = None
    if backup and mode is not None:
        backup_path = target.with_name(target.name + ".bak")
        _write_atomic(backup_path, target.read_bytes(), mode)
    _write_atomic(target, data, mode)
    return backup_path


# --------------------------------------------------------------------------- the model


class Canvas:  # pylint: disable=too-many-public-methods
    """A JSON Canvas 1.0 document: validated, lossless, and editable by adding.

    The canvas keeps the parsed JSON objects themselves: :attr:`data` is the
    top-level object and :attr:`nodes` / :attr:`edges` list the node and edge
    objects in file order, unknown fields included. Change fields of those
    objects freely (text, colour, position), but not their ids; add nodes and
    edges only through :meth:`add_text_node`, :meth:`add_file_node` and
    :meth:`add_edge`, and remove nodes only through :meth:`remove_nodes`, so
    the lookups stay right.

    A canvas read with :meth:`load` remembers its path and the bytes read
    (:attr:`source_digest`), so :meth:`changed_on_disk` can tell whether
    someone else wrote the file since.
    """

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        """Make a canvas from parsed JSON, or an empty one.

        Args:
            data: The top-level JSON object of a canvas; it is validated and
                kept (not copied). None makes an empty canvas (``{}``).

        Raises:
            CanvasError: ``data`` is not a valid canvas.
        """
        self._data: dict[str, Any] = {} if data is None else self._check_top(data)
        self._nodes: list[Node] = self._data.get("nodes", [])
        self._edges: list[Edge] = self._data.get("edges", [])
        self._by_id: dict[str, Node] = {}
        for index, node in enumerate(self._nodes):
            node_id = _check_node(node, index)["id"]
            if node_id in self._by_id:
                first = self._nodes.index(self._by_id[node_id])
                raise CanvasError(
                    f"duplicate node id {_quote(node_id)} (nodes {first} and {index})"
                )
            self._by_id[node_id] = node
        edge_index: dict[str, int] = {}
        for index, edge in enumerate(self._edges):
            edge_id = _check_edge(edge, index, self._by_id)["id"]
            first_index = edge_index.setdefault(edge_id, index)
            if first_index != index:
                raise CanvasError(
                    f"duplicate edge id {_quote(edge_id)} (edges {first_index} and {index})"
                )
        self._edge_ids = set(edge_index)
        self._issued: set[str] = set()
        self._outgoing: dict[str, list[Edge]] | None = None
        self._incoming: dict[str, list[Edge]] = {}
        self._path: Path | None = None
        self._source: bytes | None = None
        self._digest: str | None = None

    @staticmethod
    def _check_top(data: object) -> dict[str, Any]:
        """Check the top-level shape and nesting depth of a canvas."""
        if not isinstance(data, dict):
            raise CanvasError(f"a canvas must be a JSON object, not {_kind(data)}")
        for key in ("nodes", "edges"):
            if key in data and not isinstance(data[key], list):
                raise CanvasError(f"{_quote(key)} must be an array, not {_kind(data[key])}")
        # Nodes and edges are checked one by one when validated (see _check_common).
        _check_depth({key: value for key, value in data.items() if key not in _ITEM_KEYS})
        return data

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_json(cls, text: str | bytes) -> Canvas:
        """Parse and validate a canvas from JSON text.

        Args:
            text: The JSON text, or its UTF-8 bytes.

        Returns:
            The canvas; it has no :attr:`path` until saved.

        Raises:
            CanvasError: The text is not valid UTF-8 or JSON, or not a valid canvas.
        """
        if isinstance(text, str):
            raw = text.encode("utf-8", "surrogatepass")
        else:
            raw, text = text, _decode(text)
        canvas = cls(_parse_text(text))
        canvas._remember(raw)
        return canvas

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Canvas:
        """Read, parse and validate a ``.canvas`` file.

        Args:
            path: The file to read.
            max_bytes: Refuse files larger than this many bytes.

        Returns:
            The canvas, remembering ``path`` and the bytes read.

        Raises:
            CanvasError: The file is missing, not a regular file, too large or
                unreadable, or holds no valid canvas; the message starts with
                the path.
        """
        file_path = Path(path)
        raw = _read_limited(file_path, max_bytes)
        try:
            canvas = cls.from_json(raw)
        except CanvasError as exc:
            raise CanvasError(f"{file_path}: {exc}") from None
        canvas._path = file_path
        return canvas

    def _remember(self, raw: bytes) -> None:
        """Record the bytes the canvas was read from or saved as."""
        self._source = raw
        self._digest = hashlib.sha256(raw).hexdigest()

    @property
    def data(self) -> dict[str, Any]:
        """The top-level JSON object itself (unknown fields included)."""
        return self._data

    @property
    def path(self) -> Path | None:
        """The file the canvas was loaded from or last saved to, if any."""
        return self._path

    @property
    def source_digest(self) -> str | None:
        """The SHA-256 (hex) of the bytes the canvas was parsed from or last saved as, if any."""
        return self._digest

    def changed_on_disk(self) -> bool:
        """Tell whether the file changed since it was read or last saved.

        Returns:
            True if the file at :attr:`path` now holds other bytes, or is gone
            or unreadable; False if it holds exactly the bytes read or saved.

        Raises:
            CanvasError: The canvas has no path (it was not loaded or saved).
        """
        if self._path is None or self._source is None:
            raise CanvasError("the canvas was not loaded from or saved to a file")
        try:
            if os.stat(self._path).st_size != len(self._source):
                return True
            current = self._path.read_bytes()
        except OSError:
            return True
        return hashlib.sha256(current).hexdigest() != self._digest

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
            raise CanvasError(f"no node with id {_quote(node_id)}")
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
        for key, value in (("width", width), ("height", height), ("gap", gap)):
            _check_number(key, value, "find_free_spot")
            if value < 0:
                raise CanvasError(f"find_free_spot: {_quote(key)} must not be negative")
        box = node_rect(self._resolve(anchor))
        x = math.ceil(box.right + gap)
        y = math.ceil(box.y)
        for top, bottom in self._column(x - gap, x + width + gap):
            if top >= y + height + gap:
                break  # this and every later node start below the rectangle
            if bottom + gap > y:
                y = math.ceil(bottom + gap)
        return x, y

    def _column(self, left: float, right: float) -> list[tuple[float, float]]:
        """Return (top, bottom) of every obstacle whose x-range meets (left, right), by top."""
        column = []
        for node in self._nodes:
            if node["type"] != "group":
                node_x = node["x"]
                if node_x < right and node_x + node["width"] > left:
                    column.append((node["y"], node["y"] + node["height"]))
        column.sort()
        return column

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
        _check_fields(node, _NODE_FIELDS[kind], f"{kind} node")
        for name, number in zip(_GEOMETRY, box):
            _check_number(name, number, f"{kind} node")
            node[name] = number
        if color is not None:
            _check_color(color, f"{kind} node")
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
        _check_fields(edge, _EDGE_FIELDS, "edge")
        if color is not None:
            _check_color(color, "edge")
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
        text = _dumps(self._data)
        if _LONE_SURROGATE.search(text):
            text = _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
        return text

    def save(
        self, path: str | os.PathLike[str] | None = None, *, backup: bool = True
    ) -> Path | None:
        """Write the canvas atomically with :func:`save_atomic`.

        Afterwards :attr:`path` and :attr:`source_digest` describe the written file.

        Args:
            path: Where to write; None for :attr:`path`.
            backup: Whether to copy the previous file to ``<name>.bak`` first.

        Returns:
            The backup's path, or None if no backup was made.

        Raises:
            CanvasError: No path was given and the canvas has none.
            OSError: The file could not be written (it is then untouched).
        """
        target = self._path if path is None else Path(path)
        if target is None:
            raise CanvasError("no path to save the canvas to")
        raw = self.to_json().encode("utf-8")
        backup_path = save_atomic(target, raw, backup=backup)
        self._path = target
        self._remember(raw)
        return backup_path

    def __repr__(self) -> str:
        """Describe the canvas briefly: its path and counts."""
        return f"Canvas(path={self._path!r}, nodes={len(self._nodes)}, edges={len(self._edges)})"


def _read_limited(path: Path, max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes, or raise :class:`CanvasError`."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CanvasError(f"{path}: no such file") from None
    except OSError as exc:
        raise CanvasError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CanvasError(f"{path}: is a directory, not a canvas file")
    if not stat.S_ISREG(info.st_mode):
        raise CanvasError(f"{path}: not a regular file")
    limit = f"larger than the limit of {max_bytes:,} bytes"
    if info.st_size > max_bytes:
        raise CanvasError(f"{path}: the file has {info.st_size:,} bytes, {limit}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise CanvasError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:  # it grew after the stat
        raise CanvasError(f"{path}: the file is {limit}")
    return raw
