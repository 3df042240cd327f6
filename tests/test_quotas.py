"""Spending limits: the budget and tokens-per-minute objects, alone and in the engine.

The objects take the clock as an argument, so these tests drive time by hand;
the engine tests use real (short) runs.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from command_handlers import hookimpl
from command_handlers._plugins.usage import Exempt
from command_handlers.async_execution_engine import (
    AsyncExecutionEngine,
    AsyncTask,
    Budget,
    RetryPolicy,
    RunPolicy,
    TokenRate,
)
from command_handlers.plugins import (
    ESTIMATE_KEY,
    ExecutorRegistry,
    estimated_tokens,
    get_plugin_manager,
    run_tasks,
    spent_tokens,
    text_tokens,
)
from command_handlers.settings import Settings

pytestmark = pytest.mark.timeout(20)


def task(task_id: str, tokens: float | None = 100, agent: str = "a") -> AsyncTask:
    """A task expecting ``tokens`` tokens."""
    data: dict[str, Any] = {} if tokens is None else {ESTIMATE_KEY: tokens}
    return AsyncTask(task_id, agent, data)


def answer(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """An executor's result that spent these tokens."""
    return {"text": "ok", "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


# -- what a task expects and spent ------------------------------------------------------------


def test_estimates_and_usage_are_read_from_the_task_and_the_result() -> None:
    assert estimated_tokens(task("t", 120)) == 120
    assert estimated_tokens(task("t", None)) == 0
    assert estimated_tokens(AsyncTask("t", "a", {ESTIMATE_KEY: True})) == 0
    assert spent_tokens(task("t"), answer(30, 12)) == 42
    assert spent_tokens(task("t"), {"text": "no usage"}) is None
    assert spent_tokens(task("t"), {"usage": {"input_tokens": 3}}) is None
    assert spent_tokens(task("t"), "plain text") is None


def test_text_tokens_are_utf8_bytes_over_four_rounded_up() -> None:
    assert text_tokens("") == 0
    assert text_tokens("abcd") == 1
    assert text_tokens("abcde") == 2
    assert text_tokens("é" * 4) == 2  # two bytes each
    assert text_tokens("\ud800") == 1  # a lone surrogate counts, not fails


# -- the budget --------------------------------------------------------------------------------


def test_a_budget_lets_a_call_start_while_spent_and_reserved_fit() -> None:
    budget = Budget(250, estimated_tokens, spent_tokens, label="250 tokens")
    first, second, third = task("1"), task("2"), task("3")

    assert budget.ready_at(first, 5.0) == 5.0
    budget.acquire(first, 5.0)
    assert budget.ready_at(second, 5.0) == 5.0
    budget.acquire(second, 5.0)
    # 200 reserved: the third would pass 250; it waits while calls run.
    assert budget.ready_at(third, 5.0) == math.inf
    budget.release(first, answer(20, 10), 6.0)  # spent 30, not the 100 reserved
    assert budget.spent == 30
    assert budget.ready_at(third, 6.0) == 6.0


def test_a_budget_says_never_once_nothing_runs_and_the_call_does_not_fit() -> None:
    budget = Budget(150, estimated_tokens, spent_tokens, label="150 tokens")
    budget.acquire(task("1"), 0.0)
    budget.release(task("1"), answer(60, 40), 1.0)

    assert budget.ready_at(task("2"), 1.0) is None
    assert budget.reason == "budget of 150 tokens reached"
    assert budget.ready_at(task("small", 50), 1.0) == 1.0  # a smaller call still fits


def test_a_call_without_a_result_counts_as_its_estimate() -> None:
    budget = Budget(1000, estimated_tokens, spent_tokens)
    budget.acquire(task("failed"), 0.0)
    budget.release(task("failed"), None, 1.0)
    budget.acquire(task("silent"), 1.0)
    budget.release(task("silent"), {"text": "no usage said"}, 2.0)
    budget.release(task("never started"), answer(1, 1), 2.0)

    assert budget.spent == 200
    assert budget.reason == "budget of 1000 reached"


def test_a_budget_refuses_a_negative_or_nan_capacity() -> None:
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="budget"):
            Budget(bad, estimated_tokens, spent_tokens)


