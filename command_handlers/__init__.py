"""Run many slow agent calls concurrently, safely and resumably, behind a pluggy plugin layer.

Plugin authors mark their hook implementations with :data:`hookimpl`::

    from command_handlers import hookimpl

    @hookimpl
    def register_executors(register):
        register("shout", shout)

Programs build :class:`AsyncTask` objects and await :func:`run_tasks`. Every
other module is internal unless its documentation says otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from command_handlers._lazy import lazy_names

__version__ = "0.1.0"

if TYPE_CHECKING:
    from command_handlers.hookspecs import hookimpl
    from command_handlers.plugins import (
        AsyncTask,
        DependencyCycleError,
        DuplicateAgentError,
        PluginLoadError,
        RateLimit,
        RetryPolicy,
        RunPolicy,
        TaskOutcome,
        TaskTimeoutError,
        UnknownAgentError,
        get_plugin_manager,
        run_tasks,
    )
    from command_handlers.settings import Settings

# Imported at first use: ``intelligent-parallel --help`` needs none of them, and the
# plugin layer brings the engine and asyncio with it.
_LAZY = {
    "hookimpl": "command_handlers.hookspecs",
    "Settings": "command_handlers.settings",
    **dict.fromkeys(
        (
            "AsyncTask",
            "DependencyCycleError",
            "DuplicateAgentError",
            "PluginLoadError",
            "RateLimit",
            "RetryPolicy",
            "RunPolicy",
            "TaskOutcome",
            "TaskTimeoutError",
            "UnknownAgentError",
            "get_plugin_manager",
            "run_tasks",
        ),
        "command_handlers.plugins",
    ),
}


__getattr__ = lazy_names(globals(), _LAZY)


__all__ = [
    "AsyncTask",
    "DependencyCycleError",
    "DuplicateAgentError",
    "PluginLoadError",
    "RateLimit",
    "RetryPolicy",
    "RunPolicy",
    "Settings",
    "TaskOutcome",
    "TaskTimeoutError",
    "UnknownAgentError",
    "__version__",
    "get_plugin_manager",
    "hookimpl",
    "run_tasks",
]
