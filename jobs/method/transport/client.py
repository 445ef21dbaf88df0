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
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
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

from jobs.method.endpoint import REASONING_SIGN, Endpoint, cost, is_reasoning, token_limit
from jobs.method.recipe import Decoding
from jobs.method.transport.gate import Gate, OpenGate, Outcome
from jobs.method.transport.metrics import (
    LLM_COST,
    LLM_REQUESTS,
    LLM_RETRIES,
    LLM_SECONDS,
    LLM_TOKENS,
    LLM_WAIT_SECONDS,
)
from jobs.method.transport.rate_limits import RateLimits, retry_after
from jobs.method.transport.usage import Usage
from jobs.method.vocabulary import TOKEN_LIMITS

log = structlog.get_logger(__name__)
# the longest an answer of each endpoint (its limit key) has taken in this process: how long the
# provider may go on with a request abandoned while out (a run's fresh client has seen none yet)
LONGEST: dict[str, float] = {}

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

Prompt = str | list[dict[str, str]]  # a text to continue, or chat messages


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


def retry_wait(state: RetryCallState, max_wait: float) -> float:
    """How long a retry waits: exponential backoff with jitter, or the endpoint's Retry-After, at most
    max_wait (completions and embeddings alike)."""
    backoff = wait_exponential_jitter(multiplier=0.5, max=max_wait, jitter=1.0)(state)
    hinted = retry_after(state.outcome.exception() if state.outcome else None)
    return backoff if hinted is None else min(hinted, max_wait)


class LLM:
    """Completions with at most `concurrency` requests in flight; counts tokens, retries, busy time."""

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

    def __init__(
        self, endpoint: Endpoint, concurrency: int, usage: Usage | None = None, gate: Gate | None = None
    ):
        """`gate`: where each attempt waits for its turn under limits shared with other runs (default:
        none; this run's own concurrency and the endpoint's rate-limit headers pace it)."""
        self.endpoint = endpoint
        self.usage = usage or Usage()
        self._gate: Gate = gate or OpenGate()
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

    async def close(self, finished: bool = True) -> None:
        """`finished`: the run's stages are done (False: it stopped, and may resume)."""
        await self._client.close()

    def _wait(self, state: RetryCallState) -> float:
        return retry_wait(state, self.endpoint.max_wait)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        kind = _error_kind(exc) if exc else "unknown"
        self.usage.retries += 1
        LLM_RETRIES.labels(kind).inc()
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
        LLM_REQUESTS.labels(stage, "error").inc()
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
                return await self._attempt(prompt, params, seed, n, stage)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, prompt: Prompt, params: dict[str, Any], seed: int, n: int, stage: str
    ) -> list[Completion]:
        """One try: at this run's pace, then its turn at the gate, then the request; the gate hears
        how it went."""
        await self._pace()  # first: a lease is held only while the request is out
        estimate = _tokens(prompt) + int(params.get("max_tokens") or 0) * n
        passage = await self._gate.enter(estimate)
        if passage.waited:
            self._waited(passage.waited, "shared")
        outcome, entered = Outcome(ok=False), False
        try:
            self._enter()
            entered = True
            started = time.monotonic()
            response, headers = await self._send(prompt, params, seed, n)
            completions = self._parse(response, stage, "response_format" in params)
            took = time.monotonic() - started
            LONGEST[self.endpoint.limit_key] = max(LONGEST.get(self.endpoint.limit_key, 0.0), took)
            LLM_SECONDS.labels(stage).observe(took)
            spent = sum(c.prompt_tokens + c.completion_tokens for c in completions)
            outcome = Outcome(ok=True, tokens=spent, headers=headers)
            return completions
        except Exception as exc:
            if isinstance(exc, openai.APIStatusError):
                headers = exc.response.headers
                self._limits.observe(headers, self._in_flight - 1, time.monotonic())
                outcome = Outcome(False, exc.status_code == 429, retry_after(exc), headers=headers)
            self.usage.errors[_error_kind(exc)] += 1
            raise
        except asyncio.CancelledError:  # abandoned while out: the provider may still be answering it
            if entered:
                elapsed = time.monotonic() - started
                longest = LONGEST.get(self.endpoint.limit_key, self.endpoint.timeout)
                outcome = Outcome(ok=False, hold=max(longest - elapsed, 0.0))
            raise
        finally:
            if entered:
                self._leave()
            await self._gate.leave(passage, outcome)

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
            self._waited(waited, "headers")
        self._limits.sent()

    def _waited(self, seconds: float, kind: str) -> None:
        """A request held back: by the limits this run shares with others, or by what the endpoint's
        rate-limit headers said."""
        self.usage.rate_limit_waits += 1
        self.usage.rate_limit_seconds += seconds
        LLM_WAIT_SECONDS.labels(kind).inc(seconds)
        log.info("llm_rate_limit_wait", seconds=round(seconds, 3), kind=kind)

    async def _send(
        self, prompt: Prompt, params: dict[str, Any], seed: int, n: int
    ) -> tuple[Any, Mapping[str, str]]:
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
        return raw.parse(), raw.headers

    def _parse(
        self, response: Any, stage: str, structured: bool = False, count: bool = True
    ) -> list[Completion]:
        """The response's completions; `count`: add its request and tokens to the usage (a batch's
        lines are counted once, when its output is first read: jobs.method.transport.batch)."""
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
        LLM_REQUESTS.labels(stage, "ok").inc()
        LLM_TOKENS.labels(stage, "prompt").inc(prompt_tokens)
        LLM_TOKENS.labels(stage, "completion").inc(completion_tokens)
        if self.endpoint.prices:
            spent = cost(prompt_tokens, completion_tokens, self.endpoint.prices)
            LLM_COST.labels(stage, self.endpoint.currency).inc(spent)

    def _enter(self) -> None:
        if self._in_flight == 0:
            self._busy_since = time.monotonic()
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.usage.busy_seconds += time.monotonic() - self._busy_since


def _tokens(prompt: Prompt) -> int:
    """A prompt's tokens, roughly (four characters a token), before the endpoint counts them."""
    text = prompt if isinstance(prompt, str) else "".join(m.get("content", "") for m in prompt)
    return len(text) // 4 + 1


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
