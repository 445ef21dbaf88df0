"""Helpers: RQ jobs that answer a main run's spread requests (jobs.method.transport.spread) for a turn.

The main run asks for helpers while requests wait on its board: about one per `concurrency` requests
waiting or out, up to SPREAD_WORKERS workers with its own, and only as many as there are workers idle
with nothing queued for them (a helper does not wait in line, holding a slot of its team's turns),
except while other runs spread too: then each may have its share of the workers, and the helpers of
a run above its share give way to another's. Each helper takes its team's turn like any of its RQ jobs
(jobs.runner.queue), sends requests for SPREAD_TURN_SECONDS, until none come for a moment, or until
other work waits on the queue, and gives its worker back; the run asks again while there is work and
workers are idle, so other teams' work queued meanwhile gets the worker first. A helper killed
mid-request stops renewing its lease, and the run puts that request back on the board. While other
teams' work holds every worker, the run's own worker stands in for the helpers it cannot have, up to
its team's share of the workers (`stand_ins`).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable

import redis.exceptions
import structlog
from redis import Redis
from rq.registry import StartedJobRegistry
from rq.worker import Worker

from jobs.method import transport
from jobs.runner import queue
from jobs.runner.context import Context
from jobs.settings import Settings
from jobs.store import connection, keyspace
from jobs.store import job as jobs_
from jobs.store.board import RedisBoard

log = structlog.get_logger(__name__)
IDLE_SECONDS = 2.0  # a helper with nothing to take for this long leaves
HELPER_LEASE = 30.0  # a running helper counts this long after its last sign of life
SPREADING_SECONDS = 5.0  # a run counts as spreading this long after it last asked for helpers


class JobBoard(RedisBoard):
    """A job main run's board, which asks for helpers."""

    def __init__(self, ctx: Context):
        s = ctx.settings
        super().__init__(
            connection.connect_async(s.redis_url),
            ctx.job.id,
            min(s.spread_workers, s.team_job_slots),
            s.redis_retry_seconds,
        )
        self.r, self.job, self.settings = ctx.r, ctx.job, s
        self.concurrency = s.profiles[ctx.job.profile].concurrency

    async def recruit(self, pending: int) -> int:
        try:
            return await asyncio.to_thread(self._recruit, pending)
        except redis.exceptions.RedisError as error:  # helpers only speed a run up: it asks again later
            log.warning("helpers_not_recruited", error=str(error)[:200])
            return 0

    def _recruit(self, pending: int) -> int:
        # before recruiting: helpers it queues on idle workers are no reason to stand in for them
        standing = stand_ins(self.r, self.job, self.settings, pending, self.concurrency)
        recruit(self.r, self.job, self.settings, pending, self.concurrency)
        return standing


def board(ctx: Context) -> Callable[[], JobBoard] | None:
    """What makes the board the job's main run spreads its requests through (None: SPREAD_WORKERS 1)."""
    if ctx.settings.spread_workers <= 1:
        return None
    return lambda: JobBoard(ctx)


def _wanted(settings: Settings, pending: int, concurrency: int) -> int:
    """Helpers a run wants besides itself: one per `concurrency` of its `pending` requests, up to
    SPREAD_WORKERS workers (and its team's slots) with its own."""
    workers = min(settings.spread_workers, settings.team_job_slots)
    return min(workers, math.ceil(pending / max(concurrency, 1))) - 1


def recruit(r: Redis, job: jobs_.Job, settings: Settings, pending: int, concurrency: int) -> int:
    """Queue helpers so that, with those queued or running, about one per `concurrency` of the
    `pending` requests works for the run besides itself; returns how many it queued.

    Helpers go to workers idle now, not taken by work queued before (a helper never waits in line),
    except that a run with fewer helpers than its share, while other runs spread too, queues up to its
    share: the helpers of runs above theirs give way to it (see `_turn`)."""
    wanted = _wanted(settings, pending, concurrency)
    key = keyspace.board(job.id, "helpers")
    now = connection.now(r)
    r.zremrangebyscore(key, "-inf", now)
    r.zadd(keyspace.SPREADING, {job.id: now + SPREADING_SECONDS})
    have = r.zcard(key)
    short = wanted - have
    if short > 0:
        q = queue.queue(r, settings)
        # the workers less the RQ jobs they run: two counts, however many workers there are
        idle = Worker.count(queue=q) - StartedJobRegistry(queue=q).get_job_count(cleanup=False)
        share = _share(r, settings, now)
        short = min(short, max(idle - q.count, 0 if share is None else share - have))
    for _ in range(short):
        helper = uuid.uuid4().hex[:12]
        # a queued helper counts for a lease too (it renews it once it starts): one that never starts
        # does not stop the run asking for another
        r.zadd(key, {helper: now + HELPER_LEASE})
        r.expire(key, settings.job_timeout)
        queue.enqueue_helper(r, job, helper, settings)
    return max(short, 0)


