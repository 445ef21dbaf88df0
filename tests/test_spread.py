"""One run's requests spread over many workers (jobs.method.transport.spread, jobs.store.board,
jobs.runner.helpers), on a real Redis: the dataset a spread run makes is the one a lone run makes,
whoever answers; a helper killed mid-request loses nothing; the spread stays under the shared limit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, replace
from functools import partial

import pytest
from redis import Redis
from rq.job import Job as RQJob
from rq.registry import StartedJobRegistry
from rq.worker import Worker

from jobs.method import transport
from jobs.method.checkpoint import FileStore
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.recipe import Decoding, Execution, Recipe
from jobs.method.run import Run
from jobs.method.transport.usage import Usage
from jobs.runner import helpers
from jobs.runner.context import Context
from jobs.runner.generation import MIN_CHUNK, chunk_size
from jobs.runner.queue import queue
from jobs.settings import get_settings
from jobs.store import api_keys, connection, keyspace
from jobs.store import job as jobs_
from jobs.store.board import RedisBoard
from jobs.tools.local_stack import free_port, redis_server
from tests.conftest import fake_endpoint, wait_until
from tests.test_api import make_seed_set
from tests.test_engine import DATASET_FILES
from tests.test_faults import dataset, finish, horse_of, reference


def _run(tmp, name, server, seed_tasks, **config) -> Run:
    cfg = Recipe(**{"num_instructions": 24, "seed": 3, "classification_method": "text", **config})
    store = FileStore(tmp / name / "state")
    return Run(f"spread-{name}", seed_tasks, cfg, fake_endpoint(server), store, execution=Execution(2))


def _files(run: Run, out) -> dict[str, bytes]:
    exports.export(run, out)
    same = [name for name in DATASET_FILES if name not in ("run.json", "README.md")]  # timings, run id
    return {name: (out / name).read_bytes() for name in same}


def test_a_spread_run_makes_what_a_lone_run_makes(tmp_path, fake_llm, seed_tasks, redis, redis_url):
    """A run whose requests another worker's senders answer too (here a thread with its own event loop
    and connection) writes the same bytes as a run that sends its own, and counts every request."""
    fake_llm.script.delay = 0.02
    lone = _run(tmp_path, "lone", fake_llm, seed_tasks)
    execute(lone)
    stop, answered = threading.Event(), []

    def helper() -> None:
        async def main() -> None:
            board = RedisBoard(connection.connect_async(redis_url), "spread-spread", 1)
            senders = [transport.LLM(fake_endpoint(fake_llm), 1, Usage()) for _ in range(3)]
            counts = await asyncio.gather(*(transport.send(board, s, stop.is_set) for s in senders))
            answered.append(sum(counts))
            await board.client.aclose()

        asyncio.run(main())

    thread = threading.Thread(target=helper)
    thread.start()
    spread = _run(tmp_path, "spread", fake_llm, seed_tasks)
    try:
        execute(spread, board=lambda: RedisBoard(connection.connect_async(redis_url), spread.run_id, 4))
    finally:
        stop.set()
        thread.join(30)
    assert answered[0] > 0  # the other worker answered some
    assert _files(spread, tmp_path / "spread-out") == _files(lone, tmp_path / "lone-out")
    assert spread.usage.requests == lone.usage.requests  # every request counted once, whoever sent it
    assert spread.usage.prompt_tokens == lone.usage.prompt_tokens
    # the board is gone with the run, and closed
    assert [k.decode() for k in redis.keys(f"{keyspace.board(spread.run_id, '*')}")] == [
        keyspace.board(spread.run_id, "closed")
    ]


class _NoHelpers(RedisBoard):
    """A board whose run can have none of the helpers it asks for: `stand_ins` workers' worth of them
    are for its own worker to send (what jobs.runner.helpers answers while other teams hold the
    workers)."""

    def __init__(self, redis_url: str, run_id: str, workers: int, stand_ins: int):
        super().__init__(connection.connect_async(redis_url), run_id, workers)
        self.stand_ins = stand_ins

    async def recruit(self, pending: int) -> int:
        return self.stand_ins


def test_a_run_without_helpers_sends_their_share_itself_within_its_capacity(
    tmp_path, fake_llm, seed_tasks, redis_url
):
    """A run told to stand in for 3 helpers it cannot have (concurrency 2, a board of 4 workers) keeps
    2 x 4 requests in flight from its own process, never more, where one that is not keeps 2; both
    write the lone run's bytes."""
    fake_llm.script.delay = 0.1
    lone = _run(tmp_path, "lone", fake_llm, seed_tasks)
    execute(lone)
    for stand_ins in (0, 3):
        fake_llm.script.most_in_flight = 0
        run = _run(tmp_path, f"stand-in-{stand_ins}", fake_llm, seed_tasks)
        execute(run, board=lambda run=run, n=stand_ins: _NoHelpers(redis_url, run.run_id, 4, n))
        most = fake_llm.script.most_in_flight
        assert most == 2 if stand_ins == 0 else 2 < most <= 8, most
        assert _files(run, tmp_path / f"out-{stand_ins}") == _files(lone, tmp_path / "lone-out")


