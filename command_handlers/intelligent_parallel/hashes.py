"""What an answer depends on, hashed: a changed input answers the note again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from command_handlers.agent_definitions import AgentDefinition, load_agents
from command_handlers.intelligent_parallel.notes import Note
from command_handlers.settings import Settings

__all__ = ["InputHashes"]


class InputHashes:
    """Hash agent, note, material, what answers, the agent's definition and prerequisites.

    Args:
        settings: The run's settings (where the agent definitions are).
        fingerprints: Agent -> what answers for it (a model id, a command
            line), as its plugin registered it; an agent without one uses
            ``settings.run_model``.
    """

    def __init__(self, settings: Settings, fingerprints: Mapping[str, str | None]) -> None:
        self.settings = settings
        self.fingerprints = fingerprints
        self.memo: dict[tuple[str, str], str] = {}
        try:
            self.definitions: Mapping[str, AgentDefinition] = load_agents(settings.agents_dirs)
        except ValueError:  # reported when the agents were registered
            self.definitions = {}

    def of(self, note: Note, agent: str, notes: Mapping[str, Note] | None = None) -> str:
        """The hash of what the agent's answer to the note depends on.

        With ``--follow-edges`` that includes what the notes it builds on depend
        on (their answers are in its prompt), so a changed prerequisite makes
        its dependents change too.

        Args:
            note: The note.
            agent: The agent.
            notes: Every selected note, to follow ``note.after``.

        Returns:
            A hex SHA-256.
        """
        key = (note.node_id, agent)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = ""  # a cycle is refused later; do not recurse forever meanwhile
        chain = notes or {}
        prerequisites = sorted(
            self.of(chain[earlier], earlier_agent, chain)
            for earlier in note.after
            if earlier in chain
            for earlier_agent in chain[earlier].agents
        )
        definition = self.definitions.get(agent)
        payload = [
            agent,
            note.text,
            # The edge labels are in the prompt too; the file's order is not.
            sorted([item.label, item.text] for item in note.material),
            self.fingerprints.get(agent) or self.settings.run_model,
            definition.fingerprint if definition else "",
            prerequisites,
        ]
        digest = hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()
        self.memo[key] = digest
        return digest
