"""Generation jobs on RQ: enqueue them, and take them off again (cancel).

Functions are enqueued by dotted name, so a process that only enqueues (the API) never imports
the engine. Every RQ job gets retries: a job whose worker died (abandoned) or was asked to stop by
SIGTERM (preempted, see jobs.runner.worker) goes back on the queue and resumes from its checkpoint.

A job with a notify_url gets one more RQ job when it ends: its webhook's delivery (notify).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import timedelta
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Dependency, JobStatus
from rq.job import Job as RQJob
from rq.rate_limit import RateLimit, RateLimitRegistry

from jobs.settings import Settings, get_settings
from jobs.store import connection, keyspace, webhooks
from jobs.store import job as jobs_

RESULT_TTL = 7 * 24 * 3600
GIVE_WAY_AFTER = 2.0  # a main run queued this long has found no worker free: a chunk gives its worker up
PRIORITY_STEP = 24 * 3600  # seconds of waiting one step of a job's priority is worth
RUN_GENERATION = "jobs.runner.generation.run_generation"
GENERATE_CHUNK = "jobs.runner.generation.generate_chunk"
FINALIZE = "jobs.runner.finalize.finalize"
RUN_PREVIEW = "jobs.runner.preview.run_preview"
DELIVER_WEBHOOK = "jobs.runner.delivery.deliver"
POLL_BATCHES = "jobs.runner.generation.poll"
HELP_RUN = "jobs.runner.generation.help_run"


def connect(settings: Settings | None = None) -> Redis:
    return connection.connect((settings or get_settings()).redis_url)


def queue(r: Redis, settings: Settings | None = None) -> Queue:
    return Queue((settings or get_settings()).queue, connection=r)


def _options(settings: Settings, rq_id: str) -> dict[str, Any]:
    return {
        "job_id": rq_id,
        "job_timeout": settings.job_timeout,
        "result_ttl": RESULT_TTL,
        "failure_ttl": RESULT_TTL,
        "retry": Retry(max=settings.job_retries),
    }


def _team_turns(job: jobs_.Job, settings: Settings) -> dict[str, Any]:
    """A team's generation work takes turns with other teams': at most TEAM_JOB_SLOTS of its RQ jobs
    (main runs and chunks) are queued or running at once; the rest wait in RQ's rate limit and go, oldest
    first, as the team's own finish. Another team's job never waits behind a big job's thousand chunks,
    only behind what holds those slots."""
    return {"rate_limit": RateLimit(keyspace.team_turns(job.team), settings.team_job_slots)}


def _prioritize(r: Redis, rq_jobs: list[RQJob], job: jobs_.Job) -> None:
    """A job's priority within its team (-10 to 10, body field `priority`): its RQ jobs that wait for a
    slot go ahead of lower-priority ones, a day of waiting per step."""
    priority = int(job.config.get("priority") or 0)
    if not priority:
        return
    waiting = [j for j in rq_jobs if j.get_status(refresh=True) == JobStatus.RATE_LIMITED]
    if not waiting:
        return
    registry = RateLimitRegistry(waiting[0].rate_limit_key or "", r)
    with r.pipeline() as pipe:
        for rq_job in waiting:
            registry.add_to_rate_limited(rq_job.id, pipe, timestamp=time.time() - priority * PRIORITY_STEP)
        pipe.execute()


def enqueue(r: Redis, job: jobs_.Job, settings: Settings | None = None) -> None:
    """Queue a new job's main RQ job (stages 1 and 2, and instances when they fit in one chunk). A team
    with no other job unfinished takes its turn first: its job goes to the queue's front, ahead of the
    chunks of other teams' jobs waiting there, and starts on the next worker free."""
    settings = settings or get_settings()
    first = r.scard(keyspace.active_jobs(job.team)) <= 1  # this job is its team's only one
    main = queue(r, settings).enqueue(
        RUN_GENERATION, job.id, **_options(settings, job.id), **_team_turns(job, settings), at_front=first
    )
    _prioritize(r, [main], job)


def give_way(r: Redis, job_id: str, settings: Settings) -> str | None:
    """Another job's main run (its RQ id is the job's: no part after a dash) is next on the queue and
    has waited GIVE_WAY_AFTER seconds there, so no worker is free for it, and no chunk has given way to
    it lately: claim it for a chunk of `job_id`, which gives its worker up; returns its RQ id. One chunk
    a waiting run (for a minute: a run still waiting then may have another), so a big job's other
    chunks work on."""
    head = queue(r, settings).get_job_ids(0, 1)
    if not head or "-" in head[0] or head[0] == job_id:
        return None
    rq_job = RQJob.fetch_many(head, connection=r)[0]
    if rq_job is None or rq_job.enqueued_at is None:
        return None
    if connection.now(r) - rq_job.enqueued_at.timestamp() < GIVE_WAY_AFTER:
        return None  # a worker may be on its way
    return rq_job.id if r.set(keyspace.given_way(rq_job.id), job_id, nx=True, ex=60) else None


def enqueue_helper(r: Redis, job: jobs_.Job, helper: str, settings: Settings) -> None:
    """Queue a helper of the job's main run (jobs.runner.helpers), taking the team's turn. No retries:
    the run asks for another while it needs one."""
    options = {**_options(settings, f"{job.id}-helper-{helper}"), "retry": None, "result_ttl": 600}
    queue(r, settings).enqueue(HELP_RUN, job.id, helper, **options, **_team_turns(job, settings))


