"""The default agents: each agent definition answers through the ``llm`` library.

When the run has no ``agent_command`` (see
:class:`~command_handlers.settings.Settings`), this plugin loads the agent
definitions (the bundled ones, then ``settings.agents_dirs``) and registers one
executor per agent. An executor sends the task's ``node_data["prompt"]`` to a
model of the ``llm`` library, with the agent's system prompt, through ``llm``'s
async API, and returns ``{"text": answer, "agent": name, "model": model id,
"usage": {"input_tokens": N, "output_tokens": N}}`` (``usage`` is ``None`` when
the model does not say).

Which model answers, per agent:

* the agent's own ``model`` when ``llm`` knows it (checked once per run, at
  the agent's first call);
* otherwise (``model: inherit``, no ``model``, or a model ``llm`` does not know,
  such as Claude Code's ``opus`` or ``sonnet``) the run's model,
  ``settings.model``; an unknown agent model is logged once per agent and run
  as a warning on the ``command_handlers.agents`` logger, never an error;
* a run model of ``None`` means :data:`ECHO_MODEL`, the offline model of the
  ``llm-echo`` plugin, which answers with the request it got.

Every call of a run goes through one :class:`LlmCalls`: each model is looked
up once per run, its key read once, a stream asked for only when the model can
stream, and ``llm``'s OpenAI models share one HTTP client per run that makes
exactly one request per attempt (the engine's retry policy is the only one;
see :class:`OpenAIClients`). The run's clients are closed when it ends
(``on_run_end``) or, if it was cut short, when the command ends
(``unconfigure``).

The plugin checks the models the run's agents use in ``check_settings``: an
unknown run model, or a model whose key is not set, refuses the run before any
call; it says there when the offline echo model answers. ``llm`` itself is
imported only when a model is looked up.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable
from importlib import metadata
from typing import Any, Callable

from command_handlers import hookimpl
from command_handlers.agent_definitions import AgentDefinition, AgentTask, load_agents, task_prompt
from command_handlers.plugins import text_tokens
from command_handlers.settings import ECHO_MODEL, Settings

__all__ = [
    "CHOSEN_ECHO_NOTICE",
    "ECHO_MODEL",
    "ECHO_NOTICE",
    "OPENAI_ADAPTER_LLM",
    "AgentTask",
    "LlmAgentExecutor",
    "LlmCalls",
    "OpenAIClients",
    "check_model",
    "check_settings",
    "close_run_calls",
    "finish_run",
    "missing_key",
    "on_run_end",
    "register_executors",
    "run_calls",
    "run_model_id",
    "task_prompt",
    "unconfigure",
    "uses_echo",
]


logger = logging.getLogger("command_handlers.agents")

#: The ``llm`` release (major, minor) :class:`OpenAIClients` was written for and
#: checked against: it reaches into how ``llm``'s OpenAI models build their client,
#: which ``llm`` offers no public API for. Under another release the models are
#: used as ``llm`` builds them, with a warning.
OPENAI_ADAPTER_LLM = (0, 36)
_OPENAI_MODULE = "llm.default_plugins.openai_models"


def run_model_id(settings: Settings) -> str:
    """Return the id of the run's model: ``settings.model``, or :data:`ECHO_MODEL`.

    Args:
        settings: The run's settings.

    Returns:
        The model id agents that inherit the run's model use.
    """
    return settings.run_model


def uses_echo(settings: Settings) -> bool:
    """Tell whether the run's model is the offline :data:`ECHO_MODEL`.

    Agents that ask for a model of their own may still use another one.

    Args:
        settings: The run's settings.

    Returns:
        ``True`` when ``settings.model`` is ``None`` or ``"echo"``.
    """
    return run_model_id(settings) == ECHO_MODEL


def _unknown_model(model_id: str) -> ValueError:
    return ValueError(f"unknown model {model_id!r}; `llm models` lists the installed ones")


def _get_model(model_id: str) -> Any:
    """Return a new instance of ``llm``'s async model ``model_id``, or raise a clear ValueError.

    ``llm`` registers every plugin's models again on each look-up: a run looks
    each model up once (:meth:`LlmCalls.model`).
    """
    import llm  # pylint: disable=import-outside-toplevel  # only a real call needs it

    try:
        return llm.get_async_model(model_id)
    except llm.UnknownModelError as error:
        raise _unknown_model(model_id) from error


def check_model(model_id: str | None) -> None:
    """Check that ``llm`` has an async model of that id (or alias).

    Args:
        model_id: A model id such as ``"gpt-4o-mini"``; ``None`` means
            :data:`ECHO_MODEL`.

    Raises:
        ValueError: ``llm`` knows no async model of that id; the message names
            the model and hints at ``llm models``.
    """
    _get_model(model_id or ECHO_MODEL)


def missing_key(model: Any) -> str | None:
    """Say why a model cannot be called for want of its key, if it cannot.

    Args:
        model: An ``llm`` model.

    Returns:
        ``None`` when the model needs no key or its key is set (stored with
        ``llm keys set`` or in its environment variable); else one line naming
        the key and how to set it.
    """
    needs = getattr(model, "needs_key", None)
    if not needs:
        return None
    try:
        key = model.get_key()
    except Exception:  # pylint: disable=broad-exception-caught  # llm's NeedsKeyException
        key = None
    if key:
        return None
    env = getattr(model, "key_env_var", None)
    how = f"`llm keys set {needs}`" + (f" or the {env} environment variable" if env else "")
    return f"model {model.model_id!r} needs the key {needs!r}, which is not set: set it with {how}"


def _llm_release() -> tuple[int, ...]:
    try:
        version = metadata.version("llm")
    except metadata.PackageNotFoundError:  # pragma: no cover - llm is a dependency
        return ()
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(char for char in part if char.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class OpenAIClients:
    """One openai client per key for an ``llm`` OpenAI model, for one run.

    ``llm``'s OpenAI models (``llm.default_plugins.openai_models``, also behind
    ``extra-openai-models.yaml``) build a new ``openai`` client, with its own
    HTTP connection pool and TLS context, for every request, never close it,
    and leave the client's own retries on (2 by default) under ours. ``llm``
    has no public way to pass a client; this adapter replaces the model
    instance's ``get_client`` with one that builds the client once, through
    ``llm``'s own ``get_client`` (so ``api_base``, headers and keys are read
    as ``llm`` reads them), with ``max_retries=0``, and hands it out for the
    run's every call. :meth:`adapt` checks the ``llm`` release and the shape of
    ``get_client`` first; ``tests/test_llm_provider.py`` fails when either changes.

    Args:
        model: The ``llm`` model instance (a run's own: see :meth:`LlmCalls.model`).
    """

    def __init__(self, model: Any) -> None:
        self._build = model.get_client
        self._clients: dict[str | None, Any] = {}

    @staticmethod
    def fits(model: Any) -> bool:
        """Tell whether the adapter was written for this model and the installed ``llm``.

        Args:
            model: An ``llm`` model.

        Returns:
            ``True`` when ``model`` uses ``llm``'s own OpenAI ``get_client(key,
            *, async_=False)`` and ``llm`` is release :data:`OPENAI_ADAPTER_LLM`.
        """
        build = getattr(type(model), "get_client", None)
        if build is None or getattr(build, "__module__", None) != _OPENAI_MODULE:
            return False
        try:
            parameters = inspect.signature(build).parameters
        except (TypeError, ValueError):  # pragma: no cover - a plain function has one
            return False
        if list(parameters)[:2] != ["self", "key"] or "async_" not in parameters:
            return False
        return _llm_release() == OPENAI_ADAPTER_LLM

    @classmethod
    def adapt(cls, model: Any) -> OpenAIClients | None:
        """Make ``model`` reuse one client per key, without retries of its own.

        Args:
            model: An ``llm`` model instance no one else uses.

        Returns:
            The clients (to close at the end of the run), or ``None`` when the
            model is not one of ``llm``'s OpenAI models, or the adapter does not
            fit this ``llm`` (then logged once as a warning).
        """
        build = getattr(type(model), "get_client", None)
        if build is None or getattr(build, "__module__", None) != _OPENAI_MODULE:
            return None  # another provider's model: called as its plugin builds it
        if not cls.fits(model):
            _warn_unadapted(model)
            return None
        clients = cls(model)
        model.get_client = clients.get_client
        return clients

    def get_client(self, key: str | None, *, async_: bool = False) -> Any:
        """Return the run's client for ``key`` (``llm``'s signature).

        Args:
            key: The API key ``llm`` resolved.
            async_: An async client (the only kind a run uses; a sync one is
                built as ``llm`` builds it).

        Returns:
            The openai client.
        """
        if not async_:
            return self._build(key, async_=False)
        client = self._clients.get(key)
        if client is None:
            # Our engine retries, counts and rate-limits every attempt: the
            # client must send exactly one request per attempt.
            client = self._build(key, async_=True).with_options(max_retries=0)
            self._clients[key] = client
        return client

    @property
    def open_clients(self) -> int:
        """How many clients are open."""
        return len(self._clients)

    async def aclose(self) -> None:
        """Close every client (their connections); safe to call again."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                await client.close()
            except Exception:  # pylint: disable=broad-exception-caught  # closing is best effort
                logger.debug("closing an openai client failed", exc_info=True)


