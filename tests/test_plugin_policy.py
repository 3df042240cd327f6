"""Policies through the plugin layer: agents' rates, the is_retryable and on_task_retry hooks."""

from __future__ import annotations

from typing import Any

import pytest

from command_handlers import hookimpl
from command_handlers.plugins import (
    AsyncTask,
    RetryPolicy,
    RunPolicy,
    collect_executors,
    get_plugin_manager,
    run_tasks,
)


class ServiceBusy(Exception):
    """An error the default rule would not retry."""


class Flaky:
    def __init__(self) -> None:
        self.calls = 0
        self.retries: list[tuple[str, int, str, float]] = []

    @hookimpl
    def register_executors(self, register: Any) -> None:
        async def answer(task: AsyncTask) -> str:
            self.calls += 1
            if self.calls == 1:
                raise ServiceBusy("busy, come back later")
            return "done"

        register("flaky", answer, rate="100/s")

    @hookimpl
    def on_task_retry(self, task: AsyncTask, attempt: int, error: str, delay: float) -> None:
        self.retries.append((task.task_id, attempt, error, delay))


class Teacher:
    def __init__(self, verdict: bool | None) -> None:
        self.verdict = verdict

    @hookimpl
    def is_retryable(self, error: BaseException) -> bool | None:
        return self.verdict if isinstance(error, ServiceBusy) else None


def manager(*plugins: Any) -> Any:
    pm = get_plugin_manager(load_entry_points=False)
    for plugin in plugins:
        pm.register(plugin)
    return pm


RETRY = RetryPolicy(retries=2, base_delay=0.0, max_delay=0.0)


async def test_a_plugin_teaches_the_engine_which_errors_to_retry() -> None:
    flaky = Flaky()
    summary = await run_tasks(
        [AsyncTask("t", "flaky", {})],
        pm=manager(flaky, Teacher(True)),
        policy=RunPolicy(retry=RETRY),
    )
    assert summary["results"] == ["done"]
    assert flaky.retries == [("t", 1, "busy, come back later", 0.0)]


async def test_without_an_answer_the_callers_rule_then_the_default_decides() -> None:
    flaky = Flaky()
    asked: list[BaseException] = []

    def callers_rule(error: BaseException) -> bool | None:
        asked.append(error)
        return False

    summary = await run_tasks(
        [AsyncTask("t", "flaky", {})],
        pm=manager(flaky, Teacher(None)),
        policy=RunPolicy(retry=RETRY, retry_if=callers_rule),
    )
    assert summary["failed"] == 1
    assert len(asked) == 1
    assert flaky.retries == []


def test_an_agents_rate_is_checked_when_it_registers() -> None:
    class BadRate:
        @hookimpl
        def register_executors(self, register: Any) -> None:
            async def answer(task: AsyncTask) -> None:
                return None

            register("fast", answer, rate="often")

    with pytest.raises(ValueError, match=r"plugin .* agent 'fast': rate 'often'"):
        collect_executors(manager(BadRate()))
