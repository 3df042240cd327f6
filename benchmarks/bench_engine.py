"""Benchmark of command_handlers.async_execution_engine against two baselines.

Measures, in one run of this script:

1. cost per task (microseconds) and peak memory growth per task (bytes) of
   1,000 / 10,000 / 100,000 no-op tasks at limit 12, for the engine, the
   story's ``asyncio.gather`` + ``asyncio.Semaphore`` sketch and a minimal pool
   of worker coroutines on an asyncio.Queue, keeping outcomes by task id, as the
   asyncio docs recipe does (the floor);
2. makespan / lower bound of 200 tasks of 10 ms at limit 12;
3. makespan / lower bound of a seeded random DAG of 200 tasks in the engine's
   dependency-aware mode, at dependency_limit 5 (the default) and 12;
4. the delay per edge of a chain of 20 tasks of 1 ms in dependency-aware mode;
5. the plugin layer: cost per task of 10,000 and 100,000 no-op tasks through
   the ``run_tasks`` facade (with no listener, and with three listener
   plugins) against the engine's ``execute_parallel`` alone;
6. listener dispatch: nanoseconds per call of N = 1, 3, 10 do-nothing
   plain-function listeners of ``on_task_progress`` and of ``on_task_end``
   through the plugin layer's ``Listeners(pm, hook).callback()``, against a
   plain ``for f in functions: f(...)`` loop over the same N functions (and
   pluggy's own hook call, for information).

Every figure is measured in a fresh process (this script re-invoked with
``--one FIGURE PARAMS``, which prints one JSON line); repeats are interleaved
across figures and the best one is kept, since the machine's speed drifts.
Time and memory are measured in separate passes (tracemalloc slows everything).

Usage::

    python benchmarks/bench_engine.py [--repeats 5] [--mem-repeats N] [--quick]
                                      [--only SECTION[,SECTION]] [--json FILE]

Sections: noop, makespan, dag, chain, facade, dispatch (``--only facade`` runs
just that; ``--only dispatch,facade`` the plugin layer's two).

The exit status is 0 whatever the figures: this is a report, not a test.
To add a figure, add a function to FIGURES (run in the child process) and a
Section to SECTIONS (which jobs to run, how to turn their results into rows).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Tuple  # noqa: UP035

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from command_handlers import hookimpl  # noqa: E402
from command_handlers._plugins.listeners import Listeners  # noqa: E402
from command_handlers.async_execution_engine import (  # noqa: E402
    DEFAULT_DEPENDENCY_LIMIT,
    AsyncExecutionEngine,
    AsyncTask,
    TaskOutcome,
)
from command_handlers.plugins import (  # noqa: E402
    BUILTIN_PLUGINS,
    get_plugin_manager,
    run_tasks,
)

LIMIT = 12
SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
DAG_SEED = 20261125
DAG_TASKS = 200
CHAIN_TASKS = 20
CHILD_TIMEOUT = 300.0

Executor = Callable[[AsyncTask], Awaitable[Any]]
Params = Dict[str, Any]  # noqa: UP006
Figure = Dict[str, Any]  # noqa: UP006
Row = Tuple[str, str, str, str, str, str]  # noqa: UP006


# --------------------------------------------------------------------------
# Runners: the engine and the two baselines, same signature.
# --------------------------------------------------------------------------


async def run_engine(
    tasks: list[AsyncTask],
    executor: Executor,
    limit: int,
    *,
    dependency_aware: bool = False,
    dependency_limit: int = DEFAULT_DEPENDENCY_LIMIT,
) -> Any:
    # Built inside the running loop (on Python 3.9 a Semaphore binds to a loop).
    engine = AsyncExecutionEngine(limit, dependency_limit=dependency_limit)
    if dependency_aware:
        return await engine.execute_with_dependency_awareness(tasks, executor)
    return await engine.execute_parallel(tasks, executor)


async def run_gather_sketch(tasks: list[AsyncTask], executor: Executor, limit: int) -> Any:
    """The story's sketch: one coroutine per task, all parked on one semaphore."""
    semaphore = asyncio.Semaphore(limit)

    async def guarded(task: AsyncTask) -> Any:
        async with semaphore:
            return await executor(task)

    return await asyncio.gather(*(guarded(task) for task in tasks), return_exceptions=True)


