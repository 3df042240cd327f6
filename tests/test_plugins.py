"""Behaviour of the plugin layer: discovery, executors, listeners, backends and routing."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Union

import pluggy
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest_mock import MockerFixture

from command_handlers import hookimpl
from command_handlers.default_plugins import engine_backend, routing
from command_handlers.plugins import (
    BUILTIN_PLUGINS,
    LOAD_PLUGINS_ENV,
    AsyncTask,
    DuplicateAgentError,
    ExecutorRegistry,
    RunInfo,
    UnknownAgentError,
    collect_executors,
    get_plugin_manager,
    run_tasks,
)
from command_handlers.settings import DEFAULT_COLOR_MAP, Settings

Executor = Callable[[AsyncTask], Awaitable[Any]]
Event = tuple[str, str, Union[str, None]]
SUMMARY_KEYS = {
    "total",
    "success",
    "failed",
    "skipped",
    "cancelled",
    "results",
    "errors",
    "skipped_tasks",
    "cancelled_tasks",
    "cached",
}


@pytest.fixture(autouse=True)
def _no_plugin_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with the allowlist unset, whatever the environment holds."""
    monkeypatch.delenv(LOAD_PLUGINS_ENV, raising=False)


#: The built-in plugins the layer itself needs; the tests drop the others (the built-in agents).
CORE_PLUGINS = ("engine", "color-router")


def core_plugin_manager() -> pluggy.PluginManager:
    """A manager from :func:`get_plugin_manager` holding only the engine and the router."""
    manager = get_plugin_manager(load_entry_points=False)
    for name, _ in manager.list_name_plugin():
        if name not in CORE_PLUGINS:
            manager.unregister(name=name)
    return manager


@pytest.fixture
def pm() -> pluggy.PluginManager:
    return core_plugin_manager()


def make_tasks(count: int, agent: str = "oral-explanation") -> list[AsyncTask]:
    return [AsyncTask(f"task-{i}", agent, {"id": f"node-{i}"}) for i in range(count)]


async def echo(task: AsyncTask) -> dict[str, Any]:
    return {"task_id": task.task_id, "agent": task.agent_name}


class Agents:
    """A plugin serving the given executors; a value may be ``(executor, max_concurrency)``."""

    def __init__(
        self,
        executors: Mapping[str, Executor | tuple[Executor, int]],
        *,
        override: bool = False,
        description: str = "",
    ) -> None:
        self.executors = executors
        self.override = override
        self.description = description
        self.settings: list[Any] = []

    @hookimpl
    def register_executors(self, register: Callable[..., None], settings: Any) -> None:
        self.settings.append(settings)
        for name, value in self.executors.items():
            executor, limit = value if isinstance(value, tuple) else (value, None)
            register(name, executor, limit, description=self.description, override=self.override)


class Recorder:
    """An executor counting how many calls run at once, failing the ids in ``fail``."""

    def __init__(self, fail: frozenset[str] = frozenset(), delay: float = 0.0) -> None:
        self.fail = fail
        self.delay = delay
        self.started: list[str] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, task: AsyncTask) -> dict[str, Any]:
        self.started.append(task.task_id)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)  # the simulated agent call, not synchronisation
            if task.task_id in self.fail:
                raise ValueError(f"{task.task_id} failed")
            return {"task_id": task.task_id, "result": "success"}
        finally:
            self.running -= 1


def _asynchronous(function: Callable[..., None]) -> Callable[..., Awaitable[None]]:
    """The same listener as a coroutine function that yields to the loop first."""

    @functools.wraps(function)
    async def listener(*args: Any) -> None:
        await asyncio.sleep(0)
        function(*args)

    return listener


def listeners(
    label: str, log: list[Event], *, asynchronous: bool = False, **opts: bool
) -> SimpleNamespace:
    """A plugin implementing the four listener hooks, appending ``(label, hook, task_id)``."""
    mark = hookimpl(**opts)  # type: ignore[call-overload]

    def on_run_start(run: RunInfo) -> None:
        log.append((label, "run_start", None))

    def on_task_start(task: AsyncTask) -> None:
        log.append((label, "task_start", task.task_id))

    def on_task_progress(task_id: str, result: Any, error: str | None) -> None:
        log.append((label, "progress", task_id))

    def on_run_end(run: RunInfo, summary: Mapping[str, Any]) -> None:
        log.append((label, "run_end", None))

    hooks: list[Callable[..., None]] = [on_run_start, on_task_start, on_task_progress, on_run_end]
    wrap: Callable[[Callable[..., None]], Callable[..., Any]] = (
        _asynchronous if asynchronous else (lambda f: f)
    )
    return SimpleNamespace(**{hook.__name__: mark(wrap(hook)) for hook in hooks})


