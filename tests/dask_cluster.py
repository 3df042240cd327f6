"""Helpers of the tests that run on a real Dask cluster (the fixtures are in conftest.py).

Importing this module skips the importer when ``distributed`` is not installed.
"""

from __future__ import annotations

import os

import pytest

distributed = pytest.importorskip("distributed")

__all__ = ["distributed", "worker_pids"]


def worker_pids(address: str) -> set[int]:
    """The process ids of the cluster's workers."""
    with distributed.Client(address, timeout=20) as client:
        return set(client.run(os.getpid).values())
