"""Tests for command_handlers.default_plugins.command_agent, with small Python scripts."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from command_handlers.agent_definitions import load_agents
from command_handlers.default_plugins import command_agent
from command_handlers.default_plugins.command_agent import (
    AGENT_ENV_VAR,
    STDIN_SEPARATOR,
    AgentCommandTimeoutError,
    CommandAgentExecutor,
    build_stdin,
    check_settings,
    register_executors,
)
from command_handlers.plugins import AsyncTask, collect_executors, get_plugin_manager, run_tasks
from command_handlers.settings import Settings

BUNDLED = load_agents()

#: Answers with a JSON object: its stdin, the agent variable and its arguments.
ECHO_SCRIPT = """
import json, os, sys
data = sys.stdin.buffer.read().decode("utf-8")
print(json.dumps({
    "stdin": data,
    "agent": os.environ.get("COMMAND_HANDLERS_AGENT"),
    "extra": os.environ.get("COMMAND_HANDLERS_TEST_EXTRA"),
    "argv": sys.argv[1:],
}))
"""

#: Writes its pid to the file named by its first argument, then sleeps.
SLEEP_SCRIPT = """
import os, sys, time
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(30)
print("too late")
"""

FAIL_SCRIPT = """
import sys
sys.stdin.read()
for i in range(1, 16):
    print(f"stderr line {i}", file=sys.stderr)
print("partial answer")
sys.exit(3)
"""


def script(tmp_path: Path, body: str, *args: str) -> tuple[str, ...]:
    """Write a Python script into ``tmp_path``; return the argv that runs it."""
    path = tmp_path / f"script_{abs(hash(body))}.py"
    path.write_text(textwrap.dedent(body), "utf-8")
    return (sys.executable, str(path), *args)


def collect(settings: Settings) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Call the hook directly and return agent name -> (executor, register kwargs)."""
    found: dict[str, tuple[Any, dict[str, Any]]] = {}

    def register(name: str, executor: Any, max_concurrency: Any = None, **kwargs: Any) -> None:
        assert name not in found
        assert max_concurrency is None
        found[name] = (executor, kwargs)

    register_executors(register=register, settings=settings)
    return found


def executor_for(argv: tuple[str, ...], timeout: float = 30.0) -> CommandAgentExecutor:
    """The executor of the bundled ``memory-anchor`` agent running ``argv``."""
    return CommandAgentExecutor(BUNDLED["memory-anchor"], argv, timeout)


def task(prompt: Any = "What is a monad?", agent: str = "memory-anchor") -> AsyncTask:
    """A task whose node_data holds ``prompt`` (left out when ``prompt`` is ``...``)."""
    data = {} if prompt is ... else {"prompt": prompt}
    return AsyncTask(task_id=f"{agent}-task", agent_name=agent, node_data=data)