def test_senders_past_the_grant_pause_until_it_grows(fake_llm, redis_url):
    """Stand-ins granted and then withdrawn (a helper came, say): the senders past the grant take
    nothing more, and take again once it grows."""
    fake_llm.script.delay = 0.2
    decoding = Decoding(max_tokens=16, temperature=0.0, top_p=1.0)

    async def main() -> list[int]:
        board = _NoHelpers(redis_url, "grant", 4, 0)
        llm = transport.SpreadLLM(fake_endpoint(fake_llm), 1, Usage(), None, board)
        most = []
        try:
            for batch, grant in enumerate((4, 1, 4)):
                llm._start()
                board.stand_ins = grant - 1  # what the run's next look at its board says too
                llm._grant(grant)
                fake_llm.script.most_in_flight = 0
                await asyncio.gather(
                    *(llm.complete(f"{batch}-{i}", decoding, i, "instances") for i in range(8))
                )
                most.append(fake_llm.script.most_in_flight)
        finally:
            await llm.close()
        return most

    assert asyncio.run(main()) == [4, 1, 4]


def test_a_lease_not_renewed_goes_back_on_the_board(redis, redis_url):
    """A sender killed mid-request stops renewing: once its lease runs out the request is taken again;
    a request read or withdrawn is gone; one lost is posted again."""

    async def main() -> None:
        board = RedisBoard(connection.connect_async(redis_url), "lease", 2)
        assert await board.post("k1", b"one") and not await board.post("k1", b"one")  # posted once
        assert await board.take(0.3) == ("k1", b"one")  # and never answered
        assert await board.maintain() == 1  # out, not expired: not taken again
        assert await board.take(0.3) is None
        await asyncio.sleep(0.4)
        assert await board.maintain() == 1  # expired: back on the board
        assert await board.take(5) == ("k1", b"one")
        await board.answer("k1", b"answer")
        assert await board.answered(["k1"], 0) == {"k1": b"answer"}
        assert await board.answered(["k1"], 0) == {}  # read once
        await board.post("k2", b"two")
        await board.withdraw("k2")
        assert await board.take(1) is None
        # a request that went missing (here taken off by hand) is posted again; one out is left alone
        await board.post("k3", b"three")
        await board.client.lrem(board.keys[0], 0, "k3")
        assert await board.recover({"k3": b"three"}) == 1
        assert await board.take(5) == ("k3", b"three")
        assert await board.recover({"k3": b"three"}) == 0
        # requests that go first (follow-ups, expired leases) go in the order they came, then the rest
        await board.post("late", b"late")
        for key in ("f1", "f2", "f3"):
            await board.post(key, key.encode(), front=True)
        assert [(await board.take(0.3))[0] for _ in range(2)] == ["f1", "f2"]
        await asyncio.sleep(0.4)
        await board.maintain()  # f1 and f2 expired: after f3, before "late"
        assert [(await board.take(5))[0] for _ in range(4)] == ["f3", "f1", "f2", "late"]
        await board.close()

    asyncio.run(main())


