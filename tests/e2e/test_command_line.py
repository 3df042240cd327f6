"""End to end: the ``intelligent-parallel`` command on a learner's canvas.

Most tests call ``command_handlers.cli.main`` in-process (fast, and measured by
coverage); a few run the installed console script in a subprocess. Answers come
from the offline ``echo`` model (it repeats the prompt) or from a small Python
agent program given with ``--agent-command``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from command_handlers import cli, hookimpl
from command_handlers.default_plugins import progress
from command_handlers.default_plugins.progress import ProgressDisplay
from command_handlers.fileio import read_canvas
from command_handlers.intelligent_parallel_handler import IntelligentParallelCommandHandler

NOTE_IDS = ("note-recursion", "note-closure")
NOTE_TEXT = {
    "note-recursion": "Recursion is when a function calls itself until it stops.",
    "note-closure": "A closure is a function that remembers the variables around it.",
}
DEFAULT_AGENT = "clarification-path"
HEX16 = re.compile(r"[0-9a-f]{16}")

Run = Callable[..., "tuple[int, str, str]"]


# ----------------------------------------------------------------------------- helpers


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def raw(path: Path) -> bytes:
    return path.read_bytes()


def by_id(items: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


def overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


@dataclass
class Answer:
    """One answer the command wrote: the labelled edge, the card and the document."""

    note: dict[str, Any]
    label: str | None
    card: dict[str, Any]
    file_node: dict[str, Any] | None
    document: Path | None


def new_items(data: Mapping[str, Any], original: Mapping[str, Any], key: str) -> list[dict]:
    old = {item["id"] for item in original.get(key, [])}
    return [item for item in data.get(key, []) if item["id"] not in old]


def answers_of(path: Path, original: Mapping[str, Any], note_id: str) -> list[Answer]:
    """The answers written beside one note, following note -> card -> file node."""
    data = load(path)
    nodes = by_id(data["nodes"])
    fresh = {node["id"] for node in new_items(data, original, "nodes")}
    found = []
    for edge in data["edges"]:
        if edge["fromNode"] != note_id or edge["toNode"] not in fresh:
            continue
        card = nodes[edge["toNode"]]
        onward = [e for e in data["edges"] if e["fromNode"] == card["id"]]
        file_node = nodes[onward[0]["toNode"]] if onward else None
        document = path.parent / file_node["file"] if file_node else None
        found.append(Answer(nodes[note_id], edge.get("label"), card, file_node, document))
    return found


def ungrown(now: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """A node as it was, if it is a group that only grew (to hold its notes' answers)."""
    if now.get("type") != "group":
        return dict(now)
    assert now["x"] <= before["x"]
    assert now["y"] <= before["y"]
    assert now["x"] + now["width"] >= before["x"] + before["width"]
    assert now["y"] + now["height"] >= before["y"] + before["height"]
    return {**now, **{key: before[key] for key in ("x", "y", "width", "height")}}


def check_groups(data: Mapping[str, Any]) -> None:
    """Every node lies wholly inside or wholly outside each group, never across its border."""
    groups = [n for n in data["nodes"] if n["type"] == "group"]
    for node in data["nodes"]:
        if node["type"] == "group":
            continue
        for group in groups:
            inside = (
                group["x"] <= node["x"]
                and node["x"] + node["width"] <= group["x"] + group["width"]
                and group["y"] <= node["y"]
                and node["y"] + node["height"] <= group["y"] + group["height"]
            )
            outside = (
                node["x"] >= group["x"] + group["width"]
                or node["x"] + node["width"] <= group["x"]
                or node["y"] >= group["y"] + group["height"]
                or node["y"] + node["height"] <= group["y"]
            )
            assert inside or outside, (node["id"], group["id"])


def check_canvas(
    path: Path,
    original: Mapping[str, Any],
    agents: Mapping[str, Sequence[str]],
    *,
    inline: bool = False,
) -> dict[str, list[Answer]]:
    """Check the written canvas: the three layers per answer, and nothing else changed.

    Args:
        path: The written canvas.
        original: The canvas data before the run.
        agents: Note id -> the agents that must have answered it.
        inline: Answers are whole in their card (no documents).

    Returns:
        Note id -> its answers.
    """
    read_canvas(path)  # valid JSON Canvas, by the package's own model
    data = load(path)
    # Every field survives: the unknown top-level ones and every original node and edge.
    for key, value in original.items():
        if key not in ("nodes", "edges"):
            assert data[key] == value
    nodes, edges = by_id(data["nodes"]), by_id(data["edges"])
    for key, current in (("nodes", nodes), ("edges", edges)):
        for item in original[key]:
            assert list(ungrown(current[item["id"]], item).items()) == list(item.items())
    check_groups(data)
    added_nodes = new_items(data, original, "nodes")
    added_edges = new_items(data, original, "edges")
    calls = sum(len(names) for names in agents.values())
    layers = 1 if inline else 2
    assert len(added_nodes) == calls * layers
    assert len(added_edges) == calls * layers
    for item in added_nodes + added_edges:
        assert HEX16.fullmatch(item["id"]), item["id"]
    # New nodes overlap nothing (groups are containers, not obstacles).
    solid = [node for node in data["nodes"] if node["type"] != "group"]
    for node in added_nodes:
        for other in solid:
            if other is not node:
                assert not overlap(node, other), (node["id"], other["id"])
    result = {}
    for note_id, names in agents.items():
        answers = answers_of(path, original, note_id)
        assert sorted(answer.label for answer in answers) == sorted(names)
        note = nodes[note_id]
        for answer in answers:
            card = answer.card
            assert card["type"] == "text"
            assert card["color"] == "5"
            assert card["x"] > note["x"] + note["width"]
            assert card["text"].startswith(f"**{answer.label}**")
            if inline:
                assert answer.file_node is None
                continue
            assert (card["width"], card["height"]) == (250, 150)
            assert answer.file_node is not None
            assert answer.document is not None
            assert answer.file_node["type"] == "file"
            file = answer.file_node["file"]
            assert "\\" not in file
            assert not Path(file).is_absolute()
            assert file.endswith(".md")
            assert answer.document.is_file()
        result[note_id] = answers
    return result


def document_text(answer: Answer) -> str:
    assert answer.document is not None
    return answer.document.read_text(encoding="utf-8")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


# ----------------------------------------------------------------------------- a default run


def test_default_run_writes_the_three_layers(
    run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any]
) -> None:
    original = canvas_file.read_bytes()

    code, out, err = run_cli(canvas_file)

    assert code == 0, err
    answers = check_canvas(canvas_file, canvas_data, {n: [DEFAULT_AGENT] for n in NOTE_IDS})
    for note_id, (answer,) in answers.items():
        text = document_text(answer)
        assert NOTE_TEXT[note_id] in text  # echo repeats the prompt, note included
        assert answer.file_node is not None
        assert answer.file_node["file"].startswith("notes answers/")
    # The first card could not sit level with its note: a green card is there.
    card = answers["note-recursion"][0].card
    assert card["y"] >= 120
    # The material of a note is what its edges link it to.
    recursion = document_text(answers["note-recursion"][0])
    assert "What is recursion?" in recursion
    assert "material/recursion.md" in recursion
    assert "https://example.com/closures" in document_text(answers["note-closure"][0])
    # The empty note was not sent; nothing else changed colour.
    assert not answers_of(canvas_file, canvas_data, "note-empty")
    assert (canvas_file.parent / "notes.canvas.bak").read_bytes() == original
    assert out == ""
    assert "2/2 notes answered" in err
    assert "echoes of the prompts" in err