def pid_is_gone(pid: int) -> bool:
    """Whether no process (not even a zombie) has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_for_file(path: Path) -> None:
    """Poll until the script has written its pid file."""
    for _ in range(500):
        if await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def test_build_stdin_layout() -> None:
    assert STDIN_SEPARATOR == "---"
    assert build_stdin("You are X.", "Q\n") == b"You are X.\n---\nQ\n"
    assert build_stdin("é", "ü") == "é\n---\nü".encode()


def test_registers_one_executor_per_agent(tmp_path: Path) -> None:
    argv = script(tmp_path, ECHO_SCRIPT)
    found = collect(Settings(agent_command=argv, command_timeout=12.5))
    assert sorted(found) == sorted(BUNDLED)
    for name, (executor, kwargs) in found.items():
        assert isinstance(executor, CommandAgentExecutor)
        assert kwargs == {
            "description": BUNDLED[name].description,
            "fingerprint": shlex.join(argv),
        }
        assert executor.argv == argv
        assert executor.timeout == 12.5
        assert executor.agent == BUNDLED[name]


def test_registers_nothing_without_an_agent_command() -> None:
    assert collect(Settings()) == {}


def test_an_empty_agent_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="agent_command is empty"):
        collect(Settings(agent_command=()))


def test_a_string_agent_command_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"not a string: use shlex.split\('claude -p'\)"):
        collect(Settings(agent_command="claude -p"))  # type: ignore[arg-type]


async def test_the_program_gets_the_layout_and_the_agent_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMAND_HANDLERS_TEST_EXTRA", "kept")
    argv = script(tmp_path, ECHO_SCRIPT, "--flag", "two words")
    found = collect(Settings(agent_command=argv))
    for name in ("memory-anchor", "oral-explanation"):
        result = await found[name][0](task("Ünïcode prompt", agent=name))
        assert set(result) == {"text", "agent", "model"}
        assert result["agent"] == name
        assert result["model"] == shlex.join(argv)
        answer = json.loads(result["text"])
        assert answer["stdin"] == f"{BUNDLED[name].system_prompt}\n---\nÜnïcode prompt"
        assert answer["agent"] == name
        assert answer["extra"] == "kept"
        assert answer["argv"] == ["--flag", "two words"]
    assert AGENT_ENV_VAR not in os.environ


async def test_shell_syntax_reaches_the_program_verbatim_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    victim = tmp_path / "x"
    victim.mkdir()
    hostile = f"$(touch {marker}) `touch {marker}` ; rm -rf x && touch pwned | cat > pwned"
    argv = script(tmp_path, ECHO_SCRIPT, f"$(touch {marker})", "; rm -rf x")
    result = await executor_for(argv)(task(hostile))
    answer = json.loads(result["text"])
    assert answer["stdin"].endswith(f"\n---\n{hostile}")
    assert answer["argv"] == [f"$(touch {marker})", "; rm -rf x"]
    assert not marker.exists()
    assert victim.is_dir()


async def test_a_non_zero_exit_is_a_runtime_error_with_the_end_of_stderr(tmp_path: Path) -> None:
    argv = script(tmp_path, FAIL_SCRIPT)
    with pytest.raises(RuntimeError, match="exited with code 3") as caught:
        await executor_for(argv)(task())
    message = str(caught.value)
    assert "'memory-anchor'" in message
    assert "stderr line 15" in message
    assert "stderr line 6\n" in message
    assert "stderr line 5\n" not in message
    assert "partial answer" not in message


async def test_a_non_zero_exit_without_stderr(tmp_path: Path) -> None:
    argv = script(tmp_path, "import sys; sys.exit(2)")
    with pytest.raises(RuntimeError, match=r"exited with code 2; .*\n\(nothing on stderr\)"):
        await executor_for(argv)(task())


async def test_a_timeout_kills_and_reaps_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    argv = script(tmp_path, SLEEP_SCRIPT, str(pid_file))
    executor = collect(Settings(agent_command=argv, command_timeout=0.5))["memory-anchor"][0]
    with pytest.raises(TimeoutError, match=r"agent command timed out after 0\.5 s") as caught:
        await executor(task())
    assert isinstance(caught.value, AgentCommandTimeoutError)
    assert isinstance(caught.value, asyncio.TimeoutError)
    assert pid_is_gone(int(pid_file.read_text()))


async def test_cancellation_kills_and_reaps_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    argv = script(tmp_path, SLEEP_SCRIPT, str(pid_file))
    running = asyncio.ensure_future(executor_for(argv)(task()))
    await wait_for_file(pid_file)
    pid = int(pid_file.read_text())
    assert not pid_is_gone(pid)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert pid_is_gone(pid)


async def test_a_missing_program_is_a_file_not_found_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-agent-program")
    with pytest.raises(
        FileNotFoundError, match=r"agent command not found: .*no-such-agent-program"
    ):
        await executor_for((missing, "--x"))(task())


async def test_empty_output_is_an_error(tmp_path: Path) -> None:
    argv = script(tmp_path, "print('   ')")
    with pytest.raises(RuntimeError, match="agent command printed nothing"):
        await executor_for(argv)(task())


async def test_output_is_stripped_and_bad_bytes_replaced(tmp_path: Path) -> None:
    argv = script(tmp_path, r"import sys; sys.stdout.buffer.write(b'\n  caf\xc3\xa9 \xff ok \n')")
    result = await executor_for(argv)(task())
    assert result["text"] == "café \ufffd ok"


async def test_a_program_that_ignores_stdin_still_answers(tmp_path: Path) -> None:
    argv = script(tmp_path, "print('answer')")
    result = await executor_for(argv)(task("x" * 1_000_000))
    assert result["text"] == "answer"


async def test_a_task_without_a_prompt_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    argv = script(tmp_path, f"open({str(marker)!r}, 'w').close(); print('hi')")
    with pytest.raises(ValueError, match="has no 'prompt' string"):
        await executor_for(argv)(task(...))
    assert not marker.exists()


async def test_through_the_plugin_manager_and_run_tasks(tmp_path: Path) -> None:
    pm = get_plugin_manager(load_entry_points=False)
    assert pm.get_plugin("command-agent") is command_agent
    argv = script(tmp_path, ECHO_SCRIPT)
    tasks = [task("first", agent="memory-anchor"), task("second", agent="oral-explanation")]
    summary = await run_tasks(tasks, pm=pm, settings=Settings(agent_command=argv))
    assert summary["success"] == 2, summary["errors"]
    by_agent = {result["agent"]: json.loads(result["text"]) for result in summary["results"]}
    assert by_agent["memory-anchor"]["stdin"].endswith("\n---\nfirst")
    assert by_agent["oral-explanation"]["agent"] == "oral-explanation"
    assert {result["model"] for result in summary["results"]} == {shlex.join(argv)}


def test_the_fingerprint_is_the_command_line(tmp_path: Path) -> None:
    argv = script(tmp_path, ECHO_SCRIPT, "--flag", "two words")
    registry = collect_executors(
        get_plugin_manager(load_entry_points=False), Settings(agent_command=argv)
    )
    assert {registry.fingerprint(name) for name in BUNDLED} == {shlex.join(argv)}
    assert "'two words'" in registry.fingerprint("memory-anchor")


def test_check_settings_accepts_a_program_that_exists(tmp_path: Path) -> None:
    assert check_settings(Settings()) is None
    assert check_settings(Settings(agent_command=script(tmp_path, ECHO_SCRIPT))) is None
    assert check_settings(Settings(agent_command=(Path(sys.executable).name, "-c", "1"))) is None


def test_check_settings_refuses_a_program_not_on_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"agent command 'no-such-agent-program' not found"):
        check_settings(Settings(agent_command=("no-such-agent-program", "-p")))
    missing = str(tmp_path / "missing-program")
    with pytest.raises(ValueError, match="not found"):
        check_settings(Settings(agent_command=(missing,)))


def test_check_settings_says_what_a_program_path_is_instead(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is a folder \(--agent-command\)"):
        check_settings(Settings(agent_command=(str(tmp_path),)))
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program", encoding="utf-8")
    plain.chmod(0o644)
    with pytest.raises(ValueError, match=r"is not executable \(--agent-command\)"):
        check_settings(Settings(agent_command=(str(plain), "-p")))


def test_check_settings_through_the_hook_refuses_before_any_call(tmp_path: Path) -> None:
    pm = get_plugin_manager(load_entry_points=False)
    with pytest.raises(ValueError, match="no such program on PATH"):
        pm.hook.check_settings(settings=Settings(agent_command=("no-such-agent-program",)))
    # with a command answering, llm-agents says nothing about the echo model
    argv = script(tmp_path, ECHO_SCRIPT)
    assert pm.hook.check_settings(settings=Settings(agent_command=argv)) == []


# ----------------------------------------------------------------------------- process groups

#: Starts a child that holds stdout (and sleeps), tagged with argv[1]; then does argv[2]:
#: "answer" prints an answer and exits 0, "hang" sleeps as well, never answering.
BACKGROUND_SCRIPT = """
import subprocess, sys, time
marker, then = sys.argv[1], sys.argv[2]
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
if then == "answer":
    print("the answer, printed before exit", flush=True)
    sys.exit(0)
