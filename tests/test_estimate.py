"""The plan's estimate, prices, and the options and messages of caps: no model, no network."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import pytest

from command_handlers.intelligent_parallel.answered import ANSWERED, NEW
from command_handlers.intelligent_parallel.caps import (
    agent_models,
    agent_prices,
    budget_message,
    run_limits,
    spent_usd,
)
from command_handlers.intelligent_parallel.estimate import (
    DEFAULT_OUTPUT_TOKENS,
    CallEstimate,
    add_to_plan,
    estimate_calls,
    output_means,
)
from command_handlers.intelligent_parallel.notes import Note
from command_handlers.intelligent_parallel.options import CommandInputError, Options
from command_handlers.intelligent_parallel.prompt import build_prompt
from command_handlers.plugins import (
    AsyncTask,
    Budget,
    ExecutorRegistry,
    TokenRate,
    text_tokens,
)
from command_handlers.pricing import FREE, Price, model_price, parse_price
from command_handlers.settings import Settings


@dataclass
class Record:
    """A recorded answer, as the ``recorded_answers`` hook gives it."""

    agent: str | None
    text: str | None
    output_tokens: int | None = None


def note(node_id: str, text: str, **decisions: str) -> Note:
    """A note answered by the agents named, each with its decision."""
    found = Note({"id": node_id, "type": "text", "text": text})
    found.agents = list(decisions)
    found.decisions = dict(decisions)
    return found


# -- the estimate ------------------------------------------------------------------------------


def test_output_means_prefer_the_usage_and_fall_back_to_the_text() -> None:
    records = [
        Record("a", "ignored", output_tokens=100),
        Record("a", None, output_tokens=201),
        Record("b", "x" * 40),  # no usage kept: 10 tokens of text
        Record(None, "no agent"),
        Record("c", None),  # neither: left out
    ]

    assert output_means(records) == {"a": 151, "b": 10}


def test_each_call_is_the_prompt_plus_the_agent_s_own_tokens() -> None:
    notes = {
        "n1": note("n1", "What I understood of recursion", a=NEW, b=ANSWERED),
        "n2": note("n2", "Nothing to do", a=ANSWERED),
    }

    calls = estimate_calls(notes, {"a": 50}, {"a": 300})

    sent = text_tokens(build_prompt("What I understood of recursion"))
    assert calls == {("n1", "a"): CallEstimate(sent + 50, 300)}
    assert calls["n1", "a"].total == sent + 350


def test_a_note_that_builds_on_others_carries_their_answers() -> None:
    first = note("n1", "base", a=NEW, b=ANSWERED)
    second = note("n2", "builds on n1", a=NEW)
    second.after = ["n1", "gone"]  # a prerequisite outside the selection counts nothing

    calls = estimate_calls({"n1": first, "n2": second}, {}, {"a": 300})

    alone = text_tokens(build_prompt("builds on n1"))
    assert calls["n2", "a"].input_tokens == alone + 300 + DEFAULT_OUTPUT_TOKENS


def test_an_agent_without_earlier_answers_gets_its_own_or_the_default_output() -> None:
    notes = {"n1": note("n1", "text", a=NEW, b=NEW, c=NEW)}

    calls = estimate_calls(notes, {}, {"a": 250}, {"a": 100, "b": 300})

    assert calls["n1", "a"].output_tokens == 250  # earlier answers win
    assert calls["n1", "b"].output_tokens == 300  # the agent's own
    assert calls["n1", "c"].output_tokens == DEFAULT_OUTPUT_TOKENS


def test_the_plan_gets_an_estimate_per_agent_and_in_all() -> None:
    plan: dict[str, Any] = {"agents": {"a": {"calls": 2}, "b": {"calls": 1}}}
    calls = {
        ("n1", "a"): CallEstimate(1000, 500),
        ("n2", "a"): CallEstimate(1000, 500),
        ("n1", "b"): CallEstimate(400, 100),
    }

    add_to_plan(plan, calls, {"a": Price(3, 15), "b": FREE})

    assert plan["agents"]["a"]["estimate"] == {
        "input_tokens": 2000,
        "output_tokens": 1000,
        "usd": pytest.approx(0.021),
    }
    assert plan["agents"]["b"]["estimate"]["usd"] == 0.0
    assert plan["estimate"] == {
        "input_tokens": 2400,
        "output_tokens": 1100,
        "usd": pytest.approx(0.021),
    }

    add_to_plan(plan, calls, {"a": Price(3, 15), "b": None})

    assert plan["agents"]["b"]["estimate"]["usd"] is None
    assert plan["estimate"]["usd"] is None  # one unknown price: the total is unknown


# -- prices ------------------------------------------------------------------------------------


def test_a_price_is_two_numbers() -> None:
    assert parse_price("3,15") == Price(3.0, 15.0)
    assert parse_price(" 0.15 , 0.6 ") == Price(0.15, 0.6)
    for bad in ("3", "3,15,1", "a,b", "-1,2", "inf,1", ""):
        with pytest.raises(ValueError, match="IN,OUT"):
            parse_price(bad)
    assert Price(2, 4).usd(500_000, 250_000) == pytest.approx(2.0)


def test_the_echo_model_is_free_and_imports_no_price_data() -> None:
    had = "genai_prices" in sys.modules
    assert model_price("echo") is FREE
    assert ("genai_prices" in sys.modules) == had


def test_a_model_genai_prices_knows_gets_its_price() -> None:
    pytest.importorskip("genai_prices")  # the prices extra needs Python 3.11

    price = model_price("gpt-4o-mini")

    assert price is not None
    assert price.input_usd > 0
    assert price.output_usd > price.input_usd
    assert model_price("no-such-model-anywhere") is None


def test_without_genai_prices_no_model_has_a_price(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # import fails
    model_price.cache_clear()
    try:
        assert model_price("gpt-4o-mini-without-data") is None
        assert model_price("echo") is FREE
    finally:
        model_price.cache_clear()


# -- agents' models and prices -----------------------------------------------------------------


async def _answer(task: AsyncTask) -> dict[str, Any]:
    return {"text": task.task_id}


def registry() -> ExecutorRegistry:
    """Two model agents and one that names no model."""
    found = ExecutorRegistry()
    found.add("p", "a", _answer, fingerprint="echo")
    found.add("p", "b", _answer, fingerprint="local-unknown-model")
    found.add("p", "c", _answer)
    return found


def test_an_agent_s_model_is_its_fingerprint_and_an_agent_program_has_none() -> None:
    assert agent_models(registry(), Settings()) == {
        "a": "echo",
        "b": "local-unknown-model",
        "c": None,
    }
    assert agent_models(registry(), Settings(agent_command=("cat",))) == dict.fromkeys("abc")


def test_prices_are_the_given_one_or_the_model_s() -> None:
    models = {"a": "echo", "b": "local-unknown-model", "c": None}

    assert agent_prices(models, None, None) == {"a": FREE, "b": None, "c": None}
    assert agent_prices(models, Price(1, 2), 5.0) == dict.fromkeys("abc", Price(1, 2))
    with pytest.raises(CommandInputError, match=r"'local-unknown-model'.*--price"):
        agent_prices(models, None, 5.0)
    with pytest.raises(CommandInputError, match=r"'c'.*--price"):
        agent_prices({"c": None}, None, 5.0)


def test_spent_dollars_come_from_the_usage_of_each_call() -> None:
    rows = [
        {"agent": "a", "usage": {"input_tokens": 1_000_000, "output_tokens": 0}},
        {"agent": "a", "usage": None},
        {"agent": "b", "usage": {"input_tokens": 0, "output_tokens": 500_000}},
    ]

    assert spent_usd(rows, {"a": Price(2, 0), "b": Price(0, 8)}) == pytest.approx(6.0)
    assert spent_usd(rows, {"a": Price(2, 0), "b": None}) is None
    assert spent_usd([], {}) == 0.0


def test_the_budget_message_counts_the_notes_left() -> None:
    rows = [
        {"node_id": "n1", "status": "success"},
        {"node_id": "n2", "status": "cancelled"},
        {"node_id": "n2", "status": "cancelled"},
        {"node_id": "n3", "status": "cancelled"},
    ]
    reason = "budget of 100 tokens reached"

    assert budget_message([{"task_id": "x", "reason": reason}], rows) == (
        f"{reason}: 2 notes not answered; run again with a larger budget"
    )
    assert "1 note not answered" in str(budget_message([{"reason": reason}], rows[:2]))
    assert budget_message([{"reason": "stopped"}], rows) is None
    assert budget_message([], rows) is None


# -- options and limits ------------------------------------------------------------------------


def test_spending_options_are_checked() -> None:
    opts = Options.parse({"price": "1,2", "budget_tokens": "500", "budget_usd": 0.5, "tpm": 1000})
    assert (opts.price, opts.budget_tokens, opts.budget_usd, opts.tpm) == (
        Price(1, 2),
        500,
        0.5,
        1000.0,
    )
    assert Options.parse({"price": Price(3, 4)}).price == Price(3, 4)
    for bad in (
        {"price": "x"},
        {"budget_tokens": -1},
        {"budget_tokens": 1.5},
        {"budget_usd": "lots"},
        {"tpm": 0},
        {"tpm": "-3"},
    ):
        with pytest.raises(CommandInputError):
            Options.parse(bad)


def test_the_options_become_engine_limits() -> None:
    opts = Options.parse({"budget_tokens": 500, "budget_usd": 1.0, "tpm": 600})
    calls = {"t1": CallEstimate(300_000, 100_000)}
    prices = {"a": Price(1, 2), "b": None}

    tokens, dollars, rate = run_limits(opts, calls, prices, {"a": "m1", "b": None})

    assert isinstance(tokens, Budget)
    assert tokens.reason == "budget of 500 tokens reached"
    assert isinstance(dollars, Budget)
    assert dollars.reason == "budget of $1 reached"
    assert isinstance(rate, TokenRate)
    priced = AsyncTask("t1", "a", {})
    assert dollars.estimate(priced) == pytest.approx(0.5)
    assert dollars.estimate(AsyncTask("t2", "a", {})) == 0.0  # no estimate
    assert dollars.estimate(AsyncTask("t1", "b", {})) == 0.0  # no price
    usage = {"usage": {"input_tokens": 500_000, "output_tokens": 250_000}}
    assert dollars.actual(priced, usage) == pytest.approx(1.0)
    assert dollars.actual(priced, {"text": "no usage"}) is None
    assert dollars.actual(AsyncTask("t1", "b", {}), usage) is None
    assert rate.group is not None
    assert rate.group(priced) == "m1"
    assert rate.group(AsyncTask("t3", "b", {})) == "b"  # no model: per agent
    assert run_limits(Options(), calls, prices, {}) == []