def test_no_backup(run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any]) -> None:
    code, _, err = run_cli(canvas_file, "--no-backup", "-q")

    assert code == 0, err
    assert err == ""
    assert not (canvas_file.parent / "notes.canvas.bak").exists()
    assert len(load(canvas_file)["nodes"]) == len(canvas_data["nodes"]) + 4


def test_console_script(
    run_script: Callable[..., subprocess.CompletedProcess[str]],
    canvas_file: Path,
    canvas_data: dict[str, Any],
) -> None:
    done = run_script(canvas_file, "-m", "2")

    assert done.returncode == 0, done.stderr
    check_canvas(canvas_file, canvas_data, {n: [DEFAULT_AGENT] for n in NOTE_IDS})
    assert "Wrote" in done.stderr


def test_inline_puts_the_whole_answer_in_the_card(
    run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any]
) -> None:
    code, out, err = run_cli(canvas_file, "--inline", "--json")

    assert code == 0, err
    answers = check_canvas(
        canvas_file, canvas_data, {n: [DEFAULT_AGENT] for n in NOTE_IDS}, inline=True
    )
    assert not (canvas_file.parent / "notes answers").exists()
    report = json.loads(out)
    for task in report["tasks"]:
        assert task["document"] is None
        (answer,) = answers[task["node_id"]]
        assert task["answer"].strip() in answer.card["text"]
        assert answer.card["height"] > 150


def test_several_agents_answer_each_note(
    run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any]
) -> None:
    code, _, err = run_cli(canvas_file, "--agents", "memory-anchor,comparison-table")

    assert code == 0, err
    answers = check_canvas(
        canvas_file,
        canvas_data,
        {n: ["memory-anchor", "comparison-table"] for n in NOTE_IDS},
    )
    documents = {a.document for note_answers in answers.values() for a in note_answers}
    assert len(documents) == 4
    assert "4 documents, 4 blue nodes, 0 errors" in err


def test_output_and_docs_dir(
    run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any], tmp_path: Path
) -> None:
    original = canvas_file.read_bytes()
    out_dir = tmp_path / "elsewhere"
    out_dir.mkdir()
    target = out_dir / "answered.canvas"

    code, _, err = run_cli(canvas_file, "--output", target, "--docs-dir", "explanations")

    assert code == 0, err
    assert canvas_file.read_bytes() == original
    assert not (canvas_file.parent / "notes.canvas.bak").exists()
    answers = check_canvas(target, canvas_data, {n: [DEFAULT_AGENT] for n in NOTE_IDS})
    for (answer,) in answers.values():
        assert answer.file_node is not None
        assert answer.file_node["file"].startswith("explanations/")
        assert answer.document is not None
        assert answer.document.parent == out_dir / "explanations"


