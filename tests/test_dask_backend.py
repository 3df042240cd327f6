"""The ``dask`` plugin on a real cluster: a scheduler and two worker processes on 127.0.0.1.

One cluster serves the whole module (starting one costs seconds); the test
that kills a worker runs last, and the nanny starts a new one after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Callable

import pytest
from dask_cluster import worker_pids

cloudpickle = pytest.importorskip("cloudpickle")

from command_handlers import hookimpl  # noqa: E402
from command_handlers.default_plugins.dask_backend import (  # noqa: E402
    PLUGIN_NAME,
    DaskBackend,
    check_settings,
    use_dask,
)
from command_handlers.plugins import (  # noqa: E402
    AsyncTask,
    RetryPolicy,
    RunPolicy,
    get_plugin_manager,
    run_tasks,
)
from command_handlers.settings import Settings  # noqa: E402

pytestmark = pytest.mark.timeout(60)

# Worker processes cannot import this test module: its agents travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Sleeper:
    """An agent that sleeps and says in which process, and when, it ran."""

    def __init__(self, seconds: float, fail_first: Path | None = None) -> None:
        self.seconds = seconds
        self.fail_first = fail_first

    async def __call__(self, task: AsyncTask) -> dict[str, Any]:
        started = time.time()
        if self.fail_first is not None:
            marker = self.fail_first / task.task_id
            if not marker.exists():  # the first attempt, in whichever process
                marker.write_text("failed once", encoding="utf-8")
                raise ConnectionError("the first attempt fails")
        await asyncio.sleep(float(task.node_data.get("seconds", self.seconds)))
        return {"pid": os.getpid(), "started": started, "ended": time.time()}


class Agents:
    """A plugin registering ``sleepy`` (and ``limited``, at most 2 at once)."""

    def __init__(self, executor: Any, limit: int | None = None) -> None:
        self.executor = executor
        self.limit = limit

    @hookimpl
    def register_executors(self, register: Any) -> None:
        register("sleepy", self.executor, self.limit)


class Ends:
    """An ``on_task_end`` (and ``on_task_retry``) listener, on the client."""

    def __init__(self) -> None:
        self.outcomes: dict[str, list[Any]] = {}
        self.retries: list[str] = []
        self.pid = os.getpid()

    @hookimpl
    def on_task_end(self, task: AsyncTask, outcome: Any) -> None:
        assert os.getpid() == self.pid
        self.outcomes.setdefault(task.task_id, []).append(outcome)

    @hookimpl
    def on_task_retry(self, task: AsyncTask) -> None:
        self.retries.append(task.task_id)


def plugin_manager(executor: Any, limit: int | None = None) -> tuple[Any, Ends]:
    pm = get_plugin_manager(
        load_entry_points=False, disabled=["llm-agents", "command-agent", "journal", "progress"]
    )
    pm.register(Agents(executor, limit), name="agents")
    ends = Ends()
    pm.register(ends, name="ends")
    return pm, ends


async def processing(client: Any) -> int:
    """How many calls the scheduler sees running on the workers."""
    return sum(len(keys) for keys in (await client.processing()).values())


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    """Poll the cluster (it has no event to wait on) until ``condition`` holds."""
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "the cluster never got there"
        await asyncio.sleep(0.05)


async def running(client: Any, count: int) -> bool:
    return await processing(client) == count


def files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def most_at_once(results: list[dict[str, Any]]) -> int:
    events = sorted(
        [(r["started"], 1) for r in results] + [(r["ended"], -1) for r in results],
        key=lambda event: (event[0], event[1]),
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def tasks(count: int, **data: Any) -> list[AsyncTask]:
    return [AsyncTask(f"t{i:03d}", "sleepy", dict(data)) for i in range(count)]


async def test_calls_run_on_the_workers_within_the_run_limit(address: str) -> None:
    pm, ends = plugin_manager(Sleeper(0.1))
    async with use_dask(pm, address):
        summary = await run_tasks(tasks(24), pm=pm, max_concurrency=3)
    assert summary["success"] == 24
    results = summary["results"]
    assert {r["pid"] for r in results} <= worker_pids(address)
    assert os.getpid() not in {r["pid"] for r in results}
    assert most_at_once(results) <= 3
    assert {task_id: len(seen) for task_id, seen in ends.outcomes.items()} == {
        task.task_id: 1 for task in tasks(24)
    }
    assert pm.get_plugin(PLUGIN_NAME) is None  # use_dask unregistered it


async def test_agent_limits_hold_across_the_cluster(address: str) -> None:
    pm, _ = plugin_manager(Sleeper(0.1), limit=2)
    async with use_dask(pm, address):
        summary = await run_tasks(tasks(10), pm=pm, max_concurrency=8)
    assert summary["success"] == 10
    assert most_at_once(summary["results"]) <= 2


async def test_retries_stay_on_the_client(address: str, tmp_path: Path) -> None:
    pm, ends = plugin_manager(Sleeper(0.01, fail_first=tmp_path))
    policy = RunPolicy(retry=RetryPolicy(retries=2, base_delay=0.01, max_delay=0.02))
    async with use_dask(pm, address):
        summary = await run_tasks(tasks(4), pm=pm, max_concurrency=4, policy=policy)
    assert summary["success"] == 4
    assert sorted(ends.retries) == [task.task_id for task in tasks(4)]
    assert all(seen[0].attempts == 2 for seen in ends.outcomes.values())


async def test_dependencies_keep_their_order(address: str) -> None:
    pm, _ = plugin_manager(Sleeper(0.05))
    chain = [
        AsyncTask("a", "sleepy", {}),
        AsyncTask("b", "sleepy", {}, dependencies=["a"]),
        AsyncTask("c", "sleepy", {}, dependencies=["b"]),
    ]
    async with use_dask(pm, address):
        summary = await run_tasks(chain, pm=pm, dependency_aware=True)
    first, second, third = summary["results"]
    assert first["ended"] <= second["started"]
    assert second["ended"] <= third["started"]


async def test_an_executor_that_cannot_be_pickled_fails_naming_its_agent(address: str) -> None:
    lock = threading.Lock()

    async def holds_a_lock(task: AsyncTask) -> dict[str, Any]:
        with lock:
            return {}

    pm, ends = plugin_manager(holds_a_lock)
    async with use_dask(pm, address):
        summary = await run_tasks(tasks(2), pm=pm)
    assert summary["failed"] == 2
    outcome = ends.outcomes["t000"][0]
    assert outcome.error_type == "UnpicklableExecutorError"
    assert "agent 'sleepy' cannot run on the Dask cluster" in outcome.error
    assert outcome.attempts == 1


async def test_internal_agents_run_in_this_process(address: str) -> None:
    lock = threading.Lock()

    async def helper(task: AsyncTask) -> dict[str, Any]:
        with lock:  # cannot be pickled: it would fail on the cluster
            return {"pid": os.getpid()}

    class Helper:
        @hookimpl
        def register_executors(self, register: Any) -> None:
            register("helper", helper, internal=True)

    pm, _ = plugin_manager(Sleeper(0))
    pm.register(Helper(), name="helper")
    async with use_dask(pm, address):
        summary = await run_tasks([AsyncTask("h", "helper", {})], pm=pm)
    assert summary["results"] == [{"pid": os.getpid()}]


async def test_a_stop_starts_no_new_call_and_lets_running_ones_finish(address: str) -> None:
    pm, ends = plugin_manager(Sleeper(0.5))
    stop = asyncio.Event()
    policy = RunPolicy(stop=stop, stop_grace=5)
    async with use_dask(pm, address) as backend:
        run = asyncio.ensure_future(run_tasks(tasks(12), pm=pm, max_concurrency=3, policy=policy))
        await asyncio.sleep(0.3)
        stop.set()
        stopped = time.time()
        summary = await run
        client = await backend.client()
        assert await processing(client) == 0
    assert summary["success"] == 3
    assert summary["cancelled"] == 9
    assert all(r["started"] < stopped for r in summary["results"])
    assert sum(len(seen) for seen in ends.outcomes.values()) == 12


class Marker:
    """Sleeps, then writes a file: the file says the call was not cancelled."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def __call__(self, task: AsyncTask) -> dict[str, Any]:
        await asyncio.sleep(float(task.node_data.get("seconds", 1.5)))
        (self.folder / task.task_id).write_text("finished", encoding="utf-8")
        return {}


