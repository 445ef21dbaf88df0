"""An endpoint's limits held for the whole cluster (jobs.store.limits) on a real Redis: leases that a
killed worker cannot leak, requests a minute, a cap that halves on a 429 and grows back, a pause that
every worker keeps; and through the service, two workers under one shared limit and a 429 that slows
both. Waits are checked by their lower bounds only: how late a loaded machine runs is not the code's."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest

from jobs.method.endpoint import Endpoint
from jobs.method.transport import Outcome
from jobs.store import keyspace
from jobs.store.limits import SharedGate
from tests.test_api import make_seed_set
from tests.test_faults import finish, read

ENDPOINT = Endpoint("http://127.0.0.1:1/v1", "limited", timeout=5.0, max_wait=5.0)


def gate(redis_url: str, endpoint: Endpoint, margin: float | None = None) -> SharedGate:
    shared = SharedGate.connect(redis_url, endpoint)
    if margin is not None:
        shared.lease = endpoint.timeout + margin
    return shared


def run(coro):
    return asyncio.run(coro)


def test_at_most_max_in_flight_leases_across_workers(redis, redis_url) -> None:
    """Two workers' gates share one count: with 3 allowed, a fourth attempt waits until one leaves."""
    endpoint = replace(ENDPOINT, max_in_flight=3)

    async def main() -> None:
        first, second = gate(redis_url, endpoint), gate(redis_url, endpoint)
        held = [await first.enter(10), await first.enter(10), await second.enter(10)]
        assert all(p.waited == 0 for p in held)
        fourth = asyncio.ensure_future(second.enter(10))
        await asyncio.sleep(0.3)
        assert not fourth.done()  # three out: the fourth waits
        await first.leave(held[0], Outcome(ok=True))
        passage = await asyncio.wait_for(fourth, 5)
        assert passage.waited >= 0.25
        for p in [*held[1:], passage]:
            await second.leave(p, Outcome(ok=True))
        await first.close()
        await second.close()

    run(main())
    assert redis.zcard(keyspace.endpoint_leases(endpoint.limit_key)) == 0


def test_a_killed_workers_lease_expires(redis, redis_url) -> None:
    """A worker killed mid-request never leaves: its lease runs out after the endpoint's timeout and a
    margin, and the slot is free again."""
    endpoint = replace(ENDPOINT, max_in_flight=1, timeout=0.5)

    async def main() -> float:
        killed, alive = gate(redis_url, endpoint, margin=0.0), gate(redis_url, endpoint, margin=0.0)
        await killed.enter(10)  # and never leaves
        started = time.monotonic()
        passage = await asyncio.wait_for(alive.enter(10), 5)
        await alive.leave(passage, Outcome(ok=True))
        await killed.close()
        await alive.close()
        return time.monotonic() - started

    assert run(main()) >= 0.4


def test_an_attempt_abandoned_while_out_keeps_its_slot_while_the_endpoint_may_still_answer_it(
    redis, redis_url, fake_llm
) -> None:
    """A run that stops (a chunk giving way, a sender cancelled) drops a request the endpoint goes on
    answering: its slot stays taken as long as the longest answer took, so the next attempt, of any
    worker, waits, and the endpoint never has more in flight than the shared limit."""
    from jobs.method.recipe import Decoding
    from jobs.method.transport import LLM, Usage
    from tests.conftest import fake_endpoint

    endpoint = fake_endpoint(fake_llm, max_in_flight=1, max_wait=5.0)
    decoding = Decoding(max_tokens=8, temperature=0.0, top_p=1.0)
    fake_llm.script.delay = 0.6

    async def main() -> float:
        stopping, other = gate(redis_url, endpoint), gate(redis_url, endpoint)
        llm, next_llm = LLM(endpoint, 1, Usage(), stopping), LLM(endpoint, 1, Usage(), other)
        await llm.complete("first", decoding, 0, "instructions")  # 0.6 s: the longest answer so far
        abandoned = asyncio.ensure_future(llm.complete("abandoned", decoding, 0, "instructions"))
        await asyncio.sleep(0.2)
        abandoned.cancel()
        await asyncio.gather(abandoned, return_exceptions=True)
        started = time.monotonic()
        await next_llm.complete("next", decoding, 0, "instructions")
        for opened in (llm, next_llm, stopping, other):
            await opened.close()
        return time.monotonic() - started - 0.6

    waited = run(main())
    assert waited >= 0.3  # about the 0.4 s the abandoned request had left
    assert fake_llm.script.most_in_flight == 1


def test_a_429_halves_the_cap_and_answers_grow_it_back(redis, redis_url) -> None:
    """Once per congestion event: the 429s of one burst halve the cap once; a 429 a second later
    halves it again."""
    endpoint = replace(ENDPOINT, max_in_flight=8)
    key = keyspace.endpoint_limits(endpoint.limit_key)
    throttled = Outcome(ok=False, throttled=True, retry_after=0.0)

    async def main() -> None:
        shared = gate(redis_url, endpoint)
        for _ in range(3):  # one burst: 8 -> 4
            await shared.leave(await shared.enter(1), throttled)
        assert float(redis.hget(key, "cap")) == 4
        await asyncio.sleep(1.1)  # the next event: 4 -> 2
        await shared.leave(await shared.enter(1), throttled)
        assert float(redis.hget(key, "cap")) == 2
        for _ in range(2):  # two answers at cap 2: + 1/2 each
            await shared.leave(await shared.enter(1), Outcome(ok=True))
        assert float(redis.hget(key, "cap")) == pytest.approx(2 + 1 / 2 + 1 / 2.5)
        for _ in range(200):  # and never above the endpoint's limit
            await shared.leave(await shared.enter(1), Outcome(ok=True))
        assert float(redis.hget(key, "cap")) == 8
        await shared.close()

    run(main())


