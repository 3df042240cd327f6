"""Timeouts, retries, rate limits, fail-fast and stop: the engine under real-world failure."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest

from command_handlers.async_execution_engine import (
    AsyncExecutionEngine,
    AsyncTask,
    RateLimit,
    RetryPolicy,
    RunPolicy,
    TaskOutcome,
    TaskTimeoutError,
    is_retryable,
    retry_after,
)


class Flaky(Exception):
    """Fails a given number of times, then the executor succeeds."""

    retryable = True


class RateLimited(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"429, retry after {seconds}")
        self.retry_after = seconds


def tasks_of(*ids: str, agent: str = "a", **fields: Any) -> list[AsyncTask]:
    return [AsyncTask(task_id, agent, {}, **fields) for task_id in ids]


class Log:
    """Records starts (with loop time), outcomes and retries."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, float]] = []
        self.progress: list[tuple[str, Any, Any]] = []
        self.retries: list[tuple[str, int, str, float]] = []
        self.ends: list[tuple[str, TaskOutcome]] = []

    def start(self, task: AsyncTask) -> None:
        self.starts.append((task.task_id, asyncio.get_running_loop().time()))

    def on_progress(self, task_id: str, result: Any, error: Any) -> None:
        self.progress.append((task_id, result, error))

    def on_retry(self, task: AsyncTask, attempt: int, error: str, delay: float) -> None:
        self.retries.append((task.task_id, attempt, error, delay))

    async def on_end(self, task: AsyncTask, outcome: TaskOutcome) -> None:
        self.ends.append((task.task_id, outcome))

    @property
    def outcomes(self) -> dict[str, TaskOutcome]:
        return dict(self.ends)


async def run(
    tasks: list[AsyncTask],
    executor: Any,
    policy: RunPolicy,
    log: Log | None = None,
    *,
    limit: int = 4,
    dependency_aware: bool = False,
) -> dict[str, Any]:
    engine = AsyncExecutionEngine(limit, dependency_limit=limit)
    method = (
        engine.execute_with_dependency_awareness if dependency_aware else engine.execute_parallel
    )
    log = log or Log()
    summary = await method(
        tasks,
        executor,
        log.on_progress,
        start_callback=log.start,
        policy=policy,
        end_callback=log.on_end,
    )
    assert engine.active_tasks == {}
    assert summary["total"] == (
        summary["success"] + summary["failed"] + summary["skipped"] + summary["cancelled"]
    )
    assert sorted(p[0] for p in log.progress) == sorted(t.task_id for t in tasks)
    # Exactly one outcome per task, agreeing with the summary.
    assert sorted(task_id for task_id, _ in log.ends) == sorted(t.task_id for t in tasks)
    statuses = [outcome.status for _, outcome in log.ends]
    assert [statuses.count(status) for status in ("success", "failed", "skipped", "cancelled")] == [
        summary["success"],
        summary["failed"],
        summary["skipped"],
        summary["cancelled"],
    ]
    for error in summary["errors"]:
        assert log.outcomes[error["task_id"]].attempts == error["attempts"]
    return summary


# --- timeouts ---------------------------------------------------------------------------


async def test_a_task_over_time_fails_and_frees_its_slot() -> None:
    async def executor(task: AsyncTask) -> str:
        if task.task_id == "slow":
            await asyncio.Event().wait()
        return task.task_id

    summary = await run(tasks_of("slow", "b", "c"), executor, RunPolicy(task_timeout=0.05), limit=1)
    assert summary["success"] == 2
    assert summary["errors"] == [
        {
            "task_id": "slow",
            "agent_name": "a",
            "error": "task 'slow' timed out after 0.05 s",
            "error_type": "TaskTimeoutError",
            "attempts": 1,
        }
    ]


async def test_a_task_timeout_overrides_the_run_timeout() -> None:
    async def executor(task: AsyncTask) -> str:
        await asyncio.sleep(0.05)
        return task.task_id

    tasks = [AsyncTask("patient", "a", {}, timeout=5.0), AsyncTask("hasty", "a", {}, timeout=0.01)]
    summary = await run(tasks, executor, RunPolicy(task_timeout=0.02))
    assert summary["results"] == ["patient"]
    assert [e["task_id"] for e in summary["errors"]] == ["hasty"]
    assert issubclass(TaskTimeoutError, asyncio.TimeoutError)


# --- retries ----------------------------------------------------------------------------


def flaky_executor(failures: dict[str, int], error: type[Exception] = Flaky) -> Any:
    calls: dict[str, int] = {}

    async def executor(task: AsyncTask) -> str:
        calls[task.task_id] = calls.get(task.task_id, 0) + 1
        if calls[task.task_id] <= failures.get(task.task_id, 0):
            raise error(f"{task.task_id} attempt {calls[task.task_id]}")
        return task.task_id

    executor.calls = calls  # type: ignore[attr-defined]
    return executor


