"""The LLM client: any OpenAI-compatible endpoint, through /v1/completions (a base model continuing the
paper's text layouts) or /v1/chat/completions (an instruction-following model answering messages),
with retries, token and busy-time accounting, sampling parameters an endpoint refuses dropped, and
requests paced to the endpoint's rate-limit headers.

Chat requests follow OpenAI's current description (tests/test_contracts.py): the token cap is
`max_completion_tokens` (`max_tokens` is deprecated there, but the only name llama.cpp's servers know),
`seed` is not sent unless the endpoint says so (deprecated there too), and a reasoning model gets none
of the sampling parameters it refuses."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from jobs.method import cost, metrics
from jobs.method.recipe import Decoding

log = structlog.get_logger(__name__)


API_KINDS = ("completions", "chat")
# online: each request as it is built; batch: a stage's requests through the provider's Batch API
# (jobs.method.batch), at its batch prices
MODES = ("online", "batch")
# How a chat endpoint takes a JSON schema for structured replies: OpenAI and vLLM use `json_schema`;
# llama.cpp's server (and Anyscale) use `json_object` with a `schema` beside it.
RESPONSE_FORMATS = ("json_schema", "json_object")
# Optional request parameters: when an endpoint refuses one (HTTP 400 naming it), the run drops it and
# goes on, with a warning, instead of failing.
DROPPABLE = (
    "presence_penalty",
    "frequency_penalty",
    "top_p",
    "seed",
    "stop",
    "n",
    "logprobs",
    "top_logprobs",
)

# The chat token cap's two names: an endpoint that refuses one (HTTP 400 naming it) gets the other for the
# rest of the run.
TOKEN_LIMITS = ("max_completion_tokens", "max_tokens")
# What reasoning models refuse (OpenAI's reasoning guide; "not supported with latest reasoning models"
# for `stop` in its description). A reasoning endpoint gets none of them, and n>1 as separate requests.
# A 400 naming `temperature`, which no other refusal drops, says the endpoint is one.
REASONING_REFUSES = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "logprobs",
    "top_logprobs",
)
REASONING_SIGN = "temperature"

Prompt = str | list[dict[str, str]]  # a text to continue, or chat messages


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
    prices: tuple[float, float] | None = None  # per million prompt and completion tokens
    currency: str = "USD"
    max_tokens_param: str | None = None
    send_seed: bool | None = None
    reasoning: bool = False
    mode: str = "online"

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
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    # the first generated token's most likely alternatives (token -> log-probability), when asked for
    # and the endpoint gave them
    top_logprobs: dict[str, float] | None = None
    # stage 1's candidates as an earlier run recorded them (an extension's replay): no text to parse
    candidates: list[str] | None = None


class MalformedResponse(Exception):
    """A 200 answer that is not a completion (no choices, no text)."""


class EndpointError(RuntimeError):
    """The endpoint failed past every retry, or refused the request outright."""


def rejected_parameter(exc: BaseException, sent: dict[str, Any]) -> str | None:
    """The request parameter a 400 answer names (OpenAI's `param` field, or its name in the message)."""
    if not isinstance(exc, openai.BadRequestError):
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body.get("error", body), dict) else body
    param = error.get("param") if isinstance(error, dict) else None
    if isinstance(param, str) and param:
        return param
    text = exc.response.text if exc.response is not None else str(exc)
    named = [name for name in sent if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text)]
    return max(named, key=len) if named else None


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return str(exc.status_code)
    return "malformed"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        if any(refusal in str(exc) for refusal in REFUSALS):
            return False
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(
        exc,
        (
            openai.APIConnectionError,
            openai.APIResponseValidationError,
            MalformedResponse,
            json.JSONDecodeError,
        ),
    )


# Errors that say what the server cannot do, whatever their status: retrying cannot change them.
# llama.cpp's Python server answers 500 with this to a request for log-probabilities when it was
# started without logits_all.
REFUSALS = ("logprobs is not supported",)


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
        )