# --- discovery: get_plugin_manager and entry points ---------------------------------


def test_get_plugin_manager_registers_the_built_in_plugins() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    assert pm.project_name == "command_handlers"
    assert pm.get_plugin("engine") is engine_backend
    assert pm.get_plugin("color-router") is routing
    assert dict(pm.list_name_plugin()) == {
        name: sys.modules[module] for name, module in BUILTIN_PLUGINS.items()
    }
    assert list(BUILTIN_PLUGINS) == [
        "engine",
        "color-router",
        "llm-agents",
        "command-agent",
        "journal",
        "progress",
        "model-router",
        "dask",
    ]


def test_each_plugin_manager_is_independent() -> None:
    first = get_plugin_manager(load_entry_points=False)
    second = get_plugin_manager(load_entry_points=False)
    assert first is not second
    first.register(Agents({"my-alpha": echo}), name="alpha-plugin")
    first.unregister(name="engine")
    assert "my-alpha" in collect_executors(first).names
    assert "my-alpha" not in collect_executors(second).names
    assert not second.has_plugin("alpha-plugin")
    assert second.has_plugin("engine")


PLUGIN_MODULE = """
from command_handlers import hookimpl

EVENTS = []


async def shout(task):
    return {"task_id": task.task_id, "text": task.node_data["text"].upper()}


@hookimpl
def register_executors(register):
    register("my-agent", shout, description="Shouts the note back.")


@hookimpl
def on_task_progress(task_id, error):
    EVENTS.append((task_id, error))
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real distribution ``my-plugin`` with a ``command_handlers`` entry point, on sys.path."""
    (tmp_path / "my_plugin.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    dist_info = tmp_path / "my_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(
        "[command_handlers]\nmy_plugin = my_plugin\n", encoding="utf-8"
    )
    monkeypatch.delitem(sys.modules, "my_plugin", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_plugin", None)  # imported by the test, after monkeypatch looked


@pytest.mark.usefixtures("installed_plugin")
async def test_an_installed_plugin_is_loaded_and_serves_its_agent() -> None:
    pm = get_plugin_manager()
    plugin = pm.get_plugin("my_plugin")
    assert plugin is sys.modules["my_plugin"]
    assert [dist.project_name for _, dist in pm.list_plugin_distinfo()] == ["my-plugin"]
    registry = collect_executors(pm)
    assert registry.owner("my-agent") == "my_plugin"
    assert registry.describe()["my-agent"] == "Shouts the note back."

    summary = await run_tasks([AsyncTask("t1", "my-agent", {"text": "hi"})], pm=pm)

    assert summary["results"] == [{"task_id": "t1", "text": "HI"}]
    assert plugin.EVENTS == [("t1", None)]


@pytest.mark.usefixtures("installed_plugin")
@pytest.mark.parametrize(
    ("allowlist", "loaded"),
    [
        ("", False),
        ("my_plugin", True),
        (" other , my_plugin ,", True),
        ("other", False),
        (",", False),
    ],
)
def test_the_allowlist_selects_installed_plugins(
    monkeypatch: pytest.MonkeyPatch, allowlist: str, loaded: bool
) -> None:
    monkeypatch.setenv(LOAD_PLUGINS_ENV, allowlist)
    pm = get_plugin_manager()
    assert pm.has_plugin("my_plugin") is loaded
    assert ("my-agent" in collect_executors(pm).names) is loaded


@pytest.mark.usefixtures("installed_plugin")
def test_load_entry_points_false_loads_no_installed_plugin() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    assert not pm.has_plugin("my_plugin")
    assert "my_plugin" not in sys.modules


@pytest.mark.usefixtures("installed_plugin")
async def test_run_tasks_without_a_manager_builds_one_with_installed_plugins() -> None:
    summary = await run_tasks([AsyncTask("t1", "my-agent", {"text": "ok"})])
    assert summary["results"] == [{"task_id": "t1", "text": "OK"}]


# --- executors: registration rules ---------------------------------------------------


def test_register_executors_gets_the_settings(pm: pluggy.PluginManager) -> None:
    plugin = Agents({"alpha": echo})
    pm.register(plugin)
    settings = Settings(model="echo")
    collect_executors(pm, settings)
    collect_executors(pm)
    assert plugin.settings[0] is settings
    assert plugin.settings[1] == Settings()


def test_register_executors_may_take_only_register(pm: pluggy.PluginManager) -> None:
    @hookimpl
    def register_executors(register: Callable[..., None]) -> None:
        register("beta", echo, description="second")
        register("alpha", echo, 3, description="first")

    pm.register(SimpleNamespace(register_executors=register_executors), name="mine")
    registry = collect_executors(pm)
    assert registry.names == ["alpha", "beta"]
    assert registry.describe() == {"alpha": "first", "beta": "second"}
    assert registry.owner("beta") == "mine"
    assert registry.limits() == {"alpha": 3}


def test_owner_of_an_unknown_agent_raises(pm: pluggy.PluginManager) -> None:
    with pytest.raises(UnknownAgentError, match="registered agents: none"):
        collect_executors(pm).owner("ghost")


def test_duplicate_agent_names_name_both_plugins(pm: pluggy.PluginManager) -> None:
    pm.register(Agents({"shared": echo}), name="one")
    pm.register(Agents({"shared": echo}), name="two")
    with pytest.raises(DuplicateAgentError) as caught:
        collect_executors(pm)
    assert "'shared'" in str(caught.value)
    assert "'one'" in str(caught.value)
    assert "'two'" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("override_first", [True, False])
async def test_the_overriding_plugin_wins_in_either_order(
    pm: pluggy.PluginManager, override_first: bool
) -> None:
    async def replacement(task: AsyncTask) -> str:
        return "replacement"

    original = Agents({"shared": echo})
    overriding = Agents({"shared": replacement}, override=True)
    for plugin, name in (
        [(overriding, "overriding"), (original, "original")]
        if override_first
        else [(original, "original"), (overriding, "overriding")]
    ):
        pm.register(plugin, name=name)

    assert collect_executors(pm).owner("shared") == "overriding"
    summary = await run_tasks([AsyncTask("t1", "shared", {})], pm=pm)
    assert summary["results"] == ["replacement"]


def test_two_overriding_plugins_are_an_error(pm: pluggy.PluginManager) -> None:
    pm.register(Agents({"shared": echo}, override=True), name="one")
    pm.register(Agents({"shared": echo}, override=True), name="two")
    with pytest.raises(DuplicateAgentError) as caught:
        collect_executors(pm)
    assert "'one'" in str(caught.value)
    assert "'two'" in str(caught.value)


def test_an_executor_must_be_callable(pm: pluggy.PluginManager) -> None:
    pm.register(Agents({"alpha": "not callable"}), name="bad")  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="plugin 'bad': executor for agent 'alpha' must be"):
        collect_executors(pm)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "2"])
