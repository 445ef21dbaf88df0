"""Teams take turns on the workers (jobs.runner.queue): a team's generation RQ jobs go through RQ's rate
limit, at most TEAM_JOB_SLOTS queued or running at once, so another team's job never waits behind a big
job's chunks; within a team, a job's priority orders its waiting RQ jobs. Real Redis, real workers."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.rate_limit import RateLimitRegistry

from jobs.runner import queue
from jobs.settings import get_settings
from jobs.store import api_keys, keyspace
from jobs.store import job as jobs_
from service.app import create_app
from tests.conftest import wait_until
from tests.test_api import make_seed_set
from tests.test_faults import dataset, finish, reference

BIG = {"num_instructions": 48, "seed": 3, "instance_followup": False}  # 24 chunks of 2
SMALL = {"num_instructions": 2, "seed": 4, "instance_followup": False}  # one RQ job, no chunks


def team_client(app, redis, team: str):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_keys.create(redis, team, 'tests')[1]}"
    return client


def held(redis, team_jobs: list[str]) -> int:
    """How many of these jobs' RQ jobs are queued or running now."""
    ids = [rq_id for job_id in team_jobs if (job := jobs_.get(redis, job_id)) for rq_id in job.rq_ids]
    out = 0
    for rq_job in RQJob.fetch_many(ids, connection=redis):
        if rq_job is not None and rq_job.func_name != queue.FINALIZE:
            out += rq_job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.STARTED)
    return out


@pytest.mark.slow
def test_a_small_job_of_another_team_finishes_while_a_big_one_runs(
    settings, redis, fake_llm, spawn, monkeypatch
) -> None:
    """Team alpha's big job fans out into 24 chunks on two workers; with two slots a team, no more than
    two of its RQ jobs are ever queued or running, and team beta's small job, submitted once alpha's
    chunks wait in line, finishes first."""
    fake_llm.script.delay = 0.1  # chunks that last: the big job is still running when beta comes
    local = replace(settings, instance_chunk_size=2, team_job_slots=2)
    for name, value in local.to_env().items():
        monkeypatch.setenv(name, value)
    app = create_app(local, configure_logging=False)
    alpha, beta = team_client(app, redis, "alpha"), team_client(app, redis, "beta")
    big = alpha.post("/v1/jobs", json={"seed_set_id": make_seed_set(alpha), **BIG}).json["id"]
    beta_set = make_seed_set(beta)
    peaks: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # alpha's RQ jobs queued or running, sampled while it all runs
        while not stop.is_set():
            peaks.append(held(redis, [big]))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    spawn(local, "first"), spawn(local, "second")
    wait_until(lambda: len(jobs_.get(redis, big).rq_ids) > 2, timeout=120, what="the big job's chunks")
    small = beta.post("/v1/jobs", json={"seed_set_id": beta_set, **SMALL}).json["id"]
    small_done = finish(beta, small, timeout=120)
    big_then = alpha.get(f"/v1/jobs/{big}").json
    big_done = finish(alpha, big, timeout=300)
    stop.set()
    watcher.join()
    assert small_done["state"] == big_done["state"] == "succeeded"
    assert big_then["state"] == "running"  # beta did not wait for alpha's job to end
    waiting = Queue(local.queue, connection=redis)
    assert waiting.count == 0 and peaks and max(peaks) <= 2, peaks


def test_priority_orders_a_teams_waiting_jobs(settings, redis, monkeypatch, client) -> None:
    """With one slot, a team's jobs wait in line; a job with a higher priority goes ahead of those
    submitted before it."""
    local = replace(settings, team_job_slots=1)
    for name, value in local.to_env().items():
        monkeypatch.setenv(name, value)
    app = create_app(local, configure_logging=False)
    alpha = team_client(app, redis, "alpha")
    sid = make_seed_set(alpha)
    body = {"seed_set_id": sid, **SMALL}
    ids = [alpha.post("/v1/jobs", json={**body, "seed": s}).json["id"] for s in (1, 2, 3)]
    urgent = alpha.post("/v1/jobs", json={**body, "priority": 5}).json
    assert urgent["config"]["priority"] == 5
    statuses = [RQJob.fetch(job_id, connection=redis).get_status() for job_id in ids]
    assert statuses == [JobStatus.QUEUED, JobStatus.RATE_LIMITED, JobStatus.RATE_LIMITED]
    # the first finishes (here: is taken off and released), and the urgent job is next, not job 2
    first = RQJob.fetch(ids[0], connection=redis)
    Queue(local.queue, connection=redis).remove(first)
    first.cancel()
    assert RQJob.fetch(urgent["id"], connection=redis).get_status() == JobStatus.QUEUED
    assert RQJob.fetch(ids[1], connection=redis).get_status() == JobStatus.RATE_LIMITED


