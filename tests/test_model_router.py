"""``--route model``: reading the model's choice, and the handler acting on it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from command_handlers import hookimpl
from command_handlers.default_plugins import model_router
from command_handlers.default_plugins.model_router import (
    ROUTER_SYSTEM_PROMPT,
    ModelRouter,
    parse_choice,
    routing_prompt,
)
from command_handlers.intelligent_parallel_handler import IntelligentParallelCommandHandler
from command_handlers.plugins import (
    LOAD_PLUGINS_ENV,
    AsyncTask,
    collect_executors,
    get_plugin_manager,
)
from command_handlers.settings import Settings

AGENTS = ["clarification-path", "memory-anchor", "comparison-table"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path_factory.mktemp("llm")))
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")


@pytest.mark.parametrize(
    ("answer", "agent"),
    [
        ("memory-anchor", "memory-anchor"),
        ('"memory-anchor"', "memory-anchor"),
        ("'memory-anchor'", "memory-anchor"),
        ("`memory-anchor`", "memory-anchor"),
        ("**memory-anchor**", "memory-anchor"),
        ("memory-anchor.", "memory-anchor"),
        ("`memory-anchor`.", "memory-anchor"),
        ('"memory-anchor."', "memory-anchor"),
        ("Memory-Anchor", "memory-anchor"),
        ("  COMPARISON-TABLE  ", "comparison-table"),
        ("\n\n  memory-anchor\nbecause analogies help", "memory-anchor"),
        ("memory anchor", None),
        ("I would pick memory-anchor.", None),
        ("because analogies help\nmemory-anchor", None),
        ("oral-explanation", None),
        ("nope", None),
        ('{"prompt": "memory-anchor"}', None),
        ("", None),
        ("   \n  ", None),
        (None, None),
    ],
)
def test_parse_choice(answer: str | None, agent: str | None) -> None:
    assert parse_choice(answer, AGENTS) == agent


def test_parse_choice_returns_the_registered_spelling() -> None:
    assert parse_choice("my-agent", ["My-Agent"]) == "My-Agent"


def test_routing_prompt_lists_the_agents() -> None:
    prompt = routing_prompt(
        "# Topic\nLimits\n", {"memory-anchor": "Mnemonics.", "comparison-table": "Tables."}
    )

    assert prompt == (
        "Agents:\n- memory-anchor: Mnemonics.\n- comparison-table: Tables.\n\n"
        "Which agent should answer this note?\n\n# Topic\nLimits\n"
    )


async def test_the_routing_agent_asks_the_run_model() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(ModelRouter(pm), name="model-router-agent")
    registry = collect_executors(pm, Settings())
    # internal: never offered to a note, yet it is registered and answers
    assert ModelRouter.AGENT not in registry.names
    assert ModelRouter.AGENT not in registry.describe()
    assert registry.owner(ModelRouter.AGENT) == "model-router-agent"
    assert registry.fingerprint(ModelRouter.AGENT) == "echo"

    task = AsyncTask("route:n1", ModelRouter.AGENT, {"prompt": "Which agent?"})
    result = await registry.route(task)

    assert result["agent"] == ModelRouter.AGENT
    assert result["model"] == "echo"
    echoed = json.loads(result["text"])  # the echo model repeats the request
    assert echoed["prompt"] == "Which agent?"
    assert echoed["system"] == ROUTER_SYSTEM_PROMPT


def test_the_routing_agent_fingerprint_is_the_run_model() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(ModelRouter(pm), name="model-router-agent")
    registry = collect_executors(pm, Settings(model="gpt-4o-mini"))
    assert registry.fingerprint(ModelRouter.AGENT) == "gpt-4o-mini"


def test_choose_agent_reads_the_routed_answer() -> None:
    router = ModelRouter(get_plugin_manager(load_entry_points=False))

    assert router.choose_agent({"routed": "`comparison-table`"}, AGENTS) == "comparison-table"
    assert router.choose_agent({"routed": "no idea"}, AGENTS) is None
    assert router.choose_agent({}, AGENTS) is None


class FakeRouter:
    """Answers the routing questions: ``answers`` maps a word of the note to the reply."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.questions: list[str] = []

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        register(ModelRouter.AGENT, self.answer, override=True, internal=True)

    async def answer(self, task: Any) -> Any:
        prompt = task.node_data["prompt"]
        self.questions.append(prompt)
        for word, reply in self.answers.items():
            if word in prompt.rsplit("## Learner's understanding", 1)[-1]:
                if isinstance(reply, Exception):
                    raise reply
                return reply
        return {"text": "no idea"}


async def test_route_notes_collects_the_answers() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(ModelRouter(pm), name="model-router-agent")
    fake = FakeRouter(
        {
            "alpha": {"text": "memory-anchor"},
            "beta": RuntimeError("the model is down"),
            "gamma": "a bare string, not a dict",
        }
    )
    pm.register(fake)
    prompts = {
        note: f"# Topic\nT\n\n## Learner's understanding\n{note}\n"
        for note in ("alpha", "beta", "gamma", "delta:with-colon")
    }

    agents = collect_executors(pm, Settings()).describe()
    assert ModelRouter.AGENT not in agents

    pending = pm.hook.route_notes(prompts=prompts, agents=agents, settings=Settings())
    assert pending is not None
    answers = await pending

    assert answers == {"alpha": "memory-anchor", "delta:with-colon": "no idea"}
    assert len(fake.questions) == 4
    for question in fake.questions:
        assert question.startswith("Agents:\n- clarification-path: ")
        assert f"- {ModelRouter.AGENT}:" not in question


