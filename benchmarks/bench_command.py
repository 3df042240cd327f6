"""Benchmark of the ``/intelligent-parallel`` command: start-up, cost per note, makespan, I/O.

Measures, in one run of this script (``--only`` picks sections):

1. ``startup``: the CPU time (user + system, ``getrusage(RUSAGE_CHILDREN)``,
   so other load on the machine barely moves it) of whole processes, median of
   7: ``--help``, ``--version`` and a dry run of a 1-note canvas, beside
   ``python -c pass`` and ``python -c "import argparse, json, pluggy, yaml"``.
   Goal: ``--help`` at most 3x the import line;
2. ``scale``: the same CPU time of echo runs (``-a -q --no-plugins``: the
   offline echo model, a document per answer, the journal, the atomic save) of
   1, 1,000, 2,000 and 8,000 notes, with ``--no-journal`` at 2,000, and of a
   plain-Python script doing the same file work (``PLAIN_SCRIPT``), median of 3.
   The cost per note of N notes is ``(CPU(N) - CPU(1)) / (N - 1)``. Goals: at
   8,000 notes at most 1.2x the cost at 1,000; at 2,000 at most 2.5x the plain
   script's; the journal at most 15 % of a 2,000-note run;
3. ``makespan``: the makespan of the real handler
   (``IntelligentParallelCommandHandler().run`` with ``auto`` and ``max`` 12)
   on generated canvases of N notes (N red question nodes, each linked to a
   learner's note of colour "6"), when every agent call is a fake model
   answering after a fixed latency; the bound is ``ceil(N / 12) * latency``
   plus the canvas I/O of that run (reading the input canvas, writing the
   answered one with its backup), timed on the same files apart from the run.
   Target: makespan within 10 % of the bound;
4. ``io``: reading (``read_canvas``) and writing (``save_canvas``, with and
   without the ``.bak`` backup) a generated canvas of 10,000 nodes and about
   10,000 edges, best of 5. Target: each under 100 ms.

The fake model is a plugin handed to the handler (``plugins=[...]``) that
registers, with ``override=True``, an executor for each agent of the default
colour map ("clarification-path" answers colour "6"): it sleeps ``--latency``
seconds and returns ``{"text", "agent", "model": "fake"}``. Everything else is
the real command: option checks, plugin manager, routing, prompts, the engine,
the answer cards, the Markdown documents and the atomic save.

Usage::

    python benchmarks/bench_command.py [--only startup,scale,makespan,io]
                                       [--startup-repeats 7]
                                       [--scale-sizes 1000,2000,8000]
                                       [--scale-repeats 3]
                                       [--latency 0.5] [--sizes 10,20,50]
                                       [--repeats 3] [--io-nodes 10000]
                                       [--io-repeats 5] [--quick] [--json FILE]

``--quick`` is a smoke run: start-up median of 3; echo runs of 1,000 and
2,000 notes, once; latency 0.1 s, sizes 10 and 20, one repeat; a 2,000-node
canvas for I/O. The exit status is 0 whatever the figures: it is a report.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from command_handlers import hookimpl  # noqa: E402
from command_handlers.async_execution_engine import AsyncTask  # noqa: E402
from command_handlers.fileio import read_canvas, save_canvas  # noqa: E402
from command_handlers.intelligent_parallel_handler import (  # noqa: E402
    IntelligentParallelCommandHandler,
)
from command_handlers.settings import DEFAULT_COLOR_MAP  # noqa: E402

CONCURRENCY = 12
LATENCY = 0.5
SIZES = (10, 20, 50)
QUICK_LATENCY = 0.1
QUICK_SIZES = (10, 20)
IO_NODES = 10_000
QUICK_IO_NODES = 2_000
MAKESPAN_TOLERANCE = 0.10
IO_TARGET_MS = 100.0
SEED = 20261125

#: The origin's figures, with real agents (seconds per run of N notes).
ORIGIN_SECONDS = {10: 12, 20: 25, 50: 58}
ORIGIN_IO_MS = {"read": 15, "write": 183}

Row = Sequence[str]


# --------------------------------------------------------------------------
# The fake model.
# --------------------------------------------------------------------------


class FakeModel:
    """A plugin whose agents answer after ``latency`` seconds, whatever the prompt."""

    def __init__(self, latency: float, agents: Sequence[str]) -> None:
        self.latency = latency
        self.agents = list(dict.fromkeys(agents))
        self.calls = 0
        self.peak = 0
        self._running = 0

    def _executor(self, name: str) -> Callable[[AsyncTask], Any]:
        async def answer(task: AsyncTask) -> dict[str, Any]:
            self.calls += 1
            self._running += 1
            self.peak = max(self.peak, self._running)
            try:
                await asyncio.sleep(self.latency)
            finally:
                self._running -= 1
            prompt = str(task.node_data.get("prompt", ""))
            text = f"A fake explanation by {name} ({len(prompt)} prompt characters).\n\n" + (
                "Line of the answer.\n" * 6
            )
            return {"text": text, "agent": name, "model": "fake"}

        return answer

    @hookimpl
    def register_executors(self, register: Callable[..., None]) -> None:
        """Replace the real agents with fakes."""
        for name in self.agents:
            register(name, self._executor(name), override=True, description="fake model")


# --------------------------------------------------------------------------
# Generated canvases.
# --------------------------------------------------------------------------


def _node_id(kind: str, n: int) -> str:
    return f"{kind}{n:015x}"


def study_canvas(notes: int) -> dict[str, Any]:
    """``notes`` red questions, each linked to a learner's note of colour "6"."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for i in range(notes):
        question, note = _node_id("a", i), _node_id("b", i)
        y = i * 240
        nodes.append(
            {
                "id": question,
                "type": "text",
                "text": f"## Question {i}: why does step {i} of the algorithm terminate?",
                "x": 0,
                "y": y,
                "width": 320,
                "height": 140,
                "color": "1",
            }
        )
        nodes.append(
            {
                "id": note,
                "type": "text",
                "text": f"I think step {i} stops because the input gets smaller each time,"
                " but I am not sure why it cannot loop forever.",
                "x": 400,
                "y": y,
                "width": 360,
                "height": 140,
                "color": "6",
            }
        )
        edges.append(
            {
                "id": _node_id("c", i),
                "fromNode": question,
                "fromSide": "right",
                "toNode": note,
                "toSide": "left",
            }
        )
    return {"nodes": nodes, "edges": edges}