def test_max_concurrency_must_be_a_positive_int(pm: pluggy.PluginManager, limit: Any) -> None:
    pm.register(Agents({"alpha": (echo, limit)}), name="bad")
    with pytest.raises(ValueError, match="max_concurrency of agent 'alpha' must be a positive"):
        collect_executors(pm)


def test_registry_add_directly() -> None:
    registry = ExecutorRegistry()
    registry.add("p", "alpha", echo, 1, description="d")
    assert registry.limits() == {"alpha": 1}
    assert registry.describe() == {"alpha": "d"}


# --- running tasks ---------------------------------------------------------------------


async def test_a_registered_plugin_serves_executors_and_hears_every_event(
    pm: pluggy.PluginManager,
) -> None:
    log: list[Event] = []
    pm.register(Agents({"oral-explanation": echo}))
    pm.register(listeners("plugin", log))

    summary = await run_tasks(make_tasks(3), pm=pm)

    assert summary["success"] == 3
    assert summary["results"] == [
        {"task_id": f"task-{i}", "agent": "oral-explanation"} for i in range(3)
    ]
    hooks = [hook for _, hook, _ in log]
    assert hooks.count("run_start") == hooks.count("run_end") == 1
    assert hooks.count("task_start") == hooks.count("progress") == 3


async def test_listeners_see_the_run_info_and_summary(pm: pluggy.PluginManager) -> None:
    seen: dict[str, Any] = {}

    class Listener:
        @hookimpl
        def on_run_start(self, run: RunInfo) -> None:
            seen["start"] = run

        @hookimpl
        def on_run_end(self, run: RunInfo, summary: Mapping[str, Any]) -> None:
            seen["end"] = run
            seen["summary"] = summary

    tasks = make_tasks(2)
    pm.register(Agents({"oral-explanation": echo}))
    pm.register(Listener())
    summary = await run_tasks(tasks, pm=pm, max_concurrency=4)

    run = seen["start"]
    assert seen["end"] is run
    assert (run.task_count, run.mode, run.max_concurrency) == (2, "parallel", 4)
    assert run.tasks == tuple(tasks)
    assert len(run.run_id) == 12
    assert seen["summary"] == summary