def test_relative_canvas_path_and_unicode_notes(
    run_cli: Run,
    tmp_path: Path,
    make_canvas: Callable[[Path, Any], bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "学习 vault"
    folder.mkdir()
    data = {
        "nodes": [
            _text("q", "# 什么是递归\uff1f", -400, 0, "1"),
            _text("a", "递归就是函数调用自己。", 0, 0, "6"),
            _text("b", "A second note on the same question.", 0, 300, "6"),
        ],
        "edges": [
            {"id": "e1", "fromNode": "q", "toNode": "a"},
            {"id": "e2", "fromNode": "q", "toNode": "b"},
        ],
    }
    make_canvas(folder / "笔记.canvas", data)
    monkeypatch.chdir(folder)

    code, _, err = run_cli("笔记.canvas")

    assert code == 0, err
    path = folder / "笔记.canvas"
    assert "递归就是函数调用自己。" in path.read_text(encoding="utf-8")  # not \u-escaped
    answers = check_canvas(path, data, {"a": [DEFAULT_AGENT], "b": [DEFAULT_AGENT]})
    files = {answer.file_node["file"] for (answer,) in answers.values() if answer.file_node}
    # Both notes share a topic: two distinct documents, beside the canvas.
    assert files == {
        f"笔记 answers/什么是递归-{DEFAULT_AGENT}.md",
        f"笔记 answers/什么是递归-{DEFAULT_AGENT}-2.md",
    }


# ----------------------------------------------------------------------------- agent program


def test_agent_command(
    run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any], agent_program: Any
) -> None:
    code, _, err = run_cli(
        canvas_file, "--agent-command", agent_program.command, "-m", "4", "--timeout", "30"
    )

    assert code == 0, err
    calls = agent_program.calls()
    assert len(calls) == len(NOTE_IDS)
    assert sorted(text for _, text in calls) == sorted(NOTE_TEXT.values())
    assert {agent for agent, _ in calls} == {DEFAULT_AGENT}
    answers = check_canvas(canvas_file, canvas_data, {n: [DEFAULT_AGENT] for n in NOTE_IDS})
    for note_id, (answer,) in answers.items():
        text = document_text(answer)
        assert f"ANSWER for {DEFAULT_AGENT}: # Topic" in text
        assert f"Your note said: {NOTE_TEXT[note_id]}" in text
    for stdin in agent_program.stdins():
        system, separator, prompt = stdin.partition("\n---\n")
        assert separator
        assert system.startswith("You are a patient, rigorous tutor")
        assert prompt.startswith("# Topic\n")


def test_a_second_run_does_not_send_earlier_answers(
    run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any], agent_program: Any
) -> None:
    assert run_cli(canvas_file, "--agent-command", agent_program.command)[0] == 0
    first = load(canvas_file)
    written = raw(canvas_file)

    # Nothing new: nothing is sent, nothing is written.
    code, _, err = run_cli(canvas_file, "--agent-command", agent_program.command, "--color", "5")
    assert code == 0, err
    assert "already answered" not in err  # the blue answers are never selected as notes
    assert 'No notes of colour "5" (cyan in Obsidian) found' in err
    code, _, err = run_cli(canvas_file, "--agent-command", agent_program.command)
    assert code == 0, err
    assert "every selected note is already answered" in err
    assert raw(canvas_file) == written
    assert len(agent_program.calls()) == 2

    # Asked again: the notes go out again, without the answers linked to them.
    code, _, err = run_cli(canvas_file, "--agent-command", agent_program.command, "--force")

    assert code == 0, err
    assert len(agent_program.calls()) == 4
    assert not any("ANSWER for" in stdin for stdin in agent_program.stdins())
    second = check_canvas(canvas_file, first, {n: [DEFAULT_AGENT] for n in NOTE_IDS})
    assert set(second) == set(NOTE_IDS)
    assert len(load(canvas_file)["nodes"]) == len(canvas_data["nodes"]) + 8


def test_follow_edges_hands_earlier_answers_on(
    run_cli: Run,
    tmp_path: Path,
    make_canvas: Callable[[Path, Any], bytes],
    agent_program: Any,
) -> None:
    path = tmp_path / "chain.canvas"
    data = {
        "nodes": [
            _text("q", "# Functions", 0, 0, "1"),
            _text("a", "A function maps inputs to outputs.", 0, 200, "6"),
            _text("b", "A recursive function uses itself in its definition.", 0, 400, "6"),
        ],
        "edges": [
            {"id": "e1", "fromNode": "q", "toNode": "a"},
            {"id": "e2", "fromNode": "a", "toNode": "b", "label": "leads to"},
        ],
    }
    make_canvas(path, data)
    report_file = tmp_path / "report.json"

    code, _, err = run_cli(
        path, "--follow-edges", "--agent-command", agent_program.command, "--report", report_file
    )

    assert code == 0, err
    calls = [text for _, text in agent_program.calls()]
    assert calls == [data["nodes"][1]["text"], data["nodes"][2]["text"]]  # B after A
    report = json.loads(report_file.read_text(encoding="utf-8"))
    answer_a = next(task["answer"] for task in report["tasks"] if task["node_id"] == "a")
    (stdin_b,) = [
        stdin
        for stdin in agent_program.stdins()
        if f"## Learner's understanding\n{data['nodes'][2]['text']}" in stdin
    ]
    _, heading, prerequisites = stdin_b.partition("## Prerequisite answers\n")
    assert heading
    assert f"### {DEFAULT_AGENT} on: Functions" in prerequisites
    assert answer_a.strip() in prerequisites
    check_canvas(path, data, {"a": [DEFAULT_AGENT], "b": [DEFAULT_AGENT]})


