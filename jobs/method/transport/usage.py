"""What a run's requests spent: per stage requests and tokens, failed attempts, busy time, the parameters
the endpoint refused, and the waits for its rate limits."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Usage:
    # per stage
    requests: Counter[str] = field(default_factory=Counter)  # successful requests
    prompt_tokens: Counter[str] = field(default_factory=Counter)
    completion_tokens: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # failed attempts by kind
    busy_seconds: float = 0.0
    # parameter -> why the run went on without it (what the endpoint said, mostly)
    dropped: dict[str, str] = field(default_factory=dict)
    # requests held back until a rate limit's reset (RateLimits), and how long they waited in all
    rate_limit_waits: int = 0
    rate_limit_seconds: float = 0.0
    # input tokens of embedding requests (their count is requests["embeddings"]): priced apart, at the
    # embedding endpoint's price, and not in the token budget (max_tokens counts the LLM's)
    embedding_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "prompt_tokens": dict(self.prompt_tokens),
            "completion_tokens": dict(self.completion_tokens),
            "retries": self.retries,
            "errors": dict(self.errors),
            "busy_seconds": round(self.busy_seconds, 3),
            "dropped": dict(sorted(self.dropped.items())),
            "rate_limit_waits": self.rate_limit_waits,
            "rate_limit_seconds": round(self.rate_limit_seconds, 3),
            "embedding_tokens": self.embedding_tokens,
        }

    def merge(self, other: Usage) -> None:
        """Add another run's requests, tokens, failed attempts, busy time and rate-limit waits (a chunk's,
        at the end). Refused parameters are not merged: the job's record holds them for every part."""
        self.requests.update(other.requests)
        self.prompt_tokens.update(other.prompt_tokens)
        self.completion_tokens.update(other.completion_tokens)
        self.errors.update(other.errors)
        self.retries += other.retries
        self.busy_seconds += other.busy_seconds
        self.rate_limit_waits += other.rate_limit_waits
        self.rate_limit_seconds += other.rate_limit_seconds
        self.embedding_tokens += other.embedding_tokens

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            Counter(data["requests"]),
            Counter(data["prompt_tokens"]),
            Counter(data["completion_tokens"]),
            data["retries"],
            Counter(data["errors"]),
            data["busy_seconds"],
            dict(data.get("dropped", {})),
            data.get("rate_limit_waits", 0),
            data.get("rate_limit_seconds", 0.0),
            data.get("embedding_tokens", 0),
        )
