"""The plugin layer: the plugin manager, the executor registry and the ``run_tasks`` facade.

This is the one bridge between the engine and everything else: handlers, the
command line and plugins build :class:`AsyncTask` objects and call
:func:`run_tasks`, which routes each task to the executor a plugin registered
for its ``agent_name`` and runs them through the ``execute_tasks`` hook (by
default the engine).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import operator
import os
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any, Callable

import pluggy

from command_handlers import hookspecs
from command_handlers.async_execution_engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DEPENDENCY_LIMIT,
    AsyncTask,
    DependencyCycleError,
    RateLimit,
    RetryPolicy,
    RunPolicy,
    TaskTimeoutError,
)
from command_handlers.default_plugins import command_agent, engine_backend, llm_agents, routing
from command_handlers.settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "AsyncTask",
    "DependencyCycleError",
    "DuplicateAgentError",
    "ExecutorRegistry",
    "RateLimit",
    "RetryPolicy",
    "RunInfo",
    "RunPolicy",
    "TaskTimeoutError",
    "UnknownAgentError",
    "collect_executors",
    "get_plugin_manager",
    "run_tasks",
]

logger = logging.getLogger("command_handlers.plugins")

#: Plugins installed under this entry-point group are loaded by :func:`get_plugin_manager`.
ENTRY_POINT_GROUP = "command_handlers"
#: A comma-separated allowlist of entry-point plugin names (empty: load none).
LOAD_PLUGINS_ENV = "COMMAND_HANDLERS_LOAD_PLUGINS"

#: The built-in plugins, by the name they are registered under.
DEFAULT_PLUGINS: Mapping[str, object] = {
    "engine": engine_backend,
    "color-router": routing,
    "llm-agents": llm_agents,
    "command-agent": command_agent,
}


class DuplicateAgentError(ValueError):
    """Two plugins registered executors under one agent name."""


class UnknownAgentError(LookupError):
    """A task names an agent that no plugin registered."""


@dataclass(frozen=True)
class RunInfo:
    """What listeners learn about a run.

    Attributes:
        run_id: A fresh id for the run.
        task_count: How many tasks it holds.
        mode: ``"parallel"`` or ``"dependency-aware"``.
        max_concurrency: The run's limit.
        tasks: The run's tasks, in input order.
    """

    run_id: str
    task_count: int
    mode: str
    max_concurrency: int
    tasks: tuple[AsyncTask, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class _Registration:
    executor: Callable[[AsyncTask], Awaitable[Any]]
    plugin: str
    max_concurrency: int | None
    description: str
    override: bool
    rate: RateLimit | None = None


class ExecutorRegistry:
    """The executors plugins registered, by agent name."""

    def __init__(self) -> None:
        self._agents: dict[str, _Registration] = {}

    def add(
        self,
        plugin: str,
        agent_name: str,
        executor: Callable[[AsyncTask], Awaitable[Any]],
        max_concurrency: int | None = None,
        *,
        description: str = "",
        override: bool = False,
        rate: RateLimit | float | str | None = None,
    ) -> None:
        """Register ``executor`` for ``agent_name`` on behalf of ``plugin``.

        Args:
            plugin: The registering plugin's name.
            agent_name: The agent the executor serves.
            executor: ``async def (task) -> dict``.
            max_concurrency: At most this many calls of this agent at once.
            description: One line saying what the agent does (routers read it).
            override: Win over another plugin's registration of the same name.
            rate: At most this many calls of this agent start per second
                (``"10/min"``, a number per second, or a :class:`RateLimit`).

        Raises:
            TypeError: ``executor`` is not callable.
            ValueError: ``max_concurrency`` is not a positive int.
            DuplicateAgentError: Another plugin registered the name and neither
                or both override.
        """
        if not callable(executor):
            raise TypeError(
                f"plugin {plugin!r}: executor for agent {agent_name!r} must be callable"
            )
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ValueError(
                f"plugin {plugin!r}: max_concurrency of agent {agent_name!r} must be a positive"
                f" int, got {max_concurrency!r}"
            )
        try:
            limit = RateLimit.parse(rate) if rate is not None else None
        except ValueError as error:
            raise ValueError(f"plugin {plugin!r}: agent {agent_name!r}: {error}") from None
        new = _Registration(executor, plugin, max_concurrency, description, override, limit)
        old = self._agents.get(agent_name)
        if old is not None and old.override == override:
            raise DuplicateAgentError(
                f"agent {agent_name!r} is registered by both plugin {old.plugin!r} and plugin"
                f" {plugin!r}; pass override=True in the one that should win"
            )
        if old is None or override:
            self._agents[agent_name] = new

    @property
    def names(self) -> list[str]:
        """The registered agent names, sorted."""
        return sorted(self._agents)

    def describe(self) -> dict[str, str]:
        """Return agent name -> description, sorted by name."""
        return {name: self._agents[name].description for name in self.names}

    def owner(self, agent_name: str) -> str:
        """Return the name of the plugin that serves ``agent_name``.

        Args:
            agent_name: A registered agent.

        Returns:
            The plugin's name.

        Raises:
            UnknownAgentError: Nobody registered the agent.
        """
        return self._lookup(agent_name).plugin

    def limits(self) -> dict[str, int]:
        """Return agent name -> its own limit, for the agents that have one."""
        return {
            name: reg.max_concurrency
            for name, reg in self._agents.items()
            if reg.max_concurrency is not None
        }

    def rates(self) -> dict[str, RateLimit]:
        """Return agent name -> its rate limit, for the agents that have one."""
        return {name: reg.rate for name, reg in self._agents.items() if reg.rate is not None}

    def _lookup(self, agent_name: str) -> _Registration:
        try:
            return self._agents[agent_name]
        except KeyError:
            raise UnknownAgentError(
                f"no executor registered for agent {agent_name!r}; registered agents: "
                + (", ".join(self.names) or "none")
            ) from None

    def router(self) -> Callable[[AsyncTask], Awaitable[Any]]:
        """Return a function that starts each task on its agent's executor.

        Returns:
            ``route(task)``, as :meth:`route`, with the executors looked up once.
        """
        executors = {name: reg.executor for name, reg in self._agents.items()}

        def route(task: AsyncTask) -> Awaitable[Any]:
            executor = executors.get(task.agent_name)
            if executor is None:
                self._lookup(task.agent_name)  # raises UnknownAgentError
            return executor(task)  # type: ignore[misc]

        return route

    def route(self, task: AsyncTask) -> Awaitable[Any]:
        """Start the work of ``task`` on its agent's executor.

        Args:
            task: The task.

        Returns:
            The executor's awaitable.

        Raises:
            UnknownAgentError: Nobody registered ``task.agent_name``.
        """
        return self._lookup(task.agent_name).executor(task)


def get_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """Build a new plugin manager: hook specs, built-in plugins and installed plugins.

    Each call returns a new manager, so programs and tests never share hidden
    state. Installed plugins are those under the ``command_handlers`` entry-point
    group; the environment variable ``COMMAND_HANDLERS_LOAD_PLUGINS``, when set,
    is a comma-separated allowlist of their names (empty: load none).

    Args:
        load_entry_points: Load installed plugins (``False`` for none).

    Returns:
        The plugin manager.
    """
    pm = pluggy.PluginManager("command_handlers")
    pm.add_hookspecs(hookspecs)
    for name, plugin in DEFAULT_PLUGINS.items():
        pm.register(plugin, name=name)
    if load_entry_points:
        allowed = os.environ.get(LOAD_PLUGINS_ENV)
        if allowed is None:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        else:
            for name in filter(None, (n.strip() for n in allowed.split(","))):
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    return pm


def _plugin_name(pm: pluggy.PluginManager, impl: pluggy.HookImpl) -> str:
    return pm.get_name(impl.plugin) or impl.plugin_name


def collect_executors(
    pm: pluggy.PluginManager, settings: Settings | None = None
) -> ExecutorRegistry:
    """Ask every plugin to register its executors.

    Args:
        pm: The plugin manager.
        settings: The run's settings (defaults when ``None``).

    Returns:
        The registry of every agent registered.

    Raises:
        DuplicateAgentError: Two plugins registered one agent name.
    """
    registry = ExecutorRegistry()
    arguments: dict[str, Any] = {"settings": settings or Settings()}
    for impl in reversed(pm.hook.register_executors.get_hookimpls()):
        plugin = _plugin_name(pm, impl)

        def register(
            agent_name: str,
            executor: Callable[[AsyncTask], Awaitable[Any]],
            max_concurrency: int | None = None,
            *,
            description: str = "",
            override: bool = False,
            rate: RateLimit | float | str | None = None,
            _plugin: str = plugin,
        ) -> None:
            registry.add(
                _plugin,
                agent_name,
                executor,
                max_concurrency,
                description=description,
                override=override,
                rate=rate,
            )

        arguments["register"] = register
        impl.function(*(arguments[name] for name in impl.argnames))
    return registry


def _adapt(
    function: Callable[..., Any], positions: tuple[int, ...], arity: int
) -> Callable[..., Any]:
    """Make an implementation that takes some of a hook's arguments accept all of them."""
    if positions == tuple(range(arity)):
        return function
    if not positions:
        return lambda *args: function()
    if len(positions) == 1:
        only = positions[0]
        return lambda *args: function(args[only])
    pick = operator.itemgetter(*positions)
    return lambda *args: function(*pick(args))