def test_follow_edges_skips_notes_after_a_failure(
    run_cli: Run, tmp_path: Path, make_canvas: Callable[[Path, Any], bytes], agent_program: Any
) -> None:
    path = tmp_path / "chain.canvas"
    data = {
        "nodes": [
            _text("a", "PLEASE FAIL on this first note.", 0, 0, "6"),
            _text("b", "This one builds on it.", 0, 300, "6"),
        ],
        "edges": [{"id": "e1", "fromNode": "a", "toNode": "b"}],
    }
    original = make_canvas(path, data)

    code, out, err = run_cli(
        path, "--follow-edges", "--agent-command", agent_program.command, "--json"
    )

    assert code == 1
    tasks = {task["node_id"]: task for task in json.loads(out)["tasks"]}
    assert tasks["a"]["status"] == "failed"
    assert "exited with code 1" in tasks["a"]["error"]
    assert tasks["b"]["status"] == "skipped"
    assert tasks["b"]["attempts"] == 0
    assert len(agent_program.calls()) == 1
    assert path.read_bytes() == original  # nothing answered: nothing written
    assert "skipped" in err


def test_follow_edges_refuses_a_cycle(
    run_cli: Run, tmp_path: Path, make_canvas: Callable[[Path, Any], bytes]
) -> None:
    path = tmp_path / "cycle.canvas"
    data = {
        "nodes": [_text("a", "First.", 0, 0, "6"), _text("b", "Second.", 0, 300, "6")],
        "edges": [
            {"id": "e1", "fromNode": "a", "toNode": "b"},
            {"id": "e2", "fromNode": "b", "toNode": "a"},
            {"id": "e3", "fromNode": "a", "toNode": "a"},
        ],
    }
    original = make_canvas(path, data)

    code, _, err = run_cli(path, "--follow-edges")

    assert code == 2
    assert "cycle" in err
    assert path.read_bytes() == original


def _text(node_id: str, text: str, x: int, y: int, color: str) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------- agents


@pytest.mark.parametrize(
    ("extra", "agent"),
    [
        ((), DEFAULT_AGENT),
        (("--color-map", "6=memory-anchor,1=oral-explanation"), "memory-anchor"),
    ],
)
def test_route_model_falls_back_to_the_color_map(
    run_cli: Run,
    canvas_file: Path,
    canvas_data: dict[str, Any],
    extra: tuple[str, ...],
    agent: str,
) -> None:
    code, _, err = run_cli(canvas_file, "--route", "model", *extra)

    assert code == 0, err
    check_canvas(canvas_file, canvas_data, {n: [agent] for n in NOTE_IDS})


AGENT_FILE = """---
name: {name}
description: {description}
model: {model}
---
{prompt}
"""


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "custom-explainer.md").write_text(
        AGENT_FILE.format(
            name="custom-explainer",
            description="Explains in the house style.",
            model="inherit",
            prompt="You are the CUSTOM EXPLAINER.",
        ),
        encoding="utf-8",
    )
    (folder / "oral-explanation.md").write_text(
        AGENT_FILE.format(
            name="oral-explanation",
            description="Our own spoken explanation.",
            model="opus",
            prompt="You are the OVERRIDDEN PROFESSOR.",
        ),
        encoding="utf-8",
    )
    return folder


def test_agents_dir(
    run_cli: Run,
    canvas_file: Path,
    canvas_data: dict[str, Any],
    agents_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="command_handlers.agents")

    code, _, err = run_cli(
        canvas_file, "--agents-dir", agents_dir, "--agents", "custom-explainer,oral-explanation"
    )

    assert code == 0, err
    answers = check_canvas(
        canvas_file, canvas_data, {n: ["custom-explainer", "oral-explanation"] for n in NOTE_IDS}
    )
    for note_answers in answers.values():
        texts = {a.label: document_text(a) for a in note_answers}
        assert "You are the CUSTOM EXPLAINER." in texts["custom-explainer"]
        assert "You are the OVERRIDDEN PROFESSOR." in texts["oral-explanation"]
    warnings = [r for r in caplog.records if r.name == "command_handlers.agents"]
    assert len(warnings) == 1
    assert "'opus'" in warnings[0].getMessage()
    assert "'oral-explanation'" in warnings[0].getMessage()


def test_agents_dir_single_custom_agent(
    run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any], agents_dir: Path
) -> None:
    code, _, err = run_cli(canvas_file, "--agents-dir", agents_dir, "--agent", "custom-explainer")

    assert code == 0, err
    check_canvas(canvas_file, canvas_data, {n: ["custom-explainer"] for n in NOTE_IDS})