async def run_worker_pool(tasks: list[AsyncTask], executor: Executor, limit: int) -> Any:
    """The floor: the asyncio docs' worker pool (``limit`` workers on an asyncio.Queue).

    Like the engine, it keeps each task's outcome by task id.
    """
    queue: asyncio.Queue[AsyncTask] = asyncio.Queue()
    for task in tasks:
        queue.put_nowait(task)
    outcomes: dict[str, Any] = {}

    async def worker() -> None:
        while not queue.empty():
            task = queue.get_nowait()
            try:
                outcomes[task.task_id] = await executor(task)
            except Exception as exc:
                outcomes[task.task_id] = exc

    await asyncio.gather(*[worker() for _ in range(min(limit, len(tasks)))])
    return outcomes


RUNNERS: dict[str, Callable[..., Awaitable[Any]]] = {
    "engine": run_engine,
    "gather": run_gather_sketch,
    "pool": run_worker_pool,
}
RUNNER_LABELS = {
    "engine": "engine",
    "gather": "gather+semaphore",
    "pool": "worker pool",
}


# --------------------------------------------------------------------------
# Executors and task sets.
# --------------------------------------------------------------------------


async def noop(task: AsyncTask) -> None:
    return None


async def sleep_for(task: AsyncTask) -> None:
    await asyncio.sleep(task.node_data["seconds"])


def make_tasks(count: int, seconds: float = 0.0) -> list[AsyncTask]:
    return [AsyncTask(f"t{i}", "bench", {"seconds": seconds}) for i in range(count)]


def make_dag(seed: int, count: int) -> list[AsyncTask]:
    """Seeded random DAG: 5-30 ms each, each depending on 0-3 random earlier tasks."""
    rng = random.Random(seed)
    tasks = []
    for i in range(count):
        millis = rng.randint(5, 30)
        parents = sorted(rng.sample(range(i), rng.randint(0, min(3, i))))
        tasks.append(
            AsyncTask(
                f"t{i}",
                "bench",
                {"seconds": millis / 1000},
                dependencies=[f"t{p}" for p in parents],
            )
        )
    return tasks


def critical_path(tasks: Sequence[AsyncTask]) -> float:
    """Longest chain of durations (seconds); tasks depend only on earlier ones."""
    finish: dict[str, float] = {}
    for task in tasks:
        start = max((finish[dep] for dep in task.dependencies or []), default=0.0)
        finish[task.task_id] = start + task.node_data["seconds"]
    return max(finish.values())


