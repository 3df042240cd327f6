"""Text from agents loses its control characters and terminal escapes, and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from command_handlers.async_execution_engine import error_text
from command_handlers.safe_text import strip_controls


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("\x1b[31mred\x1b[0m text", "red text"),
        ("\x1b[2J\x1b[H\x1b[?25lcleared", "cleared"),
        ("\x1b]0;owned title\x07after", "after"),
        ("\x1b]52;c;cGF5bG9hZA==\x1b\\after", "after"),  # OSC 52: write the clipboard
        ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1bPq#0;2;0;0;0\x1b\\dcs gone", "dcs gone"),
        ("\x9b31m8-bit CSI\x9d0;title\x9c done", "8-bit CSI done"),
        ("\x1bc reset, \x1b(B charset", " reset,  charset"),
        ("bell\x07 back\x08space nul\x00 del\x7f", "bell backspace nul del"),
        ("windows\r\nline\rover", "windows\nlineover"),
        ("kept:\ttab\nnewline", "kept:\ttab\nnewline"),
        ("\x1b]0;no terminator\nnext line", "\nnext line"),
        ("unfinished \x1b[", "unfinished "),
        ("trailing escape \x1b", "trailing escape "),
        ("é, 漢字, emoji 🙂, « quotes »", "é, 漢字, emoji 🙂, « quotes »"),
    ],
)
def test_control_characters_and_escapes_go(text: str, clean: str) -> None:
    assert strip_controls(text) == clean


def test_clean_text_is_returned_as_it_is() -> None:
    text = "An answer\nwith two lines\tand a tab."
    assert strip_controls(text) is text


@given(st.text())
def test_nothing_that_acts_on_a_terminal_is_left(text: str) -> None:
    clean = strip_controls(text)
    assert not any(
        (ord(char) < 0x20 and char not in "\n\t") or 0x7F <= ord(char) <= 0x9F for char in clean
    )
    assert strip_controls(clean) == clean


def test_the_engine_reports_errors_without_them() -> None:
    error = RuntimeError("agent failed:\n\x1b[31mboom\x1b[0m\x1b]0;title\x07")
    assert error_text(error) == "agent failed:\nboom"
    assert error_text(RuntimeError("\x1b[0m")) == "RuntimeError"
