"""The plugin layer: the plugin manager, the executor registry and the ``run_tasks`` facade.

This is the one bridge between the engine and everything else: handlers, the
command line and plugins build :class:`AsyncTask` objects and call
:func:`run_tasks`, which routes each task to the executor a plugin registered
for its ``agent_name`` and runs them through the ``execute_tasks`` hook (by
default the engine). Its parts live in :mod:`command_handlers._plugins`:
loading plugins by name, the registry, listener dispatch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from command_handlers._plugins.listeners import Listeners
from command_handlers._plugins.loading import (
    BUILTIN_PLUGINS,
    DISABLE_PLUGINS_ENV,
    ENTRY_POINT_GROUP,
    LOAD_PLUGINS_ENV,
    PLUGINS_ENV,
    PluginInfo,
    PluginLoadError,
    get_plugin_manager,
    list_plugins,
)
from command_handlers._plugins.registry import (
    DuplicateAgentError,
    ExecutorRegistry,
    UnknownAgentError,
    collect_executors,
    offloading,
)
from command_handlers._plugins.usage import (
    BYTES_PER_TOKEN,
    ESTIMATE_KEY,
    Exempt,
    agent_token_rates,
    estimated_tokens,
    spent_tokens,
    text_tokens,
)
from command_handlers.async_execution_engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DEPENDENCY_LIMIT,
    MAX_CONCURRENCY,
    MIN_CONCURRENCY,
    STATUSES,
    AsyncTask,
    Budget,
    DependencyCycleError,
    RateLimit,
    RetryPolicy,
    RunPolicy,
    StartLimit,
    TaskOutcome,
    TaskTimeoutError,
    TokenRate,
    check_limit,
)
from command_handlers.hookspecs import StopRun
from command_handlers.settings import Settings

__all__ = [
    "BUILTIN_PLUGINS",
    "BYTES_PER_TOKEN",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEPENDENCY_LIMIT",
    "DISABLE_PLUGINS_ENV",
    "ENTRY_POINT_GROUP",
    "ESTIMATE_KEY",
    "LOAD_PLUGINS_ENV",
    "MAX_CONCURRENCY",
    "MIN_CONCURRENCY",
    "PLUGINS_ENV",
    "STATUSES",
    "AsyncTask",
    "Budget",
    "DependencyCycleError",
    "DuplicateAgentError",
    "ExecutorRegistry",
    "PluginInfo",
    "PluginLoadError",
    "RateLimit",
    "RetryPolicy",
    "RunInfo",
    "RunPolicy",
    "StartLimit",
    "StopRun",
    "TaskOutcome",
    "TaskTimeoutError",
    "TokenRate",
    "UnknownAgentError",
    "check_limit",
    "collect_executors",
    "estimated_tokens",
    "get_plugin_manager",
    "list_plugins",
    "notify",
    "offloading",
    "run_tasks",
    "spent_tokens",
    "text_tokens",
]


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


async def notify(pm: pluggy.PluginManager, hook_name: str, **arguments: Any) -> StopRun | None:
    """Call every implementation of a listener hook; log what one raises and go on.

    Args:
        pm: The plugin manager.
        hook_name: A hook of :mod:`command_handlers.hookspecs`.
        **arguments: The hook's arguments, by name.

    Returns:
        The first :class:`~command_handlers.hookspecs.StopRun` a listener
        raised (not logged: the caller says it), else ``None``.
    """
    halt = _Halt()
    listeners = Listeners(pm, hook_name, stop=halt)
    spec = getattr(pm.hook, hook_name).spec
    names = spec.argnames if spec is not None else ()
    await listeners.call_async(*(arguments[name] for name in names))
    return halt.reason


class _Halt:
    """Keeps the first :class:`StopRun` a listener raised, and stops the run's calls."""

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self.stop = stop
        self.reason: StopRun | None = None

    def __call__(self, error: StopRun) -> None:
        if self.reason is None:
            self.reason = error
        if self.stop is not None:
            self.stop.set()


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
    hear of the run: ``on_run_start``, then per task ``on_task_start``,
    ``on_task_progress`` and ``on_task_end`` (and ``on_task_retry`` before
    each retry), then ``on_run_end``; ``prepare_task`` runs before each call
    of an executor, and what it raises fails that task. Within one hook,
    plugins are called in pluggy's order (last registered first,
    ``tryfirst``/``trylast`` honoured), and ``progress_callback`` after them.

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
            does not run and succeeds with the cached result (its outcome
            says ``cached``, with 0 attempts).

    A listener of ``on_run_start``, ``on_task_start`` or ``on_task_end``
    raising :class:`~command_handlers.hookspecs.StopRun` stops the run as
    ``policy.stop`` does: no new call starts.

    Returns:
        The summary dict, with the engine's keys, plus ``cached`` (the ids of
        the tasks answered from the cache) and, after a ``StopRun``,
        ``halted`` (its text).

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
    policy, halt = _halting(pm, policy)
    route = registry.router()
    prepare = Listeners(pm, "prepare_task")
    if prepare.impls:
        route = _prepared(route, prepare)
    cached = _cached_results(pm, task_list) if use_cache else {}
    replayed = _replayed(task_list, cached, dependency_aware)
    to_run = [task for task in task_list if task.task_id not in replayed]
    if len(replayed) < len(cached):
        route = _answer_from(cached, route)
    progress = Listeners(pm, "on_task_progress", progress_callback)
    ending = Listeners(pm, "on_task_end", stop=halt)
    end_callback = ending.callback()
    if end_callback is not None and len(replayed) < len(cached):
        end_callback = _marking_cached(cached, end_callback)
    await Listeners(pm, "on_run_start", stop=halt).call_async(run)
    for task in task_list:
        if task.task_id in replayed:
            result = cached[task.task_id]
            await progress.call_async(task.task_id, result, None)
            if ending.impls:
                await ending.call_async(task, _cached_outcome(result))
    if to_run or not replayed:  # (an empty task list is the engine's to refuse)
        pending = pm.hook.execute_tasks(
            tasks=to_run,
            executor=route,
            dependency_aware=dependency_aware,
            max_concurrency=max_concurrency,
            dependency_limit=dependency_limit,
            agent_limits=registry.limits(),
            progress_callback=progress.callback(),
            start_callback=Listeners(pm, "on_task_start", stop=halt).callback(),
            end_callback=end_callback,
            policy=_plugin_policy(pm, registry, policy, cached),
        )
        if pending is None:
            raise RuntimeError("no plugin implements execute_tasks")
        summary: dict[str, Any] = dict(await pending)
    else:
        summary = _empty_summary()
    if replayed:
        summary = _with_replayed(summary, task_list, to_run, cached, replayed)
    summary["cached"] = sorted(cached)
    if halt.reason is not None:
        summary["halted"] = str(halt.reason)
    await Listeners(pm, "on_run_end").call_async(run, summary)
    return summary