async def test_listener_order_is_pluggy_order_and_each_event_fires_once(
    pm: pluggy.PluginManager,
) -> None:
    log: list[Event] = []
    pm.register(Agents({"oral-explanation": echo}))
    pm.register(listeners("tryfirst", log, tryfirst=True), name="tryfirst")
    pm.register(listeners("trylast", log, trylast=True), name="trylast")
    pm.register(listeners("sync", log), name="sync")
    pm.register(listeners("async", log, asynchronous=True), name="async")

    def progress_callback(task_id: str, result: Any, error: str | None) -> None:
        log.append(("callback", "progress", task_id))

    order = ["tryfirst", "async", "sync", "trylast"]
    summary = await run_tasks(make_tasks(4), pm=pm, progress_callback=progress_callback)

    assert summary["success"] == 4
    assert log[:4] == [(label, "run_start", None) for label in order]
    assert log[-4:] == [(label, "run_end", None) for label in order]
    for i in range(4):
        task_id = f"task-{i}"
        assert [event for event in log if event[2] == task_id] == [
            *((label, "task_start", task_id) for label in order),
            *((label, "progress", task_id) for label in order),
            ("callback", "progress", task_id),
        ]


async def test_listeners_may_take_any_arguments_in_any_order(pm: pluggy.PluginManager) -> None:
    got: dict[str, list[Any]] = {}

    @hookimpl
    def on_run_start() -> None:
        got.setdefault("run_start", []).append(True)

    @hookimpl
    def on_task_progress(error: str | None, result: Any, task_id: str) -> None:
        got.setdefault("reordered", []).append((task_id, result, error))

    @hookimpl
    def on_run_end(summary: Mapping[str, Any]) -> None:
        got.setdefault("summary", []).append(summary["failed"])

    def error_only(error: str | None) -> None:
        got.setdefault("error_only", []).append(error)

    async def result_then_id(result: Any, task_id: str) -> None:
        got.setdefault("result_then_id", []).append((task_id, result))

    pm.register(Agents({"oral-explanation": Recorder(fail=frozenset({"task-1"}))}))
    pm.register(
        SimpleNamespace(
            on_run_start=on_run_start,
            on_task_progress=on_task_progress,
            on_run_end=on_run_end,
        )
    )
    pm.register(SimpleNamespace(on_task_progress=hookimpl(error_only)))
    pm.register(SimpleNamespace(on_task_progress=hookimpl(result_then_id)))

    await run_tasks(make_tasks(2), pm=pm, max_concurrency=1)

    ok = {"task_id": "task-0", "result": "success"}
    assert got == {
        "run_start": [True],
        "reordered": [("task-0", ok, None), ("task-1", None, "task-1 failed")],
        "error_only": [None, "task-1 failed"],
        "result_then_id": [("task-0", ok), ("task-1", None)],
        "summary": [1],
    }


async def test_wrappers_on_listener_hooks_are_not_called(pm: pluggy.PluginManager) -> None:
    calls: list[str] = []
    log: list[Event] = []

    class Wrappers:
        @hookimpl(wrapper=True)
        def on_task_start(self, task: AsyncTask) -> Any:
            calls.append("wrapper")
            return (yield)

        @hookimpl(hookwrapper=True)
        def on_task_progress(self, task_id: str) -> Any:
            calls.append("hookwrapper")
            yield

    pm.register(Agents({"oral-explanation": echo}))
    pm.register(Wrappers())
    pm.register(listeners("plain", log))
    summary = await run_tasks(make_tasks(2), pm=pm)

    assert summary["success"] == 2
    assert calls == []
    assert len(log) == 6


@pytest.mark.parametrize("broken_async", [False, True])
async def test_a_raising_listener_is_logged_and_isolated(
    pm: pluggy.PluginManager, caplog: pytest.LogCaptureFixture, broken_async: bool
) -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("listener broke")

    mark = hookimpl(tryfirst=True)
    wrap = _asynchronous if broken_async else (lambda f: f)
    broken = SimpleNamespace(
        on_run_start=mark(wrap(lambda run: boom())),
        on_task_start=mark(wrap(lambda task: boom())),
        on_task_progress=mark(wrap(lambda task_id: boom())),
        on_run_end=mark(wrap(lambda summary: boom())),
    )
    log: list[Event] = []
    pm.register(Agents({"oral-explanation": echo}))
    pm.register(listeners("healthy", log), name="healthy")
    pm.register(broken, name="broken-plugin")

    with caplog.at_level(logging.ERROR, logger="command_handlers.plugins"):
        summary = await run_tasks(make_tasks(2), pm=pm)

    assert summary["success"] == 2
    assert summary["failed"] == 0
    assert len(log) == 6  # the healthy plugin heard everything despite running after
    records = [r for r in caplog.records if r.name == "command_handlers.plugins"]
    assert sorted(r.getMessage() for r in records) == sorted(
        f"plugin 'broken-plugin' raised in {hook}; the run goes on"
        for hook in [
            "on_run_start",
            "on_task_start",
            "on_task_start",
            "on_task_progress",
            "on_task_progress",
            "on_run_end",
        ]
    )
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in records)


