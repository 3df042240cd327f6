"""Benchmark of the ``dask`` backend against the engine alone, on the same tasks.

Runs N tasks (default 400) of an async agent that sleeps ``--latency``
seconds (default 0.25), from a plugin module loaded as ``-p`` would load it,
through :func:`command_handlers.plugins.run_tasks` at ``-m`` (default 20):

* **engine**: in this process, the built-in ``engine`` backend;
* **dask**: the same run with the ``dask`` backend on a local cluster of
  ``--workers`` (default 2) worker processes (one ``distributed.LocalCluster``,
  started once and not timed; its start-up time is reported apart).

For each: the makespan, its ratio to the bound ``ceil(N / m) * latency``
(target for dask: at most 1.25x), and the overhead per task, ``(makespan -
bound) / ceil(N / m)``: how much longer than the agent's own latency each task
held its slot, on average. Best of ``--repeats`` (default 3), runs interleaved.

Usage::

    python benchmarks/bench_dask.py [--tasks 400] [--latency 0.25] [--limit 20]
                                    [--workers 2] [--repeats 3] [--json FILE]

Needs ``pip install -e '.[dask]'``. The exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from command_handlers.plugins import AsyncTask, get_plugin_manager, run_tasks  # noqa: E402

PLUGIN_MODULE = "bench_dask_sleeper"
PLUGIN_SOURCE = '''\
"""A -p plugin: one agent that sleeps for the task's latency and answers."""

import asyncio

from command_handlers import hookimpl


class Sleeper:
    async def __call__(self, task):
        await asyncio.sleep(task.node_data["latency"])
        return {"text": task.task_id}


@hookimpl
def register_executors(register):
    register("sleeper", Sleeper(), description="sleeps, then answers")
'''
#: Only the engine and the plugin under test: no journal, display or real agents.
DISABLED = ["llm-agents", "command-agent", "journal", "progress", "model-router"]


def plugin_folder() -> Path:
    """Write the plugin module where this process and the workers import it from."""
    folder = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    (folder / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE, encoding="utf-8")
    sys.path.insert(0, str(folder))
    # Worker processes are started after this: they find the module too.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return folder


async def one_run(count: int, latency: float, limit: int, address: str | None) -> float:
    """The makespan of one run, with the dask backend when ``address`` is given."""
    pm = get_plugin_manager(load_entry_points=False, disabled=DISABLED, plugins=[PLUGIN_MODULE])
    tasks = [AsyncTask(f"t{i}", "sleeper", {"latency": latency}) for i in range(count)]
    if address is None:
        started = time.perf_counter()
        summary = await run_tasks(tasks, pm=pm, max_concurrency=limit)
        elapsed = time.perf_counter() - started
    else:
        from command_handlers.default_plugins.dask_backend import (
            use_dask,
        )

        async with use_dask(pm, address) as backend:
            await backend.client()  # connected before the clock starts, as in a command
            started = time.perf_counter()
            summary = await run_tasks(tasks, pm=pm, max_concurrency=limit)
            elapsed = time.perf_counter() - started
    assert summary["success"] == count, summary["errors"][:3]
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    import distributed  # the extra is needed only here

    plugin_folder()
    started = time.perf_counter()
    with distributed.LocalCluster(
        n_workers=args.workers,
        threads_per_worker=args.limit,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        startup = time.perf_counter() - started
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for runner, address in (("engine", None), ("dask", cluster.scheduler_address)):
                elapsed = asyncio.run(one_run(args.tasks, args.latency, args.limit, address))
                best[runner] = min(best.get(runner, math.inf), elapsed)
    waves = math.ceil(args.tasks / args.limit)
    bound = waves * args.latency
    rows: list[dict[str, Any]] = []
    for runner, makespan in best.items():
        rows.append(
            {
                "runner": runner,
                "makespan_s": round(makespan, 3),
                "bound_s": bound,
                "ratio": round(makespan / bound, 3),
                "overhead_per_task_ms": round((makespan - bound) / waves * 1000, 2),
            }
        )
    print(
        f"{args.tasks} tasks of {args.latency:g} s at -m {args.limit};"
        f" local cluster of {args.workers} worker processes (start-up {startup:.2f} s,"
        f" not timed); best of {args.repeats}; {os.cpu_count()} cores,"
        f" CPython {platform.python_version()}"
    )
    print(f"{'runner':<8} {'makespan':>10} {'bound':>8} {'ratio':>7} {'overhead/task':>14}  target")
    for row in rows:
        target = ""
        if row["runner"] == "dask":
            verdict = "PASS" if row["ratio"] <= 1.25 else "FAIL"
            target = f"<= 1.25x bound: {verdict}"
        print(
            f"{row['runner']:<8} {row['makespan_s']:>9.3f}s {bound:>7.2f}s"
            f" {row['ratio']:>6.3f}x {row['overhead_per_task_ms']:>11.2f} ms  {target}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"startup_s": startup, "rows": rows, "args": vars(args)}, indent=2),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
