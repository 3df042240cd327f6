"""Loading plugins by name: built-ins imported only when enabled, ``-p``, blocking, listing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pluggy
import pytest

import command_handlers
from command_handlers import hookimpl, hookspecs
from command_handlers.hookspecs import WrittenAnswer
from command_handlers.plugins import (
    BUILTIN_PLUGINS,
    DISABLE_PLUGINS_ENV,
    LOAD_PLUGINS_ENV,
    PLUGINS_ENV,
    STATUSES,
    AsyncTask,
    PluginInfo,
    PluginLoadError,
    RetryPolicy,
    RunPolicy,
    TaskOutcome,
    UnknownAgentError,
    collect_executors,
    get_plugin_manager,
    list_plugins,
    notify,
    run_tasks,
)

#: Every subprocess of this module is killed after this many seconds.
SUBPROCESS_TIMEOUT = 60

BUILTIN_NAMES = [
    "engine",
    "color-router",
    "llm-agents",
    "command-agent",
    "journal",
    "progress",
    "model-router",
    "dask",
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees plugin names from the environment unless it sets them."""
    for name in (DISABLE_PLUGINS_ENV, PLUGINS_ENV, LOAD_PLUGINS_ENV):
        monkeypatch.delenv(name, raising=False)


def run_python(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (fresh ``sys.modules``); return the JSON it prints."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (DISABLE_PLUGINS_ENV, PLUGINS_ENV, LOAD_PLUGINS_ENV)
    }
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


IMPORTED = """
import json, sys
{setup}
print(json.dumps({{
    "modules": sorted(
        name for name in sys.modules if name.startswith("command_handlers.default_plugins.")
    ),
    "llm": "llm" in sys.modules,
    "rich": "rich" in sys.modules,
}}))
"""


def builtin_module(name: str) -> str:
    return BUILTIN_PLUGINS[name]


# -- built-ins are imported only when enabled ----------------------------------------


def test_the_built_in_plugins_are_listed_by_module_name() -> None:
    assert list(BUILTIN_PLUGINS) == BUILTIN_NAMES
    assert all(
        module.startswith("command_handlers.default_plugins.")
        for module in BUILTIN_PLUGINS.values()
    )


def test_importing_the_package_imports_no_built_in_plugin() -> None:
    seen = run_python(IMPORTED.format(setup="import command_handlers, command_handlers.plugins"))
    assert seen["modules"] == []
    assert seen["llm"] is False


def test_a_disabled_built_in_is_never_imported() -> None:
    seen = run_python(
        IMPORTED.format(
            setup=(
                "from command_handlers.plugins import get_plugin_manager\n"
                'get_plugin_manager(disabled=["journal", "progress", "model-router"])'
            )
        )
    )
    assert seen["modules"] == sorted(
        BUILTIN_PLUGINS[name]
        for name in ("engine", "color-router", "llm-agents", "command-agent", "dask")
    )
    for name in ("journal", "progress", "model_router"):
        assert f"command_handlers.default_plugins.{name}" not in seen["modules"]
    assert seen["rich"] is False  # only the progress display needs it


def test_building_a_manager_does_not_import_llm() -> None:
    seen = run_python(
        IMPORTED.format(
            setup="from command_handlers.plugins import get_plugin_manager\nget_plugin_manager()"
        )
    )
    assert seen["modules"] == sorted(BUILTIN_PLUGINS.values())
    assert seen["llm"] is False


def test_collecting_the_agents_does_not_import_llm_either() -> None:
    seen = run_python(
        IMPORTED.format(
            setup=(
                "from command_handlers.plugins import collect_executors, get_plugin_manager\n"
                "from command_handlers.settings import Settings\n"
                'settings = Settings(route="model")\n'
                "pm = get_plugin_manager(load_entry_points=False)\n"
                "pm.hook.configure(settings=settings, pm=pm)\n"
                "assert collect_executors(pm, settings).names"
            )
        )
    )
    assert seen["llm"] is False


# -- disabling -----------------------------------------------------------------------