time.sleep(300)
"""


def processes_with(marker: str) -> list[int]:
    """The live processes (zombies left out) whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


posix_only = pytest.mark.skipif(
    not Path("/proc").is_dir() or not hasattr(os, "killpg"), reason="process groups and /proc"
)


@posix_only
async def test_an_answer_printed_before_a_background_child_counts(tmp_path: Path) -> None:
    marker = f"marker-{os.getpid()}-{tmp_path.name}-answer"
    argv = script(tmp_path, BACKGROUND_SCRIPT, marker, "answer")
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await executor_for(argv, timeout=30)(task())
    assert result["text"] == "the answer, printed before exit"
    # The call ended with the program, not with the child holding its stdout...
    assert loop.time() - started < 10
    # ...and the child was ended with it.
    assert processes_with(marker) == []


@posix_only
async def test_a_child_holding_stdout_cannot_outlast_the_timeout(tmp_path: Path) -> None:
    marker = f"marker-{os.getpid()}-{tmp_path.name}-hang"
    argv = script(tmp_path, BACKGROUND_SCRIPT, marker, "hang")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AgentCommandTimeoutError, match=r"timed out after 0\.5 s"):
        await executor_for(argv, timeout=0.5)(task())
    assert loop.time() - started < 0.5 + command_agent.KILL_GRACE + 3
    assert processes_with(marker) == []