def new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def timed(loop: asyncio.AbstractEventLoop, coro: Awaitable[Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    loop.run_until_complete(coro)
    return time.perf_counter() - start


# --------------------------------------------------------------------------
# Figures: each runs in a fresh child process and returns a dict whose
# "value" is the figure (smaller is better; the parent keeps the best).
# --------------------------------------------------------------------------


def figure_noop_time(params: Params) -> Figure:
    """Microseconds per no-op task (best of a few runs in this process)."""
    runner = RUNNERS[params["runner"]]
    count = params["n"]
    tasks = make_tasks(count)
    loop = new_loop()
    loop.run_until_complete(runner(tasks[:100], noop, LIMIT))  # warm-up
    runs = min(10, max(1, math.ceil(30_000 / count)))
    best = min(timed(loop, runner(tasks, noop, LIMIT)) for _ in range(runs))
    loop.close()
    return {"value": best / count * 1e6, "unit": "us/task", "inner_runs": runs}


def figure_noop_memory(params: Params) -> Figure:
    """Tracemalloc peak growth per no-op task; the tasks exist before tracing starts."""
    runner = RUNNERS[params["runner"]]
    count = params["n"]
    tasks = make_tasks(count)
    loop = new_loop()
    loop.run_until_complete(runner(tasks[:100], noop, LIMIT))  # warm-up
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    loop.run_until_complete(runner(tasks, noop, LIMIT))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    loop.close()
    return {"value": (peak - baseline) / count, "unit": "B/task", "peak_bytes": peak - baseline}


def figure_makespan(params: Params) -> Figure:
    """Makespan / ceil(n / limit) * duration for equal sleeping tasks."""
    runner = RUNNERS[params["runner"]]
    count, seconds = params["n"], params["seconds"]
    loop = new_loop()
    loop.run_until_complete(runner(make_tasks(LIMIT, 0.001), sleep_for, LIMIT))  # warm-up
    elapsed = timed(loop, runner(make_tasks(count, seconds), sleep_for, LIMIT))
    loop.close()
    bound = math.ceil(count / LIMIT) * seconds
    return {"value": elapsed / bound, "makespan_ms": elapsed * 1e3, "bound_ms": bound * 1e3}


def figure_dag(params: Params) -> Figure:
    """Makespan / max(critical path, work / limit) of the seeded random DAG."""
    dependency_limit = params["dependency_limit"]
    limit = min(LIMIT, dependency_limit)
    tasks = make_dag(params["seed"], params["n"])
    work = sum(task.node_data["seconds"] for task in tasks)
    path = critical_path(tasks)
    bound = max(path, work / limit)
    loop = new_loop()
    loop.run_until_complete(
        run_engine(make_tasks(LIMIT, 0.001), sleep_for, LIMIT, dependency_aware=True)
    )  # warm-up
    elapsed = timed(
        loop,
        run_engine(
            tasks, sleep_for, LIMIT, dependency_aware=True, dependency_limit=dependency_limit
        ),
    )
    loop.close()
    return {
        "value": elapsed / bound,
        "makespan_ms": elapsed * 1e3,
        "bound_ms": bound * 1e3,
        "critical_path_ms": path * 1e3,
        "work_ms": work * 1e3,
        "limit": limit,
        "ratio_vs_limit12_bound": elapsed / max(path, work / LIMIT),
    }


def figure_chain(params: Params) -> Figure:
    """Delay per edge of a dependency chain of 1 ms tasks, net of the sleeps' real cost."""
    count, seconds, rounds = params["n"], params["seconds"], params["rounds"]
    chain = [
        AsyncTask(f"t{i}", "bench", {"seconds": seconds}, dependencies=[f"t{i - 1}"] if i else [])
        for i in range(count)
    ]

    async def plain_sleeps() -> None:
        for _ in range(count):
            await asyncio.sleep(seconds)

    loop = new_loop()
    loop.run_until_complete(run_engine(chain, sleep_for, LIMIT, dependency_aware=True))  # warm-up
    edges, sleeps, spans = [], [], []
    for _ in range(rounds):
        sleep_mean = timed(loop, plain_sleeps()) / count
        span = timed(loop, run_engine(chain, sleep_for, LIMIT, dependency_aware=True))
        sleeps.append(sleep_mean)
        spans.append(span)
        edges.append((span - count * sleep_mean) / (count - 1))
    loop.close()
    return {
        "value": statistics.median(edges) * 1e3,
        "unit": "ms/edge",
        "sleep_mean_ms": statistics.median(sleeps) * 1e3,
        "makespan_ms": statistics.median(spans) * 1e3,
    }


# --------------------------------------------------------------------------
# The plugin layer: run_tasks (registry routing, listener hooks) vs the engine.
# --------------------------------------------------------------------------


class _BenchAgent:
    """Registers the no-op executor for the tasks' agent ("bench")."""

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        register("bench", noop)


class _CountingListener:
    """A sync listener: counts starts and finishes."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0

    @hookimpl
    def on_task_start(self, task: AsyncTask) -> None:
        self.started += 1

    @hookimpl
    def on_task_progress(self, task_id: str, result: Any, error: str | None) -> None:
        self.finished += 1


class _AsyncCountingListener:
    """An async listener: ``async def on_task_progress`` that counts."""

    def __init__(self) -> None:
        self.finished = 0

    @hookimpl
    async def on_task_progress(self, task_id: str, result: Any, error: str | None) -> None:
        self.finished += 1


class _IdleListener:
    """A listener whose hook implementations do nothing."""

    @hookimpl
    def on_task_start(self, task: AsyncTask) -> None:
        pass

    @hookimpl
    def on_task_progress(self, task_id: str, result: Any, error: str | None) -> None:
        pass


FACADE_MODES = ("engine", "facade", "listeners")
FACADE_LABELS = {
    "engine": "engine alone (execute_parallel)",
    "facade": "run_tasks, no listener",
    "listeners": "run_tasks, 3 listener plugins",
}
#: The built-ins that register listeners or agents: disabled, so that only
#: ``engine`` (the ``execute_tasks`` backend) is left and the figure is the layer's own.
FACADE_DISABLED = (
    "journal",
    "progress",
    "model-router",
    "llm-agents",
    "command-agent",
    "color-router",
    "dask",
)
LISTENER_HOOKS = ("on_run_start", "on_task_start", "on_task_progress", "on_task_end", "on_run_end")


def figure_facade(params: Params) -> Figure:
    """Microseconds per no-op task: the engine alone, or through ``run_tasks``.

    ``mode`` is "engine" (``execute_parallel``, no callbacks), "facade"
    (``run_tasks`` with the ``engine`` built-in and the executor's plugin only:
    no listener of any hook) or "listeners" (plus a sync counting listener, an
    async counting listener and one whose hooks do nothing). The plugin manager
    is built before timing, as a program builds it once; ``run_tasks`` collects
    the executors and the listeners itself, inside the timing.
    """
    mode, count = params["mode"], params["n"]
    tasks = make_tasks(count)
    loop = new_loop()
    listeners: list[Any] = []
    if mode == "engine":

        def run(batch: list[AsyncTask]) -> Awaitable[Any]:
            return run_engine(batch, noop, LIMIT)

    else:
        pm = get_plugin_manager(load_entry_points=False, disabled=FACADE_DISABLED)
        pm.register(_BenchAgent(), name="bench-agent")
        if mode == "listeners":
            listeners = [_CountingListener(), _AsyncCountingListener(), _IdleListener()]
            for n, plugin in enumerate(listeners):
                pm.register(plugin, name=f"listener-{n}")
        names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
        wanted = {"engine", "bench-agent", *(f"listener-{n}" for n in range(len(listeners)))}
        assert names == wanted, sorted(names)
        if mode == "facade":
            hooked = [hook for hook in LISTENER_HOOKS if getattr(pm.hook, hook).get_hookimpls()]
            assert not hooked, hooked

        def run(batch: list[AsyncTask]) -> Awaitable[Any]:
            return run_tasks(batch, pm=pm, max_concurrency=LIMIT)

    warm = loop.run_until_complete(run(tasks[:100]))  # warm-up
    assert warm["success"] == 100, warm
    runs = min(10, max(1, math.ceil(30_000 / count)))
    best = min(timed(loop, run(tasks)) for _ in range(runs))
    loop.close()
    expected = 100 + runs * count
    for plugin in listeners[:2]:
        assert plugin.finished == expected, (type(plugin).__name__, plugin.finished, expected)
    if listeners:
        assert listeners[0].started == expected
    return {"value": best / count * 1e6, "unit": "us/task", "inner_runs": runs}


# --------------------------------------------------------------------------
# Listener dispatch: Listeners(pm, hook).callback() vs a plain loop of calls.
# --------------------------------------------------------------------------

DISPATCH_HOOKS = ("on_task_progress", "on_task_end")
DISPATCH_SIZES = (1, 3, 10)
DISPATCH_MODES = ("loop", "listeners", "pluggy")
DISPATCH_LABELS = {
    "loop": "plain loop: for f in functions: f(...)",
    "listeners": "Listeners(pm, hook).callback()",
    "pluggy": "pluggy: pm.hook.<hook>(**kwargs)",
}
DISPATCH_CALLS = 200_000
DISPATCH_INNER = 5  # best of this many timings of DISPATCH_CALLS calls, in the process
DISPATCH_TARGETS = {1: 3.0, 3: 2.0, 10: 2.0}  # at most this many times the plain loop


class _ProgressListener:
    """A plain-function ``on_task_progress`` listener that does nothing."""

    @hookimpl
    def on_task_progress(self, task_id: str, result: Any, error: str | None) -> None:
        pass


class _EndListener:
    """A plain-function ``on_task_end`` listener that does nothing."""

    @hookimpl
    def on_task_end(self, task: AsyncTask, outcome: TaskOutcome) -> None:
        pass


def _dispatch_progress(call: Callable[..., Any], calls: int) -> int:
    task_id, result, error = "t0", {"answer": 42}, None
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        call(task_id, result, error)
    return time.perf_counter_ns() - start


def _dispatch_end(call: Callable[..., Any], calls: int) -> int:
    task = AsyncTask("t0", "bench", {})
    outcome = TaskOutcome("success", {"answer": 42}, None, None, 1, time.time(), time.time())
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        call(task, outcome)
    return time.perf_counter_ns() - start


def _loop_progress(functions: list[Callable[..., Any]], calls: int) -> int:
    task_id, result, error = "t0", {"answer": 42}, None
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        for f in functions:
            f(task_id, result, error)
    return time.perf_counter_ns() - start


def _loop_end(functions: list[Callable[..., Any]], calls: int) -> int:
    task = AsyncTask("t0", "bench", {})
    outcome = TaskOutcome("success", {"answer": 42}, None, None, 1, time.time(), time.time())
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        for f in functions:
            f(task, outcome)
    return time.perf_counter_ns() - start


def _pluggy_progress(hook: Any, calls: int) -> int:
    task_id, result, error = "t0", {"answer": 42}, None
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        hook(task_id=task_id, result=result, error=error)
    return time.perf_counter_ns() - start


def _pluggy_end(hook: Any, calls: int) -> int:
    task = AsyncTask("t0", "bench", {})
    outcome = TaskOutcome("success", {"answer": 42}, None, None, 1, time.time(), time.time())
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        hook(task=task, outcome=outcome)
    return time.perf_counter_ns() - start


def figure_dispatch(params: Params) -> Figure:
    """Nanoseconds per dispatch of one hook call to N do-nothing plain-function listeners.

    The manager comes from ``get_plugin_manager`` with every built-in disabled
    and N plugin objects registered, each implementing the hook. ``mode`` is
    "loop" (``for f in functions: f(...)`` over the implementations' functions,
    inline in the timing loop), "listeners" (the callable
    ``Listeners(pm, hook).callback()`` gives, as ``run_tasks`` hands the
    engine) or "pluggy" (the hook called through pluggy, for information, on a
    quarter of the calls). Best of DISPATCH_INNER timings; nothing subtracted.
    """
    hook_name, count, mode = params["hook"], params["n"], params["mode"]
    calls = params["calls"] if mode != "pluggy" else max(1, params["calls"] // 4)
    pm = get_plugin_manager(load_entry_points=False, disabled=list(BUILTIN_PLUGINS))
    plugin_type = _ProgressListener if hook_name == "on_task_progress" else _EndListener
    for k in range(count):
        pm.register(plugin_type(), name=f"listener-{k}")
    caller = getattr(pm.hook, hook_name)
    impls = caller.get_hookimpls()
    assert len(impls) == count, [impl.plugin_name for impl in impls]
    functions = [impl.function for impl in reversed(impls)]  # pluggy's call order
    progress = hook_name == "on_task_progress"
    if mode == "loop":
        loop_time = _loop_progress if progress else _loop_end

        def measure_once(calls: int) -> int:
            return loop_time(functions, calls)

    elif mode == "listeners":
        listeners = Listeners(pm, hook_name)
        callback = listeners.callback()
        assert callback is not None
        assert not listeners.is_async, "the listeners are plain functions: no coroutine"
        assert len(listeners.impls) == count
        dispatch_time = _dispatch_progress if progress else _dispatch_end

        def measure_once(calls: int) -> int:
            return dispatch_time(callback, calls)

    else:
        pluggy_time = _pluggy_progress if progress else _pluggy_end

        def measure_once(calls: int) -> int:
            return pluggy_time(caller, calls)

    measure_once(max(1, calls // 10))  # warm-up
    best = min(measure_once(calls) for _ in range(DISPATCH_INNER))
    return {"value": best / calls, "unit": "ns/call", "calls": calls, "inner": DISPATCH_INNER}


FIGURES: dict[str, Callable[[Params], Figure]] = {
    "noop_time": figure_noop_time,
    "noop_memory": figure_noop_memory,
    "makespan": figure_makespan,
    "dag": figure_dag,
    "chain": figure_chain,
    "facade": figure_facade,
    "dispatch": figure_dispatch,
}


# --------------------------------------------------------------------------
# Sections: which jobs to run, and how to report them.
# --------------------------------------------------------------------------


@dataclass
class Job:
    figure: str
    params: Params
    memory: bool = False  # memory passes use --mem-repeats

    @property
    def key(self) -> str:
        return self.figure + "/" + "/".join(f"{k}={v}" for k, v in sorted(self.params.items()))


@dataclass
class Config:
    sizes: tuple[int, ...]
    repeats: int
    mem_repeats: int


@dataclass
class Section:
    title: str
    jobs: Callable[[Config], list[Job]]
    rows: Callable[[Config, dict[str, Figure | None]], list[Row]]
    name: str = ""  # for --only


def _best(results: dict[str, Figure | None], job: Job) -> Figure | None:
    return results.get(job.key)


def _verdict(ok: bool, detail: str = "") -> str:
    return ("PASS" if ok else "MISS") + (f" ({detail})" if detail else "")


def _noop_jobs(config: Config) -> list[Job]:
    jobs = []
    for count in config.sizes:
        for runner in RUNNERS:
            jobs.append(Job("noop_time", {"runner": runner, "n": count}))
            jobs.append(Job("noop_memory", {"runner": runner, "n": count}, memory=True))
    return jobs


def _noop_rows(config: Config, results: dict[str, Figure | None]) -> list[Row]:
    rows: list[Row] = []
    smallest, largest = config.sizes[0], config.sizes[-1]
    for figure, label, unit, factor in (
        ("noop_time", "no-op cost/task", "us", 2.5),
        ("noop_memory", "no-op memory/task", "B", 1.5),
    ):
        digits = 2 if unit == "us" else 1
        for count in config.sizes:
            floor = _best(results, Job(figure, {"runner": "pool", "n": count}))
            for runner in RUNNERS:
                got = _best(results, Job(figure, {"runner": runner, "n": count}))
                value = "ERROR" if got is None else f"{got['value']:.{digits}f} {unit}"
                target = verdict = ""
                if runner == "engine" and got is not None and floor is not None:
                    limit = factor * floor["value"]
                    target = f"<= {factor}x pool = {limit:.{digits}f} {unit}"
                    ratio = got["value"] / floor["value"]
                    verdict = _verdict(got["value"] <= limit, f"{ratio:.1f}x pool")
                rows.append((label, RUNNER_LABELS[runner], f"{count:,}", value, target, verdict))
        if figure == "noop_time" and largest != smallest:
            for runner in RUNNERS:
                low = _best(results, Job(figure, {"runner": runner, "n": smallest}))
                high = _best(results, Job(figure, {"runner": runner, "n": largest}))
                if low is None or high is None:
                    continue
                ratio = high["value"] / low["value"]
                target = verdict = ""
                if runner == "engine":
                    target = "<= 1.5x (flat)"
                    verdict = _verdict(ratio <= 1.5)
                rows.append(
                    (
                        "cost/task flatness",
                        RUNNER_LABELS[runner],
                        f"{largest // 1000}k / {smallest // 1000}k",
                        f"{ratio:.2f}x",
                        target,
                        verdict,
                    )
                )
    return rows


def _makespan_jobs(config: Config) -> list[Job]:
    return [Job("makespan", {"runner": r, "n": 200, "seconds": 0.01}) for r in RUNNERS]


def _makespan_rows(config: Config, results: dict[str, Figure | None]) -> list[Row]:
    rows: list[Row] = []
    for runner in RUNNERS:
        got = _best(results, Job("makespan", {"runner": runner, "n": 200, "seconds": 0.01}))
        value = "ERROR"
        if got is not None:
            value = f"{got['value']:.3f} ({got['makespan_ms']:.0f}/{got['bound_ms']:.0f} ms)"
        rows.append(("10 ms tasks: makespan/bound", RUNNER_LABELS[runner], "200", value, "", ""))
    return rows


def _dag_params(dependency_limit: int) -> Params:
    return {"dependency_limit": dependency_limit, "n": DAG_TASKS, "seed": DAG_SEED}


def _dag_jobs(config: Config) -> list[Job]:
    return [Job("dag", _dag_params(limit)) for limit in (DEFAULT_DEPENDENCY_LIMIT, LIMIT)]


def _dag_rows(config: Config, results: dict[str, Figure | None]) -> list[Row]:
    rows: list[Row] = []
    for dependency_limit in (DEFAULT_DEPENDENCY_LIMIT, LIMIT):
        got = _best(results, Job("dag", _dag_params(dependency_limit)))
        runner = f"engine, dep. limit {dependency_limit}"
        if got is None:
            rows.append(("DAG: makespan/bound", runner, str(DAG_TASKS), "ERROR", "", ""))
            continue
        value = f"{got['value']:.3f} ({got['makespan_ms']:.0f}/{got['bound_ms']:.0f} ms)"
        target = f"none ({got['ratio_vs_limit12_bound']:.2f}x the limit-12 bound)"
        verdict = ""
        if dependency_limit == LIMIT:
            target = "<= 1.10"
            verdict = _verdict(got["value"] <= 1.10)
        rows.append(("DAG: makespan/bound", runner, str(DAG_TASKS), value, target, verdict))
    return rows


def _chain_params(config: Config) -> Params:
    return {"n": CHAIN_TASKS, "seconds": 0.001, "rounds": 5}


def _chain_jobs(config: Config) -> list[Job]:
    return [Job("chain", _chain_params(config))]


def _chain_rows(config: Config, results: dict[str, Figure | None]) -> list[Row]:
    got = _best(results, Job("chain", _chain_params(config)))
    if got is None:
        return [("chain: delay/edge", "engine", str(CHAIN_TASKS), "ERROR", "", "")]
    value = f"{got['value']:.3f} ms"
    return [
        (
            "chain: delay/edge",
            "engine, dep. mode",
            f"{CHAIN_TASKS} x 1 ms",
            value,
            "< 0.2 ms",
            _verdict(got["value"] < 0.2),
        )
    ]


FACADE_FACTOR = 1.2  # run_tasks with no listener, against the engine alone


def _facade_sizes(config: Config) -> tuple[int, ...]:
    return config.sizes[-2:]  # 10k and 100k (1k and 10k with --quick)


def _facade_jobs(config: Config) -> list[Job]:
    return [
        Job("facade", {"mode": mode, "n": count})
        for count in _facade_sizes(config)
        for mode in FACADE_MODES
    ]


def _facade_rows(config: Config, results: dict[str, Figure | None]) -> list[Row]:
    rows: list[Row] = []
    for count in _facade_sizes(config):
        engine = _best(results, Job("facade", {"mode": "engine", "n": count}))
        for mode in FACADE_MODES:
            got = _best(results, Job("facade", {"mode": mode, "n": count}))
            value = "ERROR" if got is None else f"{got['value']:.2f} us"
            target = verdict = ""
            if mode != "engine" and got is not None and engine is not None:
                ratio = got["value"] / engine["value"]
                if mode == "facade":
                    limit = FACADE_FACTOR * engine["value"]
                    target = f"<= {FACADE_FACTOR}x engine = {limit:.2f} us"
                    verdict = _verdict(got["value"] <= limit, f"{ratio:.2f}x engine")
                else:
                    target = f"none ({ratio:.2f}x engine)"
            label = FACADE_LABELS[mode]
            rows.append(("plugin layer: cost/task", label, f"{count:,}", value, target, verdict))
    return rows


def _dispatch_params(config: Config, hook: str, count: int, mode: str) -> Params:
    calls = DISPATCH_CALLS // 10 if config.sizes == QUICK_SIZES else DISPATCH_CALLS
    return {"hook": hook, "n": count, "mode": mode, "calls": calls}


def _dispatch_jobs(config: Config) -> list[Job]:
    return [
        Job("dispatch", _dispatch_params(config, hook, count, mode))
        for hook in DISPATCH_HOOKS
        for count in DISPATCH_SIZES
        for mode in DISPATCH_MODES
    ]


def _dispatch_rows(config: Config, results: dict[str, Figure | None]) -> list[Row]:
    rows: list[Row] = []
    for hook in DISPATCH_HOOKS:
        for count in DISPATCH_SIZES:
            loop = _best(results, Job("dispatch", _dispatch_params(config, hook, count, "loop")))
            for mode in DISPATCH_MODES:
                got = _best(results, Job("dispatch", _dispatch_params(config, hook, count, mode)))
                value = "ERROR" if got is None else f"{got['value']:.0f} ns"
                target = verdict = ""
                if mode != "loop" and got is not None and loop is not None:
                    ratio = got["value"] / loop["value"]
                    if mode == "listeners":
                        factor = DISPATCH_TARGETS[count]
                        limit = factor * loop["value"]
                        target = f"<= {factor:g}x loop = {limit:.0f} ns"
                        verdict = _verdict(got["value"] <= limit, f"{ratio:.2f}x loop")
                    else:
                        target = f"none ({ratio:.1f}x loop)"
                rows.append(
                    (
                        f"dispatch/call: {hook}",
                        DISPATCH_LABELS[mode],
                        f"{count} listener{'s' if count > 1 else ''}",
                        value,
                        target,
                        verdict,
                    )
                )
    return rows


SECTIONS: list[Section] = [
    Section(
        "no-op tasks at limit 12 (time and memory measured in separate passes)",
        _noop_jobs,
        _noop_rows,
        name="noop",
    ),
    Section(
        "200 tasks of 10 ms at limit 12; bound = ceil(200/12) * 10 ms",
        _makespan_jobs,
        _makespan_rows,
        name="makespan",
    ),
    Section(
        f"random DAG (seed {DAG_SEED}), 5-30 ms tasks, 0-3 deps each;"
        " bound = max(critical path, work / limit)",
        _dag_jobs,
        _dag_rows,
        name="dag",
    ),
    Section(
        "chain of 20 tasks of 1 ms; (makespan - 20 * real 1 ms sleep) / 19",
        _chain_jobs,
        _chain_rows,
        name="chain",
    ),
    Section(
        "plugin layer: no-op tasks at limit 12 through run_tasks (built-ins but engine"
        " disabled; listeners: a sync counter, an async counter, one that does nothing)"
        " vs the engine alone",
        _facade_jobs,
        _facade_rows,
        name="facade",
    ),
    Section(
        "listener dispatch: N do-nothing plain-function listeners of one hook, called"
        f" {DISPATCH_CALLS:,} times (best of {DISPATCH_INNER} in each process) through"
        " Listeners(pm, hook).callback() vs a plain loop over the same functions",
        _dispatch_jobs,
        _dispatch_rows,
        name="dispatch",
    ),
]


# --------------------------------------------------------------------------
# Driver.
# --------------------------------------------------------------------------


def run_child(job: Job) -> Figure | None:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", job.figure]
    command.append(json.dumps(job.params))
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        print(f"  {job.key}: timed out", file=sys.stderr)
        return None
    if done.returncode != 0 or not done.stdout.strip():
        print(f"  {job.key}: failed\n{done.stderr}", file=sys.stderr)
        return None
    figure: Figure = json.loads(done.stdout.strip().splitlines()[-1])
    return figure


def measure(config: Config, jobs: list[Job]) -> dict[str, list[Figure]]:
    """Run every job's repeats, interleaved round-robin, each in a fresh process."""
    runs: dict[str, list[Figure]] = {job.key: [] for job in jobs}
    rounds = max(config.repeats, config.mem_repeats)
    for repeat in range(rounds):
        todo = [j for j in jobs if repeat < (config.mem_repeats if j.memory else config.repeats)]
        started = time.perf_counter()
        for job in todo:
            figure = run_child(job)
            if figure is not None:
                runs[job.key].append(figure)
        print(
            f"round {repeat + 1}/{rounds}: {len(todo)} figures,"
            f" {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    return runs


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh-process repeats per figure")
    parser.add_argument(
        "--mem-repeats",
        type=int,
        default=None,
        help="repeats of the memory passes (default: --repeats; they vary little)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1k/10k, one repeat")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument(
        "--only",
        metavar="SECTION[,SECTION]",
        help="run only these sections: " + ", ".join(s.name for s in SECTIONS),
    )
    parser.add_argument("--one", nargs=2, metavar=("FIGURE", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        name, params = args.one
        print(json.dumps(FIGURES[name](json.loads(params))))
        return 0

    config = Config(
        sizes=QUICK_SIZES if args.quick else SIZES,
        repeats=1 if args.quick else max(1, args.repeats),
        mem_repeats=1 if args.quick else max(1, args.mem_repeats or args.repeats),
    )
    sections = SECTIONS
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {s.name for s in SECTIONS})
        if unknown:
            parser.error(f"unknown section(s): {', '.join(unknown)}")
        sections = [s for s in SECTIONS if s.name in wanted]
    jobs = [job for section in sections for job in section.jobs(config)]
    started = time.perf_counter()
    runs = measure(config, jobs)
    best = {key: (min(f, key=lambda x: x["value"]) if f else None) for key, f in runs.items()}

    header = ("figure", "runner", "tasks", "value", "target", "result")
    rows: list[Row] = [header]
    for section in sections:
        rows.extend(section.rows(config, best))
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "repeats": config.repeats,
        "mem_repeats": config.mem_repeats,
        "sizes": list(config.sizes),
        "limit": LIMIT,
        "sections": [s.name for s in sections],
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"# {meta['date']}  Python {meta['python']}  {meta['cpus']} CPUs  "
        f"best of {config.repeats} fresh processes ({config.mem_repeats} for memory)"
    )
    for section in sections:
        print(f"# {section.title}")
    print(format_table(rows))
    print(f"# total {meta['seconds']} s", flush=True)

    if args.json:
        payload = {
            "meta": meta,
            "figures": {
                job.key: {
                    "figure": job.figure,
                    "params": job.params,
                    "best": best[job.key],
                    "values": [f["value"] for f in runs[job.key]],
                }
                for job in jobs
            },
            "rows": [dict(zip(header, row)) for row in rows[1:]],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