def test_disabled_built_ins_are_blocked_and_not_registered() -> None:
    pm = get_plugin_manager(load_entry_points=False, disabled=["journal", "progress"])
    assert pm.is_blocked("journal")
    assert pm.is_blocked("progress")
    assert pm.get_plugin("journal") is None
    assert [name for name, plugin in pm.list_name_plugin() if plugin is not None] == [
        "engine",
        "color-router",
        "llm-agents",
        "command-agent",
        "model-router",
        "dask",
    ]


@pytest.mark.parametrize(
    "disabled",
    [
        ["journal,progress"],
        [" journal , progress ,"],
        ["journal", "progress"],
        ["journal,progress", "journal"],
    ],
)
def test_disabled_accepts_comma_separated_names(disabled: list[str]) -> None:
    pm = get_plugin_manager(load_entry_points=False, disabled=disabled)
    assert pm.is_blocked("journal")
    assert pm.is_blocked("progress")
    assert not pm.is_blocked("model-router")


def test_disabling_the_agents_leaves_no_agent() -> None:
    pm = get_plugin_manager(load_entry_points=False, disabled=["llm-agents,command-agent"])
    assert collect_executors(pm).names == []


def test_an_unknown_name_to_disable_is_an_error_listing_the_known_names() -> None:
    with pytest.raises(PluginLoadError) as caught:
        get_plugin_manager(load_entry_points=False, disabled=["journal", "jounral"])
    message = str(caught.value)
    assert "\n" not in message
    assert "'jounral'" in message
    assert "'journal'" not in message  # only the unknown one is reported
    for name in BUILTIN_NAMES:
        assert name in message
    assert isinstance(caught.value, ValueError)


def test_the_environment_disables_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, "journal, progress")
    pm = get_plugin_manager(load_entry_points=False, disabled=["model-router"])
    assert all(pm.is_blocked(name) for name in ("journal", "progress", "model-router"))
    assert pm.has_plugin("engine")


def test_an_unknown_name_in_the_environment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, "nope")
    with pytest.raises(PluginLoadError, match="cannot disable unknown plugin 'nope'"):
        get_plugin_manager(load_entry_points=False)


def test_an_empty_environment_variable_disables_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, " , ")
    monkeypatch.setenv(PLUGINS_ENV, "")
    pm = get_plugin_manager(load_entry_points=False)
    assert [name for name, _ in pm.list_name_plugin()] == BUILTIN_NAMES


# -- -p: modules loaded by import name -------------------------------------------------

P_MODULE = """
from command_handlers import hookimpl

ENDED = []


async def shout(task):
    return {"text": task.node_data["text"].upper()}


@hookimpl
def register_executors(register):
    register("shout", shout, description="Shouts the note back.")


@hookimpl
def on_task_end(task, outcome):
    ENDED.append((task.task_id, outcome.status))
"""