async def test_a_sync_listener_returning_a_value_is_fine(pm: pluggy.PluginManager) -> None:
    @hookimpl
    def on_task_start(task: AsyncTask) -> int:
        return 42

    pm.register(Agents({"oral-explanation": echo}))
    pm.register(SimpleNamespace(on_task_start=on_task_start))
    assert (await run_tasks(make_tasks(1), pm=pm))["success"] == 1


async def test_an_async_progress_callback_runs_after_the_plugins(
    pm: pluggy.PluginManager,
) -> None:
    log: list[Event] = []

    async def progress_callback(task_id: str, result: Any, error: str | None) -> None:
        await asyncio.sleep(0)
        log.append(("callback", "progress", task_id))

    pm.register(Agents({"oral-explanation": echo}))
    pm.register(listeners("plugin", log, asynchronous=True))
    await run_tasks(make_tasks(1), pm=pm, progress_callback=progress_callback)

    assert [event for event in log if event[1] == "progress"] == [
        ("plugin", "progress", "task-0"),
        ("callback", "progress", "task-0"),
    ]


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_raising_progress_callback_is_logged_and_isolated(
    pm: pluggy.PluginManager, caplog: pytest.LogCaptureFixture, asynchronous: bool
) -> None:
    calls: list[str] = []

    def progress_callback(task_id: str, result: Any, error: str | None) -> None:
        calls.append(task_id)
        raise RuntimeError("callback broke")

    log: list[Event] = []
    pm.register(Agents({"oral-explanation": echo}))
    pm.register(listeners("plugin", log))
    callback = _asynchronous(progress_callback) if asynchronous else progress_callback

    with caplog.at_level(logging.ERROR, logger="command_handlers.plugins"):
        summary = await run_tasks(make_tasks(2), pm=pm, progress_callback=callback)

    assert summary["success"] == 2
    assert sorted(calls) == ["task-0", "task-1"]
    assert [hook for _, hook, _ in log].count("run_end") == 1
    assert sorted(r.getMessage() for r in caplog.records) == [
        "progress_callback raised for task 'task-0'; the run goes on",
        "progress_callback raised for task 'task-1'; the run goes on",
    ]


async def test_an_unknown_agent_fails_its_task_not_the_run(pm: pluggy.PluginManager) -> None:
    progress: list[tuple[str, str | None]] = []
    pm.register(Agents({"beta": echo, "alpha": echo}))
    tasks = [AsyncTask("known", "alpha", {}), AsyncTask("lost", "ghost", {})]

    summary = await run_tasks(
        tasks,
        pm=pm,
        progress_callback=lambda task_id, result, error: progress.append((task_id, error)),
    )

    assert (summary["success"], summary["failed"]) == (1, 1)
    [error] = summary["errors"]
    assert error["task_id"] == "lost"
    assert error["agent_name"] == "ghost"
    assert error["error_type"] == "UnknownAgentError"
    assert error["error"] == (
        "no executor registered for agent 'ghost'; registered agents: alpha, beta"
    )
    assert dict(progress)["lost"] == error["error"]


async def test_with_no_agents_registered_the_error_says_none(pm: pluggy.PluginManager) -> None:
    summary = await run_tasks(make_tasks(1), pm=pm)
    assert summary["errors"][0]["error"].endswith("registered agents: none")


async def test_an_agent_limit_is_kept_while_other_agents_use_the_free_slots(
    pm: pluggy.PluginManager,
) -> None:
    running = {"limited": 0, "free": 0}
    peak = {"limited": 0, "free": 0, "total": 0}
    everyone_in = asyncio.Event()

    def counting(agent: str) -> Executor:
        async def executor(task: AsyncTask) -> str:
            running[agent] += 1
            peak[agent] = max(peak[agent], running[agent])
            total = sum(running.values())
            peak["total"] = max(peak["total"], total)
            if total == 5:
                everyone_in.set()
            try:
                await asyncio.wait_for(everyone_in.wait(), timeout=10)
            finally:
                running[agent] -= 1
            return task.task_id

        return executor

    pm.register(Agents({"limited": (counting("limited"), 2), "free": counting("free")}))
    tasks = [AsyncTask(f"l{i}", "limited", {}) for i in range(6)]
    tasks += [AsyncTask(f"f{i}", "free", {}) for i in range(3)]

    summary = await run_tasks(tasks, pm=pm, max_concurrency=5)

    assert summary["success"] == 9
    assert peak == {"limited": 2, "free": 3, "total": 5}


# --- the execute_tasks backend ---------------------------------------------------------


