"""The Python interface of the ``/intelligent-parallel`` handler, as the origin's callers use it."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import pytest

from command_handlers import hookimpl
from command_handlers.fileio import read_canvas
from command_handlers.intelligent_parallel import handler as handler_module
from command_handlers.intelligent_parallel import hashes as hashes_module
from command_handlers.intelligent_parallel_handler import (
    CommandInputError,
    IntelligentParallelCommandHandler,
    parse_color_map,
)
from command_handlers.plugins import LOAD_PLUGINS_ENV

STATS_KEYS = {"total_nodes", "processed_nodes", "generated_docs", "created_blue_nodes", "errors"}
RESULT_KEYS = {
    "task_id",
    "node_id",
    "agent",
    "status",
    "duration_seconds",
    "attempts",
    "error",
    "answer",
    "model",
    "document",
    "blue_node_id",
}


def _node(node_id: str, text: str, y: int, color: str | None = None, **extra: Any) -> dict:
    node: dict[str, Any] = {
        "id": node_id,
        "type": "text",
        "text": text,
        "x": 0,
        "y": y,
        "width": 300,
        "height": 120,
    }
    if color is not None:
        node["color"] = color
    node.update(extra)
    return node


def canvas_data() -> dict[str, Any]:
    return {
        "nodes": [
            _node("q1", "# What is a derivative?", -300, "1"),
            _node("n1", "The slope of a curve at a point.", 0, "6"),
            _node("n2", "The integral undoes the derivative.", 300, "6"),
            _node("blank", "", 600, "6"),
            _node("ok", "Limits: understood.", 900, "2"),
            _node("empty-material", "", 1200),
            {"id": "widget", "type": "x-widget", "x": -400, "y": 300, "width": 50, "height": 50},
            {
                "id": "box",
                "type": "group",
                "label": "Calculus",
                "x": -500,
                "y": -400,
                "width": 50,
                "height": 50,
            },
        ],
        "edges": [
            {"id": "e1", "fromNode": "q1", "toNode": "n1", "label": "question"},
            {"id": "e2", "fromNode": "n1", "toNode": "n1"},  # a loop: not material
            {"id": "e3", "fromNode": "widget", "toNode": "n2"},  # no content: not material
            {"id": "e4", "fromNode": "empty-material", "toNode": "n2"},
            {"id": "e5", "fromNode": "box", "toNode": "n2"},
        ],
    }


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path_factory.mktemp("llm")))
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")


@pytest.fixture
def canvas(tmp_path: Path) -> Path:
    path = tmp_path / "study.canvas"
    path.write_text(json.dumps(canvas_data(), indent="\t"), encoding="utf-8")
    return path


class FakeAgents:
    """Answers for every bundled agent, counting calls; fails for notes it is told to."""

    AGENTS = ("clarification-path", "oral-explanation", "memory-anchor", "comparison-table")

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        for name in self.AGENTS:
            register(name, self._executor(name), override=True)

    def _executor(self, name: str) -> Callable[[Any], Any]:
        async def answer(task: Any) -> Any:
            note_id = task.node_data["note_id"]
            self.calls.append((note_id, name))
            if note_id in self.fail:
                raise RuntimeError(f"no answer for {note_id}")
            if name == "memory-anchor":
                return f"Plain answer of {name} for {note_id}"  # not a dict: still an answer
            return {"text": f"Answer of {name} for {note_id}\nsecond line", "model": "fake"}

        return answer


# ------------------------------------------------------------------- the origin's interface


def test_execute_runs_synchronously(canvas: Path) -> None:
    handler = IntelligentParallelCommandHandler()

    result = handler.execute(canvas, {"max": 4, "auto": True, "verbose": True})

    assert result["success"] is True
    assert len(handler.session_id) == 12
    assert result["session_id"] == handler.session_id
    assert set(result["stats"]) >= STATS_KEYS  # the origin's keys, and more
    tokens = {key: result["stats"].pop(key) for key in ("input_tokens", "output_tokens")}
    assert result["stats"].pop("usd") == 0.0  # the echo model is free
    assert result["stats"] == {
        "total_nodes": 2,
        "processed_nodes": 2,
        "generated_docs": 2,
        "created_blue_nodes": 2,
        "errors": 0,
        "reused_answers": 0,
        "cancelled": 0,
        "skipped_answered": 0,
    }
    # The echo model counts words: the totals are the sums of the tasks' usage
    # (llm-echo releases before usage, on Python 3.9, say nothing: no totals).
    for key, total in tokens.items():
        usages = [task["usage"] for task in result["results"]]
        if None in usages:
            assert total == 0
        else:
            assert total == sum(usage[key] for usage in usages) > 0
    assert len(result["results"]) == 2
    for task in result["results"]:
        assert set(task) >= RESULT_KEYS
        assert task["status"] == "success"
        assert task["agent"] == "clarification-path"
        assert task["model"] == "echo"
        assert (canvas.parent / task["document"]).is_file()
    assert result["backup"] == str(canvas) + ".bak"
    assert result["canvas"] == str(canvas)
    assert any("echoes" in notice for notice in result["notices"])
    written = read_canvas(canvas)
    assert len(written.nodes) == len(canvas_data()["nodes"]) + 4


async def test_execute_async_keeps_the_session_id(canvas: Path) -> None:
    handler = IntelligentParallelCommandHandler(session_id="session-42")

    result = await handler.execute_async(str(canvas), {"auto": True})

    assert result["success"] is True
    assert result["session_id"] == "session-42"
    assert result["report"]["session_id"] == "session-42"
    assert {task["node_id"] for task in result["results"]} == {"n1", "n2"}


def test_options_default_to_none(canvas: Path) -> None:
    fake = FakeAgents()

    result = IntelligentParallelCommandHandler(plugins=[fake]).execute(canvas)

    assert result["success"] is True
    assert sorted(fake.calls) == [("n1", "clarification-path"), ("n2", "clarification-path")]


def test_nothing_to_do(tmp_path: Path) -> None:
    path = tmp_path / "none.canvas"
    path.write_text(json.dumps({"nodes": [_node("a", "   ", 0, "6")]}), encoding="utf-8")
    original = path.read_bytes()

    result = IntelligentParallelCommandHandler().execute(path, {"auto": True})

    assert result["success"] is False
    assert result["message"] == "No yellow nodes found"
    assert path.read_bytes() == original


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max": 0}, "between 1 and 20, got 0"),
        ({"max": 21}, "between 1 and 20, got 21"),
        ({"max": "x"}, "whole number"),
        ({"max": True}, "whole number"),
        ({"max": 2.5}, "whole number"),
        ({"nodes": 5}, "nodes must be a list"),
        ({"nodes": ["nope"]}, "unknown node id 'nope'"),
        ({"nodes": "widget"}, "only text nodes"),
        ({"colors": ["9"]}, "'9'"),
        ({"speed": "fast"}, "unknown option(s): speed"),
        ({"agent": "memory-anchor", "agents": ["oral-explanation"]}, "either"),
        ({"agent": "nope"}, "unknown agent 'nope'"),
        ({"route": "dice"}, "route must be 'map' or 'model'"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": True}, "timeout must be a positive number"),
        ({"timeout": "10"}, "timeout must be a positive number"),
        ({"color_map": "6"}, "not COLOR=AGENT"),
        ({"color_map": "6="}, "not COLOR=AGENT"),
        ({"color_map": ""}, "the color map is empty"),
        ({"color_map": {"7": "memory-anchor"}}, "'7'"),
        ({"agents_dir": "/nonexistent/agents"}, "does not exist"),
        ({"model": "no-such-model-xyz"}, "unknown model 'no-such-model-xyz'"),
        ({"output": "/nonexistent-dir/out.canvas"}, "does not exist"),
        ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
        ({"retries": "many"}, "retries must be a whole number"),
        ({"retry_base": "soon"}, "retry_base must be a number >= 0"),
        ({"grace": True}, "grace must be a number >= 0"),
        ({"rate": "fast"}, "fast"),
        ({"agent_rates": "memory-anchor=often"}, "often"),
    ],
)
def test_bad_options_give_a_message(canvas: Path, options: dict[str, Any], message: str) -> None:
    fake = FakeAgents()
    original = canvas.read_bytes()

    result = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        canvas, {"auto": True, **options}
    )

    assert result["success"] is False
    assert message in result["message"]
    assert result["error"] == result["message"]
    assert fake.calls == []
    assert canvas.read_bytes() == original


def test_running_options_as_strings(canvas: Path) -> None:
    result = IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(
        canvas,
        {
            "auto": True,
            "retries": "3",
            "retry_base": "0.5",
            "agent_rates": "memory-anchor=5/s, oral-explanation=60/min",
            "rate": "100/s",
        },
    )

    assert result["success"] is True


def test_bad_canvas_gives_a_message(tmp_path: Path) -> None:
    path = tmp_path / "broken.canvas"
    path.write_text("{", encoding="utf-8")

    result = IntelligentParallelCommandHandler().execute(path, {"auto": True})

    assert result["success"] is False
    assert "broken.canvas" in result["message"]


async def test_run_raises_on_bad_input(canvas: Path) -> None:
    with pytest.raises(CommandInputError, match="unknown option"):
        await IntelligentParallelCommandHandler().run(canvas, {"bogus": 1})


def test_a_plugin_agent_clashing_with_a_bundled_one_is_bad_input(canvas: Path) -> None:
    class Clash:
        @hookimpl
        def register_executors(self, register: Callable[..., None]) -> None:
            register("memory-anchor", FakeAgents()._executor("memory-anchor"))

    result = IntelligentParallelCommandHandler(plugins=[Clash()]).execute(canvas, {"auto": True})

    assert result["success"] is False
    assert "registered by both plugin" in result["message"]


def test_a_plugin_can_add_an_agent(canvas: Path) -> None:
    class Extra:
        @hookimpl
        def register_executors(self, register: Callable[..., None]) -> None:
            register("socratic", FakeAgents()._executor("socratic"), description="Asks back.")

    result = IntelligentParallelCommandHandler(plugins=[Extra()]).execute(
        canvas, {"auto": True, "agent": "socratic"}
    )

    assert result["success"] is True
    assert {task["agent"] for task in result["results"]} == {"socratic"}


# ------------------------------------------------------------------- confirmation, dry run


def test_confirm_false_cancels_before_any_call(canvas: Path) -> None:
    fake = FakeAgents()
    plans: list[Mapping[str, Any]] = []
    original = canvas.read_bytes()

    def confirm(plan: Mapping[str, Any]) -> bool:
        plans.append(plan)
        return False

    result = IntelligentParallelCommandHandler(plugins=[fake], confirm=confirm).execute(canvas)

    assert result["success"] is False
    assert result["message"].startswith("Cancelled")
    assert fake.calls == []
    assert canvas.read_bytes() == original
    (plan,) = plans
    assert plan["notes"] == 2
    assert plan["calls"] == 2
    assert plan["agents"]["clarification-path"]["nodes"] == ["n1", "n2"]
    assert plan["estimate_seconds"] == 10
    assert result["plan"] == plan
    assert result["stats"]["processed_nodes"] == 0


def test_confirm_true_runs(canvas: Path) -> None:
    fake = FakeAgents()

    result = IntelligentParallelCommandHandler(plugins=[fake], confirm=lambda plan: True).execute(
        canvas, {}
    )

    assert result["success"] is True
    assert len(fake.calls) == 2


def test_auto_skips_the_confirmation(canvas: Path) -> None:
    def confirm(plan: Mapping[str, Any]) -> bool:
        raise AssertionError("must not be asked")

    result = IntelligentParallelCommandHandler(plugins=[FakeAgents()], confirm=confirm).execute(
        canvas, {"auto": True}
    )

    assert result["success"] is True


def test_dry_run_plans_only(canvas: Path) -> None:
    fake = FakeAgents()
    original = canvas.read_bytes()

    result = IntelligentParallelCommandHandler(plugins=[fake], confirm=lambda plan: True).execute(
        canvas, {"dry_run": True, "agents": "memory-anchor, comparison-table", "max": "3"}
    )

    assert result["success"] is True
    assert result["dry_run"] is True
    assert fake.calls == []
    assert result["results"] == []
    assert set(result["stats"]) >= STATS_KEYS  # the origin's keys, and more
    assert result["plan"]["calls"] == 4
    assert result["plan"]["max_concurrency"] == 3
    assert result["plan"]["estimate_seconds"] == 20
    assert set(result["plan"]["agents"]) == {"memory-anchor", "comparison-table"}
    assert canvas.read_bytes() == original
    assert sorted(p.name for p in canvas.parent.iterdir()) == ["study.canvas"]


# ----------------------------------------------------------------------------- which notes


@pytest.mark.parametrize("nodes", [["n2", "q1", "n2"], "n2, q1", ("n2", "q1")])
def test_nodes_limit_the_selection(canvas: Path, nodes: Any) -> None:
    fake = FakeAgents()

    result = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        canvas, {"auto": True, "nodes": nodes}
    )

    assert result["success"] is True
    # Whatever their colour; the red question goes to the colour map's agent for "1".
    assert sorted(fake.calls) == [("n2", "clarification-path"), ("q1", "oral-explanation")]
    assert result["stats"]["total_nodes"] == 2


def test_colors_select_other_notes(canvas: Path) -> None:
    fake = FakeAgents()

    result = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        canvas, {"auto": True, "colors": "1,2"}
    )

    assert result["success"] is True
    assert sorted(fake.calls) == [("ok", "clarification-path"), ("q1", "oral-explanation")]


def test_answers_are_never_sent_again(canvas: Path) -> None:
    first = IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(
        canvas, {"auto": True, "colors": ["6", "5"]}
    )
    card = first["results"][0]["blue_node_id"]
    written = canvas.read_bytes()
    prompts: list[str] = []

    class Spy(FakeAgents):
        @hookimpl
        def on_task_start(self, task: Any) -> None:
            prompts.append(task.node_data["prompt"])

    fake = Spy()
    again = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        canvas, {"auto": True, "colors": ["6", "5"]}
    )
    assert again["success"] is True
    assert again["stats"]["skipped_answered"] == 2
    assert fake.calls == []
    assert canvas.read_bytes() == written

    forced = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        canvas, {"auto": True, "colors": ["6", "5"], "force": True}
    )
    explicit = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        canvas, {"auto": True, "nodes": [card], "force": True}
    )

    assert forced["success"] is True
    assert sorted(fake.calls) == [("n1", "clarification-path"), ("n2", "clarification-path")]
    assert {task["decision"] for task in forced["results"]} == {"forced"}
    assert len(prompts) == 2
    assert not any("Answer of" in prompt for prompt in prompts)
    assert explicit["success"] is False
    assert "an answer this tool wrote" in explicit["message"]


def test_the_prompt_holds_the_material(canvas: Path) -> None:
    prompts: dict[str, str] = {}

    class Spy(FakeAgents):
        @hookimpl
        def on_task_start(self, task: Any) -> None:
            prompts[task.node_data["note_id"]] = task.node_data["prompt"]

    IntelligentParallelCommandHandler(plugins=[Spy()]).execute(canvas, {"auto": True})

    assert prompts["n1"].startswith("# Topic\nWhat is a derivative?\n\n## Material\n")
    assert "### question (text node)\n# What is a derivative?" in prompts["n1"]
    assert "## Learner's understanding\nThe slope of a curve at a point.\n" in prompts["n1"]
    assert "### Linked from (group node)\nGroup: Calculus" in prompts["n2"]
    assert "x-widget" not in prompts["n2"]
    assert prompts["n2"].count("###") == 1


# ----------------------------------------------------------------------------- outcomes


def test_a_failure_keeps_the_other_answers(canvas: Path) -> None:
    result = IntelligentParallelCommandHandler(plugins=[FakeAgents(fail=("n1",))]).execute(
        canvas, {"auto": True}
    )

    assert result["success"] is False
    assert result["stats"]["errors"] == 1
    assert result["stats"]["processed_nodes"] == 1
    status = {task["node_id"]: task for task in result["results"]}
    assert status["n1"]["status"] == "failed"
    assert status["n1"]["error"] == "no answer for n1"
    assert status["n1"]["document"] is None
    assert status["n2"]["status"] == "success"
    assert result["canvas"] == str(canvas)


def test_when_every_task_fails_nothing_is_written(canvas: Path) -> None:
    original = canvas.read_bytes()

    result = IntelligentParallelCommandHandler(plugins=[FakeAgents(fail=("n1", "n2"))]).execute(
        canvas, {"auto": True}
    )

    assert result["success"] is False
    assert result["canvas"] is None
    assert result["backup"] is None
    assert canvas.read_bytes() == original
    # Only the journal, which remembers the failures, sits beside the canvas.
    assert sorted(p.name for p in canvas.parent.iterdir()) == [
        ".study.canvas.journal.sqlite",
        "study.canvas",
    ]


def test_follow_edges_builds_on_earlier_answers(tmp_path: Path) -> None:
    path = tmp_path / "chain.canvas"
    data = {
        "nodes": [_node("a", "First idea.", 0, "6"), _node("b", "Second idea.", 300, "6")],
        "edges": [
            {"id": "e1", "fromNode": "a", "toNode": "b"},
            {"id": "e2", "fromNode": "a", "toNode": "b", "label": "again"},
            {"id": "e3", "fromNode": "b", "toNode": "b"},
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    prompts: dict[str, str] = {}

    class Spy(FakeAgents):
        @hookimpl(trylast=True)
        def prepare_task(self, task: Any) -> None:
            prompts[task.node_data["note_id"]] = task.node_data["prompt"]

    result = IntelligentParallelCommandHandler(plugins=[Spy()]).execute(
        path, {"auto": True, "follow_edges": True, "agents": ["memory-anchor", "oral-explanation"]}
    )

    assert result["success"] is True
    assert result["plan"]["agents"]["memory-anchor"]["with_prerequisites"] == 1
    assert "## Prerequisite answers" not in prompts["a"]
    prerequisites = prompts["b"].split("## Prerequisite answers\n", 1)[1]
    assert "### memory-anchor on: " in prerequisites
    assert "\nPlain answer of memory-anchor for a\n" in prerequisites
    assert "### oral-explanation on: " in prerequisites
    assert "\nAnswer of oral-explanation for a\nsecond line" in prerequisites


def test_writing_options(canvas: Path, tmp_path: Path) -> None:
    docs = tmp_path / "all docs"
    target = tmp_path / "out" / "written.canvas"
    target.parent.mkdir()
    agents = tmp_path / "agents"
    agents.mkdir()
    original = canvas.read_bytes()

    result = IntelligentParallelCommandHandler().execute(
        canvas,
        {
            "auto": True,
            "docs_dir": docs,
            "output": target,
            "backup": False,
            "agents_dir": str(agents),
            "color_map": {"6": "memory-anchor"},
            "no_plugins": True,
            "timeout": 30,
            "model": "echo",
        },
    )

    assert result["success"] is True, result
    assert canvas.read_bytes() == original
    assert result["canvas"] == str(target)
    assert result["backup"] is None
    for task in result["results"]:
        assert task["agent"] == "memory-anchor"
        assert task["document"].startswith("../all docs/")
        assert (target.parent / task["document"]).resolve().parent == docs.resolve()


def test_inline_writes_no_document(canvas: Path) -> None:
    result = IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(
        canvas, {"auto": True, "inline": True}
    )

    assert result["stats"]["generated_docs"] == 0
    assert result["stats"]["created_blue_nodes"] == 2
    nodes = {node["id"]: node for node in read_canvas(canvas).nodes}
    for task in result["results"]:
        assert "second line" in nodes[task["blue_node_id"]]["text"]


def test_agent_command_as_a_list(canvas: Path, tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(
        "import os, sys\n"
        "sys.stdin.read()\n"
        "print('Hi from', os.environ['COMMAND_HANDLERS_AGENT'])\n",
        encoding="utf-8",
    )

    result = IntelligentParallelCommandHandler().execute(
        canvas,
        {"auto": True, "agent_command": [sys.executable, str(script)]},
    )

    assert result["success"] is True
    assert {task["answer"] for task in result["results"]} == {"Hi from clarification-path"}
    assert result["notices"] == []  # a program answered, not the echo model


def test_permission_denied_is_bad_input(canvas: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler_module.os, "access", lambda path, mode: False)

    result = IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(
        canvas, {"auto": True}
    )

    assert result["success"] is False
    assert "permission denied" in result["message"]


def test_listeners_hear_the_run(canvas: Path) -> None:
    heard: list[str] = []

    class Listener:
        @hookimpl
        def on_run_start(self, run: Any) -> None:
            heard.append(f"start {run.task_count}")

        @hookimpl
        def on_run_end(self) -> None:
            heard.append("end")

    IntelligentParallelCommandHandler(plugins=[FakeAgents(), Listener()]).execute(
        canvas, {"auto": True}
    )

    assert heard == ["start 2", "end"]


# ----------------------------------------------------------------------------- parse_color_map


def test_parse_color_map() -> None:
    assert parse_color_map(" 6=memory-anchor, 1 = oral-explanation ,#FF00AA=x,") == {
        "6": "memory-anchor",
        "1": "oral-explanation",
        "#ff00aa": "x",
    }


@pytest.mark.parametrize("text", ["", ",", "6", "=x", "6=", "7=x", "#12345=x"])
def test_parse_color_map_rejects(text: str) -> None:
    with pytest.raises(CommandInputError):
        parse_color_map(text)


# ----------------------------------------------------------------------------- incremental runs


def _edit(path: Path, node_id: str, text: str) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for node in data["nodes"]:
        if node["id"] == node_id:
            node["text"] = text
    path.write_text(json.dumps(data, indent="\t"), encoding="utf-8")


def _cards(path: Path, note_id: str, agent: str = "clarification-path") -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    nodes = {node["id"]: node for node in data["nodes"]}
    return [
        nodes[edge["toNode"]]
        for edge in data["edges"]
        if edge["fromNode"] == note_id and edge.get("label") == agent
    ]


@pytest.mark.parametrize("value", [True, 1, "yes"])
def test_force_and_replace_are_options(canvas: Path, value: Any) -> None:
    result = IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(
        canvas, {"auto": True, "force": value, "replace": value}
    )

    assert result["success"] is True
    assert {task["decision"] for task in result["results"]} == {"new"}


def test_a_canvas_already_answered_is_left_alone(canvas: Path) -> None:
    IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(canvas, {"auto": True})
    written = canvas.read_bytes()
    fake = FakeAgents()

    def confirm(plan: Mapping[str, Any]) -> bool:
        raise AssertionError("nothing to confirm")

    result = IntelligentParallelCommandHandler(plugins=[fake], confirm=confirm).execute(canvas)

    assert result["success"] is True
    assert result["up_to_date"] is True
    assert fake.calls == []
    assert canvas.read_bytes() == written
    assert result["results"] == []
    assert result["canvas"] is None
    assert "already answered" in result["message"]
    assert result["stats"] == {
        "total_nodes": 2,
        "processed_nodes": 0,
        "generated_docs": 0,
        "created_blue_nodes": 0,
        "errors": 0,
        "reused_answers": 0,
        "cancelled": 0,
        "skipped_answered": 2,
        "input_tokens": 0,
        "output_tokens": 0,
        "usd": 0.0,  # nothing was called
    }
    assert result["plan"]["calls"] == 0
    assert result["plan"]["answered"] == 2
    assert result["report"]["stats"] == result["stats"]
    assert {(s["node_id"], s["reason"]) for s in result["report"]["skipped"]} == {
        ("n1", "already answered"),
        ("n2", "already answered"),
    }


def test_the_plan_counts_new_changed_and_answered(canvas: Path) -> None:
    IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(canvas, {"auto": True})
    _edit(canvas, "n2", "The integral adds up slices.")
    plans: list[Mapping[str, Any]] = []

    def confirm(plan: Mapping[str, Any]) -> bool:
        plans.append(plan)
        return False

    IntelligentParallelCommandHandler(plugins=[FakeAgents()], confirm=confirm).execute(
        canvas, {"agents": "clarification-path,memory-anchor"}
    )

    (plan,) = plans
    assert (plan["calls"], plan["new"], plan["changed"], plan["answered"]) == (3, 2, 1, 1)
    assert (plan["notes"], plan["selected"], plan["skipped_answered"]) == (2, 2, 0)
    entry = plan["agents"]["clarification-path"]
    assert (entry["nodes"], entry["calls"], entry["changed"], entry["answered"]) == (
        ["n2"],
        1,
        1,
        1,
    )
    assert plan["agents"]["memory-anchor"]["nodes"] == ["n1", "n2"]


def test_a_partly_answered_note_is_not_skipped(canvas: Path) -> None:
    IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(canvas, {"auto": True})
    fake = FakeAgents()

    result = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        canvas, {"auto": True, "agents": ["clarification-path", "oral-explanation"]}
    )

    assert sorted(fake.calls) == [("n1", "oral-explanation"), ("n2", "oral-explanation")]
    assert result["stats"]["skipped_answered"] == 0
    assert result["stats"]["processed_nodes"] == 2
    assert len(result["skipped"]) == 2  # the pairs, with their agent
    assert {s["agent"] for s in result["skipped"]} == {"clarification-path"}


def test_replace_keeps_the_old_answer_when_the_new_call_fails(canvas: Path) -> None:
    IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(canvas, {"auto": True})
    (old_n1,) = _cards(canvas, "n1")
    (old_n2,) = _cards(canvas, "n2")
    _edit(canvas, "n1", "The slope, edited.")
    _edit(canvas, "n2", "The integral, edited.")

    result = IntelligentParallelCommandHandler(plugins=[FakeAgents(fail=("n1",))]).execute(
        canvas, {"auto": True, "replace": True, "inline": True}
    )

    assert result["success"] is False
    assert _cards(canvas, "n1") == [old_n1]  # the failed call took nothing away
    (new_n2,) = _cards(canvas, "n2")
    assert new_n2["id"] != old_n2["id"]
    assert [new_n2[k] for k in ("x", "y", "width", "height")] == [
        old_n2[k] for k in ("x", "y", "width", "height")
    ]
    assert "Answer of clarification-path for n2" in new_n2["text"]
    ids = {node["id"] for node in read_canvas(canvas).nodes}
    old_file = next(r for r in result["results"] if r["node_id"] == "n2")["replaced_node_id"]
    assert old_file == old_n2["id"]
    assert old_n2["id"] not in ids


def test_the_journal_gives_a_building_note_the_whole_earlier_answer(tmp_path: Path) -> None:
    path = tmp_path / "chain.canvas"
    data = {
        "nodes": [_node("a", "First idea.", 0, "6"), _node("b", "Second idea.", 300, "6")],
        "edges": [{"id": "e1", "fromNode": "a", "toNode": "b"}],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    long_answer = "\n".join(f"line {n} of the answer" for n in range(1, 9))

    class Long(FakeAgents):
        def _executor(self, name: str) -> Callable[[Any], Any]:
            async def answer(task: Any) -> Any:
                self.calls.append((task.node_data["note_id"], name))
                return {"text": long_answer}

            return answer

    IntelligentParallelCommandHandler(plugins=[Long()]).execute(path, {"auto": True, "nodes": "a"})
    prompts: dict[str, str] = {}

    class Spy(FakeAgents):
        @hookimpl(trylast=True)
        def prepare_task(self, task: Any) -> None:
            prompts[task.node_data["note_id"]] = task.node_data["prompt"]

    spy = Spy()
    result = IntelligentParallelCommandHandler(plugins=[spy]).execute(
        path, {"auto": True, "follow_edges": True}
    )

    assert result["success"] is True
    assert spy.calls == [("b", "clarification-path")]
    assert result["plan"]["agents"]["clarification-path"]["with_prerequisites"] == 1
    prerequisites = prompts["b"].split("## Prerequisite answers\n", 1)[1]
    assert long_answer in prerequisites  # the journal's copy: all eight lines


def test_without_a_journal_a_building_note_reads_the_card(tmp_path: Path) -> None:
    path = tmp_path / "chain.canvas"
    data = {
        "nodes": [_node("a", "First idea.", 0, "6"), _node("b", "Second idea.", 300, "6")],
        "edges": [{"id": "e1", "fromNode": "a", "toNode": "b"}],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    options = {"auto": True, "no_journal": True, "agent": "oral-explanation"}
    IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(
        path, {**options, "nodes": ["a"]}
    )
    prompts: dict[str, str] = {}

    class Spy(FakeAgents):
        @hookimpl(trylast=True)
        def prepare_task(self, task: Any) -> None:
            prompts[task.node_data["note_id"]] = task.node_data["prompt"]

    spy = Spy()
    IntelligentParallelCommandHandler(plugins=[spy]).execute(
        path, {**options, "follow_edges": True}
    )

    assert spy.calls == [("b", "oral-explanation")]
    assert not (tmp_path / ".chain.canvas.journal.sqlite").exists()
    prerequisites = prompts["b"].split("## Prerequisite answers\n", 1)[1]
    assert prerequisites.startswith("### oral-explanation on: ")
    assert "Answer of oral-explanation for a\nsecond line" in prerequisites
    assert "**oral-explanation**" not in prerequisites  # the card's header is dropped


def test_a_broken_journal_is_bad_input(canvas: Path) -> None:
    (canvas.parent / ".study.canvas.journal.sqlite").write_bytes(b"not a database, " * 100)
    fake = FakeAgents()

    result = IntelligentParallelCommandHandler(plugins=[fake]).execute(canvas, {"auto": True})

    assert result["success"] is False
    assert "journal" in result["message"]
    assert fake.calls == []


def test_a_dry_run_creates_no_journal(canvas: Path) -> None:
    result = IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(
        canvas, {"dry_run": True, "journal": canvas.parent / "elsewhere.sqlite"}
    )

    assert result["plan"]["new"] == 2
    assert sorted(p.name for p in canvas.parent.iterdir()) == ["study.canvas"]


# ----------------------------------------------------------------------------- odd corners


def test_request_stop_without_a_run() -> None:
    handler = IntelligentParallelCommandHandler()
    assert handler.request_stop() is False
    handler.hold_calls()  # nothing to hold: no error
    assert handler.writing is False


@pytest.mark.parametrize("how", ["request_stop", "hold_calls"])
def test_a_stop_while_planning_starts_no_call(canvas: Path, how: str) -> None:
    handler = IntelligentParallelCommandHandler()
    fake = FakeAgents()
    asked: list[bool] = []

    class StopWhilePlanning:
        @hookimpl
        def configure(self) -> None:
            getattr(handler, how)()  # as a signal handler would, while the run plans
            asked.append(handler.request_stop())  # a second request: already stopping

    handler.plugins = [fake, StopWhilePlanning()]
    original = canvas.read_bytes()

    result = asyncio.run(handler.run(canvas, {"auto": True, "no_journal": True}))

    assert fake.calls == []
    assert result.interrupted is True
    assert result.message.startswith("stopped: 2 notes were not answered")
    assert {row["status"] for row in result.results} == {"cancelled"}
    assert canvas.read_bytes() == original
    assert asked == [how == "hold_calls"]  # the loop's half still wakes the run once
    assert handler.request_stop() is False  # the run is over


def test_max_answer_mb_is_checked_and_reaches_the_settings(canvas: Path) -> None:
    handler = IntelligentParallelCommandHandler(plugins=[FakeAgents()])
    result = handler.execute(canvas, {"auto": True, "max_answer_mb": 0})
    assert result["success"] is False
    assert "max_answer_mb must be more than 0" in result["message"]
    opts = handler_module.Options.parse({"max_answer_mb": 0.5})
    assert opts.settings().max_answer_bytes == 512 * 1024


def test_a_retry_without_a_journal_is_counted(canvas: Path) -> None:
    class Flaky(FakeAgents):
        def _executor(self, name: str) -> Callable[[Any], Any]:
            async def answer(task: Any) -> Any:
                self.calls.append((task.node_data["note_id"], name))
                if len(self.calls) == 1:
                    raise ConnectionError("dropped")
                return {"text": "fine"}

            return answer

    result = IntelligentParallelCommandHandler(plugins=[Flaky()]).execute(
        canvas, {"auto": True, "no_journal": True, "retry_base": 0, "max": 1}
    )

    assert result["success"] is True
    assert sorted(task["attempts"] for task in result["results"]) == [1, 2]


@pytest.mark.parametrize("journal", [True, False])
def test_an_unexpected_error_closes_the_journal(
    canvas: Path, monkeypatch: pytest.MonkeyPatch, journal: bool
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the engine broke")

    monkeypatch.setattr(handler_module, "run_tasks", broken)
    original = canvas.read_bytes()

    with pytest.raises(RuntimeError, match="the engine broke"):
        IntelligentParallelCommandHandler().execute(canvas, {"auto": True, "use_journal": journal})

    assert canvas.read_bytes() == original
    # The journal's file is made by the run's first outcome: none came.
    assert not (canvas.parent / ".study.canvas.journal.sqlite").exists()


def test_input_hashes_without_agent_definitions(
    canvas: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_definitions(*args: Any) -> Any:
        raise ValueError("unreadable agents")

    monkeypatch.setattr(hashes_module, "load_agents", no_definitions)

    result = IntelligentParallelCommandHandler(plugins=[FakeAgents()]).execute(
        canvas, {"auto": True}
    )

    assert result["success"] is True


async def test_an_interrupted_run_without_a_journal(canvas: Path) -> None:
    started = asyncio.Event()

    class Hanging(FakeAgents):
        def _executor(self, name: str) -> Callable[[Any], Any]:
            async def answer(task: Any) -> Any:
                started.set()
                await asyncio.sleep(30)

            return answer

    handler = IntelligentParallelCommandHandler(plugins=[Hanging()])
    run = asyncio.ensure_future(handler.run(canvas, {"auto": True, "no_journal": True}))
    await asyncio.wait_for(started.wait(), 10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    assert handler.side_file is not None
    assert json.loads(handler.side_file.read_text(encoding="utf-8"))["answers"] == []
    assert not (canvas.parent / ".study.canvas.journal.sqlite").exists()