@pytest.fixture
def p_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A plugin module ``ch_loading_p_plugin`` on ``sys.path``, not imported yet."""
    name = "ch_loading_p_plugin"
    (tmp_path / f"{name}.py").write_text(P_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)  # imported by the test, after monkeypatch looked


async def test_a_p_module_is_registered_under_its_module_name(p_module: str) -> None:
    pm = get_plugin_manager(load_entry_points=False, plugins=[p_module])
    plugin = pm.get_plugin(p_module)
    assert plugin is sys.modules[p_module]
    registry = collect_executors(pm)
    assert registry.owner("shout") == p_module
    assert registry.describe()["shout"] == "Shouts the note back."

    summary = await run_tasks([AsyncTask("t1", "shout", {"text": "hi"})], pm=pm)

    assert summary["results"] == [{"text": "HI"}]
    assert plugin.ENDED == [("t1", "success")]


def test_the_environment_loads_p_modules(p_module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, f" {p_module} ,")
    pm = get_plugin_manager(load_entry_points=False)
    assert pm.get_plugin(p_module) is sys.modules[p_module]


def test_a_p_module_named_twice_is_loaded_once(p_module: str) -> None:
    pm = get_plugin_manager(load_entry_points=False, plugins=[p_module, f"{p_module},{p_module}"])
    assert [name for name, _ in pm.list_name_plugin()].count(p_module) == 1


def test_a_missing_p_module_is_a_one_line_error_naming_it() -> None:
    with pytest.raises(PluginLoadError) as caught:
        get_plugin_manager(load_entry_points=False, plugins=["ch_no_such_plugin_module"])
    message = str(caught.value)
    assert "\n" not in message
    assert "'ch_no_such_plugin_module'" in message
    assert "ModuleNotFoundError" in message


def test_a_p_module_that_raises_on_import_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "ch_loading_broken_plugin"
    (tmp_path / f"{name}.py").write_text(
        'raise RuntimeError("first line\\n  second line")\n', encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(PluginLoadError) as caught:
        get_plugin_manager(load_entry_points=False, plugins=[name])
    message = str(caught.value)
    assert "\n" not in message
    assert f"{name!r}" in message
    assert "RuntimeError: first line second line" in message
    assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_p_no_name_blocks_a_built_in(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if where == "environment":
        monkeypatch.setenv(PLUGINS_ENV, "no:journal")
        pm = get_plugin_manager(load_entry_points=False)
    else:
        pm = get_plugin_manager(load_entry_points=False, plugins=["no:journal"])
    assert pm.is_blocked("journal")
    assert pm.get_plugin("journal") is None
    assert pm.has_plugin("progress")


def test_p_no_name_of_an_unknown_plugin_is_an_error() -> None:
    with pytest.raises(PluginLoadError, match="cannot disable unknown plugin 'ghost'"):
        get_plugin_manager(load_entry_points=False, plugins=["no:ghost"])


def test_p_no_name_blocks_a_p_module_before_it_is_imported(p_module: str) -> None:
    pm = get_plugin_manager(load_entry_points=False, plugins=[p_module, f"no:{p_module}"])
    assert pm.is_blocked(p_module)
    assert p_module not in sys.modules


def test_p_of_a_built_in_module_is_no_crash() -> None:
    module = BUILTIN_PLUGINS["journal"]

    pm = get_plugin_manager(load_entry_points=False, plugins=[module])

    assert pm.get_plugin("journal") is sys.modules[module]  # taken as already loaded
    assert pm.get_plugin(module) is None


# -- list_plugins --------------------------------------------------------------------


def test_list_plugins_lines(p_module: str) -> None:
    pm = get_plugin_manager(load_entry_points=False, disabled=["journal"], plugins=[p_module])
    infos = list_plugins(pm)
    assert [info.name for info in infos] == [*BUILTIN_NAMES, p_module]
    by_name = {info.name: info for info in infos}
    assert by_name["engine"] == PluginInfo("engine", "built-in", BUILTIN_PLUGINS["engine"])
    assert by_name["journal"] == PluginInfo(
        "journal", "built-in", BUILTIN_PLUGINS["journal"], enabled=False
    )
    assert by_name[p_module] == PluginInfo(p_module, "-p", p_module)
    assert by_name["engine"].line() == (
        "engine           built-in     command_handlers.default_plugins.engine_backend"
    )
    assert by_name["journal"].line() == (
        "journal          built-in     command_handlers.default_plugins.journal  (disabled)"
    )
    assert by_name[p_module].line() == f"{p_module:<16} -p           {p_module}"
    assert all("\n" not in info.line() for info in infos)


def test_list_plugins_of_the_default_manager() -> None:
    infos = list_plugins(get_plugin_manager(load_entry_points=False))
    assert [(info.name, info.source, info.enabled) for info in infos] == [
        (name, "built-in", True) for name in BUILTIN_NAMES
    ]


EP_MODULE = """
from command_handlers import hookimpl


@hookimpl
def register_executors(register):
    async def answer(task):
        return {"text": "ep"}

    register("ep-agent", answer)
"""


@pytest.fixture
def entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed distribution with the entry point ``ch_ep = ch_loading_ep_plugin``."""
    module = "ch_loading_ep_plugin"
    (tmp_path / f"{module}.py").write_text(EP_MODULE, encoding="utf-8")
    dist_info = tmp_path / "ch_loading_ep-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ch-loading-ep\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[command_handlers]\nch_ep = {module}\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    yield module
    sys.modules.pop(module, None)


