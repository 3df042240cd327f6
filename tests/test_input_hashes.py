"""What an answer depends on: a change to any of it makes the note 'changed'."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from command_handlers.intelligent_parallel.hashes import InputHashes
from command_handlers.intelligent_parallel.notes import Note
from command_handlers.intelligent_parallel.prompt import Material
from command_handlers.plugins import collect_executors, get_plugin_manager
from command_handlers.settings import Settings

AGENT = "oral-explanation"


def note(node_id: str, text: str, *material: Material, after: list[str] | None = None) -> Note:
    node: dict[str, Any] = {"id": node_id, "type": "text", "text": text}
    return Note(node, list(material), agents=[AGENT], after=after or [])


def registered_fingerprints(settings: Settings) -> dict[str, str | None]:
    """Agent -> fingerprint, as the built-in plugins register them (as the command reads them)."""
    registry = collect_executors(get_plugin_manager(load_entry_points=False), settings)
    return {name: registry.fingerprint(name) for name in registry.names}


def digest(
    item: Note,
    notes: dict[str, Note] | None = None,
    fingerprints: Mapping[str, str | None] | None = None,
    **settings: Any,
) -> str:
    run = Settings(**settings)
    prints = registered_fingerprints(run) if fingerprints is None else fingerprints
    return InputHashes(run, prints).of(item, AGENT, notes)


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
    assert digest(note("n", "a box", question, other), agent_command=("claude", "-p")) != digest(
        note("n", "a box", question, other), agent_command=("claude", "--print")
    )


def test_the_fingerprint_the_plugin_registered_is_what_counts() -> None:
    item = note("n", "a box")
    base = digest(item, fingerprints={AGENT: "model-a"})
    assert digest(item, fingerprints={AGENT: "model-a"}) == base
    assert digest(item, fingerprints={AGENT: "model-b"}) != base
    # the run's model does not count when the plugin said what answers
    assert digest(item, fingerprints={AGENT: "model-a"}, model="gpt-4o-mini") == base


def test_without_a_fingerprint_the_run_model_counts() -> None:
    item = note("n", "a box")
    for missing in ({}, {AGENT: None}):
        assert digest(item, fingerprints=missing) == digest(item, fingerprints={AGENT: "echo"})
        assert digest(item, fingerprints=missing, model="gpt-4o-mini") == digest(
            item, fingerprints={AGENT: "gpt-4o-mini"}
        )


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