def test_a_pause_one_worker_learns_holds_every_worker(redis, redis_url) -> None:
    """A 429's Retry-After, or a spent x-ratelimit-remaining-requests until its reset, seen by one
    worker, holds the next attempt of another."""
    endpoint = ENDPOINT  # no configured limits: the pause is shared all the same

    async def held_after(outcome: Outcome) -> float:
        first, second = gate(redis_url, endpoint), gate(redis_url, endpoint)
        await first.leave(await first.enter(1), outcome)
        passage = await second.enter(1)
        await second.leave(passage, Outcome(ok=True))
        await first.close()
        await second.close()
        return passage.waited

    assert run(held_after(Outcome(ok=False, throttled=True, retry_after=0.6))) >= 0.5
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "600ms"}
    assert run(held_after(Outcome(ok=True, headers=spent))) >= 0.5
    assert run(held_after(Outcome(ok=True))) == 0


def test_requests_a_minute_are_counted_for_every_worker(redis, redis_url) -> None:
    """120 requests a minute: a minute's allowance may go at once, then one each half second."""
    endpoint = replace(ENDPOINT, requests_per_minute=120)

    async def main() -> tuple[list[float], list[float]]:
        first, second = gate(redis_url, endpoint), gate(redis_url, endpoint)
        waits, times = [], []
        for i in range(122):
            shared = (first, second)[i % 2]
            passage = await shared.enter(1)
            waits.append(passage.waited)
            times.append(time.monotonic())
            await shared.leave(passage, Outcome(ok=True))
        await first.close()
        await second.close()
        return waits, times

    waits, times = run(main())
    assert not any(waits[:120]) and waits[120] > 0 and waits[121] > 0
    # (measured from the first passage: the burst itself takes a while on a loaded machine)
    assert times[120] - times[0] >= 0.45 and times[121] - times[0] >= 0.95


# --- through the service ---


@pytest.fixture
def limited(settings, fake_llm):
    """The scripted profile with a cluster-wide limit of 2 requests in flight (each run may have 4)."""
    fake_llm.script.delay = 0.05  # long enough for requests to overlap
    profile = settings.profiles["fake"].with_options(max_in_flight=2, concurrency=4)
    return replace(settings, profiles={"fake": profile})


def two_jobs(limited, client, spawn) -> tuple[list[str], object]:
    """Two workers, and two jobs on them at once (the API's client to follow them with)."""
    from service.app import create_app

    local = create_app(limited, configure_logging=False).test_client()
    local.environ_base.update(client.environ_base)
    sid = make_seed_set(local)
    spawn(limited, "first"), spawn(limited, "second")
    body = {"seed_set_id": sid, "num_instructions": 12, "instance_followup": False}
    return [local.post("/v1/jobs", json={**body, "seed": s}).json["id"] for s in (1, 2)], local


@pytest.mark.slow
def test_two_workers_never_exceed_the_shared_limit(
    limited, client, redis, fake_llm, spawn, monkeypatch, worker_env
) -> None:
    for name, value in limited.to_env().items():
        monkeypatch.setenv(name, value)
    jobs, local = two_jobs(limited, client, spawn)
    ended = [finish(local, job_id) for job_id in jobs]
    assert [j["state"] for j in ended] == ["succeeded", "succeeded"], ended
    assert fake_llm.script.most_in_flight == 2  # reached, never passed
    # both runs had requests held back for the shared limit, and their datasets say so
    for job_id in jobs:
        stats = json.loads(read(limited, "alpha", job_id, "stats.json"))
        assert stats["rate_limit_waits"]["requests"] > 0, stats["rate_limit_waits"]


@pytest.mark.slow
def test_a_429_seen_by_one_worker_holds_every_worker(
    settings, client, redis, fake_llm, spawn, monkeypatch, worker_env
) -> None:
    """One request answered 429 with Retry-After 1: for that second no worker sends anything new
    (what was already in flight goes on), then both jobs go on to succeed."""
    script = fake_llm.script
    script.delay, script.retry_after = 0.05, 1.0
    script.schedule = [None] * 12 + ["429"]
    profile = settings.profiles["fake"].with_options(concurrency=4, max_wait=5.0)
    local = replace(settings, profiles={"fake": profile})
    for name, value in local.to_env().items():
        monkeypatch.setenv(name, value)
    jobs, api = two_jobs(local, client, spawn)
    assert [finish(api, job_id)["state"] for job_id in jobs] == ["succeeded", "succeeded"]
    arrivals = sorted(script.arrivals)
    answered = next(done for _, done, status in arrivals if status == 429)
    before = [a for a, _, _ in arrivals if answered - 0.6 < a < answered]
    during = [a for a, _, _ in arrivals if answered + 0.2 < a < answered + 0.8]
    after = [a for a, _, _ in arrivals if a > answered + 1.0]
    assert len(before) >= 4 and during == [] and after, (len(before), during, len(after))
