"""The ``/intelligent-parallel`` command, as a package: one module per step.

* :mod:`.notes`: which notes a run sends, with their material and prerequisites;
* :mod:`.hashes`: what each answer depends on;
* :mod:`.answered`: the answers this tool already wrote on a canvas;
* :mod:`.prompt`: the message an agent receives for one note;
* :mod:`.plan`: what to answer again, and the plan the user confirms;
* :mod:`.options`: the command's options, checked, and their defaults;
* :mod:`.write_back`: documents, cards and edges written back;
* :mod:`.result`: the typed result, turned into the origin's dict at the edge;
* :mod:`.handler`: the origin's ``IntelligentParallelCommandHandler``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from command_handlers._lazy import lazy_names

if TYPE_CHECKING:
    from command_handlers.intelligent_parallel.handler import IntelligentParallelCommandHandler
    from command_handlers.intelligent_parallel.options import CommandInputError
    from command_handlers.intelligent_parallel.result import CommandResult

__all__ = ["CommandInputError", "CommandResult", "IntelligentParallelCommandHandler"]

# Imported at first use, so that importing one step (``.options`` for the
# command line's defaults) does not import the handler and everything it runs.
_LAZY = {
    "CommandInputError": "command_handlers.intelligent_parallel.options",
    "CommandResult": "command_handlers.intelligent_parallel.result",
    "IntelligentParallelCommandHandler": "command_handlers.intelligent_parallel.handler",
}


__getattr__ = lazy_names(globals(), _LAZY)
