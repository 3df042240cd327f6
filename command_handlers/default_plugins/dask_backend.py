"""The ``dask`` built-in: run the agents' calls on a Dask cluster (``--scheduler``).

Only the calls move. The backend that schedules the run (the ``engine``, or
whichever other plugin implements ``execute_tasks``) still decides on the
client when each task may start: a free slot of ``-m`` (never more than the
workers' slots), its dependencies succeeded, its rate allows. Only then is the
agent's executor submitted to the cluster (``Client.submit`` of a coroutine
function: it runs on a worker's event loop), so nothing waits queued on the
cluster for a slot the client no longer holds. Retries with backoff,
Retry-After pauses, rates, timeouts, fail-fast, the graceful stop, the journal
and the canvas write therefore stay in this process and behave as with the
engine; each outcome is reported the moment its future finishes.

A worker that dies mid-call has its calls run again on another worker by the
Dask scheduler; the client receives one result per task, so each note is
answered once. The per-agent limits (``max_concurrency=`` of
``register_executors``) also hold across every client of the cluster, through
one ``distributed.Semaphore`` per limited agent.

Nothing of Dask is imported unless a scheduler is asked for: without
``--scheduler`` this module only answers ``check_settings`` and ``configure``
with nothing, so an install without the ``dask`` extra works as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from command_handlers import hookimpl
from command_handlers.settings import DEFAULT_SCHEDULER_TIMEOUT, Settings

if TYPE_CHECKING:  # pragma: no cover - types only: Dask is imported only when used
    import pluggy

__all__ = [
    "LOCAL",
    "PLUGIN_NAME",
    "DaskBackend",
    "UnpicklableExecutorError",
    "check_settings",
    "configure",
    "use_dask",
]

#: ``--scheduler local``: start a cluster of this machine's cores for the command.
LOCAL = "local"
#: The name the backend object is registered under.
PLUGIN_NAME = "dask-backend"
#: Thread slots per worker of a local cluster. Agent calls are coroutines waiting
#: on the network or a program; a slot is the worker's count of calls at once,
#: so a worker takes as many as one run may start (the engine's largest ``-m``).
_LOCAL_SLOTS = 20
_INSTALL_HINT = "install the extra: pip install 'command-handlers[dask]'"

Executor = Callable[[Any], Awaitable[Any]]


class UnpicklableExecutorError(TypeError):
    """An agent's executor cannot be pickled, so it cannot travel to a worker."""