async def test_retryable_failures_are_tried_again_until_they_succeed() -> None:
    log = Log()
    executor = flaky_executor({"a": 2, "b": 1})
    policy = RunPolicy(
        retry=RetryPolicy(retries=3, base_delay=0.001),
        retry_callback=log.on_retry,
        rng=random.Random(1),
    )
    summary = await run(tasks_of("a", "b", "c"), executor, policy, log)
    assert summary["success"] == 3
    assert executor.calls == {"a": 3, "b": 2, "c": 1}
    assert [(r[0], r[1]) for r in log.retries] == [("a", 1), ("b", 1), ("a", 2)]
    assert all(r[2].startswith(r[0]) for r in log.retries)
    assert [p for p in log.progress if p[2] is not None] == []  # reported once, as a success
    assert {k: (o.status, o.attempts) for k, o in log.outcomes.items()} == {
        "a": ("success", 3),
        "b": ("success", 2),
        "c": ("success", 1),
    }
    assert [s[0] for s in log.starts].count("a") == 1  # the start callback hears of a task once


async def test_retries_stop_at_the_limit_and_report_the_last_error_and_attempts() -> None:
    log = Log()
    before = time.time()
    summary = await run(
        tasks_of("a"),
        flaky_executor({"a": 10}),
        RunPolicy(retry=RetryPolicy(retries=2, base_delay=0.001)),
        log,
    )
    assert summary["errors"][0]["error"] == "a attempt 3"
    assert summary["errors"][0]["attempts"] == 3
    outcome = log.outcomes["a"]
    assert (outcome.status, outcome.error, outcome.error_type, outcome.attempts) == (
        "failed",
        "a attempt 3",
        "Flaky",
        3,
    )
    assert outcome.started is not None
    assert before <= outcome.started <= outcome.finished <= time.time()


async def test_errors_that_are_not_retryable_fail_at_once() -> None:
    executor = flaky_executor({"a": 1}, error=ValueError)
    summary = await run(tasks_of("a"), executor, RunPolicy(retry=RetryPolicy(retries=5)))
    assert summary["failed"] == 1
    assert executor.calls == {"a": 1}


async def test_retry_if_decides_first_and_falls_back_to_the_default_rule() -> None:
    def only_value_errors(error: BaseException) -> bool | None:
        if isinstance(error, ValueError):
            return True
        if isinstance(error, KeyError):
            raise RuntimeError("broken rule")  # logged, default rule used
        return None

    executor = flaky_executor({"a": 1}, error=ValueError)
    policy = RunPolicy(retry=RetryPolicy(retries=1, base_delay=0.0), retry_if=only_value_errors)
    assert (await run(tasks_of("a"), executor, policy))["success"] == 1

    keys = flaky_executor({"k": 1}, error=KeyError)
    assert (await run(tasks_of("k"), keys, policy))["failed"] == 1

    flaky = flaky_executor({"f": 1})
    assert (await run(tasks_of("f"), flaky, policy))["success"] == 1


async def test_a_task_waiting_to_retry_holds_no_slot() -> None:
    log = Log()
    executor = flaky_executor({"first": 1})
    policy = RunPolicy(retry=RetryPolicy(retries=1, base_delay=0.05, max_delay=0.05))
    policy = RunPolicy(retry=policy.retry, rng=random.Random(0))
    await run(tasks_of("first", "second", "third"), executor, policy, log, limit=1)
    order = [task_id for task_id, _ in log.starts]
    assert order == ["first", "second", "third"]  # the others ran while "first" waited
    assert executor.calls["first"] == 2


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy(retries=10, base_delay=0.5, max_delay=4.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0), (200, 4.0)]:
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range


async def test_retry_after_waits_as_asked_and_slows_the_whole_agent() -> None:
    log = Log()
    calls: list[str] = []

    async def executor(task: AsyncTask) -> str:
        calls.append(task.task_id)
        if task.task_id == "limited" and calls.count("limited") == 1:
            raise RateLimited(0.2)
        return task.task_id

    tasks = [
        AsyncTask("limited", "llm", {}),
        AsyncTask("same-agent", "llm", {}),
        AsyncTask("other-agent", "cli", {}),
    ]
    policy = RunPolicy(retry=RetryPolicy(retries=1, base_delay=5.0), retry_callback=log.on_retry)
    summary = await run(tasks, executor, policy, log, limit=1)
    assert summary["success"] == 3
    assert log.retries[0][3] == pytest.approx(0.2)
    started = dict(log.starts)
    first = log.starts[0][1]
    assert started["other-agent"] - first < 0.15  # another agent goes on at once
    assert started["same-agent"] - first >= 0.19  # the limited agent waits for Retry-After