def stand_ins(r: Redis, job: jobs_.Job, settings: Settings, pending: int, concurrency: int) -> int:
    """Helpers the run wants and has not, for which its own worker sends instead: while other teams'
    work holds every worker (none is idle, with nothing queued for it), up to its team's share of them
    (the workers split evenly between the teams with work on them or queued for them) less what the
    team runs, split between the team's main runs. A small job that arrives while a big one's chunks
    fill every worker thus sends about as many requests at once as its share of the workers would,
    from the one worker it got; the endpoint's limits (the shared gate) still hold every request."""
    wanted = _wanted(settings, pending, concurrency)
    if wanted <= 0:
        return 0
    q = queue.queue(r, settings)
    started = StartedJobRegistry(queue=q).get_job_ids(cleanup=False)
    workers_now = Worker.count(queue=q)
    if workers_now - len(started) - q.count > 0:  # a worker is idle: a helper can have it
        return 0
    # its helpers that run: those queued behind other teams' work may not start soon
    missing = wanted - sum(1 for rq_id in started if rq_id.startswith(f"{job.id}-helper-"))
    if missing <= 0:
        return 0
    # RQ ids are the job's id, or it and a suffix after a dash (a chunk, a helper, finalize)
    ids = sorted({rq_id.split("-")[0] for rq_id in [*started, *q.get_job_ids()]} | {job.id})
    with r.pipeline() as pipe:
        for job_id in ids:
            pipe.hget(keyspace.job(job_id), "team")
        team_of = dict(zip(ids, pipe.execute(), strict=True))
    teams = {team for team in team_of.values() if team is not None}  # None: a job whose record is gone
    if len(teams) < 2:  # no other team's work: helpers come as workers free
        return 0
    ours = [rq_id for rq_id in started if team_of[rq_id.split("-")[0]] == team_of[job.id]]
    runs = sum(1 for rq_id in ours if "-" not in rq_id)  # the team's main runs, this one among them
    return max(0, min(missing, (workers_now // len(teams) - len(ours)) // max(runs, 1)))


def _share(r: Redis, settings: Settings, now: float) -> int | None:
    """The helpers a run may hold while other runs spread: the workers split evenly between the runs,
    less its own; None while fewer than two runs spread."""
    r.zremrangebyscore(keyspace.SPREADING, "-inf", now)
    runs = r.zcard(keyspace.SPREADING)
    if runs < 2:
        return None
    return Worker.count(queue=queue.queue(r, settings)) // runs - 1


def serve(ctx: Context, helper: str) -> int:
    """One helper's turn: `concurrency` senders take the run's requests until the turn ends, the job
    stops, or nothing comes to take; returns how many requests it answered."""
    key = keyspace.board(ctx.job.id, "helpers")
    try:
        if ctx.r.exists(keyspace.board(ctx.job.id, "closed")) or ctx.stopping():
            return 0
        ctx.r.zadd(key, {helper: connection.now(ctx.r) + HELPER_LEASE})
        return asyncio.run(_turn(ctx, helper))
    finally:
        ctx.r.zrem(key, helper)


def _give_way(r: Redis, settings: Settings, job_id: str) -> bool:
    """Other work waits on the queue for a worker: some RQ job (another team's, say), or a helper of
    another run while this run holds more helpers than its share."""
    try:
        waiting = queue.queue(r, settings).get_job_ids(0, 20)
        if any("-helper-" not in rq_id for rq_id in waiting):
            return True
        if all(rq_id.startswith(f"{job_id}-helper-") for rq_id in waiting):
            return False
        share = _share(r, settings, connection.now(r))
        return share is not None and r.zcard(keyspace.board(job_id, "helpers")) > share
    except redis.exceptions.RedisError:
        return False


async def _turn(ctx: Context, helper: str) -> int:
    s, profile = ctx.settings, ctx.settings.profiles[ctx.job.profile]
    board = RedisBoard(connection.connect_async(s.redis_url), ctx.job.id, 1, s.redis_retry_seconds)
    gate = ctx.gate()()
    ends = time.monotonic() + s.spread_turn_seconds
    state = {"checked": 0.0, "stop": False}

    def stop() -> bool:
        """The turn is over, the job stops or other work waits for a worker (looked up at most once a
        second); keeps the helper counted."""
        if time.monotonic() >= ends:
            return True
        if time.monotonic() - state["checked"] >= 1.0:
            state["checked"] = time.monotonic()
            state["stop"] = ctx.stopping() or _give_way(ctx.r, s, ctx.job.id)
            ctx.r.zadd(keyspace.board(ctx.job.id, "helpers"), {helper: connection.now(ctx.r) + HELPER_LEASE})
        return bool(state["stop"])

    endpoint = profile.keyed()
    senders = [transport.LLM(endpoint, 1, transport.Usage(), gate) for _ in range(profile.concurrency)]
    try:
        counts = await asyncio.gather(*(transport.send(board, llm, stop, IDLE_SECONDS) for llm in senders))
    finally:
        for llm in senders:
            await llm.close()
        await gate.close()
        await board.client.aclose()
    log.info("helper_turn_done", answered=sum(counts))
    return sum(counts)
