"""What a model's tokens cost: ``genai-prices``' bundled data, or a price given by hand.

``genai-prices`` (the ``prices`` extra; Python 3.11 and later) is imported only
when a price is looked up for a model other than the offline echo model, which
costs nothing. Its data ships with the package: nothing is fetched at run time.
Without it, every other model's price is unknown unless given (``--price``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from command_handlers.settings import ECHO_MODEL

__all__ = ["FREE", "Price", "model_price", "parse_price"]


@dataclass(frozen=True)
class Price:
    """US dollars per million input and output tokens.

    Attributes:
        input_usd: Dollars per million input tokens.
        output_usd: Dollars per million output tokens.
    """

    input_usd: float
    output_usd: float

    def __post_init__(self) -> None:
        for value in (self.input_usd, self.output_usd):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"a price must be a number >= 0, got {value!r}")

    def usd(self, input_tokens: float, output_tokens: float) -> float:
        """What ``input_tokens`` and ``output_tokens`` cost, in dollars.

        Args:
            input_tokens: Input tokens.
            output_tokens: Output tokens.

        Returns:
            The dollars.
        """
        return (input_tokens * self.input_usd + output_tokens * self.output_usd) / 1_000_000


#: The echo model's price: it calls nothing.
FREE = Price(0.0, 0.0)


def parse_price(text: str) -> Price:
    """Read ``--price IN,OUT``: dollars per million input and output tokens.

    Args:
        text: ``"3,15"`` (or ``"0.15, 0.6"``).

    Returns:
        The price.

    Raises:
        ValueError: It is not two numbers >= 0 separated by a comma.
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return Price(float(parts[0]), float(parts[1]))
    except ValueError:
        raise ValueError(
            f"price {text!r} is not IN,OUT (US dollars per million input and output tokens)"
        ) from None


@functools.cache
def model_price(model_id: str) -> Price | None:
    """The price of ``model_id`` from ``genai-prices``' bundled data.

    Args:
        model_id: The model's id (``gpt-4o-mini``).

    Returns:
        The price; :data:`FREE` for the echo model; ``None`` when the data
        does not know the model or ``genai-prices`` is not installed.
    """
    if model_id == ECHO_MODEL:
        return FREE
    try:
        # Imported here: it brings pydantic, which a run without prices never needs.
        from genai_prices import Usage, calc_price  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    try:
        found = calc_price(Usage(input_tokens=1_000_000, output_tokens=1_000_000), model_id)
        return Price(float(found.input_price), float(found.output_price))
    except (LookupError, ValueError):
        return None
