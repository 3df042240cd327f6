"""What a run spends, through the real ``llm`` OpenAI plugin against a real HTTP server.

The server reports the usage each test fixes (:attr:`LlmServer.usage`); the
tests count the requests it saw: a budget answers exactly the calls that fit,
a rerun with a larger budget answers the rest and repeats none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import LlmServer, declare_models, running
from llm_server import notes_canvas as write_notes

from command_handlers.cli import main
from command_handlers.default_plugins import llm_agents
from command_handlers.default_plugins.llm_agents import OPENAI_ADAPTER_LLM

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(
        llm_agents._llm_release() < OPENAI_ADAPTER_LLM,
        reason="the installed llm predates the OpenAI path this module tests",
    ),
]

KEY = "sk-local"
#: What every answer reports: (input tokens, output tokens).
USAGE = (3000, 1000)
SPENT = sum(USAGE)


@pytest.fixture
def server(llm_home: Path) -> Iterator[LlmServer]:
    """The server, reporting :data:`USAGE`, and llm configured to reach it."""
    with running(api_key=KEY) as started:
        started.usage = USAGE
        declare_models(llm_home, started, KEY)
        yield started


def notes_canvas(folder: Path, count: int) -> Path:
    """A vault with a canvas of ``count`` learner's notes, ``NOTE-0`` to ``NOTE-<count - 1>``."""
    (folder / ".obsidian").mkdir()
    return write_notes(folder / "notes.canvas", count)


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, Any, str]:
    """Run the command in-process with ``--json``: (exit code, report, stderr)."""
    capsys.readouterr()
    code = main([*(str(arg) for arg in args), "--json", "--model", "local-chat"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def estimates(capsys: pytest.CaptureFixture[str], canvas: Path, *args: object) -> list[int]:
    """Each call's estimated tokens, from a dry run's plan (one agent: ``calls`` calls)."""
    code, report, err = run(capsys, canvas, "--dry-run", *args)
    assert code == 0, err
    plan = report["plan"]
    assert report["tasks"] == []  # a plan, nothing called
    # Every note's prompt has the same length to within a byte: the per-call
    # estimates differ by at most one token; bound them from both sides.
    total = plan["estimate"]["input_tokens"] + plan["estimate"]["output_tokens"]
    low = total // plan["calls"]
    return [low, math.ceil(total / plan["calls"]) + 1]


# -- the plan's estimate -----------------------------------------------------------------------


def test_a_dry_run_estimates_tokens_and_calls_nothing(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = notes_canvas(tmp_path, 3)

    code, report, err = run(capsys, canvas, "--dry-run")

    assert code == 0, err
    assert server.requests == []
    estimate = report["plan"]["estimate"]
    # The prompt (the note) and the agent's system prompt, at about 4 bytes a token.
    assert estimate["input_tokens"] > 3 * 100
    assert estimate["output_tokens"] == 3 * 800  # no earlier answer: the default
    assert estimate["usd"] is None  # genai-prices does not know this local model
    assert report["plan"]["agents"]["clarification-path"]["estimate"] == estimate
    assert "no price" in err

    code, priced, err = run(capsys, canvas, "--dry-run", "--price", "3,15")

    assert code == 0, err
    tokens_in, tokens_out = estimate["input_tokens"], estimate["output_tokens"]
    expected = (tokens_in * 3 + tokens_out * 15) / 1_000_000
    assert priced["plan"]["estimate"]["usd"] == pytest.approx(expected)
    assert server.requests == []


def test_the_output_estimate_is_the_mean_of_earlier_answers(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = notes_canvas(tmp_path, 2)
    code, _, err = run(capsys, canvas, "--auto", "--nodes", "n0")
    assert code == 0, err

    code, report, err = run(capsys, canvas, "--dry-run")

    assert code == 0, err
    # n1 is left; the journal holds n0's answer, whose call answered USAGE[1] tokens.
    assert report["plan"]["calls"] == 1
    assert report["plan"]["estimate"]["output_tokens"] == USAGE[1]


# -- budgets -----------------------------------------------------------------------------------


def test_a_token_budget_answers_the_calls_that_fit_and_a_rerun_the_rest(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = notes_canvas(tmp_path, 12)
    low, high = estimates(capsys, canvas)
    assert high - low < SPENT  # the bound below decides by the spent tokens alone
    # One call at a time: the fifth starts (4 spent + its estimate fit), the sixth does not.
    budget = 4 * SPENT + high

    code, report, err = run(capsys, canvas, "--auto", "-m", 1, "--budget-tokens", budget)

    assert code == 1, err
    assert len(server.requests) == 5
    statuses = [task["status"] for task in report["tasks"]]
    assert statuses.count("success") == 5
    assert statuses.count("cancelled") == 7
    assert report["stats"]["input_tokens"] + report["stats"]["output_tokens"] == 5 * SPENT
    line = (
        f"budget of {budget:,} tokens reached: 7 notes not answered; run again with a larger budget"
    )
    assert line in " ".join(err.split())
    answered = {request.note for request in server.requests}

    code, report, err = run(capsys, canvas, "--auto", "--budget-tokens", 12 * (SPENT + high))

    assert code == 0, err
    assert server.per_note() == {f"NOTE-{i}": 1 for i in range(12)}  # no call repeated
    again = {request.note for request in server.requests[5:]}
    assert again.isdisjoint(answered)
    assert len(again) == 7
    assert report["stats"]["skipped_answered"] == 5


def test_calls_at_once_never_pass_a_budget_when_answers_are_as_short_as_estimated(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.usage = (100, 100)  # less than each call's estimate
    server.latency = 0.05
    canvas = notes_canvas(tmp_path, 12)
    low, high = estimates(capsys, canvas)
    assert low > 200
    # Calls start while spent + reserved + the next estimate fit; each settles at
    # 200: the run stops once none runs and the next does not fit. That is the
    # 4th call's end here (3 * 200 + an estimate fits, 4 * 200 + one does not).
    budget = high + 3 * 200 + 100

    code, report, err = run(capsys, canvas, "--auto", "-m", 4, "--budget-tokens", budget)

    assert code == 1, err
    assert len(server.requests) == 4
    spent = report["stats"]["input_tokens"] + report["stats"]["output_tokens"]
    assert spent == 4 * 200 <= budget
    assert server.max_in_flight < 4  # reserved estimates held the others back


def test_a_dollar_budget_with_a_price(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = notes_canvas(tmp_path, 6)
    low, high = estimates(capsys, canvas)
    # $1 per million tokens, in and out: a call costs its tokens / 1e6 dollars.
    budget = (2 * SPENT + high + 0.5) / 1_000_000  # half a token: room for rounding

    code, report, err = run(
        capsys, canvas, "--auto", "-m", 1, "--price", "1,1", "--budget-usd", budget
    )

    assert code == 1, err
    assert len(server.requests) == 3
    assert report["stats"]["usd"] == pytest.approx(3 * SPENT / 1_000_000)
    assert f"Spent {3 * USAGE[0]:,} tokens in, {3 * USAGE[1]:,} out: $0.0120" in err
    assert "budget of $" in err
    assert "3 notes not answered" in " ".join(err.split())
    assert low <= high


def test_a_dollar_budget_without_a_price_is_refused(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = notes_canvas(tmp_path, 2)
    before = canvas.read_bytes()

    code, report, err = run(capsys, canvas, "--auto", "--budget-usd", "1")

    assert code == 2
    assert report is None
    message = " ".join(err.split())
    assert "'local-chat'" in message
    assert "--price" in message
    assert server.requests == []
    assert canvas.read_bytes() == before


def test_spent_dollars_are_null_without_a_price(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canvas = notes_canvas(tmp_path, 2)

    code, report, err = run(capsys, canvas, "--auto")

    assert code == 0, err
    assert report["stats"]["usd"] is None
    assert report["stats"]["input_tokens"] == 2 * USAGE[0]
    assert report["plan"]["calls"] == 2


# -- tokens per minute -------------------------------------------------------------------------


def test_tokens_per_minute_reserve_the_estimate_and_settle_with_the_usage(
    server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A minute's tokens hold one call's estimate: calls go one at a time.

    Each answer reports 2 tokens, so each call gives back nearly all it
    reserved when it ends: the next starts then, not a minute later.
    """
    server.usage = (1, 1)
    server.latency = 0.05
    canvas = notes_canvas(tmp_path, 4)
    _, high = estimates(capsys, canvas)

    code, report, err = run(capsys, canvas, "--auto", "-m", 4, "--tpm", high)

    assert code == 0, err
    assert server.max_in_flight == 1
    assert server.per_note() == {f"NOTE-{i}": 1 for i in range(4)}
    assert report["elapsed_seconds"] < 20  # not a minute per call
