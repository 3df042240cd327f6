"""Benchmark of answer placement: the write-back's cost per card as the canvas grows.

Builds a canvas of N learner's notes (300 x 150, on a grid 900 px by 400 px
apart, with room to the right of each), answers every note once with a fake
answer, and times :func:`write_answers` with ``inline`` (the cards and edges,
no Markdown documents, so that the figure is placement and canvas bookkeeping
only). Prints the microseconds per card, best of ``--repeats``.

A second figure: on a dense 10 x 10 grid (300 x 150 notes 350 px by 200 px
apart, no room beside any note), four notes are answered; it prints the
largest distance, centre to centre, from a note to its new card.

Usage::

    python benchmarks/bench_placement.py [--sizes 1000,2000,4000,8000] [--repeats 3]

Runs against whatever ``command_handlers`` is importable (``PYTHONPATH=...``
to measure another checkout). The exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from command_handlers.canvas import Canvas
from command_handlers.intelligent_parallel.write_back import Layout, write_answers


def _note(node_id: str, x: float, y: float) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "text",
        "text": node_id,
        "x": x,
        "y": y,
        "width": 300,
        "height": 150,
        "color": "6",
    }


def _results(ids: list[str]) -> list[dict[str, Any]]:
    return [
        {"task_id": f"{i}:a", "node_id": i, "agent": "a", "status": "success", "answer": "x"}
        for i in ids
    ]


def per_card(count: int, folder: Path) -> float:
    """Seconds per card for ``count`` notes."""
    side = math.isqrt(count) + 1
    nodes = [_note(f"n{i}", (i % side) * 900, (i // side) * 400) for i in range(count)]
    canvas = Canvas({"nodes": nodes, "edges": []})
    results = _results([f"n{i}" for i in range(count)])
    started = time.perf_counter()
    write_answers(canvas, results, {}, Layout(folder, folder, inline=True))
    return (time.perf_counter() - started) / count


def dense(folder: Path) -> float:
    """The largest note-to-card distance on a full 10 x 10 grid."""
    nodes = [_note(f"c{r}-{c}", c * 350, r * 200) for r in range(10) for c in range(10)]
    canvas = Canvas({"nodes": nodes, "edges": []})
    chosen = ["c2-3", "c5-5", "c7-1", "c9-9"]
    results = _results(chosen)
    write_answers(canvas, results, {n: n for n in chosen}, Layout(folder, folder, inline=True))
    far = 0.0
    for result in results:
        a, b = canvas.node(result["node_id"]), canvas.node(result["blue_node_id"])
        far = max(
            far,
            math.dist(
                (a["x"] + a["width"] / 2, a["y"] + a["height"] / 2),
                (b["x"] + b["width"] / 2, b["y"] + b["height"] / 2),
            ),
        )
    return far


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4000,8000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        for size in (int(s) for s in args.sizes.split(",")):
            best = min(per_card(size, folder) for _ in range(args.repeats))
            print(f"{size:>6} notes: {best * 1e6:8.1f} us per card")
        print(f"dense 10x10 grid, 4 notes answered: farthest card {dense(folder):.0f} px")


if __name__ == "__main__":
    main()
