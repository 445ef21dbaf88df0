"""What Redis keeps of a job, and for how long (docs/reliability.md, Retention).

- While a job runs, Redis holds its record, decision log and checkpoints.
- Once its dataset is in S3, `archive` moves the decision log to S3 (jobs.blobs.decision_archive) and drops
  the log and checkpoints from Redis: a finished job costs Redis its record and its capped event
  stream only.
- JOB_RETENTION_SECONDS after it finished, `sweep` deletes the job: its S3 objects, its Redis keys,
  and its record, leaving a tombstone so that it answers 410 Gone (for another retention period).
- `delete` does the same at once, on request (DELETE /v1/jobs/{id}), cancelling the job first.

`python -m jobs.tools.sweep` runs one sweep (for a periodic task); every finalize runs one too.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import structlog
from redis import Redis

from jobs.blobs import decision_archive
from jobs.blobs.artifacts import Artifacts
from jobs.runner import queue
from jobs.settings import Settings, get_settings
from jobs.store import job as jobs_
from jobs.store import keyspace
from jobs.store.decision_log import DecisionLog

log = structlog.get_logger(__name__)

# KEYS: record, tombstone, team's jobs, jobs by retention end, team's active jobs, jobs-by-state
# counts, then the run's data keys. ARGV: team, job id, tombstone lifetime (s), seed set users key.
_FORGET = """
local state = redis.call('HGET', KEYS[1], 'state')
if state then redis.call('HINCRBY', KEYS[6], state, -1) end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[1] .. '/' .. ARGV[2])
redis.call('SREM', KEYS[5], ARGV[2])
if ARGV[4] ~= '' then redis.call('SREM', ARGV[4], ARGV[2]) end
redis.call('DEL', KEYS[1], unpack(KEYS, 7))
return 1
"""


def _chunks(r: Redis, job_id: str) -> int:
    return int(r.hget(keyspace.job(job_id), "chunks") or 0)


def purge_run_data(r: Redis, job_id: str) -> None:
    """Drop a job's decision log and checkpoints from Redis (the record stays)."""
    r.delete(*keyspace.job_run_data(job_id, _chunks(r, job_id)))


def archive(r: Redis, artifacts: Artifacts, team: str, job_id: str, work_dir: str) -> int:
    """Move a job whose dataset is in S3 to its archived decision log; returns the decisions moved."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        path = Path(tmp) / decision_archive.NAME
        count = decision_archive.build(DecisionLog(r, job_id).bodies(), path)
        artifacts.upload_archive(team, job_id, path)
    jobs_.update(r, job_id, archived=True)  # readers switch to the archive before the log goes
    purge_run_data(r, job_id)
    jobs_.compact_record(r, job_id)
    return count


def forget(r: Redis, team: str, job_id: str, settings: Settings) -> None:
    """Remove every Redis key of a job and leave its tombstone."""
    job = jobs_.get(r, job_id)
    keys = [
        keyspace.job(job_id),
        keyspace.job_gone(job_id),
        keyspace.team_jobs(team),
        keyspace.EXPIRING,
        keyspace.active_jobs(team),
        keyspace.JOBS_BY_STATE,
        *keyspace.job_run_data(job_id, _chunks(r, job_id)),
        keyspace.job_events(job_id),
    ]
    users = keyspace.seed_set_users(team, job.seed_set_id) if job else ""
    r.eval(_FORGET, len(keys), *keys, team, job_id, max(settings.job_retention_seconds, 1), users)


def delete(r: Redis, artifacts: Artifacts, job: jobs_.Job, settings: Settings | None = None) -> None:
    """Cancel the job if it runs (no partial dataset: it is going), then remove its S3 objects and
    Redis keys. Safe to repeat."""
    settings = settings or get_settings()
    if not job.terminal:
        queue.cancel(r, job, settings, partial=False)
    artifacts.delete_job(job.team, job.id)
    forget(r, job.team, job.id, settings)
    log.info("job_deleted", job_id=job.id)


def sweep(r: Redis, artifacts: Artifacts, settings: Settings | None = None, limit: int = 20) -> int:
    """Delete up to `limit` jobs whose retention has ended; returns how many."""
    settings = settings or get_settings()
    due = r.zrangebyscore(keyspace.EXPIRING, "-inf", time.time(), start=0, num=limit)
    for member in due:
        team, job_id = member.decode().split("/", 1)
        artifacts.delete_job(team, job_id)
        forget(r, team, job_id, settings)
        log.info("job_expired", job_id=job_id)
    return len(due)