# ----------------------------------------------------------------------------- plan and report


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ((), [DEFAULT_AGENT, "2 notes, 2 calls, 12 at once"]),
        (
            ("--agents", "memory-anchor,comparison-table", "-m", "3", "--follow-edges"),
            ["memory-anchor", "comparison-table", "2 notes, 4 calls, 3 at once", "following"],
        ),
    ],
)
def test_dry_run_prints_the_plan_and_changes_nothing(
    run_cli: Run, canvas_file: Path, extra: tuple[str, ...], expected: list[str]
) -> None:
    original = canvas_file.read_bytes()

    code, out, err = run_cli(canvas_file, "-d", *extra)

    assert code == 0, err
    assert out == ""
    for text in ["Plan", "Dry run", *expected]:
        assert text in err
    assert canvas_file.read_bytes() == original
    assert sorted(p.name for p in canvas_file.parent.iterdir()) == ["notes.canvas"]


def test_json_report_and_report_file(
    run_cli: Run, canvas_file: Path, tmp_path: Path, agent_program: Any
) -> None:
    report_file = tmp_path / "report.json"

    code, out, err = run_cli(
        canvas_file,
        "--json",
        "--report",
        report_file,
        "--agent-command",
        agent_program.command,
    )

    assert code == 0, err
    report = json.loads(out)
    assert report == json.loads(report_file.read_text(encoding="utf-8"))
    assert report["stats"] == {
        "total_nodes": 2,
        "processed_nodes": 2,
        "generated_docs": 2,
        "created_blue_nodes": 2,
        "errors": 0,
        "reused_answers": 0,
        "cancelled": 0,
        "skipped_answered": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "usd": None,  # an agent program has no price
    }
    assert report["written_to"] == str(canvas_file)
    assert {task["node_id"] for task in report["tasks"]} == set(NOTE_IDS)
    for task in report["tasks"]:
        assert task["agent"] == DEFAULT_AGENT
        assert task["status"] == "success"
        assert task["duration_seconds"] >= 0
        assert task["attempts"] == 1
        assert task["error"] is None
        assert task["usage"] is None  # a command agent cannot say
        document = canvas_file.parent / task["document"]
        assert document.is_file()
        assert task["answer"].strip() in document.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- confirmation