def test_an_items_follow_up_goes_before_other_items_requests(fake_llm, redis, redis_url):
    """The window hands results over in index order, so an item's second request (asked once its first
    answer is in: stage 3's follow-up) is taken before the requests of items behind it: here, with one
    sender and a window of eight, within two requests of its first, not after the seven others. Items'
    first requests go in index order, however the connections to Redis interleave."""
    fake_llm.script.delay = 0.05
    decoding = Decoding(max_tokens=16, temperature=0.0, top_p=1.0)

    async def main() -> None:
        board = RedisBoard(connection.connect_async(redis_url), "follow-up", 8)
        llm = transport.SpreadLLM(fake_endpoint(fake_llm), 1, Usage(), None, board)

        async def asked_twice(i: int) -> None:
            await llm.complete(f"item {i} first", decoding, 0, "instances")
            await llm.complete(f"item {i} again", decoding, 0, "instances")

        def build(i: int):
            return asked_twice(i) if i < 12 else None

        try:
            await transport.ordered(0, build, lambda i, _: False, llm.capacity(1), lag=100)
        finally:
            await llm.close()
        # a run done with its board drops it; one that stopped leaves it for the run that resumes it
        assert redis.exists(keyspace.board("follow-up", "closed"))
        stopped = RedisBoard(connection.connect_async(redis_url), "stopped-early", 8)
        llm = transport.SpreadLLM(fake_endpoint(fake_llm), 1, Usage(), None, stopped)
        await llm.complete("one", decoding, 0, "instances")
        await llm.close(finished=False)
        assert not redis.exists(keyspace.board("stopped-early", "closed"))

    start = len(fake_llm.script.received)
    asyncio.run(main())
    order = [p for p in fake_llm.script.received[start:] if p.startswith("item ")]
    assert len(order) == 24
    firsts = [p for p in order if p.endswith("first")]
    assert firsts == sorted(firsts, key=lambda p: int(p.split()[1])), order  # items in index order
    for i in range(12):
        assert order.index(f"item {i} again") - order.index(f"item {i} first") <= 2, order


def test_a_stopped_run_leaves_what_is_answered_or_out_for_the_run_that_resumes_it(fake_llm, redis_url):
    """A run that stops (a hand-back, say) withdraws what it waits for: a request nobody took goes, but
    one a helper has out, or has answered, stays, so the run that resumes reads those answers instead
    of paying for them again. A sender that stops mid-request gives its lease back at once."""
    fake_llm.script.delay = 5.0
    decoding = Decoding(max_tokens=16, temperature=0.0, top_p=1.0)

    async def main() -> None:
        board = RedisBoard(connection.connect_async(redis_url), "stopped", 2)
        for key in ("out", "answered", "waiting"):
            assert await board.post(key, key.encode())
        assert (await board.take(30))[0] == "out"  # a helper's, answered after the stop
        assert (await board.take(30))[0] == "answered"
        await board.answer("answered", b"A")
        for key in ("out", "answered", "waiting"):
            await board.withdraw(key)  # the run stops
        await board.answer("out", b"O")
        await board.release()
        resumed = RedisBoard(connection.connect_async(redis_url), "stopped", 2)
        assert [await resumed.post(key, key.encode()) for key in ("out", "answered", "waiting")] == [
            False,
            False,
            True,
        ]
        assert await resumed.answered(["out", "answered"], 0) == {"out": b"O", "answered": b"A"}
        assert await resumed.take(30) == ("waiting", b"waiting")  # only this one is sent again
        await resumed.answer("waiting", b"W")
        # a sender stopped mid-request: its request is back on the board now, not when the lease ends
        request = {"prompt": "p", "decoding": asdict(decoding), "seed": 0, "stage": "instances"}
        await resumed.post("slow", json.dumps(request).encode())
        llm = transport.LLM(fake_endpoint(fake_llm), 1, Usage())
        sender = asyncio.ensure_future(transport.send(resumed, llm, lambda: False))
        await asyncio.sleep(0.5)  # it took the request and waits for the endpoint
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await llm.close()
        assert await resumed.maintain() == 1
        assert (await resumed.take(30))[0] == "slow"
        await resumed.close()

    asyncio.run(main())