def poll_later(r: Redis, job_id: str, seconds: float, settings: Settings) -> None:
    """Look at a batch-mode job's batches again in `seconds` (RQ's scheduler, which workers run)."""
    options = _options(settings, f"{job_id}-poll-{uuid.uuid4().hex[:12]}")
    options["result_ttl"] = 600  # one every BATCH_POLL_SECONDS for up to a day: keep few
    queue(r, settings).enqueue_in(timedelta(seconds=seconds), POLL_BATCHES, job_id, **options)


def finalize_later(r: Redis, job_id: str, seconds: float, settings: Settings) -> None:
    """A canceled batch-mode job's partial dataset, once its batches have ended: look again in
    `seconds` (jobs.runner.finalize)."""
    options = _options(settings, f"{job_id}-partial-{uuid.uuid4().hex[:12]}")
    options["result_ttl"] = 600
    queue(r, settings).enqueue_in(timedelta(seconds=seconds), FINALIZE, job_id, True, **options)


def main_pending(r: Redis, job_id: str) -> bool:
    """The job's main RQ job is queued, running or waiting to run."""
    try:
        status = RQJob.fetch(job_id, connection=r).get_status()
    except NoSuchJobError:
        return False
    return status in (
        JobStatus.QUEUED,
        JobStatus.STARTED,
        JobStatus.DEFERRED,
        JobStatus.SCHEDULED,
        JobStatus.RATE_LIMITED,  # waiting for its team's turn
    )


def enqueue_preview(r: Redis, preview_id: str, settings: Settings) -> None:
    """On the preview queue, which only preview workers serve: a long job never holds a preview up. No
    retries: a preview is cheap to ask for again, and its record expires soon anyway."""
    Queue(settings.preview_queue, connection=r).enqueue(
        RUN_PREVIEW,
        preview_id,
        job_id=f"preview-{preview_id}",
        job_timeout=600,
        result_ttl=settings.preview_retention_seconds,
        failure_ttl=settings.preview_retention_seconds,
    )


def fan_out(r: Redis, job: jobs_.Job, chunks: list[list[str]], settings: Settings) -> list[str]:
    """Queue one RQ job per chunk of instruction ids, taking the team's turns, and a finalize job that
    waits for them all; returns the RQ ids (chunks, then finalize)."""
    q, job_id = queue(r, settings), job.id
    *chunk_ids, finalize_id = jobs_.rq_ids(job_id, len(chunks))[1:]
    turns = _team_turns(job, settings)
    queued = [
        q.enqueue(GENERATE_CHUNK, job_id, index, ids, **_options(settings, chunk_ids[index]), **turns)
        for index, ids in enumerate(chunks)
    ]
    _prioritize(r, queued, job)
    final = q.enqueue(
        FINALIZE,
        job_id,
        depends_on=Dependency(jobs=queued, allow_failure=True),
        **_options(settings, finalize_id),
    )
    return [*(j.id for j in queued), final.id]


def notify(r: Redis, job_id: str, settings: Settings | None = None) -> bool:
    """Queue the webhook of a job that has ended, if it has a notify_url: once per final state, whichever
    code path calls first (the claim, jobs.store.webhooks). At the queue's front: it is due now, and its
    retries wait inside it (jobs.runner.delivery), so the RQ job's timeout covers them."""
    settings = settings or get_settings()
    job = jobs_.get(r, job_id)
    if job is None or not job.terminal or not job.notify_url or not webhooks.claim(r, job.id, job.state):
        return False
    options = _options(settings, f"{job.id}-webhook-{job.state}")
    options["job_timeout"] = int(settings.webhook_retry_seconds + 2 * settings.webhook_timeout_seconds) + 60
    queue(r, settings).enqueue(DELIVER_WEBHOOK, job.id, job.state, **options, at_front=True)
    return True


def cancel(
    r: Redis,
    job: jobs_.Job,
    settings: Settings | None = None,
    partial: bool = True,
    by: str | None = None,
    reason: str | None = None,
    spare: str | None = None,
) -> bool:
    """Cancel a queued or running job: a queued one never starts; a running one stops at once (RQ's
    stop command) and, with `partial`, a partial dataset is exported from what it made. False:
    already finished. `by`: who asked (recorded in the job's events); `reason`: the stop reason when a
    budget stops it, from its RQ job `spare` (which stops by itself, committed)."""
    jobs_.update(r, job.id, cancel_requested=True)
    fields = {"cancelled_by": by or ("budget" if reason else None), "stop_reason": reason}
    fields = {k: v for k, v in fields.items() if v}
    if not jobs_.transition(r, job, "canceled", ("queued", "running"), **fields):
        return False
    for rq_id in (jobs_.get(r, job.id) or job).rq_ids:  # the main job, its chunks and finalize
        if rq_id != spare:
            _stop(r, rq_id)
    if partial and job.state == "running":  # its webhook follows the partial dataset (finalize)
        queue(r, settings).enqueue(FINALIZE, job.id, True, job_id=f"{job.id}-partial", result_ttl=RESULT_TTL)
    elif partial:
        notify(r, job.id, settings)
    return True


def _stop(r: Redis, rq_id: str) -> None:
    try:
        rq_job = RQJob.fetch(rq_id, connection=r)
    except NoSuchJobError:
        return
    status = rq_job.get_status()
    if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.RATE_LIMITED):
        rq_job.cancel()  # one waiting for its team's turn gives its place back too
    elif status == JobStatus.STARTED:
        with contextlib.suppress(InvalidJobOperation):  # it finished in between
            send_stop_job_command(r, rq_id)
