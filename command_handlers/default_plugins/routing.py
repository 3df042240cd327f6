"""The default router: a canvas colour -> agent map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from command_handlers import hookimpl
from command_handlers.settings import DEFAULT_COLOR_MAP, Settings

#: The colour of the learner's own-understanding note, whose agent is the fallback.
NOTE_COLOR = "6"


@hookimpl(trylast=True)
def choose_agent(
    node: Mapping[str, Any], context: Mapping[str, Any], agents: Sequence[str]
) -> str | None:
    """Pick the agent the colour map names for the node's colour.

    A colour the map does not name gets the agent of colour "6" (the
    learner's note), and failing that the first agent of the map.

    Args:
        node: The canvas node.
        context: Holds ``settings`` (a :class:`Settings`) with the colour map.
        agents: The registered agents (not consulted: a name the map gives that
            nobody registered is reported by the caller).

    Returns:
        The agent name, or ``None`` when the map is empty.
    """
    del agents
    settings = context.get("settings")
    color_map = settings.color_map if isinstance(settings, Settings) else DEFAULT_COLOR_MAP
    by_color = {key.lower(): agent for key, agent in color_map.items()}
    color = node.get("color")
    if isinstance(color, str) and color.lower() in by_color:
        return by_color[color.lower()]
    if NOTE_COLOR in color_map:
        return color_map[NOTE_COLOR]
    return next(iter(color_map.values()), None)
