"""What a run spends: requests, tokens, failed attempts and busy time (Usage), against the whole job's
token and cost budgets, at the endpoint's prices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.method.endpoint import EMBEDDINGS_STAGE as EMBEDDINGS
from jobs.method.endpoint import Endpoint, cost_summary
from jobs.method.endpoint import cost as cost_of
from jobs.method.recipe import Recipe
from jobs.method.transport import Usage


class Accounting:
    def __init__(
        self,
        usage: Usage,
        recipe: Recipe,
        endpoint: Endpoint,
        spent_elsewhere: Callable[[], tuple[int, int]] | None = None,
        embedding_price: float | None = None,
    ):
        """`spent_elsewhere`: prompt and completion tokens the job's other runs (chunks) spent, which
        count against the whole-job budgets too. `embedding_price`: per million embedding tokens (the
        embedding endpoint's; they are priced apart, and their cost is in the cost budget)."""
        self.usage = usage
        self._recipe = recipe
        self._endpoint = endpoint
        self._spent_elsewhere = spent_elsewhere
        self._embedding_price = embedding_price

    def _embedding_cost(self) -> float:
        return self.usage.embedding_tokens * (self._embedding_price or 0.0) / 1_000_000

    def tokens_spent(self) -> tuple[int, int]:
        """Prompt and completion tokens of the whole job so far (this run and the others)."""
        prompt = sum(self.usage.prompt_tokens.values())
        completion = sum(self.usage.completion_tokens.values())
        if self._spent_elsewhere:
            more = self._spent_elsewhere()
            prompt, completion = prompt + more[0], completion + more[1]
        return prompt, completion

    def budget_reached(self) -> str | None:
        """token_budget or cost_budget once a whole-job budget is spent, else None."""
        recipe, prices = self._recipe, self._endpoint.prices
        if recipe.max_tokens is None and (recipe.max_cost is None or prices is None):
            return None
        prompt, completion = self.tokens_spent()
        if recipe.max_tokens is not None and prompt + completion >= recipe.max_tokens:
            return "token_budget"
        if (
            recipe.max_cost is not None
            and prices is not None
            and cost_of(prompt, completion, prices) + self._embedding_cost() >= recipe.max_cost
        ):
            return "cost_budget"
        return None

    def cost(self) -> dict[str, Any] | None:
        """What this run's tokens cost at the endpoint's prices (None: the profile has no prices)."""
        if self._endpoint.prices is None:
            return None
        usage, endpoint = self.usage, self._endpoint
        out = cost_summary(usage.prompt_tokens, usage.completion_tokens, endpoint.prices, endpoint.currency)
        if usage.embedding_tokens:
            out["by_stage"][EMBEDDINGS] = round(self._embedding_cost(), 6)
            out["total"] = round(out["total"] + self._embedding_cost(), 6)
        return out
