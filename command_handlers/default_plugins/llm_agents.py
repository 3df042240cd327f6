"""The default agents: each agent definition answers through the ``llm`` library.

When the run has no ``agent_command`` (see
:class:`~command_handlers.settings.Settings`), this plugin loads the agent
definitions (the bundled ones, then ``settings.agents_dirs``) and registers one
executor per agent. An executor sends the task's ``node_data["prompt"]`` to a
model of the ``llm`` library, with the agent's system prompt, through ``llm``'s
async API, and returns ``{"text": answer, "agent": name, "model": model id}``.

Which model answers, per agent:

* the agent's own ``model`` when ``llm`` knows it (checked once, at the
  agent's first call);
* otherwise (``model: inherit``, no ``model``, or a model ``llm`` does not know,
  such as Claude Code's ``opus`` or ``sonnet``) the run's model,
  ``settings.model``; an unknown agent model is logged once per agent as a
  warning on the ``command_handlers.agents`` logger, never an error;
* a run model of ``None`` means :data:`ECHO_MODEL`, the offline model of the
  ``llm-echo`` plugin, which answers with the request it got.

The plugin checks the run's model in ``check_settings`` (an unknown one
refuses the run), and says there when the offline echo model answers. ``llm``
itself is imported only when a model is looked up.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from command_handlers import hookimpl
from command_handlers.agent_definitions import AgentDefinition, AgentTask, load_agents, task_prompt
from command_handlers.settings import ECHO_MODEL, Settings

__all__ = [
    "ECHO_MODEL",
    "ECHO_NOTICE",
    "AgentTask",
    "LlmAgentExecutor",
    "check_model",
    "check_settings",
    "register_executors",
    "run_model_id",
    "task_prompt",
    "uses_echo",
]


logger = logging.getLogger("command_handlers.agents")


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
    """Return ``llm``'s async model ``model_id``, or raise a clear ValueError."""
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


class LlmAgentExecutor:
    """Answers the tasks of one agent with an ``llm`` model.

    Attributes:
        agent: The agent definition (system prompt, model).
        run_model: The run's model id, used when the agent's own model is
            ``None`` or unknown to ``llm``.
    """

    def __init__(self, agent: AgentDefinition, run_model: str | None) -> None:
        """Build the executor; no model is looked up yet.

        Args:
            agent: The agent definition.
            run_model: The run's model id; ``None`` means :data:`ECHO_MODEL`.
        """
        self.agent = agent
        self.run_model = run_model or ECHO_MODEL
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
        try:
            _get_model(wanted)
        except ValueError as error:
            logger.warning(
                "agent %r asks for model %r, which llm does not know (%s); using the run's"
                " model %r instead",
                self.agent.name,
                wanted,
                error,
                self.run_model,
            )
            return self.run_model
        return wanted

    async def __call__(self, task: AgentTask) -> dict[str, str]:
        """Answer one task.

        Args:
            task: The task; ``task.node_data["prompt"]`` is the user message.

        Returns:
            ``{"text": answer, "agent": agent name, "model": model id}``.

        Raises:
            ValueError: The task has no prompt, or the model is unknown to ``llm``.
        """
        prompt = task_prompt(task)
        model = _get_model(self.model_id)
        response = model.prompt(prompt, system=self.agent.system_prompt)
        text = await response.text()
        return {"text": str(text), "agent": self.agent.name, "model": str(model.model_id)}


#: What the ``check_settings`` hook says when the offline echo model answers.
ECHO_NOTICE = (
    "No model configured: answers are echoes of the prompts."
    " Use --model (see `llm models`) for real answers."
)


@hookimpl
def check_settings(settings: Settings) -> str | None:
    """Refuse a run model ``llm`` does not know; say when the echo model answers.

    Nothing is checked when ``settings.agent_command`` answers instead.

    Args:
        settings: The run's settings.

    Returns:
        :data:`ECHO_NOTICE` when the run's model is the echo model, else ``None``.

    Raises:
        ValueError: ``llm`` knows no model ``settings.model``.
    """
    if settings.agent_command is not None:
        return None
    if uses_echo(settings):
        return ECHO_NOTICE
    check_model(settings.model)
    return None


@hookimpl
def register_executors(register: Callable[..., None], settings: Settings) -> None:
    """Register one ``llm`` executor per agent definition, unless ``agent_command`` is set.

    Args:
        register: The registry's ``register`` function.
        settings: The run's settings (``model``, ``agents_dirs``, ``agent_command``).

    Raises:
        AgentDefinitionError: An agent folder or file cannot be used.
    """
    if settings.agent_command is not None:
        return
    for agent in load_agents(settings.agents_dirs).values():
        register(
            agent.name,
            LlmAgentExecutor(agent, settings.model),
            description=agent.description,
            fingerprint=agent.model or run_model_id(settings),
        )