def test_an_installed_plugin_is_listed_and_can_be_disabled(entry_point_plugin: str) -> None:
    loaded = get_plugin_manager()
    assert "ep-agent" in collect_executors(loaded).names
    assert list_plugins(loaded)[-1] == PluginInfo("ch_ep", "entry point", entry_point_plugin)

    sys.modules.pop(entry_point_plugin, None)
    blocked = get_plugin_manager(disabled=["ch_ep"])
    assert blocked.is_blocked("ch_ep")
    assert "ep-agent" not in collect_executors(blocked).names
    assert entry_point_plugin not in sys.modules
    assert list_plugins(blocked)[-1] == PluginInfo(
        "ch_ep", "entry point", entry_point_plugin, enabled=False
    )
    assert list_plugins(blocked)[-1].line().endswith("  (disabled)")


# -- what the package exports ----------------------------------------------------------


def test_hookimpl_lives_in_hookspecs_and_is_re_exported() -> None:
    assert command_handlers.hookimpl is hookspecs.hookimpl
    assert command_handlers.PluginLoadError is PluginLoadError
    assert command_handlers.get_plugin_manager is get_plugin_manager


# -- on_task_end through run_tasks: the status is data -----------------------------------


class Agents:
    """Serves ``executors`` (agent name -> executor)."""

    def __init__(self, executors: Mapping[str, Any]) -> None:
        self.executors = executors

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        for name, executor in self.executors.items():
            register(name, executor)


class Ends:
    """Keeps every outcome ``on_task_end`` hears, by task id, in the order heard."""

    def __init__(self) -> None:
        self.outcomes: dict[str, TaskOutcome] = {}

    @hookimpl
    def on_task_end(self, task: AsyncTask, outcome: TaskOutcome) -> None:
        assert task.task_id not in self.outcomes, "on_task_end heard twice for one task"
        self.outcomes[task.task_id] = outcome


def core_manager(*plugins: object) -> pluggy.PluginManager:
    """The engine and the router, no built-in agent, listener or journal; plus ``plugins``."""
    pm = get_plugin_manager(
        load_entry_points=False,
        disabled=["llm-agents,command-agent,journal,progress,model-router"],
    )
    for plugin in plugins:
        pm.register(plugin)
    return pm


async def test_an_error_that_reads_like_a_cancel_is_a_failure() -> None:
    async def refuse(task: AsyncTask) -> Any:
        raise RuntimeError("cancelled: quota exceeded")

    async def fine(task: AsyncTask) -> Any:
        return {"text": "ok"}

    ends = Ends()
    pm = core_manager(Agents({"refuse": refuse, "fine": fine}), ends)
    tasks = [
        AsyncTask("q", "refuse", {}),
        AsyncTask("after-q", "fine", {}, dependencies=["q"]),
        AsyncTask("ok", "fine", {}),
    ]

    summary = await run_tasks(tasks, pm=pm, dependency_aware=True)

    assert (summary["failed"], summary["skipped"], summary["cancelled"]) == (1, 1, 0)
    failed = ends.outcomes["q"]
    assert failed.status == "failed"
    assert (failed.error, failed.error_type) == ("cancelled: quota exceeded", "RuntimeError")
    assert (failed.result, failed.attempts, failed.cached) == (None, 1, False)
    assert failed.started is not None
    assert failed.started <= failed.finished
    skipped = ends.outcomes["after-q"]
    assert (skipped.status, skipped.error, skipped.error_type) == (
        "skipped",
        "dependency 'q' failed",
        None,
    )
    assert (skipped.attempts, skipped.started) == (0, None)
    ok = ends.outcomes["ok"]
    assert (ok.status, ok.result, ok.error, ok.attempts) == ("success", {"text": "ok"}, None, 1)
    assert set(ends.outcomes) == {"q", "after-q", "ok"}
    assert all(outcome.status in STATUSES for outcome in ends.outcomes.values())


