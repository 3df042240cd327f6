"""Agents answered by a program: ``settings.agent_command``, run once per task.

When the run sets ``agent_command`` (an argv tuple such as
``("claude", "-p")`` or ``("python", "my_agent.py")``), this plugin loads the
agent definitions (the bundled ones, then ``settings.agents_dirs``) and
registers one executor per agent that runs that program for each task. The
program is started directly, never through a shell, so nothing in a prompt is
ever interpreted as a command.

What the program gets, on standard input, UTF-8 encoded::

    <the agent's system prompt>
    ---
    <the prompt: the task's node_data["prompt"]>

that is the system prompt, a newline, a line holding exactly ``---``, and the
prompt as it is (no newline added at the end). The environment is the
caller's plus ``COMMAND_HANDLERS_AGENT=<agent name>``, so one script can serve
several agents.

What it must give back: the answer on standard output (decoded as UTF-8, bad
bytes replaced, then stripped) and exit status 0. A non-zero status, an empty
answer, a program that cannot be found and a call that outlives
``settings.command_timeout`` seconds are errors of that task; a program that
times out, or whose task is cancelled, is killed and reaped. The result is
``{"text": answer, "agent": name, "model": the command line}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import sys
from typing import Callable

from command_handlers import hookimpl
from command_handlers.agent_definitions import AgentDefinition, AgentTask, load_agents, task_prompt
from command_handlers.settings import Settings

__all__ = [
    "AGENT_ENV_VAR",
    "STDIN_SEPARATOR",
    "AgentCommandTimeoutError",
    "CommandAgentExecutor",
    "build_stdin",
    "check_settings",
    "register_executors",
]

#: The environment variable that tells the program which agent it answers for.
AGENT_ENV_VAR = "COMMAND_HANDLERS_AGENT"
#: The line between the system prompt and the prompt on the program's stdin.
STDIN_SEPARATOR = "---"
#: How many of the last lines of stderr an exit-status error quotes.
STDERR_TAIL_LINES = 10

if sys.version_info >= (3, 11):

    class AgentCommandTimeoutError(TimeoutError):
        """The agent command ran longer than ``settings.command_timeout``.

        A :class:`TimeoutError`, which is also :class:`asyncio.TimeoutError`.
        """

else:  # pragma: no cover - before 3.11 the two timeout errors are distinct

    class AgentCommandTimeoutError(TimeoutError, asyncio.TimeoutError):  # pylint: disable=duplicate-bases
        """The agent command ran longer than ``settings.command_timeout``.

        Both a :class:`TimeoutError` and an :class:`asyncio.TimeoutError`.
        """


def build_stdin(system_prompt: str, prompt: str) -> bytes:
    """Lay out what the program reads: system prompt, ``---`` line, prompt.

    Args:
        system_prompt: The agent's system prompt.
        prompt: The task's prompt.

    Returns:
        The UTF-8 bytes for the program's standard input.
    """
    return f"{system_prompt}\n{STDIN_SEPARATOR}\n{prompt}".encode()


def _stderr_tail(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", errors="replace").strip().splitlines()
    return "\n".join(lines[-STDERR_TAIL_LINES:]) or "(nothing on stderr)"


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the process (if it still runs) and wait for it, so that no zombie is left."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


class CommandAgentExecutor:
    """Answers the tasks of one agent by running the agent command.

    Attributes:
        agent: The agent definition (name, system prompt).
        argv: The program and its arguments.
        timeout: Seconds one call may take.
    """

    def __init__(self, agent: AgentDefinition, argv: tuple[str, ...], timeout: float) -> None:
        """Build the executor.

        Args:
            agent: The agent definition.
            argv: The program and its arguments (not empty).
            timeout: Seconds one call may take.
        """
        self.agent = agent
        self.argv = argv
        self.timeout = timeout

    @property
    def command_line(self) -> str:
        """The command, shell-quoted on one line (for messages and results).

        Returns:
            ``shlex.join(argv)``.
        """
        return shlex.join(self.argv)

    async def _start(self) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, AGENT_ENV_VAR: self.agent.name},
            )
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"agent command not found: {self.argv[0]!r} (from agent_command"
                f" {self.command_line!r}); check the program name and PATH"
            ) from error

    async def __call__(self, task: AgentTask) -> dict[str, str]:
        """Answer one task by running the agent command.

        Args:
            task: The task; ``task.node_data["prompt"]`` is the user message.

        Returns:
            ``{"text": answer, "agent": agent name, "model": command line}``.

        Raises:
            ValueError: The task has no prompt.
            FileNotFoundError: The program cannot be found.
            AgentCommandTimeoutError: The call took longer than ``timeout``
                seconds (a :class:`TimeoutError`); the process was killed.
            RuntimeError: The program exited with a non-zero status (the
                message has the status and the end of stderr) or printed nothing.
        """
        payload = build_stdin(self.agent.system_prompt, task_prompt(task))
        process = await self._start()
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(payload), self.timeout)
        except asyncio.TimeoutError:
            await _kill(process)
            raise AgentCommandTimeoutError(
                f"agent command timed out after {self.timeout:g} s"
                f" (agent {self.agent.name!r}, command {self.command_line!r})"
            ) from None
        except BaseException:
            await _kill(process)
            raise
        if process.returncode != 0:
            raise RuntimeError(
                f"agent command {self.command_line!r} for agent {self.agent.name!r} exited"
                f" with code {process.returncode}; stderr ends with:\n{_stderr_tail(stderr)}"
            )
        text = stdout.decode("utf-8", errors="replace").strip()
        if not text:
            raise RuntimeError(
                f"agent command printed nothing (agent {self.agent.name!r},"
                f" command {self.command_line!r})"
            )
        return {"text": text, "agent": self.agent.name, "model": self.command_line}


@hookimpl
def check_settings(settings: Settings) -> None:
    """Refuse an ``agent_command`` whose program cannot be found, before any call.

    Args:
        settings: The run's settings.

    Raises:
        ValueError: The program is neither on ``PATH`` nor an executable file.
    """
    argv: object = settings.agent_command
    if isinstance(argv, tuple) and argv and shutil.which(str(argv[0])) is None:
        raise ValueError(
            f"agent command {argv[0]!r} not found: no such program on PATH (--agent-command)"
        )


@hookimpl
def register_executors(register: Callable[..., None], settings: Settings) -> None:
    """Register one command executor per agent definition when ``agent_command`` is set.

    Args:
        register: The registry's ``register`` function.
        settings: The run's settings (``agent_command``, ``command_timeout``,
            ``agents_dirs``).

    Raises:
        TypeError: ``agent_command`` is a string, not an argv sequence.
        ValueError: ``agent_command`` is empty.
        AgentDefinitionError: An agent folder or file cannot be used.
    """
    command: object = settings.agent_command
    if command is None:
        return
    if isinstance(command, str):
        raise TypeError(
            "agent_command must be a sequence of arguments (argv), not a string:"
            f" use shlex.split({command!r})"
        )
    argv = tuple(settings.agent_command or ())
    if not argv:
        raise ValueError("agent_command is empty: give the program to run, or None to use llm")
    for agent in load_agents(settings.agents_dirs).values():
        register(
            agent.name,
            CommandAgentExecutor(agent, argv, settings.command_timeout),
            description=agent.description,
            fingerprint=shlex.join(argv),
        )