class SequentialBackend:
    """A stand-in backend: runs the tasks one by one, returns the engine's summary keys."""

    def __init__(self) -> None:
        self.arguments: dict[str, Any] = {}

    @hookimpl
    def execute_tasks(
        self,
        tasks: Sequence[AsyncTask],
        executor: Executor,
        dependency_aware: bool,
        max_concurrency: int,
        dependency_limit: int,
        agent_limits: Mapping[str, int],
        progress_callback: Callable[[str, Any, str | None], Awaitable[None]],
        start_callback: Callable[[AsyncTask], Awaitable[None]],
    ) -> Awaitable[dict[str, Any]]:
        self.arguments = {
            "dependency_aware": dependency_aware,
            "max_concurrency": max_concurrency,
            "dependency_limit": dependency_limit,
            "agent_limits": dict(agent_limits),
        }
        return self._run(tasks, executor, progress_callback, start_callback)

    async def _run(
        self,
        tasks: Sequence[AsyncTask],
        executor: Executor,
        progress_callback: Callable[[str, Any, str | None], Any] | None,
        start_callback: Callable[[AsyncTask], Any] | None,
    ) -> dict[str, Any]:
        async def report(*args: Any) -> None:  # callbacks may be sync, async or absent
            if progress_callback is not None and inspect.isawaitable(
                outcome := progress_callback(*args)
            ):
                await outcome

        results: list[Any] = []
        errors: list[dict[str, str]] = []
        for task in tasks:
            if start_callback is not None and inspect.isawaitable(started := start_callback(task)):
                await started
            try:
                result = await executor(task)
            except Exception as exc:
                errors.append(
                    {
                        "task_id": task.task_id,
                        "agent_name": task.agent_name,
                        "error": str(exc),
                        "error_type": type(exc).__name__,
                    }
                )
                await report(task.task_id, None, str(exc))
            else:
                results.append(result)
                await report(task.task_id, result, None)
        return {
            "total": len(tasks),
            "success": len(results),
            "failed": len(errors),
            "skipped": 0,
            "results": results,
            "errors": errors,
            "skipped_tasks": [],
            "cancelled": 0,
            "cancelled_tasks": [],
        }


async def test_the_engine_is_the_default_backend(
    pm: pluggy.PluginManager, mocker: MockerFixture
) -> None:
    engine = mocker.spy(engine_backend, "AsyncExecutionEngine")
    pm.register(Agents({"oral-explanation": echo}))
    summary = await run_tasks(make_tasks(2), pm=pm, max_concurrency=7, dependency_limit=3)
    engine.assert_called_once_with(7, dependency_limit=3)
    assert set(summary) == SUMMARY_KEYS


async def test_a_replacement_backend_is_used_instead_of_the_engine(
    pm: pluggy.PluginManager, mocker: MockerFixture
) -> None:
    engine = mocker.spy(engine_backend, "AsyncExecutionEngine")
    backend = SequentialBackend()
    log: list[Event] = []
    recorder = Recorder(fail=frozenset({"task-1"}))
    pm.register(Agents({"oral-explanation": (recorder, 2)}))
    pm.register(backend, name="sequential")
    pm.register(listeners("plugin", log))

    summary = await run_tasks(
        make_tasks(3), pm=pm, max_concurrency=4, dependency_aware=True, dependency_limit=2
    )

    engine.assert_not_called()
    assert set(summary) == SUMMARY_KEYS
    assert (summary["success"], summary["failed"]) == (2, 1)
    assert recorder.started == ["task-0", "task-1", "task-2"]
    assert recorder.peak == 1
    assert backend.arguments == {
        "dependency_aware": True,
        "max_concurrency": 4,
        "dependency_limit": 2,
        "agent_limits": {"oral-explanation": 2},
    }
    assert [hook for _, hook, _ in log] == [
        "run_start",
        *(["task_start", "progress"] * 3),
        "run_end",
    ]


async def test_a_backend_that_returns_none_lets_the_engine_run(
    pm: pluggy.PluginManager, mocker: MockerFixture
) -> None:
    engine = mocker.spy(engine_backend, "AsyncExecutionEngine")

    @hookimpl
    def execute_tasks(tasks: Sequence[AsyncTask]) -> None:
        return None

    pm.register(Agents({"oral-explanation": echo}))
    pm.register(SimpleNamespace(execute_tasks=execute_tasks))
    summary = await run_tasks(make_tasks(2), pm=pm)
    assert engine.call_count == 1
    assert summary["success"] == 2


async def test_without_any_backend_run_tasks_raises(pm: pluggy.PluginManager) -> None:
    pm.unregister(name="engine")
    pm.register(Agents({"oral-explanation": echo}))
    with pytest.raises(RuntimeError, match="no plugin implements execute_tasks"):
        await run_tasks(make_tasks(1), pm=pm)