def large_canvas(count: int, seed: int = SEED) -> dict[str, Any]:
    """``count`` nodes (text mostly, some file, link and group nodes) and ``count`` edges."""
    rng = random.Random(seed)
    words = ["base", "case", "stack", "thread", "heap", "queue", "graph", "cache", "proof"]
    nodes: list[dict[str, Any]] = []
    for i in range(count):
        node: dict[str, Any] = {
            "id": _node_id("n", i),
            "x": (i % 100) * 420,
            "y": (i // 100) * 260,
            "width": 360,
            "height": 180,
        }
        kind = rng.random()
        if kind < 0.80:
            node["type"] = "text"
            node["text"] = " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
        elif kind < 0.90:
            node["type"] = "file"
            node["file"] = f"notes/{rng.choice(words)}-{i}.md"
        elif kind < 0.97:
            node["type"] = "link"
            node["url"] = f"https://example.org/{rng.choice(words)}/{i}"
        else:
            node["type"] = "group"
            node["label"] = rng.choice(words).title()
        if rng.random() < 0.5:
            node["color"] = rng.choice("123456")
        nodes.append(node)
    edges: list[dict[str, Any]] = []
    sides = ("top", "right", "bottom", "left")
    for i in range(count):
        edge: dict[str, Any] = {
            "id": _node_id("e", i),
            "fromNode": nodes[rng.randrange(count)]["id"],
            "fromSide": rng.choice(sides),
            "toNode": nodes[rng.randrange(count)]["id"],
            "toSide": rng.choice(sides),
        }
        if rng.random() < 0.2:
            edge["label"] = rng.choice(words)
        edges.append(edge)
    return {"nodes": nodes, "edges": edges}


def write_canvas(path: Path, data: dict[str, Any]) -> None:
    """Write a canvas as Obsidian does (tab-indented JSON)."""
    path.write_text(json.dumps(data, indent="\t", ensure_ascii=False), encoding="utf-8")


# --------------------------------------------------------------------------
# Measurements.
# --------------------------------------------------------------------------


def _timed(action: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_command(folder: Path, notes: int, latency: float) -> dict[str, Any]:
    """One run of the handler on a fresh canvas of ``notes`` notes, in a fresh event loop."""
    folder.mkdir(parents=True)
    path = folder / "study.canvas"
    write_canvas(path, study_canvas(notes))
    model = FakeModel(latency, DEFAULT_COLOR_MAP.values())
    handler = IntelligentParallelCommandHandler(plugins=[model])
    options = {"auto": True, "max": CONCURRENCY, "no_plugins": True}
    loop = asyncio.new_event_loop()
    try:
        gc.collect()
        start = time.perf_counter()
        result = loop.run_until_complete(handler.run(path, options)).as_dict()
        makespan = time.perf_counter() - start
    finally:
        loop.close()
    stats = result.get("stats", {})
    if not result.get("success") or stats.get("processed_nodes") != notes:
        raise RuntimeError(f"the run failed: {result.get('message')!r}, stats {stats}")
    if model.calls != notes or {r["model"] for r in result["results"]} != {"fake"}:
        raise RuntimeError(f"the fake model answered {model.calls} of {notes} notes")

    # The same run's canvas I/O, timed apart: read the input, write the answered
    # canvas over a copy of the input (so the backup copies the same bytes).
    original = folder / "original.canvas"
    write_canvas(original, study_canvas(notes))
    read = min(_timed(lambda: read_canvas(original)) for _ in range(3))
    answered = read_canvas(path)
    scratch = folder / "scratch.canvas"
    writes = []
    for _ in range(3):
        shutil.copyfile(original, scratch)
        writes.append(_timed(lambda: save_canvas(answered, scratch, backup=True)))
    return {
        "makespan": makespan,
        "engine_seconds": result["elapsed_seconds"],
        "canvas_io": read + min(writes),
        "read": read,
        "write": min(writes),
        "peak_concurrency": model.peak,
        "calls": model.calls,
    }


def measure_makespan(
    folder: Path, sizes: Sequence[int], latency: float, repeats: int
) -> dict[int, list[dict[str, Any]]]:
    """Run every size ``repeats`` times, interleaved; a warm-up run first."""
    run_command(folder / "warm-up", 2, min(latency, 0.01))
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for repeat in range(repeats):
        for size in sizes:
            runs[size].append(run_command(folder / f"n{size}-r{repeat}", size, latency))
        print(f"makespan round {repeat + 1}/{repeats} done", file=sys.stderr)
    return runs


def measure_io(folder: Path, count: int, repeats: int) -> dict[str, Any]:
    """Best-of-``repeats`` times (seconds) of reading and writing a ``count``-node canvas."""
    folder.mkdir(parents=True)
    path = folder / "large.canvas"
    data = large_canvas(count)
    write_canvas(path, data)
    size = path.stat().st_size
    canvas = read_canvas(path)
    target = folder / "written.canvas"
    save_canvas(canvas, target)  # exists from now on, so the default save makes a backup
    times: dict[str, list[float]] = {"read": [], "write": [], "write_no_backup": [], "to_json": []}
    for _ in range(repeats):
        times["read"].append(_timed(lambda: read_canvas(path)))
        times["write"].append(_timed(lambda: save_canvas(canvas, target)))
        times["write_no_backup"].append(_timed(lambda: save_canvas(canvas, target, backup=False)))
        times["to_json"].append(_timed(canvas.to_json))
    return {
        "nodes": len(data["nodes"]),
        "edges": len(data["edges"]),
        "bytes": size,
        "best": {key: min(values) for key, values in times.items()},
        "values": times,
    }


# --------------------------------------------------------------------------
# Start-up and scaling: whole processes, CPU time (robust to other load).
# --------------------------------------------------------------------------

#: The command line as its console script runs it.
CLI = "import sys; from command_handlers.cli import main; sys.exit(main(sys.argv[1:]))"
#: The imports a command line of this kind cannot do without: the start-up floor.
IMPORT_LINE = "import argparse, json, pluggy, yaml"
SCALE_SIZES = (1_000, 2_000, 8_000)
QUICK_SCALE_SIZES = (1_000, 2_000)
JOURNAL_SIZE = 2_000
STARTUP_REPEATS = 7
HELP_GOAL = 3.0  # --help at most 3x the import line's CPU
FLAT_GOAL = 1.2  # per-note cost at the largest size at most 1.2x that at the smallest
PLAIN_GOAL = 2.5  # per-note cost at most 2.5x the plain-Python script's
JOURNAL_GOAL = 0.15  # the journal at most 15 % of a run's CPU

#: The same file work as an echo run, in plain Python: read the canvas, write one
#: small document per note, commit one journal row per note (WAL, synchronous=FULL),
#: add the answer cards, file nodes and edges, and write the canvas atomically
#: (fsynced temporary file, os.replace) after an atomic copy to ``.bak``.
PLAIN_SCRIPT = r"""
import json, os, sqlite3, sys, time
canvas, journal, folder = sys.argv[1:4]
use_journal = sys.argv[4:] != ["--no-journal"]
with open(canvas, "rb") as f:
    raw = f.read()
data = json.loads(raw)
conn = sqlite3.connect(journal)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=FULL")
conn.execute(
    "CREATE TABLE IF NOT EXISTS outcomes (id INTEGER PRIMARY KEY, task_id TEXT, note_id TEXT,"
    " agent TEXT, status TEXT, result TEXT, finished_at REAL)"
)
conn.commit()
os.makedirs(folder, exist_ok=True)
notes = [n for n in data["nodes"] if n.get("type") == "text" and n.get("color") == "6"]
nodes, edges = data["nodes"], data["edges"]
for i, note in enumerate(notes):
    answer = "A short answer to: " + note["text"]
    with open(os.path.join(folder, f"answer-{i}.md"), "xb") as f:
        f.write(f"# Note {i}\n\n{answer}\n".encode())
    if use_journal:
        with conn:
            conn.execute(
                "INSERT INTO outcomes (task_id, note_id, agent, status, result, finished_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (f"t{i}", note["id"], "clarification-path", "success",
                 json.dumps({"text": answer}), time.time()),
            )
    card, doc = f"card{i:012x}", f"file{i:012x}"
    nodes.append({"id": card, "type": "text", "text": answer[:200], "x": note["x"] + 800,
                  "y": note["y"], "width": 400, "height": 200, "color": "5"})
    nodes.append({"id": doc, "type": "file", "file": f"answers/answer-{i}.md",
                  "x": note["x"] + 1250, "y": note["y"], "width": 400, "height": 120})
    edges.append({"id": f"e{card}", "fromNode": note["id"], "toNode": card,
                  "label": "clarification-path"})
    edges.append({"id": f"e{doc}", "fromNode": card, "toNode": doc})

def atomic(path, payload):
    temp = path + ".tmp"
    with open(temp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)

atomic(canvas + ".bak", raw)
atomic(canvas, json.dumps(data, indent="\t", ensure_ascii=False).encode())
fd = os.open(os.path.dirname(os.path.abspath(canvas)), os.O_RDONLY)
os.fsync(fd)
os.close(fd)
conn.close()
"""


def child_cpu(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``argv`` to its end; return (its CPU seconds, user + system, and wall seconds).

    The CPU time is the child's own (``getrusage(RUSAGE_CHILDREN)`` before and
    after), so other processes on the machine barely change it; the kernel's
    work for the child's files (creating them, syncing them) is part of it.
    """
    import resource  # pylint: disable=import-outside-toplevel  # POSIX only

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=900
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {done.returncode}: {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def _child_env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["LLM_USER_PATH"] = str(folder / "llm")  # nothing of the user's llm set-up
    for name in ("COMMAND_HANDLERS_PLUGINS", "COMMAND_HANDLERS_DISABLE_PLUGINS"):
        env.pop(name, None)
    env["COMMAND_HANDLERS_LOAD_PLUGINS"] = ""
    return env


def _vault(folder: Path, notes: int) -> Path:
    """A fresh vault (``.obsidian/`` at its root) holding a canvas of ``notes`` notes."""
    folder.mkdir(parents=True)
    (folder / ".obsidian").mkdir()
    path = folder / "study.canvas"
    write_canvas(path, study_canvas(notes))
    return path


def measure_startup(folder: Path, repeats: int) -> dict[str, Any]:
    """Median CPU (and wall) of whole processes: the floor, --help, a 1-note dry run."""
    env = _child_env(folder)
    canvas = _vault(folder / "dry", 1)
    python = sys.executable
    commands = {
        "python -c pass": [python, "-c", "pass"],
        f'python -c "{IMPORT_LINE}"': [python, "-c", IMPORT_LINE],
        "--help": [python, "-c", CLI, "--help"],
        "--version": [python, "-c", CLI, "--version"],
        "1-note --dry-run": [python, "-c", CLI, str(canvas), "--dry-run", "--no-plugins"],
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for argv in commands.values():  # one unmeasured run each: a warm page cache
        child_cpu(argv, folder, env)
    for _ in range(repeats):  # interleaved: drift in the machine's speed hits all alike
        for name, argv in commands.items():
            figures[name].append(child_cpu(argv, folder, env))
    return {
        name: {
            "cpu": statistics.median(cpu for cpu, _ in runs),
            "wall": statistics.median(wall for _, wall in runs),
            "cpus": [cpu for cpu, _ in runs],
        }
        for name, runs in figures.items()
    }


def _echo_run(folder: Path, notes: int, env: dict[str, str], *extra: str) -> tuple[float, float]:
    canvas = _vault(folder, notes)
    argv = [sys.executable, "-c", CLI, str(canvas), "-a", "-q", "--no-plugins", *extra]
    return child_cpu(argv, folder, env)


def _plain_run(folder: Path, notes: int, env: dict[str, str], *extra: str) -> tuple[float, float]:
    canvas = _vault(folder, notes)
    argv = [
        sys.executable,
        "-c",
        PLAIN_SCRIPT,
        str(canvas),
        str(folder / ".journal.sqlite"),
        str(folder / "answers"),
        *extra,
    ]
    return child_cpu(argv, folder, env)


def measure_scale(folder: Path, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Whole-process CPU of echo runs (documents, journal) of each size, and of the baselines.

    The cost per note of N notes is ``(CPU(N) - CPU(1)) / (N - 1)``: the run of one
    note holds every fixed cost (start-up, importing ``llm`` for the first call,
    the canvas's save), so what is left is what the notes cost.
    """
    env = _child_env(folder)
    journal = JOURNAL_SIZE if JOURNAL_SIZE in sizes else max(sizes)
    kinds: dict[str, Callable[[Path, int], tuple[float, float]]] = {
        "echo": lambda where, n: _echo_run(where, n, env),
        "echo --no-journal": lambda where, n: _echo_run(where, n, env, "--no-journal"),
        "plain Python": lambda where, n: _plain_run(where, n, env),
        "plain Python, no journal": lambda where, n: _plain_run(where, n, env, "--no-journal"),
    }
    plan = [("echo", size) for size in (1, *sizes)]
    plan += [("echo --no-journal", size) for size in (1, journal)]
    plan += [("plain Python", size) for size in (1, journal)]
    plan += [("plain Python, no journal", size) for size in (1, journal)]
    runs: dict[str, dict[int, list[tuple[float, float]]]] = {kind: {} for kind in kinds}
    for kind, size in plan:  # warm-up: the page cache, the .pyc files
        if size == 1:
            kinds[kind](folder / f"warm-{kind.replace(' ', '_')}", 1)
    for repeat in range(repeats):
        for kind, size in plan:
            where = folder / f"{kind.replace(' ', '_')}-{size}-r{repeat}"
            runs[kind].setdefault(size, []).append(kinds[kind](where, size))
            shutil.rmtree(where, ignore_errors=True)
        print(f"scale round {repeat + 1}/{repeats} done", file=sys.stderr)
    medians = {
        kind: {
            size: {
                "cpu": statistics.median(cpu for cpu, _ in values),
                "wall": statistics.median(wall for _, wall in values),
            }
            for size, values in by_size.items()
        }
        for kind, by_size in runs.items()
    }

    def per_note(kind: str, size: int, key: str = "cpu") -> float:
        return (medians[kind][size][key] - medians[kind][1][key]) / (size - 1)

    return {
        "sizes": list(sizes),
        "journal_size": journal,
        "medians": {kind: {str(n): v for n, v in m.items()} for kind, m in medians.items()},
        "per_note": {str(size): per_note("echo", size) for size in sizes},
        "per_note_no_journal": per_note("echo --no-journal", journal),
        "per_note_plain": per_note("plain Python", journal),
        "journal_share_cpu": 1
        - medians["echo --no-journal"][journal]["cpu"] / medians["echo"][journal]["cpu"],
        "journal_share_wall": 1
        - medians["echo --no-journal"][journal]["wall"] / medians["echo"][journal]["wall"],
        # The same share in the plain script: what one synced commit per note costs here.
        "plain_journal_share_cpu": 1
        - medians["plain Python, no journal"][journal]["cpu"]
        / medians["plain Python"][journal]["cpu"],
        "runs": {
            kind: {str(n): [list(run) for run in values] for n, values in by_size.items()}
            for kind, by_size in runs.items()
        },
    }


def goals(startup: dict[str, Any] | None, scale: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each goal with its figure, its limit and whether it is met."""
    found: list[dict[str, Any]] = []
    if startup is not None:
        floor = startup[f'python -c "{IMPORT_LINE}"']["cpu"]
        ratio = startup["--help"]["cpu"] / floor
        found.append(
            {
                "goal": "--help CPU at most 3x the import line's",
                "value": f"{ratio:.2f}x ({startup['--help']['cpu'] * 1e3:.0f} ms"
                f" / {floor * 1e3:.0f} ms)",
                "ratio": ratio,
                "met": ratio <= HELP_GOAL,
            }
        )
    if scale is not None:
        sizes = scale["sizes"]
        small, large = min(sizes), max(sizes)
        growth = scale["per_note"][str(large)] / scale["per_note"][str(small)]
        found.append(
            {
                "goal": f"per-note cost at {large:,} notes at most 1.2x that at {small:,}",
                "value": f"{growth:.2f}x ({scale['per_note'][str(large)] * 1e3:.3f} ms"
                f" / {scale['per_note'][str(small)] * 1e3:.3f} ms)",
                "ratio": growth,
                "met": growth <= FLAT_GOAL,
            }
        )
        size = scale["journal_size"]
        ours, plain = scale["per_note"][str(size)], scale["per_note_plain"]
        found.append(
            {
                "goal": f"per-note cost of {size:,} notes at most 2.5x plain Python's",
                "value": f"{ours / plain:.2f}x ({ours * 1e3:.3f} ms / {plain * 1e3:.3f} ms)",
                "ratio": ours / plain,
                "met": ours / plain <= PLAIN_GOAL,
            }
        )
        share = scale["journal_share_cpu"]
        found.append(
            {
                "goal": f"the journal at most 15 % of a {size:,}-note run (CPU)",
                "value": f"{share * 100:.1f} % (wall {scale['journal_share_wall'] * 100:.0f} %;"
                f" plain Python's: {scale['plain_journal_share_cpu'] * 100:.1f} %)",
                "ratio": share,
                "met": share <= JOURNAL_GOAL,
            }
        )
    return found


def startup_rows(startup: dict[str, Any]) -> list[Row]:
    floor = startup["python -c pass"]["cpu"]
    rows: list[Row] = [("process", "CPU (median)", "wall (median)", "CPU - python -c pass")]
    for name, figure in startup.items():
        rows.append(
            (
                name,
                f"{figure['cpu'] * 1e3:.0f} ms",
                f"{figure['wall'] * 1e3:.0f} ms",
                f"{(figure['cpu'] - floor) * 1e3:+.0f} ms",
            )
        )
    return rows


def scale_rows(scale: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [("run", "notes", "CPU", "wall", "CPU per note (marginal)")]
    for kind, by_size in scale["medians"].items():
        for size, figure in by_size.items():
            marginal = ""
            if size != "1":
                one = by_size["1"]["cpu"]
                marginal = f"{(figure['cpu'] - one) / (int(size) - 1) * 1e3:.3f} ms"
            rows.append(
                (
                    kind,
                    f"{int(size):,}",
                    f"{figure['cpu']:.3f} s",
                    f"{figure['wall']:.3f} s",
                    marginal,
                )
            )
    return rows


# --------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------


def _verdict(ok: bool, detail: str = "") -> str:
    return ("PASS" if ok else "MISS") + (f" ({detail})" if detail else "")


def format_table(rows: Sequence[Row]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def makespan_rows(runs: dict[int, list[dict[str, Any]]], latency: float) -> list[Row]:
    rows: list[Row] = [
        (
            "notes",
            "latency",
            "makespan",
            "bound",
            "makespan/bound",
            "target",
            "result",
            "origin (real agents)",
        )
    ]
    for size, figures in runs.items():
        best = min(figures, key=lambda f: f["makespan"])
        batches = math.ceil(size / CONCURRENCY)
        bound = batches * latency + best["canvas_io"]
        ratio = best["makespan"] / bound
        origin = ORIGIN_SECONDS.get(size)
        rows.append(
            (
                str(size),
                f"{latency:g} s",
                f"{best['makespan']:.3f} s",
                f"{bound:.3f} s ({batches} x {latency:g} s + {best['canvas_io'] * 1e3:.1f} ms)",
                f"{ratio:.3f}",
                f"<= {1 + MAKESPAN_TOLERANCE:.2f}",
                _verdict(ratio <= 1 + MAKESPAN_TOLERANCE, f"peak {best['peak_concurrency']}"),
                f"{origin} s" if origin else "",
            )
        )
    return rows


def io_rows(io: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [("operation", "canvas", "best", "target", "result", "origin")]
    what = f"{io['nodes']:,} nodes, {io['edges']:,} edges, {io['bytes'] / 1e6:.1f} MB"
    for key, label, target, origin in (
        ("read", "read (read_canvas)", True, "read"),
        ("write", "write (save_canvas, with .bak)", True, "write"),
        ("write_no_backup", "write (save_canvas, backup=False)", True, "write"),
        ("to_json", "serialise only (to_json)", False, None),
    ):
        millis = io["best"][key] * 1e3
        rows.append(
            (
                label,
                what,
                f"{millis:.1f} ms",
                f"< {IO_TARGET_MS:.0f} ms" if target else "",
                _verdict(millis < IO_TARGET_MS) if target else "",
                f"{ORIGIN_IO_MS[origin]} ms (small canvas)" if origin else "",
            )
        )
    return rows


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part) for part in text.split(",") if part.strip())
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers, e.g. 10,20,50")
    return sizes


SECTIONS = ("startup", "scale", "makespan", "io")


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SECTIONS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--latency", type=float, default=None, help="fake model latency (0.5 s)")
    parser.add_argument("--sizes", type=_sizes, default=None, help="notes per canvas (10,20,50)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size, best kept (3)")
    parser.add_argument("--io-nodes", type=int, default=None, help="nodes of the I/O canvas")
    parser.add_argument("--io-repeats", type=int, default=5, help="I/O repeats, best kept (5)")
    parser.add_argument(
        "--startup-repeats", type=int, default=STARTUP_REPEATS, help="start-up runs, median (7)"
    )
    parser.add_argument(
        "--scale-sizes", type=_sizes, default=None, help="notes of the echo runs (1000,2000,8000)"
    )
    parser.add_argument(
        "--scale-repeats", type=int, default=3, help="echo runs per size, median (3)"
    )
    parser.add_argument(
        "--only", type=_sections, default=SECTIONS, help=f"sections ({','.join(SECTIONS)})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: fewer and smaller runs, one repeat"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args(argv)

    latency = (
        args.latency if args.latency is not None else (QUICK_LATENCY if args.quick else LATENCY)
    )
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    repeats = 1 if args.quick else max(1, args.repeats)
    io_nodes = args.io_nodes or (QUICK_IO_NODES if args.quick else IO_NODES)
    io_repeats = max(1, args.io_repeats)
    startup_repeats = 3 if args.quick else max(1, args.startup_repeats)
    scale_sizes = args.scale_sizes or (QUICK_SCALE_SIZES if args.quick else SCALE_SIZES)
    scale_repeats = 1 if args.quick else max(1, args.scale_repeats)
    if min(scale_sizes) < 2:
        parser.error("--scale-sizes must be 2 notes or more")

    started = time.perf_counter()
    startup = scale = runs = io = None
    with tempfile.TemporaryDirectory(prefix="bench-command-") as temp:
        folder = Path(temp)
        if "startup" in args.only:
            startup = measure_startup(folder / "startup", startup_repeats)
        if "scale" in args.only:
            scale = measure_scale(folder / "scale", scale_sizes, scale_repeats)
        if "makespan" in args.only:
            runs = measure_makespan(folder / "command", sizes, latency, repeats)
        if "io" in args.only:
            io = measure_io(folder / "io", io_nodes, io_repeats)
    seconds = time.perf_counter() - started

    print(
        f"# {time.strftime('%Y-%m-%d')}  Python {platform.python_version()}  "
        f"{os.cpu_count()} CPUs  load average {os.getloadavg()[0]:.2f}"
    )
    if startup is not None:
        print(
            f"# start-up: whole processes, CPU of the child (user + system), median of"
            f" {startup_repeats}"
        )
        print(format_table(startup_rows(startup)))
        print()
    if scale is not None:
        print(
            f"# echo runs (-a -q --no-plugins: documents and journal on), median of"
            f" {scale_repeats}; CPU per note = (CPU(N) - CPU(1)) / (N - 1)"
        )
        print(format_table(scale_rows(scale)))
        print()
    found = goals(startup, scale)
    if found:
        print(
            format_table(
                [("goal", "figure", "result")]
                + [
                    (goal["goal"], goal["value"], "met" if goal["met"] else "MISSED")
                    for goal in found
                ]
            )
        )
        print()
    if runs is not None:
        print(
            f"# the /intelligent-parallel handler, fake model of {latency:g} s, max {CONCURRENCY};"
            f" bound = ceil(notes/{CONCURRENCY}) x latency + that run's canvas I/O (read + save);"
            f" best of {repeats}"
        )
        print(
            "# origin, with real agents: 10/20/50 notes in 12/25/58 s;"
            " canvas read 15 ms, write 183 ms (small canvases)"
        )
        print(format_table(makespan_rows(runs, latency)))
        print()
    if io is not None:
        print(f"# canvas I/O, best of {io_repeats}")
        print(format_table(io_rows(io)))
    print(f"# total {seconds:.1f} s", flush=True)

    if args.json:
        payload: dict[str, Any] = {
            "meta": {
                "date": time.strftime("%Y-%m-%d"),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg()[0],
                "latency": latency,
                "concurrency": CONCURRENCY,
                "repeats": repeats,
                "io_repeats": io_repeats,
                "startup_repeats": startup_repeats,
                "scale_repeats": scale_repeats,
                "seconds": round(seconds, 1),
            },
            "startup": startup,
            "scale": scale,
            "goals": found,
            "io": io,
        }
        if runs is not None:
            payload["makespan"] = {
                str(size): {
                    "best": min(figures, key=lambda f: f["makespan"]),
                    "makespans": [f["makespan"] for f in figures],
                    "median": statistics.median(f["makespan"] for f in figures),
                }
                for size, figures in runs.items()
            }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
