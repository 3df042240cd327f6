"""Behaviour of the engine: the story's acceptance criteria and integration checks, and more."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import typing
from typing import Any

import pytest

from command_handlers.async_execution_engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DEPENDENCY_LIMIT,
    MAX_CONCURRENCY,
    MIN_CONCURRENCY,
    STATUSES,
    AsyncExecutionEngine,
    AsyncTask,
    DependencyCycleError,
    TaskOutcome,
    check_limit,
)


def make_tasks(count: int, agent: str = "oral-explanation", **fields: Any) -> list[AsyncTask]:
    return [
        AsyncTask(f"task-{i}", agent, {"id": f"node-{i}", "text": f"note {i}"}, **fields)
        for i in range(count)
    ]


class Recorder:
    """An executor that records what ran, in which order, and how many at once."""

    def __init__(self, fail: frozenset[str] = frozenset(), delay: float = 0.0) -> None:
        self.fail = fail
        self.delay = delay
        self.started: list[str] = []
        self.finished: list[str] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, task: AsyncTask) -> dict[str, Any]:
        self.started.append(task.task_id)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
            if task.task_id in self.fail:
                raise ValueError(f"{task.task_id} failed")
            return {"task_id": task.task_id, "result": "success"}
        finally:
            self.running -= 1
            self.finished.append(task.task_id)


# --- AC1: AsyncTask -------------------------------------------------------------------


def test_async_task_creation() -> None:
    task = AsyncTask("t1", "oral-explanation", {"id": "n1", "text": "hi", "x": 0, "y": 0})
    assert task.task_id == "t1"
    assert task.agent_name == "oral-explanation"
    assert task.node_data == {"id": "n1", "text": "hi", "x": 0, "y": 0}
    assert task.priority == 0
    assert task.dependencies is None


def test_async_task_fields_order_annotations_and_defaults() -> None:
    fields = dataclasses.fields(AsyncTask)
    assert [f.name for f in fields[:5]] == [
        "task_id",
        "agent_name",
        "node_data",
        "priority",
        "dependencies",
    ]
    hints = typing.get_type_hints(AsyncTask)
    assert hints["task_id"] is str
    assert hints["node_data"] == typing.Dict[str, typing.Any]  # noqa: UP006
    assert hints["priority"] is int
    assert hints["dependencies"] == typing.Optional[typing.List[str]]  # noqa: UP006
    assert AsyncTask("a", "b", {}, 3, ["x"]).dependencies == ["x"]


# --- AC2: construction ----------------------------------------------------------------


def test_engine_initialisation_defaults() -> None:
    engine = AsyncExecutionEngine()
    assert engine.max_concurrency == 12
    assert isinstance(engine.semaphore, asyncio.Semaphore)
    assert engine.semaphore._value == 12
    assert engine.active_tasks == {}
    assert engine.completed_tasks == []
    assert engine.failed_tasks == []
    assert engine.dependency_limit == 5


@pytest.mark.parametrize("limit", [1, 5, 20])
def test_custom_concurrency(limit: int) -> None:
    engine = AsyncExecutionEngine(max_concurrency=limit)
    assert engine.max_concurrency == limit
    assert engine.semaphore._value == limit


@pytest.mark.parametrize("limit", [0, 21, -3])
def test_concurrency_out_of_range(limit: int) -> None:
    with pytest.raises(ValueError, match=f"max_concurrency must be between 1 and 20, got {limit}"):
        AsyncExecutionEngine(max_concurrency=limit)


@pytest.mark.parametrize("limit", ["12", 1.5, True, None])
def test_concurrency_not_an_int(limit: Any) -> None:
    with pytest.raises(TypeError, match="max_concurrency must be an int"):
        AsyncExecutionEngine(max_concurrency=limit)


def test_dependency_limit_checked() -> None:
    with pytest.raises(ValueError, match="dependency_limit must be between 1 and 20, got 0"):
        AsyncExecutionEngine(dependency_limit=0)


# --- AC3, AC4 and the story's integration checks ----------------------------------------


async def test_iv1_parallel_execution_is_faster_than_sequential() -> None:
    engine = AsyncExecutionEngine(max_concurrency=3)

    async def executor(task: AsyncTask) -> dict[str, Any]:
        await asyncio.sleep(0.1)
        return {"task_id": task.task_id, "result": "success"}

    started = time.perf_counter()
    summary = await engine.execute_parallel(make_tasks(10), executor)
    elapsed = time.perf_counter() - started

    assert summary["total"] == 10
    assert summary["success"] == 10
    assert summary["failed"] == 0
    assert len(summary["results"]) == 10
    assert elapsed < 0.5


async def test_iv2_concurrency_never_exceeds_the_limit() -> None:
    engine = AsyncExecutionEngine(max_concurrency=5)
    recorder = Recorder(delay=0.1)
    summary = await engine.execute_parallel(make_tasks(20), recorder)
    assert recorder.peak <= 5
    assert recorder.peak == 5
    assert summary["success"] == 20


async def test_iv3_one_failure_never_stops_the_others() -> None:
    engine = AsyncExecutionEngine(max_concurrency=3)
    recorder = Recorder(fail=frozenset({"task-3", "task-7"}))
    summary = await engine.execute_parallel(make_tasks(10), recorder)
    assert summary["total"] == 10
    assert summary["success"] == 8
    assert summary["failed"] == 2
    assert {e["task_id"] for e in summary["errors"]} == {"task-3", "task-7"}
    assert summary["errors"][0] == {
        "task_id": "task-3",
        "agent_name": "oral-explanation",
        "error": "task-3 failed",
        "error_type": "ValueError",
        "attempts": 1,
    }
    assert engine.failed_tasks == [
        {
            "task_id": f"task-{i}",
            "agent_name": "oral-explanation",
            "error": f"task-{i} failed",
            "error_type": "ValueError",
        }
        for i in (3, 7)
    ]
    assert engine.completed_tasks == summary["results"]
    assert [r["task_id"] for r in engine.completed_tasks] == [
        f"task-{i}" for i in range(10) if i not in (3, 7)
    ]
    assert engine.active_tasks == {}


async def test_results_keep_input_order_whatever_finishes_first() -> None:
    async def executor(task: AsyncTask) -> str:
        await asyncio.sleep(0.001 * (10 - int(task.task_id.split("-")[1])))
        return task.task_id

    summary = await AsyncExecutionEngine(10).execute_parallel(make_tasks(10), executor)
    assert summary["results"] == [f"task-{i}" for i in range(10)]


async def test_progress_callback_once_per_task_with_result_or_error() -> None:
    calls: list[tuple[str, Any, Any]] = []

    async def callback(task_id: str, result: Any, error: str | None) -> None:
        calls.append((task_id, result, error))

    recorder = Recorder(fail=frozenset({"task-1"}))
    await AsyncExecutionEngine(2).execute_parallel(make_tasks(3), recorder, callback)
    assert sorted(calls) == [
        ("task-0", {"task_id": "task-0", "result": "success"}, None),
        ("task-1", None, "task-1 failed"),
        ("task-2", {"task_id": "task-2", "result": "success"}, None),
    ]


async def test_plain_function_callback_is_called_too() -> None:
    seen: list[str] = []
    await AsyncExecutionEngine().execute_parallel(
        make_tasks(4), Recorder(), lambda task_id, result, error: seen.append(task_id)
    )
    assert sorted(seen) == [f"task-{i}" for i in range(4)]


@pytest.mark.parametrize("is_async", [False, True])
async def test_raising_callback_is_logged_and_isolated(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(task_id: str, result: Any, error: Any) -> None:
        raise RuntimeError("listener broke")

    async def broken_async(task_id: str, result: Any, error: Any) -> None:
        broken(task_id, result, error)

    with caplog.at_level(logging.ERROR, logger="command_handlers.engine"):
        summary = await AsyncExecutionEngine().execute_parallel(
            make_tasks(3), Recorder(), broken_async if is_async else broken
        )
    assert summary["success"] == 3
    failures = [r for r in caplog.records if r.name == "command_handlers.engine"]
    assert len(failures) == 3
    assert "'task-0'" in "\n".join(r.getMessage() for r in failures)
    assert all(r.exc_info and "listener broke" in str(r.exc_info[1]) for r in failures)


async def test_start_callback_runs_before_each_task() -> None:
    recorder = Recorder()
    started_before: list[tuple[str, int]] = []

    def on_start(task: AsyncTask) -> None:
        started_before.append((task.task_id, len(recorder.started)))

    await AsyncExecutionEngine(1).execute_parallel(make_tasks(3), recorder, start_callback=on_start)
    assert started_before == [("task-0", 0), ("task-1", 1), ("task-2", 2)]


async def test_executor_that_returns_no_awaitable_fails_only_its_task() -> None:
    def not_async(task: AsyncTask) -> dict[str, Any]:
        return {"oops": task.task_id}

    summary = await AsyncExecutionEngine().execute_parallel(make_tasks(2), not_async)  # type: ignore[arg-type]
    assert summary["failed"] == 2
    assert summary["errors"][0]["error_type"] == "TypeError"
    assert "not an awaitable" in summary["errors"][0]["error"]


async def test_error_without_message_reports_its_type() -> None:
    async def executor(task: AsyncTask) -> None:
        raise KeyError

    summary = await AsyncExecutionEngine().execute_parallel(make_tasks(1), executor)
    assert summary["errors"][0]["error"] == "KeyError"


async def test_priority_decides_who_gets_a_free_slot() -> None:
    tasks = [
        AsyncTask("low", "a", {}, priority=0),
        AsyncTask("high", "a", {}, priority=5),
        AsyncTask("mid-1", "a", {}, priority=2),
        AsyncTask("mid-2", "a", {}, priority=2),
    ]
    recorder = Recorder()
    await AsyncExecutionEngine(1).execute_parallel(tasks, recorder)
    assert recorder.started == ["high", "mid-1", "mid-2", "low"]


async def test_execute_parallel_ignores_dependencies() -> None:
    tasks = [AsyncTask("b", "a", {}, dependencies=["a"]), AsyncTask("a", "a", {})]
    recorder = Recorder()
    summary = await AsyncExecutionEngine(1).execute_parallel(tasks, recorder)
    assert recorder.started == ["b", "a"]
    assert summary["success"] == 2


async def test_one_hundred_thousand_noop_tasks() -> None:
    async def noop(task: AsyncTask) -> None:
        return None

    tasks = [AsyncTask(str(i), "a", {}) for i in range(100_000)]
    summary = await AsyncExecutionEngine().execute_parallel(tasks, noop)
    assert summary["success"] == 100_000


async def test_agent_limits_cap_one_agent_while_others_use_free_slots() -> None:
    running: dict[str, int] = {"slow": 0, "fast": 0}
    peaks: dict[str, int] = {"slow": 0, "fast": 0}

    async def executor(task: AsyncTask) -> None:
        running[task.agent_name] += 1
        peaks[task.agent_name] = max(peaks[task.agent_name], running[task.agent_name])
        await asyncio.sleep(0.01)
        running[task.agent_name] -= 1

    tasks = [AsyncTask(f"s{i}", "slow", {}) for i in range(10)]
    tasks += [AsyncTask(f"f{i}", "fast", {}) for i in range(10)]
    summary = await AsyncExecutionEngine(6).execute_parallel(
        tasks, executor, agent_limits={"slow": 2}
    )
    assert summary["success"] == 20
    assert peaks["slow"] == 2
    assert peaks["fast"] >= 4


@pytest.mark.parametrize("limit", [0, -1, True, "2"])
async def test_bad_agent_limit(limit: Any) -> None:
    with pytest.raises(ValueError, match="limit of agent 'x' must be a positive int"):
        await AsyncExecutionEngine().execute_parallel(
            make_tasks(1), Recorder(), agent_limits={"x": limit}
        )


# --- bad input is refused before anything runs ------------------------------------------


@pytest.mark.parametrize("method", ["execute_parallel", "execute_with_dependency_awareness"])
async def test_empty_task_list(method: str) -> None:
    with pytest.raises(ValueError, match="tasks list cannot be empty"):
        await getattr(AsyncExecutionEngine(), method)([], Recorder())


@pytest.mark.parametrize("method", ["execute_parallel", "execute_with_dependency_awareness"])
async def test_executor_not_callable(method: str) -> None:
    with pytest.raises(TypeError, match="executor_func must be callable"):
        await getattr(AsyncExecutionEngine(), method)(make_tasks(1), "not a function")


@pytest.mark.parametrize(
    ("tasks", "error", "message"),
    [
        ([{"task_id": "a"}], TypeError, r"tasks\[0\] is not an AsyncTask \(got dict\)"),
        (
            [AsyncTask("a", "x", {}), AsyncTask("b", "x", {}), AsyncTask("a", "x", {})],
            ValueError,
            r"duplicate task_id 'a' \(tasks\[0\] and tasks\[2\]\)",
        ),
        ([AsyncTask("a", "x", {}, dependencies=["a"])], ValueError, "'a' depends on itself"),
        (
            [AsyncTask("a", "x", {}, dependencies=["ghost"])],
            ValueError,
            "'a' depends on unknown task 'ghost'",
        ),
        (
            [
                AsyncTask("a", "x", {}, dependencies=["c"]),
                AsyncTask("b", "x", {}, dependencies=["a"]),
                AsyncTask("c", "x", {}, dependencies=["b"]),
                AsyncTask("d", "x", {}),
            ],
            DependencyCycleError,
            "dependency cycle: b -> c -> a -> b",
        ),
    ],
)
async def test_bad_input_runs_nothing(
    tasks: list[Any], error: type[Exception], message: str
) -> None:
    recorder = Recorder()
    with pytest.raises(error, match=message):
        await AsyncExecutionEngine().execute_with_dependency_awareness(tasks, recorder)
    assert recorder.started == []


def test_cycle_error_is_a_value_error_listing_the_cycle() -> None:
    tasks = [
        AsyncTask("root", "x", {}),
        AsyncTask("p", "x", {}, dependencies=["root", "q"]),
        AsyncTask("q", "x", {}, dependencies=["p"]),
    ]
    with pytest.raises(ValueError) as caught:  # noqa: PT011 - the subclass is the point
        AsyncExecutionEngine()._topological_sort(tasks)
    assert isinstance(caught.value, DependencyCycleError)
    assert caught.value.cycle in (["p", "q", "p"], ["q", "p", "q"])


# --- dependency-aware mode ------------------------------------------------------------------


async def test_dependency_awareness_starts_tasks_after_their_dependencies() -> None:
    tasks = [
        AsyncTask("c", "x", {}, dependencies=["a", "b"]),
        AsyncTask("a", "x", {}),
        AsyncTask("b", "x", {}, dependencies=["a"]),
        AsyncTask("d", "x", {}),
    ]
    recorder = Recorder(delay=0.001)
    summary = await AsyncExecutionEngine().execute_with_dependency_awareness(tasks, recorder)
    assert summary["success"] == 4
    order = recorder.finished
    assert order.index("a") < recorder.started.index("b")
    assert order.index("b") < recorder.started.index("c")
    assert summary["results"][0]["task_id"] == "c"  # input order


async def test_failed_dependency_skips_every_dependent_and_never_hangs() -> None:
    tasks = [
        AsyncTask("a", "x", {}),
        AsyncTask("b", "x", {}, dependencies=["a"]),
        AsyncTask("c", "x", {}, dependencies=["b", "d"]),
        AsyncTask("d", "x", {}),
        AsyncTask("e", "x", {}, dependencies=["d"]),
    ]
    calls: list[tuple[str, Any, Any]] = []
    recorder = Recorder(fail=frozenset({"a"}))
    summary = await AsyncExecutionEngine().execute_with_dependency_awareness(
        tasks, recorder, lambda *args: calls.append(args)
    )
    assert summary["total"] == 5
    assert (summary["success"], summary["failed"], summary["skipped"]) == (2, 1, 2)
    assert sorted(summary["skipped_tasks"], key=lambda s: s["task_id"]) == [
        {"task_id": "b", "blocked_by": "a"},
        {"task_id": "c", "blocked_by": "a"},
    ]
    assert "b" not in recorder.started
    assert "c" not in recorder.started
    assert sorted(c[0] for c in calls) == ["a", "b", "c", "d", "e"]
    skipped_call = next(c for c in calls if c[0] == "c")
    assert skipped_call[1] is None
    assert "dependency 'a' failed" in skipped_call[2]


async def test_dependency_mode_runs_at_most_the_task_level_limit() -> None:
    recorder = Recorder(delay=0.01)
    await AsyncExecutionEngine(12).execute_with_dependency_awareness(make_tasks(20), recorder)
    assert recorder.peak == 5

    recorder = Recorder(delay=0.01)
    await AsyncExecutionEngine(3, dependency_limit=10).execute_with_dependency_awareness(
        make_tasks(20), recorder
    )
    assert recorder.peak == 3


async def test_ready_tasks_with_longer_chains_start_first() -> None:
    tasks = [
        AsyncTask("lone", "x", {}),
        AsyncTask("head", "x", {}),
        AsyncTask("middle", "x", {}, dependencies=["head"]),
        AsyncTask("tail", "x", {}, dependencies=["middle"]),
        AsyncTask("urgent", "x", {}, priority=1),
    ]
    recorder = Recorder()
    await AsyncExecutionEngine(1).execute_with_dependency_awareness(tasks, recorder)
    assert recorder.started[:2] == ["urgent", "head"]


async def test_dependency_chain_is_event_driven() -> None:
    # The story's sketch polls every 100 ms per edge: 50 edges would take 5 s.
    tasks = [AsyncTask("0", "x", {})]
    tasks += [AsyncTask(str(i), "x", {}, dependencies=[str(i - 1)]) for i in range(1, 51)]
    started = time.perf_counter()
    summary = await AsyncExecutionEngine().execute_with_dependency_awareness(tasks, Recorder())
    assert summary["success"] == 51
    assert time.perf_counter() - started < 0.5


def test_topological_sort_is_a_real_ordering_with_priority_tie_break() -> None:
    tasks = [
        AsyncTask("c", "x", {}, dependencies=["b"]),
        AsyncTask("b", "x", {}, dependencies=["a"]),
        AsyncTask("a", "x", {}),
        AsyncTask("z", "x", {}, priority=9),
        AsyncTask("y", "x", {}),
    ]
    order = [t.task_id for t in AsyncExecutionEngine()._topological_sort(tasks)]
    assert order == ["z", "a", "b", "c", "y"] or order.index("a") < order.index("b")
    assert order[0] == "z"
    assert order.index("a") < order.index("b") < order.index("c")
    assert order.index("a") < order.index("y")  # equal priority: input order


# --- runs, re-use, cancellation ----------------------------------------------------------------


async def test_one_engine_runs_again_without_leaking_results() -> None:
    engine = AsyncExecutionEngine()
    await engine.execute_parallel(make_tasks(3), Recorder(fail=frozenset({"task-0"})))
    summary = await engine.execute_parallel([AsyncTask("other", "a", {})], Recorder())
    assert summary["total"] == 1
    assert engine.completed_tasks == [{"task_id": "other", "result": "success"}]
    assert engine.failed_tasks == []


async def test_two_concurrent_runs_share_the_engine_limit_and_keep_results_apart() -> None:
    engine = AsyncExecutionEngine(4)
    recorder = Recorder(delay=0.01)
    first = [AsyncTask(f"a{i}", "x", {}) for i in range(10)]
    second = [AsyncTask(f"b{i}", "x", {}) for i in range(10)]
    one, two = await asyncio.gather(
        engine.execute_parallel(first, recorder), engine.execute_parallel(second, recorder)
    )
    assert recorder.peak <= 4
    assert [r["task_id"] for r in one["results"]] == [f"a{i}" for i in range(10)]
    assert [r["task_id"] for r in two["results"]] == [f"b{i}" for i in range(10)]
    assert engine.active_tasks == {}


@pytest.mark.parametrize("method", ["execute_parallel", "execute_with_dependency_awareness"])
async def test_cancelling_a_run_cancels_and_awaits_every_task(method: str) -> None:
    engine = AsyncExecutionEngine(4)
    started = asyncio.Event()
    gate = asyncio.Event()
    cancelled: list[str] = []
    running: list[str] = []

    async def executor(task: AsyncTask) -> None:
        running.append(task.task_id)
        if len(running) == 3:
            started.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.append(task.task_id)
            raise

    before = asyncio.all_tasks()
    run = asyncio.ensure_future(getattr(engine, method)(make_tasks(30), executor))
    await started.wait()
    assert engine.active_tasks
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert asyncio.all_tasks() == before
    assert engine.active_tasks == {}
    assert sorted(cancelled) == sorted(running)
    assert len(running) <= 4


async def test_wait_for_timeout_leaves_nothing_running() -> None:
    engine = AsyncExecutionEngine(3)
    before = asyncio.all_tasks()

    async def forever(task: AsyncTask) -> None:
        await asyncio.Event().wait()

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(engine.execute_parallel(make_tasks(10), forever), 0.05)
    assert asyncio.all_tasks() == before
    assert engine.active_tasks == {}


async def test_repeated_cancel_still_waits_for_slow_cleanup() -> None:
    engine = AsyncExecutionEngine(2)
    entered: list[str] = []
    both_in = asyncio.Event()
    release = asyncio.Event()
    finished_cleanup: list[str] = []

    async def stubborn(task: AsyncTask) -> None:
        entered.append(task.task_id)
        if len(entered) == 2:
            both_in.set()
        try:
            await asyncio.Event().wait()
        finally:
            while not release.is_set():  # cleanup that outlives repeated cancels
                with contextlib.suppress(asyncio.CancelledError):
                    await release.wait()
            finished_cleanup.append(task.task_id)

    run = asyncio.ensure_future(engine.execute_parallel(make_tasks(2), stubborn))
    await both_in.wait()
    for _ in range(3):
        run.cancel()
        await asyncio.sleep(0)
    assert not run.done()  # still waiting for the executors' cleanup
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(finished_cleanup) == ["task-0", "task-1"]
    assert engine.active_tasks == {}


class Fatal(BaseException):
    """Not an Exception: must end the run, not just one task."""


async def test_base_exception_from_an_executor_ends_the_run_and_cancels_the_rest() -> None:
    engine = AsyncExecutionEngine(3)
    before = asyncio.all_tasks()
    others_cancelled: list[str] = []

    async def executor(task: AsyncTask) -> None:
        if task.task_id == "task-2":
            await asyncio.sleep(0)
            raise Fatal("stop everything")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            others_cancelled.append(task.task_id)
            raise

    with pytest.raises(Fatal):
        await engine.execute_parallel(make_tasks(6), executor)
    assert asyncio.all_tasks() == before
    assert sorted(others_cancelled) == ["task-0", "task-1"]


async def test_run_is_logged_on_the_engine_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="command_handlers.engine"):
        await AsyncExecutionEngine().execute_parallel(
            make_tasks(2), Recorder(fail=frozenset({"task-1"}))
        )
    messages = [r.getMessage() for r in caplog.records if r.name == "command_handlers.engine"]
    assert any("run of 2 tasks started" in m for m in messages)
    assert any("'task-1' failed" in m for m in messages)
    assert any("1 succeeded, 1 failed, 0 skipped" in m for m in messages)


async def test_execute_with_semaphore_holds_a_slot_reports_and_reraises() -> None:
    engine = AsyncExecutionEngine(2)
    seen: list[tuple[str, Any, Any]] = []
    inside: list[int] = []

    async def executor(task: AsyncTask) -> str:
        inside.append(engine.semaphore._value)
        assert engine.active_tasks[task.task_id] is asyncio.current_task()
        if task.task_id == "bad":
            raise ValueError("bad input")
        return "fine"

    def callback(task_id: str, result: Any, error: Any) -> None:
        seen.append((task_id, result, error))

    good = AsyncTask("good", "a", {})
    assert await engine._execute_with_semaphore(good, executor, callback) == "fine"
    with pytest.raises(ValueError, match="bad input"):
        await engine._execute_with_semaphore(AsyncTask("bad", "a", {}), executor, callback)
    assert inside == [1, 1]
    assert engine.semaphore._value == 2
    assert engine.active_tasks == {}
    assert seen == [("good", "fine", None), ("bad", None, "bad input")]


# --- outcomes: the end callback ------------------------------------------------------------


class Ends:
    """Records every callback in the order the engine made them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.outcomes: dict[str, TaskOutcome] = {}

    def on_progress(self, task_id: str, result: Any, error: str | None) -> None:
        self.events.append(("progress", task_id))

    def on_end(self, task: AsyncTask, outcome: TaskOutcome) -> None:
        assert task.task_id not in self.outcomes, f"{task.task_id} ended twice"
        self.events.append(("end", task.task_id))
        self.outcomes[task.task_id] = outcome

    async def on_end_async(self, task: AsyncTask, outcome: TaskOutcome) -> None:
        await asyncio.sleep(0)
        self.on_end(task, outcome)


