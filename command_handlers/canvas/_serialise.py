"""Serialising a canvas exactly as Obsidian writes it, only faster than :func:`json.dumps`."""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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


def dumps(data: object) -> str:
    r"""Serialise exactly as ``json.dumps(data, indent="\t", ensure_ascii=False)``, only faster."""
    out: list[str] = []
    try:
        _encode(data, 0, out)
    except _Unsupported:
        return json.dumps(data, indent="\t", ensure_ascii=False)
    return "".join(out)


def to_text(data: object) -> str:
    r"""Serialise like ``json.dumps(data, indent="\t", ensure_ascii=False)``, UTF-8 safe.

    Unpaired surrogates, which UTF-8 cannot hold, are written as ``\uXXXX`` escapes.
    """
    text = dumps(data)
    if _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    return text