def _host_port(address: str) -> tuple[str, int]:
    """The host and port of a scheduler address (``tcp://host:port`` or ``host:port``).

    Raises:
        ValueError: Not an address with a host and a port.
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in {"tcp", "tls"} or not parts.hostname or port is None:
        raise ValueError(
            f"scheduler must be 'local' or an address such as tcp://127.0.0.1:8786, got {address!r}"
        )
    return parts.hostname, port


@hookimpl
def check_settings(settings: Settings) -> None:
    """Refuse a scheduler that is not Dask-installed, well-formed and reachable.

    The reachability probe is a plain TCP connection, bounded by
    ``settings.scheduler_timeout``, so that an unreachable scheduler refuses
    the command before any agent is called or anything is written.

    Args:
        settings: The run's settings; nothing to check without ``scheduler``.

    Raises:
        ValueError: Dask is not installed, or the address is malformed or unreachable.
    """
    address = settings.scheduler
    if address is None:
        return
    if importlib.util.find_spec("distributed") is None:
        raise ValueError(f"--scheduler {address} needs Dask: {_INSTALL_HINT}")
    if address == LOCAL:
        return
    host, port = _host_port(address)
    timeout = settings.scheduler_timeout
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ValueError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s: {why}"
        ) from None
    silence = _ask_scheduler(address, max(timeout - (time.monotonic() - started), 0.1))
    if silence is not None:
        raise ValueError(f"no Dask scheduler answers at {address} within {timeout:g} s: {silence}")


def _ask_scheduler(address: str, timeout: float) -> str | None:
    """Ask the scheduler who it is, in a loop of its own; ``None`` when it answered.

    Something else listening on the port (or a scheduler that hangs) would keep
    a client waiting past its timeout; asking here, bounded, refuses it before
    anything runs. The hook is synchronous and called before the run starts,
    so a thread with its own event loop does it.
    """
    outcome: list[str | None] = ["no answer"]

    async def ask() -> None:
        from distributed.core import rpc  # pylint: disable=import-outside-toplevel

        scheduler = rpc(address, timeout=timeout)
        try:
            await asyncio.wait_for(scheduler.identity(), timeout)
            outcome[0] = None
        except Exception as exc:  # pylint: disable=broad-exception-caught
            outcome[0] = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc)
        finally:
            await scheduler.close_rpc()

    thread = threading.Thread(target=asyncio.run, args=(ask(),), daemon=True)
    thread.start()
    thread.join(timeout + 5)
    return outcome[0]


@hookimpl
def configure(settings: Settings, pm: pluggy.PluginManager) -> None:
    """Put a :class:`DaskBackend` in front of the run's backend when a scheduler is set.

    Args:
        settings: The run's settings.
        pm: The plugin manager.
    """
    if settings.scheduler is not None:
        backend = DaskBackend(pm, settings.scheduler, timeout=settings.scheduler_timeout)
        pm.register(backend, name=PLUGIN_NAME)


#: Seconds between a worker's looks at whether the client still wants a call.
_WATCH_INTERVAL = 0.1
#: A call's states on its worker once its future is cancelled or released.
_ABANDONED = frozenset({"cancelled", "released", "forgotten"})


async def _call_agent(executor: Executor, task: Any, key: str) -> Any:
    """Run on a worker: one attempt of one task (module level, so it pickles by name).

    Dask does not cancel a running coroutine when its future is cancelled, nor
    when the client that holds it dies; the call would go on with nobody to
    answer. So the worker's call watches its own key and cancels itself as
    soon as the scheduler gives it up.
    """
    from distributed import get_worker  # pylint: disable=import-outside-toplevel

    worker = get_worker()
    call = asyncio.ensure_future(executor(task))
    try:
        while True:
            done, _ = await asyncio.wait({call}, timeout=_WATCH_INTERVAL)
            if done:
                return call.result()
            state = worker.state.tasks.get(key)
            if state is None or state.state in _ABANDONED:
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
                raise asyncio.CancelledError(f"{key} was cancelled by its client")
    finally:
        if not call.done():  # the worker itself is closing
            call.cancel()


class DaskBackend:
    """An ``execute_tasks`` plugin that sends each agent call to a Dask cluster.

    Register it on a plugin manager (:func:`use_dask` does) and every
    :func:`~command_handlers.plugins.run_tasks` on that manager runs its
    agents' calls on the cluster. The client connects on the first run and is
    closed by :meth:`close` (``unconfigure`` calls it for the command line);
    a ``client`` given here is the caller's to close.

    Args:
        pm: The plugin manager it is registered on: the next backend is asked
            through it (the engine, unless another plugin implements ``execute_tasks``).
        address: ``tcp://host:port`` of a scheduler, or :data:`LOCAL`.
        client: A connected ``distributed.Client(asynchronous=True)`` instead of an address.
        timeout: Seconds to wait for the scheduler.
        local_workers: Worker processes of a local cluster (default: one per core).

    Raises:
        ValueError: Neither or both of ``address`` and ``client``.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        address: str | None = None,
        *,
        client: Any = None,
        timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
        local_workers: int | None = None,
    ) -> None:
        if (address is None) == (client is None):
            raise ValueError("give a scheduler address or a client, not both or neither")
        self.pm = pm
        self.address = address
        self.timeout = timeout
        self.local_workers = local_workers
        self._client = client
        self._owns_client = client is None
        self._cluster: Any = None
        self._connecting: asyncio.Lock | None = None

    async def client(self) -> Any:
        """The connected ``distributed.Client``; connects (or starts the local cluster) once.

        Raises:
            OSError: The scheduler did not answer within :attr:`timeout`.
        """
        if self._client is not None:
            return self._client
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._client is None:
                self._client = await self._connect()
        return self._client

    async def _connect(self) -> Any:
        from distributed import Client, LocalCluster  # pylint: disable=import-outside-toplevel

        address: Any = self.address
        if self.address == LOCAL:
            self._cluster = await LocalCluster(
                n_workers=self.local_workers or os.cpu_count() or 1,
                threads_per_worker=_LOCAL_SLOTS,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
                asynchronous=True,
            )
            address = self._cluster
        try:
            # Bounded here too: the client's own timeout covers connecting, not
            # a peer that accepts and never answers.
            return await asyncio.wait_for(
                Client(address, asynchronous=True, timeout=self.timeout), self.timeout + 5
            )
        except (OSError, asyncio.TimeoutError) as exc:
            await self._close_cluster()
            raise OSError(
                f"cannot connect to the Dask scheduler at {self.address}"
                f" within {self.timeout:g} s: {exc}"
            ) from exc

    async def close(self) -> None:
        """Close the client this backend opened and stop its local cluster."""
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.close()
        if not self._owns_client:
            self._client = client  # the caller's client stays usable
        await self._close_cluster()

    async def _close_cluster(self) -> None:
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await cluster.close()

    async def __aenter__(self) -> DaskBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.pm.is_registered(self):
            self.pm.unregister(self)
        await self.close()

    @hookimpl
    async def unconfigure(self) -> None:
        """The command is over: close the client and stop a local cluster."""
        await self.close()

    @hookimpl(tryfirst=True)
    def execute_tasks(
        self,
        tasks: Any,
        executor: Any,
        dependency_aware: bool,
        max_concurrency: int,
        dependency_limit: int,
        agent_limits: Mapping[str, int],
        progress_callback: Any,
        start_callback: Any,
        end_callback: Any,
        policy: Any,
    ) -> Awaitable[dict[str, Any]]:
        """Run the tasks with the next backend, each agent call on the cluster.

        Args:
            tasks: The tasks.
            executor: Routes a task to its agent (``prepare_task`` and cached
                answers stay here; the agent's own executor goes to a worker).
            dependency_aware: Use the dependency-aware mode.
            max_concurrency: The run's limit, across the whole cluster.
            dependency_limit: The dependency-aware mode's limit.
            agent_limits: Per-agent limits, across every client of the cluster.
            progress_callback: Told of each finished task.
            start_callback: Told of each started task.
            end_callback: Told of each task's outcome as it finishes.
            policy: Timeouts, retries, rates, fail-fast and stop (all on the client).

        Returns:
            The run, to be awaited for the summary.
        """
        arguments = {
            "tasks": tasks,
            "executor": executor,
            "dependency_aware": dependency_aware,
            "max_concurrency": max_concurrency,
            "dependency_limit": dependency_limit,
            "agent_limits": agent_limits,
            "progress_callback": progress_callback,
            "start_callback": start_callback,
            "end_callback": end_callback,
            "policy": policy,
        }
        return self._run(arguments)

    async def _run(self, arguments: dict[str, Any]) -> dict[str, Any]:
        from command_handlers.plugins import (  # pylint: disable=import-outside-toplevel
            offloading,
        )

        nxt = self.pm.subset_hook_caller("execute_tasks", remove_plugins=[self])
        client = await self.client()
        calls = _Calls(client, _agents(arguments["tasks"]))
        try:
            await calls.limit_agents(arguments["agent_limits"])
            # A call beyond the workers' slots would wait queued on the scheduler,
            # where it could start after the command stopped: the backend starts
            # no more at once than the cluster runs; the rest wait here, unstarted.
            slots = await _slots(client)
            for limit in ("max_concurrency", "dependency_limit"):
                if 0 < slots < arguments[limit]:
                    arguments[limit] = slots
            # Entered in this task before the backend creates its own tasks,
            # which copy its context: only this run's calls go to the cluster.
            with offloading(calls.call):
                pending = nxt(**arguments)
                if pending is None:
                    raise RuntimeError("no plugin but 'dask' implements execute_tasks")
                return dict(await pending)
        finally:
            await calls.finish()


