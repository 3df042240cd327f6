"""The progress display: what a person sees in each mode, and the statistics it keeps."""

from __future__ import annotations

import io
import re
import time
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from command_handlers import hookimpl
from command_handlers.default_plugins import progress_display
from command_handlers.default_plugins.progress import MODES, ProgressDisplay
from command_handlers.plugins import AsyncTask, TaskOutcome, get_plugin_manager, run_tasks
from command_handlers.settings import Settings

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Clock:
    """A hand-driven ``time`` stand-in for the display's ``time.monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_display, "time", fake)
    return fake


def console(*, terminal: bool = False, width: int = 100) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)


def output(con: Console) -> str:
    file = con.file
    assert isinstance(file, io.StringIO)
    return ANSI.sub("", file.getvalue())


def task(task_id: str, agent: str = "oral") -> SimpleNamespace:
    return SimpleNamespace(task_id=task_id, agent_name=agent)


def run_info(*tasks: SimpleNamespace, mode: str = "parallel") -> SimpleNamespace:
    return SimpleNamespace(
        run_id="r1", task_count=len(tasks), mode=mode, max_concurrency=12, tasks=tuple(tasks)
    )


def summary() -> dict[str, Any]:
    return {"total": 0, "success": 0, "failed": 0, "skipped": 0}


def ended(status: str = "success", error: str | None = None, result: Any = None) -> TaskOutcome:
    """An outcome as the engine hands it to ``on_task_end``."""
    ran = status in ("success", "failed")
    return TaskOutcome(
        status=status,
        result=({"text": "fine"} if result is None else result) if status == "success" else None,
        error=error,
        error_type="RuntimeError" if status == "failed" else None,
        attempts=1 if ran else 0,
        started=1.0 if ran else None,
        finished=2.0,
    )


def ok(display: ProgressDisplay, item: SimpleNamespace) -> None:
    display.on_task_end(item, ended())


def failed(display: ProgressDisplay, item: SimpleNamespace, error: str) -> None:
    display.on_task_end(item, ended("failed", error))


def drive_mixed_run(display: ProgressDisplay, clock: Clock) -> SimpleNamespace:
    """4 tasks of two agents: a ok in 2.1s, b fails in 0.5s, c skipped (needs b), d ok in 1.3s."""
    a, b, c, d = task("a"), task("b"), task("c", "clarify"), task("d", "clarify")
    run = run_info(a, b, c, d, mode="dependency-aware")
    display.on_run_start(run)
    display.on_task_start(a)
    display.on_task_start(b)
    clock.tick(0.5)
    failed(display, b, "model refused")
    display.on_task_end(c, ended("skipped", "dependency 'b' failed"))
    display.on_task_start(d)
    clock.tick(1.3)
    ok(display, d)
    clock.tick(0.3)
    ok(display, a)
    display.on_run_end(run, summary())
    return run


# -- construction ------------------------------------------------------------------


def test_a_bad_mode_is_refused() -> None:
    with pytest.raises(
        ValueError, match="mode must be one of auto, bar, plain, quiet; got 'fancy'"
    ):
        ProgressDisplay(console(), mode="fancy")


@pytest.mark.parametrize(("terminal", "expected"), [(True, "bar"), (False, "plain")])
def test_auto_mode_follows_the_console(terminal: bool, expected: str) -> None:
    assert ProgressDisplay(console(terminal=terminal)).mode == expected


def test_without_a_console_it_writes_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    display = ProgressDisplay()
    assert display.mode == "plain"  # pytest captures stderr: not a terminal
    assert MODES == ("auto", "bar", "plain", "quiet")


# -- plain mode --------------------------------------------------------------------


def test_plain_mode_prints_a_line_per_finished_task_and_a_table(clock: Clock) -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    drive_mixed_run(display, clock)
    lines = output(con).splitlines()
    assert lines[:5] == [
        "Answering notes: 4 tasks, dependency-aware, up to 12 at once",
        "[1/4] failed  b  (oral, 0.5s): model refused",
        "[2/4] skipped c: dependency 'b' failed",
        "[3/4] ok      d  (clarify, 1.3s)",
        "[4/4] ok      a  (oral, 2.1s)",
    ]
    text = "\n".join(lines)
    assert "Agents" in text
    assert re.search(r"clarify\s+2\s+1\s+0\s+1\s+1\.3\b", text)
    assert re.search(r"oral\s+2\s+1\s+1\s+0\s+1\.3\b", text)
    assert lines[-1] == "4 tasks in 2.1s: 2 ok, 1 failed, 1 skipped"


def test_the_counter_is_padded_to_the_width_of_the_total(clock: Clock) -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    tasks = [task(f"t{i}") for i in range(12)]
    display.on_run_start(run_info(*tasks))
    for t in tasks[:3]:
        display.on_task_start(t)
        clock.tick(2.1)
        ok(display, t)
    assert output(con).splitlines()[1:4] == [
        "[ 1/12] ok      t0  (oral, 2.1s)",
        "[ 2/12] ok      t1  (oral, 2.1s)",
        "[ 3/12] ok      t2  (oral, 2.1s)",
    ]


def test_plain_lines_stay_one_line_each_and_markup_is_not_interpreted(clock: Clock) -> None:
    con = console(width=40)
    display = ProgressDisplay(con, mode="plain", label="[bold]Notes[/]")
    odd = task("[red]x[/red]", "agent")
    display.on_run_start(run_info(odd))
    display.on_task_start(odd)
    clock.tick(1)
    failed(display, odd, "Traceback:\n  line 1\n    boom: a long explanation")
    assert output(con).splitlines()[:2] == [
        "[bold]Notes[/]: 1 tasks, parallel, up to 12 at once",
        "[1/1] failed  [red]x[/red]  (agent, 1.0s): Traceback: line 1 boom: a long explanation",
    ]


def test_verbose_adds_a_line_per_started_task(clock: Clock) -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain", verbose=True)
    a = task("a")
    display.on_run_start(run_info(a))
    display.on_task_start(a)
    clock.tick(0.25)
    ok(display, a)
    assert output(con).splitlines()[1:3] == [
        "      started a  (oral)",
        "[1/1] ok      a  (oral, 0.2s)",
    ]


def test_tasks_the_run_did_not_list_are_still_counted(clock: Clock) -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    display.on_run_start(run_info(task("a")))
    display.on_task_start(task("late", "extra"))  # started, but not in run.tasks
    clock.tick(1)
    ok(display, task("late", "extra"))
    ok(display, task("ghost", "stray"))  # neither listed nor started
    failed(display, task("phantom", "stray"), "connection reset")
    display.on_run_end(run_info(task("a")), summary())
    text = output(con)
    assert "[2/1] ok      ghost  (stray)" in text
    assert "[3/1] failed  phantom  (stray): connection reset" in text
    assert display.stats == {
        "extra": {
            "tasks": 1,
            "ok": 1,
            "failed": 0,
            "skipped": 0,
            "cancelled": 0,
            "mean_duration": 1.0,
            "total_duration": 1.0,
            "input_tokens": 0,
            "output_tokens": 0,
        },
        "oral": {
            "tasks": 1,
            "ok": 0,
            "failed": 0,
            "skipped": 0,
            "cancelled": 0,
            "mean_duration": 0.0,
            "total_duration": 0.0,
            "input_tokens": 0,
            "output_tokens": 0,
        },
        "stray": {
            "tasks": 2,
            "ok": 1,
            "failed": 1,
            "skipped": 0,
            "cancelled": 0,
            "mean_duration": 0.0,
            "total_duration": 0.0,
            "input_tokens": 0,
            "output_tokens": 0,
        },
    }
    assert re.search(r"stray\s+2\s+1\s+1\s+-\s", text)  # no task skipped: no such column


def test_an_empty_run_prints_only_the_footer(clock: Clock) -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    run = run_info()
    display.on_run_start(run)
    display.on_run_end(run, summary())
    assert output(con).splitlines() == [
        "Answering notes: 0 tasks, parallel, up to 12 at once",
        "0 tasks in 0.0s: 0 ok, 0 failed, 0 skipped",
    ]


# -- statistics ----------------------------------------------------------------------


def test_stats_and_durations(clock: Clock) -> None:
    display = ProgressDisplay(console(), mode="plain")
    drive_mixed_run(display, clock)
    assert display.durations == pytest.approx({"a": 2.1, "b": 0.5, "d": 1.3})
    stats = display.stats
    assert list(stats) == ["clarify", "oral"]
    assert stats["oral"] == pytest.approx(
        {
            "tasks": 2,
            "ok": 1,
            "failed": 1,
            "skipped": 0,
            "cancelled": 0,
            "mean_duration": 1.3,
            "total_duration": 2.6,
            "input_tokens": 0,
            "output_tokens": 0,
        }
    )
    assert stats["clarify"]["skipped"] == 1
    assert display.elapsed == pytest.approx(2.1)
    clock.tick(100)
    assert display.elapsed == pytest.approx(2.1)  # frozen at the end of the run


def test_the_table_shows_the_tokens_the_agents_spent(clock: Clock) -> None:
    display = ProgressDisplay(console(), mode="plain")
    a, b, c = task("a"), task("b"), task("c", "command")
    run = run_info(a, b, c)
    display.on_run_start(run)
    spent = {"text": "fine", "usage": {"input_tokens": 1200, "output_tokens": 30}}
    for item in (a, b):
        display.on_task_start(item)
        display.on_task_end(item, ended(result=spent))
    display.on_task_start(c)
    ok(display, c)  # a command agent cannot say what it spent
    display.on_run_end(run, summary())
    stats = display.stats
    assert (stats["oral"]["input_tokens"], stats["oral"]["output_tokens"]) == (2400, 60)
    assert (stats["command"]["input_tokens"], stats["command"]["output_tokens"]) == (0, 0)
    text = output(display._console)  # pylint: disable=protected-access
    assert "Tokens in" in text
    assert "Tokens out" in text
    oral = next(line for line in text.splitlines() if line.lstrip().startswith("oral "))
    assert "2,400" in oral
    assert "60" in oral
    command = next(line for line in text.splitlines() if line.lstrip().startswith("command "))
    assert command.rstrip().endswith("-")


def test_no_token_columns_when_no_agent_says(clock: Clock) -> None:
    display = ProgressDisplay(console(), mode="plain")
    drive_mixed_run(display, clock)
    assert "Tokens" not in output(display._console)  # pylint: disable=protected-access


def test_elapsed_runs_while_the_run_does(clock: Clock) -> None:
    display = ProgressDisplay(console(), mode="plain")
    display.on_run_start(run_info(task("a")))
    clock.tick(3)
    assert display.elapsed == pytest.approx(3)


def test_a_new_run_starts_from_zero(clock: Clock) -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    drive_mixed_run(display, clock)
    display.on_run_start(run_info(task("z", "solo")))
    assert display.stats == {
        "solo": {
            "tasks": 1,
            "ok": 0,
            "failed": 0,
            "skipped": 0,
            "cancelled": 0,
            "mean_duration": 0.0,
            "total_duration": 0.0,
            "input_tokens": 0,
            "output_tokens": 0,
        }
    }
    assert display.durations == {}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (59.94, "59.9s"), (60, "1m 00s"), (187.9, "3m 07s"), (3725, "1h 02m")],
)
def test_footer_times_read_well(clock: Clock, seconds: float, text: str) -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    run = run_info()
    display.on_run_start(run)
    clock.tick(seconds)
    display.on_run_end(run, summary())
    assert output(con).splitlines()[-1] == f"0 tasks in {text}: 0 ok, 0 failed, 0 skipped"


# -- quiet mode ----------------------------------------------------------------------


def test_quiet_mode_prints_nothing_and_keeps_nothing(clock: Clock) -> None:
    con = console(terminal=True)
    with ProgressDisplay(con, mode="quiet", verbose=True) as display:
        drive_mixed_run(display, clock)
    display.close()
    assert output(con) == ""
    assert display.stats == {}
    assert display.durations == {}
    assert display.mode == "quiet"


def test_quiet_mode_costs_next_to_nothing() -> None:
    display = ProgressDisplay(console(), mode="quiet")
    t = task("a")
    count = 100_000
    began = time.perf_counter()
    outcome = ended()
    for _ in range(count):
        display.on_task_start(t)
        display.on_task_end(t, outcome)
    per_task = (time.perf_counter() - began) / count
    assert per_task < 5e-6, f"{per_task * 1e6:.2f} µs per task"


# -- bar mode ------------------------------------------------------------------------


def test_bar_mode_shows_percentage_counts_and_a_table(clock: Clock) -> None:
    con = console(terminal=True)
    display = ProgressDisplay(con, mode="bar")
    drive_mixed_run(display, clock)
    text = output(con)
    bar_row = next(line for line in text.splitlines() if "100% (4/4)" in line)
    assert bar_row.startswith("Answering notes ")
    assert "✓ 2  ✗ 1  ⊘ 1  ⟳ 0" in bar_row
    assert "eta" in bar_row
    # Failures are printed above the bar as they happen; successes and skips are not.
    assert "[1/4] failed  b  (oral, 0.5s): model refused" in text
    assert "ok      a" not in text
    assert "skipped c" not in text
    assert re.search(r"oral\s+2\s+1\s+1\s+0\s+1\.3\b", text)
    assert text.splitlines()[-1] == "4 tasks in 2.1s: 2 ok, 1 failed, 1 skipped"


def test_an_abandoned_run_leaves_the_bar_where_it_stopped(clock: Clock) -> None:
    con = console(terminal=True)
    display = ProgressDisplay(con, mode="bar")
    tasks = [task(f"t{i}") for i in range(12)]
    display.on_run_start(run_info(*tasks))
    for t in tasks[:6]:
        display.on_task_start(t)
    for t in tasks[:3]:
        clock.tick(1)
        ok(display, t)
    display.close()
    display.close()  # idempotent
    text = output(con)
    bar_row = text.splitlines()[-1]
    assert "Answering notes (interrupted)" in bar_row
    assert "25% (3/12)" in bar_row
    assert "✓ 3  ✗ 0  ⟳ 3" in bar_row
    assert "Agents" not in text


def test_close_after_a_finished_run_prints_nothing_more(clock: Clock) -> None:
    con = console(terminal=True)
    display = ProgressDisplay(con, mode="bar")
    drive_mixed_run(display, clock)
    before = output(con)
    display.close()
    assert output(con) == before


def test_a_new_run_stops_the_bar_of_an_abandoned_one(clock: Clock) -> None:
    con = console(terminal=True)
    display = ProgressDisplay(con, mode="bar", label="Notes")
    display.on_run_start(run_info(task("a"), task("b")))
    display.on_run_start(run_info(task("c")))
    display.on_task_start(task("c"))
    ok(display, task("c"))
    display.on_run_end(run_info(task("c")), summary())
    text = output(con)
    assert "0% (0/2)" in text
    assert "100% (1/1)" in text


def test_bar_mode_verbose_prints_every_task_above_the_bar(clock: Clock) -> None:
    con = console(terminal=True)
    display = ProgressDisplay(con, mode="bar", verbose=True)
    drive_mixed_run(display, clock)
    text = output(con)
    for line in (
        "    started a  (oral)",
        "[1/4] failed  b  (oral, 0.5s): model refused",
        "[2/4] skipped c: dependency 'b' failed",
        "[3/4] ok      d  (clarify, 1.3s)",
        "[4/4] ok      a  (oral, 2.1s)",
    ):
        assert line in text


class AsciiFile(io.StringIO):
    encoding = "ascii"  # type: ignore[assignment]


def test_a_console_without_unicode_gets_ascii_counts(clock: Clock) -> None:
    con = Console(file=AsciiFile(), width=100, force_terminal=True, color_system=None)
    display = ProgressDisplay(con, mode="bar")
    drive_mixed_run(display, clock)
    bar_row = next(line for line in output(con).splitlines() if "100% (4/4)" in line)
    assert "| ok 2  x 1  skip 1  run 0 |" in bar_row


# -- through the plugin layer --------------------------------------------------------


class EchoAgent:
    @hookimpl
    def register_executors(self, register: Any) -> None:
        async def echo(t: AsyncTask) -> dict[str, Any]:
            if t.node_data.get("fail"):
                raise RuntimeError("no answer")
            return {"text": t.node_data["text"]}

        register("progress-echo", echo)


async def test_a_real_run_through_the_plugin_manager() -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(display, name="progress-display")
    pm.register(EchoAgent(), name="echo")
    tasks = [
        AsyncTask("n1", "progress-echo", {"text": "one"}),
        AsyncTask("n2", "progress-echo", {"text": "two", "fail": True}),
        AsyncTask("n3", "progress-echo", {"text": "three"}, dependencies=["n2"]),
    ]
    try:
        result = await run_tasks(tasks, pm=pm, dependency_aware=True)
    finally:
        display.close()
    assert (result["success"], result["failed"], result["skipped"]) == (1, 1, 1)
    lines = output(con).splitlines()
    assert lines[0] == "Answering notes: 3 tasks, dependency-aware, up to 12 at once"
    assert sorted(line[6:14] for line in lines[1:4]) == ["failed  ", "ok      ", "skipped "]
    assert any(line.endswith("] skipped n3: dependency 'n2' failed") for line in lines)
    assert set(display.durations) == {"n1", "n2"}
    assert display.stats["progress-echo"]["tasks"] == 3
    assert re.search(r"progress-echo\s+3\s+1\s+1\s+1\b", output(con))
    assert lines[-1].startswith("3 tasks in ")


def test_cancelled_tasks_are_kept_apart_from_failures() -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    display.on_run_start(run_info(task("a"), task("b"), task("c")))
    display.on_task_start(task("a"))
    failed(display, task("a"), "boom")
    display.on_task_start(task("b"))
    display.on_task_end(task("b"), ended("cancelled", "fail-fast: task 'a' failed"))
    display.on_task_end(task("c"), ended("cancelled", "fail-fast: task 'a' failed"))
    display.on_run_end(run_info(task("a"), task("b"), task("c")), summary())
    text = output(con)
    assert "cancelled b: fail-fast: task 'a' failed" in text
    assert "cancelled c: fail-fast" in text
    assert "1 failed, 0 skipped, 2 cancelled" in text
    assert "Cancelled" in text
    stats = next(iter(display.stats.values()))
    assert (stats["failed"], stats["cancelled"]) == (1, 2)


def test_one_task_is_one_task() -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    display.on_run_start(run_info(task("a")))
    display.on_task_start(task("a"))
    ok(display, task("a"))
    display.on_run_end(run_info(task("a")), summary())
    assert output(con).splitlines()[-1].startswith("1 task in ")


def test_the_status_is_read_from_the_outcome_never_from_the_error_text() -> None:
    con = console()
    display = ProgressDisplay(con, mode="plain")
    items = [task("a"), task("b"), task("c")]
    display.on_run_start(run_info(*items))
    failed(display, items[0], "skipped: this only looks like a skip")
    display.on_task_end(items[1], ended("skipped", "cancelled: this only looks like a cancel"))
    display.on_task_end(items[2], ended("cancelled", "skipped: stopped"))
    stats = display.stats["oral"]
    assert (stats["failed"], stats["skipped"], stats["cancelled"], stats["ok"]) == (1, 1, 1, 0)
    lines = output(con).splitlines()
    assert lines[1] == "[1/3] failed  a  (oral): skipped: this only looks like a skip"
    assert lines[2] == "[2/3] skipped b: cancelled: this only looks like a cancel"
    assert lines[3] == "[3/3] cancelled c: skipped: stopped"


def test_unconfigure_stops_an_abandoned_bar(clock: Clock) -> None:
    con = console(terminal=True)
    display = ProgressDisplay(con, mode="bar")
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(display, name="progress-display")
    items = [task("a"), task("b")]
    display.on_run_start(run_info(*items))
    display.on_task_start(items[0])
    ok(display, items[0])
    pm.hook.unconfigure(settings=Settings())
    bar_row = output(con).splitlines()[-1]
    assert "Answering notes (interrupted)" in bar_row
    assert "50% (1/2)" in bar_row
    before = output(con)
    pm.hook.unconfigure(settings=Settings())  # nothing more
    assert output(con) == before


@pytest.mark.parametrize(
    ("display", "verbose", "registered"),
    [("quiet", False, None), ("plain", True, "plain"), ("bar", False, "bar")],
)
def test_configure_registers_a_display_unless_quiet(
    display: str, verbose: bool, registered: str | None
) -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.hook.configure(settings=Settings(display=display, verbose=verbose), pm=pm)
    plugin = pm.get_plugin("progress-display")
    if registered is None:
        assert plugin is None
        return
    try:
        assert isinstance(plugin, ProgressDisplay)
        assert plugin.mode == registered
        assert plugin._verbose is verbose  # pylint: disable=protected-access
    finally:
        plugin.close()


def test_a_disabled_progress_plugin_configures_nothing() -> None:
    pm = get_plugin_manager(load_entry_points=False, disabled=["progress"])
    pm.hook.configure(settings=Settings(display="plain"), pm=pm)
    assert pm.get_plugin("progress-display") is None


async def test_a_fail_fast_run_shows_cancelled_tasks() -> None:
    from command_handlers.plugins import RunPolicy

    con = console()
    display = ProgressDisplay(con, mode="plain")
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(display, name="progress-display")
    pm.register(EchoAgent(), name="echo")
    tasks = [
        AsyncTask("n1", "progress-echo", {"text": "one", "fail": True}),
        AsyncTask("n2", "progress-echo", {"text": "two"}),
        AsyncTask("n3", "progress-echo", {"text": "three"}),
    ]
    try:
        await run_tasks(tasks, pm=pm, max_concurrency=1, policy=RunPolicy(fail_fast=True))
    finally:
        display.close()
    text = output(con)
    assert "failed  n1  (progress-echo" in text
    assert "cancelled n2: fail-fast: task 'n1' failed" in text
    assert "cancelled n3: fail-fast: task 'n1' failed" in text
    assert display.stats["progress-echo"]["cancelled"] == 2
    assert "1 failed, 0 skipped, 2 cancelled" in text