class TerminalInput(io.StringIO):
    """Standard input that says it is a terminal, holding the user's answer."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("reply", "answered"), [("n\n", False), ("\n", False), ("y\n", True)])
def test_a_terminal_user_is_asked_first(
    run_cli: Run,
    canvas_file: Path,
    canvas_data: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    reply: str,
    answered: bool,
) -> None:
    original = canvas_file.read_bytes()
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setattr(sys, "stdin", TerminalInput(reply))

    code, out, err = run_cli(canvas_file)

    assert code == 0, err
    assert out == ""
    assert "Plan" in err
    assert "Call the agents?" in err
    if answered:
        check_canvas(canvas_file, canvas_data, {n: [DEFAULT_AGENT] for n in NOTE_IDS})
        assert "100% (2/2)" in err
    else:
        assert "Cancelled: no agent was called" in err
        assert canvas_file.read_bytes() == original


def test_json_output_never_asks(
    run_cli: Run, canvas_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setattr(sys, "stdin", TerminalInput(""))

    code, out, err = run_cli(canvas_file, "--json")

    assert code == 0, err
    assert "Call the agents?" not in err
    assert len(json.loads(out)["tasks"]) == 2


# ----------------------------------------------------------------------------- nothing / failures


def test_nothing_selected(
    run_cli: Run, tmp_path: Path, make_canvas: Callable[[Path, Any], bytes]
) -> None:
    path = tmp_path / "empty.canvas"
    original = make_canvas(
        path,
        {
            "nodes": [_text("q", "A question", 0, 0, "1"), _text("e", "  \n", 0, 200, "6")],
            "edges": [],
        },
    )

    code, out, err = run_cli(path)

    assert code == 0
    assert out == ""
    assert 'No notes of colour "6" (purple in Obsidian) found: nothing to do.' in err
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.canvas"]


def test_a_failing_agent_fails_the_run_but_keeps_the_other_answers(
    run_cli: Run, canvas_file: Path, canvas_data: dict[str, Any], agent_program: Any
) -> None:
    data = json.loads(canvas_file.read_text(encoding="utf-8"))
    by_id(data["nodes"])["note-closure"]["text"] = "PLEASE FAIL: closures confuse me."
    canvas_file.write_text(json.dumps(data, indent="\t"), encoding="utf-8")

    code, _, err = run_cli(canvas_file, "--agent-command", agent_program.command)

    assert code == 1
    assert len(agent_program.calls()) == 2
    check_canvas(canvas_file, data, {"note-recursion": [DEFAULT_AGENT]})
    assert not answers_of(canvas_file, data, "note-closure")
    assert "1/2 notes answered, 1 document, 1 blue node, 1 error in" in err
    assert "failed" in err
    assert "failing on purpose [/oops] [bold]" in err


def test_a_failing_agent_is_one_error_line_under_quiet(
    run_cli: Run, canvas_file: Path, agent_program: Any
) -> None:
    data = json.loads(canvas_file.read_text(encoding="utf-8"))
    by_id(data["nodes"])["note-closure"]["text"] = "PLEASE FAIL: closures confuse me."
    canvas_file.write_text(json.dumps(data, indent="\t"), encoding="utf-8")

    code, out, err = run_cli(canvas_file, "-q", "--agent-command", agent_program.command)

    assert code == 1
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: 1 of 2 tasks failed (first, note-closure:")
    assert line.endswith("; the others were written")
    check_canvas(canvas_file, data, {"note-recursion": [DEFAULT_AGENT]})


def test_a_report_that_cannot_be_written_after_the_run_is_one_line_and_exit_1(
    run_cli: Run,
    canvas_file: Path,
    canvas_data: dict[str, Any],
    agent_program: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from command_handlers import fileio

    report = canvas_file.parent / "report.json"
    save_atomic = fileio.save_atomic

    def full_for_the_report(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path) == report:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_atomic(path, *args, **kwargs)

    monkeypatch.setattr(fileio, "save_atomic", full_for_the_report)

    code, _, err = run_cli(
        canvas_file, "-q", "--report", str(report), "--agent-command", agent_program.command
    )

    assert code == 1
    assert err.splitlines() == [f"error: cannot write the report {report}: No space left on device"]
    assert not report.exists()
    check_canvas(canvas_file, canvas_data, {nid: [DEFAULT_AGENT] for nid in NOTE_IDS})


BAD_CANVASES: dict[str, Any] = {
    "invalid-json": '{"nodes": [',
    "a-list": "[]",
    "duplicate-ids": {
        "nodes": [_text("a", "A", 0, 0, "6"), _text("a", "B", 0, 300, "6")],
        "edges": [],
    },
    "edge-to-nowhere": {
        "nodes": [_text("a", "A", 0, 0, "6")],
        "edges": [{"id": "e", "fromNode": "a", "toNode": "ghost"}],
    },
}


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("missing file", ["{tmp}/missing.canvas"], "no such file"),
        ("brackets in the name", ["{tmp}/[draft] a[/b].canvas"], "[draft] a[/b].canvas: no such"),
        ("a directory", ["{tmp}/folder.canvas"], "is a directory"),
        ("invalid JSON", ["{bad:invalid-json}"], "invalid-json.canvas"),
        ("not a canvas", ["{bad:a-list}"], "must be a JSON object"),
        ("duplicate ids", ["{bad:duplicate-ids}"], "duplicate"),
        ("edge to a missing node", ["{bad:edge-to-nowhere}"], "ghost"),
        ("unknown agent", ["{canvas}", "--agent", "nope"], "unknown agent 'nope'"),
        ("unknown agent in map", ["{canvas}", "--color-map", "6=nope"], "unknown agent 'nope'"),
        ("agent and agents", ["{canvas}", "--agent", "a", "--agents", "b"], "either"),
        ("unknown node", ["{canvas}", "-n", "zzz"], "unknown node id 'zzz'"),
        ("non-text node", ["{canvas}", "-n", "reading"], "only text nodes"),
        ("concurrency 0", ["{canvas}", "-m", "0"], "between 1 and 20, got 0"),
        ("concurrency 21", ["{canvas}", "--max", "21"], "between 1 and 20, got 21"),
        ("concurrency x", ["{canvas}", "--max-concurrency", "x"], "whole number"),
        ("timeout 0", ["{canvas}", "--timeout", "0"], "must be positive"),
        ("timeout nan", ["{canvas}", "--timeout", "nan"], "must be positive, got nan"),
        ("timeout x", ["{canvas}", "--timeout", "x"], "number of seconds"),
        ("retries x", ["{canvas}", "--retries", "x"], "must be a whole number, got 'x'"),
        ("retries -1", ["{canvas}", "--retries=-1"], "must be 0 or more, got -1"),
        (
            "unwritable output",
            ["{canvas}", "--output", "/nonexistent-dir/x.canvas"],
            "/nonexistent-dir",
        ),
        ("output is a directory", ["{canvas}", "--output", "{tmp}"], "is a directory"),
        ("report in no folder", ["{canvas}", "--report", "/nonexistent-dir/r.json"], "folder"),
        ("report is a directory", ["{canvas}", "--report", "{tmp}"], "is a directory"),
        ("bad color map", ["{canvas}", "--color-map", "6"], "not COLOR=AGENT"),
        ("bad color", ["{canvas}", "--color-map", "9=memory-anchor"], "'9'"),
        ("empty color map", ["{canvas}", "--color-map", ","], "empty"),
        ("bad --color", ["{canvas}", "--color", "purple"], "'purple'"),
        ("missing agents dir", ["{canvas}", "--agents-dir", "{tmp}/none"], "does not exist"),
        ("unknown model", ["{canvas}", "--model", "no-such-model-xyz"], "no-such-model-xyz"),
        ("bad route", ["{canvas}", "--route", "dice"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(
    run_cli: Run,
    canvas_file: Path,
    tmp_path: Path,
    case: str,
    args: list[str],
    message: str,
) -> None:
    (tmp_path / "folder.canvas").mkdir()
    before: dict[Path, bytes] = {canvas_file: canvas_file.read_bytes()}
    for name, content in BAD_CANVASES.items():
        path = tmp_path / f"{name}.canvas"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        before[path] = path.read_bytes()
    arguments = [
        re.sub(r"\{bad:([\w-]+)\}", lambda m: str(tmp_path / f"{m.group(1)}.canvas"), arg)
        .replace("{canvas}", str(canvas_file))
        .replace("{tmp}", str(tmp_path))
        for arg in args
    ]

    code, out, err = run_cli(*arguments)

    assert code == 2, (case, err)
    assert out == ""
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert message in line, (case, err)
    for path, raw in before.items():
        assert path.read_bytes() == raw
    assert sorted(p.name for p in canvas_file.parent.iterdir()) == ["notes.canvas"]


def test_bad_input_in_quiet_mode_still_says_why(run_cli: Run, tmp_path: Path) -> None:
    code, out, err = run_cli(tmp_path / "missing.canvas", "-q")

    assert code == 2
    assert out == ""
    assert error_lines(err) == [f"error: {tmp_path / 'missing.canvas'}: no such file"]


def test_bad_input_through_the_console_script(
    run_script: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = run_script(tmp_path / "missing.canvas")

    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no such file" in done.stderr


# ----------------------------------------------------------------------------- interruptions


class GatedAgent:
    """A plugin answering for the default agent: the closure note waits until cancelled."""

    def __init__(self) -> None:
        self.first_done = asyncio.Event()
        self.release = asyncio.Event()

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        register(DEFAULT_AGENT, self.answer, override=True)

    async def answer(self, task: Any) -> dict[str, str]:
        if "closure" in task.node_data["prompt"]:
            await self.release.wait()
        return {"text": f"Gated answer for {task.task_id}"}

    @hookimpl
    def on_task_progress(self, error: str | None) -> None:
        if error is None:
            self.first_done.set()


async def test_an_interrupted_run_leaves_the_canvas_alone(canvas_file: Path) -> None:
    original = raw(canvas_file)
    gate = GatedAgent()
    handler = IntelligentParallelCommandHandler(plugins=[gate])

    run = asyncio.ensure_future(handler.run(canvas_file, {"auto": True}))
    await asyncio.wait_for(gate.first_done.wait(), 30)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    assert raw(canvas_file) == original
    assert not (canvas_file.parent / "notes.canvas.bak").exists()
    assert handler.side_file is not None
    assert handler.side_file.parent == canvas_file.parent
    saved = json.loads(handler.side_file.read_text(encoding="utf-8"))
    assert saved["reason"] == "interrupted"
    assert saved["canvas"] == str(canvas_file)
    (answer,) = saved["answers"]
    assert answer["node_id"] == "note-recursion"
    assert answer["agent"] == DEFAULT_AGENT
    assert answer["text"] == f"Gated answer for note-recursion:{DEFAULT_AGENT}"


def test_ctrl_c_in_process(
    run_cli: Run,
    canvas_file: Path,
    agent_program: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What asyncio.run does on Ctrl-C: cancel the run, then raise KeyboardInterrupt."""
    data = load(canvas_file)
    by_id(data["nodes"])["note-closure"]["text"] = "PLEASE WAIT: this one is slow."
    canvas_file.write_text(json.dumps(data, indent="\t"), encoding="utf-8")
    original = canvas_file.read_bytes()
    events: dict[str, asyncio.Event] = {}

    class SignallingDisplay(ProgressDisplay):
        @hookimpl
        def on_task_end(self, task: Any, outcome: Any) -> None:
            super().on_task_end(task, outcome)
            events["first"].set()

    real_run = asyncio.run

    def interrupting_run(coroutine: Any) -> Any:
        async def interrupted() -> None:
            events["first"] = asyncio.Event()
            task = asyncio.ensure_future(coroutine)
            await events["first"].wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        real_run(interrupted())
        raise KeyboardInterrupt

    monkeypatch.setattr(progress, "ProgressDisplay", SignallingDisplay)
    monkeypatch.setattr(cli.asyncio, "run", interrupting_run)

    code, _, err = run_cli(canvas_file, "--agent-command", agent_program.command)

    assert code == 130
    assert "Interrupted: the canvas was not changed" in err
    assert "finished answers saved to" in err
    assert canvas_file.read_bytes() == original
    (side,) = canvas_file.parent.glob("notes.canvas.answers-*.json")
    (answer,) = json.loads(side.read_text(encoding="utf-8"))["answers"]
    assert answer["node_id"] == "note-recursion"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to the test process")
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_process_through_the_signal_handler(
    run_cli: Run, canvas_file: Path, monkeypatch: pytest.MonkeyPatch, presses: int
) -> None:
    """The CLI's own SIGINT handler: once stops gently and writes, twice stops at once."""
    original = canvas_file.read_bytes()

    class InterruptingDisplay(ProgressDisplay):
        @hookimpl
        def register_executors(self, register: Callable[..., None]) -> None:
            register(DEFAULT_AGENT, self.answer, override=True)

        async def answer(self, task: Any) -> dict[str, str]:
            if "closure" in task.node_data["prompt"]:
                await asyncio.sleep(0.2)  # let the other answer finish first
                for _ in range(presses):
                    os.kill(os.getpid(), signal.SIGINT)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(30)
            return {"text": f"answer for {task.task_id}"}

    monkeypatch.setattr(progress, "ProgressDisplay", InterruptingDisplay)

    code, _, err = run_cli(canvas_file, "--grace", "0.2")

    assert code == 130
    assert "Stopping: no new calls" in err
    written = load(canvas_file)
    labels = [e.get("label") for e in written["edges"] if e["fromNode"] == "note-recursion"]
    if presses == 1:
        assert "run the same command again" in err
        assert DEFAULT_AGENT in labels  # the finished answer is written
    else:
        assert "Interrupted: the canvas was not changed" in err
        assert canvas_file.read_bytes() == original


