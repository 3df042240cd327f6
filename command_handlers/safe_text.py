"""Text from agents made safe to print and to write: no control characters, no terminal escapes.

An agent program's stderr, an error a server sent back, even an answer, may
hold terminal escape sequences (colours, but also ones that move the cursor,
clear the screen, set the window title or write to the clipboard) and other
control characters. Printed as they are, they act on the user's terminal;
written to a card, they are garbage in the note. :func:`strip_controls`
removes them, keeping line breaks and tabs. Standard library only: the engine
uses it for every error text it reports.
"""

from __future__ import annotations

import re

__all__ = ["strip_controls"]

# ECMA-48: CSI (ESC [ or the 8-bit CSI, parameters, intermediates, a final byte);
# OSC, DCS, SOS, PM and APC strings up to their terminator (BEL or ST), or up
# to the end of the line when it never comes; then any other escape sequence.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
# C0 but tab and newline, DEL, C1.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_controls(text: str) -> str:
    r"""Remove terminal escape sequences and control characters, keeping ``\n`` and ``\t``.

    A ``\r\n`` line end becomes ``\n``; any other carriage return goes (on a
    terminal it would let later text overwrite what came before).

    Args:
        text: Text from an agent: an answer, an error, the end of its stderr.

    Returns:
        The text without them; the same object when it held none.
    """
    if _CONTROLS.search(text) is None:
        return text
    return _CONTROLS.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n")))
