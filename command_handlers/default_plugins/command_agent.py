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
answer, more than ``settings.max_answer_bytes`` on stdout, a program that
cannot be found and a call that outlives ``settings.command_timeout`` seconds
are errors of that task. The result is ``{"text": answer, "agent": name,
"model": the command line}``.

Each call runs in a process group of its own (a new POSIX session), so a Ctrl-C
at the terminal reaches the command, not the agents: the command decides
whether they may finish. A call ends when the program exits, even if a child
it left in the background still holds its stdout (what it printed before
exiting counts). Whatever the path (an answer, a failure, a timeout, a
cancellation), the whole group is then ended: SIGTERM, and SIGKILL after
:data:`KILL_GRACE` seconds; the program is reaped, and no process of the call
is left behind.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import sys
from typing import Callable

from command_handlers import hookimpl
from command_handlers.agent_definitions import AgentDefinition, AgentTask, load_agents, task_prompt
from command_handlers.settings import DEFAULT_MAX_ANSWER_BYTES, Settings

__all__ = [
    "AGENT_ENV_VAR",
    "KILL_GRACE",
    "STDIN_SEPARATOR",
    "AgentAnswerTooLargeError",
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
#: How many of the last bytes of stderr are kept (enough for those lines).
STDERR_TAIL_BYTES = 64 * 1024
#: Seconds a call's process group gets between SIGTERM and SIGKILL.
KILL_GRACE = 1.0
#: Seconds to wait for the reaping of a program sent SIGKILL.
_REAP_WAIT = 5.0
#: Whether calls get a process group of their own (POSIX) or only the program is ended.
_GROUPS = hasattr(os, "killpg")

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


class AgentAnswerTooLargeError(RuntimeError):
    """The agent command printed more than ``settings.max_answer_bytes`` on stdout.

    Not retryable: the same program would print as much again.
    """

    retryable = False


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


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a call's process group.

    The group's id is its first program's pid. The kernel keeps that id from
    being reused while any process of the group lives; once none does, the
    call gets ``ESRCH`` here, and is told nobody was left.

    Returns:
        Whether any process of the group was there to receive it.
    """
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - only a process that changed its user
        return True
    return True


class _Call(asyncio.SubprocessProtocol):
    """One run of the program: its output, bounded, and the moments it ends.

    A protocol rather than :class:`asyncio.subprocess.Process`, whose ``wait``
    (before Python 3.12) and ``communicate`` return only once every pipe is
    closed: a background child holding stdout would hold the call forever.
    """

    def __init__(self, limit: int) -> None:
        loop = asyncio.get_running_loop()
        self.limit = limit
        self.stdout = bytearray()
        self.stderr = bytearray()
        #: Resolved when the program has exited (and been reaped).
        self.exited: asyncio.Future[None] = loop.create_future()
        #: Resolved when stdout grew past ``limit``.
        self.too_large: asyncio.Future[None] = loop.create_future()
        #: Resolved when stdout and stderr are both closed (every writer gone).
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """Keep stdout up to the limit, and the end of stderr."""
        if fd == 1:
            if self.too_large.done():
                return
            if len(self.stdout) + len(data) > self.limit:
                self.too_large.set_result(None)
                return
            self.stdout += data
        else:
            self.stderr += data
            if len(self.stderr) > STDERR_TAIL_BYTES:
                del self.stderr[:-STDERR_TAIL_BYTES]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """Note a closed pipe; stdin's is of no interest."""
        self._open.discard(fd)
        if not self._open and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        """The program exited: the call is over, whatever its children do."""
        if not self.exited.done():
            self.exited.set_result(None)

    async def drained(self) -> None:
        """Wait until the program has exited and every pipe is closed."""
        await self.exited
        await self.pipes_closed


def _send(transport: asyncio.SubprocessTransport, call: _Call, signum: int) -> bool:
    """Send a signal to the call's process group (to the program alone without groups).

    Returns:
        Whether any process was there to receive it.
    """
    if _GROUPS:
        return _signal_group(transport.get_pid(), signum)
    if call.exited.done():  # pragma: no cover - no process groups
        return False
    transport.send_signal(signum)  # pragma: no cover
    return True  # pragma: no cover


async def _end(transport: asyncio.SubprocessTransport, call: _Call) -> None:
    """End every process of the call: SIGTERM, SIGKILL after :data:`KILL_GRACE`, reap.

    Run on every path, the answer's included: the children a program left in
    the background are ended too. Cancelled meanwhile, it sends SIGKILL at
    once and still waits (a bounded time) for the reaping, then re-raises the
    cancellation: an abandoned program would outlive the event loop.

    Raises:
        asyncio.CancelledError: It was cancelled meanwhile.
    """
    cancelled = False
    if _send(transport, call, signal.SIGTERM):
        try:
            # Over when the program has exited and nobody holds its pipes any more.
            await asyncio.wait_for(call.drained(), KILL_GRACE)
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            cancelled = True
        _send(transport, call, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _REAP_WAIT
    while not call.exited.done() and loop.time() < deadline:
        try:
            # asyncio's child watcher reaps it; its exit is reported once it has.
            await asyncio.wait({call.exited}, timeout=deadline - loop.time())
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


class CommandAgentExecutor:
    """Answers the tasks of one agent by running the agent command.

    Attributes:
        agent: The agent definition (name, system prompt).
        argv: The program and its arguments.
        timeout: Seconds one call may take.
        max_answer_bytes: The most the program may print on stdout.
    """

    def __init__(
        self,
        agent: AgentDefinition,
        argv: tuple[str, ...],
        timeout: float,
        *,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        """Build the executor.

        Args:
            agent: The agent definition.
            argv: The program and its arguments (not empty).
            timeout: Seconds one call may take.
            max_answer_bytes: The most the program may print on stdout.
        """
        self.agent = agent
        self.argv = argv
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes

    @property
    def command_line(self) -> str:
        """The command, shell-quoted on one line (for messages and results).

        Returns:
            ``shlex.join(argv)``.
        """
        return shlex.join(self.argv)

    async def _start(self) -> tuple[asyncio.SubprocessTransport, _Call]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.subprocess_exec(
                lambda: _Call(self.max_answer_bytes),
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, AGENT_ENV_VAR: self.agent.name},
                # Its own session: the terminal's Ctrl-C (and hang-up) never reach it.
                start_new_session=_GROUPS,
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
                seconds (a :class:`TimeoutError`); its processes were ended.
            AgentAnswerTooLargeError: The program printed more than
                ``max_answer_bytes`` (a :class:`RuntimeError`).
            RuntimeError: The program exited with a non-zero status (the
                message has the status and the end of stderr) or printed nothing.
        """
        payload = build_stdin(self.agent.system_prompt, task_prompt(task))
        transport, call = await self._start()
        try:
            stdin = transport.get_pipe_transport(0)
            assert isinstance(stdin, asyncio.WriteTransport)
            # Buffered by the transport; a program that never reads it just exits.
            stdin.write(payload)
            stdin.close()
            done, _ = await asyncio.wait(
                {call.exited, call.too_large},
                timeout=self.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            try:
                await _end(transport, call)
            finally:
                transport.close()
        return self._answer(transport, call, timed_out=not done)

    def _answer(
        self, transport: asyncio.SubprocessTransport, call: _Call, *, timed_out: bool
    ) -> dict[str, str]:
        where = f"agent {self.agent.name!r}, command {self.command_line!r}"
        if call.too_large.done():
            raise AgentAnswerTooLargeError(
                f"agent command printed more than {_megabytes(self.max_answer_bytes)} MB,"
                f" the limit (--max-answer-mb); the call was ended ({where})"
            )
        if timed_out:
            raise AgentCommandTimeoutError(
                f"agent command timed out after {self.timeout:g} s ({where})"
            )
        code = transport.get_returncode()
        if code != 0:
            raise RuntimeError(
                f"agent command {self.command_line!r} for agent {self.agent.name!r} exited"
                f" with code {code}; stderr ends with:\n{_stderr_tail(bytes(call.stderr))}"
            )
        text = call.stdout.decode("utf-8", errors="replace").strip()
        if not text:
            raise RuntimeError(f"agent command printed nothing ({where})")
        return {"text": text, "agent": self.agent.name, "model": self.command_line}


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g}"


@hookimpl
def check_settings(settings: Settings) -> None:
    """Refuse an ``agent_command`` whose program cannot be found, before any call.

    Args:
        settings: The run's settings.

    Raises:
        ValueError: The program is neither on ``PATH`` nor an executable file
            (the message says which: missing, a folder, not executable).
    """
    argv: object = settings.agent_command
    if isinstance(argv, tuple) and argv and shutil.which(str(argv[0])) is None:
        program = str(argv[0])
        if os.sep in program and os.path.exists(program):
            kind = "a folder" if os.path.isdir(program) else "not executable"
            raise ValueError(f"agent command {program!r} is {kind} (--agent-command)")
        raise ValueError(
            f"agent command {program!r} not found: no such program on PATH (--agent-command)"
        )


@hookimpl
def register_executors(register: Callable[..., None], settings: Settings) -> None:
    """Register one command executor per agent definition when ``agent_command`` is set.

    Args:
        register: The registry's ``register`` function.
        settings: The run's settings (``agent_command``, ``command_timeout``,
            ``max_answer_bytes``, ``agents_dirs``).

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
            CommandAgentExecutor(
                agent,
                argv,
                settings.command_timeout,
                max_answer_bytes=settings.max_answer_bytes,
            ),
            description=agent.description,
            fingerprint=shlex.join(argv),
        )