def _is_coroutine_function(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(type(function), "__call__", None)  # noqa: B004 - an async __call__ method
    )


class _Listeners:
    """The implementations of one listener hook, called one by one and isolated."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        hook_name: str,
        extra: Callable[..., Any] | None = None,
    ) -> None:
        caller = getattr(pm.hook, hook_name)
        spec_args = tuple(caller.spec.argnames) if caller.spec else ()
        self.hook_name = hook_name
        self.impls = [
            (
                _adapt(
                    impl.function,
                    tuple(spec_args.index(name) for name in impl.argnames),
                    len(spec_args),
                ),
                _plugin_name(pm, impl),
            )
            for impl in reversed(caller.get_hookimpls())
            if not (impl.hookwrapper or impl.wrapper)
        ]
        self.is_async = any(
            _is_coroutine_function(impl.function)
            for impl in caller.get_hookimpls()
            if not (impl.hookwrapper or impl.wrapper)
        )
        if extra is not None:  # the caller's own callback, after the plugins
            self.impls.append((extra, ""))
            self.is_async = self.is_async or _is_coroutine_function(extra)

    def callback(self) -> Callable[..., Any] | None:
        """The cheapest callable that calls every implementation, or None if there is none."""
        if not self.impls:
            return None
        return self.call_async if self.is_async else self.call_sync

    def call_sync(self, *args: Any) -> None:
        """Call every implementation (all plain functions); log what raises."""
        for function, plugin in self.impls:
            try:
                function(*args)
            except Exception:  # pylint: disable=broad-exception-caught
                self._log(plugin, args)

    async def call_async(self, *args: Any) -> None:
        """Call every implementation, awaiting coroutines; log what raises."""
        for function, plugin in self.impls:
            try:
                outcome = function(*args)
                if outcome is not None and (
                    type(outcome) is CoroutineType or inspect.isawaitable(outcome)
                ):
                    await outcome
            except Exception:  # pylint: disable=broad-exception-caught
                self._log(plugin, args)

    def _log(self, plugin: str, args: tuple[Any, ...]) -> None:
        if plugin:
            logger.exception("plugin %r raised in %s; the run goes on", plugin, self.hook_name)
        else:
            logger.exception("progress_callback raised for task %r; the run goes on", args[0])


async def run_tasks(
    tasks: Iterable[AsyncTask],
    *,
    pm: pluggy.PluginManager | None = None,
    dependency_aware: bool = False,
    max_concurrency: int = DEFAULT_CONCURRENCY,
    progress_callback: Callable[[str, Any, str | None], Any] | None = None,
    settings: Settings | None = None,
    dependency_limit: int = DEFAULT_DEPENDENCY_LIMIT,
    policy: RunPolicy | None = None,
    use_cache: bool = False,
) -> dict[str, Any]:
    """Run tasks on the executors plugins registered, through the ``execute_tasks`` hook.

    Each task goes to the executor registered for its ``agent_name``; a task
    whose agent nobody registered fails (not the run) with an
    :class:`UnknownAgentError` listing the registered agents. Listener hooks
    hear of the run: ``on_run_start``, then per task ``on_task_start`` and
    ``on_task_progress`` (and ``on_task_retry`` before each retry), then
    ``on_run_end``; within one hook, plugins are called in pluggy's order (last
    registered first, ``tryfirst``/``trylast`` honoured), and
    ``progress_callback`` after them.

    Args:
        tasks: The tasks.
        pm: The plugin manager; a new :func:`get_plugin_manager` when ``None``.
        dependency_aware: Respect ``task.dependencies`` (the dependency-aware mode).
        max_concurrency: At most this many tasks at once (1-20).
        progress_callback: Also told of each finished task, as
            ``(task_id, result, error)``; sync or async.
        settings: Handed to plugins (defaults when ``None``).
        dependency_limit: At most this many at once in the dependency-aware mode.
        policy: Timeouts, retries, rates, fail-fast, stop (see the engine).
            Agents' own ``rate=`` registrations join ``policy.agent_rates``;
            the ``is_retryable`` hook decides before the default rule.
        use_cache: Ask the ``cached_result`` hook first; a task it answers
            does not run and succeeds with the cached result.

    Returns:
        The summary dict, with the engine's keys, plus ``cached`` (the ids of
        the tasks answered from the cache).

    Raises:
        ValueError: Bad tasks or limits (as the engine raises them).
        TypeError: A task is not an :class:`AsyncTask`, or a limit not an int.
        DuplicateAgentError: Two plugins registered one agent name.
        RuntimeError: No plugin implements ``execute_tasks``.
    """
    pm = pm or get_plugin_manager()
    task_list = list(tasks)
    registry = collect_executors(pm, settings)
    run = RunInfo(
        run_id=uuid.uuid4().hex[:12],
        task_count=len(task_list),
        mode="dependency-aware" if dependency_aware else "parallel",
        max_concurrency=max_concurrency,
        tasks=tuple(task_list),
    )
    route = registry.router()
    cached: dict[str, Any] = {}
    if use_cache:
        for task in task_list:
            hit = pm.hook.cached_result(task=task)
            if hit is not None:
                cached[task.task_id] = dict(hit)
    # A cached task that no task still to run depends on never reaches the engine:
    # it costs no slot and no rate token.
    needed = (
        {dep for task in task_list if task.task_id not in cached for dep in task.dependencies or ()}
        if dependency_aware
        else set()
    )
    replayed = {task_id for task_id in cached if task_id not in needed}
    to_run = [task for task in task_list if task.task_id not in replayed]
    if len(replayed) < len(cached):
        route = _answer_from(cached, route)
    progress = _Listeners(pm, "on_task_progress", progress_callback)
    await _Listeners(pm, "on_run_start").call_async(run)
    for task in task_list:
        if task.task_id in replayed:
            await progress.call_async(task.task_id, cached[task.task_id], None)
    if to_run or not replayed:  # (an empty task list is the engine's to refuse)
        pending = pm.hook.execute_tasks(
            tasks=to_run,
            executor=route,
            dependency_aware=dependency_aware,
            max_concurrency=max_concurrency,
            dependency_limit=dependency_limit,
            agent_limits=registry.limits(),
            progress_callback=progress.callback(),
            start_callback=_Listeners(pm, "on_task_start").callback(),
            policy=_plugin_policy(pm, registry, policy),
        )
        if pending is None:
            raise RuntimeError("no plugin implements execute_tasks")
        summary: dict[str, Any] = dict(await pending)
    else:
        summary = _empty_summary()
    if replayed:
        summary = _with_replayed(summary, task_list, to_run, cached, replayed)
    summary["cached"] = sorted(cached)
    await _Listeners(pm, "on_run_end").call_async(run, summary)
    return summary


def _empty_summary() -> dict[str, Any]:
    return {
        "total": 0,
        "success": 0,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
        "results": [],
        "errors": [],
        "skipped_tasks": [],
        "cancelled_tasks": [],
    }


def _with_replayed(
    summary: Mapping[str, Any],
    task_list: list[AsyncTask],
    ran: list[AsyncTask],
    cached: Mapping[str, Any],
    replayed: set[str],
) -> dict[str, Any]:
    """Merge the answers replayed from the cache into the summary of the tasks that ran."""
    unsuccessful = {
        item["task_id"]
        for key in ("errors", "skipped_tasks", "cancelled_tasks")
        for item in summary.get(key, ())
    }
    ran_results = iter(summary.get("results", ()))
    succeeded = {
        task.task_id: next(ran_results) for task in ran if task.task_id not in unsuccessful
    }
    results = [
        cached[task.task_id] if task.task_id in replayed else succeeded[task.task_id]
        for task in task_list
        if task.task_id in replayed or task.task_id in succeeded
    ]
    merged = dict(summary)
    merged["total"] = len(task_list)
    merged["success"] = len(results)
    merged["results"] = results
    return merged


def _answer_from(
    cached: Mapping[str, Any], route: Callable[[AsyncTask], Awaitable[Any]]
) -> Callable[[AsyncTask], Awaitable[Any]]:
    """Route tasks with a cached result to that result, the others as before."""

    async def replay(result: Any) -> Any:
        return result

    def routed(task: AsyncTask) -> Awaitable[Any]:
        if task.task_id in cached:
            return replay(cached[task.task_id])
        return route(task)

    return routed


def _plugin_policy(
    pm: pluggy.PluginManager, registry: ExecutorRegistry, policy: RunPolicy | None
) -> RunPolicy:
    """The caller's policy, with the agents' rates and the plugins' retry hooks added."""
    policy = policy or RunPolicy()
    rates: dict[str, Any] = {**registry.rates(), **dict(policy.agent_rates)}
    retry_if = policy.retry_if
    if pm.hook.is_retryable.get_hookimpls():

        def decide(error: BaseException) -> bool | None:
            verdict = pm.hook.is_retryable(error=error)
            if verdict is None and policy.retry_if is not None:
                return policy.retry_if(error)
            return verdict  # type: ignore[no-any-return]

        retry_if = decide
    listeners = _Listeners(pm, "on_task_retry", policy.retry_callback)
    return dataclasses.replace(
        policy,
        agent_rates=rates,
        retry_if=retry_if,
        retry_callback=listeners.callback(),
    )
