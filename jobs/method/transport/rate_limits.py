"""What an endpoint's rate-limit headers say (Retry-After, OpenAI's x-ratelimit-remaining-/reset-*), and
when the next request may go."""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if the error carries one."""
    response = getattr(exc, "response", None)
    return retry_after_header(response.headers) if response is not None else None


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if there is a readable one."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):  # an unreadable header: fall back to the backoff
        return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration(value: str | None) -> float | None:
    """Seconds from an x-ratelimit-reset-* header: a Go duration ("20ms", "1s", "6m0s", "1h2m3.5s") as
    OpenAI writes them, or bare seconds; None when unreadable."""
    text = (value or "").strip()
    parts = _DURATION.findall(text)
    if parts and "".join(number + unit for number, unit in parts) == text:
        return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    try:
        return max(0.0, float(text))
    except ValueError:
        return None


class RateLimits:
    """What the endpoint's rate-limit headers said (OpenAI's x-ratelimit-remaining-/reset-requests and
    -tokens, and Retry-After): when the next request may go. Waiting for the reset once a limit is
    spent costs the same time as the 429 the request would get, without the failed attempt. No wait is
    longer than `max_wait`, as for retries (a token limit's reset is when it is whole again, which can be
    minutes; a request may go sooner)."""

    KINDS = ("requests", "tokens")

    def __init__(self, max_wait: float = math.inf) -> None:
        self.max_wait = max_wait
        self.remaining = dict.fromkeys(self.KINDS, math.inf)
        self.reset_at = dict.fromkeys(self.KINDS, 0.0)  # monotonic
        self.paused_until = 0.0

    def observe(self, headers: Mapping[str, str], others_in_flight: int, now: float) -> None:
        for kind in self.KINDS:
            reset = duration(headers.get(f"x-ratelimit-reset-{kind}"))
            try:
                left = float(headers.get(f"x-ratelimit-remaining-{kind}", ""))
            except ValueError:
                continue
            if reset is None:
                continue
            # requests sent before this answer may not be counted in it yet: take them as spent
            left = left - others_in_flight if kind == "requests" else left
            if now < self.reset_at[kind]:
                # the same window: what is left only shrinks (an answer read late says more than is
                # left), and its end is the latest one heard of
                left = min(left, self.remaining[kind])
                reset = max(reset, self.reset_at[kind] - now)
            self.remaining[kind] = left
            self.reset_at[kind] = now + min(reset, self.max_wait)
        if (hinted := retry_after_header(headers)) is not None:  # on a 429: every request waits
            self.paused_until = max(self.paused_until, now + min(hinted, self.max_wait))

    def delay(self, now: float) -> float:
        """Seconds the next request should wait (0: go)."""
        waits = [self.paused_until - now]
        for kind in self.KINDS:
            if now >= self.reset_at[kind]:  # renewed: unknown until the next answer says
                self.remaining[kind] = math.inf
            elif self.remaining[kind] <= 0:
                waits.append(self.reset_at[kind] - now)
        return max(0.0, *waits)

    def sent(self) -> None:
        self.remaining["requests"] -= 1
