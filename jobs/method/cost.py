"""What tokens cost at a profile's prices: pure arithmetic, shared by the engine, the workers and the API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Prices = tuple[float, float]  # per million prompt tokens, per million completion tokens


def amount(prompt_tokens: float, completion_tokens: float, prices: Prices) -> float:
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000


def summary(
    prompt_by_stage: Mapping[str, int], completion_by_stage: Mapping[str, int], prices: Prices, currency: str
) -> dict[str, Any]:
    """Cost so far, in total and per stage (rounded to a millionth of the currency unit)."""
    stages = sorted(set(prompt_by_stage) | set(completion_by_stage))
    by_stage = {s: amount(prompt_by_stage.get(s, 0), completion_by_stage.get(s, 0), prices) for s in stages}
    return {
        "currency": currency,
        # one sum of tokens, then one product: a sum of per-stage floats may round the other way
        "total": round(amount(sum(prompt_by_stage.values()), sum(completion_by_stage.values()), prices), 6),
        "by_stage": {s: round(v, 6) for s, v in by_stage.items()},
        "price_per_million_tokens": {"prompt": prices[0], "completion": prices[1]},
    }
