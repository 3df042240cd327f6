"""Benchmark of the command against an OpenAI-compatible server, through the real ``llm`` plugin.

Measures the ``intelligent-parallel`` command line (a subprocess, as a user
runs it) answering a generated canvas of N notes (default 500) at ``-m 20``
through ``llm``'s own OpenAI plugin, against the test suite's chat-completions
server (``tests/llm_server.py``, on 127.0.0.1) answering every request after a
fixed latency (default 0.2 s), streaming, with usage. The model is declared in
``extra-openai-models.yaml`` under a temporary ``LLM_USER_PATH``.

Figures of ``--repeats`` runs (default 5): the best (the run with the lowest
makespan / bound, and the lowest CPU per request) and the median:

* **start-up**: wall time and CPU of ``--dry-run`` on the same canvas
  (interpreter, imports, reading the canvas, the plan; no call);
* **makespan / bound**: (run wall time - start-up) / bound, where bound =
  ``ceil(N / m) x latency``. Goal: at most 1.3;
* **CPU per request**: (the run's CPU, user + system - the dry run's) / the
  requests the server got. Goal: at most 3 ms;
* the server's count of requests, the maximum in flight, the connections
  the client opened, and the mean time from a request's arrival to its answer.

Usage::

    python benchmarks/bench_provider.py [--notes 500] [--latency 0.2]
                                        [--concurrency 20] [--repeats 3]
                                        [--quick] [--json FILE] [--no-journal]
                                        [--model local-chat|local-nostream]

``--quick`` is a smoke run: 100 notes, one repeat. The exit status is 0
whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import LlmServer, declare_models, notes_canvas, running  # noqa: E402

KEY = "sk-bench"
MAKESPAN_GOAL = 1.3
CPU_GOAL_MS = 3.0


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a child process: (wall seconds, CPU seconds of the child, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=600, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if completed.returncode != 0:
        raise SystemExit(f"{argv} exited {completed.returncode}:\n{completed.stderr[-3000:]}")
    return wall, cpu, completed.stderr


def one_run(
    server: LlmServer, home: Path, notes: int, concurrency: int, extra: list[str], model: str
) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(dir=home))
    canvas = folder / "notes.canvas"
    notes_canvas(canvas, notes, columns=25)
    env = {**os.environ, "LLM_USER_PATH": str(home), "COMMAND_HANDLERS_LOAD_PLUGINS": ""}
    env.pop("OPENAI_API_KEY", None)
    cli = [sys.executable, "-m", "command_handlers.cli", str(canvas), "--model", model]
    start_wall, start_cpu, _ = timed([*cli, "--dry-run", "-q"], env)
    server.requests.clear()
    server.max_in_flight = 0
    server.connections = 0
    wall, cpu, _ = timed([*cli, "--auto", "-q", "-m", str(concurrency), *extra], env)
    requests = len(server.requests)
    served = [request.answered - request.arrived for request in server.requests]
    return {
        "served_ms": sum(served) / max(len(served), 1) * 1000,
        "startup_s": start_wall,
        "startup_cpu_s": start_cpu,
        "wall_s": wall,
        "cpu_s": cpu,
        "requests": requests,
        "max_in_flight": server.max_in_flight,
        "connections": server.connections,
        "cpu_ms_per_request": (cpu - start_cpu) / max(requests, 1) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument(
        "--model",
        default="local-chat",
        choices=("local-chat", "local-nostream"),
        help="local-nostream is declared can_stream: false: plain, not streamed, answers",
    )
    parser.add_argument(
        "--no-journal", action="store_true", help="run without the journal (for comparison)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.notes, args.repeats = 100, 1
    bound = math.ceil(args.notes / args.concurrency) * args.latency
    runs = []
    with tempfile.TemporaryDirectory() as tmp, running(latency=args.latency, api_key=KEY) as server:
        home = Path(tmp)
        declare_models(home, server, KEY)
        for _ in range(args.repeats):
            extra = ["--no-journal"] if args.no_journal else []
            runs.append(one_run(server, home, args.notes, args.concurrency, extra, args.model))
    for run in runs:
        run["ratio"] = (run["wall_s"] - run["startup_s"]) / bound
    best = min(runs, key=lambda run: run["ratio"])
    cpu = min(run["cpu_ms_per_request"] for run in runs)
    cpu_median = statistics.median(run["cpu_ms_per_request"] for run in runs)
    ratio_median = statistics.median(run["ratio"] for run in runs)
    ratio = best["ratio"]
    print(
        f"{args.notes} notes, latency {args.latency:g} s, -m {args.concurrency};"
        f" {platform.python_implementation()} {platform.python_version()},"
        f" {os.cpu_count()} CPUs; best of {args.repeats}"
        + ("; --no-journal" if args.no_journal else "")
        + (f"; {args.model}" if args.model != "local-chat" else "")
    )
    print(
        f"  start-up (--dry-run)   {best['startup_s']:.2f} s wall,"
        f" {best['startup_cpu_s']:.2f} s CPU"
    )
    print(f"  run                    {best['wall_s']:.2f} s wall, {best['cpu_s']:.2f} s CPU")
    print(
        f"  makespan / bound       {ratio:.2f}, median {ratio_median:.2f}"
        f"  (bound {bound:.1f} s; goal <= {MAKESPAN_GOAL})"
    )
    print(
        f"  CPU per request        {cpu:.2f} ms, median {cpu_median:.2f} ms"
        f"  (goal <= {CPU_GOAL_MS:g} ms)"
    )
    print(
        f"  server                 {best['requests']} requests, {best['max_in_flight']} at most"
        f" in flight, {best['connections']} connections,"
        f" {best['served_ms']:.1f} ms per answer"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "bound_s": bound,
                    "ratio": ratio,
                    "ratio_median": ratio_median,
                    "cpu_ms": cpu,
                    "cpu_ms_median": cpu_median,
                    "runs": runs,
                },
                indent=2,
            ),
            "utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
