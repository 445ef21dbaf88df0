"""Webhooks in Redis: a team's signing secret, and a job's deliveries.

The secret (jobs.store.keyspace.webhook_secret) is kept as it is: signing needs it, unlike an API key,
which is only compared and so is stored hashed. Rotating it keeps the previous one for
ROTATION_OVERLAP_SECONDS, and deliveries meanwhile carry a signature by each, so that a receiver can
switch secrets without refusing a delivery.

A delivery is a field of the job's record, `webhook:<state>` (JSON), so that it lives and goes with
the job. It is claimed with HSETNX (SET NX on the record's field) before its RQ job is enqueued: of
the code paths that can see a job end, one queues it. Each attempt updates the field and adds a
`webhook` event to the job's events in one step; once the record is gone (the job was deleted),
neither the claim nor an attempt writes anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis

from jobs.store import keyspace

ROTATION_OVERLAP_SECONDS = 24 * 3600
FIELD = "webhook:"  # + the final state

# KEYS: the team's secret. ARGV: the new secret, the time, when the previous one stops signing.
_ROTATE = """
local current = redis.call('HGET', KEYS[1], 'secret')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'secret', ARGV[1], 'created_at', ARGV[2])
if current then
  redis.call('HSET', KEYS[1], 'previous', current, 'previous_until', ARGV[3])
  return 1
end
return 0
"""

# KEYS: the job record. ARGV: the field, the delivery not yet attempted.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
"""

# KEYS: the job record, its events. ARGV: the field, the delivery, the events' cap, the event.
_ATTEMPTED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'e', ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Secret:
    secret: str
    created_at: float
    previous_until: float | None  # the previous secret signs too until then


def rotate(r: Redis, team: str, secret: str) -> Secret:
    """Make `secret` the team's signing secret; a previous one signs on for the overlap."""
    now = round(time.time(), 3)
    until = now + ROTATION_OVERLAP_SECONDS
    had = r.eval(_ROTATE, 1, keyspace.webhook_secret(team), secret, now, until)
    return Secret(secret, now, until if had else None)


def has_secret(r: Redis, team: str) -> bool:
    return bool(r.hexists(keyspace.webhook_secret(team), "secret"))


def signing_secrets(r: Redis, team: str, now: float | None = None) -> list[str]:
    """The secrets a delivery is signed with now: the current one, then the previous while it lasts."""
    raw = {k.decode(): v.decode() for k, v in r.hgetall(keyspace.webhook_secret(team)).items()}
    found = [raw["secret"]] if "secret" in raw else []
    if "previous" in raw and float(raw.get("previous_until", 0)) > (now or time.time()):
        found.append(raw["previous"])
    return found


@dataclass(frozen=True)
class Delivery:
    """The webhook of a job's final `state`, as far as it got."""

    state: str
    attempts: int = 0
    status: int | None = None  # the last attempt's HTTP status, if it got one
    error: str | None = None  # the last attempt's failure, if it failed
    delivered: bool = False
    final: bool = False  # delivered, or given up: no attempt follows
    first_attempt_at: float | None = None
    last_attempt_at: float | None = None

    @property
    def event(self) -> str:
        return f"job.{self.state}"


def claim(r: Redis, job_id: str, state: str) -> bool:
    """True for the first caller for this job and final state, while the job exists."""
    pending = json.dumps(asdict(Delivery(state)))
    return bool(r.eval(_CLAIM, 1, keyspace.job(job_id), FIELD + state, pending))


def attempted(
    r: Redis, job_id: str, delivery: Delivery, maxlen: int, next_attempt_in: float | None = None
) -> bool:
    """Record an attempt and its `webhook` event; False when the job is gone (stop delivering)."""
    event = {
        "type": "webhook",
        "at": round(time.time(), 3),
        "event": delivery.event,
        "attempt": delivery.attempts,
        "status": delivery.status,
        "error": delivery.error,
        "delivered": delivery.delivered,
        "final": delivery.final,
        "next_attempt_in": next_attempt_in,
    }
    keys = [keyspace.job(job_id), keyspace.job_events(job_id)]
    args = [FIELD + delivery.state, json.dumps(asdict(delivery)), maxlen, json.dumps(event, sort_keys=True)]
    return bool(r.eval(_ATTEMPTED, len(keys), *keys, *args))


def deliveries(raw: Mapping[str, str]) -> list[Delivery]:
    """The deliveries in a job record's fields (decoded)."""
    found: list[Delivery] = []
    for name, value in sorted(raw.items()):
        if name.startswith(FIELD):
            data: dict[str, Any] = json.loads(value)
            found.append(Delivery(**data))
    return found


def delivery(r: Redis, job_id: str, state: str) -> Delivery | None:
    value = r.hget(keyspace.job(job_id), FIELD + state)
    return Delivery(**json.loads(value)) if value else None