def test_retry_after_is_capped_by_the_policy() -> None:
    assert RetryPolicy(max_retry_after=1.0).max_retry_after == 1.0


# --- rate limits ------------------------------------------------------------------------


async def test_a_run_rate_spaces_task_starts() -> None:
    log = Log()

    async def executor(task: AsyncTask) -> None:
        return None

    await run(tasks_of("a", "b", "c", "d"), executor, RunPolicy(rate="20/s"), log)
    times = [t for _, t in log.starts]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(gap >= 0.04 for gap in gaps), gaps


async def test_an_agent_rate_limits_only_that_agent() -> None:
    log = Log()

    async def executor(task: AsyncTask) -> None:
        return None

    tasks = tasks_of("s1", "s2", "s3", agent="slow") + tasks_of("f1", "f2", "f3", agent="fast")
    await run(tasks, executor, RunPolicy(agent_rates={"slow": 10.0}), log, limit=2)
    started = dict(log.starts)
    assert started["s3"] - started["s1"] >= 0.18
    assert max(started[f] for f in ("f1", "f2", "f3")) - started["s1"] < 0.09


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("5/s", 5.0), ("120/min", 2.0), ("120/m", 2.0), ("3600/h", 1.0), ("2.5", 2.5), (4, 4.0)],
)
def test_rate_parsing(text: Any, per_second: float) -> None:
    assert RateLimit.parse(text).per_second == pytest.approx(per_second)
    limit = RateLimit(3.0)
    assert RateLimit.parse(limit) is limit


