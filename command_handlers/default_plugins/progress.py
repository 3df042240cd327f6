"""Show a run's progress: a live rich bar, one plain line per task, or nothing.

A built-in plugin (``progress``). In ``configure`` it registers a
:class:`~.progress_display.ProgressDisplay` for the command when
``settings.display`` is not ``"quiet"`` (the command line asks for ``"auto"``),
and the display closes itself in ``unconfigure``. The display, and ``rich``
with it, is imported only then: ``--help``, ``--list-plugins`` and a dry run
never draw a bar, so they never pay for ``rich``. ``ProgressDisplay`` is still
importable from here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from command_handlers import hookimpl
from command_handlers._lazy import lazy_names
from command_handlers.settings import DISPLAY_MODES, Settings

if TYPE_CHECKING:
    import pluggy

    from command_handlers.default_plugins.progress_display import ProgressDisplay

__all__ = ["MODES", "ProgressDisplay", "configure"]

#: The display modes :class:`ProgressDisplay` accepts.
MODES = DISPLAY_MODES


# rich only when something is drawn.
__getattr__ = lazy_names(
    globals(), {"ProgressDisplay": "command_handlers.default_plugins.progress_display"}
)


@hookimpl
def configure(settings: Settings, pm: pluggy.PluginManager) -> None:
    """Show the command's runs, unless ``settings.display`` is ``"quiet"``.

    Args:
        settings: The run's settings (``display``, ``verbose``).
        pm: The plugin manager.
    """
    if settings.display != "quiet":
        # Through the module, so a program (or a test) may put another class here.
        display_class = sys.modules[__name__].ProgressDisplay
        display = display_class(mode=settings.display, verbose=settings.verbose)
        pm.register(display, name="progress-display")