_WARNED: set[str] = set()


def _warn_unadapted(model: Any) -> None:
    name = type(model).__qualname__
    if name in _WARNED:
        return
    _WARNED.add(name)
    release = ".".join(map(str, _llm_release())) or "?"
    logger.warning(
        "llm %s is not the release the client adapter was written for (%s) or its OpenAI"
        " models build clients differently: %s calls each build their own HTTP client and"
        " the openai client's own retries stay on",
        release,
        ".".join(map(str, OPENAI_ADAPTER_LLM)),
        name,
    )


class LlmCalls:
    """The ``llm`` calls of one run: each model looked up once, one HTTP client per model.

    Created by the run's first ``register_executors`` (:func:`run_calls`) and
    closed when the run ends (:func:`close_run_calls`). All calls come from one
    event loop.

    Args:
        loop: The event loop the run's calls come from (``None`` outside one).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self._models: dict[str, Any] = {}  # set up: key read, client adapted
        self._found: dict[str, Any] = {}  # looked up, not set up yet
        self._clients: list[OpenAIClients] = []
        self.closed = False

    def model(self, model_id: str) -> Any:
        """Return the run's instance of model ``model_id``, looked up at the first call.

        Its key is read once (the run does not read ``keys.json`` per call),
        and ``llm``'s OpenAI models get the run's client (:class:`OpenAIClients`).

        Args:
            model_id: The model id or alias.

        Returns:
            The ``llm`` async model.

        Raises:
            ValueError: ``llm`` knows no such model, or its key is not set.
        """
        model = self._models.get(model_id)
        if model is None:
            found = self._found.pop(model_id, None)
            model = found if found is not None else _get_model(model_id)
            problem = missing_key(model)
            if problem is not None:
                raise ValueError(problem)
            if getattr(model, "needs_key", None):
                model.key = model.get_key()
            clients = OpenAIClients.adapt(model)
            if clients is not None:
                self._clients.append(clients)
            self._models[model_id] = model
        return model

    def knows(self, model_id: str) -> bool:
        """Tell whether ``llm`` knows the model (looking it up once per run).

        Args:
            model_id: The model id or alias.

        Returns:
            Whether ``llm`` has an async model of that id.
        """
        if model_id in self._models or model_id in self._found:
            return True
        try:
            self._found[model_id] = _get_model(model_id)
        except ValueError:
            return False
        return True

    def adopt(self, found: dict[str, Any]) -> None:
        """Take models already looked up (by ``check_settings``), to be set up at first use.

        Args:
            found: Model id -> a fresh ``llm`` model instance no one else uses.
        """
        for model_id, model in found.items():
            if model_id not in self._models:
                self._found.setdefault(model_id, model)

    async def complete(self, model_id: str, prompt: str, system: str | None) -> dict[str, Any]:
        """Ask a model once.

        Args:
            model_id: The model.
            prompt: The user message.
            system: The system prompt.

        Returns:
            ``{"text": answer, "model": model id, "usage": {"input_tokens": N,
            "output_tokens": N} or None}``.

        Raises:
            ValueError: Unknown model, or its key is not set.
        """
        model = self.model(model_id)
        # A model that cannot stream refuses a request for a stream (a 400).
        response = model.prompt(prompt, system=system, stream=bool(model.can_stream))
        text = await response.text()
        return {
            "text": str(text),
            "model": str(model.model_id),
            "usage": _usage(await response.usage()),
        }

    @property
    def open_clients(self) -> int:
        """How many HTTP clients the run's calls opened and did not close."""
        return sum(adapted.open_clients for adapted in self._clients)

    async def aclose(self) -> None:
        """Close the run's HTTP clients; safe to call again."""
        self.closed = True
        clients, self._clients = self._clients, []
        for adapted in clients:
            await adapted.aclose()


