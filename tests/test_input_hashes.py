"""What an answer depends on: a change to any of it makes the note 'changed'."""

from __future__ import annotations

from typing import Any

from command_handlers.intelligent_parallel_handler import _InputHashes, _Note
from command_handlers.prompt import Material
from command_handlers.settings import Settings


def note(node_id: str, text: str, *material: Material, after: list[str] | None = None) -> _Note:
    node: dict[str, Any] = {"id": node_id, "type": "text", "text": text}
    return _Note(node, list(material), agents=["oral-explanation"], after=after or [])


def digest(item: _Note, notes: dict[str, _Note] | None = None, **settings: Any) -> str:
    return _InputHashes(Settings(**settings)).of(item, "oral-explanation", notes)


def test_the_hash_follows_text_material_labels_and_model_not_order() -> None:
    question = Material("Linked from (text node)", "What is a monad?")
    other = Material("see also (text node)", "Functors")
    base = digest(note("n", "a box", question, other))
    assert digest(note("n", "a box", other, question)) == base  # file order does not count
    assert digest(note("n", "a burrito", question, other)) != base
    relabelled = Material("my question (text node)", "What is a monad?")
    assert digest(note("n", "a box", relabelled, other)) != base  # the label is in the prompt
    assert digest(note("n", "a box", question, other), model="gpt-4o-mini") != base
    assert digest(note("n", "a box", question, other), agent_command=("claude", "-p")) != base


def test_a_changed_prerequisite_changes_its_dependents() -> None:
    first = note("a", "First idea.")
    second = note("b", "Second idea.", after=["a"])
    third = note("c", "Third idea.", after=["b"])
    notes = {"a": first, "b": second, "c": third}
    before = digest(third, notes)
    first.node["text"] = "First idea, edited."
    assert digest(third, notes) != before  # two steps down the chain


def test_a_cycle_does_not_recurse_forever() -> None:
    one = note("a", "One.", after=["b"])
    two = note("b", "Two.", after=["a"])
    assert digest(one, {"a": one, "b": two})
