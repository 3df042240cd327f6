"""What a command run gives back: a typed result, turned into the origin's dict only at the edge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from command_handlers.hookspecs import OutcomeView, TaskView
from command_handlers.intelligent_parallel.notes import Note

__all__ = [
    "KINDS",
    "NOTHING_SELECTED",
    "CommandResult",
    "make_stats",
    "report",
    "task_row",
    "task_usage",
]

#: What a run came to: nothing selected, only a plan, the user said no, every
#: note already answered, or the agents ran.
KINDS = ("nothing-selected", "dry-run", "declined", "up-to-date", "ran")
#: The origin's message when no note is selected.
NOTHING_SELECTED = "No yellow nodes found"

_STATS = (
    "total_nodes",
    "processed_nodes",
    "generated_docs",
    "created_blue_nodes",
    "errors",
    "reused_answers",
    "cancelled",
    "skipped_answered",
    "input_tokens",
    "output_tokens",
)


def make_stats(**values: int) -> dict[str, Any]:
    """The origin's ``stats`` dict (every key, 0 unless given), with ours added.

    ``usd`` (what the calls cost) is ``None`` until the command sets it, and
    stays so when a price is unknown.
    """
    stats: dict[str, Any] = dict.fromkeys(_STATS, 0)
    stats.update(values)
    stats["usd"] = None
    return stats


def task_row(
    task: TaskView, outcome: OutcomeView | None, notes: Mapping[str, Note]
) -> dict[str, Any]:
    """One task of the report: what became of it, read from its outcome.

    Args:
        task: The task.
        outcome: Its outcome (``None``: it never ended, the run was cut short).
        notes: The selected notes.

    Returns:
        The report's row; ``document`` and the node ids are filled in by the write-back.
    """
    note_id = task.node_data["note_id"]
    success = outcome is not None and outcome.status == "success"
    answer = _answer(outcome.result) if success and outcome is not None else None
    duration = 0.0
    if outcome is not None and outcome.started is not None:
        duration = max(0.0, outcome.finished - outcome.started)
    return {
        "task_id": task.task_id,
        "node_id": note_id,
        "agent": task.agent_name,
        "decision": notes[note_id].decisions[task.agent_name],
        "status": outcome.status if outcome is not None else "cancelled",
        "duration_seconds": round(duration, 3),
        "attempts": outcome.attempts if outcome is not None else 0,
        "cached": bool(outcome is not None and outcome.cached),
        "error": outcome.error if outcome is not None else "the run was interrupted",
        "error_type": outcome.error_type if outcome is not None else None,
        "answer": answer.get("text") if answer else None,
        "model": answer.get("model") if answer else None,
        "usage": task_usage(outcome),
        "document": None,
        "blue_node_id": None,
        "replaced_node_id": None,
    }


def task_usage(outcome: OutcomeView | None) -> dict[str, int] | None:
    """The tokens a task's call spent in this run, as its result says.

    Args:
        outcome: The task's outcome.

    Returns:
        ``{"input_tokens": N, "output_tokens": N}``, or ``None`` when the
        agent cannot say (a command agent), the task did not succeed, or no
        call was made (an answer reused from the journal).
    """
    if outcome is None or outcome.status != "success" or outcome.cached:
        return None
    result = outcome.result
    usage = result.get("usage") if isinstance(result, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    try:
        return {name: int(usage[name]) for name in ("input_tokens", "output_tokens")}
    except (KeyError, TypeError, ValueError):
        return None


def _answer(result: Any) -> dict[str, Any]:
    return dict(result) if isinstance(result, Mapping) else {"text": str(result)}


@dataclass
class CommandResult:
    """The result of one command run.

    Attributes:
        kind: One of :data:`KINDS`.
        session_id: The handler's session id.
        success: Whether every call the run made succeeded and its answers are
            on the canvas (also ``True`` for a dry run or an up-to-date canvas).
        message: One line for people (why nothing ran, where answers went).
        notices: What plugins asked to tell the user (``check_settings``).
        plan: The plan (``None`` when nothing was selected).
        stats: The origin's counts, with ours.
        results: One row per task (:func:`task_row`).
        skipped: The (note, agent) pairs skipped as already answered.
        summary: The backend's summary, without its results.
        canvas: The canvas written, if any.
        backup: Its backup, if any.
        side_file: Where the answers went instead of the canvas, if they did.
        interrupted: Whether a stop (Ctrl-C) cut the run short.
        failure: What made the whole run fail, one line (the journal or the
            canvas could not be written), else ``None``; also the message.
        elapsed_seconds: How long the agents ran.
        report: The JSON report (``--report``, ``--json``).
    """

    kind: str
    session_id: str
    success: bool
    message: str = ""
    notices: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    stats: dict[str, Any] = field(default_factory=make_stats)
    # Out of the repr: what grows with the notes. asyncio.run's SIGINT handler
    # holds the main task, and restoring it reprs the task, its result with it
    # (signal.signal's enum conversion): 0.1 s per 1,000 notes for nothing.
    results: list[dict[str, Any]] = field(default_factory=list, repr=False)
    skipped: list[dict[str, Any]] = field(default_factory=list, repr=False)
    summary: dict[str, Any] | None = field(default=None, repr=False)
    canvas: str | None = None
    backup: str | None = None
    side_file: str | None = None
    interrupted: bool = False
    failure: str | None = None
    elapsed_seconds: float = 0.0
    report: dict[str, Any] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The origin's result dict (``success``, ``session_id``, ``stats``, ``results``...).

        With nothing selected it is exactly ``{"success": False, "session_id",
        "message": "No yellow nodes found"}``, as the origin's.
        """
        if self.kind == "nothing-selected":
            return {"success": False, "session_id": self.session_id, "message": self.message}
        result: dict[str, Any] = {
            "success": self.success,
            "session_id": self.session_id,
            "kind": self.kind,
            "plan": self.plan,
            "notices": list(self.notices),
            "stats": dict(self.stats),
            "results": list(self.results),
        }
        if self.kind == "dry-run":
            result["dry_run"] = True
        if self.kind == "declined":
            result["message"] = self.message
        if self.kind in ("up-to-date", "ran"):
            result.update(
                up_to_date=self.kind == "up-to-date",
                interrupted=self.interrupted,
                failure=self.failure,
                skipped=list(self.skipped),
                canvas=self.canvas,
                backup=self.backup,
                side_file=self.side_file,
                message=self.message,
                elapsed_seconds=self.elapsed_seconds,
                report=self.report,
            )
            if self.summary is not None:
                result["summary"] = dict(self.summary)
        return result


def report(
    session_id: str,
    canvas: str,
    written: str | None,
    elapsed: float,
    stats: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    skipped: Sequence[Mapping[str, Any]],
    failure: str | None = None,
) -> dict[str, Any]:
    """The JSON report of a run (``failure``: what made the whole run fail, one line)."""
    return {
        "session_id": session_id,
        "canvas": canvas,
        "written_to": written,
        "elapsed_seconds": round(elapsed, 3),
        "stats": dict(stats),
        "tasks": list(results),
        "skipped": list(skipped),
        "failure": failure,
    }
