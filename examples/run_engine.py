"""Run the engine over twenty simulated agent calls and print the summary."""

from __future__ import annotations

import asyncio
import json
import time

from command_handlers.async_execution_engine import AsyncExecutionEngine, AsyncTask


async def explain(task: AsyncTask) -> dict[str, str]:
    await asyncio.sleep(0.2)  # stands in for a ~10 s model call
    if task.task_id == "note-13":
        raise TimeoutError("the model did not answer")
    return {"task_id": task.task_id, "answer": f"explanation of {task.node_data['text']!r}"}


async def main() -> None:
    tasks = [
        AsyncTask(f"note-{i}", "oral-explanation", {"id": f"n{i}", "text": f"question {i}"})
        for i in range(20)
    ]
    started = time.perf_counter()
    summary = await AsyncExecutionEngine(max_concurrency=12).execute_parallel(tasks, explain)
    elapsed = time.perf_counter() - started
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))
    print(f"{summary['total']} calls of 0.2 s in {elapsed:.2f} s (one at a time: 4.0 s)")


if __name__ == "__main__":
    asyncio.run(main())