async def test_a_timed_out_call_stops_on_its_worker(address: str, tmp_path: Path) -> None:
    pm, ends = plugin_manager(Marker(tmp_path))
    async with use_dask(pm, address):
        summary = await run_tasks(tasks(2), pm=pm, policy=RunPolicy(task_timeout=0.3))
        await asyncio.sleep(1.8)
    assert summary["failed"] == 2
    assert ends.outcomes["t000"][0].error_type == "TaskTimeoutError"
    assert files(tmp_path) == []


async def test_the_limit_is_the_workers_slots_and_a_stop_starts_none_beyond(
    address: str,
) -> None:
    pm, ends = plugin_manager(Sleeper(0.6))
    stop = asyncio.Event()
    policy = RunPolicy(stop=stop, stop_grace=5)
    async with use_dask(pm, address):  # two workers of 8 slots: 16 calls at once
        run = asyncio.ensure_future(run_tasks(tasks(20), pm=pm, max_concurrency=20, policy=policy))
        await asyncio.sleep(0.3)
        stop.set()
        stopped = time.time()
        summary = await run
    assert summary["success"] == 16
    assert summary["cancelled"] == 4
    assert all(r["started"] < stopped for r in summary["results"])
    assert most_at_once(summary["results"]) <= 16
    assert sum(len(seen) for seen in ends.outcomes.values()) == 20


