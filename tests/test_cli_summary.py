"""The closing summary of a run: what it names, and what it counts."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from command_handlers.cli import SUMMARY_FAILURES, _print_summary
from command_handlers.intelligent_parallel.result import CommandResult, make_stats


def _task(number: int, status: str, error: str | None) -> dict[str, Any]:
    return {
        "task_id": f"n{number}:clarify",
        "note": f'"note {number}" (n{number})',
        "agent": "clarify",
        "status": status,
        "error": error,
    }


def test_failures_are_named_up_to_a_limit_and_cancelled_calls_grouped_by_reason() -> None:
    failed = [_task(i, "failed", f"error {i}") for i in range(SUMMARY_FAILURES + 5)]
    cancelled = [_task(100 + i, "cancelled", "budget of 10 tokens reached") for i in range(7)]
    stopped = [_task(200, "cancelled", "stopped")]
    result = CommandResult(
        "ran", "s", False, stats=make_stats(total_nodes=33), results=failed + cancelled + stopped
    )
    console = Console(record=True, width=200)

    _print_summary(console, result)

    text = console.export_text()
    named = [line for line in text.splitlines() if line.startswith("failed ")]
    assert len(named) == SUMMARY_FAILURES
    assert named[0] == 'failed "note 0" (n0) clarify: error 0'
    assert "... and 5 more (every task is in --report FILE and --json)" in text
    assert "cancelled 7 calls: budget of 10 tokens reached" in text
    assert "cancelled 1 call: stopped" in text
    assert "(n100)" not in text
