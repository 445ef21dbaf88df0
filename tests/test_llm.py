"""The completions client against a scripted server: retries, Retry-After, timeouts, accounting, and
pacing to the endpoint's rate-limit headers."""

import asyncio
import math
import time

import pytest

from jobs.method.recipe import Decoding
from jobs.method.transport import LLM, EndpointError
from jobs.method.transport.rate_limits import RateLimits, duration
from tests.conftest import fake_endpoint
from tests.fake_llm import FakeLLM, Script

DECODING = Decoding(max_tokens=50, temperature=0.7, top_p=0.5, stop=("\n\n",))
PROMPT = "Below is a numbered list of diverse, self-contained tasks:\n1. Say hi to me now.\n2."


def complete(server, n=1, **endpoint):
    async def go():
        llm = LLM(fake_endpoint(server, **endpoint), concurrency=4)
        try:
            decoding = Decoding(**{**DECODING.__dict__, "n": n})
            return await llm.complete(PROMPT, decoding, seed=7, stage="instructions"), llm.usage
        finally:
            await llm.close()

    return asyncio.run(go())


def test_retry_after_is_honoured():
    with FakeLLM(Script(schedule=["429"], retry_after=2.0)) as server:
        start = time.monotonic()
        completions, usage = complete(server, max_wait=10.0)
        waited = time.monotonic() - start
    # the exponential backoff alone would wait at most 1.5 s before the second attempt
    assert waited >= 2.0
    assert usage.retries == 1 and usage.errors == {"429": 1}
    assert completions[0].text


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("500", "500"), ("slow", "timeout"), ("drop", "connection"), ("malformed", "malformed")],
)
def test_transient_faults_are_retried_and_counted(fault, kind):
    with FakeLLM(Script(schedule=[fault, fault], slow_seconds=2.0)) as server:
        completions, usage = complete(server, timeout=0.5)
        clean, _ = complete(server)
    assert usage.errors == {kind: 2} and usage.retries == 2
    assert completions == clean  # the retried answer is the one a clean request gets


def test_refused_request_fails_at_once_with_the_reason():
    with FakeLLM(Script(schedule=["400"])) as server:
        with pytest.raises(EndpointError, match=r"HTTP 400.*context too long"):
            complete(server)
        assert server.script.counts["requests"] == 1


def test_endpoint_that_stays_down_fails_after_bounded_attempts():
    with FakeLLM(Script(fault_rate=1.0, faults=("500",))) as server:
        start = time.monotonic()
        with pytest.raises(EndpointError, match="instructions request failed \\(500\\)"):
            complete(server, max_attempts=3, max_wait=0.2)
        assert time.monotonic() - start < 5
        assert server.script.counts["requests"] == 3


def test_n_is_sent_as_separate_requests_with_distinct_seeds():
    with FakeLLM(Script()) as server:
        completions, usage = complete(server, n=3)
        assert server.script.counts["requests"] == 3
    assert len(completions) == 3 and len({c.text for c in completions}) == 3
    assert usage.requests["instructions"] == 3


def test_n_is_topped_up_when_the_endpoint_returns_fewer():
    with FakeLLM(Script(supports_n=True)) as server:
        completions, _ = complete(server, n=2, supports_n=True)
        assert server.script.counts["requests"] == 1
    assert len(completions) == 2


def timed(server, n: int, concurrency: int):
    """n completions through one client; with the wall time of the complete() call alone."""

    async def go():
        llm = LLM(fake_endpoint(server), concurrency=concurrency)
        try:
            decoding = Decoding(**{**DECODING.__dict__, "n": n})
            start = time.monotonic()
            completions = await llm.complete(PROMPT, decoding, seed=7, stage="instructions")
            return completions, llm.usage, time.monotonic() - start
        finally:
            await llm.close()

    return asyncio.run(go())


DELAY = 0.2  # the scripted server's wait before every answer


def test_tokens_and_busy_time_are_counted():
    with FakeLLM(Script(delay=DELAY)) as server:
        completions, usage, wall = timed(server, n=2, concurrency=4)
    assert usage.prompt_tokens["instructions"] == 2 * len(PROMPT.split())
    assert usage.completion_tokens["instructions"] == sum(len(c.text.split()) for c in completions) > 0
    # both requests were out together for most of the call: busy time is their union, within the
    # call's wall time, where their sum (at least 2 * DELAY) is not
    assert DELAY <= usage.busy_seconds <= wall


