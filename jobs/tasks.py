"""RQ entry points: run a generation job, generate one chunk of instances, finalize into S3.

run_generation does stages 1 and 2 itself. Instance generation for more than one chunk of
instructions fans out: one RQ job per chunk (each with its own checkpoint, writing to the job's
decision log) and a finalize job that depends on them all, merges, exports and uploads.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from redis import Redis
from rq import Queue
from rq.job import Dependency

from jobs import job as jobs_
from jobs.artifacts import Artifacts
from jobs.config import GenerationConfig
from jobs.engine import Canceled, Run, execute
from jobs.llm import EndpointError, Usage
from jobs.seed_tasks import parse_jsonl
from jobs.settings import Settings, get_settings
from jobs.state import Checkpoint, RedisStore

log = structlog.get_logger(__name__)
RESULT_TTL = 7 * 24 * 3600


def connect(settings: Settings | None = None) -> Redis:
    return Redis.from_url((settings or get_settings()).redis_url)


def queue(r: Redis, settings: Settings | None = None) -> Queue:
    return Queue((settings or get_settings()).queue, connection=r)


def enqueue(r: Redis, job: jobs_.Job, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    queue(r, settings).enqueue(
        run_generation,
        job.id,
        job_id=job.id,
        job_timeout=settings.job_timeout,
        result_ttl=RESULT_TTL,
        failure_ttl=RESULT_TTL,
    )


class Reporter:
    """Writes a run's progress into the job hash, at most twice a second.

    Each run of a job (the main one, each chunk) writes its own absolute counters under its `part`
    name, and readers sum them: a resumed run picks up from its checkpoint without double counting.
    """

    def __init__(self, r: Redis, job_id: str, part: str):
        self.r, self.job_id, self.part = r, job_id, part
        self.main = part == "main"
        self.stage: str | None = None
        self.last = 0.0

    def __call__(self, progress: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        new_stage = progress["stage"] != self.stage
        if not (new_stage or force) and now - self.last < 0.5:
            return
        self.last, self.stage = now, progress["stage"]
        names = [n for n in jobs_.PROGRESS if n != "stage_total" and (self.main or n != "instructions_kept")]
        fields: dict[str, Any] = {f"p:{self.part}:{n}": int(progress[n]) for n in names}
        if self.main and new_stage:
            fields.update(
                stage=progress["stage"], stage_started_at=time.time(), stage_total=progress["stage_total"]
            )
        self.r.hset(jobs_.key(self.job_id), mapping=fields)


def _context(job_id: str) -> tuple[Settings, Redis, jobs_.Job, Artifacts]:
    settings = get_settings()
    r = connect(settings)
    job = jobs_.get(r, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=job_id)
    return settings, r, job, Artifacts(settings)


def _run(
    r: Redis,
    job: jobs_.Job,
    settings: Settings,
    artifacts: Artifacts,
    part: str | None,
    reporter: Reporter | None,
) -> Run:
    seed_tasks = parse_jsonl(artifacts.get_seed_set(job.team, job.seed_set_id))
    profile = settings.profiles[job.profile]
    # the operator's profile says how many requests its endpoint takes at once
    config = GenerationConfig.from_dict({**job.config, "concurrency": profile.concurrency})
    endpoint = profile.endpoint()

    def should_stop() -> bool:
        return r.hget(jobs_.key(job.id), "cancel_requested") == b"true"

    run_id = job.id if part is None else f"{job.id}/{part}"
    return Run(run_id, seed_tasks, config, endpoint, RedisStore(r, job.id, part), reporter, should_stop)


def _guarded(job_id: str, body: Callable[[Settings, Redis, jobs_.Job, Artifacts], None]) -> None:
    settings, r, job, artifacts = _context(job_id)
    if job.terminal:
        log.info("job_already_finished", state=job.state)
        return
    try:
        body(settings, r, job, artifacts)
    except Canceled:
        log.info("job_stopped_on_request")
    except EndpointError as e:
        log.warning("job_failed", error=str(e))
        jobs_.transition(r, job, "failed", ("queued", "running"), error=f"LLM endpoint: {e}")
    except Exception:
        log.exception("job_failed")
        jobs_.transition(r, job, "failed", ("queued", "running"), error="internal error (see worker logs)")
        raise


def run_generation(job_id: str) -> None:
    _guarded(job_id, _generation)


def _generation(settings: Settings, r: Redis, job: jobs_.Job, artifacts: Artifacts) -> None:
    if not jobs_.transition(r, job, "running", ("queued", "running")):
        return
    if job.started_at is None:
        jobs_.update(r, job.id, started_at=time.time())
    reporter = Reporter(r, job.id, "main")
    run = _run(r, job, settings, artifacts, None, reporter)
    execute(run, until="instances")
    ids = [k["id"] for k in run.checkpoint.instructions]
    size = settings.instance_chunk_size
    if run.checkpoint.stage != "instances" or len(ids) <= size:
        execute(run, until="export")
        reporter(run.progress(), force=True)
        _finalize(settings, r, jobs_.get(r, job.id) or job, artifacts)
        return
    # fan out: one RQ job per chunk, then finalize once all have finished
    reporter({**run.progress(), "stage": "instances", "stage_total": len(ids), "stage_done": 0}, force=True)
    q = queue(r, settings)
    chunk_jobs = []
    for index, start in enumerate(range(0, len(ids), size)):
        chunk_jobs.append(
            q.enqueue(
                generate_chunk,
                job.id,
                index,
                ids[start : start + size],
                job_id=f"{job.id}-chunk{index}",
                job_timeout=settings.job_timeout,
                result_ttl=RESULT_TTL,
                failure_ttl=RESULT_TTL,
            )
        )
    final = q.enqueue(
        finalize,
        job.id,
        job_id=f"{job.id}-finalize",
        depends_on=Dependency(jobs=chunk_jobs, allow_failure=True),
        job_timeout=settings.job_timeout,
        result_ttl=RESULT_TTL,
        failure_ttl=RESULT_TTL,
    )
    jobs_.update(r, job.id, rq_ids=[job.id, *(j.id for j in chunk_jobs), final.id], chunks=len(chunk_jobs))
    log.info("instances_fanned_out", chunks=len(chunk_jobs))


def generate_chunk(job_id: str, index: int, instruction_ids: list[str]) -> None:
    _guarded(job_id, lambda s, r, job, a: _chunk(s, r, job, a, index, instruction_ids))


def _chunk(
    settings: Settings, r: Redis, job: jobs_.Job, artifacts: Artifacts, index: int, ids: list[str]
) -> None:
    part = f"chunk{index}"
    store = RedisStore(r, job.id, part)
    if store.load() is None:
        main = RedisStore(r, job.id).load()
        assert main is not None, "a chunk runs after stages 1 and 2"
        wanted = set(ids)
        store.commit(
            Checkpoint(
                stage="instances",
                instructions=[k for k in main.instructions if k["id"] in wanted],
                classification={i: c for i, c in main.classification.items() if i in wanted},
            ),
            [],
        )
    reporter = Reporter(r, job.id, part)
    run = _run(r, job, settings, artifacts, part, reporter)
    execute(run, until="export")
    reporter(run.progress(), force=True)


def finalize(job_id: str, partial: bool = False) -> None:
    """Merge the chunks (if any), export, upload the files and then the manifest."""
    settings, r, job, artifacts = _context(job_id)
    if job.state != "running" and not (partial and job.state == "canceled"):
        log.info("finalize_skipped", state=job.state)
        return
    _finalize(settings, r, job, artifacts, partial)


def _finalize(
    settings: Settings, r: Redis, job: jobs_.Job, artifacts: Artifacts, partial: bool = False
) -> None:
    run = _run(r, job, settings, artifacts, None, None)
    cp = run.checkpoint
    chunks = int(r.hget(jobs_.key(job.id), "chunks") or 0)
    for index in range(chunks):
        part = RedisStore(r, job.id, f"chunk{index}").load()
        if part is None:
            continue
        cp.instances.update(part.instances)
        for stage, counts in part.counts.items():
            merged = cp.counts.setdefault(stage, {})
            for rule, n in counts.items():
                merged[rule] = merged.get(rule, 0) + n
        usage = Usage.from_dict(part.usage) if part.usage else Usage()
        run.usage.requests.update(usage.requests)
        run.usage.prompt_tokens.update(usage.prompt_tokens)
        run.usage.completion_tokens.update(usage.completion_tokens)
        run.usage.errors.update(usage.errors)
        run.usage.retries += usage.retries
        run.usage.busy_seconds += usage.busy_seconds
        cp.truncated_responses += part.truncated_responses
    missing = [k["id"] for k in cp.instructions if k["id"] not in cp.instances]
    if missing and not partial:
        jobs_.transition(
            r, job, "failed", ("running",), error=f"{len(missing)} instructions have no instances"
        )
        return
    if not partial:
        cp.stage = "export"
    run.set_elapsed(time.time() - (job.started_at or job.created_at))
    with tempfile.TemporaryDirectory(dir=settings.work_dir) as tmp:
        records = run.export(Path(tmp), partial=partial)
        artifacts.upload_dataset(job.team, job.id, Path(tmp), records, partial)
    if partial:
        jobs_.update(r, job.id, dataset=True)
    else:
        jobs_.transition(r, job, "succeeded", ("running",), dataset=True, stage="done")
    log.info("job_finished", partial=partial, records=records)
