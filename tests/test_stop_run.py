"""A listener the run cannot go on without raises StopRun: no new call starts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from command_handlers import hookimpl
from command_handlers.plugins import (
    AsyncTask,
    RunPolicy,
    StopRun,
    get_plugin_manager,
    notify,
    run_tasks,
)
from command_handlers.settings import Settings


class Agent:
    """Registers the agent ``oral``, which answers at once and counts its calls."""

    def __init__(self) -> None:
        self.called: list[str] = []

    @hookimpl
    def register_executors(self, register: Any) -> None:
        async def answer(task: AsyncTask) -> dict[str, str]:
            self.called.append(task.task_id)
            return {"text": f"answer to {task.task_id}"}

        register("oral", answer)


class Recorder:
    """A listener that fails, as a journal on a full disk, from the ``after``-th outcome on."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.ended: list[str] = []

    @hookimpl
    def on_task_end(self, task: Any, outcome: Any) -> None:
        if len(self.ended) >= self.after:
            raise StopRun("cannot write the journal j.sqlite: database or disk is full")
        self.ended.append(task.task_id)


def tasks(count: int) -> list[AsyncTask]:
    return [AsyncTask(f"t{number}", "oral", {"prompt": "p"}) for number in range(count)]


def manager(*plugins: object) -> Any:
    pm = get_plugin_manager(load_entry_points=False)
    for plugin in plugins:
        pm.register(plugin)
    return pm


async def test_a_stop_run_from_on_task_end_starts_no_new_call() -> None:
    agent = Agent()
    pm = manager(agent, Recorder(after=2))

    summary = await run_tasks(tasks(6), pm=pm, max_concurrency=1, settings=Settings())

    assert summary["halted"] == "cannot write the journal j.sqlite: database or disk is full"
    assert agent.called == ["t0", "t1", "t2"]  # the third ended after the stop: none after
    cancelled = summary["cancelled_tasks"]
    assert sorted(item["task_id"] for item in cancelled) == ["t3", "t4", "t5"]
    assert {item["reason"] for item in cancelled} == {"stopped"}


async def test_the_callers_stop_event_is_the_one_set() -> None:
    stop = asyncio.Event()
    pm = manager(Agent(), Recorder(after=0))

    summary = await run_tasks(
        tasks(3), pm=pm, max_concurrency=1, settings=Settings(), policy=RunPolicy(stop=stop)
    )

    assert stop.is_set()
    assert summary["success"] == 1
    assert "halted" in summary


async def test_a_stop_run_from_on_run_start_makes_no_call() -> None:
    class Refusing:
        @hookimpl
        def on_run_start(self, run: Any) -> None:
            raise StopRun("cannot open the journal j.sqlite: locked")

    agent = Agent()
    summary = await run_tasks(tasks(3), pm=manager(agent, Refusing()), settings=Settings())

    assert agent.called == []
    assert summary["halted"] == "cannot open the journal j.sqlite: locked"
    assert summary["cancelled"] == 3


async def test_a_run_without_stop_run_has_no_halted_key() -> None:
    summary = await run_tasks(tasks(2), pm=manager(Agent()), settings=Settings())
    assert "halted" not in summary


async def test_notify_returns_the_first_stop_run_and_logs_other_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Marker:
        def __init__(self, error: Exception) -> None:
            self.error = error

        @hookimpl
        def on_canvas_written(self, answers: Any) -> None:
            raise self.error

    pm = manager(Marker(StopRun("first")))
    assert str(await notify(pm, "on_canvas_written", canvas_path="c", answers=[])) == "first"
    assert caplog.records == []

    pm = manager(Marker(RuntimeError("a bug")))
    with caplog.at_level(logging.ERROR, logger="command_handlers.plugins"):
        assert await notify(pm, "on_canvas_written", canvas_path="c", answers=[]) is None
    assert "the run goes on" in caplog.text


async def test_stop_run_where_it_cannot_stop_anything_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Progress:
        @hookimpl
        def on_task_progress(self, task_id: str) -> None:
            raise StopRun("not here")

    agent = Agent()
    with caplog.at_level(logging.ERROR, logger="command_handlers.plugins"):
        summary = await run_tasks(tasks(2), pm=manager(agent, Progress()), settings=Settings())
    assert len(agent.called) == 2
    assert "halted" not in summary
    assert "not here" in caplog.text
