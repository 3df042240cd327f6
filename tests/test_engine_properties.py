"""Property tests of the scheduler: random DAGs, random failures, random limits."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from command_handlers.async_execution_engine import (
    AsyncExecutionEngine,
    AsyncTask,
    RetryPolicy,
    RunPolicy,
    TaskOutcome,
)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[AsyncTask], frozenset[str], list[int]]:
    count = draw(st.integers(min_value=1, max_value=30))
    tasks = []
    for i in range(count):
        deps = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3)) if i else set()
        tasks.append(
            AsyncTask(
                f"t{i}",
                draw(st.sampled_from(["a", "b"])),
                {},
                priority=draw(st.integers(min_value=-2, max_value=2)),
                dependencies=[f"t{d}" for d in sorted(deps)] or None,
            )
        )
    failing = draw(st.sets(st.sampled_from([t.task_id for t in tasks])))
    yields = draw(st.lists(st.integers(min_value=0, max_value=3), min_size=count, max_size=count))
    order = draw(st.permutations(tasks))
    return list(order), frozenset(failing), yields


def expected_outcomes(tasks: list[AsyncTask], failing: frozenset[str]) -> dict[str, str]:
    by_id = {t.task_id: t for t in tasks}
    outcome: dict[str, str] = {}

    def resolve(task_id: str) -> str:
        if task_id not in outcome:
            deps = by_id[task_id].dependencies or []
            if any(resolve(d) != "success" for d in deps):
                outcome[task_id] = "skipped"
            else:
                outcome[task_id] = "failed" if task_id in failing else "success"
        return outcome[task_id]

    for t in tasks:
        resolve(t.task_id)
    return outcome


@settings(max_examples=150, deadline=None)
@given(
    dag=dags(),
    limit=st.integers(min_value=1, max_value=20),
    dependency_limit=st.integers(min_value=1, max_value=20),
    agent_limit=st.one_of(st.none(), st.integers(min_value=1, max_value=3)),
)
def test_random_dags_with_random_failures(
    dag: tuple[list[AsyncTask], frozenset[str], list[int]],
    limit: int,
    dependency_limit: int,
    agent_limit: int | None,
) -> None:
    tasks, failing, yields = dag
    succeeded: set[str] = set()
    reported: list[str] = []
    violations: list[str] = []
    running = {"all": 0, "a": 0}
    peak = {"all": 0, "a": 0}
    pauses = {t.task_id: yields[i] for i, t in enumerate(tasks)}

    async def executor(task: AsyncTask) -> dict[str, Any]:
        missing = [d for d in task.dependencies or [] if d not in succeeded]
        if missing:
            violations.append(f"{task.task_id} started before {missing}")
        running["all"] += 1
        running["a"] += task.agent_name == "a"
        peak["all"] = max(peak["all"], running["all"])
        peak["a"] = max(peak["a"], running["a"])
        try:
            for _ in range(pauses[task.task_id]):
                await asyncio.sleep(0)
            if task.task_id in failing:
                raise RuntimeError(f"{task.task_id} broke")
            succeeded.add(task.task_id)
            return {"id": task.task_id}
        finally:
            running["all"] -= 1
            running["a"] -= task.agent_name == "a"

    def on_progress(task_id: str, result: Any, error: str | None) -> None:
        reported.append(task_id)

    statuses: dict[str, str] = {}

    def on_end(task: AsyncTask, outcome: TaskOutcome) -> None:
        assert task.task_id not in statuses
        statuses[task.task_id] = outcome.status

    engine = AsyncExecutionEngine(limit, dependency_limit=dependency_limit)
    limits = {"a": agent_limit} if agent_limit else None
    summary = asyncio.run(
        engine.execute_with_dependency_awareness(
            tasks, executor, on_progress, agent_limits=limits, end_callback=on_end
        )
    )

    assert violations == []
    assert sorted(reported) == sorted(t.task_id for t in tasks)
    assert peak["all"] <= min(limit, dependency_limit)
    if agent_limit:
        assert peak["a"] <= agent_limit
    assert summary["total"] == summary["success"] + summary["failed"] + summary["skipped"]
    expected = expected_outcomes(tasks, failing)
    assert statuses == expected
    assert {r["id"] for r in summary["results"]} == {
        k for k, v in expected.items() if v == "success"
    }
    assert {e["task_id"] for e in summary["errors"]} == {
        k for k, v in expected.items() if v == "failed"
    }
    assert {s["task_id"] for s in summary["skipped_tasks"]} == {
        k for k, v in expected.items() if v == "skipped"
    }
    for skipped in summary["skipped_tasks"]:
        assert expected[skipped["blocked_by"]] == "failed"
    assert engine.active_tasks == {}


@settings(max_examples=50, deadline=None)
@given(
    priorities=st.lists(st.integers(min_value=-3, max_value=3), min_size=1, max_size=40),
    seed=st.integers(),
)
def test_flat_mode_starts_in_priority_then_input_order(priorities: list[int], seed: int) -> None:
    tasks = [AsyncTask(f"t{i}", "a", {}, priority=p) for i, p in enumerate(priorities)]
    random.Random(seed).shuffle(tasks)
    started: list[str] = []

    async def executor(task: AsyncTask) -> None:
        started.append(task.task_id)

    asyncio.run(AsyncExecutionEngine(1).execute_parallel(tasks, executor))
    position = {t.task_id: i for i, t in enumerate(tasks)}
    expected = sorted(tasks, key=lambda t: (-t.priority, position[t.task_id]))
    assert started == [t.task_id for t in expected]


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), fail_fast=st.booleans())
def test_fault_injection_over_a_thousand_tasks(seed: int, fail_fast: bool) -> None:
    """Random failures (10 %), timeouts (5 %), a raising listener, retries and a random cancel."""
    rng = random.Random(seed)
    count = 1000
    tasks = []
    for i in range(count):
        earlier = rng.sample(range(i), k=min(i, rng.randint(0, 2))) if i else []
        tasks.append(
            AsyncTask(f"t{i}", rng.choice(["a", "b"]), {}, dependencies=[f"t{d}" for d in earlier])
        )
    fate = {t.task_id: rng.random() for t in tasks}
    reported: list[str] = []

    async def executor(task: AsyncTask) -> str:
        roll = fate[task.task_id]
        await asyncio.sleep(0)
        if roll < 0.05:
            await asyncio.sleep(1)  # over the timeout
        if roll < 0.15:
            raise ConnectionError(f"{task.task_id} flaked")
        return task.task_id

    def listener(task_id: str, result: Any, error: str | None) -> None:
        reported.append(task_id)
        if fate[task_id] > 0.97:
            raise RuntimeError("listener broke")

    ended: list[tuple[str, TaskOutcome]] = []

    async def on_end(task: AsyncTask, outcome: TaskOutcome) -> None:
        ended.append((task.task_id, outcome))
        if fate[task.task_id] < 0.02:
            raise RuntimeError("end listener broke")

    policy = RunPolicy(
        task_timeout=0.005,
        retry=RetryPolicy(retries=1, base_delay=0.0, max_delay=0.0),
        fail_fast=fail_fast,
        rng=random.Random(seed),
    )
    cancel_after = rng.choice([None, 0.005, 0.02])

    async def scenario() -> dict[str, Any] | None:
        engine = AsyncExecutionEngine(12, dependency_limit=12)
        before = asyncio.all_tasks()
        run = asyncio.ensure_future(
            engine.execute_with_dependency_awareness(
                tasks, executor, listener, policy=policy, end_callback=on_end
            )
        )
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            run.cancel()
        try:
            summary = await run
        except asyncio.CancelledError:
            summary = None
        assert asyncio.all_tasks() == before
        assert engine.active_tasks == {}
        assert engine.semaphore._value == 12
        return summary

    summary = asyncio.run(scenario())
    assert len(reported) == len(set(reported))  # never reported twice
    assert len(ended) == len({task_id for task_id, _ in ended})
    assert {task_id for task_id, _ in ended} <= set(reported)
    if summary is None:
        return
    statuses = [outcome.status for _, outcome in ended]
    assert [statuses.count(s) for s in ("success", "failed", "skipped", "cancelled")] == [
        summary["success"],
        summary["failed"],
        summary["skipped"],
        summary["cancelled"],
    ]
    for _, outcome in ended:
        if outcome.status == "failed":
            assert outcome.error_type in ("ConnectionError", "TaskTimeoutError")
            assert 1 <= outcome.attempts <= 2
        if outcome.attempts == 0:
            assert outcome.started is None
    assert sorted(reported) == sorted(t.task_id for t in tasks)
    outcomes = (
        [r for r in summary["results"]]
        + [e["task_id"] for e in summary["errors"]]
        + [s["task_id"] for s in summary["skipped_tasks"]]
        + [c["task_id"] for c in summary["cancelled_tasks"]]
    )
    assert sorted(outcomes) == sorted(t.task_id for t in tasks)
    assert summary["total"] == count
    if not fail_fast:
        assert summary["cancelled"] == 0
