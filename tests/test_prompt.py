"""The message an agent gets for one note: its layout and its topic line."""

from __future__ import annotations

import pytest

from command_handlers.intelligent_parallel.prompt import (
    Material,
    Prerequisite,
    build_prompt,
    topic_of,
)


def test_the_full_layout() -> None:
    prompt = build_prompt(
        "  A closure remembers its variables.\n",
        [
            Material("question (text node)", "# What is a closure?\n"),
            Material("Links to (link node)", "Link: https://example.com"),
        ],
        [
            Prerequisite("memory-anchor", "Functions", "Think of a function as a machine.\n"),
            Prerequisite("oral-explanation", "Scope", "Scope is where a name is visible."),
        ],
    )

    assert prompt == (
        "# Topic\nWhat is a closure?\n\n"
        "## Material\n"
        "### question (text node)\n# What is a closure?\n\n"
        "### Links to (link node)\nLink: https://example.com\n\n"
        "## Learner's understanding\nA closure remembers its variables.\n\n"
        "## Prerequisite answers\n"
        "### memory-anchor on: Functions\nThink of a function as a machine.\n\n"
        "### oral-explanation on: Scope\nScope is where a name is visible.\n"
    )


def test_without_material_or_prerequisites() -> None:
    prompt = build_prompt("Recursion is a loop.")

    assert prompt == (
        "# Topic\nRecursion is a loop.\n\n## Learner's understanding\nRecursion is a loop.\n"
    )
    assert "## Material" not in prompt
    assert "## Prerequisite answers" not in prompt


def test_an_empty_note() -> None:
    assert build_prompt("") == "# Topic\n\n\n## Learner's understanding\n\n"


@pytest.mark.parametrize(
    ("note", "material", "topic"),
    [
        ("My note", [Material("m", "\n\n  ## What is a limit?  \nmore")], "What is a limit?"),
        (
            "My note",
            [Material("a", "  \n ### \n"), Material("b", "Second material")],
            "Second material",
        ),
        ("\n  # My own words\nmore", [Material("a", "")], "My own words"),
        ("\n  just text", [], "just text"),
        ("   \n#\n", [], ""),
    ],
)
def test_topic_of(note: str, material: list[Material], topic: str) -> None:
    assert topic_of(note, material) == topic


def test_material_and_prerequisite_are_values() -> None:
    assert Material("a", "b") == Material("a", "b")
    assert Prerequisite("x", "t", "a") != Prerequisite("x", "t", "b")
    with pytest.raises(AttributeError):
        Material("a", "b").text = "c"  # type: ignore[misc]