def test_task_outcome_is_frozen_data_with_the_four_statuses() -> None:
    assert STATUSES == ("success", "failed", "skipped", "cancelled")
    outcome = TaskOutcome("success", {"a": 1}, None, None, 1, 10.0, 11.0)
    assert outcome.cached is False
    assert [f.name for f in dataclasses.fields(TaskOutcome)] == [
        "status",
        "result",
        "error",
        "error_type",
        "attempts",
        "started",
        "finished",
        "cached",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.status = "failed"  # type: ignore[misc]
    assert dataclasses.replace(outcome, cached=True).cached is True


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("method", ["execute_parallel", "execute_with_dependency_awareness"])
async def test_end_callback_once_per_task_right_after_its_progress_callback(
    is_async: bool, method: str
) -> None:
    ends = Ends()
    before = time.time()
    summary = await getattr(AsyncExecutionEngine(3), method)(
        make_tasks(6),
        Recorder(fail=frozenset({"task-4"})),
        ends.on_progress,
        end_callback=ends.on_end_async if is_async else ends.on_end,
    )
    assert summary["success"] == 5
    assert sorted(ends.outcomes) == [f"task-{i}" for i in range(6)]
    events = ends.events
    for task_id in ends.outcomes:
        assert events.count(("progress", task_id)) == events.count(("end", task_id)) == 1
        end = events.index(("end", task_id))
        if is_async:  # other workers may go on while an async callback awaits
            assert events.index(("progress", task_id)) < end
        else:
            assert events[end - 1] == ("progress", task_id)
    ok = ends.outcomes["task-0"]
    assert ok.status == "success"
    assert ok.result == {"task_id": "task-0", "result": "success"}
    assert (ok.error, ok.error_type, ok.attempts, ok.cached) == (None, None, 1, False)
    assert ok.started is not None
    assert before <= ok.started <= ok.finished <= time.time()
    failed = ends.outcomes["task-4"]
    assert (failed.status, failed.result, failed.error, failed.error_type, failed.attempts) == (
        "failed",
        None,
        "task-4 failed",
        "ValueError",
        1,
    )


async def test_the_status_comes_from_what_happened_never_from_the_error_text() -> None:
    ends = Ends()
    progress: list[tuple[str, Any, Any]] = []

    async def executor(task: AsyncTask) -> None:
        raise RuntimeError("cancelled: quota exceeded")

    summary = await AsyncExecutionEngine().execute_parallel(
        make_tasks(1), executor, lambda *args: progress.append(args), end_callback=ends.on_end
    )
    outcome = ends.outcomes["task-0"]
    assert outcome.status == "failed"
    assert outcome.error == "cancelled: quota exceeded"
    assert outcome.error_type == "RuntimeError"
    assert progress == [("task-0", None, "cancelled: quota exceeded")]
    assert (summary["failed"], summary["cancelled"]) == (1, 0)


async def test_skipped_dependents_end_as_skipped_never_started() -> None:
    tasks = [
        AsyncTask("a", "x", {}),
        AsyncTask("b", "x", {}, dependencies=["a"]),
        AsyncTask("c", "x", {}, dependencies=["b"]),
        AsyncTask("d", "x", {}),
    ]
    ends = Ends()
    await AsyncExecutionEngine().execute_with_dependency_awareness(
        tasks, Recorder(fail=frozenset({"a"})), ends.on_progress, end_callback=ends.on_end
    )
    assert {k: o.status for k, o in ends.outcomes.items()} == {
        "a": "failed",
        "b": "skipped",
        "c": "skipped",
        "d": "success",
    }
    for task_id in ("b", "c"):
        skipped = ends.outcomes[task_id]
        assert skipped.error == "dependency 'a' failed"
        assert (skipped.result, skipped.error_type, skipped.attempts, skipped.started) == (
            None,
            None,
            0,
            None,
        )
        assert skipped.finished >= ends.outcomes["a"].finished
    # The failure is told before the tasks it blocks.
    assert ends.events.index(("end", "a")) < ends.events.index(("progress", "b"))


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_raising_end_callback_is_logged_and_the_run_goes_on(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(task: AsyncTask, outcome: TaskOutcome) -> None:
        raise RuntimeError("listener broke")

    async def broken_async(task: AsyncTask, outcome: TaskOutcome) -> None:
        broken(task, outcome)

    recorder = Recorder(fail=frozenset({"task-1"}))
    with caplog.at_level(logging.ERROR, logger="command_handlers.engine"):
        summary = await AsyncExecutionEngine(1).execute_parallel(
            make_tasks(3), recorder, end_callback=broken_async if is_async else broken
        )
    assert (summary["success"], summary["failed"]) == (2, 1)
    assert recorder.started == ["task-0", "task-1", "task-2"]
    failures = [r for r in caplog.records if r.name == "command_handlers.engine"]
    assert len(failures) == 3
    assert all(r.exc_info and "listener broke" in str(r.exc_info[1]) for r in failures)


async def test_a_run_cancelled_from_outside_tells_no_end_of_its_unfinished_tasks() -> None:
    engine = AsyncExecutionEngine(2)
    ends = Ends()
    both_running = asyncio.Event()
    running: list[str] = []

    async def executor(task: AsyncTask) -> str:
        if task.task_id == "task-0":
            return "quick"
        running.append(task.task_id)
        if len(running) == 2:
            both_running.set()
        await asyncio.Event().wait()
        return "never"

    run = asyncio.ensure_future(
        engine.execute_parallel(make_tasks(5), executor, end_callback=ends.on_end)
    )
    await both_running.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert list(ends.outcomes) == ["task-0"]
    assert engine.active_tasks == {}


async def test_completed_and_failed_tasks_are_the_last_runs_lists() -> None:
    engine = AsyncExecutionEngine()
    tasks = [
        AsyncTask("a", "x", {}),
        AsyncTask("b", "y", {}, dependencies=["a"]),
        AsyncTask("c", "x", {}),
    ]
    summary = await engine.execute_with_dependency_awareness(tasks, Recorder(fail=frozenset({"a"})))
    assert engine.completed_tasks == [{"task_id": "c", "result": "success"}]
    assert engine.completed_tasks == summary["results"]
    assert engine.failed_tasks == [
        {"task_id": "a", "agent_name": "x", "error": "a failed", "error_type": "ValueError"}
    ]
    assert summary["errors"][0]["attempts"] == 1  # the summary keeps its extra key
    first_results = engine.completed_tasks

    await engine.execute_parallel([AsyncTask("d", "x", {})], Recorder())
    assert engine.completed_tasks == [{"task_id": "d", "result": "success"}]
    assert engine.failed_tasks == []
    assert first_results == [{"task_id": "c", "result": "success"}]  # replaced, not changed


def test_limits_and_their_check_are_re_exported() -> None:
    assert (MIN_CONCURRENCY, MAX_CONCURRENCY) == (1, 20)
    assert (DEFAULT_CONCURRENCY, DEFAULT_DEPENDENCY_LIMIT) == (12, 5)
    assert check_limit("max", 7) == 7
    with pytest.raises(ValueError, match="max must be between 1 and 20, got 21"):
        check_limit("max", 21)
    with pytest.raises(TypeError, match="max must be an int"):
        check_limit("max", 2.0)