# -- tokens per minute -------------------------------------------------------------------------


def test_tokens_per_minute_wait_for_the_bucket_to_refill() -> None:
    rate = TokenRate(600, estimated_tokens, spent_tokens)  # 10 tokens a second
    first, second = task("1", 500), task("2", 300)

    assert rate.ready_at(first, 0.0) == 0.0
    rate.acquire(first, 0.0)
    # 100 left: 200 more take 20 s.
    assert rate.ready_at(second, 0.0) == pytest.approx(20.0)
    assert rate.ready_at(second, 10.0) == pytest.approx(20.0)
    assert rate.ready_at(second, 20.0) == 20.0
    assert rate.reason == "600 tokens per minute"


def test_tokens_per_minute_give_back_what_a_call_did_not_spend() -> None:
    rate = TokenRate(600, estimated_tokens, spent_tokens)
    first, second = task("1", 500), task("2", 500)
    rate.acquire(first, 0.0)
    assert rate.ready_at(second, 1.0) > 1.0

    rate.release(first, answer(5, 5), 1.0)  # reserved 500, spent 10

    assert rate.ready_at(second, 1.0) == 1.0


def test_tokens_per_minute_take_what_a_call_spent_over_its_estimate() -> None:
    rate = TokenRate(600, estimated_tokens, spent_tokens)
    rate.acquire(task("1", 100), 0.0)
    rate.release(task("1", 100), answer(400, 300), 0.0)  # 700 spent: 100 in debt

    assert rate.ready_at(task("2", 100), 0.0) == pytest.approx(20.0)
    rate.release(task("unknown"), answer(1, 1), 0.0)  # never acquired: ignored
    assert rate.ready_at(task("2", 100), 0.0) == pytest.approx(20.0)


def test_a_call_larger_than_a_minute_starts_when_the_bucket_is_full() -> None:
    rate = TokenRate(60, estimated_tokens, spent_tokens)
    rate.acquire(task("1", 30), 0.0)

    assert rate.ready_at(task("big", 1000), 0.0) == pytest.approx(30.0)
    assert rate.ready_at(task("big", 1000), 30.0) == 30.0


def test_tokens_per_minute_hold_per_group() -> None:
    def model(of: AsyncTask) -> str | None:
        return {"a": "model-1", "b": "model-2"}.get(of.agent_name)

    rate = TokenRate(600, estimated_tokens, spent_tokens, group=model)
    rate.acquire(task("1", 600, "a"), 0.0)

    assert rate.ready_at(task("2", 100, "a"), 0.0) > 0.0
    assert rate.ready_at(task("3", 600, "b"), 0.0) == 0.0  # another model's bucket
    assert rate.ready_at(task("4", 10**6, "other"), 0.0) == 0.0  # no group: not limited
    rate.acquire(task("4", 10**6, "other"), 0.0)
    rate.release(task("4", 10**6, "other"), None, 0.0)
    assert rate.ready_at(task("3", 600, "b"), 0.0) == 0.0


def test_tokens_per_minute_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenRate(0, estimated_tokens, spent_tokens)


# -- in the engine -----------------------------------------------------------------------------


class Spender:
    """An executor that answers with fixed usage and counts its calls."""

    def __init__(self, usage: tuple[int, int] = (60, 40), delay: float = 0.0) -> None:
        self.usage = usage
        self.delay = delay
        self.calls: list[str] = []
        self.running = 0
        self.most = 0

    async def __call__(self, of: AsyncTask) -> dict[str, Any]:
        self.calls.append(of.task_id)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        return answer(*self.usage)


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_the_engine_stops_starting_calls_at_the_budget(concurrency: int) -> None:
    spender = Spender(delay=0.01)
    tasks = [task(f"t{i}", 100) for i in range(12)]
    # Each call spends 100 as estimated: 5 fit in 500 whatever runs at once.
    budget = Budget(500, estimated_tokens, spent_tokens, label="500 tokens")
    engine = AsyncExecutionEngine(max_concurrency=concurrency)

    summary = await engine.execute_parallel(tasks, spender, policy=RunPolicy(limits=[budget]))

    assert len(spender.calls) == 5
    assert summary["success"] == 5
    assert summary["cancelled"] == 7
    assert {item["reason"] for item in summary["cancelled_tasks"]} == {
        "budget of 500 tokens reached"
    }
    assert budget.spent == 500
    assert budget.reserved == {}


