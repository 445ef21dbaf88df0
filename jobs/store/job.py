"""Generation jobs: the record in Redis, its state machine, progress and listing.

A job hash (jobs.store.keyspace.job) holds the request (seed set, profile, config: the parameters as
requested; recipe: the checked recipe as Recipe.to_dict() gives it), the state, timestamps and
progress counters, the URL its end is posted to (notify_url) and that webhook's delivery
(jobs.store.webhooks); a sorted set per team indexes a team's jobs by creation time. State changes go
through one Lua script, so a cancel and a worker finishing at the same moment cannot both win.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from jobs.settings import get_settings
from jobs.store import keyspace, progress, webhooks

# A job's life: queued, running, then one of the final states (TERMINAL). The API's schemas say the same.
JOB_STATES = ("queued", "running", "succeeded", "failed", "canceled")
# Redis drops a finished job's record this long after its retention ended, should the sweep be late.
RECORD_GRACE_SECONDS = 24 * 3600
TERMINAL = frozenset({"succeeded", "failed", "canceled"})


class TooManyActiveJobs(Exception):
    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"the team already has {limit} unfinished jobs (the limit)")


@dataclass
class Job:
    id: str
    team: str
    state: str
    seed_set_id: str
    profile: str
    config: dict[str, Any]  # as requested (shown by the API); a stage-level job's instructions too
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    stage: str | None = None
    stage_started_at: float | None = None
    error: str | None = None
    progress: dict[str, int] = field(default_factory=dict)
    rq_ids: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    dataset: bool = False  # a manifest was written (complete, or partial after a cancel)
    archived: bool = False  # its decisions moved from Redis to S3 (jobs.blobs.decision_archive)
    expires_at: float | None = None  # finished: when retention ends (jobs.runner.retention)
    warnings: list[str] = field(default_factory=list)  # e.g. a sampling parameter the endpoint refused
    recipe: dict[str, Any] = field(default_factory=dict)  # the canonical recipe workers load unchecked
    notify_url: str | None = None  # its end is posted there (jobs.runner.delivery)
    deliveries: list[webhooks.Delivery] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def settled(self) -> bool:
        """Finished, and no webhook attempt is still to come: nothing more happens to it."""
        return self.terminal and all(d.final for d in self.deliveries)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def eta_seconds(self, now: float | None = None) -> float | None:
        """A rough estimate of the time left: the current stage at its own pace, each later stage
        at the run's average seconds per request (one request per instruction)."""
        if self.state != "running" or not self.started_at or not self.stage_started_at:
            return None
        now = now or time.time()
        p = self.progress
        done, total = p.get("stage_done", 0), p.get("stage_total", 0)
        requests = p.get("requests", 0)
        if not done or not requests:
            return None
        left = (now - self.stage_started_at) / done * max(total - done, 0)
        per_request = (now - self.started_at) / requests
        later = {"instructions": 2, "classification": 1}.get(self.stage or "", 0)
        return round(left + later * self.config["num_instructions"] * per_request, 1)


# KEYS: job hash, seed set, team index, seed set users, team's active jobs, jobs-by-state counts, events
# ARGV: created_at, job id, active-job limit (0: none), the first event, then the job's fields
_CREATE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('SCARD', KEYS[5]) >= limit then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('XADD', KEYS[7], '*', 'e', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[2])
redis.call('HINCRBY', KEYS[6], 'queued', 1)
return 1
"""

# KEYS: job hash, seed set users, team's active jobs, jobs-by-state counts, jobs by retention end, events
# ARGV: target state, job id, allowed states (comma list), retention end (terminal states), the
# record's own expiry (a backstop, past the retention end), the events' cap, the time, then fields.
# A change of state is an event, written in the same step: never twice, never lost.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
local allowed = false
for s in string.gmatch(ARGV[3], '[^,]+') do
  if s == state then allowed = true end
end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if state ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[4], state, -1)
  redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
  local event = {type = 'state', state = ARGV[1], previous = state, at = tonumber(ARGV[7])}
  for i = 8, #ARGV - 1, 2 do
    if ARGV[i] == 'error' or ARGV[i] == 'cancelled_by' or ARGV[i] == 'stop_reason' then
      event[ARGV[i]] = ARGV[i + 1]
    end
  end
  redis.call('XADD', KEYS[6], 'MAXLEN', ARGV[6], '*', 'e', cjson.encode(event))
end
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
if ARGV[1] == 'succeeded' or ARGV[1] == 'failed' or ARGV[1] == 'canceled' then
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  local team = redis.call('HGET', KEYS[1], 'team')
  redis.call('ZADD', KEYS[5], ARGV[4], team .. '/' .. ARGV[2])
  redis.call('EXPIREAT', KEYS[1], ARGV[5])
  redis.call('EXPIREAT', KEYS[6], ARGV[5])
end
return 1
"""


