"""``intelligent-parallel``: answer every learner's note of a canvas at once.

Exit codes: 0 every task succeeded (or there was nothing to do), 1 some tasks
failed (the rest were still written), 2 bad input, 130 interrupted (129 by a
hang-up, 143 by SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable

from command_handlers import __version__
from command_handlers.intelligent_parallel.options import (
    MAX_CONCURRENCY,
    MIN_CONCURRENCY,
    CommandInputError,
    Options,
    check_limit,
)
from command_handlers.settings import DEFAULT_COLOR_MAP

if TYPE_CHECKING:
    from rich.console import Console

    from command_handlers.intelligent_parallel import (
        CommandResult,
        IntelligentParallelCommandHandler,
    )

# The handler, the plugin layer, the config file's YAML and rich are imported
# where they are used: --help and --version need none of them.

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: The environment variable that says ``--scheduler``.
SCHEDULER_ENV = "COMMAND_HANDLERS_SCHEDULER"
#: The command's defaults, from the one place they are set.
_DEFAULTS = Options()

DESCRIPTION = """\
Send every learner's note of an Obsidian canvas (text nodes of colour "6") to an
explanation agent at the same time, and write each answer back beside its note:
an edge labelled with the agent, a blue card with the first lines of the answer,
and a Markdown document with the whole answer.

Run it again after adding or editing notes: only the new and the edited notes
are sent; notes already answered are skipped (--force answers them again), and
the answers on the canvas are never sent to an agent.

With no --model, the offline "echo" model answers (it repeats the prompt), so
you can try everything without a key. Use --model with any model the `llm`
library knows (`llm models`), or --agent-command to run a program instead.
"""

EPILOG = """\
examples:
  intelligent-parallel notes.canvas                   answer every "6" note, 12 at once
  intelligent-parallel notes.canvas -d                show the plan, change nothing
  intelligent-parallel notes.canvas -m 4 --model gpt-4o-mini -a
  intelligent-parallel notes.canvas --agents memory-anchor,comparison-table
  intelligent-parallel notes.canvas --agents-dir .claude/agents --agent-command "claude -p"

exit codes: 0 all answered or nothing to do, 1 some tasks failed,
            2 bad input, 130 interrupted (129 hang-up, 143 SIGTERM)
