"""Tests for command_handlers.agent_definitions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from command_handlers.agent_definitions import (
    INHERIT,
    AgentDefinition,
    AgentDefinitionError,
    bundled_agents_dir,
    load_agent_file,
    load_agents,
    parse_agent_text,
)

BUNDLED_NAMES = [
    "clarification-path",
    "comparison-table",
    "example-teaching",
    "four-level-explanation",
    "memory-anchor",
    "oral-explanation",
]

TUTOR = """\
---
name: tutor
description: Explains things.
model: opus
tools: Read, Grep
color: blue
---
You are a tutor.

Explain clearly.
"""


def agent_text(name: str, body: str = "Prompt.", model: str | None = None) -> str:
    model_line = f"model: {model}\n" if model is not None else ""
    return f"---\nname: {name}\ndescription: The {name} agent.\n{model_line}---\n{body}\n"


def write_agent(folder: Path, file_name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text(text, encoding="utf-8")
    return path


# --- parse_agent_text: happy paths -------------------------------------------------


def test_parse_happy_path_keeps_extra_keys() -> None:
    definition = parse_agent_text(TUTOR)

    assert definition.name == "tutor"
    assert definition.description == "Explains things."
    assert definition.system_prompt == "You are a tutor.\n\nExplain clearly."
    assert definition.model == "opus"
    assert definition.declared_model == "opus"
    assert not definition.inherits_model
    assert definition.path is None
    assert dict(definition.extra) == {"tools": "Read, Grep", "color": "blue"}


def test_extra_is_read_only_and_not_shared() -> None:
    source: dict[str, object] = {"tools": ["Read"]}
    definition = AgentDefinition("a", "d", "p", extra=source)
    source["other"] = 1

    assert dict(definition.extra) == {"tools": ["Read"]}
    with pytest.raises(TypeError):
        definition.extra["x"] = 1  # type: ignore[index]
    assert dict(AgentDefinition("b", "d", "p").extra) == {}


def test_parse_records_path() -> None:
    path = Path("agents/tutor.md")

    assert parse_agent_text(TUTOR, path=path).path == path


@pytest.mark.parametrize(
    ("model_line", "model", "declared"),
    [
        ("model: inherit\n", None, "inherit"),
        ("model: Inherit\n", None, "Inherit"),
        ("model: opus\n", "opus", "opus"),
        ("model: sonnet\n", "sonnet", "sonnet"),
        ("model: gpt-4o-mini\n", "gpt-4o-mini", "gpt-4o-mini"),
        ("", None, None),
        ("model:\n", None, None),
        ("model: ''\n", None, ""),
    ],
)
def test_model_resolution(model_line: str, model: str | None, declared: str | None) -> None:
    definition = parse_agent_text(f"---\nname: a\n{model_line}---\nPrompt\n")

    assert definition.model == model
    assert definition.declared_model == declared
    assert definition.inherits_model is (model is None)


def test_description_is_optional() -> None:
    assert parse_agent_text("---\nname: a\n---\nPrompt\n").description == ""
    assert parse_agent_text("---\nname: a\ndescription:\n---\nPrompt\n").description == ""


def test_multiline_description_and_surrounding_whitespace() -> None:
    text = "---\nname: a\ndescription: >\n  Line one\n  line two.\n---\n\n\n  Prompt  \n\n"
    definition = parse_agent_text(text)

    assert definition.description == "Line one line two."
    assert definition.system_prompt == "Prompt"


def test_crlf_and_bom() -> None:
    text = "\ufeff" + TUTOR.replace("\n", "\r\n")
    definition = parse_agent_text(text)

    assert definition == parse_agent_text(TUTOR)
    assert definition.system_prompt == "You are a tutor.\n\nExplain clearly."


def test_cr_only_line_endings() -> None:
    assert parse_agent_text(TUTOR.replace("\n", "\r")) == parse_agent_text(TUTOR)


def test_delimiters_may_have_trailing_spaces() -> None:
    assert parse_agent_text("---  \nname: a\n--- \nPrompt").name == "a"


def test_body_may_contain_delimiter_lines() -> None:
    definition = parse_agent_text("---\nname: a\n---\nBefore\n---\nAfter\n")

    assert definition.system_prompt == "Before\n---\nAfter"


@pytest.mark.parametrize("name", ["a", "clarification-path", "Tutor_2", "v1.2", "9lives"])
def test_valid_names_are_kept_as_written(name: str) -> None:
    assert parse_agent_text(f"---\nname: {name}\n---\nPrompt").name == name


def test_non_string_keys_are_stringified() -> None:
    definition = parse_agent_text("---\nname: a\n1: one\n---\nPrompt")

    assert dict(definition.extra) == {"1": "one"}


# --- parse_agent_text: errors --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "no front matter", id="empty-file"),
        pytest.param("You are a tutor.\n", "no front matter", id="no-front-matter"),
        pytest.param("\n---\nname: a\n---\nPrompt", "no front matter", id="blank-first-line"),
        pytest.param("---\nname: a\nPrompt\n", "not closed", id="unclosed"),
        pytest.param("---\nname: [a\n---\nPrompt", "not valid YAML", id="invalid-yaml"),
        pytest.param("---\n- name\n- a\n---\nPrompt", "must be a mapping", id="list"),
        pytest.param("---\njust text\n---\nPrompt", "must be a mapping", id="scalar"),
        pytest.param("---\n---\nPrompt", "no 'name'", id="empty-front-matter"),
        pytest.param("---\ndescription: d\n---\nPrompt", "no 'name'", id="missing-name"),
        pytest.param("---\nname:\n---\nPrompt", "no 'name'", id="null-name"),
        pytest.param("---\nname: ''\n---\nPrompt", "no 'name'", id="empty-name"),
        pytest.param("---\nname: '   '\n---\nPrompt", "no 'name'", id="blank-name"),
        pytest.param("---\nname: 42\n---\nPrompt", "'name' must be a string", id="int-name"),
        pytest.param("---\nname: [a]\n---\nPrompt", "'name' must be a string", id="list-name"),
        pytest.param("---\nname: my agent\n---\nPrompt", "invalid agent name", id="space-name"),
        pytest.param("---\nname: a/b\n---\nPrompt", "invalid agent name", id="slash-name"),
        pytest.param("---\nname: -a\n---\nPrompt", "invalid agent name", id="leading-dash"),
        pytest.param("---\nname: .a\n---\nPrompt", "invalid agent name", id="leading-dot"),
        pytest.param(
            "---\nname: a\ndescription: [x]\n---\nPrompt",
            "'description' must be a string",
            id="list-description",
        ),
        pytest.param(
            "---\nname: a\nmodel: 4\n---\nPrompt", "'model' must be a string", id="int-model"
        ),
        pytest.param(
            "---\nname: a\nmodel: true\n---\nPrompt", "'model' must be a string", id="bool-model"
        ),
        pytest.param("---\nname: a\n---\n", "system prompt", id="empty-body"),
        pytest.param("---\nname: a\n---", "system prompt", id="no-body"),
        pytest.param("---\nname: a\n---\n  \n\t\n", "system prompt", id="blank-body"),
    ],
)
def test_parse_errors(text: str, problem: str) -> None:
    path = Path("agents/bad.md")

    with pytest.raises(AgentDefinitionError, match=problem) as info:
        parse_agent_text(text, path=path)

    assert str(info.value).startswith(f"{path}: ")
    assert problem in info.value.problem
    assert info.value.path == path
    assert isinstance(info.value, ValueError)


def test_error_without_path_is_just_the_problem() -> None:
    with pytest.raises(AgentDefinitionError) as info:
        parse_agent_text("no front matter here")

    assert info.value.path is None
    assert str(info.value) == info.value.problem


# --- AgentDefinition -----------------------------------------------------------------


def test_fingerprint_is_sha256_of_name_model_and_prompt() -> None:
    definition = AgentDefinition("a", "desc", "prompt", model="opus")
    expected = hashlib.sha256(json.dumps(["a", "opus", "prompt"]).encode()).hexdigest()

    assert definition.fingerprint == expected
    assert len(definition.fingerprint) == 64


def test_fingerprint_ignores_description_path_extra_and_inherit_spelling() -> None:
    base = AgentDefinition("a", "desc", "prompt")
    same = AgentDefinition(
        "a", "other", "prompt", model=INHERIT, path=Path("x.md"), extra={"tools": "Read"}
    )

    assert base.fingerprint == same.fingerprint


@pytest.mark.parametrize(
    "changes", [{"name": "b"}, {"model": "opus"}, {"system_prompt": "prompt!"}]
)
def test_fingerprint_changes_with_name_model_or_prompt(changes: dict[str, str]) -> None:
    base = AgentDefinition("a", "desc", "prompt")

    assert dataclasses.replace(base, **changes).fingerprint != base.fingerprint  # type: ignore[arg-type]


def test_definition_is_frozen_and_hashable() -> None:
    definition = AgentDefinition("a", "d", "p", model="inherit", extra={"tools": ["Read"]})

    with pytest.raises(dataclasses.FrozenInstanceError):
        definition.name = "b"  # type: ignore[misc]
    assert hash(definition) == hash(AgentDefinition("a", "d", "p"))
    assert definition == AgentDefinition("a", "d", "p", extra={"tools": ["Read"]})
    assert definition != AgentDefinition("a", "d", "p")


def test_declared_model_follows_replace() -> None:
    inherited = AgentDefinition("a", "d", "p", model="inherit")

    assert dataclasses.replace(inherited, name="b").declared_model == "inherit"
    replaced = dataclasses.replace(inherited, model="opus")
    assert (replaced.model, replaced.declared_model) == ("opus", "opus")
    reset = dataclasses.replace(replaced, model=None)
    assert (reset.model, reset.declared_model) == (None, None)


# --- load_agent_file -----------------------------------------------------------------


def test_load_agent_file(tmp_path: Path) -> None:
    path = tmp_path / "tutor.md"
    path.write_bytes(b"\xef\xbb\xbf" + TUTOR.replace("\n", "\r\n").encode("utf-8"))

    definition = load_agent_file(path)

    assert definition.name == "tutor"
    assert definition.path == path
    assert definition.system_prompt == "You are a tutor.\n\nExplain clearly."


def test_load_agent_file_accepts_str_path(tmp_path: Path) -> None:
    path = write_agent(tmp_path, "tutor.md", TUTOR)

    assert load_agent_file(str(path)).path == path


def test_load_agent_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "missing.md"

    with pytest.raises(AgentDefinitionError, match="cannot read agent file") as info:
        load_agent_file(path)

    assert info.value.path == path
    assert str(path) in str(info.value)


def test_load_agent_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.md"
    path.write_bytes("---\nname: caf\xe9\n---\nPrompt".encode("latin-1"))

    with pytest.raises(AgentDefinitionError, match="not UTF-8") as info:
        load_agent_file(path)

    assert info.value.path == path


def test_load_agent_file_error_names_the_file(tmp_path: Path) -> None:
    path = write_agent(tmp_path, "bad.md", "---\nname: a\n---\n")

    with pytest.raises(AgentDefinitionError, match="system prompt") as info:
        load_agent_file(path)

    assert str(info.value).startswith(str(path))


# --- bundled agents ------------------------------------------------------------------


def test_bundled_agents_dir_is_the_package_folder() -> None:
    folder = bundled_agents_dir()

    assert folder.is_dir()
    assert folder.name == "agents"
    assert (folder.parent / "agent_definitions.py").is_file()


def test_bundled_agents_are_exactly_the_six() -> None:
    agents = load_agents()

    assert list(agents) == BUNDLED_NAMES
    assert sorted(path.stem for path in bundled_agents_dir().glob("*.md")) == BUNDLED_NAMES


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_bundled_agent_parses(name: str) -> None:
    path = bundled_agents_dir() / f"{name}.md"
    definition = load_agent_file(path)

    assert definition.name == name
    assert definition.description.strip()
    assert definition.declared_model == INHERIT
    assert definition.model is None
    assert definition.path == path
    prompt = definition.system_prompt
    for section in ("# Topic", "## Material", "## Learner's understanding"):
        assert f"`{section}`" in prompt
    assert "## Prerequisite answers" in prompt
    assert "first line" in prompt


def test_bundled_fingerprints_differ() -> None:
    fingerprints = {agent.fingerprint for agent in load_agents().values()}

    assert len(fingerprints) == len(BUNDLED_NAMES)


# --- load_agents ---------------------------------------------------------------------


def test_load_agents_without_bundled(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    write_agent(folder, "b.md", agent_text("beta"))
    write_agent(folder, "a.md", agent_text("alpha"))

    agents = load_agents([folder], include_bundled=False)

    assert list(agents) == ["alpha", "beta"]
    assert agents["alpha"].path == folder / "a.md"


def test_load_agents_nothing() -> None:
    assert load_agents(include_bundled=False) == {}


def test_load_agents_empty_folder(tmp_path: Path) -> None:
    assert load_agents([tmp_path], include_bundled=False) == {}


def test_later_folders_override_earlier_ones(tmp_path: Path) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    write_agent(first, "x.md", agent_text("shared", body="First."))
    write_agent(first, "only-first.md", agent_text("only-first"))
    write_agent(second, "renamed.md", agent_text("shared", body="Second."))

    agents = load_agents([first, second], include_bundled=False)

    assert list(agents) == ["only-first", "shared"]
    assert agents["shared"].system_prompt == "Second."
    assert agents["shared"].path == second / "renamed.md"
    assert load_agents([second, first], include_bundled=False)["shared"].system_prompt == ("First.")


def test_user_folder_overrides_bundled_agent(tmp_path: Path) -> None:
    claude_agents = tmp_path / ".claude" / "agents"
    write_agent(claude_agents, "mine.md", agent_text("memory-anchor", body="Mine.", model="opus"))
    write_agent(claude_agents, "extra.md", agent_text("aaa-extra"))

    agents = load_agents([claude_agents])

    assert list(agents) == sorted([*BUNDLED_NAMES, "aaa-extra"])
    assert agents["memory-anchor"].system_prompt == "Mine."
    assert agents["memory-anchor"].model == "opus"
    assert agents["oral-explanation"].path == bundled_agents_dir() / "oral-explanation.md"


def test_load_agents_accepts_any_iterable_and_str(tmp_path: Path) -> None:
    write_agent(tmp_path, "a.md", agent_text("alpha"))

    agents = load_agents(iter([str(tmp_path)]), include_bundled=False)

    assert list(agents) == ["alpha"]


def test_load_agents_only_reads_md_files_at_top_level(tmp_path: Path) -> None:
    write_agent(tmp_path, "a.md", agent_text("alpha"))
    write_agent(tmp_path, "notes.txt", "not an agent")
    write_agent(tmp_path, "README", "not an agent")
    write_agent(tmp_path, ".hidden.md", "not an agent")
    write_agent(tmp_path / "nested", "b.md", agent_text("beta"))
    (tmp_path / "folder.md").mkdir()

    assert list(load_agents([tmp_path], include_bundled=False)) == ["alpha"]


def test_load_agents_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"

    with pytest.raises(AgentDefinitionError, match="does not exist") as info:
        load_agents([missing])

    assert info.value.path == missing
    assert str(missing) in str(info.value)


def test_load_agents_folder_is_a_file(tmp_path: Path) -> None:
    path = write_agent(tmp_path, "a.md", agent_text("alpha"))

    with pytest.raises(AgentDefinitionError, match="not a directory") as info:
        load_agents([path], include_bundled=False)

    assert info.value.path == path


def test_load_agents_bad_file_is_named(tmp_path: Path) -> None:
    write_agent(tmp_path, "a.md", agent_text("alpha"))
    bad = write_agent(tmp_path, "b.md", "no front matter")

    with pytest.raises(AgentDefinitionError, match="no front matter") as info:
        load_agents([tmp_path])

    assert info.value.path == bad
    assert str(info.value).startswith(str(bad))


def test_load_agents_duplicate_name_in_one_folder(tmp_path: Path) -> None:
    first = write_agent(tmp_path, "a.md", agent_text("same"))
    second = write_agent(tmp_path, "b.md", agent_text("same"))

    with pytest.raises(AgentDefinitionError, match="also defined in") as info:
        load_agents([tmp_path], include_bundled=False)

    assert info.value.path == second
    assert str(first) in str(info.value)


def test_load_agents_files_read_in_name_order(tmp_path: Path) -> None:
    write_agent(tmp_path, "b.md", "broken")
    write_agent(tmp_path, "a.md", "broken too")

    with pytest.raises(AgentDefinitionError) as info:
        load_agents([tmp_path], include_bundled=False)

    assert info.value.path == tmp_path / "a.md"
