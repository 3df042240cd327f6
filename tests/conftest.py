"""Fixtures of every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_scheduler_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's ``COMMAND_HANDLERS_SCHEDULER`` must not send the tests to a cluster."""
    monkeypatch.delenv("COMMAND_HANDLERS_SCHEDULER", raising=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A real Dask cluster: a scheduler in this process, two worker processes of 8 slots.

    One per test module that asks for it; skips where ``distributed`` is missing.
    """
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=8,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    ) as local:
        yield local


@pytest.fixture
def address(cluster: Any) -> str:
    """The scheduler's address, once both workers are up (after a test killed one)."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(cluster.scheduler_address, timeout=20) as client:
        client.wait_for_workers(2, timeout=30)
    return str(cluster.scheduler_address)


@pytest.fixture
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``llm`` home (``LLM_USER_PATH``): no plugin, no key, no config from outside."""
    home = tmp_path / "llm-home"
    home.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    monkeypatch.setenv("COMMAND_HANDLERS_LOAD_PLUGINS", "")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("INTELLIGENT_PARALLEL_CONFIG", raising=False)
    return home