"""


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from {MIN_CONCURRENCY} to {MAX_CONCURRENCY}, got {text!r}"
        ) from None
    try:
        return check_limit("N", value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:  # also refuses nan, which compares false with everything
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of megabytes, got {text!r}") from None
    if not 0 < value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of megabytes more than 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the command line's argument parser.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="intelligent-parallel",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "canvas_file",
        nargs="?",
        help="the .canvas file (JSON Canvas 1.0); default: the one .canvas file of this folder",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="defaults for these options from a YAML file (default: $INTELLIGENT_PARALLEL_CONFIG,"
        " else .intelligent-parallel.yaml beside the canvas); options given here win",
    )

    select = parser.add_argument_group("which notes")
    select.add_argument(
        "--color",
        dest="colors",
        action="append",
        metavar="C",
        help='send text nodes of this colour ("1"-"6" or #rrggbb; repeatable) instead of "6"',
    )
    select.add_argument(
        "-n",
        "--nodes",
        metavar="ID,...",
        help="send exactly these text nodes, whatever their colour",
    )
    select.add_argument(
        "--follow-edges",
        action="store_true",
        help="an edge A -> B between two notes makes B wait for A and read A's answer"
        " (an A answered before gives B its latest answer)",
    )

    agents = parser.add_argument_group("which agent")
    agents.add_argument("--agent", metavar="NAME", help="send every note to this agent")
    agents.add_argument(
        "--agents",
        metavar="A,B",
        help="send every note to each of these agents (one call per pair)",
    )
    agents.add_argument(
        "--color-map",
        metavar="MAP",
        help="colour -> agent, e.g. 6=clarification-path,1=oral-explanation (default: "
        + ",".join(f"{k}={v}" for k, v in DEFAULT_COLOR_MAP.items())
        + ")",
    )
    agents.add_argument(
        "--route",
        choices=("map", "model"),
        default="map",
        help="'model': the model picks each note's agent from their descriptions,"
        " falling back to the colour map (default: map)",
    )
    agents.add_argument(
        "--agents-dir",
        dest="agents_dirs",
        action="append",
        metavar="DIR",
        help="read agent files from DIR too, e.g. .claude/agents (repeatable)",
    )
    agents.add_argument("--model", help="the llm model id (default: the offline echo model)")
    agents.add_argument(
        "--agent-command",
        metavar="CMD",
        help='answer with this program instead of llm, e.g. "claude -p" (no shell;'
        " it reads the system prompt and the note's prompt on stdin)",
    )
    agents.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=_DEFAULTS.timeout,
        metavar="SECONDS",
        help=f"time limit of one agent call (default: {_DEFAULTS.timeout:g})",
    )

    plugins = parser.add_argument_group("plugins")
    plugins.add_argument(
        "-p",
        "--plugin",
        dest="plugins",
        action="append",
        metavar="MODULE",
        help="load this module as a plugin, by import name (repeatable); -p no:NAME disables NAME",
    )
    plugins.add_argument(
        "--disable-plugin",
        dest="disable_plugins",
        action="append",
        metavar="NAME",
        help="do not load this plugin, built-in or installed (repeatable, or a,b);"
        " also $COMMAND_HANDLERS_DISABLE_PLUGINS",
    )
    plugins.add_argument(
        "--list-plugins",
        action="store_true",
        help="list every plugin, where it comes from, and whether it is disabled; then exit",
    )
    plugins.add_argument("--no-plugins", action="store_true", help="load no installed plugins")

    run = parser.add_argument_group("running")
    run.add_argument(
        "-m",
        "--max",
        "--max-concurrency",
        dest="max",
        type=_concurrency,
        default=_DEFAULTS.max,
        metavar="N",
        help=f"how many agent calls at once, {MIN_CONCURRENCY}-{MAX_CONCURRENCY}"
        f" (default: {_DEFAULTS.max})",
    )
    run.add_argument("-a", "--auto", action="store_true", help="do not ask before calling agents")
    run.add_argument(
        "-d", "--dry-run", action="store_true", help="print the plan and change nothing"
    )
    run.add_argument(
        "--retries",
        type=_whole_number,
        default=_DEFAULTS.retries,
        metavar="N",
        help="try a call again up to N times after a timeout, a connection error or a"
        f" rate limit (default: {_DEFAULTS.retries})",
    )
    run.add_argument(
        "--retry-base",
        type=_positive_seconds,
        default=_DEFAULTS.retry_base,
        metavar="SECONDS",
        help="first retry waits up to this long, doubling each time"
        f" (default: {_DEFAULTS.retry_base:g})",
    )
    run.add_argument(
        "--retry-cap",
        type=_positive_seconds,
        default=_DEFAULTS.retry_cap,
        metavar="SECONDS",
        help=f"longest wait between retries (default: {_DEFAULTS.retry_cap:g})",
    )
    run.add_argument(
        "--rate",
        metavar="N/s",
        help="at most this many calls start per second or minute (5/s, 60/min)",
    )
    run.add_argument(
        "--agent-rate",
        dest="agent_rates",
        action="append",
        metavar="AGENT=N/s",
        help="a rate for one agent (repeatable)",
    )
    _spending_arguments(parser)
    run.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop at the first call that fails for good; the rest are reported as cancelled",
    )
    run.add_argument(
        "--grace",
        type=_positive_seconds,
        default=_DEFAULTS.grace,
        metavar="SECONDS",
        help="after Ctrl-C (or SIGTERM, SIGHUP), how long running calls may finish before"
        " they are cancelled"
        f" (default: {_DEFAULTS.grace:g})",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="answer every selected note again, even those already answered, and call the"
        " agents even where the journal holds an answer",
    )

    cluster = parser.add_argument_group("cluster (Dask; needs command-handlers[dask])")
    cluster.add_argument(
        "--scheduler",
        default=os.environ.get(SCHEDULER_ENV) or None,
        metavar="ADDRESS",
        help="run the agents' calls on a Dask cluster: tcp://host:port of a running"
        " scheduler, or 'local' for worker processes on this machine"
        f" (default: ${SCHEDULER_ENV}, else this process)",
    )
    cluster.add_argument(
        "--scheduler-timeout",
        type=_positive_seconds,
        default=_DEFAULTS.scheduler_timeout,
        metavar="SECONDS",
        help="give up on an unreachable scheduler after this long"
        f" (default: {_DEFAULTS.scheduler_timeout:g})",
    )

    journal = parser.add_argument_group("journal (resuming)")
    journal.add_argument(
        "--journal",
        metavar="PATH",
        help="where outcomes are recorded (default: .<canvas name>.journal.sqlite beside it)",
    )
    journal.add_argument("--no-journal", action="store_true", help="record nothing, reuse nothing")
    journal.add_argument(
        "--resume",
        action="store_true",
        help="reuse every answer the journal holds for an unchanged note (the default"
        " unless --force; the flag says so explicitly)",
    )
    journal.add_argument(
        "--max-canvas-mb",
        type=_megabytes,
        default=_DEFAULTS.max_canvas_mb,
        metavar="MB",
        help=f"refuse canvases larger than this (default: {_DEFAULTS.max_canvas_mb:g})",
    )
    run.add_argument(
        "--max-answer-mb",
        type=_megabytes,
        default=_DEFAULTS.max_answer_mb,
        metavar="MB",
        help="an --agent-command call printing more than this fails"
        f" (default: {_DEFAULTS.max_answer_mb:g})",
    )

    out = parser.add_argument_group("writing")
    out.add_argument(
        "--inline", action="store_true", help="put the whole answer in the card; no document"
    )
    out.add_argument(
        "--docs-dir",
        metavar="DIR",
        help='folder for the documents (default: "<canvas name> answers")',
    )
    out.add_argument(
        "--vault",
        metavar="DIR",
        help="the Obsidian vault's root, from which file nodes' paths are written"
        " (default: the nearest folder above the canvas holding .obsidian/)",
    )
    out.add_argument(
        "--replace",
        action="store_true",
        help="a note answered again gets its new answer in the place of the latest answer"
        " by the same agent (the old card goes; its document stays on disk)",
    )
    out.add_argument("--output", metavar="FILE", help="write the canvas here instead of in place")
    out.add_argument(
        "--no-backup", dest="backup", action="store_false", help="do not keep <canvas>.bak"
    )
    out.add_argument("--report", metavar="FILE", help="write a JSON report of every task")

    show = parser.add_argument_group("output")
    show.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    show.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    show.add_argument("-v", "--verbose", action="store_true", help="print more detail")

    claude = parser.add_argument_group("Claude Code")
    claude.add_argument(
        "--install-slash-command",
        nargs="?",
        const="",
        metavar="DIR",
        help="write DIR/.claude/commands/intelligent-parallel.md (default DIR: this folder),"
        " so that /intelligent-parallel runs this command in Claude Code; --force replaces"
        " a different file",
    )
    claude.add_argument(
        "--user",
        action="store_true",
        help="with --install-slash-command: install in ~/.claude/commands, for every project",
    )
    return parser


def _spending_arguments(parser: argparse.ArgumentParser) -> None:
    spend = parser.add_argument_group('cost (docs/cli.md, "Cost and caps")')
    spend.add_argument(
        "--price",
        metavar="IN,OUT",
        help="US dollars per million input and output tokens (default: genai-prices' price of"
        " the model, when it knows the model)",
    )
    spend.add_argument(
        "--budget-tokens",
        type=_whole_number,
        metavar="N",
        help="start no call once the tokens spent and reserved would pass N (input plus output)",
    )
    spend.add_argument(
        "--budget-usd",
        type=float,
        metavar="X",
        help="start no call once the dollars spent and reserved would pass X (needs a price)",
    )
    spend.add_argument(
        "--tpm",
        type=float,
        metavar="N",
        help="at most N tokens a minute per model (each call's estimate, settled with its usage)",
    )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max": args.max,
        "auto": args.auto,
        "dry_run": args.dry_run,
        "nodes": args.nodes,
        "verbose": args.verbose,
        "colors": args.colors,
        "agent": args.agent,
        "agents": args.agents,
        "route": args.route,
        "follow_edges": args.follow_edges,
        "inline": args.inline,
        "docs_dir": args.docs_dir,
        "vault": args.vault,
        "backup": args.backup,
        "output": args.output,
        "model": args.model,
        "agents_dirs": args.agents_dirs,
        "agent_command": args.agent_command,
        "timeout": args.timeout,
        "color_map": args.color_map,
        "no_plugins": args.no_plugins,
        "disable_plugins": args.disable_plugins,
        "plugins": args.plugins,
        "progress": "quiet" if args.quiet or args.dry_run else "auto",
        "retries": args.retries,
        "retry_base": args.retry_base,
        "retry_cap": args.retry_cap,
        "rate": args.rate,
        "agent_rates": ",".join(args.agent_rates or []) or None,
        "fail_fast": args.fail_fast,
        "grace": args.grace,
        "scheduler": args.scheduler,
        "scheduler_timeout": args.scheduler_timeout,
        "force": args.force,
        "replace": args.replace,
        "journal": args.journal,
        "no_journal": args.no_journal,
        "resume": args.resume,
        "max_canvas_mb": args.max_canvas_mb,
        "max_answer_mb": args.max_answer_mb,
        "price": args.price,
        "budget_tokens": args.budget_tokens,
        "budget_usd": args.budget_usd,
        "tpm": args.tpm,
    }


def print_plan(console: Console, plan: Mapping[str, Any]) -> None:
    """Print the plan: per agent the calls to make and those skipped, and a time estimate.

    Args:
        console: Where to print.
        plan: The handler's plan.
    """
    forced, waiting = bool(plan.get("forced")), bool(plan["follow_edges"])
    columns = ["to run", "new", "changed"] + ["forced"] * forced + ["skipped"]
    columns += ["waiting on other notes"] * waiting
    from rich.table import Table  # pylint: disable=import-outside-toplevel  # rich when drawn

    table = Table(title="Plan", title_justify="left")
    table.add_column("agent")
    for column in columns:
        table.add_column(column, justify="right")
    for agent, entry in plan["agents"].items():
        counts = [entry["calls"], entry["new"], entry["changed"]]
        counts += [entry["forced"]] * forced + [entry["answered"]]
        counts += [entry["with_prerequisites"]] * waiting
        table.add_row(agent, *(str(count) for count in counts))
    console.print(table)
    groups = f"{plan['new']} new, {plan['changed']} changed since answered"
    if forced:
        groups += f", {plan['forced']} answered before, forced"
    skipped = f"Skipped, already answered: {plan['answered']} {_plural(plan['answered'], 'call')}"
    if plan["skipped_answered"]:
        skipped += f" ({plan['skipped_answered']} {_plural(plan['skipped_answered'], 'note')})"
    console.print(
        f"To run: {plan['calls']} {_plural(plan['calls'], 'call')} ({groups}). {skipped}.",
        soft_wrap=True,
    )
    if not plan["calls"]:
        console.print("Nothing to run: every selected note is already answered.")
        return
    console.print(
        f"{plan['notes']} notes, {plan['calls']} calls, {plan['max_concurrency']} at once:"
        f" about {plan['estimate_seconds']} s at 10 s a call"
        + (" (following edges)" if waiting else "")
    )
    if "estimate" in plan:
        _print_estimate(console, plan)


def _print_estimate(console: Console, plan: Mapping[str, Any]) -> None:
    """Per agent and in all: the estimated tokens in and out, and the cost where known."""

    def line(estimate: Mapping[str, Any]) -> str:
        usd = estimate["usd"]
        cost = "cost unknown" if usd is None else f"${usd:.4f}"
        return f"{estimate['input_tokens']:,} tokens in, {estimate['output_tokens']:,} out, {cost}"

    agents = {name: entry for name, entry in plan["agents"].items() if entry["calls"]}
    if len(agents) > 1:
        for name, entry in agents.items():
            console.print(f"  {name}: {line(entry['estimate'])}", markup=False, soft_wrap=True)
    total = plan["estimate"]
    console.print(
        f"Estimate: {line(total)} (about 4 bytes a token"
        + ("; no price: --price IN,OUT)" if total["usd"] is None else ")"),
        markup=False,
        soft_wrap=True,
    )


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


#: How many failed or skipped tasks the closing summary names, one line each.
SUMMARY_FAILURES = 20


def _print_summary(console: Console, result: CommandResult) -> None:
    from rich.markup import escape  # pylint: disable=import-outside-toplevel  # rich when drawn

    stats = result.stats
    asked = stats["total_nodes"] - stats["skipped_answered"]
    docs, cards, errors = stats["generated_docs"], stats["created_blue_nodes"], stats["errors"]
    console.print(
        f"[bold]{stats['processed_nodes']}/{asked} {_plural(asked, 'note')} answered[/], "
        f"{docs} {_plural(docs, 'document')}, {cards} blue {_plural(cards, 'node')}, "
        f"{errors} {_plural(errors, 'error')} in {result.elapsed_seconds:.1f} s"
    )
    if stats.get("usd") and (stats["input_tokens"] or stats["output_tokens"]):
        console.print(
            f"Spent {stats['input_tokens']:,} tokens in, {stats['output_tokens']:,} out:"
            f" ${stats['usd']:.4f}",
            markup=False,
        )
    if stats["skipped_answered"]:
        count = stats["skipped_answered"]
        console.print(
            f"{count} {_plural(count, 'note')} skipped: already answered (--force answers again)"
        )
    unfinished = [task for task in result.results if task["status"] in ("failed", "skipped")]
    for task in unfinished[:SUMMARY_FAILURES]:
        console.print(
            f"[red]{task['status']}[/] {escape(str(task.get('note', task['task_id'])))}"
            f" {escape(str(task['agent']))}:"
            f" {escape(str(task['error']))}",
            soft_wrap=True,
        )
    if len(unfinished) > SUMMARY_FAILURES:
        more = len(unfinished) - SUMMARY_FAILURES
        console.print(f"... and {more} more (every task is in --report FILE and --json)")
    # Calls never started share their reason (a stop, a budget): one line each.
    reasons = Counter(
        str(task["error"] or "cancelled")
        for task in result.results
        if task["status"] == "cancelled"
    )
    for reason, count in reasons.items():
        console.print(
            f"[yellow]cancelled[/] {count} {_plural(count, 'call')}: {escape(reason)}",
            soft_wrap=True,
        )
    if result.canvas:
        backup = f" (previous version: {result.backup})" if result.backup else ""
        console.print(f"Wrote {result.canvas}{backup}", markup=False)
    if result.side_file and not result.failure:
        console.print(result.message, style="yellow", markup=False)


def _confirm(console: Console, signals: _Signals) -> Any:
    def ask(plan: Mapping[str, Any]) -> bool:
        print_plan(console, plan)
        from rich.prompt import Confirm  # pylint: disable=import-outside-toplevel

        with signals.prompting():
            return Confirm.ask("Call the agents?", default=False, console=console)

    return ask


def _say(line: str) -> None:
    """Print a line on stderr, whatever --quiet says; a terminal already gone is no error."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_plugins:
        return _list_plugins(args)
    if args.install_slash_command is not None:
        return _install(parser, args)
    if args.user:
        parser.error("--user goes with --install-slash-command")
    # pylint: disable=import-outside-toplevel  # what a run needs, after --help
    from command_handlers.config_file import ConfigError, find_config, read_config
    from command_handlers.intelligent_parallel import IntelligentParallelCommandHandler
    from command_handlers.slash_command import CanvasNotFoundError, find_canvas

    # pylint: enable=import-outside-toplevel
    canvas_file = args.canvas_file
    if canvas_file is None:
        try:
            canvas_file = str(find_canvas(Path()))
        except CanvasNotFoundError as exc:
            _error(exc)
            return EXIT_BAD_INPUT
    args.canvas_file = canvas_file
    config = find_config(args.config, canvas_file)
    if config is not None:
        try:
            parser.set_defaults(**read_config(config.path, vars(args), automatic=config.automatic))
        except ConfigError as exc:
            _error(exc)
            return EXIT_BAD_INPUT
        args = parser.parse_args(argv)
        args.canvas_file = canvas_file
    console = _console(quiet=args.quiet)
    interactive = sys.stdin.isatty() and console.is_terminal and not args.json
    signals = _Signals(console, args.grace)
    handler = IntelligentParallelCommandHandler(
        confirm=_confirm(console, signals) if interactive else None
    )
    signals.handler = handler
    try:
        _check_report(args.report)
        result = asyncio.run(_run_with_signals(handler, signals, args))
    except CommandInputError as exc:
        _print_error(console, exc)
        if args.quiet:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, asyncio.CancelledError):
        signals.after_the_run()
        where = f"; finished answers saved to {handler.side_file}" if handler.side_file else ""
        _say(
            f"\nInterrupted: the canvas was not changed{where}."
            " Run the same command again to go on: the journal keeps every finished answer."
        )
        return signals.exit_code
    signals.after_the_run()
    return _finish(console, args, result, signals.exit_code)