def test_the_board_rides_out_a_redis_restart(tmp_path):
    """Redis down for a second (a restart, a failover): a run waiting for answers and a run closing its
    board wait for it to come back instead of failing the job; the answer posted before is still read."""
    port = free_port()
    server, url = redis_server(tmp_path / "redis", port, appendonly=True)

    async def main() -> None:
        nonlocal server
        board = RedisBoard(connection.connect_async(url), "outage", 2, retry_seconds=30)
        await board.post("k1", b"one")
        waiting = asyncio.ensure_future(board.answered(["k1"], 2.0))
        await asyncio.sleep(0.3)  # blocked on the signal that an answer came
        server.stop()
        await asyncio.sleep(1.0)
        assert not waiting.done()  # still waiting out the outage, not failed
        server = await asyncio.to_thread(lambda: redis_server(tmp_path / "redis", port, appendonly=True)[0])
        assert await waiting == {}
        await board.answer("k1", b"answer")
        server.stop()
        closing = asyncio.ensure_future(board.close())
        await asyncio.sleep(1.0)
        server = await asyncio.to_thread(lambda: redis_server(tmp_path / "redis", port, appendonly=True)[0])
        await closing
        assert Redis.from_url(url).exists(board.keys[6])  # closed

    try:
        asyncio.run(main())
    finally:
        server.stop()


def _helper_horse(redis, workers, job_id: str) -> int | None:
    """The work horse of a worker running one of the job's helpers (and not its main run)."""
    q = queue(redis)
    for rq_id in StartedJobRegistry(queue=q).get_job_ids():
        if not rq_id.startswith(f"{job_id}-helper-"):
            continue
        name = RQJob.fetch(rq_id, connection=redis).worker_name
        if not name:  # started a moment ago, or ended
            continue
        worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=redis)
        for process in workers:
            if worker is not None and worker.pid == process.pid:
                return horse_of(process)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["instructions", "classification"])
def test_a_helper_killed_mid_request_loses_nothing(
    client, redis, settings, fake_llm, spawn, monkeypatch, worker_env, stage
):
    """kill -9 of a helper's work horse while it holds requests of a stage-1 round or of stage 2: they
    go back on the board and are answered again; the dataset is the one a lone worker makes."""
    # no second instance answers: the same prompt sent twice is then a request sent again
    body = {"num_instructions": 30, "seed": 11, "classification_method": "text", "round_size": 8}
    body["instance_followup"] = False
    sid = make_seed_set(client)
    lone = reference(client, redis, sid, body)  # one worker, in this process, not spread
    fake_llm.script.delay = 0.4
    local = replace(settings, spread_workers=3)
    for name, value in local.to_env().items():
        monkeypatch.setenv(name, value)
    workers = [spawn(local, "first"), spawn(local, "second")]
    wait_until(lambda: redis.scard("rq:workers") >= 2, what="two workers")
    received = len(fake_llm.script.received)
    job_id = client.post("/v1/jobs", json={"seed_set_id": sid, **body}).json["id"]
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json["stage"] == stage, what=f"stage {stage}")
    horse = wait_until(
        # more requests at the endpoint than the main run's own senders can send: some are the
        # helper's, sent (a lease taken but not yet sent would be sent once, by whoever takes it next)
        lambda: (
            fake_llm.script.in_flight > local.profiles["fake"].concurrency
            and _helper_horse(redis, workers, job_id)
        ),
        timeout=60,
        what="a helper holding requests",
    )
    os.kill(horse, signal.SIGKILL)
    job = finish(client, job_id, timeout=180)
    assert job["state"] == "succeeded", job
    sent = Counter(fake_llm.script.received[received:])
    assert max(sent.values()) >= 2  # what the killed helper held was sent again
    assert dataset(local, "alpha", job_id) == lone


def test_chunks_are_sized_for_the_workers():
    """Two chunks a spread worker, within INSTANCE_CHUNK_SIZE and never under MIN_CHUNK."""
    assert chunk_size(500, 50, 8) == 32  # 16 chunks: two equal rounds on 8 workers
    assert chunk_size(52_445, 50, 8) == 50
    assert chunk_size(60, 50, 8) == MIN_CHUNK
    assert chunk_size(9, 4, 8) == 4


