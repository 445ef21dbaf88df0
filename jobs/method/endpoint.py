"""Where completions come from (an Endpoint: an OpenAI-compatible server, its API kind and mode, its
options), where semantic deduplication's embeddings come from (an EmbeddingEndpoint), and what their
tokens cost at their prices: pure data and arithmetic, shared by the engine, the workers and the API
(the operator's profiles hold one each: jobs.settings)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.method.vocabulary import API_KINDS, MODES, RESPONSE_FORMATS, TOKEN_LIMITS

# A 400 naming `temperature`, which no other refusal drops, says a chat endpoint is a reasoning model.
REASONING_SIGN = "temperature"
LIMITS = ("max_in_flight", "requests_per_minute", "tokens_per_minute")
EMBEDDINGS_STAGE = "embeddings"  # the usage's name for embedding requests (semantic deduplication)

Prices = tuple[float, float]  # per million prompt tokens, per million completion tokens


def cost(prompt_tokens: float, completion_tokens: float, prices: Prices) -> float:
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000


def cost_summary(
    prompt_by_stage: Mapping[str, int], completion_by_stage: Mapping[str, int], prices: Prices, currency: str
) -> dict[str, Any]:
    """Cost so far, in total and per stage (rounded to a millionth of the currency unit)."""
    stages = sorted(set(prompt_by_stage) | set(completion_by_stage))
    by_stage = {s: cost(prompt_by_stage.get(s, 0), completion_by_stage.get(s, 0), prices) for s in stages}
    return {
        "currency": currency,
        # one sum of tokens, then one product: a sum of per-stage floats may round the other way
        "total": round(cost(sum(prompt_by_stage.values()), sum(completion_by_stage.values()), prices), 6),
        "by_stage": {s: round(v, 6) for s, v in by_stage.items()},
        "price_per_million_tokens": {"prompt": prices[0], "completion": prices[1]},
    }


@dataclass(frozen=True)
class Endpoint:
    """Where completions come from. `supports_n`: the server honours n>1 (llama.cpp does not).
    `api`: completions or chat; `response_format`: None, or how a chat endpoint takes a JSON schema.
    `max_tokens_param`: the chat token cap's name (None: max_completion_tokens; completions always
    send max_tokens). `send_seed`: send each request's seed (None: on completions, not on chat, where
    OpenAI deprecated it). `reasoning`: a chat reasoning model; leave out what it refuses. `mode`:
    online, or batch (the provider's Batch API; `prices` are then its batch prices)."""

    base_url: str
    model: str
    api_key: str = "sk-local"
    timeout: float = 120.0
    max_attempts: int = 6
    max_wait: float = 30.0
    supports_n: bool = False
    api: str = "completions"
    response_format: str | None = None
    prices: Prices | None = None
    currency: str = "USD"
    max_tokens_param: str | None = None
    send_seed: bool | None = None
    reasoning: bool = False
    mode: str = "online"
    # what the provider allows for this model, shared by every worker and job that sends to it
    # (jobs.store.limits): requests in flight at once, requests and tokens a minute (None: no limit)
    max_in_flight: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.api not in API_KINDS:
            raise ValueError(f"api must be one of {API_KINDS}, not {self.api!r}")
        if self.response_format is not None and (
            self.api != "chat" or self.response_format not in RESPONSE_FORMATS
        ):
            raise ValueError(f"response_format is for chat endpoints: one of {RESPONSE_FORMATS}")
        if self.max_tokens_param not in (None, *TOKEN_LIMITS) or (
            self.max_tokens_param == "max_completion_tokens" and self.api != "chat"
        ):
            raise ValueError(f"max_tokens_param is one of {TOKEN_LIMITS}; completions take max_tokens")
        if self.reasoning and self.api != "chat":
            raise ValueError("reasoning is for chat endpoints")
        if not isinstance(self.send_seed, bool | None) or not isinstance(self.reasoning, bool):
            raise ValueError("send_seed and reasoning are true or false")
        for name in LIMITS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} is a whole number of at least 1, or null")

    @property
    def limited(self) -> bool:
        """The provider's limits are known: its requests wait their turn at a gate every worker shares."""
        return any(getattr(self, name) is not None for name in LIMITS)

    @property
    def limit_key(self) -> str:
        """What shares one limit: the model at one server (two profiles for it share it)."""
        return hashlib.sha256(f"{self.base_url}|{self.model}".encode()).hexdigest()[:16]

    @property
    def token_limit(self) -> str:
        """The token cap's name, as configured."""
        return self.max_tokens_param or ("max_completion_tokens" if self.api == "chat" else "max_tokens")

    @property
    def seeded(self) -> bool:
        return self.api == "completions" if self.send_seed is None else self.send_seed

    def public(self, dropped: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What may be recorded in run.json: never the key. With the run's refused parameters
        (`dropped`), a chat endpoint's record says what its requests ended up carrying."""
        out = {
            "base_url": self.base_url,
            "model": self.model,
            "supports_n": self.supports_n,
            "api": self.api,
            "response_format": self.response_format,
            "price_per_million_tokens": None
            if self.prices is None
            else {"prompt": self.prices[0], "completion": self.prices[1], "currency": self.currency},
        }
        dropped = dropped or {}
        if self.api == "chat":
            out["max_tokens_param"] = token_limit(self, dropped)
            out["send_seed"] = self.seeded and "seed" not in dropped
            out["reasoning"] = is_reasoning(self, dropped)
        elif not self.seeded:  # completions runs recorded before these options read as before
            out["send_seed"] = False
        if self.mode != "online":  # online runs' records read as before
            out["mode"] = self.mode
        return out


def token_limit(endpoint: Endpoint, dropped: Mapping[str, str]) -> str:
    """The token cap's name in use: the configured one, or the other once the endpoint refused it."""
    name = endpoint.token_limit
    if endpoint.api == "chat" and name in dropped:
        return next(other for other in TOKEN_LIMITS if other != name)
    return name


def is_reasoning(endpoint: Endpoint, dropped: Mapping[str, str]) -> bool:
    """A reasoning model: the profile says so, or the endpoint refused `temperature`."""
    return endpoint.reasoning or (endpoint.api == "chat" and REASONING_SIGN in dropped)


@dataclass(frozen=True)
class EmbeddingEndpoint:
    """Where embeddings come from. `price`: per million input tokens (None: not priced). `max_chars`: a
    text is cut to this many characters first (an instruction that long is dropped as too long before
    it is compared; the embedded model reads at most 512 tokens)."""

    base_url: str
    model: str
    api_key: str = "sk-local"
    timeout: float = 60.0
    max_attempts: int = 6
    max_wait: float = 30.0
    batch: int = 64
    price: float | None = None
    max_chars: int = 1500

    def __post_init__(self) -> None:
        for name in ("timeout", "max_wait"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"embeddings.{name} is a positive number of seconds")
        for name in ("batch", "max_attempts", "max_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"embeddings.{name} is a whole number of at least 1")

    def public(self) -> dict[str, object]:
        """What run.json records: never the key."""
        return {"base_url": self.base_url, "model": self.model, "price_per_million_tokens": self.price}