def test_ctrl_c_before_any_answer(
    run_cli: Run, canvas_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = canvas_file.read_bytes()

    def interrupt(coroutine: Any) -> Any:
        coroutine.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.asyncio, "run", interrupt)

    code, _, err = run_cli(canvas_file)

    assert code == 130
    assert err.strip().startswith("Interrupted: the canvas was not changed.")
    assert "Run the same command again" in err
    assert canvas_file.read_bytes() == original


def _start_with_a_slow_note(
    canvas_file: Path, agent_program: Any, console_argv: list[str], *extra: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start the console script on a canvas whose closure note hangs; wait for one answer."""
    data = load(canvas_file)
    by_id(data["nodes"])["note-closure"]["text"] = "PLEASE WAIT: this one is slow."
    canvas_file.write_text(json.dumps(data, indent="\t"), encoding="utf-8")
    process = subprocess.Popen(
        [*console_argv, str(canvas_file), "--agent-command", agent_program.command, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # the plain progress lines: wait for the first answer
        seen.append(line)
        if " ok " in line:
            break
    return process, seen


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_one_ctrl_c_stops_gently_and_writes_what_finished(
    canvas_file: Path, agent_program: Any, console_argv: list[str]
) -> None:
    process, seen = _start_with_a_slow_note(
        canvas_file, agent_program, console_argv, "--grace", "0.3"
    )
    try:
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # pragma: no cover - only when the test already failed
            process.kill()
            process.wait()

    assert process.returncode == 130, "".join(seen) + rest
    assert "Stopping: no new calls" in rest
    assert "run the same command again" in rest
    written = load(canvas_file)
    labels = [e.get("label") for e in written["edges"] if e["fromNode"] == "note-recursion"]
    assert DEFAULT_AGENT in labels  # the finished answer is in the canvas
    closure = [e.get("label") for e in written["edges"] if e["fromNode"] == "note-closure"]
    assert DEFAULT_AGENT not in closure  # the one that never finished got no answer


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_two_ctrl_c_stop_at_once_and_leave_the_canvas_alone(
    canvas_file: Path, agent_program: Any, console_argv: list[str]
) -> None:
    process, seen = _start_with_a_slow_note(canvas_file, agent_program, console_argv)
    original = canvas_file.read_bytes()
    try:
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        for line in process.stderr:  # wait until the first press was heard
            seen.append(line)
            if "Stopping" in line:
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # pragma: no cover - only when the test already failed
            process.kill()
            process.wait()

    assert process.returncode == 130, "".join(seen) + rest
    assert "Interrupted: the canvas was not changed" in rest
    assert canvas_file.read_bytes() == original
    (side,) = canvas_file.parent.glob("notes.canvas.answers-*.json")
    (answer,) = json.loads(side.read_text(encoding="utf-8"))["answers"]
    assert answer["node_id"] == "note-recursion"
    assert answer["text"].startswith(f"ANSWER for {DEFAULT_AGENT}")


class RewritingAgent:
    """A plugin answering for the default agent that also edits the canvas meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        register(DEFAULT_AGENT, self.answer, override=True)

    async def answer(self, task: Any) -> dict[str, str]:
        data = json.loads(self.path.read_text(encoding="utf-8"))
        data["nodes"].append(_text(f"new-{task.task_id}", "Added meanwhile", 2000, 0, "2"))
        self.path.write_text(json.dumps(data, indent="\t"), encoding="utf-8")
        return {"text": f"answer for {task.task_id}"}


async def test_edits_made_during_the_run_are_merged_with_the_answers(canvas_file: Path) -> None:
    handler = IntelligentParallelCommandHandler(plugins=[RewritingAgent(canvas_file)])

    result = await handler.run(canvas_file, {"auto": True, "max": 1})

    assert result.success is True, result.message
    assert result.canvas == str(canvas_file)
    written = load(canvas_file)
    ids = {n["id"] for n in written["nodes"]}
    assert ids >= {f"new-{n}:{DEFAULT_AGENT}" for n in NOTE_IDS}  # the user's edits
    assert {row["blue_node_id"] for row in result.results} <= ids  # and every answer
    assert handler.side_file is None
    assert not list(canvas_file.parent.glob("notes.canvas.answers-*.json"))


def test_a_canvas_changed_during_a_cli_run(
    run_cli: Run,
    canvas_file: Path,
    agent_program: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = load(canvas_file)
    monkeypatch.setenv("TEST_AGENT_TOUCH", str(canvas_file))

    code, out, err = run_cli(canvas_file, "--agent-command", agent_program.command)

    assert code == 0, out + err
    check_canvas(canvas_file, original, {note: [DEFAULT_AGENT] for note in NOTE_IDS})
    assert not list(canvas_file.parent.glob("notes.canvas.answers-*.json"))