def _usage(usage: Any) -> dict[str, int] | None:
    """``llm``'s ``Usage`` as the report's ``usage``, or ``None`` when it says nothing."""
    tokens_in = getattr(usage, "input", None)
    tokens_out = getattr(usage, "output", None)
    if tokens_in is None and tokens_out is None:
        return None
    return {"input_tokens": int(tokens_in or 0), "output_tokens": int(tokens_out or 0)}


# The run in progress in this task's context: ``run_tasks`` collects the
# executors and calls ``on_run_end`` from the same context, and concurrent runs
# run in tasks of their own, each with its own copy of the context.
_RUN_CALLS: contextvars.ContextVar[LlmCalls | None] = contextvars.ContextVar(
    "command_handlers_llm_calls", default=None
)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_calls() -> LlmCalls:
    """The ``llm`` calls of the run being set up or run in this context.

    Returns:
        The run's :class:`LlmCalls`; a new one after the last run's was
        closed, or when the last one belongs to another event loop (or to
        none: HTTP clients serve one loop).
    """
    calls = _RUN_CALLS.get()
    loop = _running_loop()
    if calls is None or calls.closed or calls.loop is not loop:
        calls = LlmCalls(loop)
        _RUN_CALLS.set(calls)
    return calls


async def close_run_calls() -> None:
    """Close the HTTP clients of the run of this context, if it has any."""
    calls = _RUN_CALLS.get()
    if calls is not None:
        _RUN_CALLS.set(None)
        await calls.aclose()


