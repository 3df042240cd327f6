"""Tests for command_handlers.default_plugins.llm_agents, with the offline echo model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from command_handlers import agent_definitions
from command_handlers import settings as settings_module
from command_handlers.agent_definitions import load_agents
from command_handlers.default_plugins import llm_agents
from command_handlers.default_plugins.llm_agents import (
    CHOSEN_ECHO_NOTICE,
    ECHO_MODEL,
    ECHO_NOTICE,
    LlmAgentExecutor,
    check_model,
    check_settings,
    register_executors,
    run_model_id,
    task_prompt,
    uses_echo,
)
from command_handlers.plugins import (
    AsyncTask,
    collect_executors,
    get_plugin_manager,
    run_tasks,
    text_tokens,
)
from command_handlers.settings import Settings

BUNDLED = sorted(load_agents())

AGENT_FILE = """\
---
name: {name}
description: {name} explains.
model: {model}
---
You are {name}, a tutor.
"""


@pytest.fixture(autouse=True)
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep llm away from the user's configuration and keys."""
    home = tmp_path / "llm-home"
    home.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    return home


def collect(settings: Settings) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Call the hook directly and return agent name -> (executor, register kwargs)."""
    found: dict[str, tuple[Any, dict[str, Any]]] = {}

    def register(name: str, executor: Any, max_concurrency: Any = None, **kwargs: Any) -> None:
        assert name not in found
        assert max_concurrency is None
        found[name] = (executor, kwargs)

    register_executors(register=register, settings=settings)
    return found


def agents_dir(tmp_path: Path, **models: str) -> Path:
    """Write one agent file per ``name=model`` into a fresh folder."""
    folder = tmp_path / "agents"
    folder.mkdir()
    for name, model in models.items():
        (folder / f"{name}.md").write_text(AGENT_FILE.format(name=name, model=model), "utf-8")
    return folder


def task(prompt: Any = "What is a monad?", agent: str = "tutor", task_id: str = "t1") -> AsyncTask:
    """A task whose node_data holds ``prompt`` (left out when ``prompt`` is ``...``)."""
    data = {} if prompt is ... else {"prompt": prompt}
    return AsyncTask(task_id=task_id, agent_name=agent, node_data=data)


def echoed(result: dict[str, str]) -> dict[str, Any]:
    """The request the echo model answered with."""
    answer: dict[str, Any] = json.loads(result["text"])
    return answer


def test_registers_every_bundled_agent_with_its_description() -> None:
    found = collect(Settings())
    definitions = load_agents()
    assert sorted(found) == BUNDLED
    for name, (executor, kwargs) in found.items():
        assert isinstance(executor, LlmAgentExecutor)
        assert kwargs == {
            "description": definitions[name].description,
            "fingerprint": definitions[name].model or ECHO_MODEL,
            # The system prompt's estimated tokens, for the plan's estimate of each call.
            "prompt_tokens": text_tokens(definitions[name].system_prompt),
            "output_tokens": None,  # no bundled agent declares its own
        }
        assert executor.agent == definitions[name]


def test_registers_nothing_when_an_agent_command_is_set() -> None:
    assert collect(Settings(agent_command=("cat",))) == {}


def test_agents_dirs_add_agents(tmp_path: Path) -> None:
    folder = agents_dir(tmp_path, tutor="inherit")
    found = collect(Settings(agents_dirs=(folder,)))
    assert sorted(found) == sorted([*BUNDLED, "tutor"])
    assert found["tutor"][1] == {
        "description": "tutor explains.",
        "fingerprint": ECHO_MODEL,
        "prompt_tokens": text_tokens(load_agents([folder])["tutor"].system_prompt),
        "output_tokens": None,
    }


def test_the_fingerprint_is_the_agents_model_or_the_run_model(tmp_path: Path) -> None:
    folder = agents_dir(tmp_path, tutor="inherit", coach="sonnet")
    found = collect(Settings(model="gpt-4o-mini", agents_dirs=(folder,)))
    assert found["tutor"][1]["fingerprint"] == "gpt-4o-mini"
    assert found["coach"][1]["fingerprint"] == "sonnet"
    registry = collect_executors(
        get_plugin_manager(load_entry_points=False),
        Settings(model="gpt-4o-mini", agents_dirs=(folder,)),
    )
    assert registry.fingerprint("tutor") == "gpt-4o-mini"
    assert registry.fingerprint("coach") == "sonnet"


async def test_echo_answer_holds_the_prompt_and_the_system_prompt() -> None:
    executor, _ = collect(Settings())["oral-explanation"]
    prompt = "Explain recursion.\n\n$(touch pwned) `id`; rm -rf x"
    result = await executor(task(prompt, agent="oral-explanation"))
    assert set(result) == {"text", "agent", "model", "usage"}
    # llm-echo releases before usage (on Python 3.9) report none.
    assert result["usage"] is None or set(result["usage"]) == {"input_tokens", "output_tokens"}
    assert result["agent"] == "oral-explanation"
    assert result["model"] == ECHO_MODEL
    request = echoed(result)
    assert request["prompt"] == prompt
    assert request["system"] == load_agents()["oral-explanation"].system_prompt
    assert prompt in result["text"] or json.dumps(prompt) in result["text"]


async def test_explicit_echo_run_model_and_inherit(tmp_path: Path) -> None:
    folder = agents_dir(tmp_path, tutor="inherit")
    executor, _ = collect(Settings(model="echo", agents_dirs=(folder,)))["tutor"]
    assert executor.agent.model is None
    result = await executor(task())
    assert result["model"] == "echo"
    assert echoed(result)["prompt"] == "What is a monad?"
    assert echoed(result)["system"] == "You are tutor, a tutor."


async def test_unknown_agent_model_falls_back_with_one_warning_per_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = agents_dir(tmp_path, tutor="opus", coach="sonnet")
    found = collect(Settings(agents_dirs=(folder,)))
    caplog.set_level(logging.WARNING, logger="command_handlers.agents")
    for _ in range(3):
        for name in ("tutor", "coach"):
            result = await found[name][0](task(f"question for {name}", agent=name))
            assert result["model"] == ECHO_MODEL
            assert echoed(result)["prompt"] == f"question for {name}"
    warnings = [r for r in caplog.records if r.name == "command_handlers.agents"]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    messages = sorted(r.getMessage() for r in warnings)
    assert "'coach'" in messages[0]
    assert "'sonnet'" in messages[0]
    assert "'echo'" in messages[0]
    assert "'tutor'" in messages[1]
    assert "'opus'" in messages[1]


async def test_unknown_agent_model_falls_back_to_the_run_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = agents_dir(tmp_path, tutor="opus")
    executor, _ = collect(Settings(model="echo", agents_dirs=(folder,)))["tutor"]
    with caplog.at_level(logging.WARNING, logger="command_handlers.agents"):
        assert executor.model_id == "echo"
        assert executor.model_id == "echo"
    assert len(caplog.records) == 1


def test_a_known_agent_model_wins_over_the_run_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = agents_dir(tmp_path, tutor="gpt-4o-mini", coach="echo")
    found = collect(Settings(agents_dirs=(folder,)))
    with caplog.at_level(logging.WARNING, logger="command_handlers.agents"):
        assert found["tutor"][0].model_id == "gpt-4o-mini"
        assert found["coach"][0].model_id == "echo"
    assert caplog.records == []


async def test_an_agent_model_of_its_own_answers(tmp_path: Path) -> None:
    folder = agents_dir(tmp_path, coach="echo")
    executor, _ = collect(Settings(model="gpt-4o-mini", agents_dirs=(folder,)))["coach"]
    result = await executor(task(agent="coach"))
    assert result == {
        "text": result["text"],
        "agent": "coach",
        "model": "echo",
        "usage": result["usage"],
    }


async def test_an_unknown_run_model_fails_the_call_clearly() -> None:
    executor, _ = collect(Settings(model="no-such-model"))["memory-anchor"]
    with pytest.raises(ValueError, match=r"unknown model 'no-such-model'; `llm models`"):
        await executor(task(agent="memory-anchor"))


@pytest.mark.parametrize(
    "node_data", [{}, {"prompt": None}, {"prompt": 42}, {"text": "a canvas node"}]
)
async def test_a_task_without_a_prompt_string_is_a_value_error(node_data: dict[str, Any]) -> None:
    executor, _ = collect(Settings())["memory-anchor"]
    bad = AsyncTask(task_id="n7", agent_name="memory-anchor", node_data=node_data)
    with pytest.raises(ValueError, match=r"task 'n7' for agent 'memory-anchor' has no 'prompt'"):
        await executor(bad)


def test_task_prompt_rejects_node_data_that_is_not_a_mapping() -> None:
    bad = AsyncTask(task_id="n8", agent_name="tutor", node_data=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no 'prompt' string"):
        task_prompt(bad)
    assert task_prompt(task("")) == ""


def test_check_model() -> None:
    check_model(None)
    check_model("echo")
    with pytest.raises(
        ValueError, match=r"^unknown model 'opus'; `llm models` lists the installed"
    ):
        check_model("opus")


def test_run_model_id_and_uses_echo() -> None:
    assert run_model_id(Settings()) == ECHO_MODEL
    assert run_model_id(Settings(model="gpt-4o")) == "gpt-4o"
    assert Settings().run_model == ECHO_MODEL
    assert Settings(model="gpt-4o").run_model == "gpt-4o"
    assert uses_echo(Settings())
    assert uses_echo(Settings(model="echo"))
    assert not uses_echo(Settings(model="gpt-4o"))


def test_the_executor_resolves_lazily(tmp_path: Path) -> None:
    agent = load_agents([agents_dir(tmp_path, tutor="opus")])["tutor"]
    executor = LlmAgentExecutor(agent, None)
    assert executor.run_model == ECHO_MODEL
    assert executor._model_id is None  # pylint: disable=protected-access


async def test_through_the_plugin_manager_and_run_tasks(tmp_path: Path) -> None:
    pm = get_plugin_manager(load_entry_points=False)
    assert pm.get_plugin("llm-agents") is llm_agents
    folder = agents_dir(tmp_path, tutor="inherit")
    summary = await run_tasks(
        [task("Why is the sky blue?"), task(..., agent="memory-anchor", task_id="t2")],
        pm=pm,
        settings=Settings(agents_dirs=(folder,)),
    )
    assert (summary["success"], summary["failed"]) == (1, 1)
    (result,) = summary["results"]
    assert result["agent"] == "tutor"
    assert echoed(result)["prompt"] == "Why is the sky blue?"
    assert "no 'prompt' string" in summary["errors"][0]["error"]
    assert summary["errors"][0]["error_type"] == "ValueError"


def test_what_moved_is_still_importable_from_here() -> None:
    assert ECHO_MODEL == settings_module.ECHO_MODEL == "echo"
    assert llm_agents.task_prompt is agent_definitions.task_prompt
    assert llm_agents.AgentTask is agent_definitions.AgentTask


def test_check_settings_says_when_the_echo_model_answers() -> None:
    assert check_settings(Settings()) == ECHO_NOTICE
    assert check_settings(Settings(model="echo")) == CHOSEN_ECHO_NOTICE
    assert "--model" in ECHO_NOTICE


def test_check_settings_accepts_a_model_llm_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert check_settings(Settings(model="gpt-4o-mini")) is None


def test_check_settings_refuses_a_model_whose_key_is_not_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"needs the key 'openai'") as refused:
        check_settings(Settings(model="gpt-4o-mini"))
    assert "`llm keys set openai`" in str(refused.value)
    assert "OPENAI_API_KEY" in str(refused.value)


def test_check_settings_checks_the_key_of_an_agents_own_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    folder = agents_dir(tmp_path, tutor="gpt-4o-mini")
    with pytest.raises(ValueError, match=r"model 'gpt-4o-mini' needs the key 'openai'"):
        check_settings(Settings(agents_dirs=(folder,)))
    (tmp_path / "other").mkdir()
    unknown = agents_dir(tmp_path / "other", tutor="opus")  # falls back to the echo model
    assert check_settings(Settings(agents_dirs=(unknown,))) == ECHO_NOTICE


def test_check_settings_refuses_an_unknown_model() -> None:
    with pytest.raises(ValueError, match=r"^unknown model 'no-such-model'; `llm models`"):
        check_settings(Settings(model="no-such-model"))


def test_check_settings_checks_nothing_when_a_command_answers() -> None:
    assert check_settings(Settings(agent_command=("cat",))) is None
    assert check_settings(Settings(model="no-such-model", agent_command=("cat",))) is None


def test_check_settings_through_the_hook() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    assert pm.hook.check_settings(settings=Settings()) == [ECHO_NOTICE]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        pm.hook.check_settings(settings=Settings(model="nope"))
    disabled = get_plugin_manager(load_entry_points=False, disabled=["llm-agents"])
    assert disabled.hook.check_settings(settings=Settings(model="nope")) == []