def test_helpers_are_asked_of_idle_workers_only_and_again_once_one_is_lost(
    client, redis, settings, monkeypatch
):
    """About one helper per `concurrency` requests pending, never more than there are idle workers with
    nothing queued for them; a helper queued and lost before it started (its worker died) stops counting
    after a lease, and the run asks for another."""
    monkeypatch.setattr(helpers, "HELPER_LEASE", 3.0)
    local = replace(settings, spread_workers=8)
    job_id = client.post("/v1/jobs", json={"seed_set_id": make_seed_set(client), "num_instructions": 5}).json[
        "id"
    ]
    job, q = jobs_.get(redis, job_id), queue(redis, local)
    assert q.count == 1  # the job's main run, waiting
    for i in range(4):
        worker = Worker([q], connection=redis, name=f"idle-{i}")
        worker.register_birth()
        worker.set_state("idle")
    busy = Worker([q], connection=redis, name="busy")  # running another job: not idle
    busy.register_birth()
    busy.set_state("busy")
    redis.zadd(StartedJobRegistry(queue=q).key, {"elsewhere:execution": time.time() + 600})
    recruit = partial(helpers.recruit, redis, job, local, concurrency=2)
    assert recruit(pending=2) == 0  # its own senders suffice
    assert recruit(pending=6) == 2  # one per 2 pending, its own worker included
    assert recruit(pending=100) == 1  # 4 idle workers, 3 of them taken by what is queued
    assert q.count == 4 and recruit(pending=100) == 0
    for rq_id in q.job_ids[1:]:  # the helpers, lost before any started
        q.remove(rq_id)
    assert recruit(pending=8) == 0  # 3 wanted, 3 still counted
    time.sleep(3.1)
    assert recruit(pending=8) == 3


def test_a_helper_gives_its_worker_back_once_other_work_waits(
    client, redis, redis_url, settings, worker_env, fake_llm, monkeypatch
):
    """A helper with requests still to take, in a long turn, leaves within a couple of seconds of
    another team's job being queued; this job's own helpers queued meanwhile do not make it leave."""
    fake_llm.script.delay = 0.1
    monkeypatch.setenv("SPREAD_TURN_SECONDS", "120")
    get_settings.cache_clear()
    sid = make_seed_set(client)
    job_id = client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 5}).json["id"]
    q = queue(redis, settings)
    q.empty()  # the job's main run is "running" elsewhere: here, only its board is

    async def post() -> None:
        board = RedisBoard(connection.connect_async(redis_url), job_id, 2)
        decoding = Recipe().decoding["instructions"]
        for i in range(2000):
            request = {"prompt": f"p{i}", "decoding": asdict(decoding), "seed": i, "stage": "instructions"}
            await board.post(f"k{i}", json.dumps(request).encode())
        await board.release()

    asyncio.run(post())
    answered: list[int] = []
    helper = threading.Thread(target=lambda: answered.append(helpers.serve(Context(job_id), "h1")))
    helper.start()
    try:
        wait_until(lambda: fake_llm.script.counts.get("requests", 0) >= 10, what="the helper to send")
        q.enqueue("jobs.runner.generation.help_run", job_id, "h2", job_id=f"{job_id}-helper-h2")
        helper.join(2.5)
        assert helper.is_alive()  # another helper of the job is no reason to leave
        q.empty()
        other = client.application.test_client()
        other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_keys.create(redis, 'beta')[1]}"
        body = {"seed_set_id": make_seed_set(other), "num_instructions": 5}
        queued_at = time.monotonic()
        assert other.post("/v1/jobs", json=body).status_code == 202
        helper.join(10)
        assert not helper.is_alive() and time.monotonic() - queued_at < 4
        assert 0 < answered[0] < 2000 and redis.llen(keyspace.board(job_id, "todo")) > 0  # work was left
    finally:
        redis.hset(keyspace.job(job_id), "cancel_requested", "true")  # a failed test's helper stops too
        helper.join(30)


