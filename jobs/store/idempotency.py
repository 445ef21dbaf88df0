"""Idempotent job creation: an Idempotency-Key claims a slot per team for a day; the same key with
the same request gets the job it made, with a different request a conflict.

A claim is taken (SET NX) before the job is created and records the job's id after, so concurrent
requests with one key make exactly one job; a failed creation releases the claim.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis import Redis

from jobs.store import keyspace

TTL_SECONDS = 24 * 3600


class Mismatch(Exception):
    """The key was used with a different request body."""


class InProgress(Exception):
    """Another request with this key is still creating its job."""


@dataclass
class Claim:
    r: Redis
    slot: str
    fingerprint: str
    job_id: str | None = None  # set when the key already made a job: replay it

    def complete(self, job_id: str) -> None:
        self.r.set(self.slot, json.dumps({"fingerprint": self.fingerprint, "job_id": job_id}), ex=TTL_SECONDS)

    def release(self) -> None:
        self.r.delete(self.slot)


def claim(r: Redis, team: str, key: str, request: dict[str, Any]) -> Claim:
    """Claim `key` for this request, or find the job an identical earlier request made."""
    fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
    slot = keyspace.idempotency(team, key)
    new = Claim(r, slot, fingerprint)
    if r.set(slot, json.dumps({"fingerprint": fingerprint, "job_id": None}), nx=True, ex=TTL_SECONDS):
        return new
    seen = json.loads(r.get(slot) or "null") or {}
    if seen.get("fingerprint") != fingerprint:
        raise Mismatch("this Idempotency-Key was used with a different request body")
    if not seen.get("job_id"):
        raise InProgress("a request with this Idempotency-Key is still being processed; retry shortly")
    new.job_id = seen["job_id"]
    return new
