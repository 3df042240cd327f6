"""``--route model``: the model picks the agent for each note from the agents' descriptions.

One short call per note, run concurrently through the facade like any other
task. The answer must name an agent (alone on its first line, quotes and
backticks allowed); anything else falls back to the colour map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable

import llm
import pluggy

from command_handlers import hookimpl
from command_handlers.default_plugins.llm_agents import run_model_id, task_prompt
from command_handlers.settings import Settings

if TYPE_CHECKING:
    from command_handlers.plugins import AsyncTask


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


class ModelRouter:
    """A plugin: registers the routing agent and chooses by its answers."""

    AGENT = "model-router"

    @hookimpl
    def register_executors(self, register: Callable[..., None], settings: Settings) -> None:
        """Register the routing agent, which asks the run's model.

        Args:
            register: The registry's register function.
            settings: The run's settings (its ``model``; echo when unset).
        """
        model_id = run_model_id(settings)

        async def ask(task: AsyncTask) -> dict[str, Any]:
            response = llm.get_async_model(model_id).prompt(
                task_prompt(task), system=ROUTER_SYSTEM_PROMPT
            )
            return {"text": await response.text(), "agent": self.AGENT, "model": model_id}

        register(self.AGENT, ask, description="Chooses the agent for each note.")

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

    @classmethod
    async def route(
        cls,
        prompts: Mapping[str, str],
        *,
        pm: pluggy.PluginManager,
        settings: Settings,
        max_concurrency: int,
    ) -> dict[str, str]:
        """Ask the model, concurrently, which agent should answer each note.

        Args:
            prompts: Note id -> the note's prompt.
            pm: The plugin manager (with this plugin registered).
            settings: The run's settings.
            max_concurrency: How many questions at once.

        Returns:
            Note id -> the model's answer, for the questions that got one.
        """
        from command_handlers.plugins import (  # pylint: disable=import-outside-toplevel
            AsyncTask,
            collect_executors,
            run_tasks,
        )

        described = collect_executors(pm, settings).describe()
        described.pop(cls.AGENT, None)
        tasks = [
            AsyncTask(f"route:{note_id}", cls.AGENT, {"prompt": routing_prompt(prompt, described)})
            for note_id, prompt in prompts.items()
        ]
        answers: dict[str, str] = {}

        def keep(task_id: str, result: Any, error: str | None) -> None:
            if error is None and isinstance(result, dict):
                answers[task_id.split(":", 1)[1]] = str(result.get("text", ""))

        await run_tasks(
            tasks, pm=pm, max_concurrency=max_concurrency, settings=settings, progress_callback=keep
        )
        return answers