def _console(*, quiet: bool = False) -> Console:
    """A rich console on stderr; ``rich`` is imported here, when something is drawn."""
    from rich.console import Console  # pylint: disable=import-outside-toplevel,redefined-outer-name

    return Console(stderr=True, quiet=quiet)


def _print_error(console: Console, exc: Exception | str) -> None:
    from rich.markup import escape  # pylint: disable=import-outside-toplevel

    console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)


def _error(exc: Exception | str) -> None:
    _print_error(_console(), exc)


def _list_plugins(args: argparse.Namespace) -> int:
    """Print one line per plugin: name, where it came from, module (--list-plugins)."""
    # pylint: disable-next=import-outside-toplevel
    from command_handlers.plugins import PluginLoadError, get_plugin_manager, list_plugins

    try:
        pm = get_plugin_manager(
            load_entry_points=not args.no_plugins,
            disabled=args.disable_plugins or (),
            plugins=args.plugins or (),
        )
    except PluginLoadError as exc:
        _error(exc)
        return EXIT_BAD_INPUT
    for info in list_plugins(pm):
        print(info.line())
    return EXIT_OK


def _install(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Write the Claude Code command file (--install-slash-command [DIR] [--user] [--force])."""
    from command_handlers.slash_command import (  # pylint: disable=import-outside-toplevel
        install_slash_command,
    )

    if args.canvas_file is not None:
        parser.error("--install-slash-command takes a folder, not a canvas file")
    if args.user and args.install_slash_command:
        parser.error("--install-slash-command DIR and --user: give one")
    folder = Path(args.install_slash_command) if args.install_slash_command else None
    try:
        result = install_slash_command(folder, user=args.user, force=args.force)
    except (ValueError, OSError) as exc:  # SlashCommandExistsError is a ValueError
        _error(exc)
        return EXIT_BAD_INPUT
    print(result.message)
    return EXIT_OK


#: The signals that stop a run: Ctrl-C, ``kill``, and the terminal's hang-up.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _Signals:
    """What Ctrl-C, SIGTERM and SIGHUP do to a run.

    The first stops starting calls and lets the running ones finish within
    the grace; the second cancels the run at once. Each signal is handled
    twice: a Python handler raises the handler's flag the moment it comes,
    so that no call starts after it even while the run plans in one stretch
    of code, and the event loop does the rest (printing, cancelling) from a
    handler of ``loop.add_signal_handler``, which also wakes the loop.
    """

    def __init__(self, console: Console, grace: float) -> None:
        self.console = console
        self.grace = grace
        self.handler: IntelligentParallelCommandHandler | None = None
        #: The signals the loop has handled, in order.
        self.received: list[int] = []
        self._prompting = False

    @property
    def exit_code(self) -> int:
        """128 plus the first signal's number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
        return 128 + self.received[0] if self.received else EXIT_INTERRUPTED

    def after_the_run(self) -> None:
        """Before the closing lines: after a hang-up, the terminal may have gone since."""
        if getattr(signal, "SIGHUP", None) in self.received:
            _silence_a_closed_terminal()

    @contextlib.contextmanager
    def prompting(self) -> Iterator[None]:
        """While the confirmation prompt waits for a key, a signal ends the command."""
        self._prompting = True
        try:
            yield
        finally:
            self._prompting = False

    def at_once(self, signum: int, frame: FrameType | None) -> None:
        """The Python signal handler: raise the flag; the loop does the rest."""
        del frame
        if self.handler is not None:
            self.handler.hold_calls()
        if self._prompting:
            # The prompt blocks in input(), a safe place to leave from, and the
            # loop cannot run before it returns: nothing has started yet.
            self.received.append(signum)
            raise KeyboardInterrupt

    def in_loop(self, signum: int, main_task: asyncio.Task[Any]) -> None:
        """The event loop's handler: stop gently the first time, at once the second."""
        if signum == getattr(signal, "SIGHUP", None):
            _silence_a_closed_terminal()
            if signum in self.received:
                # A closed terminal hangs up twice (the kernel, then the shell passing
                # it on), and nobody is left to ask for more: the first one stands.
                return
        self.received.append(signum)
        handler = self.handler
        assert handler is not None
        if handler.writing:
            return  # a moment more writes what finished; cancelling now could half-say it
        if len(self.received) == 1 and handler.request_stop():
            by = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
            with contextlib.suppress(OSError, ValueError):  # a terminal hung up
                self.console.print(
                    f"[yellow]Stopping{by}: no new calls; running ones get {self.grace:g} s"
                    " to finish. Ctrl-C again to stop at once.[/]"
                )
        else:
            main_task.cancel()

    @contextlib.contextmanager
    def installed(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """Handle the stop signals in this block, then restore what was there."""
        main_task = asyncio.current_task()
        assert main_task is not None  # a coroutine run by asyncio.run
        installed: list[tuple[int, Callable[..., Any] | int | None]] = []
        try:
            for signum in STOP_SIGNALS:
                previous = signal.getsignal(signum)
                if previous == signal.SIG_IGN:
                    continue  # started ignoring it (nohup): it stays ignored
                try:
                    loop.add_signal_handler(signum, self.in_loop, signum, main_task)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not here
                    continue
                # add_signal_handler's own Python handler only wakes the loop (its
                # wake-up fd does); this one also raises the flag at once.
                signal.signal(signum, self.at_once)
                installed.append((signum, previous))
            yield
        finally:
            for signum, previous in installed:
                loop.remove_signal_handler(signum)
                signal.signal(signum, previous)


def _silence_a_closed_terminal() -> None:
    """After a hang-up, send what would go to the closed terminal nowhere, not into errors.

    A terminal that hung up fails every write with ``EIO``: the run's summary
    would end in a traceback, and the exit code with it.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (captured, say)
            continue
        try:
            os.write(fd, b"")
        except OSError:
            # Open for the rest of the process, as sys.stderr is.
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115  # pylint: disable=consider-using-with


async def _run_with_signals(
    handler: IntelligentParallelCommandHandler, signals: _Signals, args: argparse.Namespace
) -> CommandResult:
    """Run the handler; the first stop signal stops gently, the second at once."""
    with signals.installed(asyncio.get_running_loop()):
        return await handler.run(Path(args.canvas_file), _options(args))


def _check_report(report: str | None) -> None:
    """Refuse a --report file that could not be written, before any agent is called."""
    if report is None:
        return
    path = Path(report)
    if path.is_dir():
        raise CommandInputError(f"cannot write the report {report}: it is a directory")
    if not path.parent.is_dir():
        raise CommandInputError(
            f"cannot write the report {report}: folder {path.parent} does not exist"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK) or (
        path.exists() and not os.access(path, os.W_OK)
    ):
        raise CommandInputError(f"cannot write the report {report}: permission denied")


#: The colour Obsidian's default theme shows for each preset (the file holds the number).
_OBSIDIAN_COLORS = {
    "1": "red",
    "2": "orange",
    "3": "yellow",
    "4": "green",
    "5": "cyan",
    "6": "purple",
}


def _none_of(colors: Sequence[str]) -> str:
    """Say that no note of the colours looked for was found, and how Obsidian shows them."""
    shown = [
        f'"{c}" ({_OBSIDIAN_COLORS[c]} in Obsidian)' if c in _OBSIDIAN_COLORS else f'"{c}"'
        for c in dict.fromkeys(colors)
    ]
    word = "colour" if len(shown) == 1 else "colours"
    return f"No notes of {word} {', '.join(shown)} found"


def _finish(
    console: Console, args: argparse.Namespace, result: CommandResult, interrupted_code: int
) -> int:
    from rich.markup import escape  # pylint: disable=import-outside-toplevel  # rich when drawn

    if result.kind == "nothing-selected":
        console.print(f"{_none_of(args.colors or ['6'])}: nothing to do.", markup=False)
        return EXIT_OK
    if result.kind != "up-to-date":
        for notice in result.notices:
            console.print(f"[yellow]{escape(notice)}[/]", soft_wrap=True)
    if result.kind == "dry-run":
        return _dry_run(console, args, result)
    if result.kind == "declined":
        console.print(result.message)
        return EXIT_OK
    reported = _write_report(args.report, result.report)
    if args.json:
        print(json.dumps(result.report, indent=2, ensure_ascii=False))
    if result.kind == "up-to-date":
        console.print(result.message, markup=False, soft_wrap=True)
        return EXIT_OK if reported else EXIT_FAILED
    _print_summary(console, result)
    _print_why(console, args.quiet, result)
    if result.interrupted:
        return interrupted_code
    return EXIT_OK if result.success and reported else EXIT_FAILED


def _write_report(path: str | None, report: Mapping[str, Any] | None) -> bool:
    """Write ``--report FILE`` whole or not at all; say why it could not be written."""
    if not path or report is None:
        return True
    from command_handlers.fileio import save_atomic  # pylint: disable=import-outside-toplevel

    try:
        save_atomic(path, json.dumps(report, indent=2, ensure_ascii=False), backup=False)
    except OSError as exc:
        _say(f"error: cannot write the report {path}: {exc.strerror or exc}")
        return False
    return True


def _say_failed_calls(tasks: Sequence[Mapping[str, Any]]) -> None:
    """Under --quiet, failed calls are still errors: one line for them all."""
    failed = [task for task in tasks if task["status"] in ("failed", "skipped")]
    if failed:
        first = failed[0]
        why = (str(first["error"] or first["status"]).splitlines() or [""])[0]
        rest = "no answer to write" if len(failed) == len(tasks) else "the others were written"
        _say(
            f"error: {len(failed)} of {len(tasks)} tasks failed"
            f" (first, {first['task_id']}: {why.rstrip(' :;')}); {rest}"
        )


def _print_why(console: Console, quiet: bool, result: CommandResult) -> None:
    """Why the run stopped short, and how to go on: its error, printed even under --quiet."""
    from rich.markup import escape  # pylint: disable=import-outside-toplevel  # rich when drawn

    if result.failure:  # the journal or the canvas could not be written
        if quiet:
            _say(f"error: {result.failure}")
        else:
            _error(result.failure)
    elif result.interrupted or (result.message and not result.side_file):  # a stop, a budget
        if quiet:
            _say(result.message)
        else:
            console.print(f"[yellow]{escape(result.message)}[/]", soft_wrap=True)
    elif quiet:
        _say_failed_calls(result.results)


def _dry_run(console: Console, args: argparse.Namespace, result: CommandResult) -> int:
    assert result.plan is not None
    # The report: the plan alone, nothing called.
    reported = _write_report(args.report, result.report)
    if args.json:
        print(json.dumps(result.report, indent=2, ensure_ascii=False))
    print_plan(console, result.plan)
    console.print("Dry run: nothing was called or written.")
    return EXIT_OK if reported else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