def test_busy_time_one_request_at_a_time_is_their_sum():
    with FakeLLM(Script(delay=DELAY)) as server:
        _, usage, wall = timed(server, n=3, concurrency=1)
    # every request waits at least DELAY on the server; the endpoint is idle only between requests
    assert 3 * DELAY <= usage.busy_seconds <= wall


def test_reset_times_read_as_openai_writes_them():
    assert [duration(v) for v in ("20ms", "1s", "6m0s", "1h2m3.5s", "0.5", "250us")] == pytest.approx(
        [0.02, 1.0, 360.0, 3723.5, 0.5, 0.00025]
    )
    assert duration("soon") is None and duration(None) is None and duration("1s later") is None


@pytest.mark.parametrize(
    ("limits", "concurrency"),
    [({"limit_requests": 3}, 2), ({"limit_tokens": 150}, 1)],
    ids=["requests", "tokens"],
)
def test_requests_wait_for_the_rate_limit_reset_instead_of_drawing_429s(limits, concurrency):
    script = Script(**limits, limit_window=0.5)
    with FakeLLM(script) as server:

        async def go():
            llm = LLM(fake_endpoint(server), concurrency=concurrency)
            try:
                decoding = Decoding(**{**DECODING.__dict__, "n": 9})
                return await llm.complete(PROMPT, decoding, seed=7, stage="instructions"), llm.usage
            finally:
                await llm.close()

        started = time.monotonic()
        completions, usage = asyncio.run(go())
        wall = time.monotonic() - started
    assert len(completions) == 9 and usage.errors == {} and usage.retries == 0
    assert script.counts.get("rate_limited", 0) == 0  # no request went over the limit
    # at least two resets waited for; waits of requests side by side add up
    assert usage.rate_limit_waits >= 2 and 0.5 <= usage.rate_limit_seconds <= wall * concurrency
    assert wall >= 1.0
    assert usage.to_dict()["rate_limit_waits"] == usage.rate_limit_waits


def test_rate_limit_headers_say_when_the_next_request_may_go():
    limits = RateLimits(max_wait=30.0)
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "500ms"}
    limits.observe(spent, 0, now=10.0)
    # an answer read late says more is left than the one before: what is left only shrinks
    limits.observe(
        {**spent, "x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "497ms"}, 0, 10.04
    )
    assert limits.delay(10.05) == pytest.approx(0.487)
    assert limits.delay(10.6) == 0 and limits.remaining["requests"] == math.inf  # renewed
    # one left, but another request is still out and may not be counted yet
    limits.observe({"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "1s"}, 1, now=11.0)
    assert limits.delay(11.1) == pytest.approx(0.9)
    # tokens: a spent token limit waits too, at most max_wait
    short = RateLimits(max_wait=2.0)
    short.observe({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}, 0, now=0.0)
    assert short.delay(0.5) == pytest.approx(1.5)
    # a 429's Retry-After holds back every request, not only the refused one
    short.observe({"retry-after": "1"}, 0, now=5.0)
    assert short.delay(5.25) == pytest.approx(0.75)
    # headers that do not say (or that cannot be read) hold nothing back
    other = RateLimits()
    other.observe({"x-ratelimit-remaining-requests": "many", "x-ratelimit-reset-requests": "1s"}, 0, now=0.0)
    other.observe({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "later"}, 0, now=0.0)
    assert other.delay(0.1) == 0


@pytest.mark.parametrize(
    "logprobs",
    [
        # OpenAI's completions (and llama-cpp-python's)
        {"tokens": [" Yes"], "token_logprobs": [-0.2], "top_logprobs": [{" Yes": -0.2, " No": -1.9}]},
        # llama.cpp's llama-server: its completions answer in the chat layout
        {
            "content": [
                {
                    "id": 1,
                    "token": " Yes",
                    "bytes": [32, 89, 101, 115],
                    "logprob": -0.2,
                    "top_logprobs": [
                        {"id": 1, "token": " Yes", "bytes": [], "logprob": -0.2},
                        {"id": 2, "token": " No", "bytes": [], "logprob": -1.9},
                    ],
                }
            ]
        },
    ],
)
def test_a_completions_answers_log_probabilities_are_read_in_either_layout(logprobs) -> None:
    from openai.types import Completion

    from jobs.method.transport.client import _top_logprobs

    body = {
        "id": "x",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "text": " Yes", "finish_reason": "length", "logprobs": logprobs}],
    }
    assert _top_logprobs(Completion.model_validate(body).choices[0], False) == {" Yes": -0.2, " No": -1.9}
