"""Where a request waits for its turn at an endpoint whose limits are shared: by every worker and every
job that sends to it, not only by one run.

A Gate is asked before each attempt (`enter`, with the tokens the request may spend) and told how it
went after (`leave`): answered, throttled (a 429, with the Retry-After it carried), or failed otherwise,
with the answer's rate-limit headers. The in-process default lets everything through: one run's own
concurrency and its RateLimits (rate_limits.py) pace it. A cluster's gate lives where every worker sees
it (jobs.store.limits, in Redis), and what one worker learns (a 429, a spent limit) slows them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from jobs.method.transport.rate_limits import duration


@dataclass(frozen=True)
class Passage:
    """An attempt let through: `ticket` names it to `leave`; `waited` is how long it was held."""

    ticket: str
    waited: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """How an attempt went: `ok` (answered), `throttled` (a 429; `retry_after` seconds when it said),
    else failed; `tokens` it spent; the answer's headers (x-ratelimit-*, Retry-After). `hold`: an
    attempt abandoned while out (its run stopped) may still be worked on by the provider, which counts
    it in flight: its slot stays taken this many seconds more."""

    ok: bool
    throttled: bool = False
    retry_after: float | None = None
    tokens: int = 0
    headers: Mapping[str, str] | None = None
    hold: float = 0.0


def pause_after(outcome: Outcome, max_wait: float) -> float:
    """Seconds every sender should wait after this answer: a 429's Retry-After (1 s if it named none),
    or the reset of a limit its headers say is spent; at most `max_wait`."""
    pause = 0.0
    if outcome.throttled:
        pause = outcome.retry_after if outcome.retry_after is not None else 1.0
    headers = outcome.headers or {}
    for kind in ("requests", "tokens"):
        try:
            left = float(headers.get(f"x-ratelimit-remaining-{kind}", ""))
        except ValueError:
            continue
        reset = duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if left <= 0 and reset:
            pause = max(pause, reset)
    return min(pause, max_wait)


class Gate(Protocol):
    async def enter(self, tokens: int) -> Passage: ...

    async def leave(self, passage: Passage, outcome: Outcome) -> None: ...

    async def close(self) -> None: ...


class OpenGate:
    """No shared limit: every attempt goes at once."""

    async def enter(self, tokens: int) -> Passage:
        return Passage("")

    async def leave(self, passage: Passage, outcome: Outcome) -> None:
        return None

    async def close(self) -> None:
        return None
