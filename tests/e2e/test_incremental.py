"""End to end: running the command again answers only the notes that need it.

A learner runs ``intelligent-parallel notes.canvas``, reads the answers, adds or
edits notes and runs it again. The agent program (``--agent-command``) logs
every call and keeps everything it read on stdin, so the tests count the calls
and read the prompts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest

from command_handlers.fileio import read_canvas

DEFAULT_AGENT = "clarification-path"
NOTE_IDS = ("note-recursion", "note-closure")
NOTE_TEXT = {
    "note-recursion": "Recursion is when a function calls itself until it stops.",
    "note-closure": "A closure is a function that remembers the variables around it.",
}
#: What every answer of the agent program starts with: never in a prompt.
ANSWER_MARK = "ANSWER for"

Run = Callable[..., "tuple[int, str, str]"]


# ----------------------------------------------------------------------------- helpers


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def save(path: Path, data: Mapping[str, Any], indent: Any = "\t") -> None:
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")


def by_id(items: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


def answers(data: Mapping[str, Any], note_id: str, agent: str = DEFAULT_AGENT) -> list[dict]:
    """The cards an edge labelled ``agent`` leads to from the note."""
    nodes = by_id(data["nodes"])
    return [
        nodes[edge["toNode"]]
        for edge in data["edges"]
        if edge["fromNode"] == note_id and edge.get("label") == agent
    ]


def document_of(data: Mapping[str, Any], card_id: str) -> dict[str, Any]:
    """The file node an edge from the card leads to."""
    nodes = by_id(data["nodes"])
    (file_node,) = [nodes[e["toNode"]] for e in data["edges"] if e["fromNode"] == card_id]
    return file_node


def ungrown(now: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """A node as it was, if it is a group that only grew (to hold its notes' answers)."""
    if now.get("type") != "group":
        return dict(now)
    assert now["x"] <= before["x"]
    assert now["y"] <= before["y"]
    assert now["x"] + now["width"] >= before["x"] + before["width"]
    assert now["y"] + now["height"] >= before["y"] + before["height"]
    return {**now, **{key: before[key] for key in ("x", "y", "width", "height")}}


def only_new_answers(
    before: Mapping[str, Any], after: Mapping[str, Any], expected: Mapping[str, Sequence[str]]
) -> None:
    """``after`` is ``before`` plus one answer (card + document) per note and agent expected."""
    old_nodes, old_edges = by_id(before["nodes"]), by_id(before["edges"])
    nodes, edges = by_id(after["nodes"]), by_id(after["edges"])
    for key, value in before.items():
        if key not in ("nodes", "edges"):
            assert after[key] == value
    for old, new in ((old_nodes, nodes), (old_edges, edges)):
        for item_id, item in old.items():
            assert ungrown(new[item_id], item) == item
    added_nodes = set(nodes) - set(old_nodes)
    added_edges = [edges[i] for i in set(edges) - set(old_edges)]
    calls = sum(len(agents) for agents in expected.values())
    assert len(added_nodes) == len(added_edges) == 2 * calls
    labelled = sorted((e["fromNode"], e["label"]) for e in added_edges if "label" in e)
    assert labelled == sorted(
        (note, agent) for note, agents in expected.items() for agent in agents
    )
    for edge in added_edges:
        assert edge["toNode"] in added_nodes


def text_node(node_id: str, text: str, x: int, y: int, color: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "text",
        "text": text,
        "x": x,
        "y": y,
        "width": 300,
        "height": 120,
        "color": color,
    }


def add_notes(path: Path) -> dict[str, str]:
    """Add a question with a new note, and a note on its own; return note id -> text."""
    data = load(path)
    new = {
        "note-iterator": "An iterator hands out one item at a time.",
        "note-decorator": "A decorator wraps a function in another one.",
    }
    data["nodes"] += [
        text_node("q-iterator", "# What is an iterator?", -400, 1400, "1"),
        text_node("note-iterator", new["note-iterator"], 0, 1400, "6"),
        text_node("note-decorator", new["note-decorator"], 0, 1700, "6"),
    ]
    data["edges"].append(
        {"id": "edge-q-iterator", "fromNode": "q-iterator", "toNode": "note-iterator"}
    )
    save(path, data)
    return new


def edit_note(path: Path, note_id: str, text: str) -> None:
    data = load(path)
    by_id(data["nodes"])[note_id]["text"] = text
    save(path, data)


def obsidian_resave(path: Path, seed: int = 8) -> None:
    """Re-save as another program might: items shuffled, re-indented, unknown fields dropped."""
    data = load(path)
    rng = random.Random(seed)
    known_node = {
        "id",
        "type",
        "text",
        "file",
        "url",
        "label",
        "x",
        "y",
        "width",
        "height",
        "color",
    }
    known_edge = {"id", "fromNode", "toNode", "label", "color"}  # sides dropped too
    nodes = [{k: v for k, v in n.items() if k in known_node} for n in data["nodes"]]
    edges = [{k: v for k, v in e.items() if k in known_edge} for e in data["edges"]]
    rng.shuffle(nodes)
    rng.shuffle(edges)
    save(path, {"edges": edges, "nodes": nodes}, indent=2)


def run_agent(run_cli: Run, canvas: Path, agent: Any, *extra: object) -> tuple[int, str, str]:
    return run_cli(canvas, "--agent-command", agent.command, *extra)


def prompts_for(agent: Any, note_text: str) -> list[str]:
    """Everything the agent program read for the note with this text."""
    return [s for s in agent.stdins() if f"## Learner's understanding\n{note_text}\n" in s]


# ----------------------------------------------------------------------------- a second run


def test_a_second_run_answers_only_the_new_notes(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    new = add_notes(canvas_file)
    before = load(canvas_file)

    code, _, err = run_agent(run_cli, canvas_file, agent_program)

    assert code == 0, err
    calls = agent_program.calls()
    assert len(calls) == 4
    assert sorted(text for _, text in calls[2:]) == sorted(new.values())
    after = load(canvas_file)
    only_new_answers(before, after, {note: [DEFAULT_AGENT] for note in new})
    for note in (*NOTE_IDS, *new):
        assert len(answers(after, note)) == 1  # no duplicate answers
    read_canvas(canvas_file)
    assert "2/2 notes answered" in err
    assert "2 notes skipped: already answered" in err


def test_a_run_with_nothing_new_changes_nothing(
    run_cli: Run, canvas_file: Path, agent_program: Any, tmp_path: Path
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    folder = canvas_file.parent
    files = {
        p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and "journal" not in p.name
    }
    report = tmp_path / "report.json"

    code, out, err = run_agent(run_cli, canvas_file, agent_program, "--report", report)

    assert code == 0, err
    assert len(agent_program.calls()) == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert "every selected note is already answered" in line
    now = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and "journal" not in p.name}
    assert now == files  # canvas, backup and documents alike: no file new or changed
    written = json.loads(report.read_text(encoding="utf-8"))
    assert written["stats"]["skipped_answered"] == 2
    assert written["written_to"] is None
    assert written["tasks"] == []
    skipped = sorted((s["node_id"], s["agent"], s["reason"]) for s in written["skipped"])
    assert skipped == [(n, DEFAULT_AGENT, "already answered") for n in sorted(NOTE_IDS)]
    data = load(canvas_file)
    for entry in written["skipped"]:
        assert entry["answer_node_id"] == answers(data, entry["node_id"])[0]["id"]


def test_quiet_says_nothing_when_there_is_nothing_to_do(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0

    code, out, err = run_agent(run_cli, canvas_file, agent_program, "-q")

    assert (code, out, err) == (0, "", "")


@pytest.mark.parametrize("journal", [True, False], ids=["with-journal", "journal-deleted"])
def test_answers_are_recognised_after_obsidian_resaves_the_canvas(
    run_cli: Run, canvas_file: Path, agent_program: Any, journal: bool
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    obsidian_resave(canvas_file)
    if not journal:
        (canvas_file.parent / ".notes.canvas.journal.sqlite").unlink()
    resaved = canvas_file.read_bytes()

    code, _, err = run_agent(run_cli, canvas_file, agent_program)

    assert code == 0, err
    assert len(agent_program.calls()) == 2
    assert canvas_file.read_bytes() == resaved
    assert "already answered" in err

    new = add_notes(canvas_file)
    before = load(canvas_file)
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    assert sorted(text for _, text in agent_program.calls()[2:]) == sorted(new.values())
    only_new_answers(before, load(canvas_file), {note: [DEFAULT_AGENT] for note in new})


def test_an_edited_note_alone_is_answered_again(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    edited = "A closure keeps the variables of the function that made it."
    edit_note(canvas_file, "note-closure", edited)
    before = load(canvas_file)

    code, _, err = run_agent(run_cli, canvas_file, agent_program)

    assert code == 0, err
    assert agent_program.calls()[2:] == [(DEFAULT_AGENT, edited)]
    after = load(canvas_file)
    only_new_answers(before, after, {"note-closure": [DEFAULT_AGENT]})  # beside the old one
    assert len(answers(after, "note-closure")) == 2
    assert len(answers(after, "note-recursion")) == 1
    (prompt,) = prompts_for(agent_program, edited)
    assert ANSWER_MARK not in prompt  # the earlier answer is not material


def test_an_edited_question_counts_as_a_change(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    edit_note(canvas_file, "q-recursion", "# What is recursion, really?")

    code, _, err = run_agent(run_cli, canvas_file, agent_program, "-d")

    assert code == 0, err
    assert "To run: 1 call (0 new, 1 changed since answered)" in err
    assert "Skipped, already answered: 1 call (1 note)" in err
    assert len(agent_program.calls()) == 2


def test_replace_leaves_one_answer_per_note(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    first = load(canvas_file)
    (old_card,) = answers(first, "note-closure")
    old_file = document_of(first, old_card["id"])
    edited = "PLEASE remember: a closure keeps its variables."
    edit_note(canvas_file, "note-closure", edited)

    code, out, err = run_agent(run_cli, canvas_file, agent_program, "--replace", "--json")

    assert code == 0, err
    after = load(canvas_file)
    (card,) = answers(after, "note-closure")
    assert card["id"] != old_card["id"]
    assert [card[k] for k in ("x", "y", "width", "height")] == [
        old_card[k] for k in ("x", "y", "width", "height")
    ]
    file_node = document_of(after, card["id"])
    assert [file_node[k] for k in ("x", "y")] == [old_file[k] for k in ("x", "y")]
    assert file_node["file"] != old_file["file"]
    assert (canvas_file.parent / old_file["file"]).is_file()  # the old document stays
    assert edited in (canvas_file.parent / file_node["file"]).read_text(encoding="utf-8")
    ids = {node["id"] for node in after["nodes"]}
    assert old_card["id"] not in ids
    assert old_file["id"] not in ids
    assert all(old_card["id"] not in (e["fromNode"], e["toNode"]) for e in after["edges"])
    assert len(after["nodes"]) == len(first["nodes"])
    (task,) = json.loads(out)["tasks"]
    assert (task["decision"], task["replaced_node_id"]) == ("changed", old_card["id"])

    assert run_agent(run_cli, canvas_file, agent_program, "--replace", "--force")[0] == 0
    final = load(canvas_file)
    for note in NOTE_IDS:
        assert len(answers(final, note)) == 1
    assert len(final["nodes"]) == len(first["nodes"])
    assert len(agent_program.calls()) == 5


def test_force_answers_every_note_again(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    before = load(canvas_file)

    code, _, err = run_agent(run_cli, canvas_file, agent_program, "--force")

    assert code == 0, err
    assert len(agent_program.calls()) == 4
    only_new_answers(before, load(canvas_file), {note: [DEFAULT_AGENT] for note in NOTE_IDS})
    assert not any(ANSWER_MARK in stdin for stdin in agent_program.stdins())


def test_a_second_agent_gets_only_its_calls(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    before = load(canvas_file)

    code, _, err = run_agent(
        run_cli, canvas_file, agent_program, "--agents", f"{DEFAULT_AGENT},memory-anchor"
    )

    assert code == 0, err
    assert sorted(agent_program.calls()[2:]) == sorted(
        ("memory-anchor", NOTE_TEXT[note]) for note in NOTE_IDS
    )
    only_new_answers(before, load(canvas_file), {note: ["memory-anchor"] for note in NOTE_IDS})
    for note in NOTE_IDS:
        for prompt in prompts_for(agent_program, NOTE_TEXT[note]):
            assert ANSWER_MARK not in prompt
    assert "2/2 notes answered" in err
    assert "already answered" not in err  # each note had a call: none was skipped whole


def test_a_users_own_blue_node_is_not_an_answer(
    run_cli: Run, tmp_path: Path, make_canvas: Callable[[Path, Any], bytes], agent_program: Any
) -> None:
    path = tmp_path / "own.canvas"
    data = {
        "nodes": [
            text_node("note", "Entropy measures disorder.", 0, 0, "6"),
            text_node("mine", "MY OWN SUMMARY of entropy.", 400, 0, "5"),
            text_node("other", "MY SECOND CARD, labelled.", 400, 300, "5"),
        ],
        "edges": [
            {"id": "e1", "fromNode": "note", "toNode": "mine"},
            {"id": "e2", "fromNode": "note", "toNode": "other", "label": "my notes"},
        ],
    }
    make_canvas(path, data)

    code, _, err = run_agent(run_cli, path, agent_program)

    assert code == 0, err
    assert agent_program.calls() == [(DEFAULT_AGENT, "Entropy measures disorder.")]
    (prompt,) = agent_program.stdins()
    assert "MY OWN SUMMARY of entropy." in prompt.split("## Material", 1)[1]
    assert "MY SECOND CARD, labelled." in prompt
    assert len(answers(load(path), "note")) == 1


def test_a_recoloured_answer_is_still_an_answer(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    data = load(canvas_file)
    (card,) = answers(data, "note-recursion")
    by_id(data["nodes"])[card["id"]]["color"] = "2"  # the learner marks it understood
    save(canvas_file, data)

    code, _, err = run_agent(run_cli, canvas_file, agent_program, "--color", "2", "--force")

    assert code == 0, err
    assert agent_program.calls()[2:] == [(DEFAULT_AGENT, "Base cases stop the recursion.")]
    assert not any(ANSWER_MARK in stdin for stdin in agent_program.stdins())

    code, _, err = run_agent(run_cli, canvas_file, agent_program, "-n", card["id"])

    assert code == 2
    assert "an answer this tool wrote" in err


def test_nodes_naming_an_answered_note_skip_it_unless_forced(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    original = canvas_file.read_bytes()

    code, _, err = run_agent(run_cli, canvas_file, agent_program, "-n", "note-closure")

    assert code == 0, err
    assert canvas_file.read_bytes() == original
    assert "already answered" in err

    code, _, err = run_agent(run_cli, canvas_file, agent_program, "-n", "note-closure", "--force")

    assert code == 0, err
    assert agent_program.calls()[2:] == [(DEFAULT_AGENT, NOTE_TEXT["note-closure"])]


def test_follow_edges_reads_the_answer_of_a_skipped_prerequisite(
    run_cli: Run, tmp_path: Path, make_canvas: Callable[[Path, Any], bytes], agent_program: Any
) -> None:
    path = tmp_path / "chain.canvas"
    data = {
        "nodes": [
            text_node("q", "# Functions", 0, 0, "1"),
            text_node("a", "A function maps inputs to outputs.", 0, 200, "6"),
            text_node("b", "A recursive function uses itself.", 0, 400, "6"),
        ],
        "edges": [
            {"id": "e1", "fromNode": "q", "toNode": "a"},
            {"id": "e2", "fromNode": "a", "toNode": "b", "label": "leads to"},
        ],
    }
    make_canvas(path, data)
    report = tmp_path / "report.json"
    assert run_agent(run_cli, path, agent_program, "-n", "a", "--report", report)[0] == 0
    (answer_a,) = [t["answer"] for t in json.loads(report.read_text(encoding="utf-8"))["tasks"]]

    code, _, err = run_agent(run_cli, path, agent_program, "--follow-edges")

    assert code == 0, err
    assert [text for _, text in agent_program.calls()] == [
        "A function maps inputs to outputs.",
        "A recursive function uses itself.",
    ]
    (prompt_b,) = prompts_for(agent_program, "A recursive function uses itself.")
    before, heading, prerequisites = prompt_b.partition("## Prerequisite answers\n")
    assert heading
    assert f"### {DEFAULT_AGENT} on: Functions\n{answer_a.strip()}" in prerequisites
    assert ANSWER_MARK not in before  # not as material
    assert len(answers(load(path), "a")) == 1


def test_answers_paid_for_but_never_written_are_reused(
    run_cli: Run, canvas_file: Path, agent_program: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = load(canvas_file)
    original = canvas_file.read_bytes()
    monkeypatch.setenv("TEST_AGENT_SPOIL", str(canvas_file))  # unreadable meanwhile
    code, _, err = run_agent(run_cli, canvas_file, agent_program)
    assert code == 1
    assert "could not be merged" in err
    assert len(agent_program.calls()) == 2
    monkeypatch.delenv("TEST_AGENT_SPOIL")
    canvas_file.write_bytes(original)  # the user repairs it

    code, out, err = run_agent(run_cli, canvas_file, agent_program, "--json")

    assert code == 0, err
    assert len(agent_program.calls()) == 2  # nobody pays twice
    report = json.loads(out)
    assert report["stats"]["reused_answers"] == 2
    assert {t["decision"] for t in report["tasks"]} == {"new"}
    only_new_answers(before, load(canvas_file), {note: [DEFAULT_AGENT] for note in NOTE_IDS})


def test_dry_run_shows_the_groups(run_cli: Run, canvas_file: Path, agent_program: Any) -> None:
    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    add_notes(canvas_file)
    edit_note(canvas_file, "note-closure", "A closure is a function with a backpack.")
    original = canvas_file.read_bytes()

    code, out, err = run_agent(run_cli, canvas_file, agent_program, "-d")

    assert code == 0, err
    assert out == ""
    assert "To run: 3 calls (2 new, 1 changed since answered)" in err
    assert "Skipped, already answered: 1 call (1 note)" in err
    assert "3 notes, 3 calls" in err
    assert canvas_file.read_bytes() == original
    assert len(agent_program.calls()) == 2

    code, _, err = run_agent(run_cli, canvas_file, agent_program, "-d", "--force")

    assert "To run: 4 calls (2 new, 0 changed since answered, 2 answered before, forced)" in err
    assert "forced" in err.split("Plan", 1)[1]

    assert run_agent(run_cli, canvas_file, agent_program)[0] == 0
    code, _, err = run_agent(run_cli, canvas_file, agent_program, "-d")

    assert code == 0
    assert "Skipped, already answered: 4 calls (4 notes)" in err
    assert "Nothing to run" in err