async def test_route_notes_of_no_prompts_asks_nothing() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(ModelRouter(pm), name="model-router-agent")
    fake = FakeRouter({})
    pm.register(fake)
    pending = pm.hook.route_notes(prompts={}, agents={"a": "A."}, settings=Settings())
    assert await pending == {}
    assert fake.questions == []


async def test_route_notes_runs_at_most_max_concurrency_questions_at_once() -> None:
    running = 0
    peak = 0

    class SlowRouter:
        @hookimpl
        def register_executors(self, register: Callable[..., None]) -> None:
            register(ModelRouter.AGENT, self.answer, override=True, internal=True)

        async def answer(self, task: Any) -> dict[str, str]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                await asyncio.sleep(0.01)  # the simulated model call
            finally:
                running -= 1
            return {"text": "memory-anchor"}

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(ModelRouter(pm), name="model-router-agent")
    pm.register(SlowRouter())
    prompts = {f"n{i}": f"note {i}" for i in range(8)}
    settings = Settings(max_concurrency=3)

    answers = await pm.hook.route_notes(prompts=prompts, agents={"a": "A."}, settings=settings)

    assert answers == dict.fromkeys(prompts, "memory-anchor")
    assert peak == 3


def test_without_the_router_no_plugin_routes_the_notes() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    assert pm.hook.route_notes(prompts={"n": "p"}, agents={}, settings=Settings()) is None


@pytest.mark.parametrize(("route", "registered"), [("map", False), ("model", True)])
def test_configure_registers_the_router_under_route_model(route: str, registered: bool) -> None:
    pm = get_plugin_manager(load_entry_points=False)
    assert pm.get_plugin("model-router") is model_router
    pm.hook.configure(settings=Settings(route=route), pm=pm)
    router = pm.get_plugin("model-router-agent")
    assert isinstance(router, ModelRouter) is registered
    if registered:
        assert router.pm is pm
        assert collect_executors(pm).owner(ModelRouter.AGENT) == "model-router-agent"


def _canvas(tmp_path: Path) -> Path:
    def note(node_id: str, text: str, y: int, color: str) -> dict[str, Any]:
        return {
            "id": node_id,
            "type": "text",
            "text": text,
            "x": 0,
            "y": y,
            "width": 300,
            "height": 100,
            "color": color,
        }

    path = tmp_path / "route.canvas"
    data = {
        "nodes": [
            note("n1", "I think alpha means the start.", 0, "6"),
            note("n2", "Beta is the second letter.", 200, "6"),
            note("n3", "Gamma rays are light.", 400, "1"),
        ]
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_handler_uses_the_model_choice(tmp_path: Path) -> None:
    fake = FakeRouter(
        {
            "alpha": {"text": "`Memory-Anchor`."},
            "beta": {"text": "I cannot decide."},
            "Gamma": {"text": "comparison-table"},
        }
    )
    path = _canvas(tmp_path)

    result = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        path, {"auto": True, "route": "model", "colors": "6,1"}
    )

    assert result["success"] is True
    chosen = {task["node_id"]: task["agent"] for task in result["results"]}
    # n2's answer names no agent: the colour map decides ("6" -> clarification-path).
    assert chosen == {"n1": "memory-anchor", "n2": "clarification-path", "n3": "comparison-table"}
    assert len(fake.questions) == 3
    assert all(f"- {ModelRouter.AGENT}:" not in question for question in fake.questions)
    edges = json.loads(path.read_text(encoding="utf-8"))["edges"]
    assert sorted(edge["label"] for edge in edges if "label" in edge) == sorted(chosen.values())


def test_an_explicit_agent_skips_the_routing(tmp_path: Path) -> None:
    fake = FakeRouter({"alpha": {"text": "memory-anchor"}})

    result = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        _canvas(tmp_path), {"auto": True, "route": "model", "agent": "comparison-table"}
    )

    assert result["success"] is True
    assert fake.questions == []
    assert {task["agent"] for task in result["results"]} == {"comparison-table"}


def test_the_routing_agent_is_never_a_note_agent(tmp_path: Path) -> None:
    result = IntelligentParallelCommandHandler().execute(
        _canvas(tmp_path), {"auto": True, "route": "model", "agent": ModelRouter.AGENT}
    )

    assert result["success"] is False
    assert f"unknown agent {ModelRouter.AGENT!r}" in result["message"]


def test_a_note_already_answered_keeps_its_agents(tmp_path: Path) -> None:
    path = _canvas(tmp_path)
    fake = FakeRouter({"alpha": {"text": "memory-anchor"}, "Beta": {"text": "comparison-table"}})
    first = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        path, {"auto": True, "route": "model"}
    )
    assert {t["node_id"]: t["agent"] for t in first["results"]} == {
        "n1": "memory-anchor",
        "n2": "comparison-table",
    }
    written = path.read_bytes()
    # The model would now choose otherwise: an answered note is not routed again.
    fake.answers = {"alpha": {"text": "oral-explanation"}}
    fake.questions.clear()

    again = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        path, {"auto": True, "route": "model", "colors": "6,1"}
    )

    assert again["success"] is True
    assert len(fake.questions) == 1  # only the new red note n3 is routed
    assert {t["node_id"] for t in again["results"]} == {"n3"}
    assert again["stats"]["skipped_answered"] == 2
    assert len(path.read_bytes()) > len(written)

    done = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        path, {"auto": True, "route": "model", "colors": "6,1"}
    )

    assert done["up_to_date"] is True
    assert len(fake.questions) == 1  # every note kept its agents: nothing to route

    forced = IntelligentParallelCommandHandler(plugins=[fake]).execute(
        path, {"auto": True, "route": "model", "force": True, "dry_run": True}
    )

    assert len(fake.questions) == 3  # --force routes every note again
    assert forced["plan"]["agents"]["oral-explanation"]["nodes"] == ["n1"]