def test_a_cancel_takes_a_waiting_job_out_of_its_teams_line(settings, redis, monkeypatch) -> None:
    """A job whose RQ job waits for its team's turn, cancelled: the RQ job is cancelled too and leaves
    the line, so it never takes a slot or a worker later."""
    local = replace(settings, team_job_slots=1)
    for name, value in local.to_env().items():
        monkeypatch.setenv(name, value)
    alpha = team_client(create_app(local, configure_logging=False), redis, "alpha")
    body = {"seed_set_id": make_seed_set(alpha), **SMALL}
    first, second = (alpha.post("/v1/jobs", json={**body, "seed": s}).json["id"] for s in (1, 2))
    assert RQJob.fetch(second, connection=redis).get_status() == JobStatus.RATE_LIMITED
    assert alpha.post(f"/v1/jobs/{second}/cancel").status_code == 202
    assert RQJob.fetch(second, connection=redis).get_status() == JobStatus.CANCELED
    assert all(second not in r.get_rate_limited_job_ids() for r in RateLimitRegistry.all(redis))
    assert RQJob.fetch(first, connection=redis).get_status() == JobStatus.QUEUED


def test_a_team_with_no_job_running_goes_to_the_front_of_the_queue(app, redis, settings) -> None:
    """Alpha's work waits on the queue (no worker takes it here); beta's first job goes ahead of it, and
    alpha's next job, with alpha's others unfinished, behind."""
    alpha, beta = team_client(app, redis, "alpha"), team_client(app, redis, "beta")
    sets = {"alpha": make_seed_set(alpha), "beta": make_seed_set(beta)}

    def submit(client, team: str) -> str:
        return client.post("/v1/jobs", json={"seed_set_id": sets[team], **SMALL}).json["id"]

    a1, a2 = submit(alpha, "alpha"), submit(alpha, "alpha")
    b1 = submit(beta, "beta")
    a3 = submit(alpha, "alpha")
    assert Queue(settings.queue, connection=redis).job_ids == [b1, a1, a2, a3]


def started(redis, rq_id: str) -> bool:
    try:
        return RQJob.fetch(rq_id, connection=redis).get_status() == JobStatus.STARTED
    except NoSuchJobError:
        return False


@pytest.mark.slow
def test_a_chunk_gives_its_worker_to_another_teams_job_waiting_for_one(
    settings, redis, fake_llm, spawn, monkeypatch
) -> None:
    """One worker, alpha's big job in chunks: beta's small job, submitted while a chunk runs, does not
    wait for it to end. The chunk commits, gives its worker up and goes back on the queue without
    spending a retry, and alpha's dataset is the one it makes alone."""
    local = replace(settings, instance_chunk_size=12)  # 3 chunks of 10, 10 and 4
    for name, value in local.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    app = create_app(local, configure_logging=False)
    alpha, beta = team_client(app, redis, "alpha"), team_client(app, redis, "beta")
    seed_set = make_seed_set(alpha)
    expected = reference(alpha, redis, seed_set, BIG)
    fake_llm.script.delay = 0.2
    big = alpha.post("/v1/jobs", json={"seed_set_id": seed_set, **BIG}).json["id"]
    spawn(local, "worker")
    chunks = [f"{big}-chunk{index}" for index in range(3)]
    chunk = wait_until(
        lambda: next((c for c in chunks if started(redis, c)), None), timeout=120, what="a chunk to start"
    )
    fake_llm.script.delay = 1.0  # the chunk's instructions now take 5 s and more
    small = beta.post("/v1/jobs", json={"seed_set_id": make_seed_set(beta), **SMALL}).json["id"]
    small_done = finish(beta, small, timeout=60)
    beta_finished = time.time()
    fake_llm.script.delay = 0.0
    assert small_done["state"] == "succeeded"
    assert RQJob.fetch(chunk, connection=redis).get_status() != JobStatus.FINISHED  # beta did not wait
    assert finish(alpha, big)["state"] == "succeeded"
    rq_chunk = RQJob.fetch(chunk, connection=redis)
    assert rq_chunk.ended_at.timestamp() > beta_finished and rq_chunk.retries_left == local.job_retries
    assert redis.get(keyspace.given_way(small)).decode() == big
    assert dataset(local, "alpha", big) == expected
