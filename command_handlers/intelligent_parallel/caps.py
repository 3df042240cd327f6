"""What a run may spend: the prices of its agents' calls, and the limits on spending.

``--budget-tokens`` and ``--budget-usd`` become engine budgets, ``--tpm`` a
tokens-per-minute limit per model; each call's estimate
(:mod:`.estimate`) is reserved when it starts and settled with the usage its
result reports when it ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from command_handlers.intelligent_parallel.estimate import CallEstimate
from command_handlers.intelligent_parallel.options import CommandInputError, Options
from command_handlers.plugins import (
    AsyncTask,
    Budget,
    ExecutorRegistry,
    StartLimit,
    TokenRate,
    estimated_tokens,
    spent_tokens,
)
from command_handlers.pricing import Price, model_price
from command_handlers.settings import Settings

__all__ = ["agent_models", "agent_prices", "budget_message", "run_limits", "spent_usd"]

_BUDGET = "budget of "


def agent_models(registry: ExecutorRegistry, settings: Settings) -> dict[str, str | None]:
    """Agent -> the model that answers it (``None`` for an agent program).

    Args:
        registry: The agents.
        settings: The run's settings.

    Returns:
        The models.
    """
    if settings.agent_command is not None:
        return dict.fromkeys(registry.names)
    return {name: registry.fingerprint(name) for name in registry.names}


def agent_prices(
    models: Mapping[str, str | None], given: Price | None, budget_usd: float | None
) -> dict[str, Price | None]:
    """Agent -> the price of its calls: ``--price``, else its model's, else unknown.

    Args:
        models: Agent -> its model (:func:`agent_models`).
        given: The price given with ``--price``.
        budget_usd: ``--budget-usd``: then every price must be known.

    Returns:
        The prices (``None``: unknown).

    Raises:
        CommandInputError: A dollar budget, and a model whose price is not known.
    """
    prices: dict[str, Price | None] = {}
    for agent, model in models.items():
        price = given if given is not None else model_price(model) if model else None
        if price is None and budget_usd is not None:
            raise CommandInputError(
                f"--budget-usd: the price of model {model or agent!r} is not known;"
                " give it with --price IN,OUT (US dollars per million input and output tokens)"
            )
        prices[agent] = price
    return prices


def run_limits(
    opts: Options,
    calls: Mapping[str, CallEstimate],
    prices: Mapping[str, Price | None],
    models: Mapping[str, str | None],
) -> list[StartLimit]:
    """The engine limits of ``--budget-tokens``, ``--budget-usd`` and ``--tpm``.

    Args:
        opts: The options.
        calls: Task id -> its call's estimate.
        prices: Agent -> its price.
        models: Agent -> its model (``--tpm`` holds per model).

    Returns:
        The limits, for :attr:`RunPolicy.limits`.
    """
    limits: list[StartLimit] = []
    if opts.budget_tokens is not None:
        label = f"{opts.budget_tokens:,} tokens"
        limits.append(Budget(opts.budget_tokens, estimated_tokens, spent_tokens, label=label))
    if opts.budget_usd is not None:

        def usd_estimate(task: AsyncTask) -> float:
            price, call = prices.get(task.agent_name), calls.get(task.task_id)
            if price is None or call is None:
                return 0.0
            return price.usd(call.input_tokens, call.output_tokens)

        def usd_spent(task: AsyncTask, result: Any) -> float | None:
            usage = result.get("usage") if isinstance(result, Mapping) else None
            price = prices.get(task.agent_name)
            if price is None or spent_tokens(task, result) is None or usage is None:
                return None
            return price.usd(int(usage["input_tokens"]), int(usage["output_tokens"]))

        label = f"${opts.budget_usd:g}"
        limits.append(Budget(opts.budget_usd, usd_estimate, usd_spent, label=label))
    if opts.tpm is not None:

        def model_of(task: AsyncTask) -> str | None:
            return models.get(task.agent_name) or task.agent_name

        limits.append(TokenRate(opts.tpm, estimated_tokens, spent_tokens, group=model_of))
    return limits


def spent_usd(
    rows: Sequence[Mapping[str, Any]], prices: Mapping[str, Price | None]
) -> float | None:
    """The dollars the run's calls spent, from their usage; ``None`` when a price is unknown.

    Args:
        rows: The report's task rows.
        prices: Agent -> its price.

    Returns:
        The dollars (0 when no call reported usage and every price is known).
    """
    total = 0.0
    for row in rows:
        price = prices.get(row["agent"])
        if price is None:
            return None
        usage = row.get("usage")
        if usage:
            total += price.usd(usage["input_tokens"], usage["output_tokens"])
    return round(total, 6)


def budget_message(
    cancelled: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> str | None:
    """The line saying that a budget stopped the run, if one did.

    Args:
        cancelled: The summary's ``cancelled_tasks``.
        rows: The report's task rows.

    Returns:
        ``budget of 15,000 tokens reached: 7 notes not answered; run again
        with a larger budget``, or ``None``.
    """
    for item in cancelled:
        reason = str(item.get("reason", ""))
        if reason.startswith(_BUDGET):
            waiting = len({row["node_id"] for row in rows if row["status"] == "cancelled"})
            return (
                f"{reason}: {waiting} {'note' if waiting == 1 else 'notes'} not answered;"
                " run again with a larger budget"
            )
    return None
