"""The progress display: a live rich bar, one plain line per task, or nothing.

The ``progress`` plugin (:mod:`.progress`) registers a :class:`ProgressDisplay`
for the command; this module, and ``rich`` with it, is imported only then, so a
run that shows nothing never imports ``rich``. A program may register a display
of its own::

    with ProgressDisplay(console=console, mode="auto") as display:
        pm.register(display, name="progress-display")
        summary = await run_tasks(tasks, pm=pm)

It hears ``on_run_start``, ``on_task_start``, ``on_task_end`` and
``on_run_end``, keeps per-task durations and per-agent counts
(:attr:`ProgressDisplay.durations`, :attr:`ProgressDisplay.stats`), and at the
end of the run prints a table of the agents. It never imports the engine or the
plugin layer: a run, a task and an outcome are whatever has the attributes it reads.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from command_handlers import hookimpl
from command_handlers.hookspecs import OutcomeView, RunView, TaskView
from command_handlers.settings import DISPLAY_MODES

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType
    from typing import Any

__all__ = ["MODES", "ProgressDisplay"]

#: The display modes :class:`ProgressDisplay` accepts.
MODES = DISPLAY_MODES

_OK, _FAILED, _SKIPPED, _CANCELLED = range(4)
_STATUS = {"success": _OK, "failed": _FAILED, "skipped": _SKIPPED, "cancelled": _CANCELLED}
_STYLES = ("green", "red", "yellow", "yellow")
_UNKNOWN_AGENT = "?"


class _AgentStats:
    """The running counts of one agent."""

    __slots__ = (
        "cancelled",
        "failed",
        "input_tokens",
        "ok",
        "output_tokens",
        "ran",
        "seconds",
        "skipped",
        "tasks",
        "told_usage",
    )

    def __init__(self) -> None:
        self.tasks = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.told_usage = 0  # the tasks whose result said what tokens they spent
        self.ok = 0
        self.failed = 0
        self.skipped = 0
        self.cancelled = 0
        self.ran = 0
        self.seconds = 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Return the counts, with the mean duration of the tasks that ran."""
        return {
            "tasks": self.tasks,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "cancelled": self.cancelled,
            "mean_duration": self.seconds / self.ran if self.ran else 0.0,
            "total_duration": self.seconds,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }

    def count_usage(self, outcome: OutcomeView) -> None:
        """Add the tokens a successful call spent, when its result says (``usage``)."""
        result = outcome.result
        usage = result.get("usage") if isinstance(result, dict) else None
        if outcome.cached or not isinstance(usage, dict):
            return
        try:
            tokens_in, tokens_out = int(usage["input_tokens"]), int(usage["output_tokens"])
        except (KeyError, TypeError, ValueError):
            return
        self.input_tokens += tokens_in
        self.output_tokens += tokens_out
        self.told_usage += 1


class _Counts:
    """The run's totals, shared with the bar's counts column."""

    __slots__ = ("cancelled", "done", "failed", "ok", "running", "skipped", "total")

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self.done = 0
        self.ok = 0
        self.failed = 0
        self.skipped = 0
        self.cancelled = 0
        self.running = 0


class _CountsColumn(ProgressColumn):
    """Renders ``✓ ok  ✗ failed  ⊘ skipped  ⟳ running`` (skipped only when some are)."""

    def __init__(self, counts: _Counts, symbols: tuple[str, str, str, str]) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self.counts = counts
        self.symbols = symbols

    def render(self, task: Any) -> Text:
        """Render the current counts.

        Args:
            task: The bar's rich task (not read: the counts are shared).

        Returns:
            The styled counts.
        """
        del task
        counts = self.counts
        ok, failed, skipped, running = self.symbols
        text = Text()
        text.append(f"{ok} {counts.ok}", style="green")
        text.append(f"  {failed} {counts.failed}", style="red" if counts.failed else "dim")
        if counts.skipped:
            text.append(f"  {skipped} {counts.skipped}", style="yellow")
        if counts.cancelled:
            text.append(f"  cancelled {counts.cancelled}", style="yellow")
        text.append(f"  {running} {counts.running}", style="cyan")
        return text


