"""``--route model``: the model picks the agent for each note from the agents' descriptions.

A built-in plugin (``model-router``). It sets itself up in ``configure`` when
``settings.route`` is ``"model"``: it then registers an internal agent that
asks the run's model, answers ``route_notes`` with one short call per note (run
concurrently through ``run_tasks`` like any other task), and picks each note's
agent in a ``tryfirst`` ``choose_agent``. The answer must name an agent (alone
on its first line, quotes and backticks allowed); anything else falls back to
the colour map.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable

import pluggy

from command_handlers import hookimpl
from command_handlers.agent_definitions import task_prompt
from command_handlers.settings import Settings

if TYPE_CHECKING:
    from command_handlers.plugins import AsyncTask

__all__ = ["ROUTER_SYSTEM_PROMPT", "ModelRouter", "configure", "parse_choice", "routing_prompt"]

ROUTER_SYSTEM_PROMPT = (
    "You route a learner's study note to the one explanation agent that will help most. "
    "Reply with the agent's name only, exactly as listed, and nothing else."
)


def parse_choice(answer: str | None, agents: Sequence[str]) -> str | None:
    """Read the agent a routing answer names.

    Args:
        answer: The model's answer.
        agents: The agents it could name.

    Returns:
        The agent, when the answer's first non-empty line is exactly one of
        ``agents`` (ignoring case, quotes, backticks and a final full stop);
        else ``None``.
    """
    if not answer:
        return None
    first = next((line for line in answer.splitlines() if line.strip()), "")
    cleaned = first.strip()
    for _ in range(2):  # quotes around a full stop, or a full stop after quotes
        cleaned = cleaned.strip("`'\"*").rstrip(".").strip()
    cleaned = cleaned.lower()
    by_lower = {name.lower(): name for name in agents}
    return by_lower.get(cleaned)


def routing_prompt(note_prompt: str, agents: Mapping[str, str]) -> str:
    """Lay out the routing question for one note.

    Args:
        note_prompt: The note's own prompt (topic, material, understanding).
        agents: Agent name -> description.

    Returns:
        The question.
    """
    listing = "\n".join(f"- {name}: {description}" for name, description in agents.items())
    return f"Agents:\n{listing}\n\nWhich agent should answer this note?\n\n{note_prompt}"


@hookimpl
def configure(settings: Settings, pm: pluggy.PluginManager) -> None:
    """Under ``--route model``, register the router for this command.

    Args:
        settings: The run's settings (``route``).
        pm: The plugin manager.
    """
    if settings.route == "model":
        pm.register(ModelRouter(pm), name="model-router-agent")


class ModelRouter:
    """The router of one command: its agent, ``route_notes`` and ``choose_agent``.

    Args:
        pm: The plugin manager its routing run goes through.
    """

    AGENT = "model-router"

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    @hookimpl
    def register_executors(self, register: Callable[..., None], settings: Settings) -> None:
        """Register the internal routing agent, which asks the run's model.

        Args:
            register: The registry's register function.
            settings: The run's settings (its ``model``; echo when unset).
        """
        model_id = settings.run_model
        # The same calling path as the agents' (one model look-up and one HTTP
        # client per run, our retries only); imported here, not at the top, so
        # that enabling this plugin does not import another built-in.
        from command_handlers.default_plugins.llm_agents import (  # pylint: disable=import-outside-toplevel
            run_calls,
        )

        calls = run_calls()

        async def ask(task: AsyncTask) -> dict[str, Any]:
            answer = await calls.complete(model_id, task_prompt(task), ROUTER_SYSTEM_PROMPT)
            return {**answer, "agent": self.AGENT, "model": model_id}

        register(
            self.AGENT,
            ask,
            description="Chooses the agent for each note.",
            fingerprint=model_id,
            internal=True,
        )

    @hookimpl
    def route_notes(
        self, prompts: Mapping[str, str], agents: Mapping[str, str], settings: Settings
    ) -> Awaitable[dict[str, str]]:
        """Ask the model, concurrently, which agent should answer each note.

        Args:
            prompts: Note id -> the note's prompt.
            agents: Agent name -> description.
            settings: The run's settings.

        Returns:
            An awaitable of note id -> the model's answer, for the questions that got one.
        """
        return self._route(prompts, agents, settings)

    async def _route(
        self, prompts: Mapping[str, str], agents: Mapping[str, str], settings: Settings
    ) -> dict[str, str]:
        from command_handlers.plugins import (  # pylint: disable=import-outside-toplevel
            DEFAULT_CONCURRENCY,
            AsyncTask,
            run_tasks,
        )

        tasks = [
            AsyncTask(f"route:{note_id}", self.AGENT, {"prompt": routing_prompt(prompt, agents)})
            for note_id, prompt in prompts.items()
        ]
        answers: dict[str, str] = {}
        if not tasks:
            return answers

        def keep(task_id: str, result: Any, error: str | None) -> None:
            if error is None and isinstance(result, dict):
                answers[task_id.split(":", 1)[1]] = str(result.get("text", ""))

        await run_tasks(
            tasks,
            pm=self.pm,
            max_concurrency=settings.max_concurrency or DEFAULT_CONCURRENCY,
            settings=settings,
            progress_callback=keep,
        )
        return answers

    @hookimpl
    def on_run_end(self) -> Awaitable[None] | None:
        """Close the HTTP clients of the routing run (also when ``llm-agents`` is disabled).

        Returns:
            An awaitable that closes them, when the run opened any.
        """
        from command_handlers.default_plugins.llm_agents import (  # pylint: disable=import-outside-toplevel
            finish_run,
        )

        return finish_run()

    @hookimpl(tryfirst=True)
    def choose_agent(self, context: Mapping[str, Any], agents: Sequence[str]) -> str | None:
        """Return the agent the model named for this note, if it named one.

        Args:
            context: Holds ``routed``, the model's answer for this note.
            agents: The agents it may name.

        Returns:
            The agent, or ``None`` to fall back to the next router.
        """
        return parse_choice(context.get("routed"), agents)