async def test_cancelling_the_run_cancels_every_future(address: str, tmp_path: Path) -> None:
    pm, _ = plugin_manager(Marker(tmp_path))
    async with use_dask(pm, address) as backend:
        run = asyncio.ensure_future(run_tasks(tasks(4), pm=pm, max_concurrency=4))
        client = await backend.client()
        await until(lambda: running(client, 4))
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        await until(lambda: running(client, 0))
        await asyncio.sleep(1.6)
    assert files(tmp_path) == []


def test_a_backend_needs_an_address_or_a_client() -> None:
    pm, _ = plugin_manager(Sleeper(0))
    with pytest.raises(ValueError, match="address or a client"):
        DaskBackend(pm)


def test_an_unreachable_scheduler_is_refused_naming_it() -> None:
    started = time.monotonic()
    with pytest.raises(
        ValueError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        check_settings(Settings(scheduler="tcp://127.0.0.1:9", scheduler_timeout=2))
    assert time.monotonic() - started < 3
    with pytest.raises(ValueError, match="scheduler must be 'local' or an address"):
        check_settings(Settings(scheduler="http://nowhere"))


def test_a_port_where_no_scheduler_answers_is_refused_in_bounded_time(address: str) -> None:
    check_settings(Settings(scheduler=address, scheduler_timeout=5))  # a real one passes
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(
            ValueError, match=rf"no Dask scheduler answers at tcp://127\.0\.0\.1:{port} within 1 s"
        ):
            check_settings(Settings(scheduler=f"tcp://127.0.0.1:{port}", scheduler_timeout=1))
    assert time.monotonic() - started < 3


def test_without_a_scheduler_nothing_of_dask_is_imported() -> None:
    code = (
        "import sys\n"
        "from command_handlers.cli import main\n"
        "assert main(['--list-plugins']) == 0\n"
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "dask             built-in     command_handlers.default_plugins.dask_backend" in (
        done.stdout
    )


async def test_a_worker_killed_mid_run_has_its_calls_run_again(address: str) -> None:
    pm, ends = plugin_manager(Sleeper(1.0))
    async with use_dask(pm, address) as backend:
        run = asyncio.ensure_future(run_tasks(tasks(8), pm=pm, max_concurrency=8))
        client = await backend.client()
        await until(lambda: running(client, 8))
        pids = await client.run(os.getpid)
        busy = [w for w, keys in (await client.processing()).items() if keys]
        victim = pids[busy[0]]
        os.kill(victim, signal.SIGKILL)
        summary = await run
    assert summary["success"] == 8
    assert victim not in {r["pid"] for r in summary["results"]}
    assert {task_id: len(seen) for task_id, seen in ends.outcomes.items()} == {
        task.task_id: 1 for task in tasks(8)
    }