def _encode(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list | bool) else str(value)


def create(
    r: Redis,
    team: str,
    seed_set_id: str,
    profile: str,
    config: dict[str, Any],
    recipe: dict[str, Any],
    max_active: int = 0,
    notify_url: str | None = None,
) -> Job | None:
    """Create a queued job; None when the seed set does not exist (any more). Raises
    TooManyActiveJobs when the team has `max_active` unfinished jobs already (0: no limit)."""
    job = Job(
        uuid.uuid4().hex,
        team,
        "queued",
        seed_set_id,
        profile,
        config,
        time.time_ns() // 1000 / 1_000_000,
        recipe=recipe,
        notify_url=notify_url,
    )
    fields = {
        "id": job.id,
        "team": team,
        "state": job.state,
        "seed_set_id": seed_set_id,
        "profile": profile,
        "config": config,
        "recipe": recipe,
        "created_at": job.created_at,
        "rq_ids": [job.id],
        **({"notify_url": notify_url} if notify_url else {}),
    }
    job.rq_ids = [job.id]
    flat = [x for k, v in fields.items() for x in (k, _encode(v))]
    keys = [
        keyspace.job(job.id),
        keyspace.seed_set(team, seed_set_id),
        keyspace.team_jobs(team),
        keyspace.seed_set_users(team, seed_set_id),
        keyspace.active_jobs(team),
        keyspace.JOBS_BY_STATE,
        keyspace.job_events(job.id),
    ]
    first = json.dumps({"type": "state", "state": "queued", "previous": None, "at": job.created_at})
    created = r.eval(_CREATE, len(keys), *keys, job.created_at, job.id, max_active, first, *flat)
    if created == -1:
        raise TooManyActiveJobs(max_active)
    return job if created else None


def get(r: Redis, job_id: str) -> Job | None:
    raw = {k.decode(): v.decode() for k, v in r.hgetall(keyspace.job(job_id)).items()}
    if not raw:
        return None

    def num(name: str) -> float | None:
        return float(raw[name]) if raw.get(name) else None

    return Job(
        id=raw["id"],
        team=raw["team"],
        state=raw["state"],
        seed_set_id=raw["seed_set_id"],
        profile=raw["profile"],
        config=json.loads(raw["config"]),
        recipe=json.loads(raw.get("recipe", "{}")),
        created_at=float(raw["created_at"]),
        started_at=num("started_at"),
        finished_at=num("finished_at"),
        stage=raw.get("stage") or None,
        stage_started_at=num("stage_started_at"),
        error=raw.get("error") or None,
        progress=progress.totals(raw),
        rq_ids=json.loads(raw["rq_ids"])
        if "rq_ids" in raw
        else rq_ids(raw["id"], int(raw.get("chunks") or 0)),
        cancel_requested=raw.get("cancel_requested") == "true",
        dataset=raw.get("dataset") == "true",
        archived=raw.get("archived") == "true",
        expires_at=num("expires_at"),
        warnings=progress.warnings(raw),
        notify_url=raw.get("notify_url") or None,
        deliveries=webhooks.deliveries(raw),
    )