class LlmAgentExecutor:
    """Answers the tasks of one agent with an ``llm`` model.

    Attributes:
        agent: The agent definition (system prompt, model).
        run_model: The run's model id, used when the agent's own model is
            ``None`` or unknown to ``llm``.
        calls: The run's calls (models, clients) it shares with the run's
            other executors.
    """

    def __init__(
        self, agent: AgentDefinition, run_model: str | None, calls: LlmCalls | None = None
    ) -> None:
        """Build the executor; no model is looked up yet.

        Args:
            agent: The agent definition.
            run_model: The run's model id; ``None`` means :data:`ECHO_MODEL`.
            calls: The run's calls; a fresh :class:`LlmCalls` when ``None``.
        """
        self.agent = agent
        self.run_model = run_model or ECHO_MODEL
        self.calls = calls if calls is not None else LlmCalls()
        self._model_id: str | None = None

    @property
    def model_id(self) -> str:
        """The id of the model the agent uses, resolved at the first access.

        The agent's own model is used if ``llm`` knows it; otherwise the run's
        model, with one warning.

        Returns:
            The model id.
        """
        if self._model_id is None:
            self._model_id = self._resolve()
        return self._model_id

    def _resolve(self) -> str:
        wanted = self.agent.model
        if wanted is None:
            return self.run_model
        if not self.calls.knows(wanted):
            logger.warning(
                "agent %r asks for model %r, which llm does not know (%s); using the run's"
                " model %r instead",
                self.agent.name,
                wanted,
                _unknown_model(wanted),
                self.run_model,
            )
            return self.run_model
        return wanted

    async def __call__(self, task: AgentTask) -> dict[str, Any]:
        """Answer one task.

        Args:
            task: The task; ``task.node_data["prompt"]`` is the user message.

        Returns:
            ``{"text": answer, "agent": agent name, "model": model id, "usage":
            {"input_tokens": N, "output_tokens": N} or None}``.

        Raises:
            ValueError: The task has no prompt, the model is unknown to ``llm``,
                or its key is not set.
        """
        prompt = task_prompt(task)
        answer = await self.calls.complete(self.model_id, prompt, self.agent.system_prompt)
        return {
            "text": answer["text"],
            "agent": self.agent.name,
            "model": answer["model"],
            "usage": answer["usage"],
        }


#: What the ``check_settings`` hook says when the offline echo model answers
#: because no model was given.
ECHO_NOTICE = (
    "No model configured: answers are echoes of the prompts."
    " Use --model (see `llm models`) for real answers."
)
#: ... and when ``--model echo`` asked for it.
CHOSEN_ECHO_NOTICE = "Model echo: answers are echoes of the prompts, made offline."


