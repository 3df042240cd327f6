"""The executors plugins registered, by agent name, and the ``register_executors`` call."""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

from command_handlers.async_execution_engine import AsyncTask, RateLimit
from command_handlers.settings import Settings

__all__ = [
    "OFFLOAD",
    "DuplicateAgentError",
    "ExecutorRegistry",
    "UnknownAgentError",
    "collect_executors",
    "offloading",
    "plugin_name",
]

Executor = Callable[[AsyncTask], Awaitable[Any]]
#: ``(executor, task) -> awaitable`` that calls an agent's executor elsewhere (on
#: a cluster), set by a backend around its run (:func:`offloading`); ``None``: call it here.
#: A context variable, so a backend offloads only its own tasks' calls, while the
#: work around the call (``prepare_task``, a cached answer) stays in this process.
#: Internal agents (a plugin's own helpers) are never offloaded.
OFFLOAD: contextvars.ContextVar[Callable[[Executor, AsyncTask], Awaitable[Any]] | None] = (
    contextvars.ContextVar("command_handlers_offload", default=None)
)
#: How many runs offload right now (see :func:`offloading`), in a one-item list:
#: while none does, a task's route reads this, not the context variable (the hot path).
_OFFLOADS = [0]


@contextlib.contextmanager
def offloading(call: Callable[[Executor, AsyncTask], Awaitable[Any]]) -> Iterator[None]:
    """Within the block, this task's agent calls (and its child tasks') go through ``call``.

    Args:
        call: ``(executor, task) -> awaitable``, run instead of ``executor(task)``.

    Yields:
        Nothing; leaving the block calls the executors here again.
    """
    token = OFFLOAD.set(call)
    _OFFLOADS[0] += 1
    try:
        yield
    finally:
        _OFFLOADS[0] -= 1
        OFFLOAD.reset(token)


class DuplicateAgentError(ValueError):
    """Two plugins registered executors under one agent name."""


class UnknownAgentError(LookupError):
    """A task names an agent that no plugin registered."""


@dataclass(frozen=True)
class _Registration:
    executor: Executor
    plugin: str
    max_concurrency: int | None
    description: str
    override: bool
    rate: RateLimit | None = None
    fingerprint: str | None = None
    internal: bool = False
    tpm: float | None = None
    prompt_tokens: int = 0
    output_tokens: int | None = None