class LLM:
    """Completions with at most `concurrency` requests in flight; counts tokens, retries, busy time."""

    batch = False  # requests go one by one (jobs.method.batch.BatchLLM: through the Batch API)

    def capacity(self, concurrency: int) -> int:
        """How many requests a stage may have out at once."""
        return concurrency

    @property
    def chat(self) -> bool:
        return self.endpoint.api == "chat"

    @property
    def reasoning(self) -> bool:
        return is_reasoning(self.endpoint, self.usage.dropped)

    @property
    def structured(self) -> bool:
        """Replies can be constrained to a JSON schema (a chat endpoint with a response_format)."""
        return self.chat and self.endpoint.response_format is not None

    def __init__(self, endpoint: Endpoint, concurrency: int, usage: Usage | None = None):
        self.endpoint = endpoint
        self.usage = usage or Usage()
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=0,  # tenacity retries, so Retry-After and the counts are ours
            timeout=httpx.Timeout(endpoint.timeout, connect=min(10.0, endpoint.timeout)),
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._limits = RateLimits(endpoint.max_wait)
        self._in_flight = 0
        self._busy_since = 0.0

    async def close(self) -> None:
        await self._client.close()

    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_exponential_jitter(multiplier=0.5, max=self.endpoint.max_wait, jitter=1.0)(state)
        hinted = retry_after(state.outcome.exception() if state.outcome else None)
        return backoff if hinted is None else min(hinted, self.endpoint.max_wait)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        kind = _error_kind(exc) if exc else "unknown"
        self.usage.retries += 1
        metrics.LLM_RETRIES.labels(kind).inc()
        log.warning("llm_retry", attempt=state.attempt_number, error=kind)

    async def complete(
        self,
        prompt: Prompt,
        decoding: Decoding,
        seed: int,
        stage: str,
        schema: dict[str, Any] | None = None,
        **override: Any,
    ) -> list[Completion]:
        """`decoding.n` completions for one prompt, as separate requests unless the endpoint honours n.

        `schema`: a JSON schema the reply must follow, where the endpoint is `structured`; a reply
        that is not JSON is then a malformed response (retried)."""
        params, n = self._plan(prompt, decoding, stage, schema, override)
        if n > 1 and self.endpoint.supports_n and not self.reasoning:
            out = await self._request(prompt, params, seed, n, stage)
            extra = [await self._request(prompt, params, seed + i, 1, stage) for i in range(len(out), n)]
            return out + [c for batch in extra for c in batch]
        results = await asyncio.gather(*(self._request(prompt, params, seed + i, 1, stage) for i in range(n)))
        return [c for batch in results for c in batch]

    def _plan(
        self,
        prompt: Prompt,
        decoding: Decoding,
        stage: str,
        schema: dict[str, Any] | None,
        override: dict[str, Any],
    ) -> tuple[dict[str, Any], int]:
        """One prompt's sampling parameters (before the endpoint's refusals) and completion count."""
        if isinstance(prompt, str) == self.chat:
            raise TypeError(f"a {self.endpoint.api} endpoint takes {'messages' if self.chat else 'text'}")
        override = dict(override)
        n = override.pop("n", decoding.n)
        params = {
            "max_tokens": decoding.max_tokens,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "frequency_penalty": decoding.frequency_penalty,
            "presence_penalty": decoding.presence_penalty,
            "stop": list(decoding.stop) or None,
            **override,
        }
        if schema is not None and self.structured:
            params["stop"] = None  # the grammar ends the reply; a stop sequence could cut the JSON
            params["response_format"] = _response_format(str(self.endpoint.response_format), stage, schema)
        return params, n

    async def _request(
        self, prompt: Prompt, params: dict[str, Any], seed: int, n: int, stage: str
    ) -> list[Completion]:
        async with self._slots:
            refused: set[str] = set()  # by this request: each may be refused once, then it is an error
            while True:
                try:
                    return await self._attempts(prompt, params, seed, n, stage)
                except openai.BadRequestError as exc:
                    # what this request may have sent: its parameters, and those refused while it was out
                    sent = {**self._arguments(params, seed, n), **dict.fromkeys(self.usage.dropped)}
                    param = rejected_parameter(exc, sent)
                    if (
                        param is None
                        or param not in sent
                        or param in refused
                        or not self._adapt(param, _describe(exc))
                    ):
                        raise self._failure(exc, stage, param) from None
                    refused.add(param)
                except (openai.OpenAIError, MalformedResponse, json.JSONDecodeError) as exc:
                    raise self._failure(exc, stage) from None

    def _adapt(self, param: str, said: str) -> bool:
        """Go on without a refused parameter for the rest of the run, and say why (False: it cannot go);
        `said`: the refusal as the endpoint put it. A request in flight when another saw the same
        refusal is refused too: it just goes again."""
        if param in self.usage.dropped:
            return True
        if param in DROPPABLE:  # e.g. presence_penalty on some chat models
            reason = said
        elif param in TOKEN_LIMITS and self.chat:
            other = next(name for name in TOKEN_LIMITS if name != param)
            if other in self.usage.dropped:  # switched once already: both names refused
                return False
            reason = f"sent as {other} instead: {said}"
        elif param == REASONING_SIGN and self.chat:  # a reasoning model: the others go too
            reason = f"a reasoning model: {said}"
        else:
            return False
        self.usage.dropped[param] = reason
        log.warning("llm_parameter_dropped", parameter=param, reason=reason[:200])
        return True

    def _leave_out_for_reasoning(self, params: dict[str, Any]) -> None:
        """A reasoning endpoint's requests go without what it refuses (_arguments); each one this run
        would have sent is a warning once."""
        if not self.reasoning:
            return
        why = (
            "left out: the profile names a reasoning model"
            if self.endpoint.reasoning
            else f"left out: the endpoint refused {REASONING_SIGN}, so it is a reasoning model"
        )
        for name in REASONING_REFUSES:
            if params.get(name) is not None and name not in self.usage.dropped:
                self.usage.dropped[name] = why
                log.warning("llm_parameter_dropped", parameter=name, reason=why)

    def _failure(self, exc: BaseException, stage: str, param: str | None = None) -> EndpointError:
        metrics.LLM_REQUESTS.labels(stage, "error").inc()
        detail = _describe(exc)
        if len(self.endpoint.api_key) >= 8:  # an endpoint may echo the key back; never pass it on
            detail = detail.replace(self.endpoint.api_key, "[redacted]")
        refused = f" (parameter {param!r})" if param else ""
        # raised `from None`: the original exception's text may hold the key too
        return EndpointError(f"{stage} request failed ({_error_kind(exc)}){refused}: {detail}")

    async def _attempts(
        self, prompt: Prompt, params: dict[str, Any], seed: int, n: int, stage: str
    ) -> list[Completion]:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.endpoint.max_attempts),
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        ):
            with attempt:
                await self._pace()
                self._enter()
                started = time.monotonic()
                try:
                    response = await self._send(prompt, params, seed, n)
                    completions = self._parse(response, stage, "response_format" in params)
                    metrics.LLM_SECONDS.labels(stage).observe(time.monotonic() - started)
                    return completions
                except Exception as exc:
                    if isinstance(exc, openai.APIStatusError):
                        self._limits.observe(exc.response.headers, self._in_flight - 1, time.monotonic())
                    self.usage.errors[_error_kind(exc)] += 1
                    raise
                finally:
                    self._leave()
        raise AssertionError("unreachable")  # pragma: no cover

    def _arguments(self, params: dict[str, Any], seed: int, n: int) -> dict[str, Any]:
        """The request's optional arguments (the token cap under the name in use), less those the
        endpoint refused earlier in the run."""
        cap = token_limit(self.endpoint, self.usage.dropped)
        args = {cap if k == "max_tokens" else k: v for k, v in params.items()}
        if self.endpoint.seeded:
            args["seed"] = seed
        if n > 1 or not self.chat:
            args["n"] = n
        left_out = set(self.usage.dropped) | (set(REASONING_REFUSES) if self.reasoning else set())
        return {k: v for k, v in args.items() if k not in left_out}

    async def _pace(self) -> None:
        """Hold this request until the endpoint's spent rate limit resets, counting the wait."""
        waited = 0.0
        while (delay := self._limits.delay(time.monotonic())) > 0:
            await asyncio.sleep(delay)
            waited += delay
        if waited:
            self.usage.rate_limit_waits += 1
            self.usage.rate_limit_seconds += waited
            log.info("llm_rate_limit_wait", seconds=round(waited, 3))
        self._limits.sent()

    async def _send(self, prompt: Prompt, params: dict[str, Any], seed: int, n: int) -> Any:
        self._leave_out_for_reasoning(params)
        args = self._arguments(params, seed, n)
        # the raw response: its rate-limit headers pace the requests after it
        if self.chat:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self.endpoint.model, messages=prompt, **args
            )
        else:
            raw = await self._client.completions.with_raw_response.create(
                model=self.endpoint.model, prompt=prompt, **args
            )
        self._limits.observe(raw.headers, self._in_flight - 1, time.monotonic())
        return raw.parse()

    def _parse(
        self, response: Any, stage: str, structured: bool = False, count: bool = True
    ) -> list[Completion]:
        """The response's completions; `count`: add its request and tokens to the usage (a batch's
        lines are counted once, when its output is first read: jobs.method.batch)."""
        choices = getattr(response, "choices", None)
        texts = [_text(c, self.chat) for c in choices or ()]
        if not choices or any(not isinstance(t, str) for t in texts):
            raise MalformedResponse("response has no completion text")
        if structured:
            for text in texts:
                json.loads(str(text))  # a reply cut short or off-schema: malformed, so retried
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        if count:
            self.count(stage, prompt_tokens, completion_tokens)
        # usage covers all choices; attribute it to the first so sums stay right
        return [
            Completion(
                str(text),
                c.finish_reason,
                prompt_tokens if i == 0 else 0,
                completion_tokens if i == 0 else 0,
                _top_logprobs(c, self.chat),
            )
            for i, (c, text) in enumerate(zip(choices, texts, strict=True))
        ]

    def count(self, stage: str, prompt_tokens: int, completion_tokens: int) -> None:
        """One answered request: its tokens (and their cost) in the usage and metrics."""
        self.usage.requests[stage] += 1
        self.usage.prompt_tokens[stage] += prompt_tokens
        self.usage.completion_tokens[stage] += completion_tokens
        metrics.LLM_REQUESTS.labels(stage, "ok").inc()
        metrics.LLM_TOKENS.labels(stage, "prompt").inc(prompt_tokens)
        metrics.LLM_TOKENS.labels(stage, "completion").inc(completion_tokens)
        if self.endpoint.prices:
            spent = cost.amount(prompt_tokens, completion_tokens, self.endpoint.prices)
            metrics.LLM_COST.labels(stage, self.endpoint.currency).inc(spent)

    def _enter(self) -> None:
        if self._in_flight == 0:
            self._busy_since = time.monotonic()
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.usage.busy_seconds += time.monotonic() - self._busy_since