def _models_used(settings: Settings) -> dict[str, Any]:
    """The models the run's agents (and a model router) would call, run model first.

    Returns:
        Model id -> the ``llm`` model, each looked up once (a look-up registers
        every plugin's models again: tenths of a second). The echo model is
        never looked up here: ``llm-echo`` is a dependency, offline and keyless,
        so a run that only echoes (a dry run above all) never imports ``llm``
        before its first call.

    Raises:
        ValueError: ``llm`` knows no model ``settings.model``.
    """
    run_model = run_model_id(settings)
    found: dict[str, Any] = {}
    if run_model != ECHO_MODEL:
        found[run_model] = _get_model(run_model)
    used = {run_model} if settings.route == "model" else set()
    unknown: set[str] = set()
    for agent in load_agents(settings.agents_dirs).values():
        wanted = agent.model
        if wanted is None or wanted == ECHO_MODEL:
            used.add(wanted or run_model)
            continue
        if wanted not in found and wanted not in unknown:
            try:
                found[wanted] = _get_model(wanted)
            except ValueError:
                unknown.add(wanted)
        used.add(wanted if wanted in found else run_model)
    return {model_id: model for model_id, model in found.items() if model_id in used}


@hookimpl
def check_settings(settings: Settings) -> str | None:
    """Refuse a run model ``llm`` does not know, or a model whose key is not set.

    The keys checked are those of the models the run's agents use (their own
    when ``llm`` knows it, else the run's). Nothing is checked when
    ``settings.agent_command`` answers instead.

    Args:
        settings: The run's settings.

    Returns:
        :data:`ECHO_NOTICE` when the echo model answers because no model was
        given, :data:`CHOSEN_ECHO_NOTICE` when ``--model echo`` chose it, else ``None``.

    Raises:
        ValueError: ``llm`` knows no model ``settings.model``, or a model the
            agents use needs a key that is not set (the message names the key
            and how to set it).
    """
    if settings.agent_command is not None:
        return None
    found = _models_used(settings)
    for model in found.values():
        problem = missing_key(model)
        if problem is not None:
            raise ValueError(problem)
    if _running_loop() is not None:
        # The command's first run is set up next in this context: it uses these
        # instances rather than looking each model up again.
        run_calls().adopt(found)
    if not uses_echo(settings):
        return None
    return ECHO_NOTICE if settings.model is None else CHOSEN_ECHO_NOTICE


@hookimpl
def register_executors(register: Callable[..., None], settings: Settings) -> None:
    """Register one ``llm`` executor per agent definition, unless ``agent_command`` is set.

    The executors of one run share the run's :class:`LlmCalls`.

    Args:
        register: The registry's ``register`` function.
        settings: The run's settings (``model``, ``agents_dirs``, ``agent_command``).

    Raises:
        AgentDefinitionError: An agent folder or file cannot be used.
    """
    if settings.agent_command is not None:
        return
    calls = run_calls()
    for agent in load_agents(settings.agents_dirs).values():
        register(
            agent.name,
            LlmAgentExecutor(agent, settings.model, calls),
            description=agent.description,
            fingerprint=agent.model or run_model_id(settings),
            prompt_tokens=text_tokens(agent.system_prompt or ""),
            output_tokens=agent.extra.get("output_tokens"),
        )


def finish_run() -> Awaitable[None] | None:
    """Forget the run of this context; close its HTTP clients, if it opened any.

    Returns:
        An awaitable that closes them, or ``None`` when there is none to close.
    """
    calls = _RUN_CALLS.get()
    if calls is None:
        return None
    if not calls.open_clients:
        _RUN_CALLS.set(None)
        calls.closed = True
        return None
    return close_run_calls()


@hookimpl
def on_run_end() -> Awaitable[None] | None:
    """Close the run's HTTP clients.

    Returns:
        An awaitable that closes them, when the run opened any.
    """
    return finish_run()


@hookimpl
def unconfigure() -> Awaitable[None] | None:
    """Close the clients of a run the command cut short (it heard no ``on_run_end``).

    Returns:
        An awaitable that closes them, when such a run left any.
    """
    return finish_run()