def test_runs_that_spread_at_once_share_the_workers(client, redis, settings):
    """With every worker busy, a run alone asks for no helper; with another run spreading (here one
    holding 3 helpers on 4 workers), it queues up to its share (4 // 2 - 1 = 1), and the other run's
    helpers, above their share, give way to it; its own helpers waiting are no reason to."""
    local = replace(settings, spread_workers=8)
    sid = make_seed_set(client)
    big, small = (
        jobs_.get(redis, client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": n}).json["id"])
        for n in (50, 5)
    )
    q = queue(redis, local)
    q.empty()  # both main runs are running elsewhere
    for i in range(4):
        worker = Worker([q], connection=redis, name=f"busy-{i}")
        worker.register_birth()
        worker.set_state("busy")
        redis.zadd(StartedJobRegistry(queue=q).key, {f"running-{i}:execution": time.time() + 600})
    assert helpers.recruit(redis, big, local, pending=100, concurrency=2) == 0  # no worker idle
    redis.zadd(keyspace.board(big.id, "helpers"), {f"h{i}": time.time() + 60 for i in range(3)})
    assert not helpers._give_way(redis, local, big.id)  # nothing waits
    assert helpers.recruit(redis, small, local, pending=100, concurrency=2) == 1  # its share
    assert helpers.recruit(redis, small, local, pending=100, concurrency=2) == 0
    assert helpers._give_way(redis, local, big.id) and not helpers._give_way(redis, local, small.id)
    redis.delete(keyspace.SPREADING)  # the small run no longer asks: the big one keeps its helpers
    assert not helpers._give_way(redis, local, big.id)


def test_a_run_stands_in_for_the_helpers_other_teams_work_keeps_out(client, redis, settings):
    """A run stands in for helpers only while every worker is busy or spoken for, and beside another
    team's work: for its team's share of the workers (8 workers, 2 teams: 4) less what its team runs,
    split between the team's main runs, never for more than it wants; its helpers waiting in the queue
    help nobody yet, and a job whose record is gone is no team."""
    local = replace(settings, spread_workers=8)
    sid = make_seed_set(client)
    big = jobs_.get(
        redis, client.post("/v1/jobs", json={"seed_set_id": sid, "num_instructions": 50}).json["id"]
    )
    other = client.application.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_keys.create(redis, 'beta')[1]}"
    body = {"seed_set_id": make_seed_set(other), "num_instructions": 5}
    small, second = (jobs_.get(redis, other.post("/v1/jobs", json=body).json["id"]) for _ in range(2))
    q = queue(redis, local)
    q.empty()
    started = StartedJobRegistry(queue=q)

    def run(*rq_ids: str) -> None:
        redis.zadd(started.key, {f"{rq_id}:execution": time.time() + 600 for rq_id in rq_ids})

    def stop(*rq_ids: str) -> None:
        redis.zrem(started.key, *(f"{rq_id}:execution" for rq_id in rq_ids))

    for i in range(8):
        worker = Worker([q], connection=redis, name=f"busy-{i}")
        worker.register_birth()
        worker.set_state("busy")
    stand_ins = partial(helpers.stand_ins, redis, settings=local, concurrency=2)
    run(*(f"{big.id}-chunk{i}" for i in range(8)))
    assert stand_ins(job=big, pending=100) == 0  # only its own team's work runs
    stop(f"{big.id}-chunk7")
    run(small.id)
    assert stand_ins(job=small, pending=100) == 3
    assert stand_ins(job=small, pending=4) == 1  # it wants one helper besides itself
    assert stand_ins(job=small, pending=2) == 0
    stop(f"{big.id}-chunk6")
    assert stand_ins(job=small, pending=100) == 0  # a worker is idle: a helper can have it
    q.enqueue("jobs.runner.generation.help_run", small.id, "h1", job_id=f"{small.id}-helper-h1")
    redis.zadd(keyspace.board(small.id, "helpers"), {"h1": time.time() + 60})
    assert stand_ins(job=small, pending=4) == 1  # spoken for, by a helper that helps nobody yet
    assert stand_ins(job=small, pending=100) == 3
    q.remove(f"{small.id}-helper-h1")
    run(f"{small.id}-helper-h1")
    assert stand_ins(job=small, pending=100) == 2  # one of its helpers runs
    assert stand_ins(job=small, pending=4) == 0
    run("0123456789abcdef0123456789abcdef-webhook-succeeded")  # a job whose record is gone
    assert stand_ins(job=small, pending=100) == 2  # still 2 teams, not 3
    stop(f"{small.id}-helper-h1", f"{big.id}-chunk5")
    run(second.id)  # the team's second main run: the two split what is left of its share
    assert stand_ins(job=small, pending=100) == stand_ins(job=second, pending=100) == 1
