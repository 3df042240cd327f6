"""The engine's parts, one module per concern (private: import from ``async_execution_engine``).

``command_handlers.async_execution_engine`` is the public module: it holds
:class:`~command_handlers.async_execution_engine.AsyncExecutionEngine` and
re-exports every public name defined here. Standard library only, Python >= 3.9.
"""

from __future__ import annotations

__all__: list[str] = []