async def test_bad_tasks_are_refused_as_the_engine_refuses_them(
    pm: pluggy.PluginManager,
) -> None:
    with pytest.raises(ValueError, match="tasks list cannot be empty"):
        await run_tasks([], pm=pm)
    with pytest.raises(ValueError, match="duplicate task_id"):
        await run_tasks(make_tasks(1) * 2, pm=pm)


# --- dependency-aware mode -------------------------------------------------------------


async def test_dependency_aware_runs_a_chain_in_order(pm: pluggy.PluginManager) -> None:
    recorder = Recorder()
    runs: list[RunInfo] = []
    pm.register(Agents({"a": recorder}))

    @hookimpl
    def on_run_start(run: RunInfo) -> None:
        runs.append(run)

    pm.register(SimpleNamespace(on_run_start=on_run_start))
    tasks = [
        AsyncTask("third", "a", {}, dependencies=["second"]),
        AsyncTask("second", "a", {}, dependencies=["first"]),
        AsyncTask("first", "a", {}),
    ]

    summary = await run_tasks(tasks, pm=pm, dependency_aware=True)

    assert recorder.started == ["first", "second", "third"]
    assert summary["success"] == 3
    assert runs[0].mode == "dependency-aware"


async def test_dependency_aware_skips_the_dependents_of_a_failure(
    pm: pluggy.PluginManager,
) -> None:
    log: list[Event] = []
    progress: dict[str, str | None] = {}
    pm.register(Agents({"a": Recorder(fail=frozenset({"first"}))}))
    pm.register(listeners("plugin", log))
    tasks = [
        AsyncTask("first", "a", {}),
        AsyncTask("second", "a", {}, dependencies=["first"]),
        AsyncTask("third", "a", {}, dependencies=["second"]),
        AsyncTask("alone", "a", {}),
    ]

    summary = await run_tasks(
        tasks,
        pm=pm,
        dependency_aware=True,
        progress_callback=lambda task_id, result, error: progress.update({task_id: error}),
    )

    assert (summary["success"], summary["failed"], summary["skipped"]) == (1, 1, 2)
    assert summary["skipped_tasks"] == [
        {"task_id": "second", "blocked_by": "first"},
        {"task_id": "third", "blocked_by": "first"},
    ]
    assert progress["second"] == "skipped: dependency 'first' failed"
    started = {task_id for _, hook, task_id in log if hook == "task_start"}
    assert started == {"first", "alone"}
    assert {task_id for _, hook, task_id in log if hook == "progress"} == {
        "first",
        "second",
        "third",
        "alone",
    }


async def test_dependency_limit_caps_the_dependency_aware_mode(
    pm: pluggy.PluginManager,
) -> None:
    recorder = Recorder(delay=0.01)
    pm.register(Agents({"oral-explanation": recorder}))
    summary = await run_tasks(
        make_tasks(8), pm=pm, dependency_aware=True, max_concurrency=10, dependency_limit=2
    )
    assert summary["success"] == 8
    assert recorder.peak == 2


async def test_dependencies_are_ignored_in_the_parallel_mode(pm: pluggy.PluginManager) -> None:
    pm.register(Agents({"a": Recorder(fail=frozenset({"first"}))}))
    tasks = [AsyncTask("first", "a", {}), AsyncTask("second", "a", {}, dependencies=["first"])]
    summary = await run_tasks(tasks, pm=pm)
    assert (summary["success"], summary["failed"], summary["skipped"]) == (1, 1, 0)


# --- the story's integration checks, through the plugin layer --------------------------


async def test_iv1_ten_tasks_at_three_at_once_finish_fast(pm: pluggy.PluginManager) -> None:
    recorder = Recorder(delay=0.1)
    pm.register(Agents({"oral-explanation": recorder}), name="story-agents")

    start = time.perf_counter()
    summary = await run_tasks(make_tasks(10), pm=pm, max_concurrency=3)
    elapsed = time.perf_counter() - start

    assert summary["success"] == 10
    assert summary["failed"] == 0
    assert elapsed < 0.5
    assert recorder.peak == 3


async def test_iv2_twenty_tasks_never_more_than_five_at_once(pm: pluggy.PluginManager) -> None:
    recorder = Recorder(delay=0.01)
    pm.register(Agents({"oral-explanation": recorder}), name="story-agents")

    summary = await run_tasks(make_tasks(20), pm=pm, max_concurrency=5)

    assert summary["success"] == 20
    assert recorder.peak <= 5
    assert recorder.peak == 5


async def test_iv3_two_failures_do_not_stop_the_others(pm: pluggy.PluginManager) -> None:
    pm.register(
        Agents({"oral-explanation": Recorder(fail=frozenset({"task-3", "task-7"}))}),
        name="story-agents",
    )

    summary = await run_tasks(make_tasks(10), pm=pm)

    assert summary["success"] == 8
    assert summary["failed"] == 2
    assert [e["task_id"] for e in summary["errors"]] == ["task-3", "task-7"]
    assert {e["error_type"] for e in summary["errors"]} == {"ValueError"}
    assert summary["total"] == summary["success"] + summary["failed"] + summary["skipped"]


