"""Build a plugin manager: built-ins by dotted name, installed plugins, ``-p`` modules, blocking.

As pytest and llm do it: a built-in is listed by its module's dotted name and
imported only when it is enabled, so a disabled built-in's module is never
imported and the core never imports any of them.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

import pluggy

from command_handlers import hookspecs

__all__ = [
    "BUILTIN_PLUGINS",
    "DISABLE_PLUGINS_ENV",
    "ENTRY_POINT_GROUP",
    "LOAD_PLUGINS_ENV",
    "PLUGINS_ENV",
    "PluginInfo",
    "PluginLoadError",
    "get_plugin_manager",
    "list_plugins",
]

#: Plugins installed under this entry-point group are loaded by :func:`get_plugin_manager`.
ENTRY_POINT_GROUP = "command_handlers"
#: A comma-separated allowlist of entry-point plugin names (empty: load none).
LOAD_PLUGINS_ENV = "COMMAND_HANDLERS_LOAD_PLUGINS"
#: Comma-separated plugin names (built-in or installed) not to load.
DISABLE_PLUGINS_ENV = "COMMAND_HANDLERS_DISABLE_PLUGINS"
#: Comma-separated modules to load as plugins, by import name (as ``-p``).
PLUGINS_ENV = "COMMAND_HANDLERS_PLUGINS"

#: The built-in plugins: name -> the module imported, only when enabled.
BUILTIN_PLUGINS: Mapping[str, str] = {
    "engine": "command_handlers.default_plugins.engine_backend",
    "color-router": "command_handlers.default_plugins.routing",
    "llm-agents": "command_handlers.default_plugins.llm_agents",
    "command-agent": "command_handlers.default_plugins.command_agent",
    "journal": "command_handlers.default_plugins.journal",
    "progress": "command_handlers.default_plugins.progress",
    "model-router": "command_handlers.default_plugins.model_router",
    "dask": "command_handlers.default_plugins.dask_backend",
}

_BUILT_IN = "built-in"
_COMMAND_LINE = "-p"


class PluginLoadError(ValueError):
    """A plugin named to be disabled is unknown, or a plugin module cannot be imported."""


@dataclass(frozen=True)
class PluginInfo:
    """One plugin a manager knows of, for ``--list-plugins``.

    Attributes:
        name: The name it is registered (or blocked) under.
        source: ``"built-in"``, ``"entry point"``, ``"-p"``, or ``"registered"``
            for an object a program registered.
        module: Its module's import name, or the entry point's target.
        enabled: ``False`` when it was disabled (then it was never imported).
    """

    name: str
    source: str
    module: str
    enabled: bool = True

    def line(self) -> str:
        """One line for people: name, where it came from, module, and whether disabled."""
        state = "" if self.enabled else "  (disabled)"
        return f"{self.name:<16} {self.source:<12} {self.module}{state}"


def _names(values: Iterable[str]) -> list[str]:
    """Split ``a,b`` and repeated values into names, in order, without duplicates."""
    names = (name.strip() for value in values for name in value.split(","))
    return list(dict.fromkeys(name for name in names if name))


def _entry_points() -> list[metadata.EntryPoint]:
    if sys.version_info >= (3, 10):
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    return list(metadata.entry_points().get(ENTRY_POINT_GROUP, ()))  # pragma: no cover


def get_plugin_manager(
    *,
    load_entry_points: bool = True,
    disabled: Iterable[str] = (),
    plugins: Iterable[str] = (),
) -> pluggy.PluginManager:
    """Build a new plugin manager: hook specs, built-ins, installed plugins, ``-p`` modules.

    Each call returns a new manager, so programs and tests never share hidden
    state. Names come from the arguments and from the environment:

    * ``COMMAND_HANDLERS_DISABLE_PLUGINS`` and ``disabled`` (``--disable-plugin``):
      plugin names (built-in or installed) that are blocked: never imported,
      never registered. An unknown name is an error listing the known ones.
    * ``COMMAND_HANDLERS_PLUGINS`` and ``plugins`` (``-p``): modules imported by
      name and registered under that name; ``no:NAME`` blocks ``NAME`` instead.
    * ``COMMAND_HANDLERS_LOAD_PLUGINS``, when set: a comma-separated allowlist of
      the installed (entry-point) plugins to load; empty loads none.

    Args:
        load_entry_points: Load installed plugins (``False`` for none: ``--no-plugins``).
        disabled: Names not to load; ``"a,b"`` lists work too.
        plugins: Modules to load as plugins, by import name.

    Returns:
        The plugin manager.

    Raises:
        PluginLoadError: An unknown name to disable, or a module that cannot be
            imported; the message is one line.
    """
    pm = pluggy.PluginManager("command_handlers")
    pm.add_hookspecs(hookspecs)
    requested = _names([os.environ.get(PLUGINS_ENV, ""), *plugins])
    # pytest's spelling: ``-p no:NAME`` blocks NAME.
    modules = [name for name in requested if not name.startswith("no:")]
    blocked = _names(
        [
            os.environ.get(DISABLE_PLUGINS_ENV, ""),
            *disabled,
            *(name[3:] for name in requested if name.startswith("no:")),
        ]
    )
    known = [*BUILTIN_PLUGINS, *modules]
    if any(name not in known for name in blocked):  # installed plugins' names, looked up lazily
        known += [ep.name for ep in _entry_points()]
    unknown = [name for name in blocked if name not in known]
    if unknown:
        raise PluginLoadError(
            f"cannot disable unknown plugin {', '.join(map(repr, unknown))};"
            f" known plugins: {', '.join(dict.fromkeys(known))}"
        )
    for name in blocked:
        pm.set_blocked(name)
    for name, module in BUILTIN_PLUGINS.items():
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(module), name=name)
    if load_entry_points:
        allowed = os.environ.get(LOAD_PLUGINS_ENV)
        if allowed is None:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        else:
            for name in _names([allowed]):
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    for module in modules:
        if pm.is_blocked(module) or pm.has_plugin(module):
            continue
        try:
            plugin = importlib.import_module(module)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise PluginLoadError(f"cannot load plugin module {module!r}: {detail}") from exc
        if not pm.is_registered(plugin):  # a built-in or installed plugin named again
            pm.register(plugin, name=module)
    return pm


def list_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every plugin the manager loaded or blocked, built-ins first.

    Args:
        pm: A manager from :func:`get_plugin_manager`.

    Returns:
        One :class:`PluginInfo` per plugin.
    """
    infos = [
        PluginInfo(name, _BUILT_IN, module, enabled=not pm.is_blocked(name))
        for name, module in BUILTIN_PLUGINS.items()
    ]
    from_entry_points = {pm.get_name(plugin) for plugin, _ in pm.list_plugin_distinfo()}
    for ep in _entry_points():
        if ep.name in from_entry_points:
            infos.append(PluginInfo(ep.name, "entry point", ep.value))
        elif pm.is_blocked(ep.name):
            infos.append(PluginInfo(ep.name, "entry point", ep.value, enabled=False))
    listed = {info.name for info in infos}
    for name, plugin in pm.list_name_plugin():
        if name not in listed and plugin is not None:
            if isinstance(plugin, ModuleType):
                infos.append(PluginInfo(name, _COMMAND_LINE, plugin.__name__))
            else:  # an object a program or a plugin's configure registered
                kind = type(plugin)
                infos.append(
                    PluginInfo(name, "registered", f"{kind.__module__}.{kind.__qualname__}")
                )
    return infos