@posix_only
async def test_cancellation_ends_the_whole_group(tmp_path: Path) -> None:
    marker = f"marker-{os.getpid()}-{tmp_path.name}-cancel"
    pid_file = tmp_path / "pid"
    body = BACKGROUND_SCRIPT.replace(
        'if then == "answer":',
        "open(sys.argv[3], 'w').write('1')\nif then == 'answer':",
    )
    argv = script(tmp_path, body, marker, "hang", str(pid_file))
    running = asyncio.ensure_future(executor_for(argv)(task()))
    await wait_for_file(pid_file)
    assert len(processes_with(marker)) == 2  # the program and its child
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert processes_with(marker) == []


@posix_only
async def test_each_call_runs_in_a_session_of_its_own(tmp_path: Path) -> None:
    argv = script(tmp_path, "import os; print(os.getsid(0), os.getpgid(0), os.getpid())")
    sid, pgid, pid = map(int, (await executor_for(argv)(task()))["text"].split())
    assert sid == pgid == pid  # a new session, led by the program: Ctrl-C never reaches it
    assert sid != os.getsid(0)


async def test_an_answer_over_the_limit_fails_clearly(tmp_path: Path) -> None:
    argv = script(tmp_path, "import sys; sys.stdout.write('x' * 3_000_000); sys.stdout.flush()")
    executor = CommandAgentExecutor(
        BUNDLED["memory-anchor"], argv, 30, max_answer_bytes=1024 * 1024
    )
    with pytest.raises(
        command_agent.AgentAnswerTooLargeError,
        match=r"printed more than 1 MB, the limit \(--max-answer-mb\)",
    ) as caught:
        await executor(task())
    assert caught.value.retryable is False
    # Up to the limit is fine.
    argv = script(tmp_path, "import sys; sys.stdout.write('y' * 1_048_576)")
    result = await CommandAgentExecutor(
        BUNDLED["memory-anchor"], argv, 30, max_answer_bytes=1024 * 1024
    )(task())
    assert len(result["text"]) == 1_048_576


def test_the_limit_comes_from_the_settings(tmp_path: Path) -> None:
    argv = script(tmp_path, ECHO_SCRIPT)
    (executor, _), *_ = collect(Settings(agent_command=argv, max_answer_bytes=1234)).values()
    assert executor.max_answer_bytes == 1234


async def test_only_the_end_of_a_huge_stderr_is_kept(tmp_path: Path) -> None:
    body = """
    import sys
    for i in range(200_000):
        sys.stderr.write(f"noise line {i}\\n")
    sys.exit(5)
    """
    with pytest.raises(RuntimeError, match="exited with code 5") as caught:
        await executor_for(script(tmp_path, body))(task())
    assert "noise line 199999" in str(caught.value)
    assert len(str(caught.value)) < 2000