class ExecutorRegistry:
    """The executors plugins registered, by agent name."""

    def __init__(self) -> None:
        self._agents: dict[str, _Registration] = {}

    def add(
        self,
        plugin: str,
        agent_name: str,
        executor: Executor,
        max_concurrency: int | None = None,
        *,
        description: str = "",
        override: bool = False,
        rate: RateLimit | float | str | None = None,
        fingerprint: str | None = None,
        internal: bool = False,
        tpm: float | None = None,
        prompt_tokens: int = 0,
        output_tokens: int | None = None,
    ) -> None:
        """Register ``executor`` for ``agent_name`` on behalf of ``plugin``.

        Args:
            plugin: The registering plugin's name.
            agent_name: The agent the executor serves.
            executor: ``async def (task) -> dict``.
            max_concurrency: At most this many calls of this agent at once.
            description: One line saying what the agent does (routers read it).
            override: Win over another plugin's registration of the same name.
            rate: At most this many calls of this agent start per second
                (``"10/min"``, a number per second, or a :class:`RateLimit`).
            fingerprint: What answers (a model id, a command line), part of
                every answer's input hash.
            internal: Keep the agent out of :attr:`names` (a plugin's own helper).
            tpm: At most this many tokens a minute for this agent's calls
                (input plus output; each call's estimate is reserved when it
                starts and settled with its result's ``usage`` when it ends).
            prompt_tokens: The tokens every call sends besides the task's
                prompt (a system prompt), for the estimate of each call.
            output_tokens: The tokens a call of this agent is expected to
                answer, until earlier answers say better (``None``: the
                command's default).

        Raises:
            TypeError: ``executor`` is not callable.
            ValueError: ``max_concurrency`` is not a positive int, ``rate`` not
                a rate, ``tpm`` not a positive number, or ``prompt_tokens`` or
                ``output_tokens`` not a whole number.
            DuplicateAgentError: Another plugin registered the name and neither
                or both override.
        """
        if not callable(executor):
            raise TypeError(
                f"plugin {plugin!r}: executor for agent {agent_name!r} must be callable"
            )
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ValueError(
                f"plugin {plugin!r}: max_concurrency of agent {agent_name!r} must be a positive"
                f" int, got {max_concurrency!r}"
            )
        _check_tokens(plugin, agent_name, tpm, prompt_tokens, output_tokens)
        new = _Registration(
            executor,
            plugin,
            max_concurrency,
            description,
            override,
            _parse_rate(plugin, agent_name, rate),
            fingerprint,
            internal,
            None if tpm is None else float(tpm),
            int(prompt_tokens),
            output_tokens,
        )
        old = self._agents.get(agent_name)
        if old is not None and old.override == override:
            raise DuplicateAgentError(
                f"agent {agent_name!r} is registered by both plugin {old.plugin!r} and plugin"
                f" {plugin!r}; pass override=True in the one that should win"
            )
        if old is None or override:
            self._agents[agent_name] = new

    @property
    def names(self) -> list[str]:
        """The agents a note may get, sorted (internal agents left out)."""
        return sorted(name for name, reg in self._agents.items() if not reg.internal)

    def describe(self) -> dict[str, str]:
        """Return agent name -> description, sorted by name (internal agents left out)."""
        return {name: self._agents[name].description for name in self.names}

    def owner(self, agent_name: str) -> str:
        """Return the name of the plugin that serves ``agent_name``.

        Args:
            agent_name: A registered agent.

        Returns:
            The plugin's name.

        Raises:
            UnknownAgentError: Nobody registered the agent.
        """
        return self._lookup(agent_name).plugin

    def fingerprint(self, agent_name: str) -> str | None:
        """Return what answers for ``agent_name``, as its plugin said (``None``: not said).

        Args:
            agent_name: A registered agent.

        Returns:
            The fingerprint.

        Raises:
            UnknownAgentError: Nobody registered the agent.
        """
        return self._lookup(agent_name).fingerprint

    def limits(self) -> dict[str, int]:
        """Return agent name -> its own limit, for the agents that have one."""
        return {
            name: reg.max_concurrency
            for name, reg in self._agents.items()
            if reg.max_concurrency is not None
        }

    def rates(self) -> dict[str, RateLimit]:
        """Return agent name -> its rate limit, for the agents that have one."""
        return {name: reg.rate for name, reg in self._agents.items() if reg.rate is not None}

    def tpms(self) -> dict[str, float]:
        """Return agent name -> its tokens per minute, for the agents that have one."""
        return {name: reg.tpm for name, reg in self._agents.items() if reg.tpm is not None}

    def output_tokens(self) -> dict[str, int]:
        """Return agent name -> the tokens a call is expected to answer, for those that said."""
        return {
            name: reg.output_tokens
            for name, reg in self._agents.items()
            if reg.output_tokens is not None
        }

    def prompt_tokens(self, agent_name: str) -> int:
        """Return the tokens every call of ``agent_name`` sends besides the task's prompt.

        Args:
            agent_name: An agent.

        Returns:
            The tokens (0 for an agent nobody registered, or that did not say).
        """
        reg = self._agents.get(agent_name)
        return reg.prompt_tokens if reg is not None else 0

    def _lookup(self, agent_name: str) -> _Registration:
        try:
            return self._agents[agent_name]
        except KeyError:
            raise UnknownAgentError(
                f"no executor registered for agent {agent_name!r}; registered agents: "
                + (", ".join(sorted(self._agents)) or "none")
            ) from None

    def router(self) -> Callable[[AsyncTask], Awaitable[Any]]:
        """Return a function that starts each task on its agent's executor.

        Returns:
            ``route(task)``, as :meth:`route`, with the executors looked up once.
        """
        executors = {name: reg.executor for name, reg in self._agents.items()}
        # A plugin's own helper agents (internal) may hold this process's state
        # (the plugin manager, open files): they are never offloaded.
        helpers = {name for name, reg in self._agents.items() if reg.internal}
        offloaded = OFFLOAD.get
        offloads = _OFFLOADS

        def route(task: AsyncTask) -> Awaitable[Any]:
            executor = executors.get(task.agent_name)
            if executor is None:
                self._lookup(task.agent_name)  # raises UnknownAgentError
            if offloads[0]:
                offload = offloaded()
                if offload is not None and task.agent_name not in helpers:
                    return offload(executor, task)  # type: ignore[arg-type]
            return executor(task)  # type: ignore[misc]

        return route

    def route(self, task: AsyncTask) -> Awaitable[Any]:
        """Start the work of ``task`` on its agent's executor.

        Args:
            task: The task.

        Returns:
            The executor's awaitable.

        Raises:
            UnknownAgentError: Nobody registered ``task.agent_name``.
        """
        return self._lookup(task.agent_name).executor(task)


def _parse_rate(
    plugin: str, agent_name: str, rate: RateLimit | float | str | None
) -> RateLimit | None:
    """An agent's ``rate=``, read; a bad one names the plugin and the agent."""
    try:
        return RateLimit.parse(rate) if rate is not None else None
    except ValueError as error:
        raise ValueError(f"plugin {plugin!r}: agent {agent_name!r}: {error}") from None


def _check_tokens(
    plugin: str, agent_name: str, tpm: object, prompt_tokens: object, output_tokens: object
) -> None:
    """Refuse a ``tpm`` that is not a positive number, token counts that are not whole numbers."""
    if tpm is not None and (
        isinstance(tpm, bool) or not isinstance(tpm, (int, float)) or not tpm > 0
    ):
        raise ValueError(
            f"plugin {plugin!r}: tpm of agent {agent_name!r} must be a positive number, got {tpm!r}"
        )
    counts = {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens}
    if output_tokens is None:
        del counts["output_tokens"]
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"plugin {plugin!r}: {name} of agent {agent_name!r} must be a whole"
                f" number >= 0, got {count!r}"
            )


def plugin_name(pm: pluggy.PluginManager, impl: pluggy.HookImpl) -> str:
    """The name a hook implementation's plugin is registered under."""
    return pm.get_name(impl.plugin) or impl.plugin_name


def collect_executors(
    pm: pluggy.PluginManager, settings: Settings | None = None
) -> ExecutorRegistry:
    """Ask every plugin to register its executors.

    Args:
        pm: The plugin manager.
        settings: The run's settings (defaults when ``None``).

    Returns:
        The registry of every agent registered.

    Raises:
        DuplicateAgentError: Two plugins registered one agent name.
    """
    registry = ExecutorRegistry()
    arguments: dict[str, Any] = {"settings": settings or Settings()}
    for impl in reversed(pm.hook.register_executors.get_hookimpls()):
        # register(agent_name, executor, ...) is add() on behalf of this plugin.
        register = functools.partial(registry.add, plugin_name(pm, impl))
        arguments["register"] = register
        impl.function(*(arguments[name] for name in impl.argnames))
    return registry