def _text(choice: Any, chat: bool) -> Any:
    if chat:
        message = getattr(choice, "message", None)
        return getattr(message, "content", None)
    return getattr(choice, "text", None)


def _top_logprobs(choice: Any, chat: bool) -> dict[str, float] | None:
    """The first token's alternatives: completions give `top_logprobs[0]` as {token: logprob}; chat
    gives `content[0].top_logprobs` as [{token, logprob}], and so do llama.cpp's llama-server's
    completions. None when absent or unreadable."""
    logprobs = getattr(choice, "logprobs", None)

    def field(item: Any, name: str) -> Any:  # a parsed object, or a dict the SDK kept as it came
        return item[name] if isinstance(item, dict) else getattr(item, name)

    try:
        if not chat and getattr(logprobs, "top_logprobs", None):
            top = logprobs.top_logprobs[0]  # type: ignore[union-attr]
            return {str(k): float(v) for k, v in top.items()} or None
        first = field(logprobs, "content")[0]
        alternatives = field(first, "top_logprobs") or ()
        return {str(field(first, "token")): float(field(first, "logprob"))} | {
            str(field(t, "token")): float(field(t, "logprob")) for t in alternatives
        }
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


def _response_format(kind: str, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    if kind == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.response.text[:200] if exc.response is not None else ""
        return f"HTTP {exc.status_code} {body}".strip()
    return str(exc)[:200] or type(exc).__name__