def _halting(pm: pluggy.PluginManager, policy: RunPolicy | None) -> tuple[RunPolicy, _Halt]:
    """The policy, with a stop event that a listener raising StopRun sets, as a signal would."""
    policy = policy or RunPolicy()
    hooks = (pm.hook.on_run_start, pm.hook.on_task_start, pm.hook.on_task_end)
    if policy.stop is None and any(hook.get_hookimpls() for hook in hooks):
        policy = dataclasses.replace(policy, stop=asyncio.Event())
    return policy, _Halt(policy.stop)


def _cached_results(pm: pluggy.PluginManager, tasks: list[AsyncTask]) -> dict[str, Any]:
    """Task id -> the result an earlier outcome gives it, for the tasks the cache answers."""
    cached: dict[str, Any] = {}
    for task in tasks:
        hit = pm.hook.cached_result(task=task)
        if hit is not None:
            cached[task.task_id] = dict(hit)
    return cached


def _replayed(
    tasks: list[AsyncTask], cached: Mapping[str, Any], dependency_aware: bool
) -> set[str]:
    """The cached tasks that never reach the backend: no task still to run depends on them.

    They cost no slot and no rate token.
    """
    needed = (
        {dep for task in tasks if task.task_id not in cached for dep in task.dependencies or ()}
        if dependency_aware
        else set()
    )
    return {task_id for task_id in cached if task_id not in needed}


def _cached_outcome(result: Any, outcome: TaskOutcome | None = None) -> TaskOutcome:
    """The outcome of a task an earlier outcome stood for: no call was made."""
    if outcome is not None:
        return dataclasses.replace(outcome, attempts=0, cached=True)
    return TaskOutcome(
        status="success",
        result=result,
        error=None,
        error_type=None,
        attempts=0,
        started=None,
        finished=time.time(),
        cached=True,
    )


def _marking_cached(
    cached: Mapping[str, Any], end_callback: Callable[..., Any]
) -> Callable[..., Any]:
    """Report the cached tasks that went through the backend (others need them) as cached."""

    def ended(task: AsyncTask, outcome: TaskOutcome) -> Any:
        if task.task_id in cached and outcome.status == "success":
            outcome = _cached_outcome(outcome.result, outcome)
        return end_callback(task, outcome)

    return ended


def _prepared(
    route: Callable[[AsyncTask], Awaitable[Any]], prepare: Listeners
) -> Callable[[AsyncTask], Awaitable[Any]]:
    """Route each task through the ``prepare_task`` hook first; its errors fail the task."""

    async def prepared(task: AsyncTask) -> Any:
        await prepare.call_strict(task)
        return await route(task)

    return prepared


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
    pm: pluggy.PluginManager,
    registry: ExecutorRegistry,
    policy: RunPolicy | None,
    cached: Mapping[str, Any] | None = None,
) -> RunPolicy:
    """The caller's policy, with the agents' limits and the plugins' retry hooks added."""
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
    listeners = Listeners(pm, "on_task_retry", policy.retry_callback)
    limits: list[StartLimit] = [*policy.limits, *agent_token_rates(registry.tpms())]
    if cached and limits:  # a replayed answer makes no call: it spends nothing
        limits = [Exempt(limit, frozenset(cached)) for limit in limits]
    return dataclasses.replace(
        policy,
        limits=limits,
        agent_rates=rates,
        retry_if=retry_if,
        retry_callback=listeners.callback(),
    )