@pytest.mark.parametrize("text", ["fast", "5/day", "-1/s", "0/s"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimit.parse(text)


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(ValueError, match="base_delay"):
        RetryPolicy(base_delay=-2)
    with pytest.raises(ValueError, match="task_timeout"):
        RunPolicy(task_timeout=-1)
    with pytest.raises(ValueError, match="burst"):
        RateLimit(1.0, burst=0.5)
    with pytest.raises(ValueError, match="rate"):
        RunPolicy(agent_rates={"a": "often"})


# --- failure policy ---------------------------------------------------------------------


async def test_fail_fast_cancels_the_rest_and_keeps_failures_apart() -> None:
    log = Log()
    gate = asyncio.Event()

    async def executor(task: AsyncTask) -> str:
        if task.task_id == "bad":
            raise ValueError("bad")
        await gate.wait()
        return task.task_id

    tasks = tasks_of("slow-1", "slow-2", "bad", "later-1", "later-2")
    summary = await run(tasks, executor, RunPolicy(fail_fast=True), log, limit=3)
    assert summary["failed"] == 1
    assert summary["success"] == 0
    assert summary["cancelled"] == 4
    reasons = {c["task_id"]: c["reason"] for c in summary["cancelled_tasks"]}
    assert reasons == dict.fromkeys(
        ["slow-1", "slow-2", "later-1", "later-2"], "fail-fast: task 'bad' failed"
    )
    errors = {p[0]: p[2] for p in log.progress}
    assert errors["later-1"].startswith("cancelled: fail-fast")
    assert errors["bad"] == "bad"
    outcomes = log.outcomes
    assert (outcomes["bad"].status, outcomes["bad"].error_type) == ("failed", "ValueError")
    for task_id in ("slow-1", "slow-2", "later-1", "later-2"):
        assert outcomes[task_id].status == "cancelled"
        assert outcomes[task_id].error == "fail-fast: task 'bad' failed"
        assert outcomes[task_id].result is None
    # The running ones had started; the others never did.
    assert [outcomes[t].attempts for t in ("slow-1", "slow-2", "later-1", "later-2")] == [
        1,
        1,
        0,
        0,
    ]
    assert outcomes["slow-1"].started is not None
    assert outcomes["later-1"].started is None


async def test_stop_starts_nothing_new_and_lets_running_tasks_finish() -> None:
    stop = asyncio.Event()
    finished: list[str] = []

    async def executor(task: AsyncTask) -> str:
        if task.task_id == "t1":
            stop.set()
            await asyncio.sleep(0.02)
        finished.append(task.task_id)
        return task.task_id

    log = Log()
    summary = await run(
        tasks_of("t0", "t1", "t2", "t3", "t4"), executor, RunPolicy(stop=stop), log, limit=2
    )
    assert summary["success"] == 2
    assert sorted(finished) == ["t0", "t1"]
    assert {c["reason"] for c in summary["cancelled_tasks"]} == {"stopped"}
    assert summary["cancelled"] == 3
    for task_id in ("t2", "t3", "t4"):
        outcome = log.outcomes[task_id]
        assert (outcome.status, outcome.error, outcome.attempts, outcome.started) == (
            "cancelled",
            "stopped",
            0,
            None,
        )
    assert log.outcomes["t1"].status == "success"  # running when stopped: it finished


async def test_stop_grace_then_cancels_running_tasks() -> None:
    stop = asyncio.Event()
    running: list[str] = []

    async def executor(task: AsyncTask) -> str:
        running.append(task.task_id)
        if len(running) == 2:
            stop.set()
        await asyncio.Event().wait()
        return task.task_id

    log = Log()
    summary = await run(
        tasks_of("t0", "t1", "t2"), executor, RunPolicy(stop=stop, stop_grace=0.01), log, limit=2
    )
    assert summary["success"] == 0
    assert summary["cancelled"] == 3
    assert summary["failed"] == 0
    outcomes = log.outcomes
    for task_id in ("t0", "t1"):  # running when the grace ran out
        assert (outcomes[task_id].status, outcomes[task_id].error) == ("cancelled", "stopped")
        assert outcomes[task_id].attempts == 1
        assert outcomes[task_id].started is not None
    assert (outcomes["t2"].attempts, outcomes["t2"].started) == (0, None)
    errors = {p[0]: p[2] for p in log.progress}
    assert errors == dict.fromkeys(["t0", "t1", "t2"], "cancelled: stopped")


async def test_a_task_waiting_to_retry_when_stopped_counts_only_the_calls_made() -> None:
    stop = asyncio.Event()
    calls: list[str] = []

    async def executor(task: AsyncTask) -> str:
        calls.append(task.task_id)
        stop.set()  # the retry's timer is far off: the stop comes first
        raise Flaky("try later")

    log = Log()
    policy = RunPolicy(retry=RetryPolicy(retries=3, base_delay=60, max_delay=60), stop=stop)
    policy = RunPolicy(retry=policy.retry, stop=stop, rng=random.Random(3))
    summary = await run(tasks_of("a"), executor, policy, log)
    assert calls == ["a"]
    assert summary["cancelled"] == 1
    outcome = log.outcomes["a"]
    assert (outcome.status, outcome.error, outcome.attempts) == ("cancelled", "stopped", 1)
    assert outcome.started is not None


async def test_allow_failure_lets_dependents_run() -> None:
    tasks = [
        AsyncTask("optional", "a", {}, allow_failure=True),
        AsyncTask("required", "a", {}),
        AsyncTask("after", "a", {}, dependencies=["optional", "required"]),
    ]

    async def executor(task: AsyncTask) -> str:
        if task.task_id == "optional":
            raise ValueError("no luck")
        return task.task_id

    summary = await run(tasks, executor, RunPolicy(), dependency_aware=True)
    assert summary["results"] == ["required", "after"]
    assert summary["failed"] == 1
    assert summary["skipped"] == 0


async def test_a_stop_that_never_comes_leaves_nothing_behind() -> None:
    before = asyncio.all_tasks()

    async def executor(task: AsyncTask) -> str:
        return task.task_id

    summary = await run(tasks_of("a", "b"), executor, RunPolicy(stop=asyncio.Event()))
    assert summary["success"] == 2
    assert asyncio.all_tasks() == before


# --- the default rule -------------------------------------------------------------------


class StatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status


class RateLimitError(Exception):
    """Named like the OpenAI and Anthropic clients' error."""


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutError(), True),
        (asyncio.TimeoutError(), True),
        (ConnectionResetError(), True),
        (Flaky(), True),
        (RateLimited(1.0), True),
        (StatusError(429), True),
        (StatusError(503), True),
        (StatusError(400), False),
        (RateLimitError("slow down"), True),
        (ValueError("bad prompt"), False),
        (KeyError("x"), False),
    ],
)
def test_default_retry_rule(error: BaseException, expected: bool) -> None:
    assert is_retryable(error) is expected


def test_an_error_can_declare_itself_not_retryable() -> None:
    error = TimeoutError()
    assert is_retryable(error)
    refused = StatusError(503)
    refused.retryable = False  # type: ignore[attr-defined]
    assert not is_retryable(refused)


def test_retry_after_from_attribute_header_seconds_and_http_date() -> None:
    assert retry_after(RateLimited(2.5)) == 2.5
    with_header = Exception()
    with_header.response = SimpleNamespace(headers={"retry-after": "7"})  # type: ignore[attr-defined]
    assert retry_after(with_header) == 7.0
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    dated = Exception()
    dated.response = SimpleNamespace(headers={"retry-after": format_datetime(later, usegmt=True)})  # type: ignore[attr-defined]
    assert 25 <= (retry_after(dated) or 0) <= 31
    garbage = Exception()
    garbage.response = SimpleNamespace(headers={"retry-after": "soon"})  # type: ignore[attr-defined]
    assert retry_after(garbage) is None
    assert retry_after(ValueError()) is None
    past = RateLimited(-4)
    assert retry_after(past) == 0.0
