"""File names that fit the file system: at most 255 bytes, shortened the same way every run.

A document is named after its note's topic and its agent; an agent's name can
be long, and a name over the file system's limit cannot be created at all.
:func:`fit_name` leaves a name that fits as it is, and shortens one that does
not, keeping its start and adding a short hash of the whole, so that the same
note and agent get the same name on every run (a rerun finds its documents)
and two long names that start alike stay apart.
"""

from __future__ import annotations

import hashlib
import sys

__all__ = ["NAME_MAX", "fit_name", "name_bytes"]

#: The longest file name, in bytes, of the usual file systems (ext4, XFS, Btrfs, APFS, NTFS).
NAME_MAX = 255
#: Bytes kept free after a shortened stem: its numbered suffixes (``-2`` ...) and extension.
_SUFFIX_ROOM = 16
_HASH_CHARS = 8


def name_bytes(name: str) -> int:
    """How many bytes a file name takes on disk (in the file system's encoding).

    Args:
        name: The file name.

    Returns:
        Its length in bytes.
    """
    return len(name.encode(sys.getfilesystemencoding(), "surrogateescape"))


def fit_name(stem: str, suffix: str = "", limit: int = NAME_MAX) -> str:
    """``stem + suffix``, or, when that is longer than ``limit`` bytes, a shortened stem.

    The shortened stem is the start of ``stem``, cut on a character
    boundary, then ``-`` and 8 hex digits of a SHA-256 of the whole stem; it
    is the same whatever the suffix (``.md``, ``-2.md``...).

    Args:
        stem: The name without its suffix, e.g. ``recursion-clarification-path``.
        suffix: What follows it, e.g. ``.md`` or ``-2.md`` (kept whole).
        limit: The most bytes the name may take.

    Returns:
        A name of at most ``limit`` bytes (for suffixes of up to 16 bytes).
    """
    name = stem + suffix
    if name_bytes(name) <= limit:
        return name
    encoding = sys.getfilesystemencoding()
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    room = limit - _SUFFIX_ROOM - 1 - _HASH_CHARS
    head = stem.encode(encoding, "surrogateescape")[:room].decode(encoding, "ignore")
    return f"{head.rstrip('-')}-{digest}{suffix}"