async def test_cancelled_outcomes_carry_the_reason() -> None:
    async def refuse(task: AsyncTask) -> Any:
        raise RuntimeError("down")

    async def fine(task: AsyncTask) -> Any:
        return {"text": "ok"}

    ends = Ends()
    pm = core_manager(Agents({"refuse": refuse, "fine": fine}), ends)
    tasks = [AsyncTask("x", "refuse", {}), AsyncTask("y", "fine", {}), AsyncTask("z", "fine", {})]

    await run_tasks(tasks, pm=pm, max_concurrency=1, policy=RunPolicy(fail_fast=True))

    assert ends.outcomes["x"].status == "failed"
    for task_id in ("y", "z"):
        outcome = ends.outcomes[task_id]
        assert (outcome.status, outcome.error, outcome.attempts) == (
            "cancelled",
            "fail-fast: task 'x' failed",
            0,
        )

    stopped = Ends()
    stop = asyncio.Event()
    stop.set()
    pm = core_manager(Agents({"fine": fine}), stopped)
    await run_tasks([AsyncTask("s", "fine", {})], pm=pm, policy=RunPolicy(stop=stop))
    assert (stopped.outcomes["s"].status, stopped.outcomes["s"].error) == ("cancelled", "stopped")


async def test_a_retried_task_reports_its_attempts() -> None:
    calls: list[str] = []

    async def flaky(task: AsyncTask) -> Any:
        calls.append(task.task_id)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return {"text": "at last"}

    ends = Ends()
    pm = core_manager(Agents({"flaky": flaky}), ends)
    policy = RunPolicy(retry=RetryPolicy(retries=5, base_delay=0.0))

    await run_tasks([AsyncTask("f", "flaky", {})], pm=pm, policy=policy)

    assert (ends.outcomes["f"].status, ends.outcomes["f"].attempts) == ("success", 3)


class Preparer:
    """A ``prepare_task`` that refuses tasks marked ``refuse`` and completes the others' prompt."""

    def __init__(self) -> None:
        self.prepared: list[str] = []

    @hookimpl
    async def prepare_task(self, task: AsyncTask) -> None:
        self.prepared.append(task.task_id)
        await asyncio.sleep(0)
        if task.node_data.get("refuse"):
            raise ValueError("the note it builds on has no answer")
        task.node_data["prompt"] = task.node_data["prompt"] + " Answer in French."


async def test_prepare_task_edits_what_the_executor_sees_and_its_errors_fail_the_task() -> None:
    seen: dict[str, str] = {}

    async def answer(task: AsyncTask) -> Any:
        seen[task.task_id] = task.node_data["prompt"]
        return {"text": task.node_data["prompt"]}

    ends = Ends()
    preparer = Preparer()
    pm = core_manager(Agents({"tutor": answer}), preparer, ends)
    tasks = [
        AsyncTask("refused", "tutor", {"prompt": "A?", "refuse": True}),
        AsyncTask("dependent", "tutor", {"prompt": "B?"}, dependencies=["refused"]),
        AsyncTask("fine", "tutor", {"prompt": "C?"}),
    ]

    summary = await run_tasks(tasks, pm=pm, dependency_aware=True)

    assert seen == {"fine": "C? Answer in French."}  # the refused task never reached it
    assert sorted(preparer.prepared) == ["fine", "refused"]
    refused = ends.outcomes["refused"]
    assert (refused.status, refused.error, refused.error_type) == (
        "failed",
        "the note it builds on has no answer",
        "ValueError",
    )
    assert summary["errors"][0]["error"] == "the note it builds on has no answer"
    assert summary["skipped_tasks"] == [{"task_id": "dependent", "blocked_by": "refused"}]
    assert (ends.outcomes["dependent"].status, ends.outcomes["dependent"].error) == (
        "skipped",
        "dependency 'refused' failed",
    )
    assert ends.outcomes["fine"].result == {"text": "C? Answer in French."}


async def test_prepare_task_runs_before_each_attempt() -> None:
    calls = 0

    async def flaky(task: AsyncTask) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("reset")
        return {"text": task.node_data["prompt"]}

    preparer = Preparer()
    pm = core_manager(Agents({"flaky": flaky}), preparer)
    policy = RunPolicy(retry=RetryPolicy(retries=2, base_delay=0.0))

    summary = await run_tasks([AsyncTask("t", "flaky", {"prompt": "Q."})], pm=pm, policy=policy)

    assert preparer.prepared == ["t", "t"]
    assert summary["success"] == 1