async def _slots(client: Any) -> int:
    """How many calls the cluster's workers run at once (their threads, summed)."""
    return sum((await client.nthreads()).values())


def _agents(tasks: Iterable[Any]) -> set[str]:
    return {task.agent_name for task in tasks}


class _Calls:
    """One run's calls on the cluster: submit, await, cancel what is left."""

    def __init__(self, client: Any, agents: set[str]) -> None:
        self.client = client
        self.agents = agents
        self.futures: set[Any] = set()
        self.semaphores: dict[str, Any] = {}
        self.checked: dict[str, UnpicklableExecutorError | None] = {}
        self.cancelling: set[asyncio.Future[Any]] = set()

    async def limit_agents(self, limits: Mapping[str, int]) -> None:
        """One cluster-wide ``distributed.Semaphore`` per limited agent of this run."""
        from distributed import Semaphore  # pylint: disable=import-outside-toplevel

        for agent, limit in limits.items():
            if agent in self.agents:
                self.semaphores[agent] = await Semaphore(
                    max_leases=limit,
                    name=f"command-handlers-agent-{agent}",
                    scheduler_rpc=self.client.scheduler,
                    loop=self.client.loop,
                )

    def check(self, agent: str, executor: Executor) -> None:
        """Fail every call of an agent whose executor cannot travel, naming the agent."""
        if agent not in self.checked:
            import cloudpickle  # pylint: disable=import-outside-toplevel

            try:
                cloudpickle.dumps(executor)
                self.checked[agent] = None
            except Exception as exc:  # pylint: disable=broad-exception-caught
                self.checked[agent] = UnpicklableExecutorError(
                    f"agent {agent!r} cannot run on the Dask cluster: its executor"
                    f" ({type(executor).__qualname__}) cannot be pickled:"
                    f" {type(exc).__name__}: {exc}"
                )
        error = self.checked[agent]
        if error is not None:
            raise error

    async def call(self, executor: Executor, task: Any) -> Any:
        """One attempt of ``task`` on a worker; what it returns or raises comes back here."""
        agent = task.agent_name
        self.check(agent, executor)
        semaphore = self.semaphores.get(agent)
        if semaphore is not None:
            await semaphore.acquire()
        try:
            return await self._submit(executor, task, agent)
        finally:
            if semaphore is not None:
                self._later(semaphore.release())

    async def _submit(self, executor: Executor, task: Any, agent: str) -> Any:
        key = f"{agent}-{task.task_id}-{uuid.uuid4().hex[:8]}"
        future = self.client.submit(_call_agent, executor, task, key, key=key, pure=False)
        self.futures.add(future)
        try:
            return await future
        except asyncio.CancelledError:
            # A timeout, fail-fast, the stop's grace, or the run cancelled:
            # the call must not go on (or start) on the cluster.
            self._cancel([future])
            raise
        finally:
            self.futures.discard(future)

    def _cancel(self, futures: list[Any]) -> None:
        if futures:
            self._later(self.client.cancel(futures, force=True))

    def _later(self, pending: Awaitable[Any]) -> None:
        """Run a cleanup call even while this coroutine is being cancelled."""
        cleanup = asyncio.ensure_future(pending)
        self.cancelling.add(cleanup)
        cleanup.add_done_callback(self.cancelling.discard)

    async def finish(self) -> None:
        """Cancel the calls still on the cluster and wait for every cleanup call."""
        self._cancel(list(self.futures))
        self.futures.clear()
        while self.cancelling:
            await asyncio.gather(*self.cancelling, return_exceptions=True)
        for semaphore in self.semaphores.values():
            with contextlib.suppress(Exception):
                await semaphore.close()


def use_dask(
    pm: pluggy.PluginManager,
    address: str | None = None,
    *,
    client: Any = None,
    timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
    local_workers: int | None = None,
) -> DaskBackend:
    """Run every ``run_tasks`` on ``pm`` on a Dask cluster, from a program.

    ``async with use_dask(pm, "tcp://127.0.0.1:8786"):`` registers the backend
    and, on leaving, unregisters it and closes the client it opened.

    Args:
        pm: The plugin manager the runs use.
        address: ``tcp://host:port`` of a scheduler, or ``"local"``.
        client: A connected ``distributed.Client(asynchronous=True)`` instead.
        timeout: Seconds to wait for the scheduler.
        local_workers: Worker processes of a local cluster (default: one per core).

    Returns:
        The registered :class:`DaskBackend`.
    """
    backend = DaskBackend(pm, address, client=client, timeout=timeout, local_workers=local_workers)
    pm.register(backend, name=PLUGIN_NAME)
    return backend
