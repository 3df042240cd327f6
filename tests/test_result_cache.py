"""The cached_result hook: answers reused instead of paid for again."""

from __future__ import annotations

import time
from typing import Any

from command_handlers import hookimpl
from command_handlers.plugins import AsyncTask, RunPolicy, get_plugin_manager, run_tasks


class Cache:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    @hookimpl
    def cached_result(self, task: AsyncTask) -> Any:
        return self.answers.get(task.task_id)


class Agent:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.progress: list[tuple[str, Any]] = []

    @hookimpl
    def register_executors(self, register: Any) -> None:
        async def answer(task: AsyncTask) -> dict[str, str]:
            self.calls.append(task.task_id)
            return {"text": f"fresh {task.task_id}"}

        register("agent", answer)

    @hookimpl
    def on_task_progress(self, task_id: str, result: Any) -> None:
        self.progress.append((task_id, result))


def manager(cache: Cache, agent: Agent) -> Any:
    pm = get_plugin_manager(load_entry_points=False)
    for name in ("llm-agents", "command-agent"):
        pm.unregister(name=name)
    pm.register(cache)
    pm.register(agent)
    return pm


async def test_cached_answers_cost_no_call_no_slot_and_no_rate_token() -> None:
    tasks = [AsyncTask(f"t{i}", "agent", {}) for i in range(5)]
    cache = Cache({f"t{i}": {"text": f"old t{i}"} for i in (0, 2, 3, 4)})
    agent = Agent()
    started = time.monotonic()
    summary = await run_tasks(
        tasks, pm=manager(cache, agent), use_cache=True, policy=RunPolicy(rate="1/min")
    )
    assert time.monotonic() - started < 5  # four reused answers waited for no token
    assert agent.calls == ["t1"]
    assert summary["cached"] == ["t0", "t2", "t3", "t4"]
    assert (summary["total"], summary["success"]) == (5, 5)
    assert [r["text"] for r in summary["results"]] == [
        "old t0",
        "fresh t1",
        "old t2",
        "old t3",
        "old t4",
    ]
    assert sorted(task_id for task_id, _ in agent.progress) == [f"t{i}" for i in range(5)]


async def test_a_cached_dependency_still_orders_its_dependents() -> None:
    tasks = [
        AsyncTask("first", "agent", {}),
        AsyncTask("second", "agent", {}, dependencies=["first"]),
        AsyncTask("alone", "agent", {}),
    ]
    agent = Agent()
    summary = await run_tasks(
        tasks,
        pm=manager(Cache({"first": {"text": "old"}, "alone": {"text": "old alone"}}), agent),
        use_cache=True,
        dependency_aware=True,
    )
    assert agent.calls == ["second"]
    assert [r["text"] for r in summary["results"]] == ["old", "fresh second", "old alone"]
    assert summary["cached"] == ["alone", "first"]


async def test_everything_cached_runs_nothing() -> None:
    tasks = [AsyncTask("a", "agent", {}), AsyncTask("b", "agent", {})]
    agent = Agent()
    summary = await run_tasks(
        tasks,
        pm=manager(Cache({"a": {"text": "1"}, "b": {"text": "2"}}), agent),
        use_cache=True,
    )
    assert agent.calls == []
    assert summary["success"] == 2
    assert summary["failed"] == summary["cancelled"] == 0


async def test_without_use_cache_the_hook_is_not_asked() -> None:
    agent = Agent()
    summary = await run_tasks(
        [AsyncTask("a", "agent", {})], pm=manager(Cache({"a": {"text": "old"}}), agent)
    )
    assert agent.calls == ["a"]
    assert summary["cached"] == []
