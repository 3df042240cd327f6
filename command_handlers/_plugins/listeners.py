"""Call every implementation of a hook one by one, cheaply: listeners isolated, preparers not."""

from __future__ import annotations

import inspect
import logging
import operator
import sys
from types import CoroutineType
from typing import Any, Callable

import pluggy

from command_handlers._plugins.registry import plugin_name
from command_handlers.hookspecs import StopRun

__all__ = ["Listeners", "is_coroutine_function"]

logger = logging.getLogger("command_handlers.plugins")


def _adapt(
    function: Callable[..., Any], positions: tuple[int, ...], arity: int
) -> Callable[..., Any]:
    """Make an implementation that takes some of a hook's arguments accept all of them."""
    if positions == tuple(range(arity)):
        return function
    if not positions:
        return lambda *args: function()
    if len(positions) == 1:
        only = positions[0]
        return lambda *args: function(args[only])
    pick = operator.itemgetter(*positions)
    return lambda *args: function(*pick(args))


def is_coroutine_function(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` gives a coroutine (``async def``, async ``__call__``)."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(type(function), "__call__", None)  # noqa: B004 - an async __call__ method
    )


def _awaitable(value: Any) -> bool:
    return value is not None and (type(value) is CoroutineType or inspect.isawaitable(value))


def _sync_caller(
    impls: list[tuple[Callable[..., Any], str]],
    arity: int,
    log: Callable[[str, tuple[Any, ...]], None],
) -> Callable[..., None] | None:
    """A caller of plain-function listeners that takes the hook's arguments by position.

    ``call_sync(*args)`` packs the arguments into a tuple and unpacks it again
    for every listener, which costs more than a listener that does nothing;
    the usual arities get a closure that passes them on as they came.
    """
    pairs = tuple(impls)
    if arity == 1:

        def call_1(a: Any) -> None:
            for function, plugin in pairs:
                try:
                    function(a)
                except Exception:  # pylint: disable=broad-exception-caught
                    log(plugin, (a,))

        return call_1
    if arity == 2:

        def call_2(a: Any, b: Any) -> None:
            for function, plugin in pairs:
                try:
                    function(a, b)
                except Exception:  # pylint: disable=broad-exception-caught
                    log(plugin, (a, b))

        return call_2
    if arity == 3:

        def call_3(a: Any, b: Any, c: Any) -> None:
            for function, plugin in pairs:
                try:
                    function(a, b, c)
                except Exception:  # pylint: disable=broad-exception-caught
                    log(plugin, (a, b, c))

        return call_3
    return None


class Listeners:
    """The implementations of one hook, called positionally in pluggy's order.

    Pluggy's own dispatch builds a keyword dict per call; a run calls its
    listeners several times per task, so each implementation is adapted once
    to the hook's positional arguments instead.

    Args:
        pm: The plugin manager.
        hook_name: The hook.
        extra: The caller's own callback, called after the plugins.
        extra_name: What the caller calls it, for the log.
        stop: Given what a listener raised when it is a
            :class:`~command_handlers.hookspecs.StopRun`, instead of the log.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        hook_name: str,
        extra: Callable[..., Any] | None = None,
        extra_name: str = "progress_callback",
        stop: Callable[[StopRun], None] | None = None,
    ) -> None:
        caller = getattr(pm.hook, hook_name)
        spec_args = tuple(caller.spec.argnames) if caller.spec else ()
        impls = [
            impl
            for impl in reversed(caller.get_hookimpls())
            if not (impl.hookwrapper or impl.wrapper)
        ]
        self.hook_name = hook_name
        self.extra_name = extra_name
        self.stop = stop
        self.arity = len(spec_args)
        self.impls = [
            (
                _adapt(
                    impl.function,
                    tuple(spec_args.index(name) for name in impl.argnames),
                    len(spec_args),
                ),
                plugin_name(pm, impl),
            )
            for impl in impls
        ]
        self.is_async = any(is_coroutine_function(impl.function) for impl in impls)
        if extra is not None:
            self.impls.append((extra, ""))
            self.is_async = self.is_async or is_coroutine_function(extra)

    def callback(self) -> Callable[..., Any] | None:
        """The cheapest callable that calls every implementation, or None if there is none."""
        if not self.impls:
            return None
        if self.is_async:
            return self.call_async
        return _sync_caller(self.impls, self.arity, self._log) or self.call_sync

    def call_sync(self, *args: Any) -> None:
        """Call every implementation (all plain functions); log what raises."""
        for function, plugin in self.impls:
            try:
                function(*args)
            except Exception:  # pylint: disable=broad-exception-caught
                self._log(plugin, args)

    async def call_async(self, *args: Any) -> None:
        """Call every implementation, awaiting coroutines; log what raises."""
        for function, plugin in self.impls:
            try:
                outcome = function(*args)
                if _awaitable(outcome):
                    await outcome
            except Exception:  # pylint: disable=broad-exception-caught
                self._log(plugin, args)

    async def call_strict(self, *args: Any) -> None:
        """Call every implementation, awaiting coroutines; what one raises propagates."""
        for function, _ in self.impls:
            outcome = function(*args)
            if _awaitable(outcome):
                await outcome

    def _log(self, plugin: str, args: tuple[Any, ...]) -> None:
        error = sys.exc_info()[1]  # called from the except block
        if isinstance(error, StopRun) and self.stop is not None:
            self.stop(error)
            return
        if plugin:
            logger.exception("plugin %r raised in %s; the run goes on", plugin, self.hook_name)
        else:
            logger.exception("%s raised for task %r; the run goes on", self.extra_name, args[0])