async def test_a_call_waits_for_running_calls_to_settle_before_the_budget_decides() -> None:
    # Estimates of 100, real spending of 10: reserving alone would allow 3 at once,
    # settling lets all 12 through.
    spender = Spender(usage=(5, 5), delay=0.01)
    tasks = [task(f"t{i}", 100) for i in range(12)]
    budget = Budget(300, estimated_tokens, spent_tokens)

    summary = await AsyncExecutionEngine(max_concurrency=10).execute_parallel(
        tasks, spender, policy=RunPolicy(limits=[budget])
    )

    assert summary["success"] == 12
    assert spender.most <= 3
    assert budget.spent == 120


async def test_failed_and_retried_calls_settle_their_reservation() -> None:
    attempts: dict[str, int] = {}

    async def flaky(of: AsyncTask) -> dict[str, Any]:
        attempts[of.task_id] = attempts.get(of.task_id, 0) + 1
        if of.task_id == "bad" or attempts[of.task_id] == 1:
            raise ConnectionError("reset")
        return answer(1, 1)

    budget = Budget(10_000, estimated_tokens, spent_tokens)
    policy = RunPolicy(limits=[budget], retry=RetryPolicy(retries=1, base_delay=0.0, max_delay=0.0))
    summary = await AsyncExecutionEngine().execute_parallel(
        [task("ok", 100), task("bad", 100)], flaky, policy=policy
    )

    assert summary["success"] == 1
    assert summary["failed"] == 1
    assert budget.reserved == {}
    # Three failed attempts count their estimates; the success its usage.
    assert budget.spent == 3 * 100 + 2


async def test_the_engine_waits_for_tokens_per_minute() -> None:
    spender = Spender(usage=(1, 1), delay=0.02)
    # A minute holds one call's estimate: calls go one by one, each as the last
    # one gives back what it did not spend (the refill alone would take a minute).
    rate = TokenRate(1000, estimated_tokens, spent_tokens)
    tasks = [task(f"t{i}", 1000) for i in range(4)]

    summary = await AsyncExecutionEngine(max_concurrency=4).execute_parallel(
        tasks, spender, policy=RunPolicy(limits=[rate])
    )

    assert summary["success"] == 4
    assert spender.most == 1


# -- through the plugin layer: register(..., tpm=) ---------------------------------------------


class TpmAgents:
    """A plugin registering one agent limited to a minute's worth of one call."""

    def __init__(self, spender: Spender) -> None:
        self.spender = spender

    @hookimpl
    def register_executors(self, register: Any) -> None:
        register("slow", self.spender, tpm=1000, prompt_tokens=12)
        register("free", self.spender)


async def test_an_agent_registered_with_tpm_is_limited_alone() -> None:
    spender = Spender(usage=(1, 1), delay=0.02)
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(TpmAgents(spender))
    tasks = [task(f"s{i}", 1000, "slow") for i in range(3)]

    summary = await run_tasks(tasks, pm=pm, max_concurrency=5, settings=Settings())

    assert summary["success"] == 3
    assert spender.most == 1

    spender.most = 0
    free = [task(f"f{i}", 1000, "free") for i in range(3)]
    spender.delay = 0.1
    summary = await run_tasks(free, pm=pm, max_concurrency=5, settings=Settings())
    assert summary["success"] == 3
    assert spender.most == 3


