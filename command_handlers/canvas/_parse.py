"""Parsing JSON text or UTF-8 bytes, every failure turned into a one-line CanvasError."""

from __future__ import annotations

import json
from typing import Any

from command_handlers.canvas._types import MAX_DEPTH, CanvasError


def _parse_float(text: str) -> float:
    """Parse a JSON number with a fraction or exponent, refusing overflow to infinity."""
    value = float(text)
    if value - value != 0:  # inf - inf is nan
        raise CanvasError(f"invalid JSON: number {text} is out of range")
    return value


def _parse_constant(name: str) -> float:
    """Refuse the non-standard ``NaN`` / ``Infinity`` literals."""
    raise CanvasError(f"invalid JSON: {name} is not a valid number")


def parse_text(text: str) -> Any:
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


def decode(raw: bytes) -> str:
    """Decode UTF-8 (an initial byte order mark is allowed)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CanvasError(f"not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
