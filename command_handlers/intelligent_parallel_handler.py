"""The origin's module of the ``/intelligent-parallel`` handler (story 10.2.2).

Kept so that code written against the origin imports what it always did; the
command lives in :mod:`command_handlers.intelligent_parallel`.
"""

from command_handlers.intelligent_parallel import (
    CommandInputError,
    CommandResult,
    IntelligentParallelCommandHandler,
)
from command_handlers.intelligent_parallel.options import parse_color_map

__all__ = [
    "CommandInputError",
    "CommandResult",
    "IntelligentParallelCommandHandler",
    "parse_color_map",
]
