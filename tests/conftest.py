"""Fixtures of every test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_scheduler_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's ``COMMAND_HANDLERS_SCHEDULER`` must not send the tests to a cluster."""
    monkeypatch.delenv("COMMAND_HANDLERS_SCHEDULER", raising=False)