def test_register_refuses_a_bad_tpm_or_prompt_tokens() -> None:
    registry = ExecutorRegistry()
    spender = Spender()
    for bad in (0, -5, "fast", True):
        with pytest.raises(ValueError, match="tpm of agent 'x'"):
            registry.add("p", "x", spender, tpm=bad)  # type: ignore[arg-type]
    for bad_count in (-1, 1.5, True):
        with pytest.raises(ValueError, match="prompt_tokens of agent 'x'"):
            registry.add("p", "x", spender, prompt_tokens=bad_count)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="output_tokens of agent 'x'"):
            registry.add("p", "x", spender, output_tokens=bad_count)  # type: ignore[arg-type]
    registry.add("p", "x", spender, tpm=60, prompt_tokens=7, output_tokens=300)
    registry.add("p", "y", spender)
    assert registry.tpms() == {"x": 60.0}
    assert registry.prompt_tokens("x") == 7
    assert registry.output_tokens() == {"x": 300}
    assert registry.prompt_tokens("nobody") == 0


class Cache:
    """A cache plugin that holds an answer for task ``c``."""

    @hookimpl
    def cached_result(self, task: AsyncTask) -> dict[str, Any] | None:
        return answer(5000, 5000) if task.task_id == "c" else None


async def test_an_answer_replayed_from_the_cache_spends_nothing_of_the_budget() -> None:
    spender = Spender()
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(TpmAgents(spender))
    pm.register(Cache())
    budget = Budget(100, estimated_tokens, spent_tokens)
    # "d" depends on the cached "c": "c" goes through the engine, replayed.
    cached = task("c", 1000, "free")
    child = AsyncTask("d", "free", {ESTIMATE_KEY: 100}, dependencies=["c"])

    summary = await run_tasks(
        [cached, child],
        pm=pm,
        dependency_aware=True,
        settings=Settings(),
        policy=RunPolicy(limits=[budget]),
        use_cache=True,
    )

    assert summary["success"] == 2
    assert spender.calls == ["d"]
    assert budget.spent == 100  # d's usage; nothing for the replayed c
    assert budget.reserved == {}


def test_an_exempt_task_passes_a_limit_untouched() -> None:
    budget = Budget(100, estimated_tokens, spent_tokens, label="100 tokens")
    limit = Exempt(budget, {"replayed"})
    replayed, called = task("replayed", 1000), task("called", 100)

    assert limit.ready_at(replayed, 1.0) == 1.0
    limit.acquire(replayed, 1.0)
    limit.release(replayed, answer(500, 500), 2.0)
    assert budget.spent == 0
    assert limit.ready_at(called, 2.0) == 2.0
    limit.acquire(called, 2.0)
    limit.release(called, answer(50, 50), 3.0)
    assert budget.spent == 100
    assert limit.ready_at(task("next", 1), 3.0) is None
    assert limit.reason == "budget of 100 tokens reached"


async def test_runs_sharing_a_budget_see_each_other_s_calls_end() -> None:
    # One budget for two runs: the second waits on the first's reservation, and
    # starts once that call has ended (the first run's end does not wake it).
    budget = Budget(150, estimated_tokens, spent_tokens)
    started, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def held(of: AsyncTask) -> dict[str, Any]:
        started.set()
        await release.wait()
        order.append("a ended")
        return answer(10, 10)

    async def after(of: AsyncTask) -> dict[str, Any]:
        order.append("b started")
        return answer(50, 50)

    policy = RunPolicy(limits=[budget])
    engine = AsyncExecutionEngine(max_concurrency=4)
    first = asyncio.ensure_future(engine.execute_parallel([task("a", 100)], held, policy=policy))
    await started.wait()
    second = asyncio.ensure_future(engine.execute_parallel([task("b", 100)], after, policy=policy))
    for _ in range(20):  # let the second run look at the budget (a + b would pass 150)
        await asyncio.sleep(0)
    release.set()

    assert (await first)["success"] == 1
    assert (await second)["success"] == 1
    assert order == ["a ended", "b started"]
    assert budget.spent == 20 + 100
