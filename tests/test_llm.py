"""The completions client against a scripted server: retries, Retry-After, timeouts, accounting."""

import asyncio
import time

import pytest

from jobs.method.llm import LLM, EndpointError
from jobs.method.recipe import Decoding
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