def transition(r: Redis, job: Job, to: str, allowed: tuple[str, ...], **fields: Any) -> bool:
    """Move to state `to` if the job is in one of `allowed`; sets `fields` in the same step. A finished
    job's retention starts: it is listed for jobs.runner.retention.sweep at its end."""
    expires_at = record_expiry = 0
    if to in TERMINAL:
        fields.setdefault("finished_at", time.time())
        expires_at = fields["finished_at"] + get_settings().job_retention_seconds
        fields["expires_at"] = expires_at
        record_expiry = int(expires_at + RECORD_GRACE_SECONDS)
    flat = [x for k, v in fields.items() for x in (k, _encode(v))]
    keys = [
        keyspace.job(job.id),
        keyspace.seed_set_users(job.team, job.seed_set_id),
        keyspace.active_jobs(job.team),
        keyspace.JOBS_BY_STATE,
        keyspace.EXPIRING,
        keyspace.job_events(job.id),
    ]
    maxlen = get_settings().max_job_events
    args = [to, job.id, ",".join(allowed), expires_at, record_expiry, maxlen, round(time.time(), 3), *flat]
    return bool(r.eval(_TRANSITION, len(keys), *keys, *args))


def rq_ids(job_id: str, chunks: int) -> list[str]:
    """The RQ ids of a job's RQ jobs: the main one, then (fanned out) its chunks and finalize."""
    fanned = [*(f"{job_id}-chunk{index}" for index in range(chunks)), f"{job_id}-finalize"]
    return [job_id, *(fanned if chunks else [])]


def compact_record(r: Redis, job_id: str) -> None:
    """A finished job's record without what grows with its size: the per-chunk progress counters
    (folded into one set of totals) and the list of RQ ids (rq_ids() derives it again)."""
    raw = {k.decode(): v.decode() for k, v in r.hgetall(keyspace.job(job_id)).items()}
    parts, totals = progress.folded(raw)
    pipe = r.pipeline(transaction=True)
    if parts:
        pipe.hdel(keyspace.job(job_id), *parts)
    pipe.hset(keyspace.job(job_id), mapping=totals)
    pipe.hdel(keyspace.job(job_id), "rq_ids")
    pipe.execute()


def gone(r: Redis, job_id: str) -> str | None:
    """The team of a job that was deleted or expired (for a while after), else None."""
    team = r.get(keyspace.job_gone(job_id))
    return team.decode() if team else None


def update(r: Redis, job_id: str, **fields: Any) -> None:
    r.hset(keyspace.job(job_id), mapping={k: _encode(v) for k, v in fields.items()})


def page(
    r: Redis,
    team: str,
    after: tuple[float, str] | None,
    limit: int,
    state: str | None = None,
    seed_set_id: str | None = None,
) -> tuple[list[Job], tuple[float, str] | None]:
    """Newest first. `after` is the (created_at, id) of the last job of the previous page."""
    found: list[Job] = []
    upper: Any = "+inf" if after is None else after[0]
    skip_through = after
    while len(found) <= limit:
        ids = r.zrevrangebyscore(keyspace.team_jobs(team), upper, "-inf", start=0, num=200, withscores=True)
        if not ids:
            break
        for raw_id, score in ids:
            job_id = raw_id.decode()
            if skip_through is not None and (score, job_id) >= skip_through:
                continue
            job = get(r, job_id)
            if (
                job is None
                or (state and job.state != state)
                or (seed_set_id and job.seed_set_id != seed_set_id)
            ):
                continue
            found.append(job)
            if len(found) > limit:
                break
        last_score, last_id = ids[-1][1], ids[-1][0].decode()
        if len(ids) < 200:
            break
        upper, skip_through = last_score, (last_score, last_id)
    more = len(found) > limit
    found = found[:limit]
    return found, ((found[-1].created_at, found[-1].id) if more and found else None)


def spending(r: Redis, job_id: str) -> tuple[dict[str, dict[str, int]], str | None]:
    """Tokens by kind (prompt, completion) and stage, summed over the job's runs, and the budget that
    stopped it, if one did."""
    raw = {k.decode(): v.decode() for k, v in r.hgetall(keyspace.job(job_id)).items()}
    return progress.tokens_by_stage(raw), raw.get("stop_reason")