def _seconds(value: float) -> str:
    """Format a span of time for people: ``4.2s``, ``3m 07s``, ``1h 02m``."""
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _one_line(text: str) -> str:
    """Collapse an error text to one line."""
    return " ".join(text.split()) if "\n" in text else text


class ProgressDisplay:
    """A listener plugin that shows a run's progress and sums it up per agent.

    Modes:

    * ``"bar"``: a live rich bar (description, bar, ``25% (3/12)``, counts of
      succeeded, failed, skipped and running tasks, elapsed time and ETA); each
      failure is printed above it as it happens.
    * ``"plain"``: one line per finished task, for logs and pipes.
    * ``"quiet"``: nothing at all; every hook returns at once and no statistics
      are kept.
    * ``"auto"``: ``"bar"`` when the console is a terminal, else ``"plain"``.

    In the bar and plain modes the end of the run prints a table of the agents
    (tasks, ok, failed, skipped, mean duration, and the tokens spent when the
    agents say) and the total time.

    Args:
        console: Where to write; a new ``Console(stderr=True)`` when ``None``, so
            that standard output stays free for the program's own output.
        mode: One of :data:`MODES`.
        verbose: Also print a line when a task starts, and, in the bar mode,
            a line for every finished task (not only for failures).
        label: The bar's description and the plain mode's heading.

    Raises:
        ValueError: ``mode`` is not one of :data:`MODES`.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        mode: str = "auto",
        verbose: bool = False,
        label: str = "Answering notes",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        self._console = console if console is not None else Console(stderr=True)
        if mode == "auto":
            mode = "bar" if self._console.is_terminal else "plain"
        self._mode = mode
        self._quiet = mode == "quiet"
        self._bar_mode = mode == "bar"
        self._verbose = verbose
        self._label = label
        utf = self._console.encoding.lower().startswith("utf")
        self._symbols = ("✓", "✗", "⊘", "⟳") if utf else ("ok", "x", "skip", "run")
        self._separator = "•" if utf else "|"
        self._progress: Progress | None = None
        self._bar = TaskID(0)
        self._reset(0)

    def _reset(self, total: int) -> None:
        self._counts = _Counts(total)
        self._width = len(str(total))
        self._agent_of: dict[str, str] = {}
        self._agents: dict[str, _AgentStats] = {}
        self._started: dict[str, float] = {}
        self._durations: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._t_end: float | None = None

    # -- what the command line and the report read ---------------------------------

    @property
    def mode(self) -> str:
        """The mode in use: ``"bar"``, ``"plain"`` or ``"quiet"`` (``"auto"`` resolved)."""
        return self._mode

    @property
    def stats(self) -> dict[str, dict[str, float | int]]:
        """Per agent (sorted by name), the counts of the last run.

        Keys: ``tasks``, ``ok``, ``failed``, ``skipped``, and ``mean_duration`` and
        ``total_duration`` in seconds over the tasks that ran (skipped tasks never
        run; ``mean_duration`` is 0.0 when none ran), and ``input_tokens`` and
        ``output_tokens`` over the calls whose result said (``usage``). Empty in
        the quiet mode.
        """
        return {name: self._agents[name].as_dict() for name in sorted(self._agents)}

    @property
    def durations(self) -> dict[str, float]:
        """Task id -> seconds from its start to its end, for every task that ran and finished."""
        return dict(self._durations)

    @property
    def elapsed(self) -> float:
        """Seconds from the start of the last run to its end (or to now, while it runs)."""
        end = self._t_end if self._t_end is not None else time.monotonic()
        return end - self._t0

    # -- the hooks -----------------------------------------------------------------

    @hookimpl
    def on_run_start(self, run: RunView) -> None:
        """Reset the counts, learn each task's agent and start the bar or print a heading.

        Args:
            run: The run (a ``RunInfo``).
        """
        if self._quiet:
            return
        self._stop()
        self._reset(run.task_count)
        agent_of = self._agent_of
        agents = self._agents
        for task in run.tasks:
            name = task.agent_name
            agent_of[task.task_id] = name
            stats = agents.get(name)
            if stats is None:
                stats = agents[name] = _AgentStats()
            stats.tasks += 1
        if self._bar_mode:
            self._progress = self._new_progress()
            self._bar = self._progress.add_task(self._label, total=run.task_count)
            self._progress.start()
        else:
            self._console.print(
                f"{self._label}: {run.task_count} tasks, {run.mode}, up to"
                f" {run.max_concurrency} at once",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    @hookimpl
    def on_task_start(self, task: TaskView) -> None:
        """Note when the task started.

        Args:
            task: The task (an ``AsyncTask``).
        """
        if self._quiet:
            return
        task_id = task.task_id
        self._started[task_id] = time.monotonic()
        self._counts.running += 1
        if task_id not in self._agent_of:
            self._adopt(task_id, task.agent_name)
        if self._verbose:
            line = Text(" " * (self._width * 2 + 4))
            line.append("started ", style="cyan")
            line.append(task_id, style="bold")
            line.append(f"  ({task.agent_name})", style="dim")
            self._print(line)

    @hookimpl
    def on_task_end(self, task: TaskView, outcome: OutcomeView) -> None:
        """Count the finished task by its status, advance the bar or print its line.

        Args:
            task: The task.
            outcome: What became of it.
        """
        if self._quiet:
            return
        task_id = task.task_id
        start = self._started.pop(task_id, None)
        agent = self._agent_of.get(task_id) or self._adopt(task_id, task.agent_name)
        stats = self._agents[agent]
        counts = self._counts
        counts.done += 1
        duration: float | None = None
        if start is not None:
            duration = time.monotonic() - start
            self._durations[task_id] = duration
            stats.ran += 1
            stats.seconds += duration
            counts.running -= 1
        status = _STATUS[outcome.status]
        if status == _OK:
            stats.ok += 1
            counts.ok += 1
            stats.count_usage(outcome)
        elif status == _SKIPPED:
            stats.skipped += 1
            counts.skipped += 1
        elif status == _CANCELLED:
            stats.cancelled += 1
            counts.cancelled += 1
        else:
            stats.failed += 1
            counts.failed += 1
        if self._progress is not None:
            self._progress.advance(self._bar)
            if status != _FAILED and not self._verbose:
                return
        self._print(self._finished_line(task_id, agent, duration, outcome.error, status))

    @hookimpl
    def on_run_end(self, run: RunView, summary: Mapping[str, Any]) -> None:
        """Stop the bar and print the table of the agents and the total time.

        Args:
            run: The run.
            summary: The run's summary (not read: the display kept its own counts).
        """
        del run, summary
        if self._quiet:
            return
        self._t_end = time.monotonic()
        self._stop()
        console = self._console
        if self._agents:
            console.print(self._table())
        counts = self._counts
        tasks = "task" if counts.done == 1 else "tasks"
        footer = Text(f"{counts.done} {tasks} in {_seconds(self.elapsed)}: ", style="bold")
        footer.append(f"{counts.ok} ok", style="green")
        footer.append(f", {counts.failed} failed", style="red" if counts.failed else "")
        footer.append(f", {counts.skipped} skipped", style="yellow" if counts.skipped else "")
        if counts.cancelled:
            footer.append(f", {counts.cancelled} cancelled", style="yellow")
        console.print(footer, soft_wrap=True)

    @hookimpl
    def unconfigure(self) -> None:
        """The command is over: stop a bar its run abandoned (see :meth:`close`)."""
        self.close()

    # -- the rest ------------------------------------------------------------------

    def close(self) -> None:
        """Stop the bar if a run was abandoned (cancelled or failed) before it ended.

        The bar keeps its last state on the screen, marked "interrupted". Safe to
        call any number of times, and after a run that ended normally (then it
        does nothing).
        """
        if self._progress is not None:
            self._progress.update(self._bar, description=f"{self._label} (interrupted)")
            self._stop()

    def __enter__(self) -> ProgressDisplay:
        """Return the display; leaving the ``with`` block calls :meth:`close`."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Call :meth:`close`, however the block ended."""
        self.close()

    def _stop(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.stop()

    def _adopt(self, task_id: str, agent: str) -> str:
        """Count a task the run's task list did not hold."""
        self._agent_of[task_id] = agent
        stats = self._agents.get(agent)
        if stats is None:
            stats = self._agents[agent] = _AgentStats()
        stats.tasks += 1
        return agent

    def _new_progress(self) -> Progress:
        return Progress(
            TextColumn(
                "{task.description}",
                style="progress.description",
                markup=False,
                table_column=Column(no_wrap=True),
            ),
            BarColumn(bar_width=None),
            TextColumn(
                "{task.percentage:>3.0f}% ({task.completed:.0f}/{task.total:.0f})",
                table_column=Column(no_wrap=True),
            ),
            TextColumn(self._separator, style="dim"),
            _CountsColumn(self._counts, self._symbols),
            TextColumn(self._separator, style="dim"),
            TimeElapsedColumn(),
            TextColumn("eta", style="dim"),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
            refresh_per_second=8,
        )

    def _print(self, line: Text) -> None:
        self._console.print(line, soft_wrap=True)

    def _finished_line(
        self, task_id: str, agent: str, duration: float | None, error: str | None, status: int
    ) -> Text:
        counts = self._counts
        line = Text(f"[{counts.done:>{self._width}}/{counts.total}] ", style="dim")
        if status in (_SKIPPED, _CANCELLED):
            line.append("skipped " if status == _SKIPPED else "cancelled ", style="yellow")
            line.append(task_id, style="bold")
            line.append(f": {_one_line(str(error))}")
            return line
        line.append("ok      " if status == _OK else "failed  ", style=_STYLES[status])
        line.append(task_id, style="bold")
        timing = "" if duration is None else f", {duration:.1f}s"
        line.append(f"  ({agent}{timing})", style="dim")
        if error is not None:
            line.append(f": {_one_line(error)}", style="red")
        return line

    def _table(self) -> Table:
        # Columns that are all zero stay out, and no vertical rules: the table
        # fits 80 columns with the token columns, so no heading is cut short.
        table = Table(title="Agents", title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("Agent", no_wrap=True)
        skipped = any(stats.skipped for stats in self._agents.values())
        cancelled = self._counts.cancelled > 0
        headings = ["Tasks", "OK", "Failed"] + (["Skipped"] if skipped else [])
        headings += ["Cancelled"] if cancelled else []
        # Token columns only when some agent said what it spent (llm agents do,
        # command agents cannot).
        tokens = any(stats.told_usage for stats in self._agents.values())
        headings += ["Mean (s)"] + (["Tokens in", "Tokens out"] if tokens else [])
        for heading in headings:
            table.add_column(heading, justify="right")
        for name in sorted(self._agents):
            stats = self._agents[name]
            cells: list[str | Text] = [
                name,
                str(stats.tasks),
                str(stats.ok),
                Text(str(stats.failed), style="red" if stats.failed else ""),
            ]
            if skipped:
                cells.append(str(stats.skipped))
            if cancelled:
                cells.append(str(stats.cancelled))
            cells.append(f"{stats.seconds / stats.ran:.1f}" if stats.ran else "-")
            if tokens:
                told = stats.told_usage > 0
                cells.append(f"{stats.input_tokens:,}" if told else "-")
                cells.append(f"{stats.output_tokens:,}" if told else "-")
            table.add_row(*cells)
        return table