# --- routing: choose_agent -------------------------------------------------------------

AGENTS = ["clarification-path", "oral-explanation", "memory-anchor", "comparison-table"]


def choose(pm: pluggy.PluginManager, node: Mapping[str, Any], **settings: Any) -> str | None:
    context = {"settings": Settings(**settings), "material": []}
    result: str | None = pm.hook.choose_agent(node=node, context=context, agents=AGENTS)
    return result


@pytest.mark.parametrize(
    ("node", "agent"),
    [
        ({"color": "1"}, "oral-explanation"),
        ({"color": "6"}, "clarification-path"),
        ({"color": "3"}, "clarification-path"),
        ({"color": "4"}, "clarification-path"),
        ({"color": "#00FF00"}, "clarification-path"),
        ({}, "clarification-path"),
        ({"color": 1}, "clarification-path"),
    ],
)
def test_the_default_colour_map(pm: pluggy.PluginManager, node: dict[str, Any], agent: str) -> None:
    assert choose(pm, node) == agent


def test_without_settings_the_default_map_is_used(pm: pluggy.PluginManager) -> None:
    for context in ({}, {"settings": "not settings"}):
        assert pm.hook.choose_agent(node={"color": "1"}, context=context, agents=AGENTS) == (
            "oral-explanation"
        )


def test_a_custom_colour_map(pm: pluggy.PluginManager) -> None:
    color_map = {"2": "memory-anchor", "6": "comparison-table", "#FFAA00": "oral-explanation"}
    assert choose(pm, {"color": "2"}, color_map=color_map) == "memory-anchor"
    assert choose(pm, {"color": "1"}, color_map=color_map) == "comparison-table"
    assert choose(pm, {"color": "#ffaa00"}, color_map=color_map) == "oral-explanation"
    assert choose(pm, {"color": "#FFAA00"}, color_map=color_map) == "oral-explanation"


def test_a_custom_map_without_colour_6_falls_back_to_its_first_agent(
    pm: pluggy.PluginManager,
) -> None:
    color_map = {"2": "memory-anchor", "4": "comparison-table"}
    assert choose(pm, {"color": "5"}, color_map=color_map) == "memory-anchor"


def test_an_empty_colour_map_chooses_nothing(pm: pluggy.PluginManager) -> None:
    assert choose(pm, {"color": "1"}, color_map={}) is None


@given(color=st.one_of(st.none(), st.integers(), st.text(max_size=8)))
def test_the_default_router_always_names_an_agent_of_the_map(color: Any) -> None:
    assert choose(core_plugin_manager(), {"color": color}) in set(DEFAULT_COLOR_MAP.values())


class FixedRouter:
    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls: list[tuple[Mapping[str, Any], Sequence[str]]] = []

    @hookimpl
    def choose_agent(self, node: Mapping[str, Any], agents: Sequence[str]) -> str | None:
        self.calls.append((node, agents))
        return self.answer


class TryfirstRouter(FixedRouter):
    @hookimpl(tryfirst=True)
    def choose_agent(self, node: Mapping[str, Any], agents: Sequence[str]) -> str | None:
        return self.answer


def test_a_plugin_router_wins_over_the_colour_map(pm: pluggy.PluginManager) -> None:
    router = FixedRouter("memory-anchor")
    pm.register(router)
    assert choose(pm, {"color": "1"}) == "memory-anchor"
    assert router.calls == [({"color": "1"}, AGENTS)]


def test_a_tryfirst_router_wins_over_later_routers(pm: pluggy.PluginManager) -> None:
    pm.register(TryfirstRouter("comparison-table"))
    pm.register(FixedRouter("memory-anchor"))
    assert choose(pm, {"color": "1"}) == "comparison-table"


def test_a_router_that_returns_none_defers_to_the_colour_map(pm: pluggy.PluginManager) -> None:
    router = FixedRouter(None)
    pm.register(router)
    assert choose(pm, {"color": "1"}) == "oral-explanation"
    assert len(router.calls) == 1


def test_built_in_hook_implementations_give_no_argument_a_default() -> None:
    # pluggy before 1.7 does not pass a hook argument whose parameter has a default:
    # the engine would never see the run's policy.
    import inspect as inspect_module

    from command_handlers.default_plugins import engine_backend as backend
    from command_handlers.default_plugins import routing

    for function in (backend.execute_tasks, routing.choose_agent):
        defaults = [
            name
            for name, parameter in inspect_module.signature(function).parameters.items()
            if parameter.default is not inspect_module.Parameter.empty
        ]
        assert defaults == [], function
