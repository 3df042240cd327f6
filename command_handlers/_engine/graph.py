"""Checking a task list and ordering it by its dependencies (Kahn's algorithm)."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from command_handlers._engine.tasks import AsyncTask, DependencyCycleError

__all__ = [
    "chain_lengths",
    "dependency_graph",
    "find_cycle",
    "kahn_order",
    "topological_order",
    "validate_tasks",
]


def validate_tasks(tasks: Sequence[AsyncTask], *, dependency_aware: bool) -> list[AsyncTask]:
    """Check the tasks before anything runs.

    Args:
        tasks: The tasks.
        dependency_aware: Also check that dependencies name other tasks of the list.

    Returns:
        The tasks as a list (the same list when given one).

    Raises:
        ValueError: The list is empty, has duplicate ids, a task depends on
            itself or on an unknown id.
        TypeError: An item is not an :class:`AsyncTask`.
    """
    task_list = tasks if isinstance(tasks, list) else list(tasks)
    if not task_list:
        raise ValueError("tasks list cannot be empty")
    # Values None, not positions: int objects would cost 28 bytes a task at the run's peak.
    seen: dict[str, None] = {}
    for position, task in enumerate(task_list):
        if not isinstance(task, AsyncTask):
            raise TypeError(f"tasks[{position}] is not an AsyncTask (got {type(task).__name__})")
        if task.task_id in seen:
            first = next(i for i, t in enumerate(task_list) if t.task_id == task.task_id)
            raise ValueError(
                f"duplicate task_id {task.task_id!r} (tasks[{first}] and tasks[{position}])"
            )
        seen[task.task_id] = None
    if dependency_aware:
        for task in task_list:
            for dep in task.dependencies or []:
                if dep == task.task_id:
                    raise ValueError(f"task {task.task_id!r} depends on itself")
                if dep not in seen:
                    raise ValueError(f"task {task.task_id!r} depends on unknown task {dep!r}")
    return task_list


def dependency_graph(
    tasks: list[AsyncTask], index: Mapping[str, int]
) -> tuple[list[list[int]], list[int]]:
    """Index the dependencies of checked tasks.

    Args:
        tasks: The tasks.
        index: task id -> position in ``tasks``.

    Returns:
        Per task position, the positions of its dependents, and how many
        dependencies it waits on.
    """
    dependents: list[list[int]] = [[] for _ in tasks]
    waiting_on = [0] * len(tasks)
    for i, task in enumerate(tasks):
        for dep in task.dependencies or []:
            dependents[index[dep]].append(i)
            waiting_on[i] += 1
    return dependents, waiting_on


def kahn_order(tasks: list[AsyncTask], dependents: Sequence[Sequence[int]]) -> list[int]:
    """Order task positions so that every task comes after its dependencies.

    Ties are broken by higher priority, then input order.

    Args:
        tasks: The tasks.
        dependents: Per task position, the positions of its dependents.

    Returns:
        The positions in a valid execution order.

    Raises:
        DependencyCycleError: The dependencies form a cycle.
    """
    waiting_on = [len(task.dependencies or []) for task in tasks]
    heap = [(-task.priority, i) for i, task in enumerate(tasks) if waiting_on[i] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for child in dependents[i]:
            waiting_on[child] -= 1
            if waiting_on[child] == 0:
                heapq.heappush(heap, (-tasks[child].priority, child))
    if len(order) < len(tasks):
        index = {task.task_id: i for i, task in enumerate(tasks)}
        raise DependencyCycleError(find_cycle(tasks, index, waiting_on))
    return order


def find_cycle(
    tasks: list[AsyncTask], index: Mapping[str, int], waiting_on: list[int]
) -> list[str]:
    """Walk dependencies among the tasks Kahn could not order until one repeats.

    Args:
        tasks: The tasks.
        index: task id -> position.
        waiting_on: Per position, the dependencies Kahn's algorithm left unplaced.

    Returns:
        The ids on one cycle, dependency first, the first id repeated at the end.
    """
    start = next(i for i, left in enumerate(waiting_on) if left > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    current = start
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(
            index[dep] for dep in tasks[current].dependencies or [] if waiting_on[index[dep]] > 0
        )
    cycle = path[seen[current] :]
    # Show the cycle in the order work would flow: dependency first.
    ids = [tasks[i].task_id for i in reversed(cycle)]
    return ids + ids[:1]


def chain_lengths(dependents: Sequence[Sequence[int]], order: list[int]) -> list[int]:
    """Length of the longest chain of dependents hanging on each task (itself included).

    Args:
        dependents: Per task position, the positions of its dependents.
        order: The positions in a valid execution order.

    Returns:
        Per position, the chain length (1 for a task nothing depends on).
    """
    lengths = [1] * len(dependents)
    for i in reversed(order):
        if dependents[i]:
            lengths[i] = 1 + max(lengths[child] for child in dependents[i])
    return lengths


def topological_order(tasks: Sequence[AsyncTask]) -> list[AsyncTask]:
    """Check the tasks and order them so that each comes after its dependencies.

    Args:
        tasks: The tasks.

    Returns:
        The same tasks in a valid execution order (higher priority, then input order, first).

    Raises:
        ValueError: As :func:`validate_tasks`.
        DependencyCycleError: The dependencies form a cycle.
        TypeError: An item is not an :class:`AsyncTask`.
    """
    task_list = validate_tasks(tasks, dependency_aware=True)
    index = {task.task_id: i for i, task in enumerate(task_list)}
    dependents, _ = dependency_graph(task_list, index)
    return [task_list[i] for i in kahn_order(task_list, dependents)]
