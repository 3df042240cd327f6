"""Run many slow agent calls concurrently, safely and resumably, behind a pluggy plugin layer.

Plugin authors mark their hook implementations with :data:`hookimpl`::

    from command_handlers import hookimpl

    @hookimpl
    def register_executors(register):
        register("shout", shout)
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marks a function as an implementation of one of the hooks in :mod:`command_handlers.hookspecs`.
hookimpl = pluggy.HookimplMarker("command_handlers")

__all__ = ["__version__", "hookimpl"]