class Cache:
    """A ``cached_result`` answering the task ids in ``answers``."""

    def __init__(self, answers: Mapping[str, dict[str, Any]]) -> None:
        self.answers = answers

    @hookimpl
    def cached_result(self, task: AsyncTask) -> dict[str, Any] | None:
        return self.answers.get(task.task_id)


async def test_cached_tasks_end_as_cached_with_no_attempt() -> None:
    calls: list[str] = []

    async def answer(task: AsyncTask) -> Any:
        calls.append(task.task_id)
        return {"text": f"fresh {task.task_id}"}

    ends = Ends()
    cache = Cache({"hit": {"text": "old hit"}, "needed": {"text": "old needed"}})
    pm = core_manager(Agents({"tutor": answer}), cache, ends)
    tasks = [
        AsyncTask("hit", "tutor", {}),  # nobody needs it: never reaches the engine
        AsyncTask("needed", "tutor", {}),  # a task still to run needs it: through the engine
        AsyncTask("miss", "tutor", {}, dependencies=["needed"]),
    ]

    summary = await run_tasks(tasks, pm=pm, dependency_aware=True, use_cache=True)

    assert calls == ["miss"]
    assert summary["cached"] == ["hit", "needed"]
    assert summary["success"] == 3
    for task_id, text in (("hit", "old hit"), ("needed", "old needed")):
        outcome = ends.outcomes[task_id]
        assert (outcome.status, outcome.result, outcome.cached, outcome.attempts) == (
            "success",
            {"text": text},
            True,
            0,
        )
        assert outcome.error is None
    miss = ends.outcomes["miss"]
    assert (miss.status, miss.cached, miss.attempts) == ("success", False, 1)
    assert miss.result == {"text": "fresh miss"}


async def test_without_use_cache_the_cache_is_not_asked() -> None:
    calls: list[str] = []

    async def answer(task: AsyncTask) -> Any:
        calls.append(task.task_id)
        return {"text": "fresh"}

    ends = Ends()
    pm = core_manager(Agents({"tutor": answer}), Cache({"hit": {"text": "old"}}), ends)

    await run_tasks([AsyncTask("hit", "tutor", {})], pm=pm)

    assert calls == ["hit"]
    assert (ends.outcomes["hit"].cached, ends.outcomes["hit"].attempts) == (False, 1)


# -- notify ------------------------------------------------------------------------------


async def test_notify_calls_every_listener_and_logs_what_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[tuple[str, int]] = []

    class Broken:
        @hookimpl(tryfirst=True)
        def on_canvas_written(self, answers: Any) -> None:
            raise RuntimeError("listener broke")

    class Healthy:
        @hookimpl
        async def on_canvas_written(self, canvas_path: Path, answers: Any) -> None:
            await asyncio.sleep(0)
            heard.append((str(canvas_path), len(answers)))

    pm = core_manager()
    pm.register(Broken(), name="broken-plugin")
    pm.register(Healthy(), name="healthy")
    answer = WrittenAnswer("n:a", "n", "a", "h", "card", None)

    with caplog.at_level(logging.ERROR, logger="command_handlers.plugins"):
        await notify(pm, "on_canvas_written", canvas_path=Path("x.canvas"), answers=[answer])

    assert heard == [("x.canvas", 1)]
    messages = [r.getMessage() for r in caplog.records if r.name == "command_handlers.plugins"]
    assert messages == ["plugin 'broken-plugin' raised in on_canvas_written; the run goes on"]


# -- the registry: fingerprints and internal agents ----------------------------------------


def test_fingerprints_and_internal_agents_through_register() -> None:
    async def answer(task: AsyncTask) -> Any:
        return {}

    @hookimpl
    def register_executors(register: Callable[..., None]) -> None:
        register("public", answer, description="Answers.", fingerprint="model-x")
        register("helper", answer, description="Helps.", internal=True)

    pm = core_manager(SimpleNamespace(register_executors=register_executors))
    registry = collect_executors(pm)
    assert registry.names == ["public"]
    assert registry.describe() == {"public": "Answers."}
    assert registry.fingerprint("public") == "model-x"
    assert registry.fingerprint("helper") is None
    assert registry.owner("helper") is not None
    with pytest.raises(UnknownAgentError, match="'ghost'"):
        registry.fingerprint("ghost")
